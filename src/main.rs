use clap::Parser;

use nexttdnn::commands::{
    self,
    cli::{Cli, Command},
};
use nexttdnn::device;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    device::tune_allocator();
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Devices => return commands::devices::run(),
        Command::Prepare { what } => return commands::prepare::run(what),
        Command::Compare { model, devices, trials, wav_root, out, emb_tol, eer_tol, batch_seconds } => {
            let args = commands::compare::CompareArgs {
                model: model.clone(),
                devices: devices.clone(),
                trials: trials.clone(),
                wav_root: wav_root.clone(),
                out: out.clone(),
                emb_tol: *emb_tol,
                eer_tol: *eer_tol,
                batch_seconds: *batch_seconds,
            };
            if !commands::compare::run(&args)? {
                anyhow::bail!("devices disagree beyond the tolerance (see the report)");
            }
            return Ok(());
        }
        Command::Train(args) => return commands::train::run(args, cli.device),
        _ => {}
    }
    let dev = device::select(cli.device)?;
    match cli.command {
        Command::Import { checkpoint, config, out } => commands::import::run(&checkpoint, &config, &out, &dev),
        Command::Embed(args) => commands::embed::run(&args, &dev),
        Command::Verify { model, threshold, enroll, test } => {
            commands::verify::run(model.as_deref(), threshold, enroll.as_deref(), test.as_deref(), &dev)
        }
        Command::Bench(args) => commands::bench::run(&args, &dev),
        Command::Eval(args) => commands::eval::run(&args, &dev),
        Command::Devices | Command::Compare { .. } | Command::Prepare { .. } | Command::Train(_) => unreachable!(),
    }
}
