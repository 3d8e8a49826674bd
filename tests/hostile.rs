//! Hostile and unusual input: every case is refused with a message that
//! names the file (and line), or handled as the official code handles it.
//! Nothing is silent and nothing is lost.

mod common;

use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use common::*;
use nexttdnn::audio::{read_wav, AudioError};
use nexttdnn::config::ExperimentConfig;
use nexttdnn::embed::Embedder;
use nexttdnn::features::Frontend;
use nexttdnn::lists::{read_audio_list, read_trials};
use nexttdnn::train::data::TrainSet;
use nexttdnn::train::loss::{labels_tensor, AamSoftmax};
use nexttdnn::train::model::TrainModel;
use nexttdnn::train::step::train_forward;
use nexttdnn::weights::{import_official, SpeakerModel};

fn tiny_model() -> SpeakerModel {
    let cfg = ExperimentConfig::load(&config("tiny_C32_B1_K65_7")).unwrap();
    import_official(&fixtures().join("tiny_C32_B1_K65_7.pt"), &cfg, &Device::flex()).unwrap()
}

/// A RIFF/WAVE file from its chunks, each padded to an even size.
fn riff(chunks: &[(&[u8; 4], Vec<u8>)]) -> Vec<u8> {
    let mut body = b"WAVE".to_vec();
    for (id, data) in chunks {
        body.extend_from_slice(*id);
        body.extend_from_slice(&(data.len() as u32).to_le_bytes());
        body.extend_from_slice(data);
        if data.len() % 2 == 1 {
            body.push(0);
        }
    }
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// A `fmt ` chunk body: format tag, mono, 16 kHz, bits per sample.
fn fmt(tag: u16, bits: u16) -> Vec<u8> {
    let align = bits.div_ceil(8);
    let mut f = Vec::new();
    f.extend_from_slice(&tag.to_le_bytes());
    f.extend_from_slice(&1u16.to_le_bytes());
    f.extend_from_slice(&16000u32.to_le_bytes());
    f.extend_from_slice(&(16000 * align as u32).to_le_bytes());
    f.extend_from_slice(&align.to_le_bytes());
    f.extend_from_slice(&bits.to_le_bytes());
    f
}

fn speech(n: usize) -> Vec<f32> {
    (0..n).map(|i| 0.3 * ((i as f32 * 0.05).sin() + 0.5 * (i as f32 * 0.173).sin())).collect()
}

fn pcm16(samples: &[f32]) -> Vec<u8> {
    samples.iter().flat_map(|&s| ((s * 32767.0) as i16).to_le_bytes()).collect()
}

#[test]
fn wav_encodings_we_do_not_read_are_named_with_a_conversion() {
    let dir = tmpdir("encodings");
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("f64.wav", riff(&[(b"fmt ", fmt(3, 64)), (b"data", vec![0; 8000])]), "64-bit float"),
        ("f16.wav", riff(&[(b"fmt ", fmt(3, 16)), (b"data", vec![0; 2000])]), "16-bit float"),
        ("ima.wav", riff(&[(b"fmt ", fmt(0x11, 4)), (b"data", vec![0; 2000])]), "IMA ADPCM encoding is not supported"),
        ("12bit.wav", riff(&[(b"fmt ", fmt(1, 12)), (b"data", vec![0; 2000])]), "12-bit integer"),
    ];
    for (name, bytes, says) in cases {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        let e = read_wav(&p, 16000, 480).unwrap_err();
        assert!(matches!(e, AudioError::Unsupported { .. }), "{name}: {e}");
        let msg = e.to_string();
        assert!(msg.contains(says) && msg.contains("sox") && msg.contains(name), "{msg}");
    }
}

#[test]
fn a_pad_byte_after_an_odd_chunk_is_stepped_over() {
    let dir = tmpdir("pad");
    let samples = speech(4000);
    let plain = dir.join("plain.wav");
    std::fs::write(&plain, riff(&[(b"fmt ", fmt(1, 16)), (b"data", pcm16(&samples))])).unwrap();
    // A 3-byte LIST chunk, its pad byte, then the data (libsndfile reads it).
    let padded = dir.join("padded.wav");
    std::fs::write(&padded, riff(&[(b"fmt ", fmt(1, 16)), (b"LIST", b"abc".to_vec()), (b"data", pcm16(&samples))]))
        .unwrap();
    let a = read_wav(&plain, 16000, 480).unwrap().samples;
    let b = read_wav(&padded, 16000, 480).unwrap().samples;
    assert_eq!(a.len(), 4000);
    assert_eq!(a, b);
}

