//! `meshgroup bench`: measurements of server-side work on throw-away stores, never on the configured one.
//!
//! Benches print figures; they assert nothing, because times depend on the machine. The results
//! that matter for a change go into `docs/benchmarks.md` together with the command that made them.

pub mod fanout;
pub mod history;
pub mod inbound;
pub mod stamps;

use clap::Subcommand;

use crate::cli::{CliError, Output};

#[derive(Subcommand, Debug)]
pub enum BenchCmd {
    /// Handling of "latest 50" (store query + response encoding) as a group's history grows.
    History(history::HistoryArgs),
    /// Preparing one post for N members (build, sign, encrypt) against the crypto floor and Python.
    Fanout(fanout::FanoutArgs),
    /// Writing N outbox rows in one transaction against one transaction per row.
    Outbox(fanout::OutboxArgs),
    /// Accepted posts per second through the inbound path (decrypt, verify, rules, commit, proof) against its crypto floor.
    Inbound(inbound::InboundArgs),
    /// A junk-stamp join flood against the stamp pool, with and without its defences.
    Stamps(stamps::StampsArgs),
}

/// Runs one bench.
pub async fn run(cmd: BenchCmd) -> Result<Output, CliError> {
    match cmd {
        BenchCmd::History(a) => history::run(a).await,
        BenchCmd::Fanout(a) => fanout::fanout(a).await,
        BenchCmd::Outbox(a) => fanout::outbox(a).await,
        BenchCmd::Inbound(a) => inbound::inbound(a).await,
        BenchCmd::Stamps(a) => stamps::stamps(a).await,
    }
}
