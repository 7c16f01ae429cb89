"""The ML backend's model class, with label-studio-ml 2.x's method names: `setup`, `predict(tasks, context)`, `fit`.

One instance serves every request of a process; the `Proposer` it wraps is loaded once. Model calls are serialised
by a lock (one batched `generate` at a time uses the hardware best), while image downloads run in parallel. A
`/predict` whose client has gone stops at the next chunk, so nobody's tasks wait behind work nobody will read.
"""

from __future__ import annotations

import logging
import math
import shlex
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Protocol

from label_studio_access.label_config import ProjectLabels
from label_studio_access.media import MediaFetcher, redact_url
from model.annotations import Proposal, Task
from model.errors import MiniGPTError
from model.images import MODEL_FIT_PIXELS, LoadedImage, load_image
from model.proposer import GenerationOptions, Prompt, ProposalResult, Proposer, ProposeRequest
from model.regions import prediction, rectangle_region

from .annotation_events import AnnotationEvent, AnnotationsDeleted, PredictionBody, prediction_regions
from .corrections import CorrectionStore
from .queries import Query, batch_queries, drawn_rectangle, identify_query, prompt_query, typed_prompt

log = logging.getLogger(__name__)

# Label Studio 1.23 sends deletions as ANNOTATIONS_DELETED with a list of ids; the singular form is accepted too.
TASKS_PER_CHUNK = 16  # images decoded and encoded together
WEBHOOK_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED", "ANNOTATION_DELETED")


class Learning(Protocol):
    """What the backend asks of `serve --learn` (ml_backend.learning.Learner), which is built around it."""

    def correction_stored(self) -> None: ...

    def status(self) -> dict: ...


@dataclass
class Metrics:
    predict_calls: int = 0
    tasks: int = 0
    regions: int = 0
    failed_tasks: int = 0
    model_seconds: float = 0.0
    corrections: int = 0
    abandoned_predicts: int = 0  # /predict requests stopped early because their client had gone
    partial_predicts: int = 0  # /predict requests answered in part: the rest would have outlasted Label Studio's wait
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def as_dict(self) -> dict:
        with self.lock:
            return {k: v for k, v in vars(self).items() if k != "lock"}


class _ImageCache:
    """The last few decoded images by URL: interactive prompts on one task reuse its image.

    Bounded by the pixels actually held (each image as decoded, which is at most MODEL_FIT_PIXELS), and the bound is
    kept: an image that alone exceeds it is not kept at all.
    """

    def __init__(self, max_pixels: int = 2 * MODEL_FIT_PIXELS):
        self._items: OrderedDict[str, LoadedImage] = OrderedDict()
        self._max_pixels = max_pixels
        self._lock = threading.Lock()

    def get(self, key: str) -> LoadedImage | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            return None

    def put(self, key: str, image: LoadedImage) -> None:
        with self._lock:
            self._items[key] = image
            self._items.move_to_end(key)
            while self._items and sum(_held_pixels(i) for i in self._items.values()) > self._max_pixels:
                self._items.popitem(last=False)

    def held_pixels(self) -> int:
        """Pixels the cached images hold (what the bound counts)."""
        with self._lock:
            return sum(_held_pixels(i) for i in self._items.values())


def _held_pixels(image: LoadedImage) -> int:
    return image.image.width * image.image.height


class PredictAbandoned(MiniGPTError):
    """The client of a `/predict` disconnected; the tasks not yet run were skipped."""


class _ProjectConfigs:
    """Label configs from /setup by project id, the `limit` most recently used kept (an LRU).

    Only a fallback: Label Studio 1.23 puts the config in every /predict and every webhook, so a project whose
    config was dropped still works; only a request that carries none needs /setup again.
    """

    def __init__(self, limit: int):
        self._items: OrderedDict[str, str] = OrderedDict()
        self._limit = limit
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def get(self, project: str) -> str | None:
        with self._lock:
            if project in self._items:
                self._items.move_to_end(project)
                return self._items[project]
            return None

    def put(self, project: str, label_config: str) -> None:
        with self._lock:
            self._items[project] = label_config
            self._items.move_to_end(project)
            while len(self._items) > self._limit:
                self._items.popitem(last=False)


