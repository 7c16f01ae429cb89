"""Shared image prefix: the KV cache of what every prompt about an image starts with, computed once per image.

Every prompt on an image begins with the same positions, ``<s>[INST] <Img>`` + the image's embeddings + ``</Img>``
(about 260 of them at full size, ~90% of a `[detection]` prompt's prefill). :class:`SharedPrefix` prefills them
once per image (one batched forward for all the images it lacks) and hands the proposer a batch cache in which row
``r`` holds the prefix of row ``r``'s image, so `generate` prefills only each prompt's own tokens (issue 18).

Left padding goes *between* the prefix and the prompt's own tokens (``prefix | pads | question``): generate derives
positions from the attention mask, so each question keeps the positions it has in the unpadded prompt, and the
pads are masked, as in the uncached left-padded batch.

Across calls, prefixes live in a byte-bounded LRU keyed by (image digest, model version, dtype), so the desktop's
second question on an image and the backend's next prompt on an open task skip the vision encoder and the prefix.
The caches are transformers' own: a :class:`~transformers.DynamicCache` of batch 1 per image, joined and then
row-selected with ``batch_select_indices``; for the static and compiled modes, copied into a
:class:`~transformers.StaticCache` that is kept per batch size and reused while long enough (the same tensors, so
compiled decoding graphs are reused rather than recompiled, as transformers does with its own static cache).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence

import torch
from PIL import Image
from transformers import DynamicCache, StaticCache
from transformers.cache_utils import Cache

from .network import MiniGPTv2ForConditionalGeneration
from .processing import MiniGPTv2Processor

# Holds about 7 images of the full-size model in bf16 (~140 MB each: 268 positions x 32 layers x K,V x 4096 x 2 B)
# and thousands of the tiny one's: enough for the images a labeller or an interactive backend has open.
DEFAULT_PREFIX_CACHE_BYTES = 1 << 30
STATIC_CACHES_KEPT = 2  # compiled decoding uses two batch sizes (1 and batch_size, Proposer.propose_batch)

PrefixKey = tuple[str, str, str]  # (image digest, model version, dtype)


def image_digest(view: Image.Image) -> str:
    """What identifies an image to the model: the pixels of the square it sees (processing.model_view)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{view.mode}:{view.size}".encode())
    digest.update(view.tobytes())
    return digest.hexdigest()


def cache_bytes(cache: DynamicCache) -> int:
    return sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))


class PrefixLRU:
    """Per-image prefix caches, least recently used dropped first once their bytes pass ``max_bytes``."""

    def __init__(self, max_bytes: int):
        if max_bytes < 0:
            raise ValueError(f"prefix_cache_bytes must be 0 or more, got {max_bytes}; 0 keeps no prefix across calls")
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[PrefixKey, tuple[DynamicCache, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: PrefixKey) -> DynamicCache | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: PrefixKey, cache: DynamicCache) -> None:
        size = cache_bytes(cache)
        if size > self.max_bytes or key in self._entries:
            return
        while self.bytes + size > self.max_bytes:
            _, (_, dropped) = self._entries.popitem(last=False)
            self.bytes -= dropped
        self._entries[key] = (cache, size)
        self.bytes += size

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0


