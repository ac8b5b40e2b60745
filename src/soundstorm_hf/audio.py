"""Audio input/output shared by the package: read a file or array block by block, turn it into a clean mono stream.

Every tokenizer expects a mono float waveform at its own sampling rate. `AudioSource` and `stream_waveform` are the
one place that converts what users actually have (a file; numpy or torch, int or float, mono or stereo in either
layout, any rate) into that, one block at a time so that memory does not grow with the length of the input, and
rejects audio that would silently produce garbage tokens (empty, NaN, digital silence, a damaged file).
`prepare_waveform` does the same for a whole array at once.
"""

from __future__ import annotations

import io
import os
import subprocess
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile
import soxr
import torch

# Peak amplitude below which audio counts as digital silence (-120 dBFS).
SILENCE_PEAK = 1e-6
# Samples (at the source's rate) read and resampled at a time when streaming: 16 s at 16 kHz.
BLOCK_SAMPLES = 1 << 18
# Speech level: mean power of 50 ms frames, gated as loudness meters gate (ITU-R BS.1770): frames under -70 dBFS, then
# frames more than 20 dB under the mean of the rest, are pauses and left out.
LEVEL_FRAME_SECONDS = 0.05
LEVEL_ABSOLUTE_GATE = 1e-7
LEVEL_RELATIVE_GATE = 1e-2
# What libsndfile reports as the length of a stream whose header does not give one (SF_COUNT_MAX).
UNKNOWN_LENGTH = 2**63 - 1


class AudioSource:
    """A file or an in-memory waveform, read block by block so that memory holds one block at a time.

    Accepts a file path, a `{"array", "sampling_rate"}` dict (as `datasets` yields), an `(array, sampling_rate)`
    tuple, or an array (numpy or torch; `(samples,)`, `(channels, samples)` or `(samples, channels)`; integer PCM or
    float) with `sampling_rate`. `num_samples` is known before reading: an array's length, or what a file's header
    claims, so audio longer than `max_seconds` is refused before anything is read. Errors are `ValueError`s whose
    message starts with `name`.
    """

    def __init__(self, audio, sampling_rate: int | None = None, name: str = "audio", max_seconds: float | None = None):
        self.name, self.max_seconds, self.path, self.array = name, max_seconds, None, None
        if isinstance(audio, (str, Path)):
            self.path = Path(audio)
            if not self.path.is_file():
                raise self.error(f"no such file: {self.path}")
            try:
                info = soundfile.info(str(self.path))
            except soundfile.LibsndfileError as error:
                raise self.error(f"cannot read {self.path}: {error}") from error
            if info.frames == UNKNOWN_LENGTH:
                raise self.error(f"the header of {self.path} does not give its length")
            self.sampling_rate, self.num_samples = info.samplerate, info.frames
            _check_channels(info.channels, f"{self.path} has")
        else:
            if isinstance(audio, dict):
                if "array" not in audio or "sampling_rate" not in audio:
                    raise self.error(f"the dict needs `array` and `sampling_rate` keys, got {sorted(audio)}")
                audio, sampling_rate = audio["array"], audio["sampling_rate"]
            elif isinstance(audio, tuple):
                audio, sampling_rate = audio
            if sampling_rate is None:
                raise self.error("an array without a `sampling_rate`")
            try:
                self.array = _samples_first(audio)  # (samples, channels)
            except ValueError as error:
                raise self.error(str(error).rstrip(".")) from error
            self.sampling_rate, self.num_samples = sampling_rate, self.array.shape[0]
        if self.num_samples == 0:
            raise self.error("audio is empty (0 samples)")
        if max_seconds is not None and self.duration > max_seconds:
            raise self.error(self._too_long(self.num_samples))

    @property
    def duration(self) -> float:
        return self.num_samples / self.sampling_rate

    def error(self, message: str) -> ValueError:
        return ValueError(f"{self.name}: {message}.")

    def blocks(self, block_samples: int = BLOCK_SAMPLES) -> Iterator[np.ndarray]:
        """Mono float32 blocks `(samples,)` of at most `block_samples`, in order."""
        for block in self.channel_blocks(block_samples):
            yield block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]

    def channel_blocks(self, block_samples: int = BLOCK_SAMPLES) -> Iterator[np.ndarray]:
        """Float32 blocks `(samples, channels)`, integer PCM scaled to [-1, 1].

        A file is read up to the end of the data actually there: one that holds fewer samples than its header
        claims is read with a warning naming it, one whose data cannot be decoded raises.
        """
        read = 0
        for block in self._file_blocks(block_samples) if self.path else self._array_blocks(block_samples):
            read += block.shape[0]
            if self.max_seconds is not None and read > self.max_seconds * self.sampling_rate:
                raise self.error(self._too_long(read))
            yield block
        if self.path is not None and read < self.num_samples:
            warnings.warn(
                f"{self.name}: {self.path} holds {read} samples where its header claims {self.num_samples}; "
                "using the samples that are there (is the file truncated?).",
                stacklevel=2,
            )

    def _file_blocks(self, block_samples: int) -> Iterator[np.ndarray]:
        with soundfile.SoundFile(str(self.path)) as file:
            # libsndfile reads what is there but notes chunk sizes that disagree with the file's length.
            mismatches = [line.strip() for line in file.extra_info.splitlines() if "should be" in line]
            if mismatches:
                warnings.warn(
                    f"{self.name}: the header of {self.path} disagrees with its length ({'; '.join(mismatches)}); "
                    f"using the {file.frames} samples that are there (is the file truncated?).",
                    stacklevel=3,
                )
            done = 0
            while True:
                try:
                    block = file.read(block_samples, dtype="float32", always_2d=True)  # (samples, channels)
                except soundfile.LibsndfileError as error:
                    raise self.error(
                        f"{self.path} cannot be read past sample {done} of the {file.frames} its header claims "
                        f"(truncated or damaged: {error})"
                    ) from error
                done += block.shape[0]
                if block.shape[0]:
                    yield block
                if block.shape[0] < block_samples:
                    return

    def _array_blocks(self, block_samples: int) -> Iterator[np.ndarray]:
        for start in range(0, self.num_samples, block_samples):
            yield _to_float(self.array[start : start + block_samples])

    def _too_long(self, num_samples: int) -> str:
        return f"too long: {num_samples / self.sampling_rate:.1f} s of audio, more than the {self.max_seconds:g} s allowed"


