"""The offline tokenizer pair, fitted on espeak-ng speech: quality trends, padding, save/load, dispatch, bad input."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from soundstorm_hf.tokenizers import (
    OfflineMelCodec,
    OfflineMfccTokenizer,
    load_acoustic_codec,
    load_semantic_tokenizer,
)
from soundstorm_hf.tokenizers import base

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from build_offline_tokenizers import edit_distance  # noqa: E402  (the script measures the same thing)

LEVELS, CODES, CLUSTERS = 4, 32, 32

pytestmark = pytest.mark.usefixtures("single_threaded_sklearn")


@pytest.fixture(scope="module")
def codec(speech_corpus):
    return OfflineMelCodec().fit(speech_corpus, num_levels=LEVELS, codebook_size=CODES)


@pytest.fixture(scope="module")
def semantic(speech_corpus):
    return OfflineMfccTokenizer().fit(speech_corpus, num_clusters=CLUSTERS)


@pytest.fixture(scope="module")
def padded_pair(espeak_speech):
    """Two utterances of different lengths as a right-padded batch whose padding holds noise."""
    short = torch.from_numpy(espeak_speech("seven green apples fell from the tree", "en+f3"))
    long = torch.from_numpy(espeak_speech("the quick brown fox jumps over the lazy dog", "en+m3"))
    batch = torch.randn(2, len(long))
    batch[0, : len(short)], batch[1] = short, long
    return batch, torch.tensor([len(short), len(long)]), [short, long]


def test_codec_shapes_and_frame_rule(codec, espeak_speech):
    wave = torch.from_numpy(espeak_speech("please call me back tomorrow morning", "en-us+m1"))
    for num_samples in (len(wave), 16000, 16001, 319, 1):
        codes = codec.encode(wave[:num_samples])
        assert codes.shape == (1, LEVELS, codec.num_frames(num_samples)) == (1, LEVELS, -(-num_samples // 320))
        assert codes.dtype == torch.long and 0 <= codes.min() and codes.max() < CODES
    assert (codec.frame_rate, codec.sampling_rate, codec.hop_length) == (50.0, 16000, 320)
    audio = codec.decode(codes)
    assert audio.shape == (1, codes.shape[-1] * 320)


def test_codec_error_falls_as_levels_are_added(codec, espeak_speech):
    """Quantized log-mel error is monotone over levels, on an utterance and voice outside the fitting corpus."""
    wave = torch.from_numpy(espeak_speech("my neighbour grows beans and pumpkins", "en+m5"))
    reference = codec.frontend(wave[None])
    codes = codec.encode(wave)
    errors = [
        (codec.quantizer.decode(codes[:, :levels].transpose(1, 2)) - reference).abs().mean().item()
        for levels in range(1, LEVELS + 1)
    ]
    assert all(finer < coarser for coarser, finer in zip(errors, errors[1:])), errors
    # The decoded audio tracks the same trend from the coarsest to the finest level.
    decoded = [codec.frontend(codec.decode(codes[:, :levels])[:, : len(wave)]) for levels in (1, LEVELS)]
    assert (decoded[1] - reference).abs().mean() < (decoded[0] - reference).abs().mean()


def test_codec_padding_is_exact(codec, padded_pair):
    batch, lengths, items = padded_pair
    codes = codec.encode(batch, lengths)
    frame_lengths = torch.tensor([codec.num_frames(n) for n in lengths.tolist()])
    for index, item in enumerate(items):
        alone = codec.encode(item)
        assert torch.equal(codes[index, :, : frame_lengths[index]], alone[0])
        audio_alone = codec.decode(alone)[0]
        audio_batch = codec.decode(codes, frame_lengths)[index]
        torch.testing.assert_close(audio_batch[: len(audio_alone)], audio_alone, atol=2e-3, rtol=0)
        assert not audio_batch[len(audio_alone) :].any()  # silent past its length


def test_decode_ignores_padded_codes(codec, padded_pair):
    batch, lengths, _ = padded_pair
    codes = codec.encode(batch, lengths)
    frame_lengths = torch.tensor([codec.num_frames(n) for n in lengths.tolist()])
    garbage = codes.clone()
    garbage[0, :, frame_lengths[0] :] = -100
    torch.testing.assert_close(codec.decode(garbage, frame_lengths), codec.decode(codes, frame_lengths))


def test_semantic_tokens_follow_the_words(semantic, espeak_speech):
    say = lambda text: semantic.encode(torch.from_numpy(espeak_speech(text, "en+m3")))[0].tolist()  # noqa: E731
    apples, again = say("seven green apples"), say("seven green apples")
    assert apples == again
    different = [say(text) for text in ("a bright morning", "yesterday evening", "call me back")]
    assert all(edit_distance(apples, other) > 0.5 for other in different)


def test_semantic_frames_and_padding(semantic, padded_pair):
    batch, lengths, items = padded_pair
    assert (semantic.frame_rate, semantic.hop_length, semantic.vocab_size) == (25.0, 640, CLUSTERS)
    tokens = semantic.encode(batch, lengths)
    assert tokens.shape == (2, semantic.num_frames(batch.shape[-1]))
    for index, item in enumerate(items):
        alone = semantic.encode(item)[0]
        assert len(alone) == semantic.num_frames(len(item)) == -(-len(item) // 640)
        assert torch.equal(tokens[index, : len(alone)], alone)


def test_pair_rates_are_integer_multiples(codec, semantic):
    assert codec.frame_rate / semantic.frame_rate == 2
    for num_samples in (1, 639, 640, 641, 16000, 23456):
        assert 0 <= 2 * semantic.num_frames(num_samples) - codec.num_frames(num_samples) <= 1


def test_save_load_round_trip_and_dispatch(codec, semantic, espeak_speech, tmp_path):
    wave = torch.from_numpy(espeak_speech("a bright yellow boat sailed across the lake", "en+f3"))
    codec.save_pretrained(tmp_path / "codec")
    semantic.save_pretrained(tmp_path / "semantic")
    assert json.loads((tmp_path / "codec" / base.CODEC_CONFIG_NAME).read_text())["type"] == "offline_mel_rvq"

    for loaded in (OfflineMelCodec.from_pretrained(tmp_path / "codec"), load_acoustic_codec(str(tmp_path / "codec"))):
        assert type(loaded) is OfflineMelCodec and (loaded.num_levels, loaded.codebook_size) == (LEVELS, CODES)
        assert torch.equal(loaded.encode(wave), codec.encode(wave))
        assert torch.equal(loaded.decode(codec.encode(wave)), codec.decode(codec.encode(wave)))
    folder = tmp_path / "semantic"
    for loaded in (OfflineMfccTokenizer.from_pretrained(folder), load_semantic_tokenizer(folder)):
        assert type(loaded) is OfflineMfccTokenizer
        assert torch.equal(loaded.encode(wave), semantic.encode(wave))

    with pytest.raises(ValueError, match="no soundstorm_semantic.json"):
        OfflineMfccTokenizer.from_pretrained(tmp_path / "codec")


def test_loading_from_the_hub_goes_through_huggingface_hub(codec, tmp_path, monkeypatch):
    codec.save_pretrained(tmp_path / "repo")
    calls = []

    def hf_hub_download(repo_id, filename, **kwargs):
        calls.append(("file", repo_id, filename, kwargs))
        if not (tmp_path / "repo" / filename).exists():
            raise base.EntryNotFoundError(filename)
        return str(tmp_path / "repo" / filename)

    def snapshot_download(repo_id, **kwargs):
        calls.append(("snapshot", repo_id, kwargs))
        return str(tmp_path / "repo")

    monkeypatch.setattr(base, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(base, "snapshot_download", snapshot_download)
    loaded = load_acoustic_codec("acme/offline-codec", revision="v1")
    assert isinstance(loaded, OfflineMelCodec) and loaded.num_levels == LEVELS
    # (Offline, as tests run, a cache probe comes first: an uncached id is named at once instead of retried.)
    assert [call for call in calls if call[0] == "file"][0] == ("file", "acme/offline-codec", base.CODEC_CONFIG_NAME, {"revision": "v1"})
    assert ("snapshot", "acme/offline-codec", {"revision": "v1"}) in calls
    with pytest.raises(OSError):  # no json of ours: falls back to a transformers config, which is not there
        load_semantic_tokenizer("acme/offline-codec")


def test_unfitted_tokenizers_say_so(tmp_path):
    with pytest.raises(ValueError, match="call fit"):
        OfflineMelCodec().encode(torch.randn(16000))
    with pytest.raises(ValueError, match="call fit"):
        OfflineMfccTokenizer().save_pretrained(tmp_path)


def test_too_little_audio_to_fit():
    with pytest.raises(ValueError, match="at least as many feature frames"):
        OfflineMelCodec().fit([np.random.randn(3200).astype(np.float32)], codebook_size=64)
    with pytest.raises(ValueError, match="empty"):
        OfflineMfccTokenizer().fit([])


@pytest.mark.parametrize(
    "waveform, message",
    [
        (torch.zeros(0), "empty"),
        (torch.zeros(2, 0), "empty"),
        (torch.full((1000,), float("nan")), "NaN"),
        (torch.zeros(3, 1, 1000), "shape"),
        (torch.zeros(1000, dtype=torch.int16), "float"),
    ],
)
def test_bad_waveforms(codec, semantic, waveform, message):
    for tokenizer in (codec, semantic):
        with pytest.raises(ValueError, match=message):
            tokenizer.encode(waveform)


def test_bad_lengths(codec):
    with pytest.raises(ValueError, match="lengths"):
        codec.encode(torch.randn(2, 1000), torch.tensor([1000, 1001]))
    with pytest.raises(ValueError, match="lengths"):
        codec.encode(torch.randn(2, 1000), torch.tensor([1000]))


@pytest.mark.parametrize(
    "codes, message",
    [
        (torch.zeros(LEVELS, 10, dtype=torch.long), r"\(batch, levels, frames\), got a 2-D"),
        (torch.zeros(1, 1, LEVELS, 10, dtype=torch.long), r"\(batch, levels, frames\), got a 4-D"),
        (torch.zeros(1, LEVELS, 10), "integer"),
        (torch.full((1, LEVELS, 10), CODES), "out of range"),
        (torch.full((1, LEVELS, 10), -1), "out of range"),
        (torch.zeros(1, LEVELS + 1, 10, dtype=torch.long), "levels"),
        (torch.zeros(1, LEVELS, 0, dtype=torch.long), "empty"),
    ],
)
def test_bad_codes(codec, codes, message):
    with pytest.raises(ValueError, match=message):
        codec.decode(codes)
