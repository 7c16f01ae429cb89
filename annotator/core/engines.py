"""Where the desktop app's proposals come from: the model in this process, or `minigpt-annotate serve` on a GPU box.

Both engines take the same :class:`EngineRequest` list (a local file and a :class:`~model.request.Prompt`) and give
the same :class:`~model.results.ProposalResult` objects (``image`` is the local path, boxes are in pixels of the
local upright image), so the app does not care which one runs. The remote engine speaks the `/propose` contract of
:mod:`model.propose_api`, the models the server validates with. Qt-free: the GUI calls them from a worker thread
and passes ``should_stop``/``on_progress``.

Work is done one image at a time, all of that image's prompts in one batch (the image is encoded once). Batch code
over a folder uses :meth:`Engine.propose_each`, which yields each image's results as soon as they exist, yields a
per-image error (an unreadable file) instead of stopping, and stops cleanly between images on cancel. Failures of
the engine itself (server unreachable, refused, broken) raise :class:`EngineError`: every further image would fail
the same way, so the run stops.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import requests

from model import propose_api
from model.annotations import Box
from model.errors import GenerationStopped, MiniGPTError
from model.images import LoadedImage, load_image
from model.propose_api import MAX_UPLOAD_SIDE, ProposeAnswer, ProposeBody, ProposeOptions
from model.request import Prompt
from model.results import GenerationOptions, ProposalResult

if TYPE_CHECKING:  # torch loads only with a local model, so the window opens fast and a remote-only app stays lean
    from model.proposer import Proposer

__all__ = [
    "MAX_UPLOAD_SIDE",
    "Cancelled",
    "Engine",
    "EngineError",
    "EngineRequest",
    "ImageOutcome",
    "LocalEngine",
    "RemoteEngine",
    "load_model_input",
]

# Files sent as they are (see _Upload): formats every Pillow decodes, small enough not to need re-encoding.
PASS_THROUGH_BYTES = 8 * 1024 * 1024
_PASS_THROUGH_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")  # JPEG, PNG
JPEG_QUALITY = 95

ProgressCallback = Callable[[int, int], None]
StopCallback = Callable[[], bool]


@dataclass(frozen=True)
class EngineRequest:
    """One prompt about one local image file (no chat history: the server's contract carries none)."""

    image: Path  # a local image file
    prompt: Prompt  # its box, if any, in pixels of the local upright image

    def __post_init__(self) -> None:
        object.__setattr__(self, "image", Path(self.image))  # accept "photo.jpg" too, as settings give it


class Cancelled(MiniGPTError):
    """``should_stop()`` turned true. Checked between images; a local model also stops mid-generation, and then
    that image's partial answer is dropped, never returned half-done.

    ``results`` holds what :meth:`Engine.propose` had finished, in request order (None for requests not run).
    """

    def __init__(self, message: str = "stopped", results: list[ProposalResult | None] | None = None):
        super().__init__(message)
        self.results = results or []


class EngineError(MiniGPTError):
    """The engine itself failed (e.g. the server is unreachable or refuses the password), not one image."""


class ImageOutcome(NamedTuple):
    """What one image gave: the indices of its requests, and their results in that order or the image's error.

    Unpacks as ``indices, outcome = ...``. A per-image error is a MiniGPTError, e.g.
    :class:`~model.errors.ImageLoadError` for an unreadable file (mark the image unreadable and go on).
    """

    indices: list[int]
    outcome: list[ProposalResult] | MiniGPTError

    @property
    def error(self) -> MiniGPTError | None:
        return self.outcome if isinstance(self.outcome, MiniGPTError) else None

    @property
    def results(self) -> list[ProposalResult]:
        """The results, or [] if the image failed."""
        return [] if isinstance(self.outcome, MiniGPTError) else self.outcome


class Engine(Protocol):
    description: str  # e.g. "local model tiny-shapes on cpu", "server http://gpu-box:9090 (model v)"

    def propose(
        self,
        requests: Sequence[EngineRequest],
        *,
        on_progress: ProgressCallback | None = None,
        should_stop: StopCallback | None = None,
    ) -> list[ProposalResult]:
        """One result per request, in request order.

        Raises the first per-image error (e.g. ImageLoadError), Cancelled (with the finished results) or
        EngineError; use :meth:`propose_each` to go on past broken images.
        """
        ...

    def propose_each(
        self,
        requests: Sequence[EngineRequest],
        *,
        on_progress: ProgressCallback | None = None,
        should_stop: StopCallback | None = None,
    ) -> Iterator[ImageOutcome]:
        """One ImageOutcome per distinct image, in order of first appearance, as soon as it is done.

        ``should_stop`` is checked before each image (Cancelled is raised from the iterator); ``on_progress(done,
        total)`` counts requests, failed images included, after each image.
        """
        ...


class _ImageByImage:
    """The shared loop: group requests by image, one image at a time, cancel and progress between images."""

    description: str

    def _propose_image(
        self, image: Path, requests: Sequence[EngineRequest], should_stop: StopCallback | None = None
    ) -> list[ProposalResult]:
        raise NotImplementedError

    def propose_each(
        self,
        requests: Sequence[EngineRequest],
        *,
        on_progress: ProgressCallback | None = None,
        should_stop: StopCallback | None = None,
    ) -> Iterator[ImageOutcome]:
        groups: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(os.fspath(request.image), []).append(index)
        total = len(requests)
        done = 0
        for number, indices in enumerate(groups.values()):
            if should_stop is not None and should_stop():
                raise Cancelled(f"stopped after {number} of {len(groups)} images")
            image = requests[indices[0]].image
            outcome: list[ProposalResult] | MiniGPTError
            try:
                outcome = self._propose_image(image, [requests[i] for i in indices], should_stop)
            except (EngineError, Cancelled):
                raise
            except MiniGPTError as err:  # this image only: unreadable, or a prompt its task does not take
                outcome = err
            done += len(indices)
            if on_progress is not None:
                on_progress(done, total)
            yield ImageOutcome(indices, outcome)

    def propose(
        self,
        requests: Sequence[EngineRequest],
        *,
        on_progress: ProgressCallback | None = None,
        should_stop: StopCallback | None = None,
    ) -> list[ProposalResult]:
        results: list[ProposalResult | None] = [None] * len(requests)
        try:
            for indices, outcome in self.propose_each(requests, on_progress=on_progress, should_stop=should_stop):
                if isinstance(outcome, MiniGPTError):
                    raise outcome
                for index, result in zip(indices, outcome, strict=True):
                    results[index] = result
        except Cancelled as err:
            raise Cancelled(str(err), results) from None
        return [r for r in results if r is not None]


def load_model_input(path: Path) -> LoadedImage:
    """``path`` decoded at the size the model needs: whole up to :data:`MAX_UPLOAD_SIDE` on the long side (3x the
    448 px the model sees), larger ones reduced to it, a JPEG by libjpeg's draft mode (an 8000x6000 photo decodes
    at 1/8 scale, 1000x750, never at full size). Both engines feed the model these pixels, so local and remote
    answers agree; ``width``/``height`` stay the file's upright size, the frame the boxes are given in.

    Raises:
        ImageLoadError: the file cannot be read; the message names it.
    """
    return load_image(path, fit_side=MAX_UPLOAD_SIDE)


class LocalEngine(_ImageByImage):
    """The model in this process (a GPU here, or a small model on the CPU)."""

    def __init__(self, proposer: Proposer, *, options: GenerationOptions | None = None):
        self.proposer = proposer
        self.options = options
        self.description = f"local model {proposer.model_version or 'minigpt-v2'} on {proposer.device}"
        self._lock = threading.Lock()  # one generate at a time, whichever thread asks

    @classmethod
    def load(
        cls, model: str | os.PathLike, device: str = "auto", *, options: GenerationOptions | None = None
    ) -> LocalEngine:
        """Load a model folder (or hub id); raises CheckpointError naming the folder if it is not one."""
        from model.proposer import Proposer

        proposer = Proposer.from_pretrained(model, device=device)
        proposer.warm_up((1,), options)  # on a GPU: compile now, so the first click answers at full speed
        return cls(proposer, options=options)

    def _propose_image(
        self, image: Path, requests: Sequence[EngineRequest], should_stop: StopCallback | None = None
    ) -> list[ProposalResult]:
        # ImageLoadError names the file; result.image is str(image)
        loaded = load_model_input(image)
        from model.proposer import ProposeRequest

        batch = [ProposeRequest.of(loaded, r.prompt) for r in requests]
        with self._lock:
            try:  # Cancel also stops a long answer mid-generation, not only between images
                return self.proposer.propose_batch(batch, options=self.options, should_stop=should_stop)
            except GenerationStopped as err:
                raise Cancelled(f"stopped during {image.name}: {err}") from None


@dataclass(frozen=True)
class _Upload:
    """An image as sent to the server, and the factors from its pixels to those of the local upright image."""

    data: bytes
    width: int  # upright size of what is sent
    height: int
    original_width: int  # upright size of the local file
    original_height: int

    @classmethod
    def of(cls, path: Path) -> _Upload:
        """The file itself when it is a small JPEG/PNG, else the upright image downscaled and re-encoded.

        Sending the file unchanged (EXIF and all) lets the server decode exactly the pixels the local engine would;
        a re-encoded upload is upright already (JPEG without EXIF), so the server does not rotate it again.
        """
        # Decode here too: a broken file fails with its local name, not "<bytes>".
        loaded = load_model_input(path)
        width, height = loaded.width, loaded.height
        if not loaded.reduced and path.stat().st_size <= PASS_THROUGH_BYTES:
            data = path.read_bytes()
            if data.startswith(_PASS_THROUGH_SIGNATURES):
                return cls(data, width, height, width, height)
        image = loaded.image  # at most MAX_UPLOAD_SIDE already
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)  # 4:4:4: no colour smearing
        return cls(buffer.getvalue(), image.width, image.height, width, height)

    # Why rescaling is exact up to the grid: the model answers on a 0-100 grid of the *whole* image, and the server
    # maps a grid value c to c / 100 * W_sent (+ offset). Scaling by W / W_sent per axis gives c / 100 * W, exactly
    # what the local engine computes from the same answer; rounding W_sent to whole pixels does not matter because
    # each axis uses its own factor. Likewise an [identify] box x scaled by W_sent / W lands in the same grid cell,
    # int(x * W_sent / W / W_sent * 100) = int(x / W * 100), up to float noise that grammar's 1e-9 snap absorbs.
    # The only difference left is the model's input: the server resizes the (JPEG-encoded) downscaled upload to
    # 448 px instead of the original, nearly the same pixels, which can nudge an answer by a grid cell. Files sent
    # unchanged give exactly the local engine's results.

    def prompt_to_sent(self, prompt: Prompt) -> Prompt:
        """The prompt as the server gets it: only the core fields, its box in pixels of the sent image."""
        if prompt.box is None:
            return Prompt(prompt.task, prompt.query)
        fx, fy = self.width / self.original_width, self.height / self.original_height
        box = prompt.box
        return Prompt(prompt.task, prompt.query, [box.x0 * fx, box.y0 * fy, box.x1 * fx, box.y1 * fy])

    def box_from_sent(self, box: Box, sent_width: int, sent_height: int) -> Box:
        fx, fy = self.original_width / sent_width, self.original_height / sent_height
        w, h = float(self.original_width), float(self.original_height)
        return Box(x0=min(box.x0 * fx, w), y0=min(box.y0 * fy, h), x1=min(box.x1 * fx, w), y1=min(box.y1 * fy, h))


