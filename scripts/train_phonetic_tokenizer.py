"""Train the CTC phone recognizer of `CtcPhoneticTokenizer` on the corpus, then fit its k-means and save it.

    nohup nice -n 10 python scripts/train_phonetic_tokenizer.py --corpus /work/data/corpus \
        --work-dir /work/data/phonetic --output /work/data/phonetic/tokenizer > /work/data/phonetic.log 2>&1 &

Targets are espeak-ng's phonemes (`-x`, stress marks dropped) of every English transcript in the corpus's train
split; the voices of the held-out speakers are never seen. Speed perturbation (0.85-1.15, which moves pitch and
formants together, like a different vocal tract), random gain and SpecAugment push the recognizer to ignore the
voice. Checkpoints go to `--work-dir` every 100 steps and a re-run resumes from the last one; the corpus is re-read
on resume, so training can start while `build_corpus.py` is still adding voices.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import subprocess
import time
from pathlib import Path

import numpy as np
import soundfile
import soxr
import torch

from soundstorm_hf.tokenizers.kmeans import KMeansQuantizer
from soundstorm_hf.tokenizers.phonetic_semantic import CtcPhoneticTokenizer, PhoneRecognizer

NON_ENGLISH = ("asterisk-fr", "asterisk-es", "asterisk-it", "asterisk-ru")
MAX_SECONDS = 12.0


def phonemize(text: str) -> list[str]:
    """espeak-ng's US English phoneme mnemonics for `text`, without stress marks and pauses."""
    output = subprocess.run(["espeak-ng", "-q", "-x", "--sep= ", "-v", "en-us", text], capture_output=True,
                            text=True, check=True).stdout
    phones = (phone.strip("',%=") for phone in output.split())
    return [phone for phone in phones if phone and not phone.startswith("_")]


def load_rows(corpus: Path, split: str, cache: Path) -> list[dict]:
    """English transcribed rows of one split, with their phonemes (cached per text in `cache`)."""
    metadata = corpus / split / "metadata.csv"
    if not metadata.is_file():
        return []
    known = json.loads(cache.read_text()) if cache.is_file() else {}
    rows = []
    for row in csv.DictReader(open(metadata)):
        if not row["text"] or row["source"] in NON_ENGLISH:
            continue
        if row["text"] not in known:
            known[row["text"]] = phonemize(row["text"])
        rows.append({**row, "path": str(corpus / split / row["file_name"]), "phones": known[row["text"]]})
    cache.write_text(json.dumps(known))
    return rows


def read_audio(path: str) -> np.ndarray | None:
    audio, rate = soundfile.read(path, dtype="float32")
    assert rate == 16000, path
    return audio if len(audio) <= MAX_SECONDS * rate else None


def make_batch(items: list[tuple[np.ndarray, list[int]]], augment: bool, hop: int):
    waves, targets = [], []
    for audio, phones in items:
        if augment:
            factor = random.uniform(0.85, 1.15)  # played `factor` times faster: pitch and formants scale by it
            audio = soxr.resample(audio, 16000 * factor, 16000) * random.uniform(0.3, 1.5)
        waves.append(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)))
        targets.append(torch.tensor(phones))
    lengths = torch.tensor([len(w) for w in waves])
    frames = math.ceil(int(lengths.max()) / hop)
    batch = torch.zeros(len(waves), frames * hop)
    for index, wave in enumerate(waves):
        batch[index, : len(wave)] = wave
    return batch, lengths, targets


def phone_error_rate(model: PhoneRecognizer, items, hop: int) -> float:
    """Greedy CTC decoding vs targets: total edit distance / total target length."""
    model.eval()
    errors = total = 0
    with torch.inference_mode():
        for start in range(0, len(items), 16):
            batch, lengths, targets = make_batch(items[start:start + 16], False, hop)
            _, logits, frame_lengths = model(batch, lengths)
            for row, length, target in zip(logits.argmax(-1), frame_lengths, targets):
                path = torch.unique_consecutive(row[:length]).tolist()
                errors += edit_distance([p for p in path if p != 0], target.tolist())
                total += len(target)
    model.train()
    return errors / max(total, 1)


