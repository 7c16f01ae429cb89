#!/usr/bin/env bash
# Issue 18 item 3: every GPU measurement in one script, for a machine with one CUDA GPU (>= 40 GB for the full-size
# fp32 build of the random weights; an H100/H200 fits everything). Writes JSON files and logs under $OUT (default
# ./gpu-check-out) and never stops at the first failure: each step's exit status goes to $OUT/status.txt, so one
# broken step still leaves the others' figures. Budget: about 8-10 minutes on an H100-class GPU.
#
#   bash bench/gpu_check.sh            # all steps
#   STEPS="engine compile" bash bench/gpu_check.sh
#
# Steps:
#   engine    bench/engine.py at full size (random weights, EVA-g 448 + LLaMA-2-7B shapes, bf16): batch-1 latency with
#             40 new tokens, images/s at the best batch size, prompts/s at 5 labels per image, the many-labels case
#             (1/5/20 labels, prefix on/off) and the desktop pattern, peak memory, ratio to the official-style loop.
#   compile   the compiled path compiles in its warm-up and never again in measured calls (dynamo's graph count),
#             and cache=compiled gives the dynamic path's tokens at full size in bf16, with the shared prefix and
#             without; else the first divergence and the logit margin there.
#   quant     bench/engine.py with 8-bit and 4-bit language-model weights (bitsandbytes): memory and speed.
#   finetune  one LoRA fine-tuning step at full size in bf16, frozen tower: peak memory and step time.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-check-out}"
STEPS="${STEPS:-engine compile quant finetune}"
PY="${PYTHON:-python}"
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
{
  date -u +%FT%TZ
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  "$PY" -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)'
} > "$OUT/versions.txt" 2>&1

step() {  # step NAME COMMAND...: run, keep its output, record its status
  local name=$1; shift
  echo "== $name: $*" >&2
  "$@" > "$OUT/$name.json" 2> "$OUT/$name.log"
  echo "$name $?" >> "$OUT/status.txt"
}

for s in $STEPS; do case $s in
engine)
  step engine "$PY" bench/engine.py --new-tokens 40 ;;
compile)
  step compile "$PY" - <<'PY'
"""Compiled vs dynamic at full size in bf16: same tokens (or the first divergence and its logit margin), and no
compilation after the warm-up."""
import json, warnings
import numpy as np, torch, torch._dynamo
from PIL import Image
warnings.filterwarnings("ignore")
from model.annotations import Task
from model.network import MiniGPTv2Config, MiniGPTv2ForConditionalGeneration
from model.processing import MiniGPTv2Processor
from model.proposer import GenerationOptions, Proposer, ProposeRequest
from model.synthetic.tiny import build_tiny_tokenizer
from bench.engine import cast_keeping_fp32_parts

tok = build_tiny_tokenizer()
config = MiniGPTv2Config()
torch.manual_seed(0)
with torch.device("cuda"):
    model = MiniGPTv2ForConditionalGeneration(config).eval()
