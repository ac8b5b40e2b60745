"""Streamed output: audio blocks handed out as they are decoded, and a WAV stream of unknown length for pipes."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile
import torch

from .audio import atomic_output

# RIFF and data sizes of a WAV whose length is unknown when its header is written (as sox and aplay write and read it).
UNKNOWN_SIZE = 0xFFFFFFFF


class AudioStream:
    """What a streaming pipeline call returns: iterate for output blocks `(samples,)` at `sampling_rate`, each as soon
    as it is decoded; they join into the whole output. `trace` holds the decoding trace of the frames generated so far
    when the call asked for it (`return_trace=True`). `close()` stops generating (so does dropping the stream)."""

    def __init__(self, blocks: Iterator[np.ndarray], sampling_rate: int, traces: list[torch.Tensor] | None):
        self.blocks, self.sampling_rate, self._traces = blocks, sampling_rate, traces

    def __iter__(self) -> AudioStream:
        return self

    def __next__(self) -> np.ndarray:
        return next(self.blocks)

    def close(self) -> None:
        self.blocks.close()

    def save(self, path: str | Path, subtype: str | None = None) -> int:
        """Writes the blocks to `path` as they come (format from the extension, `subtype` as `soundfile` names it),
        under a temporary name renamed to `path` when complete (`atomic_output`): an interrupted call leaves what
        was there. Returns the samples written."""
        written = 0
        with atomic_output(path) as partial:
            with soundfile.SoundFile(str(partial), "w", self.sampling_rate, 1, subtype) as file:
                for block in self:
                    file.write(block)
                    written += block.shape[0]
        return written

    @property
    def trace(self) -> torch.Tensor | None:
        """`(levels, frames)`: the forward pass of the whole call that fixed each generated token (None unasked)."""
        return None if self._traces is None else torch.cat(self._traces, dim=-1)


def wav_stream_header(sampling_rate: int) -> bytes:
    """The 44-byte header of a mono 16-bit PCM WAV of unknown length (RIFF and data sizes 0xFFFFFFFF)."""
    byte_rate, block_align = sampling_rate * 2, 2
    return (
        b"RIFF" + struct.pack("<I", UNKNOWN_SIZE) + b"WAVE"
        + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sampling_rate, byte_rate, block_align, 16)
        + b"data" + struct.pack("<I", UNKNOWN_SIZE)
    )  # fmt: skip


def write_wav_stream(blocks: Iterator[np.ndarray], file: BinaryIO, sampling_rate: int) -> int:
    """Writes `blocks` (float, within [-1, 1]) to `file` as a 16-bit WAV stream, flushing after each, so that a
    reader (`aplay`, `sox`) plays them as they come; returns the samples written."""
    header, written = wav_stream_header(sampling_rate), 0
    for block in blocks:  # the header goes with the first block: a call that fails at once writes nothing
        file.write(header + (np.clip(block, -1.0, 1.0) * 32767).round().astype("<i2").tobytes())
        file.flush()
        header, written = b"", written + block.shape[0]
    file.write(header)
    file.flush()
    return written
