"""A burst of requests to the demo: one worker, two workers, or one batched `generate` call?

Serves the demo on 127.0.0.1 with the bundled default model and sends `--burst` conversions at once through
`gradio_client` (the bundled example pair), once per `--concurrency` setting, rounds interleaved so that a change of
machine load hits every setting alike. For batching, which the demo would first have to implement, the part it could
speed up is timed alone: `generate` for the burst's semantic ids as one batch against one request after another.

    python benchmarks/bench_demo_burst.py                   # -> results/demo_burst.json
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, machine_info, median, write_json  # noqa: E402

from soundstorm_hf.app import Limits, example_files, launch_demo  # noqa: E402
from soundstorm_hf.pipeline import SoundStormPipeline  # noqa: E402

SETTINGS = [16, 1.0, 1.0, 0]  # the demo's defaults: level-1 iterations, temperature, guidance scale, seed


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def burst(pipe, concurrency: int, size: int, content: str, voice: str) -> dict:
    """Seconds from sending `size` requests at once to each one's answer, with `concurrency` workers."""
    from gradio_client import Client, handle_file

    demo = launch_demo(
        pipe, Limits(concurrency=concurrency), server_name="127.0.0.1", server_port=free_port(),
        prevent_thread_lock=True, quiet=True,
    )  # fmt: skip
    try:
        client = Client(demo.local_url, verbose=False)
        client.predict(handle_file(content), handle_file(voice), *SETTINGS, api_name="/convert")  # warm-up

        def request(_):
            client.predict(handle_file(content), handle_file(voice), *SETTINGS, api_name="/convert")
            return time.perf_counter() - started

        started = time.perf_counter()
        with ThreadPoolExecutor(size) as pool:
            latencies = sorted(pool.map(request, range(size)))
    finally:
        demo.close()
    return {"makespan_s": latencies[-1], "mean_latency_s": sum(latencies) / size, "latencies_s": latencies}


def batched_generation(pipe, size: int, content: str) -> dict:
    """`generate` for `size` copies of the content's semantic ids: one call with a batch of `size`, against `size`
    calls of one (the model's decoding alone, without tokenizers or codec)."""
    semantic_ids = pipe.semantic_tokenizer.encode(
        torch.from_numpy(pipe_ready_waveform(content, pipe.semantic_tokenizer.sampling_rate))
    )  # (1, frames)
    steps = [SETTINGS[0]] + [1] * (pipe.model.config.num_levels - 1)
    generate = lambda ids: pipe.model.generate(ids, steps_per_level=steps, seed=0)  # noqa: E731
    generate(semantic_ids)  # warm-up
    result = {"semantic_frames": semantic_ids.shape[-1]}
    for name, run in (("one_by_one", lambda: [generate(semantic_ids) for _ in range(size)]),
                      ("batched", lambda: generate(semantic_ids.expand(size, -1)))):  # fmt: skip
        wall, cpu = time.perf_counter(), time.process_time()  # CPU time: less swayed by other processes' load
        run()
        result[f"{name}_s"], result[f"{name}_cpu_s"] = time.perf_counter() - wall, time.process_time() - cpu
    return result


def pipe_ready_waveform(path: str, sampling_rate: int):
    from soundstorm_hf.audio import load_audio, prepare_waveform

    return prepare_waveform(*load_audio(path), sampling_rate).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--burst", type=int, default=6, help="Requests sent at once.")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2], help="Workers (concurrency_limit).")
    parser.add_argument("--rounds", type=int, default=2, help="Bursts per setting, interleaved.")
    parser.add_argument("--model", default="default")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "demo_burst.json")
    args = parser.parse_args()

    pipe = SoundStormPipeline.from_pretrained(args.model)
    examples = example_files()
    content, voice = examples["real_content_librivox"], examples["real_voice_librivox"]
    runs = {concurrency: [] for concurrency in args.concurrency}
    for round_number in range(args.rounds):
        for concurrency in args.concurrency:
            runs[concurrency].append(burst(pipe, concurrency, args.burst, content, voice))
            print(f"round {round_number}, {concurrency} worker(s): {runs[concurrency][-1]['makespan_s']:.1f} s", flush=True)
    batching = batched_generation(pipe, args.burst, content)
    settings = {
        str(concurrency): {
            "median_makespan_s": median([run["makespan_s"] for run in bursts]),
            "median_mean_latency_s": median([run["mean_latency_s"] for run in bursts]),
            "bursts": bursts,
        }
        for concurrency, bursts in runs.items()
    }
    base = settings[str(args.concurrency[0])]["median_makespan_s"]
    for result in settings.values():
        result["makespan_over_first"] = result["median_makespan_s"] / base
    payload = {
        "machine": machine_info(),
        "burst": args.burst,
        "content_seconds": pipe_ready_waveform(content, 16000).shape[0] / 16000,
        "concurrency": settings,
        "generate_batched_over_one_by_one": batching["batched_s"] / batching["one_by_one_s"],
        "generate": batching,
    }
    print(write_json(args.out, payload))
    for concurrency, result in settings.items():
        print(f"{concurrency} worker(s): burst of {args.burst} served in {result['median_makespan_s']:.1f} s "
              f"(x{result['makespan_over_first']:.2f}), mean latency {result['median_mean_latency_s']:.1f} s")
    print(f"generate, batch of {args.burst} vs one by one: x{payload['generate_batched_over_one_by_one']:.2f}")


if __name__ == "__main__":
    main()
