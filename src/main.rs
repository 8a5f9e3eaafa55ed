//! The `meshgroup` binary: parses the command line and hands over to the library.
use clap::Parser;
use meshgroup::cli::{Cli, CliError, Command};

fn main() {
    let cli = Cli::parse();
    let code = match run(cli) {
        Ok(()) => 0,
        Err(err) => {
            let code = err.downcast_ref::<CliError>().map(CliError::exit_code).unwrap_or(1);
            eprintln!("meshgroup: {err:#}");
            code
        }
    };
    std::process::exit(code);
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let cfg = meshgroup::config::Config::load(cli.config.as_deref()).map_err(|e| CliError::Input(e.to_string()))?;
    meshgroup::init_tracing(&cfg);
    match cli.command {
        Command::Serve(args) => {
            meshgroup::block_on(meshgroup::server::run(cfg, args.demo, meshgroup::server::shutdown_signal()))??;
        }
        cmd => {
            let out = meshgroup::block_on(meshgroup::cli::run_command(&cfg, cmd))??;
            println!("{}", out.render(cli.json));
        }
    }
    Ok(())
}
