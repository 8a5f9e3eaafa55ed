//! `meshgroup bench fanout` and `meshgroup bench outbox`: the cost of one post to a large group.
//!
//! `fanout` times, side by side in one run, the production preparation of one post for N members
//! (`lxmf::outbound::prepare` on the fan-out's worker pool, `actors::fanout::on_all_cores`), the
//! crypto floor of the same job on the same pool (per member one X25519 ephemeral keypair, one
//! ECDH, one HKDF-SHA256, AES-256-CBC of the same plaintext, one HMAC-SHA256, one Ed25519
//! signature, nothing else), and, when its venv exists, the Python reference (`rns` 1.5.7 /
//! `lxmf` 1.2.1, `benches/python_fanout.py`). `outbox` times writing N outbox rows in one
//! transaction against the naive way, one transaction per row.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aes::cipher::{BlockEncryptMut, KeyIvInit, block_padding::Pkcs7};
use clap::Args;
use hmac::Mac;
use rand::RngCore;
use rand::rngs::OsRng;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::actors::fanout::on_all_cores;
use crate::cli::{CliError, Output};
use crate::group::{CreateGroup, create_group};
use crate::lxmf::outbound::{Body, Recipient, attribution, pack_for, prepare};
use crate::store::testing::TEST_DATABASE_URL;
use crate::store::{NewMessage, NewOutboxRow, Store};
use crate::wire::identity::{GroupIdentity, LXMF_ASPECT};
use crate::wire::lxmf::{OutgoingMessage, pack};

#[derive(Args, Debug)]
pub struct FanoutArgs {
    /// Members to prepare one post for.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub members: u32,
    /// Timed rounds of the Rust paths (interleaved); each figure is the median of the rounds.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub rounds: u32,
    /// Skip the Python reference even if its venv exists.
    #[arg(long)]
    pub no_python: bool,
    /// Also report single-core µs per member of each step (identity load, pack, encrypt, floor parts).
    #[arg(long)]
    pub breakdown: bool,
}

#[derive(Args, Debug)]
pub struct OutboxArgs {
    /// Outbox rows written in one transaction (`Store::schedule_fanout`).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rows: u32,
    /// Rows of the naive baseline, one transaction each (default: the same as --rows).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub naive_rows: Option<u32>,
}

/// The group's identity and the post every member receives.
struct Post {
    group: GroupIdentity,
    group_lxmf: [u8; 16],
    body: Body,
}

impl Post {
    /// The post as the group sends it to one member's `lxmf.delivery` destination, unstamped.
    fn to(&self, destination: [u8; 16]) -> OutgoingMessage<'_> {
        OutgoingMessage {
            destination,
            source: self.group_lxmf,
            timestamp: self.body.timestamp,
            title: &self.body.title,
            content: &self.body.content,
            fields: self.body.fields.clone(),
            stamp: None,
        }
    }
}

/// A chat-sized post as the fan-out relays it: "name: text" with the attribution fields.
fn post() -> Post {
    let group = GroupIdentity::generate();
    let group_lxmf = group.destination(LXMF_ASPECT);
    let mut content = b"alice: ".to_vec();
    content.extend_from_slice(CONTENT.as_bytes());
    let body = Body { timestamp: 1_764_000_000.25, title: Vec::new(), content, fields: attribution(&[0x11; 16], "alice", &[0x22; 32], 4242, "message") };
    Post { group, group_lxmf, body }
}

/// Shared with `benches/python_fanout.py`, so both sides encrypt the same plaintext length.
const CONTENT: &str = "a message of ordinary length, about as long as people write on a mesh chat";

fn recipients(n: u32) -> Vec<Recipient> {
    (0..n)
        .map(|_| {
            let m = GroupIdentity::generate();
            Recipient { identity_hash: m.hash, lxmf_dest: m.destination(LXMF_ASPECT), public_key: m.public_key, ratchet: None, stamp_cost: 0 }
        })
        .collect()
}

/// What the floor needs per member: the member's key and salt, the plaintext, the bytes to sign.
#[derive(Clone)]
struct FloorJob {
    member_x25519: x25519_dalek::PublicKey,
    salt: [u8; 16],
    plaintext: std::sync::Arc<Vec<u8>>,
    signed: std::sync::Arc<Vec<u8>>,
    signer: std::sync::Arc<rns_transport::identity::PrivateIdentity>,
}

