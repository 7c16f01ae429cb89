"""Training recipes (issue 15, item 1): the file format's one-line errors, the mixture sampler's shares and random
access, every dataset kind, the official recipes on stand-in data, and a two-stage run that resumes exactly."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import load_file
from test_cli import assert_one_line_error, run

from model.annotations import Annotation, Box, Category, Dataset, ImageRecord, Task
from model.coco import read_coco, write_coco
from model.recipes import OFFICIAL, SHAPES, recipe_path
from model.synthetic.shapes import make_shapes
from model.training.recipe import DatasetKind, DatasetSpec, RecipeError, load_recipe, parse_recipe
from model.training.runner import stage_dir, train_recipe
from model.training.sampler import BLOCK, MixtureSampler
from model.training.sources import load_dataset, read_label_studio_export
from model.training.trainer import FinetuneError


def _stage(**overrides) -> dict:
    stage = {
        "name": "s1",
        "schedule": {"steps": 4, "batch_size": 2},
        "datasets": [
            {"name": "a", "kind": "shapes", "shapes": {"images": 4, "seed": 1}, "ratio": 0.75},
            {"name": "b", "kind": "shapes", "shapes": {"images": 4, "seed": 2}, "ratio": 0.25},
        ],
    }
    stage.update(overrides)
    return stage


def _recipe(*stages: dict, **overrides) -> dict:
    return {"name": "r", "stages": list(stages) or [_stage()], **overrides}


# --- the format: one-line causes -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda s: s["datasets"][0].update(kind="webdataset"), ["dataset 'a'", "unknown dataset kind 'webdataset'"]),
        (lambda s: s["datasets"][0].update(ratio=0.5), ["stage 's1'", "ratios sum to 0.75, not 1", "normalise: true"]),
        (lambda s: s.update(trains={"projection": False, "lora": None}), ["stage 's1'", "nothing trains"]),
        (lambda s: s["datasets"][1].update(tasks=["segment"]), ["dataset 'b'", "unknown task 'segment'"]),
        (lambda s: s["datasets"][0].update(ratios=1), ["dataset 'a'", "unknown field"]),
        (lambda s: s["schedule"].update(epochs=2), ["schedule", "exactly one of `steps` or `epochs`"]),
        (lambda s: s["datasets"][1].update(name="a"), ["used twice: a"]),
        (lambda s: s["datasets"][0].update(kind="coco"), ["a coco dataset needs a `path`"]),
        (lambda s: s["datasets"][1].update(kind="distill", shapes=None), ["dataset 'b'", "needs a `source`"]),
        (
            lambda s: s["datasets"][1].update(kind="distill", shapes=None, source="c"),
            ["stage 's1'", "source 'c' is not a dataset of this stage; name one of: a"],
        ),
        (lambda s: s["datasets"][0].update(source="b"), ["dataset 'a'", "are for kind distill, not shapes"]),
    ],
)
def test_a_bad_recipe_is_refused_with_a_one_line_cause(change, words: list[str]) -> None:
    stage = _stage()
    change(stage)
    with pytest.raises(RecipeError) as caught:
        parse_recipe(_recipe(stage), "bad.yaml")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("bad.yaml: ")
    for word in words:
        assert word in message, message


def test_set_changes_one_field_by_name_or_index_and_is_validated_like_the_file(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps(_recipe(_stage())))
    changes = ["stages.s1.schedule.steps=7", "stages.0.datasets.b.ratio=0.5", "stages.s1.datasets.a.ratio=0.5",
               "seed=3", "stages.s1.trains.lora.r=4"]  # fmt: skip
    recipe = load_recipe(path, overrides=changes)
    stage = recipe.stages[0]
    assert (stage.schedule.steps, stage.ratios, recipe.seed, stage.trains.lora.r) == (7, [0.5, 0.5], 3, 4)
    assert json.loads(path.read_text()) == _recipe(_stage())  # the file itself is untouched
    for setting, words in [
        ("steps", "expected PATH=VALUE"),
        ("stages.s2.schedule.steps=1", "no item 's2' in stages (names: s1; or an index from 0)"),
        ("name.first=1", "name is a value, not a section"),
        ("stages.s1.schedule.step=1", "stage 's1', schedule, step: unknown field"),
        ("stages.s1.schedule.lr=-1", "stage 's1', schedule, lr"),
    ]:
        with pytest.raises(RecipeError) as caught:
            load_recipe(path, overrides=[setting])
        assert "\n" not in str(caught.value) and words in str(caught.value), str(caught.value)


def test_ratios_as_weights_are_normalised_only_when_asked() -> None:
    stage = _stage(normalise=True)
    stage["datasets"][0]["ratio"], stage["datasets"][1]["ratio"] = 30, 10
    assert parse_recipe(_recipe(stage)).stages[0].ratios == [0.75, 0.25]


def test_missing_files_and_bad_yaml_are_named(tmp_path: Path) -> None:
    stage = _stage(datasets=[{"name": "mine", "kind": "coco", "path": "gone/annotations.json", "ratio": 1}])
    (tmp_path / "r.json").write_text(json.dumps(_recipe(stage)))
    with pytest.raises(RecipeError, match=r"stage 's1', dataset 'mine': path .*gone/annotations\.json not found"):
        load_recipe(tmp_path / "r.json")
    (tmp_path / "bad.yaml").write_text("name: r\nstages: [\n")
    with pytest.raises(RecipeError, match=r"bad\.yaml is not valid YAML at line 3"):
        load_recipe(tmp_path / "bad.yaml")
    with pytest.raises(RecipeError, match=r"recipe .*nope\.yaml not found"):
        load_recipe(tmp_path / "nope.yaml")
    # From the command line too, before any model loads.
    proc = run("train", str(tmp_path / "r.json"), "--out", str(tmp_path / "out"), "--base", str(tmp_path))
    assert_one_line_error(proc, "dataset 'mine'", "not found")
    assert not (tmp_path / "out").exists()


# --- the sampler -----------------------------------------------------------------------------------------------------


def test_each_dataset_gets_its_share_of_many_draws() -> None:
    ratios = [0.5, 0.3, 0.15, 0.049, 0.001]
    n = 100_000
    draws = MixtureSampler(ratios, seed=7).draws(0, n)
    for d, p in enumerate(ratios):
        share = sum(1 for x in draws if x.dataset == d) / n
        # Fixed seed, so this is not flaky; four binomial standard errors would pass a correct sampler by chance
        # only once in 15,000 seeds, and a sampler off by a tenth of the ratio fails it for every ratio above 1 %.
        assert abs(share - p) <= 4 * math.sqrt(p * (1 - p) / n), (d, share, p)
    # Each draw continues its own dataset's stream: positions 0, 1, 2 … per dataset.
    seen = [0] * len(ratios)
    for x in draws:
        assert x.position == seen[x.dataset]
        seen[x.dataset] += 1


@given(
    ratios=st.lists(st.floats(0.01, 10), min_size=1, max_size=5),
    seed=st.integers(0, 2**31),
    index=st.integers(0, 3 * BLOCK),
)
def test_any_draw_is_reached_directly_as_a_resumed_run_does(ratios: list[float], seed: int, index: int) -> None:
    sequential = MixtureSampler(ratios, seed).draws(0, index + 1)[-1]
    assert MixtureSampler(ratios, seed).draw(index) == sequential


# --- dataset kinds ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six generated scenes (COCO with phrases)."""
    return make_shapes(tmp_path_factory.mktemp("scenes"), images=6, seed=4, exif_fraction=0.0)


