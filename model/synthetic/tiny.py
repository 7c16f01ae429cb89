"""Tiny MiniGPT-v2 variants: the real classes at toy sizes, with a LLaMA-style tokenizer built offline.

Used by `minigpt-annotate make-tiny` and by the tests. Everything is deterministic for a given seed.
"""

from __future__ import annotations

import os
import string
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaTokenizer

from ..network import EvaVisionConfig, MiniGPTv2Config, MiniGPTv2ForConditionalGeneration
from ..processing import MiniGPTv2Processor

# Whole-word tokens for the prompt vocabulary, so prompts tokenise into few ids, like LLaMA's.
_WORDS = [
    "INST",
    "Img",
    "delim",
    "refer",
    "detection",
    "grounding",
    "identify",
    "vqa",
    "caption",
    "give",
    "me",
    "the",
    "location",
    "of",
    "where",
    "is",
    "from",
    "this",
    "image",
    "tell",
    "could",
    "you",
    "for",
    "can",
    "locate",
    "what",
    "object",
    "in",
    "it",
    "describe",
    "present",
    "at",
    "please",
    "detail",
    "red",
    "green",
    "blue",
    "yellow",
    "orange",
    "purple",
    "white",
    "black",
    "square",
    "circle",
    "triangle",
    "small",
    "large",
    "big",
    "left",
    "right",
    "top",
    "bottom",
    "middle",
    "person",
    "dog",
    "cat",
    "car",
    "balloon",
]


def build_tiny_tokenizer(words: tuple[str, ...] | list[str] = _WORDS, *, number_tokens: bool = False) -> LlamaTokenizer:
    """A byte-fallback BPE tokenizer in LLaMA's layout: <unk>=0, <s>=1, </s>=2, then 256 byte tokens.

    Merges build each listed word left to right (with and without the "▁" word-start marker). By default digits
    are never merged, as in LLaMA, so box coordinates tokenise digit by digit. `number_tokens` adds one token for
    each of 10..100, so that a grid coordinate is one token: a model with a few hundred thousand LLM weights learns
    to read a position into one 101-way choice far faster than into a tens digit and a units digit.
    """
    vocab: dict[str, int] = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for char in ["▁", *(c for c in string.printable if not c.isspace())]:
        vocab.setdefault(char, len(vocab))
    merges: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()

    def merge(left: str, right: str) -> str:
        if (left, right) not in seen:
            seen.add((left, right))
            merges.append((left, right))
            vocab.setdefault(left + right, len(vocab))
        return left + right

    for word in words:
        for current in ("▁", ""):
            for char in word:
                current = merge(current, char) if current else char
    if number_tokens:
        for value in range(10, 100):
            merge(str(value)[0], str(value)[1])
        merge("10", "0")
    return LlamaTokenizer(vocab=vocab, merges=merges)


def tiny_config(
    vocab_size: int, *, image_size: int = 64, vision_layers: int = 2, text_layers: int = 2
) -> MiniGPTv2Config:
    """Toy sizes with the official structure: 16x16 patches at `image_size` 64 → 64 image tokens."""
    vision = EvaVisionConfig(
        image_size=image_size,
        pretrain_image_size=image_size // 2,
        patch_size=4,
        hidden_size=32,
        num_hidden_layers=vision_layers,
        num_attention_heads=2,
        intermediate_size=88,
    )
    text = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=172,
        num_hidden_layers=text_layers,
        num_attention_heads=4,
        max_position_embeddings=1024,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    )
    return MiniGPTv2Config(vision_config=vision, text_config=text)


def make_tiny(
    out: str | os.PathLike | None = None, *, seed: int = 0
) -> tuple[MiniGPTv2ForConditionalGeneration, MiniGPTv2Processor]:
    """Build a random tiny model and its processor; save both to `out` when given."""
    tokenizer = build_tiny_tokenizer()
    config = tiny_config(len(tokenizer))
    torch.manual_seed(seed)
    model = MiniGPTv2ForConditionalGeneration(config).eval()
    processor = MiniGPTv2Processor.for_model(tokenizer, config)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out)
        processor.save_pretrained(out)
    return model, processor
