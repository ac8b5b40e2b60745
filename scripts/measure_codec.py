"""Measure offline codecs side by side on real speech they were not fitted on: WER, F0 and CPU time of resynthesis.

    nice -n 19 python scripts/measure_codec.py --codec world=benchmarks/results/codec/world_codec \
        --output benchmarks/results/codec

Clips (Debian `pocketsphinx-testdata`, with their transcripts): the five LibriVox clips (one reader, 71 words)
and the five `cards` clips (another speaker, 19 words). No codec measured here was fitted on them.

Systems: the original audio, the bundled default model's codec (log-mel + Griffin-Lim) unless `--no-default`, and each
`--codec NAME=FOLDER` (any folder `load_acoustic_codec` reads). A WORLD codec also gets a row `NAME:unquantized`
(WORLD analysis and synthesis with no codebook: the ceiling of its features), and `--pitch-trackers` rows that
encode with another pitch tracker than the one saved (same codebooks).

Metrics (`soundstorm_hf.evaluation`), per clip set:
- `wer`: PocketSphinx WER pooled over the clips (total edits / total words);
- `f0_error`: mean over clips of |median F0 of the output / median F0 of the original - 1| (pYIN);
- `encode_rt`, `decode_rt`: CPU seconds (this process, one torch thread) per second of audio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import torch

from soundstorm_hf.evaluation import median_f0, transcribe, word_error_rate
from soundstorm_hf.tokenizers import WorldCodec, load_acoustic_codec

TESTDATA = Path("/usr/share/pocketsphinx/test/data")
CLIP_SETS = {  # name -> (folder, transcript file)
    "librivox": (TESTDATA / "librivox", "transcription"),
    "cards": (TESTDATA / "cards", "cards.transcription"),
}
DEFAULT_CODEC = Path(__file__).resolve().parents[1] / "src" / "soundstorm_hf" / "default" / "codec"
TRANSCRIPT_LINE = re.compile(r"<s>(.*)</s>\s*\((\S+)\)")


def read_clips(folder: Path, transcript_name: str) -> list[tuple[str, np.ndarray, str]]:
    """(clip id, 16 kHz waveform, transcript) for every line of a Sphinx transcript file."""
    clips = []
    for line in (folder / transcript_name).read_text().splitlines():
        match = TRANSCRIPT_LINE.search(line)
        if match:
            text, clip_id = match.group(1).strip(), match.group(2)
            audio, rate = soundfile.read(folder / f"{clip_id}.wav", dtype="float32")
            if rate != 16000:
                raise ValueError(f"{clip_id}.wav is at {rate} Hz; these clips are 16 kHz.")
            clips.append((clip_id, audio, text))
    if not clips:
        raise FileNotFoundError(f"No clips in {folder}: apt-get install pocketsphinx-testdata")
    return clips


def cpu_timed(function, *args):
    start = time.process_time()
    result = function(*args)
    return time.process_time() - start, result


def resynthesize(codec, waveform: torch.Tensor) -> tuple[np.ndarray, float, float]:
    """(output audio, encode CPU seconds, decode CPU seconds)."""
    encode_seconds, codes = cpu_timed(codec.encode, waveform)
    decode_seconds, audio = cpu_timed(codec.decode, codes)
    return audio[0, : waveform.shape[-1]].numpy(), encode_seconds, decode_seconds


def world_unquantized(codec: WorldCodec, waveform: torch.Tensor) -> tuple[np.ndarray, float, float]:
    encode_seconds, features = cpu_timed(codec.features, waveform)
    decode_seconds, audio = cpu_timed(codec.synthesize, features)
    return audio[: waveform.shape[-1]].numpy(), encode_seconds, decode_seconds


def systems(args) -> dict:
    """name -> function(waveform) -> (audio, encode seconds, decode seconds)."""
    found = {"original": lambda waveform: (waveform.numpy(), 0.0, 0.0)}
    named = ([("default_mel", str(DEFAULT_CODEC))] if not args.no_default else []) + [
        tuple(spec.split("=", 1)) for spec in args.codec
    ]
    for name, folder in named:
        codec = load_acoustic_codec(folder)
        found[name] = lambda waveform, codec=codec: resynthesize(codec, waveform)
        if isinstance(codec, WorldCodec):
            found[f"{name}:unquantized"] = lambda waveform, codec=codec: world_unquantized(codec, waveform)
            for tracker in args.pitch_trackers:
                if tracker != codec.pitch_tracker:
                    other = load_acoustic_codec(folder, pitch_tracker=tracker)
                    found[f"{name}:encoded_with_{tracker}"] = lambda waveform, codec=other: resynthesize(
                        codec, waveform
                    )
    return found


def measure(system, clips) -> dict:
    references, hypotheses, f0_errors, clip_rows = [], [], [], []
    encode_seconds = decode_seconds = audio_seconds = 0.0
    for clip_id, audio, text in clips:
        output, encode, decode = system(torch.from_numpy(audio))
        hypothesis = transcribe(output, 16000)
        f0_source, f0_output = median_f0(audio, 16000), median_f0(output, 16000)
        references.append(text)
        hypotheses.append(hypothesis)
        f0_errors.append(abs(f0_output / f0_source - 1))
        encode_seconds, decode_seconds = encode_seconds + encode, decode_seconds + decode
        audio_seconds += len(audio) / 16000
        clip_rows.append({"clip": clip_id, "hypothesis": hypothesis, "f0_hz": round(f0_output, 1),
                          "source_f0_hz": round(f0_source, 1)})
    return {
        "wer": round(word_error_rate(references, hypotheses), 4),
        "f0_error": round(float(np.mean(f0_errors)), 4),
        "encode_rt": round(encode_seconds / audio_seconds, 4),
        "decode_rt": round(decode_seconds / audio_seconds, 4),
        "audio_seconds": round(audio_seconds, 2),
        "clips": clip_rows,
    }


def markdown(results: dict) -> str:
    lines = ["# Offline codec resynthesis on held-out real speech", "",
             "Written by `scripts/measure_codec.py` (see its docstring for the metrics). Codecs: "
             + ", ".join(f"{name} = `{folder}`" for name, folder in results["codecs"].items() if folder) + ".", ""]
    for clip_set, rows in results["clip_sets"].items():
        lines += [f"## {clip_set} ({rows['original']['audio_seconds']} s)", "",
                  "| system | WER | F0 error | encode CPU / audio | decode CPU / audio |", "|---|---|---|---|---|"]
        for name, row in rows.items():
            lines.append(f"| {name} | {row['wer']:.3f} | {row['f0_error']:.3f} | {row['encode_rt']:.3f} | "
                         f"{row['decode_rt']:.3f} |")
        lines.append("")
    lines.append(f"Machine: {results['machine']['processor']}, load average at start "
                 f"{results['machine']['load_average_at_start']} (the RT columns count CPU time, not wall time).")
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
        handle.write(text)
    os.replace(handle.name, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--codec", action="append", default=[], metavar="NAME=FOLDER")
    parser.add_argument("--no-default", action="store_true", help="leave out the bundled default model's codec")
    parser.add_argument("--pitch-trackers", nargs="*", default=[], choices=("dio", "harvest"))
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    for spec in args.codec:
        if "=" not in spec:
            parser.error(f"--codec takes NAME=FOLDER, got {spec!r}")

    torch.set_num_threads(1)
    machine = {"processor": platform.processor() or platform.machine(), "python": platform.python_version(),
               "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
    clip_sets = {name: read_clips(*location) for name, location in CLIP_SETS.items()}
    results = {"machine": machine, "codecs": {"default_mel": None if args.no_default else str(DEFAULT_CODEC.relative_to(
        DEFAULT_CODEC.parents[3])), **dict(spec.split("=", 1) for spec in args.codec)},
        "clip_sets": {name: {} for name in clip_sets}}
    for system_name, system in systems(args).items():
        for set_name, clips in clip_sets.items():
            row = measure(system, clips)
            results["clip_sets"][set_name][system_name] = row
            print(f"{set_name:9s} {system_name:32s} WER {row['wer']:.3f}  F0 error {row['f0_error']:.3f}  "
                  f"encode {row['encode_rt']:.3f}  decode {row['decode_rt']:.3f}", flush=True)
    args.output.mkdir(parents=True, exist_ok=True)
    write_atomically(args.output / "resynthesis.json", json.dumps(results, indent=2) + "\n")
    write_atomically(args.output / "resynthesis.md", markdown(results))


if __name__ == "__main__":
    main()