/// The crypto floor of one member: exactly the primitives, nothing else (no packing, no key
/// parsing, no output framing). Randomness comes from `OsRng` as in production, because an
/// ephemeral key and an IV must be fresh per member either way.
fn floor_one(j: FloorJob) -> usize {
    let secret = x25519_dalek::EphemeralSecret::random_from_rng(OsRng);
    let ephemeral = x25519_dalek::PublicKey::from(&secret);
    let shared = secret.diffie_hellman(&j.member_x25519);
    let mut key = [0u8; 64];
    if hkdf::Hkdf::<Sha256>::new(Some(&j.salt), shared.as_bytes()).expand(&[], &mut key).is_err() {
        return 0;
    }
    let mut iv = [0u8; 16];
    OsRng.fill_bytes(&mut iv);
    // RNS tokens: HMAC key first, AES-256 key second.
    let mut buf = [0u8; 512];
    let Ok(ct) = cbc::Encryptor::<aes::Aes256>::new((&key[32..]).into(), (&iv).into()).encrypt_padded_b2b_mut::<Pkcs7>(&j.plaintext, &mut buf) else {
        return 0;
    };
    let Ok(mut mac) = <hmac::Hmac<Sha256> as hmac::Mac>::new_from_slice(&key[..32]) else {
        return 0;
    };
    mac.update(&iv);
    mac.update(ct);
    let tag = mac.finalize().into_bytes();
    let signature = j.signer.sign(&j.signed);
    std::hint::black_box((ephemeral.as_bytes()[0], ct.len(), tag[0], signature.to_bytes()[0]));
    ct.len()
}

