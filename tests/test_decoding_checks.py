"""Bad decoding settings and inputs end in an error naming the argument, before any large allocation."""

import time

import pytest
import torch

from soundstorm_hf import SoundStormConfig, SoundStormForConditionalGeneration


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SoundStormForConditionalGeneration(SoundStormConfig.from_preset("tiny")).eval()


def semantic(batch=2, frames=20):
    return torch.randint(0, 32, (batch, frames // 2), generator=torch.Generator().manual_seed(0))


PROMPT = torch.randint(0, 32, (2, 4, 6))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(guidance_scale=float("nan"), prompt_ids=PROMPT), ValueError, "guidance_scale"),
        (dict(guidance_scale=float("inf"), prompt_ids=PROMPT), ValueError, "guidance_scale"),
        (dict(guidance_scale=-1.0, prompt_ids=PROMPT), ValueError, "guidance_scale"),
        (dict(temperature=float("nan")), ValueError, "temperature"),
        (dict(temperature=float("inf")), ValueError, "temperature"),
        (dict(top_p=float("nan")), ValueError, "top_p"),
        (dict(top_p=1.5), ValueError, "top_p"),
        (dict(choice_temperature=float("nan")), ValueError, "choice_temperature"),
        (dict(choice_temperature=-0.5), ValueError, "choice_temperature"),
        (dict(top_k=2.5), TypeError, "top_k"),
        (dict(top_k=True), TypeError, "top_k"),
        (dict(seed=1.5), TypeError, "seed"),
        (dict(num_frames=20.0), TypeError, "num_frames"),
        (dict(prompt_ids=PROMPT.float() + 0.7), ValueError, "prompt_ids"),
        (dict(prompt_ids=PROMPT.to(torch.uint8)), ValueError, "prompt_ids"),
        (dict(attention_mask=torch.ones(2, 30, dtype=torch.long)), ValueError, "attention_mask"),
        (dict(attention_mask=torch.ones(2, 12, dtype=torch.long), num_frames=20), ValueError, "attention_mask"),
    ],
)
def test_bad_settings_name_the_argument(model, kwargs, error, message):
    with pytest.raises(error, match=message):
        model.generate(semantic(), **kwargs)


@pytest.mark.parametrize(
    "ids, message",
    [
        (semantic().to(torch.uint8), "semantic_ids"),
        (semantic().float(), "semantic_ids"),
        (torch.zeros(0, 10, dtype=torch.long), "empty batch"),
    ],
)
def test_bad_semantic_ids(model, ids, message):
    with pytest.raises(ValueError, match=message):
        model.generate(ids)


@pytest.mark.parametrize("num_frames", [10**8, 10**10])
def test_huge_lengths_are_refused_before_allocating(model, num_frames):
    start = time.perf_counter()
    with pytest.raises(ValueError, match="max_frames"):
        model.generate(semantic(1), num_frames=num_frames)
    assert time.perf_counter() - start < 1.0


def test_non_finite_logits_raise_instead_of_silent_codes():
    torch.manual_seed(0)
    model = SoundStormForConditionalGeneration(SoundStormConfig.from_preset("tiny")).eval()
    with torch.no_grad():
        model.heads[0].weight[3, 5] = float("nan")  # a corrupt checkpoint
    with pytest.raises(RuntimeError, match="non-finite logits"):
        model.generate(semantic(), seed=0)


def test_host_reads_per_call_do_not_grow_with_passes(model, monkeypatch):
    """The non-finite flag (and everything else the decoder checks) stays on the device between passes: the number of
    tensor-to-host reads is the same for 5 passes as for 15, so a GPU never waits for the host mid-call."""
    reads = []
    for method in ("__bool__", "__int__", "__float__", "__index__", "item", "tolist"):
        original = getattr(torch.Tensor, method)
        monkeypatch.setattr(torch.Tensor, method, lambda self, *args, _read=original: reads.append(1) or _read(self, *args))

    def reads_of_a_call(steps_per_level):
        reads.clear()
        model.generate(semantic(), prompt_ids=PROMPT, steps_per_level=steps_per_level, guidance_scale=2.0, seed=0)
        return len(reads)

    assert reads_of_a_call([2, 1, 1, 1]) == reads_of_a_call([8, 4, 2, 1]) > 0
