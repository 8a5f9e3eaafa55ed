//! Token buckets and the announce schedule: how meshgroup spends a radio network's airtime.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

use tokio::time::Instant;

/// A token bucket: `rate` tokens per second, holding at most `burst`.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: f64) -> Self {
        let burst = burst.max(1.0);
        TokenBucket { rate: rate.max(f64::MIN_POSITIVE), burst, tokens: burst, last: Instant::now() }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
    }

    /// Takes a token now if there is one.
    pub fn try_take(&mut self) -> bool {
        self.refill(Instant::now());
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until a token is available (zero if one is).
    pub fn wait_time(&mut self) -> Duration {
        self.refill(Instant::now());
        if self.tokens >= 1.0 { Duration::ZERO } else { Duration::from_secs_f64((1.0 - self.tokens) / self.rate) }
    }

    /// Waits for a token and takes it; returns whether it had to wait.
    pub async fn take(&mut self) -> bool {
        let mut waited = false;
        loop {
            let wait = self.wait_time();
            if wait.is_zero() && self.try_take() {
                return waited;
            }
            waited = true;
            tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
        }
    }
}

/// The time to the next whole second of the wall clock, plus a margin for the clock reads between
/// here and the crate stamping the announce.
fn until_next_second() -> Duration {
    let into = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_millis()).unwrap_or(0);
    Duration::from_millis(u64::from(1000 - into) + 50)
}

/// When each group announces next: every `interval` plus up to `jitter × interval` of random delay,
/// never faster than the global budget allows.
#[derive(Debug)]
pub struct AnnounceSchedule {
    queue: BinaryHeap<Reverse<(Instant, u64, i64)>>,
    /// The live generation of each scheduled group; stale heap entries are skipped.
    live: HashMap<i64, u64>,
    generation: u64,
    interval: Duration,
    jitter: f64,
    budget: TokenBucket,
}

impl AnnounceSchedule {
    /// `budget_per_sec` announce packets per second in total, with a burst of one second's worth
    /// ([`Self::next`] takes one token per group, [`Self::pace`] one per further packet).
    pub fn new(interval: Duration, jitter: f64, budget_per_sec: f64) -> Self {
        AnnounceSchedule {
            queue: BinaryHeap::new(),
            live: HashMap::new(),
            generation: 0,
            interval,
            jitter: jitter.clamp(0.0, 1.0),
            budget: TokenBucket::new(budget_per_sec, budget_per_sec.max(1.0)),
        }
    }

    /// Schedules (or reschedules) a group to announce at `at`.
    pub fn schedule_at(&mut self, group: i64, at: Instant) {
        self.generation += 1;
        self.live.insert(group, self.generation);
        self.queue.push(Reverse((at, self.generation, group)));
    }

    /// Announce a new group now.
    pub fn announce_now(&mut self, group: i64) {
        self.schedule_at(group, Instant::now());
    }

    /// Announce a change (name, visibility, stamp cost) at the start of the next wall-clock second.
    /// A Reticulum peer replaces the announce it holds only with one emitted in a later whole second
    /// (the emission time in the random blob has one-second resolution), so a change announced in
    /// the second of the announce or path response a peer has just heard would be ignored by that
    /// peer until the next periodic announce.
    pub fn announce_change(&mut self, group: i64) {
        self.schedule_at(group, Instant::now() + until_next_second());
    }

