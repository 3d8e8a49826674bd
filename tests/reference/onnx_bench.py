#!/usr/bin/env python3
"""onnxruntime CPU time of an exported model, per utterance (batch 1, the
waveform graph, front end included), for comparison with `nexttdnn bench`.

    python3 tests/reference/onnx_bench.py --onnx M.onnx --seconds 4,8 --threads 2

Prints one JSON line per length: median and quartiles in milliseconds.
Needs numpy and onnxruntime.
"""
import argparse
import json
import time

import numpy as np
import onnxruntime as ort


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--seconds", default="4,8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15)
    a = ap.parse_args()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = a.threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(a.onnx, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    rng = np.random.default_rng(0)
    for s in [float(x) for x in a.seconds.split(",")]:
        x = (0.1 * rng.standard_normal((1, int(s * 16000)))).astype(np.float32)
        for _ in range(a.warmup):
            sess.run(None, {name: x})
        ts = []
        for _ in range(a.repeats):
            t = time.perf_counter()
            sess.run(None, {name: x})
            ts.append((time.perf_counter() - t) * 1e3)
        q = np.percentile(ts, [25, 50, 75])
        print(json.dumps({"onnx": a.onnx, "seconds": s, "threads": a.threads, "p25_ms": q[0], "median_ms": q[1], "p75_ms": q[2]}))


if __name__ == "__main__":
    main()
