"""Fit the default model's offline codec (OfflineMelCodec: residual k-means on 80 log-mels, 50 Hz, 16 kHz) on the
corpus's train split, speakers sampled evenly, and measure its reconstruction on validation rows.

    python scripts/fit_default_codec.py --corpus /work/data/corpus_v1 --output /work/data/default/codec

Rows are taken round-robin over the train speakers (so the real Asterisk speakers weigh as much as each synthetic
voice) until `--max-frames` log-mel frames are collected; levels are fitted one after the other on the residual.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import time
from collections import defaultdict
from pathlib import Path

import soundfile
import torch

from soundstorm_hf.audio import prepare_waveform
from soundstorm_hf.tokenizers import OfflineMelCodec


def round_robin_rows(split_dir: Path, seed: int) -> list[Path]:
    by_speaker = defaultdict(list)
    with open(split_dir / "metadata.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            by_speaker[row["speaker"]].append(split_dir / row["file_name"])
    rng = random.Random(seed)
    for files in by_speaker.values():
        rng.shuffle(files)
    ordered, index = [], 0
    while any(index < len(files) for files in by_speaker.values()):
        ordered += [files[index] for files in by_speaker.values() if index < len(files)]
        index += 1
    return ordered


def load(path: Path, sampling_rate: int) -> torch.Tensor:
    audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
    return prepare_waveform(torch.from_numpy(audio.T), rate, sampling_rate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--num-levels", type=int, default=8)
    parser.add_argument("--codebook-size", type=int, default=1024)
    parser.add_argument("--max-frames", type=int, default=150_000)
    parser.add_argument("--num-eval", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    codec = OfflineMelCodec()
    files = round_robin_rows(args.corpus / "train", args.seed)
    start = time.time()
    codec.fit((load(path, codec.sampling_rate) for path in files), num_levels=args.num_levels,
              codebook_size=args.codebook_size, max_frames=args.max_frames, seed=args.seed)
    fit_seconds = time.time() - start
    codec.save_pretrained(args.output)

    # Quantization error of the log-mels (no Griffin-Lim) on validation rows, per number of levels.
    errors = defaultdict(float)
    frames = 0
    for path in round_robin_rows(args.corpus / "validation", args.seed)[: args.num_eval]:
        waveform = load(path, codec.sampling_rate)
        reference = codec.frontend(waveform[None])
        codes = codec.encode(waveform)
        for levels in (1, 2, 4, 8):
            if levels <= args.num_levels:
                quantized = codec.quantizer.decode(codes[:, :levels].transpose(1, 2))
                errors[levels] += (quantized - reference).abs().mean(-1).sum().item()
        frames += reference.shape[1]
    report = {
        "corpus": str(args.corpus), "num_levels": args.num_levels, "codebook_size": args.codebook_size,
        "max_frames": args.max_frames, "fit_seconds": round(fit_seconds, 1),
        "validation_log_mel_l1_by_levels": {str(k): round(v / frames, 4) for k, v in sorted(errors.items())},
        "validation_frames": frames,
    }
    (args.output / "fit_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
