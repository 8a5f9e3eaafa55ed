//! Inbound LXMF for every hosted group: posts and commands to `lxmf.delivery`, replies, tickets.
//!
//! Inbound order, cheapest first: unpack, sender key, signature, ban, command, membership, stamp
//! (tickets, then proof of work on the stamp pool), store. Only a stored (or already stored)
//! message, or an executed command, is proven.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmpv::Value;

use crate::actors::group::{GetInfo, GetSnapshot, Post, Snapshot};
use crate::actors::supervisor::{DestKind, Route, lookup};
use crate::api::services::Services;
use crate::group::{Caller, GroupError, InfoView, MessageRef, Op};
use crate::lxmf::commands;
use crate::lxmf::outbound::{Body, prepare, ticket_field};
use crate::stamps::{Check, Purpose, Refused};
use crate::store::{InsertOutcome, NewMessage, now_ms};
use crate::wire::identity::identity_hash;
use crate::wire::lxmf::{CUSTOM_TYPE_GROUP, FIELD_CUSTOM_TYPE, LxmfMessage, reaction_field, unpack};
use crate::wire::stamp::MESSAGE_ROUNDS;

/// How long an inbound message waits for its sender's identity before it is dropped unproven
/// (the sender will retry, and by then the path request has usually been answered).
const IDENTITY_WAIT: Duration = Duration::from_secs(20);
/// A stranger is told how to join at most this often per group.
const STRANGER_REPLY_EVERY: Duration = Duration::from_secs(600);
/// Ticket lifetime and renewal, as LXMF (`TICKET_EXPIRY`, `TICKET_RENEW`).
const TICKET_EXPIRY_MS: i64 = 21 * 24 * 3600 * 1000;
const TICKET_RENEW_MS: i64 = 14 * 24 * 3600 * 1000;
/// A journal replay pass stops after this many posts in a row that could not be stored.
const REPLAY_RETRIES_PER_PASS: usize = 3;
/// A journaled post that could not be stored for this long is dropped (counted).
const JOURNAL_MAX_AGE_MS: i64 = 7 * 24 * 3600 * 1000;
/// Bytes of reply text per message, so each reply fits one packet.
const REPLY_CHUNK: usize = 240;

/// Inbound LXMF handling, with the per-stranger reply limiter, on the services it was given.
pub struct Inbound {
    s: Arc<Services>,
    told: Mutex<HashMap<(i64, String), Instant>>,
    /// Journal entries whose task is still handling them: the replay leaves those alone.
    in_hand: Mutex<std::collections::HashSet<crate::journal::EntryId>>,
    /// Messages being handled at once.
    slots: Arc<tokio::sync::Semaphore>,
}

/// How an LXMF message reached us, for metrics.
#[derive(Clone, Copy, Debug)]
pub enum Method {
    Opportunistic,
    Direct,
    /// Collected from a propagation node.
    Propagated,
}

impl Method {
    fn label(self) -> &'static str {
        match self {
            Method::Opportunistic => "opportunistic",
            Method::Direct => "direct",
            Method::Propagated => "propagated",
        }
    }
}

impl Inbound {
    /// `max_inflight` messages are handled at once at most.
    pub fn new(s: Arc<Services>, max_inflight: usize) -> Arc<Self> {
        Arc::new(Inbound { s, told: Mutex::default(), in_hand: Mutex::default(), slots: Arc::new(tokio::sync::Semaphore::new(max_inflight.max(1))) })
    }

