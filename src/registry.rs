//! Enrolled speakers: a registry of named speakers and their enrollment
//! embeddings, for verification against an enrolled speaker and for
//! identification ("which of my speakers is this?", or nobody).
//!
//! A registry belongs to one model: it records the model's key
//! ([`crate::weights::model_key`]) and embedding size, and refuses
//! embeddings of another. Each speaker is scored by the cosine between the
//! query and the mean of the speaker's L2-normalised enrollment embeddings
//! ([`Scoring::Mean`]); the best score over the enrollments
//! ([`Scoring::Max`]) is the alternative measured in BENCHMARKS.md.
//!
//! On disk a registry is a safetensors file, like model files: one tensor
//! `embeddings` `[enrollments, dim]` (rows in speaker order, then enrollment
//! order), the speakers' names, sources and enrollment times as JSON in the
//! metadata, and a SHA-256 over all of it. Its JSON form
//! ([`Registry::to_json`]) carries the same content for the browser page and
//! `registry export`/`import`. Times are Unix seconds passed in by the
//! caller: on wasm there is no system clock.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use crate::eval::score::normalized;

/// Format tag of registry files.
pub const REGISTRY_FORMAT: &str = "nexttdnn-registry";
/// Version of the registry layout.
pub const REGISTRY_VERSION: u32 = 1;
/// The tensor of enrollment embeddings.
const EMBEDDINGS: &str = "embeddings";

/// One enrollment recording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enrollment {
    /// Where it came from (a file name, or a label the caller chose).
    pub source: String,
    /// When it was enrolled, in Unix seconds.
    pub enrolled_at: u64,
    pub embedding: Vec<f32>,
}

/// A named speaker and the recordings they were enrolled with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Speaker {
    pub name: String,
    pub enrollments: Vec<Enrollment>,
}

/// How a speaker's enrollments are compared with a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scoring {
    /// Cosine with the mean of the L2-normalised enrollment embeddings.
    #[default]
    Mean,
    /// The highest cosine over the enrollments.
    Max,
}

/// A speaker's score against a query.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ranked {
    pub name: String,
    pub score: f64,
    /// The calibrated log-likelihood ratio, when the model has a calibration.
    pub llr: Option<f64>,
}

/// The enrolled speakers of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registry {
    pub format: String,
    pub version: u32,
    /// The key of the model whose embeddings these are.
    pub model_key: String,
    pub dim: usize,
    /// By name.
    pub speakers: Vec<Speaker>,
}

/// The metadata of one speaker in a registry file (embeddings apart).
#[derive(Debug, Serialize, Deserialize)]
struct StoredSpeaker {
    name: String,
    enrollments: Vec<StoredEnrollment>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredEnrollment {
    source: String,
    enrolled_at: u64,
}

impl Registry {
    /// An empty registry for the model with key `model_key`.
    pub fn new(model_key: &str, dim: usize) -> Self {
        Self {
            format: REGISTRY_FORMAT.into(),
            version: REGISTRY_VERSION,
            model_key: model_key.into(),
            dim,
            speakers: vec![],
        }
    }

    /// Refuses a model other than the registry's.
    pub fn check_model(&self, model_key: &str, origin: &str) -> Result<()> {
        ensure!(
            self.model_key == model_key,
            "{origin}: the registry was made with another model (key {}…), not this one ({}…); enroll the speakers again with this model",
            &self.model_key[..self.model_key.len().min(12)],
            &model_key[..model_key.len().min(12)]
        );
        Ok(())
    }

    /// The speaker called `name`.
    pub fn speaker(&self, name: &str) -> Option<&Speaker> {
        self.speakers.iter().find(|s| s.name == name)
    }

    /// Adds recordings to the speaker `name` (created if new). With
    /// `replace`, an existing speaker's earlier enrollments are dropped.
    pub fn enroll(&mut self, name: &str, enrollments: Vec<Enrollment>, replace: bool) -> Result<()> {
        check_name(name)?;
        ensure!(!enrollments.is_empty(), "enrolling {name:?}: no recordings");
        for e in &enrollments {
            self.check_embedding(e)?;
        }
        match self.speakers.iter_mut().find(|s| s.name == name) {
            Some(s) if replace => s.enrollments = enrollments,
            Some(s) => s.enrollments.extend(enrollments),
            None => {
                self.speakers.push(Speaker { name: name.into(), enrollments });
                self.speakers.sort_by(|a, b| a.name.cmp(&b.name));
            }
        }
        Ok(())
    }

