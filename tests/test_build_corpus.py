"""scripts/build_corpus.py without its speech engines: texts, speakers, splits, resume and the manifest."""

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import build_corpus  # noqa: E402
from build_corpus import Utterance  # noqa: E402


def test_generated_sentences_are_distinct_repeatable_and_english():
    sentences = build_corpus.generated_sentences(count=500, seed=3)
    assert len(set(sentences)) == 500
    assert sentences == build_corpus.generated_sentences(count=500, seed=3)
    assert sentences != build_corpus.generated_sentences(count=500, seed=4)
    for text in sentences:
        assert text[0].isupper() and text[-1] in ".?" and "{" not in text and "  " not in text
        assert " a a" not in text and " a e" not in text  # "an" before a vowel
    assert 6 <= np.mean([len(text.split()) for text in sentences]) <= 16


def test_voices_read_different_generated_sentences():
    sentences = build_corpus.generated_sentences(count=2000)
    first, second = (build_corpus.Voice(name, "flite", {}, 1.0, 0.1) for name in ("a", "b"))
    read_first = {text for text in sentences if build_corpus.reads_generated(first, text)}
    read_second = {text for text in sentences if build_corpus.reads_generated(second, text)}
    assert 150 < len(read_first) < 250 and 150 < len(read_second) < 250
    assert len(read_first & read_second) < 50  # independent draws overlap by about 10%


def test_held_out_speakers_are_never_perturbed_and_the_custom_voice_is_held_out():
    assert build_corpus.CUSTOM_VOICE_SPEAKER.startswith(build_corpus.TEST_SPEAKERS_PREFIXES)
    for language in build_corpus.PERTURBED_LANGUAGES:
        assert not f"asterisk-{language}".startswith(build_corpus.TEST_SPEAKERS_PREFIXES)
    assert "it" not in build_corpus.PERTURBED_LANGUAGES
    voices = [voice.speaker for voice in build_corpus.VOICES]
    assert len(voices) == len(set(voices))
    held_out = [voice for voice in build_corpus.VOICES if voice.speaker.startswith(build_corpus.TEST_SPEAKERS_PREFIXES)]
    assert held_out and all(voice.generated_share == 0 for voice in held_out)  # the evaluation set keeps its size


def tone(seconds, frequency=220.0):
    time = np.arange(int(seconds * 16000)) / 16000
    return 0.3 * np.sin(2 * np.pi * frequency * time), 16000


def utterance(uid, speaker, source, text, calls):
    def render(path):
        calls.append(uid)
        build_corpus.write_wav(path, *tone(0.5))

    return Utterance(uid, speaker, source, text, render)


@pytest.mark.parametrize("workers", [1, 3])
def test_build_resumes_writes_metadata_and_describes_speakers(tmp_path, workers):
    calls = []

    def groups():
        yield "real", iter([utterance("asterisk-en-a", "asterisk-en", "asterisk-en", "Hello there.", calls),
                            utterance("asterisk-it-a", "asterisk-it", "asterisk-it", "Ciao a tutti.", calls)])
        yield "perturbed", iter([utterance("asterisk-en-speed0.9-a", "asterisk-en-speed0.9", "asterisk-en",
                                           "Hello there.", calls)])

    build_corpus.build(tmp_path, list(groups()), {"command": "test"}, workers)
    assert sorted(calls) == ["asterisk-en-a", "asterisk-en-speed0.9-a", "asterisk-it-a"]
    (tmp_path / "train" / "asterisk-en" / "x.part.wav").write_bytes(b"half")  # left by a killed run
    build_corpus.build(tmp_path, list(groups()), {"command": "test"}, workers)
    assert len(calls) == 3  # nothing rendered twice
    assert not list(tmp_path.rglob("*.part.wav"))

    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["num_speakers"] == 3
    assert manifest["speakers"]["asterisk-en-speed0.9"]["perturbed_from"] == "asterisk-en"
    assert manifest["speakers"]["asterisk-en-speed0.9"]["kind"] == "real"
    assert manifest["speakers"]["asterisk-en-speed0.9"]["perturbation"] == "speed 0.9"
    assert manifest["speakers"]["asterisk-en"]["perturbed_from"] is None
    assert manifest["custom_voice_speaker"]["speaker"] == "asterisk-it"
    assert manifest["custom_voice_speaker"]["splits"] == {"test_speakers": 1}
    assert manifest["splits"]["test_speakers"]["speakers"] == ["asterisk-it"]
    with open(tmp_path / "test_speakers" / "metadata.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows == [{"file_name": "asterisk-it/asterisk-it-a.wav", "text": "Ciao a tutti.", "speaker": "asterisk-it",
                     "source": "asterisk-it", "split": "test_speakers"}]
    assert soundfile.info(str(tmp_path / "test_speakers" / rows[0]["file_name"])).samplerate == 16000


def test_a_failed_render_leaves_no_file_and_the_build_goes_on(tmp_path):
    def broken(path):
        raise ValueError("no speech (empty or silent audio)")

    calls = []
    groups = [("g", iter([Utterance("x-1", "x", "flite", "One.", broken),
                          utterance("x-2", "x", "flite", "Two words here.", calls)]))]
    build_corpus.build(tmp_path, groups, {})
    assert calls == ["x-2"]
    assert [path.name for path in tmp_path.rglob("*.wav")] == ["x-2.wav"]


def test_silent_audio_is_refused():
    with pytest.raises(ValueError, match="no speech"):
        build_corpus.write_wav(Path("unused.wav"), np.zeros(1600), 16000)


def test_metadata_lists_earlier_groups_before_the_first_new_file(tmp_path):
    """A run killed in its first group still leaves metadata for the later groups an earlier run had built."""
    calls = []
    build_corpus.build(tmp_path, [("late", iter([utterance("late-1", "late", "flite", "Made before.", calls)]))], {})

    def killed(path):
        raise KeyboardInterrupt

    groups = [("early", iter([Utterance("early-1", "early", "flite", "Never made.", killed)])),
              ("late", iter([utterance("late-1", "late", "flite", "Made before.", calls)]))]
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(KeyboardInterrupt):
        build_corpus.build(tmp_path, groups, {})
    assert json.loads((tmp_path / "manifest.json").read_text())["speakers"].keys() == {"late"}
    assert calls == ["late-1"]


def test_perturbed_prompts_keep_their_language_source(monkeypatch):
    """train_phonetic_tokenizer.py and measure_semantic_tokens.py skip non-English rows by exact source: a perturbed
    French prompt must still say asterisk-fr, or English phonemes would be forced onto French speech."""
    calls = []
    prompt = utterance("asterisk-fr-hello", "asterisk-fr", "asterisk-fr", "Bonjour.", calls)
    monkeypatch.setattr(build_corpus, "asterisk_utterances", lambda language: iter([prompt]))
    perturbed = list(build_corpus.perturbed_utterances(["fr"]))
    assert {utterance.source for utterance in perturbed} == {"asterisk-fr"}
    names = list(build_corpus.PERTURBATIONS)
    assert [utterance.speaker for utterance in perturbed] == [f"asterisk-fr-{name}" for name in names]
    assert [utterance.uid for utterance in perturbed] == [f"asterisk-fr-{name}-hello" for name in names]
