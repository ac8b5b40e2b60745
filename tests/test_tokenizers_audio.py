"""Audio utilities: reading, downmixing, resampling and the errors that name what is wrong with the input."""

import numpy as np
import pytest
import soundfile
import torch

from soundstorm_hf.audio import load_audio, prepare_waveform, synthesize_speech


def tone(num_samples: int, rate: int = 16000, frequency: float = 440.0) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * frequency * np.arange(num_samples) / rate)).astype(np.float32)


def test_stereo_layouts_downmix_the_same(tmp_path):
    left, right = tone(1000), tone(1000, frequency=220.0)
    expected = (left + right) / 2
    channels_first = np.stack([left, right])
    for stereo in (channels_first, channels_first.T, torch.from_numpy(channels_first)):
        torch.testing.assert_close(prepare_waveform(stereo, 16000), torch.from_numpy(expected))
    soundfile.write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    waveform, rate = load_audio(tmp_path / "stereo.wav")
    assert rate == 16000 and waveform.shape == (1000, 2)
    torch.testing.assert_close(prepare_waveform(waveform, rate), torch.from_numpy(expected))


def test_resampling_and_integer_pcm():
    resampled = prepare_waveform(tone(22050, rate=22050), 22050, 16000)
    assert resampled.dtype == torch.float32 and resampled.shape == (16000,)
    pcm = (tone(1000) * 32767).astype(np.int16)
    torch.testing.assert_close(prepare_waveform(pcm, 16000), torch.from_numpy(tone(1000)), atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "waveform, message",
    [
        (np.zeros(0, dtype=np.float32), "empty"),
        (np.zeros((2, 0), dtype=np.float32), "empty"),
        (np.array([0.1, np.nan, 0.2], dtype=np.float32), "NaN"),
        (np.array([0.1, np.inf, 0.2], dtype=np.float32), "infinite"),
        (np.zeros(16000, dtype=np.float32), "silent"),
        (np.zeros((3, 16000), dtype=np.float32) + 0.1, "3 channels"),
        (np.zeros((16000, 6), dtype=np.float32) + 0.1, "6 channels"),
        (np.ones((2, 2), dtype=np.float32), "Ambiguous"),
        (np.ones((2, 1, 100), dtype=np.float32), "3-D"),
        (np.array(["a", "b"]), "dtype"),
    ],
)
def test_bad_audio_is_named(waveform, message):
    with pytest.raises(ValueError, match=message):
        prepare_waveform(waveform, 16000)


def test_minimum_duration():
    assert prepare_waveform(tone(8000), 16000, min_duration=0.5).shape == (8000,)
    with pytest.raises(ValueError, match="too short: 0.499 s"):
        prepare_waveform(tone(7990), 16000, min_duration=0.5)


def test_espeak_speech(espeak_speech):
    waveform, rate = synthesize_speech("hello", "en+f3")
    assert rate == 22050 and waveform.dtype == np.float32 and 0.1 < len(waveform) / rate < 2
    assert espeak_speech("hello", "en+f3") is espeak_speech("hello", "en+f3")  # cached
    with pytest.raises(ValueError, match="no speech"):
        synthesize_speech("", "en")
