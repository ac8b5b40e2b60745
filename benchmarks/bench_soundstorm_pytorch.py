"""SoundStorm-hf against soundstorm-pytorch 0.6.1 at the same configuration and decoding schedule.

Runs both in ONE process, alternating calls, so that machine noise hits both alike. soundstorm-pytorch must
live in a separate virtual environment (its dependencies pull CUDA torch and torchaudio):

    python -m venv --system-site-packages /tmp/sspt-venv
    /tmp/sspt-venv/bin/pip install --no-deps soundstorm-pytorch==0.6.1 hyper-connections==0.4.11 \
        torch-einops-utils einops beartype
    PYTHONPATH=benchmarks/sspt_stubs /tmp/sspt-venv/bin/python benchmarks/bench_soundstorm_pytorch.py

(`benchmarks/sspt_stubs` stands in for `audiolm_pytorch` / `spear_tts_pytorch`, imported by the package
only for type names; see its README.) Without soundstorm-pytorch importable, the script records why and
exits 0.

Same configuration: width, depth, heads (head size 64), FFN 4 x width, depthwise kernel, conv-module
width (`conv_expansion_factor=1` matches this package's GLU to `hidden_size`), levels, codebook, semantic
vocabulary, 25 -> 50 Hz conditioning; hyper-connections off (`num_residual_streams=1`). Same schedule: 16
iterations on level 1 (cosine), one pass on each later level (`num_full_sampling_levels=1`) = 16 + Q - 1
passes; no top-k filtering on either side. Differences that are part of soundstorm-pytorch's design and not
switchable: it computes the logits of all Q levels on every pass (an extra `dim -> dim * Q` projection and
Q output heads), adds a per-layer value-residual gate, and ranks over all levels' positions.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TQDM_DISABLE", "1")  # before anything imports tqdm: no progress bar per decoding level
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from common import RESULTS_DIR, machine_info, median, parse_dtype, peak_memory, set_threads, timed, write_json  # noqa: E402
from models import ForwardCounter, build_soundstorm, soundstorm_config  # noqa: E402

from soundstorm_hf import PRESETS  # noqa: E402


def build_soundstorm_pytorch(config, steps: int):
    from soundstorm_pytorch import ConformerWrapper, SoundStorm

    head_dim = config.hidden_size // config.num_attention_heads
    net = ConformerWrapper(
        codebook_size=config.codebook_size,
        num_quantizers=config.num_levels,
        conformer=dict(
            dim=config.hidden_size, depth=config.num_hidden_layers, heads=config.num_attention_heads,
            dim_head=head_dim, ff_mult=config.intermediate_size // config.hidden_size, conv_expansion_factor=1,
            conv_kernel_size=config.conv_kernel_size, attn_flash=True, num_residual_streams=1,
        ),
    )
    # 25 Hz semantic tokens (16 kHz / 640) onto 50 Hz codec frames (24 kHz / 480).
    model = SoundStorm(
        net, steps=steps, schedule="cosine", num_semantic_token_ids=config.semantic_vocab_size,
        wav2vec_target_sample_hz=16000, wav2vec_downsample_factor=640,
        codec_target_sample_hz=24000, codec_downsample_factor=480,
    )
    return model.eval()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small", choices=sorted(PRESETS))
    parser.add_argument("--durations", type=float, nargs="+", default=[5, 10, 30])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"],
                        help="both models are cast to it")
    parser.add_argument("--first-level-steps", type=int, default=16)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "soundstorm_pytorch.json")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    config = soundstorm_config(args.preset, max(args.durations))
    device, dtype = args.device, parse_dtype(args.dtype)
    results = {"benchmark": "soundstorm_pytorch", "machine": machine_info(device), "cells": []}
    try:
        import importlib.metadata as md

        results["soundstorm_pytorch_version"] = md.version("soundstorm-pytorch")
        theirs = build_soundstorm_pytorch(config, args.first_level_steps).to(device=device, dtype=dtype)
    except Exception as error:  # recorded, not raised: the comparison is optional
        results["skipped"] = f"soundstorm-pytorch could not be imported or built: {error!r}"
        results["traceback"] = traceback.format_exc()
        write_json(args.out, results)
        print(results["skipped"])
        return results
    ours = build_soundstorm(config, device, dtype)
    steps = [args.first_level_steps] + [1] * (config.num_levels - 1)
    ours_passes, theirs_passes = ForwardCounter(ours.model), ForwardCounter(theirs.net)
    results["settings"] = {
        "preset": args.preset, "dtype": args.dtype, "threads": torch.get_num_threads(), "repeats": args.repeats,
        "warmup": args.warmup, "steps_per_level": steps,
        "soundstorm_hf_parameters": ours.num_parameters(),
        "soundstorm_pytorch_parameters": sum(p.numel() for p in theirs.parameters()),
        "soundstorm_pytorch_generate": "generate(cond_semantic_token_ids=..., filter_thres=None, num_full_sampling_levels=1)",
    }
    for seconds in args.durations:
        for batch in args.batch_sizes:
            num_frames = int(round(seconds * config.acoustic_frame_rate))
            semantic = torch.randint(0, config.semantic_vocab_size, (batch, config.num_semantic_frames(num_frames)),
                                     generator=torch.Generator().manual_seed(0)).to(device)

            def run_ours(seed):
                return ours.generate(semantic, num_frames=num_frames, steps_per_level=steps, seed=seed)

            def run_theirs(seed):
                torch.manual_seed(seed)
                out = theirs.generate(cond_semantic_token_ids=semantic, filter_thres=None, num_full_sampling_levels=1)
                return out.view(batch, num_frames, config.num_levels) if batch > 1 else out

            for w in range(args.warmup):
                run_ours(w)
                run_theirs(w)
            ours_passes.reset()
            theirs_passes.reset()
            rows = {"soundstorm_hf": ([], []), "soundstorm_pytorch": ([], [])}
            passes = {}
            for r in range(args.repeats):
                for name, fn, counter in (("soundstorm_hf", run_ours, ours_passes),
                                          ("soundstorm_pytorch", run_theirs, theirs_passes)):
                    with peak_memory(device) as mem:
                        t, out = timed(lambda: fn(100 + r), device)
                    assert out.numel() == batch * config.num_levels * num_frames, out.shape
                    rows[name][0].append(t)
                    rows[name][1].append(mem["peak_mib"])
                    passes[name] = counter.reset()
            cell = {"seconds": seconds, "batch": batch, "frames": num_frames}
            for name, (times, mems) in rows.items():
                cell[name] = {"median_s": median(times), "times_s": times, "rtf": median(times) / seconds,
                              "forward_passes": passes[name], "peak_mib": median(mems), "peaks_mib": mems}
            cell["pytorch_over_hf"] = cell["soundstorm_pytorch"]["median_s"] / cell["soundstorm_hf"]["median_s"]
            cell["paired_ratio_median"] = median([b / a for a, b in zip(*(rows[n][0] for n in rows))])
            results["cells"].append(cell)
            print(f"{seconds:>4.0f}s x{batch}: hf {cell['soundstorm_hf']['median_s']:.3f}s "
                  f"({passes['soundstorm_hf']} passes) | soundstorm-pytorch {cell['soundstorm_pytorch']['median_s']:.3f}s "
                  f"({passes['soundstorm_pytorch']} passes) -> {cell['pytorch_over_hf']:.2f}x", flush=True)
            write_json(args.out, results)
    return results


if __name__ == "__main__":
    main()
