"""SoundStorm (Borsos et al., 2023) for the Hugging Face ecosystem."""

from transformers import AutoConfig, AutoModel

from .collator import SoundStormDataCollator, trim_to_common_duration
from .configuration_soundstorm import PRESETS, SoundStormConfig
from .generation_soundstorm import SoundStormGenerateOutput, SoundStormGenerationConfig
from .masking import MaskDraw, apply_mask, sample_mask
from .modeling_soundstorm import (
    SoundStormForConditionalGeneration,
    SoundStormModel,
    SoundStormOutput,
    SoundStormPreTrainedModel,
)

# AutoModel gives the model with its heads: without them SoundStorm has no output of its own.
AutoConfig.register(SoundStormConfig.model_type, SoundStormConfig)
AutoModel.register(SoundStormConfig, SoundStormForConditionalGeneration)
# Saved folders carry their modeling code, so that they load with `trust_remote_code=True` anywhere.
SoundStormConfig.register_for_auto_class()
SoundStormForConditionalGeneration.register_for_auto_class("AutoModel")

__all__ = [
    "PRESETS",
    "MaskDraw",
    "SoundStormConfig",
    "SoundStormDataCollator",
    "SoundStormForConditionalGeneration",
    "SoundStormGenerateOutput",
    "SoundStormGenerationConfig",
    "SoundStormModel",
    "SoundStormOutput",
    "SoundStormPreTrainedModel",
    "apply_mask",
    "sample_mask",
    "trim_to_common_duration",
]
