"""Training throughput: frames per second of forward + backward + AdamW step, and peak memory.

SoundStorm batches come from `SoundStormDataCollator` (per-example masking, as in training); the AR Llama
baseline of the same size (`models.AutoregressiveBaseline`) is trained with next-token loss on the same
audio flattened frame by frame (`[BOS] semantic codes`), so "frames" means the same audio on both sides.
Steps alternate between the two in one process; medians after warm-up.

    python benchmarks/bench_training.py --preset small --cells 5:8 10:8 30:2 --threads 1
GPU: add `--device cuda --dtype bf16` (bf16 autocast; fp32 master weights).

`--variants` instead measures the training step of `soundstorm-hf train` as it was (foreach AdamW, the step's loss
and gradient norm read on the host every step, fp32) against each change, side by side in one process: frames/s,
step time (a run of steps timed as a whole, so that a step the host does not wait for is not charged for waiting)
and MFU (FLOPs of one step counted by `torch.utils.flop_counter`, over the chip's dense bf16 peak):

    python benchmarks/bench_training.py --variants --preset default --cells 15:64 --device cuda
"""

from __future__ import annotations

import argparse
import math
import sys
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.utils.flop_counter  # noqa: E402

from common import RESULTS_DIR, machine_info, median, parse_dtype, peak_memory, pin_malloc_and_reexec, set_threads, timed, write_json  # noqa: E402
from models import AutoregressiveBaseline, soundstorm_config  # noqa: E402

from soundstorm_hf import PRESETS, SoundStormConfig, SoundStormForConditionalGeneration  # noqa: E402
from soundstorm_hf.collator import SoundStormDataCollator  # noqa: E402
from soundstorm_hf.pipeline import BUNDLED_DEFAULT_MODEL  # noqa: E402

