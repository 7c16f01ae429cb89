"""Tests for model.coco: exports re-read by pycocotools and by read_coco, atomic writes, and clear errors."""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import model.coco as coco
from model.annotations import Annotation, Box, Category, Dataset, ImageRecord, Origin
from model.coco import (
    CocoError,
    categories_from_labels,
    load_with_pycocotools,
    read_coco,
    read_coco_with_report,
    write_coco,
)
from model.errors import MiniGPTError


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
                width=6000,
                height=6000,
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

    monkeypatch.setattr(coco.json, "dump", half_dump)
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
        ({"score": "high"}, "annotation 11 has score 'high'; it must be a number"),
    ],
)
def test_bad_annotations(tmp_path: Path, changes: dict[str, Any], message: str) -> None:
    ann = {"id": 11, "image_id": 5, "category_id": 2, "bbox": [1, 2, 3, 4], **changes}
    with pytest.raises(CocoError, match=message):
        read_coco(write_json(tmp_path / "in.json", minimal_coco(annotations=[ann])))


def test_coco_error_is_a_project_error() -> None:
    assert issubclass(CocoError, MiniGPTError)
