"""The Conformer, its masked-token loss, input checks, and transformers integration."""

import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

from soundstorm_hf import SoundStormConfig, SoundStormForConditionalGeneration, SoundStormModel
from soundstorm_hf.collator import SoundStormDataCollator
from soundstorm_hf.modeling_soundstorm import level_metrics


@pytest.fixture
def config():
    return SoundStormConfig.from_preset("tiny")


@pytest.fixture
def model(config):
    torch.manual_seed(0)
    return SoundStormForConditionalGeneration(config).eval()


def random_batch(config, batch=2, frames=20, seed=0):
    generator = torch.Generator().manual_seed(seed)
    examples = [
        {
            "semantic_ids": torch.randint(0, config.semantic_vocab_size, (config.num_semantic_frames(frames),), generator=generator),
            "acoustic_ids": torch.randint(0, config.codebook_size, (config.num_levels, frames), generator=generator),
        }
        for _ in range(batch)
    ]
    return SoundStormDataCollator(config, seed=seed)(examples)


def test_presets():
    paper = SoundStormConfig.from_preset("paper")
    assert (paper.num_levels, paper.codebook_size, paper.hidden_size, paper.num_hidden_layers) == (12, 1024, 1024, 12)
    assert (paper.num_attention_heads, paper.intermediate_size, paper.conv_kernel_size) == (16, 4096, 5)
    with torch.device("meta"):
        parameters = sum(p.numel() for p in SoundStormForConditionalGeneration(paper).parameters())
    assert 300e6 < parameters < 400e6, parameters  # the paper's ~350M
    with pytest.raises(ValueError, match="preset"):
        SoundStormConfig.from_preset("huge")


def test_logits_have_one_shape_and_the_loss_takes_labelled_tokens_with_their_own_head(model, config):
    """`logits` are `(batch, levels, frames, vocab)` with or without labels (as `MaskedLMOutput` users expect); the
    loss is the mean cross-entropy of the labelled tokens, each scored by its own level's head."""
    batch = random_batch(config, batch=4)
    output = model(**batch)
    without_labels = model(batch["semantic_ids"], batch["acoustic_ids"], batch["attention_mask"])
    assert output.logits.shape == without_labels.logits.shape == (4, config.num_levels, 20, config.codebook_size)
    assert torch.allclose(output.logits, without_labels.logits)
    hidden = model.model(batch["semantic_ids"], batch["acoustic_ids"], batch["attention_mask"]).last_hidden_state
    assert torch.allclose(output.logits[:, 2], model.level_logits(hidden, 2), atol=1e-5)

    labels = batch["labels"]
    losses = [
        torch.nn.functional.cross_entropy(model.heads[q](hidden[b, t]), labels[b, q, t], reduction="sum")
        for b, q, t in (labels != -100).nonzero().tolist()
    ]
    assert torch.allclose(output.loss, torch.stack(losses).sum() / len(losses), atol=1e-5)

    metrics = level_metrics(output.logits, labels)
    labelled = (labels != -100).sum(dim=(0, 2))
    assert torch.equal(metrics["level_num_targets"], labelled)
    present = labelled > 0
    weighted = (metrics["level_loss"][present] * labelled[present]).sum() / labelled.sum()
    assert torch.allclose(weighted, output.loss)
    assert torch.isnan(metrics["level_loss"][~present]).all() and torch.isnan(metrics["level_accuracy"][~present]).all()
    level = int(present.nonzero()[0])
    targets = labels[:, level][labels[:, level] != -100]
    predictions = output.logits[:, level].argmax(dim=-1)[labels[:, level] != -100]
    assert torch.isclose(metrics["level_accuracy"][level], (predictions == targets).float().mean())


def test_padding_does_not_change_the_result(model, config):
    batch = random_batch(config, batch=2)
    short = random_batch(config, batch=1, frames=12, seed=3)
    padded = {key: batch[key].clone() for key in batch}
    padded["acoustic_ids"][1] = config.mask_token_id
    padded["acoustic_ids"][1, :, :12] = short["acoustic_ids"][0]
    padded["semantic_ids"][1] = 7  # padding content must not matter
    padded["semantic_ids"][1, :6] = short["semantic_ids"][0]
    padded["attention_mask"][1] = 0
    padded["attention_mask"][1, :12] = 1
    alone = model.model(short["semantic_ids"], short["acoustic_ids"]).last_hidden_state
    together = model.model(padded["semantic_ids"], padded["acoustic_ids"], padded["attention_mask"]).last_hidden_state
    assert torch.allclose(together[1, :12], alone[0], atol=1e-5)


