//! The model-file reader (safetensors header, format tag, checksum, embedded
//! config, threshold): errors name the file; never a panic.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.safetensors");
    if let Err(e) = nexttdnn::weights::read_model_file(path, data) {
        assert!(format!("{e:#}").contains("fuzz.safetensors"), "{e:#}");
    }
});
