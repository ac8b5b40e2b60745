"""Measure voice conversion of a SoundStorm model on the corpus's held-out speakers, and sweep its generation settings.

    python scripts/evaluate_conversion.py --model src/soundstorm_hf/default --corpus /work/data/corpus \
        --output benchmarks/results/default_model [--sweep] [--write-generation-config]

Held-out speakers (`test_speakers` split: never in training): synthetic (flite slt at two pitches, festival's
slt HTS and ked voices, when built) and real (the LibriVox reader, the Italian Asterisk speaker). Each conversion takes a source utterance
of one held-out speaker (its content) and a 3 s voice prompt cut from *another* utterance of a different held-out
speaker (the target), so neither the sentence nor the prompt utterance was seen in training.

Rows of the table, for the same pairs:
- `source`: the source audio itself (what no conversion gives: the voice stays the source's);
- `codec_resynthesis`: the source encoded and decoded by the model's codec (8 levels + its decoder): the ceiling
  of content and sound quality that any generation with this codec can reach;
- `conversion`: the pipeline's output.

Metrics (soundstorm_hf.evaluation):
- WER: PocketSphinx (English model) against the source transcript, English sources only, real and synthetic
  content reported apart. Goal of issue 11: conversion WER <= 1.5 x the codec resynthesis WER on real content.
- Voice: Resemblyzer cosine of the output with the target speaker's embedding and with the source speaker's
  (each the mean embedding of up to 4 utterances of that speaker that are neither the source nor the prompt);
  `closer_to_target` = share of pairs where the first is larger, `margin` = mean of their difference.
  Goal: closer_to_target >= 0.8 and margin >= 0.05.
- F0: median F0 of the output against the target speaker's (median over its reference utterances); goal: within
  10% (`f0_within_10pct` is the share of pairs within 10%).

`--sweep` varies level-1 steps, temperature, choice temperature and guidance one at a time (coordinate search, each
factor at the best value found so far) on a sweep subset of pairs disjoint in source utterances from the
evaluation pairs, scores each setting by `margin - 0.5 * WER` (voice moved, content kept) and, with
`--write-generation-config`, writes the best into the model folder's generation_config.json. The final table is then
measured with the model's (possibly new) generation config.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile
import torch

from soundstorm_hf import SoundStormGenerationConfig
from soundstorm_hf.audio import prepare_waveform
from soundstorm_hf.evaluation import median_f0, normalize_text, speaker_embedding, transcribe, word_error_rate
from soundstorm_hf.pipeline import SoundStormPipeline

REAL_SPEAKERS = ("librivox-reader", "asterisk-it")
NON_ENGLISH_PREFIXES = ("asterisk-it", "asterisk-fr", "asterisk-es", "asterisk-ru")  # no English ASR on these
# CMU ARCTIC's slt, whatever the engine or pitch: one voice, so no conversion between these.
SAME_VOICE = {"flite-slt", "flite-slt-low", "festival-slt-hts"}
PROMPT_SECONDS = 3.0
SAMPLING_RATE = 16000


def load(path: Path) -> np.ndarray:
    audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
    return prepare_waveform(torch.from_numpy(audio.T), rate, SAMPLING_RATE).numpy()


def read_test_speakers(corpus: Path) -> dict[str, list[dict]]:
    speakers = defaultdict(list)
    with open(corpus / "test_speakers" / "metadata.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            row["path"] = corpus / "test_speakers" / row["file_name"]
            speakers[row["speaker"]].append(row)
    for rows in speakers.values():
        rows.sort(key=lambda row: row["file_name"])
    return dict(speakers)


def kind(speaker: str) -> str:
    return "real" if speaker in REAL_SPEAKERS else "synthetic"


class Speaker:
    """A held-out speaker's utterances, split into prompt utterances, reference utterances and source utterances."""

    def __init__(self, name: str, rows: list[dict], rng: random.Random):
        rows = [row for row in rows if soundfile.info(row["path"]).duration >= 1.5]
        long_enough = [row for row in rows if soundfile.info(row["path"]).duration >= PROMPT_SECONDS + 0.2]
        self.name = name
        self.prompt_row = long_enough[0] if long_enough else max(rows, key=lambda r: soundfile.info(r["path"]).duration)
        rest = [row for row in rows if row is not self.prompt_row]
        rng.shuffle(rest)
        self.reference_rows = rest[:4] if len(rest) > 4 else rest[:2]  # speakers with few clips keep sources
        self.source_rows = [row for row in rest if row not in self.reference_rows] or rest
        self._embedding = self._f0 = None

    @property
    def prompt(self) -> np.ndarray:
        return load(self.prompt_row["path"])[: int(PROMPT_SECONDS * SAMPLING_RATE)]

    @property
    def embedding(self) -> np.ndarray:
        if self._embedding is None:
            embeddings = [speaker_embedding(load(row["path"]), SAMPLING_RATE) for row in self.reference_rows]
            mean = np.mean(embeddings, axis=0)
            self._embedding = mean / np.linalg.norm(mean)
        return self._embedding

    @property
    def f0(self) -> float:
        if self._f0 is None:
            values = [median_f0(load(row["path"]), SAMPLING_RATE) for row in self.reference_rows]
            self._f0 = float(np.nanmedian(values))
        return self._f0


