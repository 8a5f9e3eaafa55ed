//! Announces of our destinations, and the reconnect notices that call for them again.

use std::sync::Weak;
use std::time::{Duration, Instant};

use rns_transport::hash::AddressHash;
use tokio::sync::mpsc;

use super::{Inner, Node, NodeError, NodeEvent};

/// RNS MTU 500 minus header (19) and the announce fields (148, no ratchet). The crate
/// itself only refuses at 256 KiB, which the reference and small-MTU links cannot carry.
pub const MAX_ANNOUNCE_APP_DATA: usize = 500 - 19 - 148;

/// Turns the interfaces' reconnect notices into one event each. The crate does not re-announce
/// on a reconnect; the announcers do, paced by their budget (one event may stand for a burst of
/// reconnects, so a full queue drops the duplicate).
pub(super) async fn forward_reconnects(mut rx: mpsc::Receiver<AddressHash>, out: mpsc::Sender<NodeEvent>) {
    while rx.recv().await.is_some() {
        while rx.try_recv().is_ok() {}
        if out.send(NodeEvent::NewListeners { cause: "reconnect" }).await.is_err() {
            return;
        }
    }
}

impl Node {
    /// The crate drops announces silently when an interface queue (128) is full:
    /// callers announcing many destinations must pace them.
    pub async fn announce(&self, dest: [u8; 16], app_data: &[u8]) -> Result<(), NodeError> {
        if app_data.len() > MAX_ANNOUNCE_APP_DATA {
            return Err(NodeError::TooLarge(app_data.len(), MAX_ANNOUNCE_APP_DATA));
        }
        let handle = {
            let mut dests = self.inner.dests.lock().await;
            let reg = dests.get_mut(&dest).ok_or(NodeError::UnknownDestination(dest))?;
            reg.app_data = (!app_data.is_empty()).then(|| app_data.to_vec());
            reg.dest.clone()
        };
        let app = (!app_data.is_empty()).then(|| app_data.to_vec());
        // Path responses are built from this copy, not from the last announce.
        self.inner.transport.set_destination_announce_app_data(&handle, app.clone()).await;
        self.inner.transport.send_announce(&handle, app.as_deref()).await;
        Ok(())
    }
}

/// New peers on our TCP servers cause one re-announce at most this often: a client that flaps,
/// or a crowd that connects at once, costs one round of announces, not one per connection.
const NEW_PEER_ANNOUNCE_EVERY: Duration = Duration::from_secs(10);

/// Turns clients newly attached to our TCP servers into [`NodeEvent::NewListeners`]. The crate
/// tells of an accepted client only through its listener's status (a connection counter, no
/// event), so the counters are read every second.
pub(super) async fn watch_new_peers(node: Weak<Inner>, out: mpsc::Sender<NodeEvent>) {
    let mut seen = 0u64;
    let mut pending = false;
    let mut last_sent: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(inner) = node.upgrade() else { return };
        let accepted: u64 = match inner.listeners.lock() {
            Ok(l) => l.iter().map(|h| h.to_json()["accepted_connections"].as_u64().unwrap_or(0)).sum(),
            Err(_) => seen,
        };
        drop(inner);
        if accepted > seen {
            seen = accepted;
            pending = true;
        }
        if pending && last_sent.is_none_or(|t| t.elapsed() >= NEW_PEER_ANNOUNCE_EVERY) {
            pending = false;
            last_sent = Some(Instant::now());
            if out.send(NodeEvent::NewListeners { cause: "new_peer" }).await.is_err() {
                return;
            }
        }
    }
}
