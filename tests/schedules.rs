//! The per-step learning-rate and margin schedules against values computed
//! from their formulas in Python (`tests/reference/schedules_reference.py`).

use nexttdnn::config::{LossConfig, MarginIncrease, MarginSchedule, SchedulerConfig};
use nexttdnn::train::loss::margin_at;
use nexttdnn::train::optim::Schedule;
use serde_json::Value;

fn reference() -> Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schedules_reference.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or_else(|| panic!("{k}"))
}

/// Every reference value of `case` against `ours(step)`, relative 1e-12
/// (absolute for zeros).
fn check(r: &Value, case: &str, ours: impl Fn(usize) -> f64) {
    let values = r[case]["values"].as_object().unwrap();
    assert!(values.len() > 50, "{case}");
    for (k, want) in values {
        let (step, want) = (k.parse::<usize>().unwrap(), want.as_f64().unwrap());
        let got = ours(step);
        assert!((got - want).abs() <= 1e-12 * want.abs().max(1e-12), "{case} step {step}: {got} vs {want}");
    }
}

#[test]
fn learning_rate_schedules_match_their_formulas() {
    let r = reference();
    let (spe, epochs) = (r["steps_per_epoch"].as_u64().unwrap() as usize, r["epochs"].as_u64().unwrap() as usize);
    for case in ["warmup_cosine_from_zero", "warmup_cosine_from_min"] {
        let p = &r[case]["params"];
        let cfg = SchedulerConfig::WarmupCosine {
            warmup_start_lr: f(p, "warmup_start_lr"),
            max_lr: f(p, "max_lr"),
            min_lr: f(p, "min_lr"),
            warmup_epochs: f(p, "warmup_epochs"),
            decay_end_epoch: f(p, "decay_end_epoch"),
        };
        let s = Schedule::new(&cfg, 1.0, spe, epochs);
        assert!(s.per_step());
        check(&r, case, |k| s.lr_at(k));
    }
    for case in ["exponential_warm_from_zero", "exponential"] {
        let p = &r[case]["params"];
        let cfg = SchedulerConfig::ExponentialDecrease {
            initial_lr: f(p, "initial_lr"),
            final_lr: f(p, "final_lr"),
            warmup_epochs: f(p, "warmup_epochs"),
            warm_from_zero: p["warm_from_zero"].as_bool().unwrap(),
        };
        let s = Schedule::new(&cfg, 1.0, spe, epochs);
        check(&r, case, |k| s.lr_at(k));
    }
}

#[test]
fn margin_schedules_match_their_formulas() {
    let r = reference();
    let spe = r["steps_per_epoch"].as_u64().unwrap() as usize;
    for case in ["margin_exp", "margin_linear", "margin_fixed_from_the_start"] {
        let p = &r[case]["params"];
        let loss = LossConfig {
            n_classes: 10,
            margin: 0.3,
            scale: 30.0,
            margin_schedule: Some(MarginSchedule {
                initial_margin: f(p, "initial_margin"),
                final_margin: f(p, "final_margin"),
                increase_start_epoch: p["increase_start_epoch"].as_u64().unwrap() as usize,
                fix_start_epoch: p["fix_start_epoch"].as_u64().unwrap() as usize,
                increase: if p["increase"] == "Exp" { MarginIncrease::Exp } else { MarginIncrease::Linear },
            }),
        };
        check(&r, case, |k| margin_at(&loss, k, spe));
    }
    // Without a schedule the margin is fixed.
    let fixed = LossConfig { n_classes: 10, margin: 0.3, scale: 30.0, margin_schedule: None };
    assert!((0..500).all(|k| margin_at(&fixed, k, spe) == 0.3));
}
