"""The two interfaces the rest of the package codes against, and the save/load plumbing they share.

An `AcousticCodec` turns a waveform into RVQ codes `(batch, levels, frames)` and back; a `SemanticTokenizer` turns
a waveform into one token per frame `(batch, frames)`. Both are `nn.Module`s, so `.to(device)` moves them, and
both work on right-padded batches described by `lengths`.

Padding contract, shared by every implementation:
- `encode(waveform, lengths)`: samples at or past `lengths[i]` are replaced by zeros before encoding, so the output
  never depends on what the padding held. Item `i` has `num_frames(lengths[i])` valid frames; the frames after them
  are filler (codes or tokens of zeros). Whether the valid frames equal those of the item encoded alone depends on
  the model's receptive field and is documented per class; for neural models "equal" means up to float rounding, as
  the batch size changes the order of float operations, which can flip a near-tie between two codes.
- `decode(codes, lengths)`: codes at or past `lengths[i]` frames are ignored (they may hold anything, e.g. -100);
  the output has `codes.shape[-1] * hop_length` samples and is zero past `lengths[i] * hop_length`.
"""

from __future__ import annotations

import abc
import json
import math
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import hf_hub_download, snapshot_download
from huggingface_hub.constants import is_offline_mode
from huggingface_hub.errors import EntryNotFoundError, HFValidationError, LocalEntryNotFoundError
from huggingface_hub.utils import validate_repo_id
from torch import nn

CODEC_CONFIG_NAME = "soundstorm_codec.json"
SEMANTIC_CONFIG_NAME = "soundstorm_semantic.json"
# Keyword arguments of `from_pretrained` that are about fetching files, not about the tokenizer itself.
HUB_KWARGS = ("revision", "token", "cache_dir", "local_files_only")


