"""The real 32000-piece LLaMA SentencePiece model, rebuilt offline-after-first-use from llama.cpp's test vocabulary.

Meta's ``tokenizer.model`` cannot be downloaded without accepting a licence, but llama.cpp ships the same pieces,
scores and types as a GGUF test file (``models/ggml-vocab-llama-spm.gguf``), and llama.cpp's source travels inside
the llama-cpp-python sdist on PyPI. Written back into a SentencePiece ``ModelProto`` with LLaMA's trainer and
normaliser settings, it is byte for byte Meta's file (same SHA-256), so `sentencepiece` run on it is the official
tokenisation.

The sdist (77 MB) is fetched once with ``pip download`` and only the 0.7 MB GGUF file is kept, under
``$MINIGPT_ANNOTATE_CACHE`` or ``~/.cache/minigpt-annotate`` (``$XDG_CACHE_HOME`` respected); CI machines with
PyPI access fetch it on their first run. When it cannot be fetched the tests that need it are skipped, saying why.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

# Pinned, so the cache key and the file's hash never change under us.
SDIST = "llama-cpp-python==0.3.36"
GGUF_MEMBER = "vendor/llama.cpp/models/ggml-vocab-llama-spm.gguf"
GGUF_SHA256 = "16c3724582d59aa8bf84711894e833f916ee46a31d80e21312759c48bf8d0e69"
# Meta's LLaMA / LLaMA-2 tokenizer.model (499723 bytes), as published with the weights.
LLAMA_TOKENIZER_SHA256 = "9e556afd44213b6bd1be2b850ebbbd98f5481437a8021afaf58ee7fb1818d347"
DOWNLOAD_TIMEOUT_S = 600  # a 77 MB download plus pip's metadata step on a slow CI link


def cache_dir() -> Path:
    if override := os.environ.get("MINIGPT_ANNOTATE_CACHE"):
        return Path(override)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "minigpt-annotate"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _download_gguf(target: Path) -> None:
    """pip-download the sdist into a scratch folder, keep only the GGUF file (written atomically)."""
    with tempfile.TemporaryDirectory(prefix="llama-sdist-") as scratch:
        command = [
            sys.executable, "-m", "pip", "download", SDIST, "--no-deps", "--no-binary", ":all:",
            "--dest", scratch, "--quiet", "--disable-pip-version-check", "--no-input", "--timeout", "30",
        ]  # fmt: skip
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            pytest.skip(f"pip download {SDIST} took over {DOWNLOAD_TIMEOUT_S} s; is PyPI reachable?")
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            pytest.skip(f"cannot fetch {SDIST} from PyPI for the real LLaMA vocabulary ({last})")
        [sdist] = Path(scratch).glob("*.tar.gz")
        with tarfile.open(sdist, "r:gz") as archive:
            member = next((m for m in archive if m.name.endswith("/" + GGUF_MEMBER)), None)
            if member is None or (handle := archive.extractfile(member)) is None:
                raise AssertionError(f"{sdist.name} has no {GGUF_MEMBER}")
            data = handle.read()
    if _sha256(data) != GGUF_SHA256:
        raise AssertionError(f"{GGUF_MEMBER} in {SDIST} changed: sha256 {_sha256(data)}")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.part")
    partial.write_bytes(data)
    os.replace(partial, target)  # a concurrent run sees either no file or the whole file


def vocab_gguf() -> Path:
    """The cached GGUF vocabulary, fetched on first use."""
    path = cache_dir() / "ggml-vocab-llama-spm.gguf"
    if not path.is_file() or _sha256(path.read_bytes()) != GGUF_SHA256:
        _download_gguf(path)
    return path


def llama_tokenizer_model(gguf_path: Path) -> bytes:
    """Meta's tokenizer.model, rebuilt: the GGUF's pieces, scores and types plus LLaMA's recorded settings.

    The settings are those Meta's file prints (``print(model_proto.trainer_spec)``); only the pieces and
    ``model_type``/``byte_fallback``/the special ids and the normaliser matter for tokenisation, the rest
    makes the bytes identical, which `LLAMA_TOKENIZER_SHA256` checks.
    """
    gguf = pytest.importorskip("gguf")
    model_pb2 = pytest.importorskip("sentencepiece.sentencepiece_model_pb2")

    reader = gguf.GGUFReader(gguf_path)
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    scores = reader.fields["tokenizer.ggml.scores"].contents()
    types = reader.fields["tokenizer.ggml.token_type"].contents()
    proto = model_pb2.ModelProto()
    for token, score, kind in zip(tokens, scores, types, strict=True):
        piece = proto.pieces.add(piece=token, score=score)
        if kind != model_pb2.ModelProto.SentencePiece.NORMAL:  # Meta's file leaves the default type unset
            piece.type = kind
    spec = proto.trainer_spec
    spec.input.append("/large_experiments/theorem/datasets/MERGED/all.test1.merged")
    spec.model_prefix = "spm_model_32k_200M_charcov099995_allowWSO__v2"
    spec.model_type = model_pb2.TrainerSpec.BPE
    spec.vocab_size = 32000
    spec.self_test_sample_size = 0
    spec.input_format = "text"
    spec.character_coverage = 0.99995
    spec.input_sentence_size = 200000000
    spec.seed_sentencepiece_size = 1000000
    spec.shrinking_factor = 0.75
    spec.num_threads = 80
    spec.num_sub_iterations = 2
    spec.max_sentence_length = 4192
    spec.shuffle_input_sentence = True
    spec.max_sentencepiece_length = 16
    spec.split_by_unicode_script = True
    spec.split_by_whitespace = True
    spec.split_by_number = True
    spec.treat_whitespace_as_suffix = False
    spec.split_digits = True
    spec.allow_whitespace_only_pieces = True
    spec.vocabulary_output_piece_score = True
    spec.hard_vocab_limit = True
    spec.use_all_vocab = False
    spec.byte_fallback = True
    spec.required_chars = ""
    spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id = 0, 1, 2, -1
    spec.unk_surface = " \u2047 "
    spec.unk_piece, spec.bos_piece, spec.eos_piece, spec.pad_piece = "<unk>", "<s>", "</s>", "<pad>"
    spec.train_extremely_large_corpus = False
    spec.enable_differential_privacy = False
    spec.differential_privacy_noise_level = 0.0
    spec.differential_privacy_clipping_threshold = 0
    normalizer = proto.normalizer_spec
    normalizer.name = "identity"
    normalizer.precompiled_charsmap = b""
    normalizer.add_dummy_prefix = True
    normalizer.remove_extra_whitespaces = False
    normalizer.normalization_rule_tsv = ""
    return proto.SerializeToString()


# tokenizer_config.json as meta-llama/Llama-2-7b-chat-hf ships it; with tokenizer.model and no tokenizer.json
# this is the folder that made transformers rank merges by piece id.
HUB_TOKENIZER_CONFIG = {
    "add_bos_token": True,
    "add_eos_token": False,
    "bos_token": {"__type": "AddedToken", "content": "<s>", "lstrip": False, "normalized": False,
                  "rstrip": False, "single_word": False},
    "clean_up_tokenization_spaces": False,
    "eos_token": {"__type": "AddedToken", "content": "</s>", "lstrip": False, "normalized": False,
                  "rstrip": False, "single_word": False},
    "legacy": False,
    "model_max_length": 1000000000000000019884624838656,
    "pad_token": None,
    "padding_side": "right",
    "sp_model_kwargs": {},
    "tokenizer_class": "LlamaTokenizer",
    "unk_token": {"__type": "AddedToken", "content": "<unk>", "lstrip": False, "normalized": False,
                  "rstrip": False, "single_word": False},
}  # fmt: skip
