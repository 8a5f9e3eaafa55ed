//! Announces of our destinations, and the reconnect notices that call for them again.

use rns_transport::hash::AddressHash;
use tokio::sync::mpsc;

use super::{Node, NodeError, NodeEvent};

/// RNS MTU 500 minus header (19) and the announce fields (148, no ratchet). The crate
/// itself only refuses at 256 KiB, which the reference and small-MTU links cannot carry.
pub const MAX_ANNOUNCE_APP_DATA: usize = 500 - 19 - 148;

/// Turns the interfaces' reconnect notices into one event each. The crate does not re-announce
/// on a reconnect; the announcers do, paced by their budget (one event may stand for a burst of
/// reconnects, so a full queue drops the duplicate).
pub(super) async fn forward_reconnects(mut rx: mpsc::Receiver<AddressHash>, out: mpsc::Sender<NodeEvent>) {
    while rx.recv().await.is_some() {
        while rx.try_recv().is_ok() {}
        if out.send(NodeEvent::InterfaceReconnected).await.is_err() {
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
