//! `enroll`, `identify` and `registry` on the bundled model and recordings.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::*;

fn audio(name: &str) -> PathBuf {
    root().join("assets").join("audio").join(format!("{name}.wav"))
}

fn enroll(registry: &Path, name: &str, wavs: &[&str]) -> std::process::Command {
    let mut c = bin();
    c.args(["--device", "cpu", "enroll", "--registry"]).arg(registry).arg(name);
    for w in wavs {
        c.arg(audio(w));
    }
    c
}

/// `identify --json` of one recording: (decision, ranked names, scores).
fn identify(registry: &Path, wav: &str, extra: &[&str]) -> (String, Vec<String>, Vec<f64>) {
    let mut c = bin();
    c.args(["--device", "cpu", "identify", "--json", "--top", "0", "--registry"])
        .arg(registry)
        .args(extra)
        .arg(audio(wav));
    let out = run_ok(&mut c);
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(v["file"], audio(wav).display().to_string());
    let ranked = v["ranked"].as_array().unwrap();
    (
        v["decision"].as_str().unwrap().to_string(),
        ranked.iter().map(|r| r["name"].as_str().unwrap().to_string()).collect(),
        ranked.iter().map(|r| r["score"].as_f64().unwrap()).collect(),
    )
}

#[test]
fn enrolled_speakers_are_identified_and_strangers_are_unknown() {
    let dir = tmpdir("enroll");
    let reg = dir.join("team.registry");
    run_ok(&mut enroll(&reg, "alice", &["spk1_a", "spk1_b", "spk1_c"]));
    run_ok(&mut enroll(&reg, "bob", &["spk2_a", "spk2_b", "spk2_c"]));
    run_ok(&mut enroll(&reg, "carol", &["spk6_a", "spk6_b", "spk6_c"]));
    // Another recording of each enrolled speaker: top-1, and accepted. The
    // same assertion with the wrong speaker fails: bob's recording is not alice.
    for (wav, who) in [("spk1_d", "alice"), ("spk2_d", "bob"), ("spk6_d", "carol")] {
        let (decision, ranked, scores) = identify(&reg, wav, &[]);
        assert_eq!(decision, who, "{wav}: {ranked:?} {scores:?}");
        assert_eq!(ranked.len(), 3);
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "not best first: {scores:?}");
    }
    assert_ne!(identify(&reg, "spk2_d", &[]).0, "alice");
    // A speaker who is not enrolled: unknown at the model's decision rule.
    let (decision, ranked, scores) = identify(&reg, "spk7_a", &[]);
    assert_eq!(decision, "unknown", "{ranked:?} {scores:?}");

    // Upsert, then --replace.
    run_ok(&mut enroll(&reg, "alice", &["spk1_d"]));
    let list = run_ok(bin().args(["registry", "list"]).arg(&reg));
    assert!(list.contains("alice\t4 recording(s)"), "{list}");
    let mut c = enroll(&reg, "alice", &["spk1_a"]);
    run_ok(c.arg("--replace"));
    let list = run_ok(bin().args(["registry", "list"]).arg(&reg));
    assert!(list.contains("alice\t1 recording(s)"), "{list}");

    // Rename and remove.
    run_ok(bin().args(["registry", "rename"]).arg(&reg).args(["carol", "dave"]));
    let e = run_err(bin().args(["registry", "rename"]).arg(&reg).args(["dave", "bob"]));
    assert!(e.contains("already enrolled"), "{e}");
    run_ok(bin().args(["registry", "remove"]).arg(&reg).arg("bob"));
    let list = run_ok(bin().args(["registry", "list"]).arg(&reg));
    assert!(list.contains("dave") && !list.contains("bob") && !list.contains("carol"), "{list}");

    // Export and import: the same scores.
    let json = dir.join("team.json");
    run_ok(bin().args(["registry", "export"]).arg(&reg).arg(&json));
    let copy = dir.join("copy.registry");
    run_ok(bin().args(["registry", "import"]).arg(&json).arg(&copy));
    assert_eq!(identify(&reg, "spk6_d", &[]), identify(&copy, "spk6_d", &[]));
    let e = run_err(bin().args(["registry", "import"]).arg(&json).arg(&copy));
    assert!(e.contains("--replace"), "{e}");
}

#[test]
fn foreign_or_damaged_registries_are_refused() {
    let dir = tmpdir("registry-bad");
    let reg = dir.join("r.registry");
    run_ok(&mut enroll(&reg, "alice", &["spk1_a"]));
    // Another model (the tiny fixture, imported): refused, naming the registry.
    let tiny = dir.join("tiny.safetensors");
    run_ok(&mut import_cmd("tiny_C32_B1_K65_7", &tiny));
    let mut c = bin();
    c.args(["--device", "cpu", "identify", "--threshold", "0.5", "--model"]).arg(&tiny).arg("--registry").arg(&reg);
    let e = run_err(c.arg(audio("spk1_b")));
    assert!(e.contains("r.registry") && e.contains("another model"), "{e}");
    let mut c = enroll(&reg, "bob", &["spk2_a"]);
    let e = run_err(c.arg("--model").arg(&tiny));
    assert!(e.contains("another model"), "{e}");
    // A flipped byte.
    let mut bytes = std::fs::read(&reg).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 0x20;
    std::fs::write(&reg, &bytes).unwrap();
    let e = run_err(bin().args(["registry", "list"]).arg(&reg));
    assert!(e.contains("r.registry") && e.contains("corrupt"), "{e}");
    // Missing and bad recordings are named.
    let fresh = dir.join("fresh.registry");
    let mut c = bin();
    c.args(["--device", "cpu", "enroll", "--registry"]).arg(&fresh).arg("x").arg(dir.join("missing.wav"));
    let e = run_err(&mut c);
    assert!(e.contains("missing.wav") && e.contains("not found"), "{e}");
    assert!(!fresh.exists());
}

#[test]
fn two_enrollments_at_once_both_land() {
    let dir = tmpdir("enroll-race");
    let reg = dir.join("r.registry");
    // A holds the registry's lock (after embedding, before reading it) while B enrolls.
    let mut a = enroll(&reg, "alice", &["spk1_a"])
        .env("NEXTTDNN_TEST_PAUSE", "locked:3000")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(a.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap().contains("test pause: locked") {
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    let (ok, o, e) = run_cmd(&mut enroll(&reg, "bob", &["spk2_a"]));
    assert!(ok, "{o}{e}");
    assert!(e.contains("in use by process"), "B did not wait: {e}");
    assert!(a.wait().unwrap().success());
    let list = run_ok(bin().args(["registry", "list"]).arg(&reg));
    assert!(list.contains("alice") && list.contains("bob"), "one enrollment was lost: {list}");
}
