"""Measure text to speech and dialogue on real voices: the offline front end, and the T2S model where there is one.

    nice -n 19 python scripts/measure_tts.py [--model default] [--t2s FOLDER] [--output benchmarks/results/tts] [--seed 0]

Systems: `front_end` (espeak-ng speech -> semantic tokens -> SoundStorm) always; `t2s` where the model folder has a
T2S model (`find_t2s`, the rule every route uses) or `--t2s` names one. Voice prompts: the bundled real recordings
(`examples/real_voice_librivox.wav`, `examples/real_voice_asterisk_it.wav`; neither speaker is in the default
model's training data). `SENTENCES` are in none of the corpus's texts.

- Intelligibility: PocketSphinx WER (`soundstorm_hf.evaluation`) of each system's outputs, next to that of real
  speech (the LibriVox clips of `pocketsphinx-testdata`) as recorded and resynthesized by the model's codec (issue 19:
  the T2S no worse than the front end, and within 1.5 x the codec resynthesis).
- Naturalness proxies, against real speakers (the LibriVox reader; Asterisk's English prompts, one speaker): seconds
  per phoneme (IPA letters of the text, over the span from the first to the last speech frame) and F0 range (5th to
  95th percentile of pYIN F0 over voiced frames, in semitones).
- Voice margin: Resemblyzer cosine of an output to its prompt minus that to the other prompt (> 0: the prompt's voice).
- Dialogue: four turns alternating the two voices, each turn prompted by the turn before (the default) and, for
  comparison, without it (`context_seconds=0`): the pauses a listener hears (last speech frame of a turn to the first
  of the next; conversation: 0.2-0.8 s), each turn's speech level and the step between turns (dB), the voice margins.

Writes `results.json` (every output's numbers) and `RESULTS.md` into `--output`; the audio into `--save-audio`.
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import subprocess
import tempfile
import time
import unicodedata
from pathlib import Path

import numpy as np
import soundfile
import torch

import soundstorm_hf
from soundstorm_hf.audio import frame_powers, prepare_waveform, speech_power
from soundstorm_hf.evaluation import cosine_similarity, speaker_embedding, transcribe, word_error_rate
from soundstorm_hf.pipeline import SoundStormPipeline
from soundstorm_hf.text import TextToSpeech, phonemize
from soundstorm_hf.text.frontend import find_t2s, load_t2s, speech_span

EXAMPLES = Path(soundstorm_hf.__file__).parent / "examples"
VOICES = {"librivox": EXAMPLES / "real_voice_librivox.wav", "asterisk_it": EXAMPLES / "real_voice_asterisk_it.wav"}
SENTENCES = [
    "Our neighbours planted three apple trees last spring.",
    "Can you tell me the way to the nearest post office?",
    "The children were laughing in the garden all afternoon.",
]
DIALOGUE = (
    "[A] Can you tell me the way to the nearest post office? [B] Of course, it is just around the corner. "
    "[A] Thank you, is it open all afternoon? [B] Until five, I think."
)
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
ASTERISK_EN = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
ASTERISK_EN_TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
NUM_ASTERISK_PROMPTS = 6


def real_speech(rate: int) -> dict[str, list[tuple[str, np.ndarray]]]:
    """`{speaker: [(text, waveform (samples,) at rate)]}` of the real reference speakers (installed Debian packages)."""
    librivox = []
    for line in (LIBRIVOX / "transcription").read_text().splitlines():
        words, _, clip = line.rpartition("(")
        text = words.replace("<s>", "").replace("</s>", "").strip()
        librivox.append((text, read(LIBRIVOX / f"{clip.strip(') ')}.wav", rate)))
    transcripts = {}
    for line in gzip.open(ASTERISK_EN_TRANSCRIPTS).read().decode("utf-8", "replace").splitlines():
        name, separator, text = line.partition(":")
        if separator and not line.startswith(";") and len(text.split()) >= 5 and not text.strip().startswith("["):
            transcripts[name.strip()] = text.strip()
    names = [name for name in sorted(transcripts) if (ASTERISK_EN / f"{name}.g722").is_file()]
    chosen = names[:: max(1, len(names) // NUM_ASTERISK_PROMPTS)][:NUM_ASTERISK_PROMPTS]
    asterisk = [(transcripts[name], decode_g722(ASTERISK_EN / f"{name}.g722", rate)) for name in chosen]
    return {"librivox": librivox, "asterisk_en": asterisk}


def read(path: Path, rate: int) -> np.ndarray:
    waveform, sampling_rate = soundfile.read(path, dtype="float32", always_2d=True)
    return prepare_waveform(torch.from_numpy(waveform.T), sampling_rate, rate).numpy()


def decode_g722(path: Path, rate: int) -> np.ndarray:
    with tempfile.TemporaryDirectory() as folder:
        wav = Path(folder) / "prompt.wav"
        command = ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "g722", "-i", str(path), "-ac", "1", str(wav)]
        subprocess.run(command, check=True)
        return read(wav, rate)


def speech_seconds(audio: np.ndarray, rate: int) -> tuple[float, float] | None:
    """Seconds from the start of `audio` to its first and past its last speech frame (`speech_span`)."""
    span = speech_span(audio, rate)
    return None if span is None else (span[0] / rate, span[1] / rate)


def num_phonemes(text: str) -> int:
    """IPA letters of `text` (stress and length marks, spaces and clause breaks not counted)."""
    return sum(unicodedata.category(symbol) == "Ll" for symbol in phonemize(text))


def f0_range(audio: np.ndarray, rate: int) -> float:
    """Semitones from the 5th to the 95th percentile of the voiced F0 (pYIN); NaN with too little voicing."""
    import librosa

    audio = prepare_waveform(torch.from_numpy(audio), rate, 16000).numpy()
    f0, voiced, _ = librosa.pyin(audio, fmin=60.0, fmax=500.0, sr=16000, frame_length=1024)
    voiced_f0 = f0[voiced & np.isfinite(f0)]
    if voiced_f0.size < 10:
        return float("nan")
    low, high = np.percentile(voiced_f0, [5, 95])
    return float(12 * np.log2(high / low))


def naturalness(text: str, audio: np.ndarray, rate: int) -> dict:
    span = speech_seconds(audio, rate)
    seconds = span[1] - span[0] if span else float("nan")
    return {"seconds_per_phoneme": seconds / num_phonemes(text), "f0_range_semitones": f0_range(audio, rate)}


def level_db(audio: np.ndarray, rate: int) -> float:
    power = speech_power(frame_powers(audio, rate))
    return 10 * np.log10(power) if power else float("nan")


def measure_tts(systems: dict, voices: dict, embeddings: dict, seed: int, audio_dir: Path | None, log) -> list[dict]:
    rows = []
    for system, speaker in systems.items():
        for index, text in enumerate(SENTENCES):
            for voice, path in voices.items():
                started = time.perf_counter()
                output = speaker.tts(text, str(path), seed=seed)
                audio, rate = output["audio"], output["sampling_rate"]
                save(audio_dir, f"{system}_{index}_{voice}.wav", audio, rate)
                rows.append({
                    "system": system, "text": text, "voice": voice, "seconds": time.perf_counter() - started,
                    "duration": len(audio) / rate, "transcript": transcribe(audio, rate),
                    "voice_margin": margin(audio, rate, voice, embeddings), **naturalness(text, audio, rate),
                })
                log(f"tts {system} [{voice}] {text!r} -> {rows[-1]['transcript']!r}")
    return rows


def save(folder: Path | None, name: str, audio: np.ndarray, rate: int) -> None:
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        soundfile.write(folder / name, audio, rate)


def margin(audio: np.ndarray, rate: int, voice: str, embeddings: dict) -> float:
    embedding = speaker_embedding(audio, rate)
    own = cosine_similarity(embedding, embeddings[voice])
    return own - max(cosine_similarity(embedding, other) for name, other in embeddings.items() if name != voice)


def measure_dialogue(systems: dict, voices: dict, embeddings: dict, seed: int, audio_dir: Path | None, log) -> list[dict]:
    rows = []
    names = {"A": "librivox", "B": "asterisk_it"}
    for system, speaker in systems.items():
        for context, context_seconds in [("previous_turn", 2.0), ("none", 0.0)]:
            output = speaker.dialogue(
                DIALOGUE, {tag: str(voices[name]) for tag, name in names.items()}, context_seconds=context_seconds,
                seed=seed,
            )
            audio, rate = output["audio"], output["sampling_rate"]
            save(audio_dir, f"{system}_dialogue_{context}.wav", audio, rate)
            turns = [audio[round(turn["start"] * rate) : round(turn["end"] * rate)] for turn in output["timeline"]]
            spans = [speech_seconds(turn, rate) for turn in turns]
            heard = [
                (after["start"] + after_span[0]) - (before["start"] + before_span[1])
                for before, after, before_span, after_span in zip(output["timeline"], output["timeline"][1:], spans, spans[1:])
            ]
            levels = [level_db(turn, rate) for turn in turns]
            rows.append({
                "system": system, "context": context, "timeline": output["timeline"], "heard_pauses": heard,
                "levels_db": levels, "level_steps_db": np.abs(np.diff(levels)).tolist(),
                "voice_margins": [
                    margin(turn, rate, names[entry["speaker"]], embeddings) for turn, entry in zip(turns, output["timeline"])
                ],
            })
            log(f"dialogue {system}, context {context}: heard pauses {np.round(heard, 2).tolist()}, levels {np.round(levels, 1).tolist()} dB")
    return rows


def measure_references(pipe: SoundStormPipeline, log) -> dict:
    """WER of the real LibriVox clips as recorded and through the codec, and the real speakers' naturalness."""
    rate = pipe.sampling_rate
    speakers = real_speech(rate)
    references = {}
    for speaker, clips in speakers.items():
        rows = [naturalness(text, audio, rate) for text, audio in clips]
        references[speaker] = {key: float(np.nanmean([row[key] for row in rows])) for key in rows[0]}
        references[speaker]["clips"] = len(clips)
    texts = [text for text, _ in speakers["librivox"]]
    recorded = [transcribe(audio, rate) for _, audio in speakers["librivox"]]
    with torch.no_grad():
        resynthesized = [
            transcribe(pipe.codec.decode(pipe.codec.encode(torch.from_numpy(audio)))[0].cpu().numpy(), rate)
            for _, audio in speakers["librivox"]
        ]
    references["librivox"]["wer_recorded"] = word_error_rate(texts, recorded)
    references["librivox"]["wer_codec_resynthesis"] = word_error_rate(texts, resynthesized)
    log(f"references: {json.dumps(references)}")
    return references