def test_label_studio_export_reads_the_latest_annotation_per_task(tmp_path: Path, scenes: Path) -> None:
    records = read_coco(scenes).images[:2]
    tasks = []
    for i, record in enumerate(records):
        w, h = record.width, record.height
        box = record.annotations[0].box

        def result(label: str, box: Box = box, w: int = w, h: int = h) -> list[dict]:
            value = {"x": 100 * box.x0 / w, "y": 100 * box.y0 / h, "width": 100 * box.width / w}
            value |= {"height": 100 * box.height / h, "rectanglelabels": [label]}
            region = {"type": "rectanglelabels", "value": value, "original_width": w, "original_height": h}
            return [region]

        annotations = [
            {"id": 1, "updated_at": "2026-01-01T00:00:00Z", "result": result("old")},
            {"id": 2, "updated_at": "2026-01-02T00:00:00Z", "result": result("new")},
            {"id": 3, "updated_at": "2026-01-03T00:00:00Z", "result": [], "was_cancelled": True},
        ]
        tasks.append({"id": i, "data": {"image": f"/data/upload/1/{record.path.name}"}, "annotations": annotations})
    tasks.append({"id": 9, "data": {"image": "/data/upload/1/never.png"}, "annotations": []})
    (tmp_path / "export.json").write_text(json.dumps(tasks))
    dataset = read_label_studio_export(tmp_path / "export.json", scenes.parent / "images")
    assert [r.path for r in dataset.images] == [r.path for r in records]  # the unlabelled task gives nothing
    for got, record in zip(dataset.images, records, strict=True):
        assert [a.label for a in got.annotations] == ["new"]
        assert got.annotations[0].box.iou(record.annotations[0].box) > 0.999
    (tmp_path / "other.json").write_text(json.dumps({"not": "tasks"}))
    with pytest.raises(RecipeError, match="not a Label Studio JSON export"):
        read_label_studio_export(tmp_path / "other.json")


