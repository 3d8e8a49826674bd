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
    // Commands that compute open the device; the others never start a GPU runtime.
    let dev = || device::select(cli.device);
    match cli.command {
        Command::Devices => commands::devices::run(),
        Command::Prepare { what } => commands::prepare::run(&what),
        Command::Registry { what } => commands::enroll::registry(&what),
        Command::Compare(args) => match commands::compare::run(&args)? {
            true => Ok(()),
            false => anyhow::bail!("devices disagree beyond the tolerance (see the report)"),
        },
        Command::Train(args) => commands::train::run(&args, cli.device),
        Command::Import(args) => commands::import::run(&args, &dev()?),
        Command::Embed(args) => commands::embed::run(&args, &dev()?),
        Command::Verify(args) => commands::verify::run(&args, &dev()?),
        Command::Enroll(args) => commands::enroll::enroll(&args, &dev()?),
        Command::Identify(args) => commands::enroll::identify_files(&args, &dev()?),
        Command::Bench(args) => commands::bench::run(&args, &dev()?),
        Command::Eval(args) => commands::eval::run(&args, &dev()?),
        Command::Calibrate(args) => commands::calibrate::run(&args, &dev()?),
        Command::Average(args) => commands::average::run(&args, &dev()?),
        Command::Export(args) => commands::export::run(&args, &dev()?),
    }
}
