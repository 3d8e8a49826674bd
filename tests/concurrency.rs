//! Two runs writing one output: the second waits for the first (or, for
//! training, stops), and what is left is one run's complete set of files.
//!
//! The race is made certain, not likely: `NEXTTDNN_TEST_PAUSE` stops the
//! first run at a chosen point (between the moves of its staged outputs, or
//! just after it takes its lock) while the test starts the second. Without
//! the lock the eval test fails every time: the second run's files land
//! while the first is half-way through putting its own in place.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};

use common::*;

/// Starts `c` with stderr piped and returns once it says `test pause: POINT`.
fn start_paused(c: &mut std::process::Command, point: &str) -> (Child, Vec<String>) {
    let mut child = c.stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    let mut seen = Vec::new();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let reached = line.contains(&format!("test pause: {point}"));
        seen.push(line);
        if reached {
            // Keep draining stderr so that the child never blocks on it.
            std::thread::spawn(move || lines.for_each(drop));
            return (child, seen);
        }
    }
    let status = child.wait().unwrap();
    panic!("the run ended ({status}) before its pause point {point}: {}", seen.join("\n"));
}

fn eval_cmd(out: &Path, cache: &Path, trials: &Path) -> std::process::Command {
    let mut c = bin();
    c.args(["--device", "cpu", "eval", "--no-plots", "--out"])
        .arg(out)
        .arg("--cache-dir")
        .arg(cache)
        .arg("--trials")
        .arg(trials)
        .arg("--wav-root")
        .arg(root().join("assets").join("audio"));
    c
}

#[test]
fn two_evals_into_one_folder_leave_one_complete_set() {
    let dir = tmpdir("two-evals");
    let (out, cache) = (dir.join("out"), dir.join("cache"));
    let all = std::fs::read_to_string(root().join("assets").join("trials.txt")).unwrap();
    let lines: Vec<&str> = all.lines().collect();
    let (list_a, list_b) = (dir.join("a.txt"), dir.join("b.txt"));
    std::fs::write(&list_a, lines[..200].join("\n")).unwrap();
    std::fs::write(&list_b, lines[..150].join("\n")).unwrap();
    // Fill the embedding cache, so that the second run is quick.
    run_ok(&mut eval_cmd(&out, &cache, &list_a));

    // A stops between the moves of its outputs; B runs meanwhile.
    let (mut a, _) = start_paused(eval_cmd(&out, &cache, &list_a).env("NEXTTDNN_TEST_PAUSE", "commit:3000"), "commit");
    let (ok, o, e) = run_cmd(&mut eval_cmd(&out, &cache, &list_b));
    assert!(ok, "{o}{e}");
    assert!(a.wait().unwrap().success());

    // B finished last: its summary and its scores, together.
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["trial_list"], list_b.display().to_string());
    let scores = std::fs::read_to_string(out.join("scores.txt")).unwrap();
    assert_eq!(scores.lines().count(), 150, "scores.txt is not B's");
    assert!(e.contains(&format!("is in use by process {}, waiting", a.id())), "B did not wait for A: {e}");
}

#[test]
fn a_second_training_run_into_one_folder_stops() {
    let dir = tmpdir("two-trains");
    let out = dir.join("run");
    let train = || {
        let mut c = bin();
        c.args(["--device", "cpu", "train", "--config"])
            .arg(config("tiny_C32_B1_K65_7"))
            .arg("--train-list")
            .arg(dir.join("missing.txt"))
            .arg("--wav-root")
            .arg(&*dir)
            .arg("--out")
            .arg(&out);
        c
    };
    // A holds the lock (and then stops: its list does not exist).
    let (mut a, _) = start_paused(train().env("NEXTTDNN_TEST_PAUSE", "locked:5000"), "locked");
    let e = run_err(&mut train());
    assert!(e.contains(&format!("is in use by process {}", a.id())) && e.contains("run"), "{e}");
    assert!(!a.wait().unwrap().success());
    // With A gone, the lock is free again: B gets as far as the missing list.
    let e = run_err(&mut train());
    assert!(e.contains("missing.txt"), "{e}");
}