def make_pairs(speakers: dict[str, Speaker], per_ordered_pair: int, offset: int) -> list[dict]:
    """`per_ordered_pair` (source row, target speaker) pairs for each ordered pair of speakers of different voices,
    taking source rows from position `offset` on (so the sweep and the evaluation use different utterances)."""
    pairs = []
    names = sorted(speakers)
    for source in names:
        for target in names:
            if source == target or {source, target} <= SAME_VOICE:
                continue  # the same voice at another pitch is no conversion between speakers
            rows = speakers[source].source_rows
            for index in range(per_ordered_pair):
                row = rows[(offset + index) % len(rows)]
                pairs.append({"source": source, "target": target, "row": row})
    return pairs


def voice_metrics(audio: np.ndarray, source: Speaker, target: Speaker) -> dict:
    embedding = speaker_embedding(audio, SAMPLING_RATE)
    embedding = embedding / np.linalg.norm(embedding)
    to_target, to_source = float(embedding @ target.embedding), float(embedding @ source.embedding)
    f0 = median_f0(audio, SAMPLING_RATE)
    return {"sim_target": to_target, "sim_source": to_source, "margin": to_target - to_source,
            "f0": None if not np.isfinite(f0) else float(f0),
            "f0_rel_error": None if not np.isfinite(f0) else abs(f0 - target.f0) / target.f0}


def content_metrics(audio: np.ndarray, row: dict, source: str) -> dict:
    if source.startswith(NON_ENGLISH_PREFIXES):
        return {}
    hypothesis = transcribe(audio, SAMPLING_RATE)
    return {"wer": word_error_rate(normalize_text(row["text"]), hypothesis), "transcript": hypothesis}


def summarize(results: list[dict]) -> dict:
    def stats(rows):
        if not rows:
            return None
        wers = [r["wer"] for r in rows if "wer" in r]
        f0 = [r["f0_rel_error"] for r in rows if r.get("f0_rel_error") is not None]
        return {
            "pairs": len(rows),
            "wer": float(np.mean(wers)) if wers else None, "wer_pairs": len(wers),
            "closer_to_target": float(np.mean([r["margin"] > 0 for r in rows])),
            "margin": float(np.mean([r["margin"] for r in rows])),
            "sim_target": float(np.mean([r["sim_target"] for r in rows])),
            "sim_source": float(np.mean([r["sim_source"] for r in rows])),
            "f0_within_10pct": float(np.mean([e <= 0.10 for e in f0])) if f0 else None,
            "f0_rel_error_median": float(np.median(f0)) if f0 else None,
        }

    summary = {}
    for system in sorted({r["system"] for r in results}):
        rows = [r for r in results if r["system"] == system]
        summary[system] = {
            "all": stats(rows),
            **{f"target_{k}": stats([r for r in rows if kind(r["target"]) == k]) for k in ("real", "synthetic")},
            **{f"content_{k}": stats([r for r in rows if kind(r["source"]) == k]) for k in ("real", "synthetic")},
        }
    return summary