pub async fn fanout(a: FanoutArgs) -> Result<Output, CliError> {
    let n = a.members;
    let p = post();
    let to = recipients(n);
    // The floor encrypts the very plaintext production encrypts and signs a message of the length
    // production signs (destination ‖ source ‖ payload ‖ message id).
    let first = to.first().ok_or_else(|| CliError::Input("--members must be at least 1".into()))?;
    let (packed, message_id) = pack(&p.to(first.lxmf_dest), &crate::wire::lxmf::signer(&p.group.private_key).map_err(|e| CliError::Failure(e.to_string()))?)
        .map_err(|e| CliError::Failure(e.to_string()))?;
    let plaintext = std::sync::Arc::new(packed[16..].to_vec());
    let mut signed = packed[..32].to_vec();
    signed.extend_from_slice(&packed[96..]);
    signed.extend_from_slice(&message_id);
    let signed = std::sync::Arc::new(signed);
    let signer = std::sync::Arc::new(
        rns_transport::identity::PrivateIdentity::from_private_key_bytes(&p.group.private_key).map_err(|e| CliError::Failure(format!("{e:?}")))?,
    );
    let floor_jobs: Vec<FloorJob> = to
        .iter()
        .map(|r| {
            let mut x = [0u8; 32];
            x.copy_from_slice(&r.public_key[..32]);
            FloorJob { member_x25519: x.into(), salt: r.identity_hash, plaintext: plaintext.clone(), signed: signed.clone(), signer: signer.clone() }
        })
        .collect();
    let key = signer.clone();
    let lxmf = p.group_lxmf;
    let body = std::sync::Arc::new(p.body.clone());
    let prod_jobs: Vec<(Recipient, std::sync::Arc<Body>)> = to.iter().map(|r| (r.clone(), body.clone())).collect();
    let prod = move |(r, b): (Recipient, std::sync::Arc<Body>)| prepare(key.as_ref(), lxmf, &r, &b).map(|x| x.ciphertext.len()).unwrap_or(0);

    // Warm-up: spawns the blocking threads and faults in code and tables for both paths.
    let warm = prod_jobs.len().min(200);
    on_all_cores(prod_jobs[..warm].to_vec(), prod.clone()).await;
    on_all_cores(floor_jobs[..warm].to_vec(), floor_one).await;

    let mut prepare_t = Vec::new();
    let mut floor_t = Vec::new();
    // CPU seconds of the whole process beside the wall time: on a shared machine another process
    // stretches the wall time of whichever path it overlaps, but hardly its CPU time.
    let mut prepare_cpu = Vec::new();
    let mut floor_cpu = Vec::new();
    for round in 0..a.rounds {
        // Alternating which goes first spreads any drift in machine load over both.
        for k in 0..2 {
            if (round + k) % 2 == 0 {
                let jobs = prod_jobs.clone();
                let (c0, t0) = (process_cpu(), Instant::now());
                let out = on_all_cores(jobs, prod.clone()).await;
                prepare_t.push(t0.elapsed());
                prepare_cpu.push(process_cpu().saturating_sub(c0));
                if out.len() != n as usize || out.contains(&0) {
                    return Err(CliError::Failure("production preparation failed for some members".into()));
                }
            } else {
                let jobs = floor_jobs.clone();
                let (c0, t0) = (process_cpu(), Instant::now());
                let out = on_all_cores(jobs, floor_one).await;
                floor_t.push(t0.elapsed());
                floor_cpu.push(process_cpu().saturating_sub(c0));
                if out.len() != n as usize || out.contains(&0) {
                    return Err(CliError::Failure("floor computation failed for some members".into()));
                }
            }
        }
    }
    let prepare_s = median(&mut prepare_t);
    let floor_s = median(&mut floor_t);
    let prepare_cpu_s = median(&mut prepare_cpu);
    let floor_cpu_s = median(&mut floor_cpu);

    let mut notes = vec![format!(
        "Rust: {} round(s), median; {} worker thread(s) (one chunk per core, as the fan-out runs); plaintext {} B",
        a.rounds,
        cores(),
        plaintext.len()
    )];
    let python = if a.no_python { None } else { python_reference(n, a.rounds.min(3)) };
    let python_s = match &python {
        Some(Ok(v)) => {
            notes.push(format!(
                "Python: rns {} / lxmf {}, one process, 1 core (as the reference runs); plaintext {} B",
                v["rns"].as_str().unwrap_or("?"),
                v["lxmf"].as_str().unwrap_or("?"),
                v["plaintext_len"]
            ));
            v["seconds"].as_f64().map(|s| (s, v["cpu_seconds"].as_f64()))
        }
        Some(Err(why)) => {
            notes.push(format!("Python reference failed: {why}"));
            None
        }
        None => {
            notes.push("Python reference skipped (no target/pyenv or --no-python)".into());
            None
        }
    };
    let (python_s, python_cpu_s) = (python_s.map(|p| p.0), python_s.and_then(|p| p.1));
    let mapping = copy_mapping(n as usize, &prod_jobs).await?;
    notes.push(format!(
        "copy mapping (SQLite): each copy's hash written on its outbox row, {} statement(s) for {n} copies; a reply's target resolved by hash in {:.1} us; a round's {} members' copies of a target read in {:.2} ms",
        n.div_ceil(300),
        mapping.resolve_us,
        mapping.round_members,
        mapping.round_lookup_s * 1e3
    ));
    let proof_verify_us = proof_verify_us(&signer);
    let ratio = prepare_s / floor_s;
    let speedup = python_s.map(|py| py / prepare_s);
    let mut j = json!({
        "members": n,
        "prepare_s": round4(prepare_s),
        "floor_s": round4(floor_s),
        "python_s": python_s.map(round4),
        "ratio_to_floor": round3(ratio),
        "speedup_vs_python": speedup.map(round3),
        "cores": cores(),
        "python_cores": python_s.map(|_| 1),
        "prepare_cpu_s": round4(prepare_cpu_s),
        "floor_cpu_s": round4(floor_cpu_s),
        "python_cpu_s": python_cpu_s.map(round4),
        "cpu_ratio_to_floor": round3(prepare_cpu_s / floor_cpu_s),
        // Per member a post also costs checking the member's delivery proof (an Ed25519 verify):
        // with the floor's CPU per member, the per-member crypto floor of the whole delivery.
        "proof_verify_us": round2(proof_verify_us),
        "delivery_floor_cpu_us_per_member": round2(floor_cpu_s / f64::from(n) * 1e6 + proof_verify_us),
        "cpu_speedup_vs_python": python_cpu_s.map(|py| round3(py / prepare_cpu_s)),
        // The thread mapping: per copy one 32-byte hash on its outbox row (no new rows), written
        // once per round before the sends; the prepare with it, against the same floor.
        "mapping_record_s": round4(mapping.record_s),
        "mapping_us_per_member": round2(mapping.record_s / f64::from(n) * 1e6),
        "mapping_resolve_us": round2(mapping.resolve_us),
        "mapping_round_lookup_s": round4(mapping.round_lookup_s),
        "ratio_to_floor_with_mapping": round3((prepare_s + mapping.record_s) / floor_s),
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "notes": notes,
    });
    if a.breakdown {
        j["breakdown_us"] = breakdown(&p, &to, &floor_jobs);
    }
    let fmt = |x: Option<f64>| x.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into());
    let rows = vec![
        vec![
            "production prepare (all cores)".into(),
            format!("{prepare_s:.3}"),
            format!("{prepare_cpu_s:.3}"),
            format!("{:.1}", prepare_s / n as f64 * 1e6),
            format!("{ratio:.2}x floor"),
        ],
        vec![
            "crypto floor (all cores)".into(),
            format!("{floor_s:.3}"),
            format!("{floor_cpu_s:.3}"),
            format!("{:.1}", floor_s / n as f64 * 1e6),
            "1.00x floor".into(),
        ],
        vec![
            "prepare + copy-hash mapping".into(),
            format!("{:.3}", prepare_s + mapping.record_s),
            "-".into(),
            format!("{:.1}", (prepare_s + mapping.record_s) / n as f64 * 1e6),
            format!("{:.2}x floor", (prepare_s + mapping.record_s) / floor_s),
        ],
        vec![
            "python rns/lxmf (1 core)".into(),
            fmt(python_s),
            fmt(python_cpu_s),
            fmt(python_s.map(|s| s / n as f64 * 1e6)),
            speedup.map(|s| format!("prepare is {s:.2}x faster")).unwrap_or_else(|| "-".into()),
        ],
    ];
    Ok(Output { json: j, headers: vec!["path", "wall s", "cpu s", "wall us/member", "ratio"], rows })
}

