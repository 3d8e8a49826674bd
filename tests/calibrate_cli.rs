//! `calibrate`, `eval --calibration` and `verify` with a calibration, on the
//! bundled demonstration model and trials.

mod common;

use common::*;

/// `eval` of the bundled list on the CPU into `out` (extra arguments after).
fn eval(dir: &std::path::Path, out: &str, extra: &[&str]) -> String {
    run_ok(
        bin()
            .current_dir(dir)
            .args(["--device", "cpu", "eval", "--no-plots", "--cache-dir"])
            .arg(dir.join("cache"))
            .args(["--out", out])
            .args(extra),
    )
}

fn summary(dir: &std::path::Path, out: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join(out).join("summary.json")).unwrap()).unwrap()
}

#[test]
fn calibrate_from_scores_then_eval_and_verify() {
    let dir = tmpdir("calibrate");
    eval(&dir, "raw", &[]);
    let raw = summary(&dir, "raw");
    assert!(raw["min_cllr"].as_f64().unwrap() > 0.0, "{raw}");
    assert!(raw.get("cllr").is_none(), "Cllr needs a calibration: {raw}");

    let out = run_ok(bin().current_dir(&dir).args([
        "--device",
        "cpu",
        "calibrate",
        "--scores",
        "raw/scores.txt",
        "--out",
        "cal.json",
    ]));
    assert!(out.contains("llr = ") && out.contains("P_target 0.05"), "{out}");
    let cal: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("cal.json")).unwrap()).unwrap();
    assert_eq!(cal["p_target"], 0.05);
    assert!(cal["weights"]["score"].as_f64().unwrap() > 0.0, "{cal}");

    let table = eval(&dir, "cal", &["--calibration", "cal.json"]);
    assert!(table.contains("Cllr") && table.contains("actDCF@0.05"), "{table}");
    let s = summary(&dir, "cal");
    let (cllr, min_cllr) = (s["cllr"].as_f64().unwrap(), s["min_cllr"].as_f64().unwrap());
    // Fitted on these very trials: close to the best monotone map, and far
    // better than an uninformative one (1 bit).
    assert!(min_cllr <= cllr && cllr < min_cllr + 0.1 && cllr < 1.0, "{s}");
    for k in ["act_dcf_p05", "act_dcf_p01", "min_dcf_p05", "min_dcf_p01"] {
        assert!(s[k].as_f64().is_some(), "{k} missing: {s}");
    }
    assert!(s["act_dcf_p05"].as_f64().unwrap() >= s["min_dcf_p05"].as_f64().unwrap() - 1e-12, "{s}");
    assert_eq!(s["calibration"]["source"], "cal.json");
    let llrs = std::fs::read_to_string(dir.join("cal/scores_llr.txt")).unwrap();
    assert_eq!(llrs.lines().count(), 630);

    let v = run_ok(bin().current_dir(&dir).args(["--device", "cpu", "verify", "--calibration", "cal.json"]));
    assert!(v.contains("llr ") && v.contains("Bayes threshold 2.9444 for P_target 0.05"), "{v}");
    let v = run_ok(bin().current_dir(&dir).args(["--device", "cpu", "verify", "--threshold", "0.3"]));
    assert!(v.contains("calibration none") && v.contains("threshold 0.300000"), "{v}");
}

#[test]
fn calibrate_with_quality_measures_and_store_in_the_model() {
    let dir = tmpdir("calibrate-qmf");
    let model = dir.join("demo.safetensors");
    std::fs::copy(root().join("assets/model/demo.nexttdnn.safetensors"), &model).unwrap();
    let out = run_ok(
        bin()
            .current_dir(&dir)
            .args(["--device", "cpu", "calibrate", "--qmf", "duration,norm", "--p-target", "0.01", "--store"])
            .arg("--model")
            .arg(&model)
            .arg("--cache-dir")
            .arg(dir.join("cache")),
    );
    assert!(out.contains("·duration") && out.contains("·norm") && out.contains("stored the calibration"), "{out}");
    // The stored calibration is used by eval and verify.
    let table = eval(&dir, "stored", &["--model", "demo.safetensors"]);
    assert!(table.contains("Cllr"), "{table}");
    assert!(summary(&dir, "stored")["calibration"]["source"].as_str().unwrap().starts_with("stored in"));
    let v = run_ok(bin().current_dir(&dir).args(["--device", "cpu", "verify", "--model", "demo.safetensors"]));
    assert!(v.contains("llr ") && v.contains("stored in") && v.contains("P_target 0.05"), "{v}");
    // An explicit threshold takes the raw decision instead.
    let v = run_ok(bin().current_dir(&dir).args([
        "--device",
        "cpu",
        "verify",
        "--model",
        "demo.safetensors",
        "--threshold",
        "0.5",
    ]));
    assert!(v.contains("calibration none") && v.contains("threshold 0.500000"), "{v}");
}

