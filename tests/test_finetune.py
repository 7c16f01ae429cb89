"""Fine-tuning: the official instruction formats, answer-only loss, a run that learns, exact resume, loadable output."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file

from model.annotations import Annotation, Box, Category, Dataset, ImageRecord, Task
from model.dataset_files import DatasetFilesError
from model.errors import ImageLoadError
from model.prompts import IDENTIFY_TRAINING_TEMPLATES, REFER_TRAINING_TEMPLATES
from model.proposer import Proposer
from model.synthetic.shapes_model import SHIPPED_DIR
from model.synthetic.tiny import make_tiny
from model.training import (
    FinetuneConfig,
    FinetuneError,
    IdentifyAnswer,
    TemplateChoice,
    Trainer,
    blip_caption,
    build_samples,
    finetune,
)
from model.training.batches import IGNORE_INDEX, collate
from model.training.trainer import CHECKPOINTS

# --- instruction formats (official stage-3 datasets, minigpt4/datasets/datasets/*.py) --------------------------------


def _record(path: Path = Path("street.png")) -> ImageRecord:
    # 200 x 100 image: x grid = x / 2, y grid = y.
    return ImageRecord(
        path=path,
        width=200,
        height=100,
        annotations=[
            Annotation(box=Box.from_xyxy([101, 10.5, 151, 40.9]), label="circle"),
            Annotation(box=Box.from_xyxy([10, 20, 50, 60]), label="circle", phrase="The  Red circle."),
            Annotation(box=Box.from_xyxy([120, 50, 200, 100]), label="square"),
        ],
    )


def _dataset(*records: ImageRecord) -> Dataset:
    return Dataset(categories=[Category(id=1, name="circle"), Category(id=2, name="square")], images=list(records))


def _pairs(task: Task, **kwargs) -> list[tuple[str, str]]:
    samples = build_samples(_dataset(_record()), tasks=[task], templates=TemplateChoice.default, **kwargs)
    return [(s.instruction, s.answer) for s in samples]


def test_detection_lists_every_box_of_a_category_in_reading_order() -> None:
    assert _pairs(Task.detection) == [
        # truncation: 101/200*100 = 50.5 → 50, 10.5 → 10, 151/2 = 75.5 → 75, 40.9 → 40
        ("[detection] circle", "<p>circle</p> {<5><20><25><60>}<delim>{<50><10><75><40>}"),
        ("[detection] square", "<p>square</p> {<60><50><100><100>}"),  # touching the edges gives 100
    ]


def test_detection_negatives_teach_an_empty_answer_for_absent_categories() -> None:
    only_circles = _record().model_copy(update={"annotations": _record().annotations[:2]})
    samples = build_samples(_dataset(only_circles), tasks=[Task.detection], detection_negatives=True)
    assert [(s.instruction, s.answer) for s in samples] == [
        ("[detection] circle", "<p>circle</p> {<5><20><25><60>}<delim>{<50><10><75><40>}"),
        ("[detection] square", ""),
    ]
    assert len(build_samples(_dataset(only_circles), tasks=[Task.detection])) == 1  # off by default, as official


def test_refer_uses_the_phrase_or_a_unique_category() -> None:
    # The unphrased circle is one of two circles, so it cannot be referred to by its category: no sample.
    assert _pairs(Task.refer) == [
        ("[refer] give me the location of the red circle", "{<5><20><25><60>}"),
        ("[refer] give me the location of square", "{<60><50><100><100>}"),
    ]


def test_identify_answers_the_category_or_the_official_phrase() -> None:
    assert _pairs(Task.identify) == [
        ("[identify] what is this {<50><10><75><40>}", "circle"),
        ("[identify] what is this {<5><20><25><60>}", "circle"),
        ("[identify] what is this {<60><50><100><100>}", "square"),
    ]
    assert _pairs(Task.identify, identify_answer=IdentifyAnswer.phrase)[1] == (
        "[identify] what is this {<5><20><25><60>}",
        "the red circle",
    )


def test_pool_templates_are_the_official_stage3_wording() -> None:
    samples = build_samples(_dataset(_record()), tasks=[Task.refer, Task.identify], rng=random.Random(3))
    refer = {t.format("the red circle") for t in REFER_TRAINING_TEMPLATES}
    identify = {t.format("{<5><20><25><60>}") for t in IDENTIFY_TRAINING_TEMPLATES}
    assert samples[0].instruction in refer
    assert samples[3].instruction in identify
    drawn = {s.instruction for s in build_samples(_dataset(*[_record()] * 40), tasks=[Task.refer])}
    assert len({i for i in drawn if "red circle" in i}) >= 5  # the pool is really sampled


def test_blip_caption_matches_the_official_normalisation() -> None:
    assert blip_caption('  The "Big" (red) car: left!  ') == "the big red car left"
    assert len(blip_caption("word " * 80).split()) == 50


def test_untrainable_task_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot build training samples for task"):
        build_samples(_dataset(_record()), tasks=[Task.caption])


# --- batches -------------------------------------------------------------------------------------------------------


def test_loss_falls_on_answer_tokens_and_eos_only(tiny_model_dir: Path) -> None:
    from model.processing import MiniGPTv2Processor

    processor = MiniGPTv2Processor.from_pretrained(tiny_model_dir)
    samples = build_samples(_dataset(_record()), tasks=[Task.detection, Task.refer], templates=TemplateChoice.default)
    batch = collate(samples, processor, max_length=512)
    eos = processor.tokenizer.eos_token_id
    for row, sample in enumerate(samples):
        labelled = batch.labels[row][batch.labels[row] != IGNORE_INDEX].tolist()
        assert labelled[-1] == eos
        assert processor.decode(labelled) == sample.answer
        ids = batch.input_ids[row][batch.attention_mask[row].bool()].tolist()
        assert ids.count(processor.config.image_token_id) == processor.config.image_seq_length
        assert ids[-len(labelled) :] == labelled  # the answer ends the sequence, right padding after it
    assert batch.labels[batch.attention_mask == 0].eq(IGNORE_INDEX).all()


def test_an_empty_answer_is_just_end_of_sequence(tiny_model_dir: Path) -> None:
    from model.processing import MiniGPTv2Processor
    from model.training import InstructionSample

    processor = MiniGPTv2Processor.from_pretrained(tiny_model_dir)
    batch = collate([InstructionSample(Path("a.png"), Task.detection, "[detection] dog", "")], processor, 512)
    assert batch.labels[0][batch.labels[0] != IGNORE_INDEX].tolist() == [processor.tokenizer.eos_token_id]


def test_too_long_sample_names_the_fix(tiny_model_dir: Path) -> None:
    from model.errors import PromptError
    from model.processing import MiniGPTv2Processor

    processor = MiniGPTv2Processor.from_pretrained(tiny_model_dir)
    samples = build_samples(_dataset(_record()), tasks=[Task.detection])
    with pytest.raises(PromptError, match="max-length"):
        collate(samples, processor, max_length=20)


# --- training runs -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def blobs(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """Twelve images with one red circle each, at varied places: a task a tiny model can start to learn."""
    root = tmp_path_factory.mktemp("blobs")
    rng = random.Random(0)
    records = []
    for i in range(12):
        image = Image.new("RGB", (120, 90), (190, 185, 170))
        x, y = rng.randint(0, 70), rng.randint(0, 50)
        ImageDraw.Draw(image).ellipse([x, y, x + 40, y + 35], fill=(220, 40, 40))
        path = root / f"{i:02d}.png"
        image.save(path)
        box = Box.from_xyxy([x, y, x + 41, y + 36])
        records.append(ImageRecord(path=path, width=120, height=90, annotations=[Annotation(box=box, label="circle")]))
    return Dataset(categories=[Category(id=1, name="circle")], images=records)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("base")
    make_tiny(out, seed=0)
    return out


def _config(**overrides) -> FinetuneConfig:
    settings = dict(lora_r=8, learning_rate=2e-3, min_lr=1e-4, warmup_steps=2, batch_size=6, max_steps=10, save_every=4)
    settings.update(overrides)
    return FinetuneConfig(**settings)


def test_short_run_lowers_the_loss_and_loads_in_proposer(blobs: Dataset, tmp_path: Path) -> None:
    # From the shipped shapes model, as a user would start: LoRA + projection on new images (plain background).
    result = finetune(blobs, SHIPPED_DIR, tmp_path / "run", _config(max_steps=30, learning_rate=1e-3), progress=False)
    assert result.steps == 30
    assert result.samples_per_epoch == {"detection": 12, "refer": 12, "identify": 12}
    state = tmp_path / "run" / CHECKPOINTS / "step-0000030" / "trainer_state.json"
    losses = json.loads(state.read_text())["losses"]
    assert sum(losses[-5:]) / 5 < 0.85 * sum(losses[:5]) / 5

    # Adapters + processor, pointing at the base: loads and answers through the normal inference path.
    adapter = json.loads((tmp_path / "run" / "adapter_config.json").read_text())
    assert Path(adapter["base_model_name_or_path"]) == SHIPPED_DIR.resolve()
    assert not (tmp_path / "run" / "config.json").exists()
    tuned = Proposer.from_pretrained(tmp_path / "run", device="cpu")
    base = Proposer.from_pretrained(SHIPPED_DIR, device="cpu")
    assert not torch.equal(tuned.model.llama_proj.weight, base.model.llama_proj.weight)
    answer = tuned.propose(blobs.images[0].path, Task.refer, "circle")
    assert answer.proposals and answer.proposals[0].box.iou(blobs.images[0].annotations[0].box) > 0.3


def test_merged_output_equals_base_plus_adapters(blobs: Dataset, base_dir: Path, tmp_path: Path) -> None:
    finetune(blobs, base_dir, tmp_path / "adapters", _config(), progress=False)
    finetune(blobs, base_dir, tmp_path / "merged", _config(merge=True), progress=False)
    assert (tmp_path / "merged" / "config.json").exists() and not (tmp_path / "merged" / "adapter_config.json").exists()
    a = Proposer.from_pretrained(tmp_path / "adapters", device="cpu").model.state_dict()
    b = Proposer.from_pretrained(tmp_path / "merged", device="cpu").model.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], msg=name)
    base = Proposer.from_pretrained(base_dir, device="cpu").model.state_dict()
    assert not torch.equal(a["llama_proj.weight"], base["llama_proj.weight"])  # the projection trained
    q = "language_model.model.layers.0.self_attn.q_proj.weight"
    k = "language_model.model.layers.0.self_attn.k_proj.weight"
    assert not torch.equal(a[q], base[q]) and torch.equal(a[k], base[k])  # LoRA on q/v only
    v = "vision_model.blocks.0.attn.qkv.weight"
    assert torch.equal(a[v], base[v])  # the vision tower stays frozen


def test_resume_continues_exactly_where_the_run_stopped(blobs: Dataset, base_dir: Path, tmp_path: Path) -> None:
    whole = finetune(blobs, base_dir, tmp_path / "whole", _config(), progress=False)

    def interrupt(step: int, loss: float) -> None:
        if step == 6:
            raise KeyboardInterrupt

    trainer = Trainer(blobs, base_dir, tmp_path / "cut", _config(), device="cpu", progress=False, on_step=interrupt)
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    assert sorted(p.name for p in (tmp_path / "cut" / CHECKPOINTS).iterdir()) == ["step-0000004", "step-0000006"]

    resumed = finetune(blobs, base_dir, tmp_path / "cut", _config(), resume=True, progress=False)
    assert resumed.resumed_from == 6 and resumed.steps == 10
    assert resumed.final_loss == pytest.approx(whole.final_loss, rel=1e-5)
    a = load_file(str(tmp_path / "whole" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "adapter_model.safetensors"))
    for name in a:
        torch.testing.assert_close(a[name], b[name], msg=name)


def test_resume_refuses_other_settings_and_fresh_runs_refuse_old_checkpoints(
    blobs: Dataset, base_dir: Path, tmp_path: Path
) -> None:
    finetune(blobs, base_dir, tmp_path / "run", _config(max_steps=4), progress=False)
    with pytest.raises(FinetuneError, match="learning_rate"):
        finetune(blobs, base_dir, tmp_path / "run", _config(max_steps=4, learning_rate=1e-4), resume=True)
    with pytest.raises(FinetuneError, match="--resume"):
        finetune(blobs, base_dir, tmp_path / "run", _config(max_steps=4), progress=False)
    with pytest.raises(FinetuneError, match="nothing to resume"):
        finetune(blobs, base_dir, tmp_path / "empty", _config(), resume=True, progress=False)


def test_full_training_of_every_part_writes_a_plain_model(blobs: Dataset, base_dir: Path, tmp_path: Path) -> None:
    config = _config(lora_r=0, train_llm=True, train_vision=True, max_steps=3)
    finetune(blobs, base_dir, tmp_path / "full", config, progress=False)
    trained = Proposer.from_pretrained(tmp_path / "full", device="cpu").model.state_dict()
    base = Proposer.from_pretrained(base_dir, device="cpu").model.state_dict()
    for name in ("vision_model.blocks.0.attn.qkv.weight", "language_model.model.layers.0.mlp.up_proj.weight"):
        assert not torch.equal(trained[name], base[name]), name


def test_dataset_without_samples_and_empty_config_fail_clearly(base_dir: Path, tmp_path: Path) -> None:
    empty = Dataset(images=[ImageRecord(path=tmp_path / "x.png", width=10, height=10)])
    with pytest.raises(FinetuneError, match="no training samples"):
        finetune(empty, base_dir, tmp_path / "run", _config(), progress=False)
    with pytest.raises(ValueError, match="nothing to train"):
        FinetuneConfig(lora_r=0, train_projection=False)


def test_every_image_is_checked_before_the_first_step(blobs: Dataset, base_dir: Path, tmp_path: Path) -> None:
    # Issue 13, item 21: a declared 10^30 x 10^30 size trained (every box quantised to nothing), and a missing file
    # ended the run midway. Both are now refused before the model loads, as `evaluate` refuses them.
    steps: list[int] = []

    def train(dataset: Dataset, out: str) -> None:
        config = _config(max_steps=2)
        record = lambda step, loss: steps.append(step)  # noqa: E731
        Trainer(dataset, base_dir, tmp_path / out, config, device="cpu", progress=False, on_step=record).run()

    huge = blobs.images[-1].model_copy(update={"width": 10**30, "height": 10**30})
    with pytest.raises(
        DatasetFilesError, match=r"image 11 \(.*11\.png\) is 120x90 upright, but the dataset says 10{30}x"
    ):
        train(blobs.model_copy(update={"images": [*blobs.images[:-1], huge]}), "huge")

    gone = blobs.images[-1].model_copy(update={"path": tmp_path / "gone.png"})
    with pytest.raises(ImageLoadError, match=r"gone\.png'?: file not found"):
        train(blobs.model_copy(update={"images": [*blobs.images[:-1], gone]}), "gone")
    assert steps == [] and not (tmp_path / "huge").exists() and not (tmp_path / "gone").exists()

    # An image no sample reads (no boxes, no negatives) is not asked for.
    unused = ImageRecord(path=tmp_path / "unused.png", width=10, height=10)
    train(blobs.model_copy(update={"images": [*blobs.images, unused]}), "fine")
    assert steps == [1, 2]
