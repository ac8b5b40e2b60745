"""Imports point one way (docs/design.md, Layers): faces (cli, app, loading, space) -> text -> pipeline -> model and tokenizers.

Read from the source (every `import`, also those inside functions), so that an upward import is caught even where it
is lazy; and once at run time, in a fresh interpreter.
"""

import ast
import subprocess
import sys
from pathlib import Path

import soundstorm_hf

PACKAGE = Path(soundstorm_hf.__file__).parent
# Higher imports lower or equal, never the other way; modules not named are the bottom layer.
LAYERS = {
    "soundstorm_hf.cli": 3,
    "soundstorm_hf.app": 3,
    "soundstorm_hf.loading": 3,  # what the faces share: finding a model, one-line errors
    "soundstorm_hf.space": 3,  # the Space folder and its entry point
    "soundstorm_hf.training": 3,  # prepare, train, finetune: over the pipeline and text, and never over a face
    "soundstorm_hf.text": 2,
    "soundstorm_hf.pipeline": 1,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """`{module: package modules it imports}`; importing a submodule also runs its parent package's `__init__`."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]) if node.level else ""
                module = ".".join(part for part in (base, node.module) if part)
                targets |= {module} | {f"{module}.{alias.name}" for alias in node.names}
            elif isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
        graph[name] = targets
    for name, targets in graph.items():
        targets |= {parent for target in list(targets) for parent in parents(target)}
        graph[name] = {target for target in targets if target in graph and target != name and not name.startswith(target + ".")}
    return graph


def parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:end]) for end in range(1, len(parts))]


def layer(name: str) -> int:
    return max((rank for prefix, rank in LAYERS.items() if name == prefix or name.startswith(prefix + ".")), default=0)


def test_no_module_imports_a_layer_above_it():
    upward = [
        f"{name} -> {target}"
        for name, targets in import_graph().items()
        for target in targets
        if layer(target) > layer(name)
    ]
    assert not upward, upward


def test_training_imports_no_face():
    faces = ("soundstorm_hf.cli", "soundstorm_hf.app", "soundstorm_hf.loading", "soundstorm_hf.space")
    wrong = [
        f"{name} -> {target}"
        for name, targets in import_graph().items()
        if name.startswith("soundstorm_hf.training")
        for target in targets
        if target.startswith(faces)
    ]
    assert not wrong, wrong


def test_package_imports_have_no_cycle():
    graph, done, path = import_graph(), set(), []

    def visit(name):
        if name in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(name) :] + [name]))
        if name in done:
            return
        path.append(name)
        for target in sorted(graph[name]):
            visit(target)
        path.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)


def test_importing_the_pipeline_loads_nothing_above_it():
    code = (
        "import sys, soundstorm_hf.pipeline; "
        "print(sorted(m for m in sys.modules if m.startswith(('soundstorm_hf.text', 'soundstorm_hf.cli', 'soundstorm_hf.app'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout
