#!/usr/bin/env python3
"""Reference values for score calibration, computed independently of nexttdnn.

Writes a JSON file of fixed score sets with:

* prior-weighted logistic-regression fits (the BOSARIS/pyllr objective) from
  scikit-learn's LogisticRegression without penalty (C = inf), the prior carried by
  sample weights P/Nt and (1-P)/Nn; scikit-learn's intercept is
  bias + logit(P). Each fit is refined by Newton steps in numpy and must
  agree with scikit-learn's to 1e-6;
* Cllr from its formula, minCllr from scikit-learn's isotonic regression
  (pool adjacent violators, ties pooled), and the actual and minimum DCF.

    python3 tests/reference/calibration_reference.py tests/fixtures/calibration_reference.json

Needs numpy and scikit-learn; not run by `cargo test` (the JSON is committed).
"""
import json
import math
import sys

import numpy as np
import sklearn
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

PRIORS = [0.01, 0.05, 0.5]
DCF_PRIORS = [0.01, 0.05]


def logit(p):
    return math.log(p / (1.0 - p))


def objective(theta, x, y, p):
    z = theta[0] + x @ theta[1:] + logit(p)
    nt, nn = y.sum(), (1 - y).sum()
    return float(p / nt * np.logaddexp(0, -z[y == 1]).sum() + (1 - p) / nn * np.logaddexp(0, z[y == 0]).sum())


def newton_refine(theta, x, y, p, steps=20):
    """Newton steps on the objective from `theta` (bias first)."""
    xt = np.hstack([np.ones((len(x), 1)), x])
    nt, nn = y.sum(), (1 - y).sum()
    w = np.where(y == 1, p / nt, (1 - p) / nn)
    for _ in range(steps):
        z = xt @ theta + logit(p)
        s = 1 / (1 + np.exp(-z))
        g = xt.T @ (w * (s - y))
        h = (xt * (w * s * (1 - s))[:, None]).T @ xt
        theta = theta - np.linalg.solve(h, g)
    return theta


def fit(x, y, p):
    nt, nn = y.sum(), (1 - y).sum()
    w = np.where(y == 1, p / nt, (1 - p) / nn)
    lr = LogisticRegression(C=np.inf, solver="newton-cg", tol=1e-12, max_iter=100000)
    lr.fit(x, y, sample_weight=w)
    theta = np.concatenate([[lr.intercept_[0] - logit(p)], lr.coef_[0]])
    refined = newton_refine(theta.copy(), x, y, p)
    assert np.max(np.abs(refined - theta)) < 1e-6, (theta, refined)
    return refined


def cllr(llr, y):
    t, n = llr[y == 1], llr[y == 0]
    ct = np.where(np.isposinf(t), 0.0, np.logaddexp(0, -t)).mean()
    cn = np.where(np.isneginf(n), 0.0, np.logaddexp(0, n)).mean()
    return float((ct + cn) / (2 * math.log(2)))


def pav_llr(scores, y):
    """Optimal monotone LLRs: isotonic posterior at the set's own prior."""
    # Pool tied scores first, then fit the isotonic posterior on the pools.
    uniq, inv = np.unique(scores, return_inverse=True)
    tgt = np.bincount(inv, weights=y.astype(float))
    cnt = np.bincount(inv).astype(float)
    post = IsotonicRegression(increasing=True).fit(uniq, tgt / cnt, sample_weight=cnt).predict(uniq)[inv]
    prior = logit(y.mean())
    with np.errstate(divide="ignore"):
        return np.log(post) - np.log1p(-post) - prior


def act_dcf(llr, y, p):
    t = -logit(p)
    pmiss = np.mean(llr[y == 1] < t)
    pfa = np.mean(llr[y == 0] >= t)
    return float((p * pmiss + (1 - p) * pfa) / min(p, 1 - p))


def min_dcf(scores, y, p):
    best = min(p, 1 - p)  # all rejected (p) or all accepted (1 - p)
    for th in np.unique(scores):
        pmiss = np.mean(scores[y == 1] < th)
        pfa = np.mean(scores[y == 0] >= th)
        best = min(best, p * pmiss + (1 - p) * pfa)
    return float(best / min(p, 1 - p))