def summarize(tts: list[dict], dialogue: list[dict]) -> dict:
    summary = {}
    for system in sorted({row["system"] for row in tts}):
        rows = [row for row in tts if row["system"] == system]
        summary[system] = {
            "wer": word_error_rate([row["text"] for row in rows], [row["transcript"] for row in rows]),
            "seconds_per_phoneme": float(np.nanmean([row["seconds_per_phoneme"] for row in rows])),
            "f0_range_semitones": float(np.nanmean([row["f0_range_semitones"] for row in rows])),
            "voice_margin": float(np.mean([row["voice_margin"] for row in rows])),
            "real_time_factor": sum(row["seconds"] for row in rows) / sum(row["duration"] for row in rows),
            "outputs": len(rows),
        }
        for row in dialogue:
            if row["system"] == system:
                summary[system][f"dialogue_{row['context']}"] = {
                    "heard_pause_mean": float(np.mean(row["heard_pauses"])),
                    "heard_pause_min": float(np.min(row["heard_pauses"])),
                    "heard_pause_max": float(np.max(row["heard_pauses"])),
                    "heard_pauses_in_0.2_0.8": float(np.mean([0.2 <= pause <= 0.8 for pause in row["heard_pauses"]])),
                    "level_step_mean_db": float(np.mean(row["level_steps_db"])),
                    "level_spread_db": float(np.ptp(row["levels_db"])),
                    "turns_in_own_voice": float(np.mean([value > 0 for value in row["voice_margins"]])),
                }
    return summary


