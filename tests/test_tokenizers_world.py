"""The WORLD codec, fitted at test time on espeak-ng speech: frames, round trip, padding, save/load, bad input."""

import json
import sys

import numpy as np
import pytest
import torch

from soundstorm_hf.tokenizers import OfflineMelCodec, WorldCodec, base, load_acoustic_codec

pytest.importorskip("pyworld")

LEVELS, CODES = 4, 32
COEFFICIENTS = 40  # the default num_envelope_coefficients: features [:40] envelope, [40] log-F0, [41] voicing

pytestmark = pytest.mark.usefixtures("single_threaded_sklearn")


@pytest.fixture(scope="module")
def codec(speech_corpus):
    return WorldCodec().fit(speech_corpus, num_levels=LEVELS, codebook_size=CODES)


@pytest.fixture(scope="module")
def held_out(espeak_speech):
    """An utterance and a voice that the fitting corpus does not hold."""
    return torch.from_numpy(espeak_speech("my neighbour grows beans and pumpkins", "en+m5"))


def test_shapes_and_frame_rule(codec, espeak_speech):
    wave = torch.from_numpy(espeak_speech("please call me back tomorrow morning", "en-us+m1"))
    assert (codec.frame_rate, codec.sampling_rate, codec.hop_length) == (50.0, 16000, 320)
    for num_samples in (len(wave), 16000, 16001, 319, 1):
        codes = codec.encode(wave[:num_samples])
        assert codes.shape == (1, LEVELS, codec.num_frames(num_samples)) == (1, LEVELS, -(-num_samples // 320))
        assert codes.dtype == torch.long and 0 <= codes.min() and codes.max() < CODES
        assert codec.decode(codes).shape == (1, codes.shape[-1] * 320)


def test_round_trip_keeps_pitch_and_envelope(codec, held_out):
    """Analysed again, the decoded audio has the source's median F0 and an envelope far closer to the source's
    frames than the corpus-average frame is; more levels bring it closer."""
    source = codec.features(held_out)  # (frames, dim)
    errors = []
    for levels in (1, LEVELS):
        decoded = codec.decode(codec.encode(held_out)[:, :levels])[0, : len(held_out)]
        again = codec.features(decoded)
        errors.append((again[:, :COEFFICIENTS] - source[:, :COEFFICIENTS]).abs().mean().item())
    average_frame_error = (codec.feature_mean[:COEFFICIENTS] - source[:, :COEFFICIENTS]).abs().mean().item()
    assert errors[1] < errors[0] and errors[1] < 0.5 * average_frame_error, (errors, average_frame_error)

    voiced = (source[:, COEFFICIENTS + 1] > 0.5) & (again[:, COEFFICIENTS + 1] > 0.5)
    assert voiced.float().mean() > 0.3  # the voicing survives too
    source_f0 = source[voiced, COEFFICIENTS].exp().median()
    decoded_f0 = again[voiced, COEFFICIENTS].exp().median()
    assert abs(decoded_f0 / source_f0 - 1) < 0.05, (source_f0, decoded_f0)


def test_padding_is_exact(codec, espeak_speech):
    short = torch.from_numpy(espeak_speech("seven green apples fell from the tree", "en+f3"))
    long = torch.from_numpy(espeak_speech("the quick brown fox jumps over the lazy dog", "en+m3"))
    batch = torch.randn(2, len(long))  # noise in the padding
    batch[0, : len(short)], batch[1] = short, long
    codes = codec.encode(batch, torch.tensor([len(short), len(long)]))
    frame_lengths = torch.tensor([codec.num_frames(len(short)), codec.num_frames(len(long))])
    audio = codec.decode(codes, frame_lengths)
    for index, item in enumerate((short, long)):
        alone = codec.encode(item)
        assert torch.equal(codes[index, :, : frame_lengths[index]], alone[0])
        audio_alone = codec.decode(alone)[0]
        torch.testing.assert_close(audio[index, : len(audio_alone)], audio_alone)
        assert not audio[index, len(audio_alone) :].any()


def test_any_valid_code_decodes_to_finite_audio(codec):
    generator = torch.Generator().manual_seed(0)
    random_codes = torch.randint(0, CODES, (3, LEVELS, 40), generator=generator)
    extremes = torch.stack([torch.zeros(LEVELS, 40), torch.full((LEVELS, 40), CODES - 1)]).long()
    for codes in (random_codes, extremes, random_codes[:, :1]):
        audio = codec.decode(codes)
        assert audio.shape == (codes.shape[0], 40 * 320) and torch.isfinite(audio).all()


def test_save_load_round_trip_and_dispatch(codec, held_out, tmp_path):
    codec.save_pretrained(tmp_path / "codec")
    config = json.loads((tmp_path / "codec" / base.CODEC_CONFIG_NAME).read_text())
    assert config["type"] == "offline_world_rvq" and len(config["feature_scale"]) == COEFFICIENTS + 3
    codes = codec.encode(held_out)
    for loaded in (WorldCodec.from_pretrained(tmp_path / "codec"), load_acoustic_codec(str(tmp_path / "codec"))):
        assert type(loaded) is WorldCodec and (loaded.num_levels, loaded.codebook_size) == (LEVELS, CODES)
        assert torch.equal(loaded.encode(held_out), codes)
        assert torch.equal(loaded.decode(codes), codec.decode(codes))
    with pytest.raises(ValueError, match="pitch_tracker must be one of"):
        WorldCodec.from_pretrained(tmp_path / "codec", pitch_tracker="yin")


def test_bad_input_gets_a_named_error(codec):
    with pytest.raises(ValueError, match="no k-means centroids"):
        WorldCodec().encode(torch.zeros(16000))
    with pytest.raises(ValueError, match="NaN"):
        codec.encode(torch.full((16000,), float("nan")))
    with pytest.raises(ValueError, match="out of range"):
        codec.decode(torch.full((1, LEVELS, 5), CODES))
    with pytest.raises(ValueError, match="levels"):
        codec.decode(torch.zeros(1, LEVELS + 1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="feature_mean and feature_scale"):
        WorldCodec(quantizer=codec.quantizer)
    with pytest.raises(ValueError, match="min_f0"):
        WorldCodec(min_f0=300.0, max_f0=100.0)


def test_without_pyworld_the_error_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyworld", None)  # makes `import pyworld` raise ImportError
    with pytest.raises(ImportError, match="pip install pyworld"):
        WorldCodec()
    assert OfflineMelCodec().sampling_rate == 16000  # the fallback codec needs no pyworld


def test_pitch_trackers_agree_on_the_pitch(codec, held_out):
    """dio + stonemask (the default) and harvest find the same median F0 on clean speech."""
    medians = []
    for tracker in ("dio", "harvest"):
        features = WorldCodec(pitch_tracker=tracker).features(held_out)
        voiced = features[:, COEFFICIENTS + 1] > 0.5
        medians.append(np.median(features[voiced, COEFFICIENTS].exp().numpy()))
    assert abs(medians[0] / medians[1] - 1) < 0.05, medians
