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
    return (f"{m['processor']}, {m['logical_cpus']} logical CPUs (shared), torch {m['torch']} with "
            f"{m['torch_threads']} thread(s), {m['ram_gib']} GiB RAM, device {m['device']}; "
            f"load average at start {m['load_average_at_start']}")


def generation_tables(results: list[dict]) -> list[str]:
    lines = []
    for result in results:
        s = result["settings"]
        lines += [f"Machine: {machine_line(result)}.  ",
                  f"Preset `{s['preset']}` ({s['soundstorm_parameters'] / 1e6:.1f}M parameters; AR Llama "
                  f"{(s['ar_parameters'] or 0) / 1e6:.1f}M), dtype {s['dtype']}, compile {s['compile']}, "
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
            ax_time.plot(xs, [c["soundstorm"]["median_s"] for c in cells], "o-", label=f"SoundStorm, batch {batch}")
            ax_mem.plot(xs, [c["soundstorm"]["peak_mib"] for c in cells], "o-", label=f"SoundStorm, batch {batch}")
            ar = [c for c in cells if "autoregressive" in c]
            if ar:
                ax_time.plot([c["seconds"] for c in ar], [c["autoregressive"]["median_s"] for c in ar], "s--",
                             label=f"AR Llama, batch {batch}")
                ax_mem.plot([c["seconds"] for c in ar], [c["autoregressive"]["peak_mib"] for c in ar], "s--",
                            label=f"AR Llama, batch {batch}")
    ax_time.set(xlabel="audio (s)", ylabel="wall time (s, median)", yscale="log", title="Generation time")
    ax_mem.set(xlabel="audio (s)", ylabel="peak memory increase (MiB)", title="Generation peak memory")
    for ax in (ax_time, ax_mem):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    machine = generation[0]["machine"]
    fig.suptitle(f"preset {generation[0]['settings']['preset']}, {machine['device']}, "
                 f"{machine['torch_threads']} thread(s), {machine['logical_cpus']} shared CPUs", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return True


NOTES = [
    "- The machine's 2 cores were shared with other jobs (load average 2-5), and the runs above overlapped one "
    "another: absolute times are noisy (e.g. SoundStorm 5 s x1 took 3.5-6.3 s depending on the run). Ratios are "
    "from alternating calls in one process and are the figures to trust. 1 torch thread everywhere (more threads "
    "than free cores made timings erratic).",
    "- Only the cells shown were measured; nothing is extrapolated. Not measured (too long on this CPU within the "
    "time box): the AR baseline at 30 s and 60 s and at batch 8; SoundStorm batch 8 at 10, 30 and 60 s; the "
    "`paper` preset (needs a GPU: `--preset paper --device cuda --dtype bf16 --compile`).",
    "- 60 s is generated in one window with `max_frames` raised to 3000 (the presets stop at 1500 = 30 s); "
    "the package has no windowed-generation helper yet.",
    "- Memory is the peak RSS increase during a call (glibc mmap threshold pinned so freed tensors return to the "
    "OS). `bench_soundstorm_pytorch.py` does not pin it, so its soundstorm-hf column (0 MiB) reuses memory freed "
    "by earlier calls and is not meaningful; soundstorm-pytorch's larger figures are increases past that.",
    "- The before/after edits give bit-identical outputs; the profile puts what they remove at about 1% of a "
    "pass (matmuls are ~55-70% and attention ~15-35% of decoding time), so the 1.15x / 1.8x above are machine "
    "noise, not the edits' effect.",
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
