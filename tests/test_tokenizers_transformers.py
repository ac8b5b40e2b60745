"""The transformers-backed tokenizers, on tiny random models saved with transformers' own `save_pretrained`.

The tiny models keep the real ones' strides (so frame rates and receptive fields in frames are the real ones) and
shrink every width. Random initialization leaves quantizers degenerate (all-zero EnCodec / Mimi codebooks, DAC codes
that all point one way, zero biases), so the builders set codebooks and biases that give codes which vary.
"""

import json

import pytest
import torch
from sklearn.cluster import KMeans
from transformers import (
    DacConfig,
    DacModel,
    EncodecConfig,
    EncodecModel,
    HubertConfig,
    HubertModel,
    MimiConfig,
    MimiModel,
    SeamlessM4TFeatureExtractor,
    Wav2Vec2BertConfig,
    Wav2Vec2BertModel,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Model,
)

from soundstorm_hf.tokenizers import (
    DacCodec,
    EncodecCodec,
    MimiCodec,
    MimiSemanticTokenizer,
    SSLKMeansTokenizer,
    load_acoustic_codec,
    load_semantic_tokenizer,
)
from soundstorm_hf.tokenizers.base import CODEC_CONFIG_NAME, SEMANTIC_CONFIG_NAME

pytestmark = pytest.mark.usefixtures("single_threaded_sklearn")

TEXTS = ("seven green apples fell from the tree", "the quick brown fox jumps over the lazy dog")


def randomize_biases(model):
    """Trained codecs have non-zero biases, which is what lets padding reach a non-causal codec's last frames."""
    for part in (model.encoder, model.decoder):
        for module in part.modules():
            if isinstance(module, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)) and module.bias is not None:
                torch.nn.init.normal_(module.bias, std=0.1)
    return model


def well_separated_codebook(frames: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """8 k-means centroids of `frames (n, dim)` plus far-away random rows: codes that vary, without the near-ties
    between codes that would let float rounding (batch of one vs of two) flip them."""
    table = torch.randn(codebook_size, frames.shape[1]) * 10
    table[:8] = torch.from_numpy(KMeans(8, n_init=1, random_state=0).fit(frames.numpy()).cluster_centers_)
    return table


def tiny_dac():
    config = DacConfig(
        encoder_hidden_size=4, downsampling_ratios=[2, 4, 5, 8], decoder_hidden_size=32, n_codebooks=4,
        codebook_size=64, codebook_dim=4,
    )  # fmt: skip
    model = randomize_biases(DacModel(config))
    with torch.no_grad():  # level by level on the residual of projected encoder outputs (DAC compares directions)
        residual = model.encoder(torch.randn(1, 1, 48000) * 0.1)
        for quantizer in model.quantizer.quantizers:
            directions = torch.nn.functional.normalize(quantizer.in_proj(residual)[0].T, dim=-1)
            quantizer.codebook.weight.copy_(well_separated_codebook(directions, config.codebook_size))
            residual = residual - quantizer(residual)[0]
    return model


def tiny_encodec():
    config = EncodecConfig(
        target_bandwidths=[1.5, 3.0], hidden_size=16, num_filters=4, num_lstm_layers=1, codebook_size=64,
    )  # fmt: skip
    model = EncodecModel(config)
    with torch.no_grad():  # level by level on the residual of encoder outputs
        residual = model.encoder(torch.randn(1, 1, 24000) * 0.1)
        for layer in model.quantizer.layers:
            layer.codebook.embed.copy_(well_separated_codebook(residual[0].T, config.codebook_size))
            residual = residual - layer.decode(layer.encode(residual))
    return model


def tiny_mimi():
    config = MimiConfig(
        hidden_size=16, num_filters=4, num_quantizers=4, codebook_size=64, codebook_dim=8,
        vector_quantization_hidden_dimension=8, num_hidden_layers=1, intermediate_size=32, num_attention_heads=2,
        num_key_value_heads=2, head_dim=8, upsample_groups=16, sliding_window=16,
    )  # fmt: skip
    model = MimiModel(config)
    for name, buffer in model.named_buffers():
        if name.endswith("embed_sum"):
            buffer.normal_()
    return model


def tiny_hubert():
    config = HubertConfig(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=37, conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
    )  # fmt: skip
    return HubertModel(config), Wav2Vec2FeatureExtractor(do_normalize=False, return_attention_mask=False)


def tiny_w2v_bert():
    config = Wav2Vec2BertConfig(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=37,
        feature_projection_input_dim=160, conv_depthwise_kernel_size=3, output_hidden_size=32,
    )  # fmt: skip
    return Wav2Vec2BertModel(config), SeamlessM4TFeatureExtractor()


def tiny_wav2vec2_without_feature_extractor():
    config = Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, feat_extract_norm="layer",
        do_stable_layer_norm=True,
    )  # fmt: skip
    return Wav2Vec2Model(config), None


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """`checkpoint(name)`: folder of a tiny model saved by transformers (built once per module)."""
    builders = {
        "dac": tiny_dac, "encodec": tiny_encodec, "mimi": tiny_mimi, "hubert": tiny_hubert,
        "w2v_bert": tiny_w2v_bert, "wav2vec2": tiny_wav2vec2_without_feature_extractor,
    }  # fmt: skip
    folders = {}

    def get(name):
        if name not in folders:
            torch.manual_seed(0)
            built = builders[name]()
            model, feature_extractor = built if isinstance(built, tuple) else (built, None)
            folders[name] = tmp_path_factory.mktemp(name)
            model.save_pretrained(folders[name])
            if feature_extractor is not None:
                feature_extractor.save_pretrained(folders[name])
        return folders[name]

    return get


