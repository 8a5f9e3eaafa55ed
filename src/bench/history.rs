//! `meshgroup bench history`: the cost of serving "latest 50" as a group's history grows.
//!
//! One group is grown step by step (1,000 → 10,000 → 100,000 messages by default) on a fresh store
//! of each backend; at each size the bench times what a request for the latest page costs on the
//! server once it reaches the group actor: `GroupCore::apply(Op::History)` (rules, store query,
//! sender names) plus `api::encode_reply`. Ratios near 1.0 against the smallest size mean the page
//! cost does not grow with history, which is what the `(group_id, id)` index is for.

use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{Value, json};

use crate::cli::{CliError, Output};
use crate::group::{Caller, CreateGroup, GroupCore, Op, Reply, create_group};
use crate::store::testing::{TEST_DATABASE_URL, TestStore};
use crate::store::{HistoryQuery, NewMessage, Store};

#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// History sizes to measure; the smallest is the baseline of the ratios.
    #[arg(long, value_delimiter = ',', default_values_t = [1_000u64, 10_000, 100_000])]
    pub sizes: Vec<u64>,
    /// Timed calls per size, after a short warm-up.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    pub iterations: u32,
    /// Messages per page.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=200))]
    pub page: u64,
}

/// Distinct senders, so the sender-name lookup of every row is exercised as in a real group.
const SENDERS: usize = 25;

/// One measured size of one backend.
#[derive(Clone, Debug)]
struct Row {
    backend: &'static str,
    messages: u64,
    seed: Duration,
    median_us: f64,
    mean_us: f64,
    p90_us: f64,
    response_bytes: usize,
}

pub async fn run(a: HistoryArgs) -> Result<Output, CliError> {
    let mut sizes = a.sizes.clone();
    sizes.sort_unstable();
    sizes.dedup();
    if sizes.is_empty() || sizes[0] == 0 {
        return Err(CliError::Input("--sizes needs at least one size above 0".into()));
    }
    let mut rows = Vec::new();
    let sqlite = crate::store::testing::sqlite().await?;
    rows.extend(bench_backend(&sqlite, &sizes, &a).await?);
    drop(sqlite);
    if let Ok(url) = std::env::var(TEST_DATABASE_URL) {
        let pg = crate::store::testing::postgres(&url).await?;
        rows.extend(bench_backend(&pg, &sizes, &a).await?);
    }
    Ok(output(&rows, &a))
}

fn sender(i: usize) -> String {
    format!("{:032x}", 0xbe00 + i)
}

async fn bench_backend(t: &TestStore, sizes: &[u64], a: &HistoryArgs) -> Result<Vec<Row>, CliError> {
    let store: &Store = &t.store;
    let backend = store.backend();
    let group = create_group(store, CreateGroup { name: "bench".into(), ..Default::default() }).await?;
    for i in 0..SENDERS {
        store.add_member(group.id, &sender(i), &format!("sender {i}"), 0, "full").await?;
    }
    let mut core = GroupCore::load(store.clone(), group.clone()).await?;
    let caller = Caller::Identity(sender(0));
    // A chat-sized body; the size of a page's response is what the link has to carry.
    let content = b"a message of ordinary length, about as long as people write on a mesh chat".to_vec();
    let mut held = 0u64;
    let mut out = Vec::new();
    for &size in sizes {
        let started = Instant::now();
        let batch: Vec<NewMessage> = (held..size)
            .map(|i| NewMessage {
                group_id: group.id,
                message_hash: format!("{i:064x}"),
                sender_identity_hash: sender(i as usize % SENDERS),
                timestamp: 1_700_000_000.0 + i as f64,
                title: Vec::new(),
                content: content.clone(),
                fields: vec![0x80],
            })
            .collect();
        store.insert_messages_bulk(batch).await?;
        let seed = started.elapsed();
        held = size;

        let op = || Op::History(HistoryQuery { limit: a.page, ..Default::default() });
        // A wrong page would make every figure meaningless, so check it once before timing.
        let first = core.apply(&caller, op()).await?;
        let expect = a.page.min(size);
        match &first {
            Reply::History(r) if r.len() as u64 == expect => {}
            _ => return Err(CliError::Failure(format!("{backend}: the latest page at {size} messages is not {expect} rows"))),
        }
        let response_bytes = crate::api::encode_reply(first).len();
        for _ in 0..(a.iterations / 10).clamp(1, 50) {
            std::hint::black_box(crate::api::encode_reply(core.apply(&caller, op()).await?));
        }
        let mut times = Vec::with_capacity(a.iterations as usize);
        for _ in 0..a.iterations {
            let t0 = Instant::now();
            let bytes = crate::api::encode_reply(core.apply(&caller, op()).await?);
            times.push(t0.elapsed());
            std::hint::black_box(bytes);
        }
        times.sort_unstable();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let mean = times.iter().map(|d| us(*d)).sum::<f64>() / times.len() as f64;
        out.push(Row {
            backend,
            messages: size,
            seed,
            median_us: us(times[times.len() / 2]),
            mean_us: mean,
            p90_us: us(times[(times.len() * 9 / 10).min(times.len() - 1)]),
            response_bytes,
        });
    }
    Ok(out)
}

fn output(rows: &[Row], a: &HistoryArgs) -> Output {
    let baseline = |backend: &str| rows.iter().find(|r| r.backend == backend).map(|r| r.median_us).unwrap_or(f64::NAN);
    let ratio = |r: &Row| r.median_us / baseline(r.backend);
    let json_rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "backend": r.backend,
                "messages": r.messages,
                "us_per_call": round2(r.median_us),
                "mean_us": round2(r.mean_us),
                "p90_us": round2(r.p90_us),
                "ratio_to_baseline": round2(ratio(r)),
                "response_bytes": r.response_bytes,
                "seed_secs": round2(r.seed.as_secs_f64()),
            })
        })
        .collect();
    let table = rows
        .iter()
        .map(|r| {
            vec![
                r.backend.to_owned(),
                r.messages.to_string(),
                format!("{:.1}", r.median_us),
                format!("{:.1}", r.mean_us),
                format!("{:.1}", r.p90_us),
                format!("{:.2}", ratio(r)),
                r.response_bytes.to_string(),
            ]
        })
        .collect();
    Output {
        json: json!({
            "bench": "history",
            "measures": "GroupCore::apply(Op::History latest page) + api::encode_reply",
            "page": a.page,
            "iterations": a.iterations,
            "build": if cfg!(debug_assertions) { "debug" } else { "release" },
            "results": json_rows,
        }),
        headers: vec!["backend", "messages", "us/call (median)", "mean us", "p90 us", "ratio", "response bytes"],
        rows: table,
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
