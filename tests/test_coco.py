"""Tests for model.coco: exports re-read by pycocotools and by read_coco, atomic writes, and clear errors."""

from __future__ import annotations

import io
import json
import logging
import math
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import model.coco as coco
from model.annotations import Annotation, Box, Category, Dataset, ImageRecord, Origin, OriginalProposal, Task
from model.coco import (
    CocoError,
    categories_from_labels,
    load_with_pycocotools,
    read_coco,
    read_coco_with_report,
    write_coco,
)
from model.errors import MiniGPTError
from model.files import dump_json


def sample_dataset(images_dir: Path) -> Dataset:
    return Dataset(
        categories=[Category(id=3, name="cat"), Category(id=7, name="dog"), Category(id=9, name="unused")],
        images=[
            ImageRecord(
                path=images_dir / "a.jpg",
                width=640,
                height=480,
                annotations=[
                    Annotation(box=Box.from_xyxy((10, 20, 110, 220)), label="dog"),
                    Annotation(box=Box.from_xyxy((1.5, 2.25, 3.75, 400)), label="cat", phrase="the cat on the left"),
                    Annotation(box=Box.from_xyxy((300, 10, 639.5, 479)), label="cat", score=0.75),
                ],
            ),
            ImageRecord(path=images_dir / "sub" / "b.png", width=200, height=300),
            ImageRecord(
                path=images_dir / "c.png",
                width=50,
                height=60,
                annotations=[Annotation(box=Box.from_xyxy((0, 0, 50, 60)), label="dog", phrase="the whole dog")],
            ),
        ],
    )


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def minimal_coco(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "images": [{"id": 5, "file_name": "x.jpg", "width": 100, "height": 80}],
        "annotations": [
            {"id": 11, "image_id": 5, "category_id": 2, "bbox": [1, 2, 30, 40], "area": 1200, "iscrowd": 0}
        ],
        "categories": [{"id": 2, "name": "thing"}],
    }
    data.update(overrides)
    return data


# --------------------------------------------------------------------------------------------------------
# Round trip


def test_export_is_valid_coco_for_pycocotools(tmp_path: Path) -> None:
    dataset = sample_dataset(tmp_path)
    out = tmp_path / "ann.json"
    write_coco(dataset, out)

    api = load_with_pycocotools(out)
    assert api.getImgIds() == [1, 2, 3]
    assert [img["file_name"] for img in api.loadImgs([1, 2, 3])] == ["a.jpg", "sub/b.png", "c.png"]
    assert api.getCatIds() == [3, 7, 9]
    assert [c["supercategory"] for c in api.loadCats([3, 7, 9])] == ["", "", ""]
    assert api.getAnnIds(imgIds=[1]) == [1, 2, 3]
    assert api.getAnnIds(imgIds=[2]) == []
    assert api.getAnnIds(catIds=[7]) == [1, 4]

    anns = api.loadAnns(api.getAnnIds())
    expected = [a for record in dataset.images for a in record.annotations]
    ids_of = {"cat": 3, "dog": 7}
    for ann, want in zip(anns, expected, strict=True):
        assert ann["bbox"] == pytest.approx(list(want.box.xywh))
        assert all(isinstance(v, float) for v in ann["bbox"])
        assert ann["area"] == pytest.approx(want.box.area)
        assert ann["category_id"] == ids_of[want.label]
        assert ann["iscrowd"] == 0
        assert ann["segmentation"] == []
        assert ann.get("phrase") == want.phrase
        assert ann.get("score") == want.score
    assert "phrase" not in anns[0] and "score" not in anns[0]


def test_round_trip_gives_back_the_dataset(tmp_path: Path) -> None:
    dataset = sample_dataset(tmp_path)
    out = tmp_path / "ann.json"
    write_coco(dataset, out)
    assert read_coco(out) == dataset


def _provenance_dataset(images_dir: Path) -> Dataset:
    when = datetime(2026, 11, 29, 12, 30, tzinfo=UTC)
    return Dataset(
        categories=[Category(id=1, name="cat"), Category(id=2, name="dog")],
        images=[
            ImageRecord(
                path=images_dir / "a.jpg",
                width=640,
                height=480,
                annotations=[
                    Annotation(box=Box.from_xyxy((1, 2, 30, 40)), label="cat", changed_at=when),
                    Annotation(
                        box=Box.from_xyxy((50, 60, 150, 160)),
                        label="dog",
                        origin=Origin.accepted,
                        score=0.8,
                        model_version="tiny-shapes",
                        task=Task.detection,
                        prompt="[detection] dog",
                        changed_at=when,
                    ),
                    Annotation(
                        box=Box.from_xyxy((200, 210, 300, 320)),
                        label="cat",
                        origin=Origin.edited,
                        model_version="tiny-shapes",
                        task=Task.detection,
                        prompt="[detection] dog",
                        changed_at=when,
                        original=OriginalProposal(box=Box.from_xyxy((190, 200, 290, 300)), label="dog", score=0.55),
                        attributes={"reviewer": "ann"},
                    ),
                ],
            )
        ],
    )


