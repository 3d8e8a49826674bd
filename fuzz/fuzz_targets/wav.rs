//! The WAV reader: any bytes give samples that are finite and non-empty, or
//! an error that names the file; never a panic.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.wav");
    match nexttdnn::audio::decode_wav(path, data, 16000, 1) {
        Ok(w) => {
            assert!(!w.samples.is_empty());
            assert!(w.samples.iter().all(|x| x.is_finite()));
        }
        Err(e) => {
            assert_eq!(e.path(), path);
            assert!(e.to_string().contains("fuzz.wav"));
        }
    }
});
