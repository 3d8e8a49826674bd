//! Structure checks: parameter counts of every paper variant (see
//! docs/MODEL.md, 'Configurations'), and
//! the key table against the official checkpoint layout.

mod common;

use burn::module::Module;
use common::*;
use nexttdnn::config::ExperimentConfig;
use nexttdnn::model::NextTdnn;

#[test]
fn parameter_counts_match_paper() {
    // (config, parameters reported by the paper, recomputed exactly in the spec).
    let table = [
        ("NeXt_TDNN_light_C192_B1_K65", 1_634_712),
        ("NeXt_TDNN_light_C128_B3_K65", 1_649_872),
        ("NeXt_TDNN_C192_B1_K65_7", 1_840_344),
        ("NeXt_TDNN_C128_B3_K65_7", 1_913_680),
        ("NeXt_TDNN_light_C384_B1_K65", 5_867_760),
        ("NeXt_TDNN_light_C256_B3_K65", 6_027_104),
        ("NeXt_TDNN_C384_B1_K65_7", 6_721_392),
        ("NeXt_TDNN_C256_B3_K65_7", 7_144_544),
    ];
    let device = burn::tensor::Device::flex();
    for (name, expected) in table {
        let cfg = ExperimentConfig::load(&config(name)).unwrap();
        let net = NextTdnn::new(&cfg.model, cfg.frontend.n_mels, 0, &device);
        assert_eq!(net.num_trainable_params(), expected, "{name}");
        // The count from the config alone, which model files are checked
        // against before a network is built.
        let stored = nexttdnn::model::value_count(&cfg.model, cfg.frontend.n_mels);
        assert_eq!(stored, Some(net.num_params() as u64), "{name}");
    }
}

#[test]
fn every_official_config_parses() {
    let dir = root().join("configs");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "ron") {
            ExperimentConfig::load(&p).unwrap_or_else(|e| panic!("{e:#}"));
            n += 1;
        }
    }
    assert!(n >= 9, "expected the 9 official configs, found {n} files");
}

#[test]
fn unknown_config_key_is_an_error_naming_file_and_field() {
    let text = std::fs::read_to_string(config("tiny_C32_B1_K65_7")).unwrap();
    let bad = text.replace("grn_eps: 1e-6,", "grn_eps: 1e-6,\n        grn_epsilon: 1e-6,");
    let dir = common::tmpdir("cfg");
    let p = dir.join("bad.ron");
    std::fs::write(&p, bad).unwrap();
    let err = format!("{:#}", ExperimentConfig::load(&p).unwrap_err());
    assert!(err.contains("bad.ron") && err.contains("grn_epsilon"), "{err}");

    let missing = text.replace("        grn_eps: 1e-6,\n", "");
    std::fs::write(&p, missing).unwrap();
    let err = format!("{:#}", ExperimentConfig::load(&p).unwrap_err());
    assert!(err.contains("bad.ron") && err.contains("grn_eps"), "{err}");

    let missing_opt = text.replace("grad_clip_norm: Some(5.0),", "");
    std::fs::write(&p, missing_opt).unwrap();
    let err = format!("{:#}", ExperimentConfig::load(&p).unwrap_err());
    assert!(err.contains("grad_clip_norm"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn config_round_trips_through_ron() {
    let cfg = ExperimentConfig::load(&config("NeXt_TDNN_C256_B3_K65_7_cyclical_lr_step")).unwrap();
    let again = ExperimentConfig::parse(&cfg.to_ron()).unwrap();
    assert_eq!(cfg, again);
}

#[test]
fn large_margin_configs_follow_their_main_configs() {
    let dir = root().join("configs").join("lm");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        let lm = ExperimentConfig::load(&p).unwrap_or_else(|e| panic!("{e:#}"));
        let main_name = lm.name.strip_suffix("_lm").unwrap_or_else(|| panic!("{}: name {}", p.display(), lm.name));
        let main = ExperimentConfig::load(&config(main_name)).unwrap();
        assert_eq!((&lm.model, &lm.frontend, &lm.eval), (&main.model, &main.frontend, &main.eval), "{}", p.display());
        // 6 s where the main stage has 3 s, with the same 240-sample margin.
        assert_eq!(lm.train.crop_samples - 240, 2 * (main.train.crop_samples - 240), "{}", p.display());
        assert_eq!((lm.train.loss.margin, lm.train.loss.scale), (0.5, main.train.loss.scale), "{}", p.display());
        assert_eq!(lm.train.loss.n_classes, main.train.loss.n_classes, "{}", p.display());
        n += 1;
    }
    assert_eq!(n, 9, "an LM config for each of the 8 official sizes and the development config");
}
