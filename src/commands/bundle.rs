//! The demonstration bundle (model, recordings, trial list) and the shipped
//! configurations, carried inside the binary. Commands read them from a copy
//! written out once under the user's data folder, so a binary installed with
//! `cargo install` works from any folder, without the source tree.

use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::files::{hex, write_atomic};

include!(concat!(env!("OUT_DIR"), "/bundle_files.rs"));

/// Where bundles are written out: `$NEXTTDNN_DATA_DIR`, else
/// `$XDG_DATA_HOME/nexttdnn`, else `~/.local/share/nexttdnn`.
fn data_dir() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("NEXTTDNN_DATA_DIR")
        .or_else(|| var("XDG_DATA_HOME").map(|d| d.join("nexttdnn")))
        .or_else(|| var("HOME").map(|h| h.join(".local").join("share").join("nexttdnn")))
        .unwrap_or_else(|| std::env::temp_dir().join("nexttdnn"))
}

/// The folder holding this binary's bundle, written out on first use: one
/// folder per bundle content, so binaries of other versions keep theirs. A
/// folder is used only once complete (its marker is written last).
pub fn root() -> Result<PathBuf> {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    if let Some(r) = ROOT.get() {
        return Ok(r.clone());
    }
    let mut h = Sha256::new();
    for (name, bytes) in FILES {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    let key = hex(&h.finalize())[..16].to_string();
    let dir = data_dir().join(format!("bundle-{key}"));
    let marker = dir.join(".complete");
    if !marker.is_file() {
        log::info!("writing the bundled model, recordings and configs to {}", dir.display());
        for (name, bytes) in FILES {
            write_atomic(&dir.join(name), bytes)
                .with_context(|| format!("cannot write the bundled files under {}", dir.display()))?;
        }
        write_atomic(&marker, key.as_bytes())?;
    }
    Ok(ROOT.get_or_init(|| dir).clone())
}
