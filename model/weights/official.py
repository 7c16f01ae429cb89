"""Load the official three-file MiniGPT-v2 layout and convert it to one transformers folder (README, "Using the
official MiniGPT-v2 weights").

The files:
- ``eva_vit_g.pth``: the BLIP-2 EVA ViT-g/14 state dict. It holds one more block than the model uses (40, of which
  39 run); the last block is deliberately ignored, as in BLIP-2. Position embeddings are for 224 px and are
  interpolated to the model's resolution.
- a LLaMA-2-chat folder in Hugging Face format (config, weights, tokenizer).
- the MiniGPT-v2 training checkpoint: ``ckpt["model"]`` holds ``llama_proj.*`` and LoRA ``lora_A``/``lora_B`` on
  q_proj/v_proj (peft 0.2 names, or later names with ``.default.``), plus rotary ``inv_freq`` buffers.

Every key is accounted for: the official code loads with ``strict=False``, which silently drops LoRA weights whose
names do not match (a known cause of "[refer] answers with a paragraph"). Here a stray or missing key is an error that
names it. Only rotary ``inv_freq`` buffers (recomputed by transformers) and the unused last EVA block are skipped.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from ..errors import CheckpointError
from ..network import EvaVisionConfig, EvaVisionModel, MiniGPTv2Config, MiniGPTv2ForConditionalGeneration
from ..network.eva_vit import interpolate_pos_embed
from ..processing import MiniGPTv2Processor
from ..tokenizer import load_tokenizer

OFFICIAL_HEAD_DIM = 88  # EVA ViT-g: 1408 channels / 16 heads
DEFAULT_LORA_ALPHA = 16.0

_LORA_KEY = re.compile(
    r"^llama_model\.base_model\.model\.model\.layers\.(\d+)\.self_attn\.(q_proj|v_proj)\."
    r"lora_(A|B)(?:\.default)?\.weight$"
)
_INV_FREQ_KEY = re.compile(r"(^|\.)rotary_emb\.inv_freq$")
_EVA_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.")


def read_state_file(path: str | os.PathLike, *, allow_pickle: bool = False) -> dict:
    """``torch.load`` with ``weights_only=True``; pickled objects only with an explicit opt-in."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=not allow_pickle, mmap=_can_mmap(path))
    except pickle.UnpicklingError as err:
        needed = _GLOBAL_NEEDED.search(str(err))
        if needed is None:  # not a pickled object problem: the bytes are not a checkpoint at all
            raise CheckpointError(f"cannot read checkpoint {path}: it is corrupt or not a PyTorch .pth file") from err
        raise CheckpointError(
            f"{path} holds a Python object ({needed.group(1)}) that needs pickle to load; pickle can run code, "
            "so only if you trust the file, retry with --allow-pickle"
        ) from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err}; is it a complete PyTorch .pth file?") from err


# torch's two wordings: a global it does not know ("Unsupported global: GLOBAL x.y") and one from a module it
# blocks outright ("unsupported GLOBAL posix.system whose module posix is blocked"). Both need pickle to load.
_GLOBAL_NEEDED = re.compile(r"[Uu]nsupported (?:global: )?GLOBAL ([\w.]+)")


def _can_mmap(path: Path) -> bool:
    # mmap works for the zip format only; legacy (pre-1.6) files fall back to a plain read.
    with path.open("rb") as handle:
        return handle.read(4) == b"PK\x03\x04"


def _fail_on_keys(source: str, stray: list[str], missing: list[str]) -> None:
    problems = []
    if stray:
        problems.append(f"unexpected key(s) {_few(stray)}")
    if missing:
        problems.append(f"missing key(s) {_few(missing)}")
    if problems:
        raise CheckpointError(
            f"{source}: {'; '.join(problems)}; this is not the official file for this architecture, "
            "or it was saved by a different tool"
        )


