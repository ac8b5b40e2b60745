"""Training throughput: frames per second of forward + backward + AdamW step, and peak memory.

SoundStorm batches come from `SoundStormDataCollator` (per-example masking, as in training); the AR Llama
baseline of the same size (`models.AutoregressiveBaseline`) is trained with next-token loss on the same
audio flattened frame by frame (`[BOS] semantic codes`), so "frames" means the same audio on both sides.
Steps alternate between the two in one process; medians after warm-up.

    python benchmarks/bench_training.py --preset small --cells 5:8 10:8 30:2 --threads 1
GPU: add `--device cuda --dtype bf16` (bf16 autocast; fp32 master weights).
"""

from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from common import RESULTS_DIR, machine_info, median, parse_dtype, peak_memory, pin_malloc_and_reexec, set_threads, timed, write_json  # noqa: E402
from models import AutoregressiveBaseline, soundstorm_config  # noqa: E402

from soundstorm_hf import SoundStormForConditionalGeneration  # noqa: E402
from soundstorm_hf.collator import SoundStormDataCollator  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small", choices=["tiny", "small", "paper"])
    parser.add_argument("--cells", nargs="+", default=["5:8", "10:8", "30:2"], help="SECONDS:BATCH")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per cell")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--no-ar", action="store_true", help="leave out the AR baseline")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "training.json")
    args = parser.parse_args(argv)
    if args.device == "cpu":
        pin_malloc_and_reexec()
    set_threads(args.threads)
    device = args.device
    cells = [(float(c.split(":")[0]), int(c.split(":")[1])) for c in args.cells]
    config = soundstorm_config(args.preset, max(s for s, _ in cells))
    config.hidden_dropout = 0.1  # the preset's training dropout
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


if __name__ == "__main__":
    main()