#[test]
fn huge_finite_samples_stop_with_the_file_named() {
    let dir = tmpdir("huge");
    let p = dir.join("loud.wav");
    common::wav::write_f32(&p, &speech(16000).iter().map(|x| x * 1e20).collect::<Vec<_>>());
    let model = tiny_model();
    let embedder = Embedder::new(&model, &Device::flex());
    // One file at a time (verify, embed_file) ...
    let e = format!("{:#}", embedder.embed_file(&p).unwrap_err());
    assert!(e.contains("loud.wav") && e.contains("far outside [-1, 1]"), "{e}");
    // ... and the batched pipeline of eval and embed.
    let files = nexttdnn::lists::preflight(&p, &[(p.display().to_string(), 1)], None, 16000).unwrap();
    let e = format!("{:#}", embedder.embed_listed(&files, 20.0, &|_| {}).unwrap_err());
    assert!(e.contains("loud.wav") && e.contains("not a finite number"), "{e}");
}

#[test]
fn a_flipped_byte_or_an_edited_config_in_a_model_file_is_found() {
    let dir = tmpdir("model-integrity");
    let good = dir.join("good.safetensors");
    tiny_model().save(&good).unwrap();
    let device = Device::flex();
    SpeakerModel::load(&good, &device).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;

    // One bit of the tensor data.
    let mut flipped = bytes.clone();
    let at = 8 + header + (bytes.len() - 8 - header) / 2;
    flipped[at] ^= 0x04;
    let p = dir.join("flipped.safetensors");
    std::fs::write(&p, &flipped).unwrap();
    let e = format!("{:#}", SpeakerModel::load(&p, &device).unwrap_err());
    assert!(e.contains("flipped.safetensors") && e.contains("corrupt"), "{e}");

    // The config text in the header: pre-emphasis 0.97 -> 0.98 (same length).
    let text = String::from_utf8_lossy(&bytes[8..8 + header]).into_owned();
    assert!(text.contains("pre_emphasis: 0.97"), "the header holds the config");
    let edited_header = text.replacen("pre_emphasis: 0.97", "pre_emphasis: 0.98", 1);
    let mut edited = bytes[..8].to_vec();
    edited.extend_from_slice(edited_header.as_bytes());
    edited.extend_from_slice(&bytes[8 + header..]);
    let p = dir.join("edited.safetensors");
    std::fs::write(&p, &edited).unwrap();
    let e = format!("{:#}", SpeakerModel::load(&p, &device).unwrap_err());
    assert!(e.contains("edited.safetensors") && e.contains("corrupt"), "{e}");
}

#[test]
fn a_byte_order_mark_never_reaches_a_field() {
    let dir = tmpdir("bom");
    let wav = dir.join("a.wav");
    nexttdnn::audio::wav::write_wav_i16(&wav, &speech(8000), 16000).unwrap();
    let trials = dir.join("trials.txt");
    std::fs::write(&trials, "\u{feff}1 a.wav a.wav\n0 a.wav a.wav\n").unwrap();
    let t = read_trials(&trials).unwrap();
    assert!(t[0].target && t[0].enroll == "a.wav", "{:?}", t[0]);
    let list = dir.join("files.txt");
    std::fs::write(&list, "\u{feff}a.wav\n").unwrap();
    assert_eq!(read_audio_list(&list, Some(&dir)).unwrap(), vec![wav.clone()]);
    // Two lists concatenated: the second one's mark starts a later line.
    let train = dir.join("train.txt");
    std::fs::write(&train, "\u{feff}id10001 a.wav\n\u{feff}id10001 a.wav\n").unwrap();
    let set = TrainSet::load(&train, &dir).unwrap();
    assert_eq!(set.speakers, vec!["id10001".to_string()]);
}

