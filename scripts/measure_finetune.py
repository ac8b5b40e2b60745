"""Issue 13's "Measured" section: does fine-tuning on a few minutes of a new voice make the model speak in it?

    python scripts/measure_finetune.py --name synthetic --voice en+f4          # an espeak-ng voice the base never heard
    python scripts/measure_finetune.py --name human --train_audio me/train --test_audio me/test   # a real speaker

Fine-tunes a LoRA adapter on the speaker's training audio (`--voice`: `--minutes` of corpus sentences spoken by an
espeak-ng voice; or a folder), timing it, then speaks held-out sentences with the text front end before and after:
unprompted, with a 1 s prompt, and (before only) with a 3 s prompt, each from the speaker's training audio. Reported:
speaker similarity (Resemblyzer) of each output to the mean embedding of the speaker's held-out recordings, and
PocketSphinx WER against the sentences. Goals: after, unprompted similarity >= before, 3 s-prompted; WER at most 10%
relative worse. Writes `<results>/<name>.json` and `<name>.md`.

`--test_audio` holds `<name>.wav` + `<name>.txt` (the sentence) pairs of the speaker.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

from soundstorm_hf import cli
from soundstorm_hf.audio import prepare_waveform, synthesize_speech
from soundstorm_hf.evaluation import cosine_similarity, speaker_embedding, transcribe, word_error_rate
from soundstorm_hf.pipeline import SoundStormPipeline
from soundstorm_hf.text import TextToSpeech

REPO = Path(__file__).resolve().parents[1]
SENTENCES = REPO / "scripts" / "data" / "corpus_sentences.txt"
CONDITIONS = ("before_unprompted", "before_prompt_1s", "before_prompt_3s", "after_unprompted", "after_prompt_1s")


def load_finetune():
    from soundstorm_hf.training import finetune

    return finetune


def render_voice(voice: str, sentences: list[str], folder: Path, seconds: float | None = None) -> list[Path]:
    """espeak-ng's `voice` speaking `sentences` into `folder` (one wav + txt each), stopping after `seconds` of audio."""
    folder.mkdir(parents=True, exist_ok=True)
    paths, total = [], 0.0
    for index, sentence in enumerate(sentences):
        waveform, rate = synthesize_speech(sentence, voice)
        paths.append(folder / f"{index:04d}.wav")
        soundfile.write(paths[-1], waveform, rate)
        paths[-1].with_suffix(".txt").write_text(sentence)
        total += len(waveform) / rate
        if seconds is not None and total >= seconds:
            break
    return paths


def prompt(paths: list[Path], seconds: float, rate: int) -> np.ndarray:
    """The first `seconds` of the speaker's training audio, at `rate`."""
    waveform = np.concatenate([prepare_waveform(*soundfile.read(path, dtype="float32"), rate).numpy() for path in paths[:5]])
    return waveform[: round(seconds * rate)]