def test_corrections_and_autolabel_folders_read_as_their_surfaces_write_them(tmp_path: Path, scenes: Path) -> None:
    dataset = read_coco(scenes)
    # The backend's store: annotations.json with file names relative to the folder (ml_backend/corrections.py).
    store = tmp_path / "store"
    shutil.copytree(scenes.parent / "images", store / "images")
    moved = [r.model_copy(update={"path": store / "images" / r.path.name}) for r in dataset.images]
    write_coco(dataset.model_copy(update={"images": moved}), store / "annotations.json")
    spec = DatasetSpec(name="fixes", kind=DatasetKind.corrections, path=str(store), ratio=1)
    assert [r.path for r in load_dataset(spec, tmp_path).images] == [r.path for r in moved]

    # autolabel: proposals.coco.json relative to the images it read, which summary.json names; scores filtered.
    run_dir = tmp_path / "auto"
    run_dir.mkdir()
    scored = []
    for record in dataset.images:
        boxes = [a.model_copy(update={"score": 0.3 + 0.2 * i}) for i, a in enumerate(record.annotations)]
        scored.append(record.model_copy(update={"annotations": boxes}))
    write_coco(dataset.model_copy(update={"images": scored}), run_dir / "proposals.coco.json", scenes.parent)
    (run_dir / "summary.json").write_text(json.dumps({"source": str(scenes.parent)}))
    spec = DatasetSpec(name="auto", kind=DatasetKind.autolabel, path=str(run_dir), ratio=1, min_score=0.6)
    auto = load_dataset(spec, tmp_path)
    assert [r.path for r in auto.images] == [r.path for r in dataset.images]
    kept = [a.score for r in auto.images for a in r.annotations]
    assert kept and min(kept) >= 0.6 and len(kept) < sum(len(r.annotations) for r in dataset.images)
    with pytest.raises(RecipeError, match=r"no annotations\.json"):
        load_dataset(DatasetSpec(name="x", kind=DatasetKind.corrections, path=str(tmp_path), ratio=1), tmp_path)