#[test]
fn config_values_are_checked_at_load_with_the_field_named() {
    let base = std::fs::read_to_string(config("tiny_C32_B1_K65_7")).unwrap();
    let dir = tmpdir("configs");
    let cases = [
        ("StepLr(step_size: 10, gamma: 0.8)", "StepLr(step_size: 10, gamma: 0.8, foo: 1)", "foo"),
        ("StepLr(step_size: 10, gamma: 0.8)", "StepLr(step_size: 0, gamma: 0.8)", "train.scheduler.step_size"),
        ("crop_samples: 48240", "crop_samples: 100", "train.crop_samples"),
        ("batch_size: 4", "batch_size: 0", "train.batch_size"),
        ("lr: 0.001", "lr: -0.001", "train.optimizer.lr"),
        ("lr: 0.001", "lr: NaN", "train.optimizer.lr"),
        ("margin: 0.3", "margin: inf", "train.loss.margin"),
    ];
    for (i, (from, to, says)) in cases.iter().enumerate() {
        assert!(base.contains(from), "the tiny config holds {from:?}");
        let p = dir.join(format!("bad{i}.ron"));
        std::fs::write(&p, base.replacen(from, to, 1)).unwrap();
        let e = format!("{:#}", ExperimentConfig::load(&p).unwrap_err());
        assert!(e.contains(&format!("bad{i}.ron")) && e.contains(says), "{to}: {e}");
    }
}

/// Every gradient of the model is a finite number.
struct AllFinite<'a> {
    grads: &'a GradientsParams,
    bad: Vec<String>,
    count: usize,
}

impl ModuleVisitor for AllFinite<'_> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(p.id) {
            self.count += 1;
            if to_vec(g).iter().any(|v| !v.is_finite()) {
                self.bad.push(format!("{:?}", p.val().dims()));
            }
        }
    }
}

/// The official code trains through digital silence (PyTorch's norm has
/// subgradient 0 at 0): a silent crop in the batch leaves the loss and
/// every gradient finite.
#[test]
fn a_silent_crop_trains_like_any_other() {
    for (name, plain) in test_devices() {
        let mut cfg = ExperimentConfig::load(&config("tiny_C32_B1_K65_7")).unwrap();
        cfg.train.crop_samples = 16000;
        let device = plain.autodiff();
        let len = cfg.train.crop_samples;
        let mut crops = speech(4 * len);
        crops[len..2 * len].iter_mut().for_each(|v| *v = 0.0);
        let model = TrainModel::new(&cfg, &device);
        let frontend = Frontend::new(&cfg.frontend, &device);
        let wav = Tensor::<2>::from_data(TensorData::new(crops, [4, len]), &device);
        let labels = labels_tensor(&[0, 1, 2, 3], &device);
        let (_, out) = train_forward(&model, &frontend, wav, labels, &AamSoftmax::new(&cfg.train.loss), None);
        let loss = to_vec(out.loss.clone())[0];
        assert!(loss.is_finite(), "[{name}] loss {loss}");
        let grads = GradientsParams::from_grads(out.loss.backward(), &model);
        let mut v = AllFinite { grads: &grads, bad: vec![], count: 0 };
        model.visit(&mut v);
        assert!(v.count > 10, "[{name}] gradients reached the parameters");
        assert!(v.bad.is_empty(), "[{name}] gradients that are not finite, shapes {:?}", v.bad);
    }
}

#[cfg(unix)]
#[test]
fn link_loops_in_a_tree_end_and_list_each_file_once() {
    let dir = tmpdir("links");
    let root = dir.join("vox");
    let utt = root.join("id00001").join("vidA");
    std::fs::create_dir_all(&utt).unwrap();
    for i in 0..3 {
        nexttdnn::audio::wav::write_wav_i16(&utt.join(format!("{i:05}.wav")), &speech(16000), 16000).unwrap();
    }
    // A link up the tree, and two links that point at each other.
    std::os::unix::fs::symlink("../..", utt.join("up")).unwrap();
    std::os::unix::fs::symlink(root.join("b"), root.join("a")).unwrap();
    std::os::unix::fs::symlink(root.join("a"), root.join("b")).unwrap();
    let files = nexttdnn::prepare::files_with(&root, &["wav"]).unwrap();
    assert_eq!(files.len(), 3, "{files:?}");
}

