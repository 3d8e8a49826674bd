//! A tiny training corpus made from the fixture and bundled recordings.

use std::path::{Path, PathBuf};

use super::{fixtures, root, UTTS};

pub fn noise_wav(path: &Path, seed: u32, len: usize) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
    let samples: Vec<f32> = (0..len)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32 - 0.5)
                * 0.2
                * if seed.is_multiple_of(2) { 1.0 } else { (i as f32 * 0.01).sin() }
        })
        .collect();
    nexttdnn::audio::wav::write_wav_i16(path, &samples, 16000).unwrap();
}

/// 4 speakers × 3 utterances (the fixture and bundled recordings, plus two
/// generated ones), MUSAN-like noise, impulse responses and a trial list.
pub fn corpus(dir: &Path) -> PathBuf {
    let c = dir.join("corpus");
    let mut sources: Vec<PathBuf> = UTTS.iter().map(|u| fixtures().join(format!("{u}.wav"))).collect();
    // The six whole-utterance recordings of the bundle's first three speakers.
    let assets = ["spk1_a", "spk1_b", "spk2_a", "spk2_b", "spk3_a", "spk3_b"]
        .map(|n| root().join("assets/audio").join(format!("{n}.wav")));
    sources.extend(assets);
    let mut list = String::new();
    for (i, src) in sources.iter().enumerate() {
        let (spk, utt) = (i / 3, i % 3);
        let rel = format!("spk{spk}/s{utt}/{utt:05}.wav");
        std::fs::create_dir_all(c.join("wav").join(format!("spk{spk}/s{utt}"))).unwrap();
        std::fs::copy(src, c.join("wav").join(&rel)).unwrap();
        list.push_str(&format!("spk{spk} {rel}\n"));
    }
    for (i, spk) in [(10, 3), (11, 3)] {
        let rel = format!("spk{spk}/g{i}/00001.wav");
        noise_wav(&c.join("wav").join(&rel), i, 30000);
        list.push_str(&format!("spk{spk} {rel}\n"));
    }
    std::fs::write(c.join("train_list.txt"), list).unwrap();
    for (k, kind) in ["noise", "speech", "music"].iter().enumerate() {
        for j in 0..3 {
            noise_wav(&c.join("musan").join(kind).join(format!("src/f{j}/{}.wav", j * 3)), (k * 10 + j) as u32, 80000);
        }
    }
    for j in 0..2 {
        let rir: Vec<f32> =
            (0..800).map(|i| (-(i as f32) / 100.0).exp() * if i % 7 == 0 { 1.0 } else { -0.3 }).collect();
        let p = c.join("rir/smallroom").join(format!("r{j}.wav"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        nexttdnn::audio::wav::write_wav_i16(&p, &rir, 16000).unwrap();
    }
    std::fs::write(
        c.join("trials.txt"),
        "1 spk0/s0/00000.wav spk0/s1/00001.wav\n0 spk0/s0/00000.wav spk1/s0/00000.wav\n1 spk2/s0/00000.wav spk2/s2/00002.wav\n0 spk1/s1/00001.wav spk2/s1/00001.wav\n",
    )
    .unwrap();
    c
}
