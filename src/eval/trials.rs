//! A trial list ready for scoring, and the one path from embeddings to
//! scores and metrics that `eval`, `compare` and training validation share:
//! trials → cosine scores → ROC → EER and minDCF at the config's priors.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use super::calibration;
use super::calibration::{Qmf, Side};
use super::metrics::{MetricError, Roc};
use super::score::{cosine, AsNorm, NormScores};
use crate::config::EvalConfig;
use crate::lists::{preflight, read_trials, trial_files, ListedFile, Trial};

/// Metrics of one score set.
#[derive(Debug, Clone, Serialize)]
pub struct ScoreSummary {
    pub trials: usize,
    pub targets: usize,
    /// Equal error rate in percent.
    pub eer: f64,
    pub eer_threshold: f64,
    /// `min_dcf_p05`, `min_dcf_p05_threshold`, … for each P_target.
    #[serde(flatten)]
    pub min_dcf: BTreeMap<String, f64>,
    /// minCllr in bits: the Cllr of the best monotone map of these scores
    /// (of the LLRs, when the set is calibrated) to LLRs (pool adjacent
    /// violators).
    pub min_cllr: f64,
    /// Cllr in bits of the calibrated LLRs, when this set is calibrated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cllr: Option<f64>,
    /// `act_dcf_p05`, …: the DCF of the calibrated LLRs at the Bayes
    /// threshold of each P_target, when this set is calibrated.
    #[serde(flatten)]
    pub act_dcf: BTreeMap<String, f64>,
    /// The calibrated LLRs' own metrics, when this set is calibrated: with
    /// quality measures they rank trials differently from the scores.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llr: Option<Box<ScoreSummary>>,
}

impl ScoreSummary {
    /// The minimum DCF at `p_target` (one of the config's).
    pub fn min_dcf_at(&self, p_target: f64) -> f64 {
        self.min_dcf.get(&dcf_key(p_target)).copied().unwrap_or(f64::NAN)
    }

    /// The actual DCF at `p_target`, when the set is calibrated.
    pub fn act_dcf_at(&self, p_target: f64) -> Option<f64> {
        self.act_dcf.get(&act_dcf_key(p_target)).copied()
    }
}

/// `act_dcf_p05` for P_target 0.05.
pub fn act_dcf_key(p: f64) -> String {
    dcf_key(p).replacen("min_", "act_", 1)
}

/// `min_dcf_p05` for P_target 0.05.
pub fn dcf_key(p: f64) -> String {
    let pct = p * 100.0;
    if (pct - pct.round()).abs() < 1e-9 {
        format!("min_dcf_p{:02}", pct.round() as u64)
    } else {
        format!("min_dcf_p{}", format!("{p}").replace("0.", ""))
    }
}

/// The trials of a list, their distinct files (checked) and labels.
#[derive(Debug, Clone)]
pub struct TrialSet {
    pub list: PathBuf,
    pub trials: Vec<Trial>,
    /// The distinct files, in order of first appearance; embeddings are
    /// passed in this order.
    pub files: Vec<ListedFile>,
    pub labels: Vec<bool>,
    /// For each trial, the indices of its two files in `files`.
    pairs: Vec<(usize, usize)>,
}

impl TrialSet {
    /// Reads `list` and checks every file under `root` (exists, WAV header,
    /// `sample_rate`) before any work; errors name the list, line and file.
    pub fn load(list: &Path, root: Option<&Path>, sample_rate: u32) -> Result<Self> {
        let trials = read_trials(list)?;
        let unique = trial_files(&trials);
        let files = preflight(list, &unique, root, sample_rate)?;
        let index: HashMap<&str, usize> = unique.iter().enumerate().map(|(i, (f, _))| (f.as_str(), i)).collect();
        let pairs = trials.iter().map(|t| (index[t.enroll.as_str()], index[t.test.as_str()])).collect();
        let labels = trials.iter().map(|t| t.target).collect();
        Ok(Self { list: list.to_path_buf(), trials, files, labels, pairs })
    }

    /// For each trial, the indices of its two files.
    pub fn pairs(&self) -> &[(usize, usize)] {
        &self.pairs
    }