#[test]
fn command_line_values_and_paths_are_checked() {
    let dir = tmpdir("cli-values");
    let e = run_err(bin().args(["--device", "cpu", "verify", "--threshold", "NaN"]));
    assert!(e.contains("NaN") && e.contains("finite"), "{e}");
    let e = run_err(bin().args(["--device", "cpu", "compare", "--emb-tol", "NaN"]));
    assert!(e.contains("finite"), "{e}");
    // One recording alone is not silently scored against a bundled one.
    let one = fixtures().join("utt_1p370s.wav");
    let e = run_err(bin().args(["--device", "cpu", "verify"]).arg(&one));
    assert!(e.contains("<TEST>") || e.contains("test"), "{e}");
    // A directory where a file is expected.
    let e = run_err(bin().args(["--device", "cpu", "embed", "--out"]).arg(dir.join("emb")).arg(&dir));
    assert!(e.contains("is a directory"), "{e}");
    // import --out DIR leaves nothing behind.
    let out = dir.join("models");
    std::fs::create_dir_all(&out).unwrap();
    let e = run_err(&mut import_cmd("tiny_C32_B1_K65_7", &out));
    assert!(e.contains("is a directory"), "{e}");
    assert!(walk(&out).is_empty(), "{:?}", walk(&out));
}

#[test]
fn a_cpu_run_opens_no_display_connection() {
    // Without --device the GPUs are probed first (here lavapipe's Vulkan,
    // whose device-selection layer looks for a display).
    for args in [&["verify"][..], &["devices"]] {
        let (ok, out, err) = run_cmd(bin().args(args).env_remove("XDG_RUNTIME_DIR"));
        assert!(ok, "{out}{err}");
        assert!(!err.contains("XDG_RUNTIME_DIR"), "{args:?}: {err}");
    }
}

