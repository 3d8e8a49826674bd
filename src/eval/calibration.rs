//! Score calibration: an affine map from scores (and quality measures) to
//! log-likelihood ratios, fitted by prior-weighted logistic regression, and
//! the measures of how well a set of LLRs is calibrated (Cllr, minCllr,
//! actual DCF).
//!
//! The objective is the one BOSARIS and pyllr minimise: at prior `P`, with
//! `Nt` target and `Nn` non-target trials and `llr = b + Σ wₖ·xₖ`,
//!
//! ```text
//! J = P/Nt · Σ_tar softplus(-(llr + logit P)) + (1-P)/Nn · Σ_non softplus(llr + logit P)
//! ```
//!
//! It is convex in `(b, w)` and has at most four parameters here, so it is
//! solved by Newton's method to machine precision; no crate offers this fit
//! with prior weights and fixed offsets, and it is thirty lines.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::files::{read_text, write_atomic};

/// Quality measures a calibration can use besides the score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Qmf {
    /// `ln` of the shorter recording's duration in seconds.
    Duration,
    /// The mean L2 norm of the two (unnormalised) embeddings.
    Norm,
}

impl Qmf {
    pub fn name(self) -> &'static str {
        match self {
            Qmf::Duration => "duration",
            Qmf::Norm => "norm",
        }
    }

    pub fn parse(name: &str) -> Result<Self> {
        match name.trim() {
            "duration" => Ok(Qmf::Duration),
            "norm" => Ok(Qmf::Norm),
            other => bail!("unknown quality measure {other:?}: expected duration or norm"),
        }
    }

    /// The measure of one trial from its two recordings.
    pub fn of(self, sides: [Side; 2]) -> f64 {
        match self {
            Qmf::Duration => sides[0].seconds.min(sides[1].seconds).ln(),
            Qmf::Norm => 0.5 * (sides[0].norm + sides[1].norm),
        }
    }
}

/// What the quality measures need of one recording.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Side {
    pub seconds: f64,
    /// L2 norm of the embedding before normalisation.
    pub norm: f64,
}

impl Side {
    pub fn new(samples: usize, sample_rate: u32, embedding: &[f32]) -> Self {
        let norm = embedding.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
        Self { seconds: samples as f64 / sample_rate as f64, norm }
    }
}

/// An affine map to log-likelihood ratios, as stored in `cal.json` and in
/// model files: `llr = bias + weights.score · score + Σ weights.q · q`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// The prior the logistic regression was weighted for.
    pub p_target: f64,
    pub bias: f64,
    /// `score` and any of `duration`, `norm`.
    pub weights: BTreeMap<String, f64>,
    /// The score set the map applies to: `raw` (cosine) or `snorm`.
    #[serde(default = "raw_scores")]
    pub scores: String,
}

fn raw_scores() -> String {
    "raw".into()
}

/// The score sets a calibration can apply to.
pub const SCORE_SETS: [&str; 2] = ["raw", "snorm"];

impl Calibration {
    /// The quality measures it uses, in a fixed order.
    pub fn qmfs(&self) -> Vec<Qmf> {
        let mut q: Vec<Qmf> =
            self.weights.keys().filter(|k| *k != "score").filter_map(|k| Qmf::parse(k).ok()).collect();
        q.sort();
        q
    }

    /// The weights in feature order: `score`, then [`Calibration::qmfs`].
    fn feature_weights(&self) -> Vec<f64> {
        std::iter::once(self.weights["score"]).chain(self.qmfs().iter().map(|q| self.weights[q.name()])).collect()
    }

    /// The LLR of a score with the trial's quality measures (`qmf` in the
    /// order of [`Calibration::qmfs`]).
    pub fn llr(&self, score: f64, qmf: &[f64]) -> f64 {
        self.apply(&self.feature_weights(), score, qmf)
    }

    /// The LLR of every trial: `features[i]` is `[score, qmf…]`.
    pub fn llrs(&self, features: &[Vec<f64>]) -> Vec<f64> {
        let w = self.feature_weights();
        features.iter().map(|f| self.apply(&w, f[0], &f[1..])).collect()
    }

    fn apply(&self, w: &[f64], score: f64, qmf: &[f64]) -> f64 {
        let mut llr = self.bias + w[0] * score;
        for (w, v) in w[1..].iter().zip(qmf) {
            llr += w * v;
        }
        llr
    }

