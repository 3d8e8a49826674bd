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
    train_with(c, out, extra, true)
}

/// `train` on the corpus in `c`, with noise and RIRs when `noise` is set.
fn train_with(c: &Path, out: &Path, extra: &[&str], noise: bool) -> (bool, String) {
    let mut cmd = bin();
    cmd.args(["--device", "cpu", "train", "--config"])
        .arg(config("tiny_C32_B1_K65_7"))
        .arg("--train-list")
        .arg(c.join("train_list.txt"))
        .arg("--wav-root")
        .arg(c.join("wav"));
    if noise {
        cmd.arg("--musan").arg(c.join("musan")).arg("--rir").arg(c.join("rir"));
    }
    cmd.arg("--val-trials")
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
    assert!(model.config.train.augment.enabled && model.config.train.spec_augment.enabled);

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
    let (ok, log) = train(&c, &parts, &["--resume", "--no-spec-augment"]);
    assert!(!ok && log.contains("--no-spec-augment cannot change it"), "{log}");
    let (ok, log) = train_with(&c, &parts, &["--resume"], false);
    assert!(!ok && log.contains("resume it with --musan and --rir"), "{log}");
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
fn augmentation_switches_saved_in_the_run_config() {
    let dir = tmpdir("switches");
    let c = corpus(&dir);
    let out = dir.join("run");
    let (ok, log) = train_with(&c, &out, &["--no-spec-augment", "--stop-after-steps", "1"], false);
    assert!(ok, "{log}");
    assert!(log.contains("training without waveform augmentation"), "{log}");
    let saved = nexttdnn::config::ExperimentConfig::load(&out.join("config.ron")).unwrap();
    assert!(!saved.train.augment.enabled && !saved.train.spec_augment.enabled, "{}", saved.to_ron());
    let (ok, log) = train_with(&c, &out, &["--resume", "--stop-after-steps", "2"], true);
    assert!(!ok && log.contains("resume it without --musan and --rir"), "{log}");
    let (ok, log) = train_with(&c, &out, &["--resume", "--stop-after-steps", "2"], false);
    assert!(ok, "{log}");
    assert_eq!(std::fs::read_to_string(out.join("steps.csv")).unwrap().lines().count(), 3);
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

#[test]
fn last_epochs_averaged_and_fine_tuned_on_new_speakers() {
    let dir = tmpdir("average");
    let c = corpus(&dir);
    let run_dir = dir.join("run");
    let (ok, log) = train(&c, &run_dir, &["--epochs", "3", "--keep-last", "2"]);
    assert!(ok, "{log}");
    let kept: Vec<String> =
        walk(&run_dir.join("epochs")).iter().map(|p| p.file_name().unwrap().to_string_lossy().into()).collect();
    assert_eq!(kept, ["epoch0002.safetensors", "epoch0003.safetensors"]);

    // The average of the last two is their element-wise mean.
    let avg = dir.join("avg.safetensors");
    let out =
        run_ok(bin().args(["--device", "cpu", "average", "--last", "2", "--out"]).arg(&avg).arg("--run").arg(&run_dir));
    assert!(out.contains("averaged 2 models"), "{out}");
    let read = |p: &Path| nexttdnn::weights::ModelFile::read(p).unwrap();
    let (a, b, m) = (
        read(&run_dir.join("epochs/epoch0002.safetensors")),
        read(&run_dir.join("epochs/epoch0003.safetensors")),
        read(&avg),
    );
    assert_eq!(m.tensors.len(), a.tensors.len());
    let mut moved = 0;
    for (k, t) in &m.tensors {
        for ((x, y), z) in a.tensors[k].values.iter().zip(&b.tensors[k].values).zip(&t.values) {
            assert!((((*x as f64 + *y as f64) / 2.0) - *z as f64).abs() <= 1e-7 * x.abs().max(1.0) as f64, "{k}");
            moved += (x != y) as usize;
        }
    }
    assert!(moved > 0, "the two epochs' models are identical");
    assert!(m.tensors.keys().any(|k| k.contains("running_mean")), "BatchNorm statistics are averaged too");

    // The best two by validation EER; more than were kept is an error.
    let out = run_ok(
        bin()
            .args(["--device", "cpu", "average", "--best", "2", "--out"])
            .arg(dir.join("best2.safetensors"))
            .arg("--run")
            .arg(&run_dir),
    );
    assert!(out.contains("averaged 2 models"), "{out}");
    let e = run_err(
        bin()
            .args(["--device", "cpu", "average", "--last", "3", "--out"])
            .arg(dir.join("x.safetensors"))
            .arg("--run")
            .arg(&run_dir),
    );
    assert!(e.contains("epochs") && e.contains("2 models, --last 3 needs 3"), "{e}");

    // Models of other configs are not averaged together.
    let other = dir.join("light.safetensors");
    run_ok(&mut import_cmd("tiny_light_C32_B1_K65", &other));
    let e = run_err(
        bin().args(["--device", "cpu", "average", "--out"]).arg(dir.join("x.safetensors")).arg(&avg).arg(&other),
    );
    assert!(e.contains(&other.display().to_string()) && e.contains("config"), "{e}");

    // Fine-tuning on another set of speakers (three of the four): a new
    // classifier, the rest kept.
    let list: String = std::fs::read_to_string(c.join("train_list.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("spk3 "))
        .map(|l| format!("{l}\n"))
        .collect();
    let three = dir.join("three_speakers.txt");
    std::fs::write(&three, list).unwrap();
    let (ok, log) = run(bin()
        .args(["--device", "cpu", "train", "--config"])
        .arg(config("tiny_C32_B1_K65_7"))
        .arg("--train-list")
        .arg(&three)
        .arg("--wav-root")
        .arg(c.join("wav"))
        .arg("--init-model")
        .arg(&avg)
        .args(["--n-classes", "3", "--batch-size", "3", "--epochs", "1", "--out"])
        .arg(dir.join("ft")));
    assert!(ok && log.contains("started afresh (4 classes in the model, 3 in this run)"), "{log}");
    // Another network is refused, naming the file.
    let (ok, log) = train(&c, &dir.join("ft2"), &["--init-model", other.to_str().unwrap()]);
    assert!(
        !ok && log.contains("--init-model") && log.contains("light.safetensors") && log.contains("differs"),
        "{log}"
    );
}