def test_provenance_is_written_as_flat_attributes_pycocotools_keeps_and_reads_back(tmp_path: Path) -> None:
    dataset = _provenance_dataset(tmp_path)
    out = tmp_path / "ann.json"
    write_coco(dataset, out)
    manual, accepted, edited = load_with_pycocotools(out).loadAnns([1, 2, 3])
    assert manual["attributes"] == {"origin": "manual", "changed_at": "2026-11-29T12:30:00+00:00"}
    assert accepted["score"] == 0.8 and accepted["attributes"] == {
        "origin": "accepted",
        "model_version": "tiny-shapes",
        "task": "detection",
        "prompt": "[detection] dog",
        "changed_at": "2026-11-29T12:30:00+00:00",
    }
    assert "score" not in edited  # the model scored the proposal, not the box a person made of it
    assert edited["attributes"] == {
        "reviewer": "ann",
        "origin": "edited",
        "model_version": "tiny-shapes",
        "task": "detection",
        "prompt": "[detection] dog",
        "changed_at": "2026-11-29T12:30:00+00:00",
        "original_label": "dog",
        "original_score": 0.55,
        "original_x": 190.0,
        "original_y": 200.0,
        "original_width": 100.0,
        "original_height": 100.0,
    }
    assert read_coco(out) == dataset
    # A box that says nothing of where it came from writes no attributes, as before, and reads back as manual.
    plain = tmp_path / "plain.json"
    write_coco(sample_dataset(tmp_path), plain)
    assert all("attributes" not in ann for ann in json.loads(plain.read_text())["annotations"])
    assert all(a.origin is Origin.manual for image in read_coco(plain).images for a in image.annotations)


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"origin": "guessed"}, "attributes.origin 'guessed'; it must be one of manual, proposed, accepted, edited"),
        ({"task": 3}, "attributes.task 3; it must be a string"),
        ({"changed_at": "yesterday"}, "attributes.changed_at 'yesterday'; it must be an ISO 8601 time"),
        ({"original_x": 1, "original_y": 2}, "original box [1, 2, None, None]"),
        ({"original_x": 1, "original_y": 2, "original_width": 0, "original_height": 3}, "positive width and height"),
        ({"original_score": 1.5}, "attributes.original_score 1.5; it must be from 0 to 1"),
    ],
)
def test_bad_provenance_is_refused_with_what_it_must_be(tmp_path: Path, attributes: dict, message: str) -> None:
    data = minimal_coco()
    data["annotations"][0]["attributes"] = attributes
    with pytest.raises(CocoError, match="annotation 11 has") as raised:
        read_coco(write_json(tmp_path / "in.json", data))
    assert message in str(raised.value)


def test_other_tools_attributes_are_kept_when_scalar_and_ignored_otherwise(tmp_path: Path) -> None:
    data = minimal_coco()
    data["annotations"][0]["attributes"] = {"occluded": False, "track": {"id": 3}, "note": "blurry"}
    (annotation,) = read_coco(write_json(tmp_path / "in.json", data)).images[0].annotations
    assert (annotation.origin, annotation.attributes) == (Origin.manual, {"occluded": False, "note": "blurry"})


def test_keys_written(tmp_path: Path) -> None:
    out = tmp_path / "ann.json"
    write_coco(sample_dataset(tmp_path), out, supercategory="animal")
    data = json.loads(out.read_text(encoding="utf-8"))
    assert set(data) == {"images", "annotations", "categories"}
    assert data["images"][0] == {"id": 1, "file_name": "a.jpg", "width": 640, "height": 480}
    assert data["categories"][0] == {"id": 3, "name": "cat", "supercategory": "animal"}
    assert data["annotations"][2] == {
        "id": 3,
        "image_id": 1,
        "category_id": 3,
        "bbox": [300.0, 10.0, 339.5, 469.0],
        "area": 339.5 * 469.0,
        "iscrowd": 0,
        "segmentation": [],
        "score": 0.75,
    }


