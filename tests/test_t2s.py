"""The text-to-semantic model: tokenizer and model round trip, generation constrained to semantic ids, training
through `train.py --task t2s` on a tiny corpus (the loss falls, training sentences come back greedily), and TTS and
dialogue with a T2S model in front of the tiny SoundStorm of test_text.py.

The corpus is tokenized with the tiny pipeline's own tokenizers, so the trained T2S speaks through that pipeline.
"""

import csv
import logging
import math
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile
import torch
from transformers import AutoTokenizer, LlamaForCausalLM

from soundstorm_hf import cli
from soundstorm_hf.pipeline import SoundStormPipeline
from soundstorm_hf.audio import synthesize_speech
from soundstorm_hf.text import SemanticOnlyLogitsProcessor, TextToSemantic, TextToSpeech, frontend, phonemize
from soundstorm_hf.text.frontend import find_t2s
from soundstorm_hf.text.t2s import (
    SECONDS_PER_TEXT_TOKEN,
    RepeatingLoopCriteria,
    build_config,
    build_tokenizer,
    default_generation_config,
    learn_length_prior,
)

from test_text import tiny_pipeline, tiny_pipeline_folder  # noqa: F401
from test_training import prepare_dataset, train

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
SENTENCES = [
    "the quick brown fox jumps",
    "seven green apples fell",
    "please call me back",
    "a bright yellow boat",
    "time and tide wait",
]


def random_t2s(semantic_vocab_size: int = 16, frame_rate: float = 25.0) -> TextToSemantic:
    tokenizer = build_tokenizer(phonemize(text) for text in SENTENCES)
    config = build_config(tokenizer, semantic_vocab_size, frame_rate, "tiny")
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config = default_generation_config(config)
    return TextToSemantic(model, tokenizer)


@pytest.fixture(scope="module")
def tokens(tiny_pipeline_folder, tmp_path_factory) -> Path:
    """Each sentence in one espeak-ng voice, tokenized by prepare_dataset.py with the tiny pipeline's tokenizers."""
    corpus = tmp_path_factory.mktemp("t2s_corpus")
    rows = []
    for index, text in enumerate(SENTENCES):
        soundfile.write(corpus / f"{index}.wav", *synthesize_speech(text, "en+m3"))
        rows.append((f"{index}.wav", text))
    with open(corpus / "metadata.csv", "w", newline="") as file:
        csv.writer(file).writerows([("file_name", "text"), *rows])
    output_dir = tmp_path_factory.mktemp("t2s_tokens")
    prepare_dataset.main(prepare_dataset.PrepareArguments(
        dataset_name=str(corpus), output_dir=str(output_dir), codec=str(tiny_pipeline_folder / "codec"),
        semantic_tokenizer=str(tiny_pipeline_folder / "semantic_tokenizer"), shard_size=10, batch_size=8,
    ))
    return output_dir


@pytest.fixture(scope="module")
def trained(tokens, tmp_path_factory):
    """`(folder, logged training losses)` of a tiny T2S trained by train.py for 100 steps, one sentence held out."""
    output_dir = tmp_path_factory.mktemp("t2s_run")
    losses = []
    handler = logging.Handler()
    handler.emit = lambda record: losses.append(record.args[1]["train/loss"]) if "train/loss" in str(record.args) else None
    logger = logging.getLogger("train")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        train.main(*train.parse_arguments([
            "--task", "t2s", "--dataset_name", str(tokens), "--output_dir", str(output_dir), "--model_preset", "tiny",
            "--max_steps", "100", "--learning_rate", "5e-3", "--warmup_steps", "10", "--lr_scheduler_type",
            "constant_with_warmup", "--per_device_batch_size", "4", "--eval_split_size", "1", "--logging_steps", "20",
            "--eval_steps", "100", "--save_steps", "100", "--report_to", "none", "--num_audio_samples", "1",
            "--seed", "0", "--min_frames", "1",
        ]))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return output_dir, losses