# Each variant adds one change to the one before it; the last is what `soundstorm-hf train --mixed-precision bf16
# --compile-blocks` runs.
VARIANTS = {
    "baseline": {},
    "fused_adamw": {"fused": True},
    "no_host_sync": {"fused": True, "no_sync": True},
    "bf16_autocast": {"fused": True, "no_sync": True, "bf16": True},
    "compiled_blocks": {"fused": True, "no_sync": True, "bf16": True, "compile": True},
}
# Dense bf16 peak of the chips the project is lent, in FLOP/s (NVIDIA's data sheets, without sparsity).
PEAK_BF16_FLOPS = {"H100 80GB HBM3": 989e12, "H100 PCIe": 756e12, "H200": 989e12, "A100": 312e12}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small", choices=[*sorted(PRESETS), "default"],
                        help="A config preset, or the bundled default model's config.")
    parser.add_argument("--cells", nargs="+", default=["5:8", "10:8", "30:2"], help="SECONDS:BATCH")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per cell")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--no-ar", action="store_true", help="leave out the AR baseline")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="Default: results/training.json, or with --variants "
                        "results/gpu/training_variants_<preset>.json on a GPU (results/training_variants_<preset>.json else).")
    parser.add_argument("--variants", nargs="*", default=None, choices=list(VARIANTS),
                        help="Measure these training-step variants (all when given alone) instead of SoundStorm vs AR.")
    parser.add_argument("--peak-tflops", type=float, default=None, help="The chip's peak for MFU. Default: its data sheet's bf16 figure.")
    args = parser.parse_args(argv)
    if args.variants is not None:
        return run_variants(args)
    args.out = args.out or RESULTS_DIR / "training.json"
    if args.device == "cpu":
        pin_malloc_and_reexec()
    set_threads(args.threads)
    device = args.device
    cells = [(float(c.split(":")[0]), int(c.split(":")[1])) for c in args.cells]
    config = benchmark_config(args.preset, max(s for s, _ in cells))
    torch.manual_seed(0)
    model = SoundStormForConditionalGeneration(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    collator = SoundStormDataCollator(config, seed=0)
    ar = None if args.no_ar else AutoregressiveBaseline(config, max(s for s, _ in cells), device, torch.float32)
    if ar is not None:
        ar.model.train()
        ar_optimizer = torch.optim.AdamW(ar.model.parameters(), lr=1e-4)
    autocast = (torch.autocast(device_type=device.split(":")[0], dtype=parse_dtype(args.dtype))
                if args.dtype != "fp32" else nullcontext())
    results = {"benchmark": "training", "machine": machine_info(device),
               "settings": {"preset": args.preset, "dtype": args.dtype, "steps": args.steps, "warmup": args.warmup,
                            "optimizer": "AdamW", "threads": torch.get_num_threads(), "argv": sys.argv[1:],
                            "soundstorm_parameters": model.num_parameters(),
                            "ar_parameters": ar.num_parameters() if ar else None},
               "cells": []}
    generator = torch.Generator().manual_seed(0)
    for seconds, batch in cells:
        frames = int(round(seconds * config.acoustic_frame_rate))
        examples = [{"semantic_ids": torch.randint(0, config.semantic_vocab_size, (config.num_semantic_frames(frames),),
                                                   generator=generator),
                     "acoustic_ids": torch.randint(0, config.codebook_size, (config.num_levels, frames),
                                                   generator=generator)} for _ in range(batch)]

        def ss_step():
            inputs = {k: v.to(device) for k, v in collator(examples).items()}
            with autocast:
                loss = model(**inputs).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        if ar is not None:
            semantic = torch.stack([e["semantic_ids"] for e in examples]) + ar.semantic_offset
            offsets = (torch.arange(config.num_levels) * config.codebook_size)[None, :, None]
            acoustic = (torch.stack([e["acoustic_ids"] for e in examples]) + offsets).transpose(1, 2).flatten(1)
            bos = torch.full((batch, 1), ar.bos_id)
            ar_ids = torch.cat([bos, semantic, acoustic], dim=1).to(device)
            ar_labels = ar_ids.clone()
            ar_labels[:, : 1 + semantic.shape[1]] = -100  # loss on the acoustic tokens only

        def ar_step():
            with autocast:
                loss = ar.model(input_ids=ar_ids, labels=ar_labels).loss
            loss.backward()
            ar_optimizer.step()
            ar_optimizer.zero_grad(set_to_none=True)

        contenders = [("soundstorm", ss_step)] + ([("autoregressive", ar_step)] if ar is not None else [])
        for _ in range(args.warmup):
            for _, step in contenders:
                step()
        times = {name: [] for name, _ in contenders}
        mems = {name: [] for name, _ in contenders}
        for _ in range(args.steps):
            for name, step in contenders:
                with peak_memory(device) as mem:
                    t, _ = timed(step, device)
                times[name].append(t)
                mems[name].append(mem["peak_mib"])
        cell = {"seconds": seconds, "batch": batch, "frames": frames, "memory_kind": mem["memory_kind"]}
        for name, _ in contenders:
            step_s = median(times[name])
            cell[name] = {"step_s": step_s, "times_s": times[name], "frames_per_s": batch * frames / step_s,
                          "peak_mib": median(mems[name]), "peaks_mib": mems[name]}
        results["cells"].append(cell)
        print(f"{seconds:.0f}s x{batch}: " + " | ".join(
            f"{n} {cell[n]['step_s']:.3f}s/step {cell[n]['frames_per_s']:.0f} frames/s {cell[n]['peak_mib']:.0f} MiB"
            for n, _ in contenders), flush=True)
        write_json(args.out, results)
    return results


def benchmark_config(preset: str, max_seconds: float) -> SoundStormConfig:
    if preset == "default":
        config = SoundStormConfig.from_pretrained(BUNDLED_DEFAULT_MODEL)
        config.max_frames = max(config.max_frames, int(round(max_seconds * config.acoustic_frame_rate)))
    else:
        config = soundstorm_config(preset, max_seconds)
    config.hidden_dropout = 0.1  # the presets' training dropout
    return config


def random_examples(config: SoundStormConfig, frames: int, batch: int, generator: torch.Generator) -> list[dict]:
    return [{"semantic_ids": torch.randint(0, config.semantic_vocab_size, (config.num_semantic_frames(frames),), generator=generator),
             "acoustic_ids": torch.randint(0, config.codebook_size, (config.num_levels, frames), generator=generator)}
            for _ in range(batch)]


def variant_step(config: SoundStormConfig, device: str, options: dict, examples: list[dict]):
    """A model and the training step of one variant: forward, backward, clipping, AdamW, and (unless `no_sync`) the
    host reading the step's loss and gradient norm, as the training loop did every step."""
    torch.manual_seed(0)
    model = SoundStormForConditionalGeneration(config).to(device).train()
    if options.get("compile"):
        for block in model.model.layers:
            block.compile(dynamic=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=options.get("fused", None))
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=bool(options.get("bf16")))
    collator = SoundStormDataCollator(config, seed=0)
    batch = {k: v.to(device) for k, v in collator(examples).items()}
    pending = []

    def step():
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        checks = torch.stack([loss.detach().float(), norm.float()])
        if options.get("no_sync"):
            optimizer.found_inf = (~checks.sum().isfinite()).float()
            pending.append(checks)
        elif not all(map(math.isfinite, checks.tolist())):
            raise FloatingPointError("non-finite loss in the benchmark")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def flush():  # what the loop reads at a logging step
        if pending:
            torch.stack(pending).tolist()
            pending.clear()

    return model, step, flush