def test_file_names_relative_to_images_dir_else_absolute(tmp_path: Path) -> None:
    images_dir = tmp_path / "images"
    outside = tmp_path / "elsewhere" / "z.png"
    dataset = Dataset(
        images=[
            ImageRecord(path=images_dir / "deep" / "y.png", width=4, height=4),
            ImageRecord(path=outside, width=4, height=4),
            ImageRecord(path=images_dir / ".." / "images" / "w.png", width=4, height=4),
        ]
    )
    out = tmp_path / "coco" / "ann.json"
    out.parent.mkdir()
    write_coco(dataset, out, images_dir=images_dir)
    names = [img["file_name"] for img in json.loads(out.read_text())["images"]]
    assert names == ["deep/y.png", str(outside), "w.png"]

    back = read_coco(out, images_dir=images_dir)
    assert [r.path for r in back.images] == [images_dir / "deep" / "y.png", outside, images_dir / "w.png"]


def test_relative_paths_are_taken_from_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    dataset = Dataset(images=[ImageRecord(path=Path("pics/a.png"), width=4, height=4)])
    write_coco(dataset, Path("ann.json"), images_dir="pics")
    assert json.loads((tmp_path / "ann.json").read_text())["images"][0]["file_name"] == "a.png"
    assert read_coco("ann.json", images_dir="pics").images[0].path == Path("pics/a.png")


def test_read_keeps_file_order_ids_and_defaults(tmp_path: Path) -> None:
    data = {
        "images": [
            {"id": 42, "file_name": "b.jpg", "width": 10, "height": 10},
            {"id": 7, "file_name": "a.jpg", "width": 20, "height": 30},
        ],
        "annotations": [
            {"id": 100, "image_id": 7, "category_id": 5, "bbox": [1, 1, 2, 2]},
            {"id": 101, "image_id": 42, "category_id": 1, "bbox": [0, 0, 10, 10], "phrase": "it", "score": 0.5},
            {"id": 99, "image_id": 7, "category_id": 1, "bbox": [3, 4, 5, 6], "iscrowd": 0},
        ],
        "categories": [{"id": 5, "name": "five"}, {"id": 1, "name": "one", "supercategory": "x"}],
    }
    path = write_json(tmp_path / "in.json", data)
    report = read_coco_with_report(path)
    dataset = report.dataset
    assert dataset.categories == [Category(id=5, name="five"), Category(id=1, name="one")]
    assert [r.path for r in dataset.images] == [tmp_path / "b.jpg", tmp_path / "a.jpg"]
    assert report.image_ids == (42, 7)
    assert report.annotation_ids == ((101,), (100, 99))
    assert report.skipped == ()
    first = dataset.images[0].annotations[0]
    assert (first.label, first.phrase, first.score, first.origin) == ("one", "it", 0.5, Origin.manual)
    assert [a.box.xyxy for a in dataset.images[1].annotations] == [(1, 1, 3, 3), (3, 4, 8, 10)]
    assert dataset.images[1].annotations[0].phrase is None


def test_images_dir_overrides_the_files_folder(tmp_path: Path) -> None:
    path = write_json(tmp_path / "in.json", minimal_coco())
    assert read_coco(path, images_dir=tmp_path / "imgs").images[0].path == tmp_path / "imgs" / "x.jpg"


finite = st.floats(min_value=0, max_value=5000, allow_nan=False, allow_infinity=False)
sizes = st.floats(min_value=0.01, max_value=5000, allow_nan=False, allow_infinity=False)


@st.composite
def boxes(draw: st.DrawFn) -> Box:
    x, y, w, h = draw(finite), draw(finite), draw(sizes), draw(sizes)
    return Box(x0=x, y0=y, x1=x + w, y1=y + h)


