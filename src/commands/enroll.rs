//! `enroll`, `identify` and `registry`: speakers enrolled in a registry file
//! ([`crate::registry`]), and recordings identified against them.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::device::SelectedDevice;
use crate::embed::{default_batch_seconds, Embedder};
use crate::files::{write_atomic, OutputLock, WhenBusy};
use crate::lists::{check_audio, ListedFile};
use crate::registry::{identify, Decider, Enrollment, Registry, Scoring};
use crate::weights::SpeakerModel;

/// Options of `enroll`.
#[derive(Debug, Clone, clap::Args)]
pub struct EnrollArgs {
    /// The registry file (created if missing).
    #[arg(long)]
    pub registry: PathBuf,
    /// Model file (default: the bundled model); it must be the registry's.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Start the speaker afresh instead of adding to their recordings.
    #[arg(long)]
    pub replace: bool,
    /// Bulk enrollment: `name path` lines (the list grammar of README's "Lists").
    #[arg(long, conflicts_with = "name")]
    pub list: Option<PathBuf>,
    /// Root for relative paths in --list (default: the list's folder).
    #[arg(long, requires = "list")]
    pub wav_root: Option<PathBuf>,
    /// The speaker's name.
    #[arg(required_unless_present = "list")]
    pub name: Option<String>,
    /// Their recordings.
    pub wavs: Vec<PathBuf>,
}

/// Options of `identify`.
#[derive(Debug, Clone, clap::Args)]
pub struct IdentifyArgs {
    #[arg(long)]
    pub registry: PathBuf,
    /// Model file (default: the bundled model); it must be the registry's.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Speakers shown per file (0: all).
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    /// One JSON object per line and file:
    /// `{"file", "decision", "ranked": [{"name", "score", "llr"}]}`, best first.
    #[arg(long)]
    pub json: bool,
    /// Decision threshold on the cosine; overrides the model's calibration
    /// and stored threshold.
    #[arg(long, value_parser = super::cli::finite)]
    pub threshold: Option<f64>,
    /// Prior of an enrolled speaker for the calibrated decision (default:
    /// the config's first P_target).
    #[arg(long, value_parser = super::cli::probability)]
    pub p_target: Option<f64>,
    /// Score against the best single enrollment instead of their mean.
    #[arg(long)]
    pub max: bool,
    /// Recordings to identify.
    #[arg(required = true)]
    pub wavs: Vec<PathBuf>,
}

/// `registry` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum RegistryCommand {
    /// The enrolled speakers, with their number of recordings.
    List { registry: PathBuf },
    /// Remove a speaker.
    Remove { registry: PathBuf, name: String },
    /// Rename a speaker.
    Rename { registry: PathBuf, old: String, new: String },
    /// Write the registry in its JSON form (for the browser page).
    Export { registry: PathBuf, json: PathBuf },
    /// Write a registry file from the JSON form (`--replace` to overwrite one).
    Import {
        json: PathBuf,
        registry: PathBuf,
        #[arg(long)]
        replace: bool,
    },
}

/// Unix seconds now (the registry records when each recording was enrolled).
fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Reads a registry file, or `None` when there is none yet.
pub fn read_registry(path: &Path) -> Result<Option<Registry>> {
    match std::fs::read(path) {
        Ok(bytes) => Registry::from_bytes(&bytes, path).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("{}: cannot read", path.display())),
    }
}

fn existing(path: &Path) -> Result<Registry> {
    read_registry(path)?
        .with_context(|| format!("{}: no such registry (enroll a speaker to create it)", path.display()))
}

/// The files to enroll: (name, file, what errors name).
fn enrollments(args: &EnrollArgs) -> Result<Vec<(String, PathBuf, String)>> {
    if let Some(list) = &args.list {
        let text = crate::files::read_text(list)?;
        let root = args.wav_root.clone().or_else(|| list.parent().map(Path::to_path_buf));
        // The `speaker path` lines of a train list.
        let mut out = Vec::new();
        for (n, name, path) in crate::train::data::parse_train_list(list, &text)? {
            let p = crate::lists::resolve(root.as_deref(), &path);
            out.push((name, p.clone(), format!("{}:{n}: {}", list.display(), p.display())));
        }
        anyhow::ensure!(!out.is_empty(), "{}: the list holds no recordings", list.display());
        return Ok(out);
    }
    let name = args.name.clone().expect("clap requires a name without --list");
    anyhow::ensure!(!args.wavs.is_empty(), "enrolling {name:?}: give one or more recordings");
    Ok(args.wavs.iter().map(|w| (name.clone(), w.clone(), w.display().to_string())).collect())
}

