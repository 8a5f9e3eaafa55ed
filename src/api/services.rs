//! What request handling needs, shared by the router, the inbound LXMF path and the server
//! destination: the node, the registry, the store and the bounded side work they start.
//!
//! It holds nothing of its users: the inbound LXMF path (`api::lxmf::Inbound`) and the server
//! destination (`api::hosting::Hosting`) each hold their own state and take these services,
//! and the router holds all three, so the modules form no cycle.

use std::collections::HashSet;
use std::sync::Arc;

use actix::Addr;
use tokio::sync::Semaphore;

use crate::actors::fanout::FanoutActor;
use crate::actors::supervisor::{Registry, Supervisor};
use crate::stamps::StampPool;
use crate::store::Store;
use crate::transport::Node;

/// What request handling needs, shared by every request task.
pub struct Services {
    pub node: Node,
    pub registry: Registry,
    pub supervisor: Addr<Supervisor>,
    /// The shared fan-out, told when a member's path arrives.
    pub fanout: Addr<FanoutActor>,
    pub stamps: StampPool,
    pub store: Store,
    pub limits: crate::config::LimitsConfig,
    /// Outbound LXMF and delivery proofs.
    pub courier: Arc<crate::lxmf::courier::Courier>,
    /// The propagation node, for syncing group inboxes.
    pub propagation: Arc<crate::lxmf::propagation::Propagation>,
    /// Shutdown, and the work it waits for.
    pub life: crate::lifecycle::Lifecycle,
    /// Where direct posts wait until they are stored (`None`: not journaled, as in tools).
    pub journal: Option<Arc<crate::journal::Journal>>,
    /// How many refused requests are logged: a flood of bad input cannot fill the log.
    pub refusal_log: LogBudget,
    /// Store writes nobody waits for (announces heard, keys verified) in flight at once.
    pub side_writes: Arc<Semaphore>,
    /// Identities whose key this process has stored: an identity's key never changes (the hash
    /// is the key's), so it is written once, not on every post or identify.
    pub remembered: Arc<std::sync::Mutex<HashSet<[u8; 16]>>>,
}

/// Identities [`Services::remembered`] holds; past it the set starts again (a write repeats).
const MAX_REMEMBERED: usize = 100_000;

/// Side writes in flight at once: a flood of announces or identifies while the database is slow
/// cannot pile up tasks. Beyond it a write is dropped and counted; each is an upsert that the
/// peer's next announce or identify repeats.
pub const SIDE_WRITES: usize = 64;

impl Services {
    /// Runs a store write that nobody waits for, off the event loop and within [`SIDE_WRITES`].
    pub fn side_write<F>(&self, what: &'static str, write: F)
    where
        F: std::future::Future<Output = Result<(), crate::store::StoreError>> + Send + 'static,
    {
        let Ok(permit) = self.side_writes.clone().try_acquire_owned() else {
            crate::metrics::work_refused(what, "busy");
            return;
        };
        self.life.spawn(async move {
            if let Err(err) = write.await {
                tracing::debug!(%err, what, "side write failed");
            }
            drop(permit);
        });
    }

    /// Keeps a verified key, once per identity and process.
    pub fn remember(&self, identity_hash: [u8; 16], public_key: [u8; 64]) {
        if self.remembered.lock().is_ok_and(|r| r.contains(&identity_hash)) {
            return;
        }
        let (store, remembered) = (self.store.clone(), self.remembered.clone());
        self.side_write("remember_identity", async move {
            let lxmf_hash = hex::encode(crate::wire::identity::destination_hash(crate::wire::identity::LXMF_ASPECT, &identity_hash));
            store.remember_identity(&hex::encode(identity_hash), &lxmf_hash, &public_key).await?;
            if let Ok(mut r) = remembered.lock() {
                if r.len() >= MAX_REMEMBERED {
                    r.clear();
                }
                r.insert(identity_hash);
            }
            Ok(())
        });
    }
}

/// Lines per second a kind of log line may take; beyond it lines are counted, then summarised.
pub struct LogBudget {
    bucket: std::sync::Mutex<crate::pacing::TokenBucket>,
    dropped: std::sync::atomic::AtomicU64,
}

impl LogBudget {
    /// `per_sec` lines a second, with a burst of as many.
    pub fn new(per_sec: f64) -> Self {
        LogBudget { bucket: std::sync::Mutex::new(crate::pacing::TokenBucket::new(per_sec, per_sec)), dropped: std::sync::atomic::AtomicU64::new(0) }
    }

    /// Whether a line may be logged now; the first one after a silence says how many were not.
    pub fn allow(&self) -> bool {
        let ok = self.bucket.lock().map(|mut b| b.try_take()).unwrap_or(false);
        if !ok {
            self.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        } else {
            let n = self.dropped.swap(0, std::sync::atomic::Ordering::Relaxed);
            if n > 0 {
                tracing::warn!(not_logged = n, "refused requests over the log budget were counted, not logged");
            }
        }
        ok
    }
}
