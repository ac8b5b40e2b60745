"""A tiny SoundStorm really learns: the loss falls and `generate` reproduces what it was trained on."""

import torch

from soundstorm_hf import SoundStormConfig, SoundStormForConditionalGeneration
from soundstorm_hf.collator import SoundStormDataCollator


def test_tiny_model_memorises_and_regenerates_its_training_set():
    torch.manual_seed(0)
    config = SoundStormConfig.from_preset(
        "tiny", num_levels=3, codebook_size=16, semantic_vocab_size=16, hidden_size=64, num_hidden_layers=2
    )
    generator = torch.Generator().manual_seed(0)
    num_sequences, frames = 4, 24
    semantic_ids = torch.randint(0, 16, (num_sequences, frames // 2), generator=generator)
    acoustic_ids = torch.randint(0, 16, (num_sequences, 3, frames), generator=generator)
    examples = [{"semantic_ids": s, "acoustic_ids": a} for s, a in zip(semantic_ids, acoustic_ids)]

    model = SoundStormForConditionalGeneration(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    collator = SoundStormDataCollator(config, seed=0)
    losses = []
    for _ in range(300):
        loss = model(**collator(examples * 4)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    start, end = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert start > 2.0 and end < 0.3 * start, (start, end)

    model.eval()
    unprompted = model.generate(semantic_ids, do_sample=False)
    level_accuracy = (unprompted == acoustic_ids).float().mean(dim=(0, 2))
    assert level_accuracy[0] > 0.9, level_accuracy
    assert level_accuracy.mean() > 0.8, level_accuracy
    sampled = model.generate(semantic_ids, prompt_ids=acoustic_ids[:, :, :6], seed=0)
    assert (sampled == acoustic_ids).float().mean() > 0.8
