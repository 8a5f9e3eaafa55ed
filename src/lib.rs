//! meshgroup: a Reticulum/LXMF group-chat server that hosts many groups on one machine.
//!
//! The binary only parses arguments; everything lives here so integration tests drive the same code.

pub mod actors;
pub mod admin;
pub mod api;
pub mod bench;
pub mod cli;
pub mod config;
pub mod domain;
pub mod fuzzing;
pub mod group;
pub mod hosting;
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
/// CPU work the latter).
pub fn block_on<F: std::future::Future>(fut: F) -> std::io::Result<F::Output> {
    let system = actix::System::with_tokio_rt(|| tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap_or_else(panic_free_runtime));
    Ok(system.block_on(fut))
}

/// Building a runtime only fails when the OS refuses threads; fall back to a current-thread one.
#[cold]
fn panic_free_runtime(err: std::io::Error) -> tokio::runtime::Runtime {
    tracing::error!(%err, "cannot build the multi-threaded runtime, using a single thread");
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meshgroup: cannot start a tokio runtime: {e}");
            std::process::exit(1)
        }
    }
}
