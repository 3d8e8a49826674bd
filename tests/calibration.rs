//! Calibration against values computed independently in Python
//! (`tests/reference/calibration_reference.py`: scikit-learn's logistic
//! regression and isotonic regression, Cllr and DCF from their formulas).

use nexttdnn::eval::calibration::{act_dcf, cllr, min_cllr, Calibration, Qmf};
use nexttdnn::eval::metrics::Roc;
use serde_json::Value;

fn reference() -> Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/calibration_reference.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

struct Set {
    scores: Vec<f64>,
    labels: Vec<bool>,
    qmf: serde_json::Map<String, Value>,
}

fn set(r: &Value, name: &str) -> Set {
    let s = &r[name];
    Set {
        scores: floats(&s["scores"]),
        labels: s["labels"].as_array().unwrap().iter().map(|l| l.as_i64() == Some(1)).collect(),
        qmf: s["qmf"].as_object().unwrap().clone(),
    }
}

/// `[score, qmf…]` rows for the named features.
fn features(s: &Set, names: &[String]) -> Vec<Vec<f64>> {
    let cols: Vec<Vec<f64>> =
        names.iter().map(|n| if n == "score" { s.scores.clone() } else { floats(&s.qmf[n]) }).collect();
    (0..s.scores.len()).map(|i| cols.iter().map(|c| c[i]).collect()).collect()
}

const SETS: [&str; 3] = ["gauss", "small", "calibrated"];

#[test]
fn fits_match_scikit_learn() {
    let r = reference();
    let mut checked = 0;
    let mut worst = 0.0f64;
    for name in SETS {
        let s = set(&r, name);
        for fit in r[name]["fits"].as_array().unwrap() {
            let names: Vec<String> =
                fit["features"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_string()).collect();
            let qmfs: Vec<Qmf> = names[1..].iter().map(|n| Qmf::parse(n).unwrap()).collect();
            let p = fit["p_target"].as_f64().unwrap();
            let cal = Calibration::fit(&features(&s, &names), &s.labels, &qmfs, p).unwrap();
            let want_bias = fit["bias"].as_f64().unwrap();
            worst = worst.max((cal.bias - want_bias).abs());
            assert!((cal.bias - want_bias).abs() < 1e-5, "{name} P={p} {names:?}: bias {} vs {want_bias}", cal.bias);
            for n in &names {
                let (got, want) = (cal.weights[n], fit["weights"][n].as_f64().unwrap());
                worst = worst.max((got - want).abs());
                assert!((got - want).abs() < 1e-5, "{name} P={p} {names:?}: weight {n} {got} vs {want}");
            }
            checked += 1;
        }
    }
    eprintln!("{checked} fits, largest parameter difference {worst:.1e}");
    assert_eq!(checked, 3 * 3 + 3 + 3, "gauss: 3 priors × 3 feature sets; small, calibrated: 3 priors");
}

/// Checks Cllr, minCllr and the actual and minimum DCF of `llrs`.
fn check_metrics(what: &str, llrs: &[f64], labels: &[bool], want: &Value) {
    let close = |k: &str, got: f64, want: f64| assert!((got - want).abs() < 1e-6, "{what} {k}: {got} vs {want}");
    close("cllr", cllr(llrs, labels), want["cllr"].as_f64().unwrap());
    close("min_cllr", min_cllr(llrs, labels), want["min_cllr"].as_f64().unwrap());
    let roc = Roc::new(llrs, labels).unwrap();
    for p in [0.01, 0.05] {
        let key = format!("{p}");
        close(&format!("act_dcf {p}"), act_dcf(llrs, labels, p, 1.0, 1.0), want["act_dcf"][&key].as_f64().unwrap());
        close(&format!("min_dcf {p}"), roc.min_dcf(p, 1.0, 1.0).value, want["min_dcf"][&key].as_f64().unwrap());
    }
}

#[test]
fn cllr_min_cllr_and_dcf_match_their_formulas() {
    let r = reference();
    for name in SETS {
        let s = set(&r, name);
        let m = &r[name]["metrics"];
        check_metrics(&format!("{name} raw"), &s.scores, &s.labels, &m["raw"]);
        let cal = Calibration::fit(&features(&s, &["score".into()]), &s.labels, &[], 0.05).unwrap();
        let llrs: Vec<f64> = s.scores.iter().map(|&x| cal.llr(x, &[])).collect();
        check_metrics(&format!("{name} calibrated"), &llrs, &s.labels, &m["calibrated_p05"]);
    }
}

#[test]
fn calibrating_calibrated_scores_is_the_identity() {
    let r = reference();
    for name in SETS {
        let s = set(&r, name);
        for p in [0.01, 0.05, 0.5] {
            let names: Vec<String> = std::iter::once("score".to_string()).chain(s.qmf.keys().cloned()).collect();
            let qmfs: Vec<Qmf> = names[1..].iter().map(|n| Qmf::parse(n).unwrap()).collect();
            let f = features(&s, &names);
            let first = Calibration::fit(&f, &s.labels, &qmfs, p).unwrap();
            let llrs: Vec<Vec<f64>> = first.llrs(&f).into_iter().map(|l| vec![l]).collect();
            let again = Calibration::fit(&llrs, &s.labels, &[], p).unwrap();
            assert!(again.bias.abs() < 1e-9, "{name} P={p}: bias {}", again.bias);
            assert!((again.weights["score"] - 1.0).abs() < 1e-9, "{name} P={p}: weight {}", again.weights["score"]);
        }
        // Scores drawn as calibrated LLRs come out close to the identity
        // (sampling noise of 2000 trials).
        if name == "calibrated" {
            let cal = Calibration::fit(&features(&s, &["score".into()]), &s.labels, &[], 0.5).unwrap();
            assert!(cal.bias.abs() < 0.1 && (cal.weights["score"] - 1.0).abs() < 0.1, "{cal:?}");
        }
    }
}

#[test]
fn one_class_and_non_finite_scores_are_errors() {
    let f = vec![vec![0.1], vec![0.2]];
    let e = Calibration::fit(&f, &[true, true], &[], 0.05).unwrap_err().to_string();
    assert!(e.contains("0 non-target"), "{e}");
    let f = vec![vec![0.1], vec![f64::NAN], vec![0.3]];
    let e = Calibration::fit(&f, &[true, false, false], &[], 0.05).unwrap_err().to_string();
    assert!(e.contains("trial 2") && e.contains("not a finite number"), "{e}");
    let e = Calibration::from_json(r#"{"p_target": 1.5, "bias": 0, "weights": {"score": 1}}"#, "x.json").unwrap_err();
    assert!(e.to_string().contains("x.json") && e.to_string().contains("p_target"), "{e}");
}