def test_semantic_tokens_are_aligned_to_frames():
    upsampled = SoundStormForConditionalGeneration(SoundStormConfig.from_preset("tiny")).model.embeddings
    ids = torch.tensor([[3, 5, 7]])
    aligned = upsampled.embed_semantic(ids, 5)  # 25 Hz -> 50 Hz: each token twice, the last frame cut
    table = upsampled.semantic_embeddings.weight
    assert torch.equal(aligned[0], table[[3, 3, 5, 5, 7]])
    downsampled = SoundStormForConditionalGeneration(
        SoundStormConfig.from_preset("tiny", semantic_frame_rate=50.0, acoustic_frame_rate=12.5)
    ).model.embeddings
    summed = downsampled.embed_semantic(torch.arange(8)[None], 2)  # four tokens per frame, summed
    assert torch.allclose(summed[0, 1], downsampled.semantic_embeddings.weight[4:8].sum(dim=0))


def test_training_step_and_gradient_checkpointing_agree(config):
    batch = random_batch(config, batch=3)
    losses, grads = [], []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = SoundStormForConditionalGeneration(config).train()
        if checkpointing:
            # `activation_checkpointing_enable` is the newer transformers name of the same switch.
            getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
        loss = model(**batch).loss
        loss.backward()
        losses.append(loss.detach())
        grads.append(model.model.layers[0].self_attn.q_proj.weight.grad.clone())
    assert torch.allclose(losses[0], losses[1]) and torch.allclose(grads[0], grads[1], atol=1e-6)
    assert grads[0].abs().sum() > 0


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda b: b.update(acoustic_ids=b["acoustic_ids"][0]), "acoustic_ids` must have shape"),
        (lambda b: b.update(acoustic_ids=b["acoustic_ids"][:, :3]), "acoustic_ids` must have shape"),
        (lambda b: b["acoustic_ids"].__setitem__((0, 0, 0), 99), "outside"),
        (lambda b: b["semantic_ids"].__setitem__((0, 0), -5), "outside"),
        (lambda b: b.update(semantic_ids=b["semantic_ids"][:1]), "Batch sizes differ"),
        (lambda b: b.update(semantic_ids=b["semantic_ids"][:, :4]), "need 10 semantic tokens"),
        (lambda b: b.update(acoustic_ids=b["acoustic_ids"][..., :0], labels=None), "empty"),
        (lambda b: b.update(acoustic_ids=b["acoustic_ids"].float()), "integer"),
        (lambda b: b["labels"].__setitem__((0, 0, 0), 40), "labels"),
        (lambda b: b.update(labels=torch.full_like(b["labels"], -100)), "nothing to learn"),
        (lambda b: b.update(attention_mask=b["attention_mask"][:, :5]), "attention_mask"),
    ],
)
def test_bad_inputs_raise_clear_errors(model, config, change, message):
    batch = random_batch(config)
    change(batch)
    with pytest.raises(ValueError, match=message):
        model(**batch)


