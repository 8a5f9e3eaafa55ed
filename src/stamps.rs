//! The stamp pool: proof-of-work checks run here, on blocking threads, never in an actor, and the
//! pool owns every defence around them.
//!
//! - **Capacity is the admission limit**: when the pool (or the caller's share of it) is full, new
//!   stamped work is refused at once instead of queueing without bound; callers say `rate_limited`.
//! - **Failed attempts are limited per identity.** A random stamp meets cost N with probability
//!   2^-N, so without a limit the server does an attacker's proof of work for them. After
//!   `max_failures` failed stamps within `failure_window_secs`, an identity's stamps are refused
//!   unchecked for `cooldown_secs`, and a join challenge that failed once is spent.
//! - **Fair shares** (the policy): a check is admitted only if the pool has a free slot, the
//!   identity holds fewer than `pool_per_identity` checks, the group holds less than
//!   `pool_group_share` of the pool, and, for an identity that failed recently, the recently
//!   failed together hold less than `pool_failed_share` of it. So a junk flood from identities
//!   that failed fills at most that share (they are refused first), one group's flood leaves the
//!   rest of the pool to other groups, and a legitimate stamp always finds room the flood cannot
//!   take.
//! - **Adaptive cost**: stamp refusals and join attempts per group and minute beyond
//!   `adaptive_spike_per_min` raise the group's costs by one bit, up to `adaptive_max_cost`; they
//!   fall back one bit per `adaptive_decay_secs` without a spike. Tickets are checked before any
//!   cost, so they stay valid.
//!
//! A clean identity refused for a full pool or share waits up to `pool_wait_ms` for a slot (one
//! wait per identity); an identity that failed recently never waits.
//!
//! The state lives in memory, bounded: `tracked_identities` entries at most, the oldest forgotten
//! first (identities cost an attacker nothing, so the table must not grow with them).

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::config::StampsConfig;
use crate::wire::stamp;

/// What a stamp is for, for shares, metrics and the adaptive cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    Join,
    Post,
    /// Creating a group on the server destination (no group yet).
    Create,
}

impl Purpose {
    fn label(self) -> &'static str {
        match self {
            Purpose::Join => "join",
            Purpose::Post => "post",
            Purpose::Create => "create",
        }
    }
}

/// One stamp to check.
#[derive(Clone, Debug)]
pub struct Check {
    pub purpose: Purpose,
    /// The group it is for; `None` for the server destination.
    pub group: Option<i64>,
    pub identity: [u8; 16],
    /// The workblock material: a join challenge or a message id.
    pub material: Vec<u8>,
    /// Whether `material` is a challenge of ours, to be spent if the stamp fails.
    pub challenge: bool,
    pub rounds: usize,
    pub stamp: Vec<u8>,
    /// The group's own cost; the pool applies the adaptive raise to it.
    pub base_cost: u32,
}

/// Why a stamp was not checked, or failed cheaply; each is counted and logged at a bounded rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Too many failed stamps from this identity; retry after this many seconds.
    #[error("too many failed stamps from this identity; retry in {0} s")]
    Cooldown(u64),
    /// The challenge already failed once; a fresh one is needed.
    #[error("this challenge was already spent on a failed stamp")]
    ChallengeSpent,
    /// The pool is full.
    #[error("the server is busy checking stamps; retry shortly")]
    Busy,
    /// The caller's identity, group or failed-identity share of the pool is in use.
    #[error("your share of the stamp checks is in use; retry shortly")]
    Share,
}

impl Refused {
    fn label(self) -> &'static str {
        match self {
            Refused::Cooldown(_) => "cooldown",
            Refused::ChallengeSpent => "challenge_spent",
            Refused::Busy => "busy",
            Refused::Share => "share",
        }
    }
}

/// Shared by every group; cheap to clone.
#[derive(Clone)]
pub struct StampPool {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: StampsConfig,
    capacity: usize,
    state: Mutex<State>,
    /// Woken when a group's adaptive cost changed, so it is announced at once.
    changed: Notify,
    /// Woken when a slot is given back, for callers waiting for one.
    released: Notify,
}

