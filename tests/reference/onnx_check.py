#!/usr/bin/env python3
"""Checks an ONNX model exported by `nexttdnn export --onnx` with the
reference tools: `onnx.checker.check_model` (full check, with shape
inference), then onnxruntime's embeddings against expected ones.

    python3 tests/reference/onnx_check.py --onnx M.onnx --expect cases.json

`cases.json` is a list of {"name", "input": "waveform"|"features",
"wav": PATH | "npy": PATH (float32 [n_mels, T]), "expect": [floats],
"min_cosine": X}. Prints one JSON line per case and exits with status 1 if
any case falls below its cosine, 2 if the model fails the checker.

Needs numpy, onnx and onnxruntime (pip install numpy onnx onnxruntime).
"""
import argparse
import json
import sys
import wave

import numpy as np
import onnx
import onnxruntime as ort


def read_wav(path):
    with wave.open(path) as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1, path
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--expect", required=True)
    args = ap.parse_args()
    model = onnx.load(args.onnx)
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:  # noqa: BLE001 - report whatever the checker raises
        print(json.dumps({"checker": str(e)}))
        sys.exit(2)
    meta = {p.key: p.value for p in model.metadata_props}
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(args.onnx, opts, providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name
    failed = False
    for case in json.load(open(args.expect)):
        x = read_wav(case["wav"]) if "wav" in case else np.load(case["npy"]).astype(np.float32)
        out = sess.run(None, {in_name: x[None]})[0][0].astype(np.float64)
        want = np.asarray(case["expect"], dtype=np.float64)
        cos = float(out @ want / (np.linalg.norm(out) * np.linalg.norm(want)))
        ok = bool(np.isfinite(out).all() and cos >= case["min_cosine"])
        failed |= not ok
        print(json.dumps({"name": case["name"], "cosine": cos, "max_abs": float(np.abs(out - want).max()), "ok": ok}))
    print(json.dumps({"metadata": meta, "input": in_name}))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
