#!/usr/bin/env python3
"""CPU inference speed of nexttdnn, onnxruntime (running our ONNX export) and
PyTorch (the reference implementation), on the same loaded weights,
interleaved round by round on one machine. Prints one table of medians and
the ratios `other's time / ours` (above 1: nexttdnn is faster).

    python3 tests/reference/side_by_side.py --out OUT \\
        --model assets/model/demo.nexttdnn.safetensors \\
        --checkpoint ../shared/fixtures/C256_B3_K65_7.safetensors=configs/NeXt_TDNN_C256_B3_K65_7.ron \\
        --seconds 4,8 --batches 1,8 --rounds 2

* `--model M`: one of our model files. `--checkpoint CKPT=CONFIG`: an
  official checkpoint, imported first with `nexttdnn import`. `--fresh
  CONFIG`: a size with no checkpoint at hand, with fresh weights drawn by the
  reference implementation's initialisation (seed 0), written under the
  official names and imported the same way.
* nexttdnn: `nexttdnn --device cpu bench --model M` (the waveform-to-embedding
  measurements; batch 1 is the single-recording path, larger batches the
  padded-batch path of `eval`).
* onnxruntime: `nexttdnn export --onnx` of the same file (waveform input,
  front end in the graph), graph optimisation level "all", `--threads`
  intra-op threads, run with and without its denormals-as-zero switch; the
  faster of the two is reported.
* PyTorch: the reference implementation (`--torch-ref`, `nexttdnn_ref.py`,
  its fused path) with the same tensors, renamed to the official keys and
  transposed where the official layers are `[out, in]`; `--threads` threads,
  with and without `torch.set_flush_denormal`, the faster reported.

Each cell is the median over rounds of each round's median; the last two
columns compare the fastest single calls instead (the minimum over every
round and repeat), which a busy machine disturbs less.

Every engine runs in its own child process. Needs numpy, onnxruntime and
torch (PyTorch is skipped, with a note, where it is not installed), and for
`--fresh` the `safetensors` package.
"""
import argparse
import importlib.util
import json
import os
import re
import statistics
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SR = 16000


# ---------------------------------------------------------------------------
# Model files
# ---------------------------------------------------------------------------
def read_safetensors(path):
    """Header metadata and {name: numpy array} of a float32 safetensors file."""
    import numpy as np

    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    body = data[8 + n :]
    tensors = {}
    for name, h in header.items():
        assert h["dtype"] == "F32", f"{path}: {name} is {h['dtype']}"
        a, b = h["data_offsets"]
        tensors[name] = np.frombuffer(body[a:b], dtype=np.float32).reshape(h["shape"])
    return meta, tensors


def ron_config(text):
    """The fields of our RON config the reference implementation needs."""

    def field(name):
        m = re.search(rf"\b{name}: *([^,\n]+)", text)
        return m.group(1).strip()

    def numbers(name):
        m = re.search(rf"\b{name}: *\[([^\]]*)\]", text, re.S)
        return [int(v) for v in re.findall(r"\d+", m.group(1))]

    return {
        "block": "TSConvNeXt_light" if field("block") == "Light" else "TSConvNeXt",
        "channels": int(field("channels")),
        "depths": numbers("depths"),
        "kernels": numbers("kernels"),
        "embedding_dim": int(field("embedding_dim")),
    }