def test_too_long_and_bad_configs(model, config):
    frames = config.max_frames + 2
    with pytest.raises(ValueError, match="max_frames"):
        model(torch.zeros(1, frames // 2, dtype=torch.long), torch.zeros(1, 4, frames, dtype=torch.long))
    with pytest.raises(ValueError, match="divide"):
        SoundStormConfig(semantic_frame_rate=30.0)
    with pytest.raises(ValueError, match="divisible"):
        SoundStormConfig(hidden_size=100, num_attention_heads=16)


def test_save_and_load_round_trip(model, config, tmp_path):
    model.generation_config.temperature = 0.7
    model.generation_config.steps_per_level = [8, 2, 1, 1]
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and not list(tmp_path.glob("*.bin"))
    assert json.loads((tmp_path / "generation_config.json").read_text())["steps_per_level"] == [8, 2, 1, 1]
    loaded = SoundStormForConditionalGeneration.from_pretrained(tmp_path)
    assert loaded.generation_config.temperature == 0.7 and loaded.generation_config.steps_per_level == [8, 2, 1, 1]
    batch = random_batch(config)
    assert torch.equal(model(**batch).loss, loaded(**batch).loss)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    assert type(AutoModel.from_pretrained(tmp_path)) is SoundStormModel  # the base model, as in transformers
    auto = AutoModelForMaskedLM.from_pretrained(tmp_path)
    assert isinstance(auto, SoundStormForConditionalGeneration)
    assert auto.generation_config.steps_per_level == [8, 2, 1, 1]
    assert isinstance(AutoConfig.from_pretrained(tmp_path), SoundStormConfig)
    half = SoundStormForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16


def test_saved_folder_loads_with_remote_code_without_the_package(model, tmp_path):
    """Every Auto class the README names loads a saved folder through its own copy of the code, in a process where
    the package cannot be imported."""
    model.save_pretrained(tmp_path)
    assert {"modeling_soundstorm.py", "configuration_soundstorm.py", "generation_soundstorm.py"} <= {
        path.name for path in tmp_path.glob("*.py")
    }
    expected = model.generate(torch.arange(6)[None], seed=0)
    script = f"""
import sys
sys.modules["soundstorm_hf"] = None  # the package must not be importable
import torch
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM
folder = {str(tmp_path)!r}
config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
base = AutoModel.from_pretrained(folder, trust_remote_code=True)
model = AutoModelForMaskedLM.from_pretrained(folder, trust_remote_code=True)
names = [type(config).__name__, type(base).__name__, type(model).__name__]
assert names == ["SoundStormConfig", "SoundStormModel", "SoundStormForConditionalGeneration"], names
for loaded in (config, base, model):
    assert "soundstorm_hf" not in type(loaded).__module__, type(loaded).__module__
assert model.can_generate() and type(model.generation_config).__name__ == "SoundStormGenerationConfig"
print(model.generate(torch.arange(6)[None], seed=0).flatten().tolist())
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": ""}, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == expected.flatten().tolist()


def test_can_generate_does_not_depend_on_class_names(config):
    """transformers infers `can_generate()` from a base class whose name holds "GenerationMixin"; renaming the
    decoder's classes must not take `generate` or its `generation_config` away."""
    renamed = {
        cls: (cls.__name__, cls.__qualname__)
        for cls in SoundStormForConditionalGeneration.__mro__
        if cls.__module__.startswith("soundstorm_hf") and "GenerationMixin" in cls.__qualname__
    }
    try:
        for cls in renamed:
            cls.__name__ = cls.__qualname__ = "Decoding"
        assert "GenerationMixin" not in str(SoundStormForConditionalGeneration.__mro__)
        assert SoundStormForConditionalGeneration.can_generate() and not SoundStormModel.can_generate()
        assert SoundStormForConditionalGeneration(config).generation_config.steps_per_level == [16, 1, 1, 1]
    finally:
        for cls, (name, qualname) in renamed.items():
            cls.__name__, cls.__qualname__ = name, qualname


def test_importing_the_package_loads_neither_torch_nor_transformers():
    script = """
import sys
import soundstorm_hf
assert not {"torch", "transformers"} & set(sys.modules), "imported eagerly"
assert "SoundStormPipeline" in dir(soundstorm_hf) and "SoundStormDataCollator" not in soundstorm_hf.__all__
from soundstorm_hf import SoundStormConfig
from transformers import AutoConfig
assert AutoConfig.for_model("soundstorm").__class__ is SoundStormConfig  # the Auto classes know it once in use
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_loading_names_a_missing_config_and_refuses_an_invalid_generation_config(model, tmp_path):
    model.save_pretrained(tmp_path)
    (tmp_path / "generation_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="Invalid generation_config.json"):
        SoundStormForConditionalGeneration.from_pretrained(tmp_path)
    (tmp_path / "generation_config.json").write_text(json.dumps({"steps_per_level": [16, 1]}))  # 2 levels, not 4
    with pytest.raises(ValueError, match="steps_per_level"):
        SoundStormForConditionalGeneration.from_pretrained(tmp_path)
    (tmp_path / "generation_config.json").unlink()  # a folder without one gets the defaults for its config
    assert SoundStormForConditionalGeneration.from_pretrained(tmp_path).generation_config.steps_per_level == [16, 1, 1, 1]
    (tmp_path / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json missing"):
        SoundStormForConditionalGeneration.from_pretrained(tmp_path)


def test_the_loss_traces_as_one_graph(model, config):
    """The loss takes labelled tokens through `ignore_index`, not by selecting them: no shape depends on the labels'
    values, so a training forward compiles as one graph (a host read or a data-dependent shape would break it).
    `aot_eager` skips inductor's code generation, which would take most of a minute."""
    batch = random_batch(config, batch=2)
    eager = model(**batch).loss
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True, dynamic=False)
    assert torch.allclose(compiled(**batch).loss, eager, atol=1e-5)
