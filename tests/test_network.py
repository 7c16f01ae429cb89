"""Architecture rules of the official MiniGPT-v2 (EVA ViT-g/14, ln_vision, 4-token grouping, projection, LLaMA),
each checked against a reference computed here from the rule as stated, not from our modules."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from model.network import EvaVisionConfig, EvaVisionModel, interpolate_pos_embed, merge_visual_tokens
from model.network.eva_vit import Attention


def cubic_weights(t: float, a: float = -0.75) -> list[float]:
    """Keys' cubic convolution weights for the 4 taps around a sample point (PyTorch/OpenCV use a = -0.75)."""

    def w(x: float) -> float:
        x = abs(x)
        if x <= 1:
            return (a + 2) * x**3 - (a + 3) * x**2 + 1
        if x < 2:
            return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
        return 0.0

    return [w(1 + t), w(t), w(1 - t), w(2 - t)]


def bicubic_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """Resampling matrix for align_corners=False with edge clamping: out = M @ in."""
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        src = (i + 0.5) * n_in / n_out - 0.5
        base = math.floor(src)
        for tap, weight in zip(range(base - 1, base + 3), cubic_weights(src - base), strict=True):
            m[i, min(max(tap, 0), n_in - 1)] += weight
    return m


def test_pos_embed_interpolation_matches_separable_bicubic_reference() -> None:
    torch.manual_seed(0)
    old, new, channels = 16, 32, 5
    pos = torch.randn(1, 1 + old * old, channels)
    out = interpolate_pos_embed(pos, new)

    assert out.shape == (1, 1 + new * new, channels)
    assert torch.equal(out[0, 0], pos[0, 0]), "the CLS position must be kept unchanged"
    m = bicubic_matrix(old, new)
    grid = pos[0, 1:].double().reshape(old, old, channels)  # row-major: token r*16+c is (row r, col c)
    expected = torch.einsum("ir,rcz,jc->ijz", m, grid, m).reshape(new * new, channels)
    torch.testing.assert_close(out[0, 1:].double(), expected, atol=1e-5, rtol=1e-5)


def test_pos_embed_same_grid_is_untouched() -> None:
    pos = torch.randn(1, 1 + 16, 3)
    assert interpolate_pos_embed(pos, 4) is pos


def test_merge_groups_four_horizontally_adjacent_patches_not_2x2() -> None:
    grid, channels = 32, 3
    # Each patch token carries its own (row, col) so the grouping is visible.
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    tokens = torch.stack([rows, cols, rows * grid + cols], dim=-1).reshape(1, grid * grid, channels).float()
    merged = merge_visual_tokens(tokens, 4)

    assert merged.shape == (1, 256, 4 * channels)
    for k in (0, 1, 7, 8, 100, 255):
        strip = merged[0, k].reshape(4, channels)
        expected_row, first_col = k // 8, 4 * (k % 8)
        assert strip[:, 0].tolist() == [expected_row] * 4, "all four patches come from one row"
        assert strip[:, 1].tolist() == [first_col + j for j in range(4)], "columns 4·(k mod 8) … +3, in order"


def _tiny_eva(seed: int = 0) -> EvaVisionModel:
    torch.manual_seed(seed)
    config = EvaVisionConfig(
        image_size=32,
        pretrain_image_size=32,
        patch_size=8,
        hidden_size=24,
        num_hidden_layers=2,
        num_attention_heads=3,
        intermediate_size=40,
    )
    model = EvaVisionModel(config).eval()
    with torch.no_grad():  # non-trivial biases and norms so every rule is visible
        for name, param in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                param.copy_(1 + 0.3 * torch.randn_like(param))
            elif name.endswith(("bias", "q_bias", "v_bias")):
                param.copy_(0.5 * torch.randn_like(param))
    return model


def reference_attention(attn: Attention, x: torch.Tensor, heads: int) -> torch.Tensor:
    """Official EVA attention: one qkv matmul without bias; q gets q_bias, k no bias, v gets v_bias; scale
    head_dim^-0.5."""
    dim = x.shape[-1]
    w_q, w_k, w_v = attn.qkv.weight.split(dim)
    q = x @ w_q.T + attn.q_bias
    k = x @ w_k.T
    v = x @ w_v.T + attn.v_bias
    head = dim // heads

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(t.shape[0], t.shape[1], heads, head).transpose(1, 2)

    weights = torch.softmax(split(q) @ split(k).transpose(-1, -2) * head**-0.5, dim=-1)
    out = (weights @ split(v)).transpose(1, 2).reshape(x.shape)
    return out @ attn.proj.weight.T + attn.proj.bias


