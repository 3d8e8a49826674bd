#!/usr/bin/env python3
"""PyTorch evaluation of an official NeXt-TDNN checkpoint, for comparing
`nexttdnn eval` with PyTorch on the same checkpoint and trials.

The network is written here from docs/MODEL.md with the official
parameter names, so the released `.pt` files load with `strict=True`; the
front end uses the checkpoint's own window and filterbank buffers. Before
evaluating, `--check-fixtures DIR` compares its embeddings with the reference
outputs stored next to the checkpoints (`<variant>_outputs.safetensors`).

    python3 tests/reference/pytorch_eval.py --checkpoint C256_B3_K65_7.pt \\
        --config configs/NeXt_TDNN_C256_B3_K65_7.ron --trials trials.txt \\
        --wav-root test/wav --check-fixtures ../shared/fixtures --out scores.txt

Needs torch, numpy, scikit-learn and (for --check-fixtures) safetensors; not
run by `cargo test`.
"""
import argparse
import math
import re
import sys
import wave

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def ron_value(text, key):
    m = re.search(r"\b" + key + r"\s*:\s*([^,\)\n]+)", text)
    if not m:
        raise SystemExit(f"config: no `{key}`")
    return m.group(1).strip()


def load_config(path):
    text = open(path).read()
    num = lambda k: float(ron_value(text, k))
    kernels = [int(v) for v in re.search(r"kernels\s*:\s*\[([^\]]*)\]", text).group(1).split(",") if v.strip()]
    depths = [int(v) for v in re.search(r"depths\s*:\s*\[([^\]]*)\]", text).group(1).split(",") if v.strip()]
    return dict(
        block=ron_value(text, "block"),
        channels=int(num("channels")),
        depths=depths,
        kernels=kernels,
        stem_kernel=int(num("stem_kernel")),
        ffn_expansion=int(num("ffn_expansion")),
        bottleneck=int(num("pool_bottleneck")),
        emb=int(num("embedding_dim")),
        ln_eps=num("layer_norm_eps"),
        grn_eps=num("grn_eps"),
        bn_eps=num("batch_norm_eps"),
        var_floor=num("pool_var_floor"),
        n_fft=int(num("n_fft")),
        hop=int(num("hop_length")),
        pre_emphasis=num("pre_emphasis"),
        log_offset=num("log_offset"),
    )


