"""Text -> IPA phoneme string with espeak-ng: the text unit of the text-to-semantic model.

Phonemes rather than letters because a small model trained on a few thousand sentences cannot learn English
spelling; espeak-ng also expands numbers and abbreviations. Clause breaks (commas, sentence ends), which espeak-ng
puts on separate lines, become `CLAUSE_BREAK`, so pauses survive.
"""

from __future__ import annotations

import subprocess

CLAUSE_BREAK = "|"


def phonemize(text: str, language: str = "en-us") -> str:
    """`"Hello there, friend."` -> `"həlˈoʊ ðˈɛɹ | fɹˈɛnd"` (espeak-ng `--ipa`, clauses joined by `CLAUSE_BREAK`)."""
    text = " ".join(text.split())
    if not text:
        raise ValueError("The text is empty.")
    try:  # the text on standard input: on the command line, a text like `-f/etc/passwd` would be an option
        result = subprocess.run(
            ["espeak-ng", "-q", "--ipa", "-v", language, "--stdin"], input=text, capture_output=True, text=True, check=True
        )
    except FileNotFoundError as error:
        raise RuntimeError("espeak-ng is not installed (Debian/Ubuntu: `apt-get install espeak-ng`).") from error
    except subprocess.CalledProcessError as error:
        raise ValueError(f"espeak-ng failed for language {language!r}: {error.stderr.strip()}") from error
    clauses = [" ".join(line.split()) for line in result.stdout.splitlines()]
    phonemes = f" {CLAUSE_BREAK} ".join(clause for clause in clauses if clause)
    if not phonemes:
        raise ValueError(f"The text {text[:40]!r} has nothing to pronounce.")
    return phonemes