    /// Checks the fields, naming `origin` (a file, or a model file's
    /// stored calibration) in errors.
    pub fn validate(&self, origin: &str) -> Result<()> {
        if !(self.p_target > 0.0 && self.p_target < 1.0) {
            bail!("{origin}: p_target must be in (0, 1), not {}", self.p_target);
        }
        if !self.weights.contains_key("score") {
            bail!("{origin}: the calibration has no weight for \"score\"");
        }
        for (k, v) in &self.weights {
            if k != "score" {
                Qmf::parse(k).with_context(|| format!("{origin}: weight {k:?}"))?;
            }
            if !v.is_finite() {
                bail!("{origin}: weight {k:?} is not a finite number");
            }
        }
        if !self.bias.is_finite() {
            bail!("{origin}: bias is not a finite number");
        }
        if !SCORE_SETS.contains(&self.scores.as_str()) {
            bail!("{origin}: scores must be one of {SCORE_SETS:?}, not {:?}", self.scores);
        }
        Ok(())
    }

    pub fn from_json(text: &str, origin: &str) -> Result<Self> {
        let c: Self = serde_json::from_str(text).with_context(|| format!("{origin}: not a calibration"))?;
        c.validate(origin)?;
        Ok(c)
    }

    pub fn load(path: &Path) -> Result<Self> {
        Self::from_json(&read_text(path)?, &path.display().to_string())
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a calibration serialises")
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, format!("{}\n", self.to_json()).as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// Fits the map on `features[i] = [score, qmf…]` (named by `qmfs`) with
    /// labels, weighted for `p_target`.
    pub fn fit(features: &[Vec<f64>], labels: &[bool], qmfs: &[Qmf], p_target: f64) -> Result<Self> {
        let theta = fit_logistic(features, labels, p_target)?;
        let mut weights = BTreeMap::from([("score".to_string(), theta[1])]);
        for (q, w) in qmfs.iter().zip(&theta[2..]) {
            weights.insert(q.name().to_string(), *w);
        }
        Ok(Self { p_target, bias: theta[0], weights, scores: raw_scores() })
    }
}

/// `ln(1 + e^x)` without overflow.
pub fn softplus(x: f64) -> f64 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

pub fn logit(p: f64) -> f64 {
    (p / (1.0 - p)).ln()
}

/// Largest magnitude of a score or quality measure a calibration accepts.
const MAX_FEATURE: f64 = 1e6;

/// Checks a labelled score set: both classes, finite values of a sane size.
fn check_set(features: &[Vec<f64>], labels: &[bool]) -> Result<(usize, usize)> {
    if features.len() != labels.len() {
        bail!("{} feature rows for {} labels", features.len(), labels.len());
    }
    if let Some(i) = features.iter().position(|f| f.iter().any(|v| !v.is_finite())) {
        bail!("trial {} (counting from 1): a score or quality measure is not a finite number", i + 1);
    }
    // Cosine scores lie in [-1, 1] and normalised ones or LLRs within a few
    // hundred; far larger values overflow the fit's products.
    if let Some(i) = features.iter().position(|f| f.iter().any(|v| v.abs() > MAX_FEATURE)) {
        bail!(
            "trial {} (counting from 1): the value {:e} is outside ±{MAX_FEATURE:e}, which no score or quality measure reaches; is the file a score file?",
            i + 1,
            features[i].iter().find(|v| v.abs() > MAX_FEATURE).expect("found above")
        );
    }
    let nt = labels.iter().filter(|&&l| l).count();
    let nn = labels.len() - nt;
    if nt == 0 || nn == 0 {
        bail!("a calibration needs target and non-target trials; this set has {nt} target and {nn} non-target trials");
    }
    Ok((nt, nn))
}

/// Prior-weighted logistic regression: `[bias, w…]` minimising the module's
/// objective, by Newton's method with a backtracking line search.
pub fn fit_logistic(features: &[Vec<f64>], labels: &[bool], p_target: f64) -> Result<Vec<f64>> {
    let (theta, objective) = newton(features, labels, p_target)?;
    // With (almost) separable classes the infimum is 0 and is approached
    // only as the weights grow without bound: no finite map is best.
    if objective < 1e-6 || theta.iter().any(|v| v.abs() > 1e8) {
        bail!(
            "the scores separate target and non-target trials (almost) perfectly, so no finite map is best; \
             calibrate on a larger or harder trial list"
        );
    }
    Ok(theta)
}

/// The minimiser of the objective and its value.
fn newton(features: &[Vec<f64>], labels: &[bool], p_target: f64) -> Result<(Vec<f64>, f64)> {
    let (nt, nn) = check_set(features, labels)?;
    let dim = features[0].len() + 1;
    let offset = logit(p_target);
    let (wt, wn) = (p_target / nt as f64, (1.0 - p_target) / nn as f64);
    let objective = |theta: &[f64]| -> f64 {
        features
            .iter()
            .zip(labels)
            .map(|(x, &t)| {
                let z = theta[0] + theta[1..].iter().zip(x).map(|(w, v)| w * v).sum::<f64>() + offset;
                if t {
                    wt * softplus(-z)
                } else {
                    wn * softplus(z)
                }
            })
            .sum()
    };
    let mut theta = vec![0.0; dim];
    theta[0] = -offset;
    let mut j = objective(&theta);
    for _ in 0..200 {
        let (grad, hess) = gradient_hessian(features, labels, &theta, offset, (wt, wn));
        if grad.iter().all(|g| g.abs() < 1e-15) {
            return Ok((theta, j));
        }
        let step = solve(hess, &grad).context("the calibration's Newton system is singular (constant features?)")?;
        let mut t = 1.0;
        loop {
            let trial: Vec<f64> = theta.iter().zip(&step).map(|(a, s)| a - t * s).collect();
            let jt = objective(&trial);
            // Near the optimum the objective changes by rounding only: a
            // full Newton step is taken there, so the gradient still falls.
            if jt <= j + 1e-13 * j.abs() || t < 1e-12 {
                let moved = step.iter().map(|s| (t * s).abs()).fold(0.0, f64::max);
                theta = trial;
                j = jt;
                if moved < 1e-14 * theta.iter().map(|v| v.abs()).fold(1.0, f64::max) {
                    return Ok((theta, j));
                }
                break;
            }
            t *= 0.5;
        }
        if theta.iter().any(|v| v.abs() > 1e8) {
            break;
        }
    }
    Ok((theta, j))
}

fn gradient_hessian(
    features: &[Vec<f64>],
    labels: &[bool],
    theta: &[f64],
    offset: f64,
    (wt, wn): (f64, f64),
) -> (Vec<f64>, Vec<Vec<f64>>) {
    let dim = theta.len();
    let mut grad = vec![0.0; dim];
    let mut hess = vec![vec![0.0; dim]; dim];
    let mut xt = vec![1.0; dim];
    for (x, &t) in features.iter().zip(labels) {
        xt[1..].copy_from_slice(x);
        let z = theta.iter().zip(&xt).map(|(a, b)| a * b).sum::<f64>() + offset;
        let (w, g) = if t { (wt, -sigmoid(-z)) } else { (wn, sigmoid(z)) };
        let h = w * sigmoid(z) * sigmoid(-z);
        for i in 0..dim {
            grad[i] += w * g * xt[i];
            for k in 0..dim {
                hess[i][k] += h * xt[i] * xt[k];
            }
        }
    }
    (grad, hess)
}

/// Solves `a·x = b` by Gaussian elimination with partial pivoting.
fn solve(mut a: Vec<Vec<f64>>, b: &[f64]) -> Option<Vec<f64>> {
    let n = b.len();
    let mut b = b.to_vec();
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &k| a[i][col].abs().total_cmp(&a[k][col].abs()))?;
        if a[pivot][col].abs() < 1e-300 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let (upper, lower) = a.split_at_mut(col + 1);
        let pivot_row = &upper[col];
        for (offset, row) in lower.iter_mut().enumerate() {
            let f = row[col] / pivot_row[col];
            for (r, p) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                *r -= f * p;
            }
            b[col + 1 + offset] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

/// Cllr in bits: the prior-free cost of a set of LLRs.
pub fn cllr(llrs: &[f64], labels: &[bool]) -> f64 {
    let (mut st, mut sn, mut nt, mut nn) = (0.0, 0.0, 0usize, 0usize);
    for (&l, &t) in llrs.iter().zip(labels) {
        if t {
            st += if l == f64::INFINITY { 0.0 } else { softplus(-l) };
            nt += 1;
        } else {
            sn += if l == f64::NEG_INFINITY { 0.0 } else { softplus(l) };
            nn += 1;
        }
    }
    (st / nt as f64 + sn / nn as f64) / (2.0 * std::f64::consts::LN_2)
}

/// The LLRs of the optimal monotone recalibration of `scores` (pool
/// adjacent violators on the posterior at the set's own prior; tied scores
/// share a value).
pub fn pav_llrs(scores: &[f64], labels: &[bool]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Blocks of (targets, count, first index in `order`), ties pooled first.
    let mut blocks: Vec<(f64, f64, usize)> = vec![];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        let mut targets = 0.0;
        while j < order.len() && scores[order[j]] == scores[order[i]] {
            targets += labels[order[j]] as u8 as f64;
            j += 1;
        }
        blocks.push((targets, (j - i) as f64, i));
        while blocks.len() > 1 {
            let (t1, n1, s1) = blocks[blocks.len() - 2];
            let (t2, n2, _) = blocks[blocks.len() - 1];
            if t1 / n1 < t2 / n2 {
                break;
            }
            blocks.pop();
            *blocks.last_mut().unwrap() = (t1 + t2, n1 + n2, s1);
        }
        i = j;
    }
    let nt = labels.iter().filter(|&&l| l).count() as f64;
    let prior = logit(nt / scores.len() as f64);
    let mut out = vec![0.0; scores.len()];
    for (k, &(t, n, start)) in blocks.iter().enumerate() {
        let end = blocks.get(k + 1).map_or(order.len(), |b| b.2);
        let p = t / n;
        let llr = if p == 0.0 {
            f64::NEG_INFINITY
        } else if p == 1.0 {
            f64::INFINITY
        } else {
            logit(p) - prior
        };
        for &idx in &order[start..end] {
            out[idx] = llr;
        }
    }
    out
}