def edit_distance(a: list[int], b: list[int]) -> int:
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-seconds", type=float, default=40.0)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--layer", type=int, default=3, help="recognizer layer whose states are clustered")
    parser.add_argument("--clusters", type=int, default=256)
    parser.add_argument("--kmeans-utterances", type=int, default=1500)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    random.seed(0)
    torch.manual_seed(0)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    cache = args.work_dir / "phonemes.json"

    rows = load_rows(args.corpus, "train", cache)
    validation = load_rows(args.corpus, "validation", cache)
    inventory_path = args.work_dir / "phones.json"
    if inventory_path.is_file():  # fixed at the first run, so a resumed model keeps its output layer
        phones = json.loads(inventory_path.read_text())
    else:
        phones = sorted({phone for row in rows + validation for phone in row["phones"]})
        inventory_path.write_text(json.dumps(phones))
    index = {phone: i + 1 for i, phone in enumerate(phones)}  # 0 = blank

    def items(selected):
        loaded = []
        for row in selected:
            audio = read_audio(row["path"])
            if audio is not None and all(p in index for p in row["phones"]):
                loaded.append((audio, [index[p] for p in row["phones"]]))
        return loaded

    started = time.time()
    train = items(rows)
    held_out = items(random.Random(0).sample(validation, min(120, len(validation))))
    speakers = sorted({row["speaker"] for row in rows})
    print(f"{len(train)} train utterances ({sum(len(a) for a, _ in train) / 16000 / 3600:.2f} h, "
          f"{len(speakers)} speakers: {' '.join(speakers)}), {len(held_out)} validation, {len(phones)} phones, "
          f"loaded in {time.time() - started:.0f} s", flush=True)

    model = PhoneRecognizer(len(phones))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.01)
    checkpoint_path, step = args.work_dir / "checkpoint.pt", 0
    if checkpoint_path.is_file():
        state = torch.load(checkpoint_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        print(f"resumed at step {step}", flush=True)
    warmup = 200
    schedule = lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps))  # noqa: E731
    ctc = torch.nn.CTCLoss(blank=0, zero_infinity=True)
    model.train()
    started, losses = time.time(), []
    while step < args.steps:
        chosen, seconds = [], 0.0
        while seconds < args.batch_seconds:
            chosen.append(random.choice(train))
            seconds += len(chosen[-1][0]) / 16000
        batch, lengths, targets = make_batch(chosen, True, model.hop_length)
        _, logits, frame_lengths = model(batch, lengths)
        log_probs = logits.log_softmax(-1).transpose(0, 1)  # (frames, batch, classes)
        loss = ctc(log_probs, torch.cat(targets), frame_lengths, torch.tensor([len(t) for t in targets]))
        for group in optimizer.param_groups:
            group["lr"] = args.learning_rate * schedule(step)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        losses.append(loss.item())
        if step % 100 == 0 or step == args.steps:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step},
                       checkpoint_path)
            message = f"step {step} loss {np.mean(losses):.3f} ({(time.time() - started) / len(losses):.2f} s/step)"
            if step % 500 == 0 or step == args.steps:
                message += f" validation PER {phone_error_rate(model, held_out, model.hop_length):.3f}"
            print(message, flush=True)
            started, losses = time.time(), []

    model.eval()
    tokenizer = CtcPhoneticTokenizer(model, layer=args.layer, phones=phones)
    # Clusters from an even spread over the training speakers, not the first files of the largest ones.
    sample = random.Random(1).sample(train, min(args.kmeans_utterances, len(train)))
    tokenizer.fit((torch.from_numpy(audio) for audio, _ in sample), num_clusters=args.clusters, max_frames=None)
    tokenizer.save_pretrained(args.output)
    print(f"saved {args.output}", flush=True)


if __name__ == "__main__":
    main()
