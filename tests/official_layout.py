"""Write tiny checkpoints in the official MiniGPT-v2 three-file layout, with the official key names.

Key names and shapes are written out here from the official code (minigpt4/models/eva_vit.py, the peft-0.2 LoRA
names in the MiniGPT-v2 checkpoint's ``model`` dict), independently of our module names, so the loader is checked
against the official layout rather than against itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from model.synthetic.tiny import build_tiny_tokenizer

# EVA: width 176 = 2 heads of the official head size 88; 4x4 position grid at 56 px, 3 blocks in the file (2 run).
EVA_WIDTH, EVA_PATCH, EVA_GRID, EVA_FILE_BLOCKS, EVA_MLP = 176, 14, 4, 3, 768
IMAGE_SIZE = 112  # 8x8 patches → 64 patch tokens → 16 LLM image tokens
LLAMA_HIDDEN, LLAMA_LAYERS, LORA_RANK, LORA_ALPHA = 64, 2, 8, 16


@dataclass
class OfficialFiles:
    eva: Path
    llama_dir: Path
    minigptv2: Path


def eva_state(generator: torch.Generator) -> dict[str, torch.Tensor]:
    def rand(*shape: int, scale: float = 0.05) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * scale

    c = EVA_WIDTH
    state = {
        "cls_token": rand(1, 1, c, scale=0.5),
        "pos_embed": rand(1, 1 + EVA_GRID**2, c, scale=0.5),
        "patch_embed.proj.weight": rand(c, 3, EVA_PATCH, EVA_PATCH),
        "patch_embed.proj.bias": rand(c),
    }
    for i in range(EVA_FILE_BLOCKS):
        p = f"blocks.{i}."
        state |= {
            p + "norm1.weight": 1 + rand(c, scale=0.2),
            p + "norm1.bias": rand(c),
            p + "attn.q_bias": rand(c, scale=0.5),
            p + "attn.v_bias": rand(c, scale=0.5),
            p + "attn.qkv.weight": rand(3 * c, c, scale=0.1),
            p + "attn.proj.weight": rand(c, c),
            p + "attn.proj.bias": rand(c),
            p + "norm2.weight": 1 + rand(c, scale=0.2),
            p + "norm2.bias": rand(c),
            p + "mlp.fc1.weight": rand(EVA_MLP, c),
            p + "mlp.fc1.bias": rand(EVA_MLP),
            p + "mlp.fc2.weight": rand(c, EVA_MLP),
            p + "mlp.fc2.bias": rand(c),
        }
    return state


def minigptv2_state(
    generator: torch.Generator, *, default_names: bool = False, with_inv_freq: bool = True
) -> dict[str, torch.Tensor]:
    h, r = LLAMA_HIDDEN, LORA_RANK
    state = {
        "llama_proj.weight": torch.randn(h, 4 * EVA_WIDTH, generator=generator) * 0.05,
        "llama_proj.bias": torch.randn(h, generator=generator) * 0.05,
    }
    infix = ".default" if default_names else ""
    for layer in range(LLAMA_LAYERS):
        base = f"llama_model.base_model.model.model.layers.{layer}.self_attn."
        for proj in ("q_proj", "v_proj"):
            state[f"{base}{proj}.lora_A{infix}.weight"] = torch.randn(r, h, generator=generator) * 0.3
            state[f"{base}{proj}.lora_B{infix}.weight"] = torch.randn(h, r, generator=generator) * 0.3
        if with_inv_freq:
            state[f"{base}rotary_emb.inv_freq"] = 1.0 / (10000 ** (torch.arange(0, 16, 2).float() / 16))
    return state


def write_llama(folder: Path, seed: int) -> None:
    tokenizer = build_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=LLAMA_HIDDEN,
        intermediate_size=172,
        num_hidden_layers=LLAMA_LAYERS,
        num_attention_heads=4,
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def write_official_layout(root: Path, *, seed: int = 0, default_names: bool = False) -> OfficialFiles:
    root.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    files = OfficialFiles(root / "eva_vit_g.pth", root / "Llama-2-7b-chat-hf", root / "minigptv2_checkpoint.pth")
    torch.save(eva_state(generator), files.eva)
    write_llama(files.llama_dir, seed)
    model_state = minigptv2_state(generator, default_names=default_names)
    checkpoint = {
        "model": model_state,
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-5}]},
        "config": {"model": {"arch": "minigpt_v2", "lora_r": LORA_RANK, "lora_alpha": LORA_ALPHA}},
        "scaler": {"scale": 65536.0},
        "epoch": 3,
    }
    torch.save(checkpoint, files.minigptv2)
    return files