/// minCllr: the Cllr of the best monotone recalibration; `cllr - min_cllr`
/// is the calibration loss.
pub fn min_cllr(scores: &[f64], labels: &[bool]) -> f64 {
    cllr(&pav_llrs(scores, labels), labels)
}

/// The Bayes decision threshold on LLRs for a prior and costs.
pub fn bayes_threshold(p_target: f64, c_miss: f64, c_fa: f64) -> f64 {
    (c_fa * (1.0 - p_target) / (c_miss * p_target)).ln()
}

/// Normalised actual DCF of LLRs, deciding "target" when `llr >= ` the
/// Bayes threshold.
pub fn act_dcf(llrs: &[f64], labels: &[bool], p_target: f64, c_miss: f64, c_fa: f64) -> f64 {
    let t = bayes_threshold(p_target, c_miss, c_fa);
    let (mut miss, mut fa, mut nt, mut nn) = (0usize, 0usize, 0usize, 0usize);
    for (&l, &target) in llrs.iter().zip(labels) {
        if target {
            nt += 1;
            miss += (l < t) as usize;
        } else {
            nn += 1;
            fa += (l >= t) as usize;
        }
    }
    let c = c_miss * p_target * miss as f64 / nt as f64 + c_fa * (1.0 - p_target) * fa as f64 / nn as f64;
    c / (c_miss * p_target).min(c_fa * (1.0 - p_target))
}

