"""The neural codecs of transformers (DAC, EnCodec, Mimi) behind the one `AcousticCodec` interface.

Each adapter hides its model's quirks (EnCodec's chunk axis and bandwidths, DAC's odd-length decoder output,
Mimi's split semantic/acoustic quantizer) and gives the same contract: the waveform is zero-padded to whole frames,
`num_frames(n) = ceil(n / hop_length)`, and `decode` returns `frames * hop_length` samples.
"""

from __future__ import annotations

import math

import torch
from transformers import DacModel, EncodecModel, MimiModel, PretrainedConfig

from .base import CODEC_CONFIG_NAME, AcousticCodec, TransformersBackedMixin, pad_to_whole_frames


class TransformersCodec(TransformersBackedMixin, AcousticCodec):
    """Plumbing shared by the adapters; a subclass sets `model_class` and implements `_encode` / `_decode`."""

    config_name = CODEC_CONFIG_NAME
    model_class: type

    def __init__(
        self,
        model: torch.nn.Module,
        num_levels: int | None = None,
        model_source: str | None = None,
        model_revision: str | None = None,
    ):
        super().__init__()
        config = model.config
        self.check_config(config)
        self.model = model.eval()
        self.model_source, self.model_revision = model_source, model_revision
        self.sampling_rate, self.hop_length = config.sampling_rate, self.config_hop_length(config)
        self.codebook_size = config.codebook_size
        available = self.available_levels(config)
        self.num_levels = available if num_levels is None else num_levels
        if not 1 <= self.num_levels <= available:
            raise ValueError(f"num_levels must be in [1, {available}] for this {config.model_type}, got {num_levels}.")

    @staticmethod
    def check_config(config: PretrainedConfig) -> None:
        """Raises a `ValueError` for a checkpoint the adapter cannot serve; accepts everything by default."""

    @staticmethod
    def config_hop_length(config: PretrainedConfig) -> int:
        return int(config.hop_length)

    @staticmethod
    def available_levels(config: PretrainedConfig) -> int:
        raise NotImplementedError

    @classmethod
    def load_model(cls, path: str, **hub_kwargs) -> torch.nn.Module:
        return cls.model_class.from_pretrained(path, **hub_kwargs)

    def init_config(self) -> dict:
        return {"num_levels": self.num_levels}

    def num_frames(self, num_samples: int) -> int:
        return math.ceil(num_samples / self.hop_length)

    @torch.inference_mode()
    def encode(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        waveform, _ = self._batch_waveform(waveform, lengths)
        waveform, num_frames = pad_to_whole_frames(waveform, self.hop_length)
        codes = self._encode(waveform[:, None].to(self.model.dtype))  # (batch, levels, frames)
        if codes.shape[-1] != num_frames:
            raise RuntimeError(f"{type(self).__name__}: expected {num_frames} frames, got {codes.shape[-1]}.")
        return codes.long()

    @torch.inference_mode()
    def decode(self, codes: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        codes, lengths = self._check_codes(codes, lengths)
        return self._finish_audio(self._decode(codes), lengths, codes.shape[-1])

    def _encode(self, waveform: torch.Tensor) -> torch.Tensor:
        """`(batch, 1, frames * hop)` -> codes `(batch, num_levels, frames)`."""
        raise NotImplementedError

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes `(batch, levels, frames)` -> audio `(batch, samples)`, about `frames * hop` samples."""
        raise NotImplementedError


class DacCodec(TransformersCodec):
    """Descript Audio Codec (`descript/dac_16khz`: 16 kHz, hop 320 -> 50 Hz, 12 levels x 1024 codes).

    Frames: `ceil(n / hop_length)`. Padding: DAC is non-causal with a receptive field of many frames, so the last
    few valid frames of a shorter item in a padded batch can differ from the item encoded alone (its padding is
    zero in both cases, but the batch's extra zeros pass through the convolutions' biases); earlier frames match.
    Encode each item alone if the end frames must be exact.
    """

    tokenizer_type = "dac"
    model_class = DacModel

    @staticmethod
    def available_levels(config: PretrainedConfig) -> int:
        return config.n_codebooks

    def _encode(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.model.encode(waveform, n_quantizers=self.num_levels).audio_codes[:, : self.num_levels]

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.model.decode(audio_codes=codes).audio_values  # (batch, samples)


class EncodecCodec(TransformersCodec):
    """EnCodec (`facebook/encodec_24khz`: 24 kHz, hop 320 -> 75 Hz, up to 32 levels x 1024 codes).

    Pick the size either as a `bandwidth` in kbps (one of `config.target_bandwidths`; 1.5 kbps per 2 levels at
    75 Hz) or directly as `num_levels`; the default is 6 kbps (8 levels), SoundStorm's operating point. Only the
    unchunked, unnormalized mono models (24 kHz) give one continuous frame grid; the 48 kHz model encodes
    overlapping one-second chunks with a scale each and is rejected.

    Frames: `ceil(n / hop_length)`. Padding: EnCodec 24 kHz is causal, so every valid frame of an item in a padded
    batch equals the frame it gets alone.
    """

    tokenizer_type = "encodec"
    model_class = EncodecModel

    def __init__(
        self,
        model: torch.nn.Module,
        num_levels: int | None = None,
        bandwidth: float | None = None,
        model_source: str | None = None,
        model_revision: str | None = None,
    ):
        config = model.config
        if num_levels is not None and bandwidth is not None:
            raise ValueError("Give EncodecCodec either num_levels or bandwidth, not both.")
        if num_levels is None:
            bandwidth = 6.0 if bandwidth is None else bandwidth
            if bandwidth not in config.target_bandwidths:
                raise ValueError(f"bandwidth must be one of {list(config.target_bandwidths)} kbps, got {bandwidth}.")
            num_levels = model.quantizer.get_num_quantizers_for_bandwidth(bandwidth)
        super().__init__(model, num_levels, model_source, model_revision)
        # EnCodec encodes at one of its bandwidths: the smallest that yields enough levels, the rest is cut off.
        # Levels are residual, so a level's codes do not depend on how many levels follow it.
        levels_at = model.quantizer.get_num_quantizers_for_bandwidth
        self._bandwidth = min(b for b in config.target_bandwidths if levels_at(b) >= self.num_levels)

    @staticmethod
    def check_config(config: PretrainedConfig) -> None:
        if config.chunk_length_s is not None or config.normalize or config.audio_channels != 1:
            raise ValueError(
                "Only unchunked, unnormalized mono EnCodec models (e.g. facebook/encodec_24khz) have a single frame "
                f"grid; got chunk_length_s={config.chunk_length_s}, normalize={config.normalize}, "
                f"audio_channels={config.audio_channels}."
            )

    @staticmethod
    def available_levels(config: PretrainedConfig) -> int:
        return config.num_quantizers

    def _encode(self, waveform: torch.Tensor) -> torch.Tensor:
        codes = self.model.encode(waveform, bandwidth=self._bandwidth).audio_codes  # (chunks=1, batch, levels, frames)
        return codes[0, :, : self.num_levels]

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.model.decode(codes[None], [None]).audio_values[:, 0]  # (batch, samples)


class MimiCodec(TransformersCodec):
    """Kyutai's Mimi (`kyutai/mimi`: 24 kHz, hop 1920 -> 12.5 Hz, 2048 codes per level) as an acoustic codec.

    Mimi's codebook 0 is semantic (distilled from WavLM) and is left out: the acoustic levels are codebooks
    1..`num_levels` (default: all 31; Moshi uses 7), and codebook 0 is what `MimiSemanticTokenizer` gives as
    semantic tokens. Mimi's decoder sums both quantizers, so pass those semantic tokens to `decode` as
    `semantic_codes`; without them the semantic quantizer's share is missing and the audio is degraded.

    Frames: `ceil(n / hop_length)`. Padding: Mimi is causal, so every valid frame of an item in a padded batch
    equals the frame it gets alone.
    """

    tokenizer_type = "mimi"
    model_class = MimiModel

    @staticmethod
    def check_config(config: PretrainedConfig) -> None:
        check_single_semantic_codebook(config)

    @staticmethod
    def config_hop_length(config: PretrainedConfig) -> int:
        return mimi_hop_length(config)

    @staticmethod
    def available_levels(config: PretrainedConfig) -> int:
        return config.num_quantizers - 1

    def _encode(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.model.encode(waveform, num_quantizers=1 + self.num_levels).audio_codes[:, 1:]

    @torch.inference_mode()
    def decode(
        self, codes: torch.Tensor, lengths: torch.Tensor | None = None, semantic_codes: torch.Tensor | None = None
    ) -> torch.Tensor:
        """As `AcousticCodec.decode`; `semantic_codes (batch, frames)` are Mimi's codebook 0 for the same frames."""
        if semantic_codes is None:
            return super().decode(codes, lengths)
        codes, lengths = self._check_codes(codes, lengths)
        semantic_codes = torch.as_tensor(semantic_codes, device=codes.device)
        if semantic_codes.shape != (codes.shape[0], codes.shape[-1]):
            raise ValueError(
                f"semantic_codes must be (batch, frames) = {(codes.shape[0], codes.shape[-1])}, "
                f"got {tuple(semantic_codes.shape)}."
            )
        semantic_codes, _ = self._check_codes(semantic_codes[:, None], lengths)  # (batch, 1, frames)
        audio = self.model.decode(torch.cat([semantic_codes, codes], dim=1)).audio_values[:, 0]
        return self._finish_audio(audio, lengths, codes.shape[-1])

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        latents = self.model.quantizer.acoustic_residual_vector_quantizer.decode(codes)  # acoustic share only
        return self.model.decoder(latents).audio_values[:, 0]


def mimi_hop_length(config: PretrainedConfig) -> int:
    """Samples per Mimi frame (1920 for kyutai/mimi); Mimi configs give a frame rate, which must divide evenly."""
    hop_length = config.sampling_rate / config.frame_rate
    if hop_length != int(hop_length):
        raise ValueError(
            f"Mimi frame rate {config.frame_rate} Hz is not a whole number of samples at {config.sampling_rate} Hz."
        )
    return int(hop_length)


def check_single_semantic_codebook(config: PretrainedConfig) -> None:
    if config.num_semantic_quantizers != 1:
        raise ValueError(f"Expected a Mimi model with one semantic codebook, got {config.num_semantic_quantizers}.")
