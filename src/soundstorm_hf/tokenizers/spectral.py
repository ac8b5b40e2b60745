"""Spectral front end of the offline tokenizers: log-mel analysis, its approximate inverse, MFCCs, frame pooling.

Everything works on right-padded batches and is exact about padding: frame `t` of item `i` is computed only from
samples that are either valid or zero (the STFT pads with zeros, never by reflection), and the per-utterance
statistics, deltas and pooling look at valid frames only. A padded batch therefore gives each item the features it
gets alone.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers.audio_utils import mel_filter_bank

from .base import length_mask

LOG_FLOOR = 1e-5


class LogMelSpectrogram(nn.Module):
    """Waveform `(batch, samples)` -> log-magnitude mel frames `(batch, ceil(samples / hop_length), num_mels)`.

    Frame `t` is centred on sample `t * hop_length`.
    """

    def __init__(
        self,
        sampling_rate: int = 16000,
        n_fft: int = 1024,
        hop_length: int = 320,
        win_length: int | None = None,
        num_mels: int = 80,
        min_frequency: float = 0.0,
        max_frequency: float | None = None,
    ):
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        self.win_length = win_length or n_fft
        filters = mel_filter_bank(
            num_frequency_bins=n_fft // 2 + 1,
            num_mel_filters=num_mels,
            min_frequency=min_frequency,
            max_frequency=max_frequency or sampling_rate / 2,
            sampling_rate=sampling_rate,
            norm="slaney",
            mel_scale="slaney",
        )
        filters = torch.from_numpy(filters).float()  # (freqs, mels)
        self.register_buffer("window", torch.hann_window(self.win_length), persistent=False)
        self.register_buffer("filters", filters, persistent=False)
        # Least-squares way back from mel to linear frequencies, for Griffin-Lim.
        self.register_buffer("inverse_filters", torch.linalg.pinv(filters), persistent=False)  # (mels, freqs)

    def num_frames(self, num_samples: int) -> int:
        return math.ceil(num_samples / self.hop_length)

    def stft(self, waveform: torch.Tensor) -> torch.Tensor:
        """`(batch, samples)` -> complex `(batch, freqs, ceil(samples / hop))`."""
        spectrum = torch.stft(
            waveform,
            self.n_fft,
            self.hop_length,
            self.win_length,
            self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        return spectrum[..., : self.num_frames(waveform.shape[-1])]

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        magnitude = self.stft(waveform).abs()  # (batch, freqs, frames)
        mel = magnitude.transpose(1, 2) @ self.filters  # (batch, frames, mels)
        return mel.clamp(min=LOG_FLOOR).log()

    def to_magnitude(self, log_mel: torch.Tensor) -> torch.Tensor:
        """Approximate inverse: log-mel `(batch, frames, mels)` -> linear magnitude `(batch, freqs, frames)`."""
        magnitude = log_mel.exp() @ self.inverse_filters  # (batch, frames, freqs)
        return magnitude.clamp(min=0.0).transpose(1, 2)

    def griffin_lim(
        self, magnitude: torch.Tensor, lengths: torch.Tensor, num_iterations: int = 32, momentum: float = 0.99
    ) -> torch.Tensor:
        """Fast Griffin-Lim (Perraudin et al., 2013): magnitude `(batch, freqs, frames)` -> `(batch, frames * hop)`.

        Starts from zero phase so the result is deterministic, and keeps each item's signal zero past its
        `lengths` (frames), so an item decodes the same alone or in a padded batch.
        """
        num_samples = magnitude.shape[-1] * self.hop_length
        valid = length_mask(lengths * self.hop_length, num_samples)  # (batch, samples)
        phase = torch.ones_like(magnitude, dtype=torch.complex64)
        previous = torch.zeros_like(phase)
        for _ in range(num_iterations):
            rebuilt = self.stft(self._istft(magnitude * phase, num_samples) * valid)
            phase = rebuilt - previous * (momentum / (1 + momentum))
            phase = phase / (phase.abs() + 1e-16)
            previous = rebuilt
        return self._istft(magnitude * phase, num_samples) * valid

    def _istft(self, spectrum: torch.Tensor, num_samples: int) -> torch.Tensor:
        return torch.istft(
            spectrum, self.n_fft, self.hop_length, self.win_length, self.window, center=True, length=num_samples
        )


def mfcc(log_mel: torch.Tensor, num_coefficients: int) -> torch.Tensor:
    """Orthonormal DCT-II of log-mel frames `(..., mels)` -> cepstra `(..., num_coefficients)`."""
    num_mels = log_mel.shape[-1]
    mel_index = torch.arange(num_mels, dtype=log_mel.dtype, device=log_mel.device)
    coefficient = torch.arange(num_coefficients, dtype=log_mel.dtype, device=log_mel.device)
    dct = torch.cos(math.pi / num_mels * (mel_index[:, None] + 0.5) * coefficient[None, :])  # (mels, coefficients)
    dct[:, 0] *= 1 / math.sqrt(2)
    return log_mel @ (dct * math.sqrt(2 / num_mels))


def deltas(features: torch.Tensor, lengths: torch.Tensor, width: int = 2) -> torch.Tensor:
    """Regression deltas over +-`width` frames of `features (batch, frames, dim)`, within each item's valid frames."""
    num_frames = features.shape[1]
    time = torch.arange(num_frames, device=features.device)
    last = (lengths - 1).clamp(min=0)[:, None]  # (batch, 1)
    numerator = torch.zeros_like(features)
    for offset in range(1, width + 1):
        ahead = torch.minimum(time + offset, last)  # (batch, frames)
        behind = (time - offset).clamp(min=0).expand_as(ahead)
        gather = lambda index: features.gather(1, index[..., None].expand_as(features))  # noqa: E731
        numerator = numerator + offset * (gather(ahead) - gather(behind))
    return numerator / (2 * sum(offset**2 for offset in range(1, width + 1)))


def normalize_per_utterance(features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance per item and dimension over the valid frames of `features (batch, frames, dim)`."""
    mask = length_mask(lengths, features.shape[1])[..., None].to(features.dtype)  # (batch, frames, 1)
    count = lengths[:, None, None].to(features.dtype)
    mean = (features * mask).sum(1, keepdim=True) / count
    variance = (((features - mean) * mask) ** 2).sum(1, keepdim=True) / count
    return (features - mean) / (variance + 1e-5).sqrt()


def pool_frames(features: torch.Tensor, lengths: torch.Tensor, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Average groups of `factor` frames: `(batch, frames, dim)` -> `(batch, ceil(frames / factor), dim)`.

    Each group averages its valid frames only (a last partial group is kept), so pooled lengths are
    `ceil(lengths / factor)`.
    """
    if factor == 1:
        return features, lengths
    batch_size, num_frames, dim = features.shape
    num_groups = math.ceil(num_frames / factor)
    mask = length_mask(lengths, num_frames)[..., None].to(features.dtype)  # (batch, frames, 1)
    padding = (0, 0, 0, num_groups * factor - num_frames)
    sums = nn.functional.pad(features * mask, padding).view(batch_size, num_groups, factor, dim).sum(2)
    counts = nn.functional.pad(mask, padding).view(batch_size, num_groups, factor, 1).sum(2)
    return sums / counts.clamp(min=1), (lengths + factor - 1) // factor
