"""Instruction samples → padded training tensors, with the loss on answer tokens and `</s>` only, as in the official
`MiniGPTBase.forward` (minigpt4/models/minigpt_base.py)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import PromptError
from ..images import MODEL_FIT_PIXELS, load_image
from ..processing import MiniGPTv2Processor
from .instructions import InstructionSample

IGNORE_INDEX = -100  # positions the cross-entropy skips: BOS, prompt, image placeholders, padding


@dataclass
class TextBatch:
    input_ids: torch.Tensor  # [B, T], right-padded, image placeholders in place
    attention_mask: torch.Tensor  # [B, T]
    labels: torch.Tensor  # [B, T], IGNORE_INDEX except answer tokens and their </s>
    image_paths: list[Path]  # one per row


def sample_ids(sample: InstructionSample, processor: MiniGPTv2Processor) -> tuple[list[int], list[int]]:
    """(input ids, labels) for one sample: the inference prompt, then the answer and </s>.

    The prompt is built exactly as `propose` builds it, so the model learns what it will be asked. The answer is
    tokenised as its own segment, as the official code does (it gets SentencePiece's leading "▁").
    """
    prompt = processor.prompt_ids(sample.instruction)
    answer = [*processor.encode_text(sample.answer), processor.tokenizer.eos_token_id]
    return prompt + answer, [IGNORE_INDEX] * len(prompt) + answer


def collate(samples: Sequence[InstructionSample], processor: MiniGPTv2Processor, max_length: int) -> TextBatch:
    rows = [sample_ids(s, processor) for s in samples]
    for (ids, _), sample in zip(rows, samples, strict=True):
        if len(ids) > max_length:
            raise PromptError(
                f"a {sample.task.value} sample for {sample.image_path.name} needs {len(ids)} tokens, more than "
                f"max_length {max_length}; raise --max-length or shorten the phrase"
            )
    longest = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), longest), processor.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), longest), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for row, (ids, target) in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(target)] = torch.tensor(target)
        attention_mask[row, : len(ids)] = 1
    return TextBatch(input_ids, attention_mask, labels, [s.image_path for s in samples])


class ImageCache:
    """Per-image tensors (pixels or frozen vision tokens), computed once and kept up to a memory budget.

    Fine-tuning sees every image many times; decoding and resizing it each time would dominate on a CPU, and with
    a frozen vision tower the tower's output never changes either.
    """

    def __init__(self, compute: Callable[[list[Path]], torch.Tensor], max_bytes: int) -> None:
        self._compute = compute
        self._max_bytes = max_bytes
        self._items: OrderedDict[Path, torch.Tensor] = OrderedDict()
        self._bytes = 0

    def get(self, paths: Sequence[Path]) -> torch.Tensor:
        missing = list(dict.fromkeys(p for p in paths if p not in self._items))
        fresh = dict(zip(missing, self._compute(missing), strict=True)) if missing else {}
        out = torch.stack([fresh[p] if p in fresh else self._items[p] for p in paths])
        for path in paths:
            if path in self._items:
                self._items.move_to_end(path)
        for path, tensor in fresh.items():
            self._store(path, tensor)
        return out

    def _store(self, path: Path, tensor: torch.Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if size > self._max_bytes:
            return
        self._items[path] = tensor
        self._bytes += size
        while self._bytes > self._max_bytes:
            _, old = self._items.popitem(last=False)
            self._bytes -= old.numel() * old.element_size()


def load_pixels(paths: Sequence[Path], processor: MiniGPTv2Processor) -> torch.Tensor:
    """Upright RGB pixels, preprocessed as at inference. A bad image fails with its path named."""
    return processor.preprocess([load_image(p, fit_pixels=MODEL_FIT_PIXELS).image for p in paths])
