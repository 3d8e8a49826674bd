//! The binary end to end: import, embed, verify, and its error messages.

mod common;

use std::process::Command;

use common::*;

#[test]
fn import_embed_verify() {
    let dir = tmpdir("flow");
    let model = dir.join("tiny.safetensors");
    run_ok(&mut import_cmd("tiny_C32_B1_K65_7", &model));

    // embed: one row per file, in index order, equal to the library's one-file embeddings.
    let list = dir.join("files.txt");
    std::fs::write(&list, "utt_1p370s.wav\n\n# a comment\nutt_3p015s.wav\n").unwrap();
    let out = dir.join("emb");
    run_ok(
        bin()
            .args(["--device", "cpu", "embed", "--model"])
            .arg(&model)
            .arg("--out")
            .arg(&out)
            .arg("--list")
            .arg(&list)
            .arg("--wav-root")
            .arg(fixtures())
            .arg(fixtures().join("utt_0p500s.wav")),
    );
    let (values, rows, cols) = nexttdnn::npy::read_f32(&out.join("embeddings.npy")).unwrap();
    assert_eq!((rows, cols), (3, 192));
    let index: Vec<String> =
        std::fs::read_to_string(out.join("index.txt")).unwrap().lines().map(String::from).collect();
    assert_eq!(index.len(), 3);
    assert!(index[0].ends_with("utt_0p500s.wav") && index[2].ends_with("utt_3p015s.wav"), "{index:?}");
    let prov: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("provenance.json")).unwrap()).unwrap();
    assert_eq!(prov["device"]["backend"], "flex");
    assert_eq!(prov["model_sha256"].as_str().unwrap(), nexttdnn::files::sha256_file(&model).unwrap());
    let device = burn::tensor::Device::flex();
    let m = nexttdnn::weights::SpeakerModel::load(&model, &device).unwrap();
    let e = nexttdnn::embed::Embedder::new(&m, &device);
    let want = e.embed_file(&fixtures().join("utt_1p370s.wav")).unwrap();
    // Batched with the other files: equal to the file alone within 1e-5.
    let err = max_abs(&values[192..384], &want);
    assert!(err < 1e-5, "max abs {err:e}");

    // verify with an explicit threshold decides; the score equals the cosine of the embeddings.
    let text = run_ok(
        bin()
            .args(["--device", "cpu", "verify", "--threshold", "0.5", "--model"])
            .arg(&model)
            .arg(fixtures().join("utt_1p370s.wav"))
            .arg(fixtures().join("utt_3p015s.wav")),
    );
    let score: f64 =
        text.lines().find(|l| l.starts_with("score")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let expect = cosine(&values[192..384], &values[384..576]);
    assert!((score - expect).abs() < 1e-5, "{score} vs {expect}");
    assert!(text.contains("decision"), "{text}");
}

#[test]
fn verify_runs_on_bundled_defaults() {
    let text = run_ok(bin().args(["--device", "cpu", "verify"]));
    assert!(text.contains("score"), "{text}");
}

#[test]
fn list_errors_name_file_and_line() {
    let dir = tmpdir("lists");
    let model = dir.join("m.safetensors");
    run_ok(&mut import_cmd("tiny_light_C32_B1_K65", &model));
    let list = dir.join("bad.txt");
    let embed_list = || {
        run_err(
            bin()
                .args(["--device", "cpu", "embed", "--model"])
                .arg(&model)
                .arg("--out")
                .arg(dir.join("o"))
                .arg("--list")
                .arg(&list)
                .arg("--wav-root")
                .arg(fixtures()),
        )
    };
    std::fs::write(&list, "utt_1p370s.wav\na b c\n").unwrap();
    let err = embed_list();
    assert!(err.contains("bad.txt:2"), "{err}");

    std::fs::write(&list, "utt_1p370s.wav\nnot_there.wav\n").unwrap();
    let err = embed_list();
    assert!(err.contains("not_there.wav") && err.contains("not found"), "{err}");
    assert!(!dir.join("o").join("embeddings.npy").exists(), "no partial output");
}

#[test]
fn unavailable_backend_names_the_feature() {
    if cfg!(feature = "cuda") {
        return;
    }
    let err = run_err(bin().args(["--device", "cuda", "verify"]));
    assert!(err.contains("--features cuda"), "{err}");
}

#[test]
fn compare_cpu_against_wgpu() {
    let has_wgpu = cfg!(feature = "wgpu") && nexttdnn::device::available().len() > 1;
    let devices = if has_wgpu { "cpu,wgpu" } else { "cpu,cpu" };
    if !has_wgpu {
        skip_unless_required(
            "NEXTTDNN_REQUIRE_WGPU",
            "compare against wgpu: no wgpu adapter; comparing cpu with itself",
        );
    }
    let dir = tmpdir("compare");
    let text = run_ok(bin().args(["compare", "--devices", devices, "--out"]).arg(&dir));
    assert!(text.contains("| cpu |") && text.contains("tolerance"), "{text}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("compare.json")).unwrap()).unwrap();
    assert_eq!(report["passed"], true);
    let devs = report["devices"].as_array().unwrap();
    assert_eq!(devs.len(), 2);
    assert_eq!(devs[0]["emb_max_abs_dev"], 0.0);
    for d in devs {
        assert!(d["device"]["adapter"].as_str().is_some_and(|a| !a.is_empty()));
        assert!(d["files_per_second"].as_f64().unwrap() > 0.0);
    }
    if has_wgpu {
        // Backends differ in rounding, so a zero tolerance must fail the health check.
        assert!(devs[1]["emb_max_abs_dev"].as_f64().unwrap() > 0.0);
        let err = run_err(
            bin().args(["compare", "--devices", "cpu,wgpu", "--emb-tol", "0", "--out"]).arg(dir.join("strict")),
        );
        assert!(err.contains("disagree"), "{err}");
    }
}

/// The binary alone, copied elsewhere and run from another folder (as after
/// `cargo install`): the bundled model, recordings and configs come from the
/// binary itself.
#[test]
fn an_installed_binary_carries_its_bundle() {
    let dir = tmpdir("installed");
    let exe = dir.join("bin").join("nexttdnn");
    std::fs::create_dir_all(exe.parent().unwrap()).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_nexttdnn"), &exe).unwrap();
    let data = dir.join("data");
    let run = |args: &[&str]| {
        let mut c = Command::new(&exe);
        c.current_dir(&dir).env("RUST_LOG", "warn").env("NEXTTDNN_DATA_DIR", &data).args(args);
        c
    };
    let out = run_ok(&mut run(&["--device", "cpu", "eval", "--out", "results", "--cache-dir", "cache"]));
    assert!(out.contains("EER"), "{out}");
    let bundles: Vec<_> = std::fs::read_dir(&data).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(bundles.len(), 1, "{bundles:?}");
    let trials = bundles[0].join("assets").join("trials.txt");
    assert_eq!(std::fs::read(&trials).unwrap(), std::fs::read(root().join("assets/trials.txt")).unwrap());
    assert!(bundles[0].join("configs/NeXt_TDNN_C256_B3_K65_7.ron").is_file());
    run_ok(&mut run(&["--device", "cpu", "verify"]));
    std::fs::remove_dir_all(&dir).ok();
}
