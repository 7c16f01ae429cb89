"""A live Label Studio project as an autolabel source, and the run's predictions pushed back into it.

``autolabel --label-studio URL --project ID``: every task of the project is an item, its image read through the
backend's image access (:mod:`label_studio_access.media`, the same SSRF and traversal guards). Tasks that already
hold a prediction of this model version are skipped, so a rerun adds nothing; with ``overwrite`` they are answered
again and their old predictions of this version replaced (the new one is imported before the old is deleted, so a
task is never left without one). Pushing happens in batches after the journal holds the answers: a run stopped
half way and run again pushes what is missing, because what Label Studio already holds is skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .asks import Asks
from .journal import Result
from .outputs import task_prediction
from .sources import Item, Source, SourceError

if TYPE_CHECKING:
    from label_studio_access.media_settings import MediaSettings
    from label_studio_access.projects import LabelStudioProject

__all__ = ["PUSH_BATCH", "ProjectLink", "project_source"]

PUSH_BATCH = 100  # predictions per import call: one request per 100 tasks, each well under LS's request limits


@dataclass
class ProjectLink:
    """A run's live project: where its images are read from and its predictions go."""

    project: LabelStudioProject
    media: MediaSettings
    overwrite: bool = False
    earlier: dict[str, list[int]] = field(default_factory=dict)  # key -> this version's predictions already there
    pushed: int = 0
    replaced: int = 0

    def push(self, source: Source, asks: Asks, results: Mapping[str, Result], model_version: str) -> None:
        """Push the answered images' predictions that the project does not hold yet, ``batch`` tasks per call."""
        todo = [
            item
            for item in source.items
            if item.key not in source.skip and item.key in results and results[item.key].error is None
        ]
        for start in range(0, len(todo), PUSH_BATCH):
            chunk = todo[start : start + PUSH_BATCH]
            self.project.push([_prediction(item, results[item.key], asks, model_version) for item in chunk])
            self.pushed += len(chunk)
            old = [ident for item in chunk for ident in self.earlier.get(item.key, ())]
            self.project.delete_predictions(old)
            self.replaced += sum(bool(self.earlier.get(item.key)) for item in chunk)

    def stats(self, source: Source) -> dict[str, Any]:
        return {
            "url": self.project.url,
            "project": self.project.project_id,
            "tasks": len(source.items),
            "pushed": self.pushed,
            "replaced": self.replaced,
            "already_predicted": len(source.skip),
        }


def project_source(
    project: LabelStudioProject, *, image_key: str, model_version: str, overwrite: bool
) -> tuple[Source, dict[str, list[int]]]:
    """The project's tasks as items, the keys to skip (holding a prediction of ``model_version``, unless
    ``overwrite``), and, for ``overwrite``, the predictions of that version each task holds."""
    items: list[Item] = []
    skip: set[str] = set()
    earlier: dict[str, list[int]] = {}
    for task in project.tasks():
        key = f"task {task.id}"
        reference = task.data.get(image_key)
        url = reference if isinstance(reference, str) else ""  # no image: a failure naming the task, not a stop
        items.append(Item(key, Path(url or key), task={"id": task.id, "data": task.data}, url=url, task_id=task.id))
        mine = task.predictions_of(model_version)
        if mine and not overwrite:
            skip.add(key)
        elif mine:
            earlier[key] = mine
    if not items:
        raise SourceError(
            f"project {project.project_id} ({project.title}) at {project.url} has no tasks; import tasks first"
        )
    source = Source(
        "label-studio-project",
        Path(f"label-studio-project-{project.project_id}"),
        tuple(items),
        fingerprint=f"label-studio-project:{project.url}/projects/{project.project_id}",
        image_key=image_key,
        skip=frozenset(skip),
        name=f"{project.url}/projects/{project.project_id}/",
    )
    return source, earlier


def _prediction(item: Item, result: Result, asks: Asks, model_version: str) -> dict[str, Any]:
    answer = task_prediction(item, result, asks, model_version)
    assert answer is not None and item.task_id is not None  # only answered tasks of a project are pushed
    return {"task": item.task_id, **answer}
