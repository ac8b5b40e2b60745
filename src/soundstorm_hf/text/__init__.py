"""Text input for SoundStorm: the text-to-semantic model, the offline front end (rule-based speech -> semantic
tokens) as its fallback, and dialogue."""

from .frontend import ENGINES, TextToSpeech, Turn, available_engine, parse_dialogue, render_text
from .phonemes import phonemize
from .t2s import SemanticOnlyLogitsProcessor, TextToSemantic

__all__ = [
    "ENGINES",
    "SemanticOnlyLogitsProcessor",
    "TextToSemantic",
    "TextToSpeech",
    "Turn",
    "available_engine",
    "parse_dialogue",
    "phonemize",
    "render_text",
]
