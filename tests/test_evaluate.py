"""Evaluation metrics on hand-computed cases, and the runner end to end on the fixed-answer box model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from model.annotations import Annotation, Box, Category, Dataset, ImageRecord, Task
from model.dataset_files import DatasetFilesError
from model.errors import ImageLoadError
from model.evaluation.metrics import (
    Detection,
    EvaluationError,
    acceptance,
    coco_detection_metrics,
    iou,
    iou_official,
    refer_accuracy,
)
from model.evaluation.runner import EvaluationReport, collect_predictions, evaluate_model
from model.proposer import Proposer

Run = tuple[EvaluationReport, list[tuple[int, int]]]  # the report and every on_progress call


def box(x0: float, y0: float, x1: float, y1: float) -> Box:
    return Box(x0=x0, y0=y0, x1=x1, y1=y1)


def dataset(*images: list[tuple[str, Box]], categories: tuple[str, ...] = ("cat", "dog")) -> Dataset:
    """One 640x480 image per argument, each a list of (label, box)."""
    return Dataset(
        categories=[Category(id=i + 1, name=n) for i, n in enumerate(categories)],
        images=[
            ImageRecord(
                path=Path(f"img{k}.jpg"),
                width=640,
                height=480,
                annotations=[Annotation(box=b, label=label) for label, b in anns],
            )
            for k, anns in enumerate(images)
        ],
    )


def det(image: int, b: Box, score: float, label: str = "cat") -> Detection:
    return Detection(image_index=image, label=label, box=b, score=score)


BIG = box(100, 100, 300, 300)
OTHER = box(400, 200, 500, 400)


# --- IoU --------------------------------------------------------------------------------------------------------------
def test_official_iou_adds_one_pixel_to_every_side_length() -> None:
    a, shifted = box(0, 0, 10, 10), box(1, 0, 11, 10)
    # standard: intersection 9x10 = 90, union 100 + 100 - 90 = 110
    assert iou(a, shifted) == pytest.approx(90 / 110)
    # official: intersection (10-1+1)x(10-0+1) = 110, each box 11x11 = 121, union 242 - 110 = 132
    assert iou_official(a, shifted) == pytest.approx(110 / 132)
    diagonal = box(1, 1, 11, 11)
    assert iou(a, diagonal) == pytest.approx(81 / 119)  # 9x9 = 81 over 200 - 81
    assert iou_official(a, diagonal) == pytest.approx(100 / 142)  # 10x10 = 100 over 242 - 100
    assert iou(a, a) == iou_official(a, a) == 1.0
    # Touching edges: no area in common, but the official rule counts the shared pixel column.
    touching = box(10, 0, 20, 10)
    assert iou(a, touching) == 0.0
    assert iou_official(a, touching) == pytest.approx(11 / (242 - 11))


# --- refer accuracy ---------------------------------------------------------------------------------------------------
def test_refer_accuracy_perfect_and_off_by_one_pixel() -> None:
    gt = box(50, 60, 150, 160)
    result = refer_accuracy([(gt, gt), (box(51, 61, 151, 161), gt)])
    # off by one on a 100x100 box: 99x99 / (20000 - 9801) = 0.961; official 100x100 / (2·101² - 100²) = 0.961
    assert (result.n, result.hits_official, result.hits_iou50) == (2, 2, 2)
    assert result.acc_official == result.acc_iou50 == 1.0
    assert result.parse_failures == 0 and result.acceptance_rate == 1.0


def test_refer_accuracy_counts_no_overlap_and_missing_boxes_as_misses() -> None:
    gt = box(0, 0, 100, 100)
    result = refer_accuracy([(gt, gt), (box(200, 200, 300, 300), gt), (None, gt), (None, gt)])
    assert result.n == 4 and result.parse_failures == 2
    assert result.acc_official == result.acc_iou50 == 0.25
    # A missing box is not a proposal: a labeller saw two boxes and kept one.
    assert (result.n_proposals, result.n_kept, result.acceptance_rate) == (2, 1, 0.5)


def test_refer_accuracy_threshold_is_strict_officially_and_inclusive_for_iou50() -> None:
    # Official rule: pixels 0..9 (10 wide) vs 0..19 (20 wide), both 10 tall: 100 / (100 + 200 - 100) = 0.5 exactly,
    # not a hit because the official test is "> 0.5". (Standard IoU: 81 / 171 = 0.47, no hit either.)
    gt = box(0, 0, 19, 9)
    at_official_boundary = refer_accuracy([(box(0, 0, 9, 9), gt)])
    assert iou_official(box(0, 0, 9, 9), gt) == 0.5
    assert at_official_boundary.hits_official == 0 and at_official_boundary.acc_official == 0.0
    # Standard rule: 10x10 inside 20x10 = 100 / 200 = 0.5 exactly, a hit because the test is ">= 0.5".
    # (Official for the same pair: 11x11 / 21x11 = 121 / 231 = 0.52, a hit.)
    gt = box(0, 0, 20, 10)
    at_standard_boundary = refer_accuracy([(box(0, 0, 10, 10), gt)])
    assert iou(box(0, 0, 10, 10), gt) == 0.5
    assert at_standard_boundary.hits_iou50 == 1 and at_standard_boundary.acc_iou50 == 1.0
    assert at_standard_boundary.acc_official == 1.0


def test_refer_accuracy_of_nothing_is_undefined_not_zero() -> None:
    result = refer_accuracy([])
    assert result.n == 0 and result.acc_official is None and result.acc_iou50 is None
    assert result.acceptance_rate is None


# --- COCO detection metrics -------------------------------------------------------------------------------------------
def test_perfect_detections_score_one() -> None:
    data = dataset([("cat", BIG), ("dog", OTHER)], [("cat", OTHER)])
    metrics = coco_detection_metrics(data, [det(0, BIG, 0.9), det(0, OTHER, 0.8, "dog"), det(1, OTHER, 0.7)])
    assert metrics.ap == metrics.ap50 == metrics.ap75 == 1.0
    assert metrics.ar100 == 1.0
    assert (metrics.n_images, metrics.n_gt, metrics.n_detections) == (2, 3, 3)
    assert metrics.per_category["cat"].ap50 == 1.0 and metrics.per_category["cat"].n_gt == 2
    assert metrics.per_category["dog"].n_detections == 1


def test_no_detections_score_zero_without_crashing() -> None:
    metrics = coco_detection_metrics(dataset([("cat", BIG)]), [])
    assert metrics.ap == metrics.ap50 == metrics.ar100 == 0.0
    assert metrics.n_detections == 0


def test_no_ground_truth_leaves_ap_undefined() -> None:
    metrics = coco_detection_metrics(dataset([]), [det(0, BIG, 0.9)])
    assert metrics.ap is None and metrics.ap50 is None and metrics.n_gt == 0


def test_off_by_one_pixel_on_a_large_box_still_matches() -> None:
    # 199² / (2·200² - 199²) = 39601 / 40399 = 0.98: above every COCO threshold up to 0.95
    metrics = coco_detection_metrics(dataset([("cat", BIG)]), [det(0, box(101, 101, 301, 301), 0.9)])
    assert metrics.ap50 == 1.0 and metrics.ap == 1.0


def test_no_overlap_scores_zero() -> None:
    metrics = coco_detection_metrics(dataset([("cat", BIG)]), [det(0, OTHER, 0.9)])
    assert metrics.ap50 == 0.0 and metrics.ap == 0.0


def test_right_box_with_the_wrong_label_is_a_miss() -> None:
    metrics = coco_detection_metrics(dataset([("cat", BIG)]), [det(0, BIG, 0.9, "dog")])
    assert metrics.ap50 == 0.0
    assert metrics.per_category["dog"].ap50 is None  # no dog in the ground truth: not part of the mean


def test_a_duplicate_ranked_above_a_true_positive_lowers_ap50_exactly() -> None:
    data = dataset([("cat", BIG)], [("cat", OTHER)])
    clean = [det(0, BIG, 0.9), det(1, OTHER, 0.7)]
    assert coco_detection_metrics(data, clean).ap50 == 1.0
    # Ranked: TP (recall .5, precision 1), duplicate FP (.5, .5), TP (1, 2/3). COCO interpolates precision to the
    # best at higher recall and samples 101 recall points: 51 points (0.00-0.50) at 1, 50 points above at 2/3.
    with_duplicate = coco_detection_metrics(data, [*clean, det(0, BIG, 0.8)])
    assert with_duplicate.ap50 == pytest.approx((51 + 50 * 2 / 3) / 101)
    # A duplicate ranked last adds no precision loss at any recall reached before it.
    assert coco_detection_metrics(data, [*clean, det(0, BIG, 0.1)]).ap50 == 1.0


def test_score_ranking_matters() -> None:
    data = dataset([("cat", BIG)], [("cat", OTHER)])
    hits = [det(0, BIG, 0.8), det(1, OTHER, 0.7)]
    # False positive first: precision 0, 1/2, 2/3 at recall 0, .5, 1; interpolated to 2/3 everywhere.
    assert coco_detection_metrics(data, [*hits, det(1, BIG, 0.9)]).ap50 == pytest.approx(2 / 3)
    # False positive last: precision is 1 up to full recall.
    assert coco_detection_metrics(data, [*hits, det(1, BIG, 0.1)]).ap50 == 1.0


def test_false_positives_on_images_without_ground_truth_count() -> None:
    data = dataset([("cat", BIG)], [])
    # FP on the empty image first (precision 0 at recall 0), then the TP (1/2 at recall 1): AP50 = 0.5.
    assert coco_detection_metrics(data, [det(1, BIG, 0.9), det(0, BIG, 0.5)]).ap50 == pytest.approx(0.5)


def test_unknown_labels_are_refused_with_the_label_named() -> None:
    data = dataset([("cat", BIG)])
    with pytest.raises(EvaluationError, match="'bird'"):
        coco_detection_metrics(data, [det(0, BIG, 0.9, "bird")])
    with pytest.raises(ValueError, match="not one of the dataset's categories"):
        coco_detection_metrics(dataset([("bird", BIG)]), [])
    with pytest.raises(EvaluationError, match="image 3"):
        acceptance(data, [det(3, BIG, 0.9)])


def test_pycocotools_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    coco_detection_metrics(dataset([("cat", BIG)]), [det(0, BIG, 0.9)])
    assert capsys.readouterr().out == ""


# --- acceptance -------------------------------------------------------------------------------------------------------
def test_acceptance_of_perfect_proposals() -> None:
    data = dataset([("cat", BIG), ("dog", OTHER)])
    result = acceptance(data, [det(0, BIG, 0.9), det(0, OTHER, 0.8, "dog")])
    assert (result.acceptance_rate, result.coverage) == (1.0, 1.0)
    assert (result.n_proposals, result.n_kept, result.n_gt) == (2, 2, 2)


def test_a_duplicate_is_not_kept_but_coverage_stays_full() -> None:
    result = acceptance(dataset([("cat", BIG)]), [det(0, BIG, 0.9), det(0, box(101, 101, 301, 301), 0.95)])
    assert (result.n_kept, result.acceptance_rate, result.coverage) == (1, 0.5, 1.0)


def test_the_right_box_with_the_wrong_label_is_not_kept() -> None:
    result = acceptance(dataset([("cat", BIG)]), [det(0, BIG, 0.9, "dog")])
    assert (result.n_kept, result.acceptance_rate, result.coverage) == (0, 0.0, 0.0)


def test_a_box_in_another_image_is_not_kept() -> None:
    result = acceptance(dataset([("cat", BIG)], []), [det(1, BIG, 0.9)])
    assert result.n_kept == 0


def test_no_proposals_cover_nothing_and_have_no_acceptance_rate() -> None:
    result = acceptance(dataset([("cat", BIG)]), [])
    assert result.coverage == 0.0 and result.acceptance_rate is None
    assert acceptance(dataset([]), []).coverage is None


def test_proposals_match_in_score_order_each_taking_its_best_free_box() -> None:
    # Two overlapping cats (all boxes 100 tall, so IoU is a ratio of widths): A = x 0-100, B = x 40-140.
    a, b = box(0, 0, 100, 100), box(40, 0, 140, 100)
    wide = box(18, 0, 118, 100)  # IoU with A 82/118 = 0.69, with B 78/122 = 0.64: it prefers A
    narrow = box(0, 0, 60, 100)  # IoU with A 60/100 = 0.60, with B 20/100 = 0.20: only A qualifies
    data = dataset([("cat", a), ("cat", b)])
    # narrow first: it takes A, then wide takes B. Both kept.
    assert acceptance(data, [det(0, wide, 0.5), det(0, narrow, 0.9)]).n_kept == 2
    # wide first: it takes its best box A, and narrow is left with B only (0.20): one kept. Greedy, like COCO.
    assert acceptance(data, [det(0, wide, 0.9), det(0, narrow, 0.5)]).n_kept == 1


# --- the runner on a real (tiny, fixed-answer) model ----------------------------------------------------------------
# The box model answers "[refer] give me the location of the red circle" with {<10><20><60><80>} and
# "[detection] circle" with {<10><20><60><80>}<delim>{<5><5><30><40>}, whatever the image. On a 200x100 image
# those are (20, 20, 120, 80) and (10, 5, 60, 40) in pixels.
REFER_BOX = box(20, 20, 120, 80)
SECOND_BOX = box(10, 5, 60, 40)
FAR_BOX = box(150, 85, 195, 98)


@pytest.fixture(scope="module")
def circles(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    folder = tmp_path_factory.mktemp("circles")
    paths = []
    for k, colour in enumerate([(200, 40, 40), (40, 40, 200), (240, 240, 240)]):
        path = folder / f"circle{k}.png"
        Image.new("RGB", (200, 100), colour).save(path)
        paths.append(path)
    return Dataset(
        categories=[Category(id=7, name="circle")],
        images=[
            # exactly where the model points, plus a second circle without a phrase (ambiguous: not asked)
            ImageRecord(
                path=paths[0],
                width=200,
                height=100,
                annotations=[
                    Annotation(box=REFER_BOX, label="circle", phrase="the red circle"),
                    Annotation(box=SECOND_BOX, label="circle"),
                ],
            ),
            # the referred circle is far from where the model points
            ImageRecord(
                path=paths[1],
                width=200,
                height=100,
                annotations=[Annotation(box=FAR_BOX, label="circle", phrase="the red circle")],
            ),
            ImageRecord(path=paths[2], width=200, height=100),  # no circles at all
        ],
    )


def test_collected_refer_predictions_hit_the_matching_box_and_miss_the_far_one(
    box_proposer: Proposer, circles: Dataset
) -> None:
    predictions = collect_predictions(box_proposer, circles, tasks=[Task.refer])
    assert predictions.refer_skipped == 1 and predictions.n_requests == 2
    near, far = predictions.refer
    assert (near.image_index, near.annotation_index, near.query) == (0, 0, "the red circle")
    assert near.predicted == REFER_BOX and far.predicted == REFER_BOX
    assert refer_accuracy([(near.predicted, near.truth)]).acc_official == 1.0
    assert refer_accuracy([(far.predicted, far.truth)]).acc_official == 0.0
    assert predictions.detections == []


@pytest.fixture(scope="module")
def report(box_proposer: Proposer, circles: Dataset) -> Run:
    progress: list[tuple[int, int]] = []
    result = evaluate_model(
        box_proposer, circles, batch_size=2, images_per_chunk=2, on_progress=lambda d, t: progress.append((d, t))
    )
    return result, progress


def test_report_scores_both_tasks(report: Run) -> None:
    result, progress = report
    assert result.model_version and result.n_images == 3 and result.n_annotations == 3
    assert result.n_requests == 2 + 3  # two referring expressions, one detection query per image
    assert progress[-1] == (5, 5) and [d for d, _ in progress] == sorted(d for d, _ in progress)

    refer = result.refer
    assert refer is not None
    assert (refer.n, refer.hits_official, refer.hits_iou50, refer.parse_failures) == (2, 1, 1, 0)
    assert refer.acc_official == refer.acc_iou50 == 0.5 and refer.skipped_ambiguous == 1

    detection = result.detection
    assert detection is not None
    # Both boxes on each image: image 0 has exactly these two circles, images 1 and 2 get two false positives each.
    assert (detection.n_proposals, detection.n_kept, detection.n_gt) == (6, 2, 3)
    assert detection.acceptance_rate == pytest.approx(2 / 6) and detection.coverage == pytest.approx(2 / 3)
    assert detection.ap50 is not None and 0.0 < detection.ap50 <= 2 / 3 + 1e-9  # recall never exceeds 2/3
    assert detection.per_category["circle"].n_gt == 3

    assert result.overall.n_proposals == 2 + 6 and result.overall.n_kept == 1 + 2
    assert result.overall.acceptance_rate == pytest.approx(3 / 8)


def test_report_round_trips_through_json_and_prints_a_table(report: Run) -> None:
    result, _ = report
    text = result.to_json()
    assert json.loads(text)["refer"]["acc_official"] == 0.5
    assert EvaluationReport.from_json(text) == result

    table = result.format_table()
    assert "0.500" in table  # refer accuracy
    assert f"{result.detection.ap50:.3f}" in table and "0.333" in table and "0.667" in table
    assert "1/2" in table and "2/6" in table and "2/3" in table
    header, _rule, *rows = table.splitlines()[1:]
    value_end = header.index("value") + len("value")
    for row in rows:  # numbers right-aligned under the "value" header
        assert re.fullmatch(r"\d\.\d{3}| {2}n/a| {5}", row[value_end - 5 : value_end]), row


def test_present_categories_skip_images_without_that_category(box_proposer: Proposer, circles: Dataset) -> None:
    predictions = collect_predictions(box_proposer, circles, tasks=["detection"], categories="present")
    assert predictions.n_requests == 2  # the empty third image is not asked about circles
    assert {d.image_index for d in predictions.detections} == {0, 1}


def test_runner_refuses_bad_input_before_running_the_model(circles: Dataset) -> None:
    with pytest.raises(EvaluationError, match="only refer and detection"):
        evaluate_model(None, circles, tasks=[Task.caption])  # type: ignore[arg-type]
    wrong_size = circles.model_copy(update={"images": [circles.images[0].model_copy(update={"width": 300})]})
    with pytest.raises(DatasetFilesError, match="200x100 upright"):
        collect_predictions(None, wrong_size)  # type: ignore[arg-type]


@pytest.mark.parametrize("problem", ["missing", "size"])
def test_every_image_is_checked_before_the_first_model_call(
    box_proposer: Proposer, circles: Dataset, tmp_path: Path, problem: str
) -> None:
    # The check `finetune` shares (issue 13, item 21). It ran per chunk, so a bad last image failed after the
    # model had answered every chunk before it.
    last = circles.images[1]
    bad = (
        last.model_copy(update={"path": tmp_path / "gone.png"})
        if problem == "missing"
        else last.model_copy(update={"height": 10**30})
    )
    progress: list[tuple[int, int]] = []
    with pytest.raises((ImageLoadError, DatasetFilesError), match=r"gone\.png|10000000000"):
        collect_predictions(
            box_proposer,
            circles.model_copy(update={"images": [circles.images[0], bad]}),
            images_per_chunk=1,
            on_progress=lambda done, total: progress.append((done, total)),
        )
    assert progress == []
