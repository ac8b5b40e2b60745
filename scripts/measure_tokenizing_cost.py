"""Measure what turning audio into training tokens costs per CPU core, as CPU time / audio time (issue 22, part 2).

    python scripts/measure_tokenizing_cost.py --output benchmarks/results/corpus/tokenizing_cost.json

Everything runs on one thread and is timed in CPU seconds of this process (`time.process_time`), so the numbers
hold on a machine busy with other work; wall seconds are recorded beside them. Timed, on the same clips (default: the
five LibriVox clips of `pocketsphinx-testdata`, 25 s of real speech; `--audio` for others):
- the bundled semantic tokenizer (CTC phone recognizer + k-means, 25 Hz), one clip at a time and all clips as one
  padded batch;
- the bundled acoustic codec (log-mel residual k-means) for comparison;
- WORLD analysis with the WorldCodec's settings (16 kHz, 5 ms analysis frames, F0 60-600 Hz, 40 coded envelope
  coefficients): pitch by harvest, by dio alone and by dio + stonemask, then cheaptrick, d4c and envelope coding;
- residual k-means over the 43-dim WORLD frames at 50 Hz, 8 levels x 1024 (random codebooks: the cost does not
  depend on their values).
From these it derives the CPU hours of tokenizing `--hours` of audio with either pitch tracker, and the wall
minutes on this machine's cores and on the GPU machine's 16 (perfect scaling over files assumed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import soundfile
import soxr
import torch

from soundstorm_hf.tokenizers import KMeansQuantizer, load_acoustic_codec, load_semantic_tokenizer

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "src" / "soundstorm_hf" / "default"
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
SAMPLING_RATE = 16000
# WorldCodec's defaults (src/soundstorm_hf/tokenizers/world_codec.py): what the WORLD codec will analyse with.
WORLD_FRAME_PERIOD_MS, WORLD_MIN_F0, WORLD_MAX_F0, WORLD_ENVELOPE_COEFFICIENTS = 5.0, 60.0, 600.0, 40
WORLD_FEATURE_DIM, ACOUSTIC_FRAME_RATE, NUM_LEVELS, CODEBOOK_SIZE = 43, 50, 8, 1024
GPU_MACHINE_CORES = 16


def load_clips(paths: list[Path]) -> list[np.ndarray]:
    clips = []
    for path in paths:
        audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        audio = audio.mean(axis=1)
        clips.append(soxr.resample(audio, rate, SAMPLING_RATE) if rate != SAMPLING_RATE else audio)
    return clips


def timed(function, repeats: int) -> dict:
    """CPU and wall seconds of the fastest of `repeats` calls (the least disturbed by other processes)."""
    cpu, wall = [], []
    for _ in range(repeats):
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        function()
        cpu.append(time.process_time() - cpu_start)
        wall.append(time.perf_counter() - wall_start)
    return {"cpu_seconds": min(cpu), "wall_seconds": min(wall)}


def world_steps(clips: list[np.ndarray]) -> dict:
    """Each step of WORLD analysis, as functions over all clips (pitch first: the others need its F0)."""
    with warnings.catch_warnings():  # pyworld's __init__ imports the deprecated pkg_resources
        warnings.simplefilter("ignore")
        import pyworld
    audio = [clip.astype(np.float64) for clip in clips]
    fft_size = pyworld.get_cheaptrick_fft_size(SAMPLING_RATE, WORLD_MIN_F0)
    pitch_range = {"f0_floor": WORLD_MIN_F0, "f0_ceil": WORLD_MAX_F0, "frame_period": WORLD_FRAME_PERIOD_MS}
    dio = [pyworld.dio(x, SAMPLING_RATE, **pitch_range) for x in audio]
    refined = [pyworld.stonemask(x, f0, times, SAMPLING_RATE) for x, (f0, times) in zip(audio, dio)]
    envelopes = [
        pyworld.cheaptrick(x, f0, times, SAMPLING_RATE, f0_floor=WORLD_MIN_F0, fft_size=fft_size)
        for x, f0, (_, times) in zip(audio, refined, dio)
    ]
    return {
        "harvest": lambda: [pyworld.harvest(x, SAMPLING_RATE, **pitch_range) for x in audio],
        "dio": lambda: [pyworld.dio(x, SAMPLING_RATE, **pitch_range) for x in audio],
        "stonemask": lambda: [pyworld.stonemask(x, f0, t, SAMPLING_RATE) for x, (f0, t) in zip(audio, dio)],
        "cheaptrick": lambda: [
            pyworld.cheaptrick(x, f0, t, SAMPLING_RATE, f0_floor=WORLD_MIN_F0, fft_size=fft_size)
            for x, f0, (_, t) in zip(audio, refined, dio)
        ],
        "d4c": lambda: [pyworld.d4c(x, f0, t, SAMPLING_RATE, fft_size=fft_size) for x, f0, (_, t) in zip(audio, refined, dio)],
        "code_spectral_envelope": lambda: [
            pyworld.code_spectral_envelope(envelope, SAMPLING_RATE, WORLD_ENVELOPE_COEFFICIENTS) for envelope in envelopes
        ],
    }


def padded_batch(clips: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(clip) for clip in clips])
    batch = torch.zeros(len(clips), int(lengths.max()))
    for row, clip in enumerate(clips):
        batch[row, : len(clip)] = torch.from_numpy(clip)
    return batch, lengths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--audio", type=Path, nargs="*", default=sorted(LIBRIVOX.glob("*.wav")))
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="folder with codec/ and semantic_tokenizer/")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hours", type=float, default=20.0, help="corpus size the totals are computed for")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    if not args.audio:
        parser.error("no audio: give --audio files (the default needs Debian's pocketsphinx-testdata)")
    torch.set_num_threads(1)
    clips = load_clips(args.audio)
    audio_seconds = sum(len(clip) for clip in clips) / SAMPLING_RATE
    print(f"{len(clips)} clips, {audio_seconds:.1f} s of audio; one thread", flush=True)

    semantic = load_semantic_tokenizer(args.model / "semantic_tokenizer").eval()
    codec = load_acoustic_codec(args.model / "codec").eval()
    batch, lengths = padded_batch(clips)
    one_at_a_time = [torch.from_numpy(clip)[None] for clip in clips]
    generator = torch.Generator().manual_seed(0)
    world_quantizer = KMeansQuantizer(
        [torch.randn(CODEBOOK_SIZE, WORLD_FEATURE_DIM, generator=generator) for _ in range(NUM_LEVELS)]
    )
    world_frames = torch.randn(round(audio_seconds * ACOUSTIC_FRAME_RATE), WORLD_FEATURE_DIM, generator=generator)

    steps = {}
    with torch.inference_mode():
        steps["semantic_tokenizer_one_clip_at_a_time"] = lambda: [semantic.encode(clip) for clip in one_at_a_time]
        steps["semantic_tokenizer_one_batch"] = lambda: semantic.encode(batch, lengths)
        steps["mel_codec_one_clip_at_a_time"] = lambda: [codec.encode(clip) for clip in one_at_a_time]
        steps.update({f"world_{name}": step for name, step in world_steps(clips).items()})
        steps["world_residual_kmeans_8x1024"] = lambda: world_quantizer.encode(world_frames)
        results = {}
        for name, step in steps.items():
            step()  # warm-up: first-call allocations and lazy imports are not the steady cost
            results[name] = timed(step, args.repeats)
            results[name]["x_real_time_per_core"] = results[name]["cpu_seconds"] / audio_seconds
            print(f"{name:45s} {results[name]['x_real_time_per_core']:.4f} x real time per core", flush=True)

    def pipeline(names: list[str]) -> float:
        return sum(results[name]["x_real_time_per_core"] for name in names)

    after_pitch = ["world_cheaptrick", "world_d4c", "world_code_spectral_envelope", "world_residual_kmeans_8x1024"]
    semantic_cost = results["semantic_tokenizer_one_clip_at_a_time"]["x_real_time_per_core"]
    pipelines = {
        "world_harvest": pipeline(["world_harvest", *after_pitch]),
        "world_dio_stonemask": pipeline(["world_dio", "world_stonemask", *after_pitch]),
    }
    totals = {}
    for name, cost in pipelines.items():
        total = cost + semantic_cost  # acoustic codes and semantic ids, both needed per utterance
        totals[f"{name}+semantic"] = {
            "x_real_time_per_core": round(total, 4),
            "cpu_hours": round(total * args.hours, 2),
            f"wall_minutes_on_{os.cpu_count()}_cores_here": round(total * args.hours * 60 / os.cpu_count(), 1),
            f"wall_minutes_on_{GPU_MACHINE_CORES}_cores": round(total * args.hours * 60 / GPU_MACHINE_CORES, 1),
        }
    report = {
        "audio": [str(path) for path in args.audio],
        "audio_seconds": round(audio_seconds, 2),
        "threads": 1,
        "repeats": args.repeats,
        "machine": {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                    "load_average_at_end": os.getloadavg()},
        "steps": results,
        "pipelines_x_real_time_per_core": {name: round(cost, 4) for name, cost in pipelines.items()},
        f"totals_for_{args.hours:g}_hours": totals,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    partial = args.output.with_name(args.output.name + ".part")
    partial.write_text(json.dumps(report, indent=2) + "\n")
    partial.replace(args.output)
    print(json.dumps(report["pipelines_x_real_time_per_core"], indent=2))
    print(json.dumps(totals, indent=2))


if __name__ == "__main__":
    main()
