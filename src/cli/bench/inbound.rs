//! `meshgroup bench inbound`: accepted posts per second through the real inbound path, against
//! the crypto floor of the same work, on SQLite and (with MESHGROUP_TEST_DATABASE_URL) PostgreSQL.
//!
//! Each post is an opportunistic LXMF packet from one of `--members` members to the group's
//! `lxmf.delivery`, built and encrypted beforehand. The path timed per post: decrypt (X25519,
//! HKDF, HMAC, AES), unpack, verify the sender's signature, the group's rules and the commit
//! (through the group actor's mailbox, as the server does), then the delivery proof (an Ed25519
//! signature). `--concurrency` posts are in flight at once, as packets from many senders are.
//! The floor does the same decrypt, unpack, verify and sign on all cores with no rules and no
//! database, so the ratio is what the rules and the commit add.
//!
//! A second timed pass journals each post as direct (link) posts are: appended to a journal in
//! the store's temporary directory before it is handled (posts in flight together share one
//! sync), settled once stored. Its ratio to the first pass is what the journal costs.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use clap::Args;
use serde_json::json;

use super::fanout::{cores, fresh, median, process_cpu, round2, round3};
use crate::actors::fanout::on_all_cores;
use crate::actors::group::GroupActor;
use crate::cli::{CliError, Output};
use crate::group::{Caller, CreateGroup, GroupCore, create_group};
use crate::journal::Journal;
use crate::store::testing::TEST_DATABASE_URL;
use crate::store::{InsertOutcome, NewMessage};
use crate::wire::identity::{GroupIdentity, LXMF_ASPECT};
use crate::wire::lxmf::{OutgoingMessage, Signer, pack, signer, unpack};

#[derive(Args, Debug)]
pub struct InboundArgs {
    /// Posts per timed round.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub posts: u32,
    /// Members the posts come from (a post burst of a busy group: 200 members, 10 posts each...).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub members: u32,
    /// Posts in flight at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,
    /// Timed rounds; each figure is the median.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub rounds: u32,
}

/// The group's side: its decryption and signing identity, and its `lxmf.delivery` hash.
struct GroupKeys {
    identity: Signer,
    hash: [u8; 16],
    lxmf: [u8; 16],
}

/// One inbound post as it arrives: the packet's ciphertext, with what the server knows of the sender.
#[derive(Clone)]
struct Inbound {
    ciphertext: Arc<Vec<u8>>,
    sender_key: [u8; 64],
    sender: String,
}

/// What the CPU part of the path yields: the verified message, or nothing.
fn open(keys: &GroupKeys, p: &Inbound) -> Option<crate::wire::lxmf::LxmfMessage> {
    let plaintext = rns_transport::ratchets::decrypt_with_identity(&keys.identity, &keys.hash, &p.ciphertext).ok()?;
    let mut packed = keys.lxmf.to_vec();
    packed.extend_from_slice(&plaintext);
    let msg = unpack(&packed).ok()?;
    msg.signature_valid(&p.sender_key).then_some(msg)
}

/// The delivery proof's signature over the packet hash.
fn prove(keys: &GroupKeys, p: &Inbound) -> u8 {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(p.ciphertext.as_slice());
    keys.identity.sign(&hash).to_bytes()[0]
}

