//! The fan-out actor, shared by all groups: turns posts and notices into one outbox row per member,
//! then delivers them, paced, with retries, surviving restarts.
//!
//! The actor only schedules (one batched transaction per job). Delivery runs in a task: it takes
//! due rows round-robin across groups, builds, signs and encrypts them on the blocking pool in
//! parallel batches, hands them to the node, and marks each row delivered when the member's proof
//! arrives. A row sent but never confirmed becomes due again, so a crash resends it; the resent
//! message is byte-identical in its id, and LXMF clients drop a message id they already have.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use rmpv::Value;
use tokio::sync::{Notify, Semaphore, mpsc};

use tokio_util::sync::CancellationToken;

use crate::config::FanoutConfig;
use crate::domain::{DeliveryClass, NotifyMode};
use crate::group::{FanoutJob, audience_members, notice_audience};
use crate::lifecycle::Lifecycle;
use crate::lxmf::courier::Courier;
use crate::lxmf::outbound::{Body, OutboundError, Outgoing, Recipient, attribution, pack_for, prepare_any};
use crate::pacing::TokenBucket;
use crate::store::{Copy, FannedOut, Group, NewOutboxRow, OutboxRow, Store, StoreError, now_ms};
use crate::wire::identity::parse_hash;

/// How often the delivery task looks for posts and notices whose hand-off never happened.
const RECOVERY_EVERY: Duration = Duration::from_secs(30);

/// The shared fan-out actor.
pub struct FanoutActor {
    store: Store,
    wake: Arc<Notify>,
    life: Lifecycle,
    /// Groups whose cached keys and name the delivery task must drop.
    changed: mpsc::Sender<i64>,
    /// Set when the queue of changes was full: the delivery task drops its whole cache.
    changed_all: Arc<std::sync::atomic::AtomicBool>,
    /// Members whose path just arrived: the delivery task sends what waits for them now.
    reachable: mpsc::Sender<[u8; 16]>,
}

/// What the actor tells the delivery task between rounds; a restarted task takes over the same.
struct Signals {
    changes: mpsc::Receiver<i64>,
    reachable: mpsc::Receiver<[u8; 16]>,
}

/// Groups changed at once at most before the delivery task drops its whole cache instead.
const CHANGED_QUEUE: usize = 1024;

/// Members reachable again at once at most; one beyond it waits for its next look (seconds).
const REACHABLE_QUEUE: usize = 1024;

/// Copies too large for a packet (a link and a Resource each) in transfer at once. Each holds its
/// packed message and the transport's compressed and encrypted copies of it until the member
/// proves it, so this, not the group's size, bounds the memory a large post takes.
const DIRECT_AT_ONCE: usize = 4;

/// How long a copy whose proof has not come holds its place in the window
/// (`fanout.window`): long enough for a busy node to answer, short enough that members who are
/// away (whose proofs never come) do not stall the copies behind them.
const WINDOW_HOLD: Duration = Duration::from_secs(2);
/// Places taken from the window at once at most when it has room.
const WINDOW_REFILL: usize = 64;

impl FanoutActor {
    /// Starts the actor and its delivery task; first repairs fan-outs a crash left unscheduled.
    /// The delivery task stops at shutdown; the confirmer writes the last proofs, then stops.
    pub fn start(store: Store, courier: Arc<Courier>, cfg: FanoutConfig, life: &Lifecycle) -> Addr<FanoutActor> {
        let wake = Arc::new(Notify::new());
        let (confirmed, rx) = mpsc::channel(CONFIRM_QUEUE);
        life.spawn(confirmer(store.clone(), rx));
        let (changed, changes) = mpsc::channel(CHANGED_QUEUE);
        let (reachable, arrivals) = mpsc::channel(REACHABLE_QUEUE);
        let changed_all = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // A restarted delivery task takes over the same queues.
        let signals = Arc::new(tokio::sync::Mutex::new(Signals { changes, reachable: arrivals }));
        let (st, w, l, all) = (store.clone(), wake.clone(), life.clone(), changed_all.clone());
        let direct = Arc::new(Semaphore::new(DIRECT_AT_ONCE));
        let window = (cfg.window > 0).then(|| Arc::new(Semaphore::new(cfg.window as usize)));
        life.supervise("delivery", move |token| {
            let signals = signals.clone();
            let delivery = Delivery {
                store: st.clone(),
                confirmed: confirmed.clone(),
                courier: courier.clone(),
                cfg: cfg.clone(),
                wake: w.clone(),
                groups: HashMap::new(),
                life: l.clone(),
                changed_all: all.clone(),
                direct: direct.clone(),
                window: window.clone(),
            };
            async move {
                if let Err(err) = recover(&delivery.store).await {
                    tracing::error!(%err, "fan-out recovery failed");
                }
                delivery.run(token, &mut *signals.lock().await).await;
            }
        });
        FanoutActor { store, wake, life: life.clone(), changed, changed_all, reachable }.start()
    }
}

impl Actor for FanoutActor {
    type Context = Context<Self>;
}

/// Schedules one post or notice for its recipients.
#[derive(Message)]
#[rtype(result = "Result<u64, StoreError>")]
pub struct Enqueue(pub FanoutJob);

impl Handler<Enqueue> for FanoutActor {
    type Result = ResponseFuture<Result<u64, StoreError>>;

    fn handle(&mut self, msg: Enqueue, _ctx: &mut Self::Context) -> Self::Result {
        let (store, wake) = (self.store.clone(), self.wake.clone());
        // Tracked: shutdown waits for a schedule in progress instead of dropping it mid-query.
        Box::pin(self.life.track(async move {
            let (group, message, event) = (msg.0.group_id, msg.0.message_id, msg.0.event_id);
            let n = schedule(&store, msg.0).await.inspect_err(|err| {
                tracing::warn!(%err, group, ?message, ?event, "cannot schedule a fan-out; recovery retries it");
            })?;
            wake.notify_one();
            Ok(n)
        }))
    }
}

