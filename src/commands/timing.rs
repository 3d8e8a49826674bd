//! Timing for `bench`: a warmed-up, repeated measurement and its median,
//! shared by the inference and the training measurements.

use std::time::Instant;

use serde::Serialize;

/// One timed operation.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub name: String,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub repeats: usize,
    /// Memory traffic over the median time, for single-operation measurements:
    /// the bytes the operation must read and write at least, in GB/s.
    pub gb_per_s: Option<f64>,
}

/// Runs `f` `warmup` times untimed, then `repeats` times timed, and
/// reports the median, fastest and slowest run in milliseconds.
pub fn time<F: FnMut()>(name: String, warmup: usize, repeats: usize, mut f: F) -> Measurement {
    for _ in 0..warmup {
        f();
    }
    let mut ms: Vec<f64> = (0..repeats)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let m = Measurement {
        name,
        median_ms: ms[ms.len() / 2],
        min_ms: ms[0],
        max_ms: ms[ms.len() - 1],
        repeats,
        gb_per_s: None,
    };
    log::info!("{}: median {:.2} ms (min {:.2}, max {:.2})", m.name, m.median_ms, m.min_ms, m.max_ms);
    m
}
