//! Detection metrics: ROC, equal error rate and minimum detection cost.
//!
//! The ROC follows scikit-learn's `roc_curve` with `drop_intermediate=True`,
//! which the reference evaluation uses: ties collapse to one point, collinear
//! points are dropped, and (0, 0, +inf) is prepended. Dropping collinear points
//! changes the EER on tied scores, so it is reproduced step by step.

/// A receiver operating characteristic, one point per kept threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Roc {
    pub fpr: Vec<f64>,
    pub tpr: Vec<f64>,
    /// Decision thresholds; the first is `+inf`.
    pub thresholds: Vec<f64>,
}

/// An operating point with the threshold that reaches it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OperatingPoint {
    pub value: f64,
    pub threshold: f64,
}

/// Errors in the score/label input.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MetricError {
    #[error("scores and labels differ in length ({0} vs {1})")]
    Length(usize, usize),
    #[error("no target trials: the EER needs both target and non-target trials")]
    NoTargets,
    #[error("no non-target trials: the EER needs both target and non-target trials")]
    NoNonTargets,
    #[error("score {index} is not a finite number")]
    NonFinite { index: usize },
}

impl Roc {
    /// Builds the ROC of `scores` (higher = more likely target) against `labels`.
    pub fn new(scores: &[f64], labels: &[bool]) -> Result<Self, MetricError> {
        if scores.len() != labels.len() {
            return Err(MetricError::Length(scores.len(), labels.len()));
        }
        if let Some(index) = scores.iter().position(|s| !s.is_finite()) {
            return Err(MetricError::NonFinite { index });
        }
        let n_pos = labels.iter().filter(|&&l| l).count();
        if n_pos == 0 {
            return Err(MetricError::NoTargets);
        }
        if n_pos == labels.len() {
            return Err(MetricError::NoNonTargets);
        }
        // Descending order of score. Ties are collapsed below, so their order is irrelevant.
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[b].partial_cmp(&scores[a]).unwrap());

        // One point per distinct score: the last index of each run of equal scores.
        let mut tps = Vec::new();
        let mut fps = Vec::new();
        let mut thr = Vec::new();
        let mut cum_tp = 0.0f64;
        for (i, &idx) in order.iter().enumerate() {
            if labels[idx] {
                cum_tp += 1.0;
            }
            let last_of_run = i + 1 == order.len() || scores[order[i + 1]] != scores[idx];
            if last_of_run {
                tps.push(cum_tp);
                fps.push((i + 1) as f64 - cum_tp);
                thr.push(scores[idx]);
            }
        }

        // Drop collinear points: keep those where either second difference is non-zero,
        // plus the first and the last.
        if fps.len() > 2 {
            let n = fps.len();
            let mut keep = vec![true; n];
            for i in 1..n - 1 {
                let d2f = fps[i + 1] - 2.0 * fps[i] + fps[i - 1];
                let d2t = tps[i + 1] - 2.0 * tps[i] + tps[i - 1];
                keep[i] = d2f != 0.0 || d2t != 0.0;
            }
            let filter = |v: &[f64]| -> Vec<f64> { v.iter().zip(&keep).filter(|(_, &k)| k).map(|(x, _)| *x).collect() };
            tps = filter(&tps);
            fps = filter(&fps);
            thr = filter(&thr);
        }

        tps.insert(0, 0.0);
        fps.insert(0, 0.0);
        thr.insert(0, f64::INFINITY);
        let (p, n) = (*tps.last().unwrap(), *fps.last().unwrap());
        Ok(Roc { fpr: fps.iter().map(|f| f / n).collect(), tpr: tps.iter().map(|t| t / p).collect(), thresholds: thr })
    }

    /// Miss rates, 1 - TPR.
    pub fn fnr(&self) -> Vec<f64> {
        self.tpr.iter().map(|t| 1.0 - t).collect()
    }

    /// Equal error rate in percent: the first point minimising |FNR - FPR|,
    /// reported as the larger of the two.
    pub fn eer(&self) -> OperatingPoint {
        let fnr = self.fnr();
        let mut best = 0;
        let mut best_gap = f64::INFINITY;
        for (i, (fnr_i, fpr_i)) in fnr.iter().zip(&self.fpr).enumerate() {
            let gap = (fnr_i - fpr_i).abs();
            if gap < best_gap {
                best_gap = gap;
                best = i;
            }
        }
        OperatingPoint { value: fnr[best].max(self.fpr[best]) * 100.0, threshold: self.thresholds[best] }
    }

    /// Normalised minimum detection cost at prior `p_target`.
    pub fn min_dcf(&self, p_target: f64, c_miss: f64, c_fa: f64) -> OperatingPoint {
        let fnr = self.fnr();
        let mut min_c = f64::INFINITY;
        let mut threshold = self.thresholds[0];
        for (i, (fnr_i, fpr_i)) in fnr.iter().zip(&self.fpr).enumerate() {
            let c = c_miss * fnr_i * p_target + c_fa * fpr_i * (1.0 - p_target);
            if c < min_c {
                min_c = c;
                threshold = self.thresholds[i];
            }
        }
        let c_def = (c_miss * p_target).min(c_fa * (1.0 - p_target));
        OperatingPoint { value: min_c / c_def, threshold }
    }
}

/// EER in percent of a score set.
pub fn eer(scores: &[f64], labels: &[bool]) -> Result<OperatingPoint, MetricError> {
    Ok(Roc::new(scores, labels)?.eer())
}

/// Normalised minDCF of a score set.
pub fn min_dcf(
    scores: &[f64],
    labels: &[bool],
    p_target: f64,
    c_miss: f64,
    c_fa: f64,
) -> Result<OperatingPoint, MetricError> {
    Ok(Roc::new(scores, labels)?.min_dcf(p_target, c_miss, c_fa))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_set_by_hand() {
        // Sorted: 0.9(T) 0.8(T) 0.7(N) 0.5(T) 0.3(N) 0.2(N).
        let s = [0.9, 0.8, 0.3, 0.5, 0.2, 0.7];
        let l = [true, true, false, true, false, false];
        let roc = Roc::new(&s, &l).unwrap();
        assert_eq!(roc.thresholds[0], f64::INFINITY);
        let e = roc.eer();
        assert!((e.value - 100.0 / 3.0).abs() < 1e-9, "{}", e.value);
    }

    #[test]
    fn rejects_one_class() {
        assert_eq!(Roc::new(&[0.1, 0.2], &[true, true]), Err(MetricError::NoNonTargets));
        assert_eq!(Roc::new(&[0.1, 0.2], &[false, false]), Err(MetricError::NoTargets));
        assert_eq!(Roc::new(&[0.1, f64::NAN], &[true, false]), Err(MetricError::NonFinite { index: 1 }));
    }
}
