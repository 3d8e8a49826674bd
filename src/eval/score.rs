//! Cosine scoring and adaptive score normalisation (see docs/MODEL.md,
//! 'Scoring' and 'AS-norm').

/// L2-normalises a vector (norm clamped away from zero).
pub fn normalized(v: &[f32]) -> Vec<f64> {
    let n = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt().max(1e-12);
    v.iter().map(|x| *x as f64 / n).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Cohort statistics of one embedding: mean and unbiased standard deviation
/// of its `top_k` highest cosine scores against the cohort.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CohortStats {
    pub mean: f64,
    pub std: f64,
}

/// Adaptive score normalisation against a cohort of embeddings.
///
/// The cohort scores of many embeddings at once are one float32 matrix
/// product (embeddings × cohortᵀ, in blocks of rows, through
/// `ops::host_gemm`, the fused CPU operations' product); each row's top-k
/// is found by selection, not a sort, and its mean and standard deviation
/// are accumulated in float64.
pub struct AsNorm {
    /// L2-normalised cohort, `[M, D]` row-major.
    cohort: Vec<f32>,
    dim: usize,
    top_k: usize,
}

/// The four score variants of one trial.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NormScores {
    pub raw: f64,
    pub z: f64,
    pub t: f64,
    pub s: f64,
}

/// Rows of embeddings scored against the cohort per matrix product: bounds
/// the score block to `ROWS_PER_BLOCK × M` floats (24 MB for 6 000 cohort files).
const ROWS_PER_BLOCK: usize = 1024;

/// L2-normalises a vector into float32 (norm in float64, clamped away from zero).
fn normalized_f32(v: &[f32]) -> impl Iterator<Item = f32> + '_ {
    let n = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt().max(1e-12);
    v.iter().map(move |x| (*x as f64 / n) as f32)
}

/// Mean and unbiased standard deviation of the `k` largest values of `row`
/// (reordered in place).
fn top_k_stats(row: &mut [f32], k: usize) -> CohortStats {
    let k = k.clamp(1, row.len());
    if k < row.len() {
        row.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    }
    let top = &row[..k];
    let n = k as f64;
    let mean = top.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = top.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    CohortStats { mean, std: var.sqrt() }
}

impl AsNorm {
    pub fn new(cohort: &[Vec<f32>], top_k: usize) -> Self {
        assert!(!cohort.is_empty(), "empty cohort");
        let dim = cohort[0].len();
        assert!(cohort.iter().all(|c| c.len() == dim), "cohort embeddings of different sizes");
        Self { cohort: cohort.iter().flat_map(|c| normalized_f32(c)).collect(), dim, top_k }
    }

    fn cohort_len(&self) -> usize {
        self.cohort.len() / self.dim
    }

    /// Mean and unbiased std of the top-k cohort scores of `emb`.
    pub fn stats(&self, emb: &[f32]) -> CohortStats {
        self.stats_all(std::slice::from_ref(&emb.to_vec()))[0]
    }

    /// [`AsNorm::stats`] of every embedding.
    pub fn stats_all(&self, embs: &[Vec<f32>]) -> Vec<CohortStats> {
        use rayon::prelude::*;
        let m = self.cohort_len();
        let mut out = Vec::with_capacity(embs.len());
        for block in embs.chunks(ROWS_PER_BLOCK) {
            let lhs: Vec<f32> = block
                .iter()
                .flat_map(|e| {
                    assert_eq!(e.len(), self.dim, "embedding size differs from the cohort's");
                    normalized_f32(e)
                })
                .collect();
            let mut scores = self.cohort_scores(&lhs, block.len());
            let stats: Vec<CohortStats> = scores.par_chunks_mut(m).map(|row| top_k_stats(row, self.top_k)).collect();
            out.extend(stats);
        }
        out
    }

    /// `lhs [rows, D] × cohortᵀ → [rows, M]`, row-major, with the fused
    /// CPU operations' product routine.
    fn cohort_scores(&self, lhs: &[f32], rows: usize) -> Vec<f32> {
        use crate::ops::host_gemm::{product, View};
        let (m, d) = (self.cohort_len(), self.dim);
        product(View::rows(lhs, rows, d), View::rows(&self.cohort, m, d).t())
    }

    /// Normalises a raw score given the two sides' cohort statistics.
    pub fn normalize(raw: f64, enroll: CohortStats, test: CohortStats) -> NormScores {
        let z = (raw - enroll.mean) / enroll.std;
        let t = (raw - test.mean) / test.std;
        NormScores { raw, z, t, s: 0.5 * (z + t) }
    }
}

/// Cosine similarity of two embeddings, in float64.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    dot(&normalized(a), &normalized(b))
}