@settings(max_examples=40, deadline=None)
@given(
    per_image=st.lists(st.lists(st.tuples(boxes(), st.sampled_from(["a", "b", "ç"])), max_size=4), max_size=4),
    phrase=st.one_of(st.none(), st.text(max_size=20)),
)
def test_round_trip_property(per_image: list[list[tuple[Box, str]]], phrase: str | None) -> None:
    dataset = Dataset(
        categories=categories_from_labels(["b", "ç", "a"]),
        images=[
            ImageRecord(
                path=Path(f"/data/img{i}.png"),
                width=10_001,  # holds every generated box: reading clips boxes to their image
                height=10_001,
                annotations=[Annotation(box=box, label=label, phrase=phrase) for box, label in anns],
            )
            for i, anns in enumerate(per_image)
        ],
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ann.json"
        write_coco(dataset, out, images_dir="/data")
        back = read_coco(out, images_dir="/data")
    assert back.categories == dataset.categories
    assert len(back.images) == len(dataset.images)
    for got, want in zip(back.images, dataset.images, strict=True):
        assert (got.path, got.width, got.height) == (want.path, want.width, want.height)
        assert len(got.annotations) == len(want.annotations)
        for a, b in zip(got.annotations, want.annotations, strict=True):
            assert (a.label, a.phrase) == (b.label, b.phrase)
            # x + (x1 - x) may differ from x1 in the last bit: COCO stores width, not x1.
            assert all(
                math.isclose(u, v, rel_tol=1e-12, abs_tol=1e-9) for u, v in zip(a.box.xyxy, b.box.xyxy, strict=True)
            )


# --------------------------------------------------------------------------------------------------------
# Writing: categories and atomicity


def test_categories_from_labels_first_seen_order() -> None:
    assert categories_from_labels(["dog", "cat", "dog", "bird"]) == [
        Category(id=1, name="dog"),
        Category(id=2, name="cat"),
        Category(id=3, name="bird"),
    ]
    assert categories_from_labels([]) == []


def test_label_without_category_is_refused(tmp_path: Path) -> None:
    dataset = Dataset(
        categories=[Category(id=1, name="cat")],
        images=[ImageRecord(path=tmp_path / "a.png", width=9, height=9, annotations=[
            Annotation(box=Box.from_xyxy((0, 0, 1, 1)), label="zebra"),
        ])],
    )  # fmt: skip
    out = tmp_path / "ann.json"
    with pytest.raises(CocoError, match=r"label 'zebra' .* has no category .*categories_from_labels"):
        write_coco(dataset, out)
    assert not out.exists()
    assert os.listdir(tmp_path) == []


def test_missing_output_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CocoError, match="does not exist; create it first"):
        write_coco(Dataset(), tmp_path / "no" / "ann.json")


def test_write_replaces_without_leftovers_and_keeps_permissions(tmp_path: Path) -> None:
    out = tmp_path / "ann.json"
    out.write_text("old")
    out.chmod(0o640)
    write_coco(sample_dataset(tmp_path), out)
    assert sorted(os.listdir(tmp_path)) == ["ann.json"]
    assert json.loads(out.read_text())["images"][0]["id"] == 1
    assert out.stat().st_mode & 0o777 == 0o640


def test_failure_while_serialising_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "ann.json"
    write_coco(sample_dataset(tmp_path), out)
    before = out.read_bytes()

    def half_dump(obj: Any, fp: Any, **kwargs: Any) -> None:
        fp.write('{"images": [')  # a partial document reaches the disk...
        fp.flush()
        raise RuntimeError("disk full")  # ...then serialisation fails

    monkeypatch.setattr(coco, "dump_json", half_dump)
    with pytest.raises(RuntimeError, match="disk full"):
        write_coco(Dataset(), out)
    assert out.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["ann.json"]


def test_failed_rename_is_a_coco_error_and_leaves_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "ann.json"
    out.write_text("old")

    def refuse(src: Any, dst: Any) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(coco.os, "replace", refuse)
    with pytest.raises(CocoError, match=r"cannot write .*ann\.json.*Permission denied"):
        write_coco(sample_dataset(tmp_path), out)
    assert out.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["ann.json"]


def test_export_is_ascii_so_any_locale_reads_it(tmp_path: Path) -> None:
    dataset = Dataset(
        categories=[Category(id=1, name="café")],
        images=[ImageRecord(path=tmp_path / "é.png", width=9, height=9, annotations=[
            Annotation(box=Box.from_xyxy((0, 0, 1, 1)), label="café", phrase="the crème brûlée"),
        ])],
    )  # fmt: skip
    out = tmp_path / "ann.json"
    write_coco(dataset, out)
    out.read_bytes().decode("ascii")
    assert read_coco(out) == dataset


# --------------------------------------------------------------------------------------------------------
# Reading: skipped annotations


def test_crowd_and_degenerate_annotations_are_skipped_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    annotations = [
        {"id": 1, "image_id": 5, "category_id": 2, "bbox": [1, 2, 3, 4]},
        {"id": 2, "image_id": 5, "category_id": 2, "bbox": [1, 2, 30, 40], "iscrowd": 1, "segmentation": {}},
        {"id": 3, "image_id": 5, "category_id": 2, "bbox": [1, 2, 0, 4]},
        {"id": 4, "image_id": 5, "category_id": 2, "bbox": [1, 2, 3, -1]},
    ]
    path = write_json(tmp_path / "in.json", minimal_coco(annotations=annotations))
    report = read_coco_with_report(path)
    assert [a.box.xywh for a in report.dataset.images[0].annotations] == [(1, 2, 3, 4)]
    assert report.annotation_ids == ((1,),)
    assert [(s.annotation_id, s.image_id, s.kind) for s in report.skipped] == [
        (2, 5, "crowd"),
        (3, 5, "degenerate"),
        (4, 5, "degenerate"),
    ]
    assert "no area" in report.skipped[1].reason

    with caplog.at_level(logging.WARNING, logger="model.coco"):
        dataset = read_coco(path)
    assert len(dataset.images[0].annotations) == 1
    assert "skipped 3 annotations" in caplog.text
    assert "1 crowd, 2 degenerate" in caplog.text


