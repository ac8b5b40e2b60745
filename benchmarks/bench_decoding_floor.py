"""How close one decoding pass runs to this machine's limits, and what that allows against a recorded rival.

A pass is matrix products plus attention. For each duration this measures, in one process:
- the machine's matrix-product rate (a large square product, median of repeats);
- the pass's matrix-product FLOPs (`torch.utils.flop_counter`, which does not see CPU attention) and the time
  the profiler gives to them (`aten::addmm` / `aten::mm` / `aten::bmm`);
- the time of the attention kernel (`scaled_dot_product_*`): its cost is the T^2 softmax, which any
  implementation of the same configuration pays as well.
The floor of a generate call is `passes x (matrix FLOPs / machine rate + attention time)`: everything else
(norms, activations, convolution, sampling, Python) taken as free. Given a recorded `bench_soundstorm_pytorch.py`
result, the best ratio any implementation could reach against it is `their time / floor`.

    python benchmarks/bench_decoding_floor.py --preset small --durations 5 30 --threads 2 \
        --rival benchmarks/results/soundstorm_pytorch.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from common import RESULTS_DIR, machine_info, median, parse_dtype, set_threads, timed, write_json  # noqa: E402
from models import build_soundstorm, soundstorm_config  # noqa: E402

from soundstorm_hf import PRESETS  # noqa: E402

MATMUL_OPS = ("aten::addmm", "aten::mm", "aten::bmm")


def matmul_rate(dtype: torch.dtype, size: int, repeats: int) -> float:
    """FLOP/s of a (size x size) @ (size x size) product: the machine's practical ceiling for matrix work."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(2):
        a @ b
    return 2 * size**3 / median([timed(lambda: a @ b, "cpu")[0] for _ in range(repeats)])


def profile_pass(model, num_frames: int, repeats: int) -> dict:
    """Matrix FLOPs, and profiler seconds per pass for matrix products, attention and everything."""
    config = model.config
    semantic = torch.randint(0, config.semantic_vocab_size, (1, config.num_semantic_frames(num_frames)))
    codes = torch.randint(0, config.codebook_size, (1, config.num_levels, num_frames))
    with torch.inference_mode():
        embeds = model.model.embeddings.embed_semantic(semantic, num_frames)

        def one_pass():
            hidden = model.model(acoustic_ids=codes, semantic_embeds=embeds).last_hidden_state
            return model.level_logits(hidden, 0)

        with FlopCounterMode(display=False) as counter:
            one_pass()
        for _ in range(2):
            one_pass()
        wall = median([timed(one_pass, "cpu")[0] for _ in range(repeats)])
        with torch.profiler.profile() as profiler:
            for _ in range(repeats):
                one_pass()
    events = profiler.key_averages()

    def seconds_per_pass(selected) -> float:
        return sum(e.self_cpu_time_total for e in events if selected(e.key)) / 1e6 / repeats

    return {
        "matrix_flops": counter.get_total_flops(),
        "matrix_s": seconds_per_pass(lambda key: key in MATMUL_OPS),
        "attention_s": seconds_per_pass(lambda key: "scaled_dot_product" in key),
        "profiled_s": seconds_per_pass(lambda key: True),
        "wall_s": wall,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small", choices=sorted(PRESETS))
    parser.add_argument("--durations", type=float, nargs="+", default=[5, 30])
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--first-level-steps", type=int, default=16)
    parser.add_argument("--rival", type=Path, default=None, help="a bench_soundstorm_pytorch.py result to bound")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "decoding_floor.json")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    dtype = parse_dtype(args.dtype)
    config = soundstorm_config(args.preset, max(args.durations))
    model = build_soundstorm(config, "cpu", dtype)
    passes = args.first_level_steps + config.num_levels - 1
    rate = matmul_rate(dtype, args.matmul_size, args.repeats)
    rival = json.loads(args.rival.read_text()) if args.rival else None
    rival_cells = {c["seconds"]: c for c in rival["cells"]} if rival and "cells" in rival else {}
    results = {"benchmark": "decoding_floor", "machine": machine_info("cpu"),
               "settings": {"preset": args.preset, "dtype": args.dtype, "threads": torch.get_num_threads(),
                            "repeats": args.repeats, "passes": passes, "argv": sys.argv[1:],
                            "rival": str(args.rival) if args.rival else None},
               "matmul_flops_per_s": rate, "cells": []}
    for seconds in args.durations:
        num_frames = int(round(seconds * config.acoustic_frame_rate))
        cell = {"seconds": seconds, "frames": num_frames, **profile_pass(model, num_frames, args.repeats)}
        cell["matrix_efficiency"] = cell["matrix_flops"] / cell["matrix_s"] / rate
        cell["floor_s"] = passes * (cell["matrix_flops"] / rate + cell["attention_s"])
        cell["pass_floor_s"] = cell["floor_s"] / passes
        if seconds in rival_cells:
            theirs = rival_cells[seconds]
            cell["rival_s"] = theirs["soundstorm_pytorch"]["median_s"]
            cell["ours_recorded_s"] = theirs["soundstorm_hf"]["median_s"]
            cell["best_possible_ratio"] = cell["rival_s"] / cell["floor_s"]
            cell["recorded_ratio"] = theirs["pytorch_over_hf"]
        results["cells"].append(cell)
        print(f"{seconds:>4.0f}s: pass {cell['wall_s'] * 1e3:.0f} ms, matrix products {cell['matrix_flops'] / 1e9:.1f} "
              f"GFLOP at {cell['matrix_efficiency']:.0%} of {rate / 1e9:.0f} GFLOP/s, attention "
              f"{cell['attention_s'] * 1e3:.0f} ms; floor {cell['floor_s']:.2f} s for {passes} passes"
              + (f"; best possible ratio {cell['best_possible_ratio']:.2f}x (recorded {cell['recorded_ratio']:.2f}x)"
                 if "rival_s" in cell else ""), flush=True)
        write_json(args.out, results)
    return results


if __name__ == "__main__":
    main()
