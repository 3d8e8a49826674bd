//! Training data: the train list, the epoch order, and a pool of CPU threads
//! that decodes, crops and augments batches ahead of the device.
//!
//! Everything random is a pure function of (seed, epoch, position), so a run
//! resumed from a checkpoint sees exactly the batches it would have seen.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::collective::micro_positions;
use crate::audio::augment::{crop, Augmenter};
use crate::audio::read_wav;

/// Utterances with integer speaker labels in order of first appearance.
#[derive(Debug, Clone)]
pub struct TrainSet {
    pub files: Vec<PathBuf>,
    pub labels: Vec<usize>,
    pub speakers: Vec<String>,
}

impl TrainSet {
    /// Reads a voxceleb_trainer list (`speaker path`) and checks every file exists.
    pub fn load(list: &Path, root: &Path) -> Result<Self> {
        let entries = parse_train_list(list, &crate::files::read_text(list)?)?;
        let mut index: BTreeMap<String, usize> = BTreeMap::new();
        let mut set = TrainSet { files: vec![], labels: vec![], speakers: vec![] };
        for (n, spk, path) in entries {
            let p = root.join(&path);
            if !p.is_file() {
                bail!("{}:{n}: {}: file not found", list.display(), p.display());
            }
            let next = set.speakers.len();
            let label = *index.entry(spk.clone()).or_insert_with(|| {
                set.speakers.push(spk.clone());
                next
            });
            set.files.push(p);
            set.labels.push(label);
        }
        if set.files.is_empty() {
            bail!("{}: the train list holds no utterances", list.display());
        }
        if set.speakers.len() == 1 {
            log::warn!(
                "{}: every utterance is of one speaker ({}); a speaker classifier with one class learns nothing (its loss is 0 from the start)",
                list.display(),
                set.speakers[0]
            );
        }
        Ok(set)
    }
}

/// The lines of a voxceleb_trainer list read from `list` (named in errors):
/// (line, speaker, path).
pub fn parse_train_list(list: &Path, text: &str) -> Result<Vec<(usize, String, String)>> {
    let mut out = Vec::new();
    for (n, line) in crate::lists::lines_of(text) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [spk, path] = f.as_slice() else {
            bail!("{}:{n}: malformed line {line:?}: expected `speaker path`", list.display())
        };
        out.push((n, spk.to_string(), path.to_string()));
    }
    Ok(out)
}

/// A stream of 64-bit seeds mixed from its inputs (SplitMix64 finaliser).
pub fn mix(parts: &[u64]) -> u64 {
    let mut z: u64 = 0x9E37_79B9_7F4A_7C15;
    for &p in parts {
        z = z.wrapping_add(p).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
    }
    z
}

/// The visiting order of an epoch: every utterance once, shuffled.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut StdRng::seed_from_u64(mix(&[seed, epoch as u64, 1])));
    order
}

/// Full batches per epoch (the last partial batch is dropped).
pub fn steps_per_epoch(n: usize, batch: usize) -> usize {
    n / batch
}

/// The crops of one micro-batch, ready for the device.
pub struct MicroCrops {
    /// `[b, crop]` row-major.
    pub wav: Vec<f32>,
    pub labels: Vec<usize>,
}

/// This process's micro-batches of one step.
pub struct Batch {
    pub step: usize,
    pub micro: Vec<MicroCrops>,
}

/// Settings of a loader.
#[derive(Clone)]
pub struct LoaderSpec {
    pub set: Arc<TrainSet>,
    pub augmenter: Option<Arc<Augmenter>>,
    /// Crops per step over all ranks and micro-batches.
    pub batch: usize,
    /// The micro-batches of each step this process loads, of `total`.
    pub micro: Vec<usize>,
    pub total: usize,
    pub crop: usize,
    pub seed: u64,
    pub sample_rate: u32,
    pub workers: usize,
    pub prefetch: usize,
}

/// Batches of one epoch from `first_step` on, produced by worker threads and
/// delivered in order.
pub struct Loader {
    rx: Receiver<(usize, Result<Batch>)>,
    pending: BTreeMap<usize, Result<Batch>>,
    next: usize,
    end: usize,
    /// Seconds the consumer spent waiting for data.
    pub wait_secs: f64,
}

/// One crop: the utterance at `pos` of the epoch's order, cropped and
/// augmented with randomness drawn from (seed, epoch, pos) alone, so that
/// neither the number of ranks nor the micro-batch split changes it.
fn make_crop(spec: &LoaderSpec, order: &[usize], epoch: usize, pos: usize) -> Result<(Vec<f32>, usize)> {
    let idx = order[pos];
    let mut rng = StdRng::seed_from_u64(mix(&[spec.seed, epoch as u64, pos as u64, 2]));
    let path = &spec.set.files[idx];
    let audio = read_wav(path, spec.sample_rate, 1)?;
    let mut x = crop(&audio.samples, spec.crop, &mut rng);
    if let Some(aug) = &spec.augmenter {
        aug.apply(&mut x, &mut rng).with_context(|| format!("augmenting {}", path.display()))?;
    }
    Ok((x, spec.set.labels[idx]))
}

fn make_batch(spec: &LoaderSpec, order: &[usize], epoch: usize, step: usize) -> Result<Batch> {
    let mut micro = Vec::with_capacity(spec.micro.len());
    for &m in &spec.micro {
        let per = spec.batch / spec.total;
        let (mut wav, mut labels) = (Vec::with_capacity(per * spec.crop), Vec::with_capacity(per));
        for j in micro_positions(m, spec.total, spec.batch) {
            let (x, label) = make_crop(spec, order, epoch, step * spec.batch + j)?;
            wav.extend_from_slice(&x);
            labels.push(label);
        }
        micro.push(MicroCrops { wav, labels });
    }
    Ok(Batch { step, micro })
}

impl Loader {
    pub fn start(spec: &LoaderSpec, epoch: usize, first_step: usize) -> Self {
        let order = Arc::new(epoch_order(spec.set.files.len(), spec.seed, epoch));
        let end = steps_per_epoch(spec.set.files.len(), spec.batch);
        let counter = Arc::new(AtomicUsize::new(first_step));
        let (tx, rx) = sync_channel(spec.prefetch.max(1));
        for _ in 0..spec.workers.max(1) {
            let (tx, counter, order, spec) = (tx.clone(), counter.clone(), order.clone(), spec.clone());
            std::thread::spawn(move || loop {
                let step = counter.fetch_add(1, Ordering::SeqCst);
                if step >= end {
                    break;
                }
                let b = make_batch(&spec, &order, epoch, step);
                if tx.send((step, b)).is_err() {
                    break;
                }
            });
        }
        Self { rx, pending: BTreeMap::new(), next: first_step, end, wait_secs: 0.0 }
    }
}

impl Iterator for Loader {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.next >= self.end {
            return None;
        }
        let t = Instant::now();
        while !self.pending.contains_key(&self.next) {
            match self.rx.recv() {
                Ok((s, b)) => {
                    self.pending.insert(s, b);
                }
                Err(_) => return Some(Err(anyhow::anyhow!("data loader threads stopped"))),
            }
        }
        self.wait_secs += t.elapsed().as_secs_f64();
        let b = self.pending.remove(&self.next);
        self.next += 1;
        b
    }
}
