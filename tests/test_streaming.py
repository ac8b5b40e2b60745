"""Streaming: window-by-window codes from `generate_long`, audio blocks from the pipeline, a WAV stream from the CLI."""

import io
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from test_pipeline import pipe, speech, tokenizers  # noqa: F401 (fixtures)
from test_text import tiny_pipeline, tiny_pipeline_folder  # noqa: F401 (fixture)

from soundstorm_hf import SoundStormConfig, SoundStormForConditionalGeneration
from soundstorm_hf.output_decoding import OUTPUT_CEILING, LIMITER_KNEE, OutputDecoder
from soundstorm_hf.streaming import wav_stream_header, write_wav_stream
from soundstorm_hf.tokenizers import load_acoustic_codec

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "soundstorm_hf"
EXAMPLES = PACKAGE / "examples"
STEPS = [2, 1, 1, 1]  # passes per window: 5
WINDOWS = [4, 36, 30, 30, 30, 30, 30, 10]  # new frames per window of 100 semantic ids, 4 first, max_frames 40


class GenerateRecorder:
    """Records the prompt and new frames of every window `generate` is called for."""

    def __init__(self, model):
        self.calls, self.model, self.original = [], model, model.generate

    def __enter__(self):
        def record(semantic_ids, prompt_ids=None, num_frames=None, **kwargs):
            self.calls.append((None if prompt_ids is None else prompt_ids[0].clone(), num_frames))
            return self.original(semantic_ids, prompt_ids=prompt_ids, num_frames=num_frames, **kwargs)

        self.model.generate = record
        return self

    def __exit__(self, *exc):
        del self.model.generate


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SoundStormForConditionalGeneration(SoundStormConfig.from_preset("tiny", max_frames=40)).eval()


def ids(frames, seed=0):
    return torch.randint(0, 32, (frames,), generator=torch.Generator().manual_seed(seed))


def test_streamer_gets_each_windows_final_codes_in_order_short_window_first(model):
    received = []
    codes = model.generate_long(
        ids(100), context_frames=10, seed=0, steps_per_level=STEPS, first_window_frames=4, streamer=received.append
    )
    assert torch.equal(torch.cat(received, dim=-1), codes) and codes.shape == (4, 200)
    # 4 new frames first, then as many as fit beside the context: those 4 frames, then 10.
    assert [window.shape[-1] for window in received] == WINDOWS


