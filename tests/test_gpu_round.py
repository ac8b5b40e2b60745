"""The GPU round script (training/gpu_round.sh) end to end on the CPU: a tiny model, random tokens of its grid and a
60 s budget, as the GPU call runs it with a 570 s one."""

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from soundstorm_hf import SoundStormConfig
from soundstorm_hf.data import TokenDatasetInfo
from soundstorm_hf.pipeline import SoundStormPipeline

from test_text import tiny_pipeline_folder  # noqa: F401  (the shared tiny model folder)

REPO = Path(__file__).resolve().parents[1]
BUDGET = 60
spec = importlib.util.spec_from_file_location("gpu_round", REPO / "training" / "gpu_round.py")
gpu_round = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_round)


@pytest.fixture(scope="module")
def tokens(tiny_pipeline_folder, tmp_path_factory) -> Path:
    """24 rows of 60-150 frames of random ids on the tiny model's token grid, naming its tokenizers."""
    pipe = SoundStormPipeline.from_pretrained(tiny_pipeline_folder)
    config, rng = pipe.model.config, np.random.default_rng(0)
    rows = []
    for frames in rng.integers(60, 150, 24):
        rows.append({
            "acoustic_ids": rng.integers(0, config.codebook_size, (config.num_levels, frames)).tolist(),
            "semantic_ids": rng.integers(0, config.semantic_vocab_size, config.num_semantic_frames(frames)).tolist(),
            "num_frames": int(frames), "duration": float(frames / config.acoustic_frame_rate),
        })
    folder = tmp_path_factory.mktemp("tokens")
    dataset = datasets.Dataset.from_list(rows)
    dataset.save_to_disk(str(folder))
    TokenDatasetInfo.from_tokenizers(pipe.codec, pipe.semantic_tokenizer, str(tiny_pipeline_folder / "codec"),
                                     str(tiny_pipeline_folder / "semantic_tokenizer"), num_rows=len(rows)).save(folder)
    return folder


def test_a_round_trains_within_its_budget_and_returns_small_fp16_weights(tokens, tiny_pipeline_folder, tmp_path):
    out = tmp_path / "out"
    command = ["bash", str(REPO / "training" / "gpu_round.sh"), "--tokens", str(tokens), "--init", str(tiny_pipeline_folder),
               "--budget", str(BUDGET), "--reserve", "12", "--bench-seconds", "20", "--max-frames", "100",
               "--frames-per-batch", "400", "--logging-steps", "2", "--warmup-steps", "2",
               "--bench-preset", "tiny", "--bench-cells", "0.5:2", "--device", "cpu"]
    env = {**os.environ, "OUT": str(out), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=BUDGET + 60)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / "round.json").read_text())
    assert report["total_s"] <= BUDGET, report
    assert report["metrics"]["step"] > 0 and np.isfinite(report["metrics"]["eval/loss"]), report["metrics"]
    # On a loaded machine Python's start-up alone can eat the benchmark's share: then the report says so.
    benchmark = report["benchmark"]
    assert {"baseline", "no_host_sync"} <= set(benchmark["cells"][0]) if "cells" in benchmark else benchmark["left_out"]
    assert "round done" in (out / "round.log").read_text()
    files = sorted(path.name for path in out.iterdir())
    assert len(files) <= 8 and {"config.json", "generation_config.json", "round.json", "round.log"} <= set(files), files
    shards = [path for path in out.glob("*.safetensors")]
    assert shards and all(path.stat().st_size < 16 * 2**20 for path in shards)
    weights = {name: tensor for path in shards for name, tensor in load_file(path).items()}
    assert all(tensor.dtype == torch.float16 for tensor in weights.values())

    # Back on the CPU: a model folder beside the init's, and over the init's own folder (the next round's start).
    for model_folder in (tmp_path / "model", shutil.copytree(tiny_pipeline_folder, tmp_path / "init")):
        gpu_round.main(["assemble", str(out), "--init", str(tiny_pipeline_folder if model_folder.name == "model" else model_folder),
                        "--output", str(model_folder)])
        state = SoundStormPipeline.from_pretrained(model_folder).model.state_dict()  # with the init's tokenizers
        assert weights.keys() <= state.keys()
        assert all(torch.equal(state[name].half(), tensor) for name, tensor in weights.items())
        assert SoundStormConfig.from_pretrained(model_folder).to_dict() == SoundStormConfig.from_pretrained(out).to_dict()
