"""How much the offline semantic tokens follow the words rather than the voice, for each tokenizer given.

    python scripts/measure_semantic_tokens.py --corpus /work/data/corpus \
        --tokenizer mfcc=/work/data/mfcc_tokenizer --tokenizer phonetic=/work/data/phonetic/tokenizer \
        --output benchmarks/results/semantic_tokens.json

Utterances: the validation sentences (never in any tokenizer's training text) as spoken by every voice of the
corpus's validation and test_speakers splits, leading and trailing silence trimmed (librosa, 35 dB).

- Agreement: for two token sequences, the share of equal tokens along a DTW alignment. Two alignments are reported:
  `token_dtw` (the path that maximizes agreement, so it needs no other features) and `mfcc_dtw` (the path of
  per-utterance-normalized MFCCs, the same path for every tokenizer). Pairs: the same sentence by two different
  voices (the goal: at least 0.35, and at least twice the different-sentence figures), a different sentence by the
  same voice, and a different sentence by a different voice.
- Phone purity and PNMI (as in the HuBERT paper) against PocketSphinx forced alignments (ARPAbet, 39 phones + SIL)
  of the same utterances: how well one token predicts the phone under it.

A missing MFCC tokenizer folder is fitted on the corpus's train split (the same utterances the phonetic tokenizer's
k-means saw) and saved there.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import random
import time
from collections import Counter, defaultdict
from pathlib import Path

import librosa
import numpy as np
import soundfile
import torch

from soundstorm_hf.evaluation import normalize_text
from soundstorm_hf.tokenizers import OfflineMfccTokenizer, load_semantic_tokenizer
from soundstorm_hf.tokenizers.spectral import mfcc, normalize_per_utterance

NON_ENGLISH = ("asterisk-fr", "asterisk-es", "asterisk-it", "asterisk-ru")


def read_split(corpus: Path, split: str) -> list[dict]:
    path = corpus / split / "metadata.csv"
    if not path.is_file():
        return []
    return [{**row, "path": str(corpus / split / row["file_name"])} for row in csv.DictReader(open(path))
            if row["text"] and row["source"] not in NON_ENGLISH]


def load_trimmed(path: str) -> np.ndarray:
    audio, rate = soundfile.read(path, dtype="float32")
    assert rate == 16000
    return librosa.effects.trim(audio, top_db=35)[0]


def alignment_features(audio: np.ndarray) -> np.ndarray:
    """Per-utterance-normalized MFCCs at 25 Hz from the MFCC tokenizer's own front end (for the shared path)."""
    tokenizer = OfflineMfccTokenizer()
    waveform = torch.from_numpy(audio)[None]
    with torch.inference_mode():
        return tokenizer.features(waveform, torch.tensor([audio.size]))[0].numpy()


def agreement(a: np.ndarray, b: np.ndarray, path: np.ndarray | None) -> float:
    """Share of equal tokens along `path` ((i, j) pairs), or along the agreement-maximizing DTW path if None."""
    if path is None:
        cost = (a[:, None] != b[None, :]).astype(np.float64)
        path = librosa.sequence.dtw(C=cost)[1]
    return float(np.mean(a[path[:, 0]] == b[path[:, 1]]))