class FramedAudioModule(nn.Module, abc.ABC):
    """What both token families share: a sampling rate, a whole number of samples per frame, batch checking."""

    sampling_rate: int
    hop_length: int  # samples per output frame; frame_rate = sampling_rate / hop_length exactly

    @property
    def frame_rate(self) -> float:
        return self.sampling_rate / self.hop_length

    @property
    def device(self) -> torch.device:
        tensor = next(iter(self.parameters()), None)
        if tensor is None:
            tensor = next(iter(self.buffers()), None)
        return tensor.device if tensor is not None else torch.device("cpu")

    @abc.abstractmethod
    def num_frames(self, num_samples: int) -> int:
        """Number of frames `encode` yields for `num_samples` samples (exact; see each class for its rule)."""

    @abc.abstractmethod
    def save_pretrained(self, directory: str | Path) -> None: ...

    @classmethod
    @abc.abstractmethod
    def from_pretrained(cls, name_or_path: str | Path, **kwargs): ...

    def _batch_waveform(
        self, waveform: torch.Tensor, lengths: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Check a waveform batch, zero its padding and move it to this module's device.

        Returns `waveform (batch, samples)` float32 and `lengths (batch,)` long.
        """
        waveform = torch.as_tensor(waveform)
        if waveform.ndim == 1:
            waveform = waveform.unsqueeze(0)
        if waveform.ndim != 2:
            raise ValueError(f"Waveform must be (batch, samples) or (samples,), got shape {tuple(waveform.shape)}.")
        if not waveform.is_floating_point():
            raise ValueError(f"Waveform must hold float samples, got dtype {waveform.dtype}.")
        batch_size, num_samples = waveform.shape
        if batch_size == 0 or num_samples == 0:
            raise ValueError(f"Waveform is empty (shape {tuple(waveform.shape)}).")
        waveform = waveform.to(self.device, torch.float32)
        lengths = _check_lengths(lengths, batch_size, num_samples, "samples", waveform.device)
        valid = length_mask(lengths, num_samples)  # (batch, samples)
        if not torch.isfinite(waveform[valid]).all():
            raise ValueError("Waveform contains NaN or infinite samples.")
        return waveform.where(valid, 0.0), lengths


class AcousticCodec(FramedAudioModule):
    """Waveform <-> residual-vector-quantized codes `(batch, levels, frames)`, levels ordered coarse to fine."""

    num_levels: int
    codebook_size: int

    @abc.abstractmethod
    def encode(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """`(batch, samples)` float at `sampling_rate` -> codes `(batch, num_levels, frames)` long."""

    @abc.abstractmethod
    def decode(self, codes: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Codes `(batch, levels, frames)`, `levels <= num_levels` (a coarse prefix) -> `(batch, frames * hop_length)`.

        `lengths` are valid lengths in frames.
        """

    def _check_codes(self, codes: torch.Tensor, lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Check codes for `decode`; return them with padded frames set to code 0, and `lengths` (batch,)."""
        codes = torch.as_tensor(codes)
        if codes.ndim != 3:
            raise ValueError(
                f"Codes must be (batch, levels, frames), got a {codes.ndim}-D tensor {tuple(codes.shape)}."
            )
        if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
            raise ValueError(f"Codes must be integer ids, got dtype {codes.dtype}.")
        batch_size, num_levels, num_frames = codes.shape
        if batch_size == 0 or num_frames == 0:
            raise ValueError(f"Codes are empty (shape {tuple(codes.shape)}).")
        if not 1 <= num_levels <= self.num_levels:
            raise ValueError(f"Codes have {num_levels} levels; this codec decodes 1 to {self.num_levels}.")
        codes = codes.to(self.device, torch.long)
        lengths = _check_lengths(lengths, batch_size, num_frames, "frames", codes.device)
        valid = length_mask(lengths, num_frames)[:, None, :]  # (batch, 1, frames)
        out_of_range = valid & ((codes < 0) | (codes >= self.codebook_size))
        if out_of_range.any():
            bad = codes[out_of_range]
            raise ValueError(
                f"Code ids out of range: expected 0 <= id < {self.codebook_size}, found {bad.min().item()}..."
                f"{bad.max().item()} in {bad.numel()} valid positions."
            )
        return codes.where(valid, 0), lengths

    def _finish_audio(self, audio: torch.Tensor, lengths: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Fit decoded audio `(batch, samples')` to `num_frames * hop_length` samples, zero past each length."""
        num_samples = num_frames * self.hop_length
        audio = audio[:, :num_samples]
        audio = nn.functional.pad(audio, (0, num_samples - audio.shape[-1]))
        return audio.where(length_mask(lengths * self.hop_length, num_samples), 0.0).float()


class SemanticTokenizer(FramedAudioModule):
    """Waveform -> one discrete token per frame `(batch, frames)`, the conditioning stream of SoundStorm."""

    vocab_size: int

    @abc.abstractmethod
    def encode(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """`(batch, samples)` float at `sampling_rate` -> token ids `(batch, frames)` long."""


def _check_lengths(
    lengths: torch.Tensor | None, batch_size: int, size: int, unit: str, device: torch.device
) -> torch.Tensor:
    if lengths is None:
        return torch.full((batch_size,), size, dtype=torch.long, device=device)
    lengths = torch.as_tensor(lengths, device=device)
    if lengths.shape != (batch_size,):
        raise ValueError(f"lengths must have shape ({batch_size},), got {tuple(lengths.shape)}.")
    if lengths.is_floating_point() or (lengths < 1).any() or (lengths > size).any():
        raise ValueError(f"lengths must be integers in [1, {size}] {unit}, got {lengths.tolist()}.")
    return lengths.long()


def pad_to_whole_frames(waveform: torch.Tensor, hop_length: int) -> tuple[torch.Tensor, int]:
    """Zero-pad `(batch, samples)` to a whole number of frames: `(batch, frames * hop_length)`, `frames`.

    Neural codecs' reference implementations do the same, which makes `ceil(samples / hop_length)` their exact
    frame count and keeps a partial last frame from seeing reflected or replicated samples.
    """
    num_frames = math.ceil(waveform.shape[-1] / hop_length)
    return nn.functional.pad(waveform, (0, num_frames * hop_length - waveform.shape[-1])), num_frames


def length_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """`(batch, size)` bool, True on the first `lengths[i]` positions of item `i`."""
    return torch.arange(size, device=lengths.device) < lengths[:, None]


# ----------------------------------------------------------------------------------------------------------------
# Saving and loading. A tokenizer folder holds one small json (CODEC_CONFIG_NAME or SEMANTIC_CONFIG_NAME) with a
# "type" key naming the class; the offline tokenizers add their centroids, the adapters either the Hub id of the
# transformers model they wrap or that model's own `save_pretrained` files.


def split_hub_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split `from_pretrained` keyword arguments into (Hub download arguments, everything else)."""
    hub = {key: kwargs[key] for key in HUB_KWARGS if kwargs.get(key) is not None}
    rest = {key: value for key, value in kwargs.items() if key not in HUB_KWARGS}
    return hub, rest


def read_tokenizer_config(name_or_path: str | Path, filename: str, **hub_kwargs) -> dict[str, Any] | None:
    """Our json from a local folder or a Hub repo, or None when the folder or repo has none."""
    path = Path(name_or_path)
    if path.is_dir():
        return json.loads((path / filename).read_text()) if (path / filename).is_file() else None
    try:
        local = hf_hub_download(str(name_or_path), filename, **hub_kwargs)
    except EntryNotFoundError:  # also raised offline when the file is not cached
        return None
    return json.loads(Path(local).read_text())


def write_tokenizer_config(directory: str | Path, filename: str, config: dict[str, Any]) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / filename).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def local_folder(name_or_path: str | Path, **hub_kwargs) -> Path:
    """A local folder with the files of `name_or_path`, downloading the Hub repo when it is not a folder."""
    path = Path(name_or_path)
    return path if path.is_dir() else Path(snapshot_download(str(name_or_path), **hub_kwargs))


def local_path_or_hub_id(name_or_path: str | Path, what: str) -> Path | None:
    """The local folder `name_or_path` names, or None for a Hub repo id.

    Fails at once, naming `what` and the path, where loading could only fail later and less clearly (or after a
    minute of Hub retries): a path that does not exist (anything that cannot be a repo id: absolute, `./`, `~`,
    two slashes), a file, or, offline (`HF_HUB_OFFLINE=1`), a repo id that is not in the Hub cache.
    """
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise NotADirectoryError(f"{what}: {path} is a file, not a folder.")
        return path
    try:
        validate_repo_id(str(name_or_path))
    except HFValidationError:
        raise FileNotFoundError(f"{what}: no such folder: {path}") from None
    if is_offline_mode():
        try:
            snapshot_download(str(name_or_path), local_files_only=True)
        except LocalEntryNotFoundError:
            raise FileNotFoundError(
                f"{what}: {name_or_path} is not a local folder, and the Hub is offline (HF_HUB_OFFLINE=1) with no "
                "cached copy of it."
            ) from None
    return None


def is_hub_id(source: str | None) -> bool:
    """True for a Hub repo id, False for a local path (or None): a Hub id can be recorded instead of weights."""
    return source is not None and not Path(source).exists()


class TransformersBackedMixin:
    """`save_pretrained` / `from_pretrained` for a tokenizer that wraps a transformers model (`self.model`).

    Saving records the model's Hub id when it came from the Hub (a few hundred bytes), and otherwise writes the
    model's own `save_pretrained` files into the same folder, so that the folder is also a plain transformers
    checkpoint. Loading accepts such a folder, or any transformers checkpoint of the right model type (Hub id or
    folder) that has no json of ours. The class sets `config_name`, `tokenizer_type`, `load_model(path, **hub_kwargs)`
    and `init_config()` (constructor keyword arguments besides the model), and its constructor takes `model`,
    `model_source` and `model_revision`.
    """

    config_name: str
    tokenizer_type: str
    model: nn.Module
    model_source: str | None
    model_revision: str | None

    def init_config(self) -> dict[str, Any]: ...

    @classmethod
    def load_model(cls, path: str, **hub_kwargs) -> nn.Module: ...

    def save_pretrained(self, directory: str | Path, save_model: bool | None = None) -> None:
        """Write the json and, if `save_model` (default: unless the model came from the Hub), the model weights."""
        if save_model is None:
            save_model = not is_hub_id(self.model_source)
        if save_model:
            self.save_model(directory)
        config = {"type": self.tokenizer_type, **self.init_config()}
        if not save_model:
            config.update(model=self.model_source, model_revision=self.model_revision)
        write_tokenizer_config(directory, self.config_name, config)

    def save_model(self, directory: str | Path) -> None:
        self.model.save_pretrained(directory)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, device: str | torch.device | None = None, **kwargs):
        """Load from a folder or Hub repo saved by `save_pretrained`, or from a plain transformers checkpoint.

        Hub arguments (`revision`, `token`, `cache_dir`, `local_files_only`) apply to `name_or_path`; any other
        keyword argument overrides the saved options.
        """
        hub_kwargs, options = split_hub_kwargs(kwargs)
        saved = read_tokenizer_config(name_or_path, cls.config_name, **hub_kwargs)
        if saved is None:  # a transformers checkpoint
            model_path, model_revision, folder = str(name_or_path), hub_kwargs.get("revision"), None
        else:
            folder = local_folder(name_or_path, **hub_kwargs)
            saved.pop("type")
            reference, model_revision = saved.pop("model", None), saved.pop("model_revision", None)
            model_path = reference or str(folder)
            options = {**saved, **options}
        model_hub_kwargs = {key: value for key, value in hub_kwargs.items() if key != "revision"}
        if model_revision is not None:
            model_hub_kwargs["revision"] = model_revision
        model = cls.load_model(model_path, **model_hub_kwargs)
        extra = cls.load_extra(folder, model_path, **model_hub_kwargs)
        wrapper = cls(model, model_source=model_path, model_revision=model_revision, **extra, **options)
        return wrapper.to(device or "cpu")

    @classmethod
    def load_extra(cls, folder: Path | None, model_path: str, **hub_kwargs) -> dict[str, Any]:
        """More constructor arguments read from our saved `folder` (None for a plain transformers checkpoint)."""
        return {}