/// Outputs of one eval run are put in place together: when a plot cannot be
/// written, the error names it, and the previous run's files stay whole.
#[test]
fn eval_outputs_are_all_or_nothing() {
    let dir = tmpdir("eval-atomic");
    let out = dir.join("results");
    let cache = dir.join("cache");
    let eval = |out: &Path| {
        let mut c = bin();
        c.args(["--device", "cpu", "eval", "--out"]).arg(out).arg("--cache-dir").arg(&cache);
        c
    };
    let (ok, o, e) = run_cmd(&mut eval(&out));
    assert!(ok, "{o}{e}");
    let summary = std::fs::read(out.join("summary.json")).unwrap();
    let scores = std::fs::read(out.join("scores.txt")).unwrap();
    // det.png cannot be replaced by a file: a folder of that name is in the way.
    std::fs::remove_file(out.join("det.png")).unwrap();
    std::fs::create_dir(out.join("det.png")).unwrap();
    std::fs::write(out.join("det.png").join("x"), "x").unwrap();
    let e = run_err(&mut eval(&out));
    assert!(e.contains("det.png"), "{e}");
    assert_eq!(std::fs::read(out.join("summary.json")).unwrap(), summary);
    assert_eq!(std::fs::read(out.join("scores.txt")).unwrap(), scores);
    let hidden: Vec<PathBuf> = walk(&out).into_iter().filter(|p| p.to_string_lossy().contains(".partial")).collect();
    assert!(hidden.is_empty(), "{hidden:?}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_flipped_byte_in_a_training_checkpoint_stops_the_resume() {
    use nexttdnn::train::checkpoint::{self, EpochSums, IntervalSums, TrainState, STATE_FORMAT};
    let dir = tmpdir("ckpt-integrity");
    let cfg = ExperimentConfig::load(&config("tiny_C32_B1_K65_7")).unwrap();
    let device = Device::flex().autodiff();
    let model = TrainModel::new(&cfg, &device);
    let optim = nexttdnn::train::optim::adamw(&cfg.train.optimizer);
    let state = TrainState {
        format: STATE_FORMAT,
        config_name: cfg.name.clone(),
        epoch: 0,
        step_in_epoch: 1,
        global_step: 1,
        epoch_sums: EpochSums::default(),
        interval: IntervalSums::default(),
        steps_csv_bytes: 0,
        metrics_csv_bytes: 0,
        best: vec![],
    };
    let ckpt = checkpoint::save(&dir, &model, &optim, &state).unwrap();
    let fresh = || (TrainModel::new(&cfg, &device), nexttdnn::train::optim::adamw(&cfg.train.optimizer));
    let (m, o) = fresh();
    checkpoint::load(&ckpt, m, o).unwrap();
    let sums = std::fs::read_to_string(ckpt.join("SHA256SUMS")).unwrap();
    assert!(sums.contains("  model.bpk\n") && sums.contains("  state.json\n"), "{sums}");

    let p = ckpt.join("model.bpk");
    let mut bytes = std::fs::read(&p).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 0x10;
    std::fs::write(&p, &bytes).unwrap();
    let (m, o) = fresh();
    let e = format!("{:#}", checkpoint::load(&ckpt, m, o).err().expect("a corrupt checkpoint is refused"));
    assert!(e.contains("model.bpk") && e.contains("corrupt"), "{e}");
}

/// A model file of the first format (no checksum) loads, with a warning.
#[test]
fn a_format_1_model_file_still_loads() {
    let dir = tmpdir("format1");
    let good = dir.join("v2.safetensors");
    tiny_model().save(&good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let meta = header["__metadata__"].as_object_mut().unwrap();
    meta.remove("payload_sha256").unwrap();
    meta.insert("format_version".into(), "1".into());
    let mut text = serde_json::to_vec(&header).unwrap();
    text.resize(text.len().div_ceil(8) * 8, b' ');
    let mut old = (text.len() as u64).to_le_bytes().to_vec();
    old.extend_from_slice(&text);
    old.extend_from_slice(&bytes[8 + n..]);
    let p = dir.join("v1.safetensors");
    std::fs::write(&p, &old).unwrap();
    let a = SpeakerModel::load(&good, &Device::flex()).unwrap();
    let b = SpeakerModel::load(&p, &Device::flex()).unwrap();
    assert_eq!(a.key, b.key);
    // Without the checksum a version-2 file is refused.
    let mut v2 = old;
    let at = v2.windows(20).position(|w| w == b"\"format_version\":\"1\"").unwrap();
    v2[at + 18] = b'2';
    let q = dir.join("v2-without-sum.safetensors");
    std::fs::write(&q, &v2).unwrap();
    let e = format!("{:#}", SpeakerModel::load(&q, &Device::flex()).unwrap_err());
    assert!(e.contains("v2-without-sum.safetensors") && e.contains("no checksum"), "{e}");
}

/// A (nearly) silent recording is embedded, with a warning naming it.
#[test]
fn a_silent_recording_gets_a_warning() {
    let dir = tmpdir("silent-warning");
    let wav = dir.join("quiet.wav");
    nexttdnn::audio::wav::write_wav_i16(&wav, &vec![0.0; 16000], 16000).unwrap();
    let (ok, out, err) = run_cmd(bin().args(["--device", "cpu", "embed", "--out"]).arg(dir.join("emb")).arg(&wav));
    assert!(ok, "{out}{err}");
    assert!(err.contains("quiet.wav") && err.contains("silent"), "{err}");
}

/// Found by the `lists` fuzz target: a byte-order mark inside a field is
/// part of the name (a file may be called so), while one that starts a line
/// (a list concatenated after another) is dropped.
#[test]
fn lists_fuzz_finding_a_mark_inside_a_field() {
    let text = "1 spk1_a.wav spk2_b.wa\n\u{feff}0 spk1_b.wak2_b.wav spk3_a.wav\n1 spk3ll\u{feff}_a.wav spk3_b.wav\n";
    let trials = nexttdnn::lists::parse_trials(Path::new("t.txt"), text).unwrap();
    assert_eq!(trials.len(), 3);
    assert!(!trials[1].target && trials[1].enroll == "spk1_b.wak2_b.wav");
    assert_eq!(trials[2].enroll, "spk3ll\u{feff}_a.wav");
    // Marks and whitespace mixed at a line's start are all dropped.
    let rows =
        nexttdnn::train::data::parse_train_list(Path::new("l.txt"), "\n\n\u{feff}\t\t\t\u{feff}\t9 a.wav").unwrap();
    assert_eq!(rows, vec![(3, "9".to_string(), "a.wav".to_string())]);
}

/// Found by the `lists` fuzz target: a cohort line is split at any
/// whitespace (a form feed here), as the other lists are, not only at
/// spaces, tabs and commas.
#[test]
fn lists_fuzz_finding_cohort_fields_split_at_any_whitespace() {
    let text = "file_name\nid1\u{c}a/1\nb/2.wav\u{b}\n";
    let cohort = nexttdnn::lists::parse_cohort(Path::new("c.csv"), text).unwrap();
    assert_eq!(cohort, vec![("a/1.wav".to_string(), 2), ("b/2.wav".to_string(), 3)]);
}

/// A model file with `edit` applied to its metadata and tensors, and its
/// checksum recomputed as the format defines it (as anyone can): SHA-256
/// over every metadata entry but the checksum, then every tensor's name,
/// dtype, shape and bytes, in name order, each field length-prefixed.
fn resigned(
    good: &Path,
    edit: impl FnOnce(&mut std::collections::BTreeMap<String, String>, &mut Vec<(String, Vec<usize>, Vec<u8>)>),
) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(good).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut meta: std::collections::BTreeMap<String, String> = header.metadata().clone().unwrap().into_iter().collect();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> =
        st.tensors().into_iter().map(|(n, v)| (n, v.shape().to_vec(), v.data().to_vec())).collect();
    edit(&mut meta, &mut tensors);
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let field = |h: &mut Sha256, b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    let mut h = Sha256::new();
    for (k, v) in meta.iter().filter(|(k, _)| k.as_str() != "payload_sha256") {
        field(&mut h, k.as_bytes());
        field(&mut h, v.as_bytes());
    }
    for (name, shape, data) in &tensors {
        field(&mut h, name.as_bytes());
        field(&mut h, b"F32");
        field(&mut h, &shape.iter().flat_map(|d| (*d as u64).to_le_bytes()).collect::<Vec<u8>>());
        field(&mut h, data);
    }
    meta.insert("payload_sha256".into(), h.finalize().iter().map(|b| format!("{b:02x}")).collect());
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, s, d)| {
            (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d).unwrap())
        })
        .collect();
    safetensors::serialize(views, Some(meta.into_iter().collect())).unwrap()
}