/// A calibration and where it came from (a file, or the model file).
pub struct SourcedCalibration {
    pub calibration: Calibration,
    pub source: String,
}

/// `--calibration FILE`, else the model's stored calibration, else none.
pub fn calibration_for(
    file: Option<&Path>,
    model: &crate::weights::SpeakerModel,
    model_path: Option<&Path>,
) -> Result<Option<SourcedCalibration>> {
    if let Some(f) = file {
        return Ok(Some(SourcedCalibration { calibration: Calibration::load(f)?, source: f.display().to_string() }));
    }
    let Some(text) = &model.meta.calibration else { return Ok(None) };
    let source = match model_path {
        Some(p) => format!("stored in {}", p.display()),
        None => "stored in the model".into(),
    };
    Ok(Some(SourcedCalibration { calibration: Calibration::from_json(text, &source)?, source }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pav_pools_ties_and_violators() {
        // Sorted: 0(N) 1(T) 1(N) 2(N) 3(T): ties {1,1} → 1/2; then 2(N)=0
        // violates 1/2 and pools with it: {1,1,2} → 1/3.
        let s = [3.0, 1.0, 0.0, 1.0, 2.0];
        let l = [true, true, false, false, false];
        let llr = pav_llrs(&s, &l);
        let prior = logit(2.0 / 5.0);
        assert_eq!(llr[2], f64::NEG_INFINITY);
        assert!((llr[1] - (logit(1.0 / 3.0) - prior)).abs() < 1e-12);
        assert_eq!(llr[1], llr[3]);
        assert_eq!(llr[1], llr[4]);
        assert_eq!(llr[0], f64::INFINITY);
    }

    #[test]
    fn uninformative_llrs_cost_one_bit() {
        assert!((cllr(&[0.0, 0.0, 0.0], &[true, false, false]) - 1.0).abs() < 1e-15);
    }

    #[test]
    fn separable_scores_are_an_error() {
        let f: Vec<Vec<f64>> = [0.0, 1.0, 2.0, 3.0].iter().map(|&s| vec![s]).collect();
        let e = Calibration::fit(&f, &[false, false, true, true], &[], 0.05).unwrap_err();
        assert!(e.to_string().contains("separate"), "{e}");
    }
}
