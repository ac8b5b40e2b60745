"""Measure text to speech and dialogue: the T2S model against the offline front end, on held-out sentences and voices.

    python scripts/measure_tts.py --model src/soundstorm_hf/default [--t2s MODEL/t2s] --corpus /work/data/corpus_v1 \
        --output benchmarks/results/tts [--sentences 12] [--seed 0]

Held out: the voices of the corpus's `test_speakers` split (never trained on), and sentences of that split that no
training row says. Each sentence is spoken by both systems with a 3 s prompt of each held-out speaker.

- WER (soundstorm_hf.evaluation: PocketSphinx + jiwer) of the output against the sentence, per system; issue 14's
  goal: T2S WER <= 1.3 x the front end's.
- Speaker: Resemblyzer cosine of the output with every held-out speaker's reference embedding (the mean of up to 4
  of their utterances that are not the prompt); `closer_to_prompt` is the share of outputs nearest the prompt's
  speaker. Goal: >= 0.8.
- Dialogue: four turns alternating between two held-out speakers; `turns_closer_to_own` is the share of turns more
  similar to their own speaker than to the other one.

Writes `results.json` (every output's numbers) and `RESULTS.md` (the tables) into `--output`.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile
import torch

from soundstorm_hf.audio import prepare_waveform
from soundstorm_hf.pipeline import SoundStormPipeline
from soundstorm_hf.evaluation import cosine_similarity, speaker_embedding, transcribe, word_error_rate
from soundstorm_hf.text import TextToSemantic, TextToSpeech
from soundstorm_hf.text.frontend import t2s_beside

SAMPLING_RATE = 16000
PROMPT_SECONDS = 3.0


def load(path: Path) -> np.ndarray:
    audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
    return prepare_waveform(torch.from_numpy(audio.T), rate, SAMPLING_RATE).numpy()


def read_rows(corpus: Path, split: str) -> list[dict]:
    with open(corpus / split / "metadata.csv", newline="") as handle:
        return [{**row, "path": corpus / split / row["file_name"]} for row in csv.DictReader(handle)]


def held_out(corpus: Path, num_sentences: int):
    """`({speaker: ((prompt (samples,), rate), reference embedding)}, sentences)` of the held-out split."""
    trained = {row["text"].strip().lower() for row in read_rows(corpus, "train")}
    rows = read_rows(corpus, "test_speakers")
    by_speaker = defaultdict(list)
    for row in sorted(rows, key=lambda row: row["file_name"]):
        by_speaker[row["speaker"]].append(row)
    speakers = {}
    for name, utterances in by_speaker.items():
        long_enough = [row for row in utterances if soundfile.info(row["path"]).duration >= PROMPT_SECONDS + 0.2]
        if len(long_enough) < 2:
            continue
        prompt = (load(long_enough[0]["path"])[: int(PROMPT_SECONDS * SAMPLING_RATE)], SAMPLING_RATE)
        references = [row for row in utterances if row is not long_enough[0]][:4]
        mean = np.mean([speaker_embedding(load(row["path"]), SAMPLING_RATE) for row in references], axis=0)
        speakers[name] = (prompt, mean / np.linalg.norm(mean))
    sentences = sorted({row["text"].strip() for row in rows if row["text"].strip().lower() not in trained})
    return speakers, sentences[:num_sentences]


def voice(audio: np.ndarray, rate: int, speakers: dict) -> dict[str, float]:
    embedding = speaker_embedding(audio, rate)
    return {name: cosine_similarity(embedding, reference) for name, (_, reference) in speakers.items()}


def measure(systems: dict[str, TextToSpeech], speakers: dict, sentences: list[str], seed: int, log) -> dict:
    results = {"tts": [], "dialogue": []}
    names = sorted(speakers)
    for index, text in enumerate(sentences):
        name = names[index % len(names)]
        for system, speaker in systems.items():
            started = time.perf_counter()
            output = speaker.tts(text, speakers[name][0], seed=seed)
            similarity = voice(output["audio"], output["sampling_rate"], speakers)
            results["tts"].append({
                "system": system, "text": text, "speaker": name, "seconds": time.perf_counter() - started,
                "duration": len(output["audio"]) / output["sampling_rate"],
                "transcript": transcribe(output["audio"], output["sampling_rate"]), "similarity": similarity,
                "closer_to_prompt": similarity[name] == max(similarity.values()),
            })
            log(f"tts {system} [{name}] {text!r} -> {results['tts'][-1]['transcript']!r}")
    for first, second in [(a, b) for a in names for b in names if a < b]:
        turns = sentences[:4]
        transcript = " ".join(f"[{tag}] {text}" for tag, text in zip("ABAB", turns))
        prompts = {"A": speakers[first][0], "B": speakers[second][0]}
        for system, speaker in systems.items():
            output = speaker.dialogue(transcript, prompts, seed=seed)
            rate = output["sampling_rate"]
            for turn in output["timeline"]:
                own, other = (first, second) if turn["speaker"] == "A" else (second, first)
                audio = output["audio"][round(turn["start"] * rate) : round(turn["end"] * rate)]
                similarity = voice(audio, rate, {own: speakers[own], other: speakers[other]})
                results["dialogue"].append({
                    "system": system, "speakers": [first, second], "turn": turn["text"], "own": similarity[own],
                    "other": similarity[other], "closer_to_own": similarity[own] > similarity[other],
                })
            log(f"dialogue {system} {first} / {second}: {len(output['timeline'])} turns")
    return results


def summarize(results: dict) -> dict:
    summary = {}
    for system in sorted({row["system"] for row in results["tts"]}):
        rows = [row for row in results["tts"] if row["system"] == system]
        turns = [row for row in results["dialogue"] if row["system"] == system]
        summary[system] = {
            "wer": word_error_rate([row["text"] for row in rows], [row["transcript"] for row in rows]),
            "closer_to_prompt": float(np.mean([row["closer_to_prompt"] for row in rows])),
            "prompt_similarity": float(np.mean([row["similarity"][row["speaker"]] for row in rows])),
            "real_time_factor": sum(row["seconds"] for row in rows) / sum(row["duration"] for row in rows),
            "turns_closer_to_own": float(np.mean([row["closer_to_own"] for row in turns])) if turns else None,
            "outputs": len(rows),
        }
    return summary


def write_report(output: Path, summary: dict, setup: dict) -> None:
    lines = [
        "# Text to speech: T2S model vs offline front end", "",
        f"Model `{setup['model']}`, T2S `{setup['t2s']}`, {setup['sentences']} held-out sentences, held-out voices "
        f"{', '.join(setup['speakers'])}; {setup['machine']}. Goals (issue 14): T2S WER <= 1.3 x front end; "
        "closer_to_prompt >= 0.8.", "",
        "| system | WER | closer to prompt speaker | similarity to prompt speaker | dialogue turns closer to own speaker | real-time factor |",
        "|---|---|---|---|---|---|",
    ]
    for system, row in summary.items():
        turns = "—" if row["turns_closer_to_own"] is None else f"{row['turns_closer_to_own']:.2f}"
        lines.append(
            f"| {system} | {row['wer']:.3f} | {row['closer_to_prompt']:.2f} | {row['prompt_similarity']:.3f} | "
            f"{turns} | {row['real_time_factor']:.2f} |"
        )
    (output / "RESULTS.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("src/soundstorm_hf/default"))
    parser.add_argument("--t2s", type=Path, default=None, help="Default: the model folder's t2s/.")
    parser.add_argument("--corpus", type=Path, default=Path("/work/data/corpus_v1"))
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/tts"))
    parser.add_argument("--sentences", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    t2s_path = args.t2s or t2s_beside(args.model)
    if not (args.model / "config.json").is_file() or t2s_path is None:
        sys.exit(f"pending: no SoundStorm model in {args.model} or no T2S model (--t2s, or {args.model}/t2s/)")
    pipe = SoundStormPipeline.from_pretrained(args.model)
    systems = {"t2s": TextToSpeech(pipe, t2s=TextToSemantic.from_pretrained(t2s_path)), "front_end": TextToSpeech(pipe)}
    speakers, sentences = held_out(args.corpus, args.sentences)
    torch.set_num_threads(2)
    results = measure(systems, speakers, sentences, args.seed, lambda message: print(message, flush=True))
    summary = summarize(results)
    setup = {"model": str(args.model), "t2s": str(t2s_path), "sentences": len(sentences), "speakers": sorted(speakers),
             "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads", "seed": args.seed}
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.json").write_text(json.dumps({"setup": setup, "summary": summary, **results}, indent=2) + "\n")
    write_report(args.output, summary, setup)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
