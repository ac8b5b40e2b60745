"""Audio in, audio out: semantic tokenizer -> SoundStorm -> codec decoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .audio import load_audio, prepare_waveform
from .modeling_soundstorm import SoundStormForConditionalGeneration
from .tokenizers import (
    AcousticCodec,
    MimiCodec,
    MimiSemanticTokenizer,
    SemanticTokenizer,
    load_acoustic_codec,
    load_semantic_tokenizer,
)
from .tokenizers.base import local_folder

CODEC_SUBFOLDER = "codec"
SEMANTIC_SUBFOLDER = "semantic_tokenizer"


def check_compatible(model: SoundStormForConditionalGeneration, codec: AcousticCodec, semantic: SemanticTokenizer):
    """Raises a `ValueError` naming the mismatch when the tokenizers do not produce the model's token grid."""
    config = model.config
    mismatches = [
        f"{what}: model {expected}, {source} {actual}"
        for what, expected, actual, source in (
            ("RVQ levels", config.num_levels, codec.num_levels, "codec"),
            ("codebook size", config.codebook_size, codec.codebook_size, "codec"),
            ("acoustic frame rate (Hz)", config.acoustic_frame_rate, codec.frame_rate, "codec"),
            ("semantic vocabulary", config.semantic_vocab_size, semantic.vocab_size, "semantic tokenizer"),
            ("semantic frame rate (Hz)", config.semantic_frame_rate, semantic.frame_rate, "semantic tokenizer"),
        )
        if not np.isclose(expected, actual)
    ]
    if mismatches:
        raise ValueError("The tokenizers do not match the model: " + "; ".join(mismatches) + ".")


def read_audio(audio, sampling_rate: int | None, name: str) -> tuple[np.ndarray, int, str]:
    """Any supported audio input -> `(array, sampling_rate, name)`.

    Accepts a file path, a `{"array", "sampling_rate"}` dict (as `datasets` yields), an `(array, sampling_rate)`
    tuple, or an array with `sampling_rate`.
    """
    if isinstance(audio, (str, Path)):
        audio, sampling_rate = load_audio(audio)
    elif isinstance(audio, dict):
        if "array" not in audio or "sampling_rate" not in audio:
            raise ValueError(f"The {name} dict needs `array` and `sampling_rate` keys, got {sorted(audio)}.")
        audio, sampling_rate = audio["array"], audio["sampling_rate"]
    elif isinstance(audio, tuple):
        audio, sampling_rate = audio
    if sampling_rate is None:
        raise ValueError(f"The {name} is an array without a `sampling_rate`.")
    return audio, sampling_rate, name


def prepare(audio, sampling_rate: int, name: str, target_sampling_rate: int) -> torch.Tensor:
    """Mono float waveform `(samples,)` at `target_sampling_rate`; errors say which input was bad."""
    try:
        return prepare_waveform(audio, sampling_rate, target_sampling_rate)
    except ValueError as error:
        raise ValueError(f"Bad {name}: {error}") from error