def test_tokenizer_reads_phonemes_one_symbol_a_token():
    tokenizer = build_tokenizer([phonemize("hello there")])
    phonemes = phonemize("hello there")
    ids = tokenizer(phonemes, add_special_tokens=False).input_ids
    assert tokenizer.convert_ids_to_tokens(ids) == list(phonemes)
    assert tokenizer(phonemize("zebra"), add_special_tokens=False).input_ids.count(tokenizer.unk_token_id) > 0


def test_round_trip_and_generation_only_emits_semantic_ids(tmp_path):
    t2s = random_t2s()
    first = t2s.generate(SENTENCES[:2], seed=3, max_frames=30)
    assert all(0 <= int(ids.min()) and int(ids.max()) < 16 and 2 <= len(ids) <= 30 for ids in first)
    t2s.save_pretrained(tmp_path)
    loaded = TextToSemantic.from_pretrained(tmp_path)
    assert [ids.tolist() for ids in loaded.generate(SENTENCES[:2], seed=3, max_frames=30)] == [ids.tolist() for ids in first]
    assert AutoTokenizer.from_pretrained(tmp_path).get_vocab() == t2s.tokenizer.get_vocab()
    assert loaded.model.generation_config.top_k == 50 and loaded.config.semantic_offset == len(t2s.tokenizer)
    scores = SemanticOnlyLogitsProcessor(t2s.config)(None, torch.zeros(1, t2s.config.vocab_size))
    assert torch.isfinite(scores[0]).nonzero().flatten().tolist() == [t2s.config.eos_token_id, *range(len(t2s.tokenizer), t2s.config.vocab_size)]


def test_t2s_learns_a_tiny_corpus(trained, tokens):
    folder, losses = trained
    assert len(losses) == 5 and losses[-1] < 0.1 * losses[0], losses
    t2s = TextToSemantic.from_pretrained(folder)
    held_out = datasets.load_from_disk(str(tokens)).train_test_split(test_size=1, seed=0)
    for row in held_out["train"]:
        assert t2s.generate(row["text"], do_sample=False)[0].tolist() == row["semantic_ids"], row["text"]
    assert (folder / "samples" / "step-100" / "t2s.json").is_file()

    # The length prior saved with it is the corpus's own speech rate (of the dataset train.py was given).
    rows = datasets.load_from_disk(str(tokens))
    rates = [len(row["semantic_ids"]) / t2s.config.semantic_frame_rate / len(phonemize(row["text"])) for row in rows]
    low, high = t2s.model.generation_config.seconds_per_text_token
    assert (low, high) == pytest.approx(learn_length_prior(rates, [1] * len(rates)))
    assert low < min(rates) and max(rates) < high and (low, high) != pytest.approx(SECONDS_PER_TEXT_TOKEN)


def test_length_prior_follows_the_phoneme_count():
    """A model that would end at once speaks for the prior's lower bound, one that never ends stops at its upper
    bound; both grow with the text's phoneme count."""
    t2s = random_t2s()
    rate = t2s.config.semantic_frame_rate
    texts = [SENTENCES[2], SENTENCES[0]]  # 22 and 30 phoneme symbols
    counts = [len(t2s.text_ids(text)) for text in texts]
    bounds = [t2s.length_bounds(count) for count in counts]
    low, high = SECONDS_PER_TEXT_TOKEN
    assert bounds == [(int(count * low * rate), math.ceil(count * high * rate)) for count in counts]
    assert bounds[0][0] < bounds[1][0] and bounds[0][1] < bounds[1][1]

    endless = t2s.generate(texts, seed=0, suppress_tokens=[t2s.config.eos_token_id])  # sampled, never says </s>
    assert [len(ids) for ids in endless] == [high for _, high in bounds]

    t2s.model.model.norm.weight.data.zero_()  # every logit 0: greedy picks </s> (the lowest allowed id) at once
    hasty = t2s.generate(texts, do_sample=False)
    assert [len(ids) for ids in hasty] == [low for low, _ in bounds]