/// What the thread mapping costs beside the crypto.
struct Mapping {
    /// Writing every copy's hash on its outbox row (`Store::record_copies`, as a round does).
    record_s: f64,
    /// Resolving one inbound target hash to the group message (`Store::resolve_message_hash`).
    resolve_us: f64,
    /// Members in one delivery round, and reading their copies of one target (`Store::copies_of`).
    round_members: usize,
    round_lookup_s: f64,
}

/// Times the mapping on a fresh SQLite store with one post's `n` outbox rows: the hashes are the
/// real message ids of the production copies.
async fn copy_mapping(n: usize, jobs: &[(Recipient, std::sync::Arc<Body>)]) -> Result<Mapping, CliError> {
    // `fanout.batch`, the rows one delivery round takes.
    const ROUND: usize = 256;
    let db = fresh(None).await?;
    let store = &db.store;
    let (gid, mid) = seeded(store).await?;
    let members: Vec<String> = jobs.iter().map(|(r, _)| hex::encode(r.identity_hash)).collect();
    let rows = members
        .iter()
        .map(|m| NewOutboxRow {
            group_id: gid,
            member_identity_hash: m.clone(),
            kind: "message",
            message_id: Some(mid),
            event_id: None,
            reaction_id: None,
            mode: "full",
            class: crate::domain::DeliveryClass::Post,
        })
        .collect();
    store.schedule_fanout(rows, crate::store::FannedOut::Message(mid)).await?;
    let due = store.due_outbox(crate::store::now_ms() + 1, n as u64).await?;
    let group = GroupIdentity::generate();
    let (signer, group_lxmf) = (crate::wire::lxmf::signer(&group.private_key).map_err(|e| CliError::Failure(e.to_string()))?, group.destination(LXMF_ASPECT));
    let by_member: std::collections::HashMap<String, &Recipient> = jobs.iter().map(|(r, _)| (hex::encode(r.identity_hash), r)).collect();
    let mut copies = Vec::with_capacity(due.len());
    for row in &due {
        let r = by_member.get(&row.member_identity_hash).ok_or_else(|| CliError::Failure("outbox row of an unknown member".into()))?;
        let (_, id) = pack_for(&signer, group_lxmf, r, &jobs[0].1).map_err(|e| CliError::Failure(e.to_string()))?;
        copies.push((row.id, id));
    }
    let t0 = Instant::now();
    store.record_copies(&copies).await?;
    let record_s = t0.elapsed().as_secs_f64();
    let sample: Vec<&(i64, [u8; 32])> = copies.iter().step_by((copies.len() / 200).max(1)).collect();
    let t0 = Instant::now();
    for (_, hash) in &sample {
        if store.resolve_message_hash(gid, hash).await? != Some(mid) {
            return Err(CliError::Failure("a copy hash did not resolve to its message".into()));
        }
    }
    let resolve_us = t0.elapsed().as_secs_f64() / sample.len().max(1) as f64 * 1e6;
    let round: Vec<String> = members.iter().take(ROUND).cloned().collect();
    let t0 = Instant::now();
    let found = store.copies_of(mid, &round).await?;
    let round_lookup_s = t0.elapsed().as_secs_f64();
    if found.len() != round.len() {
        return Err(CliError::Failure(format!("{} of {} copies found", found.len(), round.len())));
    }
    Ok(Mapping { record_s, resolve_us, round_members: round.len(), round_lookup_s })
}