/// A config edit inside a model file, checksum recomputed.
fn with_config(good: &Path, from: &str, to: &str) -> Vec<u8> {
    resigned(good, |meta, _| {
        let cfg = meta.get_mut("config").unwrap();
        assert!(cfg.contains(from), "{from} not in the config");
        *cfg = cfg.replacen(from, to, 1);
    })
}

#[test]
fn crafted_model_sizes_are_refused_before_anything_is_allocated() {
    let dir = tmpdir("crafted-sizes");
    let good = dir.join("good.safetensors");
    tiny_model().save(&good).unwrap();
    let device = Device::flex();
    // The sizes that used to abort (a terabyte asked for) or grow without end.
    let cases = [
        ("channels: 32", "channels: 1000000000", "model.channels is 1000000000, over the limit"),
        ("stem_kernel: 4", "stem_kernel: 1000000001", "model.stem_kernel"),
        ("embedding_dim: 192", "embedding_dim: 1000000000", "model.embedding_dim"),
        ("pool_bottleneck: 12", "pool_bottleneck: 1000000000", "model.pool_bottleneck"),
        ("ffn_expansion: 4", "ffn_expansion: 1000000000", "model.ffn_expansion"),
        ("depths: [\n            1,", "depths: [\n            1000000,", "blocks per stage"),
        // Within the bounds, but not what the file holds.
        ("depths: [\n            1,", "depths: [\n            200,", "describes a network of"),
        ("channels: 32", "channels: 64", "describes a network of"),
    ];
    for (from, to, expect) in cases {
        let p = dir.join("crafted.safetensors");
        std::fs::write(&p, with_config(&good, from, to)).unwrap();
        let e = format!("{:#}", SpeakerModel::load(&p, &device).unwrap_err());
        assert!(e.contains("crafted.safetensors") && e.contains(expect), "{to}: {e}");
    }
    // The command line says the same, with exit status 1.
    let p = dir.join("crafted.safetensors");
    std::fs::write(&p, with_config(&good, "channels: 32", "channels: 1000000000")).unwrap();
    let wav = root().join("assets").join("audio").join("spk1_a.wav");
    let mut c = bin();
    c.args(["--device", "cpu", "verify", "--model"]).arg(&p).arg(&wav).arg(&wav);
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("model.channels"));
}

