"""GPU checks: bf16 and SDPA kernels on CUDA (skipped on machines without one)."""

import pytest
import torch

from soundstorm_hf import SoundStormConfig, SoundStormForConditionalGeneration
from soundstorm_hf.collator import SoundStormDataCollator

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


def test_cuda_graph_decoding_pass_matches_eager_and_generates():
    """`model.model.compile(mode="reduce-overhead")` (the README's fast path) replays CUDA graphs: every replay must
    compute the pass for its own inputs (no stale buffers), and `generate` must run on top of it."""
    torch.manual_seed(0)
    config = SoundStormConfig.from_preset("tiny")
    model = SoundStormForConditionalGeneration(config).cuda().eval()
    semantic = torch.randint(0, config.semantic_vocab_size, (2, 60), device="cuda")
    inputs = [torch.randint(0, config.mask_token_id + 1, (2, config.num_levels, 120), device="cuda") for _ in range(4)]
    with torch.inference_mode():
        embeds = model.model.embeddings.embed_semantic(semantic, 120)
        eager = [model.model(acoustic_ids=ids, semantic_embeds=embeds).last_hidden_state.clone() for ids in inputs]
        model.model.compile(mode="reduce-overhead", dynamic=False)
        for _ in range(2):  # the first round records, the second replays
            for ids, reference in zip(inputs, eager):
                out = model.model(acoustic_ids=ids, semantic_embeds=embeds).last_hidden_state
                assert ((out - reference).norm() / reference.norm()).item() < 1e-5
        prompt = torch.randint(0, config.codebook_size, (2, config.num_levels, 20), device="cuda")
        for seed in range(2):
            codes = model.generate(semantic, prompt_ids=prompt, seed=seed)
            assert codes.shape == (2, config.num_levels, 120)
            assert (codes < config.codebook_size).all() and torch.equal(codes[..., :20], prompt)


def test_a_training_step_never_waits_for_the_device():
    """The training forward and backward read nothing back to the host (id and label checks included), so the CPU
    runs ahead of the GPU; CUDA's sync debug mode turns any such read into an error."""
    torch.manual_seed(0)
    config = SoundStormConfig.from_preset("tiny")
    model = SoundStormForConditionalGeneration(config).cuda().train()
    examples = [
        {"semantic_ids": torch.randint(0, 32, (50,)), "acoustic_ids": torch.randint(0, 32, (4, 100))} for _ in range(4)
    ]
    batch = {key: value.cuda() for key, value in SoundStormDataCollator(config, seed=0)(examples).items()}
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(**batch).loss
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss)