pub fn enroll(args: &EnrollArgs, dev: &SelectedDevice) -> Result<()> {
    let items = enrollments(args)?;
    let model = super::load_model(args.model.as_deref(), dev)?;
    let embs = embed_checked(&model, dev, &items.iter().map(|(_, p, at)| (p.clone(), at.clone())).collect::<Vec<_>>())?;
    // Held from reading the registry to writing it: concurrent enrollments
    // into one registry all land.
    let _lock = OutputLock::acquire(&args.registry, WhenBusy::Wait)?;
    let mut registry = match read_registry(&args.registry)? {
        Some(r) => {
            r.check_model(&model.key, &args.registry.display().to_string())?;
            r
        }
        None => Registry::new(&model.key, model.config.model.embedding_dim),
    };
    let at = now();
    let mut by_name: Vec<(String, Vec<Enrollment>)> = Vec::new();
    for ((name, path, _), embedding) in items.into_iter().zip(embs) {
        let e = Enrollment { source: path.display().to_string(), enrolled_at: at, embedding };
        match by_name.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => v.push(e),
            None => by_name.push((name, vec![e])),
        }
    }
    for (name, list) in &by_name {
        let n = list.len();
        registry.enroll(name, list.clone(), args.replace)?;
        let total = registry.speaker(name).map_or(0, |s| s.enrollments.len());
        println!("enrolled {name}: {n} recording(s), {total} in all");
    }
    write_atomic(&args.registry, &registry.to_bytes()?)?;
    println!("{}: {} speaker(s)", args.registry.display(), registry.speakers.len());
    Ok(())
}

/// Embeddings of checked recordings, in order; errors name each file as `at`.
fn embed_checked(model: &SpeakerModel, dev: &SelectedDevice, files: &[(PathBuf, String)]) -> Result<Vec<Vec<f32>>> {
    let rate = model.config.frontend.sample_rate;
    let listed: Vec<ListedFile> =
        files.iter().map(|(p, at)| check_audio(p.clone(), at, rate)).collect::<Result<_>>()?;
    let embedder = Embedder::new(model, &dev.device);
    embedder.embed_listed(&listed, default_batch_seconds(&dev.device), &|_| {})
}

pub fn identify_files(args: &IdentifyArgs, dev: &SelectedDevice) -> Result<()> {
    let registry = existing(&args.registry)?;
    let model = super::load_model(args.model.as_deref(), dev)?;
    registry.check_model(&model.key, &args.registry.display().to_string())?;
    let decider = Decider::for_model(&model, args.threshold, args.p_target)?;
    let index = registry.index(if args.max { Scoring::Max } else { Scoring::Mean });
    let files: Vec<(PathBuf, String)> = args.wavs.iter().map(|w| (w.clone(), w.display().to_string())).collect();
    let embs = embed_checked(&model, dev, &files)?;
    for (file, emb) in args.wavs.iter().zip(embs) {
        let id = identify(&index, &emb, &decider, args.top)?;
        if args.json {
            let mut v = serde_json::to_value(&id)?;
            v["file"] = serde_json::json!(file.display().to_string());
            println!("{}", serde_json::to_string(&v)?);
            continue;
        }
        println!("{}: {}", file.display(), id.decision);
        for r in &id.ranked {
            let llr = r.llr.map(|l| format!("  llr {l:+.3}")).unwrap_or_default();
            println!("  {:<24} {:.4}{llr}", r.name, r.score);
        }
    }
    Ok(())
}

pub fn registry(what: &RegistryCommand) -> Result<()> {
    match what {
        RegistryCommand::List { registry } => {
            let r = existing(registry)?;
            println!(
                "{}: {} speaker(s), embeddings of {} values, model key {}",
                registry.display(),
                r.speakers.len(),
                r.dim,
                r.model_key
            );
            for s in &r.speakers {
                println!("{}\t{} recording(s)", s.name, s.enrollments.len());
            }
        }
        RegistryCommand::Remove { registry, name } => {
            let _lock = OutputLock::acquire(registry, WhenBusy::Wait)?;
            let mut r = existing(registry)?;
            r.remove(name)?;
            write_atomic(registry, &r.to_bytes()?)?;
            println!("removed {name}");
        }
        RegistryCommand::Rename { registry, old, new } => {
            let _lock = OutputLock::acquire(registry, WhenBusy::Wait)?;
            let mut r = existing(registry)?;
            r.rename(old, new)?;
            write_atomic(registry, &r.to_bytes()?)?;
            println!("renamed {old} to {new}");
        }
        RegistryCommand::Export { registry, json } => {
            let r = existing(registry)?;
            write_atomic(json, r.to_json().as_bytes())?;
            println!("wrote {} ({} speakers)", json.display(), r.speakers.len());
        }
        RegistryCommand::Import { json, registry, replace } => {
            let text = crate::files::read_text(json)?;
            let r = Registry::from_json(&text, &json.display().to_string())?;
            let _lock = OutputLock::acquire(registry, WhenBusy::Wait)?;
            if registry.exists() && !replace {
                bail!("{} exists; pass --replace to overwrite it", registry.display());
            }
            write_atomic(registry, &r.to_bytes()?)?;
            println!("wrote {} ({} speakers)", registry.display(), r.speakers.len());
        }
    }
    Ok(())
}