#[test]
fn non_finite_weights_are_refused_naming_the_tensor() {
    let dir = tmpdir("nan-weights");
    let good = dir.join("good.safetensors");
    tiny_model().save(&good).unwrap();
    for (tensor, value) in [("head.embed_bn.running_var", f32::NAN), ("stem.weight", f32::INFINITY)] {
        let bytes = resigned(&good, |_, tensors| {
            let t = tensors.iter_mut().find(|t| t.0 == tensor).unwrap_or_else(|| panic!("no {tensor}"));
            t.2[..4].copy_from_slice(&value.to_le_bytes());
        });
        let p = dir.join("bad.safetensors");
        std::fs::write(&p, bytes).unwrap();
        let e = format!("{:#}", SpeakerModel::load(&p, &Device::flex()).unwrap_err());
        assert!(e.contains("bad.safetensors") && e.contains(tensor) && e.contains("not a finite number"), "{e}");
        // export refuses it too, and writes nothing.
        let onnx = dir.join("bad.onnx");
        let e = run_err(bin().args(["--device", "cpu", "export", "--model"]).arg(&p).arg("--onnx").arg(&onnx));
        assert!(e.contains(tensor), "{e}");
        assert!(!onnx.exists());
    }
}

#[test]
fn embed_puts_its_three_files_in_place_together() {
    let dir = tmpdir("embed-staged");
    let out = dir.join("emb");
    let audio = root().join("assets").join("audio");
    let embed = |wavs: &[&str]| {
        let mut c = bin();
        c.args(["--device", "cpu", "embed", "--out"]).arg(&out);
        for w in wavs {
            c.arg(audio.join(w));
        }
        c
    };
    run_ok(&mut embed(&["spk1_a.wav", "spk2_a.wav"]));
    let names = ["embeddings.npy", "index.txt", "provenance.json"];
    let before: Vec<Vec<u8>> = names.iter().map(|n| std::fs::read(out.join(n)).unwrap()).collect();
    // A run that fails after writing its outputs (here a folder is in the
    // way of one of them; a full disk fails the same way, earlier) leaves
    // the previous set as it was.
    std::fs::remove_file(out.join("provenance.json")).unwrap();
    std::fs::create_dir_all(out.join("provenance.json").join("x")).unwrap();
    let e = run_err(&mut embed(&["spk1_a.wav", "spk2_a.wav", "spk3_a.wav"]));
    assert!(e.contains("provenance.json"), "{e}");
    for (n, b) in names.iter().zip(&before).take(2) {
        assert_eq!(&std::fs::read(out.join(n)).unwrap(), b, "{n} changed");
    }
    let hidden: Vec<PathBuf> = walk(&out).into_iter().filter(|p| p.to_string_lossy().contains(".partial")).collect();
    assert!(hidden.is_empty(), "{hidden:?}");
}

#[test]
fn names_that_an_index_or_a_list_cannot_hold_are_refused() {
    let dir = tmpdir("odd-names");
    let wav = std::fs::read(root().join("assets").join("audio").join("spk1_a.wav")).unwrap();
    // A line break in a name would shift every row of index.txt after it.
    let newline = dir.join("a\nb.wav");
    std::fs::write(&newline, &wav).unwrap();
    let e = run_err(bin().args(["--device", "cpu", "embed", "--out"]).arg(dir.join("o")).arg(&newline));
    assert!(e.contains("line break"), "{e}");
    assert!(!dir.join("o").join("index.txt").exists());
    // A tab in a listed name reads as `speaker path`: refused when the whole
    // line names a file, and a missing file is named with the list and line.
    std::fs::write(dir.join("x\tb.wav"), &wav).unwrap();
    std::fs::write(dir.join("b.wav"), &wav).unwrap();
    let list = dir.join("list.txt");
    std::fs::write(&list, "b.wav\nx\tb.wav\n").unwrap();
    let embed_list = || {
        let mut c = bin();
        c.args(["--device", "cpu", "embed", "--out"]).arg(dir.join("o")).arg("--list").arg(&list);
        c.arg("--wav-root").arg(&*dir);
        c
    };
    let e = run_err(&mut embed_list());
    assert!(e.contains("list.txt:2") && e.contains("space or a tab"), "{e}");
    std::fs::write(&list, "b.wav\ntab\there.wav\n").unwrap();
    let e = run_err(&mut embed_list());
    assert!(e.contains("list.txt:2") && e.contains("here.wav") && e.contains("not found"), "{e}");
}

