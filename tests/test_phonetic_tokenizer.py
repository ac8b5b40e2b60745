"""CtcPhoneticTokenizer keeps the SemanticTokenizer contract: frame count, padding, save/load through the loader.

The recognizer here is small and untrained (the contract does not depend on training); what a trained one
measures is in benchmarks/results/semantic_tokens.json.
"""

import pytest
import torch

from soundstorm_hf.tokenizers import CtcPhoneticTokenizer, PhoneRecognizer, load_semantic_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    torch.manual_seed(0)
    recognizer = PhoneRecognizer(num_phones=10, hidden_size=32, num_layers=2, num_heads=2, num_mels=40)
    waveforms = [torch.randn(16000 + 1234 * i) * 0.1 for i in range(4)]
    return CtcPhoneticTokenizer(recognizer, layer=1, phones=[str(i) for i in range(10)]).fit(waveforms, 8)


def test_frames_and_vocabulary(tokenizer):
    assert tokenizer.frame_rate == 25 and tokenizer.vocab_size == 8
    for samples in (640, 641, 16000, 16001):
        tokens = tokenizer.encode(torch.randn(samples) * 0.1)
        assert tokens.shape == (1, tokenizer.num_frames(samples)) and tokens.dtype == torch.long
        assert 0 <= tokens.min() and tokens.max() < 8


def test_padded_batch_gives_each_item_its_tokens_alone(tokenizer):
    first, second = torch.randn(9000) * 0.1, torch.randn(15000) * 0.1
    batch = torch.zeros(2, 15000)
    batch[0, :9000], batch[1] = first, second
    batch[0, 9000:] = 5.0  # garbage in the padding must not matter
    tokens = tokenizer.encode(batch, torch.tensor([9000, 15000]))
    assert torch.equal(tokens[0, : tokenizer.num_frames(9000)], tokenizer.encode(first)[0])
    assert torch.equal(tokens[1], tokenizer.encode(second)[0])


def test_save_and_load_through_the_auto_loader(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = load_semantic_tokenizer(tmp_path)
    assert isinstance(loaded, CtcPhoneticTokenizer) and loaded.layer == 1 and loaded.phones == tokenizer.phones
    waveform = torch.randn(12345) * 0.1
    assert torch.equal(loaded.encode(waveform), tokenizer.encode(waveform))
    with pytest.raises(ValueError, match="Unexpected"):
        CtcPhoneticTokenizer.from_pretrained(tmp_path, layer=0)
