"""Engine benchmark: the official-style loop against our `Proposer`, in one process, printed as JSON.

The model is the full-size architecture (EVA ViT-g/14 at 448 px + LLaMA-2-7B shapes) with random weights, so
nothing is downloaded; `--tiny` runs the same code with the tiny configuration on the CPU in seconds (CI keeps it
alive). Every answer is forced to exactly `--new-tokens` tokens (random weights would stop anywhere).

(a) official-style loop: fp16 weights, LoRA r=64 on q/v left unmerged (peft), HF `generate` on the prompt
    embeddings with the dynamic cache, one request at a time;
(b) our engine end to end (image → boxes): LoRA merged, bf16, static cache + torch.compile on a GPU, batched
    prefill, each image encoded once for all its prompts and its prefix (`<s>[INST] <Img>` + image + `</Img>`)
    prefilled once for all of them (model.prefix_cache; within each call here, `prefix_cache_bytes=0`, so that
    the warm-up call cannot serve the measured one).

Then the shared prefix on its own (issue 18), both in one run so the ratios compare like with like:
- many labels: prompts/s with 1, 5 and 20 `[detection]` labels per image, prefix reuse on and off;
- the desktop pattern: one image, five successive questions (one call each), the time to each answer, with the
  cross-call prefix cache (the default `prefix_cache_bytes`) and without any prefix reuse.

    python bench/engine.py            # full size, needs a CUDA GPU (building the random fp32 weights peaks near 32 GB)
    python bench/engine.py --tiny     # tiny, CPU, seconds
    python bench/engine.py --small    # CPU, minutes: 256 image tokens like full size, a small 4-layer LLaMA
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from PIL import Image

from model.annotations import Box, Task
from model.network import MiniGPTv2Config, MiniGPTv2ForConditionalGeneration
from model.prefix_cache import DEFAULT_PREFIX_CACHE_BYTES
from model.processing import MiniGPTv2Processor
from model.prompts import build_instruction
from model.proposer import GenerationOptions, Proposer, ProposeRequest
from model.synthetic.tiny import build_tiny_tokenizer, tiny_config

# Label prompts per image, as a Label Studio project asks: the first five, and all twenty for the many-labels case.
LABELS = ("person", "car", "dog", "cat", "chair", "bicycle", "bus", "truck", "bird", "horse")
LABELS += ("sheep", "cow", "bottle", "cup", "bowl", "laptop", "phone", "book", "clock", "plant")
LABELS_PER_IMAGE = (1, 5, 20)
# The desktop pattern: what a labeller asks of one image, one question after another.
DESKTOP_QUESTIONS = (
    (Task.detection, "person", None),
    (Task.refer, "the dog on the left", None),
    (Task.identify, None, Box.from_xyxy([40, 60, 320, 400])),
    (Task.vqa, "how many people are there?", None),
    (Task.detection, "car", None),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny configuration on the CPU (seconds)")
    parser.add_argument("--small", action="store_true", help="256 image tokens, 4-layer LLaMA, on the CPU (minutes)")
    parser.add_argument("--new-tokens", type=int, default=40)
    parser.add_argument("--images", type=int, default=None, help="images per throughput run (default 256; CPU 8)")
    parser.add_argument(
        "--label-images", type=int, default=None, help="images per many-labels run (default 32; CPU: --images)"
    )
    parser.add_argument("--batch-sizes", default=None, help="comma-separated (default 1,8,32,64,128; tiny 1,4)")
    parser.add_argument("--repeats", type=int, default=5, help="batch-1 latency: median of this many runs")
    parser.add_argument("--cache", default="auto", choices=["auto", "dynamic", "static", "compiled"])
    parser.add_argument("--quantize", choices=["8bit", "4bit"], default=None, help="engine with bitsandbytes weights")
    args = parser.parse_args()

    size = "tiny" if args.tiny else "small" if args.small else "full"
    device = torch.device("cpu" if size != "full" else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("bench/engine.py: the full-size run needs a CUDA GPU; use --tiny on a CPU")
    n_images = args.images or (8 if size != "full" else 256)
    batch_sizes = [int(b) for b in (args.batch_sizes or ("1,4" if size != "full" else "1,8,32,64,128")).split(",")]
    warnings.filterwarnings("ignore")

    model, processor = build(size, device)
    rng = np.random.default_rng(0)
    images = [random_image(rng) for _ in range(n_images)]
    report: dict[str, object] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "size": SIZES[size],
        "new_tokens": args.new_tokens,
        "prompt_tokens": len(processor.prompt_ids(build_instruction(Task.detection, "person", None))),
    }

    official = official_loop_latency(model, processor, images[0], args)
    dtype = f"fp32 ({size}, CPU)" if size != "full" else "fp16"
    report["official_loop"] = {"latency_s": official, "setup": f"{dtype}, peft LoRA r=64 q/v unmerged, dynamic cache"}

    model = model.merge_and_unload()  # what Proposer.from_pretrained does with a fine-tuned adapter
    engine_dtype = torch.float32 if size != "full" else torch.bfloat16
    cast_keeping_fp32_parts(model, engine_dtype)
    proposer = Proposer(model, processor, model_version="bench", prefix_cache_bytes=0)
    if args.quantize:
        proposer = quantized(proposer, args.quantize)
    options = GenerationOptions(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, cache=args.cache)
    report["engine"] = engine_figures(proposer, images, batch_sizes, options, args.repeats)
    report["engine"]["quantization"] = args.quantize  # type: ignore[index]
    engine = report["engine"]
    assert isinstance(engine, dict)
    report["ratios"] = {
        "latency_speedup_vs_official": round(official / engine["latency_s"], 2),
        "throughput_vs_official_loop": round(engine["one_prompt"]["images_per_s"] * official, 2),
    }
    label_images = images[: args.label_images or (n_images if size != "full" else 32)]
    # On a CPU the best batch size is noise (a shared machine); the largest one asked for shows batching's effect.
    batch = int(engine["five_prompts"]["batch_size"]) if size == "full" else max(batch_sizes)
    report["many_labels"] = many_labels(proposer, label_images, batch, options, rounds=min(args.repeats, 3))
    report["desktop"] = desktop(proposer, images[0], options, args.repeats)
    print(json.dumps(report, indent=2))


SIZES = {
    "tiny": "tiny",
    "small": "small (448 px, 256 image tokens, 2-layer ViT of width 64, 4-layer LLaMA of width 512, random weights)",
    "full": "full (EVA ViT-g/14 448 + LLaMA-2-7B shapes, random weights)",
}


def small_config(vocab_size: int) -> MiniGPTv2Config:
    """Full-size token counts (448 px, 14 px patches: 256 image tokens) on a network small enough for a CPU."""
    config = tiny_config(vocab_size)
    vision = config.vision_config.to_dict() | {"image_size": 448, "pretrain_image_size": 224, "patch_size": 14}
    text = config.text_config.to_dict() | {"hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 4}
    return MiniGPTv2Config(vision_config=vision, text_config=text | {"num_attention_heads": 8})


def build(size: str, device: torch.device) -> tuple[torch.nn.Module, MiniGPTv2Processor]:
    """The architecture with random weights in fp16 (fp32 on the CPU), with unmerged LoRA r=64 on q/v."""
    from peft import LoraConfig, get_peft_model

    tokenizer = build_tiny_tokenizer()  # any LLaMA-style ids below the vocabulary size will do for timing
    configs = {"tiny": tiny_config, "small": small_config, "full": lambda _: MiniGPTv2Config()}
    config = configs[size](len(tokenizer))
    torch.manual_seed(0)
    with torch.device(device):
        model = MiniGPTv2ForConditionalGeneration(config).eval()
    model.to(torch.float32 if size != "full" else torch.float16)
    lora = LoraConfig(r=64, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = get_peft_model(model, lora).eval()
    return model, MiniGPTv2Processor.for_model(tokenizer, config)


def cast_keeping_fp32_parts(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Like from_pretrained(dtype=…): EVA norms, position embeddings and q/v biases stay fp32."""
    keep = set(MiniGPTv2ForConditionalGeneration._keep_in_fp32_modules_strict)
    model.to(dtype)
    for name, param in model.named_parameters():
        if keep & set(name.split(".")):
            param.data = param.data.float()


