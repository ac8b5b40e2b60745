"""Faults met by data preparation and training (issue 10): each ends in correct behaviour or a one-line error, and
nothing is lost. One tiny token dataset serves the module; training runs in-process, except where a real signal
must reach a real process.
"""

import argparse
import io
import json
import logging
import shutil
import signal
import sys
import threading

import datasets
import numpy as np
import pytest
import soundfile
import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from test_training import ENV, REPO, prepare_dataset, terminate_at_line, train

from soundstorm_hf import SoundStormForConditionalGeneration
from soundstorm_hf.data import TokenDatasetInfo

TEXTS = ("seven green apples fell from the tree", "please call me back tomorrow morning")
VOICES = ("en+m3", "en+f3", "en-us+m1")
# A tiny model on 4 training rows (2 held out), 2 rows a step, a constant rate: a step takes a fraction of a second.
TRAIN_ARGS = [
    "--model_preset", "tiny", "--per_device_batch_size", "2", "--learning_rate", "5e-3", "--warmup_steps", "0",
    "--lr_scheduler_type", "constant", "--max_frames", "50", "--eval_split_size", "2", "--logging_steps", "1",
    "--eval_steps", "1000", "--num_audio_samples", "0", "--report_to", "none", "--seed", "0",
]


def wav_bytes(waveform: np.ndarray, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, waveform, rate, format="WAV")
    return buffer.getvalue()


def prepare_arguments(source, output_dir, **overrides):
    arguments = dict(dataset_name=str(source), output_dir=str(output_dir), codec_num_levels=4, codec_codebook_size=32,
                     semantic_num_clusters=32, shard_size=2, batch_size=2)
    return prepare_dataset.PrepareArguments(**{**arguments, **overrides})


def train_arguments(tokens, output_dir, *extra: str) -> list[str]:
    return ["--dataset_name", str(tokens), "--output_dir", str(output_dir), *TRAIN_ARGS, *extra]


def run_training(tokens, output_dir, *extra: str) -> dict:
    return train.main(*train.parse_arguments(train_arguments(tokens, output_dir, *extra)))


def copy_run(run, destination):
    shutil.copytree(run, destination)
    return destination


def checkpoint_names(output_dir) -> list[str]:
    return sorted(path.name for path in (output_dir / "checkpoints").iterdir())


@pytest.fixture(scope="module")
def source(tmp_path_factory, espeak_speech):
    """A saved audio dataset: a silent clip and bytes that are no audio, then six utterances. In shards of two
    rows, the first shard drops every row."""
    rows = [wav_bytes(np.zeros(16000, np.float32)), b"not audio"]
    rows += [wav_bytes(espeak_speech(text, voice)) for text in TEXTS for voice in VOICES]
    folder = tmp_path_factory.mktemp("source")
    audio = [{"bytes": row, "path": None} for row in rows]
    datasets.Dataset.from_dict({"audio": audio}).cast_column("audio", datasets.Audio(decode=False)).save_to_disk(str(folder))
    return folder


@pytest.fixture(scope="module")
def tokens(source, tmp_path_factory, single_threaded_sklearn):
    output_dir = tmp_path_factory.mktemp("tokens")
    prepare_dataset.main(prepare_arguments(source, output_dir, fit_tokenizers=True))
    return output_dir


@pytest.fixture(scope="module")
def interrupted(tokens, tmp_path_factory):
    """A run that gets a real SIGINT (Ctrl-C) during its third step; returns its folder, the `RunStopped` and the
    SIGINT handler the run started with (SIG_IGN when pytest itself runs as a background job of a script)."""
    output_dir, handler_before = tmp_path_factory.mktemp("interrupted"), signal.getsignal(signal.SIGINT)
    forward, calls = SoundStormForConditionalGeneration.forward, []

    def interrupt_during_third_step(self, *args, **kwargs):
        if threading.current_thread() is threading.main_thread():  # training steps only, never a helper thread
            calls.append(1)
            if len(calls) == 3:
                signal.raise_signal(signal.SIGINT)  # delivered to this thread before raise_signal returns
        return forward(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SoundStormForConditionalGeneration, "forward", interrupt_during_third_step)
        with pytest.raises(train.RunStopped) as stopped:
            run_training(tokens, output_dir, "--max_steps", "50", "--save_steps", "50")
    return output_dir, stopped.value, handler_before


# ---------------------------------------------------------------------------------------------------------------
# Data preparation


