"""MiniGPT-v2 network: configurations and `PreTrainedModel` classes, registered with the transformers Auto API."""

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText

from .configuration import EvaVisionConfig, MiniGPTv2Config
from .eva_vit import EvaVisionModel, interpolate_pos_embed
from .modeling import MiniGPTv2ForConditionalGeneration, merge_visual_tokens

AutoConfig.register(EvaVisionConfig.model_type, EvaVisionConfig, exist_ok=True)
AutoConfig.register(MiniGPTv2Config.model_type, MiniGPTv2Config, exist_ok=True)
AutoModel.register(EvaVisionConfig, EvaVisionModel, exist_ok=True)
AutoModelForImageTextToText.register(MiniGPTv2Config, MiniGPTv2ForConditionalGeneration, exist_ok=True)

__all__ = [
    "EvaVisionConfig",
    "EvaVisionModel",
    "MiniGPTv2Config",
    "MiniGPTv2ForConditionalGeneration",
    "interpolate_pos_embed",
    "merge_visual_tokens",
]