/// `n` posts from `members` members, each encrypted to the group; `round` keeps message ids
/// distinct across rounds.
fn posts(keys: &GroupKeys, group_public: &[u8; 64], members: &[(GroupIdentity, Signer)], n: u32, round: u32) -> Result<Vec<Inbound>, CliError> {
    let mut x = [0u8; 32];
    x.copy_from_slice(&group_public[..32]);
    let target = x25519_dalek::PublicKey::from(x);
    (0..n)
        .map(|i| {
            let (m, s) = &members[i as usize % members.len()];
            let content = format!("post {i} of round {round}: a message of ordinary length, as people write on a mesh");
            let msg = OutgoingMessage {
                destination: keys.lxmf,
                source: m.destination(LXMF_ASPECT),
                timestamp: 1_764_000_000.0 + f64::from(i),
                title: b"",
                content: content.as_bytes(),
                fields: Vec::new(),
                stamp: None,
            };
            let (packed, _) = pack(&msg, s).map_err(|e| CliError::Failure(e.to_string()))?;
            let ciphertext = rns_transport::ratchets::encrypt_for_public_key(&target, &keys.hash, &packed[16..], rand::rngs::OsRng)
                .map_err(|e| CliError::Failure(format!("{e:?}")))?;
            Ok(Inbound { ciphertext: Arc::new(ciphertext), sender_key: m.public_key, sender: hex::encode(m.hash) })
        })
        .collect()
}

/// The real path for one post; returns whether it was stored (and proven). With a journal the
/// packet is journaled first and settled once stored, as the server does.
async fn accept(keys: Arc<GroupKeys>, addr: Addr<GroupActor>, group_id: i64, p: Inbound, journal: Option<Arc<Journal>>) -> bool {
    let entry = match &journal {
        None => None,
        Some(j) => match j.append(keys.lxmf, p.ciphertext.to_vec()).await {
            Ok(id) => Some(id),
            Err(_) => return false,
        },
    };
    let stored = handle(&keys, addr, group_id, p).await;
    if let (Some(j), Some(id)) = (journal, entry) {
        j.settle(id).await;
    }
    stored
}

/// Decrypt, verify, the rules and the commit, then the proof.
async fn handle(keys: &GroupKeys, addr: Addr<GroupActor>, group_id: i64, p: Inbound) -> bool {
    let Some(msg) = open(keys, &p) else { return false };
    let post = NewMessage {
        group_id,
        message_hash: hex::encode(msg.message_id),
        sender_identity_hash: p.sender.clone(),
        sender_display_name: String::new(),
        timestamp: msg.timestamp,
        title: msg.title,
        content: msg.content,
        fields: msg.fields,
        reply_to_id: None,
    };
    match addr.send(crate::actors::group::Post { caller: Caller::Identity(p.sender.clone()), msg: post }).await {
        Ok(Ok(InsertOutcome::Inserted(_))) => {
            std::hint::black_box(prove(keys, &p));
            true
        }
        _ => false,
    }
}

/// Runs a batch through the path, `concurrency` posts in flight; returns how many were stored.
async fn through_path(
    keys: &Arc<GroupKeys>,
    addr: &Addr<GroupActor>,
    group_id: i64,
    batch: Vec<Inbound>,
    journal: Option<Arc<Journal>>,
    concurrency: u32,
) -> u32 {
    let mut set = tokio::task::JoinSet::new();
    let mut stored = 0u32;
    for p in batch {
        if set.len() >= concurrency as usize
            && let Some(r) = set.join_next().await
        {
            stored += u32::from(r.unwrap_or(false));
        }
        set.spawn(accept(keys.clone(), addr.clone(), group_id, p, journal.clone()));
    }
    while let Some(r) = set.join_next().await {
        stored += u32::from(r.unwrap_or(false));
    }
    stored
}

