"""Engine benchmark: the official-style loop against our `Proposer`, in one process, printed as JSON.

The model is the full-size architecture (EVA ViT-g/14 at 448 px + LLaMA-2-7B shapes) with random weights, so
nothing is downloaded; `--tiny` runs the same code with the tiny configuration on the CPU in seconds (CI keeps it
alive). Every answer is forced to exactly `--new-tokens` tokens (random weights would stop anywhere).

(a) official-style loop: fp16 weights, LoRA r=64 on q/v left unmerged (peft), HF `generate` on the prompt
    embeddings with the dynamic cache, one request at a time;
(b) our engine end to end (image → boxes): LoRA merged, bf16, static cache + torch.compile on a GPU, batched
    prefill, each image encoded once for all its prompts.

    python bench/engine.py            # full size, needs a CUDA GPU (building the random fp32 weights peaks near 32 GB)
    python bench/engine.py --tiny     # tiny, CPU
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

from model.annotations import Task
from model.network import MiniGPTv2Config, MiniGPTv2ForConditionalGeneration
from model.processing import MiniGPTv2Processor
from model.prompts import build_instruction
from model.proposer import GenerationOptions, Proposer, ProposeRequest
from model.synthetic.tiny import build_tiny_tokenizer, tiny_config

LABELS = ("person", "car", "dog", "cat", "chair")  # five label prompts per image, as a Label Studio project asks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny configuration on the CPU (seconds)")
    parser.add_argument("--new-tokens", type=int, default=40)
    parser.add_argument("--images", type=int, default=None, help="images per throughput run (default 256; tiny 8)")
    parser.add_argument("--batch-sizes", default=None, help="comma-separated (default 1,8,32,64,128; tiny 1,4)")
    parser.add_argument("--repeats", type=int, default=5, help="batch-1 latency: median of this many runs")
    parser.add_argument("--cache", default="auto", choices=["auto", "dynamic", "static", "compiled"])
    parser.add_argument("--quantize", choices=["8bit", "4bit"], default=None, help="engine with bitsandbytes weights")
    args = parser.parse_args()

    device = torch.device("cpu" if args.tiny else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("bench/engine.py: the full-size run needs a CUDA GPU; use --tiny on a CPU")
    n_images = args.images or (8 if args.tiny else 256)
    batch_sizes = [int(b) for b in (args.batch_sizes or ("1,4" if args.tiny else "1,8,32,64,128")).split(",")]
    warnings.filterwarnings("ignore")

    model, processor = build(args.tiny, device)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)) for _ in range(n_images)]
    report: dict[str, object] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "size": "tiny" if args.tiny else "full (EVA ViT-g/14 448 + LLaMA-2-7B shapes, random weights)",
        "new_tokens": args.new_tokens,
        "prompt_tokens": len(processor.prompt_ids(build_instruction(Task.detection, "person", None))),
    }

    official = official_loop_latency(model, processor, images[0], args)
    dtype = "fp32 (tiny, CPU)" if args.tiny else "fp16"
    report["official_loop"] = {"latency_s": official, "setup": f"{dtype}, peft LoRA r=64 q/v unmerged, dynamic cache"}

    model = model.merge_and_unload()  # what Proposer.from_pretrained does with a fine-tuned adapter
    engine_dtype = torch.float32 if args.tiny else torch.bfloat16
    cast_keeping_fp32_parts(model, engine_dtype)
    proposer = Proposer(model, processor, model_version="bench")
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
    print(json.dumps(report, indent=2))


def build(tiny: bool, device: torch.device) -> tuple[torch.nn.Module, MiniGPTv2Processor]:
    """The architecture with random weights in fp16 (fp32 when tiny), with unmerged LoRA r=64 on q/v."""
    from peft import LoraConfig, get_peft_model

    tokenizer = build_tiny_tokenizer()  # any LLaMA-style ids below the vocabulary size will do for timing
    config = tiny_config(len(tokenizer)) if tiny else MiniGPTv2Config()
    torch.manual_seed(0)
    with torch.device(device):
        model = MiniGPTv2ForConditionalGeneration(config).eval()
    model.to(torch.float32 if tiny else torch.float16)
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
    five = [ProposeRequest(image, Task.detection, label) for image in images for label in LABELS]
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
            "images_per_s": round(five_rates[best_five] / len(LABELS), 2),
            "batch_size": best_five,
            "by_batch_size": {b: round(r, 2) for b, r in five_rates.items()},
        },
    }


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