def write_report(output: Path, summary: dict, references: dict, setup: dict) -> None:
    systems = ["front_end", "t2s"]
    cell = lambda system, key, form: form.format(summary[system][key]) if system in summary else "pending"  # noqa: E731
    real = references["librivox"], references["asterisk_en"]
    lines = [
        "# Text to speech on real voices: offline front end vs T2S model", "",
        f"`scripts/measure_tts.py`: model `{setup['model']}`, T2S `{setup['t2s']}`, {len(SENTENCES)} sentences x "
        f"{len(VOICES)} real voice prompts ({', '.join(VOICES)}), seed {setup['seed']}; {setup['machine']}.", "",
        "| | front end | T2S | real speech (LibriVox reader) | real speech (Asterisk en) |",
        "|---|---|---|---|---|",
        "| WER (PocketSphinx) | " + " | ".join(cell(s, "wer", "{:.3f}") for s in systems)
        + f" | {real[0]['wer_recorded']:.3f} recorded, {real[0]['wer_codec_resynthesis']:.3f} codec resynthesis | — |",
        "| seconds per phoneme | " + " | ".join(cell(s, "seconds_per_phoneme", "{:.3f}") for s in systems)
        + f" | {real[0]['seconds_per_phoneme']:.3f} | {real[1]['seconds_per_phoneme']:.3f} |",
        "| F0 range (semitones, 5th-95th pct) | " + " | ".join(cell(s, "f0_range_semitones", "{:.1f}") for s in systems)
        + f" | {real[0]['f0_range_semitones']:.1f} | {real[1]['f0_range_semitones']:.1f} |",
        "| voice margin to the prompt (cosine, own - other) | "
        + " | ".join(cell(s, "voice_margin", "{:+.3f}") for s in systems) + " | — | — |",
        "| real-time factor (this machine) | " + " | ".join(cell(s, "real_time_factor", "{:.1f}") for s in systems)
        + " | — | — |",
        "", "## Dialogue (4 turns, LibriVox reader / Asterisk it voices)", "",
        "| system | turn prompted by | heard pauses (s): mean [min, max] | in 0.2-0.8 s | level step between turns (dB) | level spread (dB) | turns in own voice |",
        "|---|---|---|---|---|---|---|",
    ]
    for system in systems:
        for context, label in [("previous_turn", "voice + previous turn + pause"), ("none", "voice + pause")]:
            row = summary.get(system, {}).get(f"dialogue_{context}")
            if row is None:
                lines.append(f"| {system} | {label} | pending | | | | |")
                continue
            lines.append(
                f"| {system} | {label} | {row['heard_pause_mean']:.2f} [{row['heard_pause_min']:.2f}, "
                f"{row['heard_pause_max']:.2f}] | {row['heard_pauses_in_0.2_0.8']:.2f} | {row['level_step_mean_db']:.1f} | "
                f"{row['level_spread_db']:.1f} | {row['turns_in_own_voice']:.2f} |"
            )
    (output / "RESULTS.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="SoundStorm model folder, Hub id or 'default'.")
    parser.add_argument("--t2s", default=None, help="T2S model folder. Default: the model's t2s/ (find_t2s).")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/tts"))
    parser.add_argument("--save-audio", type=Path, default=None, help="Folder for every output's audio.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    pipe = SoundStormPipeline.from_pretrained(args.model)
    systems = {"front_end": TextToSpeech(pipe)}
    t2s_folder = find_t2s(args.model, args.t2s)
    if t2s_folder is not None:
        systems["t2s"] = TextToSpeech(pipe, t2s=load_t2s(args.model, args.t2s))
    args.output.mkdir(parents=True, exist_ok=True)
    log = lambda message: print(message, flush=True)  # noqa: E731
    embeddings = {name: speaker_embedding(read(path, 16000), 16000) for name, path in VOICES.items()}
    references = measure_references(pipe, log)
    tts = measure_tts(systems, VOICES, embeddings, args.seed, args.save_audio, log)
    dialogue = measure_dialogue(systems, VOICES, embeddings, args.seed, args.save_audio, log)
    summary = summarize(tts, dialogue)
    setup = {
        "model": str(args.model), "t2s": str(t2s_folder) if t2s_folder else "none (not trained yet)", "seed": args.seed,
        "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} torch threads",
    }
    results = {"setup": setup, "summary": summary, "references": references, "tts": tts, "dialogue": dialogue}
    (args.output / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_report(args.output, summary, references, setup)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
