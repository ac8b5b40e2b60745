"""Peak memory of the audio-to-audio pipeline against input length: it should stay flat.

Each input length runs in a fresh subprocess (peak RSS is a per-process high-water mark), with a tiny random model
and the offline tokenizers (fitted here on espeak-ng speech, nothing downloaded). The input is a 22.05 kHz 16-bit
wav, so reading, resampling, tokenizing, generating and decoding are all measured. Two ways out:
`array` returns the output as an array (which itself grows: 4 bytes a sample), `file` streams it to a wav
(`convert_to_file`), `stream` reads `pipe.stream` block by block. `--pythonpath` runs the children against another source tree (e.g. an older commit) for a
before/after comparison (`array` only there).

    python benchmarks/bench_pipeline_memory.py                       # 1, 10, 30 min; both modes
    python benchmarks/bench_pipeline_memory.py --minutes 1 10 --modes array --pythonpath /tmp/old/src --tag before
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, machine_info, write_json  # noqa: E402

SENTENCES = (
    "the quick brown fox jumps over the lazy dog",
    "seven green apples fell from the tree",
    "please call me back tomorrow morning",
)
INPUT_RATE = 22050
STEPS = [1, 1, 1]  # iterations per level: memory does not depend on them, time does


def build_model(folder: Path) -> None:
    """A tiny random SoundStorm with offline tokenizers fitted on a few espeak-ng sentences, saved to `folder`."""
    import soxr
    import torch

    from soundstorm_hf import SoundStormConfig, SoundStormForConditionalGeneration
    from soundstorm_hf.audio import synthesize_speech
    from soundstorm_hf.pipeline import SoundStormPipeline
    from soundstorm_hf.tokenizers import OfflineMelCodec, OfflineMfccTokenizer

    corpus = [soxr.resample(*synthesize_speech(text, "en+m3"), 16000) for text in SENTENCES]
    codec = OfflineMelCodec(griffin_lim_iterations=2).fit(corpus, num_levels=len(STEPS), codebook_size=64)
    semantic = OfflineMfccTokenizer().fit(corpus, num_clusters=64)
    torch.manual_seed(0)
    config = SoundStormConfig.from_preset("tiny", num_levels=len(STEPS), codebook_size=64, semantic_vocab_size=64)
    SoundStormPipeline(SoundStormForConditionalGeneration(config), codec, semantic).save_pretrained(folder)


def write_input(path: Path, minutes: float) -> None:
    """`minutes` of espeak-ng speech repeated, written block by block (the parent never holds it whole)."""
    from soundstorm_hf.audio import synthesize_speech

    speech = np.concatenate([synthesize_speech(text, "en+f3")[0] for text in SENTENCES])  # 22.05 kHz
    remaining = round(minutes * 60 * INPUT_RATE)
    with soundfile.SoundFile(str(path), "w", INPUT_RATE, 1, "PCM_16") as file:
        while remaining > 0:
            file.write(speech[:remaining])
            remaining -= min(remaining, len(speech))


def child(model: Path, input_path: Path, mode: str, output: Path) -> dict:
    """Runs one conversion in this process; returns its time and this process's peak RSS."""
    import torch

    from soundstorm_hf.pipeline import SoundStormPipeline

    torch.set_num_threads(2)
    pipe = SoundStormPipeline.from_pretrained(model)
    loaded_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    if mode == "array":
        seconds = len(pipe(str(input_path), seed=0, steps_per_level=STEPS)["audio"]) / pipe.sampling_rate
    elif mode == "stream":  # blocks read and dropped, as a player does
        seconds = sum(len(block) for block in pipe.stream(str(input_path), seed=0, steps_per_level=STEPS))
        seconds /= pipe.sampling_rate
    else:
        seconds = pipe.convert_to_file(str(input_path), output, seed=0, steps_per_level=STEPS)["num_samples"]
        seconds /= pipe.sampling_rate
    return {
        "output_seconds": seconds,
        "wall_s": time.perf_counter() - started,
        "rss_after_loading_mib": loaded_mib,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 30])
    parser.add_argument("--modes", nargs="+", choices=["array", "file", "stream"], default=["array", "file", "stream"])
    parser.add_argument("--pythonpath", help="source tree for the children (default: the installed package)")
    parser.add_argument("--tag", default="after", help="key of this run in the results file")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "pipeline_memory.json")
    parser.add_argument("--child", nargs=4, metavar=("MODEL", "INPUT", "MODE", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        model, input_path, mode, output = args.child
        print(json.dumps(child(Path(model), Path(input_path), mode, Path(output))))
        return

    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
    if args.pythonpath:
        env["PYTHONPATH"] = args.pythonpath
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        build_model(tmp / "model")
        for minutes in args.minutes:
            write_input(tmp / "input.wav", minutes)
            for mode in args.modes:
                command = [sys.executable, __file__, "--child", str(tmp / "model"), str(tmp / "input.wav"), mode,
                           str(tmp / "output.wav")]
                result = json.loads(subprocess.run(command, env=env, check=True, capture_output=True).stdout)
                runs.append({"input_minutes": minutes, "mode": mode, **result})
                print(json.dumps(runs[-1]), flush=True)
    for mode in args.modes:
        first = next(run for run in runs if run["mode"] == mode)
        for run in runs:
            if run["mode"] == mode:
                run["peak_vs_shortest"] = round(run["peak_rss_mib"] / first["peak_rss_mib"], 3)
    results = json.loads(args.output.read_text()) if args.output.exists() else {}
    results[args.tag] = {
        "machine": machine_info(),
        "setup": "tiny preset (random weights), OfflineMelCodec (2 Griffin-Lim iterations) + OfflineMfccTokenizer, "
        f"{INPUT_RATE} Hz 16-bit wav input, steps_per_level {STEPS}, peak RSS of a fresh process per run",
        "source": env.get("PYTHONPATH") or "installed package",
        "runs": runs,
    }
    write_json(args.output, results)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