def test_nothing_logged_when_nothing_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_json(tmp_path / "in.json", minimal_coco())
    with caplog.at_level(logging.WARNING, logger="model.coco"):
        read_coco(path)
    assert caplog.records == []


# --------------------------------------------------------------------------------------------------------
# Reading: errors


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CocoError, match=r"COCO file '.*nope\.json' not found; check the path"):
        read_coco(tmp_path / "nope.json")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(CocoError, match=r"is a folder; pass the annotation \.json file"):
        read_coco(tmp_path)


def test_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"images": [}\n')
    with pytest.raises(CocoError, match=r"not valid JSON \(.* line 1 column 13\); fix the syntax or re-export"):
        read_coco(path)


def test_not_an_object(tmp_path: Path) -> None:
    with pytest.raises(CocoError, match="top level is a JSON list, not an object"):
        read_coco(write_json(tmp_path / "in.json", []))


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_missing_section(tmp_path: Path, key: str) -> None:
    data = minimal_coco()
    del data[key]
    with pytest.raises(CocoError, match=f"missing the '{key}' list"):
        read_coco(write_json(tmp_path / "in.json", data))


def test_section_not_a_list(tmp_path: Path) -> None:
    with pytest.raises(CocoError, match="'images' must be a list, not a JSON dict"):
        read_coco(write_json(tmp_path / "in.json", minimal_coco(images={})))


def test_unknown_image_id_names_the_annotation(tmp_path: Path) -> None:
    anns = [{"id": 11, "image_id": 99, "category_id": 2, "bbox": [1, 2, 3, 4]}]
    with pytest.raises(CocoError, match=r"annotation 11 refers to image id 99, which is not in 'images'; add"):
        read_coco(write_json(tmp_path / "in.json", minimal_coco(annotations=anns)))


def test_unknown_category_id_names_the_annotation(tmp_path: Path) -> None:
    anns = [{"id": 12, "image_id": 5, "category_id": 3, "bbox": [1, 2, 3, 4]}]
    with pytest.raises(CocoError, match=r"annotation 12 refers to category id 3, which is not in 'categories'"):
        read_coco(write_json(tmp_path / "in.json", minimal_coco(annotations=anns)))


def test_duplicate_image_ids(tmp_path: Path) -> None:
    images = [
        {"id": 5, "file_name": "x.jpg", "width": 100, "height": 80},
        {"id": 5, "file_name": "y.jpg", "width": 100, "height": 80},
    ]
    with pytest.raises(CocoError, match="image id 5 appears twice in 'images'; give each image a unique id"):
        read_coco(write_json(tmp_path / "in.json", minimal_coco(images=images)))


def test_duplicate_annotation_ids(tmp_path: Path) -> None:
    ann = {"id": 11, "image_id": 5, "category_id": 2, "bbox": [1, 2, 3, 4]}
    with pytest.raises(CocoError, match="annotation id 11 appears twice"):
        read_coco(write_json(tmp_path / "in.json", minimal_coco(annotations=[ann, ann])))


@pytest.mark.parametrize(
    ("categories", "message"),
    [
        ([{"id": 2, "name": "a"}, {"id": 2, "name": "b"}], "category id 2 appears twice"),
        ([{"id": 2, "name": "a"}, {"id": 3, "name": "a"}], "category name 'a' appears twice"),
        ([{"id": 0, "name": "a"}], "category ids must be integers from 1"),
        ([{"id": 2, "name": " "}], "category 2 has no name"),
    ],
)
def test_bad_categories(tmp_path: Path, categories: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(CocoError, match=message):
        read_coco(write_json(tmp_path / "in.json", minimal_coco(categories=categories, annotations=[])))


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ({"id": 5, "width": 100, "height": 80}, "image 5 has no 'file_name'"),
        ({"id": 5, "file_name": "x.jpg", "height": 80}, "image 5 has width None; it must be the upright"),
        ({"id": 5, "file_name": "x.jpg", "width": 100, "height": 0}, "image 5 has height 0"),
        ({"file_name": "x.jpg", "width": 100, "height": 80}, r"images\[0\] has no integer 'id'"),
        ("x.jpg", r"images\[0\] is not a JSON object"),
    ],
)
def test_bad_images(tmp_path: Path, image: Any, message: str) -> None:
    with pytest.raises(CocoError, match=message):
        read_coco(write_json(tmp_path / "in.json", minimal_coco(images=[image], annotations=[])))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"bbox": [1, 2, 3]}, r"annotation 11 has bbox \[1, 2, 3\]; it must be a list of four numbers"),
        ({"bbox": None}, "annotation 11 has bbox None"),
        ({"phrase": 3}, "annotation 11 has phrase 3; it must be a string"),
        ({"score": "high"}, "annotation 11 has score 'high'; it must be a finite number"),
    ],
)
def test_bad_annotations(tmp_path: Path, changes: dict[str, Any], message: str) -> None:
    ann = {"id": 11, "image_id": 5, "category_id": 2, "bbox": [1, 2, 3, 4], **changes}
    with pytest.raises(CocoError, match=message):
        read_coco(write_json(tmp_path / "in.json", minimal_coco(annotations=[ann])))


