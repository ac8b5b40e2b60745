"""The training mask follows the paper's distribution (Borsos et al., 2023, §3.2)."""

import math

import pytest
import torch
from scipy import stats

from soundstorm_hf import SoundStormConfig
from soundstorm_hf.collator import SoundStormDataCollator
from soundstorm_hf.masking import apply_mask, sample_mask


def draws(count, num_levels=4, num_frames=64, seed=0, **kwargs):
    generator = torch.Generator().manual_seed(seed)
    return [sample_mask(num_levels, num_frames, generator=generator, **kwargs) for _ in range(count)]


def test_structure_of_every_draw():
    for draw in draws(500):
        t, q = draw.prompt_length, draw.level
        assert not draw.masked[:, :t].any(), "the prompt is never masked"
        assert draw.masked[q + 1 :, t:].all(), "levels above q are fully masked after the prompt"
        assert not draw.masked[:q].any(), "levels below q stay visible"
        assert draw.targets[q].sum() >= 1, "at least one level-q token is masked"
        assert torch.equal(draw.targets[q], draw.masked[q]) and not draw.targets[torch.arange(4) != q].any()


def test_level_and_prompt_are_uniform():
    sample = draws(4000)
    level_counts = torch.bincount(torch.tensor([d.level for d in sample]), minlength=4)
    assert stats.chisquare(level_counts.numpy()).pvalue > 1e-3
    prompt_bins = torch.bincount(torch.tensor([d.prompt_length // 16 for d in sample]), minlength=4)
    assert stats.chisquare(prompt_bins.numpy()).pvalue > 1e-3
    assert max(d.prompt_length for d in sample) <= 63


def test_mask_ratio_follows_the_cosine_distribution():
    sample = draws(3000, num_frames=400)
    ratios = [d.mask_ratio for d in sample]
    # p = cos(u), u ~ U[0, pi/2]  =>  P(p <= x) = 1 - (2 / pi) * arccos(x)
    assert stats.kstest(ratios, lambda x: 1 - 2 / math.pi * torch.arccos(torch.as_tensor(x)).numpy()).pvalue > 1e-3
    # The realised fraction of masked level-q tokens tracks the drawn ratio.
    long_open = [d for d in sample if 400 - d.prompt_length >= 200]
    realised = torch.tensor([d.targets[d.level, d.prompt_length :].float().mean().item() for d in long_open])
    drawn = torch.tensor([d.mask_ratio for d in long_open])
    assert (realised - drawn).abs().mean() < 0.03
    assert abs(realised.mean().item() - 2 / math.pi) < 0.03


def test_seeded_draws_repeat_and_weights_bias_levels():
    first, second = draws(20, seed=7), draws(20, seed=7)
    assert all(torch.equal(a.masked, b.masked) and a.level == b.level for a, b in zip(first, second))
    weighted = draws(2000, level_weights=torch.tensor([4.0, 2.0, 1.0, 1.0]))
    counts = torch.bincount(torch.tensor([d.level for d in weighted]), minlength=4).float() / 2000
    assert torch.allclose(counts, torch.tensor([0.5, 0.25, 0.125, 0.125]), atol=0.04)


def test_guidance_dropout_rates():
    sample = draws(4000, prompt_dropout=0.3, semantic_dropout=0.1)
    with_prompt = [d for d in sample if d.prompt_length > 0]
    assert abs(sum(d.drop_prompt for d in with_prompt) / len(with_prompt) - 0.3) < 0.03
    assert abs(sum(d.drop_semantic for d in sample) / len(sample) - 0.1) < 0.02
    assert not any(d.drop_prompt for d in sample if d.prompt_length == 0)


def test_apply_mask_builds_inputs_and_labels():
    draw = draws(1)[0]
    codes = torch.randint(0, 32, (4, 64))
    input_ids, labels = apply_mask(codes, draw, mask_token_id=32)
    assert torch.equal(input_ids == 32, draw.masked)
    assert torch.equal(labels != -100, draw.targets)
    assert torch.equal(labels[draw.targets], codes[draw.targets])


def test_empty_sequence_is_rejected():
    with pytest.raises(ValueError, match="empty"):
        sample_mask(4, 0)


@pytest.fixture
def config():
    return SoundStormConfig.from_preset("tiny")


def example(config, frames, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {
        "semantic_ids": torch.randint(0, config.semantic_vocab_size, (config.num_semantic_frames(frames),), generator=generator),
        "acoustic_ids": torch.randint(0, config.codebook_size, (config.num_levels, frames), generator=generator),
    }


def test_collator_masks_each_example_on_its_own(config):
    batch = SoundStormDataCollator(config, seed=0)([example(config, 40)] * 64)
    labelled = batch["labels"] != -100  # (batch, levels, frames)
    levels = labelled.any(dim=2).float().argmax(dim=1)
    assert (labelled.any(dim=2).sum(dim=1) == 1).all(), "one target level per example"
    assert len(levels.unique()) == config.num_levels
    first_target = labelled.any(dim=1).float().argmax(dim=1)
    assert len(first_target.unique()) > 10, "prompt delimiters differ between examples"


def test_collator_pads_and_crops(config):
    collator = SoundStormDataCollator(config, max_frames=30, seed=0)
    batch = collator([example(config, 20), example(config, 12, seed=1), example(config, 50, seed=2)])
    assert batch["acoustic_ids"].shape == (3, 4, 30) and batch["semantic_ids"].shape == (3, 15)
    assert batch["attention_mask"].sum(dim=1).tolist() == [20, 12, 30]
    padding = batch["attention_mask"][1] == 0
    assert (batch["acoustic_ids"][1][:, padding] == config.mask_token_id).all()
    assert (batch["labels"][1][:, padding] == -100).all()
    assert (batch["semantic_ids"][1, 6:] == config.semantic_null_id).all()
    # The crop of the long example keeps codes and semantics aligned (start on a semantic boundary).
    long = example(config, 50, seed=2)
    visible = batch["acoustic_ids"][2] != config.mask_token_id
    windows = [s for s in range(0, 21, 2) if torch.equal(long["acoustic_ids"][:, s : s + 30][visible], batch["acoustic_ids"][2][visible])]
    assert windows and torch.equal(batch["semantic_ids"][2], long["semantic_ids"][windows[0] // 2 : windows[0] // 2 + 15])


def test_collator_hides_dropped_prompts_and_semantics(config):
    config.prompt_dropout, config.semantic_dropout = 0.5, 0.5
    batch = SoundStormDataCollator(config, seed=0)([example(config, 40)] * 64)
    hidden_prompt = batch["attention_mask"].eq(0).any(dim=1)
    assert 10 < int(hidden_prompt.sum()) < 54
    for row in hidden_prompt.nonzero().flatten():
        hidden = batch["attention_mask"][row] == 0
        assert (batch["labels"][row][:, hidden] == -100).all(), "no loss on a hidden prompt"
    nulled = (batch["semantic_ids"] == config.semantic_null_id).all(dim=1)
    assert 10 < int(nulled.sum()) < 54


def test_collator_errors_name_the_problem(config):
    collator = SoundStormDataCollator(config)
    with pytest.raises(KeyError, match="acoustic_ids"):
        collator([{"semantic_ids": [1, 2]}])
    with pytest.raises(ValueError, match="acoustic_ids"):
        collator([{"semantic_ids": [1, 2], "acoustic_ids": [[1, 2, 3, 4]]}])
    with pytest.raises(ValueError, match="frame rates"):
        collator([{"semantic_ids": list(range(20)), "acoustic_ids": torch.zeros(4, 10, dtype=torch.long)}])
    with pytest.raises(ValueError, match="empty"):
        collator([])


def test_random_window_lengths_are_uniform_between_min_and_max_frames(config):
    """The paper trains on random windows of 0 to 30 s: lengths drawn uniformly, on semantic-token boundaries."""
    from scipy.stats import chisquare

    collator = SoundStormDataCollator(config, max_frames=40, min_frames=10, seed=0)
    lengths = torch.tensor([collator._crop(*example(config, 60).values())[1].shape[-1] for _ in range(4000)])
    assert lengths.min() >= 10 and lengths.max() <= 40 and (lengths % 2 == 0).all()
    counts = torch.bincount(lengths // 2 - 5, minlength=16)  # 16 possible lengths: 10, 12, ..., 40
    assert (counts > 0).all() and chisquare(counts.numpy()).pvalue > 1e-3
    # A row shorter than max_frames gets windows up to its own length; its semantics stay aligned to the codes.
    long = example(config, 24, seed=3)
    for _ in range(50):
        semantic_ids, acoustic_ids = collator._crop(long["semantic_ids"], long["acoustic_ids"])
        start = next(s for s in range(0, 25, 2) if torch.equal(long["acoustic_ids"][:, s : s + acoustic_ids.shape[-1]], acoustic_ids))
        assert 10 <= acoustic_ids.shape[-1] <= 24
        assert torch.equal(semantic_ids, long["semantic_ids"][start // 2 : start // 2 + acoustic_ids.shape[-1] // 2])
    with pytest.raises(ValueError, match="min_frames"):
        SoundStormDataCollator(config, max_frames=40, min_frames=50)


def test_the_rows_of_a_batch_share_one_random_window_length(config):
    """Random windows add no padding: one length per batch, drawn anew for each batch, at most its shortest row."""
    config.prompt_dropout = 0.0  # so that attention_mask is 0 on padding only
    collator = SoundStormDataCollator(config, max_frames=40, min_frames=10, seed=0)
    rows = [example(config, frames, seed=frames) for frames in (60, 36, 50)]
    widths = set()
    for _ in range(20):
        batch = collator(rows)
        assert bool(batch["attention_mask"].all()), "no padding"
        widths.add(batch["acoustic_ids"].shape[-1])
    assert len(widths) > 3 and min(widths) >= 10 and max(widths) <= 36