def test_a_looping_model_stops_within_the_bound_and_the_loop_is_cut(caplog):
    t2s = random_t2s()  # greedy, a random model repeats one id and never says </s>
    low, high = t2s.length_bounds(len(t2s.text_ids(SENTENCES[0])))
    with caplog.at_level(logging.WARNING, logger="soundstorm_hf.text.t2s"):
        [ids] = t2s.generate(SENTENCES[0], do_sample=False)
    assert "looped" in caplog.text and 2 <= len(ids) <= high
    window = round(t2s.model.generation_config.loop_seconds * t2s.config.semantic_frame_rate)
    assert not RepeatingLoopCriteria(window, 0)(ids[None], None).any(), "no loop is left in the output"

    criteria = RepeatingLoopCriteria(6, prompt_length=2)
    rows = torch.tensor([
        [9, 9, 1, 2, 1, 2, 1, 2],  # period 2, three times: a loop
        [9, 9, 1, 2, 3, 4, 5, 6],  # no repeat
        [9, 9, 7, 7, 7, 7, 7, 7],  # a held id: a loop too
    ])
    assert criteria(rows, None).tolist() == [True, False, True]
    assert criteria(rows[:, :7], None).tolist() == [False, False, False], "too few generated ids to tell"
    assert criteria.loop_start(torch.tensor([5, 3, 1, 2, 1, 2, 1, 2, 1, 2])) == 4  # keeps [5, 3, 1, 2]
    assert criteria.loop_start(torch.tensor([5, 3, 1, 2, 3, 4, 5, 6])) is None


def test_dialogue_with_a_t2s_model(trained, tiny_pipeline_folder, tmp_path):
    pipe = tiny_pipeline()
    t2s = TextToSemantic.from_pretrained(trained[0])
    rate, frame_rate = pipe.sampling_rate, pipe.semantic_tokenizer.frame_rate
    prompt = synthesize_speech("please call me back tomorrow morning", "en+f3")
    speaker = TextToSpeech(pipe, t2s=t2s, t2s_kwargs={"do_sample": False})
    fast = {"seed": 0, "steps_per_level": [2, 1, 1]}  # (the CLI test below speaks one text)
    output = speaker.dialogue(
        f"[A] {SENTENCES[0]} [B] {SENTENCES[1]} [A] {SENTENCES[2]}", {"A": prompt, "B": prompt}, pause_seconds=0.25, **fast
    )
    timeline = output["timeline"]
    assert [turn["speaker"] for turn in timeline] == ["A", "B", "A"]
    for turn, ids in zip(timeline, t2s.generate(SENTENCES[:3], do_sample=False)):
        assert 0 < turn["end"] - turn["start"] <= len(ids) / frame_rate + 1 / rate  # trimmed to its speech
    for before, after in zip(timeline, timeline[1:]):
        assert after["start"] - before["end"] == pytest.approx(0.25, abs=1 / rate)
    assert timeline[-1]["end"] == pytest.approx(len(output["audio"]) / rate)

    # A model folder with a t2s/ subfolder speaks through it.
    folder = tmp_path / "model"
    shutil.copytree(tiny_pipeline_folder, folder)
    t2s.save_pretrained(folder / "t2s")
    assert TextToSpeech.from_pretrained(folder).t2s is not None
    assert TextToSpeech.from_pretrained(tiny_pipeline_folder).t2s is None


