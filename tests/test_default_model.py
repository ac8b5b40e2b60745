"""The bundled default model: loads by name with no network, converts a bundled example (skipped if not built)."""

from pathlib import Path

import numpy as np
import pytest
import soundfile

import soundstorm_hf

PACKAGE = Path(soundstorm_hf.__file__).parent
DEFAULT = PACKAGE / "default"
EXAMPLES = PACKAGE / "examples"

pytestmark = pytest.mark.skipif(
    not (DEFAULT / "config.json").is_file(), reason="the bundled default model is not built (scripts/build_default_model.sh)"
)


def real_examples() -> list[Path]:
    return sorted(path for path in EXAMPLES.glob("*.wav") if not path.name.startswith(("content_", "voice_")))


def test_default_model_is_small_and_complete():
    size = sum(path.stat().st_size for path in DEFAULT.rglob("*") if path.is_file())
    assert size < 40 * 2**20, f"bundled default model is {size / 2**20:.1f} MiB"
    for name in ("model.safetensors", "generation_config.json", "README.md", "codec", "semantic_tokenizer"):
        assert (DEFAULT / name).exists(), name


def test_shipped_weights_carry_the_model_files_parameter_names():
    """Published weights freeze parameter names: the bundled checkpoint's keys are exactly the model's (the
    Conformer vocabulary: `self_attn.{q,k,v,out}_proj`, `ffn1`, `conv_module`, `ffn2`, one head per level)."""
    from safetensors import safe_open

    from soundstorm_hf import SoundStormConfig, SoundStormForConditionalGeneration

    with safe_open(DEFAULT / "model.safetensors", "pt") as weights:
        shipped = set(weights.keys())
    config = SoundStormConfig.from_pretrained(DEFAULT)
    assert shipped == set(SoundStormForConditionalGeneration(config).state_dict())
    layer = {name.removeprefix("model.layers.0.") for name in shipped if name.startswith("model.layers.0.")}
    modules = [f"self_attn.{projection}_proj" for projection in "qkv"] + ["self_attn.out_proj", "ffn1.intermediate_dense"]
    modules += ["conv_module.depthwise_conv", "ffn2.output_dense"]
    assert {f"{module}.weight" for module in modules} <= layer, sorted(layer)
    assert {f"heads.{level}.weight" for level in range(config.num_levels)} <= shipped


def test_default_model_converts_a_bundled_example_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from soundstorm_hf.pipeline import SoundStormPipeline

    examples = real_examples()
    assert len(examples) >= 2, "bundled real-speech examples missing"
    pipe = SoundStormPipeline.from_pretrained("default")
    assert pipe.model.dtype.is_floating_point and pipe.model.config.num_levels == pipe.codec.num_levels
    content, rate = soundfile.read(examples[0], dtype="float32")
    content = content[: int(2.5 * rate)]  # keep the test fast
    prompt, prompt_rate = soundfile.read(examples[1], dtype="float32")
    output = pipe(content, rate, voice_prompt=prompt[: 3 * prompt_rate], prompt_sampling_rate=prompt_rate, seed=0,
                  steps_per_level=[4] + [1] * (pipe.model.config.num_levels - 1))
    audio = output["audio"]
    expected = len(content) * output["sampling_rate"] / rate
    assert abs(len(audio) - expected) <= pipe.codec.hop_length
    assert np.isfinite(audio).all() and np.sqrt(np.mean(audio**2)) > 1e-3  # not silent


def test_the_defaults_a_user_gets_sample_level_one(monkeypatch):
    """The bundled generation config as shipped (chosen by the settings sweep) samples: one seed twice gives the same
    audio, two seeds give different audio. Its confidence noise (`choice_temperature` 2.0) is drawn only when
    sampling: `do_sample=False` gives one output whatever the seed."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from soundstorm_hf.pipeline import SoundStormPipeline

    pipe = SoundStormPipeline.from_pretrained("default")
    config = pipe.model.generation_config
    assert config.do_sample and config.temperature > 0 and config.steps_per_level[0] > 1
    content, rate = soundfile.read(real_examples()[0], dtype="float32")
    content = content[: int(1.5 * rate)]
    first, again, other = (pipe(content, rate, seed=seed)["audio"] for seed in (0, 0, 1))
    np.testing.assert_array_equal(first, again)
    assert first.shape == other.shape and not np.array_equal(first, other)
    assert config.choice_temperature > 0
    greedy, greedy_other = (pipe(content[: rate // 2], rate, seed=seed, do_sample=False)["audio"] for seed in (0, 1))
    np.testing.assert_array_equal(greedy, greedy_other)


def test_cli_resolves_default_to_the_bundled_folder(monkeypatch):
    from soundstorm_hf.cli import resolve_model

    monkeypatch.delenv("SOUNDSTORM_MODEL", raising=False)
    assert Path(resolve_model(None)) == DEFAULT