#[test]
fn bad_calibration_input_is_named() {
    let dir = tmpdir("calibrate-bad");
    let calibrate = |file: &str, text: &str, extra: &[&str]| {
        std::fs::write(dir.join(file), text).unwrap();
        run_err(
            bin()
                .current_dir(&dir)
                .args(["--device", "cpu", "calibrate", "--out", "c.json", "--scores", file])
                .args(extra),
        )
    };
    let e = calibrate("one_class.txt", "a b 0.5 1\nc d 0.7 1\n", &[]);
    assert!(e.contains("one_class.txt") && e.contains("0 non-target"), "{e}");
    let e = calibrate("nan.txt", "a b 0.5 1\nc d NaN 0\n", &[]);
    assert!(e.contains("nan.txt:2") && e.contains("not a finite number"), "{e}");
    let e = calibrate("label.txt", "a b 0.5 yes\n", &[]);
    assert!(e.contains("label.txt:1") && e.contains("0 or 1"), "{e}");
    let e = calibrate("ok.txt", "a b 0.5 1\nc d 0.1 0\n", &["--qmf", "duration"]);
    assert!(e.contains("--qmf needs the recordings"), "{e}");
    let e = calibrate("ok.txt", "a b 0.5 1\nc d 0.1 0\n", &[]);
    assert!(e.contains("separate"), "{e}");
    assert!(!dir.join("c.json").exists());

    std::fs::write(
        dir.join("bad_cal.json"),
        r#"{"p_target": 0.05, "bias": 0.0, "weights": {"score": 1.0, "snr": 2.0}}"#,
    )
    .unwrap();
    let e = run_err(bin().current_dir(&dir).args(["--device", "cpu", "verify", "--calibration", "bad_cal.json"]));
    assert!(e.contains("bad_cal.json") && e.contains("snr"), "{e}");
    let e = run_err(bin().current_dir(&dir).args(["--device", "cpu", "calibrate", "--scores", "x", "--qmf", "snr"]));
    assert!(e.contains("--out") || e.contains("snr"), "{e}");
}

#[test]
fn s_norm_calibration_needs_the_cohort() {
    let dir = tmpdir("calibrate-snorm");
    // The bundled recordings serve as their own cohort here.
    let audio = root().join("assets/audio");
    let cohort: String = std::fs::read_dir(&audio)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wav"))
        .map(|p| format!("{}\n", p.display()))
        .collect();
    std::fs::write(dir.join("cohort.txt"), cohort).unwrap();
    let out = run_ok(
        bin()
            .current_dir(&dir)
            .args([
                "--device",
                "cpu",
                "calibrate",
                "--score-set",
                "snorm",
                "--cohort",
                "cohort.txt",
                "--out",
                "cal.json",
            ])
            .arg("--cache-dir")
            .arg(dir.join("cache")),
    );
    assert!(out.contains("snorm scores"), "{out}");
    let table = eval(&dir, "snorm", &["--calibration", "cal.json", "--cohort", "cohort.txt"]);
    assert!(table.contains("snorm → LLR"), "{table}");
    let s = summary(&dir, "snorm");
    assert!(s["snorm"]["cllr"].as_f64().is_some() && s.get("cllr").is_none(), "{s}");
    let e = run_err(
        bin()
            .current_dir(&dir)
            .args(["--device", "cpu", "eval", "--no-plots", "--calibration", "cal.json", "--out", "x", "--cache-dir"])
            .arg(dir.join("cache")),
    );
    assert!(e.contains("cal.json") && e.contains("s-norm") && e.contains("--cohort"), "{e}");
    let e = run_err(bin().current_dir(&dir).args(["--device", "cpu", "verify", "--calibration", "cal.json"]));
    assert!(e.contains("snorm scores, which need a cohort"), "{e}");
}
