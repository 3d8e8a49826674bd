//! `cargo bench --bench identify`: identification speed against a large
//! registry (synthetic embeddings: 10 000 speakers × 3 enrollments × 192),
//! in ms per query on the CPU, for both ways of scoring.

use std::time::Instant;

use nexttdnn::registry::{identify, Decider, Enrollment, Registry, Scoring};

fn main() -> anyhow::Result<()> {
    let (speakers, per, dim, queries) = (10_000usize, 3usize, 192usize, 200usize);
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let mut registry = Registry::new("synthetic", dim);
    for s in 0..speakers {
        let list = (0..per)
            .map(|i| Enrollment {
                source: format!("s{s}_{i}"),
                enrolled_at: 0,
                embedding: (0..dim).map(|_| next()).collect(),
            })
            .collect();
        registry.enroll(&format!("speaker{s:05}"), list, false)?;
    }
    let probes: Vec<Vec<f32>> = (0..queries).map(|_| (0..dim).map(|_| next()).collect()).collect();
    let decider = Decider::Raw(0.5);
    for scoring in [Scoring::Mean, Scoring::Max] {
        let t = Instant::now();
        let index = registry.index(scoring);
        let build = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        for q in &probes {
            let id = identify(&index, q, &decider, 5)?;
            std::hint::black_box(id);
        }
        let per_query = t.elapsed().as_secs_f64() * 1e3 / queries as f64;
        println!(
            "{scoring:?}: {speakers} speakers x {per} enrollments x {dim}: index {build:.1} ms, identify {per_query:.2} ms per query"
        );
    }
    Ok(())
}
