use clap::Parser;

use nexttdnn::commands::{
    self,
    cli::{Cli, Command},
};
use nexttdnn::device;

fn main() {
    // Our INFO lines; dependencies speak from WARN up (CubeCL's autotuner
    // logs every tuning at INFO). RUST_LOG overrides both.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn,nexttdnn=info")).init();
    device::tune_allocator();
    device::quiet_vulkan_layers();
    device::host_as_default_device();
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
        Command::Registry { what } => return commands::enroll::registry(what),
        Command::Compare(args) => {
            if !commands::compare::run(args)? {
                anyhow::bail!("devices disagree beyond the tolerance (see the report)");
            }
            return Ok(());
        }
        Command::Train(args) => return commands::train::run(args, cli.device),
        _ => {}
    }
    let dev = device::select(cli.device)?;
    match cli.command {
        Command::Import(args) => commands::import::run(&args, &dev),
        Command::Embed(args) => commands::embed::run(&args, &dev),
        Command::Verify(args) => commands::verify::run(&args, &dev),
        Command::Enroll(args) => commands::enroll::enroll(&args, &dev),
        Command::Identify(args) => commands::enroll::identify_files(&args, &dev),
        Command::Bench(args) => commands::bench::run(&args, &dev),
        Command::Eval(args) => commands::eval::run(&args, &dev),
        Command::Calibrate(args) => commands::calibrate::run(&args, &dev),
        Command::Average(args) => commands::average::run(&args, &dev),
        Command::Export(args) => commands::export::run(&args, &dev),
        Command::Devices
        | Command::Compare(_)
        | Command::Prepare { .. }
        | Command::Registry { .. }
        | Command::Train(_) => unreachable!(),
    }
}
