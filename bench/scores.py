"""Which raw score tells kept boxes from rejected ones? Every candidate of `model.scoring`, measured. Prints JSON.

The shipped tiny shapes model answers every `[refer]` and `[detection]` question (all categories on every image, as
`evaluate` asks them) on held-out shapes it never saw, once; each candidate then scores the same answers, and
`model.evaluation` (the acceptance matching and `score_quality`) reports per task its ROC AUC of kept against
rejected, its ECE (raw, before any calibration) and the share of wrong proposals caught by reviewing the
lowest-scoring 10%, 20% and 50%. ``logistic`` is a logistic combination of the candidates' logs, fitted on a second,
separate set of held-out images (``--fit-images``, another seed) and reported on the first.

    python bench/scores.py [--images 300] [--fit-images 150] [--out /tmp/bench-scores]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from model.annotations import Dataset, Task
from model.coco import read_coco
from model.evaluation.metrics import Detection
from model.evaluation.runner import (
    Predictions,
    ReferPrediction,
    detection_queries,
    refer_queries,
    score_pairs,
    score_predictions,
)
from model.evaluation.score_quality import score_quality
from model.images import MODEL_FIT_PIXELS, load_image
from model.proposer import Proposer, ProposeRequest
from model.scoring import CANDIDATES, DEFAULT_SCORE, BoxEvidence
from model.synthetic.shapes import make_shapes
from model.synthetic.shapes_model import SHIPPED_DIR

TASKS = (Task.refer, Task.detection)
FEATURES = ("mean", "min", "phrase", "end", "coord")  # the logistic combination's inputs, as logs
FLOOR = 1e-6  # log of a zero probability


class RecordingProposer(Proposer):
    """The shipped Proposer, keeping each result's per-box evidence so every candidate can score one run."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.evidence_of: dict[int, list[BoxEvidence]] = {}
        self._last: list[BoxEvidence] = []

    def _evidence(self, *args):  # type: ignore[no-untyped-def]
        self._last = super()._evidence(*args)
        return self._last

    def _result(self, *args):  # type: ignore[no-untyped-def]
        self._last = []
        result = super()._result(*args)
        self.evidence_of[id(result)] = self._last
        return result


def answers(proposer: RecordingProposer, dataset: Dataset, batch_size: int) -> list[tuple[int, int | None, list]]:
    """(image index, refer annotation index or None for detection, query, evidence per box, boxes)."""
    out = []
    for start in range(0, len(dataset.images), 32):  # 32 images at a time, as `evaluate` does
        requests, asked = [], []
        for i in range(start, min(start + 32, len(dataset.images))):
            record = dataset.images[i]
            refer, _ = refer_queries(record)
            image = load_image(record.path, fit_pixels=MODEL_FIT_PIXELS)
            requests += [ProposeRequest(image, Task.refer, q) for _, q in refer]
            requests += [ProposeRequest(image, Task.detection, q) for q in detection_queries(dataset, record, "all")]
            asked += [(i, j) for j, _ in refer] + [(i, None)] * len(dataset.categories)
        results = proposer.propose_batch(requests, batch_size=batch_size)
        for (i, j), request, result in zip(asked, requests, results, strict=True):
            evidence = proposer.evidence_of.pop(id(result))
            out.append((i, j, request.query, list(zip(result.proposals, evidence, strict=True))))
    return out


def predictions(dataset: Dataset, answered: list, score) -> Predictions:  # type: ignore[no-untyped-def]
    """The answers as `evaluate` records them, each box scored by ``score(evidence)``."""
    result = Predictions()
    for i, j, query, boxes in answered:
        if j is None:
            result.detections.extend(Detection(image_index=i, label=query, box=p.box, score=score(e)) for p, e in boxes)
        else:
            first = boxes[0] if boxes else None
            result.refer.append(
                ReferPrediction(
                    image_index=i,
                    annotation_index=j,
                    query=query,
                    predicted=first[0].box if first else None,
                    score=score(first[1]) if first else None,
                    truth=dataset.images[i].annotations[j].box,
                )
            )
    return result


