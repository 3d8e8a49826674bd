//! Data-parallel training over MPI (`--features distributed`, Open MPI's
//! `mpirun` on the PATH): two ranks equal one process accumulating two
//! micro-batches, over shared memory and over TCP; a killed rank ends the
//! job, and one process resumes it.
#![cfg(feature = "distributed")]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::train_corpus::corpus;
use common::*;

fn train_args(c: &Path, out: &Path, epochs: usize, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = vec!["--device".into(), "cpu".into(), "train".into(), "--config".into()];
    a.push(config("tiny_C32_B1_K65_7").display().to_string());
    for (k, v) in [
        ("--train-list", c.join("train_list.txt")),
        ("--wav-root", c.join("wav")),
        ("--musan", c.join("musan")),
        ("--rir", c.join("rir")),
        ("--out", out.to_path_buf()),
    ] {
        a.push(k.into());
        a.push(v.display().to_string());
    }
    for s in ["--n-classes", "4", "--batch-size", "4", "--workers", "1", "--log-every", "1", "--epochs"] {
        a.push(s.into());
    }
    a.push(epochs.to_string());
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// `mpirun -np 2 [mca…] nexttdnn <args>`, allowed to run as root (CI) and
/// on machines with fewer cores than ranks.
fn mpirun(mca: &[&str], args: &[String]) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["--allow-run-as-root", "--oversubscribe", "-np", "2"])
        .args(mca)
        .arg(env!("CARGO_BIN_EXE_nexttdnn"))
        .args(args)
        .env("RUST_LOG", "info")
        .env("RAYON_NUM_THREADS", "1");
    c
}

fn single(args: &[String]) -> Command {
    let mut c = bin();
    c.args(args).env("RUST_LOG", "info").env("RAYON_NUM_THREADS", "1");
    c
}

fn ok(mut c: Command) -> String {
    let (ok, out, err) = run_cmd(&mut c);
    let log = format!("{out}{err}");
    assert!(ok, "{log}");
    log
}

/// `steps.csv` rows: (global step, loss, accuracy).
fn steps(out: &Path) -> Vec<(usize, f64, f64)> {
    let text = std::fs::read_to_string(out.join("steps.csv")).unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].parse().unwrap(), f[3].parse().unwrap(), f[4].parse().unwrap())
        })
        .collect()
}

/// The trained tensors of a model file (BatchNorm running statistics left
/// out: each rank's are averaged, one process's are updated in sequence).
fn trained(path: &Path) -> Vec<(String, Vec<f32>)> {
    let (t, _) = nexttdnn::weights::read_safetensors(path).unwrap();
    t.into_iter().filter(|(k, _)| !k.contains("running")).map(|(k, v)| (k, v.values)).collect()
}

/// Parameter hashes the ranks reported at the ends of epochs, by rank.
fn rank_hashes(log: &str) -> Vec<Vec<String>> {
    let mut by_rank = vec![vec![], vec![]];
    for l in log.lines() {
        if let Some(rest) = l.split("parameter hash ").nth(1) {
            let rank: usize = l.split("rank ").nth(1).and_then(|r| r.split(':').next()).unwrap().parse().unwrap();
            by_rank[rank].push(rest.trim().to_string());
        }
    }
    by_rank
}

fn compare(reference: &Path, other: &Path, what: &str) {
    let (a, b) = (steps(reference), steps(other));
    assert_eq!(a.len(), 6, "{what}: six steps");
    assert_eq!(a.len(), b.len(), "{what}");
    for ((sa, la, aa), (sb, lb, ab)) in a.iter().zip(&b) {
        assert_eq!(sa, sb);
        assert!((la - lb).abs() <= 1e-5 * la.abs(), "{what}: step {sa}: loss {la} against {lb}");
        assert_eq!(aa, ab, "{what}: step {sa}: accuracy");
    }
    let (ta, tb) = (trained(&reference.join("model.safetensors")), trained(&other.join("model.safetensors")));
    assert_eq!(ta.len(), tb.len());
    for ((ka, va), (kb, vb)) in ta.iter().zip(&tb) {
        assert_eq!(ka, kb);
        let e = max_abs(va, vb);
        assert!(e <= 1e-5, "{what}: {ka}: final parameters differ by {e:e}");
    }
}

#[test]
fn two_ranks_equal_one_process_accumulating_two() {
    let dir = tmpdir("mpi-equal");
    let c = corpus(&dir);
    ok(single(&train_args(&c, &dir.join("single"), 2, &["--accumulate", "2"])));

    for (name, mca) in [("shared memory", vec![]), ("tcp", vec!["--mca", "btl", "tcp,self"])] {
        let out = dir.join(name.replace(' ', "-"));
        let log = ok(mpirun(&mca, &train_args(&c, &out, 2, &[])));
        assert!(log.contains("rank 1 of 2"), "{name}: two ranks ran\n{log}");
        compare(&dir.join("single"), &out, name);
        let h = rank_hashes(&log);
        assert_eq!(h[0].len(), 2, "{name}: a hash check per epoch\n{log}");
        assert_eq!(h[0], h[1], "{name}: the ranks' parameters differ");
    }
    std::fs::remove_dir_all(&dir).ok();
}

fn children(pid: u32) -> Vec<u32> {
    let out = Command::new("pgrep").args(["-P", &pid.to_string()]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect()
}

#[test]
fn a_killed_rank_ends_the_job_and_one_process_resumes() {
    let dir = tmpdir("mpi-kill");
    let c = corpus(&dir);
    let out = dir.join("run");
    let args = train_args(&c, &out, 50, &["--checkpoint-every", "1"]);
    let mut job = mpirun(&[], &args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();

    // Wait for a checkpoint, then kill one rank.
    let t = Instant::now();
    let complete =
        |e: std::io::Result<std::fs::DirEntry>| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("step-"));
    while !out.join("checkpoints").read_dir().is_ok_and(|mut d| d.any(complete)) {
        assert!(t.elapsed() < Duration::from_secs(300), "no checkpoint after 300 s");
        if job.try_wait().unwrap().is_some() {
            let mut err = String::new();
            std::io::Read::read_to_string(job.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("the job ended before its first checkpoint:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let ranks = children(job.id());
    assert!(!ranks.is_empty(), "no rank processes under mpirun");
    let victim = ranks[ranks.len() - 1];
    Command::new("kill").args(["-9", &victim.to_string()]).status().unwrap();
    let killed = Instant::now();
    let status = loop {
        if let Some(s) = job.try_wait().unwrap() {
            break s;
        }
        assert!(killed.elapsed() < Duration::from_secs(30), "the job still runs 30 s after a rank was killed");
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("job ended {:.1} s after the kill with {status}", killed.elapsed().as_secs_f64());
    assert!(!status.success(), "a job with a killed rank must fail");

    // One process continues from the last checkpoint (a step or two in) and
    // finishes four epochs of three steps.
    let log = ok(single(&train_args(&c, &out, 4, &["--resume", "--accumulate", "2"])));
    assert!(log.contains("resumed from"), "{log}");
    let rows: Vec<usize> = steps(&out).iter().map(|r| r.0).collect();
    assert_eq!(rows, (1..=12).collect::<Vec<_>>(), "every step logged once");
    assert!(out.join("model.safetensors").is_file());
    std::fs::remove_dir_all(&dir).ok();
}