def test_prepare_finishes_when_a_shard_drops_every_row(tokens, source, tmp_path):
    info = TokenDatasetInfo.load(tokens)
    assert len(datasets.load_from_disk(str(tokens))) == info.num_rows == 6
    assert info.dropped == {"decode_error": 1, "silent": 1}

    unusable = tmp_path / "unusable"
    datasets.load_from_disk(str(source)).select(range(2)).save_to_disk(str(unusable))
    loaded = dict(codec=str(tokens / "codec"), semantic_tokenizer=str(tokens / "semantic_tokenizer"))
    with pytest.raises(SystemExit) as exit_info:  # through the command line: one line, no traceback
        prepare_dataset.cli(["--dataset_name", str(unusable), "--output_dir", str(tmp_path / "out"),
                             "--codec", loaded["codec"], "--semantic-tokenizer", loaded["semantic_tokenizer"]])
    error = str(exit_info.value.code)
    assert "\n" not in error and error.endswith("error: All 2 rows were dropped ({'decode_error': 1, 'silent': 1}): "
                                               "there is no token dataset to write."), error


def test_prepare_refuses_to_resume_with_other_arguments(tokens, source, tmp_path, monkeypatch):
    loaded = dict(codec=str(tokens / "codec"), semantic_tokenizer=str(tokens / "semantic_tokenizer"))
    real, calls = prepare_dataset.tokenize_shard, []

    def crash_on_third_shard(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(prepare_dataset, "tokenize_shard", crash_on_third_shard)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset.main(prepare_arguments(source, tmp_path, **loaded))
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    assert (manifest["shard_size"], manifest["codec"]) == (2, loaded["codec"])

    other_codec = str(tokens / "semantic_tokenizer")
    with pytest.raises(argparse.ArgumentError, match="codec: .*codec' then, .*semantic_tokenizer' now; shard_size: 2 then, 3 now"):
        prepare_dataset.main(prepare_arguments(source, tmp_path, **{**loaded, "codec": other_codec}, shard_size=3))
    with pytest.raises(argparse.ArgumentError, match="dataset_name: .* then, 'another/source' now"):
        prepare_dataset.main(prepare_arguments(source, tmp_path, **loaded, dataset_name="another/source"))
    monkeypatch.undo()
    prepare_dataset.main(prepare_arguments(source, tmp_path, **loaded))  # the same arguments: it continues
    assert datasets.load_from_disk(str(tmp_path))["acoustic_ids"] == datasets.load_from_disk(str(tokens))["acoustic_ids"]


def test_prepare_without_tokenizers_is_a_usage_error(source, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        prepare_dataset.cli(["--dataset_name", str(source), "--output_dir", str(tmp_path)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("usage:") and "--codec and --semantic-tokenizer, or --fit-tokenizers" in error.splitlines()[-1]


def test_prepare_fitting_shows_progress_and_the_real_row_count(source, tmp_path, caplog, capsys, single_threaded_sklearn):
    caplog.set_level(logging.INFO, logger="prepare_dataset")
    arguments = prepare_arguments(source, tmp_path, fit_tokenizers=True)
    assert arguments.fit_num_examples > 8  # more than the dataset holds
    dataset = prepare_dataset.load_audio_dataset(str(source), None, "train", streaming=False)
    prepare_dataset.fit_offline_tokenizers(arguments, dataset, "audio")
    assert caplog.messages == ["Fitted OfflineMfccTokenizer on 6 rows", "Fitted OfflineMelCodec on 6 rows"]
    bar = capsys.readouterr().err.replace("\r", "\n").splitlines()
    assert any(line.startswith("Fitting OfflineMelCodec:") and "| 6/8 [" in line for line in bar)  # usable of at most 8


# ---------------------------------------------------------------------------------------------------------------
# Training: divergence


def test_a_non_finite_loss_skips_the_update_and_is_reported_as_nan(tokens, tmp_path, monkeypatch, caplog):
    forward, calls = SoundStormForConditionalGeneration.forward, []

    def nan_loss_in_steps_3_and_4(self, *args, **kwargs):
        calls.append(1)
        output = forward(self, *args, **kwargs)
        if len(calls) in (3, 4):
            output.loss = output.loss * float("nan")
        return output

    monkeypatch.setattr(SoundStormForConditionalGeneration, "forward", nan_loss_in_steps_3_and_4)
    caplog.set_level(logging.INFO, logger="train")
    run_training(tokens, tmp_path, "--max_steps", "6", "--save_steps", "2", "--save_total_limit", "3", "--max_nonfinite_steps", "2")
    weights = {step: load_file(tmp_path / "checkpoints" / f"checkpoint-{step}" / "model.safetensors") for step in (2, 4, 6)}
    for name in weights[2]:
        torch.testing.assert_close(weights[4][name], weights[2][name], rtol=0, atol=0, msg=name)  # skipped: no update
    assert any(not torch.equal(weights[6][name], weights[4][name]) for name in weights[4])
    assert all(tensor.isfinite().all() for tensor in load_file(tmp_path / "model.safetensors").values())
    assert any(message.startswith("step 3: {'train/loss': nan,") for message in caplog.messages)
    assert sum("update skipped" in message for message in caplog.messages) == 2


def test_divergence_stops_with_an_error_and_keeps_the_last_good_checkpoint(interrupted, tokens, tmp_path, caplog):
    output_dir = copy_run(interrupted[0], tmp_path / "run")
    good = load_file(output_dir / "checkpoints" / "checkpoint-3" / "model.safetensors")
    with pytest.raises(SystemExit) as exit_info:  # the first update with this rate wrecks the weights
        train.cli(train_arguments(tokens, output_dir, "--resume_from_checkpoint", "latest", "--learning_rate", "1e30",
                                  "--max_steps", "20", "--save_steps", "1", "--save_total_limit", "1", "--max_nonfinite_steps", "2"))
    assert exit_info.value.code == 1
    error = caplog.records[-1]
    assert error.levelname == "ERROR" and error.getMessage().startswith("Training diverged at step 7: non-finite loss nan")
    assert error.getMessage().endswith(f"resume from {output_dir / 'checkpoints' / 'checkpoint-3'} with a lower --learning-rate.")
    assert not (output_dir / "model.safetensors").exists() and not (output_dir / "README.md").exists()
    kept = load_file(output_dir / "checkpoints" / "checkpoint-3" / "model.safetensors")
    assert all(torch.equal(kept[name], good[name]) for name in good)
    for checkpoint in (output_dir / "checkpoints").iterdir():
        assert all(tensor.isfinite().all() for tensor in load_file(checkpoint / "model.safetensors").values())


def test_non_finite_weights_are_never_saved(tmp_path):
    args = train.TrainingArguments(output_dir=str(tmp_path))
    (tmp_path / "checkpoints" / "checkpoint-1").mkdir(parents=True)
    model = torch.nn.Linear(2, 2)
    model.weight.data[0, 0] = float("inf")
    with pytest.raises(train.RunStopped, match="weights hold non-finite values.*resume from .*checkpoint-1"):
        train.save_checkpoint(Accelerator(), args, 2, None, model)
    assert checkpoint_names(tmp_path) == ["checkpoint-1"]


# ---------------------------------------------------------------------------------------------------------------
# Training: signals, resumption, export


def test_sigint_saves_a_checkpoint_at_the_step_boundary(interrupted):
    output_dir, stopped, handler_before = interrupted
    assert stopped.exit_code == 130, stopped
    assert str(stopped).startswith("Stopped by SIGINT at step 3; checkpoint saved in"), stopped
    assert checkpoint_names(output_dir) == ["checkpoint-3"], checkpoint_names(output_dir)
    assert not (output_dir / "model.safetensors").exists()
    assert signal.getsignal(signal.SIGINT) is handler_before  # the run put the previous handler back


def test_a_second_signal_acts_at_once():
    """The first Ctrl-C asks for a checkpoint at the step boundary; a second one (a user who will not wait) is the
    usual KeyboardInterrupt, at once."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with train.StopSignals() as stop:
            signal.raise_signal(signal.SIGINT)
            assert stop.received == signal.SIGINT
            with pytest.raises(KeyboardInterrupt):
                signal.raise_signal(signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_sigterm_exits_cleanly_and_the_resumed_run_matches_an_uninterrupted_one(tokens, tmp_path):
    interrupted_dir, reference_dir = tmp_path / "interrupted", tmp_path / "reference"
    command = [sys.executable, str(REPO / "training" / "train.py"),
               *train_arguments(tokens, interrupted_dir, "--max_steps", "1000", "--save_steps", "1000")]
    env = {**ENV, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # the same arithmetic as the runs in this process
    returncode, output = terminate_at_line(command, env, "step 2: {")
    assert returncode == 128 + signal.SIGTERM, output[-3000:]
    (checkpoint,) = (interrupted_dir / "checkpoints").iterdir()
    step = train.checkpoint_step(checkpoint)
    assert f"Stopped by SIGTERM at step {step}; checkpoint saved in {checkpoint}" in output and "Traceback" not in output

    run_training(tokens, interrupted_dir, "--max_steps", str(step + 2), "--save_steps", "1000", "--resume_from_checkpoint", "latest")
    run_training(tokens, reference_dir, "--max_steps", str(step + 2), "--save_steps", "1000")
    resumed, uninterrupted = load_file(interrupted_dir / "model.safetensors"), load_file(reference_dir / "model.safetensors")
    assert resumed.keys() == uninterrupted.keys()
    for name in resumed:
        torch.testing.assert_close(resumed[name], uninterrupted[name], rtol=1e-5, atol=1e-6, msg=name)


def test_resume_leaves_stray_folders_alone_and_shows_progress(interrupted, tokens, tmp_path, capsys):
    output_dir = copy_run(interrupted[0], tmp_path / "run")
    stray = output_dir / "checkpoints" / "checkpoint-best"
    stray.mkdir()
    (stray / "notes.txt").write_text("mine")
    run_training(tokens, output_dir, "--max_steps", "5", "--save_steps", "1", "--save_total_limit", "1", "--resume_from_checkpoint", "latest")
    assert checkpoint_names(output_dir) == ["checkpoint-5", "checkpoint-best"]
    assert (stray / "notes.txt").read_text() == "mine"
    bar = capsys.readouterr().err.replace("\r", "\n").splitlines()
    assert any(line.startswith("training: 100%") and "5/5 [" in line and "frames/s]" in line for line in bar)


def test_resume_applies_and_reports_a_changed_learning_rate_and_batch_size(interrupted, tokens, tmp_path, caplog):
    output_dir = copy_run(interrupted[0], tmp_path / "run")
    caplog.set_level(logging.INFO, logger="train")
    run_training(tokens, output_dir, "--max_steps", "4", "--save_steps", "1000", "--resume_from_checkpoint", "latest",
                 "--learning_rate", "1e-3", "--per_device_batch_size", "4")
    assert "Training settings changed since the checkpoint, applied from step 3 on: batch_size: checkpoint 2 vs now 4, " \
           "learning_rate: checkpoint 0.005 vs now 0.001" in caplog.messages
    (step_4,) = [message for message in caplog.messages if message.startswith("step 4: {'train/loss'")]
    assert "'train/learning_rate': 0.001," in step_4


def test_export_writes_a_loadable_model_folder_from_the_last_checkpoint(interrupted, tokens, tmp_path):
    output_dir = copy_run(interrupted[0], tmp_path / "run")
    run_training(tokens, output_dir, "--export_from_checkpoint", "latest")
    model = SoundStormForConditionalGeneration.from_pretrained(output_dir)
    checkpoint = load_file(output_dir / "checkpoints" / "checkpoint-3" / "model.safetensors")
    for name, tensor in model.state_dict().items():
        if name in checkpoint:
            torch.testing.assert_close(tensor, checkpoint[name], rtol=0, atol=0, msg=name)
    assert json.loads((output_dir / "all_results.json").read_text())["step"] == 3
    assert (output_dir / "codec").is_dir() and "3 optimizer steps" in (output_dir / "README.md").read_text()


def test_batches_by_frame_budget_train_and_report_their_padding(tokens, tmp_path, caplog, monkeypatch):
    forward, shapes = SoundStormForConditionalGeneration.forward, []

    def record_shape(self, *args, **kwargs):
        if self.training:
            shapes.append(tuple(kwargs["acoustic_ids"].shape[::2]))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(SoundStormForConditionalGeneration, "forward", record_shape)
    caplog.set_level(logging.INFO, logger="train")
    run_training(tokens, tmp_path, "--max_steps", "2", "--save_steps", "1000", "--max-frames-per-batch", "200")
    assert shapes == [(4, 50), (4, 50)], shapes  # 4 rows of 50 frames fill 200; --per_device_batch_size 2 is unused
    logged = [message for message in caplog.messages if message.startswith("step 2: {'train/loss'")]
    assert logged and "'train/padding': 0.0" in logged[0], logged


def test_early_stopping_state_survives_a_resume(tokens, tmp_path):
    """No evaluation beats the one before training (a threshold of 100), so with patience 2 and an evaluation every
    2 steps the run stops at step 4 with the weights of step 0 — also when it was cut at step 2 and resumed."""
    stopping = ("--eval_steps", "2", "--save_steps", "2", "--early_stopping_patience", "2", "--early_stopping_threshold", "100")
    run_training(tokens, tmp_path / "whole", "--max_steps", "10", *stopping)
    run_training(tokens, tmp_path / "cut", "--max_steps", "2", *stopping)
    run_training(tokens, tmp_path / "cut", "--max_steps", "10", "--resume_from_checkpoint", "latest", *stopping)
    results = [json.loads((tmp_path / run / "all_results.json").read_text()) for run in ("whole", "cut")]
    assert [(result["step"], result["eval/best_step"]) for result in results] == [(4, 0), (4, 0)], results
    assert results[0]["eval/initial_loss"] == results[1]["eval/initial_loss"]
    whole, cut = (load_file(tmp_path / run / "model.safetensors") for run in ("whole", "cut"))
    assert all(torch.equal(whole[name], cut[name]) for name in whole)


def test_a_failure_while_writing_the_final_model_keeps_the_previous_one(tokens, tmp_path, monkeypatch):
    run_training(tokens, tmp_path, "--max_steps", "2", "--save_steps", "1000")
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir() if path.is_file()}

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(train, "render_model_card", full_disk)
    with pytest.raises(OSError, match="No space left"):
        run_training(tokens, tmp_path, "--max_steps", "4", "--save_steps", "1000", "--seed", "1")
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir() if path.is_file()} == before


# ---------------------------------------------------------------------------------------------------------------
# Training: arguments checked at start


@pytest.mark.parametrize("extra, named", [
    (["--gradient_accumulation_steps", "0"], "--gradient-accumulation-steps 0 (must be at least 1)"),
    (["--max_frames", "0"], "--max-frames 0 (must be at least 1)"),
    (["--save_total_limit", "0"], "--save-total-limit 0 (must be at least 1)"),
    (["--min_crop_frames", "500"], "--min-crop-frames 500 (must lie between 1 and --max-frames"),
    (["--config_overrides", "num_hidden_layers: 8"], "--config-overrides 'num_hidden_layers: 8' (must be a JSON object"),
    (["--resume_from_checkpoint", "no/such/checkpoint"], "--resume-from-checkpoint no/such/checkpoint (no such folder)"),
    (["--export_from_checkpoint", "latest"], "--export-from-checkpoint latest (no checkpoint in"),
])
def test_arguments_that_cannot_work_are_refused_before_any_step(extra, named, tokens, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.cli(train_arguments(tokens, tmp_path / "run", "--max_steps", "2", *extra))
    assert exit_info.value.code == 2
    last_line = capsys.readouterr().err.splitlines()[-1]
    assert ": error: cannot train with " in last_line and named in last_line
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_min_crop_frames_trains_on_random_window_lengths(tokens, tmp_path, monkeypatch):
    """--min_crop_frames reaches the collator: windows between it and --max_frames (50), where without it every row
    (all longer than 50 frames) is cut to exactly 50."""
    forward, widths = SoundStormForConditionalGeneration.forward, []

    def record_width(self, *args, **kwargs):
        if self.training:
            widths.append(kwargs["acoustic_ids"].shape[-1])
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(SoundStormForConditionalGeneration, "forward", record_width)
    run_training(tokens, tmp_path / "fixed", "--max_steps", "4", "--save_steps", "1000")
    assert widths == [50] * 4
    widths.clear()
    run_training(tokens, tmp_path / "random", "--max_steps", "4", "--save_steps", "1000", "--min_crop_frames", "10")
    assert len(widths) == 4 and all(10 <= width <= 50 for width in widths) and min(widths) < 50, widths


def test_an_unwritable_output_dir_is_refused_at_start(tokens, tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(SystemExit) as exit_info:
        train.cli(train_arguments(tokens, tmp_path / "a-file" / "run"))
    assert exit_info.value.code == 2
    assert f"--output-dir {tmp_path / 'a-file' / 'run'} (not writable: Not a directory)" in capsys.readouterr().err


def test_yaml_config_takes_a_mapping_of_overrides_and_null(tokens, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(f"dataset_name: {tokens}\noutput_dir: {tmp_path / 'run'}\nmodel_preset: tiny\n"
                      "config_overrides:\n  num_hidden_layers: 1\nresume_from_checkpoint: null\n")
    model_args, data_args, args = train.parse_arguments([str(config)])
    assert args.resume_from_checkpoint is None
    train.check_arguments(model_args, data_args, args)
    assert train.build_config(model_args, TokenDatasetInfo.load(tokens)).num_hidden_layers == 1
