"""GPU checks: bf16 and SDPA kernels on CUDA (skipped on machines without one)."""

import pytest
import torch

from soundstorm_hf import SoundStormConfig, SoundStormDataCollator, SoundStormForConditionalGeneration

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_bf16_training_step_and_generation_on_cuda():
    torch.manual_seed(0)
    config = SoundStormConfig.from_preset("tiny")
    model = SoundStormForConditionalGeneration(config).cuda()
    examples = [
        {"semantic_ids": torch.randint(0, 32, (50,)), "acoustic_ids": torch.randint(0, 32, (4, 100))} for _ in range(4)
    ]
    batch = {key: value.cuda() for key, value in SoundStormDataCollator(config, seed=0)(examples).items()}
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(**batch).loss
    loss.backward()
    assert torch.isfinite(loss)
    model = model.to(torch.bfloat16).eval()
    codes = model.generate(batch["semantic_ids"], prompt_ids=torch.randint(0, 32, (4, 4, 10), device="cuda"))
    assert codes.shape == (4, 4, 100) and (codes < 32).all()
