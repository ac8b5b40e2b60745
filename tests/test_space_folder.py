"""`soundstorm-hf push --space`'s folder, deployed as a Space deploys it: installed into a fresh virtual environment
from the folder alone, started by its `app.py`, and called through `gradio_client` on 127.0.0.1."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import venv

import pytest
import soundfile
import yaml

pytest.importorskip("gradio", reason="the Space needs gradio (pip install '.[space]')")
from gradio_client import Client, handle_file  # noqa: E402

from soundstorm_hf.audio import synthesize_speech  # noqa: E402
from soundstorm_hf.space import assemble_space, source_tree  # noqa: E402

from test_space import free_port  # noqa: E402
from test_text import tiny_pipeline_folder  # noqa: E402, F401  (the shared tiny model)

pytestmark = pytest.mark.skipif(source_tree() is None, reason="building the wheel needs the source checkout")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The package's wheel, built once for the module (the Space folder carries it)."""
    from soundstorm_hf.space import build_wheel

    return build_wheel(tmp_path_factory.mktemp("wheel"))


def front_matter(readme: str) -> dict:
    _, header, _ = readme.split("---\n", 2)
    return yaml.safe_load(header)


def test_the_folder_names_its_model_and_carries_the_package(wheel, tmp_path):
    folder = assemble_space(tmp_path / "space", model="someone/soundstorm-voice", wheel=wheel)
    assert sorted(path.name for path in folder.iterdir()) == sorted(
        ["README.md", "app.py", "packages.txt", "requirements.txt", "space.json", wheel.name]
    )
    header = front_matter((folder / "README.md").read_text())
    assert header["sdk"] == "gradio" and header["app_file"] == "app.py"
    assert header["models"] == ["someone/soundstorm-voice"]
    assert json.loads((folder / "space.json").read_text()) == {"model": "someone/soundstorm-voice"}
    requirements = [line for line in (folder / "requirements.txt").read_text().splitlines() if not line.startswith("#")]
    assert requirements == [f"./{wheel.name}[space]"]
    assert {"espeak-ng", "flite"} <= set((folder / "packages.txt").read_text().split())


def test_an_existing_folder_is_never_overwritten_and_a_failure_leaves_nothing(wheel, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="taken"):
        assemble_space(taken, wheel=wheel)
    assert [path.name for path in taken.iterdir()] == ["keep.txt"]
    with pytest.raises(FileNotFoundError, match="wheel not found"):
        assemble_space(tmp_path / "new", wheel=tmp_path / "missing.whl")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["taken"]


def test_the_folder_installs_alone_and_serves(wheel, tiny_pipeline_folder, tmp_path):
    folder = assemble_space(tmp_path / "space", model=str(tiny_pipeline_folder), wheel=wheel)
    # Heavy dependencies (torch, gradio) come from this interpreter's site-packages; the package itself must come
    # from the folder's wheel, not from the checkout under test.
    environment = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(environment)
    python = environment / "bin" / "python"
    clean = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "-r", "requirements.txt"], cwd=folder, env=clean, check=True
    )
    located = subprocess.run(
        [python, "-c", "import soundstorm_hf; print(soundstorm_hf.__file__)"],
        cwd=tmp_path, env=clean, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert located.startswith(str(environment)), located

    port = free_port()
    served = subprocess.Popen(
        [python, "app.py"],
        cwd=folder,
        env=clean | {"GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        client = None
        deadline = time.monotonic() + 120
        while client is None and time.monotonic() < deadline:
            assert served.poll() is None, served.stderr.read().decode()[-2000:]
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            except Exception:  # not listening yet
                time.sleep(1)
        assert client is not None, "the Space did not start within 120 s"
        content, voice = tmp_path / "content.wav", tmp_path / "voice.wav"
        soundfile.write(content, *synthesize_speech("the quick brown fox", "en+m3"))
        soundfile.write(voice, *synthesize_speech("seven green apples", "en+f3"))
        _, audio, *_ = client.predict(  # the live player's stream, then the whole result
            handle_file(str(content)), handle_file(str(voice)), 4, 1.0, 1.0, 0, api_name="/convert"
        )
        assert soundfile.info(audio).duration == pytest.approx(soundfile.info(content).duration, abs=0.01)
    finally:
        os.killpg(served.pid, signal.SIGTERM)
        served.wait(timeout=30)
    shutil.rmtree(environment)
