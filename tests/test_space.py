"""The Gradio Space, for real: served on 127.0.0.1, each tab called through `gradio_client`, one conversion run in
headless Chromium (SOUNDSTORM_SCREENSHOT=docs/space.png keeps its screenshot). Tiny random model, CPU only."""

import os
import runpy
import shutil
import socket
import sys
import tempfile
import time
import types
from pathlib import Path

import pytest
import soundfile

gr = pytest.importorskip("gradio", reason="the Space needs gradio (pip install '.[space]')")
from gradio_client import Client, handle_file  # noqa: E402

import soundstorm_hf.app  # noqa: E402
import soundstorm_hf.space  # noqa: E402
from soundstorm_hf.app import Limits, example_files, launch_demo  # noqa: E402
from soundstorm_hf.audio import synthesize_speech  # noqa: E402
from soundstorm_hf.pipeline import SoundStormPipeline  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")

from test_text import tiny_pipeline, tiny_pipeline_folder  # noqa: E402, F401  (the shared tiny model)

SPACE_APP = Path(soundstorm_hf.space.__file__).parent / "template" / "app.py"

# The screenshot goes to pytest's temporary folder; SOUNDSTORM_SCREENSHOT=docs/space.png refreshes the committed one.
SCREENSHOT_ENV = "SOUNDSTORM_SCREENSHOT"
SETTINGS = [4, 1.0, 1.0, 0]  # level-1 iterations, temperature, guidance scale, seed
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1280,2200",
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    """The app on a free local port; closed at the end of the module."""
    limits = Limits(max_seconds=6.0, max_file_mb=1.0, max_characters=120)
    demo = launch_demo(
        tiny_pipeline(), limits, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True
    )
    yield demo.local_url
    demo.close()


@pytest.fixture(scope="module")
def client(server):
    return Client(server, verbose=False)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder, paths = tmp_path_factory.mktemp("space_clips"), {}
    for name, text, voice in [("content", "the quick brown fox", "en+m3"), ("voice", "seven green apples", "en+f3")]:
        paths[name] = str(folder / f"{name}.wav")
        soundfile.write(paths[name], *synthesize_speech(text, voice))
    return paths


def duration(path: str) -> float:
    return soundfile.info(path).duration


def test_convert_tab(client, clips):
    live, audio, _, _, timing = client.predict(
        handle_file(clips["content"]), handle_file(clips["voice"]), *SETTINGS, api_name="/convert"
    )
    assert duration(audio) == pytest.approx(duration(clips["content"]), abs=0.01)
    assert "real-time factor" in timing and "forward passes" in timing and "first audio after" in timing
    # The live player got the audio as a stream (an HLS playlist of AAC segments) while it was generated.
    segments = [float(line[8:].rstrip(",")) for line in Path(live).read_text().splitlines() if line.startswith("#EXTINF:")]
    assert sum(segments) == pytest.approx(duration(clips["content"]), abs=0.2)


def test_tts_tab(client, clips):
    _, audio, _, _, timing = client.predict("Hello there.", handle_file(clips["voice"]), *SETTINGS, api_name="/tts")
    assert 0.5 < duration(audio) < 3


def test_dialogue_tab(client, clips):
    _, audio, _, _, timing = client.predict(
        "[A] Hello there. [B] Hi!", handle_file(clips["voice"]), handle_file(clips["content"]), 0.5, *SETTINGS,
        api_name="/dialogue",
    )  # fmt: skip
    rows = [line.split("|") for line in timing.splitlines() if line.startswith("| A") or line.startswith("| B")]
    assert [row[1].strip() for row in rows] == ["A", "B"]
    assert duration(audio) == pytest.approx(float(rows[-1][3]), abs=0.01)
    assert float(rows[1][2]) - float(rows[0][3]) == pytest.approx(0.5, abs=0.01)


def test_option_like_text_is_spoken_not_obeyed(client, clips, tmp_path, monkeypatch):
    """A text such as `-fFILE` reaches the synthesizer as text, in the TTS and the dialogue tab: the server never
    reads FILE (60 words, ~20 s of speech) nor writes one for `-w FILE`."""
    from test_pipeline_faults import option_like_texts

    monkeypatch.chdir(tmp_path)  # the server runs in this process: relative paths are the test's
    texts, written = option_like_texts(tmp_path)
    voice = handle_file(clips["voice"])
    _, audio, *_ = client.predict(texts[0], voice, *SETTINGS, api_name="/tts")  # every text and engine: test_pipeline_faults
    assert duration(audio) < 6
    _, audio, *_ = client.predict(f"[A] {texts[1]} [B] {texts[3]}", voice, voice, 0.4, *SETTINGS, api_name="/dialogue")
    assert duration(audio) < 10 and not written.exists()


