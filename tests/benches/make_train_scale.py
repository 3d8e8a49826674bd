#!/usr/bin/env python3
"""Writes a VoxCeleb2-dev-sized train list over a small corpus, for the
training scale check (BENCHMARKS.md).

    make_train_scale.py WAV_ROOT OUT_LIST [--lines 1092009] [--speakers 5994]

WAV_ROOT holds <speaker>/<...>/<utterance>.wav. The list has the
voxceleb_trainer format (`speaker path`), VoxCeleb2 dev's 1 092 009 lines over
5 994 speakers, with paths that cycle through the corpus's files (so files
repeat under many speaker names). Standard library only, deterministic.
"""
import argparse
import os


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("wav_root")
    ap.add_argument("out_list")
    ap.add_argument("--lines", type=int, default=1092009)
    ap.add_argument("--speakers", type=int, default=5994)
    a = ap.parse_args()
    files = []
    for dirpath, _, names in os.walk(a.wav_root):
        files += [os.path.relpath(os.path.join(dirpath, n), a.wav_root) for n in names if n.endswith(".wav")]
    files.sort()
    if not files:
        raise SystemExit(f"{a.wav_root}: no .wav files")
    per = a.lines // a.speakers
    extra = a.lines - per * a.speakers
    n = 0
    with open(a.out_list + ".tmp", "w") as out:
        for s in range(a.speakers):
            for _ in range(per + (1 if s < extra else 0)):
                out.write(f"id{s:05d} {files[n % len(files)]}\n")
                n += 1
    os.replace(a.out_list + ".tmp", a.out_list)
    print(f"{a.out_list}: {n} lines, {a.speakers} speakers, {len(files)} distinct files")


if __name__ == "__main__":
    main()