def test_coco_error_is_a_project_error() -> None:
    assert issubclass(CocoError, MiniGPTError)


# --------------------------------------------------------------------------------------------------------
# Hostile files (issue 13, item 20): non-finite or overflowing geometry, absurd sizes, text that is not Unicode,
# absurd nesting. Each is refused with a one-line CocoError naming where, never read into an unusable dataset.


def _with_annotation(tmp_path: Path, bbox_text: str, extra: str = "") -> Path:
    """A COCO file written as text, so it can hold what json.dumps would not write (Infinity, 1e400)."""
    text = (
        '{"images": [{"id": 5, "file_name": "x.jpg", "width": 100, "height": 80}], '
        '"categories": [{"id": 2, "name": "thing"}], '
        f'"annotations": [{{"id": 11, "image_id": 5, "category_id": 2, "bbox": {bbox_text}{extra}}}]}}'
    )
    path = tmp_path / "in.json"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("bbox", "extra", "message"),
    [
        ("[0, 0, Infinity, 10]", "", r"annotation 11 has bbox \[0, 0, inf, 10\]; it must be four finite numbers"),
        ("[0, NaN, 10, 10]", "", "annotation 11 has bbox .*; it must be four finite numbers"),
        ("[0, 0, 1e400, 10]", "", "annotation 11 has bbox .*; it must be four finite numbers"),
        ("[0, 0, " + "9" * 400 + ", 10]", "", "annotation 11 has bbox .*; it must be four finite numbers"),
        ("[1.7e308, 0, 1.7e308, 10]", "", "annotation 11 has bbox .* whose x \\+ width or y \\+ height overflows"),
        ("[0, -1.7e308, 10, -1.7e308]", "", "annotation 11 .* overflows"),
        ("[0, 0, 10, 10]", ', "score": Infinity', "annotation 11 has score inf; it must be a finite number"),
        ("[0, 0, 10, 10]", ', "score": ' + "9" * 400, "annotation 11 has score .*; it must be a finite number"),
    ],
)
def test_non_finite_or_overflowing_geometry_is_refused_naming_the_annotation(
    tmp_path: Path, bbox: str, extra: str, message: str
) -> None:
    # Before: x + w overflowing to inf, or an integer beyond floats, raised OverflowError, or read an infinite box
    # that the desktop store kept, `split` wrote as Infinity (not JSON) and `finetune` crashed on.
    with pytest.raises(CocoError, match=message) as refused:
        read_coco(_with_annotation(tmp_path, bbox, extra))
    assert "\n" not in str(refused.value) and len(str(refused.value)) < 400


def test_boxes_are_clipped_to_their_image_and_those_outside_are_skipped(tmp_path: Path) -> None:
    annotations = [
        {"id": 1, "image_id": 5, "category_id": 2, "bbox": [-5, 70, 20, 30]},  # hangs over the left and bottom
        {"id": 2, "image_id": 5, "category_id": 2, "bbox": [500, 10, 20, 20]},  # right of the 100 px wide image
        {"id": 3, "image_id": 5, "category_id": 2, "bbox": [1e300, 1e300, 1e300, 1e300]},  # far outside, finite
    ]
    report = read_coco_with_report(write_json(tmp_path / "in.json", minimal_coco(annotations=annotations)))
    assert [a.box.xyxy for a in report.dataset.images[0].annotations] == [(0, 70, 15, 80)]
    assert [(s.annotation_id, s.kind) for s in report.skipped] == [(2, "degenerate"), (3, "degenerate")]
    assert "no area inside the 100x80 image" in report.skipped[0].reason


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ({"width": 10**30}, r"image 5 has width 1000000000000000000000000000000; .*\(1 to 2,147,483,647\)"),
        ({"height": 1e300}, "image 5 has height .*; it must be the upright image's height"),
        ({"file_name": "a\ud800.jpg"}, r"image 5 has a file_name that is not valid Unicode: .*'\\ud800' at position 1"),
        ({"file_name": "a\x00.jpg"}, "image 5 has a file_name with a NUL character"),
    ],
)
def test_absurd_sizes_and_names_that_are_no_path_are_refused(tmp_path: Path, image: dict, message: str) -> None:
    images = [{"id": 5, "file_name": "x.jpg", "width": 100, "height": 80, **image}]
    with pytest.raises(CocoError, match=message):
        read_coco(write_json(tmp_path / "in.json", minimal_coco(images=images, annotations=[])))


