"""`Proposer`: image + task + query → typed box proposals in original-image pixels.

The batched form encodes each distinct image once, sorts prompts by length to limit padding, left-pads, and runs
one `generate` per batch on embeddings (the official inference path: the prompt goes in as embeddings, so logits
processors such as the repetition penalty only see generated tokens); the prefix every prompt on an image shares
(`<s>[INST] <Img>` + image + `</Img>`) is prefilled once per image (`model.prefix_cache`). Each box gets a score
from what the model said while writing it (`model.scoring`; by default how tightly it placed the box's coordinates
times how sure it was of what followed the box), then the model's calibration when it has one.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import re
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from transformers import CompileConfig, StoppingCriteria, StoppingCriteriaList
from transformers.cache_utils import Cache

from .annotations import Box, Proposal, Task
from .calibration import Calibration, load_calibration
from .errors import CheckpointError, GenerationStopped, PromptError
from .grammar import ParseResult, parse_boxes, pixels_to_grid
from .images import MODEL_FIT_PIXELS, LoadedImage, load_image
from .network import MiniGPTv2ForConditionalGeneration
from .prefix_cache import DEFAULT_PREFIX_CACHE_BYTES, SharedPrefix
from .processing import MiniGPTv2Processor, Turn
from .prompts import build_instruction, split_identifier
from .request import Prompt
from .results import GenerationOptions, ProposalResult
from .scoring import (
    CANDIDATES,
    DEFAULT_SCORE,
    BoxEvidence,
    NumberTokens,
    TokenStats,
    box_evidence,
    check_score_name,
    number_tokens,
    token_stats,
)

ADAPTER_CONFIG = "adapter_config.json"  # written by peft for LoRA adapters
CACHE_BUCKET = 256  # static KV caches are sized in steps of this many positions

ImageSource = str | os.PathLike | bytes | Image.Image | LoadedImage

# Long enough for the usual answer of each task; the official benchmark eval uses 20, the demo 500.
DEFAULT_MAX_NEW_TOKENS: dict[Task, int] = {
    Task.refer: 40,
    Task.identify: 40,
    Task.vqa: 64,
    Task.caption: 96,
    Task.detection: 300,
    Task.grounding: 500,
    Task.chat: 500,
}


@dataclass(frozen=True, init=False)
class ProposeRequest:
    """One image and one :class:`~model.request.Prompt` about it, after earlier turns of a chat (``history``).

    Built from the prompt's parts, ``ProposeRequest("a.jpg", "detection", "cat")``, or from a prompt another surface
    planned, ``ProposeRequest.of(image, prompt)``. The task, query and box live only in ``prompt``.
    """

    image: ImageSource
    prompt: Prompt
    history: tuple[Turn, ...] = ()

    def __init__(
        self,
        image: ImageSource,
        task: Task | str,
        query: str | None = None,
        box: Box | None = None,  # pixels of the upright image; [identify] only
        history: Sequence[Turn] = (),
    ) -> None:
        object.__setattr__(self, "image", image)
        object.__setattr__(self, "prompt", Prompt(task, query, box))
        object.__setattr__(self, "history", tuple(history))

    @classmethod
    def of(cls, image: ImageSource, prompt: Prompt, history: Sequence[Turn] = ()) -> ProposeRequest:
        """The request for ``prompt`` (or a surface's subclass of it, whose extra fields the model ignores)."""
        return cls(image, prompt.task, prompt.query, prompt.box, history)

    # Read-only views, so code that reads a request's parts keeps working; the prompt holds them.
    @property
    def task(self) -> Task:
        return self.prompt.task

    @property
    def query(self) -> str | None:
        return self.prompt.query

    @property
    def box(self) -> Box | None:
        return self.prompt.box


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def check_model_source(path_or_hub_id: str | os.PathLike) -> None:
    """Fail early and clearly on a missing or incomplete local folder instead of trying the hub."""
    path = Path(path_or_hub_id)
    if path.is_dir():
        if not (path / "config.json").is_file() and not (path / ADAPTER_CONFIG).is_file():
            raise CheckpointError(
                f"{path} is not a model folder (no config.json or {ADAPTER_CONFIG}); create one with "
                "`minigpt-annotate convert`, `minigpt-annotate make-tiny` or `minigpt-annotate finetune`"
            )
    elif path.exists() or not _HUB_ID.match(str(path_or_hub_id)):
        raise CheckpointError(f"model folder {path} not found; pass a converted model folder or a hub id (org/name)")


def _adapter_base(path: str | os.PathLike) -> str | None:
    """The base model a local LoRA-adapter folder (from `finetune`) was trained on, or None for a full model."""
    config = Path(path) / ADAPTER_CONFIG
    if not config.is_file():
        return None
    base = json.loads(config.read_text()).get("base_model_name_or_path")
    if not base:
        raise CheckpointError(f"{config} names no base model; set base_model_name_or_path to the model it adapts")
    check_model_source(base)
    return str(base)


@contextlib.contextmanager
def peft_deprecations_silenced() -> Iterator[None]:
    """peft calls a transformers method that transformers 5 deprecates; nothing the user can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def _merge_adapters(
    model: MiniGPTv2ForConditionalGeneration, path: str | os.PathLike
) -> MiniGPTv2ForConditionalGeneration:
    # Merged once at load: inference then runs at the speed of the plain model.
    from peft import PeftModel

    with peft_deprecations_silenced():
        merged = PeftModel.from_pretrained(model, str(path)).merge_and_unload()
    assert isinstance(merged, MiniGPTv2ForConditionalGeneration)
    return merged


QUANTIZATIONS = ("8bit", "4bit")


def _quantization_kwargs(quantization: str | None, device: torch.device, dtype: torch.dtype) -> dict[str, object]:
    """from_pretrained arguments for 8-/4-bit weights, or a message saying what is missing."""
    if quantization is None:
        return {}
    if quantization not in QUANTIZATIONS:
        raise CheckpointError(f"unknown quantization {quantization!r}; use one of {', '.join(QUANTIZATIONS)}")
    if device.type != "cuda":
        raise CheckpointError(f"{quantization} weights need a CUDA GPU (bitsandbytes); on {device}, load without it")
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError as err:
        raise CheckpointError(
            f"{quantization} weights need bitsandbytes: pip install 'minigpt-annotate[lowmem]' ({err})"
        ) from err
    skip = ["vision_model", "llama_proj", "lm_head"]  # small, and precision-sensitive: keep them in `dtype`
    config = (
        BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
        if quantization == "8bit"
        else BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype, llm_int8_skip_modules=skip
        )
    )
    return {"quantization_config": config, "device_map": {"": device.index or 0}}


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    names = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "float16": torch.float16,
        "fp16": torch.float16,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
    }
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(sorted(names))} or auto")
    return names[dtype]


def model_version_for(model: str | os.PathLike, given: str | None = None) -> str:
    """The version a model's answers carry: the one given, else the model folder's (or hub id's last) name."""
    return given or Path(str(model)).name


class Proposer:
    """The shared inference entry point for the CLI, the Label Studio backend and the desktop app."""

    def __init__(
        self,
        model: MiniGPTv2ForConditionalGeneration,
        processor: MiniGPTv2Processor,
        *,
        model_version: str = "",
        box_offset: float = 0.0,
        calibration: Calibration | None = None,
        score: str = DEFAULT_SCORE,
        prefix_cache_bytes: int | None = DEFAULT_PREFIX_CACHE_BYTES,
    ):
        """``score``: which of :data:`model.scoring.CANDIDATES` is the raw score (before calibration).

        ``prefix_cache_bytes``: the image prefix (``<s>[INST] <Img>`` + image + ``</Img>``) is prefilled once per
        image and shared by its prompts (`model.prefix_cache`); this many bytes of prefixes are kept across calls
        (0: shared within a call only; None: every prompt prefills its whole prompt, the reference path)."""
        self.model = model.eval()
        self.score = check_score_name(score)
        self._numbers: NumberTokens | None = None  # the vocabulary's number tokens, found on first use
        self.processor = processor
        self.model_version = model_version
        self.calibration = calibration  # raw score -> probability kept, per task (model.calibration)
        self.box_offset = box_offset  # 0: the official mapping c/100·W; 0.5: centre of the quantisation cell
        self._compile_config: CompileConfig | None = None  # one per process: compiled graphs are reused
        use_prefix = prefix_cache_bytes is not None
        self.prefix = SharedPrefix(model, processor, model_version, prefix_cache_bytes) if use_prefix else None

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | os.PathLike,
        device: str | torch.device | None = "auto",
        dtype: str | torch.dtype | None = "auto",
        *,
        official_double_bos: bool = False,
        attn_implementation: str = "sdpa",
        model_version: str | None = None,
        box_offset: float = 0.0,
        quantization: str | None = None,
        score: str = DEFAULT_SCORE,
        prefix_cache_bytes: int | None = DEFAULT_PREFIX_CACHE_BYTES,
    ) -> Proposer:
        """``quantization``: "8bit" or "4bit" loads the language model's weights with bitsandbytes (the vision
        tower, projector and output layer stay in ``dtype``), for 12-16 GB GPUs; needs CUDA and the ``lowmem``
        extra."""
        check_model_source(path_or_hub_id)
        check_score_name(score)  # before the weights load
        device = resolve_device(device)
        dtype = resolve_dtype(dtype, device)
        adapter_base = _adapter_base(path_or_hub_id)
        quantized = _quantization_kwargs(quantization, device, dtype)
        try:
            model = MiniGPTv2ForConditionalGeneration.from_pretrained(
                adapter_base or path_or_hub_id, dtype=dtype, attn_implementation=attn_implementation, **quantized
            )
            if adapter_base is not None:
                model = _merge_adapters(model, path_or_hub_id)
        except OSError as err:
            raise CheckpointError(f"cannot load model {path_or_hub_id}: {err}") from err
        if not quantized:
            model = model.to(device)  # from_pretrained kept the official fp32 parts (EVA norms, biases) in fp32
        processor = MiniGPTv2Processor.from_pretrained(path_or_hub_id, official_double_bos=official_double_bos)
        version = model_version_for(path_or_hub_id, model_version)
        folder = Path(path_or_hub_id)
        calibration = load_calibration(folder, score=score) if folder.is_dir() else None
        return cls(model, processor, model_version=version, box_offset=box_offset, calibration=calibration,
                   score=score, prefix_cache_bytes=prefix_cache_bytes)  # fmt: skip

    @property
    def device(self) -> torch.device:
        return self.model.device

    # --- public API ------------------------------------------------------------------------------------------------
    def model_image(self, image: LoadedImage) -> LoadedImage:
        """``image`` reduced to the square the model sees, for callers that hold many images until they are run (a
        16-task /predict chunk would otherwise hold up to 16 x 144 MB). Its answers are the same as for ``image``:
        the model resizes every image to that square anyway. ``width``/``height`` stay the full upright size, the
        frame boxes are measured in; the pixels are for the model, not for display (the aspect ratio is not kept)."""
        return LoadedImage(self.processor.model_view(image.image), image.width, image.height, image.source)

    def propose(
        self,
        image: ImageSource,
        task: Task | str,
        query: str | None = None,
        box: Box | None = None,
        *,
        history: Sequence[Turn] = (),
        options: GenerationOptions | None = None,
    ) -> ProposalResult:
        request = ProposeRequest(image, task, query, box, history)
        return self.propose_batch([request], options=options)[0]

    @torch.inference_mode()
    def propose_batch(
        self,
        requests: Sequence[ProposeRequest],
        *,
        options: GenerationOptions | None = None,
        batch_size: int = 8,
        image_batch_size: int = 8,
        on_progress: Callable[[int, int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[ProposalResult]:
        """Results in request order. Each distinct image is decoded and encoded once for all its requests.

        ``should_stop`` is polled after every generated token (a long [grounding] answer of a 7B model takes a
        while); once it returns True, generation ends early and :class:`GenerationStopped` is raised.
        """
        options = options or GenerationOptions()
        stop = _StopWhen(should_stop) if should_stop is not None else None
        images, image_of = self._load_images(requests)
        prepared = [self._prepare(request, images[image_of[i]]) for i, request in enumerate(requests)]
        covered = self.prefix is not None and self.prefix.covers([p.ids for p in prepared])
        shared = self.prefix.call([image.image for image in images], image_batch_size) if covered else None
        if shared is None:
            features = self._encode_images([images[k].image for k in range(len(images))], image_batch_size)
            order = sorted(range(len(requests)), key=lambda i: len(prepared[i].ids))  # less padding per batch
        else:  # each image's prompts in consecutive batches (its prefix serves them all), shortest first
            features, order = None, sorted(range(len(requests)), key=lambda i: (image_of[i], len(prepared[i].ids)))

        results: list[ProposalResult | None] = [None] * len(requests)
        done = 0
        cache = self.cache_mode(options)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            max_new = max(self._max_new_tokens(prepared[i].task, options) for i in rows)
            # Compiled decoding is specialised to the batch size: top a short batch up with copies of its last row
            # (dropped below), so two warm-ups (1 and batch_size, see warm_up) serve every call. A lone request
            # (an interactive click) keeps batch 1.
            target = 1 if len(rows) == 1 else batch_size
            filled = rows + rows[-1:] * (target - len(rows)) if cache == "compiled" else rows
            sequences = [prepared[i].ids for i in filled]
            length = self._cache_length(max(map(len, sequences)) + max_new)
            prefix = shared.batch([image_of[i] for i in filled], cache, length) if shared is not None else None
            inputs = features[[image_of[i] for i in filled]] if features is not None else None
            generated = self._generate(sequences, inputs, max_new, options, cache, stop, prefix)[: len(rows)]
            if stop is not None and stop.stopped:
                raise GenerationStopped(f"stopped after {done} of {len(requests)} prompts, on request")
            for row, (tokens, stats) in zip(rows, generated, strict=True):
                results[row] = self._result(prepared[row], images[image_of[row]], tokens, stats)
            done += len(rows)
            if on_progress is not None:
                on_progress(done, len(requests))
        return [r for r in results if r is not None]

    # --- steps -----------------------------------------------------------------------------------------------------
    def _load_images(self, requests: Sequence[ProposeRequest]) -> tuple[list[LoadedImage], list[int]]:
        images: list[LoadedImage] = []
        index: dict[object, int] = {}
        image_of = []
        for request in requests:
            source = request.image
            key: object = os.fspath(source) if isinstance(source, (str, os.PathLike)) else id(source)
            if key not in index:
                index[key] = len(images)
                loaded = source if isinstance(source, LoadedImage) else load_image(source, fit_pixels=MODEL_FIT_PIXELS)
                images.append(loaded)
            image_of.append(index[key])
        return images, image_of

    def _prepare(self, request: ProposeRequest, image: LoadedImage) -> _Prepared:
        task, query, box = request.prompt.task, request.prompt.query, request.prompt.box
        grid = pixels_to_grid(box, image.width, image.height) if box is not None else None
        instruction = build_instruction(task, query, grid)
        ids = self.processor.prompt_ids(instruction, request.history)
        return _Prepared(task=task, query=query, instruction=instruction, ids=ids)

    def _encode_images(self, images: Sequence[Image.Image], chunk: int) -> torch.Tensor:
        parts = []
        for start in range(0, len(images), chunk):
            pixels = self.processor.preprocess(images[start : start + chunk]).to(self.device)
            parts.append(self.model.get_image_features(pixels))
        return torch.cat(parts)

    def warm_up(self, batch_sizes: Sequence[int] = (1,), options: GenerationOptions | None = None) -> float:
        """Compile the decoding step now for these batch sizes (only in ``compiled`` mode, i.e. on a GPU by
        default), so the first real request answers at full speed. Returns the seconds it took.

        The warm-up sizes the static cache for the longest answer any task asks for (transformers then keeps
        that size for later calls, so they reuse the compiled graphs) and stops after a few tokens.
        """
        options = options or GenerationOptions()
        if self.cache_mode(options) != "compiled":
            return 0.0
        started = time.perf_counter()
        blank = load_image(Image.new("RGB", (64, 64), (127, 127, 127)))
        request = ProposeRequest(blank, Task.detection, "object")
        context = self.model.config.text_config.max_position_embeddings
        longest = max(DEFAULT_MAX_NEW_TOKENS.values())
        max_new = min(longest, context - len(self._prepare(request, blank).ids))
        warm_options = options.model_copy(update={"max_new_tokens": max_new, "min_new_tokens": None})
        for size in batch_sizes:
            stop_soon = functools.partial(lambda polls: next(polls) >= 3, itertools.count())
            with contextlib.suppress(GenerationStopped):  # a few decoding steps compile the graphs
                self.propose_batch([request] * size, options=warm_options, batch_size=size, should_stop=stop_soon)
        return time.perf_counter() - started

    def cache_mode(self, options: GenerationOptions) -> str:
        """The KV-cache strategy ``options.cache`` resolves to on this device."""
        if options.cache != "auto":
            return options.cache
        return "compiled" if self.device.type == "cuda" else "dynamic"

    def _cache_length(self, needed: int) -> int:
        # One cache length per bucket of 256 positions: later calls reuse the cache (and the compiled graphs)
        # instead of reallocating for every prompt length.
        return min(self.model.config.text_config.max_position_embeddings, -(-needed // CACHE_BUCKET) * CACHE_BUCKET)

    def _cache_kwargs(self, mode: str, needed: int, prefix: Cache | None) -> dict[str, object]:
        """generate's cache arguments: a static cache of `needed` positions, or the shared prefix's cache."""
        if mode == "dynamic":
            return {} if prefix is None else {"cache": prefix}
        cache = (
            {"cache_implementation": "static", "max_cache_len": self._cache_length(needed)}
            if prefix is None
            else {"cache": prefix}
        )
        if mode == "static":
            return cache | {"disable_compile": True}
        if self._compile_config is None:
            compile_config = CompileConfig()  # transformers defaults: reduce-overhead (CUDA graphs on a GPU)
            compile_config._compile_all_devices = True  # transformers compiles on CUDA only unless told otherwise
            self._compile_config = compile_config
        return cache | {"compile_config": self._compile_config}

    def _max_new_tokens(self, task: Task, options: GenerationOptions) -> int:
        return options.max_new_tokens or DEFAULT_MAX_NEW_TOKENS[task]

    def _generate(
        self,
        sequences: Sequence[list[int]],
        features: torch.Tensor | None,
        max_new_tokens: int,
        options: GenerationOptions,
        cache_mode: str,
        stop: _StopWhen | None = None,
        prefix: Cache | None = None,
    ) -> list[tuple[list[int], TokenStats]]:
        """``prefix``: a cache already holding each row's image prefix (`model.prefix_cache`); ``features`` then
        is None, and generate prefills only each prompt's own tokens, left-padded after the prefix."""
        padded = self.prefix.padded if prefix is not None and self.prefix else self.processor.pad_left
        input_ids, attention_mask = padded(sequences)
        context = self.model.config.text_config.max_position_embeddings
        if input_ids.shape[1] + max_new_tokens > context:
            raise PromptError(
                f"the prompt has {input_ids.shape[1]} tokens and up to {max_new_tokens} new ones were asked for, "
                f"more than the model's context of {context}; shorten the query or history, or lower max_new_tokens"
            )
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        embeds = self.model.embed_inputs(input_ids, features)
        if options.seed is not None:
            torch.manual_seed(options.seed)
        eos = self.processor.tokenizer.eos_token_id
        sampling = {"temperature": options.temperature, "top_p": options.top_p} if options.do_sample else {}
        cache = self._cache_kwargs(cache_mode, input_ids.shape[1] + max_new_tokens, prefix)
        with warnings.catch_warnings():
            # transformers notes that the repetition penalty then only covers generated tokens: that is the
            # official behaviour (the official demo also generates from embeddings), so the note is noise here.
            warnings.filterwarnings("ignore", message="Passing `repetition_penalty` with `inputs_embeds`")
            out = self.model.generate(
                inputs_embeds=embeds,
                attention_mask=attention_mask,
                max_new_tokens=max_new_tokens,
                do_sample=options.do_sample,
                repetition_penalty=options.repetition_penalty,
                eos_token_id=eos,
                pad_token_id=self.processor.pad_token_id,
                return_dict_in_generate=True,
                output_logits=True,
                min_new_tokens=options.min_new_tokens,
                stopping_criteria=StoppingCriteriaList([stop]) if stop is not None else None,
                **cache,
                **sampling,
            )
        tokens = out.sequences  # only new tokens: the prompt went in as embeddings
        stats = token_stats(out.logits, tokens[:, : len(out.logits)], self._number_tokens())
        results = []
        for row in range(tokens.shape[0]):
            ids = tokens[row].tolist()
            length = ids.index(eos) if eos in ids else len(ids)
            kept = length + 1 if eos in ids else length  # the </s> position too: how sure the model was to stop
            row_stats = TokenStats(stats[row].logprobs[:kept], stats[row].errors[:kept])
            results.append((ids[:length], row_stats))
        return results

    def _number_tokens(self) -> NumberTokens:
        if self._numbers is None:
            tokenizer = self.processor.tokenizer
            self._numbers = number_tokens(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))))
        return self._numbers

    def _result(self, prepared: _Prepared, image: LoadedImage, tokens: list[int], stats: TokenStats) -> ProposalResult:
        text = self.processor.decode(tokens)
        parsed = parse_boxes(text, image.width, image.height, offset=self.box_offset)
        score = CANDIDATES[self.score]
        proposals = []
        for parsed_box, evidence in zip(parsed.boxes, self._evidence(text, parsed, tokens, stats), strict=True):
            raw = score(evidence)
            calibrated = self.calibration.apply(prepared.task, raw) if self.calibration is not None else None
            proposals.append(
                Proposal(
                    box=parsed_box.box,
                    label=self._label(prepared, parsed_box.phrase),
                    phrase=parsed_box.phrase,
                    score=calibrated if calibrated is not None else raw,
                    raw_score=raw if calibrated is not None else None,
                    task=prepared.task,
                    prompt=prepared.instruction,
                    model_version=self.model_version,
                )
            )
        return ProposalResult(
            image=image.source,
            width=image.width,
            height=image.height,
            task=prepared.task,
            query=prepared.query,
            prompt=prepared.instruction,
            text=text.strip(),
            proposals=proposals,
            skipped=list(parsed.skipped),
            calibrated=self.calibration is not None and prepared.task in self.calibration.tasks,
        )

    def _evidence(self, text: str, parsed: ParseResult, tokens: list[int], stats: TokenStats) -> list[BoxEvidence]:
        """What the model said about each parsed box (model.scoring)."""
        if not parsed.boxes:
            return []
        ends = self._token_ends(tokens)
        digits = self._number_tokens().digits.get
        return [box_evidence(text, b.span, b.phrase is not None, ends, stats, digits, tokens) for b in parsed.boxes]

    def _token_ends(self, tokens: list[int]) -> list[int]:
        """For each token, the end offset of its characters in the decoded answer."""
        decode = self.processor.decode
        ends = [len(decode(tokens[: i + 1])) for i in range(len(tokens))]
        for i in range(1, len(ends)):  # a partial UTF-8 byte sequence can shrink a prefix; keep ends monotonic
            ends[i] = max(ends[i], ends[i - 1])
        return ends

    @staticmethod
    def _label(prepared: _Prepared, phrase: str | None) -> str:
        if phrase:
            return phrase
        # A pasted official prompt ("[refer] the dog") names the box by its text, not by its task identifier.
        _, query = split_identifier(prepared.query or "")
        return query or prepared.task.value


class _StopWhen(StoppingCriteria):
    """Ends generation for every row once ``should_stop()`` is True (a user pressed Cancel)."""

    def __init__(self, should_stop: Callable[[], bool]):
        self.should_stop = should_stop
        self.stopped = False

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: object) -> torch.BoolTensor:
        self.stopped = self.stopped or bool(self.should_stop())
        return torch.full((input_ids.shape[0],), self.stopped, dtype=torch.bool, device=input_ids.device)


@dataclass(frozen=True)
class _Prepared:
    task: Task
    query: str | None
    instruction: str
    ids: list[int]


__all__ = ["GenerationOptions", "ParseResult", "Prompt", "Proposal", "ProposalResult", "ProposeRequest", "Proposer"]