    /// Cosine score of every trial, from the embeddings of [`TrialSet::files`].
    pub fn cosine_scores(&self, embs: &[Vec<f32>]) -> Vec<f64> {
        self.pairs.iter().map(|&(a, b)| cosine(&embs[a], &embs[b])).collect()
    }

    /// `[score, quality measures…]` of every trial: its score, then each
    /// measure of its two recordings (their lengths at `sample_rate`, and
    /// their embeddings, those of [`TrialSet::files`]).
    pub fn features(&self, embs: &[Vec<f32>], sample_rate: u32, qmfs: &[Qmf], scores: &[f64]) -> Vec<Vec<f64>> {
        let sides: Vec<Side> = self.files.iter().zip(embs).map(|(f, e)| Side::new(f.samples, sample_rate, e)).collect();
        self.pairs
            .iter()
            .zip(scores)
            .map(|(&(a, b), &s)| std::iter::once(s).chain(qmfs.iter().map(|q| q.of([sides[a], sides[b]]))).collect())
            .collect()
    }

    /// AS-normalised scores of every trial (z, t and s) against a cohort,
    /// from the raw scores and the embeddings of [`TrialSet::files`]. Each
    /// side keeps its `top_k` best cohort scores, or the whole cohort where
    /// that is smaller (`AsNorm` clamps).
    pub fn asnorm_scores(&self, embs: &[Vec<f32>], cohort: &[Vec<f32>], top_k: usize, raw: &[f64]) -> Vec<NormScores> {
        let stats = AsNorm::new(cohort, top_k).stats_all(embs);
        self.pairs.iter().zip(raw).map(|(&(a, b), &s)| AsNorm::normalize(s, stats[a], stats[b])).collect()
    }

    /// EER and minDCF of one score set at the config's priors and costs; a
    /// score that is not a finite number is an error naming its trial.
    pub fn summarize(&self, scores: &[f64], eval: &EvalConfig) -> Result<(ScoreSummary, Roc)> {
        self.summarize_named(scores, eval, "score")
    }

    /// [`TrialSet::summarize`], naming the values `what` in errors.
    fn summarize_named(&self, scores: &[f64], eval: &EvalConfig, what: &str) -> Result<(ScoreSummary, Roc)> {
        let roc = Roc::new(scores, &self.labels).map_err(|e| match e {
            MetricError::NonFinite { index } => {
                let t = &self.trials[index];
                anyhow::anyhow!(
                    "{}:{}: ({} {}): the {what} is not a finite number",
                    self.list.display(),
                    t.line,
                    t.enroll,
                    t.test
                )
            }
            e => anyhow::anyhow!("{}: {e}", self.list.display()),
        })?;
        let eer = roc.eer();
        let mut min_dcf = BTreeMap::new();
        for &p in &eval.p_targets {
            let d = roc.min_dcf(p, eval.c_miss, eval.c_fa);
            let key = dcf_key(p);
            min_dcf.insert(key.clone(), d.value);
            min_dcf.insert(format!("{key}_threshold"), d.threshold);
        }
        let summary = ScoreSummary {
            trials: scores.len(),
            targets: self.labels.iter().filter(|&&l| l).count(),
            eer: eer.value,
            eer_threshold: eer.threshold,
            min_dcf,
            min_cllr: calibration::min_cllr(scores, &self.labels),
            cllr: None,
            act_dcf: BTreeMap::new(),
            llr: None,
        };
        Ok((summary, roc))
    }

    /// Metrics of `llrs`, this set's calibrated scores: the full summary of
    /// the LLRs with Cllr and the actual DCF at the config's priors, which
    /// are also added to the scores' `summary`. A non-finite LLR is an
    /// error naming its trial.
    pub fn add_calibrated(&self, summary: &mut ScoreSummary, llrs: &[f64], eval: &EvalConfig) -> Result<ScoreSummary> {
        let (mut llr, _) = self.summarize_named(llrs, eval, "calibrated score")?;
        llr.cllr = Some(calibration::cllr(llrs, &self.labels));
        for &p in &eval.p_targets {
            llr.act_dcf.insert(act_dcf_key(p), calibration::act_dcf(llrs, &self.labels, p, eval.c_miss, eval.c_fa));
        }
        summary.cllr = llr.cllr;
        summary.act_dcf = llr.act_dcf.clone();
        summary.llr = Some(Box::new(llr.clone()));
        Ok(llr)
    }
}
