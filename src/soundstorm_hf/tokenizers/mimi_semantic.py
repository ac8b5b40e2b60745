"""Mimi's semantic codebook as a ready-made semantic tokenizer: no fitting, 2048 tokens at 12.5 Hz.

Kyutai distilled codebook 0 of Mimi's quantizer from WavLM, so it carries mostly phonetic content. Paired with
`MimiCodec` (codebooks 1..Q) it splits one Mimi encoding the way SoundStorm splits semantic and acoustic tokens, at
the same frame rate (ratio 1).
"""

from __future__ import annotations

import math

import torch
from transformers import MimiModel

from .base import SEMANTIC_CONFIG_NAME, SemanticTokenizer, TransformersBackedMixin, pad_to_whole_frames
from .transformers_codecs import check_single_semantic_codebook, mimi_hop_length


class MimiSemanticTokenizer(TransformersBackedMixin, SemanticTokenizer):
    """Codebook 0 of a Mimi model (`kyutai/mimi`: 24 kHz, 12.5 Hz, vocabulary 2048).

    Frames: `ceil(n / hop_length)` (1920 samples at 24 kHz), the waveform being zero-padded to whole frames. Mimi
    is causal, so an item in a padded batch gets the tokens it gets alone. To share one loaded model with a
    `MimiCodec`, build this as `MimiSemanticTokenizer(codec.model)`.
    """

    config_name = SEMANTIC_CONFIG_NAME
    tokenizer_type = "mimi"

    def __init__(self, model: torch.nn.Module, model_source: str | None = None, model_revision: str | None = None):
        super().__init__()
        check_single_semantic_codebook(model.config)
        self.model = model.eval()
        self.model_source, self.model_revision = model_source, model_revision
        self.sampling_rate, self.hop_length = model.config.sampling_rate, mimi_hop_length(model.config)
        self.vocab_size = model.config.codebook_size

    @classmethod
    def load_model(cls, path: str, **hub_kwargs) -> torch.nn.Module:
        return MimiModel.from_pretrained(path, **hub_kwargs)

    def init_config(self) -> dict:
        return {}

    def num_frames(self, num_samples: int) -> int:
        return math.ceil(num_samples / self.hop_length)

    @torch.inference_mode()
    def encode(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        waveform, _ = self._batch_waveform(waveform, lengths)
        waveform, _ = pad_to_whole_frames(waveform, self.hop_length)
        codes = self.model.encode(waveform[:, None].to(self.model.dtype), num_quantizers=1).audio_codes
        return codes[:, 0].long()  # (batch, frames)