def test_attention_uses_q_and_v_bias_and_no_k_bias() -> None:
    model = _tiny_eva()
    attn = model.blocks[0].attn
    x = torch.randn(2, 5, 24)
    torch.testing.assert_close(attn(x), reference_attention(attn, x, heads=3), atol=1e-5, rtol=1e-5)
    assert not any("k_bias" in name for name, _ in model.named_parameters()), "the k bias is fixed at zero"
    with torch.no_grad():
        attn.v_bias.zero_()
    assert not torch.allclose(attn(x), reference_attention(_tiny_eva().blocks[0].attn, x, heads=3)), (
        "v_bias must change the output"
    )


def test_vision_tower_is_prenorm_blocks_without_final_norm() -> None:
    model = _tiny_eva()
    pixels = torch.randn(2, 3, 32, 32)
    c = model.config
    # Reference: patchify by hand (conv with stride = kernel is a matmul on flattened patches), CLS first.
    p = c.patch_size
    patches = pixels.unfold(2, p, p).unfold(3, p, p)  # [B, 3, g, g, p, p]
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(2, (32 // p) ** 2, 3 * p * p)
    x = patches @ model.patch_embed.proj.weight.reshape(c.hidden_size, -1).T + model.patch_embed.proj.bias
    x = torch.cat([model.cls_token.expand(2, -1, -1), x], dim=1) + model.pos_embed
    for block in model.blocks:
        h = F.layer_norm(x, (c.hidden_size,), block.norm1.weight, block.norm1.bias, eps=1e-6)
        x = x + reference_attention(block.attn, h, heads=c.num_attention_heads)
        h = F.layer_norm(x, (c.hidden_size,), block.norm2.weight, block.norm2.bias, eps=1e-6)
        x = x + block.mlp.fc2(F.gelu(block.mlp.fc1(h), approximate="none"))
    with torch.no_grad():
        torch.testing.assert_close(model(pixels), x, atol=1e-4, rtol=1e-4)  # raw residual stream: no final norm


def test_image_features_apply_parameter_free_ln_vision_then_1x4_merge_then_projection(official_model) -> None:
    model, _ = official_model
    pixels = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        hidden = model.vision_model(pixels)
        mean = hidden.mean(-1, keepdim=True)
        var = hidden.var(-1, keepdim=True, unbiased=False)
        normed = (hidden - mean) / torch.sqrt(var + 1e-5)  # ln_vision: unit scale, zero shift, eps 1e-5
        patches = normed[0, 1:]  # CLS dropped
        grid = round(patches.shape[0] ** 0.5)
        strips = [
            torch.cat([patches[row * grid + col + j] for j in range(4)])
            for row in range(grid)
            for col in range(0, grid, 4)
        ]
        expected = torch.stack(strips) @ model.llama_proj.weight.T + model.llama_proj.bias
        torch.testing.assert_close(model.get_image_features(pixels)[0], expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_forward_runs_in_each_precision_on_cpu(official_model, dtype: torch.dtype) -> None:
    from model.weights.official import cast_model

    model, processor = official_model
    ids, mask = processor.pad_left([processor.prompt_ids("[refer] the red circle")])
    pixels = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        reference = model(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
        low = cast_model(_copy(model), dtype)
        logits = low(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits.float()
    assert low.vision_model.blocks[0].norm1.weight.dtype == torch.float32, "LayerNorms stay fp32, as official"
    assert low.language_model.model.layers[0].self_attn.q_proj.weight.dtype == dtype
    assert torch.isfinite(logits).all()
    tolerance = 0 if dtype == torch.float32 else 0.1
    assert (logits - reference).abs().max() <= tolerance * max(1.0, reference.abs().max().item())


def _copy(model):
    import copy

    return copy.deepcopy(model)


def test_default_config_builds_the_official_full_size_shapes() -> None:
    from model.network import MiniGPTv2Config, MiniGPTv2ForConditionalGeneration

    config = MiniGPTv2Config()
    with torch.device("meta"):  # shapes only, no memory
        model = MiniGPTv2ForConditionalGeneration(config)
    vision = model.vision_model
    assert len(vision.blocks) == 39 and vision.pos_embed.shape == (1, 1025, 1408)
    assert vision.blocks[0].attn.qkv.weight.shape == (4224, 1408) and vision.blocks[0].attn.qkv.bias is None
    assert vision.blocks[0].mlp.fc1.weight.shape == (6144, 1408) and vision.blocks[0].attn.num_heads == 16
    assert vision.patch_embed.proj.weight.shape == (1408, 3, 14, 14)
    assert model.llama_proj.weight.shape == (4096, 5632) and model.llama_proj.bias.shape == (4096,)
    llama = model.language_model
    assert len(llama.model.layers) == 32 and llama.lm_head.weight.shape == (32000, 4096)
    assert config.text_config.rms_norm_eps == 1e-5 and config.image_seq_length == 256
    vision_params = sum(p.numel() for p in vision.parameters())
    assert 0.98e9 < vision_params < 1.0e9  # ≈0.99 B: 39 blocks of 25.25 M plus the embeddings