def test_decompression_bomb_is_refused_before_decoding(client, clips, tmp_path):
    """69 kB of FLAC holding 1.5 h of 48 kHz stereo (2 GB as float32) is refused from its header, at once; a FLAC
    whose header leaves its length unknown is refused too."""
    from test_pipeline_faults import peak_memory_mb, silent_flac

    bomb, voice = silent_flac(tmp_path / "bomb.flac", 90 * 60), handle_file(clips["voice"])
    started, memory = time.perf_counter(), peak_memory_mb()
    with pytest.raises(Exception, match="The content audio: too long: 5400.0 s of audio, more than the 6 s allowed"):
        client.predict(handle_file(str(bomb)), voice, *SETTINGS, api_name="/convert")
    assert time.perf_counter() - started < 5 and peak_memory_mb() - memory < 100
    stream = silent_flac(tmp_path / "stream.flac", 60, header_length=False)
    with pytest.raises(Exception, match="does not give its length"):
        client.predict("Hello.", handle_file(str(stream)), *SETTINGS, api_name="/tts")


@pytest.mark.parametrize(
    "case, message",
    [
        ("garbage", "is not an audio file"),
        ("silent", "silent"),
        ("long", "too long"),
        ("missing", "No voice prompt"),
        ("text", "too long"),
        ("speaker", "unknown speaker tag [C]"),
        ("no_prompt_b", "No voice prompt of [B]"),
    ],
)
def test_bad_inputs_give_a_clear_error(client, clips, tmp_path, case, message):
    garbage, silent, long = tmp_path / "garbage.wav", tmp_path / "silent.wav", tmp_path / "long.wav"
    garbage.write_bytes(b"RIFF not really a wave file")
    soundfile.write(silent, [0.0] * 16000, 16000)
    soundfile.write(long, [0.1, -0.1] * 8000 * 7, 16000)  # 7 s > the 6 s limit
    content, voice = handle_file(clips["content"]), handle_file(clips["voice"])
    calls = {
        "garbage": lambda: client.predict(handle_file(str(garbage)), voice, *SETTINGS, api_name="/convert"),
        "silent": lambda: client.predict(handle_file(str(silent)), voice, *SETTINGS, api_name="/convert"),
        "long": lambda: client.predict(content, handle_file(str(long)), *SETTINGS, api_name="/convert"),
        "missing": lambda: client.predict(content, None, *SETTINGS, api_name="/convert"),
        "text": lambda: client.predict("word " * 30, voice, *SETTINGS, api_name="/tts"),
        "speaker": lambda: client.predict("[A] Hi. [C] Who?", voice, voice, 0.4, *SETTINGS, api_name="/dialogue"),
        "no_prompt_b": lambda: client.predict("[A] Hi. [B] Yo.", voice, None, 0.4, *SETTINGS, api_name="/dialogue"),
    }
    with pytest.raises(Exception, match=message.replace("[", r"\[").replace("]", r"\]")) as error:
        calls[case]()
    assert "Traceback" not in str(error.value)


@pytest.mark.parametrize("seed", [2**70, "abc", "NaN", 1.5, -1])
def test_bad_seed_is_a_clear_error(client, clips, seed):
    with pytest.raises(Exception, match="Seed must be a whole number from 0 up to 2\\*\\*64 - 1, got") as error:
        client.predict("Hello.", handle_file(clips["voice"]), 4, 1.0, 1.0, seed, api_name="/tts")
    assert "Traceback" not in str(error.value)


def test_bad_pause_is_a_clear_error(client, clips):
    voice = handle_file(clips["voice"])
    with pytest.raises(Exception, match="Value 1000000000.0 is greater than maximum value 2.0"):
        client.predict("[A] Hi. [B] Yo.", voice, voice, 1e9, *SETTINGS, api_name="/dialogue")


def test_waiting_requests_see_their_place_and_expected_wait(client, clips, monkeypatch):
    """Requests beyond the concurrency limit wait in Gradio's queue, which tells each its place and, once requests
    have been timed, the expected wait: what the page shows on the result while waiting. The first request is held
    inside the handler so that the others queue behind it."""
    import threading

    import soundstorm_hf.text.frontend as frontend

    gate, render_text = threading.Event(), frontend.render_text
    monkeypatch.setattr(frontend, "render_text", lambda *args: gate.wait(30) and render_text(*args))
    voice = handle_file(clips["voice"])

    def queue_statuses(count: int, ready) -> list:
        """Submits `count` requests, polls their queue statuses until `ready(statuses)`, then lets them run."""
        gate.clear()
        jobs = [client.submit("Hello there.", voice, *SETTINGS, api_name="/tts") for _ in range(count)]
        deadline = time.perf_counter() + 30
        while not ready(statuses := [job.status() for job in jobs]) and time.perf_counter() < deadline:
            time.sleep(0.05)
        gate.set()
        for job in jobs:
            job.result()
        return statuses

    two_waiting = lambda statuses: sum(s.rank is not None for s in statuses) == 2  # noqa: E731
    waiting = [s for s in queue_statuses(3, two_waiting) if s.rank is not None]
    assert sorted(s.rank for s in waiting) == [0, 1]  # one generating, two in line
    statuses = queue_statuses(2, lambda statuses: any(s.eta for s in statuses))
    assert any(s.eta is not None and s.eta > 0 for s in statuses)


