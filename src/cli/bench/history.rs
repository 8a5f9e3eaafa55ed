//! `meshgroup bench history`: the cost of serving "latest 50" as a group's history grows.
//!
//! Each size (1,000 / 10,000 / 100,000 messages by default) gets a group in a fresh database of each
//! backend; the bench then times, interleaved across sizes, what a request for the latest page costs
//! on the server once it reaches the group actor: `GroupCore::apply(Op::History)` (rules, store query,
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
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
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
    let pg = std::env::var(TEST_DATABASE_URL).ok();
    let mut rows = Vec::new();
    for backend in std::iter::once(None).chain(pg.as_deref().map(Some)) {
        // One fresh database per size, so no size shares tables, caches or indexes with another.
        let mut groups = Vec::new();
        for &size in &sizes {
            let t = match backend {
                None => crate::store::testing::sqlite().await?,
                Some(url) => crate::store::testing::postgres(url).await?,
            };
            let started = Instant::now();
            let (core, caller) = seeded_group(&t.store, size).await?;
            groups.push(Sized { t, core, caller, size, seed: started.elapsed(), times: Vec::new(), response_bytes: 0 });
        }
        rows.extend(measure(groups, &a).await?);
    }
    Ok(output(&rows, &a))
}

fn sender(i: usize) -> String {
    format!("{:032x}", 0xbe00 + i)
}

/// A group of `size` messages from [`SENDERS`] members, and a member to read it as.
async fn seeded_group(store: &Store, size: u64) -> Result<(GroupCore, Caller), CliError> {
    let group = create_group(store, CreateGroup { name: "bench".into(), ..Default::default() }).await?;
    for i in 0..SENDERS {
        store.add_member(group.id, &sender(i), &format!("sender {i}"), 0, "full").await?;
    }
    // A chat-sized body; the size of a page's response is what the link has to carry.
    let content = b"a message of ordinary length, about as long as people write on a mesh chat".to_vec();
    let batch: Vec<NewMessage> = (0..size)
        .map(|i| NewMessage {
            group_id: group.id,
            message_hash: format!("{i:064x}"),
            sender_identity_hash: sender(i as usize % SENDERS),
            sender_display_name: String::new(),
            timestamp: 1_700_000_000.0 + i as f64,
            title: Vec::new(),
            content: content.clone(),
            fields: vec![0x80],
            reply_to_id: None,
        })
        .collect();
    store.insert_messages_bulk(batch).await?;
    Ok((GroupCore::load(store.clone(), group).await?, Caller::Identity(sender(0))))
}

/// One history size under measurement.
struct Sized {
    t: TestStore,
    core: GroupCore,
    caller: Caller,
    size: u64,
    seed: Duration,
    times: Vec<Duration>,
    response_bytes: usize,
}

/// Times the sizes interleaved, call by call, so that load from anything else on the machine
/// falls on every size alike instead of skewing whichever size ran while it lasted.
async fn measure(mut groups: Vec<Sized>, a: &HistoryArgs) -> Result<Vec<Row>, CliError> {
    let op = || Op::History(HistoryQuery { limit: a.page, ..Default::default() });
    for g in &mut groups {
        // A wrong page would make every figure meaningless, so check it once before timing.
        let expect = a.page.min(g.size);
        let page = g.core.apply(&g.caller, op()).await?;
        if !matches!(&page, Reply::History { messages, .. } if messages.len() as u64 == expect) {
            return Err(CliError::Failure(format!("{}: the latest page of {} messages is not {expect} rows", g.t.store.backend(), g.size)));
        }
        g.response_bytes = crate::api::encode_reply(page).len();
        for _ in 0..(a.iterations / 10).clamp(1, 50) {
            std::hint::black_box(crate::api::encode_reply(g.core.apply(&g.caller, op()).await?));
        }
    }
    let n = groups.len();
    for round in 0..a.iterations as usize {
        for k in 0..n {
            let g = &mut groups[(round + k) % n];
            let t0 = Instant::now();
            let bytes = crate::api::encode_reply(g.core.apply(&g.caller, op()).await?);
            g.times.push(t0.elapsed());
            std::hint::black_box(bytes);
        }
    }
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    Ok(groups
        .into_iter()
        .map(|mut g| {
            g.times.sort_unstable();
            let len = g.times.len();
            Row {
                backend: g.t.store.backend(),
                messages: g.size,
                seed: g.seed,
                median_us: us(g.times[len / 2]),
                mean_us: g.times.iter().map(|d| us(*d)).sum::<f64>() / len as f64,
                p90_us: us(g.times[(len * 9 / 10).min(len - 1)]),
                response_bytes: g.response_bytes,
            }
        })
        .collect())
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