def feature_path(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    cost = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    return librosa.sequence.dtw(C=cost)[1]


def forced_phones(audio: np.ndarray, text: str, frames: int) -> list[str] | None:
    """The ARPAbet phone under each 25 Hz frame, from PocketSphinx's forced alignment (None if it fails)."""
    from pocketsphinx import Decoder

    pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes()
    decoder = Decoder(samprate=16000, bestpath=False, loglevel="FATAL")
    try:
        decoder.set_align_text(normalize_text(text))
        for _ in range(2):  # first pass: words; second: phones
            decoder.start_utt()
            decoder.process_raw(pcm, full_utt=True)
            decoder.end_utt()
            if _ == 0:
                decoder.set_alignment()
        labels = ["SIL"] * frames
        for word in decoder.get_alignment():
            for phone in word:
                for frame in range(phone.start // 4, min(frames, (phone.start + phone.duration) // 4 + 1)):
                    labels[frame] = phone.name  # 100 Hz -> 25 Hz: the phone covering the frame's end wins
        return labels
    except (RuntimeError, ValueError):
        return None


def purity(tokens: list[np.ndarray], phones: list[list[str]]) -> dict:
    """Phone purity, cluster purity and PNMI of paired frame labels (HuBERT, Hsu et al. 2021, §IV-E)."""
    joint = Counter(zip(np.concatenate(tokens).tolist(), itertools.chain.from_iterable(phones)))
    total = sum(joint.values())
    by_token, by_phone = defaultdict(Counter), defaultdict(Counter)
    for (token, phone), count in joint.items():
        by_token[token][phone] += count
        by_phone[phone][token] += count
    phone_purity = sum(max(c.values()) for c in by_token.values()) / total
    cluster_purity = sum(max(c.values()) for c in by_phone.values()) / total
    p_token = {k: sum(c.values()) / total for k, c in by_token.items()}
    p_phone = {k: sum(c.values()) / total for k, c in by_phone.items()}
    mutual = sum(n / total * np.log(n / total / (p_token[t] * p_phone[p])) for (t, p), n in joint.items())
    phone_entropy = -sum(p * np.log(p) for p in p_phone.values())
    return {"phone_purity": round(phone_purity, 3), "cluster_purity": round(cluster_purity, 3),
            "pnmi": round(float(mutual / phone_entropy), 3), "frames": total}


def fit_mfcc(corpus: Path, folder: Path, num_clusters: int, utterances: int) -> None:
    rows = random.Random(1).sample(read_split(corpus, "train"), utterances)
    tokenizer = OfflineMfccTokenizer().fit((torch.from_numpy(load_trimmed(r["path"])) for r in rows),
                                           num_clusters=num_clusters, max_frames=None)
    tokenizer.save_pretrained(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--tokenizer", action="append", required=True, help="name=folder (repeatable)")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--max-sentences", type=int, default=40)
    parser.add_argument("--max-voices", type=int, default=8, help="voices per sentence")
    parser.add_argument("--mfcc-clusters", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = random.Random(0)

    rows = read_split(args.corpus, "validation") + read_split(args.corpus, "test_speakers")
    by_text: dict[str, dict[str, dict]] = defaultdict(dict)
    for row in rows:
        by_text[normalize_text(row["text"])].setdefault(row["speaker"], row)
    texts = sorted(text for text, voices in by_text.items() if len(voices) >= 2)
    texts = rng.sample(texts, min(args.max_sentences, len(texts)))
    chosen = [row for text in texts for row in rng.sample(sorted(by_text[text].values(), key=lambda r: r["speaker"]),
                                                          min(args.max_voices, len(by_text[text])))]
    print(f"{len(chosen)} utterances, {len(texts)} sentences, "
          f"{len({r['speaker'] for r in chosen})} voices", flush=True)

    audio = {row["path"]: load_trimmed(row["path"]) for row in chosen}
    features = {path: alignment_features(clip) for path, clip in audio.items()}
    phones = {row["path"]: forced_phones(audio[row["path"]], row["text"], len(features[row["path"]]))
              for row in chosen}

    # Pairs: same sentence / different voices; for each, a different sentence by the second voice and by another.
    by_speaker = defaultdict(list)
    for row in chosen:
        by_speaker[row["speaker"]].append(row)
    same, other_same_voice, other_other_voice = [], [], []
    for text in texts:
        voices = [row for row in chosen if normalize_text(row["text"]) == text]
        for first, second in itertools.combinations(voices, 2):
            same.append((first, second))
            candidates = [r for r in by_speaker[second["speaker"]] if normalize_text(r["text"]) != text]
            if candidates:
                other_same_voice.append((first, rng.choice(candidates)))
            candidates = [r for r in chosen if r["speaker"] not in (first["speaker"], second["speaker"])
                          and normalize_text(r["text"]) != text]
            if candidates:
                other_other_voice.append((first, rng.choice(candidates)))
    paths = {(a["path"], b["path"]): feature_path(features[a["path"]], features[b["path"]])
             for a, b in same + other_same_voice + other_other_voice}

    results = {"command": "python scripts/measure_semantic_tokens.py " + " ".join(
        f"--tokenizer {t}" for t in args.tokenizer), "corpus": str(args.corpus),
        "utterances": len(chosen), "sentences": len(texts), "voices": sorted(by_speaker),
        "pairs": {"same_sentence_different_voice": len(same), "different_sentence_same_voice": len(other_same_voice),
                  "different_sentence_different_voice": len(other_other_voice)},
        "tokenizers": {}}
    for spec in args.tokenizer:
        name, folder = spec.split("=", 1)
        if name == "mfcc" and not Path(folder).exists():
            started = time.time()
            fit_mfcc(args.corpus, Path(folder), args.mfcc_clusters, 1500)
            print(f"fitted the MFCC tokenizer in {time.time() - started:.0f} s", flush=True)
        tokenizer = load_semantic_tokenizer(folder)
        started = time.time()
        tokens = {path: tokenizer.encode(torch.from_numpy(clip))[0].numpy() for path, clip in audio.items()}
        seconds = time.time() - started
        entry = {"folder": folder, "vocab_size": tokenizer.vocab_size,
                 "encode_real_time_factor": round(seconds / (sum(map(len, audio.values())) / 16000), 4)}
        for alignment in ("token_dtw", "mfcc_dtw"):
            scores = {}
            for label, pairs in (("same_sentence_different_voice", same),
                                 ("different_sentence_same_voice", other_same_voice),
                                 ("different_sentence_different_voice", other_other_voice)):
                values = [agreement(tokens[a["path"]], tokens[b["path"]],
                                    paths[a["path"], b["path"]] if alignment == "mfcc_dtw" else None) for a, b in pairs]
                scores[label] = round(float(np.mean(values)), 3)
            scores["ratio_same_to_different"] = round(
                scores["same_sentence_different_voice"] / max(scores["different_sentence_same_voice"],
                                                              scores["different_sentence_different_voice"]), 2)
            entry[alignment] = scores
        aligned = [path for path in audio if phones[path] is not None]
        entry["purity"] = purity([tokens[p][: len(phones[p])] for p in aligned],
                                 [phones[p][: len(tokens[p])] for p in aligned])
        entry["purity"]["utterances"] = len(aligned)
        results["tokenizers"][name] = entry
        print(name, json.dumps(entry), flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
