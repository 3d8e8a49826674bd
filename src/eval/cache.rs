//! On-disk embedding cache, keyed by model and audio file.
//!
//! One small file per (model, audio file): a header, the embedding, and a
//! SHA-256 of both. The key covers the model's hash and the audio path; the
//! header records the audio's size and modification time, so a changed file
//! is embedded again. A corrupt, partial or stale entry is detected, logged
//! and rebuilt. Writes go through a temporary file and a rename.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::weights::{hex, write_atomic};

const MAGIC: &[u8; 8] = b"NXTDEMB1";
const HEADER: usize = 8 + 4 + 8 + 8;

/// Embeddings of one model.
pub struct EmbeddingCache {
    dir: PathBuf,
    dim: usize,
}

/// Size and modification time of an audio file, as stored in an entry.
fn stamp(audio: &Path) -> Result<(u64, u64)> {
    let m = std::fs::metadata(audio).with_context(|| format!("{}: cannot stat", audio.display()))?;
    let mtime = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    Ok((m.len(), mtime))
}

impl EmbeddingCache {
    /// The cache of the model with hash `model_hash` under `root`; a
    /// `variant` (e.g. a reduced precision) gets a folder of its own.
    pub fn new(root: &Path, model_hash: &str, variant: Option<&str>, dim: usize) -> Result<Self> {
        let mut name = model_hash[..model_hash.len().min(32)].to_string();
        if let Some(v) = variant {
            name = format!("{name}-{v}");
        }
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create cache {}", dir.display()))?;
        Ok(Self { dir, dim })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn entry(&self, audio: &Path) -> PathBuf {
        let abs = std::fs::canonicalize(audio).unwrap_or_else(|_| audio.to_path_buf());
        let key = hex(&Sha256::digest(abs.to_string_lossy().as_bytes()));
        self.dir.join(format!("{}.emb", &key[..32]))
    }

    /// The cached embedding of `audio`, if present, intact and current.
    pub fn get(&self, audio: &Path) -> Option<Vec<f32>> {
        let path = self.entry(audio);
        let bytes = std::fs::read(&path).ok()?;
        match self.decode(&bytes, audio) {
            Ok(v) => Some(v),
            Err(why) => {
                log::warn!("cache entry {} for {}: {why}; embedding again", path.display(), audio.display());
                std::fs::remove_file(&path).ok();
                None
            }
        }
    }

    fn decode(&self, bytes: &[u8], audio: &Path) -> Result<Vec<f32>, String> {
        let want = HEADER + 4 * self.dim + 32;
        if bytes.len() != want {
            return Err(format!("{} bytes, expected {want} (partial or corrupt)", bytes.len()));
        }
        let (body, digest) = bytes.split_at(bytes.len() - 32);
        if Sha256::digest(body).as_slice() != digest {
            return Err("checksum mismatch (corrupt)".into());
        }
        if &body[..8] != MAGIC {
            return Err("bad magic".into());
        }
        let dim = u32::from_le_bytes(body[8..12].try_into().unwrap()) as usize;
        if dim != self.dim {
            return Err(format!("dimension {dim}, expected {}", self.dim));
        }
        let len = u64::from_le_bytes(body[12..20].try_into().unwrap());
        let mtime = u64::from_le_bytes(body[20..28].try_into().unwrap());
        let now = stamp(audio).map_err(|e| e.to_string())?;
        if (len, mtime) != now {
            return Err("the audio file changed".into());
        }
        Ok(body[HEADER..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect())
    }

    /// Stores the embedding of `audio`.
    pub fn put(&self, audio: &Path, emb: &[f32]) -> Result<()> {
        anyhow::ensure!(emb.len() == self.dim, "embedding has {} values, expected {}", emb.len(), self.dim);
        let (len, mtime) = stamp(audio)?;
        let mut body = Vec::with_capacity(HEADER + 4 * self.dim + 32);
        body.extend_from_slice(MAGIC);
        body.extend_from_slice(&(self.dim as u32).to_le_bytes());
        body.extend_from_slice(&len.to_le_bytes());
        body.extend_from_slice(&mtime.to_le_bytes());
        for v in emb {
            body.extend_from_slice(&v.to_le_bytes());
        }
        let digest = Sha256::digest(&body);
        body.extend_from_slice(&digest);
        write_atomic(&self.entry(audio), &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_corruption_and_staleness() {
        let dir = std::env::temp_dir().join(format!("nexttdnn-cache-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let audio = dir.join("a.wav");
        std::fs::write(&audio, b"pretend audio").unwrap();
        let cache = EmbeddingCache::new(&dir.join("cache"), "0123456789abcdef0123456789abcdef", None, 3).unwrap();
        assert!(cache.get(&audio).is_none());
        cache.put(&audio, &[1.0, -2.0, 3.5]).unwrap();
        assert_eq!(cache.get(&audio).unwrap(), vec![1.0, -2.0, 3.5]);

        // A flipped byte is detected and the entry dropped.
        let entry = cache.entry(&audio);
        let mut bytes = std::fs::read(&entry).unwrap();
        bytes[HEADER + 1] ^= 0x40;
        std::fs::write(&entry, &bytes).unwrap();
        assert!(cache.get(&audio).is_none());
        assert!(!entry.exists());

        // A truncated entry too.
        cache.put(&audio, &[1.0, 2.0, 3.0]).unwrap();
        let bytes = std::fs::read(&entry).unwrap();
        std::fs::write(&entry, &bytes[..bytes.len() - 5]).unwrap();
        assert!(cache.get(&audio).is_none());

        // A changed audio file invalidates its entry.
        cache.put(&audio, &[1.0, 2.0, 3.0]).unwrap();
        std::fs::write(&audio, b"other, longer audio data").unwrap();
        assert!(cache.get(&audio).is_none());

        // Another variant of the same model (e.g. f16) has its own entries.
        cache.put(&audio, &[1.0, 2.0, 3.0]).unwrap();
        let half = EmbeddingCache::new(&dir.join("cache"), "0123456789abcdef0123456789abcdef", Some("f16"), 3).unwrap();
        assert_ne!(half.dir(), cache.dir());
        assert!(half.get(&audio).is_none());
        assert!(cache.get(&audio).is_some());
        std::fs::remove_dir_all(&dir).ok();
    }
}