def run_variants(args):
    device = args.device
    if device == "cpu":
        pin_malloc_and_reexec()
    set_threads(args.threads)
    names = args.variants or [name for name in VARIANTS if device != "cpu" or name != "compiled_blocks"]
    cells = [(float(c.split(":")[0]), int(c.split(":")[1])) for c in args.cells]
    config = benchmark_config(args.preset, max(s for s, _ in cells))
    machine = machine_info(device)
    peak = args.peak_tflops * 1e12 if args.peak_tflops else None
    if peak is None and device.startswith("cuda"):
        name = torch.cuda.get_device_name()
        peak = next((flops for key, flops in PEAK_BF16_FLOPS.items() if key in name), None)
    folder = RESULTS_DIR / "gpu" if device.startswith("cuda") else RESULTS_DIR
    out = args.out or folder / f"training_variants_{args.preset}.json"
    results = {"benchmark": "training_variants", "machine": machine,
               "settings": {"preset": args.preset, "steps": args.steps, "warmup": args.warmup, "threads": torch.get_num_threads(),
                            "peak_flops": peak, "argv": sys.argv[1:], "variants": {name: VARIANTS[name] for name in names}},
               "cells": []}
    generator = torch.Generator().manual_seed(0)
    for seconds, batch_size in cells:
        frames = int(round(seconds * config.acoustic_frame_rate))
        examples = random_examples(config, frames, batch_size, generator)
        cell = {"seconds": seconds, "batch": batch_size, "frames": frames}
        for name in names:
            model, step, flush = variant_step(config, device, VARIANTS[name], examples)
            try:
                with torch.utils.flop_counter.FlopCounterMode(display=False) as counter:
                    step()  # also the first warm-up step (and compilation)
            except Exception as error:  # e.g. a compiler that fails on this machine: the other variants still count
                cell[name] = {"error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"}
                print(f"{seconds:g}s x{batch_size} {name}: failed, {cell[name]['error']}", flush=True)
                continue
            for _ in range(args.warmup):
                step()
            flush()
            def steps_then_read():
                for _ in range(args.steps):
                    step()
                flush()

            with peak_memory(device) as memory:
                seconds_taken, _ = timed(steps_then_read, device)
            step_s = seconds_taken / args.steps
            flops = counter.get_total_flops()
            cell[name] = {"step_s": step_s, "frames_per_s": batch_size * frames / step_s, "flops_per_step": flops,
                          "mfu": flops / step_s / peak if peak else None, "peak_mib": memory["peak_mib"],
                          "parameters": model.num_parameters()}
            del model, step, flush
            print(f"{seconds:g}s x{batch_size} {name}: {step_s * 1000:.1f} ms/step, {cell[name]['frames_per_s']:.0f} frames/s"
                  + (f", MFU {cell[name]['mfu']:.1%}" if peak else ""), flush=True)
        baseline = cell.get("baseline", {})
        for name in names:
            if "step_s" in baseline and "step_s" in cell[name]:
                cell[name]["speedup"] = baseline["step_s"] / cell[name]["step_s"]
        results["cells"].append(cell)
        write_json(out, results)
    return results


if __name__ == "__main__":
    main()
