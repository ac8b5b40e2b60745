"""The quality numbers every script and model card quotes: word error rate, speaker similarity, median F0.

All three run offline from what PyPI wheels ship: PocketSphinx's English model (WER, with jiwer), Resemblyzer's
speaker encoder (cosine similarity of utterance embeddings) and librosa's pYIN (F0). They are imported on first use,
so the package imports without them; install them with `pip install "soundstorm-hf[eval]"`.

Each function takes one mono waveform (numpy or torch, any sampling rate) and resamples it itself, so callers pass
whatever their codec or pipeline produced.
"""

from __future__ import annotations

import functools
import re

import numpy as np
import soxr
import torch

ASR_SAMPLING_RATE = 16000
_PUNCTUATION = re.compile(r"[^\w\s']|_")


def _mono(waveform, sampling_rate: int, target_sampling_rate: int) -> np.ndarray:
    if isinstance(waveform, torch.Tensor):
        waveform = waveform.detach().cpu().numpy()
    waveform = np.asarray(waveform, dtype=np.float32).squeeze()
    if waveform.ndim != 1 or waveform.size == 0:
        raise ValueError(f"Expected one non-empty mono waveform, got shape {tuple(np.shape(waveform))}.")
    if sampling_rate != target_sampling_rate:
        waveform = soxr.resample(waveform, sampling_rate, target_sampling_rate)
    return waveform


def _missing(package: str) -> ImportError:
    return ImportError(f"{package} is needed for evaluation: pip install 'soundstorm-hf[eval]'.")


# ---------------------------------------------------------------------------------------------------- content


def normalize_text(text: str) -> str:
    """Lowercase, drop punctuation (keeping apostrophes inside words), collapse spaces: what the WER compares."""
    text = _PUNCTUATION.sub(" ", text.lower().replace("-", " "))
    text = " ".join(word.strip("'") for word in text.split())
    return " ".join(text.split())


@functools.cache
def _decoder():
    try:
        from pocketsphinx import Decoder
    except ImportError as error:
        raise _missing("pocketsphinx") from error
    return Decoder(samprate=ASR_SAMPLING_RATE, loglevel="FATAL")


def transcribe(waveform, sampling_rate: int) -> str:
    """English transcript of a waveform by PocketSphinx's default US English model (the one its wheel ships)."""
    audio = _mono(waveform, sampling_rate, ASR_SAMPLING_RATE)
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)
    decoder = _decoder()
    decoder.start_utt()
    decoder.process_raw(pcm.tobytes(), full_utt=True)
    decoder.end_utt()
    hypothesis = decoder.hyp()
    return hypothesis.hypstr if hypothesis is not None else ""


def word_error_rate(references: str | list[str], hypotheses: str | list[str]) -> float:
    """Corpus WER (total edits / total reference words) after `normalize_text` on both sides."""
    try:
        import jiwer
    except ImportError as error:
        raise _missing("jiwer") from error
    references = [references] if isinstance(references, str) else list(references)
    hypotheses = [hypotheses] if isinstance(hypotheses, str) else list(hypotheses)
    references = [normalize_text(text) for text in references]
    if not all(references):
        raise ValueError("Every reference must hold at least one word after normalization.")
    return float(jiwer.wer(references, [normalize_text(text) for text in hypotheses]))


# ------------------------------------------------------------------------------------------------------ voice


@functools.cache
def _voice_encoder():
    try:
        from resemblyzer import VoiceEncoder
    except ImportError as error:  # resemblyzer imports pkg_resources: setuptools<81
        raise _missing("resemblyzer (with setuptools<81)") from error
    return VoiceEncoder("cpu", verbose=False)


def speaker_embedding(waveform, sampling_rate: int) -> np.ndarray:
    """Resemblyzer's unit-norm d-vector (256,) of one utterance, after its own silence trimming."""
    from resemblyzer import preprocess_wav

    audio = preprocess_wav(_mono(waveform, sampling_rate, 16000), source_sr=16000)
    if audio.size == 0:
        raise ValueError("No voiced audio left after Resemblyzer's silence trimming.")
    return _voice_encoder().embed_utterance(audio)


def speaker_similarity(first, second, sampling_rate: int) -> float:
    """Cosine similarity of two utterances' speaker embeddings, in [-1, 1] (same speaker: higher)."""
    return cosine_similarity(speaker_embedding(first, sampling_rate), speaker_embedding(second, sampling_rate))


def cosine_similarity(first: np.ndarray, second: np.ndarray) -> float:
    """Cosine of two embeddings: compare one output with both the target's and the source's embedding."""
    return float(first @ second / (np.linalg.norm(first) * np.linalg.norm(second)))


# -------------------------------------------------------------------------------------------------------- F0


def median_f0(waveform, sampling_rate: int, min_f0: float = 50.0, max_f0: float = 500.0) -> float:
    """Median fundamental frequency (Hz) over the voiced frames found by pYIN; NaN when nothing is voiced."""
    try:
        import librosa
    except ImportError as error:
        raise _missing("librosa") from error
    audio = _mono(waveform, sampling_rate, 16000)
    f0, voiced, _ = librosa.pyin(audio, fmin=min_f0, fmax=max_f0, sr=16000, frame_length=1024)
    voiced_f0 = f0[voiced & np.isfinite(f0)]
    return float(np.median(voiced_f0)) if voiced_f0.size else float("nan")
