"""Prompt tokenisation with the real LLaMA vocabulary matches SentencePiece, segment by segment (spec §1.7).

The official MiniGPT-v2 tokenises every prompt segment with LLaMA's SentencePiece model. Here `sentencepiece` on
Meta's ``tokenizer.model`` (rebuilt byte for byte, see llama_vocab.py) is the reference, and our ids come from
`MiniGPTv2Processor` loaded five ways: a LLaMA folder as the hub ships it, the same minus ``tokenizer.json``, a
folder holding only ``tokenizer.model``, a folder the processor saved, and a model folder written by ``convert``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llama_vocab import HUB_TOKENIZER_CONFIG, LLAMA_TOKENIZER_SHA256, llama_tokenizer_model, vocab_gguf
from patience import HANG_S

from model.errors import CheckpointError
from model.grammar import format_box
from model.processing import MiniGPTv2Processor, ProcessorConfig, Turn
from model.prompts import DEFAULT_TEMPLATES, IDENTIFY_TRAINING_TEMPLATES, REFER_TRAINING_TEMPLATES
from model.synthetic.tiny import build_tiny_tokenizer
from model.tokenizer import (
    USER_DEFINED,
    Piece,
    SentencePieceModel,
    fast_tokenizer_from_sentencepiece,
    load_tokenizer,
    parse_sentencepiece_model,
    tokenizer_from_sentencepiece,
)

spm = pytest.importorskip("sentencepiece")

SPECIAL_IDS = {0, 1, 2}  # <unk>, <s>, </s>
BOX = format_box((4, 50, 30, 65))


@pytest.fixture(scope="session")
def llama_model_bytes() -> bytes:
    return llama_tokenizer_model(vocab_gguf())


@pytest.fixture(scope="session")
def sentencepiece_llama(llama_model_bytes: bytes):
    return spm.SentencePieceProcessor(model_proto=llama_model_bytes)


@pytest.fixture(scope="session")
def official(sentencepiece_llama) -> Callable[[str], list[int]]:
    """The official tokenisation of one segment: SentencePiece, no BOS/EOS."""
    return lambda text: list(sentencepiece_llama.encode(text))


def _spm_only_folder(folder: Path, model: bytes, *, hub_config: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.model").write_bytes(model)
    if hub_config:
        (folder / "tokenizer_config.json").write_text(json.dumps(HUB_TOKENIZER_CONFIG, indent=2))
    return folder


@pytest.fixture(scope="session")
def llama_folders(tmp_path_factory: pytest.TempPathFactory, llama_model_bytes: bytes) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("llama-tokenizer")
    folders = {
        "model-only": _spm_only_folder(root / "model-only", llama_model_bytes, hub_config=False),
        "hub-without-json": _spm_only_folder(root / "hub", llama_model_bytes, hub_config=True),
        "hub": _spm_only_folder(root / "hub-json", llama_model_bytes, hub_config=True),
    }
    # The hub's tokenizer.json: score-ranked merges, normaliser "prepend ▁, spaces → ▁". transformers 5 loads it as
    # LlamaTokenizer, which keeps the merges but swaps the normaliser for Metaspace (no dummy ▁ before a space).
    built = tokenizer_from_sentencepiece(folders["hub"] / "tokenizer.model")
    built.backend_tokenizer.save(str(folders["hub"] / "tokenizer.json"))
    return folders


@pytest.fixture(scope="session")
def converted_folder(tmp_path_factory: pytest.TempPathFactory, llama_model_bytes: bytes) -> Path:
    """``convert`` on the official layout whose LLaMA folder carries the real tokenizer.model, no tokenizer.json."""
    from official_layout import IMAGE_SIZE, write_official_layout

    from model.weights.official import convert

    files = write_official_layout(tmp_path_factory.mktemp("official-real-vocab"), seed=3)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (files.llama_dir / name).unlink(missing_ok=True)
    _spm_only_folder(files.llama_dir, llama_model_bytes, hub_config=True)
    out = tmp_path_factory.mktemp("converted-real-vocab")
    return convert(files.eva, files.llama_dir, files.minigptv2, out, image_size=IMAGE_SIZE)


KINDS = ("hub", "model-only", "hub-without-json", "saved", "converted")
BUILT_HERE = KINDS[1:]  # tokenizers `load_tokenizer` built from tokenizer.model, then saved and reloaded


@pytest.fixture(scope="session")
def processors(
    llama_folders: dict[str, Path], converted_folder: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, MiniGPTv2Processor]:
    loaded = {kind: MiniGPTv2Processor.from_pretrained(folder) for kind, folder in llama_folders.items()}
    saved = tmp_path_factory.mktemp("saved-processor")
    loaded["hub-without-json"].save_pretrained(saved)
    loaded["saved"] = MiniGPTv2Processor.from_pretrained(saved)
    loaded["converted"] = MiniGPTv2Processor.from_pretrained(converted_folder)
    return loaded


def _mismatches(processor: MiniGPTv2Processor, official, texts) -> list[str]:
    wrong = []
    for text in texts:
        ours, theirs = processor.encode_text(text), official(text)
        if ours != theirs:
            wrong.append(f"{text!r}: ours {ours}, sentencepiece {theirs}")
    return wrong


def _segments(instruction: str) -> list[str]:
    """The segments an instruction appears in (first turn, later turn), and the instruction alone."""
    return [f"</Img> {instruction} [/INST]", f"[INST] {instruction} [/INST]", instruction]


def test_the_rebuilt_model_is_metas_llama_tokenizer_model(llama_model_bytes: bytes) -> None:
    import hashlib

    assert len(llama_model_bytes) == 499723
    assert hashlib.sha256(llama_model_bytes).hexdigest() == LLAMA_TOKENIZER_SHA256


def test_a_folder_with_only_tokenizer_model_loads_without_protobuf_or_sentencepiece(
    llama_folders: dict[str, Path], official
) -> None:
    # A user's environment need not have either package. In a child process, because transformers caches
    # "protobuf is unavailable" for good once it has looked, which would break the other tests.
    script = (
        "import json, sys\n"
        "sys.modules['google.protobuf'] = sys.modules['sentencepiece'] = None  # importing either now fails\n"
        "from model.processing import MiniGPTv2Processor\n"
        "print(json.dumps([MiniGPTv2Processor.from_pretrained(f).encode_text(sys.argv[1]) for f in sys.argv[2:]]))\n"
    )
    text = "[INST] <Img> red  balloon"
    done = subprocess.run(
        [sys.executable, "-c", script, text, *map(str, llama_folders.values())],
        capture_output=True, text=True, timeout=HANG_S, check=False, cwd=Path(__file__).parents[1],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == [official(text)] * len(llama_folders)


@pytest.mark.parametrize("kind", KINDS)
def test_double_spaces_merge_by_piece_score_like_sentencepiece(processors, official, kind: str) -> None:
    # "▁▁" (id 259) has the lowest score of all; ranking merges by piece id would merge it first.
    texts = ["red  balloon", "[detection] red  balloon", "a  b   c    d", "x" + " " * 9 + "y"]
    assert _mismatches(processors[kind], official, texts) == []
    assert processors[kind].encode_text("red  balloon") == [2654, 29871, 6411, 417, 265]


@pytest.mark.parametrize("kind", KINDS)
def test_a_segment_starting_with_a_space_keeps_sentencepieces_dummy_prefix(processors, official, kind: str) -> None:
    assert processors[kind].encode_text(" a balloon")[:2] == [29871, 263]  # "▁▁a…" → "▁", "▁a"
    texts = [" a balloon", "  two spaces", " ", "  ", "\ta tab", "\nnew line", "▁a", "▁ a", " ▁"]
    assert _mismatches(processors[kind], official, texts) == []


@pytest.mark.parametrize("kind", KINDS)
def test_every_prompt_template_matches_sentencepiece(processors, official, kind: str) -> None:
    instructions = [template.format(query="the red balloon", box=BOX) for template in DEFAULT_TEMPLATES.values()]
    instructions += [template.format("the red balloon") for template in REFER_TRAINING_TEMPLATES]
    instructions += [template.format(BOX) for template in IDENTIFY_TRAINING_TEMPLATES]
    texts = ["[INST] <Img>", "[INST] ", "</Img> ", *(s for i in instructions for s in _segments(i))]
    assert _mismatches(processors[kind], official, texts) == []


@pytest.mark.parametrize("kind", KINDS)
def test_unicode_and_byte_fallback_match_sentencepiece(processors, official, kind: str) -> None:
    texts = [
        "café naïve résumé Ünïcödé",
        "日本語のテキスト 中文 한국어",
        "🎈 balloon 🐶🐕‍🦺 👍🏽",  # not in the vocabulary: UTF-8 bytes (<0xF0>…)
        "[refer] где собака ?",
        "\u0301\u200b\ufeff\x00\x7f",  # combining mark, zero-width space, BOM, NUL, DEL
        "ﬁ ﬀ Ⅻ ①",  # compatibility forms: LLaMA does not NFKC-normalise
    ]
    texts += [f"[INST] {t} [/INST]" for t in texts]
    assert _mismatches(processors[kind], official, texts) == []


@pytest.mark.parametrize("kind", KINDS)
def test_whitespace_runs_match_sentencepiece(processors, official, kind: str) -> None:
    texts = [" " * n for n in range(1, 40)]
    texts += [f"a{' ' * n}b" for n in range(1, 40)] + [f"[vqa] x{' ' * n}" for n in range(1, 20)]
    texts += ["trailing ", "trailing   ", "\t\tdouble tab", "a \t b", "a\n\nb", "a \n b", "\r\n", " \u3000 \u00a0 "]
    assert _mismatches(processors[kind], official, texts) == []


@pytest.mark.parametrize("kind", KINDS)
def test_special_looking_text_matches_sentencepiece_and_never_gives_special_ids(
    processors, official, kind: str
) -> None:
    texts = ["<s>", "</s>", "<unk>", "<pad>", "[INST]", "[/INST]", "<s>[INST] hi [/INST]</s>", "<0x41>", "<<SYS>>"]
    texts += [f"[refer] the {t} thing" for t in texts]
    assert _mismatches(processors[kind], official, texts) == []
    for text in texts:
        assert not SPECIAL_IDS & set(processors[kind].encode_text(text)), text


def _official_prompt(official, config: ProcessorConfig, instruction: str, history: list[Turn]) -> list[int]:
    """The official prompt, written out from spec §1.7/§1.8: each quoted segment through SentencePiece."""
    ids = [1] * (2 if config.official_double_bos else 1) + official("[INST] <Img>")
    ids += [config.image_token_id] * config.image_seq_length
    questions = [turn.question for turn in history] + [instruction]
    ids += official(f"</Img> {questions[0]} [/INST]")
    for turn, question in zip(history, questions[1:], strict=True):
        ids += [*official(turn.answer), 2, 1, *official(f"[INST] {question} [/INST]")]
    return ids


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("double_bos", [False, True])
def test_prompt_ids_with_history_match_the_official_construction(processors, official, kind, double_bos) -> None:
    base = processors[kind]
    processor = MiniGPTv2Processor(base.tokenizer, base.config.model_copy(update={"official_double_bos": double_bos}))
    history = [
        Turn("[vqa] what is it?", " a balloon"),  # an answer starting with a space keeps its own dummy prefix
        Turn("[refer] where is the  balloon ?", "{<4><50><30><65>}"),
        Turn("[grounding] describe this image in detail", "<p>a red balloon</p> {<1><2><3><4>}</s>"),
    ]
    instruction = "[identify] what object is in this location {<4><50><30><65>}"
    expected = _official_prompt(official, processor.config, instruction, history)
    assert processor.prompt_ids(instruction, history) == expected
    assert processor.prompt_ids(instruction) == _official_prompt(official, processor.config, instruction, [])


_FRAGMENTS = [" ", "  ", "\t", "\n", "▁", "a", "b", "the", "ball", "é", "日", "🎈", "<s>", "</s>", "[INST]", "{<4>"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=30) | st.lists(st.sampled_from(_FRAGMENTS), max_size=12).map("".join))
def test_random_text_matches_sentencepiece(processors, official, sentencepiece_llama, text: str) -> None:
    theirs = official(text)
    for kind in KINDS:
        processor = processors[kind]
        assert processor.encode_text(text) == theirs, kind
        assert processor.decode(theirs) == sentencepiece_llama.decode(theirs), kind
    for kind in BUILT_HERE:  # the tokenizer we build and save is right on its own too, for any transformers user
        assert processors[kind].tokenizer(text, split_special_tokens=True).input_ids == [1, *theirs], kind


def test_the_saved_folders_carry_tokenizer_json(processors, converted_folder: Path) -> None:
    # convert writes a fast tokenizer (merges by score) next to the weights, so loading never needs tokenizer.model.
    assert (converted_folder / "tokenizer.json").is_file()
    copy = converted_folder.parent / "converted-without-model"
    shutil.copytree(converted_folder, copy)
    (copy / "tokenizer.model").unlink(missing_ok=True)
    reloaded = MiniGPTv2Processor.from_pretrained(copy)
    assert reloaded.encode_text("red  balloon") == [2654, 29871, 6411, 417, 265]


# --- reading tokenizer.model without protobuf -----------------------------------------------------------------------


def _protobuf_view(data: bytes) -> SentencePieceModel:
    """What the protobuf package reads from the same bytes, in our dataclass."""
    model_pb2 = pytest.importorskip("sentencepiece.sentencepiece_model_pb2")
    proto = model_pb2.ModelProto.FromString(data)
    spec, norm = proto.trainer_spec, proto.normalizer_spec
    return SentencePieceModel(
        pieces=tuple(Piece(p.piece, p.score, p.type) for p in proto.pieces),
        model_type=spec.model_type,
        byte_fallback=spec.byte_fallback,
        treat_whitespace_as_suffix=spec.treat_whitespace_as_suffix,
        unk_id=spec.unk_id,
        bos_id=spec.bos_id,
        eos_id=spec.eos_id,
        pad_id=spec.pad_id,
        precompiled_charsmap=norm.precompiled_charsmap,
        add_dummy_prefix=norm.add_dummy_prefix,
        remove_extra_whitespaces=norm.remove_extra_whitespaces,
        escape_whitespaces=norm.escape_whitespaces,
    )


def test_the_reader_agrees_with_protobuf_on_llamas_model(llama_model_bytes: bytes) -> None:
    assert parse_sentencepiece_model(llama_model_bytes) == _protobuf_view(llama_model_bytes)


def test_the_reader_agrees_with_protobuf_on_non_default_settings() -> None:
    model_pb2 = pytest.importorskip("sentencepiece.sentencepiece_model_pb2")
    proto = model_pb2.ModelProto()
    for text, score, kind in [("<pad>", 0.0, 3), ("x", -1.5, 1), ("<my>", 0.0, 4), ("unused", -2e9, 5), ("ü", 3.25, 1)]:
        proto.pieces.add(piece=text, score=score, type=kind)
    spec = proto.trainer_spec
    spec.model_type, spec.byte_fallback, spec.treat_whitespace_as_suffix = model_pb2.TrainerSpec.CHAR, True, True
    spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id = 4, -1, 3, 0
    spec.input.append("ignored.txt")
    norm = proto.normalizer_spec
    norm.precompiled_charsmap, norm.add_dummy_prefix, norm.escape_whitespaces = b"\x00\x01\xff", False, False
    data = proto.SerializeToString()
    assert parse_sentencepiece_model(data) == _protobuf_view(data)
    assert parse_sentencepiece_model(model_pb2.ModelProto().SerializeToString()) == SentencePieceModel(pieces=())


@pytest.mark.parametrize(
    ("change", "cause"),
    [
        ({"model_type": 1}, "not a BPE model"),
        ({"byte_fallback": False}, "no byte fallback"),
        ({"remove_extra_whitespaces": True}, "normaliser rewrites text"),
        ({"precompiled_charsmap": b"\x01"}, "normaliser rewrites text"),
        ({"treat_whitespace_as_suffix": True}, "whitespace at the end"),
        ({"pieces": (Piece("<my>", 0.0, USER_DEFINED),)}, "user-defined"),
    ],
)
def test_models_we_cannot_reproduce_exactly_are_refused_with_the_cause(
    llama_model_bytes: bytes, change: dict, cause: str
) -> None:
    model = parse_sentencepiece_model(llama_model_bytes)
    if "pieces" in change:
        change = {"pieces": model.pieces + change["pieces"]}
    with pytest.raises(ValueError, match=cause):
        fast_tokenizer_from_sentencepiece(dataclasses.replace(model, **change))


def test_an_unreadable_or_foreign_tokenizer_model_names_the_file_and_the_fix(
    tmp_path: Path, llama_model_bytes: bytes
) -> None:
    (tmp_path / "tokenizer.model").write_bytes(llama_model_bytes[:1000])
    with pytest.raises(CheckpointError, match=r"cannot read the SentencePiece model .*tokenizer\.model"):
        load_tokenizer(tmp_path)
    model_pb2 = pytest.importorskip("sentencepiece.sentencepiece_model_pb2")
    proto = model_pb2.ModelProto.FromString(llama_model_bytes)
    proto.trainer_spec.model_type = model_pb2.TrainerSpec.UNIGRAM
    (tmp_path / "tokenizer.model").write_bytes(proto.SerializeToString())
    with pytest.raises(
        CheckpointError, match=r"not a LLaMA-style SentencePiece model: it is not a BPE .*tokenizer\.json"
    ):
        load_tokenizer(tmp_path)


def test_a_folder_with_tokenizer_json_is_loaded_from_it(tmp_path: Path, llama_model_bytes: bytes) -> None:
    tiny = build_tiny_tokenizer()
    tiny.save_pretrained(tmp_path)
    (tmp_path / "tokenizer.model").write_bytes(llama_model_bytes)
    assert len(load_tokenizer(tmp_path)) == len(tiny) < 32000