# --- the official recipes on stand-ins -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", OFFICIAL)
def test_official_recipe_loads_and_drives_the_sampler_on_stand_ins(name: str, tmp_path: Path, scenes: Path) -> None:
    unresolved = load_recipe(recipe_path(name), check_files=False)
    with pytest.raises(RecipeError, match="not found; fix the path, or set data_root"):
        unresolved.check_files()  # the real data is not here

    # One tiny COCO stand-in per dataset name, where the recipe expects it under --data-root.
    stage = unresolved.stages[0]
    base = read_coco(scenes)
    for i, spec in enumerate(stage.datasets):
        folder = tmp_path / spec.name
        folder.mkdir()
        write_coco(base.model_copy(update={"images": base.images[: 1 + i % 5]}), folder / "annotations.json")
    recipe = load_recipe(recipe_path(name), data_root=tmp_path)
    stage = recipe.stages[0]
    assert stage.trains.projection and stage.trains.lora is not None and stage.trains.lora.r == 64
    assert stage.trains.lora.targets == ["q_proj", "v_proj"] and not stage.trains.vision and not stage.trains.llm
    sizes = [len(load_dataset(spec, tmp_path).images) for spec in stage.datasets]
    assert sizes == [1 + i % 5 for i in range(len(stage.datasets))]

    n = 50_000
    draws = MixtureSampler(stage.ratios, recipe.seed).draws(0, n)
    for d, (spec, p) in enumerate(zip(stage.datasets, stage.ratios, strict=True)):
        share = sum(1 for x in draws if x.dataset == d) / n
        assert abs(share - p) <= 4 * math.sqrt(p * (1 - p) / n) + 1e-9, (spec.name, share, p)
    # Each draw lands on an image of the drawn stand-in, epoch after epoch of it.
    last = {}
    for x in draws[:2000]:
        image = x.position % sizes[x.dataset]
        assert image == (last.get(x.dataset, -1) + 1) % sizes[x.dataset]
        last[x.dataset] = image
    if name.endswith("stage3.yaml"):  # the released config's numbers, verbatim
        weights = {spec.name: spec.ratio for spec in stage.datasets}
        assert len(weights) == 22 and sum(weights.values()) == 730 and weights["gqa"] == 50
        assert stage.ratios[[s.name for s in stage.datasets].index("refcoco")] == pytest.approx(25 / 730)
        assert (stage.schedule.lr, stage.schedule.min_lr, stage.schedule.warmup_steps) == (1e-5, 1e-6, 1000)


def test_the_shapes_recipe_is_what_make_tiny_runs() -> None:
    from model.synthetic.shapes_model import ShapesRecipe

    recipe = load_recipe(recipe_path(SHAPES))
    assert [s.name for s in recipe.stages] == ["single-shape", "several-shapes", "refine"]
    assert all(s.trains.llm and s.trains.lora is None and not s.trains.vision for s in recipe.stages)
    assert ShapesRecipe().training == recipe


# --- running: two stages, a mixture, resume inside each stage --------------------------------------------------------


def _two_stage_recipe(tmp_path: Path, scenes: Path) -> dict:
    coco = {"name": "coco", "kind": "coco", "path": str(scenes), "ratio": 0.4, "tasks": ["refer", "identify"]}
    shapes = {"name": "gen", "kind": "shapes", "shapes": {"images": 5, "seed": 2, "max_shapes": 2}, "ratio": 0.6}
    shapes["detection_negatives"] = True
    schedule = {"steps": 6, "lr": 2e-3, "min_lr": 1e-4, "warmup_steps": 1, "batch_size": 3, "grad_accum": 2}
    first = {"name": "mix", "datasets": [coco, shapes], "schedule": schedule, "max_length": 512}
    first["trains"] = {"projection": True, "lora": {"r": 4, "alpha": 8}}
    second = {"name": "refer-only", "datasets": [dict(coco, ratio=1)], "schedule": dict(schedule, steps=4)}
    second["trains"] = {"projection": False, "lora": {"r": 4, "alpha": 8}}
    return _recipe(first, second, seed=5, save_every=2)