def test_python_and_the_cli_speak_through_the_model_folders_t2s(trained, tiny_pipeline_folder, tmp_path, capsys, monkeypatch):
    folder, output = tmp_path / "model", tmp_path / "out.wav"
    shutil.copytree(tiny_pipeline_folder, folder)
    shutil.copytree(trained[0], folder / "t2s")
    spoken = []
    for name in ("from_semantic_ids", "stream_from_semantic_ids"):  # Python's tts, the CLI's (written as it comes)
        original = getattr(SoundStormPipeline, name)
        spy = lambda self, ids, original=original, **kwargs: spoken.append(ids.tolist()) or original(self, ids, **kwargs)  # noqa: E731
        monkeypatch.setattr(SoundStormPipeline, name, spy)
    cli.main(["tts", SENTENCES[1], str(output), "--model", str(folder), "--seed", "0", "--iterations", "2"])
    python = TextToSpeech.from_pretrained(folder).tts(SENTENCES[1], seed=0, steps_per_level=[2, 1, 1])
    frames = len(TextToSemantic.from_pretrained(trained[0]).generate(SENTENCES[1], seed=0)[0])
    assert len(spoken) == 2 and spoken[0] == spoken[1] and len(spoken[0]) == frames, "the same content from both"
    written, _ = soundfile.read(output, dtype="float32")
    np.testing.assert_allclose(written, python["audio"], atol=1.5 / 2**15)  # 16-bit file vs float array
    with pytest.raises(SystemExit):
        cli.main(["tts", "hello", str(output), "--model", str(folder), "--t2s", str(tmp_path / "nothing")])
    assert "--t2s: T2S model folder not found" in capsys.readouterr().err
    random_t2s(64, tiny_pipeline().semantic_tokenizer.frame_rate).save_pretrained(folder / "t2s")
    with pytest.raises(SystemExit):
        cli.main(["tts", "hello", str(output), "--model", str(folder)])
    assert f"--t2s: cannot use {folder}/t2s: The T2S model writes 64 semantic ids" in capsys.readouterr().err


def test_find_t2s_one_rule_for_every_route(trained, tmp_path, monkeypatch):
    model = tmp_path / "model"
    (model / "t2s").mkdir(parents=True)
    assert find_t2s(model) is None, "a t2s/ folder without a model in it is not a T2S model"
    shutil.copytree(trained[0], model / "t2s", dirs_exist_ok=True)
    assert find_t2s(model) == model / "t2s" and find_t2s(model, "none") is None
    assert find_t2s(model, trained[0]) == trained[0]
    with pytest.raises(FileNotFoundError, match="T2S model folder not found: .*nothing"):
        find_t2s(model, tmp_path / "nothing")
    monkeypatch.setattr(frontend, "BUNDLED_DEFAULT_MODEL", model)
    monkeypatch.chdir(tmp_path)
    assert find_t2s("default") == model / "t2s", "the name `default` is the bundled model, as for the pipeline"


def test_bad_transcripts_and_mismatched_models_are_refused_before_generation(monkeypatch):
    pipe = tiny_pipeline()
    t2s = random_t2s(frame_rate=pipe.semantic_tokenizer.frame_rate)
    speaker = TextToSpeech(pipe, t2s=t2s)
    monkeypatch.setattr(t2s, "generate", lambda *args, **kwargs: pytest.fail("generated from a bad transcript"))
    prompt = synthesize_speech("please call me back tomorrow morning", "en+f3")
    for transcript, prompts, message in [
        ("[A] Hi. [C] Hello.", {"A": prompt, "B": prompt}, r"unknown speaker tag \[C\]"),
        ("[A] Hi. [B]", {"A": prompt, "B": prompt}, r"Turn 2 \(\[B\]\) is empty"),
        ("[A] Hi. [B] Hello.", {"A": prompt, "B": None}, r"Speaker \[B\] has no voice prompt"),
        ("Hi. [A] Hello.", {"A": prompt}, "Text before the first speaker tag"),
    ]:
        with pytest.raises(ValueError, match=message):
            speaker.dialogue(transcript, prompts)
    with pytest.raises(ValueError, match="writes 64 semantic ids"):
        TextToSpeech(pipe, t2s=random_t2s(64, pipe.semantic_tokenizer.frame_rate))