def stream_waveform(
    source: AudioSource, target_sampling_rate: int | None = None, block_samples: int = BLOCK_SAMPLES
) -> Iterator[np.ndarray]:
    """`source` as checked mono float32 blocks `(samples,)` at `target_sampling_rate` (default: unchanged).

    Resampling streams through `soxr.ResampleStream`, so the blocks join into exactly what resampling the whole
    waveform at once gives. Raises `ValueError` naming the problem for non-finite samples (at the block that holds
    them) and for digital silence (after the last block).
    """
    resampler = None
    if target_sampling_rate is not None and target_sampling_rate != source.sampling_rate:
        resampler = soxr.ResampleStream(source.sampling_rate, target_sampling_rate, 1, dtype="float32", quality="HQ")
    peak = 0.0
    for block in source.blocks(block_samples):
        if not np.isfinite(block).all():
            raise source.error("audio contains NaN or infinite samples")
        peak = max(peak, float(np.abs(block).max()))
        block = block if resampler is None else resampler.resample_chunk(block)
        if block.size:
            yield block
    if peak <= SILENCE_PEAK:
        raise source.error(f"audio is silent (peak amplitude <= {SILENCE_PEAK})")
    if resampler is not None:
        last = resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        if last.size:
            yield last


def frame_powers(waveform: np.ndarray, sampling_rate: int) -> np.ndarray:
    """Mean power of each whole 50 ms frame of `waveform` `(samples,)`: what `speech_power` measures, kept per frame
    so that a stream's level can be gathered block by block."""
    size = max(1, round(LEVEL_FRAME_SECONDS * sampling_rate))
    whole = np.asarray(waveform, dtype=np.float64)[: waveform.shape[0] // size * size]
    return np.square(whole).reshape(-1, size).mean(axis=1)


def speech_power(powers: np.ndarray) -> float | None:
    """Mean power of the speech among `frame_powers`, pauses gated out (so a prompt with long pauses is not judged
    quieter than the same voice without them); None when no frame is above -70 dBFS."""
    audible = powers[powers > LEVEL_ABSOLUTE_GATE]
    if not audible.size:
        return None
    return float(audible[audible > LEVEL_RELATIVE_GATE * audible.mean()].mean())


def load_audio(path: str | Path, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Read an audio file: `(waveform (samples,) or (samples, channels), sampling_rate)`.

    Reads up to the end of the data actually there, so a header that claims more (a truncated file, a forged
    length) costs no memory and is reported with a warning; files longer than `max_seconds` are refused from their
    header.
    """
    source = AudioSource(path, name="audio file", max_seconds=max_seconds)
    waveform = np.concatenate(list(source.channel_blocks()))  # (samples, channels)
    return (waveform[:, 0] if waveform.shape[1] == 1 else waveform), source.sampling_rate


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` (same folder and extension) to write to; renamed over `path` once the block
    completes, removed if it raises or is interrupted. So `path` always holds either what it held before or a
    complete output, never a part of one (a full disk, Ctrl-C, SIGTERM turned into an exception)."""
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial{target.suffix}")
    try:
        yield temporary
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def prepare_waveform(
    waveform: np.ndarray | torch.Tensor,
    sampling_rate: int,
    target_sampling_rate: int | None = None,
    min_duration: float | None = None,
) -> torch.Tensor:
    """Return `waveform` as a float32 mono tensor `(samples,)` at `target_sampling_rate` (default: unchanged).

    Stereo may be `(2, samples)` or `(samples, 2)`: the channel axis is the short one, and channels are averaged.
    Integer PCM is scaled to [-1, 1]. Raises `ValueError` naming the problem for empty, non-finite or silent audio,
    more than two channels, a layout whose channel axis cannot be told apart, or audio shorter than `min_duration`
    seconds.
    """
    source = AudioSource(waveform, sampling_rate, name="Audio")
    waveform = np.concatenate(list(stream_waveform(source, target_sampling_rate, block_samples=source.num_samples)))
    rate = target_sampling_rate or sampling_rate
    if min_duration is not None and len(waveform) < min_duration * rate:
        raise ValueError(f"Audio is too short: {len(waveform) / rate:.3f} s, at least {min_duration} s are needed.")
    return torch.from_numpy(np.ascontiguousarray(waveform))


def _samples_first(waveform) -> np.ndarray:
    """Any waveform layout -> `(samples, channels)` view, the channel axis being the shorter one."""
    if isinstance(waveform, torch.Tensor):
        waveform = waveform.detach().cpu().numpy()
    waveform = np.asarray(waveform)
    if not (np.issubdtype(waveform.dtype, np.integer) or np.issubdtype(waveform.dtype, np.floating)):
        raise ValueError(f"Audio must hold integer or float samples, got dtype {waveform.dtype}.")
    if waveform.size == 0:
        raise ValueError(f"Audio is empty (shape {tuple(waveform.shape)}).")
    if waveform.ndim == 1:
        return waveform[:, None]
    if waveform.ndim != 2:
        raise ValueError(
            f"Unsupported channel layout: expected (samples,), (channels, samples) or (samples, channels), "
            f"got a {waveform.ndim}-D array of shape {tuple(waveform.shape)}."
        )
    channel_axis = int(np.argmin(waveform.shape))
    if waveform.shape[0] == waveform.shape[1]:
        raise ValueError(f"Ambiguous channel layout {tuple(waveform.shape)}: cannot tell channels from samples.")
    _check_channels(waveform.shape[channel_axis], f"Unsupported channel layout {tuple(waveform.shape)}:")
    return waveform.T if channel_axis == 0 else waveform


def _check_channels(num_channels: int, where: str) -> None:
    if num_channels > 2:
        raise ValueError(f"{where} {num_channels} channels, only mono or stereo audio is accepted.")


def _to_float(block: np.ndarray) -> np.ndarray:
    """Integer PCM scaled to [-1, 1], or float samples, as float32."""
    if np.issubdtype(block.dtype, np.integer):
        block = block / float(np.iinfo(block.dtype).max + 1)
    return block.astype(np.float32, copy=False)


def synthesize_speech(text: str, voice: str = "en", words_per_minute: int | None = None) -> tuple[np.ndarray, int]:
    """Speak `text` with the `espeak-ng` command-line synthesizer: `(waveform (samples,), sampling_rate)`.

    A source of real, if robotic, speech that needs no download: tests, the offline tokenizers' corpus and text
    front ends use it. `voice` is an espeak-ng voice with an optional variant, e.g. `"en+m3"` or `"en-us+f3"`.
    The text goes in on standard input, never on the command line, so no text (`-f/etc/passwd`, `--help`) can
    become an option.
    """
    command = ["espeak-ng", "-v", voice, "--stdout", "--stdin"]
    if words_per_minute is not None:
        command += ["-s", str(words_per_minute)]
    try:
        result = subprocess.run(command, input=text.encode(), capture_output=True, check=True)
    except FileNotFoundError as error:
        raise RuntimeError("espeak-ng is not installed (Debian/Ubuntu: `apt-get install espeak-ng`).") from error
    except subprocess.CalledProcessError as error:
        raise ValueError(f"espeak-ng failed for voice {voice!r}: {error.stderr.decode().strip()}") from error
    if not result.stdout:  # nothing to say: no WAV at all
        raise ValueError(f"espeak-ng produced no speech for {text!r}.")
    waveform, sampling_rate = soundfile.read(io.BytesIO(result.stdout), dtype="float32")
    if waveform.size == 0 or np.abs(waveform).max() <= SILENCE_PEAK:
        raise ValueError(f"espeak-ng produced no speech for {text!r}.")
    return waveform, sampling_rate