def metrics(llr, y):
    return {
        "cllr": cllr(llr, y),
        "min_cllr": cllr(pav_llr(llr, y), y),
        "act_dcf": {str(p): act_dcf(llr, y, p) for p in DCF_PRIORS},
        "min_dcf": {str(p): min_dcf(llr, y, p) for p in DCF_PRIORS},
    }


def score_sets():
    rng = np.random.default_rng(20261203)
    nt, nn = 200, 800
    d = rng.uniform(2, 10, size=(nt + nn, 2))
    duration = np.log(d.min(axis=1))
    norm = rng.uniform(10, 20, size=nt + nn)
    tar = rng.normal(0.55, 0.12, nt) + 0.03 * (duration[:nt] - 1.5)
    non = rng.normal(0.10, 0.10, nn)
    gauss = {
        "scores": np.concatenate([tar, non]),
        "labels": np.concatenate([np.ones(nt), np.zeros(nn)]).astype(int),
        "qmf": {"duration": duration, "norm": norm},
    }
    small = {
        "scores": np.array([2.0, 1.0, 1.0, 0.5, -0.2, 1.0, 0.3, 0.0, -0.5, -1.0, -1.0, -2.0]),
        "labels": np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]),
        "qmf": {},
    }
    mu, m = 2.0, 1000
    calibrated = {
        "scores": np.concatenate([rng.normal(mu, math.sqrt(2 * mu), m), rng.normal(-mu, math.sqrt(2 * mu), m)]),
        "labels": np.concatenate([np.ones(m), np.zeros(m)]).astype(int),
        "qmf": {},
    }
    return {"gauss": gauss, "small": small, "calibrated": calibrated}


def main(out):
    result = {
        "_meta": {
            "fit": "llr = bias + sum_k w_k x_k minimising P/Nt sum_tar softplus(-(llr+logit P)) + (1-P)/Nn sum_non softplus(llr+logit P); scikit-learn LogisticRegression(C=inf) with sample weights, refined by Newton steps",
            "cllr": "(mean_tar log2(1+e^-llr) + mean_non log2(1+e^llr)) / 2",
            "min_cllr": "cllr of logit(isotonic posterior) - logit(Nt/N), tied scores pooled",
            "act_dcf": "(P Pmiss + (1-P) Pfa) / min(P, 1-P), accept when llr >= -logit(P)",
            "min_dcf": "the same minimised over thresholds, normalised alike",
            "metrics": "raw: the scores read as LLRs; calibrated_p05: the LLRs of the score-only fit at P=0.05",
            "numpy": np.__version__,
            "scikit_learn": sklearn.__version__,
            "seed": 20261203,
        }
    }
    for name, s in score_sets().items():
        scores, y = s["scores"], s["labels"]
        feature_sets = [["score"]]
        if s["qmf"]:
            feature_sets += [["score", "duration"], ["score", "duration", "norm"]]
        fits = []
        for p in PRIORS:
            for fs in feature_sets:
                x = np.column_stack([scores] + [s["qmf"][q] for q in fs[1:]])
                theta = fit(x, y, p)
                fits.append({
                    "p_target": p,
                    "features": fs,
                    "bias": float(theta[0]),
                    "weights": {f: float(w) for f, w in zip(fs, theta[1:])},
                    "objective": objective(theta, x, y, p),
                })
        base = next(f for f in fits if f["p_target"] == 0.05 and f["features"] == ["score"])
        llr = base["bias"] + base["weights"]["score"] * scores
        result[name] = {
            "scores": scores.tolist(),
            "labels": y.tolist(),
            "qmf": {k: v.tolist() for k, v in s["qmf"].items()},
            "fits": fits,
            "metrics": {"raw": metrics(scores, y), "calibrated_p05": metrics(llr, y)},
        }
    with open(out, "w") as f:
        json.dump(result, f)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