# Our parameter names → the official ones (the inverse of the key map of
# `nexttdnn import`), and whether the values are transposed on the way.
OURS_TO_OFFICIAL = [
    (r"^stem\.(weight|bias)$", r"model.stem.0.0.\1", False),
    (r"^stem_norm\.(weight|bias)$", r"model.stem.0.1.\1", False),
    (r"^stages\.(\d+)\.(\d+)\.msc\.projection\.(weight|bias)$", r"model.stages.\1.\2.projection_linear.\3", False),
    (r"^stages\.(\d+)\.(\d+)\.msc\.branches\.(\d+)\.(weight|bias)$", r"model.stages.\1.\2.mscconv.\3.\4", False),
    (r"^stages\.(\d+)\.(\d+)\.msc\.pointwise\.weight$", r"model.stages.\1.\2.pwconv_1stage.weight", True),
    (r"^stages\.(\d+)\.(\d+)\.msc\.pointwise\.bias$", r"model.stages.\1.\2.pwconv_1stage.bias", False),
    (r"^stages\.(\d+)\.(\d+)\.depthwise\.(weight|bias)$", r"model.stages.\1.\2.dwconv.\3", False),
    (r"^stages\.(\d+)\.(\d+)\.ffn\.norm\.(weight|bias)$", r"model.stages.\1.\2.norm.\3", False),
    (r"^stages\.(\d+)\.(\d+)\.ffn\.expand\.weight$", r"model.stages.\1.\2.pwconv1.weight", True),
    (r"^stages\.(\d+)\.(\d+)\.ffn\.expand\.bias$", r"model.stages.\1.\2.pwconv1.bias", False),
    (r"^stages\.(\d+)\.(\d+)\.ffn\.grn\.(gamma|beta)$", r"model.stages.\1.\2.grn.\3", False),
    (r"^stages\.(\d+)\.(\d+)\.ffn\.project\.weight$", r"model.stages.\1.\2.pwconv2.weight", True),
    (r"^stages\.(\d+)\.(\d+)\.ffn\.project\.bias$", r"model.stages.\1.\2.pwconv2.bias", False),
    (r"^mfa_conv\.(weight|bias)$", r"model.MFA.0.\1", False),
    (r"^mfa_norm\.(weight|bias)$", r"model.MFA.1.\1", False),
    (r"^head\.attn_conv1\.(weight|bias)$", r"aggregate.conv_1.\1", False),
    (r"^head\.attn_conv2\.(weight|bias)$", r"aggregate.conv_2.\1", False),
    (r"^head\.attn_bn\.(\w+)$", r"aggregate.bn1.\1", False),
    (r"^head\.stats_bn\.(\w+)$", r"aggregate.bn2.\1", False),
    (r"^head\.embed_bn\.(\w+)$", r"aggregate.bn3.\1", False),
    (r"^head\.fc\.weight$", r"aggregate.fc.weight", True),
    (r"^head\.fc\.bias$", r"aggregate.fc.bias", False),
    (r"^aam\.weight$", r"loss_function.weight", False),
]


def reference_config(R, text):
    """The reference implementation's `Config` for our RON config `text`."""
    c = ron_config(text)
    return R.Config(c["block"], c["channels"], tuple(c["depths"]), tuple(c["kernels"]), c["embedding_dim"], 1)


def official_tensors(ours):
    out = {}
    for name, value in ours.items():
        for pattern, repl, transpose in OURS_TO_OFFICIAL:
            if re.match(pattern, name):
                out[re.sub(pattern, repl, name)] = value.T.copy() if transpose else value
                break
        else:
            raise SystemExit(f"no official name for parameter {name}")
    return out


# ---------------------------------------------------------------------------
# Workers: one engine in one process, printing one JSON line per measurement
# ---------------------------------------------------------------------------
def signals(seconds, batch):
    import numpy as np

    rng = np.random.default_rng(7)
    return (0.1 * rng.standard_normal((batch, int(seconds * SR)))).astype(np.float32)


def timed(fn, warmup, repeats):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ts), min(ts)


def worker_ort(a):
    import onnxruntime as ort

    for ftz in (False, True):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = a.threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if ftz:
            opts.add_session_config_entry("session.set_denormal_as_zero", "1")
        sess = ort.InferenceSession(a.onnx, opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        for s in a.seconds:
            for b in a.batches:
                x = signals(s, b)
                ms, fastest = timed(lambda: sess.run(None, {name: x}), a.warmup, a.repeats)
                print(json.dumps({"ftz": ftz, "seconds": s, "batch": b, "ms": ms, "min_ms": fastest}), flush=True)


def worker_torch(a):
    import numpy as np
    import torch

    sys.path.insert(0, a.torch_ref)
    import nexttdnn_ref as R

    torch.set_num_threads(a.threads)
    meta, ours = read_safetensors(a.params)
    cfg = reference_config(R, meta["config"])
    p = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in official_tensors(ours).items()}
    fe = R.FrontEnd()
    for ftz in (False, True):
        torch.set_flush_denormal(ftz)
        for s in a.seconds:
            for b in a.batches:
                x = torch.from_numpy(signals(s, b))

                def run():
                    with torch.inference_mode():
                        R.embed(x, p, cfg, fe, train=False, fast=True)

                ms, fastest = timed(run, a.warmup, a.repeats)
                print(json.dumps({"ftz": ftz, "seconds": s, "batch": b, "ms": ms, "min_ms": fastest}), flush=True)


