"""Engines turn items into :class:`~autolabel.journal.Result` s, streamed as each image finishes.

An engine only answers; the caller journals each result as it arrives. The local engine runs a
:class:`~model.proposer.Proposer` in this process; the Ray Data engine (:mod:`autolabel.ray_engine`) implements the
same :class:`Engine` protocol (decode in CPU tasks, an actor pool of proposers, results streamed back) and answers
through the same :func:`answer_loaded`, so the boxes, the journal, resume and the output files are the same whichever
engine ran.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from model.annotations import Task
from model.errors import ImageLoadError, MiniGPTError

from .asks import Asks, LabeledPrompt
from .journal import Result
from .sources import Item

if TYPE_CHECKING:
    from label_studio_access.media import MediaFetcher
    from label_studio_access.media_settings import MediaSettings
    from model.images import LoadedImage
    from model.proposer import Proposer

__all__ = ["Engine", "LocalEngine", "answer", "answer_loaded", "failure"]


class Engine(Protocol):
    model_version: str

    def run(self, items: Iterable[Item], asks: Asks) -> Iterator[Result]:
        """One result per item (in any order), as soon as each is finished. A bad image is a failed result,
        never an exception."""
        ...

    def close(self) -> None:
        """Release what the engine holds (a Ray runtime it started); called once the run ends, however it ends."""
        ...


def answer(item: Item, image: LoadedImage, prompts: Sequence[LabeledPrompt], results: Sequence[Any], seconds: float):
    """The result of one image from the model's answers to its prompts (engine-independent, so engines agree)."""
    proposals = [
        {"label": asked.label, "bbox": list(p.box.xyxy), "score": p.score, "prompt": p.prompt}
        | ({"raw_score": p.raw_score} if p.raw_score is not None else {})  # the score before the model's calibration
        for asked, result in zip(prompts, results, strict=True)
        for p in _kept(asked, result.proposals)
    ]
    return Result(item.key, item.image, image.width, image.height, proposals, None, seconds)


def _kept(asked: LabeledPrompt, proposals: Sequence[Any]) -> Sequence[Any]:
    """[refer] names one object: its best box, as the backend answers it; [detection] keeps every box."""
    if asked.prompt.task is Task.refer:
        return sorted(proposals, key=lambda p: p.score, reverse=True)[:1]
    return proposals


def failure(item: Item, err: BaseException, seconds: float = 0.0) -> Result:
    message = " ".join(str(err).split()) or type(err).__name__
    return Result(item.key, item.image, error=message, seconds=seconds)


class LocalEngine:
    """The model in this process: ``batch_images`` images at a time, all their prompts in one ``propose_batch``."""

    def __init__(self, proposer: Proposer, *, batch_images: int = 4, media: MediaSettings | None = None) -> None:
        self.proposer = proposer
        self.model_version = proposer.model_version
        self.batch_images = max(1, batch_images)
        self.media = media

    def run(self, items: Iterable[Item], asks: Asks) -> Iterator[Result]:
        batch: list[Item] = []
        for item in items:
            batch.append(item)
            if len(batch) == self.batch_images:
                yield from self._batch(batch, asks)
                batch = []
        if batch:
            yield from self._batch(batch, asks)

    def close(self) -> None:
        """Nothing to release: the model goes with the process."""

    def _batch(self, items: Sequence[Item], asks: Asks) -> Iterator[Result]:
        started = time.perf_counter()
        loaded: list[Loaded] = []
        for item in items:
            try:
                image = self.proposer.model_image(load_item(item, self.media))
            except (ImageLoadError, MiniGPTError) as err:  # unreadable, or not fetched (MediaError)
                yield failure(item, err)
                continue
            except Exception as err:  # a decoder bug must not stop a 100,000-image run
                yield failure(item, err)
                continue
            loaded.append((item, image, asks.prompts(item)))
        yield from answer_loaded(self.proposer, loaded, started)


def load_item(item: Item, media: MediaSettings | None) -> LoadedImage:
    """The item's image, decoded at most at the model's size: a file, or a live project's task image fetched under
    the backend's rules (:class:`label_studio_access.media.MediaFetcher`: the same SSRF and traversal guards)."""
    from model.images import MODEL_FIT_PIXELS, load_image

    if item.url is None:
        return load_image(item.path, fit_pixels=MODEL_FIT_PIXELS)
    if media is None:
        raise MiniGPTError(f"{item.key} is a Label Studio task, but the run has no Label Studio settings")
    return load_image(_fetcher(media).fetch(item.url, task_id=item.task_id), fit_pixels=MODEL_FIT_PIXELS)


@functools.lru_cache(maxsize=4)
def _fetcher(media: MediaSettings) -> MediaFetcher:
    """One fetcher per settings and process (it holds a connection pool and the download byte budget)."""
    from label_studio_access.media import MediaFetcher

    return MediaFetcher(media)


Loaded = tuple[Item, "LoadedImage", list[LabeledPrompt]]  # an image decoded for the model, and what it is asked


def answer_loaded(proposer: Proposer, loaded: Sequence[Loaded], started: float | None = None) -> Iterator[Result]:
    """The results of decoded images, all their prompts in one ``propose_batch`` (both engines' model step, so they
    answer alike). A batch the model fails on is answered one image at a time, so only the image that fails fails."""
    from model.proposer import ProposeRequest

    started = time.perf_counter() if started is None else started
    requests = [ProposeRequest.of(image, asked.prompt) for _, image, prompts in loaded for asked in prompts]
    try:
        answers = proposer.propose_batch(requests) if requests else []
    except Exception as err:
        if len(loaded) > 1:  # find the image that fails, and answer the others
            for one in loaded:
                yield from answer_loaded(proposer, [one])
        else:
            yield from (failure(item, err) for item, _image, _ in loaded)
        return
    seconds = (time.perf_counter() - started) / max(1, len(loaded))
    start = 0
    for item, image, prompts in loaded:
        yield answer(item, image, prompts, answers[start : start + len(prompts)], seconds)
        start += len(prompts)
