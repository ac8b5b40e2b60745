"""`soundstorm-hf`: each command run in-process with a tiny model folder; user errors are one line, no traceback."""

import json
import re
import shutil
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import soundfile

from soundstorm_hf import cli
from soundstorm_hf.audio import synthesize_speech

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")

from test_text import tiny_pipeline_folder  # noqa: F401  (the shared tiny model folder)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    paths = {}
    for name, text, voice in [("content", "the quick brown fox", "en+m3"), ("voice", "seven green apples", "en+f3")]:
        paths[name] = folder / f"{name}.wav"
        soundfile.write(paths[name], *synthesize_speech(text, voice))
    return paths


def fails(capsys, argv, message):
    """Runs the CLI, expecting a user error: exit code 1 and one line on stderr containing `message`."""
    with pytest.raises(SystemExit) as exit:
        cli.main(argv)
    error = capsys.readouterr().err
    assert exit.value.code == 1
    assert error.count("\n") == 1 and "Traceback" not in error, error
    assert message in error, error
    return error


def test_convert_writes_wav_at_codec_rate(tiny_pipeline_folder, clips, tmp_path, capsys):
    output = tmp_path / "out.wav"
    argv = ["convert", str(clips["content"]), str(output), "--voice-prompt", str(clips["voice"])]
    cli.main(argv + ["--model", str(tiny_pipeline_folder), "--seed", "0", "--iterations", "2", "--guidance-scale", "2"])
    info, content = soundfile.info(output), soundfile.info(clips["content"])
    assert info.samplerate == 16000 and abs(info.duration - content.duration) < 0.01
    assert "wrote" in capsys.readouterr().out


def test_convert_shows_progress_on_a_terminal_only(tiny_pipeline_folder, clips, tmp_path, capsys, monkeypatch):
    argv = ["convert", str(clips["content"]), str(tmp_path / "out.wav"), "--model", str(tiny_pipeline_folder), "--seed", "0"]
    cli.main(argv)
    assert "generating" not in capsys.readouterr().err  # a pipe or a log: no bar
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    cli.main(argv)
    assert "generating" in capsys.readouterr().err


def test_output_level_follows_the_voice_prompt_unless_kept(tiny_pipeline_folder, clips, tmp_path):
    from soundstorm_hf.audio import frame_powers, speech_power

    def level_db(path):
        audio, rate = soundfile.read(path, dtype="float32")
        return 10 * np.log10(speech_power(frame_powers(audio, rate)))

    argv = ["convert", str(clips["content"]), "OUTPUT", "--voice-prompt", str(clips["voice"]), "--model", str(tiny_pipeline_folder), "--seed", "0"]
    matched, kept = tmp_path / "matched.wav", tmp_path / "kept.wav"
    cli.main([str(matched) if arg == "OUTPUT" else arg for arg in argv])
    cli.main([str(kept) if arg == "OUTPUT" else arg for arg in argv] + ["--keep-level"])
    assert level_db(matched) == pytest.approx(level_db(clips["voice"]), abs=1.0)
    assert abs(level_db(kept) - level_db(matched)) > 1.0, "the tiny random model's own level differs from the prompt's"


def test_model_from_environment(tiny_pipeline_folder, clips, tmp_path, monkeypatch):
    monkeypatch.setenv(cli.MODEL_ENV, str(tiny_pipeline_folder))
    cli.main(["tts", "hello there", str(tmp_path / "tts.wav"), "--voice-prompt", str(clips["voice"]), "--seed", "0"])
    assert soundfile.info(tmp_path / "tts.wav").duration > 0.3


def test_dialogue_prints_timeline(tiny_pipeline_folder, clips, tmp_path, capsys):
    transcript = tmp_path / "dialogue.txt"
    transcript.write_text("[A] Hello there.\n[B] Hi!\n")
    output = tmp_path / "dialogue.wav"
    cli.main(
        ["dialogue", str(transcript), str(output), "--model", str(tiny_pipeline_folder), "--pause", "0.3"]
        + ["--speaker", f"A={clips['voice']}", "--speaker", f"B={clips['content']}", "--seed", "0"]
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("[A]") and lines[1].startswith("[B]")
    end = float(lines[1].split()[3])
    assert soundfile.info(output).duration == pytest.approx(end, abs=1e-3)


def test_option_like_text_is_spoken_not_obeyed(tiny_pipeline_folder, clips, tmp_path, monkeypatch):
    """`tts -- -fFILE` and a dialogue turn `-fFILE` speak those characters; they never read FILE (60 words, ~20 s)."""
    from test_pipeline_faults import option_like_texts

    monkeypatch.chdir(tmp_path)
    texts, written = option_like_texts(tmp_path)
    model = ["--model", str(tiny_pipeline_folder), "--seed", "0", "--iterations", "1"]
    for engine in ("espeak-ng", "flite"):
        for text in texts[:2]:
            cli.main(["tts", *model, "--engine", engine, "--t2s", "none", "--", text, "tts.wav"])
            assert soundfile.info("tts.wav").duration < 6, (engine, text)
    Path("dialogue.txt").write_text(f"[A] {texts[0]} [A] {texts[3]}")
    cli.main(["dialogue", "dialogue.txt", "dialogue.wav", *model, "--speaker", f"A={clips['voice']}"])
    assert soundfile.info("dialogue.wav").duration < 10 and not written.exists()


def test_user_errors_are_one_line(tiny_pipeline_folder, clips, tmp_path, capsys, monkeypatch):
    model = ["--model", str(tiny_pipeline_folder)]
    out = str(tmp_path / "out.wav")
    content, voice = str(clips["content"]), str(clips["voice"])
    fails(capsys, ["convert", "missing.wav", out] + model, "INPUT: file not found: missing.wav")
    fails(capsys, ["convert", content, out, "--voice-prompt", "nope.wav"] + model, "--voice-prompt: file not found")
    fails(capsys, ["convert", content, out, "--model", "./no/such/model"], "--model: model folder not found")
    with mock.patch.object(cli, "load_pipeline", side_effect=AssertionError("the model loaded before a flag was checked")):
        fails(capsys, ["convert", content, str(tmp_path / "no_dir" / "out.wav")] + model, "OUTPUT: cannot write")
        fails(capsys, ["convert", content, str(tmp_path)] + model, "OUTPUT:")
        fails(capsys, ["convert", content, out, "--guidance-scale", "2"] + model, "--guidance-scale needs --voice-prompt")
        fails(capsys, ["convert", content, out, "--compile"] + model, "--compile records CUDA graphs")
    monkeypatch.delenv(cli.MODEL_ENV, raising=False)
    monkeypatch.setattr("soundstorm_hf.pipeline.BUNDLED_DEFAULT_MODEL", tmp_path / "default")
    fails(capsys, ["convert", content, out], "bundled default model is not built yet")
    silent, garbage = tmp_path / "silent.wav", tmp_path / "garbage.wav"
    soundfile.write(silent, [0.0] * 16000, 16000)
    garbage.write_text("not audio")
    fails(capsys, ["convert", str(silent), out] + model, "silent")
    fails(capsys, ["convert", str(garbage), out] + model, "INPUT: not an audio file")
    # The pipeline's own input checks, after loading, reach the user the same way.
    short = tmp_path / "short.wav"
    soundfile.write(short, synthesize_speech("hi", "en+f3")[0][:4000], 22050)
    fails(capsys, ["convert", content, out, "--voice-prompt", str(short)] + model, "voice prompt is too short")
    transcript = tmp_path / "t.txt"
    transcript.write_text("[A] Hi. [C] Who?")
    fails(capsys, ["dialogue", str(transcript), out, "--speaker", f"A={voice}"] + model, "unknown speaker tag [C]")
    assert not (tmp_path / "out.wav").exists(), "nothing written, not even an empty file"


@pytest.mark.parametrize("command", ["convert", "tts", "dialogue", "demo", "push"])
def test_help_shows_every_default(command, capsys):
    """Each option that takes a value says its default: the value, or what happens when it is not given."""
    with pytest.raises(SystemExit) as exit:
        cli.main([command, "--help"])
    assert exit.value.code == 0
    help = capsys.readouterr().out
    options = re.split(r"\n  (?=-)", help.split("\noptions:\n")[1])  # one block per option, its help lines included
    takes_value = [block for block in options if re.match(r"-[-\w]+ \S", block)]
    assert takes_value and all(re.search("default|required", block, re.IGNORECASE) for block in takes_value), help
    assert "(default: None)" not in help
    if command == "dialogue":
        assert "(default: 0.4)" in help and "--speaker NAME=FILE" in help


def test_push_uploads_through_hfapi(tiny_pipeline_folder, capsys):
    with mock.patch("huggingface_hub.HfApi") as api_class:
        api = api_class.return_value
        api.upload_folder.return_value = mock.Mock(commit_url="https://huggingface.co/me/tiny/commit/1")
        cli.main(["push", str(tiny_pipeline_folder), "me/tiny", "--private", "--token", "secret"])
    api_class.assert_called_once_with(token="secret")
    api.create_repo.assert_called_once_with("me/tiny", repo_type="model", private=True, exist_ok=True, space_sdk=None)
    api.upload_folder.assert_called_once_with(
        folder_path=str(tiny_pipeline_folder), repo_id="me/tiny", repo_type="model", commit_message="Upload SoundStorm model"
    )
    assert "pushed" in capsys.readouterr().out


def test_push_refuses_a_folder_without_a_model(tmp_path, capsys):
    fails(capsys, ["push", str(tmp_path), "me/tiny"], "is not a saved model folder")


def test_push_space_writes_or_uploads_the_space_folder(tmp_path, capsys):
    wheel = tmp_path / "soundstorm_hf-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"a wheel")  # assembling only copies it (test_space_folder.py installs a real one)
    cli.main(["push", "--space", "me/demo", "--model", "me/voice", "--wheel", str(wheel), "--dry-run", str(tmp_path / "out")])
    assert "nothing was uploaded" in capsys.readouterr().out
    assert (tmp_path / "out" / "space.json").read_text().strip() == '{"model": "me/voice"}'
    fails(capsys, ["push", "--space", "me/demo", "--wheel", str(wheel), "--dry-run", str(tmp_path / "out")], "already exists")
    fails(capsys, ["push", "--space", "me/demo", "--model", str(tmp_path)], "--model: a Space serves a model from the Hub")
    fails(capsys, ["push", str(tmp_path), "me/tiny", "--space", "me/demo"], "--space takes no FOLDER or REPO_ID")
    fails(capsys, ["push", "--space", "me/demo", "--wheel", str(tmp_path / "none.whl")], "--wheel: file not found")

    with mock.patch("huggingface_hub.HfApi") as api_class:
        api = api_class.return_value
        api.upload_folder.return_value = mock.Mock(commit_url="https://huggingface.co/spaces/me/demo/commit/1")
        cli.main(["push", "--space", "me/demo", "--wheel", str(wheel), "--token", "secret"])
    api.create_repo.assert_called_once_with("me/demo", repo_type="space", private=False, exist_ok=True, space_sdk="gradio")
    uploaded = api.upload_folder.call_args.kwargs
    assert uploaded["repo_id"] == "me/demo" and uploaded["repo_type"] == "space"
    assert "pushed the Space (serving default)" in capsys.readouterr().out


def test_training_commands_delegate_to_the_package_and_name_themselves(capsys):
    for command, flag in (("prepare", "--output-dir"), ("train", "--output-dir"), ("finetune", "--max-piece-seconds")):
        with pytest.raises(SystemExit) as exit:
            cli.main([command, "--help"])
        assert exit.value.code == 0
        shown = capsys.readouterr().out
        assert shown.startswith(f"usage: soundstorm-hf {command} ") and flag in shown
        assert "_" not in "".join(word for word in shown.split() if word.startswith("--")), "one spelling: dashes"


def test_demo_launches_the_app_locally(tiny_pipeline_folder):
    with mock.patch("soundstorm_hf.app.launch_demo") as launch:
        cli.main(["demo", "--model", str(tiny_pipeline_folder), "--port", "7861", "--max-seconds", "12"])
    pipe, limits, t2s = launch.call_args.args
    assert pipe.sampling_rate == 16000 and limits.max_seconds == 12
    assert t2s is None  # the folder has no t2s/: the demo speaks text through the offline front end
    assert launch.call_args.kwargs == {"server_name": "127.0.0.1", "server_port": 7861}



def test_adapter_flag_merges_a_lora_adapter_and_refuses_another_base(tiny_pipeline_folder, clips, tmp_path, capsys):
    peft = pytest.importorskip("peft")
    from soundstorm_hf import SoundStormForConditionalGeneration
    from soundstorm_hf.pipeline import ADAPTER_INFO_NAME, weights_fingerprint

    base = SoundStormForConditionalGeneration.from_pretrained(tiny_pipeline_folder)
    info = {"base_model": "the tiny base", "base_fingerprint": weights_fingerprint(base)}  # before LoRA layers exist
    adapter = tmp_path / "adapter"
    lora = peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)  # non-zero: it acts
    peft.get_peft_model(base, lora).save_pretrained(adapter)
    (adapter / ADAPTER_INFO_NAME).write_text(json.dumps(info))
    output = tmp_path / "out.wav"
    argv = ["convert", str(clips["content"]), str(output), "--model", str(tiny_pipeline_folder), "--seed", "0", "--iterations", "2"]
    cli.main(argv + ["--adapter", str(adapter)])
    assert soundfile.info(output).duration > 0.5
    (adapter / ADAPTER_INFO_NAME).write_text(json.dumps({**info, "base_fingerprint": "0" * 16}))  # another base's
    fails(capsys, argv + ["--adapter", str(adapter)], "was trained on the base model the tiny base, not on")
    fails(capsys, argv + ["--adapter", str(tmp_path / "nowhere")], "adapter")


