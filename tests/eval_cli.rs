//! `eval` end to end: outputs, cache reuse and rebuild, pre-flight errors,
//! AS-norm and the stored threshold.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use nexttdnn::eval::metrics::Roc;

fn run(c: &mut Command) -> (bool, String, String) {
    run_cmd(c)
}

/// Audio root with the four fixture files and the six bundled ones.
fn audio_root(dir: &Path) -> PathBuf {
    let root = dir.join("wav");
    std::fs::create_dir_all(root.join("fx")).unwrap();
    std::fs::create_dir_all(root.join("assets")).unwrap();
    for u in UTTS {
        std::fs::copy(fixtures().join(format!("{u}.wav")), root.join("fx").join(format!("{u}.wav"))).unwrap();
    }
    for e in std::fs::read_dir(root_dir().join("assets/audio")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "wav") {
            std::fs::copy(&p, root.join("assets").join(p.file_name().unwrap())).unwrap();
        }
    }
    root
}

fn root_dir() -> PathBuf {
    common::root()
}

const TRIALS: &str = "1 assets/spk1_a.wav assets/spk1_b.wav
0 assets/spk1_a.wav fx/utt_3p015s.wav
0 fx/utt_7p900s.wav assets/spk2_a.wav
1 assets/spk2_a.wav assets/spk2_b.wav
0 fx/utt_1p370s.wav fx/utt_3p015s.wav
1 assets/spk3_a.wav assets/spk3_b.wav
0 assets/spk3_a.wav fx/utt_0p500s.wav
";

fn import(dir: &Path) -> PathBuf {
    let model = dir.join("model.safetensors");
    let (ok, _, err) = run(&mut import_cmd("tiny_C32_B1_K65_7", &model));
    assert!(ok, "{err}");
    model
}

fn summary(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn eval_outputs_cache_and_threshold() {
    let dir = tmpdir("main");
    let root = audio_root(&dir);
    let model = import(&dir);
    let trials = dir.join("trials.txt");
    std::fs::write(&trials, TRIALS).unwrap();
    let cohort = dir.join("cohort.txt");
    std::fs::write(&cohort, "fx/utt_0p500s.wav\nfx/utt_1p370s.wav\nassets/spk1_b.wav\nassets/spk2_b.wav\n").unwrap();
    let out = dir.join("out");
    let cache = dir.join("cache");
    let eval = |extra: &[&str]| {
        let mut c = bin();
        c.args(["--device", "cpu", "eval", "--model"])
            .arg(&model)
            .arg("--trials")
            .arg(&trials)
            .arg("--wav-root")
            .arg(&root)
            .arg("--out")
            .arg(&out)
            .arg("--cache-dir")
            .arg(&cache)
            .args(extra);
        let (ok, stdout, err) = run(&mut c);
        assert!(ok, "{stdout}\n{err}");
        stdout
    };

    let text = eval(&[]);
    assert!(text.contains("EER") && text.contains("raw cosine"), "{text}");
    let s = summary(&out);
    assert_eq!(s["trials"], 7);
    assert_eq!(s["embedded"], 10);
    for f in ["det.png", "det.svg", "hist.png", "hist.svg", "scores.txt"] {
        assert!(std::fs::metadata(out.join(f)).unwrap().len() > 100, "{f}");
    }
    // The summary agrees with the written scores.
    let lines: Vec<(f64, bool)> = std::fs::read_to_string(out.join("scores.txt"))
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[2].parse().unwrap(), f[3] == "1")
        })
        .collect();
    assert_eq!(lines.len(), 7);
    let (sc, lb): (Vec<f64>, Vec<bool>) = lines.into_iter().unzip();
    let roc = Roc::new(&sc, &lb).unwrap();
    assert!((roc.eer().value - s["eer"].as_f64().unwrap()).abs() < 1e-9);
    assert!((roc.min_dcf(0.05, 1.0, 1.0).value - s["min_dcf_p05"].as_f64().unwrap()).abs() < 1e-9);
    assert!(s["min_dcf_p01"].is_number());

    // A rerun is served from the cache, with identical scores.
    let before = std::fs::read_to_string(out.join("scores.txt")).unwrap();
    eval(&[]);
    let s2 = summary(&out);
    assert_eq!((s2["embedded"].as_u64(), s2["from_cache"].as_u64()), (Some(0), Some(10)));
    assert_eq!(std::fs::read_to_string(out.join("scores.txt")).unwrap(), before);

    // A corrupt entry is detected and rebuilt.
    let entries: Vec<PathBuf> = walk(&cache);
    assert_eq!(entries.len(), 10);
    std::fs::write(&entries[3], b"garbage").unwrap();
    eval(&[]);
    assert_eq!(summary(&out)["embedded"], 1);
    assert_eq!(std::fs::read_to_string(out.join("scores.txt")).unwrap(), before);

    // AS-norm with a cohort, and the threshold stored for verify.
    let text =
        eval(&["--cohort", cohort.to_str().unwrap(), "--cohort-root", root.to_str().unwrap(), "--store-threshold"]);
    assert!(text.contains("snorm"), "{text}");
    let s = summary(&out);
    for k in ["snorm", "znorm", "tnorm"] {
        assert!(s[k]["eer"].is_number() && s[k]["min_dcf_p05"].is_number() && s[k]["trials"] == 7, "{k}: {}", s[k]);
    }
    assert!(out.join("scores_snorm.txt").exists());
    let m = nexttdnn::weights::SpeakerModel::load(&model, &burn::tensor::Device::flex()).unwrap();
    // (serde_json's float parsing may differ from the stored value in the last bit.)
    assert!((m.meta.threshold.unwrap() - s["threshold"].as_f64().unwrap()).abs() < 1e-12);
    let (ok, stdout, _) = run(bin()
        .args(["--device", "cpu", "verify", "--model"])
        .arg(&model)
        .arg(root.join("assets/spk1_a.wav"))
        .arg(root.join("assets/spk1_b.wav")));
    assert!(ok && stdout.contains("threshold"), "{stdout}");

    // Storing the threshold rewrote the model file but not its tensors: the cache stays valid.
    eval(&[]);
    assert_eq!(summary(&out)["embedded"], 0);
    assert_eq!(std::fs::read_to_string(out.join("scores.txt")).unwrap(), before);

    // Other audio of the same size with the same modification time is embedded again.
    let target = root.join("assets/spk1_a.wav");
    let mtime = std::fs::metadata(&target).unwrap().modified().unwrap();
    let other = std::fs::read(root.join("assets/spk2_b.wav")).unwrap();
    let mut bytes = std::fs::read(&target).unwrap();
    let n = bytes.len().min(other.len());
    bytes[44..n].copy_from_slice(&other[44..n]);
    std::fs::write(&target, &bytes).unwrap();
    std::fs::File::options().write(true).open(&target).unwrap().set_modified(mtime).unwrap();
    assert_eq!(std::fs::metadata(&target).unwrap().modified().unwrap(), mtime);
    eval(&[]);
    assert_eq!(summary(&out)["embedded"], 1);
    assert_ne!(std::fs::read_to_string(out.join("scores.txt")).unwrap(), before);
}

