"""EVA ViT-g/14 as used by BLIP-2 and MiniGPT-v2 (the official MiniGPT-4 repository, minigpt4/models/eva_vit.py).

Module and parameter names follow the official `eva_vit_g.pth` keys (`blocks.{i}.attn.qkv.weight`, ...), so loading
the official file is a plain key copy plus the position-embedding interpolation below.

Numerics follow the official fp16-autocast run: the residual stream and every LayerNorm stay in fp32, while the
linear layers and attention run in the weights' dtype. In fp32 this is an ordinary ViT.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

from .configuration import EvaVisionConfig


def interpolate_pos_embed(pos_embed: torch.Tensor, grid_size: int) -> torch.Tensor:
    """Resize [1, 1 + n*n, C] position embeddings to [1, 1 + grid_size**2, C].

    The CLS position is kept unchanged; the n x n patch grid is resized bicubically (align_corners=False) in fp32 and
    flattened row-major, exactly as the official loader does.
    """
    cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]
    old = round(patch_pos.shape[1] ** 0.5)
    if old * old != patch_pos.shape[1]:
        raise ValueError(f"position embeddings hold {patch_pos.shape[1]} patch positions, not a square grid")
    if old == grid_size:
        return pos_embed
    channels = patch_pos.shape[-1]
    grid = patch_pos.float().reshape(1, old, old, channels).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(grid_size, grid_size), mode="bicubic", align_corners=False)
    patch_pos = grid.permute(0, 2, 3, 1).reshape(1, grid_size * grid_size, channels)
    return torch.cat([cls_pos.float(), patch_pos], dim=1).to(pos_embed.dtype)


class Fp32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 whatever the parameter dtype; returns fp32 (the residual stream's dtype)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps)


class PatchEmbed(nn.Module):
    def __init__(self, config: EvaVisionConfig):
        super().__init__()
        self.proj = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.proj(pixel_values.to(self.proj.weight.dtype))  # [B, C, g, g]
        return x.flatten(2).transpose(1, 2)  # raster order: row by row


class Attention(nn.Module):
    """One fused qkv projection without bias; learned q and v biases, and a k bias fixed at zero."""

    def __init__(self, config: EvaVisionConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        dim = config.hidden_size
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        weight = self.qkv.weight
        bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias]).to(weight.dtype)
        qkv = F.linear(x.to(weight.dtype), weight, bias)
        qkv = qkv.reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # scale = head_dim ** -0.5
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class Mlp(nn.Module):
    def __init__(self, config: EvaVisionConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x.to(self.fc1.weight.dtype))))  # exact (erf) GELU


class Block(nn.Module):
    """Pre-norm transformer block without layer scale or drop path."""

    def __init__(self, config: EvaVisionConfig):
        super().__init__()
        self.norm1 = Fp32LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = Attention(config)
        self.norm2 = Fp32LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = Mlp(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x)).float()
        return x + self.mlp(self.norm2(x)).float()


class EvaPreTrainedModel(PreTrainedModel):
    config: EvaVisionConfig
    config_class = EvaVisionConfig
    base_model_prefix = "vision_model"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["Block"]
    _supports_sdpa = True
    # The official run keeps these in fp32 even when the linear weights are half precision.
    _keep_in_fp32_modules_strict = ["norm1", "norm2", "pos_embed", "cls_token", "q_bias", "v_bias"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, Attention):
            nn.init.zeros_(module.q_bias)
            nn.init.zeros_(module.v_bias)
        elif isinstance(module, EvaVisionModel):
            nn.init.trunc_normal_(module.cls_token, std=std)
            nn.init.trunc_normal_(module.pos_embed, std=std)


class EvaVisionModel(EvaPreTrainedModel):
    """Returns the raw residual stream after the last block, [B, 1 + patches, C], CLS first, in fp32."""

    def __init__(self, config: EvaVisionConfig):
        super().__init__(config)
        self.patch_embed = PatchEmbed(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_patches + 1, config.hidden_size))
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_hidden_layers))
        self.post_init()

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embed(pixel_values).float()
        cls = self.cls_token.float().expand(patches.shape[0], -1, -1)
        x = torch.cat([cls, patches], dim=1) + self.pos_embed.float()
        for block in self.blocks:
            x = block(x)
        return x