def padded_batch(waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded batch whose padding is loud noise: it must not reach any output."""
    batch = torch.randn(len(waves), max(len(wave) for wave in waves))
    for index, wave in enumerate(waves):
        batch[index, : len(wave)] = wave
    return batch, torch.tensor([len(wave) for wave in waves])


@pytest.fixture(scope="module")
def speech24k(espeak_speech):
    return [torch.from_numpy(espeak_speech(text, voice, 24000)) for text, voice in zip(TEXTS, ("en+f3", "en+m3"))]


@pytest.fixture(scope="module")
def speech16k(espeak_speech):
    return [torch.from_numpy(espeak_speech(text, voice, 16000)) for text, voice in zip(TEXTS, ("en+f3", "en+m3"))]


# (checkpoint, class, sampling rate, frame rate, levels, codebook size, valid frames that may differ at the end)
CODECS = [
    ("dac", DacCodec, 16000, 50.0, 4, 64, 8),  # non-causal: right receptive field of 8 frames
    ("encodec", EncodecCodec, 24000, 75.0, 3, 64, 0),  # causal
    ("mimi", MimiCodec, 24000, 12.5, 3, 64, 0),  # causal
]


@pytest.mark.parametrize("name, cls, rate, frame_rate, levels, codebook_size, end_frames", CODECS)
def test_codec_adapter(checkpoint, espeak_speech, name, cls, rate, frame_rate, levels, codebook_size, end_frames):
    codec = load_acoustic_codec(checkpoint(name), num_levels=levels)
    assert type(codec) is cls
    assert (codec.sampling_rate, codec.frame_rate, codec.num_levels, codec.codebook_size) == (
        rate, frame_rate, levels, codebook_size,
    )  # fmt: skip
    waves = [torch.from_numpy(espeak_speech(text, voice, rate)) for text, voice in zip(TEXTS, ("en+f3", "en+m3"))]

    # Frame rule: exact for lengths on and off the frame grid.
    for num_samples in (codec.hop_length, 3 * codec.hop_length + 1, len(waves[0])):
        codes = codec.encode(waves[0][:num_samples])
        assert codes.shape == (1, levels, codec.num_frames(num_samples))
        assert codec.num_frames(num_samples) == -(-num_samples // codec.hop_length)
    assert codes.dtype == torch.long and 0 <= codes.min() and codes.max() < codebook_size
    assert all(len(codes[0, level].unique()) > 3 for level in range(levels))  # the tiny model's codes do vary

    # Padding gives an item its own codes on the valid frames, except for the last frames of non-causal codecs,
    # which see the extra zeros; what the padding held never matters.
    batch, lengths = padded_batch(waves)
    batch_codes = codec.encode(batch, lengths)
    assert batch_codes.shape == (2, levels, codec.num_frames(batch.shape[-1]))
    for index, wave in enumerate(waves):
        alone = codec.encode(wave)[0]
        keep = alone.shape[-1] - (end_frames if len(wave) < batch.shape[-1] else 0)
        assert torch.equal(batch_codes[index, :, :keep], alone[:, :keep])
    batch[0, lengths[0] :] = 0.0
    assert torch.equal(codec.encode(batch, lengths), batch_codes)

    # Decoding: frames * hop samples, silent past each item's length; a coarse prefix of levels decodes too.
    frame_lengths = torch.tensor([codec.num_frames(n) for n in lengths.tolist()])
    audio = codec.decode(batch_codes, frame_lengths)
    assert audio.shape == (2, batch_codes.shape[-1] * codec.hop_length) and audio.dtype == torch.float32
    assert not audio[0, frame_lengths[0] * codec.hop_length :].any()
    assert codec.decode(batch_codes[:, :1]).shape == audio.shape


@pytest.mark.parametrize("name", ["dac", "encodec", "mimi"])
def test_codec_save_load(checkpoint, espeak_speech, tmp_path, name):
    codec = load_acoustic_codec(checkpoint(name), num_levels=2)
    wave = torch.from_numpy(espeak_speech(TEXTS[0], "en+f3", codec.sampling_rate))

    codec.save_pretrained(tmp_path)  # from a local folder: the weights are saved with it
    saved = json.loads((tmp_path / CODEC_CONFIG_NAME).read_text())
    assert saved == {"type": name, "num_levels": 2} and (tmp_path / "model.safetensors").exists()
    loaded = load_acoustic_codec(tmp_path)
    assert type(loaded) is type(codec) and loaded.num_levels == 2
    assert torch.equal(loaded.encode(wave), codec.encode(wave))
    torch.testing.assert_close(loaded.decode(codec.encode(wave)), codec.decode(codec.encode(wave)))
    assert load_acoustic_codec(tmp_path, num_levels=1).num_levels == 1  # keyword arguments override the json


def test_hub_model_is_saved_as_a_reference(checkpoint, tmp_path, monkeypatch):
    codec = DacCodec.from_pretrained(checkpoint("dac"), num_levels=3)
    codec.model_source, codec.model_revision = "descript/dac_16khz", "abc123"
    codec.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / CODEC_CONFIG_NAME).read_text())
    assert saved == {"type": "dac", "num_levels": 3, "model": "descript/dac_16khz", "model_revision": "abc123"}
    assert sorted(path.name for path in tmp_path.iterdir()) == [CODEC_CONFIG_NAME]

    calls = []

    def load_model(cls, path, **hub_kwargs):
        calls.append((path, hub_kwargs))
        return codec.model

    monkeypatch.setattr(DacCodec, "load_model", classmethod(load_model))
    loaded = load_acoustic_codec(tmp_path, token="hf_x")
    assert calls == [("descript/dac_16khz", {"token": "hf_x", "revision": "abc123"})]
    assert loaded.model_source == "descript/dac_16khz" and loaded.num_levels == 3


def test_encodec_bandwidths_and_levels(checkpoint, speech24k):
    model = EncodecModel.from_pretrained(checkpoint("encodec"))
    # 64 codes = 6 bits per level at 75 Hz = 450 bps: 1.5 kbps is 3 levels, 3 kbps is 6.
    assert EncodecCodec(model, bandwidth=1.5).num_levels == 3
    assert EncodecCodec(model, bandwidth=3.0).num_levels == 6
    wave = speech24k[1]
    full, prefix = EncodecCodec(model, num_levels=5).encode(wave), EncodecCodec(model, num_levels=2).encode(wave)
    assert torch.equal(full[:, :2], prefix)  # residual levels: coarse codes do not depend on finer ones
    with pytest.raises(ValueError, match="bandwidth must be one of"):
        EncodecCodec(model)  # the 6 kbps default is not among this tiny model's bandwidths
    with pytest.raises(ValueError, match="not both"):
        EncodecCodec(model, num_levels=2, bandwidth=1.5)
    with pytest.raises(ValueError, match="num_levels must be in"):
        EncodecCodec(model, num_levels=7)
    chunked = EncodecModel(EncodecConfig(**{**model.config.to_dict(), "chunk_length_s": 1.0, "overlap": 0.01}))
    with pytest.raises(ValueError, match="single frame grid"):
        EncodecCodec(chunked, num_levels=2)


def test_mimi_splits_semantic_and_acoustic_codebooks(checkpoint, speech24k):
    codec = load_acoustic_codec(checkpoint("mimi"))
    semantic = load_semantic_tokenizer(checkpoint("mimi"))
    assert type(semantic) is MimiSemanticTokenizer
    assert (codec.num_levels, semantic.vocab_size, semantic.frame_rate) == (3, 64, 12.5)
    wave = speech24k[0]
    padded = torch.nn.functional.pad(wave, (0, semantic.num_frames(len(wave)) * 1920 - len(wave)))
    reference = codec.model.encode(padded[None, None]).audio_codes  # (1, 4, frames)
    semantic_ids, acoustic = semantic.encode(wave), codec.encode(wave)
    assert torch.equal(semantic_ids, reference[:, 0]) and torch.equal(acoustic, reference[:, 1:])

    # With the semantic codes, decoding is Mimi's own; without, it still gives audio of the right length.
    decoded = codec.decode(acoustic, semantic_codes=semantic_ids)
    expected = codec.model.decode(reference).audio_values[:, 0, : decoded.shape[-1]]
    torch.testing.assert_close(decoded, expected)
    assert codec.decode(acoustic).shape == decoded.shape
    with pytest.raises(ValueError, match="semantic_codes must be"):
        codec.decode(acoustic, semantic_codes=semantic_ids[:, :-1])
    with pytest.raises(ValueError, match="out of range"):
        codec.decode(acoustic, semantic_codes=semantic_ids + 64)

    # Padding: causal, so exact.
    batch, lengths = padded_batch(speech24k)
    tokens = semantic.encode(batch, lengths)
    for index, item in enumerate(speech24k):
        alone = semantic.encode(item)[0]
        assert torch.equal(tokens[index, : len(alone)], alone)


def test_mimi_codec_and_semantic_share_one_folder(checkpoint, speech24k, tmp_path):
    codec = MimiCodec.from_pretrained(checkpoint("mimi"), num_levels=2)
    semantic = MimiSemanticTokenizer(codec.model, model_source=codec.model_source)  # one model for both
    codec.save_pretrained(tmp_path)
    semantic.save_pretrained(tmp_path)
    assert {path.name for path in tmp_path.iterdir()} >= {CODEC_CONFIG_NAME, SEMANTIC_CONFIG_NAME, "model.safetensors"}
    wave = speech24k[1]
    assert torch.equal(load_acoustic_codec(tmp_path).encode(wave), codec.encode(wave))
    assert torch.equal(load_semantic_tokenizer(tmp_path).encode(wave), semantic.encode(wave))


SSL_MODELS = [
    # (checkpoint, layer, pooling, frame rate, frame rule at 16 kHz)
    ("hubert", 2, 2, 25.0, lambda n: -(-((n - 400) // 320 + 1) // 2)),
    ("w2v_bert", 2, 1, 50.0, lambda n: ((n - 400) // 160 + 1) // 2),
    ("wav2vec2", 1, 1, 50.0, lambda n: (n - 400) // 320 + 1),
]


@pytest.mark.parametrize("name, layer, pooling, frame_rate, frames", SSL_MODELS)
def test_ssl_kmeans_tokenizer(
    checkpoint, speech16k, espeak_speech, tmp_path, name, layer, pooling, frame_rate, frames
):
    tokenizer = SSLKMeansTokenizer.from_pretrained(checkpoint(name), layer=layer, pooling=pooling)
    assert len(tokenizer.model.encoder.layers) == layer  # the unused blocks are gone
    assert (tokenizer.sampling_rate, tokenizer.frame_rate) == (16000, frame_rate)
    with pytest.raises(ValueError, match="call fit"):
        tokenizer.encode(speech16k[0])
    corpus = [espeak_speech(text, voice) for text in TEXTS for voice in ("en+m3", "en+f3", "en-us+m1")]
    tokenizer.fit(corpus, num_clusters=16, max_frames=2000)
    assert tokenizer.vocab_size == 16

    for num_samples in (721, 1040, 16000, len(speech16k[1])):
        tokens = tokenizer.encode(speech16k[1][:num_samples])
        assert tokens.shape == (1, tokenizer.num_frames(num_samples)) == (1, frames(num_samples))
    assert len(tokens.unique()) > 3
    with pytest.raises(ValueError, match="too short"):
        tokenizer.encode(speech16k[1][:399])

    batch, lengths = padded_batch(speech16k)
    tokens = tokenizer.encode(batch, lengths)
    assert tokens.shape == (2, tokenizer.num_frames(batch.shape[-1]))
    for index, item in enumerate(speech16k):
        alone = tokenizer.encode(item)[0]
        assert torch.equal(tokens[index, : len(alone)], alone)

    tokenizer.save_pretrained(tmp_path)  # the truncated model, its feature extractor and the centroids
    saved = json.loads((tmp_path / SEMANTIC_CONFIG_NAME).read_text())
    assert saved == {"type": "ssl_kmeans", "layer": layer, "pooling": pooling, "sampling_rate": 16000}
    assert json.loads((tmp_path / "config.json").read_text())["num_hidden_layers"] == layer
    loaded = load_semantic_tokenizer(tmp_path)
    assert type(loaded) is SSLKMeansTokenizer and loaded.vocab_size == 16
    assert torch.equal(loaded.encode(batch, lengths), tokens)


def test_ssl_checkpoint_alone_is_not_a_tokenizer(checkpoint):
    with pytest.raises(ValueError, match="'hubert' checkpoint"):
        load_semantic_tokenizer(checkpoint("hubert"))
    with pytest.raises(ValueError, match="layer must be in"):
        SSLKMeansTokenizer.from_pretrained(checkpoint("hubert"), layer=4)
    with pytest.raises(ValueError, match="'hubert' checkpoint"):
        load_acoustic_codec(checkpoint("hubert"))


# (codec checkpoint, semantic tokenizer): every adapter through the pipeline, save and reload included.
PIPELINES = [("dac", "hubert"), ("encodec", "hubert"), ("mimi", "mimi")]


@pytest.mark.parametrize("codec_name, semantic_name", PIPELINES)
def test_round_trip_through_the_pipeline(checkpoint, espeak_speech, tmp_path, codec_name, semantic_name):
    from soundstorm_hf import SoundStormConfig, SoundStormForConditionalGeneration
    from soundstorm_hf.pipeline import SoundStormPipeline

    codec = load_acoustic_codec(checkpoint(codec_name), **({"num_levels": 2} if codec_name != "dac" else {}))
    if semantic_name == "mimi":
        semantic = MimiSemanticTokenizer(codec.model, model_source=codec.model_source)
    else:
        semantic = SSLKMeansTokenizer.from_pretrained(checkpoint(semantic_name), layer=2, pooling=2)
        semantic.fit([espeak_speech(text) for text in TEXTS], num_clusters=8, max_frames=1000)
    config = SoundStormConfig.from_preset(
        "tiny", num_levels=codec.num_levels, codebook_size=codec.codebook_size, semantic_vocab_size=semantic.vocab_size,
        acoustic_frame_rate=codec.frame_rate, semantic_frame_rate=semantic.frame_rate, max_frames=64,
    )  # fmt: skip
    torch.manual_seed(0)
    SoundStormPipeline(SoundStormForConditionalGeneration(config), codec, semantic).save_pretrained(tmp_path)
    pipe = SoundStormPipeline.from_pretrained(tmp_path)
    assert (type(pipe.codec), type(pipe.semantic_tokenizer)) == (type(codec), type(semantic))

    content, prompt = espeak_speech(TEXTS[1], "en+m3", 22050), espeak_speech(TEXTS[0], "en+f3", 22050)
    output = pipe((content, 22050), voice_prompt=(prompt, 22050), seed=0)
    assert output["sampling_rate"] == codec.sampling_rate
    expected = len(content) * codec.sampling_rate / 22050
    tolerance = 2 * codec.hop_length * config.semantic_upsampling  # tokenizers round lengths to their own frames
    assert abs(len(output["audio"]) - expected) <= tolerance and torch.isfinite(torch.as_tensor(output["audio"])).all()
