//! The list readers (trials, audio lists, cohorts, train lists): no field is
//! empty or holds whitespace, a line never starts with a byte-order mark
//! (the one of the file, or of a list concatenated after it), and errors
//! name the list.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fn field(f: &str) -> bool {
    !f.is_empty() && !f.contains(char::is_whitespace)
}

fn first_field(f: &str) -> bool {
    field(f) && !f.starts_with('\u{feff}')
}

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.txt");
    let text = match nexttdnn::files::decode_text(path, data) {
        Ok(t) => t,
        Err(e) => return assert!(format!("{e:#}").contains("fuzz.txt")),
    };
    let named = |e: anyhow::Error| assert!(format!("{e:#}").contains("fuzz.txt"), "{e:#}");
    match nexttdnn::lists::parse_trials(path, &text) {
        Ok(trials) => assert!(trials.iter().all(|t| field(&t.enroll) && field(&t.test) && t.line >= 1)),
        Err(e) => named(e),
    }
    match nexttdnn::lists::parse_audio_list(path, &text, Some(Path::new("root"))) {
        Ok(files) => assert!(files.iter().all(|f| f.starts_with("root") || f.is_absolute())),
        Err(e) => named(e),
    }
    match nexttdnn::lists::parse_cohort(path, &text) {
        Ok(files) => assert!(files.iter().all(|(f, _)| field(f) && f.ends_with(".wav"))),
        Err(e) => named(e),
    }
    match nexttdnn::train::data::parse_train_list(path, &text) {
        Ok(rows) => assert!(rows.iter().all(|(_, s, p)| first_field(s) && field(p))),
        Err(e) => named(e),
    }
});
