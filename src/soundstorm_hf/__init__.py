"""SoundStorm (Borsos et al., 2023) for the Hugging Face ecosystem.

The public API, imported on first use: `import soundstorm_hf` loads neither torch nor transformers, so that a
command's `--help` or argument errors answer at once. Training parts live in their modules (`collator`, `masking`,
`data`). Importing the model module registers it with transformers' `AutoConfig`, `AutoModel` (the base Conformer)
and `AutoModelForMaskedLM` (the model with its heads, whose forward is masked-token prediction).
"""

import importlib

# Public name -> the module defining it.
_EXPORTS = {
    "SoundStormPipeline": "pipeline",
    "PRESETS": "configuration_soundstorm",
    "SoundStormConfig": "configuration_soundstorm",
    "SoundStormForConditionalGeneration": "modeling_soundstorm",
    "SoundStormModel": "modeling_soundstorm",
    "SoundStormPreTrainedModel": "modeling_soundstorm",
    "SoundStormGenerationConfig": "generation_configuration_soundstorm",
    "SoundStormGenerateOutput": "decoding_soundstorm",
    "load_acoustic_codec": "tokenizers",
    "load_semantic_tokenizer": "tokenizers",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    importlib.import_module(".modeling_soundstorm", __name__)  # registers the Auto classes whatever is used first
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
