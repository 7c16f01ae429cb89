"""Loading the official three-file layout (generated tiny, with the official key names) and converting it."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
import torch
from official_layout import IMAGE_SIZE, LORA_ALPHA, LORA_RANK, OfficialFiles, write_official_layout
from safetensors.torch import load_file
from transformers import LlamaForCausalLM

from model.errors import CheckpointError
from model.network import MiniGPTv2ForConditionalGeneration, interpolate_pos_embed
from model.weights.official import convert, load_official, read_state_file


def _logits(model, processor, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    ids, mask = processor.pad_left([processor.prompt_ids("[refer] give me the location of the red circle")])
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits


def _load(files: OfficialFiles):
    return load_official(files.eva, files.llama_dir, files.minigptv2, image_size=IMAGE_SIZE)


def _convert(files: OfficialFiles, out: Path, dtype: torch.dtype) -> Path:
    return convert(files.eva, files.llama_dir, files.minigptv2, out, image_size=IMAGE_SIZE, dtype=dtype)


def test_loaded_weights_follow_the_official_files(official_files: OfficialFiles, official_model) -> None:
    model, processor = official_model
    eva = torch.load(official_files.eva, weights_only=True)
    ckpt = torch.load(official_files.minigptv2, weights_only=True)["model"]
    base = LlamaForCausalLM.from_pretrained(official_files.llama_dir)

    # 39-of-40 rule at tiny size: the file holds 3 blocks, the model runs 2.
    assert len(model.vision_model.blocks) == 2
    assert torch.equal(model.vision_model.blocks[1].mlp.fc1.weight, eva["blocks.1.mlp.fc1.weight"])
    assert torch.equal(model.vision_model.pos_embed, interpolate_pos_embed(eva["pos_embed"], IMAGE_SIZE // 14))
    assert torch.equal(model.llama_proj.weight, ckpt["llama_proj.weight"])

    # LoRA merged as W + (alpha / r) · B @ A.
    prefix = "llama_model.base_model.model.model.layers.1.self_attn.v_proj."
    a, b = ckpt[prefix + "lora_A.weight"], ckpt[prefix + "lora_B.weight"]
    expected = base.model.layers[1].self_attn.v_proj.weight + (LORA_ALPHA / LORA_RANK) * b @ a
    torch.testing.assert_close(model.language_model.model.layers[1].self_attn.v_proj.weight, expected)
    untouched = model.language_model.model.layers[1].self_attn.k_proj.weight
    assert torch.equal(untouched, base.model.layers[1].self_attn.k_proj.weight), "only q_proj and v_proj adapt"
    assert processor.config.image_seq_length == model.config.image_seq_length == 16


def test_convert_round_trip_gives_identical_logits(official_files: OfficialFiles, official_model, tmp_path) -> None:
    model, processor = official_model
    out = _convert(official_files, tmp_path / "hf", torch.float32)
    for name in (
        "model.safetensors",
        "config.json",
        "processor_config.json",
        "tokenizer.json",
        "generation_config.json",
    ):
        assert (out / name).is_file(), name
    saved = load_file(out / "model.safetensors")
    own = model.state_dict()
    assert set(saved) == set(own)
    assert all(torch.equal(saved[k], own[k]) for k in own)

    from model.processing import MiniGPTv2Processor

    reloaded = MiniGPTv2ForConditionalGeneration.from_pretrained(out).eval()
    reloaded_processor = MiniGPTv2Processor.from_pretrained(out)
    assert torch.equal(_logits(reloaded, reloaded_processor), _logits(model, processor))


def test_half_precision_conversion_keeps_official_fp32_parts(official_files: OfficialFiles, tmp_path) -> None:
    out = _convert(official_files, tmp_path / "fp16", torch.float16)
    saved = load_file(out / "model.safetensors")
    assert saved["language_model.model.layers.0.self_attn.q_proj.weight"].dtype == torch.float16
    assert saved["vision_model.blocks.0.attn.qkv.weight"].dtype == torch.float16
    assert saved["vision_model.pos_embed"].dtype == torch.float32
    assert saved["vision_model.blocks.0.norm1.weight"].dtype == torch.float32


def test_changing_one_lora_weight_changes_the_logits(official_files: OfficialFiles, official_model, tmp_path) -> None:
    model, processor = official_model
    ckpt = torch.load(official_files.minigptv2, weights_only=True)
    key = "llama_model.base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"
    ckpt["model"][key] = ckpt["model"][key].clone()
    ckpt["model"][key][3, 2] += 1.0
    changed = tmp_path / "changed.pth"
    torch.save(ckpt, changed)
    other, _ = load_official(official_files.eva, official_files.llama_dir, changed, image_size=IMAGE_SIZE)
    assert (_logits(other, processor) - _logits(model, processor)).abs().max() > 1e-4


def test_peft_default_names_load_the_same_model(official_model, tmp_path) -> None:
    model, processor = official_model
    files = write_official_layout(tmp_path / "default-names", seed=1, default_names=True)
    other, _ = _load(files)
    assert torch.equal(_logits(other, processor), _logits(model, processor))


def _rewrite(files: OfficialFiles, tmp_path: Path, edit) -> Path:
    ckpt = torch.load(files.minigptv2, weights_only=True)
    edit(ckpt["model"])
    path = tmp_path / "edited.pth"
    torch.save(ckpt, path)
    return path


def test_stray_key_in_minigptv2_checkpoint_fails_and_names_it(official_files: OfficialFiles, tmp_path) -> None:
    path = _rewrite(official_files, tmp_path, lambda s: s.__setitem__("llama_model.lm_head.extra", torch.zeros(2)))
    with pytest.raises(CheckpointError, match=r"unexpected key\(s\) 'llama_model\.lm_head\.extra'"):
        load_official(official_files.eva, official_files.llama_dir, path, image_size=IMAGE_SIZE)


def test_missing_lora_key_fails_and_names_it(official_files: OfficialFiles, tmp_path) -> None:
    key = "llama_model.base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight"
    path = _rewrite(official_files, tmp_path, lambda s: s.pop(key))
    with pytest.raises(CheckpointError, match=r"missing key\(s\) '" + key.replace(".", r"\.")):
        load_official(official_files.eva, official_files.llama_dir, path, image_size=IMAGE_SIZE)


def test_missing_projection_fails(official_files: OfficialFiles, tmp_path) -> None:
    path = _rewrite(official_files, tmp_path, lambda s: s.pop("llama_proj.bias"))
    with pytest.raises(CheckpointError, match=r"llama_proj\.bias"):
        load_official(official_files.eva, official_files.llama_dir, path, image_size=IMAGE_SIZE)


def test_lora_for_a_layer_the_llama_lacks_is_a_stray_key(official_files: OfficialFiles, tmp_path) -> None:
    key = "llama_model.base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight"
    path = _rewrite(official_files, tmp_path, lambda s: s.__setitem__(key, torch.zeros(8, 64)))
    with pytest.raises(CheckpointError, match=r"layers\.7"):
        load_official(official_files.eva, official_files.llama_dir, path, image_size=IMAGE_SIZE)


def test_lora_of_the_wrong_size_fails_clearly(official_files: OfficialFiles, tmp_path) -> None:
    key = "llama_model.base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    path = _rewrite(official_files, tmp_path, lambda s: s.__setitem__(key, torch.zeros(8, 80)))
    with pytest.raises(CheckpointError, match="different model sizes"):
        load_official(official_files.eva, official_files.llama_dir, path, image_size=IMAGE_SIZE)


def test_only_inv_freq_and_the_unused_last_eva_block_are_ignored(official_files: OfficialFiles, tmp_path) -> None:
    eva = torch.load(official_files.eva, weights_only=True)
    ckpt = torch.load(official_files.minigptv2, weights_only=True)["model"]
    assert any(k.endswith("rotary_emb.inv_freq") for k in ckpt), "the fixture carries inv_freq like the real file"
    assert any(k.startswith("blocks.2.") for k in eva), "the fixture carries the unused last block"

    eva["blocks.3.norm1.weight"] = torch.ones(176)  # a block beyond the deliberately unused one
    bad = tmp_path / "eva.pth"
    torch.save(eva, bad)
    # Depth is inferred from the file (last block unused), so a stray partial block shows as an incomplete one.
    with pytest.raises(CheckpointError, match=r"blocks\.3\.(norm1|attn)"):
        load_official(bad, official_files.llama_dir, official_files.minigptv2, image_size=IMAGE_SIZE)


def test_eva_missing_key_fails_and_names_it(official_files: OfficialFiles, tmp_path) -> None:
    eva = torch.load(official_files.eva, weights_only=True)
    del eva["blocks.0.attn.q_bias"]
    bad = tmp_path / "eva.pth"
    torch.save(eva, bad)
    with pytest.raises(CheckpointError, match=r"missing key\(s\) 'blocks\.0\.attn\.q_bias'"):
        load_official(bad, official_files.llama_dir, official_files.minigptv2, image_size=IMAGE_SIZE)


def test_pickled_objects_need_an_explicit_opt_in(official_files: OfficialFiles, official_model, tmp_path) -> None:
    ckpt = torch.load(official_files.minigptv2, weights_only=True)
    ckpt["config"] = argparse.Namespace(lora_alpha=16)  # an arbitrary Python object: needs pickle
    path = tmp_path / "pickled.pth"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="--allow-pickle"):
        load_official(official_files.eva, official_files.llama_dir, path, image_size=IMAGE_SIZE)

    model, processor = official_model
    trusted, _ = load_official(
        official_files.eva, official_files.llama_dir, path, image_size=IMAGE_SIZE, allow_pickle=True
    )
    assert torch.equal(_logits(trusted, processor), _logits(model, processor))


class _RunsACommand:
    def __reduce__(self) -> tuple:
        return (os.system, ("true",))  # what a malicious checkpoint does; never loaded here


def test_a_pickle_calling_a_blocked_module_gets_the_allow_pickle_hint(tmp_path) -> None:
    path = tmp_path / "blocked.pth"
    torch.save({"weights": torch.zeros(2), "payload": _RunsACommand()}, path)
    with pytest.raises(CheckpointError, match=r"system\) that needs pickle.*--allow-pickle"):
        read_state_file(path)


def test_unreadable_files_fail_clearly(official_files: OfficialFiles, tmp_path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_official(junk, official_files.llama_dir, official_files.minigptv2)
    with pytest.raises(CheckpointError, match="not found"):
        load_official(tmp_path / "absent.pth", official_files.llama_dir, official_files.minigptv2)
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        load_official(official_files.eva, tmp_path, official_files.minigptv2)
    torch.save({"weights": {}}, junk)
    with pytest.raises(CheckpointError, match="no 'model' entry"):
        load_official(official_files.eva, official_files.llama_dir, junk)
