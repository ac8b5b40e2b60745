"""One GPU round of training the default model: a single call of at most 10 minutes that trains on from the last
weights and sends back what the next round (and the CPU evaluation) needs. Run through `training/gpu_round.sh`.

    bash training/gpu_round.sh --tokens gpu/tokens_train --eval-tokens gpu/tokens_val [--init gpu/last_round]

Inside one wall-clock budget (`--budget`, 570 s by default, measured from this script's start; what is left always
covers the final evaluation and the export):
  1. tokens: a token dataset folder as `soundstorm-hf prepare` writes it, or packed files (`tokens-*.npz`, from
     `training/pack_token_dataset.py pack`) unpacked here;
  2. benchmark: the training step as it was against the one used here (`benchmarks/bench_training.py --variants`),
     a few steps each;
  3. training: from `--init` (the shipped default model, or the folder a previous round returned, assembled), with
     a short warm-up (the optimizer state does not travel), batches by frame budget, bf16 and compiled Conformer
     blocks on a GPU, ending at the deadline with a held-out evaluation;
  4. export to `--output`: fp16 safetensors shards under 16 MiB, config.json, generation_config.json, and round.json
     (settings, benchmark, held-out metrics, steps, timings). gpu_round.sh adds round.log.

Back on the CPU, `python training/gpu_round.py assemble RETURNED --init src/soundstorm_hf/default --output FOLDER`
makes a complete model folder (the init model's tokenizers, the returned weights) for `scripts/evaluate_conversion.py`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from soundstorm_hf.configuration_soundstorm import SoundStormConfig
from soundstorm_hf.data import TOKENS_INFO_NAME
from soundstorm_hf.modeling_soundstorm import SoundStormForConditionalGeneration
from soundstorm_hf.pipeline import BUNDLED_DEFAULT_MODEL
from soundstorm_hf.training import train

REPO = Path(__file__).resolve().parents[1]
PACKER = REPO / "training" / "pack_token_dataset.py"  # pack/unpack of token datasets (soundstorm_hf.token_packing)
MAX_SHARD = "15MB"  # each returned file under the 16 MiB a call sends back
MODEL_FILES = ("config.json", "generation_config.json")


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gpu_round.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--tokens", type=Path, required=True, help="Training tokens: a token dataset folder or packed files.")
    parser.add_argument("--eval-tokens", type=Path, default=None, help="Held-out tokens (other speakers). Default: a share of --tokens.")
    parser.add_argument("--init", type=Path, default=BUNDLED_DEFAULT_MODEL, help="Weights to start from: a model folder.")
    parser.add_argument("--output", type=Path, required=True, help="Folder of what comes back ($OUT).")
    parser.add_argument("--budget", type=float, default=570.0, help="Wall-clock seconds for the whole round.")
    parser.add_argument("--started-at", type=float, default=None, help="Unix time the budget counts from. Default: now.")
    parser.add_argument("--reserve", type=float, default=45.0, help="Seconds kept for the final evaluation and export.")
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--warmup-steps", type=int, default=100, help="Warm-up of the fresh optimizer.")
    parser.add_argument("--frames-per-batch", type=int, default=96_000, help="Padded frames per batch (--max-frames-per-batch).")
    parser.add_argument("--max-frames", type=int, default=750, help="Longest training window, in acoustic frames.")
    parser.add_argument("--min-crop-frames", type=int, default=None,
                        help="Random windows from this many frames to --max-frames (one length per batch). "
                             "Default: rows as they are, cut to --max-frames, batched with rows of their length.")
    parser.add_argument("--logging-steps", type=int, default=50, help="Steps between logs (and deadline checks).")
    parser.add_argument("--bench-preset", default="default", help="bench_training.py --preset of the benchmark.")
    parser.add_argument("--bench-cells", default="15:64", help="bench_training.py --cells of the benchmark.")
    parser.add_argument("--bench-seconds", type=float, default=90.0, help="Most seconds the benchmark may take.")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args(argv)


class Clock:
    """The round's wall clock, from `started` (a Unix time: the shell's start, so that Python's imports count too)."""

    def __init__(self, budget: float, started: float | None = None):
        self.start, self.budget = started or time.time(), budget

    def elapsed(self) -> float:
        return time.time() - self.start

    def left(self) -> float:
        return self.budget - self.elapsed()


def token_dataset(path: Path, work: Path) -> Path:
    """A folder `train.py` loads: `path` itself, or the packed files in it unpacked into `work`."""
    if any(path.glob("tokens-*.npz")):
        if not PACKER.is_file():
            raise SystemExit(f"{path} holds packed tokens, but {PACKER} (which unpacks them) is missing")
        target = work / path.name
        subprocess.run([sys.executable, str(PACKER), "unpack", str(path), str(target)], check=True)
        return target
    if not (path / TOKENS_INFO_NAME).is_file():
        raise SystemExit(f"{path} is neither a token dataset ({TOKENS_INFO_NAME}) nor packed tokens (tokens-*.npz)")
    return path


def benchmark(args: argparse.Namespace, seconds: float, work: Path) -> dict:
    """The training step as it was against the one this round trains with, side by side (empty when out of time)."""
    variants = ["baseline", "compiled_blocks"] if args.device.startswith("cuda") else ["baseline", "no_host_sync"]
    result = work / "bench.json"
    command = [sys.executable, str(REPO / "benchmarks" / "bench_training.py"), "--variants", *variants, "--preset",
               args.bench_preset, "--cells", args.bench_cells, "--steps", "5", "--warmup", "2", "--device", args.device,
               "--out", str(result)]
    try:
        subprocess.run(command, check=True, timeout=seconds)
    except (subprocess.TimeoutExpired, subprocess.CalledProcessError) as error:
        print(f"benchmark left out: {error}", flush=True)
    return json.loads(result.read_text()) if result.is_file() else {"left_out": f"no result in {seconds:.0f} s"}


