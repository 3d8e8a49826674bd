//! The RON config loader: a config that loads is valid, and writing it out
//! and reading it back gives the same config (the model file and the cache
//! key depend on that).

#![no_main]

use libfuzzer_sys::fuzz_target;
use nexttdnn::config::ExperimentConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(cfg) = ExperimentConfig::parse(text) {
        let again = ExperimentConfig::parse(&cfg.to_ron()).expect("a valid config reads back");
        assert_eq!(again, cfg);
    }
});