#[derive(Default)]
struct State {
    in_flight: usize,
    failed_in_flight: usize,
    per_identity: HashMap<[u8; 16], usize>,
    per_group: HashMap<i64, usize>,
    /// Clean identities waiting for a slot.
    waiting: HashSet<[u8; 16]>,
    failures: Bounded<[u8; 16], Failure>,
    /// Challenges spent on a failed stamp, until they would have expired anyway.
    spent: Bounded<Vec<u8>, Instant>,
    pressure: HashMap<i64, Pressure>,
    changed: HashSet<i64>,
    /// When each (purpose, outcome) was last logged, and the lines left out since.
    logged: HashMap<(&'static str, &'static str), (Option<Instant>, u64)>,
}

/// Failed stamps of one identity.
#[derive(Clone, Copy, Debug)]
struct Failure {
    count: u32,
    window_start: Instant,
    last: Instant,
    cooldown_until: Option<Instant>,
}

/// One group's adaptive cost.
#[derive(Clone, Copy, Debug)]
struct Pressure {
    /// Bits added to the group's own costs.
    raise: u32,
    events: u32,
    window_start: Instant,
    /// The last spike, or the last decay step.
    last_spike: Instant,
}

/// The window in which refusals and join attempts are counted for the adaptive cost.
const SPIKE_WINDOW: Duration = Duration::from_secs(60);
/// Clean identities that may wait for a slot, per slot of capacity.
const MAX_WAITERS_PER_SLOT: usize = 4;
/// One log line per purpose and outcome at most this often; the lines in between are counted.
const LOG_EVERY: Duration = Duration::from_secs(10);