class MiniGPTBackend:
    def __init__(
        self,
        proposer: Proposer,
        fetcher: MediaFetcher,
        *,
        corrections: CorrectionStore | None = None,
        model_version: str | None = None,
        score_threshold: float = 0.0,
        batch_size: int = 16,
        max_projects: int = 16,
        predict_budget_s: float | None = None,
        model_source: str | None = None,
    ):
        self.proposer = proposer
        self.model_source = model_source  # the model as `serve` was given it, for the autolabel command it logs
        self.predict_budget_s = predict_budget_s
        self.fetcher = fetcher
        self.corrections = corrections
        self.model_version = model_version or proposer.model_version or "minigpt-v2"
        self.score_threshold = score_threshold
        self.batch_size = batch_size
        self.metrics = Metrics()
        self._model_lock = threading.Lock()
        self._images = _ImageCache()
        self._configs = _ProjectConfigs(max_projects)  # project id → label config, from /setup
        self.learning: Learning | None = None  # set by `serve --learn`

    def swap_model(self, proposer: Proposer, model_version: str, model_source: str | None = None) -> None:
        """Serve another model from the next model call on (a learned one, promoted): never during a call, so each
        answer comes whole from one model and carries that model's version."""
        with self._model_lock:
            self.proposer, self.model_version = proposer, model_version
            self.model_source = model_source or self.model_source
        self._images = _ImageCache()  # images were reduced by the old model's processor

    @property
    def projects_remembered(self) -> int:
        """How many projects' label configs from /setup are kept (at most `max_projects`)."""
        return len(self._configs)

    # --- the label-studio-ml contract ---------------------------------------------------------------------------
    def setup(self, project: str | None, label_config: str | None) -> str:
        """Check the project's config once when Label Studio connects; remember it for requests that omit it."""
        if label_config:
            ProjectLabels.parse(label_config)
            if project:
                self._configs.put(_project_id(project), label_config)
        return self.model_version

    def label_config_for(self, project: object, label_config: str | None) -> str:
        """The config a request carries, else the one its project sent to /setup.

        `project` is what Label Studio names it by: "<id>.<created timestamp>" in /predict, the id in webhooks.
        """
        if label_config:
            return label_config
        remembered = self._configs.get(_project_id(project)) if project is not None else None
        if remembered is not None:
            return remembered
        raise MiniGPTError(f"no label config for project {project}: the request carries none and /setup was not called")

    def predict(
        self,
        tasks: Sequence[dict],
        context: dict | None,
        label_config: str,
        client_gone: Callable[[], bool] | None = None,
        project: object | None = None,
    ) -> list[dict]:
        """One prediction per task, in order. A task whose image cannot be read gets an empty result.

        Tasks are handled in chunks, so a 100-task request never holds 100 decoded images at once. Before each
        chunk `client_gone` is asked whether anyone still waits for the answer; if not, PredictAbandoned.

        A batch request (no `context`) answers what fits in `predict_budget_s`, judged before each chunk by the
        chunks already run: the tasks it did not reach get an empty list, which Label Studio stores nothing for, so
        the next "Retrieve predictions" on the same selection asks for exactly those (it skips tasks that hold a
        prediction of this model version). The first chunk always runs, so every retrieval makes progress. The log
        line gives the `autolabel --label-studio` command that labels the rest of `project` in one go.
        """
        labels = ProjectLabels.parse(label_config)
        predictions: list[dict | list] = []
        started = time.monotonic()
        for start in range(0, len(tasks), TASKS_PER_CHUNK):
            if client_gone is not None and client_gone():
                with self.metrics.lock:
                    self.metrics.abandoned_predicts += 1
                raise PredictAbandoned(
                    f"the client disconnected after {start} of {len(tasks)} task(s); the rest were not run"
                )
            if start and context is None and self._over_budget(started, start):
                predictions.extend([] for _ in tasks[start:])
                self._log_partial(start, len(tasks), time.monotonic() - started, project)
                break
            predictions.extend(self._predict_chunk(tasks[start : start + TASKS_PER_CHUNK], context, labels))
        with self.metrics.lock:
            self.metrics.predict_calls += 1
        if self.corrections is not None and context is None:
            self._remember_served(tasks, predictions, labels)
        return predictions

    def _remember_served(self, tasks: Sequence[dict], predictions: list[dict | list], labels: ProjectLabels) -> None:
        """Keep what each task was served, so a correction can say which predicted boxes it kept (issue 16)."""
        assert self.corrections is not None
        served = [
            (task.get("id"), *prediction_regions(PredictionBody.model_validate(answer), labels))
            for task, answer in zip(tasks, predictions, strict=False)
            if isinstance(answer, dict)
        ]
        try:
            self.corrections.remember_predictions(served)
        except MiniGPTError as err:  # the predictions are still answered; only acceptance loses these tasks
            log.warning("could not keep the served predictions for acceptance counting: %s", err)

    def _over_budget(self, started: float, done: int) -> bool:
        """Whether one more chunk, at the pace of those run so far, would end after the request's budget."""
        if self.predict_budget_s is None:
            return False
        elapsed = time.monotonic() - started
        per_chunk = elapsed / math.ceil(done / TASKS_PER_CHUNK)
        return elapsed + per_chunk > self.predict_budget_s

    def _log_partial(self, done: int, total: int, elapsed: float, project: object | None) -> None:
        with self.metrics.lock:
            self.metrics.partial_predicts += 1
        log.warning(
            "answered %d of %d task(s) in %.0f s; the other %d would outlast the %.0f s budget "
            "(MINIGPT_PREDICT_BUDGET_S, below Label Studio's ML_TIMEOUT_PREDICT), so they get no prediction now: "
            '"Retrieve predictions" again on the same selection continues with them, or, for the whole project in '
            "one go (resumable, tasks that hold this model's prediction are skipped), with LABEL_STUDIO_API_KEY "
            "set: %s",
            done,
            total,
            elapsed,
            total - done,
            self.predict_budget_s,
            self.autolabel_command(project),
        )

    def autolabel_command(self, project: object | None) -> str:
        """The `minigpt-annotate autolabel` command that labels `project` with this model and version."""
        project_id = _project_id(project) if project is not None else "PROJECT_ID"
        url = self.fetcher.settings.label_studio_url or "LABEL_STUDIO_URL"
        words = ["minigpt-annotate", "autolabel", "--label-studio", url, "--project", project_id]
        words += ["--model", self.model_source or "MODEL", "--model-version", self.model_version]
        return shlex.join([*words, "--out", f"autolabel-project-{project_id}"])

    def _predict_chunk(self, tasks: Sequence[dict], context: dict | None, labels: ProjectLabels) -> list[dict]:
        with ThreadPoolExecutor(max_workers=min(8, max(1, len(tasks)))) as pool:  # downloads overlap
            images = list(pool.map(lambda task: self._image(task, labels), tasks))
        jobs: list[tuple[int, Query]] = []
        for index, image in enumerate(images):
            if image is not None:
                jobs.extend((index, query) for query in self._queries(context, labels, image))

        requests = [ProposeRequest.of(images[index], query) for index, query in jobs]  # type: ignore[arg-type]
        started = time.perf_counter()
        with self._model_lock:  # the proposer and its version together: a promotion swaps them between calls
            results = self.proposer.propose_batch(requests, batch_size=self.batch_size) if requests else []
            version = self.model_version
        elapsed = time.perf_counter() - started

        regions: list[list[dict]] = [[] for _ in tasks]
        for (index, query), result in zip(jobs, results, strict=True):
            image = images[index]
            assert image is not None
            if query.task == Task.identify:
                regions[index].extend(self._identified(query, result.text, labels, image, tasks[index]))
            else:
                regions[index].extend(self._boxes(query, result.proposals, labels, image))

        predictions = [
            self._prediction(task, found, labels, version) for task, found in zip(tasks, regions, strict=True)
        ]
        with self.metrics.lock:
            self.metrics.tasks += len(tasks)
            self.metrics.failed_tasks += sum(image is None for image in images)
            self.metrics.regions += sum(len(p["result"]) for p in predictions)
            self.metrics.model_seconds += elapsed
        return predictions

    # --- the JSON API of `/propose` (the desktop app's remote engine) -------------------------------------------
    def propose(
        self,
        image: LoadedImage,
        prompts: Sequence[Prompt],
        options: GenerationOptions | None = None,
    ) -> list[ProposalResult]:
        """Every prompt about one decoded image, in request order.

        One `propose_batch` under the model lock, like a `/predict` chunk, so the image is encoded once and
        Label Studio's requests and these never run the model at the same time. Proposals carry this backend's
        model version (which `--model-version` may set), the one `/health` and `/predict` report.
        """
        requests = [ProposeRequest.of(image, prompt) for prompt in prompts]
        started = time.perf_counter()
        with self._model_lock:
            results = (
                self.proposer.propose_batch(requests, options=options, batch_size=self.batch_size) if requests else []
            )
            version = self.model_version
        with self.metrics.lock:
            self.metrics.model_seconds += time.perf_counter() - started
        return [
            result.model_copy(
                update={"proposals": [p.model_copy(update={"model_version": version}) for p in result.proposals]}
            )
            for result in results
        ]

    def fit(self, event: str, data: dict) -> dict:
        """Store corrections from annotation webhooks in the on-disk COCO dataset."""
        if self.corrections is None:
            return {"stored": False, "reason": "no corrections folder configured (--corrections DIR)"}
        if event not in WEBHOOK_EVENTS:
            return {"stored": False, "reason": f"event {event} is not an annotation event"}
        summary = self._store_correction(event, data)
        with self.metrics.lock:
            self.metrics.corrections += 1
        if self.learning is not None and event in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
            self.learning.correction_stored()  # a deletion teaches nothing new: it does not count towards a run
        return {"stored": True, **summary}

    def _store_correction(self, event: str, data: dict) -> dict:
        """One annotation event into the store; a malformed payload raises pydantic's ValidationError (a 400)."""
        assert self.corrections is not None
        if event == "ANNOTATIONS_DELETED":
            return self.corrections.delete(AnnotationsDeleted.model_validate(data).ids)  # one transaction for all
        received = AnnotationEvent.model_validate(data)
        annotation_id, task_id = received.annotation.id, received.task_id
        if event == "ANNOTATION_DELETED" or received.annotation.was_cancelled:
            return self.corrections.delete([annotation_id], task_id)
        labels = ProjectLabels.parse(self.label_config_for(received.project_id, received.label_config))
        reference = received.image_reference(labels.value_key)
        if task_id is None or reference is None:
            raise MiniGPTError(
                f"{event} webhook for annotation {annotation_id} carries no task image (data.{labels.value_key})"
            )
        version, predicted = received.predicted_regions(labels)
        return self.corrections.save(
            task_id, annotation_id, received.regions(labels), source=reference,
            fetch_image=lambda: self.fetcher.fetch(reference, task_id=task_id),
            origins=received.region_origins(labels), predicted=predicted, model_version=version,
        )  # fmt: skip

    # --- steps ---------------------------------------------------------------------------------------------------
    def _image(self, task: dict, labels: ProjectLabels) -> LoadedImage | None:
        task_id = task.get("id")
        data = task.get("data")
        if not isinstance(data, dict):  # one malformed task must not cost the others their predictions
            log.warning(
                "task %s: its data is %s, not an object; returning an empty prediction", task_id, type(data).__name__
            )
            return None
        reference = data.get(labels.value_key)
        if not isinstance(reference, str) or not reference:
            log.warning("task %s: no image under data.%s; returning an empty prediction", task_id, labels.value_key)
            return None
        cached = self._images.get(reference)
        if cached is not None:
            return cached
        try:
            payload = self.fetcher.fetch(reference, task_id=task_id if isinstance(task_id, int) else None)
            image = load_image(payload, fit_pixels=MODEL_FIT_PIXELS)
        except MiniGPTError as err:
            shown = redact_url(reference)  # task URLs carry signatures and tokens (issue 13 item 13)
            log.warning("task %s: cannot read image %s: %s; returning an empty prediction", task_id, shown, err)
            return None
        # Only the model's square is kept: the chunk and the cache then hold kilobytes per image, not 144 MB.
        image = self.proposer.model_image(replace(image, source=reference))
        self._images.put(reference, image)
        return image

    def _queries(self, context: dict | None, labels: ProjectLabels, image: LoadedImage) -> list[Query]:
        prompt = typed_prompt(context, labels)
        if prompt is not None:
            return [prompt_query(prompt, labels)]
        rectangle = drawn_rectangle(context, labels)
        if rectangle is not None:
            query = identify_query(rectangle, labels, image.width, image.height)
            return [query] if query is not None else []
        return batch_queries(labels)

    def _boxes(self, query: Query, proposals: list[Proposal], labels: ProjectLabels, image: LoadedImage) -> list:
        assert query.label is not None
        kept = [p for p in proposals if p.score >= self.score_threshold]
        if query.task == Task.refer:
            kept = sorted(kept, key=lambda p: p.score, reverse=True)[:1]  # one phrase, one object
        return [
            rectangle_region(
                p.box,
                query.label.value,
                p.score,
                width=image.width,
                height=image.height,
                from_name=labels.from_name,
                to_name=labels.to_name,
            )
            for p in kept
        ]

    def _identified(self, query: Query, answer: str, labels: ProjectLabels, image: LoadedImage, task: dict) -> list:
        spec = labels.find(answer)
        if spec is None or query.box is None:
            log.info("task %s: [identify] answered %r, which names none of the labels", task.get("id"), answer)
            return []
        region = rectangle_region(
            query.box, spec.value, None, width=image.width, height=image.height,
            from_name=labels.from_name, to_name=labels.to_name,
        )  # fmt: skip
        if query.region and query.region.get("id"):
            region["id"] = query.region["id"]  # the same rectangle, now with a suggested label
        return [region]

    def _prediction(self, task: dict, regions: list[dict], labels: ProjectLabels, version: str) -> dict:
        return prediction(self._validated(task, regions, labels), version)

    @staticmethod
    def _validated(task: dict, regions: list[dict], labels: ProjectLabels) -> list[dict]:
        """Every region passes the SDK's validation; one that doesn't is dropped and logged (it would be a bug)."""
        if not labels.validation_errors({"result": regions}):
            return regions
        kept = []
        for region in regions:
            errors = labels.validation_errors({"result": [region]})
            if errors:
                log.error("task %s: dropping a region the SDK rejects: %s", task.get("id"), "; ".join(errors))
            else:
                kept.append(region)
        return kept


def _project_id(project: object) -> str:
    return str(project).split(".")[0]
