//! meshgroup: a Reticulum/LXMF group-chat server that hosts many groups on one machine.
//!
//! The binary only parses arguments; everything lives here so integration tests drive the same code.

pub mod actors;
pub mod admin;
pub mod api;
pub mod cli;
pub mod client;
pub mod config;
pub mod domain;
pub mod fuzzing;
pub mod group;
pub mod journal;
pub mod lifecycle;
pub mod lxmf;
pub mod metrics;
pub mod pacing;
pub mod server;
pub mod stamps;
pub mod store;
pub mod transport;
pub mod wire;

/// Sets up logging: our targets at `log.level`, the Reticulum crate's at `log.transport_level`.
pub fn init_tracing(cfg: &config::Config) {
    let filter = format!("{},rns_transport={t},rns_core={t},lxmf_core={t},sqlx=warn,sea_orm=warn", cfg.log.level, t = cfg.log.transport_level);
    let filter = tracing_subscriber::EnvFilter::try_from_env("MESHGROUP_LOG_FILTER").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    // Logs go to stderr so stdout stays clean for `--json` output.
    // Colours only on a terminal: log files and journald get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).try_init();
}

/// Runs a future on the actix system over a multi-threaded tokio runtime (actors need the former,
/// CPU work the latter). Fails only when the OS refuses the runtime its threads.
pub fn block_on<F: std::future::Future>(fut: F) -> std::io::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let system = actix::System::with_tokio_rt(move || runtime);
    Ok(system.block_on(fut))
}
