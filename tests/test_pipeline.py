"""SoundStormPipeline: audio in, audio out, with the offline tokenizers and a tiny random model."""

import numpy as np
import pytest
import torch

from soundstorm_hf import SoundStormConfig, SoundStormForConditionalGeneration
from soundstorm_hf.audio import synthesize_speech
from soundstorm_hf.pipeline import SoundStormPipeline
from soundstorm_hf.tokenizers import OfflineMelCodec, OfflineMfccTokenizer

LEVELS, CODES, VOCAB = 3, 16, 16


@pytest.fixture(scope="module")
def speech():
    return {
        text: synthesize_speech(text, voice)
        for text, voice in [("the quick brown fox", "en+m3"), ("jumps over the lazy dog", "en+f3")]
    }


@pytest.fixture(scope="module")
def tokenizers(speech, single_threaded_sklearn):
    import soxr

    corpus = [soxr.resample(wave, rate, 16000) for wave, rate in speech.values()]
    codec = OfflineMelCodec().fit(corpus, num_levels=LEVELS, codebook_size=CODES)
    semantic = OfflineMfccTokenizer().fit(corpus, num_clusters=VOCAB)
    return codec, semantic


@pytest.fixture
def pipe(tokenizers):
    torch.manual_seed(0)
    config = SoundStormConfig.from_preset(
        "tiny", num_levels=LEVELS, codebook_size=CODES, semantic_vocab_size=VOCAB, max_frames=40
    )
    return SoundStormPipeline(SoundStormForConditionalGeneration(config), *tokenizers, context_seconds=0.2)


class GenerateRecorder:
    def __init__(self, model):
        self.calls, self.model, self.original = [], model, model.generate

    def __enter__(self):
        def record(semantic_ids, prompt_ids=None, num_frames=None, **kwargs):
            self.calls.append((num_frames, None if prompt_ids is None else prompt_ids.clone()))
            return self.original(semantic_ids, prompt_ids=prompt_ids, num_frames=num_frames, **kwargs)

        self.model.generate = record
        return self

    def __exit__(self, *exc):
        del self.model.generate


def test_voice_conversion_in_windows(pipe, speech):
    content, prompt = speech["the quick brown fox"], speech["jumps over the lazy dog"]
    with GenerateRecorder(pipe.model) as recorder:
        output = pipe(content, voice_prompt=prompt, seed=0)
    assert output["sampling_rate"] == 16000
    assert abs(len(output["audio"]) - len(content[0]) * 16000 / content[1]) <= 1
    assert np.isfinite(output["audio"]).all() and np.abs(output["audio"]).max() > 0
    # Long input: several windows, none longer than the model's max_frames, each prompted with 0.2 s (10 frames) of
    # the voice prompt, and after the first with 0.2 s of the window before.
    assert len(recorder.calls) > 2
    assert all(frames <= 40 for frames, _ in recorder.calls)
    assert [p.shape[-1] for _, p in recorder.calls] == [10] + [20] * (len(recorder.calls) - 1)
    prompt_codes, *_ = pipe._encode_prompt(prompt, None)
    assert torch.equal(recorder.calls[0][1][0], prompt_codes[:, -10:]), "the first window continues the voice prompt"


def test_unprompted_resynthesis_accepts_any_rate_and_stereo(pipe, speech):
    wave, rate = speech["the quick brown fox"]
    import soxr

    stereo = np.stack([soxr.resample(wave, rate, 44100)] * 2, axis=1)  # (samples, 2) at 44.1 kHz
    with GenerateRecorder(pipe.model) as recorder:
        output = pipe({"array": stereo, "sampling_rate": 44100}, seed=0)
    assert recorder.calls[0][1] is None, "no prompt: the first window is generated unprompted"
    assert abs(len(output["audio"]) - len(wave) * 16000 / rate) <= 2


def test_save_and_reload_rebuilds_the_same_pipeline(pipe, speech, tmp_path):
    pipe.save_pretrained(tmp_path)
    assert (tmp_path / "codec").is_dir() and (tmp_path / "semantic_tokenizer").is_dir()
    loaded = SoundStormPipeline.from_pretrained(tmp_path, context_seconds=0.2)
    wave = torch.as_tensor(speech["the quick brown fox"][0])
    semantic_ids = loaded.semantic_tokenizer.encode(wave)[0]
    assert torch.equal(semantic_ids, pipe.semantic_tokenizer.encode(wave)[0])
    assert torch.equal(loaded.codec.encode(wave), pipe.codec.encode(wave))
    assert torch.equal(
        loaded.model.generate_long(semantic_ids, context_frames=10, seed=1),
        pipe.model.generate_long(semantic_ids, context_frames=10, seed=1),
    )


def test_file_input(pipe, speech, tmp_path):
    import soundfile

    wave, rate = speech["jumps over the lazy dog"]
    soundfile.write(tmp_path / "in.wav", wave, rate)
    assert len(pipe(str(tmp_path / "in.wav"), seed=0)["audio"]) > 0


@pytest.mark.parametrize(
    "audio, prompt, message",
    [
        ((np.zeros(0, dtype=np.float32), 16000), None, "content audio.*empty"),
        ((np.zeros(16000, dtype=np.float32), 16000), None, "silent"),
        ((np.full(16000, np.nan, dtype=np.float32), 16000), None, "NaN"),
        ((np.random.randn(3, 16000).astype(np.float32) * 0.1, 16000), None, "channels"),
        (None, (np.random.randn(4000).astype(np.float32) * 0.1, 16000), "too short"),
        (np.ones(100, dtype=np.float32), None, "sampling_rate"),
    ],
)
def test_bad_audio_is_named(pipe, speech, audio, prompt, message):
    audio = speech["the quick brown fox"] if audio is None else audio
    with pytest.raises(ValueError, match=message):
        pipe(audio, voice_prompt=prompt)


def test_mismatched_tokenizers_are_refused(tokenizers):
    config = SoundStormConfig.from_preset("tiny", num_levels=LEVELS + 1, codebook_size=CODES, semantic_vocab_size=8)
    with pytest.raises(ValueError, match="RVQ levels: model 4, codec 3.*semantic vocabulary"):
        SoundStormPipeline(SoundStormForConditionalGeneration(config), *tokenizers)


def test_model_without_recorded_tokenizers(tmp_path):
    SoundStormForConditionalGeneration(SoundStormConfig.from_preset("tiny")).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="does not record its tokenizers"):
        SoundStormPipeline.from_pretrained(tmp_path)


def test_command_line_conversion(pipe, speech, tmp_path):
    import soundfile

    from soundstorm_hf.cli import main

    pipe.save_pretrained(tmp_path / "model")
    for name in ("content", "prompt"):
        wave, rate = speech["the quick brown fox" if name == "content" else "jumps over the lazy dog"]
        soundfile.write(tmp_path / f"{name}.wav", wave, rate)
    main(["convert", "--model", str(tmp_path / "model"), str(tmp_path / "content.wav"), str(tmp_path / "out.wav"),
          "--voice-prompt", str(tmp_path / "prompt.wav"), "--seed", "0", "--iterations", "4"])
    audio, rate = soundfile.read(tmp_path / "out.wav")
    assert rate == 16000 and abs(len(audio) - len(speech["the quick brown fox"][0]) * 16000 / 22050) <= 1