pub async fn inbound(a: InboundArgs) -> Result<Output, CliError> {
    let pg = std::env::var(TEST_DATABASE_URL).ok();
    let mut results = Vec::new();
    for backend in std::iter::once(None).chain(pg.as_deref().map(Some)) {
        let db = fresh(backend).await?;
        let store = db.store.clone();
        let group = create_group(&store, CreateGroup { name: "inbound".into(), ..Default::default() }).await?;
        let gid = GroupIdentity::from_private_key(&group.identity_private_key).map_err(|e| CliError::Failure(e.to_string()))?;
        let keys = Arc::new(GroupKeys {
            identity: signer(&group.identity_private_key).map_err(|e| CliError::Failure(e.to_string()))?,
            hash: gid.hash,
            lxmf: gid.destination(LXMF_ASPECT),
        });
        let mut members = Vec::new();
        for i in 0..a.members {
            let m = GroupIdentity::generate();
            let s = signer(&m.private_key).map_err(|e| CliError::Failure(e.to_string()))?;
            store.add_member(group.id, &hex::encode(m.hash), &format!("m{i}"), 0, "none").await?;
            members.push((m, s));
        }
        let core = GroupCore::load(store.clone(), group.clone()).await?;
        let addr = GroupActor::new(core, None, std::time::Duration::from_secs(3600)).start();

        let (mut path_t, mut floor_t, mut path_cpu, mut journal_t) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let journal = Arc::new(Journal::open(&db.dir().join("journal"), a.posts as usize).map_err(|e| CliError::Failure(e.to_string()))?);
        let mut accepted = 0;
        let syncs_before = journal.syncs();
        for round in 0..a.rounds {
            let batch = posts(&keys, &gid.public_key, &members, a.posts, round)?;
            // The floor: the same crypto on all cores, nothing else.
            let k = keys.clone();
            let t0 = Instant::now();
            let ok = on_all_cores(batch.clone(), move |p| open(&k, &p).map(|_| prove(&k, &p)).is_some()).await;
            floor_t.push(t0.elapsed());
            if ok.iter().any(|x| !x) {
                return Err(CliError::Failure("the floor could not open a post".into()));
            }
            // The path, `concurrency` posts in flight; then the same for new posts, journaled.
            let (c0, t0) = (process_cpu(), Instant::now());
            accepted = through_path(&keys, &addr, group.id, batch, None, a.concurrency).await;
            path_t.push(t0.elapsed());
            path_cpu.push(process_cpu().saturating_sub(c0));
            let direct = posts(&keys, &gid.public_key, &members, a.posts, a.rounds + round)?;
            let t0 = Instant::now();
            let journaled = through_path(&keys, &addr, group.id, direct, Some(journal.clone()), a.concurrency).await;
            journal_t.push(t0.elapsed());
            if accepted != a.posts || journaled != a.posts {
                return Err(CliError::Failure(format!("only {accepted} and {journaled} of {} posts were accepted", a.posts)));
            }
        }
        let (path_s, floor_s, cpu_s) = (median(&mut path_t), median(&mut floor_t), median(&mut path_cpu));
        let journal_s = median(&mut journal_t);
        results.push(json!({
            "backend": store.backend(),
            "posts": a.posts,
            "accepted": accepted,
            "members": a.members,
            "concurrency": a.concurrency,
            "path_s": round3(path_s),
            "floor_s": round3(floor_s),
            "posts_per_s": round2(f64::from(a.posts) / path_s),
            "floor_posts_per_s": round2(f64::from(a.posts) / floor_s),
            "ratio_to_floor": round3(path_s / floor_s),
            "path_cpu_us_per_post": round2(cpu_s / f64::from(a.posts) * 1e6),
            "journaled_posts_per_s": round2(f64::from(a.posts) / journal_s),
            "journal_syncs_per_post": round3((journal.syncs() - syncs_before) as f64 / (f64::from(a.posts) * f64::from(a.rounds))),
            "journaled_ratio_to_path": round3(journal_s / path_s),
        }));
    }
    let rows = results
        .iter()
        .map(|r| {
            vec![
                r["backend"].as_str().unwrap_or_default().to_owned(),
                r["posts"].to_string(),
                r["posts_per_s"].to_string(),
                r["floor_posts_per_s"].to_string(),
                format!("{}x floor", r["ratio_to_floor"]),
                format!("{} ({}x path)", r["journaled_posts_per_s"], r["journaled_ratio_to_path"]),
            ]
        })
        .collect();
    let j = json!({
        "results": results,
        "rounds": a.rounds,
        "cores": cores(),
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
    });
    Ok(Output { json: j, headers: vec!["backend", "posts", "accepted/s (path)", "posts/s (floor)", "ratio", "journaled/s"], rows })
}
