"""Turns the recorded JSON results of one directory into its `RESULTS.md` (tables) and `generation.png` (plot).

    python benchmarks/make_report.py                                   # CPU results
    python benchmarks/make_report.py --results benchmarks/results/gpu  # GPU results
The directory's `notes.md`, if any, is appended as the report's notes. Needs matplotlib for the plot only.
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
    gpu = f"{m['gpu']} (CUDA {m['cuda']}), " if "gpu" in m else ""
    return (f"{gpu}{m['processor']}, {m['logical_cpus']} logical CPUs, torch {m['torch']} with "
            f"{m['torch_threads']} thread(s), {m['ram_gib']} GiB RAM, device {m['device']}; "
            f"load average at start {m['load_average_at_start']}"
            + "".join(f"; {key}={value}" for key, value in m.get("allocator_env", {}).items()))


def variant(settings) -> str:
    """How the decoding pass ran: dtype and compilation."""
    text, compiled = settings["dtype"], settings["compile"]  # compile: False, or the torch.compile mode
    if compiled:
        text += ", compiled" if compiled in (True, "default") else f", compiled ({compiled})"
    if settings.get("ar_compile"):
        text += ", AR compiled with a static cache"
    return text


def generation_tables(results: list[dict]) -> list[str]:
    lines = []
    for result in results:
        s = result["settings"]
        lines += [f"Machine: {machine_line(result)}.  ",
                  f"Preset `{s['preset']}` ({s['soundstorm_parameters'] / 1e6:.1f}M parameters; "
                  + (f"AR Llama {s['ar_parameters'] / 1e6:.1f}M" if s["ar_parameters"] else "no AR baseline")
                  + f"), {variant(s)}, "
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


def floor_table(result) -> list[str]:
    s = result["settings"]
    lines = [f"Machine: {machine_line(result)}.  ",
             f"Preset `{s['preset']}`, {s['dtype']}, {s['passes']} passes; matrix-product ceiling "
             f"{result['matmul_flops_per_s'] / 1e9:.0f} GFLOP/s (a large square product); rival: "
             f"`{s['rival']}`.", "",
             "| audio | pass (ms) | matrix GFLOP | matrix efficiency | attention (ms) | floor (s) | recorded ours (s) | "
             "rival (s) | best possible ratio | recorded ratio |", "|---|---|---|---|---|---|---|---|---|---|"]
    for c in result["cells"]:
        lines.append(f"| {c['seconds']:.0f} s | {c['wall_s'] * 1e3:.0f} | {c['matrix_flops'] / 1e9:.1f} | "
                     f"{c['matrix_efficiency']:.0%} | {c['attention_s'] * 1e3:.0f} | {fmt(c['floor_s'])} | "
                     f"{fmt(c.get('ours_recorded_s'))} | {fmt(c.get('rival_s'))} | "
                     f"**{fmt(c.get('best_possible_ratio'))}x** | {fmt(c.get('recorded_ratio'))}x |")
    return lines


def plot(generation: list[dict], out: Path) -> bool:
    """Time and memory against length: one line per (result file, batch) that covers at least three durations,
    and the AR baseline's points from any file."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(12, 5.5))
    for result in generation:
        settings = result["settings"]
        what = variant(settings) + (", windowed" if settings.get("windowed") else "") + (
            ", time only" if settings.get("time_only") else "")
        for batch in sorted({c["batch"] for c in result["cells"]}):
            cells = sorted((c for c in result["cells"] if c["batch"] == batch), key=lambda c: c["seconds"])
            xs = [c["seconds"] for c in cells]
            if len(cells) >= 3:
                label = f"SoundStorm, batch {batch}, {what}"
                ax_time.plot(xs, [c["soundstorm"]["median_s"] for c in cells], "o-", label=label)
                if all(c["soundstorm"]["peak_mib"] is not None for c in cells):
                    ax_mem.plot(xs, [c["soundstorm"]["peak_mib"] for c in cells], "o-", label=label)
            ar = [c for c in cells if "autoregressive" in c]
            if ar:
                label = f"AR Llama, batch {batch}" + (", compiled" if settings.get("ar_compile") else "")
                ax_time.plot([c["seconds"] for c in ar], [c["autoregressive"]["median_s"] for c in ar], "s--",
                             label=label)
                if all(c["autoregressive"]["peak_mib"] is not None for c in ar):
                    ax_mem.plot([c["seconds"] for c in ar], [c["autoregressive"]["peak_mib"] for c in ar], "s--",
                                label=label)
    ax_time.set(xlabel="audio (s)", ylabel="wall time (s, median)", yscale="log", title="Generation time")
    ax_mem.set(xlabel="audio (s)", ylabel="peak memory increase (MiB)", title="Generation peak memory")
    for ax in (ax_time, ax_mem):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1)
    machine = generation[0]["machine"]
    where = machine.get("gpu") or (
        f"{machine['device']}, {machine['torch_threads']} thread(s), {machine['logical_cpus']} CPUs")
    fig.suptitle(f"preset {generation[0]['settings']['preset']}, {where}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return True


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
    def tables(pattern: str, table) -> list[str]:  # one table per matching result file
        return [line for path in sorted(d.glob(pattern)) for line in table(json.loads(path.read_text())) + [""]]

    lines += ["", "## Against soundstorm-pytorch 0.6.1", ""] + tables("soundstorm_pytorch*.json", sspt_table)
    floors = tables("decoding_floor*.json", floor_table)
    if floors:
        lines += ["## How far a faster decoder could go: the floor of a pass", "", *floors]
    lines += ["## Training throughput", ""] + tables("training*.json", training_table)
    if (d / "decoder_optimizations.json").exists():
        lines += ["## Decoder speed edits, before and after", ""] + optimization_table(
            load(d, "decoder_optimizations.json")) + [""]
    if (d / "notes.md").exists():
        lines += ["## Notes", "", (d / "notes.md").read_text().strip()]
    d.mkdir(parents=True, exist_ok=True)
    (d / "RESULTS.md").write_text("\n".join(lines) + "\n")
    plotted = bool(generation) and plot(generation, d / "generation.png")
    print(f"wrote {d / 'RESULTS.md'}" + (f" and {d / 'generation.png'}" if plotted else ""))


if __name__ == "__main__":
    main()
