"""Smoke test of the benchmark scripts on the tiny preset: they run, count passes and write their files.

No timing is asserted: the numbers depend on the machine.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_script(name, *args, cwd=None):
    subprocess.run([sys.executable, str(BENCHMARKS / name), *args], check=True, cwd=cwd, timeout=300,
                   capture_output=True, text=True)


def test_generation_benchmark_runs_on_tiny(tmp_path):
    out = tmp_path / "generation.json"
    run_script("bench_generation.py", "--preset", "tiny", "--durations", "0.5", "1", "--batch-sizes", "1", "2",
               "--ar-durations", "0.5", "--ar-batch-sizes", "1", "--repeats", "1", "--threads", "1",
               "--out", str(out))
    result = json.loads(out.read_text())
    assert result["machine"]["torch_threads"] == 1
    assert len(result["cells"]) == 4
    first = result["cells"][0]
    assert first["soundstorm"]["forward_passes"] == 16 + 3  # tiny: 4 levels, 16 iterations on the first
    assert first["autoregressive"]["forward_passes"] == 4 * 25  # one per token, KV cache on
    assert first["ar_over_soundstorm"] > 0
    assert "autoregressive" not in result["cells"][-1]


def test_training_and_optimization_benchmarks_and_report_run_on_tiny(tmp_path):
    run_script("bench_training.py", "--preset", "tiny", "--cells", "0.5:2", "--steps", "1", "--threads", "1",
               "--out", str(tmp_path / "training.json"))
    training = json.loads((tmp_path / "training.json").read_text())
    assert training["cells"][0]["soundstorm"]["frames_per_s"] > 0
    assert training["cells"][0]["autoregressive"]["frames_per_s"] > 0
    run_script("bench_decoder_optimizations.py", "--preset", "tiny", "--cells", "0.5:1", "--repeats", "1",
               "--baseline-rev", "HEAD", "--threads", "1", "--out", str(tmp_path / "decoder_optimizations.json"))
    assert json.loads((tmp_path / "decoder_optimizations.json").read_text())["cells"][0]["identical_output"]
    run_script("bench_decoding_floor.py", "--preset", "tiny", "--durations", "0.5", "--repeats", "1",
               "--matmul-size", "256", "--threads", "1", "--out", str(tmp_path / "decoding_floor.json"))
    floor = json.loads((tmp_path / "decoding_floor.json").read_text())["cells"][0]
    assert floor["matrix_flops"] > 0 and floor["attention_s"] > 0 and 0 < floor["floor_s"]
    run_script("make_report.py", "--results", str(tmp_path))
    report = (tmp_path / "RESULTS.md").read_text()
    assert "Training throughput" in report and "before and after" in report and "floor of a pass" in report


def test_sampling_benchmark_times_the_three_draws(tmp_path):
    out = tmp_path / "sampling_cost.json"
    run_script("bench_sampling.py", "--seconds", "0.5", "--repeats", "1", "--threads", "1", "--output", str(out))
    result = json.loads(out.read_text())
    assert set(result["median_seconds"]) == {"greedy", "gumbel_max", "multinomial"}
    assert set(result["sampling_cost_share"]) == {"gumbel_max", "multinomial"}


def test_soundstorm_pytorch_benchmark_records_why_when_unavailable(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "sspt.json"
    run_script("bench_soundstorm_pytorch.py", "--preset", "tiny", "--durations", "0.5", "--repeats", "1",
               "--threads", "1", "--out", str(out))
    result = json.loads(out.read_text())
    # Either soundstorm-pytorch is importable (then both sides were timed) or the reason is recorded.
    assert "skipped" in result or result["cells"][0]["soundstorm_pytorch"]["forward_passes"] == 16 + 3
