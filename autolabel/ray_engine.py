"""``--engine ray``: the :class:`~autolabel.engine.Engine` protocol on Ray Data.

The items become a Ray Dataset; CPU tasks decode each image to the square the model sees (the same
:func:`~model.images.load_image` and :func:`~model.processing.model_view` the local engine uses through
``Proposer.model_image``); an actor pool of :class:`~model.proposer.Proposer` s, each loading the model once,
answers them with :func:`~autolabel.engine.answer_loaded`, the local engine's own model step, so both engines give
the same boxes. Results stream back to the caller as Ray finishes them, and the caller journals each one.

Scheduling, backpressure, task retries and actor restarts are Ray Data's, at its defaults (a task whose worker
died runs again; a dead actor restarts and its batches are resubmitted); nothing here queues or pools. Without
``--ray-address`` a local Ray starts (loopback, no dashboard) and stops with the command; with it, the command joins
that cluster and only disconnects at the end. A Ray runtime already started in this process (a test, a notebook) is
used as it is and left running.

Ray's own settings, given as ``RAY_*`` environment defaults before this module imports Ray (its C++ side reads them
at import; a value already in the environment wins): a ``--ray-address`` with no cluster behind it fails after one
connection attempt that waits ``MINIGPT_RAY_CONNECT_TIMEOUT_S`` (default 20) seconds for the cluster's GCS, not
after Ray's 20 attempts of about 40 s each; Ray Data logs from WARNING up (``RAY_DATA_LOG_LEVEL=DEBUG`` brings back
its per-run lines and its full ray-data.log); a local Ray gets the token authentication Ray gives it by default,
without the warning that says so. Warnings and errors stay on stderr.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.errors import MiniGPTError

from .asks import Asks, LabeledPrompt
from .engine import answer_loaded, failure, load_item
from .journal import Result
from .sources import Item

if TYPE_CHECKING:
    import numpy as np

    from label_studio_access.media_settings import MediaSettings
    from model.processing import ImageProcessorConfig

__all__ = ["CONNECT_TIMEOUT_ENV", "DEFAULT_CONNECT_TIMEOUT_S", "RayEngine"]

CONNECT_TIMEOUT_ENV = "MINIGPT_RAY_CONNECT_TIMEOUT_S"
DEFAULT_CONNECT_TIMEOUT_S = 20  # Ray's is 30; 20 and its two 5 s channel waits: 31 s in ray.init, measured


class RayEngine:
    """``actors`` proposers (one GPU each when the cluster has GPUs, else ``actor_cpus`` CPUs each)."""

    def __init__(
        self,
        model: str,
        *,
        model_version: str,
        device: str | None = "auto",
        dtype: str | None = "auto",
        batch_images: int = 4,
        actors: int | None = None,
        address: str | None = None,
        media: MediaSettings | None = None,
    ) -> None:
        wait_s = _connect_timeout_s() if address else None
        if "ray" in sys.modules:  # Ray reads them at import: a process that already imported it keeps its settings
            wait_s = None
        else:
            for name, value in _ray_settings(wait_s).items():
                os.environ.setdefault(name, value)
        try:
            import ray
        except ImportError as err:
            from model.commands import missing_extra

            raise missing_extra("--engine ray", "scale", err) from err
        from model.processing import MiniGPTv2Processor

        # run() turns Ray Data's progress bars off (the command shows one bar for the run) and Ray Data warns about
        # that once per process; nothing else is logged there, and its real warnings come from other modules
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)

        # the actors may run on other machines and in other working directories: a local folder goes by its full path
        self.model = str(Path(model).resolve()) if Path(model).is_dir() else model
        self.model_version = model_version
        self.device, self.dtype = device, dtype
        self.batch_images = max(1, batch_images)
        self.media = media  # a live project's image access; sent to the decode tasks (it holds the token)
        # the square the model sees, for the decode tasks (read here, so a bad model folder fails before Ray starts)
        self.image_config = MiniGPTv2Processor.from_pretrained(model).config.image
        self._started = not ray.is_initialized()
        if self._started:
            try:
                if address:
                    ray.init(address=address, logging_level="WARNING", log_to_driver=False)
                else:  # this machine only: every Ray process listens on loopback
                    ray.init(  # at least a CPU per actor and one for decoding, or --actors N would wait forever
                        address="local",  # a new Ray of our own, never a cluster `ray start` left on this machine
                        num_cpus=max(os.cpu_count() or 1, (actors or 1) + 1),
                        include_dashboard=False,
                        _node_ip_address="127.0.0.1",
                        logging_level="WARNING",
                    )
            except Exception as err:  # ray raises ConnectionError, ValueError, RuntimeError ...
                raise _cannot_start(address, wait_s, err) from err
        gpus = int(ray.cluster_resources().get("GPU", 0))
        self.num_gpus = 1 if gpus else 0
        self.actors = actors or max(1, gpus)
        self.actor_cpus = 0 if gpus else _cpus_per_actor(ray.nodes(), self.actors)

    def close(self) -> None:
        import ray

        if self._started and ray.is_initialized():
            ray.shutdown()
        self._started = False

    def run(self, items: Iterable[Item], asks: Asks) -> Iterator[Result]:
        import ray

        ray.data.DataContext.get_current().enable_progress_bars = False  # the caller shows one bar, for the run
        rows = [
            {
                "key": item.key,
                "path": str(item.path),
                "url": item.url if item.url is not None else "",  # "": a file (Arrow columns keep one type)
                "task_id": item.task_id if item.task_id is not None else -1,
                "prompts": _prompts_json(asks.prompts(item)),
            }
            for item in items
        ]
        if not rows:
            return
        decoded = ray.data.from_items(rows).map(
            _decode, fn_kwargs={"config": self.image_config, "media": self.media}, num_cpus=0.5
        )
        answered = decoded.map_batches(
            _ProposerActor,
            fn_constructor_kwargs={
                "model": self.model,
                "model_version": self.model_version,
                "device": self.device,
                "dtype": self.dtype,
                "threads": self.actor_cpus,
            },
            batch_size=self.batch_images,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=self.actors),
            num_cpus=self.actor_cpus or None,
            num_gpus=self.num_gpus or None,
        )  # fault tolerance is Ray Data's default: a dead actor restarts and its batches run again
        for row in answered.iter_rows():  # streamed: each batch as soon as an actor has answered it
            yield Result(**json.loads(row["result"]))


def _connect_timeout_s() -> int:
    """MINIGPT_RAY_CONNECT_TIMEOUT_S: whole seconds, as Ray's ``py_gcs_connect_timeout_s`` takes them."""
    text = os.environ.get(CONNECT_TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_CONNECT_TIMEOUT_S
    try:
        seconds = int(text)
    except ValueError:
        seconds = 0
    if seconds <= 0:
        raise MiniGPTError(
            f"{CONNECT_TIMEOUT_ENV}={text!r} is not a positive whole number of seconds; set it to e.g. "
            f"{DEFAULT_CONNECT_TIMEOUT_S}, or unset it"
        )
    return seconds


def _ray_settings(wait_s: int | None) -> dict[str, str]:
    """The ``RAY_*`` environment this command gives Ray; ``wait_s``: seconds to wait for --ray-address, None: local."""
    # below WARNING, Ray Data logs each run's plan, start and end, for Ray's developers; its warnings (an actor pool
    # the cluster cannot place, a stalled run) are the ones a user needs, and stay
    settings = {"RAY_DATA_LOG_LEVEL": "WARNING"}
    if wait_s is None:
        # Ray turns token authentication on for a new local cluster and warns that it did; set, it does so quietly
        settings["RAY_AUTH_MODE"] = "token"
    else:
        settings |= {
            # one attempt: ray.init would otherwise try 20 times, each waiting the GCS timeout (30 s) plus two 5 s
            # channel waits (41 s measured per attempt at a closed port)
            "RAY_gcs_server_port_wait_time_s": "1",
            "RAY_py_gcs_connect_timeout_s": str(wait_s),  # how long that attempt waits for the cluster's GCS
        }
    return settings


def _cannot_start(address: str | None, wait_s: int | None, err: BaseException) -> MiniGPTError:
    cause = " ".join(str(err).split())
    if not address:
        return MiniGPTError(f"cannot start a local Ray: {cause}; pass --ray-address to use a running cluster instead")
    # Ray's message names no reason: a closed port and a refused token (an explicit address never sends the token
    # Ray keeps for local clusters) both read "Failed to connect"; the reason is in Ray's warning line above it
    direct = wait_s is not None and not address.startswith("ray://")  # ray:// is Ray Client's, with its own 3 tries
    waited = f" (Ray waits up to {wait_s} s: {CONNECT_TIMEOUT_ENV})" if direct else ""
    return MiniGPTError(
        f"cannot join the Ray cluster at {address}: {cause}{waited}; check that a cluster runs there (`ray status "
        "--address HOST:6379`) and that --ray-address is its head's HOST:6379 (or ray://HOST:10001); if it uses token "
        "authentication, export RAY_AUTH_MODE=token and its token (RAY_AUTH_TOKEN, or ~/.ray/auth_token from the head "
        "node); or leave --ray-address out to run on this machine"
    )


def _cpus_per_actor(nodes: list[dict[str, Any]], actors: int) -> int:
    """CPU actors share the CPUs, less one for the decode tasks, and each fits on one node (the biggest)."""
    node_cpus = [int(node["Resources"].get("CPU", 0)) for node in nodes if node.get("Alive")]
    total, biggest = sum(node_cpus), max(node_cpus, default=1)
    return max(1, min(biggest - 1 if len(node_cpus) == 1 else biggest, (total - 1) // actors))


def _prompts_json(prompts: list[LabeledPrompt]) -> str:
    return json.dumps([[p.prompt.task.value, p.prompt.query, p.label] for p in prompts])


def _row_item(row: dict[str, Any]) -> Item:
    url, task_id = str(row["url"]), int(row["task_id"])
    return Item(str(row["key"]), Path(str(row["path"])), url=url or None, task_id=task_id if task_id >= 0 else None)


def _decode(row: dict[str, Any], config: ImageProcessorConfig, media: MediaSettings | None) -> dict[str, Any]:
    """A CPU task: the image read (a file, or a live project's task image under the backend's rules), decoded and
    resized to the model's square; or the failed result of an image that cannot be read (the model never sees it)."""
    import numpy as np

    from model.processing import model_view

    size = config.image_size
    try:
        image = load_item(_row_item(row), media)
        pixels = np.asarray(model_view(image.image, config), dtype=np.uint8)
    except Exception as err:  # ImageLoadError, MediaError, or a decoder bug: a failed image, never a stopped run
        failed = failure(_row_item(row), err)
        return {**row, "pixels": np.zeros((size, size, 3), np.uint8), "width": 0, "height": 0, "failed": _json(failed)}
    return {**row, "pixels": pixels, "width": image.width, "height": image.height, "failed": ""}


class _ProposerActor:
    """One model, loaded once per actor; a batch of decoded rows in, one result (JSON) per row out."""

    def __init__(self, model: str, model_version: str, device: str | None, dtype: str | None, threads: int) -> None:
        import torch

        from model.proposer import Proposer

        if threads:  # Ray gives the actor this many CPUs; torch would otherwise use every core of the node
            torch.set_num_threads(threads)
        # each image once, all its labels in one call: share the prefix within the call, keep none across calls
        self.proposer = Proposer.from_pretrained(
            model, device=device, dtype=dtype, model_version=model_version, prefix_cache_bytes=0
        )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import numpy as np
        from PIL import Image

        from model.annotations import Task
        from model.images import LoadedImage
        from model.request import Prompt

        results: list[str] = []
        loaded = []
        for i in range(len(batch["key"])):
            if batch["failed"][i]:
                results.append(str(batch["failed"][i]))
                continue
            item = _row_item({name: batch[name][i] for name in ("key", "path", "url", "task_id")})
            pixels = Image.fromarray(np.asarray(batch["pixels"][i], dtype=np.uint8), "RGB")
            image = LoadedImage(pixels, int(batch["width"][i]), int(batch["height"][i]), item.image)
            asked = [
                LabeledPrompt(Prompt(Task(task), query), label)
                for task, query, label in json.loads(str(batch["prompts"][i]))
            ]
            loaded.append((item, image, asked))
        results.extend(_json(result) for result in answer_loaded(self.proposer, loaded))
        return {"result": np.array(results, dtype=object)}


def _json(result: Result) -> str:
    return json.dumps(asdict(result))
