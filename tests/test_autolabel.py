"""`minigpt-annotate autolabel`: a folder (and the other sources) to COCO and Label Studio files with the shipped
tiny shapes model, a broken image that fails alone, resume after SIGKILL (at a fixed point and from a timer) with
every image exactly once and the files of a clean run, refusals of a changed run and of bad input.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from autolabel_fixtures import IMAGES, LABELS, ROOT, _args, _journal_keys, _same_files, clean_run, shapes
from hypothesis import given, settings
from hypothesis import strategies as st
from label_studio_sdk.label_interface import LabelInterface
from patience import HANG_S
from PIL import Image

from autolabel.sources import SourceError, read_source
from minigpt_annotate.cli import main
from model.coco import load_with_pycocotools, read_coco
from model.synthetic.shapes_model import SHIPPED_DIR

__all__ = ["clean_run", "shapes"]  # fixtures of tests/autolabel_fixtures.py: the images, and --engine local's files

OUTPUTS = ("proposals.coco.json", "label-studio-tasks.json", "failures.jsonl", "label-config.xml")


def test_folder_gives_coco_and_label_studio_files_and_a_broken_image_fails_alone(shapes: Path, clean_run: Path):
    summary = json.loads((clean_run / "summary.json").read_text())
    assert (summary["images"], summary["answered"], summary["failed"], summary["pending"]) == (IMAGES + 1, IMAGES, 1, 0)
    assert summary["model_version"] == "tiny-shapes"

    failures = [json.loads(line) for line in (clean_run / "failures.jsonl").read_text().splitlines()]
    assert [f["key"] for f in failures] == ["more/broken.jpg"]
    assert "not an image" in failures[0]["reason"] and "\n" not in failures[0]["reason"]

    coco = load_with_pycocotools(clean_run / "proposals.coco.json")
    truth = {r.path.name: r for r in read_coco(shapes / "annotations.json").images}
    names = [coco.imgs[i]["file_name"] for i in sorted(coco.imgs)]
    assert sorted(Path(n).name for n in names) == sorted(truth)  # every readable image answered, once
    assert names == sorted(names, key=lambda n: (n.count("/"), n))  # natural order: images/ first, then more/
    assert {c["name"] for c in coco.cats.values()} == set(LABELS.split(","))
    assert coco.anns, "the shapes model finds shapes"
    for ann in coco.anns.values():
        image = coco.imgs[ann["image_id"]]
        assert (image["width"], image["height"]) == (
            truth[Path(image["file_name"]).name].width,
            truth[Path(image["file_name"]).name].height,
        )  # upright size
        x, y, w, h = ann["bbox"]
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= image["width"] and y + h <= image["height"]
        assert 0 < ann["score"] <= 1 and ann["attributes"]["score"] == ann["score"]
        label = coco.cats[ann["category_id"]]["name"]
        assert ann["attributes"]["prompt"] == f"[detection] {label}"
        assert ann["attributes"]["model_version"] == "tiny-shapes"
        assert ann["attributes"]["origin"] == "proposed"  # model output nobody has reviewed

    tasks = json.loads((clean_run / "label-studio-tasks.json").read_text())
    assert len(tasks) == IMAGES + 1
    interface = LabelInterface((clean_run / "label-config.xml").read_text())
    regions = 0
    for task in tasks:
        for prediction in task["predictions"]:
            assert interface.validate_prediction(prediction, return_errors=True) in (True, [])  # [] : no errors
            assert prediction["model_version"] == "tiny-shapes" and 0 <= prediction["score"] <= 1
            for region in prediction["result"]:
                assert 0 < region["score"] <= 1
                value = region["value"]
                assert value["x"] >= 0 and value["x"] + value["width"] <= 100 + 1e-9
                assert value["y"] >= 0 and value["y"] + value["height"] <= 100 + 1e-9
            regions += len(prediction["result"])
    assert regions == len(coco.anns)
    broken = next(t for t in tasks if t["data"]["image"].endswith("broken.jpg"))
    assert broken["predictions"] == []


def _child(shapes: Path, out: Path, **env: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "minigpt_annotate", *_args(shapes / "images", out, "--labels", LABELS, "--quiet")]
    # --batch-images 4 and a kill after 3 images: the process dies inside a batch, with one image answered in memory
    return subprocess.Popen(
        command, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish_and_compare(shapes: Path, out: Path, clean_run: Path) -> None:
    assert main(_args(shapes / "images", out, "--labels", LABELS, "--quiet")) == 0
    keys = _journal_keys(out)
    assert len(keys) == len(set(keys)) == IMAGES + 1  # every image, each exactly once
    _same_files(out, clean_run)


def test_resume_after_sigkill_at_a_fixed_point_does_every_image_once(shapes: Path, clean_run: Path, tmp_path: Path):
    out = tmp_path / "out"
    child = _child(shapes, out, MINIGPT_AUTOLABEL_KILL_AFTER="3")
    _, stderr = child.communicate(timeout=HANG_S)
    assert child.returncode == -signal.SIGKILL, stderr[-2000:]
    assert len(_journal_keys(out)) == 3
    assert not (out / "proposals.coco.json").exists()  # no output file before the end
    _finish_and_compare(shapes, out, clean_run)


def test_resume_after_sigkill_from_a_timer(shapes: Path, clean_run: Path, tmp_path: Path):
    out = tmp_path / "out"
    child = _child(shapes, out)
    deadline = time.monotonic() + HANG_S
    try:
        while time.monotonic() < deadline and child.poll() is None:
            if (out / "journal.sqlite").is_file():
                try:
                    if _journal_keys(out):
                        break
                except sqlite3.OperationalError:
                    pass  # the journal is being created
            time.sleep(0.05)
        assert child.poll() is None, "the run ended before it could be killed"  # 9 images take seconds each
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=HANG_S)
    finally:
        if child.poll() is None:
            child.kill()
    assert 1 <= len(_journal_keys(out)) < IMAGES + 1
    _finish_and_compare(shapes, out, clean_run)


def test_a_rerun_with_other_labels_is_refused_and_changes_nothing(
    shapes: Path, clean_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    out = tmp_path / "out"
    shutil.copytree(clean_run, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(_args(shapes / "images", out, "--labels", "square,circle")) == 1
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "--out" in error
    assert "labels: square, circle, triangle -> square, circle" in error  # what changed, as the user typed it
    after = {p.name: p.read_bytes() for p in out.iterdir() if not p.name.endswith(("-shm", "-wal"))}
    assert after == before  # SQLite's shared-memory index of the read-only look may appear; no data changes


LABEL_CONFIG_WITHOUT_RECTANGLES = """<View>
  <Image name="image" value="$image"/>
  <Choices name="kind" toName="image"><Choice value="cat"/></Choices>