#[test]
fn preflight_stops_before_embedding() {
    let dir = tmpdir("pre");
    let root = audio_root(&dir);
    let model = import(&dir);
    let trials = dir.join("bad_trials.txt");
    let cache = dir.join("cache");
    let eval = || {
        run(bin()
            .args(["--device", "cpu", "eval", "--model"])
            .arg(&model)
            .arg("--trials")
            .arg(&trials)
            .arg("--wav-root")
            .arg(&root)
            .arg("--out")
            .arg(dir.join("out"))
            .arg("--cache-dir")
            .arg(&cache))
    };
    std::fs::write(&trials, format!("{TRIALS}0 fx/utt_0p500s.wav fx/missing.wav\n")).unwrap();
    let (ok, _, err) = eval();
    assert!(!ok);
    assert!(err.contains("bad_trials.txt:8") && err.contains("missing.wav") && err.contains("not found"), "{err}");
    assert!(!cache.exists() || walk(&cache).is_empty(), "nothing was embedded");

    std::fs::write(&trials, format!("{TRIALS}2 fx/utt_0p500s.wav fx/utt_1p370s.wav\n")).unwrap();
    let (ok, _, err) = eval();
    assert!(!ok && err.contains("bad_trials.txt:8") && err.contains("label"), "{err}");
}

#[test]
fn eval_of_an_official_checkpoint_and_bundled_default() {
    let dir = tmpdir("ckpt");
    let root = audio_root(&dir);
    let trials = dir.join("trials.txt");
    std::fs::write(&trials, TRIALS).unwrap();
    let (ok, stdout, err) = run(bin()
        .args(["--device", "cpu", "eval", "--checkpoint"])
        .arg(fixtures().join("tiny_light_C32_B1_K65.pt"))
        .arg("--config")
        .arg(config("tiny_light_C32_B1_K65"))
        .arg("--trials")
        .arg(&trials)
        .arg("--wav-root")
        .arg(&root)
        .arg("--out")
        .arg(dir.join("out"))
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .arg("--no-plots"));
    assert!(ok && stdout.contains("tiny_light_C32_B1_K65"), "{stdout}\n{err}");
    assert!(!dir.join("out/det.png").exists());

    let (ok, stdout, err) =
        run(bin().current_dir(&dir).args(["--device", "cpu", "eval", "--cache-dir"]).arg(dir.join("cache2")));
    assert!(ok && stdout.contains("630 trials"), "{stdout}\n{err}");
}
