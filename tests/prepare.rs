//! `prepare` on generated trees: VoxCeleb with WAV and real AAC `.m4a` files
//! (good and bad), MUSAN splitting, RIR selection, trial lists.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn run(c: &mut Command) -> (bool, String) {
    let (ok, out, err) = run_cmd(c);
    (ok, format!("{out}{err}"))
}

fn put(dst: &Path, src: &Path) {
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::copy(src, dst).unwrap();
}

fn wav(dst: &Path, samples: usize, rate: u32, channels: u16) {
    common::wav::write_pcm16(dst, &common::wav::pattern(samples * channels as usize), rate, channels);
}

#[test]
fn voxceleb_tree_with_m4a_and_bad_files() {
    let dir = tmpdir("vox");
    let root = dir.join("vox2");
    let m4a = fixtures().join("m4a");
    put(&root.join("id00001/vidA/00001.m4a"), &m4a.join("mono16k.m4a"));
    put(&root.join("id00001/vidA/00002.m4a"), &m4a.join("stereo16k.m4a"));
    put(&root.join("id00002/vidB/00001.wav"), &fixtures().join("utt_1p370s.wav"));
    put(&root.join("id00003/vidC/00001.m4a"), &m4a.join("mono16k.m4a"));
    // Bad files: truncated m4a, wrong rate, empty, a WAV at the wrong rate, a too-short WAV.
    let good = std::fs::read(m4a.join("mono16k.m4a")).unwrap();
    std::fs::create_dir_all(root.join("id00004/vidD")).unwrap();
    std::fs::write(root.join("id00004/vidD/00001.m4a"), &good[..good.len() * 2 / 3]).unwrap();
    put(&root.join("id00004/vidD/00002.m4a"), &m4a.join("mono8k.m4a"));
    std::fs::write(root.join("id00004/vidD/00003.m4a"), b"").unwrap();
    wav(&root.join("id00004/vidD/00004.wav"), 20000, 8000, 1);
    wav(&root.join("id00004/vidD/00005.wav"), 100, 16000, 1);
    let out = dir.join("prepared");

    let prep = |extra: &[&str]| {
        run(bin().args(["prepare", "voxceleb"]).arg(&root).arg("--out").arg(&out).args(["--jobs", "2"]).args(extra))
    };
    let (ok, log) = prep(&[]);
    assert!(ok, "{log}");
    assert!(log.contains("9 files: 4 usable (3 decoded from m4a") && log.contains("5 bad"), "{log}");
    let list = std::fs::read_to_string(out.join("train_list.txt")).unwrap();
    assert_eq!(
        list,
        "id00001 id00001/vidA/00001.wav\nid00001 id00001/vidA/00002.wav\nid00002 id00002/vidB/00001.wav\nid00003 id00003/vidC/00001.wav\n"
    );
    assert_eq!(std::fs::read_to_string(out.join("speakers.txt")).unwrap(), "id00001 0\nid00002 1\nid00003 2\n");
    let report = std::fs::read_to_string(out.join("report.tsv")).unwrap();
    for (file, why) in [
        ("00001.m4a", "truncated"),
        ("00002.m4a", "sample rate"),
        ("00003.m4a", "empty"),
        ("00004.wav", "8000 Hz"),
        ("00005.wav", "too short"),
    ] {
        let line = report
            .lines()
            .find(|l| l.contains(&format!("vidD/{file}")))
            .unwrap_or_else(|| panic!("{file} not reported:\n{report}"));
        assert!(line.contains(why), "{file}: {line}");
    }
    // The decoded audio equals ffmpeg's conversion (the reference pipeline's)
    // in length and to one 16-bit step, and is recorded in the manifest.
    let w = nexttdnn::audio::read_wav(&out.join("wav/id00001/vidA/00001.wav"), 16000, 1).unwrap();
    let ff = nexttdnn::audio::read_wav(&m4a.join("mono16k.ffmpeg.wav"), 16000, 1).unwrap();
    assert_eq!(w.samples.len(), ff.samples.len());
    assert!(max_abs(&w.samples, &ff.samples) <= 1.0 / 32768.0 + 1e-9, "{}", max_abs(&w.samples, &ff.samples));
    assert!(w.samples.iter().map(|v| v.abs()).fold(0.0, f32::max) > 0.05, "decoded audio is not silent");
    let manifest = std::fs::read_to_string(out.join("manifest.tsv")).unwrap();
    let sha = nexttdnn::files::sha256_file(&out.join("wav/id00001/vidA/00001.wav")).unwrap();
    assert!(manifest.contains(&sha), "{manifest}");

    // Training reads what prepare wrote.
    let set = nexttdnn::train::data::TrainSet::load(&out.join("train_list.txt"), &out.join("wav")).unwrap();
    assert_eq!((set.files.len(), set.speakers.len()), (4, 3));

    // Nothing is overwritten without --force; a forced rerun reuses nothing it shouldn't.
    let (ok, log) = prep(&[]);
    assert!(!ok && log.contains("--force"), "{log}");
    let (ok, log) = prep(&["--force"]);
    assert!(ok && log.contains("3 decoded"), "{log}");
    // A finished run leaves no temporary file behind.
    assert!(walk(&out).iter().all(|p| !p.to_string_lossy().ends_with(".partial")));
}