def _few(keys: list[str], limit: int = 5) -> str:
    keys = sorted(keys)
    shown = ", ".join(repr(k) for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


# --- EVA ViT -------------------------------------------------------------------------------------------------------


def eva_config_from_state(state: Mapping[str, torch.Tensor], image_size: int = 448) -> EvaVisionConfig:
    """Infer the vision config from the official file's shapes; the last block in the file is the unused one."""
    try:
        hidden = state["cls_token"].shape[-1]
        patch_weight = state["patch_embed.proj.weight"]
        positions = state["pos_embed"].shape[1] - 1
        intermediate = state["blocks.0.mlp.fc1.weight"].shape[0]
    except KeyError as err:
        raise CheckpointError(f"EVA checkpoint lacks {err}; is this eva_vit_g.pth?") from err
    blocks = {int(m.group(1)) for k in state if (m := _EVA_BLOCK_KEY.match(k))}
    if hidden % OFFICIAL_HEAD_DIM:
        raise CheckpointError(
            f"EVA width {hidden} is not a multiple of the official head size {OFFICIAL_HEAD_DIM}; "
            "pass an explicit vision config"
        )
    grid = round(positions**0.5)
    patch = patch_weight.shape[-1]
    return EvaVisionConfig(
        image_size=image_size,
        pretrain_image_size=grid * patch,
        patch_size=patch,
        num_channels=patch_weight.shape[1],
        hidden_size=hidden,
        num_hidden_layers=max(blocks),  # blocks 0..max-1 run; block `max` is BLIP-2's dropped last layer
        num_attention_heads=hidden // OFFICIAL_HEAD_DIM,
        intermediate_size=intermediate,
    )


def load_eva_state(model: EvaVisionModel, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Copy the official EVA weights into `model`, interpolating position embeddings; strict about keys."""
    depth = model.config.num_hidden_layers
    expected = set(model.state_dict())
    used: dict[str, torch.Tensor] = {}
    unused_block: set[str] = set()
    stray = []
    for key, value in state.items():
        block = _EVA_BLOCK_KEY.match(key)
        if block and int(block.group(1)) == depth:
            unused_block.add(key[block.end() :])  # the deliberately unused last block
        elif key in expected:
            used[key] = value
        else:
            stray.append(key)
    missing = sorted(expected - set(used))
    if unused_block:  # it is skipped, but it must still be a whole block of the same shape as the others
        block_keys = {k[len("blocks.0.") :] for k in expected if k.startswith("blocks.0.")}
        stray += [f"blocks.{depth}.{k}" for k in sorted(unused_block - block_keys)]
        missing += [f"blocks.{depth}.{k}" for k in sorted(block_keys - unused_block)]
    _fail_on_keys(source, stray, missing)
    used["pos_embed"] = interpolate_pos_embed(used["pos_embed"].float(), model.config.grid_size)
    _load_exact(model, used, source)


def _load_exact(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    own = module.state_dict()
    for key, value in state.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise CheckpointError(
                f"{source}: {key!r} has shape {tuple(value.shape)}, the model expects {tuple(own[key].shape)}"
            )
    with torch.no_grad():
        for key, value in state.items():
            own[key].copy_(value.to(own[key].dtype))


# --- MiniGPT-v2 checkpoint -----------------------------------------------------------------------------------------


def split_minigptv2_state(
    state: Mapping[str, torch.Tensor], num_layers: int, source: str
) -> tuple[dict[str, torch.Tensor], dict[tuple[int, str], dict[str, torch.Tensor]]]:
    """→ (llama_proj weights, {(layer, "q_proj"|"v_proj"): {"A": ..., "B": ...}}), failing on any stray key."""
    projection: dict[str, torch.Tensor] = {}
    lora: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    stray = []
    for key, value in state.items():
        if key in ("llama_proj.weight", "llama_proj.bias"):
            projection[key.split(".", 1)[1]] = value
        elif (m := _LORA_KEY.match(key)) and int(m.group(1)) < num_layers:
            slot = lora.setdefault((int(m.group(1)), m.group(2)), {})
            if m.group(3) in slot:
                stray.append(key)  # both the peft-0.2 and the ".default." name for one weight
            slot[m.group(3)] = value
        elif not _INV_FREQ_KEY.search(key):
            stray.append(key)
    missing = [f"llama_proj.{name}" for name in ("weight", "bias") if name not in projection]
    for layer in range(num_layers):
        for proj in ("q_proj", "v_proj"):
            for part in ("A", "B"):
                if part not in lora.get((layer, proj), {}):
                    missing.append(
                        f"llama_model.base_model.model.model.layers.{layer}.self_attn.{proj}.lora_{part}.weight"
                    )
    _fail_on_keys(source, stray, missing)
    return projection, lora


def merge_lora(
    llama: LlamaForCausalLM,
    lora: Mapping[tuple[int, str], Mapping[str, torch.Tensor]],
    alpha: float,
    source: str,
) -> None:
    """W ← W + (alpha / r) · B @ A for every adapted q_proj/v_proj, computed in fp32."""
    layers = llama.model.layers
    with torch.no_grad():
        for (layer, proj), parts in sorted(lora.items()):
            linear: nn.Linear = getattr(layers[layer].self_attn, proj)
            a, b = parts["A"].float(), parts["B"].float()
            rank = a.shape[0]
            if a.shape[1] != linear.in_features or b.shape != (linear.out_features, rank):
                raise CheckpointError(
                    f"{source}: LoRA for layer {layer} {proj} has A {tuple(a.shape)} and B {tuple(b.shape)}, which "
                    f"do not fit a {linear.out_features}x{linear.in_features} projection; the MiniGPT-v2 file and "
                    "the LLaMA folder are from different model sizes"
                )
            delta = (alpha / rank) * (b @ a)
            linear.weight.copy_((linear.weight.float() + delta).to(linear.weight.dtype))


def _lora_alpha(checkpoint: Mapping) -> float:
    # The training config travels in the checkpoint as a plain dict; the official value is 16.
    config = checkpoint.get("config")
    model_cfg = config.get("model", {}) if isinstance(config, Mapping) else {}
    if not isinstance(model_cfg, Mapping):
        return DEFAULT_LORA_ALPHA
    return float(model_cfg.get("lora_alpha", DEFAULT_LORA_ALPHA))


# --- LLaMA ---------------------------------------------------------------------------------------------------------


def _llama_config(llama_dir: str | os.PathLike) -> LlamaConfig:
    path = Path(llama_dir)
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path} is not a Hugging Face LLaMA folder (no config.json); see README: fetch-official")
    try:
        return LlamaConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot read the LLaMA config in {path}: {err}") from err


def load_llama(llama_dir: str | os.PathLike, dtype: torch.dtype) -> LlamaForCausalLM:
    path = Path(llama_dir)
    _llama_config(path)
    try:
        llama, info = LlamaForCausalLM.from_pretrained(path, dtype=dtype, output_loading_info=True)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot load LLaMA from {path}: {err}") from err
    stray = [k for k in info.get("unexpected_keys", []) if not _INV_FREQ_KEY.search(k)]
    _fail_on_keys(str(path), stray, list(info.get("missing_keys", [])))
    if mismatched := info.get("mismatched_keys"):
        raise CheckpointError(f"{path}: shape mismatch for {_few([str(m) for m in mismatched])}")
    return llama


# --- whole model ---------------------------------------------------------------------------------------------------


def load_official(
    eva: str | os.PathLike,
    llama_dir: str | os.PathLike,
    minigptv2: str | os.PathLike,
    *,
    image_size: int = 448,
    vision_config: EvaVisionConfig | None = None,
    dtype: torch.dtype = torch.float32,
    allow_pickle: bool = False,
) -> tuple[MiniGPTv2ForConditionalGeneration, MiniGPTv2Processor]:
    """Build the model from the official files, LoRA merged, in eval mode."""
    eva_state = read_state_file(eva, allow_pickle=allow_pickle)
    if set(eva_state) == {"model"}:
        eva_state = eva_state["model"]
    checkpoint = read_state_file(minigptv2, allow_pickle=allow_pickle)
    if not isinstance(checkpoint, Mapping) or not isinstance(checkpoint.get("model"), Mapping):
        raise CheckpointError(f"{minigptv2} has no 'model' entry; is this a MiniGPT-v2 training checkpoint?")

    vision_config = vision_config or eva_config_from_state(eva_state, image_size)
    # Check the MiniGPT-v2 keys against the LLaMA config before the minutes-long LLaMA weight load.
    num_layers = _llama_config(llama_dir).num_hidden_layers
    projection, lora = split_minigptv2_state(checkpoint["model"], num_layers, str(minigptv2))
    # LLaMA loads straight in the target dtype (a 7B model in fp32 would need 28 GB); merge_lora upcasts one
    # projection at a time to fp32 for the merge.
    llama = load_llama(llama_dir, dtype=dtype)
    text_config = llama.config

    tokenizer = load_tokenizer(llama_dir)  # tokenizer.json, else built from tokenizer.model with score-ranked merges
    if tokenizer.unk_token_id is None:
        raise CheckpointError(f"the tokenizer in {llama_dir} has no <unk> token, which MiniGPT-v2 uses for images")
    config = MiniGPTv2Config(
        vision_config=vision_config, text_config=text_config, image_token_id=tokenizer.unk_token_id
    )
    with torch.device("meta"):  # skip random init of ~1B parameters that are overwritten right away
        model = MiniGPTv2ForConditionalGeneration(config)
    model.language_model = llama
    model.vision_model.to_empty(device="cpu").float()
    model.llama_proj.to_empty(device="cpu").float()
    load_eva_state(model.vision_model, eva_state, str(eva))
    _load_exact(model.llama_proj, projection, str(minigptv2))
    merge_lora(llama, lora, _lora_alpha(checkpoint), str(minigptv2))
    model.config.text_config = llama.config
    model = cast_model(model, dtype).eval()

    processor = MiniGPTv2Processor.for_model(tokenizer, config)
    return model, processor


def cast_model(model: MiniGPTv2ForConditionalGeneration, dtype: torch.dtype) -> MiniGPTv2ForConditionalGeneration:
    """Cast to `dtype`, keeping the parameters the official run keeps in fp32 (EVA LayerNorms, biases, embeddings)."""
    model.to(dtype)
    if dtype in (torch.float16, torch.bfloat16):
        keep = tuple(model._keep_in_fp32_modules_strict or ())
        for name, param in model.named_parameters():
            if any(part in keep for part in name.split(".")):
                param.data = param.data.float()
    return model


def convert(
    eva: str | os.PathLike,
    llama_dir: str | os.PathLike,
    minigptv2: str | os.PathLike,
    out: str | os.PathLike,
    *,
    image_size: int = 448,
    dtype: torch.dtype = torch.float16,
    allow_pickle: bool = False,
) -> Path:
    """Write one folder that `MiniGPTv2ForConditionalGeneration.from_pretrained` and `Proposer` load."""
    model, processor = load_official(
        eva, llama_dir, minigptv2, image_size=image_size, dtype=dtype, allow_pickle=allow_pickle
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