    /// Waits for, and takes, one more budget token: a group's second announce packet goes out a
    /// budget step after its first. The Python reference holds back every announce on a new
    /// interface that hears more than 3 in a second, so packets never go back to back at the
    /// default budget. Cancel-safe.
    pub async fn pace(&mut self) {
        loop {
            let wait = self.budget.wait_time();
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
                continue;
            }
            if self.budget.try_take() {
                return;
            }
        }
    }

    pub fn remove(&mut self, group: i64) {
        self.live.remove(&group);
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    fn next_interval(&self) -> Duration {
        let extra = if self.jitter > 0.0 { rand::random::<f64>() * self.jitter } else { 0.0 };
        self.interval.mul_f64(1.0 + extra)
    }

    /// Waits until a group is due and the budget allows it; returns the group and whether the
    /// budget made it wait (a deferred announce). Reschedules the group for its next interval.
    /// Cancel-safe: nothing changes until it returns, so it can sit in a `select!`.
    pub async fn next(&mut self) -> (i64, bool) {
        let mut deferred = false;
        loop {
            let Some(Reverse((at, generation, group))) = self.queue.peek().copied() else {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                continue;
            };
            if self.live.get(&group) != Some(&generation) {
                self.queue.pop();
                continue;
            }
            if at > Instant::now() {
                tokio::time::sleep_until(at).await;
                continue;
            }
            let wait = self.budget.wait_time();
            if !wait.is_zero() {
                deferred = true;
                tokio::time::sleep(wait).await;
                continue;
            }
            if !self.budget.try_take() {
                continue;
            }
            self.queue.pop();
            let next = Instant::now() + self.next_interval();
            self.schedule_at(group, next);
            return (group, deferred);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn budget_spreads_a_thousand_groups() {
        let mut s = AnnounceSchedule::new(Duration::from_secs(3600), 0.0, 10.0);
        for g in 0..1000 {
            s.announce_now(g);
        }
        let start = Instant::now();
        let mut seen = std::collections::HashSet::new();
        let mut deferred = 0;
        for _ in 0..1000 {
            let (g, d) = s.next().await;
            seen.insert(g);
            deferred += usize::from(d);
        }
        let took = start.elapsed().as_secs_f64();
        assert_eq!(seen.len(), 1000, "every group announced once");
        // 10 tokens of burst, then 10/s: about 99 s, never faster.
        assert!((98.0..=101.0).contains(&took), "took {took}");
        assert!(deferred > 900);
    }

    #[tokio::test(start_paused = true)]
    async fn a_groups_second_packet_waits_a_budget_step() {
        let mut s = AnnounceSchedule::new(Duration::from_secs(3600), 0.0, 1.0);
        s.announce_now(1);
        s.next().await;
        let t0 = Instant::now();
        s.pace().await;
        let waited = t0.elapsed();
        assert!(waited >= Duration::from_millis(990) && waited <= Duration::from_millis(1100), "waited {waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_goes_out_in_the_next_whole_second() {
        let mut s = AnnounceSchedule::new(Duration::from_secs(3600), 0.0, 1000.0);
        let t0 = Instant::now();
        s.announce_change(1);
        s.announce_change(1);
        assert_eq!(s.next().await.0, 1);
        let waited = t0.elapsed();
        assert!(waited >= Duration::from_millis(50) && waited <= Duration::from_millis(1050), "waited {waited:?}");
        // The two requests made one announce: the next is the periodic one.
        let t1 = Instant::now();
        s.next().await;
        assert!(t1.elapsed() >= Duration::from_secs(3600));
    }

    #[tokio::test(start_paused = true)]
    async fn interval_and_jitter_bound_the_next_announce() {
        let mut s = AnnounceSchedule::new(Duration::from_secs(100), 0.5, 1000.0);
        s.announce_now(1);
        let (g, _) = s.next().await;
        assert_eq!(g, 1);
        let t0 = Instant::now();
        let (g, _) = s.next().await;
        let gap = t0.elapsed().as_secs_f64();
        assert_eq!(g, 1);
        assert!((100.0..=150.0).contains(&gap), "gap {gap}");
    }

    #[tokio::test(start_paused = true)]
    async fn removed_and_rescheduled_groups_announce_once() {
        let mut s = AnnounceSchedule::new(Duration::from_secs(100), 0.0, 1000.0);
        s.announce_now(1);
        s.announce_now(2);
        s.remove(1);
        s.announce_now(2);
        let (g, _) = s.next().await;
        assert_eq!(g, 2);
        assert_eq!(s.len(), 1);
        let t0 = Instant::now();
        let (g, _) = s.next().await;
        assert_eq!((g, t0.elapsed().as_secs()), (2, 100));
    }

    #[tokio::test(start_paused = true)]
    async fn bucket_rate_holds() {
        let mut b = TokenBucket::new(5.0, 2.0);
        let t0 = Instant::now();
        for _ in 0..12 {
            b.take().await;
        }
        // 2 from the burst, 10 more at 5/s.
        assert_eq!(t0.elapsed().as_secs(), 2);
    }
}