    /// A single encrypted packet to one of our destinations: the destination hash is implied.
    /// Beyond the limit, or once shutdown began, it is dropped unproven: the sender retries.
    pub fn opportunistic(self: &Arc<Self>, dest: [u8; 16], data: Vec<u8>, packet_hash: Option<[u8; 32]>) {
        let s = &self.s;
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(_) if s.life.stopping() => return crate::metrics::work_refused("packet", "shutting_down"),
            Ok(p) => p,
            Err(_) => return crate::metrics::work_refused("packet", "server_busy"),
        };
        let mut packed = dest.to_vec();
        packed.extend_from_slice(&data);
        let me = self.clone();
        s.life.clone().spawn(async move {
            let _permit = permit;
            let received = receive(&me, dest, &packed, Method::Opportunistic).await;
            if received == Received::Accepted
                && let Some(h) = packet_hash
            {
                // Only now, with the message committed, does the sender learn it was delivered.
                if let Err(err) = me.s.node.prove(dest, h).await {
                    tracing::warn!(%err, "cannot send delivery proof");
                }
            }
        });
    }

    /// A full packed message over a link (a packet or a Resource). The transport proved it on
    /// receipt, so it is never dropped: beyond the limit the caller waits for a slot, and it is
    /// journaled before anything else, so a database outage or a crash cannot lose it.
    pub async fn direct(self: &Arc<Self>, dest: [u8; 16], packed: Vec<u8>) {
        let s = &self.s;
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // Every slot is busy. The router must not wait for one (proofs and requests
                // queue behind it): the post goes to the journal, and the replay handles it.
                if journal_append(s, dest, &packed).await.is_some() {
                    crate::metrics::work_refused("packet", "journaled_for_later");
                    return;
                }
                // No journal to hold it: waiting is the only way not to lose it.
                let Ok(p) = self.slots.clone().acquire_owned().await else { return };
                p
            }
        };
        let me = self.clone();
        s.life.clone().spawn(async move {
            let _permit = permit;
            let entry = journal_append(&me.s, dest, &packed).await;
            if let (Some(e), Ok(mut h)) = (entry, me.in_hand.lock()) {
                h.insert(e);
            }
            let received = receive(&me, dest, &packed, Method::Direct).await;
            if let Some(entry) = entry {
                if received != Received::Retry {
                    journal_settle(&me.s, entry).await;
                }
                if let Ok(mut h) = me.in_hand.lock() {
                    h.remove(&entry);
                }
            }
        });
    }

    /// Messages collected from a propagation node (nobody waits for a proof). Only an accepted
    /// or refused one may be purged from the node; one to retry stays there for the next sync.
    pub async fn propagated(&self, dest: [u8; 16], packed: Vec<u8>) -> Received {
        receive(self, dest, &packed, Method::Propagated).await
    }

    /// Tries the journaled posts written before `written_before_ms` again, oldest first, leaving
    /// alone those a task still handles; a post that is still not stored stays. A pass ends after a few posts in a row could not be
    /// stored (the store is still away); a post older than [`JOURNAL_MAX_AGE_MS`] is dropped
    /// and counted. Returns how many were settled and how many stay.
    pub async fn replay_journal(&self, written_before_ms: i64) -> (usize, usize) {
        let s = &self.s;
        let Some(journal) = s.journal.clone() else { return (0, 0) };
        let entries = match journal.pending(written_before_ms).await {
            Ok(e) => e,
            Err(err) => {
                tracing::error!(%err, "cannot read the post journal");
                return (0, 0);
            }
        };
        let (mut settled, mut left, mut retries_in_a_row) = (0, 0, 0);
        let total = entries.len();
        let in_hand = self.in_hand.lock().map(|h| h.clone()).unwrap_or_default();
        for e in entries.into_iter().filter(|e| !in_hand.contains(&e.id)) {
            if crate::store::now_ms() - e.written_at > JOURNAL_MAX_AGE_MS {
                tracing::warn!(entry = e.id, "a journaled post could not be stored for a week; dropped");
                crate::metrics::journal_failed();
                journal_settle(s, e.id).await;
                continue;
            }
            if receive(self, e.dest, &e.packed, Method::Direct).await == Received::Retry {
                left += 1;
                retries_in_a_row += 1;
                if retries_in_a_row >= REPLAY_RETRIES_PER_PASS {
                    left = total - settled;
                    break;
                }
                continue;
            }
            retries_in_a_row = 0;
            journal_settle(s, e.id).await;
            settled += 1;
        }
        crate::metrics::journal_replayed(settled);
        (settled, left)
    }

    /// Whether to tell this stranger (again) how to join.
    fn should_tell(&self, group_id: i64, who: &str) -> bool {
        let Ok(mut told) = self.told.lock() else { return false };
        let now = Instant::now();
        told.retain(|_, t| now.duration_since(*t) < STRANGER_REPLY_EVERY);
        let key = (group_id, who.to_owned());
        if told.contains_key(&key) {
            return false;
        }
        told.insert(key, now);
        true
    }

    /// Undoes [`Self::should_tell`] for a reply that could not be sent.
    fn forget_told(&self, group_id: i64, who: &str) {
        if let Ok(mut told) = self.told.lock() {
            told.remove(&(group_id, who.to_owned()));
        }
    }
}

