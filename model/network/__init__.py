"""MiniGPT-v2 network: configurations and `PreTrainedModel` classes."""

from .configuration import EvaVisionConfig, MiniGPTv2Config
from .eva_vit import EvaVisionModel, interpolate_pos_embed
from .modeling import MiniGPTv2ForConditionalGeneration, merge_visual_tokens

__all__ = [
    "EvaVisionConfig",
    "EvaVisionModel",
    "MiniGPTv2Config",
    "MiniGPTv2ForConditionalGeneration",
    "interpolate_pos_embed",
    "merge_visual_tokens",
]
