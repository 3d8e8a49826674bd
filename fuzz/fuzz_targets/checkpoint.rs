//! The training checkpoint's readers: `state.json` and `SHA256SUMS`. Errors
//! name the file; never a panic.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use nexttdnn::train::checkpoint::{parse_state, parse_sums};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let dir = Path::new("fuzz-checkpoint");
    if let Err(e) = parse_state(dir, text) {
        assert!(format!("{e:#}").contains("fuzz-checkpoint"), "{e:#}");
    }
    let sums = dir.join("SHA256SUMS");
    match parse_sums(&sums, text) {
        Ok(rows) => assert_eq!(rows.len(), 3),
        Err(e) => assert!(format!("{e:#}").contains("SHA256SUMS"), "{e:#}"),
    }
});
