//! `prepare`: data preparation steps (see [`crate::prepare`]).

use anyhow::Result;

use super::cli::PrepareCommand;
use crate::files::{OutputLock, WhenBusy};
use crate::prepare::{musan, trials, voxceleb};

fn jobs(j: Option<usize>) -> usize {
    j.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
}

pub fn run(what: &PrepareCommand) -> Result<()> {
    // Every step that writes a folder holds its lock; `trials` writes only --merged.
    let out = match what {
        PrepareCommand::Voxceleb { out, .. } | PrepareCommand::Musan { out, .. } | PrepareCommand::Rir { out, .. } => {
            Some(out.as_path())
        }
        PrepareCommand::Trials { merged, .. } => merged.as_deref(),
    };
    let _lock = out.map(|o| OutputLock::acquire(o, WhenBusy::Wait)).transpose()?;
    match what {
        PrepareCommand::Voxceleb { root, out, sample_rate, min_seconds, jobs: j, force } => {
            let s = voxceleb::prepare(
                &voxceleb::VoxArgs {
                    root: root.clone(),
                    out: out.clone(),
                    sample_rate: *sample_rate,
                    min_seconds: *min_seconds,
                    jobs: jobs(*j),
                    force: *force,
                },
                &super::Terminal,
            )?;
            println!(
                "{} files: {} usable ({} decoded from m4a, {} from an earlier run), {} bad (see {}); {:.1} files/s",
                s.files,
                s.good,
                s.converted,
                s.resumed,
                s.bad,
                out.join("report.tsv").display(),
                s.files as f64 / s.seconds.max(1e-9)
            );
            println!("train with: --train-list {} --wav-root {}", s.list.display(), s.wav_root.display());
        }
        PrepareCommand::Musan { root, out, sample_rate, chunk_seconds, hop_seconds, jobs: j, force } => {
            let spec = musan::SplitSpec {
                sample_rate: *sample_rate,
                chunk_seconds: *chunk_seconds,
                hop_seconds: *hop_seconds,
                jobs: jobs(*j),
                force: *force,
            };
            let n = musan::split_musan(root, out, &spec, &super::Terminal)?;
            println!("{n} chunks in {}", out.display());
        }
        PrepareCommand::Rir { root, out, rooms, force } => {
            let rooms: Vec<&str> = rooms.iter().map(String::as_str).collect();
            let n = musan::select_rirs(root, out, &rooms, *force)?;
            println!("{n} impulse responses in {}", out.display());
        }
        PrepareCommand::Trials { list, roots, merged, sample_rate, min_seconds } => {
            let min_samples = (min_seconds * *sample_rate as f64).ceil() as usize;
            let (root, n) = trials::check(list, roots, merged.as_deref(), *sample_rate, min_samples)?;
            println!("all {n} files of {} found; evaluate with --wav-root {}", list.display(), root.display());
        }
    }
    Ok(())
}
