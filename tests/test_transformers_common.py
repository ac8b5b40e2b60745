"""transformers' common model and config tests, run on SoundStorm as a transformers contributor would run them."""

import unittest
from unittest.mock import patch

import pytest
import torch
from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

from soundstorm_hf import SoundStormConfig, SoundStormForConditionalGeneration, SoundStormModel

from transformers_common import load  # tests/ is on sys.path (pytest prepends it)

try:
    ModelTesterMixin, ConfigTester = load()
except Exception as error:  # no package index reachable: nothing to run the suite from
    pytest.skip(f"transformers' common tests could not be fetched from its sdist: {error}", allow_module_level=True)


class SoundStormModelTester:
    def __init__(self, parent, batch_size=2, seq_length=8, num_levels=3, codebook_size=16, semantic_vocab_size=12,
                 hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37):
        self.parent = parent
        self.batch_size = batch_size
        self.seq_length = seq_length  # acoustic frames
        self.num_levels = num_levels
        self.codebook_size = codebook_size
        self.semantic_vocab_size = semantic_vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.is_training = True

    def get_config(self) -> SoundStormConfig:
        return SoundStormConfig(
            num_levels=self.num_levels, codebook_size=self.codebook_size, semantic_vocab_size=self.semantic_vocab_size,
            hidden_size=self.hidden_size, num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads, intermediate_size=self.intermediate_size,
            hidden_dropout=0.0, max_frames=64,
        )

    def prepare_config_and_inputs_for_common(self):
        config = self.get_config()
        attention_mask = torch.ones(self.batch_size, self.seq_length, dtype=torch.long)
        attention_mask[0, -3:] = 0  # one row shorter than the other
        inputs = {
            "semantic_ids": torch.randint(0, self.semantic_vocab_size, (self.batch_size, config.num_semantic_frames(self.seq_length))),
            "acoustic_ids": torch.randint(0, self.codebook_size + 1, (self.batch_size, self.num_levels, self.seq_length)),
            "attention_mask": attention_mask,
        }
        return config, inputs


class SoundStormModelTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (SoundStormModel, SoundStormForConditionalGeneration)
    # SoundStorm owns its MaskGIT decoder: transformers' `generate` tests (autoregressive) do not apply.
    all_generative_model_classes = ()
    # The vocabularies are the codec's codebooks and the semantic k-means clusters, fixed by the tokenizers.
    test_resize_embeddings = False
    # Checked by `test_torch_export` below; the sdist lacks transformers' export mixin.
    test_torch_exportable = False
    # The decoder's second input: the common tests pass it along with `semantic_ids` (the main input).
    additional_model_inputs = ["acoustic_ids"]

    def setUp(self):
        self.model_tester = SoundStormModelTester(self)
        self.config_tester = ConfigTester(
            self, config_class=SoundStormConfig, has_text_modality=False, hidden_size=32, num_attention_heads=4
        )
        # The suite tells base models (no loss) from head models by transformers' own table of base models, which
        # a model living outside the library is not in: enter it there for the duration of each test.
        patcher = patch.dict(MODEL_MAPPING_NAMES, {SoundStormConfig.model_type: SoundStormModel.__name__})
        patcher.start()
        self.addCleanup(patcher.stop)

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels=return_labels)
        if return_labels and model_class is SoundStormForConditionalGeneration:
            labels = torch.full_like(inputs_dict["acoustic_ids"], -100)
            generator = torch.Generator().manual_seed(0)  # the same labels on every call: outputs are compared
            labels[:, 0] = torch.randint(0, self.model_tester.codebook_size, labels[:, 0].shape, generator=generator)
            inputs_dict["labels"] = labels.to(inputs_dict["acoustic_ids"].device)
        return inputs_dict

    def test_config(self):
        self.config_tester.run_common_tests()

    def test_torch_export(self):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config).eval()
            exported = torch.export.export(model, args=(), kwargs=inputs, strict=False)
            with torch.no_grad():
                expected = model(**inputs)[0]
                actual = exported.module()(**inputs)[0]
            torch.testing.assert_close(actual, expected)