cast_keeping_fp32_parts(model, torch.bfloat16)
processor = MiniGPTv2Processor.for_model(tok, config)
rng = np.random.default_rng(0)
images = [Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)) for _ in range(4)]
labels = ("person", "car", "dog", "cat", "chair")
requests = [ProposeRequest(im, Task.detection, l) for im in images for l in labels]
report = {}
for name, prefix in (("prefix", 0), ("no_prefix", None)):
    p = Proposer(model, processor, prefix_cache_bytes=prefix)
    dyn_opts = GenerationOptions(max_new_tokens=40, min_new_tokens=40, cache="dynamic")
    dynamic = p.propose_batch(requests, options=dyn_opts, batch_size=8)
    torch._dynamo.reset()
    opts = GenerationOptions(max_new_tokens=40, min_new_tokens=40, cache="compiled")
    warm_s = p.warm_up((1, 8), opts)
    warmed = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    compiled = p.propose_batch(requests, options=opts, batch_size=8)
    alone = p.propose_batch(requests[:1], options=opts, batch_size=8)
    again = p.propose_batch(requests[::-1], options=opts, batch_size=8)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    same = [a.text == b.text for a, b in zip(compiled, dynamic)]
    entry = {"warm_up_s": round(warm_s, 2), "graphs_after_warm_up": warmed, "graphs_after_measured": graphs,
             "recompiled": graphs != warmed, "same_text": sum(same), "of": len(same),
             "lone_same": alone[0].text == dynamic[0].text,
             "reversed_same": [r.text for r in again] == [r.text for r in dynamic][::-1]}
    if not all(same):  # the first divergence: re-run that prompt alone in both modes with logits
        i = same.index(False)
        ids = processor.prompt_ids(compiled[i].prompt)
        with torch.inference_mode():
            feats = model.get_image_features(processor.preprocess([images[i // 5]]).cuda())
            emb = model.embed_inputs(torch.tensor([ids], device="cuda"), feats)
            out = {}
            for mode, kw in (("dynamic", {}), ("compiled", p._cache_kwargs("compiled", len(ids) + 40, None))):
                g = model.generate(inputs_embeds=emb, attention_mask=torch.ones(1, len(ids), dtype=torch.long, device="cuda"),
                                   max_new_tokens=40, min_new_tokens=40, do_sample=False, return_dict_in_generate=True,
                                   output_logits=True, pad_token_id=processor.pad_token_id, **kw)
                out[mode] = g
            a, b = out["dynamic"].sequences[0].tolist(), out["compiled"].sequences[0].tolist()
            k = next((j for j, (x, y) in enumerate(zip(a, b)) if x != y), None)
            if k is not None:
                top = out["dynamic"].logits[k][0].float().topk(2).values
                entry["first_divergence"] = {"prompt": i, "token": k, "dynamic_top2_margin": float(top[0] - top[1])}
    report[name] = entry
report["peak_memory_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
print(json.dumps(report, indent=2))
PY
  ;;
quant)
  "$PY" -c 'import bitsandbytes' 2>/dev/null || "$PY" -m pip install -q 'bitsandbytes>=0.43' >> "$OUT/quant.log" 2>&1
  step quant_8bit "$PY" bench/engine.py --quantize 8bit --images 64 --batch-sizes 1,8,32 --repeats 3
  step quant_4bit "$PY" bench/engine.py --quantize 4bit --images 64 --batch-sizes 1,8,32 --repeats 3 ;;
finetune)
  step finetune "$PY" - <<'PY'
"""One LoRA step at full size in bf16, frozen tower: peak memory and step time (3 steps; the last two timed)."""
import json, tempfile, time, warnings
from pathlib import Path
import torch
warnings.filterwarnings("ignore")
from model.coco import read_coco
from model.network import MiniGPTv2Config, MiniGPTv2ForConditionalGeneration
from model.processing import MiniGPTv2Processor
from model.synthetic.shapes import make_shapes
from model.synthetic.tiny import build_tiny_tokenizer
from model.training.config import FinetuneConfig
from model.training.trainer import Trainer

work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
tok = build_tiny_tokenizer()
config = MiniGPTv2Config()
torch.manual_seed(0)
with torch.device("cuda"):
    model = MiniGPTv2ForConditionalGeneration(config)
model.to(torch.bfloat16).save_pretrained(work / "base")
MiniGPTv2Processor.for_model(tok, config).save_pretrained(work / "base")
del model
torch.cuda.empty_cache()
make_shapes(work / "shapes", images=16, seed=0)
data = read_coco(work / "shapes" / "annotations.json")
stamps = []
torch.cuda.reset_peak_memory_stats()
cfg = FinetuneConfig(max_steps=3, batch_size=4, warmup_steps=0, precision="bf16", save_every=1000)
trainer = Trainer(data, work / "base", work / "out", cfg, device="cuda", progress=False,
                  on_step=lambda step, loss: stamps.append((time.perf_counter(), loss)))
trainer.run()
times = [b[0] - a[0] for a, b in zip(stamps, stamps[1:])]
print(json.dumps({"batch_size": 4, "lora_r": cfg.lora_r, "step_s": [round(t, 3) for t in times],
                  "losses": [round(l, 4) for _, l in stamps],
                  "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2)}, indent=2))
PY
  ;;
*) echo "unknown step $s" >&2 ;;
esac; done
cat "$OUT/status.txt"
