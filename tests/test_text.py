"""The offline text front end: dialogue parsing, rendering, and text/dialogue generation with a tiny random model.

`tiny_pipeline_folder` is shared with test_cli.py and test_space.py: a random tiny SoundStorm with the offline
tokenizer pair fitted on a few espeak-ng sentences, saved as a model folder (nothing downloaded).
"""

import functools
import shutil

import numpy as np
import pytest
import torch

from soundstorm_hf import SoundStormConfig, SoundStormForConditionalGeneration
from soundstorm_hf.audio import AudioSource, prepare_waveform, stream_waveform, synthesize_speech
from soundstorm_hf.pipeline import SoundStormPipeline
from soundstorm_hf.text import TextToSpeech, Turn, parse_dialogue, render_text
from soundstorm_hf.text.frontend import TURN_EDGE_SECONDS, speech_span
from soundstorm_hf.tokenizers import OfflineMelCodec, OfflineMfccTokenizer

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


@functools.cache
def tiny_pipeline() -> SoundStormPipeline:
    """Fitted once per test process; `max_frames=100` (2 s) so that a few seconds take several windows."""
    from threadpoolctl import threadpool_limits

    corpus = [
        prepare_waveform(*synthesize_speech(text, voice), 16000).numpy()
        for text, voice in [("the quick brown fox jumps over the lazy dog", "en+m3"), ("seven green apples", "en+f3")]
    ]
    with threadpool_limits(limits=1):
        codec = OfflineMelCodec().fit(corpus, num_levels=3, codebook_size=16)
        semantic = OfflineMfccTokenizer().fit(corpus, num_clusters=16)
    torch.manual_seed(0)
    config = SoundStormConfig.from_preset(
        "tiny", num_levels=3, codebook_size=16, semantic_vocab_size=16, max_frames=100
    )
    return SoundStormPipeline(SoundStormForConditionalGeneration(config), codec, semantic, context_seconds=0.5)


@pytest.fixture(scope="module")
def tiny_pipeline_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_model")
    tiny_pipeline().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def voice_prompt():
    return synthesize_speech("please call me back tomorrow morning", "en+f3")


def test_parse_dialogue_turns():
    turns = parse_dialogue("[A] Hello  there.\n[B] Hi, how are you? [A] Fine.", speakers=["A", "B"])
    assert turns == [Turn("A", "Hello there."), Turn("B", "Hi, how are you?"), Turn("A", "Fine.")]


@pytest.mark.parametrize(
    "transcript, message",
    [
        ("[A] Hello. [C] Who?", r"Turn 2 has an unknown speaker tag \[C\]; known speakers: \[A\], \[B\]"),
        ("[A] Hello. [B]   [A] Again.", r"Turn 2 \(\[B\]\) is empty"),
        ("Hello. [A] Hi.", "Text before the first speaker tag"),
        ("Just text", "no turns"),
        ("[] Hi", "empty speaker tag"),
    ],
)
def test_parse_dialogue_names_the_problem(transcript, message):
    with pytest.raises(ValueError, match=message):
        parse_dialogue(transcript, speakers=["A", "B"])


@pytest.mark.parametrize("engine", ["espeak-ng", "flite"])
def test_render_text(engine):
    if shutil.which(engine) is None:
        pytest.skip(f"{engine} is not installed")
    waveform, rate = render_text("Hello there.", engine=engine)
    assert rate >= 8000 and 0.3 < len(waveform) / rate < 3
    with pytest.raises(ValueError, match="empty"):
        render_text("   ", engine=engine)


def test_tts_and_length_limit(voice_prompt):
    speaker = TextToSpeech(tiny_pipeline(), max_characters=40)
    output = speaker.tts("the quick brown fox", voice_prompt, seed=0)
    speech, rate = render_text("the quick brown fox")
    assert output["sampling_rate"] == 16000
    assert abs(len(output["audio"]) / 16000 - len(speech) / rate) < 0.01, "the output lasts as long as the speech"
    with pytest.raises(ValueError, match="too long: 41 characters, at most 40"):
        speaker.tts("x" * 41, voice_prompt)


def test_dialogue_timeline_and_checks(voice_prompt):
    pipe = tiny_pipeline()
    speaker = TextToSpeech(pipe)
    other = synthesize_speech("a bright yellow boat", "en+m3")
    calls = []
    original = pipe.__class__.__call__

    def record(self, audio, voice_prompt=None, **kwargs):
        calls.append(voice_prompt)
        return original(self, audio, voice_prompt=voice_prompt, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipe.__class__, "__call__", record)
        output = speaker.dialogue("[A] Hello there. [B] Hi! [A] Bye.", {"A": voice_prompt, "B": other}, seed=0)
        calls_before_errors = len(calls)
        with pytest.raises(ValueError, match=r"Speaker \[B\] has no voice prompt"):
            speaker.dialogue("[A] Hi. [B] Hello.", {"A": voice_prompt, "B": None})
        with pytest.raises(ValueError, match=r"unknown speaker tag \[C\]"):
            speaker.dialogue("[A] Hi. [C] Hello.", {"A": voice_prompt, "B": other})
        with pytest.raises(ValueError, match=r"voice prompt \[B\]: audio is silent"):
            speaker.dialogue("[A] Hi. [B] Hello.", {"A": voice_prompt, "B": (np.zeros(16000), 16000)})
        with pytest.raises(ValueError, match="Pauses must be >= 0 seconds, the shortest first"):
            speaker.dialogue("[A] Hi. [B] Hello.", {"A": voice_prompt, "B": other}, pause_seconds=(0.8, 0.2))
        assert len(calls) == calls_before_errors, "a bad transcript or prompt is refused before any generation"
    timeline, rate = output["timeline"], output["sampling_rate"]
    assert [t["speaker"] for t in timeline] == ["A", "B", "A"]
    assert timeline[0]["start"] == 0 and abs(timeline[-1]["end"] - len(output["audio"]) / rate) < 1e-6
    gaps = [after["start"] - before["end"] for before, after in zip(timeline, timeline[1:])]
    assert all(0.2 <= gap <= 0.8 for gap in gaps) and abs(gaps[0] - gaps[1]) > 1e-3, f"conversation-like pauses: {gaps}"
    expected = np.random.default_rng(0).uniform(0.2, 0.8, 2)
    assert gaps == pytest.approx(expected, abs=1 / rate), "the pauses are drawn from the seed"
    for before, after in zip(timeline, timeline[1:]):
        assert not np.any(output["audio"][round(before["end"] * rate) + 1 : round(after["start"] * rate) - 1])
    edge = round(TURN_EDGE_SECONDS * rate)
    for turn in timeline:  # each turn is its speech and an edge: the pause heard is the one drawn
        audio = output["audio"][round(turn["start"] * rate) : round(turn["end"] * rate)]
        start, end = speech_span(audio, rate)
        assert start <= edge and len(audio) - end <= edge + 1