/// Journals a post before it is handled; `None` (logged, counted) when there is no journal or it
/// cannot take it: the post is then handled unjournaled, as before.
async fn journal_append(s: &Services, dest: [u8; 16], packed: &[u8]) -> Option<crate::journal::EntryId> {
    match s.journal.as_ref()?.append(dest, packed.to_vec()).await {
        Ok(id) => Some(id),
        Err(err) => {
            tracing::error!(%err, "post not journaled; a database outage now would lose it");
            crate::metrics::journal_failed();
            None
        }
    }
}

/// Forgets a journaled post that is settled (a marker that is lost replays a duplicate: harmless).
async fn journal_settle(s: &Services, id: crate::journal::EntryId) {
    if let Some(journal) = &s.journal {
        journal.settle(id).await;
    }
}

/// The sender, verified.
struct Sender {
    caller: Caller,
    hash: [u8; 16],
    hex: String,
}

/// What became of an inbound message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// Stored (or already stored), or a command that ran: it may be proven.
    Accepted,
    /// Refused for good (malformed, forged, not a member, a bad stamp): never proven, not retried.
    Refused,
    /// Not handled for a passing reason (the store is away, the queue is full, the sender's key
    /// is not known yet): a journaled post is tried again.
    Retry,
}

/// Validates, authorises and stores (or executes) one inbound message, and says what became of it.
async fn receive(inbound: &Inbound, dest: [u8; 16], packed: &[u8], method: Method) -> Received {
    let s = &inbound.s;
    let group = lookup(&s.registry, &dest).map(|r| r.group_id);
    let outcome = |o: &'static str| crate::metrics::lxmf_received(method.label(), o, group);
    let Some(route) = lookup(&s.registry, &dest).filter(|r| r.kind == DestKind::Lxmf) else {
        outcome("unknown_destination");
        return Received::Refused;
    };
    let msg = match unpack(packed) {
        Ok(m) if m.destination == dest => m,
        Ok(_) | Err(_) => {
            tracing::info!(len = packed.len(), "malformed LXMF message refused");
            outcome("malformed");
            return Received::Refused;
        }
    };
    let Some(public_key) = sender_key(s, &msg).await else {
        tracing::info!(source = %hex::encode(msg.source), "sender identity unknown; message not proven");
        outcome("unknown_sender");
        return Received::Retry;
    };
    if !msg.signature_valid(&public_key) {
        tracing::info!(source = %hex::encode(msg.source), "bad LXMF signature");
        outcome("bad_signature");
        return Received::Refused;
    }
    let hash = identity_hash(&public_key);
    let sender = Sender { caller: Caller::Identity(hex::encode(hash)), hash, hex: hex::encode(hash) };
    let Some(info) = info(&route, &sender.caller).await else {
        outcome("error");
        return Received::Retry;
    };
    if info.banned {
        tracing::info!(sender = sender.hex, group = route.group_id, "post from a banned identity dropped");
        outcome("banned");
        return Received::Refused;
    }
    let text = String::from_utf8_lossy(&msg.content).into_owned();
    // The key is kept for members and for commands (a /join needs it once the server restarts),
    // not for every identity that writes to a group: those cost nothing to make.
    let command = commands::parse(&text);
    if info.is_member || command.is_some() {
        s.remember(hash, public_key);
    }
    if let Some(cmd) = command {
        outcome("command");
        run_command(s, &route, &sender, &msg, cmd, &info).await;
        return Received::Accepted;
    }
    if !info.is_member {
        outcome("not_member");
        tracing::info!(sender = sender.hex, group = route.group_id, "post from a non-member refused");
        if inbound.should_tell(route.group_id, &sender.hex) {
            let how = format!(
                "You are not a member of {}. Send /join to {}. Send /help for the commands.",
                info.name,
                if info.visibility == crate::domain::Visibility::Public { "join" } else { "ask the admins to let you in" }
            );
            // Not told when nothing went out (no path yet): the client's retry may tell them.
            if !reply(s, &route, sender.hash, vec![how], commands::Keep::First, Vec::new()).await {
                inbound.forget_told(route.group_id, &sender.hex);
            }
        }
        return Received::Refused;
    }
    let mut worked = false;
    if info.post_stamp_cost > 0 {
        match check_post_stamp(s, &route, &sender, &msg, info.post_stamp_cost).await {
            StampVerdict::Ticket => {}
            StampVerdict::Work => worked = true,
            StampVerdict::Refused(why) => {
                outcome(why);
                tracing::info!(sender = sender.hex, group = route.group_id, why, "post stamp refused");
                return Received::Refused;
            }
        }
    }
    // A reaction is stored as one, not as a chat line.
    match msg.fields_map().map(|f| reaction_field(&f)) {
        Ok(Ok(Some((target, emoji)))) => return react(s, &route, &sender, target, emoji, outcome).await,
        Ok(Err(err)) => {
            tracing::info!(sender = sender.hex, group = route.group_id, %err, "malformed reaction refused");
            outcome("malformed");
            reply(s, &route, sender.hash, vec![format!("Reaction refused: {err}.")], commands::Keep::First, Vec::new()).await;
            return Received::Refused;
        }
        // No reaction, or fields that are not a map: a post, relayed as sent.
        Ok(Ok(None)) | Err(_) => {}
    }
    let post = Post {
        caller: sender.caller.clone(),
        msg: NewMessage {
            group_id: route.group_id,
            message_hash: hex::encode(msg.message_id),
            sender_identity_hash: sender.hex.clone(),
            sender_display_name: String::new(),
            timestamp: msg.timestamp,
            title: msg.title.clone(),
            content: msg.content.clone(),
            fields: msg.fields.clone(),
            reply_to_id: None,
        },
    };
    let received = match route.addr.send(post).await {
        Ok(Ok(InsertOutcome::Inserted(_))) => {
            outcome("accepted");
            Received::Accepted
        }
        Ok(Ok(InsertOutcome::Duplicate(_))) => {
            outcome("duplicate");
            Received::Accepted
        }
        Ok(Err(GroupError::Forbidden(_))) => {
            outcome("not_member");
            Received::Refused
        }
        Ok(Err(err @ (GroupError::Store(_) | GroupError::RateLimited))) => {
            tracing::warn!(%err, group = route.group_id, "post not stored for now");
            outcome("error");
            Received::Retry
        }
        Ok(Err(err @ GroupError::InvalidArgument(_))) => {
            // Refused for what it carries (an attachment the group does not take): the sender is
            // told why, and the message is proven, so their client does not send it again.
            tracing::info!(%err, sender = sender.hex, group = route.group_id, "post refused");
            outcome("refused");
            reply(s, &route, sender.hash, vec![format!("Not posted: {err}.")], commands::Keep::First, Vec::new()).await;
            Received::Accepted
        }
        Ok(Err(err)) => {
            tracing::warn!(%err, group = route.group_id, "post refused");
            outcome("error");
            Received::Refused
        }
        Err(err) => {
            tracing::error!(%err, "group actor unavailable");
            outcome("error");
            Received::Retry
        }
    };
    if received == Received::Accepted && worked {
        // The ticket reply waits for nothing the sender's proof depends on.
        let s = s.clone();
        s.life.clone().spawn(async move { issue_ticket(&s, &route, &sender).await });
    }
    received
}