#[cfg(target_os = "linux")]
#[test]
fn export_never_replaces_a_device_or_a_link() {
    let dir = tmpdir("export-targets");
    let export = |to: &Path| {
        let mut c = bin();
        c.args(["--device", "cpu", "export", "--onnx"]).arg(to);
        c
    };
    let e = run_err(&mut export(Path::new("/dev/null")));
    assert!(e.contains("/dev/null") && e.contains("not a regular file"), "{e}");
    assert!(!std::fs::metadata("/dev/null").unwrap().is_file(), "/dev/null was replaced");
    let target = dir.join("store").join("model.onnx");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::write(&target, "old").unwrap();
    let link = dir.join("link.onnx");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    run_ok(&mut export(&link));
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link was replaced");
    assert!(std::fs::metadata(&target).unwrap().len() > 100_000, "the link's target was not written");
}

#[test]
fn the_same_model_saved_twice_gives_the_same_bytes() {
    let dir = tmpdir("same-bytes");
    let m = tiny_model();
    let (a, b) = (dir.join("a.safetensors"), dir.join("b.safetensors"));
    m.save(&a).unwrap();
    m.save(&b).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    SpeakerModel::load(&a, &Device::flex()).unwrap();
}

#[test]
fn average_refuses_to_overwrite_an_input_and_says_what_it_needs() {
    let dir = tmpdir("average-args");
    let a = dir.join("a.safetensors");
    tiny_model().save(&a).unwrap();
    std::fs::copy(&a, dir.join("b.safetensors")).unwrap();
    let before = std::fs::read(&a).unwrap();
    let e =
        run_err(bin().args(["--device", "cpu", "average"]).arg(&a).arg(dir.join("b.safetensors")).arg("--out").arg(&a));
    assert!(e.contains("is one of the models to average"), "{e}");
    assert_eq!(std::fs::read(&a).unwrap(), before);
    let e = run_err(bin().args(["--device", "cpu", "average", "--out"]).arg(dir.join("x.safetensors")));
    assert!(e.contains("give model files, or --run"), "{e}");
}

#[test]
fn a_score_beyond_any_scale_is_named_not_a_singular_system() {
    use nexttdnn::eval::calibration::fit_logistic;
    let features = vec![vec![0.8], vec![0.1], vec![1e308], vec![0.2], vec![0.7], vec![-0.1]];
    let labels = vec![true, false, true, false, false, true];
    let e = format!("{:#}", fit_logistic(&features, &labels, 0.01).unwrap_err());
    assert!(e.contains("trial 3") && e.contains("1e308"), "{e}");
}

#[test]
fn a_recording_too_long_for_the_memory_budget_is_refused_before_any_work() {
    let dir = tmpdir("long-recording");
    let long = dir.join("long.wav");
    // Three minutes: about 180 MB to embed with the bundled model.
    let samples: Vec<f32> = speech(3 * 60 * 16000);
    common::wav::write_f32(&long, &samples);
    let out = dir.join("emb");
    let embed = |budget: &str| {
        let mut c = bin();
        c.args(["--device", "cpu", "embed", "--max-memory", budget, "--out"]).arg(&out).arg(&long);
        c
    };
    let e = run_err(&mut embed("100M"));
    assert!(e.contains("long.wav") && e.contains("3.0 minutes") && e.contains("budget of 0.1 GB"), "{e}");
    assert!(!out.join("embeddings.npy").exists());
    run_ok(&mut embed("2G"));
    assert!(out.join("embeddings.npy").exists());
    let e = run_err(&mut embed("12X"));
    assert!(e.contains("K, M, G or T"), "{e}");
}

#[test]
fn the_memory_estimate_covers_measured_peaks() {
    // Peaks measured with /usr/bin/time (BENCHMARKS.md): the estimate must
    // not fall below them, nor exceed them by more than 60 %.
    let cfg = ExperimentConfig::load(&config("dev_C64_B1_K65_7")).unwrap();
    for (minutes, measured_mb) in [(2usize, 98.0), (10, 329.0)] {
        let est = nexttdnn::embed::peak_bytes(&cfg, minutes * 60 * 16000) as f64 / 1e6;
        assert!(est >= measured_mb && est < 1.6 * measured_mb, "{minutes} min: {est} MB for {measured_mb}");
    }
    let cfg = ExperimentConfig::load(&config("NeXt_TDNN_C256_B3_K65_7")).unwrap();
    for (minutes, measured_mb) in [(2usize, 324.0), (10, 1056.0)] {
        let est = nexttdnn::embed::peak_bytes(&cfg, minutes * 60 * 16000) as f64 / 1e6;
        assert!(est >= measured_mb && est < 1.6 * measured_mb, "{minutes} min: {est} MB for {measured_mb}");
    }
}
