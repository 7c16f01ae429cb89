"""The shared image prefix (issue 18): its answers are token for token those of the uncached path, in every cache
mode, for every task, in batches that mix images, across calls and after eviction; and the image is paid once."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch._dynamo
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from skimage import data as skdata

from model.annotations import Box, Task
from model.processing import Turn
from model.proposer import GenerationOptions, Proposer, ProposeRequest

COFFEE = Path(skdata.__file__).parent / "coffee.png"
OPTIONS = GenerationOptions(max_new_tokens=10)


def _images(tmp_path: Path) -> list[Path]:
    paths = [COFFEE]
    for i, (size, colour) in enumerate([((50, 90), (10, 200, 40)), ((120, 40), (200, 30, 160))]):
        paths.append(tmp_path / f"image{i}.png")
        Image.new("RGB", size, colour).save(paths[-1])
    return paths


def _every_task(images: list[Path]) -> list[ProposeRequest]:
    """Every task, each image asked several things, interleaved so that batches mix images."""
    coffee, green, pink = images
    return [
        ProposeRequest(coffee, Task.refer, "cup"),
        ProposeRequest(green, Task.detection, "a much longer query about the small green square on the left"),
        ProposeRequest(pink, Task.identify, box=Box.from_xyxy([10, 5, 60, 30])),
        ProposeRequest(coffee, Task.vqa, "what is on the table next to the cup and the saucer?"),
        ProposeRequest(green, Task.grounding, None),
        ProposeRequest(pink, Task.caption, None),
        ProposeRequest(coffee, Task.chat, "and now?", history=[Turn("hi", "hello there")]),
        ProposeRequest(green, Task.refer, "square"),
        ProposeRequest(coffee, Task.detection, "saucer"),
    ]


def _answers(results: list) -> list[tuple[str, list[tuple[float, ...]]]]:
    return [(r.text, [p.box.xyxy for p in r.proposals]) for r in results]


def _scores(results: list) -> list[float]:
    return [p.score for r in results for p in r.proposals]


@pytest.fixture(scope="module")
def reference(official_model, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], list]:
    """The uncached path's answers (every prompt prefills its whole prompt, dynamic cache, one per batch)."""
    images = _images(tmp_path_factory.mktemp("prefix-images"))
    proposer = Proposer(*official_model, prefix_cache_bytes=None)
    uncached = proposer.propose_batch(_every_task(images), options=OPTIONS.model_copy(update={"cache": "dynamic"}))
    assert len({text for text, _ in _answers(uncached)}) > 4, "the random model must answer differently"
    return images, uncached


@pytest.mark.parametrize("mode", ["dynamic", "static", "compiled"])
def test_shared_prefix_gives_the_uncached_tokens_for_every_task_in_every_cache_mode(
    official_model, reference: tuple[list[Path], list], mode: str
) -> None:
    """In compiled mode (torch.compile of the decoding step, run on the CPU), the warm-up compiles the graphs and
    the calls after it, whose cache comes from the shared prefix, compile nothing more."""
    images, uncached = reference
    proposer = Proposer(*official_model)
    assert proposer.prefix is not None, "on by default"
    options = OPTIONS.model_copy(update={"cache": mode})
    if mode == "compiled":
        torch._dynamo.reset()
        assert proposer.warm_up((1, 4), options) > 0
        assert _graphs() > 0, "the decoding step was compiled"
    warmed = _graphs()
    shared = proposer.propose_batch(_every_task(images), options=options, batch_size=4)
    assert _answers(shared) == _answers(uncached)
    assert _scores(shared) == pytest.approx(_scores(uncached), rel=1e-4)
    assert len(proposer.prefix.lru) == 3 + (mode == "compiled")  # one per image (and the warm-up's blank image)
    again = proposer.propose_batch(_every_task(images)[::-1], options=options, batch_size=4)  # all from the LRU
    assert _answers(again) == _answers(uncached)[::-1]
    assert proposer.prefix.lru.hits >= 3
    assert _graphs() == warmed, "compiled once, in the warm-up"


