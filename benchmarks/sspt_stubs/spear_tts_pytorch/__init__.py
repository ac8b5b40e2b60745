"""Placeholder name for soundstorm-pytorch's import (see ../README.md); never instantiated."""


class TextToSemantic:  # noqa: D101
    pass