    /// An enrollment's embedding has the registry's size and is finite.
    fn check_embedding(&self, e: &Enrollment) -> Result<()> {
        ensure!(
            e.embedding.len() == self.dim,
            "{}: an embedding of {} values, the registry holds {}",
            e.source,
            e.embedding.len(),
            self.dim
        );
        ensure!(e.embedding.iter().all(|v| v.is_finite()), "{}: the embedding is not finite", e.source);
        Ok(())
    }

    /// Removes the speaker `name`.
    pub fn remove(&mut self, name: &str) -> Result<()> {
        let before = self.speakers.len();
        self.speakers.retain(|s| s.name != name);
        ensure!(self.speakers.len() < before, "no speaker {name:?} in the registry");
        Ok(())
    }

    /// Renames a speaker; the new name must be free.
    pub fn rename(&mut self, old: &str, new: &str) -> Result<()> {
        check_name(new)?;
        ensure!(self.speaker(new).is_none(), "a speaker {new:?} is already enrolled");
        let s = self.speakers.iter_mut().find(|s| s.name == old).with_context(|| format!("no speaker {old:?}"))?;
        s.name = new.into();
        self.speakers.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(())
    }

    /// Every speaker's score against `query`, best first (ties by name).
    /// For many queries, build the [`SpeakerIndex`] once.
    pub fn rank(&self, query: &[f32], scoring: Scoring) -> Result<Vec<(String, f64)>> {
        self.index(scoring).rank(query)
    }

    /// The vectors queries are compared with, computed once.
    pub fn index(&self, scoring: Scoring) -> SpeakerIndex {
        let mut idx = SpeakerIndex { names: vec![], rows: vec![], owner: vec![], dim: self.dim };
        for (i, s) in self.speakers.iter().enumerate() {
            idx.names.push(s.name.clone());
            let normed: Vec<Vec<f64>> = s.enrollments.iter().map(|e| normalized(&e.embedding)).collect();
            let rows = match scoring {
                Scoring::Mean => {
                    let mut mean = vec![0.0f64; self.dim];
                    for n in &normed {
                        mean.iter_mut().zip(n).for_each(|(m, v)| *m += v);
                    }
                    vec![mean]
                }
                Scoring::Max => normed,
            };
            for r in rows {
                let norm = r.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
                idx.rows.extend(r.iter().map(|v| v / norm));
                idx.owner.push(i);
            }
        }
        idx
    }

    /// The JSON form (`registry export`, the browser page).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a registry serialises")
    }

    /// Reads the JSON form, checked as a file is (`origin` is named in errors).
    pub fn from_json(text: &str, origin: &str) -> Result<Self> {
        let r: Self = serde_json::from_str(text).with_context(|| format!("{origin}: not a registry in JSON form"))?;
        r.validate(origin)?;
        Ok(r)
    }

    fn validate(&self, origin: &str) -> Result<()> {
        ensure!(
            self.format == REGISTRY_FORMAT && self.version == REGISTRY_VERSION,
            "{origin}: not a nexttdnn registry of version {REGISTRY_VERSION} (format {:?}, version {})",
            self.format,
            self.version
        );
        let mut names = std::collections::BTreeSet::new();
        for s in &self.speakers {
            check_name(&s.name).with_context(|| origin.to_string())?;
            ensure!(names.insert(&s.name), "{origin}: the speaker {:?} appears twice", s.name);
            ensure!(!s.enrollments.is_empty(), "{origin}: the speaker {:?} has no enrollments", s.name);
            for e in &s.enrollments {
                self.check_embedding(e).with_context(|| format!("{origin}: an enrollment of {:?}", s.name))?;
            }
        }
        Ok(())
    }

