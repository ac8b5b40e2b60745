"""Shared helpers of the speed benchmarks: machine description, timing, peak-memory sampling, JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import psutil
import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine_info(device: str = "cpu") -> dict:
    """What the numbers were measured on: recorded with every result file."""
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "device": device,
        # The allocator's settings change CPU timings of large tensors (see results/notes.md).
        "allocator_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_") or k == "LD_PRELOAD"},
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(device)
        info.update(gpu=properties.name, gpu_memory_gib=round(properties.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    return info


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


class PeakRSS:
    """Peak resident-set-size increase (MiB) of this process while the block runs, sampled by a thread.

    `tracemalloc` does not see torch's allocations; RSS does (CPU). The sampling period bounds what a
    very short spike can hide; torch's caching allocator is not involved on CPU.
    """

    def __init__(self, period_s: float = 0.002):
        self.period_s = period_s
        self.process = psutil.Process()
        self.peak_mib = 0.0

    def __enter__(self):
        self.baseline = self.process.memory_info().rss
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.period_s)

    def __exit__(self, *exc):
        self.peak = max(self.peak, self.process.memory_info().rss)
        self._stop.set()
        self._thread.join()
        self.peak_mib = (self.peak - self.baseline) / 2**20
        return False


@contextmanager
def peak_memory(device: str):
    """Yields a dict whose `peak_mib` is filled on exit: CUDA max allocated, or the CPU RSS increase."""
    result = {}
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        yield result
        torch.cuda.synchronize(device)
        result["peak_mib"] = (torch.cuda.max_memory_allocated(device) - start) / 2**20
        result["memory_kind"] = "cuda_max_memory_allocated_increase"
    else:
        with PeakRSS() as sampler:
            yield result
        result["peak_mib"] = sampler.peak_mib
        result["memory_kind"] = "cpu_rss_increase"


def timed(fn, device: str) -> tuple[float, object]:
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - start, out


def median(values):
    return statistics.median(values) if values else None


def parse_dtype(name: str) -> torch.dtype:
    return {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
            "fp16": torch.float16, "float16": torch.float16}[name]


def write_json(path: Path, payload: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


def pin_malloc_and_reexec() -> None:
    """Re-executes once with glibc's mmap threshold fixed, so that RSS follows tensor memory (CPU only)."""
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None and sys.platform.startswith("linux"):
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="65536")
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