/// A group was renamed or its keys changed: what the delivery task cached of it is stale.
#[derive(Message)]
#[rtype(result = "()")]
pub struct GroupChanged(pub i64);

impl Handler<GroupChanged> for FanoutActor {
    type Result = ();

    fn handle(&mut self, msg: GroupChanged, _ctx: &mut Self::Context) {
        // A full queue means many changes at once: the task then drops everything.
        if self.changed.try_send(msg.0).is_err() {
            self.changed_all.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        self.wake.notify_one();
    }
}

/// A member's path just arrived (the answer to our path request): what waits for them goes now,
/// not at its next look.
#[derive(Message)]
#[rtype(result = "()")]
pub struct MemberReachable(pub [u8; 16]);

impl Handler<MemberReachable> for FanoutActor {
    type Result = ();

    fn handle(&mut self, msg: MemberReachable, _ctx: &mut Self::Context) {
        // Full: the copy is looked at again within seconds anyway.
        if self.reachable.try_send(msg.0).is_ok() {
            self.wake.notify_one();
        }
    }
}

/// Writes a job's outbox rows (members in mode `none` left out) in one transaction; idempotent.
pub async fn schedule(store: &Store, job: FanoutJob) -> Result<u64, StoreError> {
    let (kind, item) = match (job.reaction_id, job.message_id, job.event_id) {
        (Some(r), _, _) => ("reaction", FannedOut::Reaction(r)),
        (None, Some(m), _) => ("message", FannedOut::Message(m)),
        (None, None, Some(e)) => ("notice", FannedOut::Event(e)),
        (None, None, None) => ("notice", FannedOut::Nothing),
    };
    let rows = job
        .recipients
        .into_iter()
        .filter(|(_, mode)| *mode != NotifyMode::None)
        .map(|(member, mode)| NewOutboxRow {
            group_id: job.group_id,
            member_identity_hash: member,
            kind,
            message_id: job.message_id,
            event_id: job.event_id,
            reaction_id: job.reaction_id,
            mode: if mode == NotifyMode::Short { "short" } else { "full" },
            class: job.class,
        })
        .collect();
    store.schedule_fanout(rows, item).await
}

/// Re-schedules posts and notices that were stored but never scheduled: a crash between the
/// commit and the hand-off, or a hand-off that failed. Runs at start-up and then periodically;
/// scheduling is idempotent, so an item handed off meanwhile is not scheduled twice.
async fn recover(store: &Store) -> Result<(), StoreError> {
    loop {
        let (messages, events) = store.unfanned(200).await?;
        let reactions = store.unfanned_reactions(200).await?;
        if messages.is_empty() && events.is_empty() && reactions.is_empty() {
            return Ok(());
        }
        for m in messages {
            let members = store.all_members(m.group_id).await?;
            let recipients = members
                .into_iter()
                .filter(|x| x.identity_hash != m.sender_identity_hash)
                .map(|x| (x.identity_hash, NotifyMode::parse(&x.notify_mode).unwrap_or(NotifyMode::Full)))
                .collect();
            tracing::info!(message = m.id, "scheduling a fan-out interrupted by a restart");
            let job = FanoutJob { group_id: m.group_id, message_id: Some(m.id), event_id: None, reaction_id: None, class: DeliveryClass::Post, recipients };
            schedule(store, job).await?;
        }
        for r in &reactions {
            let members = store.all_members(r.group_id).await?;
            let recipients = members
                .into_iter()
                .filter(|x| x.identity_hash != r.member_identity_hash && NotifyMode::parse(&x.notify_mode).unwrap_or(NotifyMode::Full) == NotifyMode::Full)
                .map(|x| (x.identity_hash, NotifyMode::Full))
                .collect();
            let job = FanoutJob {
                group_id: r.group_id,
                message_id: Some(r.message_id),
                event_id: None,
                reaction_id: Some(r.id),
                class: DeliveryClass::Direct,
                recipients,
            };
            schedule(store, job).await?;
        }
        for e in events {
            let (recipients, class) = match notice_audience(&e.kind, &e.detail) {
                Some((audience, class)) => {
                    let members = store.all_members(e.group_id).await?;
                    let founder = store.group_by_id(e.group_id).await.ok().and_then(|g| g.founder_identity_hash);
                    (audience_members(audience, &e.subject, founder.as_deref(), members.iter()), class)
                }
                None => (Vec::new(), DeliveryClass::Direct),
            };
            schedule(store, FanoutJob { group_id: e.group_id, message_id: None, event_id: Some(e.id), reaction_id: None, class, recipients }).await?;
        }
    }
}

/// What the delivery task caches per group.
struct GroupKeys {
    /// Built once per group: deriving the signing identity costs about as much as a signature.
    signer: crate::wire::lxmf::Signer,
    lxmf_dest: [u8; 16],
    name: String,
}

struct Delivery {
    store: Store,
    /// Rows whose proofs arrived, for the confirmer.
    confirmed: mpsc::Sender<Confirmed>,
    courier: Arc<Courier>,
    cfg: FanoutConfig,
    wake: Arc<Notify>,
    groups: HashMap<i64, Arc<GroupKeys>>,
    /// Proof waits and deposits are work that shutdown waits for.
    life: Lifecycle,
    /// Set when more groups changed than the queue holds: drop the whole cache.
    changed_all: Arc<std::sync::atomic::AtomicBool>,
    /// Places for direct (link and Resource) copies in transfer; see [`DIRECT_AT_ONCE`].
    direct: Arc<Semaphore>,
    /// Places for copies sent as packets whose proof has not come yet (`fanout.window`; none
    /// when 0); each is held until the proof or for [`WINDOW_HOLD`].
    window: Option<Arc<Semaphore>>,
}

/// What one scheduling round looks up once, however many of its rows need it: a post's row,
/// the display names, and each body (a post to 10,000 members reads its message once and holds
/// one plaintext, not 10,000).
#[derive(Default)]
struct BatchCache {
    names: HashMap<(i64, String), String>,
    messages: HashMap<i64, Arc<crate::store::Message>>,
    /// The members with a row in this round, whose copies of a reply's or reaction's target are
    /// looked up together, once per target.
    members: Vec<String>,
    copies: HashMap<i64, Arc<HashMap<String, Copy>>>,
    /// Per group, the round's members who are text-only; read once, when a post has attachments.
    text_only: HashMap<i64, Arc<HashSet<String>>>,
    /// By (message, event, short mode): the bodies every member gets alike (not reactions, nor
    /// full copies of replies or of posts with attachments, which differ per member).
    bodies: HashMap<(Option<i64>, Option<i64>, bool), Arc<Body>>,
}

/// The hash a recipient knows a message by: their own copy's, or the original's for its author
/// and for members who never had a copy. `None` while their copy is owed but not built: a copy
/// that names it waits, or it would name a message the member does not hold yet.
fn known_as(target: &crate::store::Message, member: &str, copies: &HashMap<String, Copy>) -> Option<Vec<u8>> {
    let original = || hex::decode(&target.message_hash).unwrap_or_default();
    if target.sender_identity_hash == member {
        return Some(original());
    }
    match copies.get(member) {
        Some(Copy::Built(hash)) => Some(hash.clone()),
        Some(Copy::Queued) => None,
        None => Some(original()),
    }
}

/// One row ready for the crypto pool.
struct Job {
    row: OutboxRow,
    keys: Arc<GroupKeys>,
    to: Recipient,
    body: Arc<Body>,
}

impl Delivery {
    /// Delivers due rows until `stop` is cancelled. A round that shutdown interrupts sends
    /// nothing more; its copies not yet handed to the node go back to the outbox, due at once.
    async fn run(mut self, stop: CancellationToken, signals: &mut Signals) {
        let mut bucket = (self.cfg.rate_per_sec > 0.0).then(|| TokenBucket::new(self.cfg.rate_per_sec, self.cfg.burst));
        let mut last_recovery = Instant::now();
        while !stop.is_cancelled() {
            while let Ok(group) = signals.changes.try_recv() {
                self.groups.remove(&group);
            }
            let mut reachable = Vec::new();
            while let Ok(member) = signals.reachable.try_recv() {
                reachable.push(hex::encode(member));
            }
            match self.store.outbox_due_now(&reachable, now_ms()).await {
                Ok(0) => {}
                Ok(n) => {
                    crate::metrics::copies_woken(n);
                    tracing::debug!(members = reachable.len(), rows = n, "paths arrived; their copies go now");
                }
                // They go at their next look instead.
                Err(err) => tracing::debug!(%err, "cannot make the copies of reachable members due"),
            }
            if self.changed_all.swap(false, std::sync::atomic::Ordering::Relaxed) {
                self.groups.clear();
            }
            if last_recovery.elapsed() >= RECOVERY_EVERY {
                last_recovery = Instant::now();
                if let Err(err) = recover(&self.store).await {
                    tracing::warn!(%err, "fan-out recovery failed; trying again later");
                }
            }
            let rows = match self.store.due_outbox(now_ms(), self.cfg.batch).await {
                Ok(r) => r,
                Err(err) => {
                    tracing::warn!(%err, "cannot read the outbox");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if rows.is_empty() {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
            let jobs = self.jobs(rows).await;
            let started = Instant::now();
            let prepared = prepare_all(jobs).await;
            crate::metrics::fanout_prepare(started.elapsed());
            self.record_copies(&prepared).await;
            self.mark_packets_sent(&prepared).await;
            // Copies that take no place in the window go first, so they never wait behind a full
            // one; a member with a copy that does keeps all of theirs in order, after.
            let windowed = self.window.is_some();
            let prepared =
                no_wait_first(prepared, |(job, _)| job.row.member_identity_hash.as_str(), |(job, result)| windowed && self.goes_as_packet(job, result));
            let mut round = prepared.into_iter();
            // Places taken from the window at once and not used yet; they go back with the round.
            let mut spare: Option<tokio::sync::OwnedSemaphorePermit> = None;
            for (job, result) in round.by_ref() {
                if let Some(b) = bucket.as_mut() {
                    let paced = tokio::select! {
                        paced = b.take() => paced,
                        _ = stop.cancelled() => {
                            self.unsend(std::iter::once((job, result))).await;
                            break;
                        }
                    };
                    if paced {
                        crate::metrics::pacing_wait();
                    }
                }
                if stop.is_cancelled() {
                    self.unsend(std::iter::once((job, result))).await;
                    break;
                }
                let place = match &self.window {
                    Some(w) if self.goes_as_packet(&job, &result) => match spare.as_mut().and_then(|p| p.split(1)) {
                        Some(place) => Some(place),
                        None => {
                            // A full window waits until an eighth of it is free, then sends that
                            // many: one wake-up per batch of proofs, not one per proof.
                            let free = w.available_permits();
                            if free == 0 {
                                crate::metrics::window_wait();
                            }
                            let want = if free == 0 { (self.cfg.window / 8).max(1) } else { free.min(WINDOW_REFILL) as u32 };
                            spare = tokio::select! {
                                p = w.clone().acquire_many_owned(want) => p.ok(),
                                _ = stop.cancelled() => {
                                    self.unsend(std::iter::once((job, result))).await;
                                    break;
                                }
                            };
                            spare.as_mut().and_then(|p| p.split(1))
                        }
                    },
                    _ => None,
                };
                self.send(job, result, place).await;
            }
            self.unsend(round).await;
        }
    }

    /// Puts copies that were marked sent but never handed to the node back in the outbox as
    /// they were before the round, due at once.
    async fn unsend(&self, rest: impl Iterator<Item = (Job, Result<Outgoing, OutboundError>)>) {
        let rows: Vec<(i32, i64)> = rest.filter(|(job, result)| self.goes_as_packet(job, result)).map(|(job, _)| (job.row.attempts, job.row.id)).collect();
        back_to_outbox(&self.store, rows, "copies not sent").await;
    }

    /// Whether a prepared copy goes as one packet (and so was marked sent before the round).
    fn goes_as_packet(&self, job: &Job, result: &Result<Outgoing, OutboundError>) -> bool {
        matches!(result, Ok(Outgoing::Packet(_))) && !self.to_propagation(&job.row)
    }

    async fn keys(&mut self, group_id: i64) -> Result<Arc<GroupKeys>, StoreError> {
        if let Some(k) = self.groups.get(&group_id) {
            return Ok(k.clone());
        }
        let g: Group = self.store.group_by_id(group_id).await?;
        let signer = crate::wire::lxmf::signer(&g.identity_private_key).map_err(|_| StoreError::NotFound { what: "group key" })?;
        let keys = Arc::new(GroupKeys {
            signer,
            lxmf_dest: parse_hash(&g.lxmf_dest_hash).unwrap_or([0; 16]),
            name: g.private_name.clone().unwrap_or(g.public_name.clone()),
        });
        self.groups.insert(group_id, keys.clone());
        Ok(keys)
    }

    /// Resolves recipients and builds bodies; rows that cannot go now are rescheduled.
    async fn jobs(&mut self, rows: Vec<OutboxRow>) -> Vec<Job> {
        let mut out = Vec::with_capacity(rows.len());
        // A member whose earlier row waits also waits with the later ones: order per member holds.
        let mut held: HashSet<String> = HashSet::new();
        let members = rows.iter().map(|r| r.member_identity_hash.clone()).collect::<HashSet<_>>().into_iter().collect();
        let mut cache = BatchCache { members, ..Default::default() };
        let now = now_ms();
        for row in rows {
            if held.contains(&row.member_identity_hash) {
                continue;
            }
            if now - row.created_at > (self.cfg.expire_after_secs as i64) * 1000 {
                self.finish(&row, "expired", row.attempts, Some("expired".into())).await;
                crate::metrics::delivery(&row.mode, "opportunistic", "expired", row.group_id);
                continue;
            }
            let Some(member) = parse_hash(&row.member_identity_hash) else {
                self.finish(&row, "expired", row.attempts, Some("bad identity hash".into())).await;
                continue;
            };
            let keys = match self.keys(row.group_id).await {
                Ok(k) => k,
                Err(_) => {
                    // The group is gone (its rows go with it); nothing to send.
                    continue;
                }
            };
            // Just after start-up, a member not heard from yet waits for the path asked for it,
            // its attempts untouched, instead of a copy going out blind.
            let to = if self.courier.awaiting_path(member).await { None } else { self.courier.recipient(member, row.attempts > 0).await };
            let Some(to) = to else {
                held.insert(row.member_identity_hash.clone());
                let wait = i64::try_from(self.courier.recheck_after(member).as_millis()).unwrap_or(i64::MAX);
                self.retry(&row, row.attempts, wait, "path unknown").await;
                crate::metrics::delivery(&row.mode, "opportunistic", "no_path", row.group_id);
                continue;
            };
            match self.body(&row, &keys, &mut cache).await {
                Ok(Some(body)) => out.push(Job { row, keys, to, body }),
                Ok(None) => {
                    // It names a copy this member is owed but was not built yet (often in this
                    // very round): it goes once that copy has its hash, and so do their later rows.
                    held.insert(row.member_identity_hash.clone());
                    let wait = 2_000 + rand::random::<u64>() % 3_000;
                    self.retry(&row, row.attempts, wait as i64, "waiting for the copy it names").await;
                }
                Err(err) => {
                    tracing::debug!(%err, row = row.id, "nothing to deliver");
                    self.finish(&row, "expired", row.attempts, Some(err.to_string())).await;
                }
            }
        }
        out
    }

    async fn display_name(&self, group_id: i64, who: &str, names: &mut HashMap<(i64, String), String>) -> String {
        let key = (group_id, who.to_owned());
        if let Some(n) = names.get(&key) {
            return n.clone();
        }
        let name = match self.store.member(group_id, who).await {
            Ok(Some(m)) if !m.display_name.is_empty() => m.display_name,
            _ => who.get(..8).unwrap_or(who).to_owned(),
        };
        names.insert(key, name.clone());
        name
    }

    /// A message of the round, read once however many rows need it.
    async fn cached_message(&self, group_id: i64, id: i64, cache: &mut BatchCache) -> Result<Arc<crate::store::Message>, StoreError> {
        if let Some(m) = cache.messages.get(&id) {
            return Ok(m.clone());
        }
        let m = Arc::new(self.store.message(group_id, id).await?);
        cache.messages.insert(id, m.clone());
        Ok(m)
    }

    /// The round's members' copies of a target message, read once per round.
    async fn copies(&self, target: i64, cache: &mut BatchCache) -> Result<Arc<HashMap<String, Copy>>, StoreError> {
        if let Some(c) = cache.copies.get(&target) {
            return Ok(c.clone());
        }
        let c = Arc::new(self.store.copies_of(target, &cache.members).await?);
        cache.copies.insert(target, c.clone());
        Ok(c)
    }

    /// The round's members of a group who are text-only.
    async fn text_only(&self, group_id: i64, cache: &mut BatchCache) -> Result<Arc<HashSet<String>>, StoreError> {
        if let Some(t) = cache.text_only.get(&group_id) {
            return Ok(t.clone());
        }
        let t = Arc::new(self.store.text_only_members(group_id, &cache.members).await?);
        cache.text_only.insert(group_id, t.clone());
        Ok(t)
    }

    /// A reaction to one member, as LXMF's `FIELD_REACTION` naming their own copy of the message;
    /// `None` while that copy waits to be built. A removed reaction, or one to a deleted
    /// message, is not sent.
    async fn reaction_body(&self, row: &OutboxRow, reaction_id: i64, cache: &mut BatchCache) -> Result<Option<Body>, StoreError> {
        let r = self.store.reaction(reaction_id).await?;
        let target = self.cached_message(row.group_id, r.message_id, cache).await?;
        if target.deleted_at.is_some() {
            return Err(StoreError::NotFound { what: "message (deleted)" });
        }
        let copies = self.copies(target.id, cache).await?;
        let Some(known) = known_as(&target, &row.member_identity_hash, &copies) else { return Ok(None) };
        let name = self.display_name(row.group_id, &r.member_identity_hash, &mut cache.names).await;
        let reactor = hex::decode(&r.member_identity_hash).unwrap_or_default();
        let mut fields = vec![crate::wire::lxmf::reaction_value(&known, &r.emoji)];
        fields.extend(attribution(&reactor, &name, &known, target.id, "reaction"));
        Ok(Some(Body { timestamp: r.created_at as f64 / 1000.0, title: Vec::new(), content: r.emoji.into_bytes(), fields }))
    }

    /// A full copy's fields: the sender's, with `FIELD_REPLY_TO` naming the recipient's own copy
    /// of the message answered. `None` while that copy waits to be built.
    async fn copy_fields(&self, row: &OutboxRow, m: &crate::store::Message, cache: &mut BatchCache) -> Result<Option<Vec<(Value, Value)>>, StoreError> {
        let mut fields = relayed_fields(&m.fields);
        let Some(target_id) = m.reply_to_id else { return Ok(Some(fields)) };
        let target = match self.cached_message(row.group_id, target_id, cache).await {
            Ok(t) => t,
            // The target's row is gone: the reply goes as the sender wrote it.
            Err(StoreError::NotFound { .. }) => return Ok(Some(fields)),
            Err(e) => return Err(e),
        };
        let copies = self.copies(target_id, cache).await?;
        let Some(known) = known_as(&target, &row.member_identity_hash, &copies) else { return Ok(None) };
        for (k, v) in fields.iter_mut() {
            if k.as_u64() == Some(crate::wire::lxmf::FIELD_REPLY_TO) {
                *v = Value::Binary(known.clone());
            }
        }
        Ok(Some(fields))
    }

    /// The body of a row's copy, shared by every row of the round with the same one where it is
    /// alike for every member; `None` when it must wait for the copy it names.
    async fn body(&self, row: &OutboxRow, keys: &GroupKeys, cache: &mut BatchCache) -> Result<Option<Arc<Body>>, StoreError> {
        if let Some(rid) = row.reaction_id {
            return Ok(self.reaction_body(row, rid, cache).await?.map(Arc::new));
        }
        let key = (row.message_id, row.event_id, row.mode == "short");
        if let Some(b) = cache.bodies.get(&key) {
            return Ok(Some(b.clone()));
        }
        let Some((body, alike)) = self.build_body(row, keys, cache).await? else { return Ok(None) };
        let body = Arc::new(body);
        if alike {
            cache.bodies.insert(key, body.clone());
        }
        Ok(Some(body))
    }

    /// A post's or notice's body, and whether every member of the round gets it alike.
    async fn build_body(&self, row: &OutboxRow, keys: &GroupKeys, cache: &mut BatchCache) -> Result<Option<(Body, bool)>, StoreError> {
        if let Some(mid) = row.message_id {
            let m = self.cached_message(row.group_id, mid, cache).await?;
            let names = &mut cache.names;
            // The name the message was posted under; the lookup only serves rows from before it was kept.
            if !m.sender_display_name.is_empty() {
                names.insert((row.group_id, m.sender_identity_hash.clone()), m.sender_display_name.clone());
            }
            if m.deleted_at.is_some() {
                return Err(StoreError::NotFound { what: "message (deleted)" });
            }
            let name = self.display_name(row.group_id, &m.sender_identity_hash, names).await;
            let sender = hex::decode(&m.sender_identity_hash).unwrap_or_default();
            let hash = hex::decode(&m.message_hash).unwrap_or_default();
            let timestamp = m.received_at as f64 / 1000.0;
            if row.mode == "short" {
                let body = Body {
                    timestamp,
                    title: Vec::new(),
                    content: short_line(&keys.name, &name, &m.content, m.id).into_bytes(),
                    fields: attribution(&sender, &name, &hash, m.id, "short"),
                };
                return Ok(Some((body, true)));
            }
            let mut content = format!("{name}: ").into_bytes();
            content.extend_from_slice(&m.content);
            let Some(mut fields) = self.copy_fields(row, &m, cache).await? else { return Ok(None) };
            let (kinds, size) = crate::wire::lxmf::attachment_size(&fields);
            if kinds != 0 && self.text_only(row.group_id, cache).await?.contains(&row.member_identity_hash) {
                fields.retain(|(k, _)| k.as_u64().and_then(crate::wire::lxmf::attachment_kind).is_none());
                let line = format!(
                    "\n[{} ({}) left out: text-only. Fetch with /api/v1/messages/attachment, id {}]",
                    crate::group::kind_names(kinds),
                    crate::group::human_bytes(size as u64),
                    m.id
                );
                content.extend_from_slice(line.as_bytes());
            }
            fields.extend(attribution(&sender, &name, &hash, m.id, "message"));
            // A reply names each member's own copy; attachments are left out for the text-only.
            let alike = m.reply_to_id.is_none() && kinds == 0;
            Ok(Some((Body { timestamp, title: m.title.clone(), content, fields }, alike)))
        } else if let Some(eid) = row.event_id {
            let names = &mut cache.names;
            let e = self.store.event(eid).await?;
            let actor = self.display_name(row.group_id, &e.actor, names).await;
            let subject = self.display_name(row.group_id, &e.subject, names).await;
            let text = notice_text(&e.kind, &actor, &e.detail);
            let subject_bytes = hex::decode(&e.subject).unwrap_or_default();
            let body = Body {
                timestamp: e.created_at as f64 / 1000.0,
                title: Vec::new(),
                content: format!("[{}] {text}", keys.name).into_bytes(),
                fields: attribution(&subject_bytes, &subject, &[], e.id, &e.kind),
            };
            Ok(Some((body, true)))
        } else {
            Err(StoreError::NotFound { what: "message or event" })
        }
    }

    /// How long a row sent on its `attempts`-th attempt waits for its proof before it is due again.
    fn proof_wait_ms(&self, attempts: i32) -> i64 {
        (self.cfg.proof_timeout_secs as i64) * 1000 + backoff_ms(attempts, self.cfg.retry_cap_secs)
    }

    /// Whether a row has failed often enough to go to the propagation node instead.
    fn to_propagation(&self, row: &OutboxRow) -> bool {
        row.attempts >= self.cfg.max_attempts && self.courier.propagation.target().is_some()
    }

    /// Records the LXMF hash of every post copy built in this round that has none yet, before
    /// any goes out, so a reply or reaction to a copy resolves, after a restart too. The same
    /// copy always has the same hash, so a resend needs no new record.
    async fn record_copies(&self, prepared: &[(Job, Result<Outgoing, OutboundError>)]) {
        let copies: Vec<(i64, [u8; 32])> = prepared
            .iter()
            .filter(|(job, _)| job.row.kind == "message" && job.row.copy_hash.is_none())
            .filter_map(|(job, result)| match result {
                Ok(Outgoing::Packet(p)) => Some((job.row.id, p.message_id)),
                Ok(Outgoing::Direct { message_id, .. }) => Some((job.row.id, *message_id)),
                Err(_) => None,
            })
            .collect();
        if let Err(err) = self.store.record_copies(&copies).await {
            // The copies still go; replies to them then reach the others unthreaded.
            tracing::warn!(%err, rows = copies.len(), "cannot record copy hashes");
        }
    }

    /// Marks every copy of the round that goes as a packet sent, in one write per attempt count,
    /// before the first goes out (one statement, not one per member; a fast proof then cannot be
    /// overwritten by its own mark).
    async fn mark_packets_sent(&self, prepared: &[(Job, Result<Outgoing, OutboundError>)]) {
        let mut by_attempts: HashMap<i32, Vec<i64>> = HashMap::new();
        for (job, result) in prepared {
            if self.goes_as_packet(job, result) {
                by_attempts.entry(job.row.attempts + 1).or_default().push(job.row.id);
            }
        }
        for (attempts, ids) in by_attempts {
            if let Err(err) = self.store.mark_outbox(&ids, "sent", attempts, now_ms() + self.proof_wait_ms(attempts)).await {
                tracing::warn!(%err, rows = ids.len(), "cannot record sends");
            }
        }
    }

    /// Sends one copy; `place` is its place in the window, if it goes as a packet.
    async fn send(&self, job: Job, prepared: Result<Outgoing, OutboundError>, place: Option<tokio::sync::OwnedSemaphorePermit>) {
        let Job { row, keys, to, body } = job;
        let attempts = row.attempts + 1;
        let wait = self.proof_wait_ms(attempts);
        if self.to_propagation(&row) {
            // Unreachable for long enough: leave the copy on the propagation node for the member.
            self.mark_sent(&row, attempts, wait.max(300_000)).await;
            let (store, courier) = (self.store.clone(), self.courier.clone());
            self.life.spawn(async move {
                let result = match pack_for(&keys.signer, keys.lxmf_dest, &to, &body) {
                    Ok((packed, _)) => courier.propagation.deposit(&to, &packed).await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match result {
                    Ok(()) => {
                        if let Err(err) = store.update_outbox(row.id, "propagated", attempts, now_ms(), None).await {
                            tracing::warn!(%err, "cannot mark a deposit");
                        }
                        crate::metrics::delivery(&row.mode, "propagated", "propagated", row.group_id);
                    }
                    Err(err) => {
                        // Often the node's path is not known yet: try again soon, not in minutes.
                        tracing::info!(%err, row = row.id, "propagation deposit failed");
                        crate::metrics::delivery(&row.mode, "propagated", "failed", row.group_id);
                        let soon = now_ms() + 5_000 + (rand::random::<u64>() % 5_000) as i64;
                        if let Err(err) = store.update_outbox(row.id, "pending", attempts, soon, Some(err)).await {
                            tracing::warn!(%err, "cannot reschedule a deposit");
                        }
                    }
                }
            });
            return;
        }
        match prepared {
            Err(err) => {
                tracing::warn!(%err, row = row.id, "cannot build the message");
                self.finish(&row, "expired", attempts, Some(err.to_string())).await;
                crate::metrics::delivery(&row.mode, "opportunistic", "failed", row.group_id);
            }
            Ok(Outgoing::Packet(p)) => match self.courier.send(&p).await {
                Ok((hash, proof)) => {
                    let (confirmed, courier, timeout) = (self.confirmed.clone(), self.courier.clone(), Duration::from_secs(self.cfg.proof_timeout_secs));
                    let stop = self.life.token();
                    self.life.spawn(async move {
                        // The place in the window goes back with the proof, or after
                        // WINDOW_HOLD if the proof is slow; the wait for the proof goes on.
                        let mut place = place;
                        let hold = tokio::time::sleep(WINDOW_HOLD);
                        let wait = tokio::time::timeout(timeout, proof);
                        tokio::pin!(hold, wait);
                        // Shutdown does not wait out the proof timeout: an unproven row goes back
                        // to the outbox, due at once after the restart instead of after its proof
                        // wait. The copy is byte-identical, so a member who got it drops the
                        // second one by its message id.
                        let proven = loop {
                            tokio::select! {
                                p = &mut wait => break matches!(p, Ok(Ok(()))),
                                _ = &mut hold, if place.is_some() => place = None,
                                _ = stop.cancelled() => {
                                    courier.forget(&hash);
                                    report(&confirmed, Confirmed { row, method: "opportunistic", delivered: false }).await;
                                    return;
                                }
                            }
                        };
                        drop(place);
                        if !proven {
                            courier.forget(&hash);
                        }
                        confirm(&confirmed, row, "opportunistic", proven).await;
                    });
                }
                Err(err) => {
                    tracing::debug!(%err, row = row.id, "send failed");
                    self.retry(&row, attempts, backoff_ms(attempts, self.cfg.retry_cap_secs), &err.to_string()).await;
                    crate::metrics::delivery(&row.mode, "opportunistic", "failed", row.group_id);
                }
            },
            Ok(Outgoing::Direct { lxmf_dest, .. }) => {
                // A link plus a Resource takes round trips: it runs on its own, the row waits as
                // sent. The message is packed again once a place is free (see `prepare_all`).
                self.mark_sent(&row, attempts, wait.max(180_000)).await;
                let (confirmed, courier, direct) = (self.confirmed.clone(), self.courier.clone(), self.direct.clone());
                self.life.spawn(async move {
                    let key = to.public_key;
                    let result = match direct.acquire_owned().await {
                        Ok(_place) => match tokio::task::spawn_blocking(move || pack_for(&keys.signer, keys.lxmf_dest, &to, &body)).await {
                            Ok(Ok((packed, _))) => courier.send_direct(lxmf_dest, key, packed).await.map_err(|e| e.to_string()),
                            Ok(Err(e)) => Err(e.to_string()),
                            Err(e) => Err(e.to_string()),
                        },
                        Err(e) => Err(e.to_string()),
                    };
                    if let Err(err) = &result {
                        tracing::debug!(%err, row = row.id, "direct delivery failed");
                    }
                    confirm(&confirmed, row, "direct", result.is_ok()).await;
                });
            }
        }
    }

    async fn mark_sent(&self, row: &OutboxRow, attempts: i32, wait_ms: i64) {
        if let Err(err) = self.store.update_outbox(row.id, "sent", attempts, now_ms() + wait_ms, None).await {
            tracing::warn!(%err, "cannot record a send");
        }
    }

    async fn retry(&self, row: &OutboxRow, attempts: i32, wait_ms: i64, why: &str) {
        if let Err(err) = self.store.update_outbox(row.id, "pending", attempts, now_ms() + wait_ms, Some(why.to_owned())).await {
            tracing::warn!(%err, "cannot reschedule a delivery");
        }
    }

    async fn finish(&self, row: &OutboxRow, state: &str, attempts: i32, why: Option<String>) {
        if let Err(err) = self.store.update_outbox(row.id, state, attempts, now_ms(), why).await {
            tracing::warn!(%err, "cannot close a delivery");
        }
    }
}

/// A row whose proof came (`delivered`), or whose wait shutdown cut short, on its way to the one
/// write that records a batch of them.
struct Confirmed {
    row: OutboxRow,
    method: &'static str,
    delivered: bool,
}

/// Proofs waiting for their write at most; a full queue makes the proof waiters wait.
const CONFIRM_QUEUE: usize = 4096;
/// Rows marked delivered in one statement at most.
const CONFIRM_BATCH: usize = 512;
/// How long the confirmer gathers proofs before it writes them.
const CONFIRM_GATHER: Duration = Duration::from_millis(50);

/// Records a row's outcome: a proven row goes to the confirmer; an unproven one stays sent and
/// becomes due again.
async fn confirm(confirmed: &mpsc::Sender<Confirmed>, row: OutboxRow, method: &'static str, proven: bool) {
    if !proven {
        crate::metrics::delivery(&row.mode, method, "timeout", row.group_id);
        return;
    }
    report(confirmed, Confirmed { row, method, delivered: true }).await;
}

async fn report(confirmed: &mpsc::Sender<Confirmed>, c: Confirmed) {
    if confirmed.send(c).await.is_err() {
        tracing::warn!("the confirmer stopped; the row stays sent and is sent again after its proof wait");
    }
}

/// Writes delivered rows in batches: whatever proofs arrived while the last write ran go into the
/// next, so 10,000 proofs cost a few statements, not 10,000.
async fn confirmer(store: Store, mut rx: mpsc::Receiver<Confirmed>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        // Proofs of one post arrive spread over a second or so: a short gather turns hundreds of
        // one-row commits into a few; the mark only decides what is resent, nobody waits for it.
        let gather = tokio::time::sleep(CONFIRM_GATHER);
        tokio::pin!(gather);
        while batch.len() < CONFIRM_BATCH {
            tokio::select! {
                c = rx.recv() => match c {
                    Some(c) => batch.push(c),
                    None => break,
                },
                _ = &mut gather => break,
            }
        }
        let (batch, cut): (Vec<Confirmed>, Vec<Confirmed>) = batch.into_iter().partition(|c| c.delivered);
        back_to_outbox(&store, cut.iter().map(|c| (c.row.attempts, c.row.id)).collect(), "copies waiting for their proof").await;
        if batch.is_empty() {
            continue;
        }
        let ids: Vec<i64> = batch.iter().map(|c| c.row.id).collect();
        if let Err(err) = store.mark_outbox_delivered(&ids).await {
            // The rows stay sent and go out again; members drop the copy by its message id.
            tracing::warn!(%err, rows = ids.len(), "cannot mark deliveries");
            continue;
        }
        let now = now_ms();
        for c in batch {
            crate::metrics::delivery(&c.row.mode, c.method, "delivered", c.row.group_id);
            crate::metrics::delivery_latency(&c.row.mode, (now - c.row.created_at).max(0) as f64 / 1000.0, c.row.group_id);
        }
    }
}

/// At shutdown, puts rows (`(attempts, id)`: the attempts they had before the send that was cut
/// short) back in the outbox as pending, due at once.
async fn back_to_outbox(store: &Store, rows: Vec<(i32, i64)>, what: &'static str) {
    let mut by_attempts: HashMap<i32, Vec<i64>> = HashMap::new();
    for (attempts, id) in rows {
        by_attempts.entry(attempts).or_default().push(id);
    }
    for (attempts, ids) in by_attempts {
        tracing::info!(rows = ids.len(), what, "shutdown: copies go back to the outbox");
        if let Err(err) = store.mark_outbox(&ids, "pending", attempts, now_ms()).await {
            tracing::warn!(%err, rows = ids.len(), "cannot return copies to the outbox; they are due after their proof wait");
        }
    }
}

/// Exponential backoff with jitter: 10 s, 20 s, 40 s, ... up to `cap_secs`.
fn backoff_ms(attempts: i32, cap_secs: u64) -> i64 {
    let base = 10_000i64.saturating_mul(1i64 << attempts.clamp(0, 20));
    let capped = base.min((cap_secs as i64).saturating_mul(1000)).max(1000);
    capped + (rand::random::<u64>() % (capped as u64 / 4 + 1)) as i64
}

/// Builds, signs and encrypts on the blocking pool, one chunk per core. A copy too large for a
/// packet keeps only its verdict: holding every member's packed copy of a large post at once is
/// what made memory grow with members × post size; it is packed again when its turn comes.
/// `items` with those that do not `wait` first, except that an item whose `member` has one that
/// waits stays with it: each member's items keep their order, and the order within each part
/// holds.
fn no_wait_first<T>(items: Vec<T>, member: impl Fn(&T) -> &str, wait: impl Fn(&T) -> bool) -> Vec<T> {
    let waiting: HashSet<String> = items.iter().filter(|i| wait(i)).map(|i| member(i).to_owned()).collect();
    if waiting.is_empty() {
        return items;
    }
    let (first, later): (Vec<T>, Vec<T>) = items.into_iter().partition(|i| !waiting.contains(member(i)));
    first.into_iter().chain(later).collect()
}

async fn prepare_all(jobs: Vec<Job>) -> Vec<(Job, Result<Outgoing, OutboundError>)> {
    on_all_cores(jobs, |job: Job| {
        let result = prepare_any(&job.keys.signer, job.keys.lxmf_dest, &job.to, &job.body).map(|o| match o {
            Outgoing::Direct { lxmf_dest, message_id, .. } => Outgoing::Direct { lxmf_dest, packed: Vec::new(), message_id },
            packet => packet,
        });
        (job, result)
    })
    .await
}

/// The fan-out's worker pool: `f` over `items` on the blocking pool, one chunk per core, in order.
/// Public so that `meshgroup bench fanout` times exactly this scheduling, not a copy of it.
pub async fn on_all_cores<T, U, F>(items: Vec<T>, f: F) -> Vec<U>
where
    T: Send + 'static,
    U: Send + 'static,
    F: Fn(T) -> U + Clone + Send + 'static,
{
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let chunk = items.len().div_ceil(cores).max(1);
    let mut handles = Vec::new();
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        let part: Vec<T> = items.by_ref().take(chunk).collect();
        let f = f.clone();
        handles.push(tokio::task::spawn_blocking(move || part.into_iter().map(f).collect::<Vec<_>>()));
    }
    let mut out = Vec::new();
    for h in handles {
        if let Ok(part) = h.await {
            out.extend(part);
        }
    }
    out
}

/// A relayed message keeps the sender's fields except ours, the sender's ticket and attribution.
fn relayed_fields(raw: &[u8]) -> Vec<(Value, Value)> {
    use crate::wire::lxmf::{FIELD_CUSTOM_DATA, FIELD_CUSTOM_META, FIELD_CUSTOM_TYPE, FIELD_TICKET};
    crate::wire::lxmf::decode_fields(raw)
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| !matches!(k.as_u64(), Some(FIELD_TICKET | FIELD_CUSTOM_TYPE | FIELD_CUSTOM_DATA | FIELD_CUSTOM_META)))
        .collect()
}

/// The one line a stock client shows in short mode.
pub fn short_line(group: &str, sender: &str, content: &[u8], id: i64) -> String {
    let text = String::from_utf8_lossy(content);
    let mut preview: String = text.chars().filter(|c| !c.is_control()).take(60).collect();
    if text.chars().count() > 60 {
        preview.push('…');
    }
    format!("[{group}] {sender}: {preview} (#{id}, /history to read)")
}

/// How a notice reads in a stock client. Only the person an event is about is told of it
/// directly, so it speaks to them; digests carry their own text.
pub fn notice_text(kind: &str, actor: &str, detail: &str) -> String {
    match kind {
        "kicked" => format!("You were removed from the group by {actor}. You may join again with /join."),
        "banned" => format!("You were banned from the group by {actor}: {detail}"),
        "joined" => "Your join request was approved: you're in. Send /help for the commands.".to_owned(),
        "join_rejected" => "Your join request was declined.".to_owned(),
        _ => detail.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_that_need_no_window_place_go_first_without_reordering_a_member() {
        // (member, needs a place in the window)
        let round = vec![("a", true), ("b", false), ("a", false), ("c", false), ("d", true), ("b", false)];
        let sorted = no_wait_first(round, |i| i.0, |i| i.1);
        assert_eq!(sorted, vec![("b", false), ("c", false), ("b", false), ("a", true), ("a", false), ("d", true)]);
        assert_eq!(no_wait_first(vec![("a", false)], |i| i.0, |i| i.1), vec![("a", false)]);
    }

    #[test]
    fn backoff_grows_to_the_cap() {
        assert!((10_000..=12_500).contains(&backoff_ms(0, 1800)));
        assert!((40_000..=50_000).contains(&backoff_ms(2, 1800)));
        assert!((60_000..=75_000).contains(&backoff_ms(10, 60)));
    }

    #[test]
    fn short_line_is_one_bounded_line() {
        let l = short_line("G", "alice", "x\ny".repeat(50).as_bytes(), 7);
        assert!(!l.contains('\n') && l.contains("#7") && l.chars().count() < 120);
    }
}
