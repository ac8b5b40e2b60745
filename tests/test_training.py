"""The training side end to end on a tiny espeak-ng corpus: prepare tokens, train, resume, run DDP, push.

The token dataset and the training runs are module fixtures shared by the tests, so the slow parts (fitting the
offline tokenizers, starting Python with torch) happen a handful of times.
"""

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile
import torch
from huggingface_hub.utils import filter_repo_objects
from safetensors.torch import load_file

from soundstorm_hf import SoundStormConfig, SoundStormForConditionalGeneration
from soundstorm_hf.audio import synthesize_speech
from soundstorm_hf.data import LengthGroupedBatchSampler, TokenDatasetInfo, check_token_columns
from soundstorm_hf.training import prepare as prepare_dataset
from soundstorm_hf.training import train

REPO = Path(__file__).resolve().parents[1]
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore.",
    "A stitch in time saves nine.",
    "Every cloud has a silver lining today.",
    "Birds of a feather flock together.",
    "Time and tide wait for no one.",
    "The early bird catches the worm.",
    "Actions speak louder than words.",
]
VOICES = ["en+m3", "en+f3", "en-us+m1", "en+f2"]
# A tiny model over tiny codebooks; every run of the tests trains it with these arguments.
TRAIN_ARGS = [
    "--model_preset", "tiny", "--per_device_batch_size", "8", "--learning_rate", "5e-3", "--warmup_steps", "2",
    "--lr_scheduler_type", "constant_with_warmup", "--max_frames", "100", "--eval_split_size", "4",
    "--logging_steps", "5", "--num_audio_samples", "1", "--prompt_seconds", "0.4", "--seed", "0",
]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}




@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """An audiofolder: 32 espeak-ng utterances (8 sentences x 4 voices) and 3 unusable files, with metadata.csv."""
    folder = tmp_path_factory.mktemp("corpus")
    rows = []
    for sentence_index, sentence in enumerate(SENTENCES):
        for voice in VOICES:
            waveform, rate = synthesize_speech(sentence, voice)
            name = f"s{sentence_index}-{voice.replace('+', '_')}.wav"
            soundfile.write(folder / name, waveform, rate)
            rows.append((name, sentence, voice))
    soundfile.write(folder / "silent.wav", np.zeros(16000, dtype=np.float32), 16000)
    soundfile.write(folder / "short.wav", 0.1 * np.random.default_rng(0).standard_normal(800), 16000)
    (folder / "broken.wav").write_bytes(b"RIFF, but not a wav file")
    rows += [("silent.wav", "", "none"), ("short.wav", "", "none"), ("broken.wav", "", "none")]
    with open(folder / "metadata.csv", "w", newline="") as file:
        csv.writer(file).writerows([("file_name", "text", "speaker_id"), *rows])
    return folder


def prepare_arguments(corpus: Path, output_dir: Path, **overrides):
    arguments = dict(
        dataset_name=str(corpus), output_dir=str(output_dir), fit_tokenizers=True, fit_num_examples=32,
        codec_num_levels=4, codec_codebook_size=32, semantic_num_clusters=32, shard_size=12, batch_size=12,
    )
    return prepare_dataset.PrepareArguments(**{**arguments, **overrides})


@pytest.fixture(scope="module")
def tokens(corpus, tmp_path_factory) -> tuple[Path, list[int]]:
    """The token dataset, prepared in two sittings: a crash after two shards, then a re-run; and the shards the
    re-run tokenized."""
    output_dir = tmp_path_factory.mktemp("tokens")
    real = prepare_dataset.tokenize_shard
    calls = []

    def crash_on_third_shard(*args, **kwargs):
        calls.append(len(calls))
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated crash")
        return real(*args, **kwargs)

    prepare_dataset.tokenize_shard = crash_on_third_shard
    try:
        with pytest.raises(KeyboardInterrupt):
            prepare_dataset.main(prepare_arguments(corpus, output_dir))
        assert sorted(path.name for path in (output_dir / "shards").iterdir()) == ["manifest.json", "shard-00000", "shard-00001"]
        calls.clear()
        prepare_dataset.tokenize_shard = lambda *args, **kwargs: (calls.append(1), real(*args, **kwargs))[1]
        prepare_dataset.main(prepare_arguments(corpus, output_dir))
    finally:
        prepare_dataset.tokenize_shard = real
    return output_dir, calls


