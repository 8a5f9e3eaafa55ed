//! The courier: finds a member's keys, hands prepared messages to the node, and tracks proofs.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::outbound::{Prepared, Recipient};
use crate::transport::{Node, NodeError, with_backpressure};
use crate::wire::identity::{LXMF_ASPECT, destination_hash};

/// How long an unclaimed proof is remembered (it may beat its waiter).
const EARLY_PROOF_TTL: Duration = Duration::from_secs(120);
/// Path requests for one destination back off from the first to the last of these, however
/// many messages wait for it.
const PATH_REQUEST_BACKOFF: [Duration; 4] = [Duration::from_secs(5), Duration::from_secs(10), Duration::from_secs(20), Duration::from_secs(30)];

/// Just after start-up, the peers that connect to us are still reconnecting (a reference TCP
/// client tries every 5 s), and a copy sent without a path then is most likely lost (and spends
/// one of its attempts): for this long, a copy to a member not heard from since the start waits
/// for the path asked for it (see [`Courier::awaiting_path`]). Not longer: behind a transport
/// node that knows the paths, a blind send arrives, and the path budget covers only a few
/// members per second.
const START_PATH_WAIT: Duration = Duration::from_secs(20);

/// Whose path a request is for: each has its own share of the path budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathFor {
    /// A member the server sends to (copies, replies).
    Member,
    /// The sender of a message whose key we do not hold yet.
    Stranger,
}

/// Shared by replies and the fan-out.
pub struct Courier {
    node: Node,
    store: crate::store::Store,
    /// Where copies go when a member stays unreachable.
    pub propagation: std::sync::Arc<super::propagation::Propagation>,
    waiters: Mutex<HashMap<[u8; 32], oneshot::Sender<()>>>,
    early: Mutex<HashMap<[u8; 32], Instant>>,
    ratchets: Mutex<HashMap<[u8; 16], [u8; 32]>>,
    /// Stamp costs members' `lxmf.delivery` destinations announce.
    stamp_costs: Mutex<HashMap<[u8; 16], u32>>,
    /// Who may ask for a path, and when (see [`Courier::ask_path`]).
    path_turns: Mutex<PathTurns>,
    /// Display names `lxmf.delivery` destinations announce.
    names: Mutex<HashMap<[u8; 16], String>>,
    started: Instant,
    /// Identities that identified on a link since the start (kept only during
    /// [`START_PATH_WAIT`]): reachable without a path, as they just spoke to us.
    heard: Mutex<std::collections::HashSet<[u8; 16]>>,
}

/// Entries each of the courier's per-destination maps holds at most (announced names, identities
/// heard, path requests); past it a map starts again (members re-announce, paths are asked again).
const MAX_NAMES: usize = 50_000;

impl Courier {
    /// `path_requests_per_sec` paces every path request this server sends (see [`Courier::ask_path`]).
    pub fn new(node: Node, store: crate::store::Store, propagation: std::sync::Arc<super::propagation::Propagation>, path_requests_per_sec: f64) -> Self {
        Courier {
            node,
            store,
            propagation,
            waiters: Mutex::default(),
            early: Mutex::default(),
            ratchets: Mutex::default(),
            stamp_costs: Mutex::default(),
            path_turns: Mutex::new(PathTurns::new(path_requests_per_sec)),
            names: Mutex::default(),
            started: Instant::now(),
            heard: Mutex::default(),
        }
    }

    /// An identity identified on one of our links (see [`Courier::awaiting_path`]).
    pub fn note_heard(&self, identity_hash: [u8; 16]) {
        if self.started.elapsed() < START_PATH_WAIT
            && let Ok(mut h) = self.heard.lock()
            && h.len() < MAX_NAMES
        {
            h.insert(identity_hash);
        }
    }