/// Single-core µs to check one delivery proof (Ed25519 over a packet hash), as the transport does
/// for every member's proof.
fn proof_verify_us(signer: &rns_transport::identity::PrivateIdentity) -> f64 {
    const SAMPLE: u32 = 2000;
    let public = signer.as_identity();
    let hash = [0x5au8; 32];
    let signature = signer.sign(&hash);
    let t0 = Instant::now();
    let ok = (0..SAMPLE).filter(|_| public.verify(std::hint::black_box(&hash), &signature).is_ok()).count();
    std::hint::black_box(ok);
    t0.elapsed().as_secs_f64() * 1e6 / f64::from(SAMPLE)
}

/// Single-core µs per member of each step, over a sample, to show where the time goes.
fn breakdown(p: &Post, to: &[Recipient], floor_jobs: &[FloorJob]) -> Value {
    let k = to.len().min(2_000);
    let per = |d: Duration| round2(d.as_secs_f64() * 1e6 / k as f64);
    let time = |f: &mut dyn FnMut(usize)| {
        let t0 = Instant::now();
        for i in 0..k {
            f(i);
        }
        t0.elapsed()
    };
    let key = p.group.private_key;
    let load = time(&mut |_| {
        std::hint::black_box(rns_transport::identity::PrivateIdentity::from_private_key_bytes(&key).is_ok());
    });
    // Production builds the signer once per group (the load above is what that saves per member).
    let Ok(signer) = crate::wire::lxmf::signer(&key) else { return Value::Null };
    let packed = time(&mut |i| {
        std::hint::black_box(pack(&p.to(to[i].lxmf_dest), &signer).is_ok());
    });
    let plaintext = floor_jobs.first().map(|j| j.plaintext.clone()).unwrap_or_default();
    let encrypt = time(&mut |i| {
        let mut x = [0u8; 32];
        x.copy_from_slice(&to[i].public_key[..32]);
        let r = rns_transport::ratchets::encrypt_for_public_key(&x.into(), &to[i].identity_hash, &plaintext, OsRng);
        std::hint::black_box(r.is_ok());
    });
    let prepared = time(&mut |i| {
        std::hint::black_box(prepare(&signer, p.group_lxmf, &to[i], &p.body).is_ok());
    });
    let floor = time(&mut |i| {
        std::hint::black_box(floor_one(floor_jobs[i].clone()));
    });
    let sign = time(&mut |i| {
        std::hint::black_box(floor_jobs[i].signer.sign(&floor_jobs[i].signed).to_bytes());
    });
    json!({
        "sample": k,
        "prepare": per(prepared),
        "of_which_pack_incl_identity_load_and_sign": per(packed),
        "of_which_identity_load": per(load),
        "of_which_encrypt_for_public_key": per(encrypt),
        "floor": per(floor),
        "of_which_ed25519_sign": per(sign),
    })
}

/// Runs `benches/python_fanout.py N CONTENT ROUNDS` with `target/pyenv/bin/python`, found from the working
/// directory or the source tree; `None` when the venv or the script is not there.
fn python_reference(n: u32, rounds: u32) -> Option<Result<Value, String>> {
    let roots = [PathBuf::from("."), PathBuf::from(env!("CARGO_MANIFEST_DIR"))];
    let root = roots.iter().find(|r| r.join("target/pyenv/bin/python").exists() && r.join("benches/python_fanout.py").exists())?;
    Some(run_python(root, n, rounds))
}

fn run_python(root: &Path, n: u32, rounds: u32) -> Result<Value, String> {
    let out = std::process::Command::new(root.join("target/pyenv/bin/python"))
        .arg(root.join("benches/python_fanout.py"))
        .arg(n.to_string())
        .arg(CONTENT)
        .arg(rounds.to_string())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("exit status").to_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // The last line that is a JSON object: library log lines may come before it.
    let line = text.lines().rev().find(|l| l.trim_start().starts_with('{')).ok_or("no JSON line from the script")?;
    serde_json::from_str(line).map_err(|e| e.to_string())
}