def test_text_that_is_not_unicode_is_refused_before_training_meets_it(tmp_path: Path) -> None:
    # A lone surrogate reads as a Python string, then fails in the tokenizer in the middle of a `finetune` run.
    with pytest.raises(CocoError, match=r"category 2 has a name that is not valid Unicode"):
        read_coco(write_json(tmp_path / "a.json", minimal_coco(categories=[{"id": 2, "name": "th\udfffing"}])))
    anns = [{"id": 11, "image_id": 5, "category_id": 2, "bbox": [1, 2, 3, 4], "phrase": "\ud800 left"}]
    with pytest.raises(CocoError, match=r"annotation 11 has a phrase that is not valid Unicode"):
        read_coco(write_json(tmp_path / "b.json", minimal_coco(annotations=anns)))


@pytest.mark.parametrize("where", ["top", "annotation"])
def test_absurdly_nested_json_is_a_coco_error_not_a_traceback(tmp_path: Path, where: str) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    if where == "top":
        text = deep
    else:
        ann = '{"id": 11, "image_id": 5, "category_id": 2, "bbox": [1, 2, 3, 4], "segmentation": ' + deep + "}"
        text = json.dumps(minimal_coco(annotations=[])).replace('"annotations": []', f'"annotations": [{ann}]')
    path = tmp_path / "deep.json"
    path.write_text(text)
    with pytest.raises(CocoError, match="nested too deeply to be a COCO file"):  # was a RecursionError
        read_coco(path)


def test_ids_in_messages_are_cut_short(tmp_path: Path) -> None:
    anns = [{"id": "x" * 100_000, "image_id": 99, "category_id": 2, "bbox": [1, 2, 3, 4]}]
    with pytest.raises(CocoError, match="refers to image id 99") as refused:
        read_coco(write_json(tmp_path / "in.json", minimal_coco(annotations=anns)))
    assert len(str(refused.value)) < 400


@pytest.mark.parametrize(
    ("annotation", "message"),
    [
        (Annotation(box=Box.from_xyxy((0, 0, 10, 10)), label="a", score=math.inf), "not a finite number"),
        (Annotation(box=Box.from_xyxy((0, 0, 10, 10)), label="a", score=math.nan), "not a finite number"),
        (Annotation(box=Box.from_xyxy((-1.7e308, 0, 1.7e308, 10)), label="a"), "not a finite number"),
    ],
)
def test_writing_refuses_numbers_json_cannot_carry_and_keeps_the_old_file(
    tmp_path: Path, annotation: Annotation, message: str
) -> None:
    out = tmp_path / "ann.json"
    out.write_text("old")
    record = ImageRecord(path=tmp_path / "a.png", width=100, height=100, annotations=[annotation])
    with pytest.raises(CocoError, match=message):  # was a file holding Infinity/NaN, which is not JSON
        write_coco(Dataset(categories=[Category(id=1, name="a")], images=[record]), out)
    assert out.read_text() == "old" and os.listdir(tmp_path) == ["ann.json"]


# A fuzzer over COCO-like JSON: every field is sometimes right, sometimes any JSON value (Infinity, NaN, integers
# beyond floats, lone surrogates, nested lists). read_coco either returns boxes that are finite and inside their
# image, which write_coco writes back as strict JSON, or raises CocoError: never another exception.
_SURROGATES = st.sampled_from(["\ud800", "a\udfff", "\udcff.jpg"])
_NUMBERS = st.one_of(
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([10**400, -(10**400), 1.7e308, -1.7e308, 2**31 - 1, 2**31, 0.5, 1e-320]),
)
_ANY_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), _NUMBERS, st.text(max_size=8), _SURROGATES),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=12,
)
_IDS = st.one_of(st.integers(min_value=-1, max_value=4), st.sampled_from(["1", "a"]))
_CORNERS = st.one_of(st.floats(min_value=-50, max_value=450), st.integers(min_value=-50, max_value=450), _NUMBERS)
_SIDES = st.one_of(st.floats(min_value=0.001, max_value=300), st.integers(min_value=1, max_value=300), _NUMBERS)


def _mostly(good: st.SearchStrategy) -> st.SearchStrategy:
    """``good`` nineteen times in twenty, else any JSON value."""
    return st.integers(min_value=0, max_value=19).flatmap(lambda k: _ANY_JSON if k == 19 else good)