</View>
"""


@pytest.mark.parametrize("case", ["unknown source type", "empty folder", "no RectangleLabels", "missing model"])
def test_bad_input_is_one_line_and_writes_nothing(
    case: str, shapes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    out = tmp_path / "out"
    source, extra, model = shapes / "images", ["--labels", LABELS], str(SHIPPED_DIR)
    if case == "unknown source type":
        source = tmp_path / "images.txt"
        source.write_text("a.jpg\n")
    elif case == "empty folder":
        source = tmp_path / "empty"
        source.mkdir()
    elif case == "no RectangleLabels":
        config = tmp_path / "config.xml"
        config.write_text(LABEL_CONFIG_WITHOUT_RECTANGLES)
        extra = ["--label-config", str(config)]
    else:
        model = str(tmp_path / "no-such-model")
    argv = ["autolabel", str(source), "--model", model, "--out", str(out), "--device", "cpu", *extra]
    assert main(argv) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("minigpt-annotate: error: ") and "\n" not in error
    assert ";" in error  # the cause; then the fix
    assert not out.exists()


def test_coco_manifest_and_label_studio_sources(shapes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """A COCO file's categories are the labels; a manifest asks [refer] for its phrases; a Label Studio export's
    /data/local-files/ paths resolve under --root and its tasks come back with predictions."""
    coco_out = tmp_path / "coco"
    assert main(_args(shapes / "annotations.json", coco_out, "--quiet")) == 0
    coco = json.loads((coco_out / "proposals.coco.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["square", "circle", "triangle"]
    assert len(coco["images"]) == 4  # the other 4 moved to images/more/, so the COCO file's paths miss them
    summary = json.loads((coco_out / "summary.json").read_text())
    assert (summary["answered"], summary["failed"]) == (4, 4)  # a missing file is a failure, not a stop

    images = sorted((shapes / "images").glob("*.*"))[:2]
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"image": str(p), "phrases": ["the shape"]}) + "\n" for p in images))
    refer_out = tmp_path / "refer"
    assert main(_args(manifest, refer_out, "--task", "refer", "--quiet")) == 0
    refer = json.loads((refer_out / "proposals.coco.json").read_text())
    assert [c["name"] for c in refer["categories"]] == ["the shape"]
    assert refer["annotations"], "the shapes model finds a shape"
    assert len(refer["annotations"]) <= len(images)  # [refer] names one object: one box per phrase, the best
    assert all(a["attributes"]["prompt"].startswith("[refer] ") for a in refer["annotations"])
    assert all("the shape" in a["attributes"]["prompt"] for a in refer["annotations"])

    export = tmp_path / "export.json"
    export.write_text(
        json.dumps(
            [{"id": 7 + i, "data": {"img": f"/data/local-files/?d=images/{p.name}"}} for i, p in enumerate(images)]
        )
    )
    config = tmp_path / "config.xml"
    config.write_text(
        '<View><Image name="pic" value="$img"/><RectangleLabels name="box" toName="pic">'
        '<Label value="Square" predicted_values="square"/><Label value="Round" prompt="circle"/>'
        "</RectangleLabels></View>"
    )
    ls_out = tmp_path / "ls"
    assert main(_args(export, ls_out, "--label-config", str(config), "--root", str(shapes), "--quiet")) == 0
    tasks = json.loads((ls_out / "label-studio-tasks.json").read_text())
    assert [t["id"] for t in tasks] == [7, 8]
    interface = LabelInterface(config.read_text())
    for task in tasks:
        assert task["data"]["img"].startswith("/data/local-files/?d=images/")
        for prediction in task["predictions"]:
            assert interface.validate_prediction(prediction, return_errors=True) in (True, [])  # [] : no errors
            for region in prediction["result"]:
                assert (region["from_name"], region["to_name"]) == ("box", "pic")
    prompts = {
        a["attributes"]["prompt"] for a in json.loads((ls_out / "proposals.coco.json").read_text())["annotations"]
    }
    assert prompts <= {"[detection] square", "[detection] circle"}  # predicted_values / prompt, as the backend asks

    escaped = tmp_path / "escape.json"
    escaped.write_text(json.dumps([{"data": {"image": "/data/local-files/?d=../../etc/passwd"}}]))
    assert main(_args(escaped, tmp_path / "none", "--labels", "x", "--root", str(shapes))) == 1
    assert "outside --root" in capsys.readouterr().err
    remote = tmp_path / "remote.json"
    remote.write_text(json.dumps([{"data": {"image": "https://example.com/a.jpg"}}]))
    assert main(_args(remote, tmp_path / "none", "--labels", "x")) == 1
    assert "not supported yet" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def test_a_finished_run_rewrites_its_files_without_loading_the_model(shapes: Path, clean_run: Path, tmp_path: Path):
    """A model folder holding only the config (same fingerprint, same version) is enough to rewrite the files."""
    out = tmp_path / "out"
    shutil.copytree(clean_run, out)
    for name in OUTPUTS:
        (out / name).unlink()
    config_only = tmp_path / SHIPPED_DIR.name
    config_only.mkdir()
    shutil.copy(SHIPPED_DIR / "config.json", config_only / "config.json")
    argv = ["autolabel", str(shapes / "images"), "--model", str(config_only), "--out", str(out), "--labels", LABELS]
    assert main([*argv, "--quiet"]) == 0
    _same_files(out, clean_run)


def test_two_runs_never_share_a_journal(
    shapes: Path, clean_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    import fcntl  # the journal's lock (POSIX; on Windows autolabel runs without one)

    out = tmp_path / "out"
    shutil.copytree(clean_run, out)
    with open(out / "journal.lock", "ab") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main(_args(shapes / "images", out, "--labels", LABELS, "--quiet")) == 1
    error = capsys.readouterr().err.strip()
    assert "another autolabel run" in error and "\n" not in error


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
_LABELS = st.lists(st.text(max_size=8), max_size=3)
_IDS = st.none() | st.integers() | st.text(max_size=4) | _JSON
_REFERENCES = st.one_of(
    st.text(max_size=20),
    st.builds(lambda t: f"/data/local-files/?d={t}", st.text(max_size=20)),
    st.sampled_from(
        ["/data/upload/1/a.jpg", "s3://bucket/a.jpg", "../a.jpg", "/data/local-files/?d=%00", "a\x00.png", "~/a.png"]
    ),
)


@settings(max_examples=150, derandomize=True)
@given(
    lines=st.lists(
        st.one_of(
            _JSON.map(json.dumps),
            st.builds(
                lambda i, ls, ps: json.dumps({"image": i, "labels": ls, "phrases": ps}), _REFERENCES, _JSON, _JSON
            ),
            st.text(max_size=30),
        ),
        max_size=4,
    ),
    tasks=st.one_of(
        _JSON,
        st.lists(st.builds(lambda i, d: {"id": i, "data": {"image": d}}, _IDS, _REFERENCES | _JSON), max_size=4),
    ),
)
def test_any_manifest_or_export_is_read_or_refused_in_one_line(lines: list[str], tasks: object) -> None:
    """Whatever a manifest or a Label Studio export holds, reading it gives items or a SourceError, never another
    exception (which the command line would show as a bare cause without a fix, or as a traceback)."""
    with tempfile.TemporaryDirectory() as folder:
        manifest, export = Path(folder) / "m.jsonl", Path(folder) / "e.json"
        manifest.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
        export.write_text(json.dumps(tasks), encoding="utf-8")
        for path in (manifest, export):
            try:
                found = read_source(path, root=Path(folder))
            except SourceError as err:
                assert "\n" not in str(err) and ";" in str(err)
            else:
                assert found.items and all(isinstance(item.path, Path) for item in found.items)


def test_a_manifest_line_asks_for_its_own_labels(shapes: Path, tmp_path: Path):
    images = sorted((shapes / "images").glob("*.*"))[:2]
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(
        json.dumps({"image": str(images[0]), "labels": ["circle"]})
        + "\n\n"  # blank lines are allowed
        + json.dumps({"image": str(images[1]), "labels": ["square", "triangle"]})
        + "\n"
    )
    out = tmp_path / "out"
    assert main(_args(manifest, out, "--quiet")) == 0
    coco = json.loads((out / "proposals.coco.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["circle", "square", "triangle"]
    assert coco["annotations"], "the shapes model finds shapes"
    asked = {1: {"[detection] circle"}, 2: {"[detection] square", "[detection] triangle"}}
    for annotation in coco["annotations"]:
        assert annotation["attributes"]["prompt"] in asked[annotation["image_id"]]
    # the run's identity holds the manifest's content: another label on a line refuses to resume
    manifest.write_text(json.dumps({"image": str(images[0]), "labels": ["square"]}) + "\n")
    assert main(_args(manifest, out, "--quiet")) == 1


def test_retry_failed_asks_again_what_failed_and_keeps_what_was_answered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failure stays a failure on resume (a bad image is not re-read forever); --retry-failed asks again, e.g.
    once the file is fixed or the server that held it is back, and leaves the answered images as they were."""
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (64, 48), "white").save(folder / "a.png")
    (folder / "b.png").write_bytes(b"not a png yet")
    out = tmp_path / "out"
    for extra in ((), ()):  # the first run, then the same command: b.png is not asked again
        assert main(_args(folder, out, "--labels", LABELS, "--quiet", *extra)) == 0
        summary = json.loads(capsys.readouterr().out)
        assert (summary["answered"], summary["failed"]) == (1, 1)
    assert summary["this_run"]["images"] == 0
    answered = (out / "proposals.coco.json").read_bytes()

    Image.new("RGB", (32, 32), "white").save(folder / "b.png")  # fixed
    assert main(_args(folder, out, "--labels", LABELS, "--quiet", "--retry-failed")) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["answered"], summary["failed"], summary["this_run"]["images"]) == (2, 0, 1)
    assert (out / "failures.jsonl").read_text() == ""
    coco = json.loads((out / "proposals.coco.json").read_text())
    assert [(i["file_name"], i["width"]) for i in coco["images"]] == [("a.png", 64), ("b.png", 32)]
    assert json.loads(answered)["images"][0] == coco["images"][0]  # a.png was not asked again