def _graphs() -> int:
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def test_prefixes_are_reused_across_calls_and_stay_exact_after_eviction(
    official_model, reference: tuple[list[Path], list]
) -> None:
    images, uncached = reference
    model, processor = official_model
    one_image = Proposer(model, processor)
    one_image.propose(images[0], Task.refer, "cup", options=OPTIONS)
    per_image = one_image.prefix.lru.bytes
    assert per_image > 0

    proposer = Proposer(model, processor, prefix_cache_bytes=2 * per_image)  # room for two of the three images
    encoded: list[int] = []
    hook = model.vision_model.register_forward_hook(lambda _m, args, _o: encoded.append(args[0].shape[0]))
    try:
        first = proposer.propose_batch(_every_task(images), options=OPTIONS, batch_size=4)
        assert sum(encoded) == 3 and len(proposer.prefix.lru) == 2
        assert proposer.prefix.lru.bytes <= 2 * per_image

        # The desktop pattern: successive questions on one image that is still cached skip the vision encoder.
        last_kept = images[2]  # the images' prefixes were computed in image order, the first one was evicted
        encoded.clear()
        for request in (r for r in _every_task(images) if r.image == last_kept):
            alone = proposer.propose_batch([request], options=OPTIONS)[0]
            assert (alone.text, alone.task) == next(
                (u.text, u.task) for u, r in zip(uncached, _every_task(images), strict=True) if r == request
            )
        assert encoded == []

        # The evicted image is encoded again, and gives the same answers as before.
        again = proposer.propose_batch([r for r in _every_task(images) if r.image == images[0]], options=OPTIONS)
        assert encoded == [1]
    finally:
        hook.remove()
    assert _answers(first) == _answers(uncached)
    assert _answers(again) == [
        a for a, r in zip(_answers(uncached), _every_task(images), strict=True) if r.image == images[0]
    ]


def test_without_a_cache_across_calls_one_call_still_encodes_each_image_once(official_model, tmp_path: Path) -> None:
    """prefix_cache_bytes=0: nothing is kept after the call, but an image whose prompts fill several batches is
    encoded and prefilled once (3 labels per image in batches of 2)."""
    model, processor = official_model
    images = _images(tmp_path)
    proposer = Proposer(model, processor, prefix_cache_bytes=0)
    requests = [ProposeRequest(image, Task.detection, label) for image in images for label in "abc"]
    encoded: list[int] = []
    hook = model.vision_model.register_forward_hook(lambda _m, args, _o: encoded.append(args[0].shape[0]))
    try:
        shared = proposer.propose_batch(
            requests, options=OPTIONS.model_copy(update={"max_new_tokens": 4}), batch_size=2
        )
    finally:
        hook.remove()
    assert sum(encoded) == len(images)
    assert len(proposer.prefix.lru) == 0 and proposer.prefix.lru.bytes == 0
    uncached = Proposer(model, processor, prefix_cache_bytes=None).propose_batch(
        requests, options=OPTIONS.model_copy(update={"max_new_tokens": 4}), batch_size=2
    )
    assert _answers(shared) == _answers(uncached)


def test_a_negative_prefix_cache_size_is_refused_with_its_fix(official_model) -> None:
    with pytest.raises(ValueError, match=r"0 or more.*0 keeps no prefix"):
        Proposer(*official_model, prefix_cache_bytes=-1)


@given(
    question=st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40),
    answers=st.lists(st.text(max_size=20), max_size=2),
)
def test_every_prompt_starts_with_the_image_prefix(official_model, question: str, answers: list[str]) -> None:
    """Whatever the user types, no piece merges across `</Img>`: the prefix is shared by every prompt."""
    _, processor = official_model
    history = [Turn(f"q{i}", answer) for i, answer in enumerate(answers)]
    prefix = processor.image_prefix_ids()
    ids = processor.prompt_ids(question, history)
    assert ids[: len(prefix)] == prefix and len(ids) > len(prefix)
    assert prefix.count(processor.config.image_token_id) == processor.config.image_seq_length