    /// Whether a copy to this member should wait: within [`START_PATH_WAIT`] of start-up, while
    /// the node has heard nothing of the member (no announce of its `lxmf.delivery`, no link
    /// identify since the start). Its path is asked for, within
    /// the per-destination back-off and the path budget (so at most 3 small requests per member
    /// in that time).
    pub async fn awaiting_path(&self, identity_hash: [u8; 16]) -> bool {
        if self.started.elapsed() >= START_PATH_WAIT {
            return false;
        }
        if self.heard.lock().is_ok_and(|h| h.contains(&identity_hash)) {
            return false;
        }
        let lxmf_dest = destination_hash(LXMF_ASPECT, &identity_hash);
        if self.node.recall_identity(lxmf_dest).await.is_some() {
            return false;
        }
        self.ask_path(lxmf_dest, PathFor::Member).await;
        true
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Remembers the ratchet a member's `lxmf.delivery` announced.
    pub fn note_ratchet(&self, dest: [u8; 16], ratchet: [u8; 32]) {
        if let Ok(mut r) = self.ratchets.lock() {
            r.insert(dest, ratchet);
        }
    }

    /// Remembers what an `lxmf.delivery` announce says: the display name (for a `/join` by
    /// LXMF) and the stamp cost it asks for (none clears it).
    pub fn note_delivery_announce(&self, dest: [u8; 16], app_data: &[u8]) {
        let (name, cost) = delivery_announce(app_data);
        if let (Some(name), Ok(mut names)) = (name, self.names.lock()) {
            // Bounded: names heard from the whole network, not only members.
            if names.len() >= MAX_NAMES && !names.contains_key(&dest) {
                names.clear();
            }
            names.insert(dest, name);
        }
        self.note_stamp_cost(dest, cost);
    }

    /// Whether this `lxmf.delivery` announce answers a path request of ours (a member's copy
    /// may wait for it); the request is settled, so its back-off starts again.
    pub fn path_arrived(&self, dest: [u8; 16]) -> bool {
        self.path_turns.lock().is_ok_and(|mut t| t.settle(dest))
    }

    /// The display name an identity's `lxmf.delivery` last announced, if heard.
    pub fn announced_name(&self, identity_hash: [u8; 16]) -> Option<String> {
        let dest = destination_hash(LXMF_ASPECT, &identity_hash);
        self.names.lock().ok().and_then(|n| n.get(&dest).cloned())
    }

    fn note_stamp_cost(&self, dest: [u8; 16], cost: u32) {
        tracing::debug!(dest = %hex::encode(dest), cost, "lxmf.delivery announce");
        if let Ok(mut c) = self.stamp_costs.lock() {
            if cost == 0 {
                c.remove(&dest);
            } else {
                c.insert(dest, cost);
            }
        }
    }

    /// The member's keys: from the node's announces, else from the identities the store has
    /// verified (so a restart does not make members unreachable).
    ///
    /// Like the reference LXMF router, the first send to a member whose keys we hold goes out
    /// without a path: RNS then sends it on every outgoing interface, and a member who joined
    /// over a link is reachable that way. Only a retry (`retry`), or a member we hold no keys
    /// for, asks the network for a path, backing off per destination; with no keys this returns
    /// `None`, so the caller tries again later instead of waiting.
    pub async fn recipient(&self, identity_hash: [u8; 16], retry: bool) -> Option<Recipient> {
        let lxmf_dest = destination_hash(LXMF_ASPECT, &identity_hash);
        let ratchet = || self.ratchets.lock().ok().and_then(|r| r.get(&lxmf_dest).copied());
        let stamp_cost = self.stamp_costs.lock().ok().and_then(|c| c.get(&lxmf_dest).copied()).unwrap_or(0);
        if let Some(public_key) = self.node.recall_identity(lxmf_dest).await {
            return Some(Recipient { identity_hash, lxmf_dest, public_key, ratchet: ratchet(), stamp_cost });
        }
        let public_key = self.stored_key(lxmf_dest).await;
        if public_key.is_none() || retry {
            self.ask_path(lxmf_dest, PathFor::Member).await;
        }
        Some(Recipient { identity_hash, lxmf_dest, public_key: public_key?, ratchet: ratchet(), stamp_cost })
    }

    /// How soon a copy to a member with no path is looked at again: within seconds while its
    /// path is still being asked for (or its request waits for the budget), as an answer comes
    /// that fast; later once the asking has backed off, as the member is likely away.
    pub fn recheck_after(&self, identity_hash: [u8; 16]) -> Duration {
        let dest = destination_hash(LXMF_ASPECT, &identity_hash);
        let asked = self.path_turns.lock().map(|t| t.times_asked(dest)).unwrap_or(0);
        let (base, spread) = if asked < PATH_REQUEST_BACKOFF.len() { (2_000, 3_000) } else { (5_000, 10_000) };
        Duration::from_millis(base + rand::random::<u64>() % spread)
    }

    /// The key a member's link identify (or a verified LXMF message) left in the store, for a
    /// member the node has not heard announce since the start.
    pub async fn stored_key(&self, lxmf_dest: [u8; 16]) -> Option<[u8; 64]> {
        match self.store.identity_by_lxmf_hash(&hex::encode(lxmf_dest)).await {
            Ok(key) => key.and_then(|k| <[u8; 64]>::try_from(k.as_slice()).ok()),
            Err(err) => {
                tracing::debug!(%err, "known identity lookup failed");
                None
            }
        }
    }

    /// One path request for a destination, unless one went out within its back-off or the
    /// server-wide budget is spent; then the caller's next try asks again.
    ///
    /// The budget is what keeps a restart with many members from losing their paths: a reference
    /// node (RNS 1.5.7) that hears path requests faster than 3 per second on a young interface
    /// drops all but 8 queued ones, and blocks every further request for a dropped destination
    /// for 45 s. Hence one token at a time, and no burst.
    pub async fn ask_path(&self, lxmf_dest: [u8; 16], whose: PathFor) {
        let turn = self.path_turns.lock().is_ok_and(|mut t| t.take(lxmf_dest, whose));
        if turn && self.node.request_path(lxmf_dest).await.is_err() {
            // It reached nobody (just after a restart, before the peers reconnected): it does
            // not count against the destination's back-off.
            if let Ok(mut t) = self.path_turns.lock() {
                t.settle(lxmf_dest);
            }
        }
    }

    /// Waits (bounded) for a member's keys, for one-off replies.
    pub async fn recipient_within(&self, identity_hash: [u8; 16], wait: Duration) -> Option<Recipient> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(r) = self.recipient(identity_hash, false).await {
                return Some(r);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Sends a prepared message; the receiver resolves when its delivery proof arrives.
    ///
    /// An interface whose send queue is full drops a broadcast at once (the crate does not wait
    /// for room); that is back-pressure, not a lost member, so the send is tried again after a
    /// short pause, a few times, before it counts as failed. With no interface at all it fails at
    /// once.
    pub async fn send(&self, p: &Prepared) -> Result<([u8; 32], oneshot::Receiver<()>), NodeError> {
        let hash = with_backpressure(|| self.node.send_prepared(p.lxmf_dest, &p.public_key, ("lxmf", "delivery"), &p.ciphertext)).await?;
        let (tx, rx) = oneshot::channel();
        let early = self.early.lock().ok().and_then(|mut e| e.remove(&hash)).is_some();
        if early {
            let _ = tx.send(());
        } else if let Ok(mut w) = self.waiters.lock() {
            w.insert(hash, tx);
        }
        Ok((hash, rx))
    }

    /// Delivers a packed message over a direct link as a Resource; returns once the member's
    /// side has proven the transfer.
    pub async fn send_direct(&self, lxmf_dest: [u8; 16], public_key: [u8; 64], packed: Vec<u8>) -> Result<(), NodeError> {
        // The member's key from their join serves when their announce was never heard.
        let link = self.node.open_link_known(lxmf_dest, Some(public_key), "lxmf", "delivery", Duration::from_secs(20)).await?;
        self.node.send_resource(link, packed, Duration::from_secs(120)).await
    }

    /// A delivery proof arrived.
    pub fn proof(&self, packet_hash: [u8; 32]) {
        let waiter = self.waiters.lock().ok().and_then(|mut w| w.remove(&packet_hash));
        match waiter {
            Some(tx) => {
                let _ = tx.send(());
            }
            None => {
                if let Ok(mut e) = self.early.lock() {
                    let now = Instant::now();
                    e.retain(|_, t| now.duration_since(*t) < EARLY_PROOF_TTL);
                    e.insert(packet_hash, now);
                }
            }
        }
    }

    /// Drops the waiter of a send whose proof never came.
    pub fn forget(&self, packet_hash: &[u8; 32]) {
        if let Ok(mut w) = self.waiters.lock() {
            w.remove(packet_hash);
        }
    }
}

/// Who may ask for a path now: a back-off per destination, however many messages wait for it,
/// and two budgets, one for members and one for strangers.
struct PathTurns {
    /// Per destination: when we last asked for its path, and how many times so far (on the
    /// buckets' clock, which a test can pause).
    asked: HashMap<[u8; 16], (tokio::time::Instant, usize)>,
    /// Path requests for members (copies, replies), under the rate at which a reference node
    /// starts dropping them.
    members: crate::pacing::TokenBucket,
    /// Path requests for senders we hold no key for, a third of that: anyone can send from any
    /// number of made-up identities, and they must not spend the members' budget.
    strangers: crate::pacing::TokenBucket,
}

impl PathTurns {
    fn new(per_sec: f64) -> Self {
        PathTurns {
            asked: HashMap::new(),
            members: crate::pacing::TokenBucket::new(per_sec, 1.0),
            strangers: crate::pacing::TokenBucket::new(per_sec / 3.0, 1.0),
        }
    }

    /// Whether a path request for this destination may go now (and then records it).
    fn take(&mut self, dest: [u8; 16], whose: PathFor) -> bool {
        let now = tokio::time::Instant::now();
        let (last, n) = self.asked.get(&dest).copied().unwrap_or((now, 0));
        if n > 0 && now.duration_since(last) < PATH_REQUEST_BACKOFF[n.min(PATH_REQUEST_BACKOFF.len()) - 1] {
            return false;
        }
        let budget = match whose {
            PathFor::Member => &mut self.members,
            PathFor::Stranger => &mut self.strangers,
        };
        if !budget.try_take() {
            crate::metrics::path_request_deferred();
            return false;
        }
        if self.asked.len() >= MAX_NAMES {
            // Bounded: made-up senders must not grow it; what is forgotten is asked again.
            self.asked.retain(|_, (t, _)| now.duration_since(*t) < PATH_REQUEST_BACKOFF[PATH_REQUEST_BACKOFF.len() - 1]);
            if self.asked.len() >= MAX_NAMES {
                self.asked.clear();
            }
        }
        self.asked.insert(dest, (now, n + 1));
        true
    }

    /// The destination's path came (or its request reached nobody): its back-off starts again.
    /// Whether a request of ours was outstanding.
    fn settle(&mut self, dest: [u8; 16]) -> bool {
        self.asked.remove(&dest).is_some()
    }

    /// How many times the destination's path was asked for since it last came.
    fn times_asked(&self, dest: [u8; 16]) -> usize {
        self.asked.get(&dest).map_or(0, |e| e.1)
    }
}

/// What an `lxmf.delivery` announce tells us: the display name (cleaned, none if empty) and the
/// stamp cost the sender asks for (0 for none). Over-deep msgpack says nothing: the crate's
/// parser would recurse through it (found by fuzzing, see docs/fuzzing.md).
pub fn delivery_announce(app_data: &[u8]) -> (Option<String>, u32) {
    if crate::wire::msgpack_too_deep(app_data) {
        return (None, 0);
    }
    let name = lxmf_core::announce::display_name_from_app_data(Some(app_data)).map(|n| crate::group::clean_name(&n, 64)).filter(|n| !n.is_empty());
    let cost = lxmf_core::stamp_cost_from_app_data(Some(app_data)).unwrap_or(0).clamp(0, 254) as u32;
    (name, cost)
}

#[cfg(test)]
mod tests {
    use super::{PathFor, PathTurns};
    use std::time::Duration;

    /// A flood from made-up identities spends the strangers' budget only: the members' path
    /// requests still go; and one destination is asked again only after its back-off.
    #[tokio::test(start_paused = true)]
    async fn strangers_cannot_spend_the_members_path_budget() {
        let mut t = PathTurns::new(1.5);
        let stranger = |i: u16| {
            let mut d = [0xee; 16];
            d[..2].copy_from_slice(&i.to_be_bytes());
            d
        };
        let asked = (0..1000).filter(|&i| t.take(stranger(i), PathFor::Stranger)).count();
        assert_eq!(asked, 1, "1,000 strangers at once get one path request between them");
        assert!(t.take([1; 16], PathFor::Member), "a member's request still goes");
        assert!(!t.take([2; 16], PathFor::Member), "no burst: one token at a time");
        // 0.7 s later the members' budget (1.5/s) has a token again, the strangers' (0.5/s) not.
        tokio::time::advance(Duration::from_millis(700)).await;
        assert!(!t.take(stranger(1000), PathFor::Stranger));
        assert!(!t.take([1; 16], PathFor::Member), "the same destination waits out its back-off (5 s)");
        assert!(t.take([3; 16], PathFor::Member));
        assert_eq!(t.times_asked([1; 16]), 1);
        assert!(t.settle([1; 16]), "its path came");
        assert_eq!(t.times_asked([1; 16]), 0);
    }

    #[test]
    fn announced_cost_parses() {
        let ad = crate::wire::lxmf::delivery_announce("carol", 8);
        assert_eq!(super::delivery_announce(&ad), (Some("carol".to_owned()), 8));
        // The legacy form: the name alone, as plain bytes.
        assert_eq!(super::delivery_announce(b"Plain Name"), (Some("Plain Name".to_owned()), 0));
    }

    /// Found by the fuzz corpus replay: an announce of 1,000 nested maps overflowed a 2 MiB stack
    /// in `lxmf-wire`'s parser (`fuzz/corpus/announce/crash-deep-nesting`).
    #[test]
    fn deeply_nested_app_data_is_ignored() {
        let mut deep = vec![0x92];
        deep.extend([0x91; 2000]);
        deep.push(0xc0);
        let run = move || (super::delivery_announce(&deep), crate::lxmf::propagation::announced_cost(&deep));
        let out = std::thread::Builder::new().stack_size(256 * 1024).spawn(run).expect("thread").join().expect("no overflow");
        assert_eq!(out, ((None, 0), None));
    }
}