impl StampPool {
    pub fn new(capacity: usize, cfg: &StampsConfig) -> Self {
        let cap = cfg.tracked_identities.max(1);
        let state = State { failures: Bounded::new(cap), spent: Bounded::new(cap), ..Default::default() };
        StampPool {
            inner: Arc::new(Inner { cfg: cfg.clone(), capacity: capacity.max(1), state: Mutex::new(state), changed: Notify::new(), released: Notify::new() }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding it cannot leave the counters worse than stale; keep serving.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Work admitted and not yet finished.
    pub fn depth(&self) -> usize {
        self.state().in_flight
    }

    /// Checks `c.stamp` against the group's current cost with every defence applied: `Ok(true)` if
    /// it meets it, `Ok(false)` if not (below the group's own cost, that is a failure: counted, and
    /// a challenge spent), or why it was not checked.
    pub async fn check(&self, c: Check) -> Result<bool, Refused> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(self.inner.cfg.pool_wait_ms);
        let (slot, cost) = loop {
            // Registered before the attempt, so a slot given back in between is not missed.
            let released = self.inner.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let now = Instant::now();
            {
                let mut st = self.state();
                let why = match self.admit(&mut st, &c, now) {
                    Ok(slot) => break (slot, c.group.map(|g| self.effective(c.base_cost, raise_of(&st, g))).unwrap_or(c.base_cost)),
                    Err(why) => why,
                };
                // A clean identity waits a little for a slot (one wait per identity, a few waits per
                // slot at most); one that failed recently is refused at once: served last.
                let may_wait = matches!(why, Refused::Busy | Refused::Share)
                    && tokio::time::Instant::now() < deadline
                    && !self.recently_failed(&st, &c.identity, now)
                    && st.waiting.len() < MAX_WAITERS_PER_SLOT * self.inner.capacity
                    && st.waiting.insert(c.identity);
                if !may_wait {
                    if why == Refused::ChallengeSpent {
                        self.fail(&mut st, &c, now);
                    }
                    self.account(&mut st, &c, why.label(), now);
                    return Err(why);
                }
            }
            let _ = tokio::time::timeout_at(deadline, released).await;
            self.state().waiting.remove(&c.identity);
        };
        crate::metrics::stamp_pool_depth(self.depth());
        let started = Instant::now();
        let (material, rounds, stamp) = (c.material.clone(), c.rounds, c.stamp.clone());
        let value = tokio::task::spawn_blocking(move || stamp::value(&stamp::workblock(&material, rounds), &stamp)).await;
        crate::metrics::stamp_validation(started.elapsed());
        drop(slot);
        crate::metrics::stamp_pool_depth(self.depth());
        // A panicked worker (it cannot, but) counts as a stamp worth nothing.
        let value = value.unwrap_or(0);
        let mut st = self.state();
        let outcome = if value >= cost {
            "valid"
        } else if value >= c.base_cost {
            // Enough for the group's own cost but not for the raise: a client that had not heard
            // the new cost yet, not a failure (nor a spent challenge).
            "below_raised_cost"
        } else {
            self.fail(&mut st, &c, Instant::now());
            "invalid"
        };
        self.account(&mut st, &c, outcome, Instant::now());
        Ok(value >= cost)
    }

    /// The fair-share admission (see the module doc); takes a slot or says why not.
    fn admit(&self, st: &mut State, c: &Check, now: Instant) -> Result<Slot, Refused> {
        if let Some(left) = st.failures.get(&c.identity).and_then(|f| f.cooldown_until).and_then(|u| u.checked_duration_since(now)) {
            return Err(Refused::Cooldown(left.as_secs().max(1)));
        }
        if c.challenge && st.spent.get(&c.material).is_some_and(|until| *until > now) {
            return Err(Refused::ChallengeSpent);
        }
        if st.in_flight >= self.inner.capacity {
            return Err(Refused::Busy);
        }
        let cfg = &self.inner.cfg;
        let share = |s: f64| ((self.inner.capacity as f64 * s).ceil() as usize).max(1);
        let failed = self.recently_failed(st, &c.identity, now);
        let over_identity = st.per_identity.get(&c.identity).copied().unwrap_or(0) >= cfg.pool_per_identity.max(1);
        let over_group = c.group.is_some_and(|g| st.per_group.get(&g).copied().unwrap_or(0) >= share(cfg.pool_group_share));
        let over_failed = failed && st.failed_in_flight >= share(cfg.pool_failed_share);
        if over_identity || over_group || over_failed {
            return Err(Refused::Share);
        }
        st.in_flight += 1;
        st.failed_in_flight += usize::from(failed);
        *st.per_identity.entry(c.identity).or_default() += 1;
        if let Some(g) = c.group {
            *st.per_group.entry(g).or_default() += 1;
        }
        Ok(Slot { pool: self.clone(), identity: c.identity, group: c.group, failed })
    }

    /// Records a failed stamp: the identity's count (and maybe its cooldown) and the spent challenge.
    fn fail(&self, st: &mut State, c: &Check, now: Instant) {
        let cfg = &self.inner.cfg;
        let window = Duration::from_secs(cfg.failure_window_secs);
        let f = st.failures.get_or_insert(c.identity, || Failure { count: 0, window_start: now, last: now, cooldown_until: None });
        if now.duration_since(f.window_start) > window {
            *f = Failure { count: 0, window_start: now, last: now, cooldown_until: f.cooldown_until };
        }
        f.count += 1;
        f.last = now;
        if f.count >= cfg.max_failures.max(1) {
            f.cooldown_until = Some(now + Duration::from_secs(cfg.cooldown_secs));
            f.count = 0;
            f.window_start = now;
        }
        if c.challenge {
            *st.spent.get_or_insert(c.material.clone(), || now) = now + Duration::from_secs(stamp::CHALLENGE_TTL_SECS);
        }
    }

    /// Counts the outcome, logs it at a bounded rate, and feeds the group's adaptive cost.
    fn account(&self, st: &mut State, c: &Check, outcome: &'static str, now: Instant) {
        crate::metrics::stamp_checked(c.purpose.label(), outcome, c.group);
        if outcome != "valid" {
            let (last, suppressed) = st.logged.entry((c.purpose.label(), outcome)).or_insert((None, 0));
            if last.is_none_or(|t| now.duration_since(t) >= LOG_EVERY) {
                tracing::info!(purpose = c.purpose.label(), outcome, group = c.group, suppressed = *suppressed, "stamp refused");
                (*last, *suppressed) = (Some(now), 0);
            } else {
                *suppressed += 1;
            }
        }
        let pressure = outcome != "valid" || c.purpose == Purpose::Join;
        if let (Some(g), true) = (c.group, pressure) {
            self.pressure_event(st, g, c.base_cost, now);
        }
    }

    fn pressure_event(&self, st: &mut State, group: i64, base: u32, now: Instant) {
        let cfg = &self.inner.cfg;
        if cfg.adaptive_max_cost == 0 {
            return;
        }
        let p = st.pressure.entry(group).or_insert(Pressure { raise: 0, events: 0, window_start: now, last_spike: now });
        if now.duration_since(p.window_start) >= SPIKE_WINDOW {
            p.events = 0;
            p.window_start = now;
        }
        p.events += 1;
        if p.events < cfg.adaptive_spike_per_min.max(1) {
            return;
        }
        // A spike: the quiet spell before a decay starts again, even at the maximum.
        p.events = 0;
        p.window_start = now;
        p.last_spike = now;
        // No raise past the point where it shows (the maximum), so that every decay step shows.
        if self.effective(base, p.raise) < cfg.adaptive_max_cost {
            p.raise += 1;
            tracing::warn!(group, raise = p.raise, "stamp traffic spiked; the group's stamp costs rise");
            st.changed.insert(group);
            self.inner.changed.notify_one();
        }
    }

    fn recently_failed(&self, st: &State, identity: &[u8; 16], now: Instant) -> bool {
        let window = Duration::from_secs(self.inner.cfg.failure_window_secs);
        st.failures.get(identity).is_some_and(|f| now.duration_since(f.last) <= window || f.cooldown_until.is_some_and(|u| u > now))
    }

    /// Whether `identity` had no failed stamp lately: only such identities get tickets.
    pub fn clean(&self, identity: &[u8; 16]) -> bool {
        let st = self.state();
        !self.recently_failed(&st, identity, Instant::now())
    }

    /// The cost a group asks for now, given its own `base` cost (join or post).
    pub fn cost(&self, group: i64, base: u32) -> u32 {
        let raise = raise_of(&self.state(), group);
        self.effective(base, raise)
    }

    fn effective(&self, base: u32, raise: u32) -> u32 {
        let cfg = &self.inner.cfg;
        if cfg.adaptive_max_cost == 0 || base == 0 || raise == 0 {
            return base;
        }
        (base + raise).max(cfg.adaptive_min_cost).min(cfg.adaptive_max_cost).max(base)
    }

    /// Lowers the costs of groups that were quiet long enough, forgets what expired, and samples
    /// the cost gauge; returns the groups whose costs changed since the last call (to announce).
    pub fn tick(&self) -> Vec<i64> {
        let now = Instant::now();
        let cfg = &self.inner.cfg;
        let mut st = self.state();
        let decay = Duration::from_secs(cfg.adaptive_decay_secs.max(1));
        let mut lowered = Vec::new();
        for (g, p) in st.pressure.iter_mut() {
            if p.raise > 0 && now.duration_since(p.last_spike) >= decay {
                p.raise -= 1;
                p.last_spike = now;
                lowered.push(*g);
            }
        }
        st.changed.extend(lowered);
        let raises: Vec<(i64, u32)> = st.pressure.iter().map(|(g, p)| (*g, p.raise)).collect();
        crate::metrics::stamp_cost_raise(&raises);
        st.pressure.retain(|_, p| p.raise > 0 || now.duration_since(p.window_start) < SPIKE_WINDOW);
        let window = Duration::from_secs(cfg.failure_window_secs);
        st.failures.retain(|f| now.duration_since(f.last) <= window || f.cooldown_until.is_some_and(|u| u > now));
        st.spent.retain(|until| *until > now);
        st.changed.drain().collect()
    }

    /// Resolves when a group's cost rose (the caller then runs [`StampPool::tick`] and announces).
    pub async fn changed(&self) {
        self.inner.changed.notified().await
    }
}

fn raise_of(st: &State, group: i64) -> u32 {
    st.pressure.get(&group).map(|p| p.raise).unwrap_or(0)
}

/// A slot in the pool, given back on drop.
struct Slot {
    pool: StampPool,
    identity: [u8; 16],
    group: Option<i64>,
    failed: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut st = self.pool.state();
        st.in_flight = st.in_flight.saturating_sub(1);
        st.failed_in_flight = st.failed_in_flight.saturating_sub(usize::from(self.failed));
        if let Some(n) = st.per_identity.get_mut(&self.identity) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                st.per_identity.remove(&self.identity);
            }
        }
        if let Some(g) = self.group
            && let Some(n) = st.per_group.get_mut(&g)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                st.per_group.remove(&g);
            }
        }
        drop(st);
        self.pool.inner.released.notify_waiters();
    }
}

