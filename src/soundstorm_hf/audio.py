"""Audio input/output shared by the package: read a file, turn any waveform into a clean mono tensor.

Every tokenizer expects a mono float waveform at its own sampling rate. `prepare_waveform` is the one place that
converts what users actually have (numpy or torch, int or float, mono or stereo in either layout, any rate) into
that, and rejects audio that would silently produce garbage tokens (empty, NaN, digital silence).
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import soundfile
import soxr
import torch

# Peak amplitude below which audio counts as digital silence (-120 dBFS).
SILENCE_PEAK = 1e-6


def load_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Read an audio file with soundfile: `(waveform (samples,) or (samples, channels), sampling_rate)`."""
    waveform, sampling_rate = soundfile.read(str(path), dtype="float32", always_2d=False)
    return waveform, sampling_rate


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
    if isinstance(waveform, torch.Tensor):
        waveform = waveform.detach().cpu().numpy()
    waveform = np.asarray(waveform)
    if np.issubdtype(waveform.dtype, np.integer):
        waveform = waveform / float(np.iinfo(waveform.dtype).max + 1)
    elif not np.issubdtype(waveform.dtype, np.floating):
        raise ValueError(f"Audio must hold integer or float samples, got dtype {waveform.dtype}.")
    waveform = waveform.astype(np.float32, copy=False)

    if waveform.size == 0:
        raise ValueError(f"Audio is empty (shape {tuple(waveform.shape)}).")
    if waveform.ndim == 2:
        waveform = _downmix(waveform)
    elif waveform.ndim != 1:
        raise ValueError(
            f"Unsupported channel layout: expected (samples,), (channels, samples) or (samples, channels), "
            f"got a {waveform.ndim}-D array of shape {tuple(waveform.shape)}."
        )
    if not np.isfinite(waveform).all():
        raise ValueError("Audio contains NaN or infinite samples.")
    if np.abs(waveform).max() <= SILENCE_PEAK:
        raise ValueError(f"Audio is silent (peak amplitude <= {SILENCE_PEAK}).")

    if target_sampling_rate is not None and target_sampling_rate != sampling_rate:
        waveform = soxr.resample(waveform, sampling_rate, target_sampling_rate, quality="HQ").astype(np.float32)
        sampling_rate = target_sampling_rate
    if min_duration is not None and len(waveform) < min_duration * sampling_rate:
        raise ValueError(
            f"Audio is too short: {len(waveform) / sampling_rate:.3f} s, at least {min_duration} s are needed."
        )
    return torch.from_numpy(np.ascontiguousarray(waveform))


def _downmix(waveform: np.ndarray) -> np.ndarray:
    """Average the channels of a 2-D waveform whose channel axis is its shorter one."""
    channel_axis = int(np.argmin(waveform.shape))
    num_channels, num_samples = waveform.shape[channel_axis], waveform.shape[1 - channel_axis]
    if num_channels == num_samples:
        raise ValueError(
            f"Ambiguous channel layout {tuple(waveform.shape)}: cannot tell channels from samples."
        )
    if num_channels > 2:
        raise ValueError(
            f"Unsupported channel layout {tuple(waveform.shape)}: {num_channels} channels, only mono or stereo "
            "audio is accepted."
        )
    return waveform.mean(axis=channel_axis)


def synthesize_speech(text: str, voice: str = "en", words_per_minute: int | None = None) -> tuple[np.ndarray, int]:
    """Speak `text` with the `espeak-ng` command-line synthesizer: `(waveform (samples,), sampling_rate)`.

    A source of real, if robotic, speech that needs no download: tests, the offline tokenizers' corpus and text
    front ends use it. `voice` is an espeak-ng voice with an optional variant, e.g. `"en+m3"` or `"en-us+f3"`.
    """
    command = ["espeak-ng", "-v", voice, "--stdout"]
    if words_per_minute is not None:
        command += ["-s", str(words_per_minute)]
    try:
        result = subprocess.run(command + [text], capture_output=True, check=True)
    except FileNotFoundError as error:
        raise RuntimeError("espeak-ng is not installed (Debian/Ubuntu: `apt-get install espeak-ng`).") from error
    except subprocess.CalledProcessError as error:
        raise ValueError(f"espeak-ng failed for voice {voice!r}: {error.stderr.decode().strip()}") from error
    waveform, sampling_rate = soundfile.read(io.BytesIO(result.stdout), dtype="float32")
    if waveform.size == 0 or np.abs(waveform).max() <= SILENCE_PEAK:
        raise ValueError(f"espeak-ng produced no speech for {text!r}.")
    return waveform, sampling_rate
