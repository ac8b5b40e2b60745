"""Packed token files (`soundstorm_hf.token_packing`): exact round trips, compact output, clear refusals."""

import importlib.util
import json
import lzma
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from soundstorm_hf.token_packing import pack_tokens, unpack_tokens


def utterances(count=5, levels=8, codebook_size=1024, vocab=64, seed=0):
    rng = np.random.default_rng(seed)
    frames = rng.integers(1, 400, size=count)
    acoustic = [rng.integers(0, codebook_size, size=(levels, n)) for n in frames]
    semantic = [rng.integers(0, vocab, size=n // 2) for n in frames]  # 25 Hz against 50 Hz
    return acoustic, semantic


def test_round_trip_is_exact_with_metadata_and_info(tmp_path):
    acoustic, semantic = utterances()
    acoustic[1] = np.full((8, 3), 1023)  # the largest 10-bit code
    semantic[2] = np.zeros(0, dtype=np.int64)  # an utterance too short for one semantic frame
    metadata = {"text": ["a", "b, \"quoted\"", "", "ünïcode", "e"], "speaker": ["s1", "s1", "s2", "s3", "s3"]}
    info = {"codebook_size": 1024, "acoustic_frame_rate": 50.0}
    path = tmp_path / "tokens.npz"
    size = pack_tokens(path, acoustic, semantic, metadata=metadata, info=info)
    assert size == path.stat().st_size
    packed = unpack_tokens(path)
    assert len(packed.acoustic_ids) == len(packed.semantic_ids) == 5
    for original, restored in zip(acoustic, packed.acoustic_ids):
        np.testing.assert_array_equal(original, restored)
    for original, restored in zip(semantic, packed.semantic_ids):
        np.testing.assert_array_equal(original, restored)
    assert packed.metadata == metadata and packed.info == info
    assert not list(tmp_path.glob("*.part"))


def test_single_and_zero_utterances(tmp_path):
    acoustic, semantic = utterances(count=1)
    pack_tokens(tmp_path / "one.npz", acoustic, semantic)
    packed = unpack_tokens(tmp_path / "one.npz")
    np.testing.assert_array_equal(packed.acoustic_ids[0], acoustic[0])
    pack_tokens(tmp_path / "none.npz", [], [])
    empty = unpack_tokens(tmp_path / "none.npz")
    assert empty.acoustic_ids == [] and empty.semantic_ids == [] and empty.metadata == {}


def test_k_means_like_codes_pack_below_ten_bits(tmp_path):
    """Codes of real speech repeat (silence) and are not uniform: the file must beat plain 10-bit packing."""
    rng = np.random.default_rng(1)
    frames = 20000
    weights = 1 / np.arange(1, 1025)  # Zipf-like code frequencies, as k-means codes on speech have
    codes = rng.choice(1024, size=(8, frames), p=weights / weights.sum())
    codes[:, 5000:7000] = codes[:, 5000:5001]  # a pause: the same code for 40 s
    path = tmp_path / "tokens.npz"
    size = pack_tokens(path, [codes], [codes[0, ::2] % 64])
    assert size * 8 < 10 * codes.size
    np.testing.assert_array_equal(unpack_tokens(path).acoustic_ids[0], codes)


@pytest.mark.parametrize(
    "acoustic, semantic, message",
    [
        ([np.zeros((8, 4), dtype=np.int64)], [], "1 acoustic but 0 semantic"),
        ([np.zeros((8, 4)), np.zeros((7, 4))], [np.zeros(2), np.zeros(2)], "integer"),
        ([np.zeros((8, 4), dtype=int), np.zeros((7, 4), dtype=int)], [np.zeros(2, int)] * 2, "same number"),
        ([np.full((8, 4), -1)], [np.zeros(2, int)], "outside"),
        ([np.full((8, 4), 70000)], [np.zeros(2, int)], "outside"),
        ([np.zeros(4, int)], [np.zeros(2, int)], "2-D"),
    ],
)
def test_bad_input_is_refused_before_writing(tmp_path, acoustic, semantic, message):
    path = tmp_path / "tokens.npz"
    with pytest.raises(ValueError, match=message):
        pack_tokens(path, acoustic, semantic)
    assert not any(tmp_path.iterdir())


def test_metadata_must_have_one_value_per_utterance(tmp_path):
    acoustic, semantic = utterances(count=2)
    with pytest.raises(ValueError, match="'text' has 1 values for 2"):
        pack_tokens(tmp_path / "t.npz", acoustic, semantic, metadata={"text": ["only one"]})


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    acoustic, semantic = utterances(count=2)
    path = tmp_path / "tokens.npz"
    pack_tokens(path, acoustic, semantic)
    before = path.read_bytes()

    def broken_savez(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        pack_tokens(path, *utterances(count=3, seed=4))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokens.npz"]


def rewrite(path, **replacements):
    """Rewrite an .npz with some members replaced (a damaged or foreign file)."""
    with np.load(path) as arrays:
        members = {name: arrays[name] for name in arrays.files}
    members.update(replacements)
    np.savez(path, **members)


def test_damaged_files_fail_with_one_line_errors(tmp_path):
    acoustic, semantic = utterances(count=3)
    path = tmp_path / "tokens.npz"

    pack_tokens(path, acoustic, semantic)
    with np.load(path) as arrays:
        lengths = arrays["acoustic_lengths"].copy()
    lengths[0] += 1  # the header declares more frames than the stream holds
    rewrite(path, acoustic_lengths=lengths)
    with pytest.raises(ValueError, match="acoustic stream does not hold"):
        unpack_tokens(path)

    pack_tokens(path, acoustic, semantic)
    rewrite(path, semantic=np.frombuffer(b"not xz at all", dtype=np.uint8))
    with pytest.raises(ValueError, match="semantic stream is corrupt"):
        unpack_tokens(path)

    pack_tokens(path, acoustic, semantic)
    rewrite(path, header=np.frombuffer(json.dumps({"format": "other"}).encode(), dtype=np.uint8))
    with pytest.raises(ValueError, match="not a version-1"):
        unpack_tokens(path)

    pack_tokens(path, acoustic, semantic)
    rewrite(path, semantic_lengths=np.array([-1, 1, 1]))
    with pytest.raises(ValueError, match="inconsistent"):
        unpack_tokens(path)

    pack_tokens(path, acoustic, semantic)
    rewrite(path, metadata=np.frombuffer(lzma.compress(b"[1, 2"), dtype=np.uint8))
    with pytest.raises(ValueError, match="metadata is not JSON"):
        unpack_tokens(path)

    pack_tokens(path, acoustic, semantic)
    rewrite(path, acoustic_lengths=np.array([1.5, 2.0, 3.0]))
    with pytest.raises(ValueError, match="inconsistent"):
        unpack_tokens(path)

    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ValueError, match="not a packed token file"):
        unpack_tokens(tmp_path / "text.npz")
    with zipfile.ZipFile(tmp_path / "other.npz", "w") as archive:
        archive.writestr("something.npy", b"")
    with pytest.raises(ValueError, match="not a packed token file"):
        unpack_tokens(tmp_path / "other.npz")


def test_token_dataset_round_trip_through_packed_files(tmp_path):
    """training/pack_token_dataset.py: what unpack gives back is the token dataset pack was given, row for row."""
    import datasets

    from soundstorm_hf.data import TokenDatasetInfo, token_features

    path = Path(__file__).resolve().parents[1] / "training" / "pack_token_dataset.py"
    spec = importlib.util.spec_from_file_location("pack_token_dataset", path)
    script = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # its dataclasses look themselves up
    spec.loader.exec_module(script)
    acoustic, semantic = utterances(count=7)
    rows = {
        "semantic_ids": [ids.tolist() for ids in semantic],
        "acoustic_ids": [codes.tolist() for codes in acoustic],
        "num_frames": [codes.shape[1] for codes in acoustic],
        "duration": [codes.shape[1] / 50 + 0.013 for codes in acoustic],
        "text": [f"sentence {index}" for index in range(7)],
        "speaker_id": ["a", "b", "a", "c", "c", "b", "a"],
    }
    tokens = tmp_path / "tokens"
    datasets.Dataset.from_dict(rows, features=token_features(8, 1024, 64, ["text", "speaker_id"])).save_to_disk(tokens)
    info = TokenDatasetInfo("codec", "semantic_tokenizer", 8, 1024, 64, 50.0, 25.0, 16000, 16000,
                            source={"name": "corpus"}, num_rows=7, hours=0.01)
    info.save(tokens)
    (tokens / "codec").mkdir()
    (tokens / "codec" / "soundstorm_codec.json").write_text("{}")

    script.main(["pack", str(tokens), str(tmp_path / "packed"), "--hours_per_file", "0.001"])  # 3.6 s a file
    assert len(list((tmp_path / "packed").glob("tokens-*.npz"))) > 2
    script.main(["unpack", str(tmp_path / "packed"), str(tmp_path / "restored")])

    restored = datasets.load_from_disk(str(tmp_path / "restored"))
    original = datasets.load_from_disk(str(tokens))
    assert restored.features == original.features
    assert restored.to_list() == original.to_list()
    assert TokenDatasetInfo.load(tmp_path / "restored") == info
    assert (tmp_path / "restored" / "codec" / "soundstorm_codec.json").read_text() == "{}"

    # Tokenizers already on the other side (the repository's default ones) need not travel twice.
    script.main(["pack", str(tokens), str(tmp_path / "lean"), "--without_tokenizers"])
    assert not (tmp_path / "lean" / "codec").exists()
    script.main(["unpack", str(tmp_path / "lean"), str(tmp_path / "again"), "--tokenizers_dir", str(tokens)])
    assert datasets.load_from_disk(str(tmp_path / "again")).to_list() == original.to_list()
    assert (tmp_path / "again" / "codec" / "soundstorm_codec.json").read_text() == "{}"


def test_metadata_is_compressed(tmp_path):
    count = 2000
    acoustic = [np.zeros((8, 1), dtype=np.int64)] * count
    text = [f"Sentence number {index} was read by the speaker in a quiet room." for index in range(count)]
    size = pack_tokens(tmp_path / "t.npz", acoustic, [np.zeros(0, dtype=np.int64)] * count, metadata={"text": text})
    assert size < len(json.dumps(text)) / 3
    assert unpack_tokens(tmp_path / "t.npz").metadata == {"text": text}