    /// The bytes of a registry file.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let stored: Vec<StoredSpeaker> = self
            .speakers
            .iter()
            .map(|s| StoredSpeaker {
                name: s.name.clone(),
                enrollments: s
                    .enrollments
                    .iter()
                    .map(|e| StoredEnrollment { source: e.source.clone(), enrolled_at: e.enrolled_at })
                    .collect(),
            })
            .collect();
        let rows: Vec<u8> = self
            .speakers
            .iter()
            .flat_map(|s| &s.enrollments)
            .flat_map(|e| &e.embedding)
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let n = rows.len() / 4 / self.dim.max(1);
        let meta: BTreeMap<String, String> = [
            ("format", REGISTRY_FORMAT.to_string()),
            ("format_version", self.version.to_string()),
            ("model_key", self.model_key.clone()),
            ("dim", self.dim.to_string()),
            ("speakers", serde_json::to_string(&stored)?),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        crate::weights::write_checked_safetensors(meta, vec![(EMBEDDINGS.to_string(), vec![n, self.dim], rows)])
    }

    /// Reads the bytes of a registry file (`origin` is named in errors):
    /// the checksum, the format, and the embeddings against the speakers.
    pub fn from_bytes(bytes: &[u8], origin: &Path) -> Result<Self> {
        let (mut tensors, meta) = crate::weights::read_checked_safetensors(
            origin,
            bytes,
            "restore it from a backup or enroll the speakers again",
        )
        .with_context(|| format!("{}: not a nexttdnn registry", origin.display()))?;
        let at = origin.display();
        ensure!(meta.get("format").map(String::as_str) == Some(REGISTRY_FORMAT), "{at}: not a nexttdnn registry");
        let version = meta.get("format_version").and_then(|v| v.parse::<u32>().ok());
        ensure!(
            version == Some(REGISTRY_VERSION),
            "{at}: registry version {version:?}, this version reads {REGISTRY_VERSION}"
        );
        let dim: usize =
            meta.get("dim").and_then(|d| d.parse().ok()).with_context(|| format!("{at}: no embedding size"))?;
        let model_key = meta.get("model_key").cloned().with_context(|| format!("{at}: no model key"))?;
        let stored: Vec<StoredSpeaker> = serde_json::from_str(meta.get("speakers").map_or("", String::as_str))
            .with_context(|| format!("{at}: unreadable speaker list"))?;
        let rows = tensors.remove(EMBEDDINGS).with_context(|| format!("{at}: no embeddings"))?;
        let count: usize = stored.iter().map(|s| s.enrollments.len()).sum();
        ensure!(rows.shape == [count, dim], "{at}: {count} enrollments of size {dim}, embeddings {:?}", rows.shape);
        let mut values = rows.values.chunks_exact(dim.max(1));
        let speakers = stored
            .into_iter()
            .map(|s| Speaker {
                name: s.name,
                enrollments: s
                    .enrollments
                    .into_iter()
                    .map(|e| Enrollment {
                        source: e.source,
                        enrolled_at: e.enrolled_at,
                        embedding: values.next().map(<[f32]>::to_vec).unwrap_or_default(),
                    })
                    .collect(),
            })
            .collect();
        let r = Self { format: REGISTRY_FORMAT.into(), version: REGISTRY_VERSION, model_key, dim, speakers };
        r.validate(&at.to_string())?;
        Ok(r)
    }
}

/// Names are what `identify` prints and scripts match on: non-empty, at
/// most 200 characters, no control characters, and not the word `unknown`
/// (the decision for nobody).
fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) || name.trim() != name {
        bail!("{name:?}: a speaker name must be 1 to 200 characters, without control characters or surrounding spaces");
    }
    if name == UNKNOWN {
        bail!("\"{UNKNOWN}\" is the decision for a voice of nobody enrolled; choose another name");
    }
    Ok(())
}

/// The decision when no enrolled speaker scores above the threshold.
pub const UNKNOWN: &str = "unknown";

/// The unit vectors of a registry's speakers for one [`Scoring`]: one per
/// speaker (the normalised mean of the normalised enrollments) or one per
/// enrollment (scored by the best), built once for many queries.
#[derive(Debug, Clone)]
pub struct SpeakerIndex {
    names: Vec<String>,
    /// `[rows, dim]`, row-major, float64.
    rows: Vec<f64>,
    /// The speaker of each row.
    owner: Vec<usize>,
    dim: usize,
}