# --- faults: one line naming the problem, outputs never destroyed ------------------------------------------------------


def broken_copy(folder, tmp_path, name, damage):
    copy = tmp_path / name
    shutil.copytree(folder, copy)
    damage(copy)
    return str(copy)


def edit_config(**changes):
    def damage(folder):
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, **{k: config[k] + v for k, v in changes.items()}}))

    return damage


def truncate_weights(folder):
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


class RunsCode:
    """A pickle that would run a command when loaded unsafely."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def pickled_weights(payload):
    def damage(folder):
        import torch

        (folder / "model.safetensors").unlink()
        torch.save(payload, folder / "pytorch_model.bin")

    return damage


def test_damaged_model_folders_are_one_line(tiny_pipeline_folder, clips, tmp_path, capsys):
    marker = tmp_path / "code_ran"
    argv = ["convert", str(clips["content"]), str(tmp_path / "out.wav"), "--model"]
    for name, damage, message in [
        ("truncated", truncate_weights, "model.safetensors is damaged or truncated"),
        ("wider", edit_config(hidden_size=64), "config.json does not match model.safetensors: model."),
        ("deeper", edit_config(num_hidden_layers=1), "is missing from the weights"),
        ("shallower", edit_config(num_hidden_layers=-1), "which the config has no place for"),
        ("pickle", pickled_weights({"weight": RunsCode(marker)}), "pytorch_model.bin holds Python objects"),
        ("list", pickled_weights([1, 2, 3]), "its weights are not a state dict"),
    ]:
        fails(capsys, argv + [broken_copy(tiny_pipeline_folder, tmp_path, name, damage)], message)
    assert not marker.exists(), "the pickle's code ran"


def test_adapter_without_its_facts_names_the_file(tiny_pipeline_folder, clips, tmp_path, capsys):
    pytest.importorskip("peft")
    from soundstorm_hf.pipeline import ADAPTER_INFO_NAME

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    argv = ["convert", str(clips["content"]), str(tmp_path / "out.wav"), "--model", str(tiny_pipeline_folder), "--adapter", str(adapter)]
    (adapter / ADAPTER_INFO_NAME).write_text("{not json")
    error = fails(capsys, argv, f"--adapter: {adapter / ADAPTER_INFO_NAME} is not valid JSON")
    assert "--model" not in error
    (adapter / ADAPTER_INFO_NAME).write_text(json.dumps({"base_model": "somewhere"}))
    fails(capsys, argv, f"--adapter: {adapter / ADAPTER_INFO_NAME} lacks base_fingerprint")


def test_bad_settings_are_one_line_before_loading(tiny_pipeline_folder, clips, tmp_path, capsys):
    import torch

    out, content, voice = str(tmp_path / "out.wav"), str(clips["content"]), str(clips["voice"])
    convert = ["convert", content, out, "--model", str(tiny_pipeline_folder)]
    fails(capsys, convert + ["--device", "tpu9"], "--device: 'tpu9' is not a torch device")
    if not torch.cuda.is_available():
        fails(capsys, convert + ["--device", "cuda"], "--device: cuda: no such device is available")
    transcript = tmp_path / "t.txt"
    transcript.write_text("[A] Hello [B Hi")
    dialogue = ["dialogue", str(transcript), out, "--speaker", f"A={voice}", "--speaker", f"B={voice}", "--model", str(tiny_pipeline_folder)]
    with mock.patch.object(cli, "load_pipeline", side_effect=AssertionError("the model loaded before a flag was checked")):
        fails(capsys, convert + ["--seed", str(2**70)], "--seed must lie in [0, 2**64 - 1], got 1180591620717411303424")
        fails(capsys, dialogue + ["--pause", "1e9"], "--pause must lie in [0, 60] seconds, got 1000000000.0")
        fails(capsys, dialogue + ["--pause", "nan"], "--pause must lie in [0, 60] seconds, got nan")
        fails(capsys, dialogue, "Turn 1 ([A]) has an unclosed speaker tag or a stray bracket at '[B Hi'")


def test_output_that_is_an_input_is_refused(tiny_pipeline_folder, clips, tmp_path, capsys):
    content = tmp_path / "content.wav"
    shutil.copy(clips["content"], content)
    (tmp_path / "link.wav").symlink_to(content)
    before = content.read_bytes()
    model = ["--model", str(tiny_pipeline_folder)]
    fails(capsys, ["convert", str(content), str(content)] + model, f"OUTPUT: {content} is also INPUT")
    fails(capsys, ["convert", str(clips["voice"]), str(tmp_path / "link.wav"), "--voice-prompt", str(content)] + model, "is also --voice-prompt")
    fails(capsys, ["tts", "hi", str(tmp_path / "link.wav"), "--voice-prompt", str(content)] + model, "is also --voice-prompt")
    assert content.read_bytes() == before


@pytest.mark.parametrize("command, signal_name", [("convert", "SIGTERM"), ("convert", "SIGINT"), ("tts", "SIGTERM")])
def test_signal_while_writing_keeps_the_old_output(tiny_pipeline_folder, clips, tmp_path, capsys, monkeypatch, command, signal_name):
    """A signal arriving while the output file is open (convert streams it block by block; tts writes it at once):
    exit 128 + its number with one line, the existing output byte for byte as it was, and no partial file left."""
    import os
    import signal

    import soundfile

    def signal_after(write):
        def written_then_signalled(file, *args, **kwargs):
            write(file, *args, **kwargs)
            assert Path(file.name if hasattr(file, "name") else file).stat().st_size > 44  # samples are in the file
            os.kill(os.getpid(), getattr(signal, signal_name))

        return written_then_signalled

    monkeypatch.setattr(soundfile.SoundFile, "write", signal_after(soundfile.SoundFile.write))
    monkeypatch.setattr(soundfile, "write", signal_after(soundfile.write))
    output = tmp_path / "out.wav"
    output.write_bytes(b"the previous output")
    model = ["--model", str(tiny_pipeline_folder), "--seed", "0", "--iterations", "1"]
    argv = {"convert": ["convert", str(clips["content"]), str(output)], "tts": ["tts", "the quick brown fox", str(output)]}
    with pytest.raises(SystemExit) as exit:
        cli.main(argv[command] + model)
    assert exit.value.code == 128 + getattr(signal, signal_name)
    error = capsys.readouterr().err
    assert error == f"soundstorm-hf {command}: stopped by {signal_name}\n"
    assert output.read_bytes() == b"the previous output"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out.wav"]


def test_push_without_token_or_network_is_one_line_at_once(tiny_pipeline_folder, capsys, monkeypatch):
    import time

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    fails(capsys, ["push", str(tiny_pipeline_folder), "me/tiny"], "pushing needs a Hub token: pass --token")
    started = time.perf_counter()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    fails(capsys, ["push", str(tiny_pipeline_folder), "me/tiny", "--token", "hf_x"], "cannot push to http://127.0.0.1:9: ConnectError")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    fails(capsys, ["push", str(tiny_pipeline_folder), "me/tiny", "--token", "hf_x"], "OfflineModeIsEnabled")
    assert time.perf_counter() - started < 5


def test_help_and_argument_errors_import_neither_torch_nor_transformers():
    """`--help` and a usage error answer at once: the CLI imports torch, transformers and gradio only in the
    commands that need them (beyond what `import soundstorm_hf` itself loads)."""
    import subprocess

    code = """
import sys
import soundstorm_hf
before = set(sys.modules)
from soundstorm_hf import cli
for argv in (["--help"], ["convert", "--help"], ["demo", "--help"], ["convert"], ["tts", "hi", "o.wav", "--seed", "x"]):
    try:
        cli.main(argv)
    except SystemExit:
        pass
print("HEAVY", sorted({name.split(".")[0] for name in set(sys.modules) - before} & {"torch", "transformers", "gradio"}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.splitlines()[-1] == "HEAVY []", result.stdout[-500:] + result.stderr[-2000:]
