//! What data-parallel training needs from the processes around it: who we are,
//! how many we are, and sums of host buffers across all of us.
//!
//! One process is [`Single`], for which every collective is the identity. The
//! `distributed` feature adds an MPI implementation (`super::distributed`);
//! Burn's own collectives exist only for CUDA within one process, so the
//! engine that spans vendors and machines is MPI's.

/// Collective operations over the ranks of one training job.
///
/// Every rank must call the same collectives in the same order; each call
/// returns when all ranks have taken part.
pub trait Collective {
    /// This process's rank, `0..size()`.
    fn rank(&self) -> usize;
    /// Number of processes in the job.
    fn size(&self) -> usize;
    /// Rank among the processes on this machine (picks the local GPU).
    fn local_rank(&self) -> usize;
    /// Element-wise sum of `buf` over all ranks, in place.
    fn sum_f32(&self, buf: &mut [f32]);
    /// Element-wise sum of `buf` over all ranks, in place.
    fn sum_f64(&self, buf: &mut [f64]);
    /// Whether every rank passed the same value.
    fn all_equal(&self, value: u64) -> bool;
    /// Whether this is rank 0, which alone logs and writes files.
    fn is_root(&self) -> bool {
        self.rank() == 0
    }
}

/// A job of one process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn local_rank(&self) -> usize {
        0
    }
    fn sum_f32(&self, _: &mut [f32]) {}
    fn sum_f64(&self, _: &mut [f64]) {}
    fn all_equal(&self, _: u64) -> bool {
        true
    }
}

/// Which of the step's `total` micro-batches rank `rank` of `ranks` runs,
/// `accumulate` of them: the rank's micro-batches are contiguous, so that N
/// ranks with one each equal one process with `accumulate` N.
pub fn micro_batches(rank: usize, ranks: usize, accumulate: usize) -> Vec<usize> {
    debug_assert!(rank < ranks);
    (rank * accumulate..(rank + 1) * accumulate).collect()
}

/// Positions within a batch of `batch` crops that micro-batch `m` of `total`
/// takes: `m, m + total, m + 2·total, …`.
pub fn micro_positions(m: usize, total: usize, batch: usize) -> impl Iterator<Item = usize> {
    (m..batch).step_by(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micro_batches_cover_the_batch_once() {
        for (ranks, acc) in [(1, 1), (1, 3), (2, 1), (2, 2), (3, 2)] {
            let total = ranks * acc;
            let batch = 4 * total;
            let mut seen: Vec<usize> = (0..ranks)
                .flat_map(|r| micro_batches(r, ranks, acc))
                .flat_map(|m| micro_positions(m, total, batch).collect::<Vec<_>>())
                .collect();
            seen.sort();
            assert_eq!(seen, (0..batch).collect::<Vec<_>>(), "{ranks} ranks × {acc}");
        }
        // Two ranks equal one process accumulating two micro-batches.
        assert_eq!(micro_batches(1, 2, 1), vec![1]);
        assert_eq!(micro_batches(0, 1, 2), vec![0, 1]);
        assert_eq!(micro_positions(1, 2, 8).collect::<Vec<_>>(), vec![1, 3, 5, 7]);
    }
}