/// `prepare voxceleb` killed in the middle of converting: every WAV that has
/// its final name is complete, no list is written, and a rerun keeps what
/// was done and converts the rest.
#[test]
fn voxceleb_killed_midway_resumes() {
    let dir = tmpdir("vox-kill");
    let root = dir.join("vox2");
    let m4a = fixtures().join("m4a").join("mono16k.m4a");
    let n = 400;
    for i in 0..n {
        put(&root.join(format!("id{:05}/vid/{i:05}.m4a", i % 8)), &m4a);
    }
    let out = dir.join("prepared");
    let wavs = |out: &Path| -> Vec<std::path::PathBuf> {
        if !out.join("wav").exists() {
            return vec![];
        }
        walk(&out.join("wav")).into_iter().filter(|p| p.extension().is_some_and(|e| e == "wav")).collect()
    };
    let mut child = bin()
        .args(["prepare", "voxceleb"])
        .arg(&root)
        .arg("--out")
        .arg(&out)
        .args(["--jobs", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while wavs(&out).len() < 10 && started.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let done = wavs(&out);
    assert!(!done.is_empty() && done.len() < n, "killed after {} of {n} files", done.len());
    assert!(!out.join("train_list.txt").exists(), "no list from a killed run");
    let expected = nexttdnn::audio::read_wav(&m4a.with_file_name("mono16k.ffmpeg.wav"), 16000, 1).unwrap();
    for f in &done {
        let w = nexttdnn::audio::read_wav(f, 16000, 1).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(w.samples.len(), expected.samples.len(), "{} is complete", f.display());
    }
    let (ok, log) = run(bin().args(["prepare", "voxceleb"]).arg(&root).arg("--out").arg(&out));
    let resumed = format!("{} decoded from m4a, {} from an earlier run", n - done.len(), done.len());
    assert!(ok && log.contains(&resumed), "expected \"{resumed}\": {log}");
    assert!(walk(&out).iter().all(|p| !p.to_string_lossy().ends_with(".partial")));
}

#[test]
fn musan_split_and_rir_selection() {
    let dir = tmpdir("musan");
    let musan = dir.join("musan");
    wav(&musan.join("music/fma/music-0001.wav"), 16000 * 12, 16000, 1);
    wav(&musan.join("noise/free-sound/noise-0001.wav"), 16000 * 6, 16000, 1);
    wav(&musan.join("speech/librivox/speech-0001.wav"), 16000 * 4, 16000, 1);
    let out = dir.join("musan_split");
    let (ok, log) = run(bin().args(["prepare", "musan"]).arg(&musan).arg("--out").arg(&out));
    assert!(ok, "{log}");
    // 12 s: chunks at 0, 3, 6 s; 6 s: at 0; 4 s: none.
    let mut got: Vec<String> =
        walk(&out).iter().map(|p| p.strip_prefix(&out).unwrap().to_string_lossy().into_owned()).collect();
    got.sort();
    assert_eq!(
        got,
        [
            "music/fma/music-0001/00000.wav",
            "music/fma/music-0001/00003.wav",
            "music/fma/music-0001/00006.wav",
            "noise/free-sound/noise-0001/00000.wav"
        ]
    );
    let w = nexttdnn::audio::read_wav(&out.join("music/fma/music-0001/00003.wav"), 16000, 1).unwrap();
    assert_eq!(w.samples.len(), 80000);
    // The training loader classifies the split layout.
    let rirs = dir.join("RIRS_NOISES/simulated_rirs");
    wav(&rirs.join("smallroom/Room001/Room001-00001.wav"), 800, 16000, 1);
    wav(&rirs.join("mediumroom/Room001/Room001-00001.wav"), 800, 16000, 1);
    wav(&rirs.join("largeroom/Room001/Room001-00001.wav"), 800, 16000, 1);
    let rir_out = dir.join("rirs");
    let (ok, log) = run(bin().args(["prepare", "rir"]).arg(dir.join("RIRS_NOISES")).arg("--out").arg(&rir_out));
    assert!(ok && log.contains("2 impulse responses"), "{log}");
    assert!(!rir_out.join("largeroom").exists());
    let bank = nexttdnn::audio::augment::NoiseBank::scan(&out, &rir_out);
    assert!(bank.is_err(), "no speech chunks: the bank must say so");
    assert!(format!("{:#}", bank.unwrap_err()).contains("speech"));
}

#[test]
fn trial_lists_merged_and_split_layouts() {
    let dir = tmpdir("trials");
    let dev = dir.join("vox1_dev/wav");
    let test = dir.join("vox1_test/wav");
    wav(&dev.join("id10001/a/00001.wav"), 8000, 16000, 1);
    wav(&test.join("id10270/b/00001.wav"), 8000, 16000, 1);
    wav(&test.join("id10270/b/00002.wav"), 8000, 16000, 1);
    let list = dir.join("list_test_all2.txt");
    std::fs::write(&list, "1 id10270/b/00001.wav id10270/b/00002.wav\n0 id10001/a/00001.wav id10270/b/00001.wav\n")
        .unwrap();
    let (ok, log) = run(bin().args(["prepare", "trials"]).arg(&list).arg("--root").arg(&test));
    assert!(!ok && log.contains("list_test_all2.txt:2") && log.contains("id10001/a/00001.wav"), "{log}");
    let merged = dir.join("merged");
    let (ok, log) = run(bin()
        .args(["prepare", "trials"])
        .arg(&list)
        .arg("--root")
        .arg(&dev)
        .arg("--root")
        .arg(&test)
        .arg("--merged")
        .arg(&merged));
    assert!(ok && log.contains("all 3 files"), "{log}");
    assert!(merged.join("id10001/a/00001.wav").exists() && merged.join("id10270/b/00002.wav").exists());
}

#[test]
fn voxceleb_refuses_silence_unscaled_audio_and_spaces() {
    let dir = tmpdir("vox-unfit");
    let root = dir.join("vox");
    wav(&root.join("id00001/vidA/00001.wav"), 16000, 16000, 1);
    // Digital silence.
    let silent = root.join("id00001/vidA/00002.wav");
    nexttdnn::audio::wav::write_wav_i16(&silent, &vec![0.0; 16000], 16000).unwrap();
    // Float samples written unscaled, near 1e30.
    let huge: Vec<f32> = (0..16000).map(|i| (i as f32 * 0.05).sin() * 1e30).collect();
    common::wav::write_f32(&root.join("id00001/vidA/00003.wav"), &huge);
    // A speaker folder with a space, which a train list cannot carry.
    wav(&root.join("id 00002/vidB/00001.wav"), 16000, 16000, 1);
    // A corrupt .m4a is named as such, not as a bad WAV.
    std::fs::create_dir_all(root.join("id00003/vidC")).unwrap();
    std::fs::write(root.join("id00003/vidC/00001.m4a"), b"\x00\x00\x00\x18ftypM4A garbage garbage").unwrap();
    let out = dir.join("prepared");
    let (ok, log) = run(bin().args(["prepare", "voxceleb"]).arg(&root).arg("--out").arg(&out));
    assert!(ok && log.contains("1 usable") && log.contains("4 bad"), "{log}");
    let report = std::fs::read_to_string(out.join("report.tsv")).unwrap();
    for (file, why) in [
        ("vidA/00002.wav", "silent"),
        ("vidA/00003.wav", "far outside [-1, 1]"),
        ("vidB/00001.wav", "whitespace"),
        ("vidC/00001.m4a", "MP4"),
    ] {
        let line =
            report.lines().find(|l| l.contains(file)).unwrap_or_else(|| panic!("{file} not reported:\n{report}"));
        assert!(line.contains(why), "{file}: {line}");
        assert!(!line.contains("not a WAV file"), "{file}: {line}");
    }
}

#[test]
fn trial_lists_are_checked_for_rate_and_length() {
    let dir = tmpdir("trials-checked");
    let root = dir.join("wav");
    wav(&root.join("a/1.wav"), 16000, 16000, 1);
    wav(&root.join("b/1.wav"), 16000, 8000, 1);
    wav(&root.join("c/1.wav"), 100, 16000, 1);
    let list = dir.join("trials.txt");
    std::fs::write(&list, "1 a/1.wav a/1.wav\n0 a/1.wav b/1.wav\n0 c/1.wav a/1.wav\n").unwrap();
    let (ok, log) = run(bin().args(["prepare", "trials"]).arg(&list).arg("--root").arg(&root));
    assert!(!ok && log.contains("2 of 3 files"), "{log}");
    assert!(log.contains("trials.txt:2: b/1.wav") && log.contains("8000 Hz"), "{log}");
    assert!(log.contains("trials.txt:3: c/1.wav") && log.contains("100 samples"), "{log}");
}