/// Stores a member's reaction (`FIELD_REACTION`) to the message its target hash names (the
/// original's or any member's copy's). One the group cannot take (an unknown message, the
/// per-member cap) is proven all the same, so the client does not send it again, and the sender
/// is told why.
async fn react(s: &Arc<Services>, route: &Route, sender: &Sender, target: [u8; 32], emoji: String, outcome: impl Fn(&'static str)) -> Received {
    let op = Op::React { target: MessageRef::Hash(hex::encode(target)), emoji, remove: false };
    match crate::actors::supervisor::run_op(&s.supervisor, route, sender.caller.clone(), op).await {
        Ok(Ok(_)) => {
            outcome("reaction");
            Received::Accepted
        }
        Ok(Err(err @ (GroupError::Store(_) | GroupError::RateLimited))) => {
            tracing::warn!(%err, group = route.group_id, "reaction not stored for now");
            outcome("error");
            Received::Retry
        }
        Ok(Err(err)) => {
            tracing::info!(%err, sender = sender.hex, group = route.group_id, "reaction refused");
            outcome("reaction_refused");
            reply(s, route, sender.hash, vec![format!("Reaction refused: {err}.")], commands::Keep::First, Vec::new()).await;
            Received::Accepted
        }
        Err(err) => {
            tracing::error!(%err, "group actor unavailable");
            outcome("error");
            Received::Retry
        }
    }
}

/// The group as the sender sees it; `None` (logged) when the actor cannot say.
async fn info(route: &Route, caller: &Caller) -> Option<InfoView> {
    match route.addr.send(GetInfo { caller: caller.clone() }).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(err)) => {
            tracing::info!(%err, group = route.group_id, "no group info for this sender");
            None
        }
        Err(err) => {
            tracing::error!(%err, group = route.group_id, "group actor unavailable");
            None
        }
    }
}

