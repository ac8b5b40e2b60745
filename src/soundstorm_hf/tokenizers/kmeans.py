"""The k-means quantizer every fitted tokenizer here shares: learn it with scikit-learn, apply it with torch, save it.

One class covers both uses. With one level it is the k-means of the AudioLM/SoundStorm semantic-token recipe; with
Q levels it is a residual quantizer (level q quantizes what levels 0..q-1 left), which orders levels coarse to fine
as an RVQ codec does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from sklearn.cluster import MiniBatchKMeans
from torch import nn

from .base import local_folder, read_tokenizer_config, split_hub_kwargs, write_tokenizer_config

CENTROIDS_NAME = "kmeans.safetensors"


class KMeansQuantizer(nn.Module):
    """Residual k-means over feature vectors: features `(..., dim)` <-> ids `(..., levels)`."""

    def __init__(self, centroids: list[torch.Tensor]):
        super().__init__()
        if not centroids or len({tuple(c.shape) for c in centroids}) != 1:
            raise ValueError("KMeansQuantizer needs one or more centroid tables of equal shape (codebook_size, dim).")
        self.codebooks = nn.ParameterList(nn.Parameter(c.float(), requires_grad=False) for c in centroids)

    @property
    def num_levels(self) -> int:
        return len(self.codebooks)

    @property
    def codebook_size(self) -> int:
        return self.codebooks[0].shape[0]

    @classmethod
    def fit(
        cls, features: torch.Tensor, codebook_size: int, num_levels: int = 1, seed: int = 0
    ) -> KMeansQuantizer:
        """Fit `num_levels` codebooks of `codebook_size` centroids to `features (frames, dim)`, level by level."""
        if features.ndim != 2 or features.shape[0] < codebook_size:
            raise ValueError(
                f"Fitting {codebook_size} clusters needs at least as many feature frames; got features of shape "
                f"{tuple(features.shape)}. Give more audio or fewer clusters."
            )
        residual = features.detach().cpu().double().numpy()
        centroids = []
        for level in range(num_levels):
            kmeans = MiniBatchKMeans(
                n_clusters=codebook_size, batch_size=4096, n_init=3, max_no_improvement=20, random_state=seed + level
            ).fit(residual)
            centroids.append(torch.from_numpy(kmeans.cluster_centers_).float())
            residual = residual - kmeans.cluster_centers_[kmeans.predict(residual)]
        return cls(centroids)

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        """Features `(..., dim)` -> ids `(..., levels)` of the nearest centroid at each level."""
        residual = features.float()
        ids = []
        for centroids in self.codebooks:
            # Squared distance up to the per-vector constant |x|^2: |c|^2 - 2 x.c
            scores = (centroids * centroids).sum(-1) - 2 * residual @ centroids.T  # (..., codebook_size)
            level_ids = scores.argmin(-1)
            residual = residual - centroids[level_ids]
            ids.append(level_ids)
        return torch.stack(ids, dim=-1)

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """Ids `(..., levels)` for the first `levels <= num_levels` levels -> summed centroids `(..., dim)`."""
        return sum(self.codebooks[level][ids[..., level]] for level in range(ids.shape[-1]))

    def save(self, directory: str | Path) -> None:
        tensors = {f"level_{index}": table.detach().cpu().contiguous() for index, table in enumerate(self.codebooks)}
        save_file(tensors, str(Path(directory) / CENTROIDS_NAME))

    @classmethod
    def load(cls, directory: str | Path) -> KMeansQuantizer:
        tensors = load_file(str(Path(directory) / CENTROIDS_NAME))
        return cls([tensors[f"level_{index}"] for index in range(len(tensors))])


def collect_features(
    extract: Callable[[torch.Tensor], torch.Tensor], waveforms: Iterable, max_frames: int | None
) -> torch.Tensor:
    """Run `extract` (waveform `(samples,)` -> features `(frames, dim)`) over `waveforms`; stack the frames.

    Stops once `max_frames` frames are collected (the first `max_frames` of the corpus), so a large corpus can be
    streamed without extracting it all.
    """
    chunks, total = [], 0
    for waveform in waveforms:
        features = extract(torch.as_tensor(waveform, dtype=torch.float32))
        chunks.append(features.cpu())
        total += features.shape[0]
        if max_frames is not None and total >= max_frames:
            break
    if not chunks:
        raise ValueError("No audio to fit on: the waveform iterable is empty.")
    return torch.cat(chunks)[:max_frames]


def fitted(quantizer: KMeansQuantizer | None, owner: object) -> KMeansQuantizer:
    """`quantizer`, or a clear error when `owner` has not been fitted yet."""
    if quantizer is None:
        raise ValueError(f"{type(owner).__name__} has no k-means centroids yet: call fit() or from_pretrained().")
    return quantizer


class FittedTokenizerMixin:
    """`save_pretrained` / `from_pretrained` for a tokenizer made of a constructor config and a `quantizer`.

    The folder holds the json (`config_name`, with `"type": tokenizer_type` and `init_config()`, the constructor's
    keyword arguments besides the quantizer) and the centroids.
    """

    config_name: str
    tokenizer_type: str
    quantizer: KMeansQuantizer | None

    def init_config(self) -> dict: ...

    def save_pretrained(self, directory: str | Path) -> None:
        quantizer = fitted(self.quantizer, self)
        write_tokenizer_config(directory, self.config_name, {"type": self.tokenizer_type, **self.init_config()})
        quantizer.save(directory)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, device: str | torch.device | None = None, **kwargs):
        """Load from a folder or Hub repo written by `save_pretrained`; other keyword arguments override the config."""
        hub_kwargs, overrides = split_hub_kwargs(kwargs)
        folder = local_folder(name_or_path, **hub_kwargs)
        config = read_tokenizer_config(folder, cls.config_name)
        if config is None:
            raise ValueError(f"{name_or_path} has no {cls.config_name}: it was not saved by this package.")
        config.pop("type")
        return cls(KMeansQuantizer.load(folder), **{**config, **overrides}).to(device or "cpu")


class KMeansSemanticMixin:
    """`fit` and `encode` for a semantic tokenizer that is k-means over its `features(waveform, lengths)`.

    The class provides `features` (`(batch, samples)`, `(batch,)` -> `(batch, frames, dim)`), the `quantizer`
    attribute and `default_num_clusters`.
    """

    default_num_clusters: int
    quantizer: KMeansQuantizer | None

    @property
    def vocab_size(self) -> int:
        return fitted(self.quantizer, self).codebook_size

    @torch.inference_mode()
    def fit(self, waveforms: Iterable, num_clusters: int | None = None, max_frames: int | None = 200_000, seed: int = 0):
        """Learn `num_clusters` centroids from mono waveforms `(samples,)` at `sampling_rate`; returns `self`."""

        def extract(waveform: torch.Tensor) -> torch.Tensor:
            return self.features(*self._batch_waveform(waveform, None))[0]

        features = collect_features(extract, waveforms, max_frames)
        self.quantizer = KMeansQuantizer.fit(features, num_clusters or self.default_num_clusters, seed=seed)
        self.quantizer.to(self.device)
        return self

    @torch.inference_mode()
    def encode(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        quantizer = fitted(self.quantizer, self)
        features = self.features(*self._batch_waveform(waveform, lengths))  # (batch, frames, dim)
        return quantizer.encode(features)[..., 0]  # (batch, frames)


class ResidualKMeansCodecMixin(FittedTokenizerMixin):
    """The code grid of an acoustic codec whose `quantizer` is residual k-means: one level per k-means stage."""

    @property
    def num_levels(self) -> int:
        return fitted(self.quantizer, self).num_levels

    @property
    def codebook_size(self) -> int:
        return fitted(self.quantizer, self).codebook_size
