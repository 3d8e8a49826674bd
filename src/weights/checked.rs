//! Safetensors files that carry a SHA-256 over their whole content: model
//! files and speaker registries. The checksum covers every metadata entry
//! (but itself) and every tensor's name, dtype, shape and bytes, so a
//! flipped byte or an edited header is found; it is not a signature.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Result};
use sha2::{Digest, Sha256};

use super::{parse_safetensors, HostTensor};
use crate::files::hex;

/// Metadata key of the SHA-256 over the metadata and tensors.
pub const CHECKSUM_KEY: &str = "payload_sha256";

/// One length-prefixed field of a SHA-256 (so that fields cannot run into
/// each other); also the building block of the model key.
pub(crate) fn hash_field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

/// SHA-256 over a checked file's content: every metadata entry but the
/// checksum itself, then every tensor's name, dtype, shape and bytes, in
/// name order, each field length-prefixed. A flipped byte in the tensor
/// data or an edited config in the header changes it.
fn payload_digest<'a>(
    meta: &BTreeMap<String, String>,
    tensors: impl Iterator<Item = (&'a str, &'a str, &'a [usize], &'a [u8])>,
) -> String {
    let field = hash_field;
    let mut h = Sha256::new();
    for (k, v) in meta.iter().filter(|(k, _)| k.as_str() != CHECKSUM_KEY) {
        field(&mut h, k.as_bytes());
        field(&mut h, v.as_bytes());
    }
    let mut tensors: Vec<_> = tensors.collect();
    tensors.sort_by_key(|t| t.0);
    for (name, dtype, shape, data) in tensors {
        field(&mut h, name.as_bytes());
        field(&mut h, dtype.as_bytes());
        let dims: Vec<u8> = shape.iter().flat_map(|d| (*d as u64).to_le_bytes()).collect();
        field(&mut h, &dims);
        field(&mut h, data);
    }
    hex(&h.finalize())
}

/// The safetensors bytes with the header's keys in sorted order. The
/// safetensors crate writes the metadata in a hash map's random order, so
/// the same model would give different bytes from one save to the next;
/// sorted, identical models are identical files. The tensor offsets do not
/// depend on the order, and the header is padded to 8 bytes as before.
fn sorted_header(bytes: Vec<u8>) -> Result<Vec<u8>> {
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&bytes[8..8 + n])?;
    let sorted: BTreeMap<String, serde_json::Value> = header
        .into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::Object(m) => (k, serde_json::to_value(m.into_iter().collect::<BTreeMap<_, _>>())),
            v => (k, Ok(v)),
        })
        .map(|(k, v)| v.map(|v| (k, v)))
        .collect::<serde_json::Result<_>>()?;
    let mut text = serde_json::to_vec(&sorted)?;
    text.resize(text.len().div_ceil(8) * 8, b' ');
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + n..]);
    Ok(out)
}

/// The bytes of a checked file: float32 tensors `(name, shape, little-endian
/// bytes)`, the metadata, and the checksum over both, with the header's keys
/// sorted so that identical content gives identical bytes.
pub fn write_checked_safetensors(
    mut meta: BTreeMap<String, String>,
    tensors: Vec<(String, Vec<usize>, Vec<u8>)>,
) -> Result<Vec<u8>> {
    let digest = payload_digest(&meta, tensors.iter().map(|(n, s, b)| (n.as_str(), "F32", s.as_slice(), &b[..])));
    meta.insert(CHECKSUM_KEY.into(), digest);
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, s, b)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .map_err(|e| anyhow::anyhow!("tensor {n}: {e}"))?;
            Ok((n.clone(), view))
        })
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(views, Some(meta.into_iter().collect()))
        .map_err(|e| anyhow::anyhow!("cannot serialise: {e}"))?;
    sorted_header(bytes)
}

/// Checks the checksum of a file's bytes (read from `path`, named in
/// errors) against its content; a mismatch's message ends with `remedy`.
pub fn verify_checksum(path: &Path, bytes: &[u8], meta: &BTreeMap<String, String>, remedy: &str) -> Result<()> {
    use safetensors::SafeTensors;
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| anyhow::anyhow!("{}: corrupt or not a safetensors file: {e}", path.display()))?;
    let Some(stored) = meta.get(CHECKSUM_KEY) else {
        bail!("{}: the file carries no checksum ({CHECKSUM_KEY})", path.display());
    };
    let tensors: Vec<(String, String, Vec<usize>, &[u8])> =
        st.tensors().into_iter().map(|(n, v)| (n, format!("{:?}", v.dtype()), v.shape().to_vec(), v.data())).collect();
    let actual = payload_digest(meta, tensors.iter().map(|(n, d, s, b)| (n.as_str(), d.as_str(), s.as_slice(), *b)));
    // A fuzzer cannot forge SHA-256: under fuzzing the readers behind the
    // check are reached anyway.
    if &actual != stored && !cfg!(fuzzing) {
        bail!(
            "{}: the file is corrupt: its content does not match its checksum ({CHECKSUM_KEY} {stored}, content {actual}); {remedy}",
            path.display()
        );
    }
    Ok(())
}

/// The tensors and metadata of a checked file, its checksum verified
/// ([`verify_checksum`], with `remedy`).
pub fn read_checked_safetensors(
    path: &Path,
    bytes: &[u8],
    remedy: &str,
) -> Result<(BTreeMap<String, HostTensor>, BTreeMap<String, String>)> {
    let (tensors, meta) = parse_safetensors(path, bytes)?;
    verify_checksum(path, bytes, &meta, remedy)?;
    Ok((tensors, meta))
}
