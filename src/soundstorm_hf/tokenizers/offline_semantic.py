"""A semantic tokenizer fitted locally: k-means over per-utterance-normalized MFCCs at 25 Hz.

The offline partner of `OfflineMelCodec` (50 Hz, so the pair has the paper's rate ratio of 2). MFCC clusters track
phonetic content far less well than clusters of self-supervised features (HuBERT, w2v-BERT), and carry more speaker
information; they are enough to condition SoundStorm on "what is said, roughly when" in tests and demos. Use
`SSLKMeansTokenizer` for real work.
"""

from __future__ import annotations

import math

import torch

from .base import SEMANTIC_CONFIG_NAME, SemanticTokenizer
from .kmeans import FittedTokenizerMixin, KMeansQuantizer, KMeansSemanticMixin
from .spectral import LogMelSpectrogram, deltas, mfcc, normalize_per_utterance, pool_frames


class OfflineMfccTokenizer(KMeansSemanticMixin, FittedTokenizerMixin, SemanticTokenizer):
    """k-means over MFCC + deltas + delta-deltas of 16 kHz audio, analysed at 50 Hz and averaged in pairs to 25 Hz.

    Frames: `num_frames(n) = ceil(n / 640)`, i.e. `ceil(ceil(n / 320) / 2)`: 25 ms Hann windows centred on every
    320th sample (zero padding at the ends), pairs of frames averaged, a last unpaired frame kept alone. Each
    utterance is normalized to zero mean and unit variance per coefficient over its own frames, which removes
    loudness and part of the channel and speaker colouring.

    Padding: exact; a padded batch gives each item the tokens it gets alone.

    What the tokens capture, measured by `scripts/build_offline_tokenizers.py` (128 clusters fitted on 237 s of
    espeak-ng speech in four voices): the same audio always gives the same tokens and different words give clearly
    different sequences, but the tokens are far from speaker-independent. On held-out sentences the normalized edit
    distance between the tokens of one sentence spoken by two unseen voices (en+m5, en+f4) is 0.87, about that of two
    different sentences in one voice (0.88).
    """

    config_name = SEMANTIC_CONFIG_NAME
    tokenizer_type = "offline_mfcc_kmeans"
    default_num_clusters = 128

    def __init__(
        self,
        quantizer: KMeansQuantizer | None = None,
        sampling_rate: int = 16000,
        analysis_hop_length: int = 320,
        pooling: int = 2,
        num_mels: int = 40,
        num_coefficients: int = 13,
    ):
        super().__init__()
        self.sampling_rate, self.analysis_hop_length, self.pooling = sampling_rate, analysis_hop_length, pooling
        self.hop_length = analysis_hop_length * pooling
        self.num_mels, self.num_coefficients = num_mels, num_coefficients
        self.frontend = LogMelSpectrogram(
            sampling_rate,
            n_fft=512,
            hop_length=analysis_hop_length,
            win_length=sampling_rate // 40,  # 25 ms
            num_mels=num_mels,
            min_frequency=20.0,
            max_frequency=sampling_rate / 2 - 400,
        )
        self.quantizer = quantizer

    def num_frames(self, num_samples: int) -> int:
        return math.ceil(num_samples / self.hop_length)

    def features(self, waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Zero-padded `waveform (batch, samples)` -> normalized features `(batch, frames, 3 * num_coefficients)`."""
        frame_lengths = (lengths + self.analysis_hop_length - 1) // self.analysis_hop_length
        cepstra = mfcc(self.frontend(waveform), self.num_coefficients)  # (batch, 50 Hz frames, coefficients)
        velocity = deltas(cepstra, frame_lengths)
        features = torch.cat([cepstra, velocity, deltas(velocity, frame_lengths)], dim=-1)
        features = normalize_per_utterance(features, frame_lengths)
        return pool_frames(features, frame_lengths, self.pooling)[0]

    def init_config(self) -> dict:
        return {
            "sampling_rate": self.sampling_rate,
            "analysis_hop_length": self.analysis_hop_length,
            "pooling": self.pooling,
            "num_mels": self.num_mels,
            "num_coefficients": self.num_coefficients,
        }
