//! On-disk embedding cache, keyed by model and audio content.
//!
//! One small file per (model, audio content): a header with the SHA-256 of
//! the audio bytes, the embedding, and a SHA-256 of both. The model's key
//! covers its tensors and config (see `weights::model_key`), so
//! rewriting a model file's metadata keeps its cache; the audio's key is the
//! hash of its bytes, so any change of content is seen, whatever the file's
//! size and modification time. A corrupt, partial or foreign entry is
//! detected, logged and rebuilt. Writes go through a temporary file and a
//! rename.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::files::{hex, write_atomic};

const MAGIC: &[u8; 8] = b"NXTDEMB2";
const HEADER: usize = 8 + 4 + 32;

/// SHA-256 of an audio file's bytes: its key in the cache.
pub type AudioKey = [u8; 32];

/// The cache key of audio bytes.
pub fn audio_key(bytes: &[u8]) -> AudioKey {
    Sha256::digest(bytes).into()
}

/// Embeddings of one model.
pub struct EmbeddingCache {
    dir: PathBuf,
    dim: usize,
}

impl EmbeddingCache {
    /// The cache of the model with key `model_key` under `root`; a `variant`
    /// (e.g. a reduced precision) gets a folder of its own.
    pub fn new(root: &Path, model_key: &str, variant: Option<&str>, dim: usize) -> Result<Self> {
        let mut name = model_key[..model_key.len().min(32)].to_string();
        if let Some(v) = variant {
            name = format!("{name}-{v}");
        }
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create cache {}", dir.display()))?;
        Ok(Self { dir, dim })
    }

    /// Entries are spread over 256 folders by their first byte.
    fn entry(&self, key: &AudioKey) -> PathBuf {
        let h = hex(key);
        self.dir.join(&h[..2]).join(format!("{h}.emb"))
    }

    /// The cached embedding of the audio with `key`, if present and intact.
    pub fn get(&self, key: &AudioKey) -> Option<Vec<f32>> {
        let path = self.entry(key);
        let bytes = std::fs::read(&path).ok()?;
        match self.decode(&bytes, key) {
            Ok(v) => Some(v),
            Err(why) => {
                log::warn!("cache entry {}: {why}; embedding again", path.display());
                std::fs::remove_file(&path).ok();
                None
            }
        }
    }

    fn decode(&self, bytes: &[u8], key: &AudioKey) -> Result<Vec<f32>, String> {
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
        if &body[12..44] != key {
            return Err("the entry belongs to other audio".into());
        }
        let v: Vec<f32> = body[HEADER..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        if v.iter().any(|x| !x.is_finite()) {
            return Err("the embedding is not finite".into());
        }
        Ok(v)
    }

    /// Stores the embedding of the audio with `key`.
    pub fn put(&self, key: &AudioKey, emb: &[f32]) -> Result<()> {
        anyhow::ensure!(emb.len() == self.dim, "embedding has {} values, expected {}", emb.len(), self.dim);
        anyhow::ensure!(emb.iter().all(|x| x.is_finite()), "refusing to cache an embedding that is not finite");
        let mut body = Vec::with_capacity(HEADER + 4 * self.dim + 32);
        body.extend_from_slice(MAGIC);
        body.extend_from_slice(&(self.dim as u32).to_le_bytes());
        body.extend_from_slice(key);
        for v in emb {
            body.extend_from_slice(&v.to_le_bytes());
        }
        let digest = Sha256::digest(&body);
        body.extend_from_slice(&digest);
        write_atomic(&self.entry(key), &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_corruption_and_content() {
        let dir = std::env::temp_dir().join(format!("nexttdnn-cache-test-{}", std::process::id()));
        let cache = EmbeddingCache::new(&dir.join("cache"), "0123456789abcdef0123456789abcdef", None, 3).unwrap();
        let key = audio_key(b"pretend audio");
        assert!(cache.get(&key).is_none());
        cache.put(&key, &[1.0, -2.0, 3.5]).unwrap();
        assert_eq!(cache.get(&key).unwrap(), vec![1.0, -2.0, 3.5]);

        // Other bytes of the same length are other audio.
        assert!(cache.get(&audio_key(b"pretend audiO")).is_none());

        // A flipped byte is detected and the entry dropped.
        let entry = cache.entry(&key);
        let mut bytes = std::fs::read(&entry).unwrap();
        bytes[HEADER + 1] ^= 0x40;
        std::fs::write(&entry, &bytes).unwrap();
        assert!(cache.get(&key).is_none());
        assert!(!entry.exists());

        // A truncated entry too.
        cache.put(&key, &[1.0, 2.0, 3.0]).unwrap();
        let bytes = std::fs::read(&entry).unwrap();
        std::fs::write(&entry, &bytes[..bytes.len() - 5]).unwrap();
        assert!(cache.get(&key).is_none());

        // An intact entry copied under another key is refused.
        cache.put(&key, &[1.0, 2.0, 3.0]).unwrap();
        let other = audio_key(b"other audio");
        std::fs::create_dir_all(cache.entry(&other).parent().unwrap()).unwrap();
        std::fs::copy(&entry, cache.entry(&other)).unwrap();
        assert!(cache.get(&other).is_none());

        // Non-finite embeddings are never stored.
        assert!(cache.put(&other, &[1.0, f32::NAN, 3.0]).is_err());

        // Another variant of the same model (e.g. f16) has its own entries.
        let half = EmbeddingCache::new(&dir.join("cache"), "0123456789abcdef0123456789abcdef", Some("f16"), 3).unwrap();
        assert!(half.get(&key).is_none());
        assert!(cache.get(&key).is_some());
        std::fs::remove_dir_all(&dir).ok();
    }
}
