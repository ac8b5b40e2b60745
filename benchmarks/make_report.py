"""Turns the recorded JSON results into `results/RESULTS.md` (tables) and `results/generation.png` (plot).

    python benchmarks/make_report.py
Needs matplotlib for the plot only (`pip install matplotlib`); without it, the tables are still written.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def load(directory: Path, name: str):
    path = directory / name
    return json.loads(path.read_text()) if path.exists() else None


def fmt(value, digits=2):
    return "—" if value is None else f"{value:.{digits}f}"


def machine_line(result) -> str:
    m = result["machine"]
    return (f"{m['processor']}, {m['logical_cpus']} logical CPUs, torch {m['torch']} with "
            f"{m['torch_threads']} thread(s), {m['ram_gib']} GiB RAM, device {m['device']}; "
            f"load average at start {m['load_average_at_start']}")


def generation_tables(results: list[dict]) -> list[str]:
    lines = []
    for result in results:
        s = result["settings"]
        lines += [f"Machine: {machine_line(result)}.  ",
                  f"Preset `{s['preset']}` ({s['soundstorm_parameters'] / 1e6:.1f}M parameters; "
                  + (f"AR Llama {s['ar_parameters'] / 1e6:.1f}M" if s["ar_parameters"] else "no AR baseline")
                  + f"), dtype {s['dtype']}, compile {s['compile']}, "
                  f"schedule {s['steps_per_level']}, median of {s['repeats']} SoundStorm / {s['ar_repeats']} AR "
                  f"timed runs after warm-up. Command arguments: `{' '.join(s.get('argv', []))}`", "",
                  "| audio | batch | SoundStorm wall (s) | RTF | passes | peak MiB | AR wall (s) | AR passes | "
                  "AR peak MiB | AR / SoundStorm |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for c in result["cells"]:
            ss, ar = c["soundstorm"], c.get("autoregressive")
            lines.append(
                f"| {c['seconds']:.0f} s | {c['batch']} | {fmt(ss['median_s'], 3)} | {fmt(ss['rtf'], 3)} | "
                f"{ss['forward_passes']} | {fmt(ss['peak_mib'], 0)} | "
                + (f"{fmt(ar['median_s'])} | {ar['forward_passes']} | {fmt(ar['peak_mib'], 0)} | "
                   f"**{c['ar_over_soundstorm']:.1f}x** |" if ar else "not run | | | |"))
        lines.append("")
    return lines


def sspt_table(result) -> list[str]:
    if result is None:
        return ["Not run."]
    if "skipped" in result:
        return [f"Not measured: {result['skipped']}"]
    s = result["settings"]
    lines = [f"Machine: {machine_line(result)}.  ",
             f"soundstorm-pytorch {result.get('soundstorm_pytorch_version')} "
             f"({s['soundstorm_pytorch_parameters'] / 1e6:.1f}M parameters) against soundstorm-hf "
             f"({s['soundstorm_hf_parameters'] / 1e6:.1f}M), schedule {s['steps_per_level']}, calls alternating in "
             f"one process, median of {s['repeats']}.", "",
             "| audio | batch | soundstorm-hf (s) | passes | peak MiB | soundstorm-pytorch (s) | passes | peak MiB | "
             "ratio (theirs / ours) |", "|---|---|---|---|---|---|---|---|---|"]
    for c in result["cells"]:
        a, b = c["soundstorm_hf"], c["soundstorm_pytorch"]
        lines.append(f"| {c['seconds']:.0f} s | {c['batch']} | {fmt(a['median_s'], 3)} | {a['forward_passes']} | "
                     f"{fmt(a['peak_mib'], 0)} | {fmt(b['median_s'], 3)} | {b['forward_passes']} | "
                     f"{fmt(b['peak_mib'], 0)} | **{c['pytorch_over_hf']:.2f}x** |")
    return lines


def training_table(result) -> list[str]:
    if result is None:
        return ["Not run."]
    s = result["settings"]
    lines = [f"Machine: {machine_line(result)}.  ",
             f"Preset `{s['preset']}`, dtype {s['dtype']}, {s['optimizer']}, median of {s['steps']} steps after "
             f"{s['warmup']} warm-up.", "",
             "| crop | batch | SoundStorm s/step | frames/s | peak MiB | AR s/step | AR frames/s | AR peak MiB |",
             "|---|---|---|---|---|---|---|---|"]
    for c in result["cells"]:
        a, b = c["soundstorm"], c.get("autoregressive")
        lines.append(f"| {c['seconds']:.0f} s | {c['batch']} | {fmt(a['step_s'], 3)} | {fmt(a['frames_per_s'], 0)} | "
                     f"{fmt(a['peak_mib'], 0)} | " + (f"{fmt(b['step_s'], 3)} | {fmt(b['frames_per_s'], 0)} | "
                                                     f"{fmt(b['peak_mib'], 0)} |" if b else "| | |"))
    return lines


def optimization_table(result) -> list[str]:
    if result is None:
        return ["Not run."]
    lines = [f"Machine: {machine_line(result)}.  ",
             f"Before = git `{result['baseline_rev']}`, after = `{result['after_rev']}`; same weights, calls "
             f"alternating, median of {result['repeats']}.", "",
             "| audio | batch | before (s) | after (s) | speed-up | identical output |", "|---|---|---|---|---|---|"]
    for c in result["cells"]:
        lines.append(f"| {c['seconds']:.0f} s | {c['batch']} | {fmt(c['before_s'], 3)} | {fmt(c['after_s'], 3)} | "
                     f"{c['speedup']:.3f}x | {c['identical_output']} |")
    return lines


def plot(generation: list[dict], out: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(11, 4.2))
    for result in generation:
        for batch in sorted({c["batch"] for c in result["cells"]}):
            cells = sorted((c for c in result["cells"] if c["batch"] == batch), key=lambda c: c["seconds"])
            xs = [c["seconds"] for c in cells]
            timing = " (time only)" if result["settings"].get("time_only") else ""
            timing += f", {result['settings']['dtype']}" if result["settings"]["dtype"] != "fp32" else ""
            ax_time.plot(xs, [c["soundstorm"]["median_s"] for c in cells], "o-",
                         label=f"SoundStorm, batch {batch}{timing}")
            if all(c["soundstorm"]["peak_mib"] is not None for c in cells):
                ax_mem.plot(xs, [c["soundstorm"]["peak_mib"] for c in cells], "o-", label=f"SoundStorm, batch {batch}")
            ar = [c for c in cells if "autoregressive" in c]
            if ar:
                ax_time.plot([c["seconds"] for c in ar], [c["autoregressive"]["median_s"] for c in ar], "s--",
                             label=f"AR Llama, batch {batch}")
                if all(c["autoregressive"]["peak_mib"] is not None for c in ar):
                    ax_mem.plot([c["seconds"] for c in ar], [c["autoregressive"]["peak_mib"] for c in ar], "s--",
                                label=f"AR Llama, batch {batch}")
    ax_time.set(xlabel="audio (s)", ylabel="wall time (s, median)", yscale="log", title="Generation time")
    ax_mem.set(xlabel="audio (s)", ylabel="peak memory increase (MiB)", title="Generation peak memory")
    for ax in (ax_time, ax_mem):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    machine = generation[0]["machine"]
    fig.suptitle(f"preset {generation[0]['settings']['preset']}, {machine['device']}, "
                 f"{machine['torch_threads']} thread(s), {machine['logical_cpus']} CPUs", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return True


NOTES = [
    "- Runs made one after another on an otherwise idle 2-core machine, 2 torch threads. Only the cells shown were "
    "measured; nothing is extrapolated. The `paper` preset needs a GPU (`--preset paper --device cuda --dtype bf16 "
    "--compile`) and was not run: no GPU was available to this project.",
    "- Memory is the peak RSS increase during a call, with glibc's mmap threshold pinned so that freed tensors "
    "return to the OS. That pinning and the sampling thread slow CPU runs down (about 1.5-2x here), so the tables "
    "with memory have pessimistic wall times (for both contenders alike: the ratios hold); the `--time-only` table "
    "gives the clean wall times.",
    "- Durations above the preset's 30 s (`max_frames` 1500) are generated with `generate_long`: windows of at most "
    "30 s, each prompted by the last 3 s of the one before (23 passes per window). Time grows linearly with length "
    "and peak memory stays that of one window.",
    "- soundstorm-pytorch cannot be installed beside this package here (its dependencies pull a CUDA torch, "
    "torchaudio and fairseq); it ran from a separate virtual environment with `--no-deps`, its two imports of "
    "`audiolm_pytorch` / `spear_tts_pytorch` (type names only) replaced by empty stand-ins "
    "(`benchmarks/sspt_stubs`). Its memory column has no pinned threshold either, so soundstorm-hf's 0 MiB there "
    "means memory reused from earlier calls, not none.",
    "- The decoder edits (one argsort instead of two, a fused half-step residual) give bit-identical outputs and "
    "remove about 1% of a pass by the profile (matrix products are 55-70% of decoding time, attention 15-35%); "
    "no gain is measurable (0.8-0.9x in this run, 1.0-1.8x in an earlier run on a busy machine).",
]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    d = args.results
    generation = [json.loads(p.read_text()) for p in sorted(d.glob("generation*.json"))]
    lines = ["# Speed results", "", "Generated by `benchmarks/make_report.py` from the JSON files beside it; "
             "every figure is a median over repeats after warm-up, contenders alternating in one process.", "",
             "## Generation: SoundStorm against an autoregressive Llama of the same size", ""]
    lines += generation_tables(generation) if generation else ["Not run."]
    lines += ["", "## Against soundstorm-pytorch 0.6.1", ""] + sspt_table(load(d, "soundstorm_pytorch.json"))
    lines += ["", "## Training throughput", ""] + training_table(load(d, "training.json"))
    lines += ["", "## Decoder speed edits, before and after", ""] + optimization_table(
        load(d, "decoder_optimizations.json"))
    lines += ["", "## Notes", "", *NOTES]
    d.mkdir(parents=True, exist_ok=True)
    (d / "RESULTS.md").write_text("\n".join(lines) + "\n")
    plotted = bool(generation) and plot(generation, d / "generation.png")
    print(f"wrote {d / 'RESULTS.md'}" + (f" and {d / 'generation.png'}" if plotted else ""))


if __name__ == "__main__":
    main()
