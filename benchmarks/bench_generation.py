"""Generation speed: SoundStorm's parallel decoder against an autoregressive Llama of the same size.

For every (duration, batch) cell: one warm-up call per contender, then `--repeats` timed calls that
alternate SoundStorm and the AR baseline in this one process; medians are reported. Recorded per cell:
wall time, real-time factor (wall / audio seconds of one row), forward passes and peak memory (CUDA:
`max_memory_allocated` increase; CPU: peak RSS increase sampled by a thread, with glibc's mmap threshold
pinned so freed tensors go back to the OS; see `common.PeakRSS`).

CPU (what was run for results/, on the 2-core machine):
    python benchmarks/bench_generation.py --preset small --windowed --durations 5 10 30 60 120 --batch-sizes 1 8 \
        --skip 30:8 60:8 120:8 --ar-durations 5 10 30 --ar-repeats 1 --ar-warmup 0 --repeats 3 --threads 2
    python benchmarks/bench_generation.py --preset small --windowed --time-only --durations 5 10 30 60 120 \
        --batch-sizes 1 8 --skip 30:8 60:8 120:8 --ar-durations --repeats 3 --threads 2 \
        --out benchmarks/results/generation_time_only.json
GPU (the `paper` preset, 316M parameters): `benchmarks/gpu_suite.sh` holds the runs recorded in results/gpu/.
`--compile` compiles the decoding pass: `model.model.compile(dynamic=False, mode=--compile-mode)`;
every pass of a generate call has the same shapes, so it compiles once per (batch, frames);
`--compile-mode reduce-overhead` also records each pass as a CUDA graph. `--ar-compile` gives the AR
baseline a static KV cache and a compiled forward.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from common import RESULTS_DIR, machine_info, median, parse_dtype, peak_memory, pin_malloc_and_reexec, set_threads, timed, write_json  # noqa: E402
from models import AutoregressiveBaseline, ForwardCounter, build_soundstorm, soundstorm_config  # noqa: E402

from soundstorm_hf import PRESETS  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small", choices=sorted(PRESETS))
    parser.add_argument("--durations", type=float, nargs="+", default=[5, 10, 30, 60], help="seconds of audio")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--skip", nargs="*", default=[], help="cells to leave out, as DURATION:BATCH (e.g. 60:8)")
    parser.add_argument("--ar-durations", type=float, nargs="*", default=[5, 10],
                        help="durations at which the AR baseline is also run (it is slow on CPU)")
    parser.add_argument("--ar-batch-sizes", type=int, nargs="*", default=[1])
    parser.add_argument("--ar-repeats", type=int, default=None, help="timed AR calls per cell (default --repeats)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--ar-warmup", type=int, default=None,
                        help="AR warm-up calls per cell (default --warmup); 0 warms it on a 1-second call instead")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--compile", action="store_true", help="torch.compile the decoding pass (static shapes)")
    parser.add_argument("--compile-mode", default="default", choices=["default", "reduce-overhead", "max-autotune"],
                        help="torch.compile mode; reduce-overhead replays CUDA graphs")
    parser.add_argument("--ar-compile", action="store_true", help="static KV cache and compiled forward for the AR")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--first-level-steps", type=int, default=16)
    parser.add_argument("--time-only", action="store_true",
                        help="no memory tracking: glibc's pinned mmap threshold and the RSS sampling thread slow CPU "
                             "runs down, so clean wall times come from a run with this flag")
    parser.add_argument("--windowed", action="store_true",
                        help="keep the preset's max_frames and generate longer audio with `generate_long` "
                             "(windows prompted by the previous one's last 3 s; batch 1 only)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "generation.json")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.device == "cpu" and not args.time_only:
        pin_malloc_and_reexec()
    measure_memory = untracked_memory if args.time_only else (lambda: peak_memory(device))
    set_threads(args.threads)
    dtype = parse_dtype(args.dtype)
    device = args.device
    max_seconds = max(args.durations)
    config = soundstorm_config(args.preset, max_seconds, windowed=args.windowed)
    model = build_soundstorm(config, device, dtype)
    steps = [args.first_level_steps] + [1] * (config.num_levels - 1)
    passes = ForwardCounter(model.model)
    if args.compile:
        model.model.compile(dynamic=False, mode=args.compile_mode)
    ar = None
    if args.ar_durations:
        ar = AutoregressiveBaseline(config, max(args.ar_durations), device, dtype, compile=args.ar_compile)
    ar_repeats = args.ar_repeats or args.repeats
    skip = {tuple(float(x) if i == 0 else int(x) for i, x in enumerate(cell.split(":"))) for cell in args.skip}

    results = {
        "benchmark": "generation",
        "machine": machine_info(device),
        "settings": {
            "preset": args.preset, "dtype": args.dtype, "repeats": args.repeats,
            "compile": args.compile and args.compile_mode, "ar_compile": args.ar_compile,
            "time_only": args.time_only, "windowed": args.windowed,
            "ar_repeats": ar_repeats, "warmup": args.warmup, "ar_warmup": args.ar_warmup,
            "threads": torch.get_num_threads(), "argv": sys.argv[1:], "steps_per_level": steps,
            "soundstorm_parameters": model.num_parameters(),
            "ar_parameters": ar.num_parameters() if ar else None,
            "ar_config": {k: getattr(ar.config, k) for k in ("vocab_size", "hidden_size", "intermediate_size",
                                                             "num_hidden_layers", "num_attention_heads")} if ar else None,
            "acoustic_frame_rate": config.acoustic_frame_rate, "num_levels": config.num_levels,
            "note": "SoundStorm: level 1 sampled in 16 MaskGIT iterations, later levels one greedy pass each. "
                    "AR: transformers LlamaForCausalLM.generate, KV cache, min_new_tokens = max_new_tokens = "
                    "levels x frames, multinomial sampling at temperature 1 without top-k/top-p. Both untrained "
                    "(random weights): speed does not depend on the weights.",
        },
        "cells": [],
    }
    for seconds in args.durations:
        for batch in args.batch_sizes:
            if (float(seconds), batch) in skip:
                continue
            num_frames = int(round(seconds * config.acoustic_frame_rate))
            gen = torch.Generator().manual_seed(0)
            semantic = torch.randint(0, config.semantic_vocab_size, (batch, config.num_semantic_frames(num_frames)),
                                     generator=gen).to(device)
            run_ar = ar is not None and seconds in args.ar_durations and batch in args.ar_batch_sizes

            windowed = num_frames > config.max_frames
            if windowed and batch != 1:
                continue  # generate_long takes one sequence

            def run_ss(seed):
                if windowed:
                    codes = model.generate_long(semantic[0], context_frames=150, steps_per_level=steps, seed=seed)
                    return codes[None, :, :num_frames]
                return model.generate(semantic, num_frames=num_frames, steps_per_level=steps, seed=seed)

            def run_baseline(seed):
                return ar.generate(semantic, num_frames, seed=seed)

            for w in range(args.warmup):
                run_ss(w)
            ar_warmup = args.warmup if args.ar_warmup is None else args.ar_warmup
            if run_ar:
                for w in range(ar_warmup):
                    run_baseline(w)
                if ar_warmup == 0:
                    ar.generate(semantic[:, : config.num_semantic_frames(int(config.acoustic_frame_rate))],
                                int(config.acoustic_frame_rate))
            passes.reset()
            ar.counter.reset() if ar else None
            ss_times, ss_mem, ar_times, ar_mem = [], [], [], []
            ss_passes = ar_passes = None
            for r in range(max(args.repeats, ar_repeats if run_ar else 0)):
                if r < args.repeats:
                    with measure_memory() as mem:
                        t, codes = timed(lambda: run_ss(100 + r), device)
                    assert codes.shape == (batch, config.num_levels, num_frames)
                    ss_times.append(t)
                    ss_mem.append(mem["peak_mib"])
                    ss_passes = passes.reset()
                if run_ar and r < ar_repeats:
                    with measure_memory() as mem:
                        t, codes = timed(lambda: run_baseline(100 + r), device)
                    assert codes.shape == (batch, config.num_levels, num_frames)
                    ar_times.append(t)
                    ar_mem.append(mem["peak_mib"])
                    ar_passes = ar.counter.reset()
            cell = {
                "seconds": seconds, "batch": batch, "frames": num_frames, "windowed": windowed,
                "soundstorm": summarize(ss_times, ss_mem, ss_passes, seconds, batch),
                "memory_kind": mem["memory_kind"],
            }
            if run_ar:
                cell["autoregressive"] = summarize(ar_times, ar_mem, ar_passes, seconds, batch)
                cell["ar_over_soundstorm"] = cell["autoregressive"]["median_s"] / cell["soundstorm"]["median_s"]
                # Ratio of paired runs (each AR call against the SoundStorm call just before it).
                pairs = [a / s for a, s in zip(ar_times, ss_times)]
                cell["paired_ratio_median"] = median(pairs)
            results["cells"].append(cell)
            print(format_cell(cell), flush=True)
            write_json(args.out, results)  # after every cell, so that a long run keeps what it measured
    return results


@contextmanager
def untracked_memory():
    yield {"peak_mib": None, "memory_kind": "not measured (--time-only)"}


def summarize(times, mems, passes, seconds, batch):
    wall = median(times)
    return {
        "median_s": wall, "times_s": times, "rtf": wall / seconds,
        "audio_s_per_s": seconds * batch / wall, "forward_passes": passes,
        "peak_mib": None if None in mems else median(mems), "peaks_mib": mems,
    }


def fmt_mib(value):
    return "memory not measured" if value is None else f"{value:.0f} MiB"


def format_cell(cell):
    text = (f"{cell['seconds']:>5.0f}s x{cell['batch']}: soundstorm {cell['soundstorm']['median_s']:.3f}s "
            f"(rtf {cell['soundstorm']['rtf']:.3f}, {cell['soundstorm']['forward_passes']} passes, "
            f"{fmt_mib(cell['soundstorm']['peak_mib'])})")
    if "autoregressive" in cell:
        text += (f" | AR {cell['autoregressive']['median_s']:.2f}s ({cell['autoregressive']['forward_passes']} passes,"
                 f" {fmt_mib(cell['autoregressive']['peak_mib'])}) ratio {cell['ar_over_soundstorm']:.1f}x")
    return text


if __name__ == "__main__":
    main()
