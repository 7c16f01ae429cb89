"""MiniGPT-v2 as a transformers model: EVA ViT → ln_vision → 1x4 token merge → Linear → LLaMA-2.

The composition follows LLaVA: a vision tower, a projector and a language model, each built from its config.
Image embeddings are scattered into the text embeddings at the `image_token_id` placeholders that the processor put
between `<Img>` and `</Img>`, so batching, left padding and `generate` work as for any decoder-only model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, LlamaForCausalLM, PreTrainedModel
from transformers.cache_utils import Cache
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration import MiniGPTv2Config
from .eva_vit import EvaVisionModel


def merge_visual_tokens(tokens: torch.Tensor, tokens_per_group: int) -> torch.Tensor:
    """[B, N, C] → [B, N / k, k·C]: each output token concatenates k *consecutive* raster tokens.

    On the 32x32 patch grid with k=4 this is a 1x4 horizontal strip, not a 2x2 block: the official
    `MiniGPTv2.encode_img` is a plain row-major `view`, whatever the paper's "4 adjacent tokens" suggests.
    """
    batch, count, channels = tokens.shape
    return tokens.reshape(batch, count // tokens_per_group, channels * tokens_per_group)


class MiniGPTv2PreTrainedModel(PreTrainedModel):
    config: MiniGPTv2Config
    config_class = MiniGPTv2Config
    base_model_prefix = ""
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["Block", "LlamaDecoderLayer"]
    _skip_keys_device_placement = ["past_key_values", "cache"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _can_compile_fullgraph = True
    _supports_attention_backend = True
    _keep_in_fp32_modules_strict = ["norm1", "norm2", "pos_embed", "cls_token", "q_bias", "v_bias"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear) and module is getattr(self, "llama_proj", None):
            std = self.config.text_config.initializer_range
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


class MiniGPTv2ForConditionalGeneration(MiniGPTv2PreTrainedModel, GenerationMixin):
    def __init__(self, config: MiniGPTv2Config):
        super().__init__(config)
        self.vision_model = EvaVisionModel(config.vision_config)
        self.llama_proj = nn.Linear(
            config.projector_in_features, config.text_config.hidden_size, bias=config.projector_bias
        )
        self.language_model = LlamaForCausalLM(config.text_config)
        self.post_init()

    # --- embeddings plumbing expected by transformers -------------------------------------------------------------
    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_output_embeddings(value)

    # --- image path ------------------------------------------------------------------------------------------------
    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] normalised pixels → [B, image_seq_length, text_hidden] LLM input embeddings."""
        return self.project_vision_tokens(self.get_vision_tokens(pixel_values))

    def get_vision_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The projector's input: [B, image_seq_length, vision_hidden * tokens_per_group], fp32.

        Split from the projection so that fine-tuning with a frozen vision tower can cache it per image.
        """
        hidden = self.vision_model(pixel_values)  # fp32 residual stream, CLS first
        # ln_vision: a freshly initialised, frozen LayerNorm in the official model, never saved in its checkpoint,
        # i.e. parameter-free (weight 1, bias 0, eps 1e-5).
        hidden = F.layer_norm(hidden.float(), (hidden.shape[-1],), eps=self.config.ln_vision_eps)
        return merge_visual_tokens(hidden[:, 1:], self.config.tokens_per_group)

    def project_vision_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        proj_dtype = next(self.llama_proj.parameters()).dtype  # llama_proj may be wrapped by peft
        return self.llama_proj(tokens.to(proj_dtype))

    def embed_inputs(self, input_ids: torch.LongTensor, image_features: torch.Tensor | None) -> torch.Tensor:
        """Text embeddings with image features scattered, in order, into the placeholder positions."""
        embeds = self.get_input_embeddings()(input_ids)
        if image_features is None:
            return embeds
        mask = input_ids == self.config.image_token_id
        expected = image_features.shape[0] * image_features.shape[1]
        found = int(mask.sum())
        if found != expected:
            raise ValueError(
                f"the prompt holds {found} image placeholder tokens but {image_features.shape[0]} image(s) give "
                f"{expected} embeddings; build prompts with model.processing so each image gets "
                f"{self.config.image_seq_length} placeholders"
            )
        features = image_features.reshape(-1, embeds.shape[-1]).to(embeds.dtype)
        return embeds.masked_scatter(mask.unsqueeze(-1), features)

    # --- forward ---------------------------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        cache: Cache | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Either `input_ids` (with placeholders, plus `pixel_values` or precomputed `image_features` on the
        prefill step) or ready `inputs_embeds`. Remaining keyword arguments (cache, use_cache, ...) go to LLaMA."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if pixel_values is not None and image_features is not None:
            raise ValueError("pass pixel_values or image_features, not both")
        if inputs_embeds is None:
            assert input_ids is not None  # guaranteed by the check above; narrows the type
            if pixel_values is not None:
                image_features = self.get_image_features(pixel_values)
            inputs_embeds = self.embed_inputs(input_ids, image_features)
        return self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            labels=labels,
            logits_to_keep=logits_to_keep,
            cache=cache,
            **kwargs,
        )

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        inputs_embeds: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        is_first_iteration: bool | None = False,
        cache: Cache | None = None,
        **kwargs,
    ) -> dict:
        # Precomputed image features belong to the prefill step only, like pixel_values (which transformers drops
        # after prefill itself). `cache` is named so that generate accepts a cache passed in (a shared image prefix,
        # model.prefix_cache): it checks the names this signature lists.
        inputs = super().prepare_inputs_for_generation(
            input_ids, inputs_embeds=inputs_embeds, is_first_iteration=is_first_iteration, cache=cache, **kwargs
        )
        if image_features is not None and (is_first_iteration or not kwargs.get("use_cache", True)):
            inputs["image_features"] = image_features
        return inputs
