//! `cargo bench`: the measurements of `nexttdnn bench` for every official
//! model size, on one device (`NEXTTDNN_BENCH_DEVICE`, default `cpu`).
//! Each configuration's report is printed and written to
//! `target/nexttdnn-bench/<config>.json`. Timings live here and in `bench`,
//! never in tests.

use std::path::PathBuf;

use nexttdnn::commands::bench::BenchArgs;
use nexttdnn::commands::bench_train::TrainBenchArgs;
use nexttdnn::device::{select, DeviceSpec};
use nexttdnn::model::Precision;

fn main() -> anyhow::Result<()> {
    let spec: DeviceSpec = std::env::var("NEXTTDNN_BENCH_DEVICE")
        .unwrap_or_else(|_| "cpu".into())
        .parse()
        .map_err(|e| anyhow::anyhow!("NEXTTDNN_BENCH_DEVICE: {e}"))?;
    let dev = select(Some(spec))?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("nexttdnn-bench");
    std::fs::create_dir_all(&out_dir)?;
    // The paper's eight sizes (the cyclic-LR config has C256_B3's network).
    let configs = [
        "NeXt_TDNN_C128_B3_K65_7",
        "NeXt_TDNN_C192_B1_K65_7",
        "NeXt_TDNN_C256_B3_K65_7",
        "NeXt_TDNN_C384_B1_K65_7",
        "NeXt_TDNN_light_C128_B3_K65",
        "NeXt_TDNN_light_C192_B1_K65",
        "NeXt_TDNN_light_C256_B3_K65",
        "NeXt_TDNN_light_C384_B1_K65",
    ];
    for config in configs {
        let path = root.join("configs").join(format!("{config}.ron"));
        let out = out_dir.join(format!("{config}.json"));
        // Embedding at 4 s and 8 s, the front end at batch 32, single operations at batch 32.
        let args = BenchArgs {
            config: Some(path),
            model: None,
            seconds: vec![4.0, 8.0],
            eval_batch: vec![1],
            frontend_batch: 32,
            train_batch: 0,
            op_batch: 32,
            warmup: 3,
            repeats: 15,
            out: Some(out),
            ops: "extension".into(),
            precision: Precision::F32,
            training: TrainBenchArgs {
                loader_list: None,
                loader_root: None,
                loader_musan: None,
                loader_rir: None,
                loader_workers: 1,
                loader_crops: 0,
                allreduce: 0,
            },
        };
        nexttdnn::commands::bench::run(&args, &dev)?;
    }
    Ok(())
}
