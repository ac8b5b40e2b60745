"""The README is the user's contract: each of its Python snippets runs as pasted.

A snippet that cannot run here says why in an HTML comment on the line before it (`<!-- not run: needs a GPU -->`).
"""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SKIP_MARK = re.compile(r"<!--\s*not run:\s*(?P<reason>[^>]+?)\s*-->")


def python_snippets(text: str) -> list[tuple[int, str, str | None]]:
    """(first code line, code, reason it is not run or None) for each ```python block of `text`."""
    snippets = []
    for match in re.finditer(r"^```python\n(?P<code>.*?)^```$", text, flags=re.MULTILINE | re.DOTALL):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = SKIP_MARK.fullmatch(before.strip())
        line = text.count("\n", 0, match.start("code")) + 1
        snippets.append((line, match.group("code"), skip and skip.group("reason")))
    return snippets


SNIPPETS = python_snippets(README.read_text())


def test_snippets_are_found_and_skip_marks_are_honoured():
    text = "a\n<!-- not run: needs a GPU -->\n```python\nx = 1\n```\n\n```python\ny = 2\n```\n"
    assert python_snippets(text) == [(4, "x = 1\n", "needs a GPU"), (8, "y = 2\n", None)]
    assert sum(reason is None for _, _, reason in SNIPPETS) >= 3, "the README's runnable snippets were not found"


@pytest.mark.parametrize("line, code, reason", SNIPPETS, ids=[f"README.md:{line}" for line, _, _ in SNIPPETS])
def test_readme_snippet_runs_as_pasted(line, code, reason, tmp_path, monkeypatch):
    if reason:
        pytest.skip(f"README.md:{line}: {reason}")
    monkeypatch.chdir(tmp_path)  # whatever a snippet writes lands here
    # Padding keeps a traceback's line numbers those of README.md.
    exec(compile("\n" * (line - 1) + code, str(README), "exec"), {"__name__": "__main__"})


def test_demo_leads_with_the_readmes_real_speech_pair():
    """The first bundled conversion the demo offers is the one the README's first command runs."""
    pytest.importorskip("gradio")
    from soundstorm_hf.app import conversion_examples

    first_command = r"soundstorm-hf convert (?P<content>\S+) out\.wav \\\n\s*--voice-prompt (?P<voice>\S+)"
    command = re.search(first_command, README.read_text())
    content, voice = conversion_examples()[0]
    assert (Path(content).name, Path(voice).name) == (Path(command["content"]).name, Path(command["voice"]).name)
    assert Path(content).is_file() and Path(voice).is_file()
