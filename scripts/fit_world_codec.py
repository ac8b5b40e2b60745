"""Fit the WORLD codec (WorldCodec: residual k-means over WORLD vocoder features, 50 Hz, 16 kHz) and save it.

    nice -n 19 python scripts/fit_world_codec.py --output benchmarks/results/codec/world_codec

Speech, all offline from Debian packages and none of it what `scripts/measure_codec.py` scores:
- real: the English Asterisk prompts (`asterisk-core-sounds-en-g722`, one speaker), `--asterisk-seconds` of them;
- synthetic: flite's awb, rms and kal16 voices reading `scripts/data/corpus_sentences.txt`, `--flite-seconds` each.
  flite's slt is left out: it is a held-out speaker of the training corpus (`scripts/build_corpus.py`).
With `--corpus`, the train split of a corpus built by `scripts/build_corpus.py` is used instead (speakers taken
round-robin, as `scripts/fit_default_codec.py` does), which brings more real speakers.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile
import torch
from fit_default_codec import load, round_robin_rows
from threadpoolctl import threadpool_limits

from soundstorm_hf.audio import prepare_waveform
from soundstorm_hf.tokenizers import WorldCodec
from soundstorm_hf.tokenizers.world_codec import PITCH_TRACKERS

SAMPLING_RATE = 16000
ASTERISK_PROMPTS = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
SENTENCES = Path(__file__).with_name("data") / "corpus_sentences.txt"
FLITE_VOICES = ("awb", "rms", "kal16")


def first_seconds(waveforms: Iterator[np.ndarray], seconds: float) -> Iterator[np.ndarray]:
    """Waveforms `(samples,)` at SAMPLING_RATE until they add up to `seconds`."""
    total = 0.0
    for waveform in waveforms:
        yield waveform
        total += waveform.size / SAMPLING_RATE
        if total >= seconds:
            return


def asterisk_prompts(seed: int) -> Iterator[np.ndarray]:
    files = sorted(ASTERISK_PROMPTS.rglob("*.g722"))
    if not files:
        raise FileNotFoundError(
            f"No Asterisk prompts in {ASTERISK_PROMPTS}: apt-get install asterisk-core-sounds-en-g722"
        )
    random.Random(seed).shuffle(files)
    for path in files:
        pcm = subprocess.run(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "g722", "-i", str(path), "-ar", str(SAMPLING_RATE),
             "-ac", "1", "-f", "f32le", "-"],
            capture_output=True, check=True,
        ).stdout
        yield np.frombuffer(pcm, dtype=np.float32).copy()


def flite_speech(voice: str, seed: int) -> Iterator[np.ndarray]:
    lines = [line.strip() for line in SENTENCES.read_text().splitlines()]
    sentences = [line for line in lines if line and not line.startswith("#")]
    random.Random(seed).shuffle(sentences)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "speech.wav"
        for sentence in sentences:
            subprocess.run(["flite", "-voice", voice, "-t", sentence, "-o", str(path)], check=True, capture_output=True)
            audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
            yield prepare_waveform(torch.from_numpy(audio.T), rate, SAMPLING_RATE).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--corpus", type=Path, help="a corpus from scripts/build_corpus.py (its train split)")
    parser.add_argument("--asterisk-seconds", type=float, default=1200.0)
    parser.add_argument("--flite-seconds", type=float, default=200.0, help="per flite voice")
    parser.add_argument("--pitch-tracker", choices=PITCH_TRACKERS, default="dio")
    parser.add_argument("--num-levels", type=int, default=8)
    parser.add_argument("--codebook-size", type=int, default=1024)
    parser.add_argument("--max-frames", type=int, default=None, help="stop collecting after this many 20 ms frames")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if args.corpus is not None:
        waveforms = (load(path, SAMPLING_RATE) for path in round_robin_rows(args.corpus / "train", args.seed))
        sources = {"corpus": str(args.corpus)}
    else:
        def speech() -> Iterator[np.ndarray]:
            yield from first_seconds(asterisk_prompts(args.seed), args.asterisk_seconds)
            for voice in FLITE_VOICES:
                yield from first_seconds(flite_speech(voice, args.seed), args.flite_seconds)

        waveforms = speech()
        sources = {"asterisk_en_seconds": args.asterisk_seconds,
                   "flite_seconds_per_voice": {voice: args.flite_seconds for voice in FLITE_VOICES}}

    codec = WorldCodec(pitch_tracker=args.pitch_tracker)
    start = time.time()
    with threadpool_limits(limits=1):  # scikit-learn's threads spin-wait on a small shared machine
        codec.fit(waveforms, num_levels=args.num_levels, codebook_size=args.codebook_size,
                  max_frames=args.max_frames, seed=args.seed)
    fit_seconds = time.time() - start
    codec.save_pretrained(args.output)
    report = {"sources": sources, "pitch_tracker": args.pitch_tracker, "num_levels": args.num_levels,
              "codebook_size": args.codebook_size, "seed": args.seed, "fit_seconds": round(fit_seconds, 1)}
    (args.output / "fit_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
