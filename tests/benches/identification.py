#!/usr/bin/env python3
"""Identification accuracy of a model on a VoxCeleb-shaped corpus.

    identification.py CORPUS NEXTTDNN_BIN [MODEL] [--cohort-files N]

Embeds CORPUS/test_list.txt (and N files of CORPUS/train_list.txt as an
AS-norm cohort) with `nexttdnn embed`, enrolls each test speaker with the
first three recordings of one session, and identifies every other
recording of the test speakers:

* closed set (every test speaker enrolled): top-1 and top-5 accuracy;
* open set (every third speaker left out of the registry): the false-accept
  rate of the left-out speakers' recordings and the false-reject rate of
  the enrolled ones' at the model's decision rule (its calibration at the
  config's first P_target, else its stored threshold), and the open-set
  EER of the best scores;

for the three ways of scoring a speaker: the cosine with the mean of the
L2-normalised enrollments (what `identify` does), the best cosine over the
enrollments (`identify --max`), and AS-norm (s-norm, top-k of the config)
of the mean score against the cohort. Prints one JSON document.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from safetensors import safe_open


def embed(bin_, model, listed, root, out):
    lst = os.path.join(out, "list.txt")
    with open(lst, "w") as fh:
        fh.write("\n".join(listed) + "\n")
    cmd = [bin_, "--device", "cpu", "embed", "--list", lst, "--wav-root", root, "--out", os.path.join(out, "emb")]
    if model:
        cmd += ["--model", model]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    e = np.load(os.path.join(out, "emb", "embeddings.npy")).astype(np.float64)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def eer(tgt, non):
    s = np.concatenate([tgt, non])
    lab = np.concatenate([np.ones(len(tgt)), np.zeros(len(non))])
    order = np.argsort(-s, kind="stable")
    lab = lab[order]
    fr = 1 - np.cumsum(lab) / len(tgt)
    fa = np.cumsum(1 - lab) / len(non)
    i = np.argmin(np.abs(fr - fa))
    return float((fr[i] + fa[i]) / 2)


def main():
    corpus, bin_ = sys.argv[1], sys.argv[2]
    model = sys.argv[3] if len(sys.argv) > 3 and not sys.argv[3].startswith("--") else None
    n_cohort = int(sys.argv[sys.argv.index("--cohort-files") + 1]) if "--cohort-files" in sys.argv else 400
    model_path = model or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "assets", "model",
                                       "demo.nexttdnn.safetensors")
    with safe_open(model_path, "np") as f:
        meta = f.metadata()
    cfg = meta["config"]

    def cfg_num(key):
        i = cfg.index(key + ":")
        return cfg[i + len(key) + 1:].split(",")[0].split(")")[0].strip().strip("[")

    p_target, c_miss, c_fa = float(cfg_num("p_targets")), float(cfg_num("c_miss")), float(cfg_num("c_fa"))
    top_k = int(cfg_num("asnorm_top_k"))
    if "calibration" in meta and not json.loads(meta["calibration"]).get("weights", {}).keys() - {"score"}:
        cal = json.loads(meta["calibration"])
        bayes = np.log(c_fa * (1 - p_target) / (c_miss * p_target))
        rule = f"calibration at P_target {p_target} (LLR >= {bayes:.3f})"
        accept = lambda s: cal["bias"] + cal["weights"]["score"] * s >= bayes
    else:
        t = float(meta["threshold"])
        rule = f"stored threshold {t}"
        accept = lambda s: s >= t

    test = [l.split() for l in open(os.path.join(corpus, "test_list.txt")) if l.strip()]
    train = [l.split() for l in open(os.path.join(corpus, "train_list.txt")) if l.strip()]
    rng = np.random.default_rng(0)
    cohort_rows = [train[i] for i in sorted(rng.choice(len(train), min(n_cohort, len(train)), replace=False))]
    with tempfile.TemporaryDirectory() as tmp:
        os.makedirs(os.path.join(tmp, "t"))
        os.makedirs(os.path.join(tmp, "c"))
        emb = embed(bin_, model, [p for _, p in test], os.path.join(corpus, "test", "wav"), os.path.join(tmp, "t"))
        coh = embed(bin_, model, [p for _, p in cohort_rows], os.path.join(corpus, "train", "wav"),
                    os.path.join(tmp, "c"))

    # Enrollment: the first three recordings of each speaker's first session.
    speakers = sorted({s for s, _ in test})
    enroll, queries = {}, []
    for spk in speakers:
        rows = [(i, p) for i, (s, p) in enumerate(test) if s == spk]
        sessions = sorted({p.split("/")[1] for _, p in rows})
        first = [i for i, p in rows if p.split("/")[1] == sessions[0]][:3]
        enroll[spk] = first
        queries += [(i, spk) for i, _ in rows if i not in first]

    def stats(x, k):
        s = x @ coh.T
        top = -np.sort(-s, axis=-1)[..., :k]
        return top.mean(-1), top.std(-1, ddof=1)

    k = min(top_k, len(coh))
    means = {s: emb[enroll[s]].mean(0) for s in speakers}
    means = {s: m / np.linalg.norm(m) for s, m in means.items()}
    spk_stats = {s: stats(means[s], k) for s in speakers}

    def scores(q, spks, how):
        e = emb[q]
        if how == "mean":
            return np.array([e @ means[s] for s in spks])
        if how == "max":
            return np.array([(emb[enroll[s]] @ e).max() for s in spks])
        mq, sq = stats(e, k)
        raw = np.array([e @ means[s] for s in spks])
        return np.array([0.5 * ((r - mq) / sq + (r - spk_stats[s][0]) / spk_stats[s][1]) for r, s in zip(raw, spks)])

    out = {"corpus": corpus, "model": model_path, "speakers": len(speakers), "queries": len(queries),
           "enrollments_per_speaker": 3, "cohort": len(coh), "asnorm_top_k": k, "decision_rule": rule}
    enrolled_open = [s for i, s in enumerate(speakers) if i % 3 != 2]
    for how in ["mean", "max", "asnorm"]:
        top1 = top5 = 0
        best_in, best_out, fr, fa, wrong = [], [], 0, 0, 0
        for q, spk in queries:
            sc = scores(q, speakers, how)
            order = np.argsort(-sc, kind="stable")
            ranked = [speakers[j] for j in order]
            top1 += ranked[0] == spk
            top5 += spk in ranked[:5]
            so = scores(q, enrolled_open, how)
            b = int(np.argmax(so))
            if spk in enrolled_open:
                best_in.append(so[b])
                ok = how == "asnorm" or accept(so[b])
                fr += not ok
                wrong += ok and enrolled_open[b] != spk
            else:
                best_out.append(so[b])
                fa += how != "asnorm" and accept(so[b])
        res = {"top1": top1 / len(queries), "top5": top5 / len(queries),
               "open_set_eer": eer(np.array(best_in), np.array(best_out))}
        if how != "asnorm":
            res.update({"false_accept": fa / len(best_out), "false_reject": fr / len(best_in),
                        "misidentified": wrong / len(best_in)})
        out[how] = res
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
