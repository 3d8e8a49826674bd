//! `cargo bench --bench asnorm`: AS-norm cohort statistics at VoxCeleb1-E
//! scale (145 160 embeddings against a 6 000-file cohort, top-k 300,
//! dimension 192) with random embeddings. Sizes can be overridden:
//! `NEXTTDNN_ASNORM=FILES,COHORT,TOPK`.

use std::time::Instant;

use nexttdnn::eval::score::AsNorm;
use rand::{rngs::StdRng, RngExt, SeedableRng};

const DIM: usize = 192;

fn random_rows(rng: &mut StdRng, n: usize) -> Vec<Vec<f32>> {
    (0..n).map(|_| (0..DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect()).collect()
}

fn main() {
    let sizes: Vec<usize> = std::env::var("NEXTTDNN_ASNORM")
        .unwrap_or_else(|_| "145160,6000,300".into())
        .split(',')
        .map(|s| s.trim().parse().expect("NEXTTDNN_ASNORM=FILES,COHORT,TOPK"))
        .collect();
    let [files, cohort, top_k] = sizes[..] else { panic!("NEXTTDNN_ASNORM=FILES,COHORT,TOPK") };
    let mut rng = StdRng::seed_from_u64(1);
    let embs = random_rows(&mut rng, files);
    let coh = random_rows(&mut rng, cohort);
    let t = Instant::now();
    let norm = AsNorm::new(&coh, top_k);
    let stats = norm.stats_all(&embs);
    let secs = t.elapsed().as_secs_f64();
    assert!(stats.iter().all(|s| s.mean.is_finite() && s.std.is_finite()));
    println!(
        "AS-norm: {files} embeddings x {cohort} cohort (dim {DIM}, top-k {top_k}) on {} threads: {secs:.2} s ({:.0} embeddings/s)",
        rayon::current_num_threads(),
        files as f64 / secs
    );
}
