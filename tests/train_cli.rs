//! `train` end to end on a tiny generated corpus: outputs, validation,
//! exact resume, and errors in the inputs.

mod common;

use std::path::Path;
use std::process::Command;

use common::train_corpus::corpus;
use common::*;

fn run(c: &mut Command) -> (bool, String) {
    let (ok, out, err) = run_cmd(c);
    (ok, format!("{out}{err}"))
}

fn train(c: &Path, out: &Path, extra: &[&str]) -> (bool, String) {
    let mut cmd = bin();
    cmd.args(["--device", "cpu", "train", "--config"])
        .arg(config("tiny_C32_B1_K65_7"))
        .arg("--train-list")
        .arg(c.join("train_list.txt"))
        .arg("--wav-root")
        .arg(c.join("wav"))
        .arg("--musan")
        .arg(c.join("musan"))
        .arg("--rir")
        .arg(c.join("rir"))
        .arg("--val-trials")
        .arg(c.join("trials.txt"))
        .arg("--val-root")
        .arg(c.join("wav"))
        .arg("--out")
        .arg(out)
        .args(extra);
    // The defaults of these tests, unless `extra` sets them.
    for pair in
        [["--n-classes", "4"], ["--batch-size", "4"], ["--epochs", "2"], ["--workers", "2"], ["--log-every", "1"]]
    {
        if !extra.contains(&pair[0]) {
            cmd.args(pair);
        }
    }
    run(&mut cmd)
}

#[test]
fn training_outputs_and_exact_resume() {
    let dir = tmpdir("resume");
    let c = corpus(&dir);

    // Uninterrupted: 12 utterances / batch 4 = 3 steps per epoch, 2 epochs.
    let full = dir.join("full");
    let (ok, log) = train(&c, &full, &[]);
    assert!(ok, "{log}");
    for f in ["config.ron", "metrics.csv", "steps.csv", "curves.png", "curves.svg", "model.safetensors"] {
        assert!(full.join(f).is_file(), "{f} missing\n{log}");
    }
    let metrics = std::fs::read_to_string(full.join("metrics.csv")).unwrap();
    assert_eq!(metrics.lines().count(), 3, "{metrics}");
    assert!(
        metrics.lines().nth(2).unwrap().split(',').nth(5).unwrap().parse::<f64>().is_ok(),
        "validation EER logged: {metrics}"
    );
    assert_eq!(std::fs::read_dir(full.join("best")).unwrap().count(), 2);
    let model =
        nexttdnn::weights::SpeakerModel::load(&full.join("model.safetensors"), &burn::tensor::Device::flex()).unwrap();
    assert_eq!(model.config.train.loss.n_classes, 4);

    // Interrupted after 4 steps (mid-epoch), then resumed: the same curve.
    let parts = dir.join("parts");
    let (ok, log) = train(&c, &parts, &["--stop-after-steps", "4"]);
    assert!(ok, "{log}");
    let partial = std::fs::read_to_string(parts.join("steps.csv")).unwrap();
    assert_eq!(partial.lines().count(), 5, "stopped after 4 steps: {partial}");
    let (ok, log) = train(&c, &parts, &[]);
    assert!(!ok && log.contains("--resume"), "a second run into the same directory must ask for --resume: {log}");
    // A resume keeps the run what it is, and takes no step past --stop-after-steps.
    let (ok, log) = train(&c, &parts, &["--resume", "--batch-size", "8"]);
    assert!(!ok && log.contains("--batch-size"), "{log}");
    let (ok, log) = train(&c, &parts, &["--resume", "--epochs", "0"]);
    assert!(!ok && log.contains("--epochs must be at least 1"), "{log}");
    let (ok, log) = train(&c, &parts, &["--resume", "--stop-after-steps", "4"]);
    assert!(ok, "{log}");
    assert_eq!(std::fs::read_to_string(parts.join("steps.csv")).unwrap(), partial, "no step past the stop");
    let (ok, log) = train(&c, &parts, &["--resume"]);
    assert!(ok, "{log}");
    let a = std::fs::read_to_string(full.join("steps.csv")).unwrap();
    let b = std::fs::read_to_string(parts.join("steps.csv")).unwrap();
    assert_eq!(a.lines().count(), 7);
    assert_eq!(a, b, "resumed run differs from the uninterrupted one");
    let strip = |s: String| s.lines().map(|l| l.split(',').take(6).collect::<Vec<_>>().join(",")).collect::<Vec<_>>();
    assert_eq!(strip(metrics), strip(std::fs::read_to_string(parts.join("metrics.csv")).unwrap()));
}

#[test]
fn bad_training_inputs() {
    let dir = tmpdir("bad");
    let c = corpus(&dir);
    let list = c.join("train_list.txt");
    let good = std::fs::read_to_string(&list).unwrap();

    std::fs::write(&list, format!("{good}spk9\n")).unwrap();
    let (ok, log) = train(&c, &dir.join("o1"), &[]);
    assert!(!ok && log.contains("train_list.txt:13") && log.contains("malformed"), "{log}");

    std::fs::write(&list, format!("{good}spk3 spk3/none/00009.wav\n")).unwrap();
    let (ok, log) = train(&c, &dir.join("o2"), &[]);
    assert!(
        !ok && log.contains("train_list.txt:13") && log.contains("00009.wav") && log.contains("not found"),
        "{log}"
    );

    std::fs::write(&list, format!("{good}spk4 spk0/s0/00000.wav\n")).unwrap();
    let (ok, log) = train(&c, &dir.join("o3"), &[]);
    assert!(!ok && log.contains("5 speakers") && log.contains("n_classes"), "{log}");

    std::fs::write(&list, &good).unwrap();
    let (ok, log) = train(&c, &dir.join("o4"), &["--resume"]);
    assert!(!ok && log.contains("no checkpoint"), "{log}");
}