def worker_fresh(a):
    """Writes fresh weights for the config `a.params` under the official names."""
    from safetensors.torch import save_file

    sys.path.insert(0, a.torch_ref)
    import nexttdnn_ref as R

    with open(a.params) as f:
        cfg = reference_config(R, f.read())
    params = R.init_params(cfg, seed=0)
    save_file({k: v.contiguous() for k, v in params.items()}, a.dest)


# ---------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------
def sh(cmd, log):
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=f, text=True)
        f.write(r.stdout)
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}; see {log}")
    return r.stdout


def cpu_line():
    model, flags = "unknown CPU", set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{model}, {isa}, {os.cpu_count()} logical cores"


def prepare(a):
    """Our model files (importing the checkpoints), their ONNX exports."""
    models = []
    for m in a.model:
        models.append((os.path.basename(m).split(".")[0], m))
    specs = [spec.split("=", 1) for spec in a.checkpoint]
    for config in a.fresh:
        name = os.path.basename(config).removesuffix(".ron").removeprefix("NeXt_TDNN_") + "_fresh"
        ckpt = os.path.join(a.out, name + ".safetensors")
        sh([sys.executable, os.path.abspath(__file__), "--worker", "fresh", "--params", config,
            "--dest", ckpt, "--torch-ref", a.torch_ref], a.log)
        specs.append((ckpt, config))
    for ckpt, config in specs:
        name = os.path.basename(ckpt).split(".")[0]
        out = os.path.join(a.out, name + ".nexttdnn.safetensors")
        sh([a.bin, "--device", "cpu", "import", ckpt, "--config", config, "--out", out], a.log)
        models.append((name, out))
    for name, path in models:
        sh([a.bin, "--device", "cpu", "export", "--model", path, "--onnx", os.path.join(a.out, name + ".onnx")], a.log)
    return models


def ours(a, path):
    """`nexttdnn bench` medians: {(seconds, batch): ms}."""
    report = os.path.join(a.out, "bench.json")
    sh(
        [a.bin, "--device", "cpu", "bench", "--model", path,
         "--seconds", ",".join(map(str, a.seconds)), "--eval-batch", ",".join(map(str, a.batches)),
         "--frontend-batch", "0", "--warmup", str(a.warmup), "--repeats", str(a.repeats), "--out", report],
        a.log,
    )
    got = {}
    for m in json.load(open(report))["measurements"]:
        r = re.match(r"embed ([\d.]+) s \(batch (\d+),", m["name"])
        if r:
            got[(float(r.group(1)), int(r.group(2)))] = (m["median_ms"], m["min_ms"])
    return got


