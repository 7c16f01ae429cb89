"""Configurations: the EVA ViT-g/14 vision tower and the composite MiniGPT-v2 model.

Defaults are the official full-size shapes (EVA ViT-g/14: 39 blocks of width 1408 at 448 px; LLaMA-2-7B; see
minigpt4/models/eva_vit.py and minigpt_v2.py in the official MiniGPT-4 repository). Tiny variants change only
numbers, so tests and the full model run the same code.
"""

from __future__ import annotations

from transformers import LlamaConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

# LLaMA-2-7b-chat-hf values that differ from LlamaConfig's defaults.
LLAMA2_CHAT_7B_OVERRIDES = {"max_position_embeddings": 4096, "rms_norm_eps": 1e-5}


class EvaVisionConfig(PreTrainedConfig):
    """EVA ViT-g/14 in its BLIP-2 form: q/v biases, no final norm, absolute position embeddings.

    `pretrain_image_size` is the resolution the official position embeddings were trained at (224, a 16x16 grid);
    the checkpoint loader interpolates them to `image_size`.
    """

    model_type = "minigptv2_eva_vit"
    base_config_key = "vision_config"

    image_size: int = 448
    pretrain_image_size: int = 224
    patch_size: int = 14
    num_channels: int = 3
    hidden_size: int = 1408
    num_hidden_layers: int = 39
    num_attention_heads: int = 16
    intermediate_size: int = 6144
    layer_norm_eps: float = 1e-6
    initializer_range: float = 0.02

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    def validate_architecture(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"vision hidden_size {self.hidden_size} is not divisible by {self.num_attention_heads} heads"
            )
        if self.image_size % self.patch_size or self.pretrain_image_size % self.patch_size:
            raise ValueError("image sizes must be multiples of the patch size")


class MiniGPTv2Config(PreTrainedConfig):
    """EVA ViT → parameter-free LayerNorm → merge `tokens_per_group` raster tokens → Linear → LLaMA-2.

    `image_token_id` marks the positions in `input_ids` that receive image embeddings (LLaVA's placeholder pattern).
    It defaults to LLaMA's `<unk>` id: the official tokenizer has no image token, the byte-fallback vocabulary never
    produces `<unk>` from text, and using an id inside the vocabulary keeps every logits processor valid.
    """

    model_type = "minigptv2"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=EvaVisionConfig),
        "text_config": SubConfigSpec(config_class=LlamaConfig, init_kwargs=dict(LLAMA2_CHAT_7B_OVERRIDES)),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    tokens_per_group: int = 4
    ln_vision_eps: float = 1e-5
    image_token_id: int = 0
    projector_bias: bool = True
    tie_word_embeddings: bool = False

    @property
    def image_seq_length(self) -> int:
        """Image embeddings per image: 1024 patches / 4 = 256 at 448 px."""
        return self.vision_config.num_patches // self.tokens_per_group

    @property
    def projector_in_features(self) -> int:
        return self.vision_config.hidden_size * self.tokens_per_group

    def validate_architecture(self) -> None:
        if self.vision_config.num_patches % self.tokens_per_group:
            raise ValueError(f"{self.vision_config.num_patches} patches cannot be grouped by {self.tokens_per_group}")