def test_trace_numbers_the_passes_of_the_whole_call(model):
    plain = model.generate_long(ids(100), context_frames=10, seed=0, steps_per_level=STEPS, first_window_frames=4)
    output = model.generate_long(
        ids(100), context_frames=10, seed=0, steps_per_level=STEPS, first_window_frames=4, return_trace=True
    )
    assert torch.equal(output.sequences, plain), "the trace does not change the codes"
    assert output.trace.shape == plain.shape and (output.trace >= 0).all()
    window = torch.repeat_interleave(torch.arange(len(WINDOWS)), torch.tensor(WINDOWS))  # window of each frame
    assert torch.equal(output.trace // 5, window.expand_as(output.trace)), "window k holds passes 5k to 5k + 4"
    assert torch.equal(output.trace[-1] % 5, torch.full((200,), 4)), "each window's last pass fixes the last level"


def test_every_window_sees_the_voice_prompt_then_the_previous_window(model):
    prompt, prompt_semantic = torch.randint(0, 32, (4, 30)), ids(30, seed=5)[:15]
    for keep_prompt in (True, False):
        with GenerateRecorder(model) as recorder:
            codes = model.generate_long(
                ids(100), prompt, prompt_semantic, 10, seed=0, steps_per_level=STEPS, keep_prompt=keep_prompt
            )
        assert all(frames <= 40 for _, frames in recorder.calls)
        assert torch.equal(recorder.calls[0][0], prompt[:, -10:]), "the first window continues the voice prompt"
        new = 0
        for (_, frames), (window_prompt, _) in zip(recorder.calls, recorder.calls[1:]):
            new += frames - (recorder.calls[0][0].shape[-1] if new == 0 else window_prompt.shape[-1])
            previous = codes[:, new - 10 : new]
            expected = torch.cat([prompt[:, -10:], previous], dim=-1) if keep_prompt else previous
            assert torch.equal(window_prompt, expected)


def test_stream_starts_after_a_short_first_window_and_joins_into_the_output(pipe, speech):  # noqa: F811
    content, prompt = speech["the quick brown fox"], speech["jumps over the lazy dog"]
    pipe.overlap_seconds = 0.2  # decoded chunks fade over 10 frames: a window of 0.4 s completes a first block
    with warnings.catch_warnings(), GenerateRecorder(pipe.model) as recorder:
        warnings.simplefilter("ignore")  # the random model's output goes over -1 dBFS
        stream = pipe.stream(*content, voice_prompt=prompt, seed=0, first_window_seconds=0.4, return_trace=True)
        assert recorder.calls == [], "nothing is generated before the stream is read"
        first = next(stream)
        assert len(recorder.calls) == 1 and recorder.calls[0][1] == 10 + 20, "one window: 0.2 s of prompt, 0.4 s new"
        assert len(first) == 10 * 320, "its first 0.2 s: the rest fades under the next window's"
        assert 0 < len(first) and stream.sampling_rate == 16000
        blocks = [first, *stream]
    audio = np.concatenate(blocks)
    assert abs(len(audio) - len(content[0]) * 16000 / content[1]) <= 1
    assert np.abs(audio).max() <= OUTPUT_CEILING
    assert stream.trace.shape == (3, -(-len(audio) // 320)), "a trace column per generated frame"


def test_stream_refuses_bad_inputs_before_it_returns(pipe, speech):  # noqa: F811
    with pytest.raises(ValueError, match="voice prompt is too short"):
        pipe.stream(*speech["the quick brown fox"], voice_prompt=(np.full(800, 0.1, np.float32), 16000))


def test_stream_applies_one_loudness_gain_and_the_limiter(pipe, speech):  # noqa: F811
    content, prompt = speech["the quick brown fox"], speech["jumps over the lazy dog"]
    kwargs = dict(voice_prompt=prompt, seed=0, first_window_seconds=0.4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        matched = np.concatenate(list(pipe.stream(*content, **kwargs)))
        kept = np.concatenate(list(pipe.stream(*content, match_loudness=False, **kwargs)))
    unlimited = (np.abs(matched) < LIMITER_KNEE) & (np.abs(kept) < LIMITER_KNEE) & (np.abs(kept) > 1e-4)
    gains = matched[unlimited] / kept[unlimited]
    assert np.allclose(gains, gains[0], rtol=1e-4) and not np.isclose(gains[0], 1.0), "one gain, from the first chunk"
    assert np.abs(matched).max() <= OUTPUT_CEILING


def stream_of_real_speech(overlap_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """The bundled real speech through the default codec, decoded as a stream of four windows: audio, joins."""
    codec = load_acoustic_codec(PACKAGE / "default" / "codec")
    speech, _ = soundfile.read(EXAMPLES / "real_content_librivox.wav", dtype="float32")
    codes = codec.encode(torch.from_numpy(speech))[0]  # (levels, 303)
    decoder = OutputDecoder(codec, None, None, len(speech), None, 1500, overlap_frames, eager=True)
    blocks = []
    for start, end in [(0, 100), (100, 160), (160, 230), (230, codes.shape[-1])]:
        blocks += decoder.push(codes[:, start:end])
    blocks = [block for block in [*blocks, *decoder.finish()] if len(block)]
    return np.concatenate(blocks), np.cumsum([len(block) for block in blocks])[:-1]


def clicks(audio: np.ndarray, joins: np.ndarray) -> list[int]:
    """Joins whose sample-to-sample jump exceeds every jump within 10 ms on either side (at 16 kHz)."""
    jumps = np.abs(np.diff(audio))
    return [int(j) for j in joins if jumps[j - 1] > np.concatenate([jumps[j - 161 : j - 1], jumps[j : j + 160]]).max()]


def test_streamed_blocks_join_without_clicks_on_real_speech():
    audio, joins = stream_of_real_speech(overlap_frames=50)  # the pipeline's 1 s
    jumps = np.abs(np.diff(audio))
    assert len(joins) >= 4
    assert jumps[joins - 1].max() <= np.delete(jumps, joins - 1).max(), "no join jumps more than the speech does"
    assert clicks(audio, joins) == []
    hard_cut, cut_joins = stream_of_real_speech(overlap_frames=0)  # without the crossfade: the measure hears it
    assert clicks(hard_cut, cut_joins) != []


def test_wav_stream_of_unknown_length_reads_back(tmp_path):
    blocks = [np.sin(np.arange(n) / 7).astype(np.float32) * 0.5 for n in (100, 0, 250)]
    buffer = io.BytesIO()
    assert write_wav_stream(iter(blocks), buffer, 16000) == 350
    data = buffer.getvalue()
    assert data[:44] == wav_stream_header(16000) and data[4:8] == data[40:44] == b"\xff\xff\xff\xff"
    (tmp_path / "stream.wav").write_bytes(data)
    read, rate = soundfile.read(tmp_path / "stream.wav", dtype="float32")
    assert rate == 16000 and np.allclose(read, np.concatenate(blocks), atol=1 / 32767)


def test_cli_streams_a_wav_to_stdout_while_it_generates(tmp_path):
    """`soundstorm-hf convert IN - ` with the default model: the header and the first audio come out before the
    process ends, and the whole stream parses as the conversion's WAV."""
    speech, rate = soundfile.read(EXAMPLES / "real_content_librivox.wav", dtype="float32")
    soundfile.write(tmp_path / "in.wav", np.tile(speech, 3), rate)  # 18 s: several windows after the first
    command = [sys.executable, "-m", "soundstorm_hf.cli", "convert", str(tmp_path / "in.wav"), "-", "--seed", "0",
               "--voice-prompt", str(EXAMPLES / "real_voice_asterisk_it.wav"), "--iterations", "1"]
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    first = process.stdout.read(44 + 3200)  # the header and 0.1 s of audio
    running_at_first_audio = process.poll() is None
    rest = process.stdout.read()
    assert process.wait() == 0, process.stderr.read().decode()
    assert running_at_first_audio, "the first audio came only when the process ended"
    data = first + rest
    assert data[:44] == wav_stream_header(16000)
    samples = np.frombuffer(data[44:], dtype="<i2")
    assert abs(len(samples) - 3 * len(speech)) <= 320 and np.abs(samples).max() > 1000


def test_text_to_speech_streams_and_the_cli_writes_it_as_it_comes(pipe, speech, tiny_pipeline_folder, tmp_path, capsysbinary):  # noqa: F811
    """`TextToSpeech.stream` hands out blocks as `pipe.stream` does, for text; the CLI's `tts` writes them to a file
    or, with `-`, as a WAV stream on standard output."""
    from soundstorm_hf import cli
    from soundstorm_hf.text import TextToSpeech

    prompt = speech["jumps over the lazy dog"]
    speaker = TextToSpeech(pipe, engine="espeak-ng")
    with warnings.catch_warnings(), GenerateRecorder(pipe.model) as recorder:
        warnings.simplefilter("ignore")  # the random model's output goes over -1 dBFS
        stream = speaker.stream("the quick brown fox", prompt, seed=0, first_window_seconds=0.4)
        assert recorder.calls == [], "nothing is generated before the stream is read"
        first = next(stream)
        windows_before_the_first_block = len(recorder.calls)
        streamed = np.concatenate([first, *stream])
        assert 0 < windows_before_the_first_block < len(recorder.calls), "audio comes before the last window is made"
        whole = speaker.tts("the quick brown fox", prompt, seed=0)["audio"]
    assert abs(len(streamed) - len(whole)) <= 1, "the same text, the same length, streamed or not"

    voice = tmp_path / "voice.wav"
    soundfile.write(voice, *prompt)
    argv = ["tts", "the quick brown fox", "--voice-prompt", str(voice), "--model", str(tiny_pipeline_folder), "--seed", "0"]
    cli.main(argv[:2] + [str(tmp_path / "out.wav")] + argv[2:])
    written = soundfile.read(tmp_path / "out.wav")[0]
    capsysbinary.readouterr()
    cli.main(argv[:2] + ["-"] + argv[2:])
    piped = capsysbinary.readouterr().out
    assert piped[:4] == b"RIFF" and piped[40:44] == b"\xff\xff\xff\xff", "a WAV stream of unknown length"
    assert (len(piped) - 44) // 2 == len(written)


def test_a_dialogue_streams_turn_by_turn():
    """`stream_dialogue` hands out each turn (after its pause) once it is generated, and joins into `dialogue`'s
    output; its timeline grows turn by turn."""
    from soundstorm_hf.audio import synthesize_speech
    from soundstorm_hf.text import TextToSpeech

    pipe = tiny_pipeline()
    speaker = TextToSpeech(pipe, engine="espeak-ng")
    voice = synthesize_speech("please call me back tomorrow morning", "en+f3")
    prompts = {"A": voice, "B": voice}
    transcript = "[A] seven green apples [B] call me back [A] the lazy dog"
    with warnings.catch_warnings(), GenerateRecorder(pipe.model) as recorder:
        warnings.simplefilter("ignore")  # the random model's output goes over -1 dBFS
        stream = speaker.stream_dialogue(transcript, prompts, seed=0)
        assert recorder.calls == [] and stream.timeline == [], "nothing is generated before the stream is read"
        first = next(stream)
        assert len(stream.timeline) == 1 and len(first) == round(stream.timeline[0]["end"] * stream.sampling_rate)
        windows_for_the_first_turn = len(recorder.calls)
        streamed = np.concatenate([first, *stream])
        assert windows_for_the_first_turn < len(recorder.calls)
        whole = speaker.dialogue(transcript, prompts, seed=0)
    assert [turn["speaker"] for turn in stream.timeline] == ["A", "B", "A"]
    assert stream.timeline == whole["timeline"]
    np.testing.assert_array_equal(streamed, whole["audio"])