def test_a_run_cut_inside_each_stage_resumes_to_the_same_weights(
    tmp_path: Path, scenes: Path, tiny_model_dir: Path
) -> None:
    path = tmp_path / "two.json"
    path.write_text(json.dumps(_two_stage_recipe(tmp_path, scenes)))
    recipe = load_recipe(path)
    whole = train_recipe(recipe, tmp_path / "whole", base=tiny_model_dir, device="cpu", progress=False)
    assert whole.stages["mix"].drawn and set(whole.stages["mix"].drawn) == {"coco", "gen"}
    assert sum(whole.stages["mix"].drawn.values()) == 12  # 6 steps x 2 micro-batches

    def cut_at(stage: str, at: int):
        def hook(name: str, step: int, loss: float) -> None:
            if name == stage and step == at:
                raise KeyboardInterrupt

        return hook

    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        train_recipe(recipe, cut, base=tiny_model_dir, device="cpu", progress=False, on_step=cut_at("mix", 3))
    with pytest.raises(KeyboardInterrupt):  # resumes inside stage 1 at step 3, finishes it, is cut in stage 2
        train_recipe(
            recipe, cut, base=tiny_model_dir, resume=True, device="cpu", progress=False, on_step=cut_at("refer-only", 1)
        )
    done = train_recipe(recipe, cut, base=tiny_model_dir, resume=True, device="cpu", progress=False)
    assert done.stages["refer-only"].resumed_from == 1
    for stage in ("mix", "refer-only"):  # the same losses at every step, and the same draws
        state = (
            "checkpoints/step-0000006/trainer_state.json"
            if stage == "mix"
            else "checkpoints/step-0000004/trainer_state.json"
        )
        a = json.loads((stage_dir(tmp_path / "whole", recipe, 0 if stage == "mix" else 1) / state).read_text())
        b = json.loads((stage_dir(cut, recipe, 0 if stage == "mix" else 1) / state).read_text())
        assert a == b
    assert done.stages["mix"].drawn == whole.stages["mix"].drawn

    # Bit-identical: the merged model stage 1 handed on, and the final adapters.
    first_a = load_file(str(stage_dir(tmp_path / "whole", recipe, 0) / "model.safetensors"))
    first_b = load_file(str(stage_dir(cut, recipe, 0) / "model.safetensors"))
    assert first_a.keys() == first_b.keys() and all(torch.equal(first_a[k], first_b[k]) for k in first_a)
    final_a = load_file(str(tmp_path / "whole" / "adapter_model.safetensors"))
    final_b = load_file(str(cut / "adapter_model.safetensors"))
    assert final_a.keys() == final_b.keys() and all(torch.equal(final_a[k], final_b[k]) for k in final_a)
    adapter = json.loads((cut / "adapter_config.json").read_text())
    assert Path(adapter["base_model_name_or_path"]) == stage_dir(cut, recipe, 0).resolve()

    # Another recipe cannot resume into this folder.
    other = recipe.model_copy(update={"seed": 6})
    with pytest.raises(FinetuneError, match=r"another recipe \(seed: 5 → 6\)"):
        train_recipe(other, cut, base=tiny_model_dir, resume=True, device="cpu", progress=False)


def test_train_from_the_command_line_writes_a_model_that_loads(
    tmp_path: Path, scenes: Path, tiny_model_dir: Path
) -> None:
    data = _two_stage_recipe(tmp_path, scenes)
    path = tmp_path / "two.yaml"
    import yaml

    path.write_text(yaml.safe_dump(data))
    # Both stages shortened from the command line: one by name, one by index.
    shorter = ["--set", "stages.mix.schedule.steps=1", "--set", "stages.1.schedule.steps=1"]
    proc = run("train", str(path), "--out", str(tmp_path / "out"), "--base", str(tiny_model_dir), "--device", "cpu",
               *shorter)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert list(result["stages"]) == ["mix", "refer-only"] and all(s["steps"] == 1 for s in result["stages"].values())
    from model.proposer import Proposer

    proposer = Proposer.from_pretrained(tmp_path / "out", device="cpu")
    record = read_coco(scenes).images[0]
    assert proposer.propose(record.path, Task.refer, "circle").text is not None
    assert_one_line_error(
        run("train", str(path), "--out", str(tmp_path / "out"), "--base", str(tiny_model_dir)), "--resume"
    )


