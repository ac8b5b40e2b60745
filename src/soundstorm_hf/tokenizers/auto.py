"""Load any tokenizer of this package from a name: our saved folders, or transformers checkpoints by model type."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoConfig

from .base import (
    CODEC_CONFIG_NAME,
    SEMANTIC_CONFIG_NAME,
    AcousticCodec,
    SemanticTokenizer,
    local_path_or_hub_id,
    read_tokenizer_config,
    split_hub_kwargs,
)
from .mimi_semantic import MimiSemanticTokenizer
from .offline_codec import OfflineMelCodec
from .offline_semantic import OfflineMfccTokenizer
from .phonetic_semantic import CtcPhoneticTokenizer
from .ssl_semantic import SSLKMeansTokenizer
from .transformers_codecs import DacCodec, EncodecCodec, MimiCodec
from .world_codec import WorldCodec

# "type" in our json -> class. For the transformers adapters it is also the checkpoint's `model_type`.
ACOUSTIC_CODECS = {cls.tokenizer_type: cls for cls in (OfflineMelCodec, WorldCodec, DacCodec, EncodecCodec, MimiCodec)}
SEMANTIC_TOKENIZERS = {
    cls.tokenizer_type: cls
    for cls in (OfflineMfccTokenizer, CtcPhoneticTokenizer, SSLKMeansTokenizer, MimiSemanticTokenizer)
}
TRANSFORMERS_ACOUSTIC = ("dac", "encodec", "mimi")
TRANSFORMERS_SEMANTIC = ("mimi",)


def load_acoustic_codec(name_or_path: str | Path, **kwargs) -> AcousticCodec:
    """Load a codec from a Hub id or folder: one saved by this package (any codec), or a transformers DAC, EnCodec
    or Mimi checkpoint. Keyword arguments go to the class's `from_pretrained` (e.g. `num_levels`, `device`)."""
    return _load(name_or_path, "codec", CODEC_CONFIG_NAME, ACOUSTIC_CODECS, TRANSFORMERS_ACOUSTIC, kwargs)


def load_semantic_tokenizer(name_or_path: str | Path, **kwargs) -> SemanticTokenizer:
    """Load a semantic tokenizer from a Hub id or folder: one saved by this package (offline MFCC, SSL + k-means,
    Mimi), or a transformers Mimi checkpoint (its semantic codebook). An SSL model alone is not a tokenizer: fit one
    with `SSLKMeansTokenizer.from_pretrained(name, layer=...).fit(...)`."""
    return _load(
        name_or_path, "semantic tokenizer", SEMANTIC_CONFIG_NAME, SEMANTIC_TOKENIZERS, TRANSFORMERS_SEMANTIC, kwargs
    )


def _load(name_or_path, what: str, config_name: str, classes: dict, transformers_types: tuple, kwargs: dict):
    folder = local_path_or_hub_id(name_or_path, what)
    if folder is not None and not (folder / config_name).is_file() and not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{what}: {folder} holds neither {config_name} (a tokenizer saved by this package) nor config.json "
            "(a transformers checkpoint)."
        )
    hub_kwargs, _ = split_hub_kwargs(kwargs)
    saved = read_tokenizer_config(name_or_path, config_name, **hub_kwargs)
    if saved is not None:
        kind = saved.get("type")
        if kind not in classes:
            raise ValueError(f"{name_or_path}: unknown type {kind!r} in {config_name}; known: {sorted(classes)}.")
    else:
        kind = AutoConfig.from_pretrained(str(name_or_path), **hub_kwargs).model_type
        if kind not in transformers_types:
            raise ValueError(
                f"{name_or_path} is a {kind!r} checkpoint without {config_name}; as-is this loader accepts "
                f"{', '.join(transformers_types)} checkpoints or folders saved by this package."
            )
    return classes[kind].from_pretrained(name_or_path, **kwargs)