def run_pairs(pipe, pairs, speakers, systems, generation: dict, seed: int, log) -> list[dict]:
    results = []
    for index, pair in enumerate(pairs):
        source, target, row = speakers[pair["source"]], speakers[pair["target"]], pair["row"]
        audio = load(row["path"])
        for system in systems:
            start = time.perf_counter()
            if system == "source":
                output = audio
            elif system == "codec_resynthesis":
                with torch.inference_mode():
                    codes = pipe.codec.encode(torch.from_numpy(audio)[None])
                    output = pipe.codec.decode(codes)[0].numpy()[: audio.shape[0]]
            else:
                output = pipe(audio, SAMPLING_RATE, voice_prompt=target.prompt, prompt_sampling_rate=SAMPLING_RATE,
                              seed=seed + index, **generation)["audio"]
            seconds = time.perf_counter() - start
            result = {"system": system, "source": source.name, "target": target.name,
                      "file": row["file_name"], "seconds": round(seconds, 3), "audio_seconds": len(audio) / SAMPLING_RATE,
                      **voice_metrics(output, source, target), **content_metrics(output, row, source.name)}
            results.append(result)
            log(f"[{index + 1}/{len(pairs)}] {system:17s} {source.name}->{target.name} margin {result['margin']:+.3f}"
                f" wer {result.get('wer', float('nan')):.2f} ({seconds:.1f} s)")
    return results


def score(summary: dict) -> float:
    stats = summary["conversion"]["all"]
    return stats["margin"] - 0.5 * (stats["wer"] or 0.0)


def sweep(pipe, pairs, speakers, base: dict, seed: int, log) -> tuple[dict, list[dict]]:
    grid = [("steps_per_level", [[8, 1, 1, 1, 1, 1, 1, 1], [16, 1, 1, 1, 1, 1, 1, 1], [32, 1, 1, 1, 1, 1, 1, 1]]),
            ("temperature", [0.7, 1.0, 1.3]),
            ("choice_temperature", [0.5, 1.0, 2.0]),
            ("guidance_scale", [1.0, 1.5, 2.5])]
    best, trials, cache = dict(base), [], {}
    for name, values in grid:
        scored = []
        for value in values:
            setting = {**best, name: value}
            key = json.dumps(setting, sort_keys=True)
            if key not in cache:
                log(f"sweep: {setting}")
                start = time.perf_counter()
                summary = summarize(run_pairs(pipe, pairs, speakers, ["conversion"], setting, seed, log))
                cache[key] = {"setting": setting, "score": score(summary), "seconds": time.perf_counter() - start,
                              **summary["conversion"]["all"]}
                trials.append(cache[key])
            scored.append((cache[key]["score"], value))
        best[name] = max(scored, key=lambda item: item[0])[1]
        log(f"sweep: best {name} = {best[name]}")
    return best, trials


