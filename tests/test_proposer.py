"""Proposer end to end: image → prompt → generate → parsed boxes in original-image pixels, with real scores."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from box_model import DETECTION_ANSWER, REFER_ANSWER
from PIL import Image
from skimage import data as skdata

from model.annotations import Box, Task
from model.errors import GenerationStopped, PromptError
from model.proposer import GenerationOptions, Proposer, ProposeRequest

COFFEE = Path(skdata.__file__).parent / "coffee.png"  # a real 600x400 photo shipped with scikit-image


def test_refer_box_is_mapped_to_original_pixels_of_a_non_square_photo(box_proposer: Proposer) -> None:
    result = box_proposer.propose(COFFEE, "refer", "the red circle")
    assert (result.width, result.height) == (600, 400)
    assert result.text == REFER_ANSWER
    assert result.prompt == "[refer] give me the location of the red circle"
    [proposal] = result.proposals
    assert proposal.box.xyxy == (60.0, 80.0, 360.0, 320.0)  # <10>/100·600, <20>/100·400, …
    assert proposal.label == "the red circle" and proposal.task is Task.refer
    assert proposal.model_version == box_proposer.model_version


def test_a_pasted_official_prompt_is_asked_as_is_and_its_label_has_no_identifier(box_proposer: Proposer) -> None:
    pasted = "[refer] give me the location of the red circle"  # the prompt the box model was taught, pasted whole
    result = box_proposer.propose(COFFEE, "refer", pasted)
    assert result.prompt == pasted and result.text == REFER_ANSWER
    [proposal] = result.proposals
    assert proposal.label == "give me the location of the red circle"  # no phrase in the answer: the query names it


def test_detection_returns_every_box_with_its_phrase(box_proposer: Proposer) -> None:
    result = box_proposer.propose(COFFEE, Task.detection, "circle")
    assert result.text == DETECTION_ANSWER
    assert [p.box.xyxy for p in result.proposals] == [(60.0, 80.0, 360.0, 320.0), (30.0, 20.0, 180.0, 160.0)]
    assert {p.label for p in result.proposals} == {"circle"}
    assert all(p.phrase == "circle" for p in result.proposals)
    assert result.to_json_dict()["proposals"][1]["bbox"] == [30.0, 20.0, 180.0, 160.0]


def test_exif_rotated_jpeg_gives_boxes_in_upright_pixels(box_proposer: Proposer, tmp_path: Path) -> None:
    stored = Image.new("RGB", (80, 40), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display: upright is 40 wide, 80 tall
    path = tmp_path / "rotated.jpg"
    stored.save(path, exif=exif)

    result = box_proposer.propose(path, "refer", "the red circle")
    assert (result.width, result.height) == (40, 80)
    assert result.proposals[0].box.xyxy == (4.0, 16.0, 24.0, 64.0)


def test_the_mean_score_is_the_geometric_mean_of_the_box_token_probabilities(box_proposer: Proposer) -> None:
    # The `mean` candidate (model.scoring), the default before issue 16, checked through a real model; the other
    # candidates' arithmetic is checked on hand-made distributions in tests/test_scoring.py.
    mean = Proposer(box_proposer.model, box_proposer.processor, score="mean")
    result = mean.propose(COFFEE, "refer", "the red circle")
    score = result.proposals[0].score
    # Independent computation: teacher-force the answer and read the model's probability of each answer token.
    model, processor = box_proposer.model, box_proposer.processor
    prompt = processor.prompt_ids(result.prompt)
    answer = processor.encode_text(REFER_ANSWER)
    ids = torch.tensor([prompt + answer])
    pixels = processor.preprocess([Image.open(COFFEE).convert("RGB")])
    with torch.no_grad():
        logprobs = model(input_ids=ids, pixel_values=pixels).logits[0].log_softmax(-1)
    token_logprobs = [logprobs[len(prompt) - 1 + i, tok].item() for i, tok in enumerate(answer)]
    # The answer's first token is the leading "▁" of the segment; the box is every token after it.
    assert processor.tokenizer.convert_ids_to_tokens(answer[:1]) == ["▁"]
    expected = math.exp(sum(token_logprobs[1:]) / len(token_logprobs[1:]))
    assert score == pytest.approx(expected, rel=1e-4)
    assert 0.5 < score < 1.0


def test_scores_differ_between_boxes_of_one_answer(box_proposer: Proposer) -> None:
    scores = [p.score for p in box_proposer.propose(COFFEE, "detection", "circle").proposals]
    assert len(set(scores)) == 2 and all(0 < s <= 1 for s in scores)


def test_identify_writes_the_pixel_box_into_the_prompt_on_the_grid(box_proposer: Proposer) -> None:
    box = Box.from_xyxy([60, 80, 360, 320])
    result = box_proposer.propose(COFFEE, "identify", box=box, options=GenerationOptions(max_new_tokens=4))
    assert result.prompt == "[identify] what is this {<10><20><60><80>}"
    with pytest.raises(PromptError, match="needs a box"):
        box_proposer.propose(COFFEE, "identify")


def test_a_request_in_a_left_padded_batch_matches_the_same_request_alone(official_model, tmp_path: Path) -> None:
    model, processor = official_model
    proposer = Proposer(model, processor)
    other = tmp_path / "other.png"
    Image.new("RGB", (50, 90), (10, 200, 40)).save(other)
    requests = [
        ProposeRequest(COFFEE, "refer", "cup"),
        ProposeRequest(other, "detection", "a much longer query about the small green square on the left"),
        ProposeRequest(COFFEE, "vqa", "what is on the table next to the cup and the saucer?"),
        ProposeRequest(other, "chat", "hi"),
    ]
    options = GenerationOptions(max_new_tokens=12)
    batched = proposer.propose_batch(requests, options=options, batch_size=4)
    alone = [proposer.propose_batch([r], options=options)[0] for r in requests]
    assert [r.text for r in batched] == [r.text for r in alone]
    assert len({r.text for r in alone}) > 1, "the random model must answer differently, or the check is void"
    assert [r.task for r in batched] == [Task.refer, Task.detection, Task.vqa, Task.chat]


def test_each_distinct_image_is_encoded_once(official_model, tmp_path: Path) -> None:
    model, processor = official_model
    proposer = Proposer(model, processor)
    other = tmp_path / "other.png"
    Image.new("RGB", (50, 90), (10, 200, 40)).save(other)
    encoded: list[int] = []
    handle = model.vision_model.register_forward_hook(lambda _m, args, _o: encoded.append(args[0].shape[0]))
    try:
        requests = [ProposeRequest(COFFEE, "detection", label) for label in ("cup", "saucer", "spoon")]
        requests.append(ProposeRequest(other, "detection", "square"))
        proposer.propose_batch(requests, options=GenerationOptions(max_new_tokens=2), batch_size=2)
    finally:
        handle.remove()
    assert sum(encoded) == 2


def test_embedding_path_matches_generate_on_input_ids_with_pixels(official_model) -> None:
    model, processor = official_model
    image = Image.open(COFFEE).convert("RGB")
    result = Proposer(model, processor).propose(image, "refer", "cup", options=GenerationOptions(max_new_tokens=8))
    ids, mask = processor.pad_left([processor.prompt_ids(result.prompt)])
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        pixel_values=processor.preprocess([image]),
        max_new_tokens=8,
        do_sample=False,
        eos_token_id=processor.tokenizer.eos_token_id,
        pad_token_id=processor.pad_token_id,
    )
    new = out[0, ids.shape[1] :].tolist()
    eos = processor.tokenizer.eos_token_id
    new = new[: new.index(eos)] if eos in new else new
    assert processor.decode(new).strip() == result.text


def test_official_double_bos_mode_starts_with_two_bos(box_model_dir: Path) -> None:
    proposer = Proposer.from_pretrained(box_model_dir, device="cpu", official_double_bos=True)
    ids = proposer.processor.prompt_ids("[refer] x")
    assert ids[:3] == [1, 1, proposer.processor.encode_text("[INST] <Img>")[0]]


def test_sampling_is_reproducible_with_a_seed(official_model) -> None:
    proposer = Proposer(*official_model)
    options = GenerationOptions.demo(seed=3, max_new_tokens=10)
    first = proposer.propose(COFFEE, "chat", "describe", options=options).text
    assert proposer.propose(COFFEE, "chat", "describe", options=options).text == first


def test_progress_callback_counts_requests(box_proposer: Proposer) -> None:
    seen: list[tuple[int, int]] = []
    requests = [ProposeRequest(COFFEE, "refer", "the red circle")] * 3
    box_proposer.propose_batch(requests, batch_size=2, on_progress=lambda done, total: seen.append((done, total)))
    assert seen == [(2, 3), (3, 3)]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_on_cpu_gives_the_same_boxes(box_model_dir: Path, dtype: str) -> None:
    proposer = Proposer.from_pretrained(box_model_dir, device="cpu", dtype=dtype)
    assert proposer.model.language_model.dtype == getattr(torch, dtype)
    assert proposer.model.vision_model.pos_embed.dtype == torch.float32, "kept in fp32 like the official run"
    result = proposer.propose(COFFEE, "detection", "circle")
    assert [p.box.xyxy for p in result.proposals] == [(60.0, 80.0, 360.0, 320.0), (30.0, 20.0, 180.0, 160.0)]


def test_asking_beyond_the_context_window_fails_with_the_numbers(box_proposer: Proposer) -> None:
    context = box_proposer.model.config.text_config.max_position_embeddings
    with pytest.raises(PromptError, match=f"context of {context}"):
        box_proposer.propose(COFFEE, "chat", "hello", options=GenerationOptions(max_new_tokens=context))


def test_hf_generate_on_input_ids_batches_with_left_padding(official_model) -> None:
    model, processor = official_model
    image = processor.preprocess([Image.open(COFFEE).convert("RGB")])
    prompts = [processor.prompt_ids("[refer] cup"), processor.prompt_ids("[vqa] what is on the table by the cup?")]
    kwargs = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": processor.pad_token_id}

    def new_tokens(rows: list[list[int]]) -> list[list[int]]:
        ids, mask = processor.pad_left(rows)
        out = model.generate(
            input_ids=ids, attention_mask=mask, pixel_values=image.expand(len(rows), -1, -1, -1), **kwargs
        )
        return out[:, ids.shape[1] :].tolist()

    assert new_tokens(prompts) == new_tokens(prompts[:1]) + new_tokens(prompts[1:])


def test_should_stop_ends_generation_mid_answer(box_proposer: Proposer) -> None:
    """Cancel stops a long answer after the current token instead of running to max_new_tokens."""
    image = Image.fromarray(skdata.astronaut())
    requests = [ProposeRequest(image, Task.detection, "person")]
    assert box_proposer.propose_batch(requests, should_stop=lambda: False)[0].text == DETECTION_ANSWER

    polls = []

    def stop_after_three_tokens() -> bool:
        polls.append(1)
        return len(polls) >= 3

    with pytest.raises(GenerationStopped, match="on request"):
        box_proposer.propose_batch(requests, should_stop=stop_after_three_tokens)
    assert len(polls) == 3  # polled once per generated token, and no further once it said stop


def _mixed_requests(tmp_path: Path) -> list[ProposeRequest]:
    other = tmp_path / "other.png"
    Image.new("RGB", (50, 90), (10, 200, 40)).save(other)
    return [
        ProposeRequest(COFFEE, "refer", "cup"),
        ProposeRequest(other, "detection", "a much longer query about the small green square on the left"),
        ProposeRequest(COFFEE, "vqa", "what is on the table next to the cup and the saucer?"),
        ProposeRequest(other, "chat", "hi"),
        ProposeRequest(COFFEE, "caption", None),
    ]


def _tokens_and_scores(results: list) -> list[tuple[str, list[float]]]:
    return [(r.text, [p.score for p in r.proposals]) for r in results]


@pytest.mark.parametrize("batch_size", [1, 3])
def test_static_cache_equals_dynamic_cache_token_for_token(official_model, tmp_path: Path, batch_size: int) -> None:
    """The GPU path's preallocated cache gives the dynamic path's answers, left padding and a short last batch
    included (the random model answers differently per request, so a mix-up would show)."""
    model, processor = official_model
    proposer = Proposer(model, processor)
    requests = _mixed_requests(tmp_path)
    dynamic = proposer.propose_batch(requests, options=GenerationOptions(max_new_tokens=12, cache="dynamic"))
    static = proposer.propose_batch(
        requests, options=GenerationOptions(max_new_tokens=12, cache="static"), batch_size=batch_size
    )
    assert [r.text for r in static] == [r.text for r in dynamic]
    assert len({r.text for r in dynamic}) > 2
    assert proposer.cache_mode(GenerationOptions()) == "dynamic"  # auto on a CPU


@pytest.mark.slow
def test_compiled_static_cache_equals_dynamic_and_reuses_its_warm_up(box_model_dir: Path, tmp_path: Path) -> None:
    """torch.compile of the decoding step (what `auto` uses on a GPU), run on the CPU: same tokens and scores as
    the dynamic path, and a second call with other prompts does not compile again."""
    import torch._dynamo

    proposer = Proposer.from_pretrained(box_model_dir, device="cpu", dtype="float32")
    requests = _mixed_requests(tmp_path)
    dynamic = proposer.propose_batch(requests, options=GenerationOptions(cache="dynamic"), batch_size=4)
    assert proposer.warm_up((1, 4)) == 0.0  # auto on a CPU is the dynamic cache: nothing to compile
    torch._dynamo.reset()
    compiled_options = GenerationOptions(cache="compiled")
    assert proposer.warm_up((1, 4), compiled_options) > 0
    warmed = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    compiled = proposer.propose_batch(requests, options=compiled_options, batch_size=4)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == warmed  # the warm-up covered the real calls
    (alone,) = proposer.propose_batch(requests[:1], options=compiled_options, batch_size=4)  # a lone click
    assert alone.text == dynamic[0].text
    assert [r.text for r in compiled] == [r.text for r in dynamic]
    for got, want in zip(_tokens_and_scores(compiled), _tokens_and_scores(dynamic), strict=True):
        assert got[1] == pytest.approx(want[1], rel=1e-4)
    frames = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert frames > 0, "the decoding step was compiled"
    again = proposer.propose_batch(requests[::-1], options=compiled_options, batch_size=4)
    assert [r.text for r in again] == [r.text for r in dynamic][::-1]
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == frames  # the warm-up was reused
