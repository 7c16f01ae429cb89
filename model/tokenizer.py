"""Load a folder's LLaMA tokenizer, building it from ``tokenizer.model`` when the folder has no ``tokenizer.json``.

MiniGPT-v2 tokenises with LLaMA's SentencePiece BPE model. A folder as the hub ships it carries ``tokenizer.json``
(a fast tokenizer whose merges follow the piece scores) and is loaded as is. A folder with only ``tokenizer.model``
(Meta's own download, or a copy that lost the JSON) is not safe to hand to transformers 5: without the protobuf
package it fails with a misleading "tiktoken is required", and with it the BPE merges are ranked by piece id
instead of piece score, so e.g. the low-score ``▁▁`` (id 259) merges first and ``"red  balloon"`` tokenises
differently from SentencePiece.

So `load_tokenizer` reads ``tokenizer.model`` itself (its protobuf wire format is small and stable; no protobuf or
sentencepiece package is needed) and builds a fast tokenizer with SentencePiece's semantics:

- merges in order of piece score, highest first, which is the order SentencePiece's BPE applies them;
- SentencePiece's identity normalisation: one dummy ``▁`` in front of the text and every space escaped to ``▁``,
  nothing stripped or NFKC-folded; characters outside the vocabulary fall back to UTF-8 byte pieces;
- control pieces (``<s>``, ``</s>``) and ``<unk>`` as special tokens, BOS added by default as LLaMA does.

Only the kind of model LLaMA uses (BPE, byte fallback, identity normaliser, no user-defined pieces) is accepted;
anything else is refused with the cause rather than tokenised subtly differently.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, normalizers
from tokenizers.models import BPE
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast
from transformers.utils import cached_file

from .errors import CheckpointError

SPIECE_UNDERLINE = "▁"  # SentencePiece's escaped space (U+2581)

# Field numbers and enum values from sentencepiece_model.proto (proto2; absent fields take these defaults).
_MODEL_PIECES, _MODEL_TRAINER, _MODEL_NORMALIZER = 1, 2, 3
_PIECE_TEXT, _PIECE_SCORE, _PIECE_TYPE = 1, 2, 3
_TRAINER_MODEL_TYPE, _TRAINER_WS_SUFFIX, _TRAINER_BYTE_FALLBACK = 3, 24, 35
_TRAINER_UNK_ID, _TRAINER_BOS_ID, _TRAINER_EOS_ID, _TRAINER_PAD_ID = 40, 41, 42, 43
_NORM_CHARSMAP, _NORM_DUMMY_PREFIX, _NORM_REMOVE_EXTRA_WS, _NORM_ESCAPE_WS = 2, 3, 4, 5

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6  # SentencePiece.Type
UNIGRAM, BPE_MODEL = 1, 2  # TrainerSpec.ModelType


@dataclass(frozen=True)
class Piece:
    text: str
    score: float = 0.0
    kind: int = NORMAL


@dataclass(frozen=True)
class SentencePieceModel:
    """The parts of a SentencePiece ``ModelProto`` that decide how text is tokenised."""

    pieces: tuple[Piece, ...]
    model_type: int = UNIGRAM
    byte_fallback: bool = False
    treat_whitespace_as_suffix: bool = False
    unk_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    pad_id: int = -1
    precompiled_charsmap: bytes = b""
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True
    escape_whitespaces: bool = True


# --- reading tokenizer.model ---------------------------------------------------------------------------------------


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of each field in one message: an int for varints, the raw bytes otherwise."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire_type = key >> 3, key & 7
        value: int | bytes
        if wire_type == 0:
            value, pos = _varint(data, pos)
        else:
            if wire_type == 2:
                size, pos = _varint(data, pos)
            elif wire_type in (1, 5):
                size = 8 if wire_type == 1 else 4
            else:
                raise ValueError(f"unsupported protobuf wire type {wire_type}")
            if pos + size > len(data):
                raise ValueError("truncated field")
            value, pos = data[pos : pos + size], pos + size
        yield number, value


def _int32(value: int | bytes) -> int:
    if not isinstance(value, int):
        raise ValueError("a length-delimited field where an integer belongs")
    return value - (1 << 64) if value >= 1 << 63 else value  # negative int32s are written sign-extended to 64 bits


def _as_bytes(value: int | bytes) -> bytes:
    if not isinstance(value, bytes):
        raise ValueError("an integer where a string or message belongs")
    return value


def _float(value: int | bytes) -> float:
    if not isinstance(value, bytes) or len(value) != 4:
        raise ValueError("a piece score that is not a 32-bit float")
    return float(struct.unpack("<f", value)[0])


def _piece(data: bytes) -> Piece:
    text, score, kind = "", 0.0, NORMAL
    for number, value in _fields(data):
        if number == _PIECE_TEXT:
            text = _as_bytes(value).decode("utf-8")
        elif number == _PIECE_SCORE:
            score = _float(value)
        elif number == _PIECE_TYPE:
            kind = _int32(value)
    return Piece(text, score, kind)


def parse_sentencepiece_model(data: bytes) -> SentencePieceModel:
    """Decode a serialised SentencePiece ``ModelProto`` (the bytes of ``tokenizer.model``)."""
    pieces: list[Piece] = []
    settings: dict[str, object] = {}
    trainer = {
        _TRAINER_MODEL_TYPE: "model_type",
        _TRAINER_WS_SUFFIX: "treat_whitespace_as_suffix",
        _TRAINER_BYTE_FALLBACK: "byte_fallback",
        _TRAINER_UNK_ID: "unk_id",
        _TRAINER_BOS_ID: "bos_id",
        _TRAINER_EOS_ID: "eos_id",
        _TRAINER_PAD_ID: "pad_id",
    }
    normalizer = {
        _NORM_DUMMY_PREFIX: "add_dummy_prefix",
        _NORM_REMOVE_EXTRA_WS: "remove_extra_whitespaces",
        _NORM_ESCAPE_WS: "escape_whitespaces",
    }
    bools = {"treat_whitespace_as_suffix", "byte_fallback", *normalizer.values()}
    for number, value in _fields(data):
        if number == _MODEL_PIECES:
            pieces.append(_piece(_as_bytes(value)))
        elif number in (_MODEL_TRAINER, _MODEL_NORMALIZER):
            names = trainer if number == _MODEL_TRAINER else normalizer
            for field, field_value in _fields(_as_bytes(value)):
                if number == _MODEL_NORMALIZER and field == _NORM_CHARSMAP:
                    settings["precompiled_charsmap"] = _as_bytes(field_value)
                elif field in names:
                    name = names[field]
                    settings[name] = bool(field_value) if name in bools else _int32(field_value)
    return SentencePieceModel(pieces=tuple(pieces), **settings)  # type: ignore[arg-type]


def _unsupported(model: SentencePieceModel) -> str | None:
    """Why this model cannot be reproduced by the fast tokenizer we build, or None."""
    kinds = {piece.kind for piece in model.pieces}
    if model.model_type != BPE_MODEL:
        return "it is not a BPE model (LLaMA's is)"
    if not model.byte_fallback or sum(piece.kind == BYTE for piece in model.pieces) != 256:
        return "it has no byte fallback with 256 byte pieces"
    if model.precompiled_charsmap or model.remove_extra_whitespaces or not model.escape_whitespaces:
        return "its normaliser rewrites text (LLaMA's is the identity)"
    if model.treat_whitespace_as_suffix:
        return "it puts whitespace at the end of pieces"
    if kinds & {USER_DEFINED, UNUSED}:
        return "it has user-defined or unused pieces"
    if not all(0 <= i < len(model.pieces) for i in (model.unk_id, model.bos_id, model.eos_id)):
        return "it has no <unk>, BOS or EOS piece"
    return None


# --- building the fast tokenizer -----------------------------------------------------------------------------------


def score_ranked_merges(pieces: tuple[Piece, ...]) -> list[tuple[str, str]]:
    """Every split of a normal piece into two normal pieces, ordered as SentencePiece's BPE would merge them.

    SentencePiece repeatedly merges the adjacent pair whose concatenation is the highest-scoring piece, so a merge
    ranks by its result's score. SentencePiece breaks a tie by position (leftmost first), which a merge table cannot
    express; equal scores rank by piece id instead, and the splits of one piece by the ids of their halves. In
    LLaMA's vocabulary only the whitespace runs ``▁▁`` … ``▁``×16 tie, and for them this order gives SentencePiece's
    result (tests/test_llama_tokenizer.py checks runs of up to 40 spaces).
    """
    ids = {piece.text: i for i, piece in enumerate(pieces) if piece.kind == NORMAL}
    ranked = []
    for i, piece in enumerate(pieces):
        if piece.kind != NORMAL:
            continue
        text = piece.text
        for cut in range(1, len(text)):
            left, right = text[:cut], text[cut:]
            if left in ids and right in ids:
                ranked.append((-piece.score, i, ids[left], ids[right], left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


def fast_tokenizer_from_sentencepiece(model: SentencePieceModel) -> PreTrainedTokenizerFast:
    """A fast tokenizer that tokenises exactly as SentencePiece does with `model` (see the module docstring)."""
    if (reason := _unsupported(model)) is not None:
        raise ValueError(reason)
    pieces = model.pieces
    backend = Tokenizer(
        BPE(
            vocab={piece.text: i for i, piece in enumerate(pieces)},
            merges=score_ranked_merges(pieces),
            unk_token=pieces[model.unk_id].text,
            fuse_unk=True,
            byte_fallback=True,
        )
    )
    escape = normalizers.Replace(" ", SPIECE_UNDERLINE)
    # Prepend leaves an empty text empty, as SentencePiece does. No pre-tokenizer: the whole text is one BPE word.
    backend.normalizer = (
        normalizers.Sequence([normalizers.Prepend(SPIECE_UNDERLINE), escape]) if model.add_dummy_prefix else escape
    )
    steps = [decoders.Replace(SPIECE_UNDERLINE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if model.add_dummy_prefix:
        steps.append(decoders.Strip(" ", 1, 0))  # drop the dummy prefix's space again
    backend.decoder = decoders.Sequence(steps)
    backend.add_special_tokens(
        [AddedToken(p.text, special=True, normalized=False) for p in pieces if p.kind in (CONTROL, UNKNOWN)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=pieces[model.bos_id].text,
        eos_token=pieces[model.eos_id].text,
        unk_token=pieces[model.unk_id].text,
        pad_token=pieces[model.pad_id].text if 0 <= model.pad_id < len(pieces) else None,
        add_bos_token=True,  # LLaMA's tokenizer starts a sequence with <s>; segments ask for no special tokens
        add_eos_token=False,
        clean_up_tokenization_spaces=False,
    )


def tokenizer_from_sentencepiece(path: str | os.PathLike) -> PreTrainedTokenizerFast:
    """Build the fast tokenizer for a ``tokenizer.model`` file; `CheckpointError` names the cause if it cannot."""
    path = Path(path)
    try:
        model = parse_sentencepiece_model(path.read_bytes())
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"cannot read the SentencePiece model {path}: {err}") from err
    try:
        return fast_tokenizer_from_sentencepiece(model)
    except ValueError as err:
        raise CheckpointError(
            f"{path} is not a LLaMA-style SentencePiece model: {err}; "
            "put the model's tokenizer.json next to it to load that instead"
        ) from err


def _folder_file(path: str | os.PathLike, name: str) -> str | None:
    # cached_file resolves a local folder or a hub id alike, and answers None for a missing file.
    return cached_file(
        path, name, _raise_exceptions_for_missing_entries=False, _raise_exceptions_for_connection_errors=False
    )


def load_tokenizer(path: str | os.PathLike) -> PreTrainedTokenizerBase:
    """The tokenizer of a LLaMA or MiniGPT-v2 folder (or hub id).

    Its ``tokenizer.json`` when there is one (loaded by transformers as usual); otherwise built from its
    ``tokenizer.model`` with SentencePiece's merge order and normalisation; otherwise whatever transformers makes
    of the folder.
    """
    if _folder_file(path, "tokenizer.json") is None and (model_file := _folder_file(path, "tokenizer.model")):
        return tokenizer_from_sentencepiece(model_file)
    return AutoTokenizer.from_pretrained(path)