/// A map of at most `cap` entries that forgets the oldest-inserted entry first.
struct Bounded<K, V> {
    map: HashMap<K, (u64, V)>,
    order: VecDeque<(K, u64)>,
    next: u64,
    cap: usize,
}

impl<K, V> Default for Bounded<K, V> {
    fn default() -> Self {
        Bounded { map: HashMap::new(), order: VecDeque::new(), next: 0, cap: 1 }
    }
}

impl<K: Hash + Eq + Clone, V> Bounded<K, V> {
    fn new(cap: usize) -> Self {
        Bounded { cap, ..Default::default() }
    }

    fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k).map(|(_, v)| v)
    }

    fn get_or_insert(&mut self, k: K, make: impl FnOnce() -> V) -> &mut V {
        if !self.map.contains_key(&k) {
            while self.map.len() >= self.cap {
                let Some((old, seq)) = self.order.pop_front() else { break };
                if self.map.get(&old).is_some_and(|(s, _)| *s == seq) {
                    self.map.remove(&old);
                }
            }
            self.next += 1;
            self.order.push_back((k.clone(), self.next));
        }
        let seq = self.next;
        &mut self.map.entry(k).or_insert_with(|| (seq, make())).1
    }

    fn retain(&mut self, mut keep: impl FnMut(&V) -> bool) {
        self.map.retain(|_, (_, v)| keep(v));
        let map = &self.map;
        self.order.retain(|(k, seq)| map.get(k).is_some_and(|(s, _)| s == seq));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> StampsConfig {
        StampsConfig { adaptive_spike_per_min: 5, adaptive_min_cost: 6, adaptive_max_cost: 9, ..Default::default() }
    }

    fn weak(material: &[u8], cost: u32) -> Vec<u8> {
        let wb = stamp::workblock(material, 25);
        (0u8..=255).map(|i| vec![i; 32]).find(|s| stamp::value(&wb, s) < cost).expect("a weak stamp")
    }

    fn check(who: u8, group: i64, material: &[u8], stamp: Vec<u8>, challenge: bool) -> Check {
        Check { purpose: Purpose::Join, group: Some(group), identity: [who; 16], material: material.to_vec(), challenge, rounds: 25, stamp, base_cost: 4 }
    }

    #[tokio::test]
    async fn failures_lead_to_a_cooldown_and_cost_the_ticket() {
        let pool = StampPool::new(8, &StampsConfig { max_failures: 3, ..cfg() });
        for i in 0..3u8 {
            let m = [i; 8];
            assert_eq!(pool.check(check(1, 1, &m, weak(&m, 4), false)).await, Ok(false));
        }
        assert!(!pool.clean(&[1; 16]), "a failing identity gets no ticket");
        // Now even a good stamp is refused unchecked.
        let good = stamp::generate(b"fresh", 25, 4).expect("stamp").to_vec();
        assert!(matches!(pool.check(check(1, 1, b"fresh", good.clone(), false)).await, Err(Refused::Cooldown(s)) if s > 500));
        // Another identity is not affected.
        assert_eq!(pool.check(check(2, 1, b"fresh", good, false)).await, Ok(true));
        assert!(pool.clean(&[2; 16]));
    }

    #[tokio::test]
    async fn a_stamp_made_before_a_raise_is_refused_but_not_a_failure() {
        let pool = StampPool::new(8, &StampsConfig { max_failures: 1, ..cfg() });
        {
            let mut st = pool.state();
            for _ in 0..5 {
                pool.pressure_event(&mut st, 1, 4, Instant::now());
            }
        }
        assert_eq!(pool.cost(1, 4), 6);
        let c = b"challenge".to_vec();
        let wb = stamp::workblock(&c, 25);
        let nth = |i: u32| {
            let mut s = [0u8; 32];
            s[..4].copy_from_slice(&i.to_le_bytes());
            s
        };
        let old = (0u32..).map(nth).find(|s| (4..6).contains(&stamp::value(&wb, s))).expect("a stamp of value 4 or 5");
        assert_eq!(pool.check(check(1, 1, &c, old.to_vec(), true)).await, Ok(false));
        assert!(pool.clean(&[1; 16]), "no failure recorded");
        let good = stamp::generate(&c, 25, 6).expect("stamp").to_vec();
        assert_eq!(pool.check(check(1, 1, &c, good, true)).await, Ok(true), "the challenge is not spent");
    }

    #[tokio::test]
    async fn a_challenge_that_failed_is_spent() {
        let pool = StampPool::new(8, &cfg());
        let c = b"challenge".to_vec();
        assert_eq!(pool.check(check(1, 1, &c, weak(&c, 4), true)).await, Ok(false));
        let good = stamp::generate(&c, 25, 4).expect("stamp").to_vec();
        assert_eq!(pool.check(check(1, 1, &c, good.clone(), true)).await, Err(Refused::ChallengeSpent));
        // The spent challenge counted as the second failure; the third starts the cooldown.
        assert_eq!(pool.check(check(1, 1, &c, good, true)).await, Err(Refused::ChallengeSpent));
        assert!(matches!(pool.check(check(1, 1, b"other", vec![0; 32], true)).await, Err(Refused::Cooldown(_))));
    }

    #[tokio::test]
    async fn a_clean_identity_waits_for_a_slot_and_a_failed_one_does_not() {
        let pool = StampPool::new(1, &StampsConfig { pool_wait_ms: 60_000, ..cfg() });
        let held = {
            let mut st = pool.state();
            pool.fail(&mut st, &check(2, 1, b"y", vec![], false), Instant::now());
            pool.admit(&mut st, &check(9, 1, b"x", vec![], false), Instant::now()).expect("slot")
        };
        assert_eq!(pool.check(check(2, 1, b"m", vec![0; 32], false)).await, Err(Refused::Busy), "served last: no wait");
        let good = stamp::generate(b"m", 25, 4).expect("stamp").to_vec();
        let waiting = pool.clone();
        let waiter = tokio::spawn(async move { waiting.check(check(1, 1, b"m", good, false)).await });
        while !pool.state().waiting.contains(&[1; 16]) {
            tokio::task::yield_now().await;
        }
        drop(held);
        assert_eq!(waiter.await.expect("task"), Ok(true));
    }

    #[test]
    fn shares_keep_room_for_clean_identities_and_other_groups() {
        let pool = StampPool::new(8, &StampsConfig { pool_per_identity: 1, pool_group_share: 0.5, pool_failed_share: 0.25, ..cfg() });
        let now = Instant::now();
        let mut st = pool.state();
        // Identities 10..20 failed recently (no cooldown yet).
        for who in 10..20u8 {
            pool.fail(&mut st, &check(who, 1, b"x", vec![], false), now);
        }
        let mut held = Vec::new();
        // Failed identities get a quarter of the pool (2 slots), each one slot at most.
        assert!(pool.admit(&mut st, &check(10, 1, b"x", vec![], false), now).map(|s| held.push(s)).is_ok());
        assert_eq!(pool.admit(&mut st, &check(10, 1, b"x", vec![], false), now).err(), Some(Refused::Share), "one per identity");
        assert!(pool.admit(&mut st, &check(11, 2, b"x", vec![], false), now).map(|s| held.push(s)).is_ok());
        assert_eq!(pool.admit(&mut st, &check(12, 3, b"x", vec![], false), now).err(), Some(Refused::Share), "failed share full");
        // Clean identities of group 1 get up to half the pool (4 slots, one is a failed one's).
        for who in 1..4u8 {
            assert!(pool.admit(&mut st, &check(who, 1, b"x", vec![], false), now).map(|s| held.push(s)).is_ok());
        }
        assert_eq!(pool.admit(&mut st, &check(4, 1, b"x", vec![], false), now).err(), Some(Refused::Share), "group share full");
        // Group 3 still gets in, up to the capacity.
        for who in 5..8u8 {
            assert!(pool.admit(&mut st, &check(who, 3, b"x", vec![], false), now).map(|s| held.push(s)).is_ok());
        }
        assert_eq!(pool.admit(&mut st, &check(9, 3, b"x", vec![], false), now).err(), Some(Refused::Busy));
        drop(st);
        assert_eq!(pool.depth(), 8);
        drop(held);
        assert_eq!(pool.depth(), 0);
        assert!(pool.state().per_identity.is_empty() && pool.state().per_group.is_empty());
    }

    #[test]
    fn the_tables_are_bounded_and_forget_the_oldest() {
        let pool = StampPool::new(1, &StampsConfig { tracked_identities: 100, ..cfg() });
        let now = Instant::now();
        let mut st = pool.state();
        for i in 0..1000u32 {
            let mut who = [0u8; 16];
            who[..4].copy_from_slice(&i.to_be_bytes());
            pool.fail(&mut st, &Check { identity: who, ..check(0, 1, &i.to_be_bytes(), vec![], true) }, now);
        }
        assert_eq!((st.failures.len(), st.spent.len()), (100, 100));
        let mut newest = [0u8; 16];
        newest[..4].copy_from_slice(&999u32.to_be_bytes());
        assert!(st.failures.get(&newest).is_some() && st.failures.get(&[0; 16]).is_none());
        assert!(st.failures.order.len() <= 100);
    }

    #[tokio::test]
    async fn cost_rises_on_a_spike_within_the_range_and_decays() {
        let pool = StampPool::new(8, &StampsConfig { adaptive_decay_secs: 1, ..cfg() });
        assert_eq!(pool.cost(1, 4), 4);
        let mut st = pool.state();
        let now = Instant::now();
        for _ in 0..5 {
            pool.pressure_event(&mut st, 1, 4, now);
        }
        drop(st);
        // 4 + 1, lifted to the minimum of 6; a free group stays free; another group is untouched.
        assert_eq!((pool.cost(1, 4), pool.cost(1, 0), pool.cost(1, 12), pool.cost(2, 4)), (6, 0, 12, 4));
        let mut st = pool.state();
        for _ in 0..50 {
            pool.pressure_event(&mut st, 1, 4, now);
        }
        drop(st);
        assert_eq!(pool.cost(1, 4), 9, "capped at the maximum");
        assert_eq!(pool.tick(), vec![1], "the raise is reported for an announce");
        pool.state().pressure.get_mut(&1).expect("pressure").last_spike = now - Duration::from_secs(2);
        assert_eq!(pool.tick(), vec![1]);
        assert_eq!(pool.cost(1, 4), 8, "one bit lower after a quiet spell");
        let off = StampPool::new(8, &StampsConfig { adaptive_max_cost: 0, ..cfg() });
        let mut st = off.state();
        for _ in 0..50 {
            off.pressure_event(&mut st, 1, 4, now);
        }
        drop(st);
        assert_eq!(off.cost(1, 4), 4, "adaptive cost off");
    }
}
