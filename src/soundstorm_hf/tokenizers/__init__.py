"""Audio tokenizers: acoustic codecs (waveform <-> RVQ codes) and semantic tokenizers (waveform -> tokens)."""

from .auto import load_acoustic_codec, load_semantic_tokenizer
from .base import AcousticCodec, SemanticTokenizer
from .kmeans import KMeansQuantizer
from .mimi_semantic import MimiSemanticTokenizer
from .offline_codec import OfflineMelCodec
from .offline_semantic import OfflineMfccTokenizer
from .phonetic_semantic import CtcPhoneticTokenizer, PhoneRecognizer
from .ssl_semantic import SSLKMeansTokenizer
from .transformers_codecs import DacCodec, EncodecCodec, MimiCodec
from .world_codec import WorldCodec

__all__ = [
    "AcousticCodec",
    "CtcPhoneticTokenizer",
    "DacCodec",
    "EncodecCodec",
    "KMeansQuantizer",
    "MimiCodec",
    "MimiSemanticTokenizer",
    "OfflineMelCodec",
    "OfflineMfccTokenizer",
    "PhoneRecognizer",
    "SSLKMeansTokenizer",
    "SemanticTokenizer",
    "WorldCodec",
    "load_acoustic_codec",
    "load_semantic_tokenizer",
]
