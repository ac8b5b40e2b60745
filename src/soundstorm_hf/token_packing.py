"""Compact files of training tokens, small enough to carry a corpus to a GPU machine that takes 64 MiB per call.

One file holds many utterances: their acoustic codes `(levels, frames)` and semantic ids `(frames_sem,)`, each kind
concatenated along time, as little-endian uint16 compressed with xz (LZMA), plus the lengths needed to cut them
apart again and optional per-utterance metadata (text, speaker) and a free-form `info` dict (e.g. the token dataset's
`TokenDatasetInfo`). On the corpus's 8 x 1024 k-means codes of mixed real and synthetic speech xz takes 9.4 bits
per code (8.7 where synthetic speech dominates) and 4.4 per 64-way semantic id, against 10 and 6 for plain bit
packing and 16 for the token dataset's int16 columns; it needs only Python's standard library and adapts to any
codebook size. Measured by `scripts/measure_token_packing.py`.

The container is an `.npz` read with `allow_pickle=False`; the header's sizes are checked against each other and
bound the decompression, so a damaged or foreign file fails with a one-line error instead of filling memory.
"""

from __future__ import annotations

import dataclasses
import json
import lzma
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

FORMAT = "soundstorm-packed-tokens"
VERSION = 1
MAX_ID = np.iinfo(np.uint16).max
MAX_METADATA_BYTES = 256 * 2**20  # far above any real file's (about 100 bytes an utterance)


@dataclasses.dataclass
class PackedTokens:
    """What a packed file holds: one entry per utterance in each list, `metadata` columns of the same length."""

    acoustic_ids: list[np.ndarray]  # each (levels, frames) int64
    semantic_ids: list[np.ndarray]  # each (frames_sem,) int64
    metadata: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    info: dict = dataclasses.field(default_factory=dict)


def _compress(data: bytes) -> np.ndarray:
    return np.frombuffer(lzma.compress(data), dtype=np.uint8)


def _decompress(blob: np.ndarray, max_bytes: int, name: str) -> bytes | None:
    """The stream's bytes, or None where it holds more than `max_bytes` (never expanded past one byte more)."""
    decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    try:
        data = decompressor.decompress(blob.tobytes(), max_length=max_bytes + 1)
    except lzma.LZMAError as error:
        raise ValueError(f"Packed tokens: the {name} stream is corrupt ({error}).") from error
    return data if len(data) <= max_bytes and decompressor.eof else None


def _decompress_ids(blob: np.ndarray, num_ids: int, name: str) -> np.ndarray:
    """Exactly `num_ids` uint16 ids, as int64."""
    data = _decompress(blob, 2 * num_ids, name)
    if data is None or len(data) != 2 * num_ids:
        raise ValueError(f"Packed tokens: the {name} stream does not hold the {num_ids} ids its header declares.")
    return np.frombuffer(data, dtype="<u2").astype(np.int64)


def _check_ids(arrays: Sequence[np.ndarray], ndim: int, name: str) -> list[np.ndarray]:
    checked = []
    for index, array in enumerate(arrays):
        array = np.asarray(array)
        if array.ndim != ndim or not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"{name}[{index}] must be a {ndim}-D integer array, got {array.dtype} {array.shape}.")
        if array.size and (array.min() < 0 or array.max() > MAX_ID):
            raise ValueError(f"{name}[{index}] holds ids outside [0, {MAX_ID}].")
        checked.append(array)
    return checked


