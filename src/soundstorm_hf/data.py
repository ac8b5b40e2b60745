"""From an audio dataset to SoundStorm training batches: tokenize audio, record the token grid, batch by length.

`prepare_dataset.py` runs `AudioTokenizer` over a `datasets` audio dataset and writes a token dataset with the
columns `semantic_ids` (frames_sem,), `acoustic_ids` (levels, frames), `num_frames`, `duration` and whatever
metadata it kept, plus a `TokenDatasetInfo` json that says which tokenizers made the tokens. `train.py` checks that
json against the model config (`TokenDatasetInfo.check`), then batches rows of similar length together
(`LengthGroupedBatchSampler`) and masks them with `SoundStormDataCollator`.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Audio, Dataset, Features, IterableDataset, List, Value

from .audio import SILENCE_PEAK, prepare_waveform
from .configuration_soundstorm import SoundStormConfig

TOKENS_INFO_NAME = "soundstorm_tokens.json"
TOKEN_COLUMNS = ("semantic_ids", "acoustic_ids")
# Why a row was left out of the token dataset; "" means it was kept.
DROP_REASONS = ("decode_error", "empty", "invalid", "too_short", "silent")
# Column names that common speech datasets use for the metadata worth keeping, most specific first.
METADATA_CANDIDATES = {
    "text": ("text_normalized", "normalized_text", "text", "transcription", "sentence", "transcript"),
    "speaker_id": ("speaker_id", "speaker", "client_id"),
}


@dataclasses.dataclass
class TokenDatasetInfo:
    """The token grid of a token dataset and the tokenizers that made it, saved next to it as `soundstorm_tokens.json`.

    A tokenizer saved inside the token dataset's folder (or Hub repo) is recorded by its relative folder name, so
    the dataset stays usable once moved or pushed; anything else is recorded as given (a Hub id or a path).
    """

    codec_name_or_path: str
    semantic_tokenizer_name_or_path: str
    num_levels: int
    codebook_size: int
    semantic_vocab_size: int
    acoustic_frame_rate: float
    semantic_frame_rate: float
    codec_sampling_rate: int
    semantic_sampling_rate: int
    source: dict[str, Any] = dataclasses.field(default_factory=dict)  # dataset name, config, split
    num_rows: int | None = None
    hours: float | None = None
    dropped: dict[str, int] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_tokenizers(cls, codec, semantic_tokenizer, codec_name: str, semantic_name: str, **extra) -> TokenDatasetInfo:
        return cls(
            codec_name_or_path=codec_name,
            semantic_tokenizer_name_or_path=semantic_name,
            num_levels=codec.num_levels,
            codebook_size=codec.codebook_size,
            semantic_vocab_size=semantic_tokenizer.vocab_size,
            acoustic_frame_rate=codec.frame_rate,
            semantic_frame_rate=semantic_tokenizer.frame_rate,
            codec_sampling_rate=codec.sampling_rate,
            semantic_sampling_rate=semantic_tokenizer.sampling_rate,
            **extra,
        )

    def save(self, directory: str | Path) -> None:
        path = Path(directory) / TOKENS_INFO_NAME
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> TokenDatasetInfo:
        path = Path(directory) / TOKENS_INFO_NAME
        if not path.is_file():
            raise FileNotFoundError(
                f"{directory} has no {TOKENS_INFO_NAME}: it was not written by training/prepare_dataset.py, so the "
                "tokenizers behind its tokens are unknown."
            )
        return cls(**json.loads(path.read_text()))

    def model_config_kwargs(self) -> dict[str, Any]:
        """The `SoundStormConfig` fields fixed by the tokens."""
        return dict(
            num_levels=self.num_levels,
            codebook_size=self.codebook_size,
            semantic_vocab_size=self.semantic_vocab_size,
            acoustic_frame_rate=self.acoustic_frame_rate,
            semantic_frame_rate=self.semantic_frame_rate,
        )

    def check(self, config: SoundStormConfig) -> None:
        """Raise a `ValueError` listing every field of the token grid on which `config` disagrees with the tokens."""
        mismatches = [
            f"{name}: tokens have {value}, model config has {getattr(config, name)}"
            for name, value in self.model_config_kwargs().items()
            if not math.isclose(float(getattr(config, name)), float(value))
        ]
        if mismatches:
            raise ValueError(
                "The token dataset does not fit the model: " + "; ".join(mismatches) + ". Build the model config from "
                "the dataset (leave these fields unset) or re-tokenize with matching tokenizers."
            )

    def resolve(self, name_or_path: str, dataset_location: str | Path) -> str:
        """A tokenizer recorded relative to the dataset, as a path; anything else unchanged."""
        local = Path(dataset_location) / name_or_path
        return str(local) if local.is_dir() else name_or_path


def token_features(num_levels: int, codebook_size: int, semantic_vocab_size: int, metadata: Sequence[str]) -> Features:
    """Schema of a token dataset; ids are stored as int16 whenever they fit, halving the disk of int32."""

    def id_type(vocab_size: int) -> Value:
        return Value("int16" if vocab_size <= np.iinfo(np.int16).max else "int32")

    features = {
        "semantic_ids": List(id_type(semantic_vocab_size)),  # (frames_sem,)
        "acoustic_ids": List(List(id_type(codebook_size)), length=num_levels),  # (levels, frames)
        "num_frames": Value("int32"),
        "duration": Value("float32"),
    }
    features.update({name: Value("string") for name in metadata})
    return Features(features)


def find_audio_column(dataset: Dataset | IterableDataset, name: str | None = None) -> str:
    """The column holding audio: `name` when given (and present), else the only column of type `Audio`."""
    features = dataset.features or {}
    if name is not None:
        if name not in features:
            raise ValueError(f"No audio column {name!r}; the dataset has {sorted(features)}.")
        return name
    audio = [column for column, feature in features.items() if isinstance(feature, Audio)]
    if len(audio) != 1:
        raise ValueError(
            f"Cannot tell the audio column: {len(audio)} columns of type Audio ({audio}) among {sorted(features)}. "
            "Name it with --audio_column."
        )
    return audio[0]


def find_metadata_columns(dataset: Dataset | IterableDataset, **given: str | None) -> dict[str, str]:
    """`{output name: source column}` for the metadata to keep (`text`, `speaker_id`), given or recognised by name."""
    columns = set(dataset.features or {})
    found = {}
    for output, candidates in METADATA_CANDIDATES.items():
        source = given.get(output)
        if source is not None and source not in columns:
            raise ValueError(f"No {output} column {source!r}; the dataset has {sorted(columns)}.")
        source = source or next((c for c in candidates if c in columns), None)
        if source is not None:
            found[output] = source
    return found


def decode_audio(entry: dict[str, Any]) -> tuple[np.ndarray, int]:
    """An undecoded `Audio` entry (`bytes` and/or `path`) or a decoded one (`array`) -> (waveform, sampling rate).

    Decoding ourselves (the column cast to `Audio(decode=False)`) lets one broken file drop one row instead of
    failing the whole batch inside `datasets`.
    """
    if entry.get("array") is not None:
        return np.asarray(entry["array"]), int(entry["sampling_rate"])
    from torchcodec.decoders import AudioDecoder  # imported late: only needed when preparing data

    samples = AudioDecoder(entry.get("bytes") or entry["path"]).get_all_samples()
    return samples.data.numpy(), int(samples.sample_rate)  # (channels, samples)


def check_waveform(waveform: np.ndarray, sampling_rate: int, min_duration: float) -> str:
    """Why a decoded waveform is unusable (one of `DROP_REASONS`), or "" when it is usable."""
    if waveform.size == 0:
        return "empty"
    if not np.isfinite(waveform).all():
        return "invalid"
    if max(waveform.shape) < min_duration * sampling_rate:
        return "too_short"
    if np.abs(waveform).max() <= SILENCE_PEAK:
        return "silent"
    return ""


class AudioTokenizer:
    """A batched `datasets.map` function: audio rows in, token rows out, with a `drop_reason` for unusable rows.

    Each row is decoded once and resampled to each tokenizer's rate; the usable rows of a batch are then padded and
    encoded together (on the tokenizers' device). Dropped rows come out with empty tokens and a reason, so that the
    caller can count the reasons before filtering them out.
    """

    def __init__(self, codec, semantic_tokenizer, audio_column: str, metadata: dict[str, str], min_duration: float):
        self.codec, self.semantic_tokenizer = codec, semantic_tokenizer
        self.audio_column, self.metadata, self.min_duration = audio_column, metadata, min_duration

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        size = len(batch[self.audio_column])
        reasons, acoustic_audio, semantic_audio, durations = [""] * size, {}, {}, [0.0] * size
        for index, entry in enumerate(batch[self.audio_column]):
            try:
                waveform, rate = decode_audio(entry)
            except Exception:  # any decoder failure (corrupt file, unknown format) drops this row only
                reasons[index] = "decode_error"
                continue
            reasons[index] = check_waveform(waveform, rate, self.min_duration)
            if reasons[index]:
                continue
            durations[index] = max(waveform.shape) / rate
            try:
                acoustic_audio[index] = prepare_waveform(waveform, rate, self.codec.sampling_rate)
                semantic_audio[index] = prepare_waveform(waveform, rate, self.semantic_tokenizer.sampling_rate)
            except ValueError:  # e.g. more than two channels
                reasons[index] = "invalid"
        kept = [index for index in range(size) if not reasons[index]]
        acoustic = encode_batch(self.codec, [acoustic_audio[i] for i in kept])
        semantic = encode_batch(self.semantic_tokenizer, [semantic_audio[i] for i in kept])
        acoustic_ids, semantic_ids = [[]] * size, [[]] * size
        for index, codes, tokens in zip(kept, acoustic, semantic):
            acoustic_ids[index], semantic_ids[index] = codes.tolist(), tokens.tolist()
        output = dict(
            semantic_ids=semantic_ids,
            acoustic_ids=acoustic_ids,
            num_frames=[len(codes[0]) if codes else 0 for codes in acoustic_ids],
            duration=durations,
            drop_reason=reasons,
        )
        for name, column in self.metadata.items():
            output[name] = [None if value is None else str(value) for value in batch[column]]
        return output


def encode_batch(tokenizer, waveforms: list[torch.Tensor]) -> list[torch.Tensor]:
    """Encode mono waveforms of any lengths as one padded batch; each item's tokens cut to its own frame count.

    Returns `(levels, frames_i)` codes for a codec, `(frames_i,)` ids for a semantic tokenizer.
    """
    if not waveforms:
        return []
    lengths = torch.tensor([len(waveform) for waveform in waveforms])
    padded = torch.nn.utils.rnn.pad_sequence(waveforms, batch_first=True)  # (batch, samples)
    tokens = tokenizer.encode(padded.to(tokenizer.device), lengths.to(tokenizer.device)).cpu()
    return [item[..., : tokenizer.num_frames(int(length))] for item, length in zip(tokens, lengths)]


def check_token_columns(dataset: Dataset) -> None:
    missing = [column for column in TOKEN_COLUMNS if column not in dataset.column_names]
    if missing:
        raise ValueError(
            f"The token dataset lacks the column(s) {missing} (it has {dataset.column_names}); "
            "make it with training/prepare_dataset.py."
        )


def frame_counts(dataset: Dataset) -> list[int]:
    """Acoustic frames of every row: the `num_frames` column, or counted from `acoustic_ids` when it is absent."""
    if "num_frames" in dataset.column_names:
        return dataset["num_frames"]
    counted = dataset.map(
        lambda ids: {"num_frames": [len(codes[0]) for codes in ids]},
        input_columns="acoustic_ids",
        batched=True,
        remove_columns=dataset.column_names,
    )
    return counted["num_frames"]


class LengthGroupedBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of rows of similar length, in random order: little padding, yet every epoch shuffled.

    Rows are shuffled, cut into mega-batches of `mega_batch_size` batches, each mega-batch is sorted by length and
    cut into batches, and the batches are shuffled. With `max_frames_per_batch`, the whole set is sorted instead and
    cut into batches of as many rows as fit that many padded frames (rows x the longest), so short rows come in large
    batches and every step costs about the same; `batch_size` is then unused. Rows of equal length (those cut to the
    longest window) are shuffled among themselves, so batches differ from epoch to epoch while their number does not.
    The order depends only on `seed` and the epoch (`set_epoch`), so a resumed run sees the same batches as an
    uninterrupted one.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        mega_batch_size: int = 50,
        max_frames_per_batch: int | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be positive, got {batch_size}.")
        self.lengths = torch.as_tensor(lengths)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.drop_last, self.mega_batch_size = drop_last, mega_batch_size
        self.epoch = 0
        self.budget_sizes = None if max_frames_per_batch is None else batch_sizes_within(
            self.lengths.sort(descending=True).values.tolist(), max_frames_per_batch
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.budget_sizes is not None:
            return len(self.budget_sizes)
        count = len(self.lengths) / self.batch_size
        return math.floor(count) if self.drop_last else math.ceil(count)

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator) if self.shuffle else torch.arange(len(self.lengths))
        batches = []
        if self.budget_sizes is not None:
            order = order[torch.argsort(self.lengths[order], descending=True, stable=True)].tolist()
            for start, size in zip(itertools.accumulate(self.budget_sizes, initial=0), self.budget_sizes):
                batches.append(order[start : start + size])
        else:
            span = self.batch_size * self.mega_batch_size
            for start in range(0, len(order), span):
                mega = order[start : start + span]
                mega = mega[torch.argsort(self.lengths[mega], descending=True, stable=True)]
                batches.extend(mega[i : i + self.batch_size].tolist() for i in range(0, len(mega), self.batch_size))
            if self.drop_last and batches and len(batches[-1]) < self.batch_size:
                batches.pop()
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        yield from batches


def batch_sizes_within(sorted_lengths: Sequence[int], max_frames: int) -> list[int]:
    """Sizes of consecutive batches of `sorted_lengths` (longest first) whose rows x longest stay within `max_frames`;
    a row longer than that is a batch of its own."""
    sizes, start = [], 0
    while start < len(sorted_lengths):
        size = max(1, max_frames // max(1, sorted_lengths[start]))
        sizes.append(min(size, len(sorted_lengths) - start))
        start += sizes[-1]
    return sizes