def test_examples_are_bundled():
    names = set(example_files())
    assert any(n.startswith("content") for n in names) and sum(n.startswith("voice") for n in names) >= 2


def test_browser_runs_a_conversion(request, tmp_path):
    """Chromium picks a bundled example, converts it, and finds the result's audio element playable.

    With SOUNDSTORM_SCREENSHOT set, the app is the one users get (the bundled default model, default limits) and the
    example is the README's real-speech pair, so that the screenshot shows what a visitor sees."""
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    with tempfile.TemporaryDirectory() as profile:
        for flag in CHROMIUM_FLAGS + [f"--user-data-dir={profile}"]:
            options.add_argument(flag)
        browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
        users_app = None
        if os.environ.get(SCREENSHOT_ENV):
            users_app = launch_demo(
                SoundStormPipeline.from_pretrained("default"), server_name="127.0.0.1", server_port=free_port(),
                prevent_thread_lock=True, quiet=True,
            )  # fmt: skip
            url, content, voice = users_app.local_url, "real_content_librivox", "real_voice_asterisk_it"
        else:
            url, content, voice = request.getfixturevalue("server"), "content_fox", "voice_female"
        try:
            wait = WebDriverWait(browser, 120)
            browser.get(url)
            example = f"//tr[td[contains(., '{content}.wav')] and td[contains(., '{voice}.wav')]]"
            wait.until(expected_conditions.element_to_be_clickable((By.XPATH, example))).click()
            wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#convert-prompt a[download]"))  # example loaded
            browser.find_element(By.ID, "convert-button").click()
            playable = (
                "const a = document.querySelector('#result-audio audio');"
                "return a !== null && a.readyState >= 1 && a.duration > 0 ? a.duration : null;"
            )
            seconds = wait.until(lambda b: b.execute_script(playable))
            assert seconds == pytest.approx(duration(example_files()[content]), abs=0.05)
            wait.until(lambda b: "real-time factor" in b.find_element(By.ID, "timing").text)
            screenshot = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "space.png")
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(str(screenshot))
            assert screenshot.stat().st_size > 10_000
        finally:
            browser.quit()
            if users_app is not None:
                users_app.close()


def test_space_entry_point_serves_the_model_its_variable_names_under_zerogpu(tiny_pipeline_folder, monkeypatch, tmp_path):
    """The Space's app.py as the Hub runs it: the model from SOUNDSTORM_MODEL, each handler wrapped by ZeroGPU's
    `spaces.GPU`, uploads limited at the server; a model that cannot load stops the Space with one line."""
    zerogpu, on_gpu, served, launched = types.ModuleType("spaces"), [], [], []
    zerogpu.GPU = lambda handler: on_gpu.append(handler.__name__) or handler
    monkeypatch.setitem(sys.modules, "spaces", zerogpu)
    build_demo = soundstorm_hf.app.build_demo
    monkeypatch.setattr(soundstorm_hf.app, "build_demo", lambda pipe, *args: served.append(pipe) or build_demo(pipe, *args))
    monkeypatch.setattr(gr.Blocks, "launch", lambda demo, **kwargs: launched.append((demo, kwargs)))
    monkeypatch.setenv("SOUNDSTORM_MODEL", str(tiny_pipeline_folder))
    runpy.run_path(str(SPACE_APP), run_name="__main__")
    ((demo, launch_kwargs),) = launched
    assert served[0].model.config.name_or_path == str(tiny_pipeline_folder)
    assert on_gpu == ["convert", "tts", "dialogue"]
    assert {"convert", "tts", "dialogue"} <= {function.api_name for function in demo.fns.values()}
    assert launch_kwargs == {"max_file_size": f"{Limits().max_file_mb:g}mb"}

    monkeypatch.setenv("SOUNDSTORM_MODEL", str(tmp_path / "no-such-model"))
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(SPACE_APP), run_name="__main__")
    message = str(exit_info.value.code)
    assert message.startswith("soundstorm-hf Space: ") and "no-such-model" in message and "\n" not in message, message


def test_the_guidance_slider_shows_only_for_a_model_trained_for_guidance():
    pipe = tiny_pipeline()

    def guidance_sliders_shown(pipe) -> list[bool]:
        demo = soundstorm_hf.app.build_demo(pipe)
        sliders = [block for block in demo.blocks.values() if getattr(block, "label", None) == "Guidance scale (1 = off)"]
        return [slider.visible for slider in sliders]

    assert not pipe.model.config.trained_for_guidance
    assert guidance_sliders_shown(pipe) == [False] * 3  # one per tab
    pipe.model.config.prompt_dropout = 0.1
    assert guidance_sliders_shown(pipe) == [True] * 3