pub async fn outbox(a: OutboxArgs) -> Result<Output, CliError> {
    let n = a.rows as usize;
    let naive_n = a.naive_rows.map(|v| v as usize).unwrap_or(n);
    let pg = std::env::var(TEST_DATABASE_URL).ok();
    let mut results = Vec::new();
    for backend in std::iter::once(None).chain(pg.as_deref().map(Some)) {
        // Fresh databases for each way, so neither writes into a table the other already grew.
        let batch_db = fresh(backend).await?;
        let naive_db = fresh(backend).await?;
        let (gid, mid) = seeded(&batch_db.store).await?;
        let rows = outbox_rows(gid, Some(mid), n);
        let t0 = Instant::now();
        let written = batch_db.store.schedule_fanout(rows, crate::store::FannedOut::Message(mid)).await?;
        let batch = t0.elapsed();
        if written != n as u64 {
            return Err(CliError::Failure(format!("wrote {written} rows, not {n}")));
        }
        let (gid, mid) = seeded(&naive_db.store).await?;
        let t0 = Instant::now();
        for row in outbox_rows(gid, Some(mid), naive_n) {
            naive_db.store.insert_outbox_batch(vec![row]).await?;
        }
        let naive = t0.elapsed();
        results.push((batch_db.store.backend(), batch, naive));
    }
    let json_rows: Vec<Value> = results
        .iter()
        .map(|(backend, batch, naive)| {
            let batch_rate = n as f64 / batch.as_secs_f64();
            let naive_rate = naive_n as f64 / naive.as_secs_f64();
            json!({
                "backend": backend,
                "rows": n,
                "batch_s": round4(batch.as_secs_f64()),
                "rows_per_s": batch_rate.round(),
                "naive_rows": naive_n,
                "naive_s": round4(naive.as_secs_f64()),
                "naive_rows_per_s": naive_rate.round(),
                "ratio_to_naive": round2(batch_rate / naive_rate),
            })
        })
        .collect();
    let table = json_rows
        .iter()
        .map(|r| {
            vec![
                r["backend"].as_str().unwrap_or_default().to_owned(),
                r["rows"].to_string(),
                r["batch_s"].to_string(),
                r["rows_per_s"].to_string(),
                r["naive_rows_per_s"].to_string(),
                format!("{}x", r["ratio_to_naive"]),
            ]
        })
        .collect();
    Ok(Output {
        json: json!({
            "bench": "outbox",
            "measures": "Store::schedule_fanout of N rows in one transaction vs one transaction per row (insert_outbox_batch of 1)",
            "build": if cfg!(debug_assertions) { "debug" } else { "release" },
            "results": json_rows,
        }),
        headers: vec!["backend", "rows", "batch s", "rows/s (one txn)", "rows/s (naive)", "ratio"],
        rows: table,
    })
}

pub(super) async fn fresh(backend: Option<&str>) -> Result<crate::store::testing::TestStore, CliError> {
    Ok(match backend {
        None => crate::store::testing::sqlite().await?,
        Some(url) => crate::store::testing::postgres(url).await?,
    })
}

/// A group with one stored post, which the batch marks as fanned out as production does.
async fn seeded(store: &Store) -> Result<(i64, i64), CliError> {
    let group = create_group(store, CreateGroup { name: "bench".into(), ..Default::default() }).await?;
    let outcome = store
        .insert_message(NewMessage {
            group_id: group.id,
            message_hash: format!("{:064x}", 1),
            sender_identity_hash: format!("{:032x}", 0xbe00),
            sender_display_name: String::new(),
            timestamp: 1_764_000_000.0,
            title: Vec::new(),
            content: CONTENT.as_bytes().to_vec(),
            fields: vec![0x80],
            reply_to_id: None,
        })
        .await?;
    Ok((group.id, outcome.id()))
}

fn outbox_rows(group_id: i64, message_id: Option<i64>, n: usize) -> Vec<NewOutboxRow> {
    (0..n)
        .map(|i| NewOutboxRow {
            group_id,
            member_identity_hash: format!("{:032x}", 0x1000_0000 + i),
            kind: "message",
            message_id,
            event_id: None,
            reaction_id: None,
            mode: "full",
            class: crate::domain::DeliveryClass::Post,
        })
        .collect()
}

pub(super) fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// User + system CPU time of this process so far (`/proc/self/stat`, in USER_HZ = 100 ticks/s,
/// the fixed Linux ABI value); zero where that file does not exist.
pub(super) fn process_cpu() -> Duration {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name, which is in parentheses and may contain spaces.
            let rest = s.rsplit_once(')')?.1.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
            Some(rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

pub(super) fn median(v: &mut [Duration]) -> f64 {
    v.sort_unstable();
    v.get(v.len() / 2).map(|d| d.as_secs_f64()).unwrap_or(f64::NAN)
}

pub(super) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

pub(super) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}