enum StampVerdict {
    Ticket,
    Work,
    Refused(&'static str),
}

/// Tickets first (a hash), then proof of work on the pool (a 768 KB workblock), which limits
/// failures per identity and keeps fair shares.
async fn check_post_stamp(s: &Services, route: &Route, sender: &Sender, msg: &LxmfMessage, base: u32) -> StampVerdict {
    let Some(stamp) = msg.stamp.clone() else {
        crate::metrics::stamp_checked("post", "missing", Some(route.group_id));
        return StampVerdict::Refused("stamp_missing");
    };
    // A store fault is not "no tickets": the member would be asked for proof of work they need not do.
    let tickets = match s.store.valid_tickets(route.group_id, &sender.hex, now_ms()).await {
        Ok(t) => t,
        Err(err) => {
            tracing::warn!(%err, group = route.group_id, "cannot read tickets; post refused for now");
            return StampVerdict::Refused("store_error");
        }
    };
    // Before any cost: a ticket stays valid however high the adaptive cost is.
    if tickets.iter().any(|t| lxmf_core::stamp::ticket_stamp(&t.ticket, &msg.message_id) == stamp) {
        crate::metrics::stamp_checked("post", "ticket", Some(route.group_id));
        return StampVerdict::Ticket;
    }
    match s.stamps.check(work_check(Purpose::Post, route, sender, msg, stamp, base)).await {
        Ok(true) => StampVerdict::Work,
        Ok(false) => StampVerdict::Refused("stamp_invalid"),
        Err(Refused::Cooldown(_)) => StampVerdict::Refused("stamp_cooldown"),
        Err(Refused::Share) => StampVerdict::Refused("stamp_share"),
        Err(_) => StampVerdict::Refused("busy"),
    }
}

/// A proof-of-work stamp over a message id, for the pool.
fn work_check(purpose: Purpose, route: &Route, sender: &Sender, msg: &LxmfMessage, stamp: Vec<u8>, base_cost: u32) -> Check {
    Check {
        purpose,
        group: Some(route.group_id),
        identity: sender.hash,
        material: msg.message_id.to_vec(),
        challenge: false,
        rounds: MESSAGE_ROUNDS,
        stamp,
        base_cost,
    }
}

/// Hands the member a ticket (unless one with plenty of time left exists), as LXMF does natively.
async fn issue_ticket(s: &Services, route: &Route, sender: &Sender) {
    // A lucky guess among failures earns no ticket: tickets only for identities without recent failures.
    if !s.stamps.clean(&sender.hash) {
        tracing::info!(sender = sender.hex, group = route.group_id, "no ticket: this identity failed stamps recently");
        return;
    }
    let now = now_ms();
    let held = match s.store.valid_tickets(route.group_id, &sender.hex, now).await {
        Ok(h) => h,
        Err(err) => {
            tracing::warn!(%err, group = route.group_id, "cannot read tickets; none issued this time");
            return;
        }
    };
    if held.iter().any(|t| t.expires_at - now > TICKET_RENEW_MS) {
        return;
    }
    let ticket: [u8; 16] = rand::random();
    let expires = now + TICKET_EXPIRY_MS;
    if let Err(err) = s.store.insert_ticket(route.group_id, &sender.hex, ticket.to_vec(), expires).await {
        tracing::warn!(%err, "cannot store a ticket");
        return;
    }
    crate::metrics::ticket_issued();
    let text = "Here is a ticket: your next posts to this group need no proof of work for 21 days.".to_owned();
    reply(s, route, sender.hash, vec![text], commands::Keep::First, vec![ticket_field(expires as f64 / 1000.0, &ticket)]).await;
}

async fn run_command(s: &Services, route: &Route, sender: &Sender, msg: &LxmfMessage, cmd: Result<commands::Command, String>, info: &InfoView) {
    // History keeps its newest messages when the reply must be cut; everything else its start.
    let keep = if matches!(cmd, Ok(commands::Command::History(_))) { commands::Keep::Last } else { commands::Keep::First };
    let lines = match cmd {
        Err(usage) => vec![usage],
        Ok(commands::Command::Help) => vec![commands::HELP.to_owned()],
        Ok(cmd) => {
            // A join through LXMF pays the join cost with the message's own stamp.
            let mut stamp_ok = info.join_stamp_cost == 0;
            if !stamp_ok
                && cmd == commands::Command::Join
                && let Some(stamp) = msg.stamp.clone()
            {
                stamp_ok = s.stamps.check(work_check(Purpose::Join, route, sender, msg, stamp, info.join_stamp_cost)).await == Ok(true);
            }
            // The name the client announces, as stock clients show it; else a hash prefix.
            let name = s.courier.announced_name(sender.hash).unwrap_or_else(|| sender.hex.get(..8).unwrap_or_default().to_owned());
            // Whom a kick, ban, approval or rejection is about, by name: read first, since the
            // command removes or decides the row.
            let subject = match &cmd {
                commands::Command::Kick(id) | commands::Command::Ban(id, _) => {
                    s.store.member(route.group_id, id).await.ok().flatten().map(|m| m.display_name).filter(|n| !n.is_empty())
                }
                commands::Command::Approve(id) | commands::Command::Reject(id) => {
                    s.store.join_request(route.group_id, id).await.ok().flatten().map(|r| r.display_name).filter(|n| !n.is_empty())
                }
                _ => None,
            };
            match cmd.op(&name, stamp_ok) {
                None => vec![commands::HELP.to_owned()],
                Some(op) => match crate::actors::supervisor::run_op(&s.supervisor, route, sender.caller.clone(), op).await {
                    Ok(Ok(r)) => commands::render(&cmd, &r, subject.as_deref()),
                    Ok(Err(GroupError::StampRequired { cost })) => {
                        let cost = s.stamps.cost(route.group_id, cost);
                        // Stock clients stamp only at the announced post cost, so say what does work.
                        vec![format!(
                            "Joining this group needs proof of work (a join stamp of cost {cost}), which stock LXMF clients do not make. \
                             Join with a group-aware client (the link API, /api/v1/join), or ask the group's operator to add you."
                        )]
                    }
                    Ok(Err(err)) => vec![format!("Refused: {err}")],
                    Err(_) => vec!["The group is busy; try again.".to_owned()],
                },
            }
        }
    };
    reply(s, route, sender.hash, lines, keep, Vec::new()).await;
}

/// Sends a best-effort reply from the group to one identity, split into packet-sized parts;
/// says whether any part went out.
async fn reply(s: &Services, route: &Route, to: [u8; 16], lines: Vec<String>, keep: commands::Keep, mut extra: Vec<(Value, Value)>) -> bool {
    let Ok(Some(snap)) = route.addr.send(GetSnapshot).await else { return false };
    let Some(recipient) = s.courier.recipient_within(to, Duration::from_secs(10)).await else {
        crate::metrics::lxmf_sent("opportunistic", "no_path");
        return false;
    };
    let mut sent = false;
    for part in commands::chunk(&lines, REPLY_CHUNK, 5, keep) {
        let mut fields = vec![(Value::from(FIELD_CUSTOM_TYPE), Value::from(CUSTOM_TYPE_GROUP))];
        fields.append(&mut extra);
        let body = Body { timestamp: now_ms() as f64 / 1000.0, title: Vec::new(), content: part.into_bytes(), fields };
        let (key, lxmf, r) = (snap_key(&snap), snap.lxmf_dest, recipient.clone());
        let prepared = tokio::task::spawn_blocking(move || key.map(|k| prepare(&k, lxmf, &r, &body))).await;
        match prepared {
            Ok(Some(Ok(p))) => match s.courier.send(&p).await {
                Ok(_) => {
                    sent = true;
                    crate::metrics::lxmf_sent("opportunistic", "sent");
                }
                Err(err) => {
                    tracing::debug!(%err, "reply not sent");
                    crate::metrics::lxmf_sent("opportunistic", "failed");
                }
            },
            _ => crate::metrics::lxmf_sent("opportunistic", "failed"),
        }
    }
    sent
}

fn snap_key(snap: &Snapshot) -> Option<crate::wire::lxmf::Signer> {
    crate::wire::lxmf::signer(&snap.private_key).ok()
}

/// The sender's public key from an announce the node heard; if none yet, ask the network and wait.
async fn sender_key(s: &Services, msg: &LxmfMessage) -> Option<[u8; 64]> {
    if let Some(k) = s.node.recall_identity(msg.source).await {
        return Some(k);
    }
    // A member who joined over a link and posts through a propagation node may never have been
    // heard announcing: its link identify left the key.
    if let Some(k) = s.courier.stored_key(msg.source).await {
        return Some(k);
    }
    s.courier.ask_path(msg.source, crate::lxmf::courier::PathFor::Stranger).await;
    let deadline = tokio::time::Instant::now() + IDENTITY_WAIT;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if let Some(k) = s.node.recall_identity(msg.source).await {
            return Some(k);
        }
    }
    None
}
