"""Semantic tokens as in AudioLM and SoundStorm: k-means clusters of one hidden layer of a self-supervised model.

Works with the transformers speech encoders whose blocks live in `model.encoder.layers`: HuBERT, wav2vec 2.0,
WavLM, Data2VecAudio (raw-waveform convolutional front end) and w2v-BERT 2.0 (filter-bank front end computed by
its feature extractor). Typical choices: HuBERT base layer 6 or 9 with 500 clusters, w2v-BERT 2.0 layer 7 or so
with 1024 clusters (the paper's tokenizer is w2v-BERT with 1024 clusters at 25 Hz; `pooling=2` halves 50 Hz).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoFeatureExtractor, AutoModel, SeamlessM4TFeatureExtractor

from .base import SEMANTIC_CONFIG_NAME, SemanticTokenizer, TransformersBackedMixin
from .kmeans import KMeansQuantizer, KMeansSemanticMixin, fitted
from .spectral import pool_frames


class SSLKMeansTokenizer(KMeansSemanticMixin, TransformersBackedMixin, SemanticTokenizer):
    """Hidden layer `layer` of an SSL speech model, optionally averaged over `pooling` frames, then k-means.

    Build one from any checkpoint of such a model and fit it, then save it; the folder holds our json, the
    centroids, and either the model's Hub id or its weights and feature extractor::

        tokenizer = SSLKMeansTokenizer.from_pretrained("facebook/hubert-base-ls960", layer=9, pooling=2)
        tokenizer.fit(waveforms, num_clusters=500)
        tokenizer.save_pretrained("hubert_l9_km500_25hz")

    `layer` counts transformer blocks from 1; blocks above it are dropped from the model at construction (their
    output is never used). The raw output of block `layer` is taken, before any final layer norm.

    Frames (exact): with a convolutional front end of kernels `k_i` and strides `s_i` (HuBERT, wav2vec 2.0:
    `(10, 3, 3, 3, 3, 2, 2)` and `(5, 2, 2, 2, 2, 2, 2)`), `n` samples give `f` frames by `f <- floor((f - k_i) / s_i)
    + 1` from `f = n`, i.e. `floor((n - 400) / 320) + 1` at 16 kHz; with w2v-BERT's filter banks (25 ms windows
    every 10 ms, stacked in pairs) `floor((floor((n - 400) / 160) + 1) / 2)`. Pooling then gives
    `ceil(f / pooling)` (a last partial group averages the frames it has). Audio too short for one frame (400
    samples for the convolutional front ends, 720 for w2v-BERT) is rejected.

    Padding: models whose convolutional front end uses group normalization over time (HuBERT base, wav2vec 2.0
    base) cannot mask padding, so a batch is encoded one item at a time, which makes every item's tokens exactly its
    own. Other models are run batched with an attention mask, which gives an item its tokens alone up to float
    rounding.
    """

    config_name = SEMANTIC_CONFIG_NAME
    tokenizer_type = "ssl_kmeans"
    default_num_clusters = 1024

    def __init__(
        self,
        model: torch.nn.Module,
        layer: int,
        pooling: int = 1,
        feature_extractor=None,
        quantizer: KMeansQuantizer | None = None,
        sampling_rate: int | None = None,
        model_source: str | None = None,
        model_revision: str | None = None,
    ):
        super().__init__()
        config = model.config
        layers = getattr(getattr(model, "encoder", None), "layers", None)
        if not isinstance(layers, torch.nn.ModuleList):
            raise ValueError(f"{type(model).__name__} has no `encoder.layers`: not a supported SSL speech model.")
        if not 1 <= layer <= len(layers):
            raise ValueError(f"layer must be in [1, {len(layers)}] for this model, got {layer}.")
        del layers[layer:]
        config.num_hidden_layers = layer
        self.model, self.layer, self.pooling = model.eval(), layer, pooling
        self.feature_extractor, self.quantizer = feature_extractor, quantizer
        self.model_source, self.model_revision = model_source, model_revision
        if feature_extractor is not None:
            sampling_rate = feature_extractor.sampling_rate
        self.sampling_rate = sampling_rate or 16000

        if hasattr(config, "conv_kernel") and hasattr(config, "conv_stride"):
            self._convolutions = list(zip(config.conv_kernel, config.conv_stride))
            ssl_hop_length = int(torch.tensor(config.conv_stride).prod())
        elif isinstance(feature_extractor, SeamlessM4TFeatureExtractor):
            self._convolutions = [(400, 160), (feature_extractor.stride, feature_extractor.stride)]
            ssl_hop_length = 160 * feature_extractor.stride
        else:
            raise ValueError(
                f"Cannot tell the frame rate of {type(model).__name__}: expected a convolutional front end "
                "(config.conv_kernel / conv_stride) or w2v-BERT's SeamlessM4TFeatureExtractor."
            )
        if model.main_input_name != "input_values" and feature_extractor is None:
            raise ValueError(f"{type(model).__name__} takes {model.main_input_name}: its feature extractor is needed.")
        self.hop_length = ssl_hop_length * pooling
        # Group norm over time sees the padding, so such models are run one item at a time.
        self._batched = getattr(config, "feat_extract_norm", "layer") != "group"
        self._captured: list[torch.Tensor] = []
        layers[layer - 1].register_forward_hook(self._capture)

    def _capture(self, module, inputs, output) -> None:
        self._captured.append(output[0] if isinstance(output, tuple) else output)

    def _ssl_frames(self, num_samples: int) -> int:
        frames = num_samples
        for kernel, stride in self._convolutions:
            frames = max(0, (frames - kernel) // stride + 1)
        return frames

    def num_frames(self, num_samples: int) -> int:
        return -(-self._ssl_frames(num_samples) // self.pooling)

    @classmethod
    def load_model(cls, path: str, **hub_kwargs) -> torch.nn.Module:
        return AutoModel.from_pretrained(path, **hub_kwargs)

    @classmethod
    def load_extra(cls, folder: Path | None, model_path: str, **hub_kwargs) -> dict:
        try:
            feature_extractor = AutoFeatureExtractor.from_pretrained(model_path, **hub_kwargs)
        except OSError:  # a checkpoint without preprocessor_config.json: raw waveform in
            feature_extractor = None
        quantizer = KMeansQuantizer.load(folder) if folder is not None else None
        return {"feature_extractor": feature_extractor, "quantizer": quantizer}

    def init_config(self) -> dict:
        return {"layer": self.layer, "pooling": self.pooling, "sampling_rate": self.sampling_rate}

    def save_model(self, directory: str | Path) -> None:
        self.model.save_pretrained(directory)
        if self.feature_extractor is not None:
            self.feature_extractor.save_pretrained(directory)

    def save_pretrained(self, directory: str | Path, save_model: bool | None = None) -> None:
        quantizer = fitted(self.quantizer, self)
        super().save_pretrained(directory, save_model)
        quantizer.save(directory)

    def features(self, waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Zero-padded `waveform (batch, samples)` -> pooled layer features `(batch, num_frames(samples), dim)`."""
        frame_lengths = torch.tensor([self._ssl_frames(n) for n in lengths.tolist()], device=lengths.device)
        if (frame_lengths < 1).any():
            raise ValueError(
                f"Audio is too short for {type(self.model).__name__}: {lengths.min().item()} samples give no frame."
            )
        items = [waveform[index, :length] for index, length in enumerate(lengths.tolist())]
        groups = [range(len(items))] if self._batched else [[index] for index in range(len(items))]
        features = None
        for group in groups:
            hidden = self._layer_output([items[index] for index in group])  # (len(group), frames', dim)
            if features is None:
                features = hidden.new_zeros(len(items), self._ssl_frames(waveform.shape[-1]), hidden.shape[-1])
            frames = min(hidden.shape[1], features.shape[1])
            features[list(group), :frames] = hidden[:, :frames].float()
        return pool_frames(features, frame_lengths, self.pooling)[0]

    def _layer_output(self, items: list[torch.Tensor]) -> torch.Tensor:
        if self.feature_extractor is not None:
            inputs = self.feature_extractor(
                [item.cpu().numpy() for item in items],
                sampling_rate=self.sampling_rate,
                padding=True,
                return_attention_mask=True,
                return_tensors="pt",
            )
        else:
            masks = [torch.ones_like(item, dtype=torch.long) for item in items]
            inputs = {
                "input_values": torch.nn.utils.rnn.pad_sequence(items, batch_first=True),
                "attention_mask": torch.nn.utils.rnn.pad_sequence(masks, batch_first=True),
            }
        inputs = {
            key: value.to(self.device, self.model.dtype if value.is_floating_point() else value.dtype)
            for key, value in inputs.items()
        }
        self._captured.clear()
        self.model(**inputs)
        return self._captured.pop()
