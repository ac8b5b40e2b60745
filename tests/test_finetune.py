"""Fine-tuning on one voice (soundstorm_hf.training.finetune) end to end on CPU: a tiny random base model, a few
espeak-ng utterances of one voice as long multi-sentence recordings in assorted formats, a LoRA adapter."""

import json
import os
import shutil
import sys

import numpy as np
import pytest
import soundfile
import soxr
import torch

from soundstorm_hf import SoundStormForConditionalGeneration, cli
from soundstorm_hf.audio import synthesize_speech
from soundstorm_hf.pipeline import SoundStormPipeline
from soundstorm_hf.training import finetune

from test_text import tiny_pipeline, tiny_pipeline_folder  # noqa: F401  (the shared tiny model folder)
from test_training import terminate_at_line

pytest.importorskip("peft")
pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")

SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "seven green apples fell from the tree",
    "please call me back tomorrow morning",
    "a bright yellow boat sailed across the lake",
    "she sells sea shells by the sea shore",
    "every cloud has a silver lining today",
]



def speech(sentences, voice="en+f3"):
    """One recording of `sentences` with half a second of silence between them (and around them)."""
    parts, rate = [], None
    for sentence in sentences:
        waveform, rate = synthesize_speech(sentence, voice)
        parts += [np.zeros(rate // 2, dtype=np.float32), waveform.astype(np.float32)]
    return np.concatenate(parts + [np.zeros(rate // 2, dtype=np.float32)]), rate


@pytest.fixture(scope="module")
def base(tiny_pipeline_folder):
    return tiny_pipeline_folder


@pytest.fixture(scope="module")
def voice_folder(tmp_path_factory):
    """About 40 s of one voice: two long recordings (split on their silences), a stereo 44.1 kHz flac, a silent file
    and a broken one (both skipped)."""
    folder = tmp_path_factory.mktemp("voice")
    soundfile.write(folder / "long_1.wav", *speech(SENTENCES * 2))
    soundfile.write(folder / "long_2.ogg", *speech(SENTENCES[::-1]))
    waveform, rate = speech(SENTENCES[:2])
    stereo = np.stack([waveform, 0.5 * waveform], axis=1)
    soundfile.write(folder / "stereo.flac", soxr.resample(stereo, rate, 44100), 44100)
    soundfile.write(folder / "silent.wav", np.zeros(16000, dtype=np.float32), 16000)
    (folder / "broken.wav").write_bytes(b"RIFF, but not a wav file")
    return folder


@pytest.fixture(scope="module")
def adapter(base, voice_folder, tmp_path_factory):
    output = tmp_path_factory.mktemp("adapter")
    argv = ["finetune", "--audio", str(voice_folder), "--output", str(output), "--base", str(base),
            "--max_steps", "40", "--eval_steps", "10", "--early_stopping_patience", "3", "--lora_rank", "8",
            "--max_piece_seconds", "6", "--skip_speaker_check", "--per_device_batch_size", "4",
            "--learning_rate", "3e-3", "--num_audio_samples", "0"]
    cli.main(argv)
    return output


def test_finetune_writes_a_small_adapter_naming_its_base(adapter, base):
    files = {path.name for path in adapter.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "soundstorm_adapter.json", "README.md"} <= files
    assert "model.safetensors" not in files and "codec" not in files, "the adapter alone"
    info = json.loads((adapter / "soundstorm_adapter.json").read_text())
    assert info["base_model"] == str(base)
    assert str(base) in (adapter / "README.md").read_text()
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["r"] == 8 and set(config["target_modules"]) == {"q_proj", "k_proj", "v_proj", "out_proj", "intermediate_dense", "output_dense"}


def test_held_out_loss_on_the_new_voice_falls(adapter):
    results = json.loads((adapter / "all_results.json").read_text())
    assert results["eval/loss"] < results["eval/initial_loss"] - 0.05, results


def test_adapter_reloads_to_the_same_outputs(adapter, base):
    from peft import PeftModel

    merged = SoundStormPipeline.from_pretrained(base, adapter=adapter).model
    plain = SoundStormForConditionalGeneration.from_pretrained(base).eval()
    unmerged = PeftModel.from_pretrained(SoundStormForConditionalGeneration.from_pretrained(base), str(adapter)).eval()
    generator = torch.Generator().manual_seed(0)
    semantic = torch.randint(0, 16, (1, 40), generator=generator)
    acoustic = torch.randint(0, 16, (1, 3, 80), generator=generator)
    with torch.no_grad():
        logits = [model(semantic_ids=semantic, acoustic_ids=acoustic).logits for model in (merged, unmerged, plain)]
    torch.testing.assert_close(logits[0], logits[1], atol=1e-4, rtol=1e-4)
    assert (logits[0] - logits[2]).abs().max() > 1e-3, "the adapter changes the model"
    codes = [model.generate(semantic, seed=0) for model in (merged, SoundStormPipeline.from_pretrained(base, adapter=adapter).model)]
    assert torch.equal(*codes)


def test_adapter_on_another_base_is_refused_naming_both(adapter, tmp_path):
    torch.manual_seed(1)
    pipe = tiny_pipeline()
    other = SoundStormForConditionalGeneration(pipe.model.config)  # same shapes, other weights
    SoundStormPipeline(other, pipe.codec, pipe.semantic_tokenizer).save_pretrained(tmp_path)
    info = json.loads((adapter / "soundstorm_adapter.json").read_text())
    with pytest.raises(ValueError, match="trained on the base model") as error:
        SoundStormPipeline.from_pretrained(tmp_path, adapter=adapter)
    assert info["base_model"] in str(error.value) and str(tmp_path) in str(error.value)


def fails(capsys, argv, message):
    with pytest.raises(SystemExit) as exit:
        cli.main(argv)
    error = capsys.readouterr().err
    assert exit.value.code == 1 and "Traceback" not in error, error
    assert message in error.strip().splitlines()[-1], error


def test_bad_input_is_refused_before_training(base, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(finetune.prepare, "main", lambda *args: pytest.fail("got as far as tokenizing"))
    run = ["finetune", "--base", str(base), "--output", str(tmp_path / "out"), "--audio"]
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no audio here")
    fails(capsys, run + [str(empty)], "no audio files in")
    silent = tmp_path / "silent"
    silent.mkdir()
    for index in range(3):
        soundfile.write(silent / f"{index}.wav", np.zeros(48000, dtype=np.float32), 16000)
    soundfile.write(silent / "hiss.wav", 1e-5 * np.random.default_rng(0).standard_normal(16000 * 40), 16000)
    fails(capsys, run + [str(silent)], "s of speech")
    short = tmp_path / "short"
    short.mkdir()
    soundfile.write(short / "a.wav", *speech(SENTENCES[:3]))
    fails(capsys, run + [str(short)], "at least 30 s are needed")
    fails(capsys, run + [str(tmp_path / "missing")], "no such folder")
    monkeypatch.chdir(tmp_path)  # relative names: a missing folder, never taken for a Hub id
    fails(capsys, run + ["missing/"], "--audio: no such folder: missing/")
    fails(capsys, run + ["empty/voice"], "--audio: no such folder: empty/voice")
    fails(capsys, run + ["someone/voice-dataset"], "--audio: someone/voice-dataset is no local folder nor a Hub dataset")
    no_tokenizers = tmp_path / "no_tokenizers"
    shutil.copytree(base, no_tokenizers)
    shutil.rmtree(no_tokenizers / "codec")
    fails(capsys, ["finetune", "--base", str(no_tokenizers), "--output", str(tmp_path / "out"), "--audio", str(short)], "codec/")


def test_several_speakers_are_warned_about(tmp_path, caplog):
    pytest.importorskip("resemblyzer")
    paths = []
    for voice in ("en+m3", "en+f3"):
        for index, sentence in enumerate(SENTENCES[:4]):
            paths.append(tmp_path / f"{voice}-{index}.wav")
            soundfile.write(paths[-1], *synthesize_speech(sentence, voice))
    assert "several speakers" in finetune.check_one_speaker(paths)
    assert finetune.check_one_speaker([path for path in paths if "f3" in path.name]) is None


def test_split_on_silences_cuts_long_recordings_in_pauses():
    rate = 16000
    tone = 0.3 * np.sin(np.arange(rate * 2) / rate * 2 * np.pi * 220).astype(np.float32)
    gap = np.zeros(rate // 2, dtype=np.float32)
    recording = np.concatenate([gap, tone, gap, tone, gap, tone, gap])  # 3 x 2 s of sound
    pieces = finetune.split_on_silences(recording, rate, max_seconds=5)
    assert [round(seconds, 1) for _, seconds in pieces] == [4.0, 2.0]
    assert all(len(piece) <= 5 * rate for piece, _ in pieces)


def test_a_finished_fine_tune_is_not_trained_over(adapter, base, voice_folder, capsys):
    before = {path.name: path.read_bytes() for path in adapter.iterdir() if path.is_file()}
    fails(capsys, ["finetune", "--audio", str(voice_folder), "--output", str(adapter), "--base", str(base)],
          f"--output: {adapter} already holds a finished fine-tune (all_results.json): pass --overwrite")
    assert {path.name: path.read_bytes() for path in adapter.iterdir() if path.is_file()} == before


def test_sigterm_stops_finetune_with_143_and_no_traceback(base, voice_folder, tmp_path):
    command = [sys.executable, "-m", "soundstorm_hf.cli", "finetune", "--audio", str(voice_folder), "--output",
               str(tmp_path / "out"), "--base", str(base), "--max-steps", "1000", "--eval-steps", "1000",
               "--skip-speaker-check", "--max-piece-seconds", "6", "--num-audio-samples", "0", "--logging-steps", "1"]
    returncode, output = terminate_at_line(command, {**os.environ, "OMP_NUM_THREADS": "1"}, "step 2: {")  # training
    assert returncode == 143, output[-3000:]
    assert "Traceback" not in output and "Stopped by SIGTERM at step" in output.strip().splitlines()[-1], output[-3000:]
    assert any((tmp_path / "out" / "checkpoints").iterdir()), "a checkpoint to continue from"
