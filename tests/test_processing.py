"""Preprocessing (official blip_processors.py), prompt layout and BOS handling (official minigpt_base.py), and the
instruction templates (official demo_v2.py and eval scripts)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from model.annotations import Task
from model.errors import PromptError
from model.processing import CLIP_MEAN, CLIP_STD, ImageProcessorConfig, MiniGPTv2Processor, ProcessorConfig, Turn
from model.prompts import REFER_TRAINING_TEMPLATES, build_instruction, split_identifier
from model.synthetic.tiny import build_tiny_tokenizer


@pytest.fixture(scope="module")
def processor() -> MiniGPTv2Processor:
    return MiniGPTv2Processor(build_tiny_tokenizer(), ProcessorConfig(image_seq_length=5, image_token_id=0))


def test_preprocessing_squashes_to_448_without_keeping_aspect_and_normalises_with_clip_stats(processor) -> None:
    image = Image.new("RGB", (300, 100))
    image.paste((255, 0, 0), (0, 0, 150, 100))  # left half red
    image.paste((0, 0, 255), (150, 0, 300, 100))  # right half blue
    pixels = processor.preprocess([image])
    assert pixels.shape == (1, 3, 448, 448) and pixels.dtype == torch.float32
    red = [(1.0 - CLIP_MEAN[0]) / CLIP_STD[0], (0 - CLIP_MEAN[1]) / CLIP_STD[1], (0 - CLIP_MEAN[2]) / CLIP_STD[2]]
    blue = [(0 - CLIP_MEAN[0]) / CLIP_STD[0], (0 - CLIP_MEAN[1]) / CLIP_STD[1], (1.0 - CLIP_MEAN[2]) / CLIP_STD[2]]
    # Squashed, not padded or cropped: the colour boundary lands in the middle column, and every row is filled.
    torch.testing.assert_close(pixels[0, :, :, 10].mean(-1), torch.tensor(red), atol=1e-5, rtol=0)
    torch.testing.assert_close(pixels[0, :, :, 437].mean(-1), torch.tensor(blue), atol=1e-5, rtol=0)
    torch.testing.assert_close(pixels[0, :, 0, 10], torch.tensor(red), atol=1e-5, rtol=0)


def test_preprocessing_uses_pil_bicubic(processor) -> None:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (97, 131, 3), dtype=np.uint8))
    expected = np.asarray(image.resize((448, 448), Image.Resampling.BICUBIC), dtype=np.float32) / 255
    got = processor.preprocess([image])[0].permute(1, 2, 0).numpy() * np.array(CLIP_STD) + np.array(CLIP_MEAN)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_preprocessing_refuses_non_rgb(processor) -> None:
    with pytest.raises(ValueError, match="RGB"):
        processor.preprocess([Image.new("L", (10, 10))])


def test_prompt_layout_is_bos_inst_img_placeholders_then_instruction(processor) -> None:
    tok = processor.tokenizer
    ids = processor.prompt_ids("[refer] give me the location of the dog")
    head = tok("[INST] <Img>", add_special_tokens=False).input_ids
    tail = tok("</Img> [refer] give me the location of the dog [/INST]", add_special_tokens=False).input_ids
    assert ids == [tok.bos_token_id, *head, 0, 0, 0, 0, 0, *tail]
    assert tok.convert_ids_to_tokens(head)[0].startswith("▁"), "each segment gets SentencePiece's dummy prefix"
    assert ids.count(tok.bos_token_id) == 1, "the correct default is a single BOS, as in training"


def test_official_double_bos_mode(processor) -> None:
    double = MiniGPTv2Processor(processor.tokenizer, processor.config.model_copy(update={"official_double_bos": True}))
    single = processor.prompt_ids("[vqa] what?")
    assert double.prompt_ids("[vqa] what?") == [processor.tokenizer.bos_token_id, *single]


def test_user_text_never_produces_special_or_placeholder_ids(processor) -> None:
    ids = processor.prompt_ids("[refer] the <unk> </s> <s> thing")
    tok = processor.tokenizer
    assert ids.count(0) == processor.config.image_seq_length
    assert tok.eos_token_id not in ids and ids.count(tok.bos_token_id) == 1


def test_history_keeps_answers_with_eos_and_bos_like_training(processor) -> None:
    tok = processor.tokenizer
    ids = processor.prompt_ids("[vqa] and now?", history=[Turn("[vqa] what is it?", "a dog")])
    first = processor.prompt_ids("[vqa] what is it?")
    rest = [
        *processor.encode_text("a dog"),
        tok.eos_token_id,
        tok.bos_token_id,
        *processor.encode_text("[INST] [vqa] and now? [/INST]"),
    ]
    assert ids == first + rest


def test_left_padding(processor) -> None:
    ids, mask = processor.pad_left([[5, 6, 7], [8]])
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert ids[1, 2] == 8 and ids[1, 0] != processor.config.image_token_id


def test_processor_round_trips_through_a_folder(processor, tmp_path) -> None:
    custom = MiniGPTv2Processor(
        processor.tokenizer, ProcessorConfig(image=ImageProcessorConfig(image_size=224), image_seq_length=64)
    )
    custom.save_pretrained(tmp_path)
    loaded = MiniGPTv2Processor.from_pretrained(tmp_path)
    assert loaded.config == custom.config
    assert loaded.prompt_ids("[caption] hi") == custom.prompt_ids("[caption] hi")


@pytest.mark.parametrize(
    ("task", "query", "expected"),
    [
        ("detection", "red balloon", "[detection] red balloon"),
        ("refer", "the dog on the left", "[refer] give me the location of the dog on the left"),
        ("grounding", None, "[grounding] describe this image in detail"),
        ("vqa", "what colour is the car?", "[vqa] what colour is the car?"),
        ("caption", "", "[caption] please describe this image?"),
        ("chat", "Please write a poem about the image", "Please write a poem about the image"),
        ("detection", "[detection] red balloon", "[detection] red balloon"),  # pasted identifier accepted
    ],
)
def test_instruction_templates(task: str, query: str | None, expected: str) -> None:
    assert build_instruction(task, query) == expected


@pytest.mark.parametrize(
    "pasted",
    [
        *(template.format("red balloon") for template in REFER_TRAINING_TEMPLATES),  # "[refer] where is … ?" too
        "[vqa] what colour is the car?",
        "[grounding] describe this image in detail",
        "[caption] a short caption",
    ],
)
def test_a_pasted_official_prompt_is_kept_as_is(pasted: str) -> None:
    task, _ = split_identifier(pasted)
    assert build_instruction(task, pasted) == pasted
    assert build_instruction(task, f"  [{task.value.upper()}]   {pasted.split('] ', 1)[1]} ") == pasted  # normalised


def test_a_pasted_identifier_alone_gets_the_default_query() -> None:
    assert build_instruction("caption", "[caption]") == "[caption] please describe this image?"
    with pytest.raises(PromptError, match="needs a query"):
        build_instruction("refer", "[refer] ")


def test_identify_takes_a_grid_box() -> None:
    assert build_instruction(Task.identify, box=(4, 50, 30, 65)) == "[identify] what is this {<4><50><30><65>}"


@pytest.mark.parametrize(
    ("task", "query", "box", "message"),
    [
        ("identify", None, None, "needs a box"),
        ("refer", "", None, "needs a query"),
        ("detection", "cat", (1, 2, 3, 4), "only task identify"),
        ("refer", "[detection] cats", None, r"starts with \[detection\]"),
    ],
)
def test_bad_requests_explain_the_fix(task, query, box, message) -> None:
    with pytest.raises(PromptError, match=message):
        build_instruction(task, query, box)


def test_split_identifier() -> None:
    assert split_identifier("[Refer]  the cat ") == (Task.refer, "the cat")
    assert split_identifier("tell me a story") == (Task.chat, "tell me a story")


def test_number_tokens_make_each_grid_coordinate_one_token() -> None:
    from model.synthetic.tiny import build_tiny_tokenizer

    plain = build_tiny_tokenizer()
    numbers = build_tiny_tokenizer(number_tokens=True)
    text = "{<7><42><100><99>}"
    tokens = numbers.convert_ids_to_tokens(numbers(text, add_special_tokens=False).input_ids)
    assert [t for t in tokens if t.isdigit()] == ["7", "42", "100", "99"]
    digits = plain.convert_ids_to_tokens(plain(text, add_special_tokens=False).input_ids)
    assert [t for t in digits if t.isdigit()] == list("742100" + "99")  # LLaMA-style: digit by digit
    for tok in (plain, numbers):
        assert tok.decode(tok(text, add_special_tokens=False).input_ids) == text