def train_arguments(args: argparse.Namespace, tokens: Path, eval_tokens: Path | None, run: Path, seconds: float,
                    compile_blocks: bool) -> list[str]:
    on_gpu = args.device.startswith("cuda")
    argv = [
        "--model-name-or-path", str(args.init), "--dataset-name", str(tokens), "--output-dir", str(run),
        "--max-frames", str(args.max_frames), "--min-frames", "50",
        "--max-frames-per-batch", str(args.frames_per_batch), "--learning-rate", str(args.learning_rate),
        "--warmup-steps", str(args.warmup_steps), "--lr-scheduler-type", "constant_with_warmup",
        "--max-steps", str(10**9), "--max-seconds", str(seconds), "--logging-steps", str(args.logging_steps),
        "--eval-steps", str(10**9), "--save-steps", str(10**9), "--save-total-limit", "1", "--num-audio-samples", "0",
        "--report-to", "none", "--mixed-precision", "bf16" if on_gpu else "no",
    ]
    if compile_blocks:
        argv.append("--compile-blocks")
    if args.min_crop_frames:
        argv += ["--min-crop-frames", str(args.min_crop_frames)]
    return argv + (["--eval-dataset-name", str(eval_tokens)] if eval_tokens else [])


def export(run: Path, output: Path, work: Path) -> list[str]:
    """The trained weights as fp16 shards under 16 MiB, with the config and generation config (not the modeling code
    `save_pretrained` copies beside them: few files may come back); the files written."""
    model = SoundStormForConditionalGeneration.from_pretrained(run, dtype=torch.float16)
    model.save_pretrained(work / "export", max_shard_size=MAX_SHARD)
    written = sorted(path.name for path in (work / "export").iterdir() if path.suffix in (".safetensors", ".json"))
    for name in written:
        shutil.copy(work / "export" / name, output / name)
    return written


def run_round(args: argparse.Namespace) -> dict:
    clock = Clock(args.budget, args.started_at)
    args.output.mkdir(parents=True, exist_ok=True)
    report = {"init": str(args.init), "device": args.device, "budget_s": args.budget,
              "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None}
    with tempfile.TemporaryDirectory(prefix="gpu-round-") as folder:
        work = Path(folder)
        tokens = token_dataset(args.tokens, work)
        eval_tokens = token_dataset(args.eval_tokens, work) if args.eval_tokens else None
        report["tokens_ready_s"] = round(clock.elapsed(), 1)
        bench_seconds = min(args.bench_seconds, 0.4 * (clock.left() - args.reserve))  # the rest trains
        report["benchmark"] = benchmark(args, bench_seconds, work) if bench_seconds > 5 else {
            "left_out": f"{clock.left():.0f} s left of the budget, too few to measure and train"}
        report["benchmark_done_s"] = round(clock.elapsed(), 1)
        run = work / "run"
        # Compiled blocks only where the benchmark compiled and ran them: a failure there must not cost the round.
        compiled = any("step_s" in cell.get("compiled_blocks", {}) for cell in report["benchmark"].get("cells", []))
        argv = train_arguments(args, tokens, eval_tokens, run, clock.left() - args.reserve, compiled)
        report["train_argv"] = argv
        train.main(*train.parse_arguments(argv))
        report["metrics"] = metrics = json.loads((run / train.RESULTS_NAME).read_text())
        report["trained_s"] = round(clock.elapsed(), 1)
        report["files"] = export(run, args.output, work)
    report["total_s"] = round(clock.elapsed(), 1)
    (args.output / "round.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"round done in {report['total_s']} s of {args.budget:g}: step {metrics.get('step', '?')}, held-out loss "
          f"{metrics.get('eval/loss', float('nan')):.4f}; files in {args.output}", flush=True)
    return report


def assemble(returned: Path, init: Path, output: Path) -> None:
    """A complete model folder: the tokenizers (and card) of `init`, the weights and configs that came back. `output`
    may be `init` itself (e.g. the package's default folder in a working tree, so that the next round starts there)."""
    SoundStormConfig.from_pretrained(returned)  # refuse anything that is not a returned model folder
    if output.resolve() != init.resolve():
        weights = {path.name for path in init.glob("model*.safetensors*")}  # the init's own weights, not its tokenizers'
        shutil.copytree(init, output, dirs_exist_ok=True, ignore=lambda folder, names: weights if Path(folder) == init else ())
    state_dict = SoundStormForConditionalGeneration.from_pretrained(returned, dtype=torch.float16).state_dict()
    for stale in output.glob("model*.safetensors*"):
        stale.unlink()
    save_file({name: tensor.contiguous() for name, tensor in state_dict.items()}, output / "model.safetensors",
              metadata={"format": "pt"})  # one file, as the package ships it
    for name in (*MODEL_FILES, "round.json"):
        if (returned / name).is_file():
            shutil.copy(returned / name, output / name)
    print(f"model folder {output}: weights of {returned}, tokenizers of {init}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["assemble"]:
        parser = argparse.ArgumentParser(prog="gpu_round.py assemble", description=assemble.__doc__)
        parser.add_argument("returned", type=Path)
        parser.add_argument("--init", type=Path, default=BUNDLED_DEFAULT_MODEL)
        parser.add_argument("--output", type=Path, required=True)
        parsed = parser.parse_args(argv[1:])
        assemble(parsed.returned, parsed.init, parsed.output)
    else:
        run_round(parse_arguments(argv))


if __name__ == "__main__":
    main()
