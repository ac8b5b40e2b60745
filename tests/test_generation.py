"""Decoding invariants of the level-by-level MaskGIT decoder (Borsos et al., 2023, §3.3)."""

import math
import warnings

import pytest
import torch

from soundstorm_hf import SoundStormConfig, SoundStormForConditionalGeneration, SoundStormGenerationConfig


@pytest.fixture
def model():
    torch.manual_seed(0)
    return SoundStormForConditionalGeneration(SoundStormConfig.from_preset("tiny")).eval()


def semantic(batch, frames, seed=0):
    return torch.randint(0, 32, (batch, frames // 2), generator=torch.Generator().manual_seed(seed))


class PassRecorder:
    """Records the acoustic input and batch size of every forward pass, and which heads run."""

    def __init__(self, model):
        self.inputs, self.heads = [], []
        self.hooks = [
            model.model.register_forward_pre_hook(
                lambda module, args, kwargs: self.inputs.append(kwargs["acoustic_ids"].clone()), with_kwargs=True
            )
        ] + [
            head.register_forward_hook(lambda module, args, out, level=level: self.heads.append(level))
            for level, head in enumerate(model.heads)
        ]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for hook in self.hooks:
            hook.remove()


@pytest.mark.parametrize("frames", [6, 40, 200])
def test_forward_passes_are_the_sum_of_iterations_whatever_the_length(model, frames):
    with PassRecorder(model) as recorder:
        codes = model.generate(semantic(2, frames))
    assert codes.shape == (2, 4, frames)
    assert len(recorder.inputs) == 16 + 1 + 1 + 1
    # Only the current level's head runs, once per pass, coarse to fine.
    assert recorder.heads == [0] * 16 + [1, 2, 3]
    assert ((codes >= 0) & (codes < 32)).all()


def test_custom_schedule_sets_the_pass_count(model):
    with PassRecorder(model) as recorder:
        model.generate(semantic(1, 10), steps_per_level=[4, 3, 2, 1])
    assert recorder.heads == [0] * 4 + [1] * 3 + [2] * 2 + [3]


def test_prompt_is_kept_and_rows_have_their_own_prompt_and_length(model):
    prompt = torch.randint(0, 32, (3, 4, 8), generator=torch.Generator().manual_seed(1))
    prompt_lengths = torch.tensor([8, 3, 0])
    lengths = torch.tensor([30, 24, 12])
    attention_mask = (torch.arange(30) < lengths[:, None]).long()
    output = model.generate(
        semantic(3, 30), prompt_ids=prompt, prompt_lengths=prompt_lengths, attention_mask=attention_mask, return_trace=True
    )
    codes, trace = output.sequences, output.trace
    for row in range(3):
        p, n = int(prompt_lengths[row]), int(lengths[row])
        assert torch.equal(codes[row, :, :p], prompt[row, :, :p])
        assert (trace[row, :, :p] == -1).all() and (trace[row, :, p:n] >= 0).all()
        assert (codes[row, :, n:] == 32).all() and (trace[row, :, n:] == -1).all()
        assert (codes[row, :, p:n] < 32).all()


def test_a_row_decodes_the_same_alone_and_in_a_padded_batch(model):
    prompt = torch.randint(0, 32, (2, 4, 6), generator=torch.Generator().manual_seed(2))
    attention_mask = (torch.arange(24) < torch.tensor([[24], [16]])).long()
    batched = model.generate(
        semantic(2, 24), prompt_ids=prompt, attention_mask=attention_mask, do_sample=False, choice_temperature=0.0
    )
    alone = model.generate(
        semantic(2, 24)[1:, :8], prompt_ids=prompt[1:], do_sample=False, choice_temperature=0.0
    )
    assert torch.equal(batched[1, :, :16], alone[0])


def test_levels_above_the_current_one_are_masked_on_every_pass(model):
    prompt = torch.randint(0, 32, (2, 4, 5))
    with PassRecorder(model) as recorder:
        model.generate(semantic(2, 20), prompt_ids=prompt, prompt_lengths=torch.tensor([5, 2]))
    levels = [0] * 16 + [1, 2, 3]
    for acoustic_ids, level in zip(recorder.inputs, levels):
        for row, p in enumerate([5, 2]):
            assert (acoustic_ids[row, level + 1 :, p:] == 32).all(), "finer levels stay MASK"
            assert (acoustic_ids[row, :level, p:] != 32).all(), "coarser levels are complete"
            assert torch.equal(acoustic_ids[row, :, :p], prompt[row, :, :p])


def test_ranking_stays_inside_the_current_level(model):
    # Make every finer level's head extremely confident and the first level's head uninformative: a decoder
    # that ranked confidences across levels would fix finer tokens first and collapse the first level's schedule.
    with torch.no_grad():
        model.heads[0].weight.zero_()
        model.heads[0].bias.zero_()
        for head in model.heads[1:]:
            head.bias[0] = 1e4
    frames = 48
    trace = model.generate(semantic(1, frames), return_trace=True, choice_temperature=0.0).trace[0]
    fixed_per_pass = torch.bincount(trace[0], minlength=16)
    expected, remaining = [], frames
    for step in range(16):
        keep = max(min(math.floor(frames * math.cos(math.pi / 2 * (step + 1) / 16)), remaining - 1), 0)
        expected.append(remaining - keep)  # the cosine schedule, fixing at least one token per pass
        remaining = keep
    assert fixed_per_pass.tolist() == expected
    for level in (1, 2, 3):
        assert (trace[level] == 15 + level).all()


def test_seed_makes_sampling_repeatable(model):
    first = model.generate(semantic(2, 20), seed=3, temperature=1.5)
    again = model.generate(semantic(2, 20), generator=torch.Generator().manual_seed(3), temperature=1.5)
    other = model.generate(semantic(2, 20), seed=4, temperature=1.5)
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_top_k_one_equals_greedy(model):
    greedy = model.generate(semantic(1, 20), do_sample=False, choice_temperature=0.0)
    top1 = model.generate(semantic(1, 20), top_k=1, temperature=2.0, choice_temperature=0.0, seed=0)
    assert torch.equal(greedy, top1)


def test_classifier_free_guidance_runs_in_one_batched_forward(model):
    prompt = torch.randint(0, 32, (2, 4, 6))
    with PassRecorder(model) as recorder:
        guided = model.generate(semantic(2, 20), prompt_ids=prompt, guidance_scale=3.0, do_sample=False)
    assert len(recorder.inputs) == 19 and all(ids.shape[0] == 4 for ids in recorder.inputs)
    plain = model.generate(semantic(2, 20), prompt_ids=prompt, do_sample=False)
    assert torch.equal(guided[:, :, :6], prompt) and not torch.equal(guided, plain)
    with pytest.raises(ValueError, match="condition to drop"):
        model.generate(semantic(2, 20), guidance_scale=3.0)
    model.generate(semantic(2, 20), guidance_scale=3.0, guidance_drops_semantic=True)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(prompt_ids=torch.zeros(2, 4, 30, dtype=torch.long)), "longer than its sequence"),
        (dict(prompt_ids=torch.zeros(1, 4, 3, dtype=torch.long)), "prompt_ids` must have shape"),
        (dict(prompt_ids=torch.full((2, 4, 3), 32)), "codebook_size"),
        (dict(prompt_lengths=torch.tensor([1, 1])), "without `prompt_ids`"),
        (dict(steps_per_level=[16, 1]), "steps_per_level"),
        (dict(mask_schedule="exp"), "mask_schedule"),
        (dict(attention_mask=torch.tensor([[1, 0, 1] + [1] * 17] * 2)), "right padding"),
        (dict(num_frames=0), "empty"),
        (dict(num_frames=4000), "max_frames"),
    ],
)
def test_bad_generation_inputs(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        model.generate(semantic(2, 20) if kwargs.get("num_frames") is None else torch.zeros(2, max(kwargs["num_frames"] // 2, 1), dtype=torch.long), **kwargs)


def test_unknown_generation_argument_and_bad_semantic_ids(model):
    with pytest.raises(TypeError, match="temprature"):
        model.generate(semantic(1, 10), temprature=0.5)
    with pytest.raises(ValueError, match="semantic_ids"):
        model.generate(torch.zeros(10, dtype=torch.long))
    with pytest.raises(ValueError, match="outside"):
        model.generate(torch.full((1, 5), 99))


def test_generation_config_round_trip(tmp_path):
    config = SoundStormGenerationConfig(steps_per_level=[8, 1], temperature=0.8, choice_temperature=2.0, top_p=0.9)
    config.save_pretrained(tmp_path)
    loaded = SoundStormGenerationConfig.from_pretrained(tmp_path)
    assert (loaded.steps_per_level, loaded.temperature, loaded.choice_temperature, loaded.top_p) == ([8, 1], 0.8, 2.0, 0.9)
    loaded.validate(num_levels=2)
    assert loaded.iterations_per_level(2) == [8, 1]


def test_long_sequences_are_generated_window_by_window():
    torch.manual_seed(0)
    model = SoundStormForConditionalGeneration(SoundStormConfig.from_preset("tiny", max_frames=40)).eval()
    calls = []
    original = model.generate

    def record(semantic_ids, prompt_ids=None, num_frames=None, **kwargs):
        codes = original(semantic_ids, prompt_ids=prompt_ids, num_frames=num_frames, **kwargs)
        calls.append((num_frames, prompt_ids, codes))
        return codes

    model.generate = record
    prompt = torch.randint(0, 32, (4, 30))
    codes = model.generate_long(
        semantic(1, 200)[0], prompt_ids=prompt, prompt_semantic_ids=semantic(1, 30, seed=5)[0], context_frames=10, seed=0,
        keep_prompt=False,  # the prompt as a prefix of every window: tests/test_streaming.py
    )
    assert codes.shape == (4, 200) and (codes < 32).all()
    assert all(frames <= 40 for frames, _, _ in calls) and len(calls) == 7  # 30 new frames per window
    assert torch.equal(calls[0][1][0], prompt[:, -10:]), "the first window continues the voice prompt"
    for (_, _, previous), (_, prompt_ids, _) in zip(calls, calls[1:]):
        assert torch.equal(prompt_ids[0], previous[0, :, -10:]), "each window continues the one before"
    with pytest.raises(ValueError, match="aligned"):
        model.generate_long(semantic(1, 20)[0], prompt_ids=prompt, prompt_semantic_ids=semantic(1, 20)[0])


def test_long_generation_shows_progress_in_frames_when_asked(capsys):
    model = SoundStormForConditionalGeneration(SoundStormConfig.from_preset("tiny", max_frames=40)).eval()
    quiet = model.generate_long(semantic(1, 100)[0], context_frames=10, seed=0, steps_per_level=[2, 1, 1, 1])
    assert capsys.readouterr().err == ""
    shown = model.generate_long(
        semantic(1, 100)[0], context_frames=10, seed=0, steps_per_level=[2, 1, 1, 1], show_progress=True
    )
    assert torch.equal(quiet, shown)
    bar = capsys.readouterr().err
    assert "generating" in bar and "/100 " in bar and "frame/s" in bar, bar  # the bar counts all 100 frames


def test_compiled_decoding_pass_matches_eager(model):
    """The README's fast path compiles `model.model` (on a GPU with inductor and CUDA graphs; tests/test_gpu.py).
    Here dynamo must trace a decoding pass as one graph (a break would split the CUDA graph) that computes the same
    hidden states; `aot_eager` skips inductor's C++ code generation, which would take most of a minute."""
    semantic_ids = semantic(2, 40)
    inputs = [torch.randint(0, 33, (2, 4, 40), generator=torch.Generator().manual_seed(seed)) for seed in range(3)]
    padded = torch.ones(2, 40, dtype=torch.long)
    padded[1, 25:] = 0  # rows of their own length: the mask must not break the graph either
    with torch.inference_mode():
        embeds = model.model.embeddings.embed_semantic(semantic_ids, 40)

        def passes():
            return [model.model(acoustic_ids=ids, attention_mask=mask, semantic_embeds=embeds).last_hidden_state
                    for ids in inputs for mask in (None, padded)]

        eager = passes()
        model.model.compile(backend="aot_eager", fullgraph=True, dynamic=False)
        for out, reference in zip(passes(), eager):
            assert ((out - reference).norm() / reference.norm()).item() < 1e-5
    prompt = torch.randint(0, 32, (2, 4, 10))
    codes = model.generate(semantic_ids, prompt_ids=prompt, attention_mask=padded, seed=0)
    assert codes.shape == (2, 4, 40) and torch.equal(codes[..., :10], prompt)
    assert ((codes[0] >= 0) & (codes[0] < 32)).all() and ((codes[1, :, :25] >= 0) & (codes[1, :, :25] < 32)).all()


def test_the_default_config_samples_level_one(model, monkeypatch):
    """What a user gets without passing anything: level 1 sampled (not argmax), seeded draws repeatable."""
    defaults = SoundStormGenerationConfig()
    assert (defaults.do_sample, defaults.temperature, defaults.choice_temperature, defaults.guidance_scale) == (
        True, 1.0, 1.0, 1.0
    )
    assert model.generation_config.steps_per_level == [16, 1, 1, 1]
    import soundstorm_hf.decoding_soundstorm as decoding

    draws = []
    original = decoding.sample_tokens
    monkeypatch.setattr(decoding, "sample_tokens", lambda scores, generator: draws.append(scores.shape) or original(scores, generator))
    first = model.generate(semantic(2, 40), seed=0)
    assert len(draws) == 15  # level 1's iterations but its greedy last one; later levels are greedy
    assert torch.equal(first, model.generate(semantic(2, 40), seed=0))
    assert not torch.equal(first[:, 0], model.generate(semantic(2, 40), seed=1)[:, 0])


def test_gumbel_max_draws_follow_the_softmax():
    from scipy.stats import chisquare

    from soundstorm_hf.decoding_soundstorm import sample_tokens

    scores = torch.tensor([2.0, 1.0, 0.0, -1.0, float("-inf")])  # the last one is filtered out (top-k / top-p)
    draws = sample_tokens(scores.expand(200_000, -1), torch.Generator().manual_seed(0))
    counts = torch.bincount(draws, minlength=5)
    assert counts[4] == 0
    expected = scores[:4].double().softmax(dim=0) * draws.numel()
    assert chisquare(counts[:4].numpy(), expected.numpy()).pvalue > 1e-3


def test_top_k_and_top_p_go_through_transformers_warpers(model, monkeypatch):
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    called = []

    def spy(cls):
        call = cls.__call__

        def recorded(self, input_ids, scores):
            called.append(cls.__name__)
            return call(self, input_ids, scores)

        return recorded

    for cls in (TopKLogitsWarper, TopPLogitsWarper):
        monkeypatch.setattr(cls, "__call__", spy(cls))
    model.generate(semantic(1, 20), top_k=5, top_p=0.9, seed=0)
    assert called.count("TopKLogitsWarper") == 15 and called.count("TopPLogitsWarper") == 15


def test_guidance_scale_zero_is_the_unconditional_model(model, monkeypatch):
    prompt = torch.randint(0, 32, (1, 4, 6), generator=torch.Generator().manual_seed(1))
    ids = semantic(1, 20)
    passes = []
    original = SoundStormForConditionalGeneration._level_logits_of_pass
    monkeypatch.setattr(
        SoundStormForConditionalGeneration, "_level_logits_of_pass",
        lambda self, state, level: passes.append(original(self, state, level)) or passes[-1],
    )
    model.generate(ids, prompt_ids=prompt, guidance_scale=0.0, seed=0)
    codes = torch.full((1, 4, 20), 32)
    codes[..., :6] = prompt
    hidden_prompt = (torch.arange(20) >= 6).long()[None]  # the unconditional copy does not see the prompt
    with torch.no_grad():
        unconditional = model.heads[0](model.model(ids, codes, hidden_prompt).last_hidden_state)
    assert torch.allclose(passes[0], unconditional, atol=1e-5)


def test_long_generation_draws_fresh_noise_per_window_from_one_generator():
    torch.manual_seed(0)
    model = SoundStormForConditionalGeneration(SoundStormConfig.from_preset("tiny", max_frames=40)).eval()
    states = []
    original = model.generate

    def record(*args, generator=None, **kwargs):
        states.append(generator.get_state().clone())
        return original(*args, generator=generator, **kwargs)

    model.generate = record
    ids = torch.zeros(100, dtype=torch.long)  # the same content everywhere: only the noise tells windows apart
    first = model.generate_long(ids, context_frames=10, seed=0)
    assert len(states) == 7
    assert all(not torch.equal(a, b) for i, a in enumerate(states) for b in states[i + 1 :])
    assert torch.equal(first, model.generate_long(ids, context_frames=10, seed=0))
    assert not torch.equal(first, model.generate_long(ids, context_frames=10, seed=1))


def test_a_wide_right_padded_prompt_with_fitting_lengths(model):
    prompt = torch.randint(0, 32, (2, 4, 30))  # wider than the 20 output frames; each row's prompt fits
    codes = model.generate(semantic(2, 20), prompt_ids=prompt, prompt_lengths=torch.tensor([4, 10]), seed=0)
    assert codes.shape == (2, 4, 20)
    assert torch.equal(codes[0, :, :4], prompt[0, :, :4]) and torch.equal(codes[1, :, :10], prompt[1, :, :10])


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_guidance_when_a_prompt_covers_the_whole_row(model, implementation):
    """The unconditional copy of such a row would hide every key; it must stay finite under every attention."""
    model.set_attn_implementation(implementation)
    prompt = torch.randint(0, 32, (2, 4, 20))
    codes = model.generate(semantic(2, 20), prompt_ids=prompt, prompt_lengths=torch.tensor([20, 19]), guidance_scale=3.0, seed=0)
    assert torch.equal(codes[0], prompt[0]) and torch.equal(codes[1, :, :19], prompt[1, :, :19])
    assert ((codes[1, :, 19] >= 0) & (codes[1, :, 19] < 32)).all()


@pytest.mark.parametrize("settings", [dict(do_sample=False), dict(temperature=0.0)])
def test_greedy_decoding_draws_no_noise_at_all(model, monkeypatch, settings):
    """`do_sample=False` and `temperature=0` are deterministic, also with confidence noise configured (the bundled
    model's `choice_temperature` is 2.0): whatever the seed or global RNG, one output and no random draw."""
    import soundstorm_hf.decoding_soundstorm as decoding

    def no_noise(*args, **kwargs):
        raise AssertionError("deterministic decoding drew random noise")

    monkeypatch.setattr(decoding, "gumbel_noise", no_noise)
    model.generation_config.choice_temperature = 2.0
    first = model.generate(semantic(2, 40), seed=0, **settings)
    torch.manual_seed(7)
    assert torch.equal(first, model.generate(semantic(2, 40), seed=1, **settings))
    assert torch.equal(first, model.generate(semantic(2, 40), **settings))


def test_guided_greedy_decoding_follows_u_plus_s_times_c_minus_u(model):
    """The first pass of a guided greedy call, computed by hand: the logits are `u + s (c - u)` of the conditional
    forward and the one with the prompt hidden; it fixes the most confident positions under them, with their argmax."""
    model.config.prompt_dropout = 0.1  # a model trained for guidance: no warning
    prompt = torch.randint(0, 32, (1, 4, 6), generator=torch.Generator().manual_seed(1))
    ids, scale, frames = semantic(1, 30), 3.0, 30
    output = model.generate(
        ids, prompt_ids=prompt, guidance_scale=scale, do_sample=False, steps_per_level=[4, 1, 1, 1], return_trace=True
    )
    codes = torch.full((1, 4, frames), 32)
    codes[..., :6] = prompt
    with torch.no_grad():
        conditional = model.heads[0](model.model(ids, codes).last_hidden_state)[0, 6:]
        hidden_prompt = (torch.arange(frames) >= 6).long()[None]
        unconditional = model.heads[0](model.model(ids, codes, hidden_prompt).last_hidden_state)[0, 6:]
    confidence, tokens = (unconditional + scale * (conditional - unconditional)).log_softmax(dim=-1).max(dim=-1)
    new = frames - 6
    num_first = new - math.floor(new * math.cos(math.pi / 2 / 4))  # the cosine schedule's first of 4 iterations
    fixed_first = output.trace[0, 0, 6:] == 0
    assert sorted(fixed_first.nonzero().flatten().tolist()) == sorted(confidence.topk(num_first).indices.tolist())
    assert torch.equal(output.sequences[0, 0, 6:][fixed_first], tokens[fixed_first])
    assert not torch.equal(tokens, conditional.argmax(dim=-1)), "guidance must change some prediction here"
    plain = model.generate(ids, prompt_ids=prompt, do_sample=False, steps_per_level=[1, 1, 1, 1])
    assert torch.equal(plain[0, 0, 6:], conditional.argmax(dim=-1))


@pytest.mark.parametrize(
    "name, value", [("num_beams", 4), ("repetition_penalty", 1.2), ("max_new_tokens", 10), ("min_p", 0.1)]
)
def test_settings_the_decoder_ignores_are_refused(model, name, value):
    """Autoregressive settings of transformers' GenerationConfig do nothing here: passed to `generate` (hence to the
    pipeline and `generate_long`) they are an error naming them; in a config, a one-line warning (an error on save)."""
    with pytest.raises(ValueError, match=name):
        model.generate(semantic(1, 10), **{name: value})
    with pytest.raises(ValueError, match=name):
        model.generate_long(semantic(1, 10)[0], **{name: value})
    with pytest.raises(ValueError, match=name):  # what a caller checks before expensive work
        model.resolve_generation_config(**{name: value})
    with pytest.warns(UserWarning, match=name) as record:
        config = SoundStormGenerationConfig(**{name: value})
    assert all("\n" not in str(warning.message) for warning in record)
    with pytest.raises(ValueError, match=name):
        config.validate(strict=True)


def test_guidance_warns_once_on_a_model_not_trained_for_it(model):
    prompt = torch.randint(0, 32, (1, 4, 6))
    steps = dict(steps_per_level=[2, 1, 1, 1], seed=0)
    assert not model.config.trained_for_guidance  # prompt_dropout and semantic_dropout are 0, as in the bundled model
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.generate(semantic(1, 20), prompt_ids=prompt, guidance_scale=2.0, **steps)
        model.generate(semantic(1, 20), prompt_ids=prompt, guidance_scale=2.0, guidance_drops_semantic=True, **steps)
        model.generate(semantic(1, 20), prompt_ids=prompt, **steps)  # no guidance: nothing to say
    messages = [str(warning.message) for warning in caught]
    assert len(messages) == 2 and all("\n" not in message for message in messages), messages
    assert "`prompt_dropout`" in messages[0] and "semantic_dropout" not in messages[0]
    assert "`prompt_dropout`" in messages[1] and "`semantic_dropout`" in messages[1]
    model.config.prompt_dropout = 0.2
    assert model.config.trained_for_guidance
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.generate(semantic(1, 20), prompt_ids=prompt, guidance_scale=2.0, **steps)