impl SpeakerIndex {
    /// Every speaker's cosine with `query`, best first (ties by name).
    pub fn rank(&self, query: &[f32]) -> Result<Vec<(String, f64)>> {
        ensure!(query.len() == self.dim, "an embedding of {} values, the registry holds {}", query.len(), self.dim);
        let q = normalized(query);
        let mut best = vec![f64::NEG_INFINITY; self.names.len()];
        for (row, &who) in self.rows.chunks_exact(self.dim.max(1)).zip(&self.owner) {
            let s: f64 = row.iter().zip(&q).map(|(a, b)| a * b).sum();
            best[who] = best[who].max(s);
        }
        let mut out: Vec<(String, f64)> = self.names.iter().cloned().zip(best).collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(out)
    }
}

/// How a best score becomes a decision: a calibrated LLR against the Bayes
/// threshold of a prior, or the raw cosine against a threshold.
#[derive(Debug, Clone)]
pub enum Decider {
    /// `llr = map(score)`, accepted from `threshold` (an LLR) up.
    Calibrated { calibration: crate::eval::calibration::Calibration, threshold: f64 },
    /// Accepted from this cosine up.
    Raw(f64),
}

impl Decider {
    /// The decision rule for `model`: `threshold` when given (a raw
    /// cosine), else the model's stored calibration at the prior
    /// `p_target` (default: the config's first), else its stored
    /// threshold. A stored calibration of normalised scores or with quality
    /// measures cannot decide on one raw cosine; the stored threshold is
    /// used instead, with a warning.
    pub fn for_model(
        model: &crate::weights::SpeakerModel,
        threshold: Option<f64>,
        p_target: Option<f64>,
    ) -> Result<Decider> {
        if let Some(t) = threshold {
            return Ok(Decider::Raw(t));
        }
        if let Some(stored) = crate::eval::calibration::calibration_for(None, model, None)? {
            let cal = stored.calibration;
            if cal.scores == "raw" && cal.qmfs().is_empty() {
                let e = &model.config.eval;
                let p = p_target.unwrap_or(e.p_targets[0]);
                let threshold = crate::eval::calibration::bayes_threshold(p, e.c_miss, e.c_fa);
                return Ok(Decider::Calibrated { calibration: cal, threshold });
            }
            log::warn!(
                "the model's calibration uses {} scores or quality measures; deciding on the raw cosine",
                cal.scores
            );
        }
        match model.meta.threshold {
            Some(t) => Ok(Decider::Raw(t)),
            None => bail!("the model carries no calibration or threshold: give a threshold"),
        }
    }

    /// The LLR of a score, with a calibration.
    pub fn llr(&self, score: f64) -> Option<f64> {
        match self {
            Decider::Calibrated { calibration, .. } => Some(calibration.llr(score, &[])),
            Decider::Raw(_) => None,
        }
    }

    /// Whether a score is accepted as the speaker.
    pub fn accepts(&self, score: f64) -> bool {
        match self {
            Decider::Calibrated { threshold, .. } => self.llr(score).is_some_and(|l| l >= *threshold),
            Decider::Raw(t) => score >= *t,
        }
    }
}

/// An identification: the decision (a name, or [`UNKNOWN`]) and the ranked
/// speakers, as `identify --json` prints it per file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Identification {
    pub decision: String,
    pub ranked: Vec<Ranked>,
}

