"""transformers' own common model tests (`ModelTesterMixin`, `ConfigTester`), taken from the source distribution of
the installed transformers release at test time, never copied into this repository.

The sdist ships `tests/test_modeling_common.py` and `tests/test_configuration_common.py` but not three modules they
import. Those get stand-ins here, each saying what it replaces:
- `exporters/test_export.py` (`ExportTesterMixin`): `torch.export` is tested by `test_transformers_common.py` itself;
- `generation/test_utils.py` (`GenerationTesterMixin`): SoundStorm owns its decoder; transformers' `generate` tests
  do not apply (the model tester declares no generative classes);
- `utils/test_configuration_utils.py` (`config_common_kwargs`): a few `PreTrainedConfig` arguments every config must
  keep as given.
"""

import importlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import transformers

CACHE = Path.home() / ".cache" / "soundstorm-hf" / f"transformers-{transformers.__version__}-tests"
PACKAGE = "transformers_common_tests"
STAND_INS = {
    "exporters/test_export.py": "class ExportTesterMixin:\n    pass\n",
    "generation/test_utils.py": "class GenerationTesterMixin:\n    pass\n",
    "utils/test_configuration_utils.py": (
        "config_common_kwargs = {\n"
        '    "return_dict": False,\n'
        '    "output_hidden_states": True,\n'
        '    "output_attentions": True,\n'
        '    "dtype": "float16",\n'
        '    "chunk_size_feed_forward": 5,\n'
        '    "architectures": ["SoundStormModel"],\n'
        '    "problem_type": "regression",\n'
        "}\n"
    ),
}
FILES = ("tests/test_modeling_common.py", "tests/test_configuration_common.py")


def fetch() -> Path:
    """The package folder holding the two common test files (downloaded once per transformers version)."""
    package = CACHE / PACKAGE
    if not all((package / Path(name).name).exists() for name in FILES):
        with tempfile.TemporaryDirectory() as download:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                 f"transformers=={transformers.__version__}", "--dest", download],
                check=True, capture_output=True, timeout=300,
            )
            (sdist,) = Path(download).glob("transformers-*.tar.gz")
            package.mkdir(parents=True, exist_ok=True)
            with tarfile.open(sdist) as archive:
                for name in FILES:
                    member = archive.getmember(f"transformers-{transformers.__version__}/{name}")
                    (package / Path(name).name).write_bytes(archive.extractfile(member).read())
    for relative, text in {"__init__.py": "", **STAND_INS}.items():
        path = package / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "__init__.py").touch()
        path.write_text(text)
    return package


def load():
    """`(ModelTesterMixin, ConfigTester)` from the installed release's sdist."""
    package = fetch()
    if str(package.parent) not in sys.path:
        sys.path.insert(0, str(package.parent))
    modeling = importlib.import_module(f"{PACKAGE}.test_modeling_common")
    configuration = importlib.import_module(f"{PACKAGE}.test_configuration_common")
    return modeling.ModelTesterMixin, configuration.ConfigTester
