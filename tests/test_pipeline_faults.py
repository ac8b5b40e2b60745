"""Nothing lost, nothing silent: each fault of loading, reading and writing ends in correct output or a named error."""

import resource
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from test_pipeline import pipe, speech, tokenizers  # noqa: F401 (fixtures)

from soundstorm_hf.audio import AudioSource, frame_powers, load_audio, speech_power
from soundstorm_hf.output_decoding import OUTPUT_CEILING, soft_limit
from soundstorm_hf.pipeline import SoundStormPipeline
from soundstorm_hf.tokenizers import load_acoustic_codec, load_semantic_tokenizer


@pytest.fixture
def saved(pipe, tmp_path):  # noqa: F811
    pipe.save_pretrained(tmp_path / "model")
    return tmp_path / "model"


@pytest.fixture
def long_speech(speech):  # noqa: F811
    """About 10 s of 16 kHz speech: several 4 s chunks."""
    import soxr

    waves = [soxr.resample(wave, rate, 16000) for wave, rate in speech.values()]
    return np.concatenate(waves * 3).astype(np.float32)


# --- loading ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("subfolder", ["codec", "semantic_tokenizer"])
def test_missing_tokenizer_subfolder_is_named(saved, subfolder):
    shutil.rmtree(saved / subfolder)
    with pytest.raises(FileNotFoundError, match=f"subfolder {subfolder}/ that config.json names .* is missing"):
        SoundStormPipeline.from_pretrained(saved)


def test_missing_config_json_is_named(saved):
    (saved / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json missing in"):
        SoundStormPipeline.from_pretrained(saved)


@pytest.mark.parametrize("relative", [False, True])
def test_missing_local_path_fails_at_once(tmp_path, monkeypatch, relative):
    monkeypatch.chdir(tmp_path)
    missing = "./no/such/model" if relative else str(tmp_path / "no_such_model")
    started = time.perf_counter()
    for load in (SoundStormPipeline.from_pretrained, load_acoustic_codec, load_semantic_tokenizer):
        with pytest.raises(FileNotFoundError, match="no such folder"):
            load(missing)
    assert time.perf_counter() - started < 1.0


def test_uncached_hub_id_offline_is_named():
    with pytest.raises(FileNotFoundError, match="not a local folder, and the Hub is offline"):
        SoundStormPipeline.from_pretrained("nobody-here/no-such-model")


def test_tokenizer_folder_without_its_json_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"holds neither soundstorm_codec.json \(.*\) nor config.json"):
        load_acoustic_codec(tmp_path)


# --- long inputs: chunks, and a limit ------------------------------------------------------------------------------


class CallSizes:
    """Records the last-axis size of every call to `module.method`."""

    def __init__(self, module, method):
        self.sizes, original = [], getattr(module, method)

        def record(tensor, *args, **kwargs):
            self.sizes.append(tensor.shape[-1])
            return original(tensor, *args, **kwargs)

        setattr(module, method, record)


def test_long_input_is_tokenized_and_decoded_in_bounded_chunks(pipe, long_speech):  # noqa: F811
    chunked = SoundStormPipeline(pipe.model, pipe.codec, pipe.semantic_tokenizer, 0.2, chunk_seconds=4.0)
    encodes, decodes = CallSizes(chunked.semantic_tokenizer, "encode"), CallSizes(chunked.codec, "decode")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random model's output goes over -1 dBFS
        output = chunked(long_speech, 16000, seed=0)
    assert len(output["audio"]) == len(long_speech)
    # Every tokenizer call sees at most a chunk and its overlap on both sides, every decoder call likewise.
    assert len(encodes.sizes) == 3 and max(encodes.sizes) <= (4.0 + 2 * 1.0) * 16000
    assert len(decodes.sizes) == 3 and max(decodes.sizes) <= (4.0 + 2 * 1.0) * 50


def test_chunked_tokens_against_whole_input(pipe, long_speech):  # noqa: F811
    """Short content is tokenized in one call, as before. Longer content differs only where a tokenizer looks at the
    whole input: the offline MFCC tokenizer normalizes per chunk, which changes 3% of tokens with 4 s chunks."""
    chunked = SoundStormPipeline(pipe.model, pipe.codec, pipe.semantic_tokenizer, 0.2, chunk_seconds=4.0)
    encode = chunked.semantic_tokenizer.encode
    short = long_speech[: 5 * 16000]
    assert torch.equal(chunked._tokenize_content(AudioSource(short, 16000))[0], encode(torch.from_numpy(short))[0])
    tokens, num_samples, _ = chunked._tokenize_content(AudioSource(long_speech, 16000))
    whole = encode(torch.from_numpy(long_speech))[0]
    assert num_samples == len(long_speech) and tokens.shape == whole.shape
    assert (tokens == whole).float().mean() >= 0.95


def test_chunked_decoding_matches_decoding_at_once(pipe, long_speech):  # noqa: F811
    semantic_ids = pipe.semantic_tokenizer.encode(torch.from_numpy(long_speech))[0]
    codes = pipe.model.generate_long(semantic_ids, context_frames=10, seed=0)
    at_once = np.concatenate(list(pipe._decode(codes, semantic_ids, len(long_speech))))
    pipe.chunk_seconds = 4.0
    chunked = np.concatenate(list(pipe._decode(codes, semantic_ids, len(long_speech))))
    np.testing.assert_allclose(chunked, at_once, atol=1e-4)


def test_max_input_seconds_refuses_before_reading(pipe, tmp_path):  # noqa: F811
    limited = SoundStormPipeline(pipe.model, pipe.codec, pipe.semantic_tokenizer, max_input_seconds=10)
    with pytest.raises(ValueError, match="content audio: too long: 20.0 s of audio, more than the 10 s allowed"):
        limited(np.full(20 * 16000, 0.1, dtype=np.float32), 16000)
    # A FLAC header that claims 2^30 samples (18 hours at 16 kHz) is refused from the header alone.
    path = forged_flac(tmp_path, 2**30)
    started = time.perf_counter()
    with pytest.raises(ValueError, match="voice prompt: too long: 67108.9 s of audio, more than the 10 s allowed"):
        limited(np.full(16000, 0.1, dtype=np.float32), 16000, voice_prompt=str(path))
    assert time.perf_counter() - started < 1.0


def forged_flac(tmp_path, claimed_samples: int):
    """One second of noise as FLAC whose STREAMINFO claims `claimed_samples` (its last 36 bits of 64 at byte 18)."""
    path = tmp_path / "forged.flac"
    soundfile.write(path, np.random.default_rng(0).normal(0, 0.1, 16000), 16000)
    data = bytearray(path.read_bytes())
    fields = int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1)
    data[18:26] = (fields | claimed_samples).to_bytes(8, "big")
    path.write_bytes(data)
    return path


def crc(data: bytes, polynomial: int, bits: int) -> int:
    """FLAC's frame checksums (CRC-8 of headers, CRC-16 of frames; MSB first, initial value 0)."""
    top, mask, value = 1 << (bits - 1), (1 << bits) - 1, 0
    for byte in data:
        value ^= byte << (bits - 8)
        for _ in range(8):
            value = ((value << 1) ^ polynomial) & mask if value & top else (value << 1) & mask
    return value