def render_markdown(report: dict, sweep: dict | None) -> str:
    """The tables of the model card: per system and group, WER / voice / F0 numbers (None: no such pairs)."""
    def cell(value, digits=2):
        return "-" if value is None else f"{value:.{digits}f}"

    lines = ["| pairs group | system | pairs | WER (English sources) | closer to target | margin | sim. target |"
             " sim. source | F0 within 10% of target |", "|---|---|---|---|---|---|---|---|---|"]
    for group in ("all", "content_real", "content_synthetic", "target_real", "target_synthetic"):
        for system in ("source", "codec_resynthesis", "conversion"):
            stats = report["summary"][system][group]
            if not stats:
                continue
            wer = f"{cell(stats['wer'])} ({stats['wer_pairs']})" if stats["wer_pairs"] else "-"
            lines.append(f"| {group.replace('_', ' ')} | {system} | {stats['pairs']} | {wer} | "
                         f"{cell(stats['closer_to_target'])} | {cell(stats['margin'], 3)} | "
                         f"{cell(stats['sim_target'])} | {cell(stats['sim_source'])} | {cell(stats['f0_within_10pct'])} |")
    text = "\n".join(lines) + "\n"
    text += f"\nConversion real-time factor on this CPU: {report['real_time_factor_conversion']:.2f}\n"
    if sweep:
        text += "\n| steps (level 1) | temperature | choice temperature | guidance | score | WER | margin |\n|---|---|---|---|---|---|---|\n"
        for trial in sweep["trials"]:
            setting = trial["setting"]
            text += (f"| {setting['steps_per_level'][0]} | {setting['temperature']} | {setting['choice_temperature']} | "
                     f"{setting['guidance_scale']} | {trial['score']:.3f} | {cell(trial['wer'])} | {trial['margin']:.3f} |\n")
        text += f"\nChosen: {sweep['best']}\n"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--corpus", type=Path, default=Path("/work/data/corpus"))
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/default_model"))
    parser.add_argument("--pairs-per-speaker-pair", type=int, default=2)
    parser.add_argument("--max-pairs", type=int, default=None, help="spread over the pairs (quick checks)")
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--render", action="store_true", help="only rewrite evaluation.md from the saved JSON")
    parser.add_argument("--sweep-pairs-per-speaker-pair", type=int, default=1)
    parser.add_argument("--sweep-max-pairs", type=int, default=6)
    parser.add_argument("--write-generation-config", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", default="float32", help="compute dtype (the bundled weights are stored in fp16)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.output.mkdir(parents=True, exist_ok=True)
    log_file = open(args.output / "evaluate.log", "a")

    def log(message: str) -> None:
        print(message, flush=True)
        log_file.write(message + "\n")
        log_file.flush()

    if args.render:
        report = json.loads((args.output / "evaluation.json").read_text())
        sweep_file = args.output / "sweep.json"
        sweep_report = json.loads(sweep_file.read_text()) if sweep_file.is_file() else None
        (args.output / "evaluation.md").write_text(render_markdown(report, sweep_report))
        return
    rng = random.Random(args.seed)
    pipe = SoundStormPipeline.from_pretrained(args.model, dtype=getattr(torch, args.dtype))
    model_folder = Path(pipe.model.name_or_path) if Path(pipe.model.name_or_path).is_dir() else None
    rows = read_test_speakers(args.corpus)
    speakers = {name: Speaker(name, rows[name], rng) for name in sorted(rows)}
    log(f"held-out speakers: { {name: len(s.source_rows) for name, s in speakers.items()} }")
    common = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "model": str(args.model),
              "corpus": str(args.corpus), "speakers": {n: kind(n) for n in speakers},
              "prompts": {n: s.prompt_row["file_name"] for n, s in speakers.items()},
              "machine": platform.processor() or platform.machine(), "torch_threads": args.threads,
              "torch": torch.__version__}

    if args.sweep:
        sweep_pairs = make_pairs(speakers, args.sweep_pairs_per_speaker_pair, offset=args.pairs_per_speaker_pair)
        sweep_pairs = sweep_pairs[:: max(1, len(sweep_pairs) // args.sweep_max_pairs)][: args.sweep_max_pairs]
        current = pipe.model.generation_config
        base = {"steps_per_level": current.steps_per_level or [16] + [1] * (pipe.model.config.num_levels - 1),
                "temperature": current.temperature, "choice_temperature": current.choice_temperature,
                "guidance_scale": current.guidance_scale}
        best, trials = sweep(pipe, sweep_pairs, speakers, base, args.seed + 1000, log)
        (args.output / "sweep.json").write_text(json.dumps({
            **common, "score": "margin - 0.5 * WER over the sweep pairs (conversion)", "start": base, "best": best,
            "sweep_pairs": [{"source": p["source"], "target": p["target"], "file": p["row"]["file_name"]} for p in sweep_pairs],
            "trials": trials}, indent=2) + "\n")
        if args.write_generation_config and model_folder is not None:
            config = SoundStormGenerationConfig.from_pretrained(model_folder)
            for name, value in best.items():
                setattr(config, name, value)
            config.save_pretrained(model_folder)
            pipe.model.generation_config = config
            log(f"wrote {model_folder / 'generation_config.json'}: {best}")

    pairs = make_pairs(speakers, args.pairs_per_speaker_pair, offset=0)
    if args.max_pairs:
        pairs = pairs[:: max(1, len(pairs) // args.max_pairs)][: args.max_pairs]
    generation = {}
    start = time.perf_counter()
    results = run_pairs(pipe, pairs, speakers, ["source", "codec_resynthesis", "conversion"], generation, args.seed, log)
    summary = summarize(results)
    conversions = [r for r in results if r["system"] == "conversion"]
    report = {
        **common,
        "generation_config": pipe.model.generation_config.to_dict(),
        "target_speakers": {n: {"f0": s.f0, "references": [r["file_name"] for r in s.reference_rows]} for n, s in speakers.items()},
        "real_time_factor_conversion": sum(r["seconds"] for r in conversions) / sum(r["audio_seconds"] for r in conversions),
        "seconds": time.perf_counter() - start,
        "summary": summary,
        "pairs": results,
    }
    (args.output / "evaluation.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    sweep_file = args.output / "sweep.json"
    sweep_report = json.loads(sweep_file.read_text()) if sweep_file.is_file() else None
    (args.output / "evaluation.md").write_text(render_markdown(report, sweep_report))
    for system, groups in summary.items():
        for group, stats in groups.items():
            if stats:
                log(f"{system:17s} {group:18s} " + " ".join(
                    f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in stats.items()))


if __name__ == "__main__":
    main()