class SharedPrefix:
    """The image prefixes of one model: computed, kept (:class:`PrefixLRU`) and laid out as a batch's cache."""

    def __init__(
        self,
        model: MiniGPTv2ForConditionalGeneration,
        processor: MiniGPTv2Processor,
        model_version: str,
        max_bytes: int = DEFAULT_PREFIX_CACHE_BYTES,
    ):
        self.model = model
        self.processor = processor
        self.model_version = model_version
        self.ids = processor.image_prefix_ids()
        self.lru = PrefixLRU(max_bytes)
        self._static: OrderedDict[int, StaticCache] = OrderedDict()  # by batch size, most recent last

    def covers(self, sequences: Sequence[Sequence[int]]) -> bool:
        """Whether every prompt starts with the shared prefix (always, for prompts built by the processor)."""
        length = len(self.ids)
        return all(list(ids[:length]) == self.ids and len(ids) > length for ids in sequences)

    def key(self, view: Image.Image) -> PrefixKey:
        dtype = str(self.model.get_input_embeddings().weight.dtype).removeprefix("torch.")
        return (image_digest(view), self.model_version, dtype)

    def call(self, images: Sequence[Image.Image], chunk: int) -> PrefixCall:
        """The prefixes of one `propose_batch` call about ``images``, encoding ``chunk`` images per forward."""
        return PrefixCall(self, images, chunk)

    def padded(self, sequences: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Ids and mask with the pads between the prefix and each prompt's own tokens (``prefix | pads | own``), so
        the positions generate derives from the mask are those of the unpadded prompt. The prefix's ids are only
        placeholders there: generate reads the positions after the cache."""
        prefix = torch.tensor([self.ids] * len(sequences))
        own_ids, own_mask = self.processor.pad_left([ids[len(self.ids) :] for ids in sequences])
        return torch.cat([prefix, own_ids], 1), torch.cat([torch.ones_like(prefix), own_mask], 1)

    def prefixes(
        self, images: Sequence[Image.Image], carried: dict[PrefixKey, DynamicCache], chunk: int
    ) -> tuple[list[PrefixKey], dict[PrefixKey, DynamicCache]]:
        """Each image's key, and the prefix of every one of them: from ``carried`` (this call's previous batch),
        the LRU, or computed now (``chunk`` images per forward) and stored."""
        views = [self.processor.model_view(image) for image in images]
        keys = [self.key(view) for view in views]
        found: dict[PrefixKey, DynamicCache] = {}
        missing: dict[PrefixKey, Image.Image] = {}
        for key, view in zip(keys, views, strict=True):
            if key in found or key in missing:
                continue
            cached = carried.get(key)
            if cached is None:
                cached = self.lru.get(key)
            if cached is not None:
                found[key] = cached
            else:
                missing[key] = view
        pending = list(missing.items())
        for start in range(0, len(pending), chunk):
            part = pending[start : start + chunk]
            for (key, _), cache in zip(part, self._compute([view for _, view in part]), strict=True):
                self.lru.put(key, cache)
                found[key] = cache
        return keys, found

    def _compute(self, views: Sequence[Image.Image]) -> list[DynamicCache]:
        """One prefill of the prefix for these images together: no padding, every prefix has the same ids."""
        device = self.model.device
        pixels = self.processor.preprocess(views).to(device)
        features = self.model.get_image_features(pixels)
        ids = torch.tensor([self.ids] * len(views), device=device)
        embeds = self.model.embed_inputs(ids, features)
        # The decoder stack alone: the prefix's logits are never needed, and the output layer is 32000 wide.
        out = self.model.language_model.model(inputs_embeds=embeds, use_cache=True)
        joined = out.cache
        assert isinstance(joined, DynamicCache)
        return [
            DynamicCache(
                ddp_cache_data=[
                    (layer.keys[i : i + 1].clone(), layer.values[i : i + 1].clone()) for layer in joined.layers
                ]
            )
            for i in range(len(views))
        ]

    def batch_cache(self, prefixes: Sequence[DynamicCache], rows: Sequence[int], mode: str, length: int) -> Cache:
        """The cache for a batch whose row ``r`` is about ``prefixes[rows[r]]`` (images may repeat and mix).

        ``mode`` "dynamic" gives a new DynamicCache; "static"/"compiled" the StaticCache kept for this batch size
        (at least ``length`` positions), reset and refilled."""
        layers = len(prefixes[0].layers)
        joined = DynamicCache(
            ddp_cache_data=[
                (
                    torch.cat([p.layers[i].keys for p in prefixes]),
                    torch.cat([p.layers[i].values for p in prefixes]),
                )
                for i in range(layers)
            ]
        )
        joined.batch_select_indices(torch.tensor(list(rows), device=joined.layers[0].keys.device))
        if mode == "dynamic":
            return joined
        static = self._static_cache(len(rows), length)
        static.reset()
        for i, layer in enumerate(joined.layers):
            static.update(layer.keys, layer.values, i)
        return static

    def _static_cache(self, batch: int, length: int) -> StaticCache:
        cache = self._static.get(batch)
        if cache is None or cache.get_max_length() < length:
            cache = StaticCache(config=self.model.config.text_config, max_cache_len=length)
            self._static[batch] = cache
        self._static.move_to_end(batch)
        while len(self._static) > STATIC_CACHES_KEPT:
            self._static.popitem(last=False)
        return cache


class PrefixCall:
    """One call's batches. The proposer groups a call's prompts by image, so an image's prompts fill consecutive
    batches: the last image of a batch is carried to the next one, and with ``prefix_cache_bytes=0`` (no LRU) an
    image is still encoded and prefilled once per call."""

    def __init__(self, shared: SharedPrefix, images: Sequence[Image.Image], chunk: int):
        self.shared = shared
        self.images = images
        self.chunk = chunk
        self._carried: dict[PrefixKey, DynamicCache] = {}

    def batch(self, image_of_row: Sequence[int], mode: str, length: int) -> Cache:
        """The cache of a batch whose row ``r`` asks about the call's image ``image_of_row[r]``, for ``mode``
        ("dynamic", "static" or "compiled"), of at least ``length`` positions when static."""
        distinct = list(dict.fromkeys(image_of_row))
        keys, found = self.shared.prefixes([self.images[k] for k in distinct], self._carried, self.chunk)
        self._carried = {keys[-1]: found[keys[-1]]}  # the next batch may go on with this image
        rows = [distinct.index(k) for k in image_of_row]
        return self.shared.batch_cache([found[key] for key in keys], rows, mode, length)
