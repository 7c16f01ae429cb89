"""Turning model output into proposal rows without ever touching what a person made.

* Proposals never replace, move or relabel an annotation; they are only added, as ``proposal`` rows.
* A proposal that repeats an existing box of the same label (an annotation, or a proposal from an earlier run)
  is dropped, so running the model twice does not double the boxes.
* Within one run, overlapping proposals of the same label keep the best-scoring one (greedy NMS).
* The score threshold is a *view* filter (:func:`visible`): every proposal is stored with its score, and the
  slider only hides the weak ones, so moving it back brings them back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from model.annotations import Origin, Proposal

from .records import BoxRow, BoxState, now

DUPLICATE_IOU = 0.5  # above this overlap, two boxes of one label are the same object


def proposal_rows(
    proposals: Iterable[Proposal],
    image_id: int,
    existing: Sequence[BoxRow],
    *,
    label: str | None = None,
    iou: float = DUPLICATE_IOU,
) -> list[BoxRow]:
    """New proposal rows for ``image_id``, best score first, minus duplicates of ``existing`` and of each other.

    ``label`` names the label every box gets (a detection run for one label); by default each box takes its
    proposal's label (the query, or the phrase the model attached).
    """
    kept: list[BoxRow] = []
    at = now()
    for proposal in sorted(proposals, key=lambda p: p.score, reverse=True):
        row = BoxRow(
            image_id=image_id,
            label=label or proposal.label,
            box=proposal.box,
            state=BoxState.proposal,
            origin=Origin.proposed,
            score=proposal.score,
            task=proposal.task,
            prompt=proposal.prompt,
            phrase=proposal.phrase,
            model_version=proposal.model_version or None,
            changed_at=at,
        )
        if any(_same_object(row, other, iou) for other in (*existing, *kept)):
            continue
        kept.append(row)
    return kept


def visible(rows: Iterable[BoxRow], threshold: float) -> list[BoxRow]:
    """What the canvas shows: every annotation, and the proposals scoring at least ``threshold``."""
    return [row for row in rows if not row.is_proposal or (row.score or 0.0) >= threshold]


def _same_object(a: BoxRow, b: BoxRow, iou: float) -> bool:
    return a.label == b.label and a.box.iou(b.box) >= iou