def test_dialogue_pauses_heard_are_the_pauses_drawn(voice_prompt, monkeypatch):
    """Turns are trimmed to their speech, so the content's own leading and trailing silence adds no pause."""
    pipe = tiny_pipeline()
    rate = pipe.sampling_rate
    speech = prepare_waveform(*synthesize_speech("hello there", "en"), rate).numpy()
    silence = np.zeros(rate // 2, dtype=np.float32)
    monkeypatch.setattr(pipe.__class__, "__call__", lambda self, audio, **kwargs: {"audio": np.concatenate([silence, speech, silence]), "sampling_rate": rate})
    output = TextToSpeech(pipe).dialogue("[A] Hi. [B] Hello.", {"A": voice_prompt, "B": voice_prompt}, pause_seconds=0.3)
    first, second = output["timeline"]
    inner = speech_span(speech, rate)
    heard = (second["start"] + inner[0] / rate) - (first["start"] + inner[1] / rate)
    frame = 0.05
    assert 0.3 <= heard <= 0.3 + 2 * TURN_EDGE_SECONDS + 2 * frame, heard


def test_speech_span_finds_speech_between_silences():
    speech, rate = synthesize_speech("hello there", "en")
    silence = np.zeros(rate // 2, dtype=np.float32)
    start, end = speech_span(np.concatenate([silence, speech, silence]), rate)
    inner = speech_span(speech, rate)
    frame = round(0.05 * rate)
    assert abs(start - (len(silence) + inner[0])) <= frame and abs(end - (len(silence) + inner[1])) <= frame
    assert speech_span(np.zeros(rate, dtype=np.float32), rate) is None


def test_each_dialogue_turn_is_prompted_by_the_turn_before(voice_prompt):
    """Turn n is generated after (its voice | the end of turn n-1 | the pause), all of it the model's context."""
    pipe = tiny_pipeline()
    other = synthesize_speech("a bright yellow boat", "en+m3")
    prompts, contexts = [], []
    original_call, original_long = pipe.__class__.__call__, pipe.model.__class__.generate_long

    def record_call(self, audio, voice_prompt=None, **kwargs):
        prompts.append((voice_prompt, self.context_seconds))
        return original_call(self, audio, voice_prompt=voice_prompt, **kwargs)

    def record_long(self, semantic_ids, prompt_ids=None, prompt_semantic_ids=None, context_frames=150, **kwargs):
        contexts.append((prompt_ids.shape[-1], context_frames))
        return original_long(self, semantic_ids, prompt_ids, prompt_semantic_ids, context_frames, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipe.__class__, "__call__", record_call)
        patch.setattr(pipe.model.__class__, "generate_long", record_long)
        output = TextToSpeech(pipe).dialogue(
            "[A] Hello there. [B] Hi! [A] Bye.", {"A": voice_prompt, "B": other}, pause_seconds=0.25, seed=0
        )
    audio, rate, timeline = output["audio"], output["sampling_rate"], output["timeline"]
    assert prompts[0] == (voice_prompt, pipe.context_seconds), "the first turn: the speaker's prompt as given"
    window = pipe.model.config.max_frames / pipe.model.config.acoustic_frame_rate
    own = round(pipe.context_seconds * rate)
    voices = {name: np.concatenate(list(stream_waveform(AudioSource(*prompt), rate)))[-own:] for name, prompt in [("A", voice_prompt), ("B", other)]}
    for (prompt, context_seconds), before, after in zip(prompts[1:], timeline, timeline[1:]):
        waveform, prompt_rate = prompt
        pause = round(0.25 * rate)
        previous = round(window / 2 * rate) - own - pause  # what is left of half a window
        assert prompt_rate == rate and len(waveform) == own + previous + pause
        np.testing.assert_array_equal(waveform[:own], voices[after["speaker"]], "the prompt starts with the voice")
        assert not np.any(waveform[-pause:]), "the prompt ends with the pause before the turn"
        end = round(before["end"] * rate)
        np.testing.assert_array_equal(waveform[-pause - previous : -pause], audio[end - previous : end])
        assert context_seconds == pytest.approx(len(waveform) / rate), "all of it prompts the turn"
    frame_rate = pipe.model.config.acoustic_frame_rate
    for prompt_frames, context_frames in contexts[1:]:
        assert prompt_frames >= round(window / 2 * frame_rate) - 2 and context_frames >= prompt_frames