def features(evidence: BoxEvidence) -> list[float]:
    return [math.log(max(CANDIDATES[name](evidence), FLOOR)) for name in FEATURES]


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, steps: int = 50) -> tuple[np.ndarray, float]:
    """Newton's method on the L2-regularised log loss; x standardised inside, weights returned for raw x."""
    mu, sd = x.mean(0), x.std(0)
    sd = np.where(sd > 1e-3, sd, np.inf)  # a feature that barely varies (the copied phrase) gets weight 0
    z = np.hstack([(x - mu) / sd, np.ones((len(x), 1))])
    w = np.zeros(z.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-z @ w))
        grad = z.T @ (p - y) + l2 * np.r_[w[:-1], 0]
        hess = z.T @ (z * (p * (1 - p))[:, None]) + l2 * np.diag(np.r_[np.ones(len(w) - 1), 0])
        w -= np.linalg.solve(hess, grad)
    weights = w[:-1] / sd
    return weights, float(w[-1] - (weights * mu).sum())


def quality(dataset: Dataset, answered: list, score) -> dict:  # type: ignore[no-untyped-def]
    scored = predictions(dataset, answered, score)
    pairs = score_pairs(dataset, scored, TASKS)
    report = score_predictions(dataset, scored, tasks=TASKS)  # the score also ranks detections for COCO AP
    out: dict = {"detection_AP50": report.detection.ap50 if report.detection else None}
    for task in TASKS:
        q = score_quality([s for s, _ in pairs[task]], [k for _, k in pairs[task]])
        out[task.value] = {
            "roc_auc": q.roc_auc,
            "ece_raw": q.ece,
            **{f"triage@{round(t.reviewed * 100)}": t.caught for t in q.triage},
            "n": q.n,
            "n_kept": q.n_kept,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300, help="held-out images the table is measured on")
    parser.add_argument("--fit-images", type=int, default=150, help="other held-out images the logistic is fit on")
    parser.add_argument("--seed", type=int, default=9101)
    parser.add_argument("--fit-seed", type=int, default=9202)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench-scores"))
    args = parser.parse_args()

    started = time.perf_counter()
    proposer = RecordingProposer.from_pretrained(SHIPPED_DIR, device=args.device)
    report = read_coco(make_shapes(args.out / "report", images=args.images, seed=args.seed))
    fit = read_coco(make_shapes(args.out / "fit", images=args.fit_images, seed=args.fit_seed))
    report_answers = answers(proposer, report, args.batch_size)
    print(f"answered {args.images} report images after {time.perf_counter() - started:.0f} s", file=sys.stderr)
    fit_answers = answers(proposer, fit, args.batch_size)

    # The logistic's labels: kept as the acceptance matching decides with the default score, on the fit images only.
    fit_pairs = score_pairs(fit, predictions(fit, fit_answers, CANDIDATES[DEFAULT_SCORE]), (Task.detection,))
    fit_boxes = [e for i, j, q, boxes in fit_answers if j is None for _, e in boxes]
    x = np.array([features(e) for e in fit_boxes])
    y = np.array([k for _, k in fit_pairs[Task.detection]], dtype=float)
    weights, bias = fit_logistic(x, y)

    def logistic(evidence: BoxEvidence) -> float:
        return float(1 / (1 + np.exp(-(np.dot(weights, features(evidence)) + bias))))

    candidates = {**CANDIDATES, "logistic": logistic}
    table = {name: quality(report, report_answers, score) for name, score in candidates.items()}
    print(
        json.dumps(
            {
                "model": str(SHIPPED_DIR.name),
                "images": args.images,
                "seed": args.seed,
                "fit_images": args.fit_images,
                "fit_seed": args.fit_seed,
                "default": DEFAULT_SCORE,
                "logistic": {"features": [f"log {n}" for n in FEATURES], "weights": weights.tolist(), "bias": bias},
                "candidates": table,
                "seconds": round(time.perf_counter() - started, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