def run_training(dataset: Path, output_dir: Path, *extra: str, launcher: list[str] | None = None, env=ENV) -> str:
    command = [*(launcher or [sys.executable]), str(REPO / "training" / "train.py"), "--dataset_name", str(dataset),
               "--output_dir", str(output_dir), *TRAIN_ARGS, *extra]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result.stdout + result.stderr


def terminate_at_line(command: list[str], env: dict, prefix: str) -> tuple[int, str]:
    """Runs `command`, sends it SIGTERM once a line of its stderr starts with `prefix`; its exit status and stderr."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    try:
        for line in process.stderr:
            lines.append(line)
            if line.startswith(prefix):
                process.send_signal(signal.SIGTERM)
                break
        lines.append(process.communicate(timeout=120)[1])
    finally:
        process.kill()
    return process.returncode, "".join(lines)


def scalars(output_dir: Path, tag: str) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for path in (output_dir / "runs").rglob("events.out.tfevents*"):  # the hyper-parameters have a file of their own
        events = EventAccumulator(str(path)).Reload()
        if tag in events.Tags()["scalars"]:
            return [event.value for event in events.Scalars(tag)]
    raise AssertionError(f"No scalar {tag!r} was logged.")


@pytest.fixture(scope="module")
def trained(tokens, tmp_path_factory) -> Path:
    """An uninterrupted run of 30 steps, evaluated and checkpointed at 15 and 30."""
    output_dir = tmp_path_factory.mktemp("run-full")
    run_training(tokens[0], output_dir, "--max_steps", "30", "--eval_steps", "15", "--save_steps", "15")
    return output_dir


def test_prepare_drops_and_counts_bad_rows_and_records_the_token_grid(tokens):
    output_dir, _ = tokens
    info = TokenDatasetInfo.load(output_dir)
    assert info.dropped == {"decode_error": 1, "silent": 1, "too_short": 1}
    assert (info.num_levels, info.codebook_size, info.semantic_vocab_size) == (4, 32, 32)
    assert (info.acoustic_frame_rate, info.semantic_frame_rate) == (50.0, 25.0)
    dataset = datasets.load_from_disk(str(output_dir))
    assert len(dataset) == info.num_rows == 32
    assert {"semantic_ids", "acoustic_ids", "num_frames", "duration", "text", "speaker_id"} <= set(dataset.column_names)
    row = dataset[0]
    assert len(row["acoustic_ids"]) == 4 and len(row["acoustic_ids"][0]) == row["num_frames"]
    assert abs(len(row["semantic_ids"]) * 2 - row["num_frames"]) <= 1
    assert row["text"] in SENTENCES and row["speaker_id"] in VOICES
    assert (output_dir / info.codec_name_or_path).is_dir() and not (output_dir / "shards").exists()


def test_prepare_rerun_continues_where_it_stopped(tokens, corpus):
    output_dir, calls_after_crash = tokens
    assert len(calls_after_crash) == 1  # only the third shard was left to do
    before = (output_dir / "soundstorm_tokens.json").stat().st_mtime_ns
    prepare_dataset.main(prepare_arguments(corpus, output_dir))  # finished: nothing is redone
    assert (output_dir / "soundstorm_tokens.json").stat().st_mtime_ns == before


def test_prepare_streaming_gives_the_same_tokens(tokens, corpus, tmp_path):
    output_dir, _ = tokens
    arguments = prepare_arguments(corpus, tmp_path, streaming=True, fit_tokenizers=False,
                                  codec=str(output_dir / "codec"), semantic_tokenizer=str(output_dir / "semantic_tokenizer"))
    prepare_dataset.main(arguments)
    streamed, prepared = datasets.load_from_disk(str(tmp_path)), datasets.load_from_disk(str(output_dir))
    assert streamed["acoustic_ids"] == prepared["acoustic_ids"] and streamed["semantic_ids"] == prepared["semantic_ids"]
    assert TokenDatasetInfo.load(tmp_path).dropped == TokenDatasetInfo.load(output_dir).dropped


def test_training_learns_saves_and_the_folder_generates(trained):
    train_loss = scalars(trained, "train/loss")
    eval_loss = scalars(trained, "eval/loss")
    assert train_loss[-1] < train_loss[0] - 0.1, train_loss
    assert eval_loss[-1] < eval_loss[0], eval_loss
    assert (trained / "samples" / "step-30" / "generated-0.wav").is_file()

    model = SoundStormForConditionalGeneration.from_pretrained(trained)
    assert model.config.codec_name_or_path == "codec" and (trained / "codec").is_dir()
    assert (trained / model.config.semantic_tokenizer_name_or_path).is_dir()
    codes = model.generate(torch.randint(0, 32, (1, 20)), prompt_ids=torch.randint(0, 32, (1, 4, 10)), seed=0)
    assert codes.shape == (1, 4, 40)
    card = (trained / "README.md").read_text()
    assert "30 optimizer steps" in card and "1 decode_error" in card and "| loss |" in card
    assert sorted(path.name for path in (trained / "checkpoints").iterdir()) == ["checkpoint-15", "checkpoint-30"]


def test_resumed_run_reaches_the_same_parameters(trained, tokens, tmp_path):
    run_training(tokens[0], tmp_path, "--max_steps", "15", "--eval_steps", "15", "--save_steps", "15")
    output = run_training(tokens[0], tmp_path, "--max_steps", "30", "--eval_steps", "15", "--save_steps", "15",
                          "--resume_from_checkpoint", "latest")
    assert "Resumed from" in output and "at step 15" in output
    resumed, uninterrupted = load_file(tmp_path / "model.safetensors"), load_file(trained / "model.safetensors")
    assert resumed.keys() == uninterrupted.keys()
    for name in resumed:
        torch.testing.assert_close(resumed[name], uninterrupted[name], rtol=1e-5, atol=1e-6, msg=name)


def test_ddp_on_two_cpu_processes(tokens, trained, tmp_path):
    # `accelerate launch --cpu` starts a single process; torchrun's launcher with ACCELERATE_USE_CPU gives gloo DDP.
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517"]
    output = run_training(tokens[0], tmp_path, "--max_steps", "4", "--eval_steps", "4", "--save_steps", "4",
                          launcher=launcher, env={**ENV, "ACCELERATE_USE_CPU": "1"})
    assert "on 2 process(es)" in output
    distributed, single = load_file(tmp_path / "model.safetensors"), load_file(trained / "model.safetensors")
    assert {k: v.shape for k, v in distributed.items()} == {k: v.shape for k, v in single.items()}
    assert (tmp_path / "checkpoints" / "checkpoint-4" / "random_states_1.pkl").is_file()


def test_push_to_hub_sends_the_model_folder_and_card(trained, monkeypatch):
    sent = {}

    def create_repo(self, repo_id, **kwargs):
        sent["create_repo"] = repo_id, kwargs
        return type("RepoUrl", (), {"repo_id": repo_id})()

    def upload_folder(self, **kwargs):
        sent["upload_folder"] = kwargs
        return "https://huggingface.co/user/soundstorm-tiny/commit/0"

    monkeypatch.setattr(train.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(train.HfApi, "upload_folder", upload_folder)
    train.push_to_hub(trained, "user/soundstorm-tiny", private=True)

    assert sent["create_repo"] == ("user/soundstorm-tiny", {"private": True, "exist_ok": True})
    upload = sent["upload_folder"]
    assert upload["repo_id"] == "user/soundstorm-tiny" and Path(upload["folder_path"]) == trained
    files = [str(path.relative_to(trained)) for path in trained.rglob("*") if path.is_file()]
    uploaded = set(filter_repo_objects(files, ignore_patterns=upload["ignore_patterns"]))
    assert {"model.safetensors", "config.json", "generation_config.json", "README.md", "modeling_soundstorm.py",
            "codec/soundstorm_codec.json", "semantic_tokenizer/soundstorm_semantic.json"} <= uploaded
    assert not any(name.startswith(("checkpoints/", "samples/")) for name in uploaded)
    assert (trained / "README.md").read_text().startswith("---\nlibrary_name: soundstorm-hf")


def test_push_token_dataset_sends_rows_info_and_tokenizers(tokens, monkeypatch):
    sent = {}
    monkeypatch.setattr(datasets.Dataset, "push_to_hub", lambda self, repo_id, **kw: sent.update(rows=(repo_id, len(self))))
    monkeypatch.setattr(prepare_dataset.HfApi, "upload_folder", lambda self, **kw: sent.update(folder=kw))
    prepare_dataset.push_token_dataset(tokens[0], "user/tokens")
    assert sent["rows"] == ("user/tokens", 32)
    assert sent["folder"]["repo_type"] == "dataset" and "soundstorm_tokens.json" in sent["folder"]["allow_patterns"]


def test_mismatched_or_malformed_token_datasets_are_refused(tokens, tmp_path):
    info = TokenDatasetInfo.load(tokens[0])
    with pytest.raises(ValueError, match="codebook_size: tokens have 32, model config has 1024"):
        info.check(SoundStormConfig.from_preset("tiny", num_levels=4, codebook_size=1024))
    with pytest.raises(ValueError, match="lacks the column"):
        check_token_columns(datasets.Dataset.from_dict({"semantic_ids": [[1, 2]]}))
    dataset = datasets.load_from_disk(str(tokens[0]))
    with pytest.raises(ValueError, match="shorter than --min-frames 100000"):
        train.length_filtered(dataset, 100_000, "training")


def test_checkpoint_from_another_config_is_refused(trained):
    checkpoint = trained / "checkpoints" / "checkpoint-15"
    config = SoundStormForConditionalGeneration.from_pretrained(trained).config
    config.hidden_size = 128
    with pytest.raises(ValueError, match="another model config .*hidden_size: checkpoint 64 vs now 128"):
        train.load_checkpoint(None, checkpoint, config)


def test_length_grouped_batches_cover_every_row_once_and_reshuffle_per_epoch():
    lengths = torch.randint(10, 1000, (103,)).tolist()
    sampler = LengthGroupedBatchSampler(lengths, batch_size=8, seed=0, mega_batch_size=4)
    first = list(sampler)
    assert sorted(i for batch in first for i in batch) == list(range(103)) and len(first) == len(sampler) == 13
    spans = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in first if len(b) == 8]
    assert np.mean(spans) < 0.5 * (max(lengths) - min(lengths))  # batches hold rows of similar length
    assert list(sampler) == first
    sampler.set_epoch(1)
    assert list(sampler) != first


def test_frame_budget_batches_fill_the_budget_and_keep_their_count_across_epochs():
    lengths = [100] * 40 + torch.randint(10, 100, (63,)).tolist()  # many rows cut to the longest window, as in training
    sampler = LengthGroupedBatchSampler(lengths, batch_size=8, seed=0, max_frames_per_batch=400)
    epochs = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        epochs.append(list(sampler))
        assert sorted(i for batch in epochs[-1] for i in batch) == list(range(103)) and len(epochs[-1]) == len(sampler)
        assert all(len(batch) * max(lengths[i] for i in batch) <= 400 for batch in epochs[-1])
    assert len(epochs[0]) < len(lengths) / 4 + 10, "short rows come in larger batches than 400 // 100"
    assert {tuple(sorted(batch)) for batch in epochs[0]} != {tuple(sorted(batch)) for batch in epochs[1]}
    sampler.set_epoch(0)
    assert list(sampler) == epochs[0]
    assert [len(batch) for batch in LengthGroupedBatchSampler([500, 50], 8, max_frames_per_batch=400)] in ([1, 1],)