def test_finetune_arguments_become_a_one_stage_recipe_with_the_same_settings(tmp_path: Path) -> None:
    from model.training import FinetuneConfig
    from model.training.runner import finetune_recipe

    config = FinetuneConfig(lora_r=8, max_steps=5, batch_size=3, grad_accum=2, detection_negatives=True, seed=9)
    recipe = finetune_recipe(tmp_path / "a.json", None, config)
    (stage,) = recipe.stages
    same = ("lora_r", "lora_alpha", "lora_targets", "train_projection", "learning_rate", "min_lr", "warmup_steps")
    same += ("weight_decay", "max_steps", "batch_size", "grad_accum", "seed", "max_length", "save_every", "merge")
    rebuilt = stage.config(recipe, merge=config.merge)
    assert {k: getattr(rebuilt, k) for k in same} == {k: getattr(config, k) for k in same}
    (data,) = stage.datasets
    assert data.detection_negatives and data.tasks == config.tasks and data.kind is DatasetKind.coco


def test_grounding_from_phrases_lists_every_referable_object_and_parses_back() -> None:
    from model.grammar import parse_boxes
    from model.prompts import GROUNDING_TRAINING_TEMPLATES
    from model.training import TemplateChoice, build_samples

    record = ImageRecord(
        path=Path("street.png"),
        width=200,
        height=100,
        annotations=[
            Annotation(box=Box.from_xyxy([120, 50, 200, 100]), label="square"),
            Annotation(box=Box.from_xyxy([101, 10, 151, 40]), label="circle"),  # one of two circles, no phrase
            Annotation(box=Box.from_xyxy([10, 20, 50, 60]), label="circle", phrase="The  Red circle."),
        ],
    )
    dataset = Dataset(categories=[Category(id=1, name="circle"), Category(id=2, name="square")], images=[record])
    (sample,) = build_samples(dataset, tasks=[Task.grounding], templates=TemplateChoice.default)
    assert sample.instruction == "[grounding] describe this image in detail"
    assert sample.answer == "<p>the red circle</p> {<5><20><25><60>} <p>square</p> {<60><50><100><100>}"
    parsed = parse_boxes(sample.answer, 200, 100)
    assert [b.phrase for b in parsed.boxes] == ["the red circle", "square"] and not parsed.skipped
    pooled = build_samples(dataset, tasks=[Task.grounding])
    assert pooled[0].instruction in GROUNDING_TRAINING_TEMPLATES
    # Default tasks leave grounding out, so `finetune` builds what it always built.
    assert {s.task for s in build_samples(dataset)} == {Task.detection, Task.refer, Task.identify}


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@given(data=_JSON | st.fixed_dictionaries({"name": st.text(max_size=4), "stages": st.lists(_JSON, max_size=3)}))
def test_any_recipe_data_is_a_recipe_or_a_one_line_error(data) -> None:
    try:
        parse_recipe(data, "fuzz.yaml")
    except RecipeError as err:
        assert "\n" not in str(err) and str(err).startswith("fuzz.yaml: ")


@given(tasks=st.lists(_JSON | st.fixed_dictionaries({"data": _JSON, "annotations": _JSON}), max_size=4))
def test_any_label_studio_export_is_a_dataset_or_a_one_line_error(tasks, tmp_path_factory) -> None:
    from model.errors import MiniGPTError

    path = tmp_path_factory.mktemp("ls") / "export.json"
    path.write_text(json.dumps(tasks))
    try:
        read_label_studio_export(path)
    except MiniGPTError as err:  # RecipeError, or the image of a task without boxes cannot be read
        assert "\n" not in str(err)