@st.composite
def coco_like(draw: st.DrawFn) -> dict[str, Any]:
    category_ids = sorted(draw(st.sets(st.integers(min_value=1, max_value=3), min_size=1)))
    image_ids = sorted(draw(st.sets(st.integers(min_value=1, max_value=3), min_size=1)))
    categories = [
        draw(_mostly(st.fixed_dictionaries({"id": _mostly(st.just(k)), "name": _mostly(st.just(f"c{k}"))})))
        for k in category_ids
    ]
    images = [
        draw(
            _mostly(
                st.fixed_dictionaries(
                    {
                        "id": _mostly(st.just(k)),
                        "file_name": _mostly(st.sampled_from(["a.jpg", "b/c.png"])),
                        "width": _mostly(st.integers(min_value=1, max_value=400)),
                        "height": _mostly(st.integers(min_value=1, max_value=400)),
                    }
                )
            )
        )
        for k in image_ids
    ]
    annotation = st.fixed_dictionaries(
        {
            "image_id": _mostly(st.sampled_from(image_ids)),
            "category_id": _mostly(st.sampled_from(category_ids)),
            "bbox": _mostly(st.tuples(_CORNERS, _CORNERS, _SIDES, _SIDES).map(list)),
        },
        optional={
            "phrase": _mostly(st.text(max_size=6)),
            "score": _NUMBERS,
            "iscrowd": _ANY_JSON,
            "attributes": _mostly(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "origin": _mostly(st.sampled_from([o.value for o in Origin])),
                        "changed_at": _mostly(st.just("2026-11-29T12:00:00+00:00")),
                        "original_x": _NUMBERS,
                        "original_y": _NUMBERS,
                        "original_width": _NUMBERS,
                        "original_height": _NUMBERS,
                        "original_score": _NUMBERS,
                        "extra": _ANY_JSON,
                    },
                )
            ),
        },
    )
    annotations = [
        draw(_mostly(st.builds(lambda entry, i=i: {"id": i, **entry}, annotation)))
        for i in range(draw(st.integers(min_value=1, max_value=5)))
    ]
    data = {"categories": categories, "images": images, "annotations": annotations}
    if draw(st.integers(min_value=0, max_value=19)) == 19:  # 0 is what Hypothesis draws most
        data[draw(st.sampled_from(list(data)))] = draw(_ANY_JSON)
    return data


def _strict_json(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise AssertionError(f"wrote {constant}, which is not JSON")

    return json.loads(text, parse_constant=refuse)


@settings(max_examples=400, derandomize=True, deadline=None)
@given(data=coco_like())
def test_any_coco_like_json_reads_into_finite_in_image_boxes_or_a_coco_error(data: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.json"
        path.write_text(json.dumps(data), encoding="utf-8")  # json.dumps writes Infinity/NaN as the attacks did
        try:
            dataset = read_coco(path)
        except CocoError as err:
            assert "\n" not in str(err) and len(str(err)) < 600
            return
        for record in dataset.images:
            assert 0 < record.width <= coco.MAX_IMAGE_SIDE and 0 < record.height <= coco.MAX_IMAGE_SIDE
            for annotation in record.annotations:
                x0, y0, x1, y1 = annotation.box.xyxy
                assert all(math.isfinite(v) for v in (x0, y0, x1, y1, annotation.box.area))
                assert 0 <= x0 < x1 <= record.width and 0 <= y0 < y1 <= record.height
                assert annotation.score is None or math.isfinite(annotation.score)
                (annotation.label + (annotation.phrase or "")).encode("utf-8")  # text the tokenizer takes
        out = Path(tmp) / "out.json"
        write_coco(dataset, out)  # what `split` does with it
        written = _strict_json(out.read_text())
        assert len(written["annotations"]) == sum(len(r.annotations) for r in dataset.images)
        assert read_coco(out) == dataset


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(value=_JSON | st.dictionaries(st.text(max_size=5), st.lists(_JSON, max_size=6), max_size=4))
def test_the_fast_json_writer_writes_what_json_dump_writes(value: object) -> None:
    """COCO and import files are written an element at a time (C-speed encoding); the bytes are json.dump's."""
    fast = io.StringIO()
    dump_json(value, fast)
    slow = io.StringIO()
    json.dump(value, slow, allow_nan=False)
    assert fast.getvalue() == slow.getvalue()


def test_the_fast_json_writer_refuses_what_json_refuses() -> None:
    for bad in ({"images": [{"w": float("inf")}]}, [float("nan")], {"score": float("-inf")}):
        with pytest.raises(ValueError):
            dump_json(bad, io.StringIO())