class RemoteEngine(_ImageByImage):
    """`minigpt-annotate serve` on another machine, through its `POST /propose` (see model.propose_api)."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 120,
        auth: tuple[str, str] | None = None,
        options: GenerationOptions | None = None,
    ):
        url = url.strip()
        self.url = (url if "://" in url else f"http://{url}").rstrip("/")  # "gpu-box:9090" is what people type
        self.timeout = timeout
        self.auth = auth
        self.options = options
        self.model_version: str | None = None  # from /health, once connected
        self.description = f"server {self.url}"
        self._session = requests.Session()
        self._session.auth = auth

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        timeout: float = 120,
        auth: tuple[str, str] | None = None,
        options: GenerationOptions | None = None,
    ) -> RemoteEngine:
        """An engine for a server that answers, is a minigpt-annotate server, has /propose and accepts `auth`.

        Raises EngineError naming the URL, the cause and the fix.
        """
        engine = cls(url, timeout=timeout, auth=auth, options=options)
        engine.check()
        return engine

    def check(self) -> None:
        """GET /health (reachable, the right kind of server), then OPTIONS /propose (the endpoint and the password)."""
        health = self._request("GET", "/health", timeout=min(self.timeout, 10))
        body = _json_body(health)
        if health.status_code != 200 or not isinstance(body, dict) or "model_version" not in body:
            raise EngineError(
                f"{self.url} is not a minigpt-annotate server (GET /health answered {health.status_code}"
                f"{'' if isinstance(body, dict) else ', not JSON'}); check the host and port of "
                "`minigpt-annotate serve`"
            )
        self.model_version = str(body["model_version"])
        self.description = f"server {self.url} (model {self.model_version})"
        # Flask answers OPTIONS for every route after authentication: 401 means the password, 404 an old server.
        probe = self._request("OPTIONS", propose_api.PATH, timeout=min(self.timeout, 10))
        self._raise_for_engine(probe)
        if probe.status_code >= 400:
            raise EngineError(
                f"{self.url} answered OPTIONS {propose_api.PATH} with {probe.status_code}: {_error_text(probe)}"
            )

    def close(self) -> None:
        self._session.close()

    def _propose_image(
        self, image: Path, requests: Sequence[EngineRequest], should_stop: StopCallback | None = None
    ) -> list[ProposalResult]:
        # A request in flight on the server is not interrupted; should_stop is checked between images.
        upload = _Upload.of(image)  # ImageLoadError for a broken file, before anything is sent
        options = ProposeOptions.of(self.options) if self.options is not None else None
        results: list[ProposalResult] = []
        for start in range(0, len(requests), propose_api.MAX_PROMPTS):
            chunk = requests[start : start + propose_api.MAX_PROMPTS]
            body = ProposeBody(
                image=upload.data, prompts=[upload.prompt_to_sent(r.prompt) for r in chunk], options=options
            )
            response = self._request(
                "POST", propose_api.PATH, data=body.to_json(), headers={"Content-Type": "application/json"}
            )
            results.extend(self._results(response, image, upload, len(chunk)))
        return results

    def _results(self, response: requests.Response, image: Path, upload: _Upload, count: int) -> list[ProposalResult]:
        self._raise_for_engine(response)
        if response.status_code in (400, 413, 422):  # about this image or its prompts: the run goes on
            raise MiniGPTError(f"the model server could not process {image}: {_error_text(response)}")
        try:
            if response.status_code != 200:
                raise ValueError(f"expected 200 and {count} results")
            answer = ProposeAnswer.model_validate_json(response.content)
            if len(answer.results) != count:
                raise ValueError(f"expected {count} results, got {len(answer.results)}")
        except ValueError as err:  # pydantic's ValidationError is a ValueError too
            raise EngineError(
                f"{self.url} answered {propose_api.PATH} with {response.status_code} and an unexpected body ({err}); "
                "is the server's minigpt-annotate the same version as this app's?"
            ) from err
        return [self._localised(result, image, upload) for result in answer.results]

    @staticmethod
    def _localised(result: ProposalResult, image: Path, upload: _Upload) -> ProposalResult:
        """The server's result in the local file's terms: its path, its upright size, boxes in its pixels."""
        proposals = [
            p.model_copy(update={"box": upload.box_from_sent(p.box, result.width, result.height)})
            for p in result.proposals
        ]
        return result.model_copy(
            update={
                "image": str(image),
                "width": upload.original_width,
                "height": upload.original_height,
                "proposals": proposals,
            }
        )

    def _request(self, method: str, path: str, *, timeout: float | None = None, **kwargs: Any) -> requests.Response:
        limit = self.timeout if timeout is None else timeout
        try:
            return self._session.request(method, self.url + path, timeout=(min(limit, 10), limit), **kwargs)
        except requests.Timeout as err:
            raise EngineError(
                f"the model server at {self.url} did not answer {method} {path} within {limit:g} s; it may be busy "
                "or stuck (see its log), or raise the timeout"
            ) from err
        except requests.ConnectionError as err:
            raise EngineError(
                f"cannot reach the model server at {self.url} ({_connection_cause(err)}); check that "
                "`minigpt-annotate serve` is running there and the host and port are right (to be reachable from "
                "other machines it must be started with --host 0.0.0.0)"
            ) from err
        except requests.RequestException as err:  # e.g. an invalid URL
            raise EngineError(f"cannot send a request to {self.url}: {err}; check the server URL") from err

    def _raise_for_engine(self, response: requests.Response) -> None:
        """Errors that every further request would also get: stop the run."""
        status = response.status_code
        if status == 401:
            fix = (
                "check the user and password"
                if self.auth is not None
                else "set the user/password (the server's BASIC_AUTH_USER and BASIC_AUTH_PASS)"
            )
            raise EngineError(f"the model server at {self.url} refused the request (401 unauthorized): {fix}")
        if status in (404, 405):
            raise EngineError(
                f"{self.url} has no {propose_api.PATH} endpoint ({status}): it is not a minigpt-annotate server, or "
                "an older one; update minigpt-annotate on the server"
            )
        if status >= 500:
            raise EngineError(
                f"the model server at {self.url} failed ({status}: {_error_text(response)}); see the server's log"
            )


def _json_body(response: requests.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return None


def _error_text(response: requests.Response) -> str:
    body = _json_body(response)
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"]
    text = " ".join(response.text.split())
    return (text[:200] + "...") if len(text) > 200 else (text or response.reason or "no details")


def _connection_cause(err: requests.ConnectionError) -> str:
    """The innermost reason ("Connection refused", "Name or service not known"), not urllib3's whole chain."""
    cause: BaseException | None = err
    while cause is not None and (cause.__cause__ is not None or cause.__context__ is not None):
        cause = cause.__cause__ or cause.__context__
    text = str(cause or err)
    for marker in ("] ", ": "):
        if marker in text and len(text) > 80:
            text = text.rsplit(marker, 1)[-1]
    return text.strip() or type(err).__name__
