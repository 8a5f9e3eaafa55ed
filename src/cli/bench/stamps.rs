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

use super::fanout::{cores, median, process_cpu, round2, round3};
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
    /// The client side: join-stamp costs to time the midstate generator at.
    #[arg(long, value_delimiter = ',', default_value = "8,12,16")]
    pub gen_costs: Vec<u32>,
    /// Stamps generated per cost (the median is reported).
    #[arg(long, default_value_t = 9, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub gen_runs: u32,
    /// Valid stamps validated, directly and through the pool, for the validation throughput.
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub validations: u32,
}

/// The join stamp from both sides, against one floor: the 3000-round workblock alone, which both
/// the client's generator and every server-side validation must build once.
async fn join_stamps(a: &StampsArgs) -> Result<serde_json::Value, CliError> {
    if a.gen_costs.iter().any(|c| *c > 24) {
        return Err(CliError::Input("--gen-costs: at most 24 (cost 24 takes 2^24 tries)".into()));
    }
    let mut floor = Vec::new();
    let mut generated = Vec::new();
    for cost in &a.gen_costs {
        let mut times = Vec::new();
        for _ in 0..a.gen_runs {
            let challenge: [u8; 32] = rand::random();
            let t = Instant::now();
            let _ = crate::wire::stamp::workblock(&challenge, MESSAGE_ROUNDS);
            floor.push(t.elapsed());
            let t = Instant::now();
            if generate(&challenge, MESSAGE_ROUNDS, *cost).is_none() {
                return Err(CliError::Failure(format!("no stamp of cost {cost} found")));
            }
            times.push(t.elapsed());
        }
        generated.push((*cost, median(&mut times)));
    }
    // Server side, one thread: workblock + value per stamp, as `StampPool` runs each check.
    let stamps: Vec<([u8; 32], [u8; 32])> = (0..a.validations)
        .map(|_| {
            let c: [u8; 32] = rand::random();
            (c, generate(&c, MESSAGE_ROUNDS, 8).unwrap_or_default())
        })
        .collect();
    // Interleaved with a floor measurement each, so that load from elsewhere falls on both alike.
    let (mut validate_times, mut valid) = (Vec::new(), 0usize);
    for (c, st) in &stamps {
        let t = Instant::now();
        let _ = crate::wire::stamp::workblock(&rand::random::<[u8; 32]>(), MESSAGE_ROUNDS);
        floor.push(t.elapsed());
        let t = Instant::now();
        valid += usize::from(crate::wire::stamp::value(&crate::wire::stamp::workblock(c, MESSAGE_ROUNDS), st) >= 8);
        validate_times.push(t.elapsed());
    }
    let floor_s = median(&mut floor);
    let direct_per_s = 1.0 / median(&mut validate_times);
    // Through the pool, from as many callers as the pool has slots, each with its own identity.
    let cfg = StampsConfig { pool_group_share: 1.0, adaptive_max_cost: 0, ..StampsConfig::default() };
    let pool = StampPool::new(a.capacity as usize, &cfg);
    let t = Instant::now();
    let mut tasks = Vec::new();
    for (n, (c, st)) in stamps.into_iter().enumerate() {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let check = Check {
                purpose: Purpose::Join,
                group: Some(1),
                identity: identity(0x22, n as u32),
                material: c.to_vec(),
                challenge: true,
                rounds: MESSAGE_ROUNDS,
                stamp: st.to_vec(),
                base_cost: 8,
            };
            pool.check(check).await == Ok(true)
        }));
    }
    let mut pooled = 0u32;
    for task in tasks {
        pooled += u32::from(task.await.unwrap_or(false));
    }
    let pool_per_s = f64::from(pooled) / t.elapsed().as_secs_f64();
    Ok(json!({
        "workblock_floor_s": round3(floor_s),
        "generate": generated.iter().map(|(cost, s)| json!({"cost": cost, "median_s": round3(*s), "x_floor": round2(s / floor_s)})).collect::<Vec<_>>(),
        "validate_direct_per_s": round2(direct_per_s),
        "validate_direct_valid": valid,
        "validate_direct_x_floor": round2(direct_per_s * floor_s),
        "validate_pool_per_s": round2(pool_per_s),
        "validate_pool_admitted": pooled,
        "validate_pool_x_floor_per_core": round2(pool_per_s * floor_s / cores() as f64),
    }))
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
    let client = join_stamps(&a).await?;
    rows.push(vec![]);
    rows.push(vec!["workblock floor".into(), format!("{} s", client["workblock_floor_s"])]);
    for g in client["generate"].as_array().into_iter().flatten() {
        rows.push(vec![format!("join stamp, cost {}", g["cost"]), format!("{} s", g["median_s"]), format!("{}x floor", g["x_floor"])]);
    }
    rows.push(vec!["validate, 1 thread".into(), format!("{}/s", client["validate_direct_per_s"]), format!("{}x floor", client["validate_direct_x_floor"])]);
    rows.push(vec![
        "validate, pool".into(),
        format!("{}/s", client["validate_pool_per_s"]),
        format!("{}x floor per core", client["validate_pool_x_floor_per_core"]),
    ]);
    out.insert("join_stamps".into(), client);
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
