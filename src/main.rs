//! The `meshgroup` binary: parses the command line and hands over to the library.
use meshgroup::cli::{Cli, CliError, Command, Parsed, parse_args, report_error};

fn main() {
    let cli = match parse_args(std::env::args_os()) {
        Parsed::Run(cli) => cli,
        Parsed::Exit(code) => std::process::exit(code),
    };
    let json = cli.json;
    exit_with(run(cli), json)
}

/// Reports the outcome (an error as one line on stderr) and exits with its code.
fn exit_with(result: anyhow::Result<()>, json: bool) -> ! {
    let code = match result {
        Ok(()) => 0,
        Err(err) => {
            let code = err.downcast_ref::<CliError>().map(CliError::exit_code).unwrap_or(1);
            report_error(json, &format!("{err:#}"), code);
            code
        }
    };
    let _ = std::io::Write::flush(&mut std::io::stdout());
    std::process::exit(code)
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
            let json = cli.json;
            meshgroup::block_on(async move {
                let result = meshgroup::cli::run_command(&cfg, cmd, json).await.map(|out| println!("{}", out.render(json)));
                // A command exits inside the runtime, its work done: dropping the runtime cancels
                // the transport's tasks, and reticulum-rs 0.16 then panics on stderr (it unwraps
                // the join of a task that was cancelled), which would garble the one-line answer.
                exit_with(result.map_err(anyhow::Error::from), json)
            })?;
        }
    }
    Ok(())
}