def pack_tokens(
    path: str | Path,
    acoustic_ids: Sequence[np.ndarray],
    semantic_ids: Sequence[np.ndarray],
    metadata: dict[str, Sequence[str]] | None = None,
    info: dict | None = None,
) -> int:
    """Write utterances' tokens to `path` (an `.npz`; written to a temporary name, then renamed). Returns its size.

    `acoustic_ids[i]` is `(levels, frames_i)` and `semantic_ids[i]` is `(frames_sem_i,)`, ids in [0, 65535];
    `metadata` maps a column name to one string per utterance; `info` must be JSON-serializable.
    """
    acoustic = _check_ids(acoustic_ids, 2, "acoustic_ids")
    semantic = _check_ids(semantic_ids, 1, "semantic_ids")
    if len(acoustic) != len(semantic):
        raise ValueError(f"{len(acoustic)} acoustic but {len(semantic)} semantic utterances.")
    levels = {array.shape[0] for array in acoustic}
    if len(levels) > 1:
        raise ValueError(f"Every utterance needs the same number of acoustic levels, got {sorted(levels)}.")
    metadata = {name: [str(value) for value in values] for name, values in (metadata or {}).items()}
    for name, values in metadata.items():
        if len(values) != len(acoustic):
            raise ValueError(f"Metadata column {name!r} has {len(values)} values for {len(acoustic)} utterances.")
    num_levels = levels.pop() if levels else 0
    acoustic_lengths = np.array([array.shape[1] for array in acoustic], dtype=np.uint32)
    semantic_lengths = np.array([array.shape[0] for array in semantic], dtype=np.uint32)
    header = {"format": FORMAT, "version": VERSION, "num_levels": num_levels, "info": info or {}}
    all_acoustic = np.concatenate(acoustic, axis=1) if acoustic else np.zeros((0, 0), dtype=np.int64)  # (levels, sum)
    all_semantic = np.concatenate(semantic) if semantic else np.zeros(0, dtype=np.int64)

    path = Path(path)
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        with open(partial, "wb") as handle:
            np.savez(
                handle,
                header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
                metadata=_compress(json.dumps(metadata).encode()),  # text compresses 3-4x
                acoustic_lengths=acoustic_lengths,
                semantic_lengths=semantic_lengths,
                acoustic=_compress(all_acoustic.astype("<u2").tobytes()),  # level-major: each level's codes in time
                semantic=_compress(all_semantic.astype("<u2").tobytes()),
            )
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path.stat().st_size


def unpack_tokens(path: str | Path) -> PackedTokens:
    """Read a file written by `pack_tokens`; arrays come back as int64, in the order they were packed."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            header = json.loads(arrays["header"].tobytes().decode())
            acoustic_lengths, semantic_lengths = arrays["acoustic_lengths"], arrays["semantic_lengths"]
            acoustic_blob, semantic_blob, metadata_blob = arrays["acoustic"], arrays["semantic"], arrays["metadata"]
    except (OSError, KeyError, ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not a packed token file ({error}).") from error
    if not isinstance(header, dict) or header.get("format") != FORMAT or header.get("version") != VERSION:
        raise ValueError(f"{path} is not a version-{VERSION} {FORMAT} file.")
    num_levels = int(header["num_levels"])
    lengths_ok = (
        acoustic_lengths.ndim == semantic_lengths.ndim == 1
        and len(acoustic_lengths) == len(semantic_lengths)
        and np.issubdtype(acoustic_lengths.dtype, np.integer)
        and np.issubdtype(semantic_lengths.dtype, np.integer)
        and (acoustic_lengths >= 0).all()
        and (semantic_lengths >= 0).all()
        and num_levels >= 0
    )
    if not lengths_ok:
        raise ValueError(f"{path}: the utterance lengths in its header are inconsistent.")
    acoustic_lengths, semantic_lengths = acoustic_lengths.astype(np.int64), semantic_lengths.astype(np.int64)
    acoustic = _decompress_ids(acoustic_blob, num_levels * int(acoustic_lengths.sum()), "acoustic")
    semantic = _decompress_ids(semantic_blob, int(semantic_lengths.sum()), "semantic")
    acoustic = acoustic.reshape(num_levels, int(acoustic_lengths.sum()))  # (levels, sum of frames)
    cut_acoustic, cut_semantic = np.cumsum(acoustic_lengths)[:-1], np.cumsum(semantic_lengths)[:-1]
    metadata_bytes = _decompress(metadata_blob, MAX_METADATA_BYTES, "metadata")
    if metadata_bytes is None:
        raise ValueError(f"{path}: its metadata is larger than {MAX_METADATA_BYTES} bytes.")
    try:
        metadata = json.loads(metadata_bytes.decode())
    except ValueError as error:  # UnicodeDecodeError is one too
        raise ValueError(f"{path}: its metadata is not JSON ({error}).") from error
    if not isinstance(metadata, dict) or any(len(values) != len(acoustic_lengths) for values in metadata.values()):
        raise ValueError(f"{path}: a metadata column does not have one value per utterance.")
    count = len(acoustic_lengths)
    return PackedTokens(
        acoustic_ids=np.split(acoustic, cut_acoustic, axis=1) if count else [],
        semantic_ids=np.split(semantic, cut_semantic) if count else [],
        metadata=metadata,
        info=header.get("info", {}),
    )