class SoundStormPipeline:
    """Resynthesis and voice conversion with SoundStorm.

    `pipe(content_audio, voice_prompt=prompt_audio)` takes the semantic tokens of `content_audio` (what is said)
    and the codec tokens of `voice_prompt` (who says it, and how it sounds), generates the codes of the content in
    that voice, and decodes them. Audio longer than the model's `max_frames` is generated in windows, each
    prompted by the end of the one before, so memory does not grow with length.

    Args:
        model: the SoundStorm model.
        codec: the acoustic codec whose tokens the model generates.
        semantic_tokenizer: the tokenizer of the model's conditioning stream.
        context_seconds: how much of the previous window (or of the voice prompt) prompts the next window.
        min_prompt_seconds: shorter voice prompts are rejected: they carry too little of the voice.
    """

    def __init__(
        self,
        model: SoundStormForConditionalGeneration,
        codec: AcousticCodec,
        semantic_tokenizer: SemanticTokenizer,
        context_seconds: float = 3.0,
        min_prompt_seconds: float = 1.0,
    ):
        check_compatible(model, codec, semantic_tokenizer)
        self.model, self.codec, self.semantic_tokenizer = model.eval(), codec, semantic_tokenizer
        self.context_seconds, self.min_prompt_seconds = context_seconds, min_prompt_seconds

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        device: str | torch.device | None = None,
        context_seconds: float = 3.0,
        min_prompt_seconds: float = 1.0,
        **model_kwargs,
    ):
        """Rebuilds model, codec and semantic tokenizer from a model folder or Hub repo.

        The model config's `codec_name_or_path` / `semantic_tokenizer_name_or_path` name either a subfolder of the
        model (saved with it) or a Hub id / path of their own. `model_kwargs` go to the model's `from_pretrained`
        (e.g. `dtype`, `revision`).
        """
        model = SoundStormForConditionalGeneration.from_pretrained(name_or_path, **model_kwargs)
        config = model.config
        if not config.codec_name_or_path or not config.semantic_tokenizer_name_or_path:
            raise ValueError(
                f"{name_or_path} does not record its tokenizers (`codec_name_or_path` and "
                "`semantic_tokenizer_name_or_path` in config.json); build the pipeline with "
                "`SoundStormPipeline(model, codec, semantic_tokenizer)`."
            )
        folder = local_folder(name_or_path)

        def resolve(source: str) -> str:
            return str(folder / source) if (folder / source).exists() else source

        codec = load_acoustic_codec(resolve(config.codec_name_or_path))
        semantic_tokenizer = load_semantic_tokenizer(resolve(config.semantic_tokenizer_name_or_path))
        return cls(model, codec, semantic_tokenizer, context_seconds, min_prompt_seconds).to(device)

    def save_pretrained(self, directory: str | Path, **kwargs) -> None:
        """Saves the model with its tokenizers in subfolders, so that `from_pretrained(directory)` needs nothing else."""
        directory = Path(directory)
        self.codec.save_pretrained(directory / CODEC_SUBFOLDER)
        self.semantic_tokenizer.save_pretrained(directory / SEMANTIC_SUBFOLDER)
        self.model.config.codec_name_or_path = CODEC_SUBFOLDER
        self.model.config.semantic_tokenizer_name_or_path = SEMANTIC_SUBFOLDER
        self.model.save_pretrained(directory, **kwargs)

    def to(self, device: str | torch.device | None) -> SoundStormPipeline:
        if device is not None:
            self.model.to(device)
            self.codec.to(device)
            self.semantic_tokenizer.to(device)
        return self

    @property
    def sampling_rate(self) -> int:
        """Rate of the audio the pipeline returns: the codec's."""
        return self.codec.sampling_rate

    def __call__(
        self,
        audio,
        sampling_rate: int | None = None,
        voice_prompt=None,
        prompt_sampling_rate: int | None = None,
        **generate_kwargs,
    ) -> dict:
        """Resynthesizes `audio` (in the voice of `voice_prompt` when given).

        Audio is anything `read_audio` accepts, mono or stereo, at any rate. Keyword
        arguments go to `generate` (e.g. `steps_per_level`, `temperature`, `seed`, `guidance_scale`).

        Returns `{"audio": np.ndarray (samples,), "sampling_rate": int}`, the prompt part cut off.
        """
        content = prepare(*read_audio(audio, sampling_rate, "content audio"), self.semantic_tokenizer.sampling_rate)
        semantic_ids = self.semantic_tokenizer.encode(content)[0]  # (semantic frames,)
        prompt_codes = prompt_semantic = None
        if voice_prompt is not None:
            prompt_codes, prompt_semantic = self._encode_prompt(voice_prompt, prompt_sampling_rate)
        context_frames = round(self.context_seconds * self.model.config.acoustic_frame_rate)
        codes = self.model.generate_long(semantic_ids, prompt_codes, prompt_semantic, context_frames, **generate_kwargs)
        decode_kwargs = {}
        if isinstance(self.codec, MimiCodec) and isinstance(self.semantic_tokenizer, MimiSemanticTokenizer):
            # Mimi's decoder adds its semantic codebook to the acoustic ones: here they are the content's tokens.
            decode_kwargs["semantic_codes"] = semantic_ids[None, : codes.shape[-1]]
        waveform = self.codec.decode(codes[None], **decode_kwargs)[0]
        num_samples = round(content.shape[-1] * self.codec.sampling_rate / self.semantic_tokenizer.sampling_rate)
        return {"audio": waveform[:num_samples].cpu().numpy(), "sampling_rate": self.codec.sampling_rate}

    def _encode_prompt(self, voice_prompt, sampling_rate) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes `(levels, frames)` and semantic ids of the prompt, cut to whole semantic units.

        Generation is prompted with the last `context_seconds` of it.
        """
        config = self.model.config
        ratio = config.semantic_upsampling
        prompt = read_audio(voice_prompt, sampling_rate, "voice prompt")
        codec_wave = prepare(*prompt, self.codec.sampling_rate)
        duration = codec_wave.shape[-1] / self.codec.sampling_rate
        if duration < self.min_prompt_seconds:
            raise ValueError(
                f"The voice prompt is too short: {duration:.2f} s, at least {self.min_prompt_seconds} s are needed."
            )
        semantic_wave = prepare(*prompt, self.semantic_tokenizer.sampling_rate)
        codes = self.codec.encode(codec_wave)[0]  # (levels, frames)
        semantic_ids = self.semantic_tokenizer.encode(semantic_wave)[0]  # (semantic frames,)
        units = min(codes.shape[-1] // ratio.numerator, semantic_ids.shape[0] // ratio.denominator)
        return codes[:, : units * ratio.numerator], semantic_ids[: units * ratio.denominator]
