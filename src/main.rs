//! The `meshgroup` binary: parses the command line and hands over to the library.
use meshgroup::cli::{Cli, CliError, Command, Parsed, parse_args, report_error};

fn main() {
    let cli = match parse_args(std::env::args_os()) {
        Parsed::Run(cli) => cli,
        Parsed::Exit(code) => std::process::exit(code),
    };
    let json = cli.json;
    let code = match run(cli) {
        Ok(()) => 0,
        Err(err) => {
            let code = err.downcast_ref::<CliError>().map(CliError::exit_code).unwrap_or(1);
            report_error(json, &format!("{err:#}"), code);
            code
        }
    };
    std::process::exit(code);
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let mut cfg = meshgroup::config::Config::load(cli.config.as_deref()).map_err(|e| CliError::Input(e.to_string()))?;
    if let Command::Client(_) = &cli.command {
        meshgroup::cli::client::quiet_logs(&mut cfg.log);
    }
    meshgroup::init_tracing(&cfg);
    match cli.command {
        Command::Serve(args) => {
            meshgroup::block_on(meshgroup::server::run(cfg, args.demo, meshgroup::server::shutdown_signal()))??;
        }
        cmd => {
            let out = meshgroup::block_on(meshgroup::cli::run_command(&cfg, cmd, cli.json))??;
            println!("{}", out.render(cli.json));
        }
    }
    Ok(())
}