def speak(pipe: SoundStormPipeline, sentences: list[str], voice_prompt, seed: int) -> list[np.ndarray]:
    speaker = TextToSpeech(pipe)  # the offline front end: the same content for the base and the fine-tuned model
    return [speaker.tts(sentence, (voice_prompt, pipe.sampling_rate) if voice_prompt is not None else None, seed=seed)["audio"] for sentence in sentences]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True, help="Result file name, e.g. synthetic or human.")
    parser.add_argument("--base", default="default")
    parser.add_argument("--voice", default=None, help="espeak-ng voice of a synthetic speaker, e.g. en+f4.")
    parser.add_argument("--train_audio", default=None, help="Folder of the speaker's training recordings.")
    parser.add_argument("--test_audio", default=None, help="Folder of the speaker's held-out <name>.wav + <name>.txt.")
    parser.add_argument("--minutes", type=float, default=5.0, help="Training audio rendered for --voice.")
    parser.add_argument("--num_test", type=int, default=10, help="Held-out sentences (the corpus list's last ones).")
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "results" / "finetune"))
    parser.add_argument("--seed", type=int, default=0)
    args, finetune_extra = parser.parse_known_args(argv)  # finetune_voice.py's (and train.py's) flags
    if (args.voice is None) == (args.train_audio is None) or (args.train_audio and not args.test_audio):
        parser.error("give --voice, or --train_audio with --test_audio")
    base = cli.resolve_model(args.base)
    work = Path(tempfile.mkdtemp(prefix="measure-finetune-"))
    sentences = [line.strip() for line in SENTENCES.read_text().splitlines() if line.strip()]
    if args.voice:
        train_paths = render_voice(args.voice, sentences[: -args.num_test], work / "train", args.minutes * 60)
        test_paths = render_voice(args.voice, sentences[-args.num_test :], work / "test")
        train_folder = work / "train"
    else:
        train_folder = Path(args.train_audio)
        train_paths = sorted(path for path in train_folder.rglob("*") if path.suffix.lower() in (".wav", ".flac"))
        test_paths = sorted(Path(args.test_audio).glob("*.wav"))[: args.num_test]
    test_texts = [path.with_suffix(".txt").read_text().strip() for path in test_paths]
    reference = np.mean([speaker_embedding(*soundfile.read(path, dtype="float32")) for path in test_paths], axis=0)
    train_seconds = sum(soundfile.info(path).duration for path in train_paths)

    finetune = load_finetune()
    adapter = work / "adapter"
    started = time.perf_counter()
    finetune_args = ["--audio", str(train_folder), "--output", str(adapter), "--base", base, "--seed", str(args.seed)]
    finetune.main(*finetune.build_parser().parse_known_args(finetune_args + finetune_extra))  # the rest go to train.py
    finetune_seconds = time.perf_counter() - started
    results_json = json.loads((adapter / "all_results.json").read_text())

    outputs = {}
    for stage, pipe in (("before", SoundStormPipeline.from_pretrained(base)), ("after", SoundStormPipeline.from_pretrained(base, adapter=adapter))):
        rate = pipe.sampling_rate
        outputs[f"{stage}_unprompted"] = speak(pipe, test_texts, None, args.seed)
        outputs[f"{stage}_prompt_1s"] = speak(pipe, test_texts, prompt(train_paths, 1.0, rate), args.seed)
        if stage == "before":
            outputs["before_prompt_3s"] = speak(pipe, test_texts, prompt(train_paths, 3.0, rate), args.seed)
    table = {}
    for condition in CONDITIONS:
        audio = outputs[condition]
        similarities = [cosine_similarity(speaker_embedding(waveform, rate), reference) for waveform in audio]
        table[condition] = dict(
            speaker_similarity=float(np.mean(similarities)),
            wer=word_error_rate(test_texts, [transcribe(waveform, rate) for waveform in audio]),
        )
    wer_before = table["before_unprompted"]["wer"]
    report = dict(
        name=args.name, base=base, voice=args.voice or args.train_audio, train_seconds=round(train_seconds, 1),
        num_test_sentences=len(test_texts), finetune_seconds=round(finetune_seconds, 1), finetune_results=results_json,
        conditions=table,
        goal_unprompted_after_at_least_3s_prompted_before=table["after_unprompted"]["speaker_similarity"] >= table["before_prompt_3s"]["speaker_similarity"],
        wer_relative_change=(table["after_unprompted"]["wer"] - wer_before) / wer_before if wer_before else None,
    )
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"# Fine-tuning on a new voice: {args.name}", "",
        f"Base `{base}`; speaker `{report['voice']}`; {train_seconds / 60:.1f} min of training audio; LoRA fine-tuning "
        f"took {finetune_seconds / 60:.1f} min (held-out loss {results_json.get('eval/initial_loss', float('nan')):.3f} -> "
        f"{results_json['eval/loss']:.3f}, best step {results_json.get('eval/best_step')}); {len(test_texts)} held-out sentences.", "",
        "| condition | speaker similarity | WER |", "|---|---|---|",
        *(f"| {condition} | {row['speaker_similarity']:.3f} | {row['wer']:.3f} |" for condition, row in table.items()), "",
        f"Goal (after, unprompted >= before, 3 s prompt): {'met' if report['goal_unprompted_after_at_least_3s_prompted_before'] else 'not met'}; "
        f"WER change after vs before (unprompted): {report['wer_relative_change']:+.1%}" if report["wer_relative_change"] is not None else "",
    ]
    (results / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
