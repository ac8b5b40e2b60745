"""Before/after of the decoder and model speed edits, side by side in one process.

The "before" code is taken from git (`--baseline-rev`, the package as it was before the edits) into a
temporary package; both models get the same weights, their outputs are checked to be identical for the same
seed, then calls alternate (before, after, before, after, ...) and medians are reported.

    python benchmarks/bench_decoder_optimizations.py --threads 1
    python benchmarks/bench_decoder_optimizations.py --baseline-rev d373473 --threads 2 \
        --out benchmarks/results/model_file_rewrite.json   # the transformers-shaped model file against the one before

Both decode greedily with ranking by confidence alone (`do_sample=False, choice_temperature=0`), so that outputs
can be compared exactly and the timing is the model's, not the sampler's (`bench_sampling.py` measures that).
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
DEFAULT_BASELINE = "8e2c8d9"  # the package before the speed edits of the benchmark issue
DETERMINISTIC = dict(do_sample=False, choice_temperature=0.0)


def load_baseline(rev: str, workdir: Path):
    """The package's top-level modules as they were at `rev`, importable as `soundstorm_hf_baseline` (an empty
    `__init__`, so that only what the model file imports runs)."""
    package = workdir / "soundstorm_hf_baseline"
    package.mkdir()
    (package / "__init__.py").write_text("")
    listing = subprocess.run(["git", "-C", str(REPO), "ls-tree", "--name-only", rev, "src/soundstorm_hf/"],
                             check=True, capture_output=True, text=True).stdout
    for name in (Path(line).name for line in listing.split()):
        if name.endswith(".py") and name != "__init__.py":
            source = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:src/soundstorm_hf/{name}"],
                                    check=True, capture_output=True, text=True).stdout
            (package / name).write_text(source)
    sys.path.insert(0, str(workdir))
    return importlib.import_module("soundstorm_hf_baseline.modeling_soundstorm")


# Module names before the model file took transformers' Conformer vocabulary (revisions up to d373473).
RENAMED = {
    "embeddings.acoustic.": "embeddings.acoustic_embeddings.",
    "embeddings.semantic.": "embeddings.semantic_embeddings.",
    "feed_forward_in.layer_norm.": "ffn1_layer_norm.",
    "feed_forward_in.up.": "ffn1.intermediate_dense.",
    "feed_forward_in.down.": "ffn1.output_dense.",
    "feed_forward_out.layer_norm.": "ffn2_layer_norm.",
    "feed_forward_out.up.": "ffn2.intermediate_dense.",
    "feed_forward_out.down.": "ffn2.output_dense.",
    "attention.layer_norm.": "self_attn_layer_norm.",
    "attention.out.": "self_attn.out_proj.",
    "convolution.layer_norm.": "conv_module.layer_norm.",
    "convolution.pointwise_in.": "conv_module.pointwise_conv1.",
    "convolution.depthwise.": "conv_module.depthwise_conv.",
    "convolution.depthwise_norm.": "conv_module.depthwise_layer_norm.",
    "convolution.pointwise_out.": "conv_module.pointwise_conv2.",
}


def to_baseline_names(state_dict: dict, baseline) -> dict:
    """The current model's weights under a baseline's names: the same values, so both compute the same function."""
    wanted = baseline.state_dict().keys()
    if set(state_dict) <= set(wanted):
        return state_dict
    converted = {}
    for name, tensor in state_dict.items():
        for proj in ("q_proj", "k_proj", "v_proj"):
            if f"self_attn.{proj}." in name:
                break
        else:
            for new_part, old_part in ((new, old) for old, new in RENAMED.items()):
                name = name.replace(new_part, old_part)
            converted[name] = tensor
    for name in state_dict:  # the fused projection of the old attention: [q; k; v] stacked on the output dimension
        if ".self_attn.q_proj." in name:
            prefix, kind = name.split(".self_attn.q_proj.")
            converted[f"{prefix}.attention.qkv.{kind}"] = torch.cat(
                [state_dict[f"{prefix}.self_attn.{proj}.{kind}"] for proj in ("q_proj", "k_proj", "v_proj")]
            )
    return converted


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
        before.load_state_dict(to_baseline_names(after.state_dict(), before))
        results = {"benchmark": "decoder_optimizations", "machine": machine_info("cpu"),
                   "baseline_rev": args.baseline_rev,
                   "after_rev": subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                               capture_output=True, text=True).stdout.strip(),
                   "repeats": args.repeats, "cells": []}
        for seconds, batch in cells:
            frames = int(round(seconds * config.acoustic_frame_rate))
            semantic = torch.randint(0, config.semantic_vocab_size, (batch, config.num_semantic_frames(frames)),
                                     generator=torch.Generator().manual_seed(1))
            outputs = {name: model.generate(semantic, **DETERMINISTIC) for name, model in (("before", before), ("after", after))}
            identical = torch.equal(outputs["before"], outputs["after"])
            times = {"before": [], "after": []}
            for _ in range(args.repeats):
                for name, model in (("before", before), ("after", after)):
                    times[name].append(timed(lambda: model.generate(semantic, **DETERMINISTIC), "cpu")[0])
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
