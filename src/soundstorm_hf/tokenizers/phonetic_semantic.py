"""A speaker-independent offline semantic tokenizer: k-means over the hidden states of a small CTC phone recognizer.

The offline stand-in for HuBERT + k-means. `OfflineMfccTokenizer`'s clusters follow the voice as much as the words;
a recognizer trained to emit phones (CTC, on many voices' transcribed speech) has to discard the voice, so clusters
of its hidden states follow what is said. `scripts/train_phonetic_tokenizer.py` trains the recognizer on the corpus
of `scripts/build_corpus.py` and fits the k-means; `scripts/measure_semantic_tokens.py` measures both tokenizers.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .base import SEMANTIC_CONFIG_NAME, SemanticTokenizer, length_mask, local_folder, read_tokenizer_config
from .base import split_hub_kwargs, write_tokenizer_config
from .kmeans import KMeansQuantizer, KMeansSemanticMixin, fitted
from .spectral import LogMelSpectrogram, normalize_per_utterance

RECOGNIZER_NAME = "phone_recognizer.safetensors"


class PhoneRecognizer(nn.Module):
    """Log-mels at 100 Hz -> strided conv to 25 Hz -> pre-norm Transformer -> per-frame phone logits (0 = blank).

    A convolutional relative position embedding (as in wav2vec 2.0) keeps the model free of a maximum length.
    Padding is exact: features past each item's valid frames are zeroed at every stage and attention ignores them.
    """

    def __init__(
        self,
        num_phones: int,
        hidden_size: int = 192,
        num_layers: int = 4,
        num_heads: int = 4,
        num_mels: int = 80,
        sampling_rate: int = 16000,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.config = {"num_phones": num_phones, "hidden_size": hidden_size, "num_layers": num_layers,
                       "num_heads": num_heads, "num_mels": num_mels, "sampling_rate": sampling_rate}
        self.sampling_rate, self.analysis_hop_length, self.subsampling = sampling_rate, sampling_rate // 100, 4
        self.frontend = LogMelSpectrogram(
            sampling_rate, n_fft=512, hop_length=self.analysis_hop_length, win_length=sampling_rate // 40,
            num_mels=num_mels, min_frequency=20.0, max_frequency=sampling_rate / 2 - 400,
        )
        self.subsample = nn.Conv1d(num_mels, hidden_size, kernel_size=8, stride=self.subsampling, padding=2)
        self.position = nn.Conv1d(hidden_size, hidden_size, kernel_size=15, padding=7, groups=hidden_size)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(hidden_size, num_heads, 4 * hidden_size, dropout, activation="gelu",
                                       batch_first=True, norm_first=True)
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(hidden_size)
        self.head = nn.Linear(hidden_size, num_phones + 1)

    @property
    def hop_length(self) -> int:
        return self.analysis_hop_length * self.subsampling

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor, output_layer: int | None = None):
        """Zero-padded `waveform (batch, frames * hop_length)` -> (`hidden_states` list, logits, frame lengths).

        `hidden_states[i]` is the output of layer `i` (index 0: the subsampled input), each `(batch, frames, hidden)`;
        with `output_layer`, layers after it are skipped and logits are None.
        """
        mel_lengths = (lengths + self.analysis_hop_length - 1) // self.analysis_hop_length
        frame_lengths = (lengths + self.hop_length - 1) // self.hop_length
        mels = normalize_per_utterance(self.frontend(waveform), mel_lengths)
        mels = mels * length_mask(mel_lengths, mels.shape[1])[..., None]
        if self.training:
            mels = spec_augment(mels)
        valid = length_mask(frame_lengths, waveform.shape[-1] // self.hop_length)[..., None]  # (batch, frames, 1)
        hidden = self.subsample(mels.transpose(1, 2)).transpose(1, 2) * valid
        hidden = hidden + nn.functional.gelu(self.position(hidden.transpose(1, 2)).transpose(1, 2)) * valid
        hidden_states = [hidden]
        for index, layer in enumerate(self.layers):
            if output_layer is not None and index >= output_layer:
                return hidden_states, None, frame_lengths
            hidden = layer(hidden, src_key_padding_mask=~valid[..., 0]) * valid
            hidden_states.append(hidden)
        return hidden_states, self.head(self.norm(hidden)), frame_lengths


def spec_augment(mels: torch.Tensor, time_masks: int = 2, time_width: int = 12, freq_masks: int = 2,
                 freq_width: int = 10) -> torch.Tensor:
    """Zero random bands of time frames and mel channels (SpecAugment), per item: robustness to what is missing."""
    batch, frames, channels = mels.shape
    keep = torch.ones_like(mels)
    for size, width, count, axis in ((frames, time_width, time_masks, 1), (channels, freq_width, freq_masks, 2)):
        for _ in range(count):
            widths = torch.randint(0, width + 1, (batch, 1), device=mels.device)
            starts = (torch.rand(batch, 1, device=mels.device) * (size - widths).clamp(min=1)).long()
            index = torch.arange(size, device=mels.device)[None]
            band = (index >= starts) & (index < starts + widths)  # (batch, size)
            keep = keep * (~band).float().unsqueeze(3 - axis)
    return mels * keep


class CtcPhoneticTokenizer(KMeansSemanticMixin, SemanticTokenizer):
    """k-means over layer `layer` of a `PhoneRecognizer`, 16 kHz in, 25 Hz tokens out.

    Frames: `num_frames(n) = ceil(n / 640)`, the rate of `OfflineMfccTokenizer`, so the two are interchangeable.
    Padding: a padded batch gives each item its tokens alone, up to float rounding (the Transformer's sums run in
    a batch-dependent order).
    Folder: `soundstorm_semantic.json` (recognizer shape, layer, phone inventory), the recognizer's weights
    (`phone_recognizer.safetensors`, about 7 MB at the default size) and the centroids (`kmeans.safetensors`).
    """

    config_name = SEMANTIC_CONFIG_NAME
    tokenizer_type = "ctc_phonetic_kmeans"
    default_num_clusters = 256

    def __init__(
        self,
        recognizer: PhoneRecognizer,
        quantizer: KMeansQuantizer | None = None,
        layer: int = 3,
        phones: list[str] | None = None,
    ):
        super().__init__()
        self.recognizer, self.quantizer, self.layer = recognizer.eval(), quantizer, layer
        self.phones = list(phones or [])
        self.sampling_rate, self.hop_length = recognizer.sampling_rate, recognizer.hop_length

    def num_frames(self, num_samples: int) -> int:
        return math.ceil(num_samples / self.hop_length)

    def features(self, waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Zero-padded `waveform (batch, samples)` -> layer-`layer` states `(batch, ceil(samples / 640), hidden)`."""
        frames = self.num_frames(waveform.shape[-1])
        waveform = nn.functional.pad(waveform, (0, frames * self.hop_length - waveform.shape[-1]))
        hidden_states, _, _ = self.recognizer(waveform, lengths, output_layer=self.layer)
        return hidden_states[self.layer]

    def save_pretrained(self, directory: str | Path) -> None:
        quantizer = fitted(self.quantizer, self)
        config = {"type": self.tokenizer_type, "layer": self.layer, "phones": self.phones,
                  "recognizer": self.recognizer.config}
        write_tokenizer_config(directory, self.config_name, config)
        save_file({k: v.contiguous() for k, v in self.recognizer.state_dict().items()},
                  str(Path(directory) / RECOGNIZER_NAME))
        quantizer.save(directory)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, device: str | torch.device | None = None, **kwargs):
        """Load a folder or Hub repo written by `save_pretrained`; `layer` may not be overridden (the centroids
        belong to one layer)."""
        hub_kwargs, overrides = split_hub_kwargs(kwargs)
        if overrides:
            raise ValueError(f"Unexpected arguments for {cls.__name__}.from_pretrained: {sorted(overrides)}.")
        folder = local_folder(name_or_path, **hub_kwargs)
        config = read_tokenizer_config(folder, cls.config_name)
        if config is None or config.get("type") != cls.tokenizer_type:
            raise ValueError(f"{name_or_path} has no {cls.config_name} of type {cls.tokenizer_type!r}.")
        recognizer = PhoneRecognizer(**config["recognizer"])
        recognizer.load_state_dict(load_file(str(folder / RECOGNIZER_NAME)))
        tokenizer = cls(recognizer, KMeansQuantizer.load(folder), config["layer"], config["phones"])
        return tokenizer.to(device or "cpu")
