"""Text input for SoundStorm: the offline front end (rule-based speech -> semantic tokens) and dialogue."""

from .frontend import ENGINES, TextToSpeech, Turn, available_engine, parse_dialogue, render_text

__all__ = ["ENGINES", "TextToSpeech", "Turn", "available_engine", "parse_dialogue", "render_text"]
