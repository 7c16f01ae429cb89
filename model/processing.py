"""Turn images and instructions into model inputs exactly as the official code (blip_processors.py, minigpt_base.py).

Image: squash to image_size x image_size with PIL bicubic (no aspect keeping, no padding), scale to [0, 1],
normalise with the OpenAI CLIP mean/std.

Tokens, single turn::

    <s> "[INST] <Img>" <img>*256 "</Img> {instruction} [/INST]"

Each quoted segment is tokenised on its own, as the official code does with LLaMA's SentencePiece model: one dummy
"▁" in front of the segment (also when it starts with a space), spaces escaped to "▁", then BPE. User text can never
produce special ids: the segment goes to the BPE model alone, never through special-token matching.

BOS: the official inference code writes a literal ``<s>`` *and* lets the tokenizer add one, so its sequences start
with two BOS tokens, while training used one. We default to the correct single BOS; ``official_double_bos=True``
reproduces the official inference prefix for parity checks against published numbers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict
from tokenizers.models import BPE
from transformers import PreTrainedTokenizerBase
from transformers.utils import cached_file

from .network import MiniGPTv2Config  # importing network also registers "minigptv2" with AutoConfig
from .tokenizer import SPIECE_UNDERLINE, load_tokenizer

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PROCESSOR_CONFIG_NAME = "processor_config.json"


class ImageProcessorConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    image_size: int = 448
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD


class ProcessorConfig(BaseModel):
    """What `processor_config.json` holds next to the model weights."""

    model_config = ConfigDict(frozen=True)

    processor_class: str = "MiniGPTv2Processor"
    image: ImageProcessorConfig = ImageProcessorConfig()
    image_seq_length: int = 256
    image_token_id: int = 0
    official_double_bos: bool = False


@dataclass(frozen=True)
class Turn:
    """An earlier exchange in a multi-turn chat about the same image."""

    question: str
    answer: str


def model_view(image: Image.Image, config: ImageProcessorConfig) -> Image.Image:
    """The square the vision encoder sees: the whole image resized to S x S (bicubic, aspect not kept), as the
    official preprocessing does. Resizing a view again to S x S gives the same pixels (Pillow copies at equal size),
    so callers may keep only views of images they hold for long."""
    size = config.image_size
    return image.resize((size, size), Image.Resampling.BICUBIC)


def preprocess_images(images: Sequence[Image.Image], config: ImageProcessorConfig) -> torch.Tensor:
    """RGB PIL images → float32 [N, 3, S, S], normalised."""
    size = config.image_size
    mean = np.asarray(config.image_mean, dtype=np.float32)
    std = np.asarray(config.image_std, dtype=np.float32)
    arrays = []
    for image in images:
        if image.mode != "RGB":
            raise ValueError(f"expected an RGB image, got mode {image.mode}; load it with model.images")
        array = np.asarray(model_view(image, config), dtype=np.float32) / 255.0
        arrays.append(((array - mean) / std).transpose(2, 0, 1))
    return torch.from_numpy(np.stack(arrays)) if arrays else torch.empty(0, 3, size, size)


class MiniGPTv2Processor:
    """Image preprocessing plus prompt tokenisation; saved as `processor_config.json` + the tokenizer files."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, config: ProcessorConfig | None = None):
        self.tokenizer = tokenizer
        self.config = config or ProcessorConfig()
        if tokenizer.bos_token_id is None or tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer needs BOS and EOS tokens (LLaMA: <s> and </s>)")
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None or not isinstance(backend.model, BPE):
            raise ValueError("MiniGPT-v2 needs LLaMA's BPE tokenizer as a fast tokenizer (tokenizer.json)")
        self._bpe: BPE = backend.model

    @classmethod
    def for_model(cls, tokenizer: PreTrainedTokenizerBase, config: MiniGPTv2Config) -> MiniGPTv2Processor:
        """The processor whose image size, placeholder count and placeholder id match `config`."""
        return cls(
            tokenizer,
            ProcessorConfig(
                image=ImageProcessorConfig(image_size=config.vision_config.image_size),
                image_seq_length=config.image_seq_length,
                image_token_id=config.image_token_id,
            ),
        )

    # --- persistence -----------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **overrides: object) -> MiniGPTv2Processor:
        tokenizer = load_tokenizer(path)
        # cached_file resolves a local folder or a hub id alike; a folder without the file gets the defaults.
        config_file = cached_file(path, PROCESSOR_CONFIG_NAME, _raise_exceptions_for_missing_entries=False)
        data = json.loads(Path(config_file).read_text()) if config_file else {}
        data.update(overrides)
        return cls(tokenizer, ProcessorConfig.model_validate(data))

    def save_pretrained(self, path: str | os.PathLike) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(path)
        (path / PROCESSOR_CONFIG_NAME).write_text(self.config.model_dump_json(indent=2) + "\n")

    # --- images ----------------------------------------------------------------------------------------------------
    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return preprocess_images(images, self.config.image)

    def model_view(self, image: Image.Image) -> Image.Image:
        """See :func:`model_view`."""
        return model_view(image, self.config.image)

    # --- text ------------------------------------------------------------------------------------------------------
    @property
    def pad_token_id(self) -> int:
        # Never pad with the image placeholder id: padding is masked anyway, EOS is always safe.
        pad = self.tokenizer.pad_token_id
        return self.tokenizer.eos_token_id if pad is None or pad == self.config.image_token_id else pad

    def encode_text(self, text: str) -> list[int]:
        """One segment as SentencePiece tokenises it: dummy prefix, and no special ids even if the text spells one.

        The normalisation is done here rather than by the tokenizer's own pipeline, because transformers' LLaMA
        pipeline (Metaspace) adds no dummy "▁" to a segment that already starts with a space: `" a balloon"` must be
        "▁▁a▁balloon" → 29871, 263, … as in SentencePiece, not "▁a▁balloon" → 263, ….
        """
        if not text:
            return []  # SentencePiece adds no dummy prefix to an empty text
        return [token.id for token in self._bpe.tokenize(SPIECE_UNDERLINE + text.replace(" ", SPIECE_UNDERLINE))]

    def prompt_ids(self, instruction: str, history: Sequence[Turn] = ()) -> list[int]:
        """Token ids for one request about one image, image placeholders included.

        With history, earlier turns keep their answers and `</s>`, as official training does (tokenize_conversation):
        ``<s>[INST] <Img>IMG</Img> q1 [/INST] a1</s><s>[INST] q2 [/INST]``.
        """
        tok = self.tokenizer
        bos = [tok.bos_token_id] * (2 if self.config.official_double_bos else 1)
        image = [self.config.image_token_id] * self.config.image_seq_length
        questions = [turn.question for turn in history] + [instruction]
        ids = bos + self.encode_text("[INST] <Img>") + image
        ids += self.encode_text(f"</Img> {questions[0]} [/INST]")
        for turn, question in zip(history, questions[1:], strict=True):
            ids += [*self.encode_text(turn.answer), tok.eos_token_id, tok.bos_token_id]
            ids += self.encode_text(f"[INST] {question} [/INST]")
        return ids

    def image_prefix_ids(self) -> list[int]:
        """The ids every prompt about an image starts with, ``<s>[INST] <Img>`` + placeholders + ``</Img>``: the
        part whose KV cache `model.prefix_cache` computes once per image. SentencePiece never merges a piece across
        the space after ``</Img>``, so :meth:`prompt_ids` starts with these ids (the proposer checks it anyway)."""
        bos = [self.tokenizer.bos_token_id] * (2 if self.config.official_double_bos else 1)
        image = [self.config.image_token_id] * self.config.image_seq_length
        return bos + self.encode_text("[INST] <Img>") + image + self.encode_text("</Img>")

    def pad_left(self, sequences: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-pad to the longest sequence: (input_ids, attention_mask), both [B, T] int64."""
        longest = max(len(s) for s in sequences)
        input_ids = torch.full((len(sequences), longest), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), longest), dtype=torch.long)
        for row, seq in enumerate(sequences):
            if seq:
                input_ids[row, longest - len(seq) :] = torch.tensor(seq, dtype=torch.long)
                attention_mask[row, longest - len(seq) :] = 1
        return input_ids, attention_mask

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))
