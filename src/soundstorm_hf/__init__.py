"""SoundStorm (Borsos et al., 2023) for the Hugging Face ecosystem."""

from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

from .collator import SoundStormDataCollator, trim_to_common_duration
from .configuration_soundstorm import PRESETS, SoundStormConfig
from .generation_soundstorm import SoundStormGenerateOutput, SoundStormGenerationConfig
from .masking import MaskDraw, apply_mask, sample_mask
from .modeling_soundstorm import (
    SoundStormForConditionalGeneration,
    SoundStormModel,
    SoundStormOutput,
    SoundStormPreTrainedModel,
    level_metrics,
)

# AutoModel gives the base Conformer, as for every transformers model. The model with its heads is a masked-token
# predictor (its training objective), so AutoModelForMaskedLM gives it.
AutoConfig.register(SoundStormConfig.model_type, SoundStormConfig)
AutoModel.register(SoundStormConfig, SoundStormModel)
AutoModelForMaskedLM.register(SoundStormConfig, SoundStormForConditionalGeneration)
# Saved folders carry their modeling code, so that they load with `trust_remote_code=True` anywhere.
SoundStormConfig.register_for_auto_class()
SoundStormModel.register_for_auto_class("AutoModel")
SoundStormForConditionalGeneration.register_for_auto_class("AutoModelForMaskedLM")

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
    "level_metrics",
    "sample_mask",
    "trim_to_common_duration",
]
