//! `meshgroup bench stamps`: a junk-stamp join flood against the stamp pool, in process, with and
//! without its defences (issue 13, defects 3 and 4).
//!
//! `--attackers` identities each keep 4 junk checks in flight over one challenge of theirs (a naive
//! full-speed flood, as the probe did) until each has sent `--junk` stamps; meanwhile `--legit`
//! fresh identities each bring one valid stamp. Reported per mode: how many junk stamps the pool
//! actually hashed (work done for the attacker), how many got through, how many legitimate
//! stamps were admitted and their latency. "undefended" is the pool as it was: no failure limit,
//! no shares, no wait, a plain capacity.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use super::fanout::{cores, median, process_cpu, round3};
use crate::cli::{CliError, Output};
use crate::config::StampsConfig;
use crate::stamps::{Check, Purpose, Refused, StampPool};
use crate::wire::stamp::{MESSAGE_ROUNDS, generate};

#[derive(Args, Debug)]
pub struct StampsArgs {
    /// The pool capacity (`limits.stamp_pool_capacity`).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub capacity: u32,
    /// Attacking identities.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub attackers: u32,
    /// Junk stamps per attacker.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub junk: u32,
    /// Legitimate joiners during the flood, one valid stamp each.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub legit: u32,
    /// The join cost.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub cost: u32,
}

/// Tallies of one run.
#[derive(Default)]
struct Tally {
    hashed: u64,
    passed: u64,
    refused: u64,
}

fn identity(kind: u8, n: u32) -> [u8; 16] {
    let mut id = [kind; 16];
    id[..4].copy_from_slice(&n.to_be_bytes());
    id
}

/// One run; `spend` is whether challenges are spent on a failure (the old pool did not).
async fn run_mode(a: &StampsArgs, cfg: StampsConfig, spend: bool, legit: &Arc<Vec<(Vec<u8>, Vec<u8>)>>) -> serde_json::Value {
    let pool = StampPool::new(a.capacity as usize, &cfg);
    let tally = Arc::new(std::sync::Mutex::new(Tally::default()));
    let (started, cpu0) = (Instant::now(), process_cpu());
    let mut flood = Vec::new();
    let cost = a.cost;
    for k in 0..a.attackers {
        let challenge: [u8; 32] = rand::random();
        let per_slot = a.junk.div_ceil(4);
        for _ in 0..4 {
            let (pool, tally) = (pool.clone(), tally.clone());
            flood.push(tokio::spawn(async move {
                for _ in 0..per_slot {
                    let c = Check {
                        purpose: Purpose::Join,
                        group: Some(1),
                        identity: identity(0xaa, k),
                        material: challenge.to_vec(),
                        challenge: spend,
                        rounds: MESSAGE_ROUNDS,
                        stamp: rand::random::<[u8; 32]>().to_vec(),
                        base_cost: cost,
                    };
                    let out = pool.check(c).await;
                    let busy = matches!(out, Err(Refused::Busy | Refused::Share));
                    {
                        let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
                        match out {
                            Ok(ok) => {
                                t.hashed += 1;
                                t.passed += u64::from(ok);
                            }
                            Err(_) => t.refused += 1,
                        }
                    }
                    if busy {
                        // A flood that is told "busy" comes straight back.
                        tokio::task::yield_now().await;
                    }
                }
            }));
        }
    }
    // The legitimate joiners arrive one by one while the flood runs.
    let mut joiners = Vec::new();
    for (n, (challenge, stamp)) in legit.iter().cloned().enumerate() {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let pool = pool.clone();
        joiners.push(tokio::spawn(async move {
            let t = Instant::now();
            let c = Check {
                purpose: Purpose::Join,
                group: Some(1),
                identity: identity(0x11, n as u32),
                material: challenge,
                challenge: true,
                rounds: MESSAGE_ROUNDS,
                stamp,
                base_cost: cost,
            };
            (pool.check(c).await == Ok(true), t.elapsed())
        }));
    }
    let mut admitted = 0;
    let mut latencies = Vec::new();
    for j in joiners {
        if let Ok((ok, secs)) = j.await {
            admitted += u32::from(ok);
            if ok {
                latencies.push(secs);
            }
        }
    }
    let legit_done = started.elapsed().as_secs_f64();
    for f in flood {
        let _ = f.await;
    }
    let t = tally.lock().unwrap_or_else(|p| p.into_inner());
    let wall = started.elapsed();
    let cpu = process_cpu().saturating_sub(cpu0);
    json!({
        "junk_sent": u64::from(a.attackers) * u64::from(a.junk.div_ceil(4) * 4),
        "junk_hashed": t.hashed,
        "junk_passed": t.passed,
        "junk_refused": t.refused,
        "legit_admitted": admitted,
        "legit": a.legit,
        "legit_latency_median_s": round3(median(&mut latencies)),
        "legit_latency_max_s": round3(latencies.last().map(Duration::as_secs_f64).unwrap_or(0.0)),
        "legit_done_after_s": round3(legit_done),
        "flood_s": round3(wall.as_secs_f64()),
        "cpu_s": round3(cpu.as_secs_f64()),
    })
}

pub async fn stamps(a: StampsArgs) -> Result<Output, CliError> {
    let legit: Vec<(Vec<u8>, Vec<u8>)> = (0..a.legit)
        .map(|_| {
            let challenge: [u8; 32] = rand::random();
            let stamp = generate(&challenge, MESSAGE_ROUNDS, a.cost).map(|s| s.to_vec()).unwrap_or_default();
            (challenge.to_vec(), stamp)
        })
        .collect();
    let legit = Arc::new(legit);
    let undefended = StampsConfig {
        max_failures: u32::MAX,
        pool_per_identity: a.capacity as usize,
        pool_group_share: 1.0,
        pool_failed_share: 1.0,
        pool_wait_ms: 0,
        adaptive_max_cost: 0,
        ..StampsConfig::default()
    };
    let defended = StampsConfig { pool_group_share: 1.0, adaptive_max_cost: 0, ..StampsConfig::default() };
    let mut rows = Vec::new();
    let mut out = serde_json::Map::new();
    for (mode, cfg, spend) in [("undefended", undefended, false), ("defended", defended, true)] {
        let r = run_mode(&a, cfg, spend, &legit).await;
        rows.push(vec![
            mode.to_owned(),
            r["junk_sent"].to_string(),
            r["junk_hashed"].to_string(),
            r["junk_passed"].to_string(),
            format!("{}/{}", r["legit_admitted"], r["legit"]),
            r["legit_latency_median_s"].to_string(),
            r["flood_s"].to_string(),
            r["cpu_s"].to_string(),
        ]);
        out.insert(mode.into(), r);
    }
    out.insert("cost".into(), a.cost.into());
    out.insert("capacity".into(), a.capacity.into());
    out.insert("attackers".into(), a.attackers.into());
    out.insert("cores".into(), cores().into());
    out.insert("build".into(), if cfg!(debug_assertions) { "debug" } else { "release" }.into());
    Ok(Output {
        json: serde_json::Value::Object(out),
        headers: vec!["mode", "junk sent", "junk hashed", "junk passed", "legit admitted", "legit median s", "flood s", "cpu s"],
        rows,
    })
}