class LayerNormChannels(nn.Module):
    """LayerNorm over the channel axis of [B, C, T]."""

    def __init__(self, c, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.eps = eps

    def forward(self, x):
        return F.layer_norm(x.transpose(1, 2), (x.shape[1],), self.weight, self.bias, self.eps).transpose(1, 2)


class GRN(nn.Module):
    def __init__(self, c, eps):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, c))
        self.beta = nn.Parameter(torch.zeros(1, 1, c))
        self.eps = eps

    def forward(self, x):  # [B, T, C]
        g = torch.norm(x, p=2, dim=1, keepdim=True)
        n = g / (g.mean(dim=-1, keepdim=True) + self.eps)
        return self.gamma * (x * n) + self.beta + x


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        c = cfg["channels"]
        self.light = cfg["block"] == "Light"
        if self.light:
            k = cfg["kernels"][0]
            self.dwconv = nn.Conv1d(c, c, k, padding=(k - 1) // 2, groups=c)
        else:
            chunk = c // len(cfg["kernels"])
            self.projection_linear = nn.Conv1d(c, c, 1)
            self.mscconv = nn.ModuleList(
                [nn.Conv1d(chunk, chunk, k, padding=(k - 1) // 2, groups=chunk) for k in cfg["kernels"]]
            )
            self.pwconv_1stage = nn.Linear(c, c)
        h = cfg["ffn_expansion"] * c
        self.norm = nn.LayerNorm(c, eps=cfg["ln_eps"])
        self.pwconv1 = nn.Linear(c, h)
        self.grn = GRN(h, cfg["grn_eps"])
        self.pwconv2 = nn.Linear(h, c)

    def forward(self, x):  # [B, C, T]
        if self.light:
            x = x + self.dwconv(x)
        else:
            y = self.projection_linear(x)
            parts = torch.chunk(y, len(self.mscconv), dim=1)
            y = torch.cat([conv(p) for conv, p in zip(self.mscconv, parts)], dim=1)
            y = F.gelu(y)
            y = self.pwconv_1stage(y.transpose(1, 2)).transpose(1, 2)
            x = x + y
        y = self.norm(x.transpose(1, 2))
        y = self.grn(F.gelu(self.pwconv1(y)))
        return x + self.pwconv2(y).transpose(1, 2)


class Backbone(nn.Module):
    def __init__(self, cfg, n_mels=80):
        super().__init__()
        c = cfg["channels"]
        self.stem = nn.Sequential(
            nn.Sequential(nn.Conv1d(n_mels, c, cfg["stem_kernel"]), LayerNormChannels(c, cfg["ln_eps"]))
        )
        self.stages = nn.ModuleList([nn.Sequential(*[Block(cfg) for _ in range(d)]) for d in cfg["depths"]])
        d = c * len(cfg["depths"])
        self.MFA = nn.Sequential(nn.Conv1d(d, d, 1), LayerNormChannels(d, cfg["ln_eps"]))

    def forward(self, x):
        x = self.stem(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return self.MFA(torch.cat(outs, dim=1))


class Pooling(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg["channels"] * len(cfg["depths"])
        i = cfg["bottleneck"]
        self.conv_1 = nn.Conv1d(d, i, 1)
        self.bn1 = nn.BatchNorm1d(i, eps=cfg["bn_eps"])
        self.conv_2 = nn.Conv1d(i, d, 1)
        self.bn2 = nn.BatchNorm1d(2 * d, eps=cfg["bn_eps"])
        self.fc = nn.Linear(2 * d, cfg["emb"])
        self.bn3 = nn.BatchNorm1d(cfg["emb"], eps=cfg["bn_eps"])
        self.var_floor = cfg["var_floor"]

    def forward(self, h):
        w = torch.softmax(self.conv_2(torch.tanh(self.bn1(self.conv_1(h)))), dim=2)
        mu = torch.sum(w * h, dim=2)
        sg = torch.sqrt((torch.sum(w * h * h, dim=2) - mu * mu).clamp(min=self.var_floor))
        return self.bn3(self.fc(self.bn2(torch.cat([mu, sg], dim=1))))


class Model(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.model = Backbone(cfg)
        self.aggregate = Pooling(cfg)

    def features(self, wav, window, fb):
        c = self.cfg
        x = wav.unsqueeze(0)
        x = torch.cat([x[:, 1:2], x], dim=1)  # reflect pad 1 on the left
        x = x[:, 1:] - c["pre_emphasis"] * x[:, :-1]
        spec = torch.stft(x, c["n_fft"], c["hop"], window.shape[0], window, center=True, pad_mode="reflect",
                          return_complex=True)
        mel = torch.matmul(spec.abs().pow(2).transpose(1, 2), fb).transpose(1, 2)
        logmel = torch.log(mel + c["log_offset"])
        return logmel - logmel.mean(dim=-1, keepdim=True)

    def forward(self, feats):
        return self.aggregate(self.model(feats))


def read_wav(path):
    with wave.open(path, "rb") as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2, path
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return torch.from_numpy(data.astype(np.float32) / 32768.0)


def load(checkpoint, cfg):
    sd = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if "state_dict" in sd:
        sd = sd["state_dict"]
    sd = {k.removeprefix("speaker_net."): v for k, v in sd.items()}
    fe = {k: v for k, v in sd.items() if k.startswith("feature_extractor.")}
    net = {k: v for k, v in sd.items() if not k.startswith(("feature_extractor.", "loss_function."))}
    model = Model(cfg)
    model.load_state_dict(net, strict=True)
    model.eval()
    window = next(v for k, v in fe.items() if k.endswith(".window")).float()
    fb = next(v for k, v in fe.items() if k.endswith(".fb")).float()
    return model, window, fb


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--trials", required=True)
    ap.add_argument("--wav-root", required=True)
    ap.add_argument("--check-fixtures")
    ap.add_argument("--out")
    a = ap.parse_args()
    torch.set_num_threads(2)
    cfg = load_config(a.config)
    model, window, fb = load(a.checkpoint, cfg)
    if a.check_fixtures:
        from safetensors.numpy import load_file
        import os
        variant = os.path.basename(a.checkpoint).removesuffix(".pt")
        out = load_file(os.path.join(a.check_fixtures, f"{variant}_outputs.safetensors"))
        for key in sorted(k for k in out if k.endswith(".embedding")):
            utt = key.removesuffix(".embedding")
            wav = read_wav(os.path.join(a.check_fixtures, f"{utt}.wav"))
            with torch.no_grad():
                e = model(model.features(wav, window, fb))[0].numpy()
            ref = out[key].reshape(-1)
            print(f"fixture {utt}: max abs {np.abs(e - ref).max():.2e}", file=sys.stderr)
    trials = [l.split() for l in open(a.trials) if l.strip()]
    files = sorted({f for t in trials for f in t[1:]})
    emb = {}
    with torch.no_grad():
        for f in files:
            wav = read_wav(f"{a.wav_root}/{f}")
            emb[f] = F.normalize(model(model.features(wav, window, fb)), dim=1)[0]
    scores = [float(emb[t[1]] @ emb[t[2]]) for t in trials]
    labels = [int(t[0]) for t in trials]
    from sklearn.metrics import roc_curve
    fpr, tpr, thr = roc_curve(labels, scores, pos_label=1)
    fnr = 1 - tpr
    i = np.nanargmin(np.abs(fnr - fpr))
    eer = max(fpr[i], fnr[i]) * 100
    print(f"{len(trials)} trials, {len(files)} files: EER {eer:.3f} %")
    if a.out:
        with open(a.out, "w") as o:
            for t, s in zip(trials, scores):
                o.write(f"{t[1]} {t[2]} {s:.6f} {t[0]}\n")


if __name__ == "__main__":
    main()
