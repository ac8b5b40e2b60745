"""The evaluation metrics measure what they claim on real speech.

Real clips come from Debian packages (skipped cleanly without them): `pocketsphinx-testdata` (a LibriVox reader,
with transcripts) and `asterisk-core-sounds-en-g722` (a second speaker, decoded with `ffmpeg`).
"""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile

from soundstorm_hf import evaluation

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
ASTERISK_EN = Path("/usr/share/asterisk/sounds/en_US_f_Allison")


def librivox_clips() -> list[tuple[np.ndarray, int, str]]:
    """(waveform, sampling_rate, transcript) of the five LibriVox clips."""
    if not (LIBRIVOX / "transcription").is_file():
        pytest.skip("needs Debian's pocketsphinx-testdata")
    clips = []
    for line in (LIBRIVOX / "transcription").read_text().splitlines():
        words, _, clip = line.rpartition("(")
        waveform, rate = soundfile.read(LIBRIVOX / f"{clip.strip(') ')}.wav", dtype="float32")
        clips.append((waveform, rate, words.replace("<s>", "").replace("</s>", "").strip()))
    return clips


def asterisk_prompt(name: str, tmp_path: Path) -> tuple[np.ndarray, int]:
    source = ASTERISK_EN / f"{name}.g722"
    if not source.is_file() or shutil.which("ffmpeg") is None:
        pytest.skip("needs Debian's asterisk-core-sounds-en-g722 and ffmpeg")
    target = tmp_path / f"{name}.wav"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "g722", "-i", str(source), str(target)],
                   check=True)
    return soundfile.read(target, dtype="float32")


def test_normalize_text_and_wer_arithmetic():
    pytest.importorskip("jiwer")
    assert evaluation.normalize_text("Hello, World!  It's   well-known.") == "hello world it's well known"
    assert evaluation.word_error_rate("The cat sat.", "the cat sat") == 0.0
    # Corpus WER: 1 substitution + 1 deletion over 5 reference words.
    assert evaluation.word_error_rate(["a b c", "d e"], ["a x c", "d"]) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="reference"):
        evaluation.word_error_rate("...", "a")


def test_pocketsphinx_wer_is_low_on_real_speech_and_high_on_noise():
    pytest.importorskip("pocketsphinx")
    pytest.importorskip("jiwer")
    clips = librivox_clips()
    hypotheses = [evaluation.transcribe(waveform, rate) for waveform, rate, _ in clips]
    wer = evaluation.word_error_rate([text for *_, text in clips], hypotheses)
    assert wer < 0.45, (wer, hypotheses)  # 0.28 with pocketsphinx 5.1.1

    noise = np.random.default_rng(0).normal(0, 0.1, 4 * 16000).astype(np.float32)
    noise_wer = evaluation.word_error_rate(clips[1][2], evaluation.transcribe(noise, 16000))
    assert noise_wer >= 0.9


def test_speaker_similarity_separates_real_speakers(tmp_path):
    pytest.importorskip("resemblyzer")
    reader = [(waveform, rate) for waveform, rate, _ in librivox_clips()[:2]]
    allison = [asterisk_prompt(name, tmp_path) for name in ("agent-alreadyon", "auth-incorrect")]
    embeddings = [evaluation.speaker_embedding(waveform, rate) for waveform, rate in reader + allison]
    same = [evaluation.cosine_similarity(embeddings[0], embeddings[1]),
            evaluation.cosine_similarity(embeddings[2], embeddings[3])]
    different = [evaluation.cosine_similarity(embeddings[i], embeddings[j]) for i in (0, 1) for j in (2, 3)]
    assert min(same) > max(different), (same, different)
    # The waveform-level helper agrees with the embeddings it is built on (resampling included).
    waveform, rate = reader[0]
    assert evaluation.speaker_similarity(waveform, waveform, rate) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("f0", [110.0, 220.0])
def test_median_f0_of_a_harmonic_tone(f0):
    pytest.importorskip("librosa")
    rate = 22050  # resampled to 16 kHz inside
    t = np.arange(int(1.5 * rate)) / rate
    tone = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6)).astype(np.float32) * 0.2
    silence = np.zeros(rate // 2, dtype=np.float32)
    estimate = evaluation.median_f0(np.concatenate([silence, tone, silence]), rate)
    assert estimate == pytest.approx(f0, rel=0.03)
    assert np.isnan(evaluation.median_f0(np.random.default_rng(0).normal(0, 1e-3, rate).astype(np.float32), rate))