def silent_flac(path, seconds: int, rate: int = 48000, channels: int = 2, header_length: bool = True):
    """A decompression bomb: a valid 16-bit FLAC of `seconds` of digital silence, each 65535-sample frame 6 bytes
    of CONSTANT subframes (1.5 h of 48 kHz stereo is 69 kB, 2 GB decoded as float32). Written directly because
    encoding that much silence takes libsndfile ~10 s. Without `header_length` its STREAMINFO leaves the length
    unknown, as the format allows."""
    block, total = 65535, seconds * rate
    streaminfo = block.to_bytes(2, "big") * 2 + bytes(6)  # block sizes, unknown frame sizes
    fields = (rate << 44) | ((channels - 1) << 41) | (15 << 36) | (total if header_length else 0)
    streaminfo += fields.to_bytes(8, "big") + bytes(16)  # no MD5
    parts = [b"fLaC", b"\x80" + len(streaminfo).to_bytes(3, "big"), streaminfo]
    for number in range(-(-total // block)):
        size = min(block, total - number * block)
        # sync + fixed blocking; 16-bit size at the end, STREAMINFO's rate; L/R channels, 16 bits; frame number (UTF-8 coded)
        header = b"\xff\xf8" + bytes([0x70, (channels - 1) << 4 | 0x08]) + chr(number).encode()
        header += (size - 1).to_bytes(2, "big")
        frame = header + bytes([crc(header, 0x07, 8)]) + bytes(3) * channels  # CONSTANT 0 per channel
        parts.append(frame + crc(frame, 0x8005, 16).to_bytes(2, "big"))
    Path(path).write_bytes(b"".join(parts))
    return path


def peak_memory_mb() -> float:
    """This process's peak resident memory so far: a call that decodes a bomb raises it by GBs."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_decompression_bomb_is_refused_before_decoding(pipe, tmp_path):  # noqa: F811
    """1.5 h of 48 kHz stereo in 69 kB of FLAC: refused from its header by `max_input_seconds`, at once."""
    bomb = silent_flac(tmp_path / "bomb.flac", 90 * 60)
    limited = SoundStormPipeline(pipe.model, pipe.codec, pipe.semantic_tokenizer, max_input_seconds=30)
    for call in (lambda: limited(str(bomb)), lambda: limited(np.full(16000, 0.1, np.float32), 16000, voice_prompt=str(bomb))):
        started, memory = time.perf_counter(), peak_memory_mb()
        with pytest.raises(ValueError, match="too long: 5400.0 s of audio, more than the 30 s allowed"):
            call()
        assert time.perf_counter() - started < 1.0 and peak_memory_mb() - memory < 50
    with pytest.raises(ValueError, match="the header of .* does not give its length"):
        limited(str(silent_flac(tmp_path / "stream.flac", 60, header_length=False)))


def test_file_whose_header_claims_more_is_an_error_not_an_allocation(tmp_path):
    with pytest.raises(ValueError, match="cannot be read past sample 0 of the 1073741824 its header claims"):
        load_audio(forged_flac(tmp_path, 2**30))


def test_convert_to_file_streams_the_same_output(pipe, speech, tmp_path):  # noqa: F811
    wave, rate = speech["the quick brown fox"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = pipe(wave, rate, seed=0)["audio"]
        result = pipe.convert_to_file(wave, tmp_path / "out.wav", rate, seed=0)
    written, written_rate = soundfile.read(tmp_path / "out.wav", dtype="float32")
    assert written_rate == 16000 and result["num_samples"] == len(written) == len(expected)
    np.testing.assert_allclose(written, expected, atol=1 / 32768)


# --- output level ----------------------------------------------------------------------------------------------------


def test_loud_output_is_limited_with_a_warning_not_clipped(pipe, speech, tmp_path, monkeypatch):  # noqa: F811
    loud = lambda codes, **kwargs: 1.5 * torch.sin(torch.arange(codes.shape[-1] * 320.0) / 5)[None]  # noqa: E731
    monkeypatch.setattr(pipe.codec, "decode", loud)
    with pytest.warns(UserWarning, match=r"went over -1 dBFS \(peak \+3.5 dBFS\); they were soft-limited"):
        pipe.convert_to_file(speech["the quick brown fox"], tmp_path / "out.wav", seed=0, match_loudness=False)
    written, _ = soundfile.read(tmp_path / "out.wav", dtype="int16")
    assert np.abs(written).max() <= OUTPUT_CEILING * 32768, "no 16-bit sample is clipped"


def level_db(audio: np.ndarray, rate: int) -> float:
    return 10 * np.log10(speech_power(frame_powers(audio, rate)))


def test_output_level_is_matched_to_the_prompt_else_the_content(pipe, speech, monkeypatch):  # noqa: F811
    """A model that generates 13 dB too loud (a sine at 1.5) comes out at the voice prompt's speech level, or
    unprompted at the content's, with one gain for the whole output; nothing is then limited."""
    loud = lambda codes, **kwargs: 1.5 * torch.sin(torch.arange(codes.shape[-1] * 320.0) / 5)[None]  # noqa: E731
    monkeypatch.setattr(pipe.codec, "decode", loud)
    (content, rate), (prompt, prompt_rate) = speech["the quick brown fox"], speech["jumps over the lazy dog"]
    quiet_prompt, quiet_content = 0.1 * prompt, 0.3 * content
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no sample needs the limiter
        prompted = pipe(content, rate, voice_prompt=quiet_prompt, prompt_sampling_rate=prompt_rate, seed=0)
        unprompted = pipe(quiet_content, rate, seed=0)
    output_rate = pipe.sampling_rate
    assert level_db(prompted["audio"], output_rate) == pytest.approx(level_db(quiet_prompt, prompt_rate), abs=0.5)
    assert level_db(unprompted["audio"], output_rate) == pytest.approx(level_db(quiet_content, rate), abs=0.5)
    with pytest.warns(UserWarning, match="soft-limited"):
        as_generated = pipe(content, rate, voice_prompt=quiet_prompt, prompt_sampling_rate=prompt_rate, seed=0,
                            match_loudness=False)
    assert level_db(as_generated["audio"], output_rate) > level_db(prompted["audio"], output_rate) + 10


def test_speech_level_leaves_pauses_out():
    rate = 16000
    speech = 0.1 * np.sin(np.arange(rate) / 3)  # -23 dBFS of "speech"
    with_pauses = np.concatenate([speech, np.zeros(3 * rate), speech, 1e-5 * np.ones(rate)])
    assert 10 * np.log10(speech_power(frame_powers(with_pauses, rate))) == pytest.approx(-23.0, abs=0.1)
    assert speech_power(frame_powers(np.zeros(rate), rate)) is None


def test_soft_limit_keeps_quiet_samples_and_bends_loud_ones_below_the_ceiling():
    audio = np.linspace(-4, 4, 10001, dtype=np.float32)
    limited = soft_limit(audio.copy())
    quiet = np.abs(audio) <= 10 ** (-3 / 20)
    np.testing.assert_array_equal(limited[quiet], audio[quiet])
    assert np.abs(limited).max() <= OUTPUT_CEILING and (np.diff(limited) >= 0).all()


def test_silent_output_warns(pipe, speech, monkeypatch):  # noqa: F811
    monkeypatch.setattr(pipe.codec, "decode", lambda codes, **kwargs: torch.zeros(1, codes.shape[-1] * 320))
    with pytest.warns(UserWarning, match="The output is silent"):
        pipe(speech["the quick brown fox"], seed=0)


# --- damaged and tiny files ------------------------------------------------------------------------------------------


def test_wav_shorter_than_its_header_warns(pipe, speech, tmp_path):  # noqa: F811
    wave, rate = speech["the quick brown fox"]
    soundfile.write(tmp_path / "full.wav", wave, rate, subtype="PCM_16")
    data = (tmp_path / "full.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match="header of .*cut.wav disagrees with its length"):
        waveform, _ = load_audio(tmp_path / "cut.wav")
    assert 0 < len(waveform) < len(wave)
    with pytest.warns(UserWarning, match="header of .*cut.wav disagrees with its length"):
        pipe(str(tmp_path / "cut.wav"), seed=0)


def test_one_sample_wav_is_refused(pipe, tmp_path):  # noqa: F811
    soundfile.write(tmp_path / "one.wav", np.array([0.5], dtype=np.float32), 16000)
    with pytest.raises(ValueError, match=r"content audio: 1 samples .* \(one semantic unit\) is needed"):
        pipe(str(tmp_path / "one.wav"))


# --- hostile text ----------------------------------------------------------------------------------------------------


def option_like_texts(folder):
    """Texts that a synthesizer would obey as options if they reached its command line (run from `folder`), and
    what obeying would leave behind: `-f FILE` speaks a file of 60 words (about 20 s), `-w FILE` / `-o FILE` write
    a file."""
    (folder / "secret.txt").write_text("one two three four five six seven eight nine ten " * 6)
    return ["-fsecret.txt", "-f secret.txt", "--help", "-w written.wav", "-o written.wav"], folder / "written.wav"


@pytest.mark.parametrize("engine", ["espeak-ng", "flite"])
def test_text_never_becomes_a_synthesizer_option(engine, tmp_path, monkeypatch):
    from soundstorm_hf.text import phonemize, render_text

    if shutil.which(engine) is None:
        pytest.skip(f"{engine} is not installed")
    monkeypatch.chdir(tmp_path)
    texts, written = option_like_texts(tmp_path)
    for text in texts:
        waveform, rate = render_text(text, engine)
        assert 0.3 < len(waveform) / rate < 6, f"{text!r} gave {len(waveform) / rate:.1f} s: not the text spoken"
    assert not written.exists()
    assert "sˈɛkɹɪt" in phonemize(texts[0]) and "wˈʌn" not in phonemize(texts[0])  # the T2S model's phonemizer too


# --- outputs written atomically ----------------------------------------------------------------------------------------


def test_convert_to_file_failing_midway_keeps_the_old_output(pipe, speech, tmp_path, monkeypatch):  # noqa: F811
    """A full disk (or any error) after the first written block: the previous file is untouched, no partial file
    remains beside it; a complete run replaces it."""
    output = tmp_path / "out.wav"
    output.write_bytes(b"the previous output")
    write = soundfile.SoundFile.write

    def write_then_fail(file, block):
        write(file, block)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(soundfile.SoundFile, "write", write_then_fail)
    with pytest.raises(OSError, match="No space left"):
        pipe.convert_to_file(speech["the quick brown fox"], output, seed=0)
    assert output.read_bytes() == b"the previous output" and [p.name for p in tmp_path.iterdir()] == ["out.wav"]
    monkeypatch.undo()
    pipe.convert_to_file(speech["the quick brown fox"], output, seed=0)
    assert soundfile.info(output).frames > 0 and [p.name for p in tmp_path.iterdir()] == ["out.wav"]