def quantized(proposer: Proposer, quantization: str) -> Proposer:
    """The same weights reloaded through from_pretrained with 8-/4-bit language-model weights."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench-engine-") as folder:
        proposer.model.save_pretrained(folder)
        proposer.processor.save_pretrained(folder)
        device = proposer.device
        proposer.model.to("cpu")  # free the GPU for the quantized copy
        torch.cuda.empty_cache()
        return Proposer.from_pretrained(folder, device=device, quantization=quantization, model_version="bench")


def official_loop_latency(
    model: torch.nn.Module, processor: MiniGPTv2Processor, image: Image.Image, args: argparse.Namespace
) -> float:
    """One [detection] request the way the official demo runs it: encode, embed, generate (dynamic cache)."""
    base = model.get_base_model()
    ids = processor.prompt_ids(build_instruction(Task.detection, "person", None))

    def run() -> None:
        with torch.inference_mode():
            pixels = processor.preprocess([image]).to(base.device)
            features = base.get_image_features(pixels)
            input_ids = torch.tensor([ids], device=base.device)
            embeds = base.embed_inputs(input_ids, features)
            base.language_model.generate(
                inputs_embeds=embeds,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens,
                do_sample=False,
                pad_token_id=processor.pad_token_id,
            )

    run()  # warm-up
    return median_time(run, args.repeats)


def engine_figures(
    proposer: Proposer, images: list[Image.Image], batch_sizes: list[int], options: GenerationOptions, repeats: int
) -> dict[str, object]:
    cuda = proposer.device.type == "cuda"
    one = [ProposeRequest(images[0], Task.detection, "person")]

    started = time.perf_counter()
    proposer.propose_batch(one, options=options, batch_size=1)  # compiles (on a GPU) once per process
    warmup = time.perf_counter() - started
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    latency = median_time(lambda: proposer.propose_batch(one, options=options, batch_size=1), repeats)
    peak = torch.cuda.max_memory_allocated() / 1e9 if cuda else None

    def rate(requests: list[ProposeRequest], batch: int) -> float:
        proposer.propose_batch(requests[:batch], options=options, batch_size=batch, image_batch_size=batch)  # warm
        started = time.perf_counter()
        proposer.propose_batch(requests, options=options, batch_size=batch, image_batch_size=batch)
        sync(cuda)
        return len(requests) / (time.perf_counter() - started)

    single = [ProposeRequest(image, Task.detection, "person") for image in images]
    five = [ProposeRequest(image, Task.detection, label) for image in images for label in LABELS[:5]]
    single_rates = {b: rate(single, b) for b in batch_sizes}
    five_rates = {b: rate(five, b) for b in batch_sizes}
    best_single = max(single_rates, key=lambda b: single_rates[b])
    best_five = max(five_rates, key=lambda b: five_rates[b])
    return {
        "cache": proposer.cache_mode(options),
        "dtype": str(proposer.model.dtype).removeprefix("torch."),
        "warmup_s": round(warmup, 3),
        "latency_s": round(latency, 4),
        "peak_memory_gb_batch_1": round(peak, 2) if peak is not None else None,
        "one_prompt": {
            "images_per_s": round(single_rates[best_single], 2),
            "batch_size": best_single,
            "by_batch_size": {b: round(r, 2) for b, r in single_rates.items()},
        },
        "five_prompts": {
            "prompts_per_s": round(five_rates[best_five], 2),
            "images_per_s": round(five_rates[best_five] / 5, 2),
            "batch_size": best_five,
            "by_batch_size": {b: round(r, 2) for b, r in five_rates.items()},
        },
    }


def many_labels(
    proposer: Proposer, images: list[Image.Image], batch: int, options: GenerationOptions, rounds: int
) -> dict[str, object]:
    """prompts/s with 1, 5 and 20 labels per image, each image's prefix shared by its prompts (within the call) or
    not at all, and the ratio on/off. The two alternate, best of `rounds` each, so that a busy machine's slow
    spells fall on both alike."""
    cuda = proposer.device.type == "cuda"
    variants = {"prefix_on": 0, "prefix_off": None}  # prefix_cache_bytes: shared within a call / never
    proposers = {name: variant(proposer, size) for name, size in variants.items()}
    figures: dict[str, object] = {"batch_size": batch, "images": len(images), "rounds": rounds}
    for count in LABELS_PER_IMAGE:
        requests = [ProposeRequest(image, Task.detection, label) for image in images for label in LABELS[:count]]
        for engine in proposers.values():  # warm: the batch size's first call (and its compile, on a GPU)
            engine.propose_batch(requests[:batch], options=options, batch_size=batch, image_batch_size=batch)
        best = dict.fromkeys(proposers, 0.0)
        for turn in range(rounds):
            for name in list(proposers)[:: 1 if turn % 2 == 0 else -1]:
                sync(cuda)
                started = time.perf_counter()
                proposers[name].propose_batch(requests, options=options, batch_size=batch, image_batch_size=batch)
                sync(cuda)
                best[name] = max(best[name], len(requests) / (time.perf_counter() - started))
        figures[f"{count}_labels"] = {
            "prompts_per_s_prefix_on": round(best["prefix_on"], 2),
            "prompts_per_s_prefix_off": round(best["prefix_off"], 2),
            "ratio_on_off": round(best["prefix_on"] / best["prefix_off"], 2),
        }
    return figures


def desktop(proposer: Proposer, image: Image.Image, options: GenerationOptions, repeats: int) -> dict[str, object]:
    """One image, five successive questions, one call each (the desktop app, or an open task in Label Studio):
    seconds to each answer, with the cross-call prefix cache and without prefix reuse; each repeat asks about an
    image no earlier call has seen, the two alternate, and each figure is the median over the repeats."""
    cuda = proposer.device.type == "cuda"
    variants = {"prefix_cache": DEFAULT_PREFIX_CACHE_BYTES, "no_prefix": None}
    engines = {name: variant(proposer, size) for name, size in variants.items()}
    times: dict[str, list[list[float]]] = {name: [[] for _ in DESKTOP_QUESTIONS] for name in engines}
    for engine in engines.values():
        engine.propose(image, Task.detection, "warm-up", options=options)  # not one of the measured images
    for repeat in range(repeats):
        fresh = random_image(np.random.default_rng(1000 + repeat))
        for name in list(engines)[:: 1 if repeat % 2 == 0 else -1]:
            for i, (task, query, box) in enumerate(DESKTOP_QUESTIONS):
                sync(cuda)
                started = time.perf_counter()
                engines[name].propose(fresh, task, query, box, options=options)
                sync(cuda)
                times[name][i].append(time.perf_counter() - started)
    figures: dict[str, object] = {
        "questions": [f"[{task.value}] {query or ''}".strip() for task, query, _ in DESKTOP_QUESTIONS]
    }
    medians = {name: [statistics.median(t) for t in per_question] for name, per_question in times.items()}
    for name, seconds in medians.items():
        figures[f"seconds_{name}"] = [round(t, 4) for t in seconds]
    figures["ratio_questions_2_to_5"] = round(sum(medians["no_prefix"][1:]) / sum(medians["prefix_cache"][1:]), 2)
    lru = engines["prefix_cache"].prefix.lru  # type: ignore[union-attr]
    figures["prefix_mb_per_image"] = round(lru.bytes / len(lru) / 1e6, 2)  # what each cached image holds
    return figures


def random_image(rng: np.random.Generator) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))


def variant(proposer: Proposer, prefix_cache_bytes: int | None) -> Proposer:
    """The same model and processor with another prefix setting."""
    return Proposer(
        proposer.model, proposer.processor, model_version=proposer.model_version, prefix_cache_bytes=prefix_cache_bytes
    )


def median_time(run: Callable[[], object], repeats: int) -> float:
    cuda = torch.cuda.is_available()
    times = []
    for _ in range(repeats):
        sync(cuda)
        started = time.perf_counter()
        run()
        sync(cuda)
        times.append(time.perf_counter() - started)
    return round(statistics.median(times), 4)


def sync(cuda: bool) -> None:
    if cuda:
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
