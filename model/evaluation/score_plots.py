"""The picture of an evaluation's scores: the reliability diagram and the triage curve, as one PNG.

`evaluate --report FILE` writes it beside the JSON report (FILE with `.png`), so a reviewer can see at a glance
whether a score of 0.7 means "kept 70% of the time" (left: kept rate per score bin against the diagonal) and how many
of the wrong proposals checking the lowest-scoring ones finds (right: against checking at random). Drawn from the
report alone (:class:`model.evaluation.runner.ScoreReport`), with matplotlib's non-interactive Agg backend, so it
needs no display. matplotlib is in the `eval` extra (and `dev`); without it the plot is skipped with a message.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..files import write_atomic
from .runner import EvaluationReport, ScoreReport
from .score_quality import ScoreQuality

__all__ = ["PlotUnavailable", "plot_beside", "plot_path_for", "write_score_plot"]

_COLOURS = {"detection": "tab:blue", "refer": "tab:orange", "overall": "tab:gray"}


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed; the message says how to install it."""


def plot_path_for(report_path: str | os.PathLike) -> Path:
    """Where the PNG of a report goes: beside it, same name, `.png`."""
    return Path(report_path).with_suffix(".png")


def write_score_plot(scores: ScoreReport, path: str | os.PathLike, *, title: str = "") -> Path:
    """Draw `scores` (reliability diagram and triage curve, per task) into the PNG `path`, replaced atomically."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display, no GUI toolkit: safe in a server, a test or a headless run
        from matplotlib import pyplot as plt
    except ImportError as err:
        raise PlotUnavailable(
            f"the score plot needs matplotlib ({err}); install it with `pip install 'minigpt-annotate[eval]'`"
        ) from None
    parts = [(name, q) for name in ("detection", "refer", "overall") if (q := getattr(scores, name)) is not None]
    if scores.detection is None or scores.refer is None:
        parts = [p for p in parts if p[0] != "overall"]  # one task: "overall" would draw the same curve twice
    figure, (reliability, triage) = plt.subplots(1, 2, figsize=(10, 4.5), dpi=100)
    try:
        reliability.plot([0, 1], [0, 1], linestyle=":", color="black", label="calibrated")
        triage.plot([0, 1], [0, 1], linestyle=":", color="black", label="at random")
        for name, quality in parts:
            _draw(reliability, triage, name, quality)
        reliability.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean score in the bin", ylabel="share kept",
                        title="Reliability (10 bins; marker area: proposals)")  # fmt: skip
        triage.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="share of proposals reviewed, lowest score first",
                   ylabel="share of the wrong proposals found", title="Triage")  # fmt: skip
        for axes in (reliability, triage):
            axes.grid(alpha=0.3)
            axes.legend(loc="upper left", fontsize=8)
        if title:
            figure.suptitle(title)
        figure.tight_layout()
        path = Path(path)
        write_atomic(path, lambda fp: figure.savefig(fp, format="png"), binary=True)
    finally:
        plt.close(figure)
    return path


def plot_beside(report: EvaluationReport, report_path: str | os.PathLike, title: str) -> None:
    """Write the report's score plot beside its saved JSON and say where on stderr; or one line saying why not."""
    if report.scores is None:
        return
    try:
        path = write_score_plot(report.scores, plot_path_for(report_path), title=title)
    except PlotUnavailable as err:
        print(f"no score plot: {err}", file=sys.stderr)
    else:
        print(f"score plot (reliability and triage) saved to {path}", file=sys.stderr)


def _draw(reliability, triage, name: str, quality: ScoreQuality) -> None:
    colour = _COLOURS[name]
    rows = [b for b in quality.reliability if b.n]
    most = max((b.n for b in rows), default=1)
    auc = f"AUC {quality.roc_auc:.2f}" if quality.roc_auc is not None else "AUC -"
    ece = f"ECE {quality.ece:.3f}" if quality.ece is not None else "ECE -"
    scores, kept = [b.mean_score for b in rows], [b.kept_rate for b in rows]
    reliability.plot(scores, kept, color=colour, linewidth=1)
    reliability.scatter(scores, kept, s=[10 + 90 * b.n / most for b in rows], color=colour,
                        label=f"{name} (n {quality.n}, {ece})")  # fmt: skip
    curve = [p for p in quality.triage_curve if p.caught is not None]
    triage.plot([p.reviewed for p in curve], [p.caught for p in curve], color=colour, marker=".",
                label=f"{name} ({auc})")  # fmt: skip
