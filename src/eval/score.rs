//! Cosine scoring and adaptive score normalisation (spec §6.3).

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

/// Adaptive score normalisation against a cohort of (normalised) embeddings.
pub struct AsNorm {
    cohort: Vec<Vec<f64>>,
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

impl AsNorm {
    pub fn new(cohort: &[Vec<f32>], top_k: usize) -> Self {
        Self { cohort: cohort.iter().map(|c| normalized(c)).collect(), top_k }
    }

    /// Mean and unbiased std of the top-k cohort scores of `emb`.
    pub fn stats(&self, emb: &[f32]) -> CohortStats {
        let e = normalized(emb);
        let mut s: Vec<f64> = self.cohort.iter().map(|c| dot(&e, c)).collect();
        s.sort_by(|a, b| b.partial_cmp(a).unwrap());
        s.truncate(self.top_k.min(s.len()));
        let n = s.len() as f64;
        let mean = s.iter().sum::<f64>() / n;
        let var = s.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        CohortStats { mean, std: var.sqrt() }
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