def other(a, worker, args):
    """A worker's (median, fastest) per (seconds, batch), each the best of its two float modes."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", worker, "--threads", str(a.threads),
           "--seconds", ",".join(map(str, a.seconds)), "--batches", ",".join(map(str, a.batches)),
           "--warmup", str(a.warmup), "--repeats", str(a.repeats)] + args
    got = {}
    for line in sh(cmd, a.log).splitlines():
        r = json.loads(line)
        key = (r["seconds"], r["batch"])
        ms, fastest = got.get(key, (float("inf"), float("inf")))
        got[key] = (min(ms, r["ms"]), min(fastest, r["min_ms"]))
    return got


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="folder for the exports, the logs and side_by_side.json")
    ap.add_argument("--bin", default="target/release/nexttdnn")
    ap.add_argument("--model", action="append", default=[], help="our model file")
    ap.add_argument("--checkpoint", action="append", default=[], help="CKPT=CONFIG, an official checkpoint")
    ap.add_argument("--fresh", action="append", default=[], help="CONFIG: fresh weights (no checkpoint)")
    ap.add_argument("--torch-ref", default=os.path.join(HERE, "..", "..", "..", "shared", "reference"))
    ap.add_argument("--seconds", default="4,8", type=lambda s: [float(v) for v in s.split(",")])
    ap.add_argument("--batches", default="1,8", type=lambda s: [int(v) for v in s.split(",")])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--worker", choices=["ort", "torch", "fresh"], help=argparse.SUPPRESS)
    ap.add_argument("--onnx", help=argparse.SUPPRESS)
    ap.add_argument("--params", help=argparse.SUPPRESS)
    ap.add_argument("--dest", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker == "ort":
        return worker_ort(a)
    if a.worker == "torch":
        return worker_torch(a)
    if a.worker == "fresh":
        return worker_fresh(a)
    if not a.out:
        ap.error("--out is required")
    if a.fresh and importlib.util.find_spec("safetensors") is None:
        ap.error("--fresh writes the fresh weights with the `safetensors` package: pip install safetensors")
    os.makedirs(a.out, exist_ok=True)
    a.log = os.path.join(a.out, "side_by_side.log")
    torch_ok = not a.skip_torch and subprocess.run([sys.executable, "-c", "import torch"]).returncode == 0
    models = prepare(a)
    runs = {}  # (model, engine) -> [{(s, b): ms} per round]
    for r in range(a.rounds):
        for name, path in models:
            print(f"round {r + 1}/{a.rounds}: {name}", file=sys.stderr, flush=True)
            runs.setdefault((name, "nexttdnn"), []).append(ours(a, path))
            onnx = os.path.join(a.out, name + ".onnx")
            runs.setdefault((name, "onnxruntime"), []).append(other(a, "ort", ["--onnx", onnx]))
            if torch_ok:
                runs.setdefault((name, "pytorch"), []).append(other(a, "torch", ["--params", path, "--torch-ref", a.torch_ref]))
    report(a, models, runs, torch_ok)


def report(a, models, runs, torch_ok):
    def over_rounds(name, engine, key, which, reduce):
        """`reduce` over rounds of the rounds' median (`which` 0) or fastest call (1)."""
        vals = [r[key][which] for r in runs.get((name, engine), []) if key in r]
        return reduce(vals) if vals else float("nan")

    def med(name, engine, key):
        return over_rounds(name, engine, key, 0, statistics.median)

    def fastest(name, engine, key):
        return over_rounds(name, engine, key, 1, min)

    print(f"\n{cpu_line()}; {a.threads} threads; medians of {a.rounds} rounds of {a.repeats} repeats; ms per call\n")
    print("| model | audio | batch | nexttdnn | onnxruntime | PyTorch | onnxruntime / ours | PyTorch / ours "
          "| fastest: onnxruntime / ours | fastest: PyTorch / ours |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for name, _ in models:
        for s in a.seconds:
            for b in a.batches:
                o, x, t = (med(name, e, (s, b)) for e in ("nexttdnn", "onnxruntime", "pytorch"))
                fo, fx, ft = (fastest(name, e, (s, b)) for e in ("nexttdnn", "onnxruntime", "pytorch"))
                rows.append({"model": name, "seconds": s, "batch": b, "nexttdnn_ms": o, "onnxruntime_ms": x,
                             "pytorch_ms": t if torch_ok else None, "nexttdnn_min_ms": fo,
                             "onnxruntime_min_ms": fx, "pytorch_min_ms": ft if torch_ok else None})
                tt = f"{t:.1f}" if torch_ok else "n/a"
                tr = f"{t / o:.2f}" if torch_ok else "n/a"
                ftr = f"{ft / fo:.2f}" if torch_ok else "n/a"
                print(f"| {name} | {s:g} s | {b} | {o:.1f} | {x:.1f} | {tt} | {x / o:.2f} | {tr} | {fx / fo:.2f} | {ftr} |")
    if not torch_ok:
        print("\nPyTorch: not installed (pip install torch), or --skip-torch")
    with open(os.path.join(a.out, "side_by_side.json"), "w") as f:
        json.dump({"cpu": cpu_line(), "threads": a.threads, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
