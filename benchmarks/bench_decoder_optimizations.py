"""Before/after of the decoder and model speed edits, side by side in one process.

The "before" code is taken from git (`--baseline-rev`, the package as it was before the edits) into a
temporary package; both models get the same weights, their outputs are checked to be identical for the same
seed, then calls alternate (before, after, before, after, ...) and medians are reported.

    python benchmarks/bench_decoder_optimizations.py --threads 1
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from common import RESULTS_DIR, machine_info, median, set_threads, timed, write_json  # noqa: E402
from models import build_soundstorm, soundstorm_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FILES = ("configuration_soundstorm.py", "generation_soundstorm.py", "modeling_soundstorm.py")
DEFAULT_BASELINE = "8e2c8d9"  # the package before the speed edits of the benchmark issue


def load_baseline(rev: str, workdir: Path):
    package = workdir / "soundstorm_hf_baseline"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in FILES:
        source = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:src/soundstorm_hf/{name}"],
                                check=True, capture_output=True, text=True).stdout
        (package / name).write_text(source)
    sys.path.insert(0, str(workdir))
    return importlib.import_module("soundstorm_hf_baseline.modeling_soundstorm")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--baseline-rev", default=DEFAULT_BASELINE)
    parser.add_argument("--cells", nargs="+", default=["5:1", "30:1", "10:8"], help="SECONDS:BATCH")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "decoder_optimizations.json")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    cells = [(float(c.split(":")[0]), int(c.split(":")[1])) for c in args.cells]
    config = soundstorm_config(args.preset, max(s for s, _ in cells))
    after = build_soundstorm(config, "cpu", torch.float32)
    with tempfile.TemporaryDirectory() as tmp:
        baseline_module = load_baseline(args.baseline_rev, Path(tmp))
        before = baseline_module.SoundStormForConditionalGeneration(config).eval()
        before.load_state_dict(after.state_dict())
        results = {"benchmark": "decoder_optimizations", "machine": machine_info("cpu"),
                   "baseline_rev": args.baseline_rev,
                   "after_rev": subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                               capture_output=True, text=True).stdout.strip(),
                   "repeats": args.repeats, "cells": []}
        for seconds, batch in cells:
            frames = int(round(seconds * config.acoustic_frame_rate))
            semantic = torch.randint(0, config.semantic_vocab_size, (batch, config.num_semantic_frames(frames)),
                                     generator=torch.Generator().manual_seed(1))
            outputs = {name: model.generate(semantic, seed=7) for name, model in (("before", before), ("after", after))}
            identical = torch.equal(outputs["before"], outputs["after"])
            times = {"before": [], "after": []}
            for _ in range(args.repeats):
                for name, model in (("before", before), ("after", after)):
                    times[name].append(timed(lambda: model.generate(semantic, seed=3), "cpu")[0])
            cell = {"seconds": seconds, "batch": batch, "identical_output": identical,
                    "before_s": median(times["before"]), "after_s": median(times["after"]), "times_s": times}
            cell["speedup"] = cell["before_s"] / cell["after_s"]
            results["cells"].append(cell)
            print(f"{seconds:.0f}s x{batch}: before {cell['before_s']:.3f}s after {cell['after_s']:.3f}s "
                  f"-> {cell['speedup']:.3f}x, identical output: {identical}", flush=True)
            write_json(args.out, results)
    return results


if __name__ == "__main__":
    main()
