#!/usr/bin/env python3
"""Builds a VoxCeleb1-E-shaped evaluation set from a small corpus, for the
`eval` scale benchmark (BENCHMARKS.md).

    make_eval_scale.py SRC_ROOT OUT [--files 20000] [--cohort 6000] [--trials 580000]

SRC_ROOT is a tree <speaker>/<...>/<utterance>.wav of 16 kHz mono 16-bit WAV
files. Each output file is made of one speaker's utterances, joined and cut to
a length drawn like VoxCeleb1's (4 s minimum, mean about 8 s; here at most
20 s). Written: OUT/wav/<speaker>/<nnnnn>/<mmm>.wav, OUT/trials.txt
(`label enroll test`, half targets), OUT/cohort.txt (files apart from the
trial files). Standard library only, deterministic for a seed.
"""
import argparse
import array
import os
import random
import sys
import wave

RATE = 16000


def read_pcm(path):
    with wave.open(path, "rb") as w:
        if w.getframerate() != RATE or w.getnchannels() != 1 or w.getsampwidth() != 2:
            return None
        a = array.array("h")
        a.frombytes(w.readframes(w.getnframes()))
        return a


def sources(root):
    by_speaker = {}
    for dirpath, _, names in os.walk(root):
        for n in sorted(names):
            if n.endswith(".wav"):
                rel = os.path.relpath(os.path.join(dirpath, n), root)
                by_speaker.setdefault(rel.split(os.sep)[0], []).append(os.path.join(dirpath, n))
    return {s: sorted(v) for s, v in sorted(by_speaker.items())}


def length(rng):
    # 4 s plus an exponential tail of mean 4.2 s, at most 20 s.
    return int(RATE * min(20.0, 4.0 + rng.expovariate(1 / 4.2)))


def make_file(rng, pool, n):
    out = array.array("h")
    while len(out) < n:
        out.extend(pool[rng.randrange(len(pool))])
    return out[:n]


def write(path, pcm):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.tobytes())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--cohort", type=int, default=6000)
    ap.add_argument("--trials", type=int, default=580000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    pools = {}
    for spk, files in sources(a.src).items():
        pcm = [p for p in (read_pcm(f) for f in files) if p is not None and len(p) > 0]
        if pcm:
            pools[spk] = pcm
    speakers = sorted(pools)
    if len(speakers) < 2:
        sys.exit(f"{a.src}: need at least two speakers with 16 kHz mono 16-bit WAV files")
    made = {}
    total = a.files + a.cohort
    for i in range(total):
        spk = speakers[i % len(speakers)]
        rel = f"{spk}/{i // 100:05d}/{i % 100:03d}.wav"
        write(os.path.join(a.out, "wav", rel), make_file(rng, pools[spk], length(rng)))
        if i < a.files:
            made.setdefault(spk, []).append(rel)
        if (i + 1) % 2000 == 0:
            print(f"{i + 1}/{total} files", file=sys.stderr)
    trial_files = [f for fs in made.values() for f in fs]
    cohort = [f"{speakers[i % len(speakers)]}/{i // 100:05d}/{i % 100:03d}.wav" for i in range(a.files, total)]
    with open(os.path.join(a.out, "cohort.txt"), "w") as f:
        f.writelines(c + "\n" for c in cohort)
    spk_of = {f: f.split("/")[0] for f in trial_files}
    with open(os.path.join(a.out, "trials.txt"), "w") as f:
        for t in range(a.trials):
            enroll = trial_files[rng.randrange(len(trial_files))]
            if t % 2 == 0:
                same = made[spk_of[enroll]]
                test = same[rng.randrange(len(same))]
                while test == enroll and len(same) > 1:
                    test = same[rng.randrange(len(same))]
            else:
                test = trial_files[rng.randrange(len(trial_files))]
                while spk_of[test] == spk_of[enroll]:
                    test = trial_files[rng.randrange(len(trial_files))]
            f.write(f"{int(spk_of[test] == spk_of[enroll])} {enroll} {test}\n")
    print(f"{len(trial_files)} trial files over {len(made)} speakers, {len(cohort)} cohort files, {a.trials} trials in {a.out}")


if __name__ == "__main__":
    main()
