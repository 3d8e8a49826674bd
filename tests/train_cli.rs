//! `train` end to end on a tiny generated corpus: outputs, validation,
//! exact resume, and errors in the inputs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn run(c: &mut Command) -> (bool, String) {
    let (ok, out, err) = run_cmd(c);
    (ok, format!("{out}{err}"))
}

fn noise_wav(path: &Path, seed: u32, len: usize) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
    let samples: Vec<f32> = (0..len)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32 - 0.5)
                * 0.2
                * if seed.is_multiple_of(2) { 1.0 } else { (i as f32 * 0.01).sin() }
        })
        .collect();
    nexttdnn::audio::wav::write_wav_i16(path, &samples, 16000).unwrap();
}

/// 4 speakers × 3 utterances (the fixture and bundled recordings, plus two
/// generated ones), MUSAN-like noise, impulse responses and a trial list.
fn corpus(dir: &Path) -> PathBuf {
    let c = dir.join("corpus");
    let mut sources: Vec<PathBuf> = UTTS.iter().map(|u| fixtures().join(format!("{u}.wav"))).collect();
    let mut assets: Vec<PathBuf> = std::fs::read_dir(root().join("assets/audio"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wav"))
        .collect();
    assets.sort();
    sources.extend(assets);
    let mut list = String::new();
    for (i, src) in sources.iter().enumerate() {
        let (spk, utt) = (i / 3, i % 3);
        let rel = format!("spk{spk}/s{utt}/{utt:05}.wav");
        std::fs::create_dir_all(c.join("wav").join(format!("spk{spk}/s{utt}"))).unwrap();
        std::fs::copy(src, c.join("wav").join(&rel)).unwrap();
        list.push_str(&format!("spk{spk} {rel}\n"));
    }
    for (i, spk) in [(10, 3), (11, 3)] {
        let rel = format!("spk{spk}/g{i}/00001.wav");
        noise_wav(&c.join("wav").join(&rel), i, 30000);
        list.push_str(&format!("spk{spk} {rel}\n"));
    }
    std::fs::write(c.join("train_list.txt"), list).unwrap();
    for (k, kind) in ["noise", "speech", "music"].iter().enumerate() {
        for j in 0..3 {
            noise_wav(&c.join("musan").join(kind).join(format!("src/f{j}/{}.wav", j * 3)), (k * 10 + j) as u32, 80000);
        }
    }
    for j in 0..2 {
        let rir: Vec<f32> =
            (0..800).map(|i| (-(i as f32) / 100.0).exp() * if i % 7 == 0 { 1.0 } else { -0.3 }).collect();
        let p = c.join("rir/smallroom").join(format!("r{j}.wav"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        nexttdnn::audio::wav::write_wav_i16(&p, &rir, 16000).unwrap();
    }
    std::fs::write(
        c.join("trials.txt"),
        "1 spk0/s0/00000.wav spk0/s1/00001.wav\n0 spk0/s0/00000.wav spk1/s0/00000.wav\n1 spk2/s0/00000.wav spk2/s2/00002.wav\n0 spk1/s1/00001.wav spk2/s1/00001.wav\n",
    )
    .unwrap();
    c
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
        .args(["--n-classes", "4", "--batch-size", "4", "--epochs", "2", "--workers", "2"])
        .args(extra);
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
