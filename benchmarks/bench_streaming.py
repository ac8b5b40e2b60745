"""Streaming with the bundled default model: time to first audio, and total time against the non-streaming call.

A 30 s conversion (the bundled real speech, repeated) in the bundled real voice prompt: `pipe.stream(...)` timed to
its first block and to its end, against `pipe(...)`, alternating in one process, `--repeats` times each (medians).
Time to first audio counts everything after the model is loaded: reading and tokenizing the content and the prompt,
the first (short) window, and decoding it. The machine's load average is recorded: on a shared machine the times
are slower than on a quiet one, and the ratio is the robust number. Peak memory against input length is
`bench_pipeline_memory.py --modes stream`.

    python benchmarks/bench_streaming.py                  # writes benchmarks/results/streaming.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, machine_info, write_json  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "src" / "soundstorm_hf" / "examples"
CONTENT, PROMPT = EXAMPLES / "real_content_librivox.wav", EXAMPLES / "real_voice_asterisk_it.wav"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="content length")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--first-window-seconds", type=float, default=None, help="default: the pipeline's")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "streaming.json")
    args = parser.parse_args()

    import soundfile
    import torch

    from soundstorm_hf.pipeline import FIRST_WINDOW_SECONDS, SoundStormPipeline

    torch.set_num_threads(2)
    machine = machine_info()  # with the load average at the start
    first_window = args.first_window_seconds or FIRST_WINDOW_SECONDS
    pipe = SoundStormPipeline.from_pretrained("default")
    speech, rate = soundfile.read(CONTENT, dtype="float32")
    content = {"array": np.tile(speech, int(np.ceil(args.seconds * rate / len(speech))))[: round(args.seconds * rate)],
               "sampling_rate": rate}
    kwargs = {"voice_prompt": str(PROMPT), "seed": 0}
    pipe(content, **kwargs)  # warm-up: first calls allocate and load lazily
    first_audio, streamed, whole = [], [], []
    for _ in range(args.repeats):
        started = time.perf_counter()
        stream = pipe.stream(content, first_window_seconds=first_window, **kwargs)
        samples = len(next(stream))
        first_audio.append(time.perf_counter() - started)
        samples += sum(len(block) for block in stream)
        streamed.append(time.perf_counter() - started)
        started = time.perf_counter()
        whole_samples = len(pipe(content, **kwargs)["audio"])
        whole.append(time.perf_counter() - started)
        assert samples == whole_samples, (samples, whole_samples)
    results = {
        "machine": machine,
        "load_average_at_end": os.getloadavg(),
        "setup": f"bundled default model, {args.seconds:g} s of {CONTENT.name} (repeated) in the voice of "
        f"{PROMPT.name}, its generation config, first window {first_window:g} s, {args.repeats} alternating repeats",
        "time_to_first_audio_s": round(statistics.median(first_audio), 3),
        "streamed_total_s": round(statistics.median(streamed), 3),
        "whole_call_s": round(statistics.median(whole), 3),
        "streamed_over_whole": round(statistics.median(s / w for s, w in zip(streamed, whole)), 3),
        "runs": {"first_audio_s": first_audio, "streamed_s": streamed, "whole_s": whole},
    }
    write_json(args.output, results)
    print({key: value for key, value in results.items() if key not in ("machine", "runs")})


if __name__ == "__main__":
    main()
