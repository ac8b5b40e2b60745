"""Shared fixtures: real (synthetic) speech rendered with espeak-ng at test time, nothing downloaded."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before anything imports huggingface_hub: the Hub is out of reach here

import shutil  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from soundstorm_hf.audio import prepare_waveform, synthesize_speech  # noqa: E402

UTTERANCES = (
    "the quick brown fox jumps over the lazy dog",
    "seven green apples fell from the tree",
    "please call me back tomorrow morning",
    "a bright yellow boat sailed across the lake",
)
VOICES = ("en+m3", "en+f3", "en-us+m1")


@pytest.fixture(scope="session")
def espeak_speech():
    """`render(text, voice="en+m3", sampling_rate=16000) -> float32 (samples,)`: espeak-ng speech, cached."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    cache: dict[tuple, np.ndarray] = {}

    def render(text: str, voice: str = "en+m3", sampling_rate: int = 16000) -> np.ndarray:
        key = (text, voice, sampling_rate)
        if key not in cache:
            cache[key] = prepare_waveform(*synthesize_speech(text, voice), sampling_rate).numpy()
        return cache[key]

    return render


@pytest.fixture(scope="session")
def speech_corpus(espeak_speech) -> list[np.ndarray]:
    """Every utterance in every voice, 16 kHz: about 25 s of speech to fit the offline tokenizers on."""
    return [espeak_speech(text, voice) for voice in VOICES for text in UTTERANCES]


@pytest.fixture(scope="module")
def single_threaded_sklearn():
    """Fit k-means on one thread: on a small, busy machine scikit-learn's OpenMP threads spin-wait and make the
    tiny fits of the tests 30x slower."""
    with threadpool_limits(limits=1):
        yield