/// Identifies `query` among the indexed speakers: the `top` best (all with
/// 0), and the best one if the decider accepts its score.
pub fn identify(index: &SpeakerIndex, query: &[f32], decider: &Decider, top: usize) -> Result<Identification> {
    let ranked = index.rank(query)?;
    let decision = match ranked.first() {
        Some((name, score)) if decider.accepts(*score) => name.clone(),
        _ => UNKNOWN.to_string(),
    };
    let keep = if top == 0 { ranked.len() } else { top.min(ranked.len()) };
    let ranked =
        ranked.into_iter().take(keep).map(|(name, score)| Ranked { llr: decider.llr(score), name, score }).collect();
    Ok(Identification { decision, ranked })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(source: &str, v: &[f32]) -> Enrollment {
        Enrollment { source: source.into(), enrolled_at: 1_700_000_000, embedding: v.to_vec() }
    }

    fn sample() -> Registry {
        let mut r = Registry::new("abc123", 3);
        r.enroll("bob", vec![e("b1", &[0.0, 1.0, 0.0]), e("b2", &[0.1, 0.9, 0.0])], false).unwrap();
        r.enroll("alice", vec![e("a1", &[1.0, 0.0, 0.0])], false).unwrap();
        r
    }

    /// `--threshold` first, then a stored calibration of raw scores, then
    /// the stored threshold; nothing to decide with is an error.
    #[test]
    fn the_decision_rule_follows_the_model() {
        let device = burn::tensor::Device::flex();
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/model/demo.nexttdnn.safetensors");
        let mut model = crate::weights::SpeakerModel::load(&path, &device).unwrap();
        model.meta.threshold = Some(0.4);
        assert!(matches!(Decider::for_model(&model, Some(0.7), None).unwrap(), Decider::Raw(t) if t == 0.7));
        assert!(matches!(Decider::for_model(&model, None, None).unwrap(), Decider::Raw(t) if t == 0.4));
        let cal = crate::eval::calibration::Calibration::fit(
            &[vec![0.9], vec![0.8], vec![0.2], vec![0.1], vec![0.6], vec![0.4], vec![0.3], vec![0.7]],
            &[true, true, false, false, true, false, true, false],
            &[],
            0.5,
        )
        .unwrap();
        model.meta.calibration = Some(cal.to_json());
        let d = Decider::for_model(&model, None, Some(0.5)).unwrap();
        let e = &model.config.eval;
        let t = crate::eval::calibration::bayes_threshold(0.5, e.c_miss, e.c_fa);
        assert!(matches!(d, Decider::Calibrated { threshold, .. } if threshold == t), "{d:?}");
        assert!(d.accepts(0.95) && !d.accepts(0.05) && d.llr(0.5).is_some());
        model.meta = Default::default();
        assert!(Decider::for_model(&model, None, None)
            .unwrap_err()
            .to_string()
            .contains("no calibration or threshold"));
    }

    #[test]
    fn enroll_upserts_replaces_and_refuses_bad_names() {
        let mut r = sample();
        assert_eq!(r.speakers.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["alice", "bob"]);
        r.enroll("alice", vec![e("a2", &[0.9, 0.1, 0.0])], false).unwrap();
        assert_eq!(r.speaker("alice").unwrap().enrollments.len(), 2);
        r.enroll("alice", vec![e("a3", &[1.0, 0.0, 0.1])], true).unwrap();
        assert_eq!(r.speaker("alice").unwrap().enrollments.len(), 1);
        assert!(r.enroll("unknown", vec![e("x", &[1.0, 0.0, 0.0])], false).is_err());
        assert!(r.enroll("a\nb", vec![e("x", &[1.0, 0.0, 0.0])], false).is_err());
        assert!(r.enroll("carol", vec![e("x", &[1.0, 0.0])], false).is_err());
        r.rename("alice", "carol").unwrap();
        assert!(r.rename("carol", "bob").is_err());
        r.remove("bob").unwrap();
        assert!(r.remove("bob").is_err());
    }

    #[test]
    fn identification_ranks_and_says_unknown_below_the_threshold() {
        let r = sample();
        let id = identify(&r.index(Scoring::Mean), &[0.05, 1.0, 0.0], &Decider::Raw(0.5), 0).unwrap();
        assert_eq!(id.decision, "bob");
        assert_eq!(id.ranked.len(), 2);
        assert!(id.ranked[0].score > id.ranked[1].score);
        let id = identify(&r.index(Scoring::Max), &[0.0, 0.0, 1.0], &Decider::Raw(0.5), 1).unwrap();
        assert_eq!(id.decision, UNKNOWN);
        assert_eq!(id.ranked.len(), 1);
    }

    #[test]
    fn files_and_json_round_trip_and_damage_is_found() {
        let r = sample();
        let bytes = r.to_bytes().unwrap();
        let back = Registry::from_bytes(&bytes, Path::new("r.registry")).unwrap();
        assert_eq!(back, r);
        assert_eq!(Registry::from_json(&r.to_json(), "r.json").unwrap(), r);
        let mut bad = bytes.clone();
        let at = bad.len() - 3;
        bad[at] ^= 0x10;
        let err = format!("{:#}", Registry::from_bytes(&bad, Path::new("r.registry")).unwrap_err());
        assert!(err.contains("r.registry") && err.contains("corrupt"), "{err}");
        assert!(r.check_model("other", "r.registry").is_err());
        r.check_model("abc123", "r.registry").unwrap();
        let empty = Registry::new("k", 4);
        assert_eq!(Registry::from_bytes(&empty.to_bytes().unwrap(), Path::new("e")).unwrap(), empty);
    }
}
