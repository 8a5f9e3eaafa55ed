//! The event pump. The crate publishes events on broadcast channels of capacity 1024 that drop
//! events for slow readers, so each channel gets a task that only forwards into one bounded queue
//! (a full queue makes the broadcast lag, and the loss is counted). One pump task turns those raw
//! events into [`NodeEvent`]s, pairing each inbound packet with the hash its proof needs.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rns_transport::destination::link::{LinkEvent, LinkEventData};
use rns_transport::packet::PacketContext;
use rns_transport::resource::{ResourceEvent, ResourceEventKind};
use rns_transport::transport::{AnnounceEvent, DeliveryReceipt, ReceiptHandler, ReceivedData, ReceivedPayloadMode};
use sha2::Digest;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::mpsc;

use super::{Inner, addr, public_key};

/// Raw crate events between the forwarding tasks and the pump.
pub(super) const RAW_QUEUE: usize = 8192;

/// Packet hashes from the proof callback waiting for their packet event, per destination.
pub(super) const PROVED_QUEUE: usize = 8192;

/// An inbound packet whose hash has not come waits this long, then goes on unprovable.
const PROOF_PAIRING_WAIT: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub enum NodeEvent {
    LinkEstablished {
        dest: [u8; 16],
        link_id: [u8; 16],
        /// The interface the link came in on, when the crate still knows the link.
        iface: Option<[u8; 16]>,
    },
    /// An inbound Resource on one of our links: the first part of a transfer, a finished segment
    /// of a split one, or its end. The crate accepts every advertisement (but requests over
    /// [`super::NodeConfig::max_request_transfer`]), so this is where transfers can be counted and
    /// a link carrying too many, or too large ones, torn down before the rest is decompressed.
    Transfer {
        link_id: [u8; 16],
        hash: [u8; 32],
        stage: TransferStage,
    },
    LinkIdentified {
        dest: [u8; 16],
        link_id: [u8; 16],
        public_key: [u8; 64],
        identity_hash: [u8; 16],
    },
    /// `data` is the request's data element as [`crate::wire::envelope::RequestEnvelope`] has it
    /// (`None` for nil).
    Request {
        dest: [u8; 16],
        link_id: [u8; 16],
        request_id: [u8; 16],
        path_hash: [u8; 16],
        data: Option<Vec<u8>>,
        requested_at: f64,
    },
    LinkClosed {
        dest: [u8; 16],
        link_id: [u8; 16],
    },
    /// A decrypted packet for one of our SINGLE destinations; prove it with [`Node::prove`].
    Packet {
        dest: [u8; 16],
        data: Vec<u8>,
        packet_hash: Option<[u8; 32]>,
    },
    LinkPacket {
        dest: [u8; 16],
        link_id: [u8; 16],
        data: Vec<u8>,
    },
    LinkResource {
        dest: [u8; 16],
        link_id: [u8; 16],
        data: Vec<u8>,
    },
    Announce {
        dest: [u8; 16],
        public_key: [u8; 64],
        name_hash: [u8; 10],
        app_data: Vec<u8>,
        ratchet: Option<[u8; 32]>,
    },
    Proof {
        packet_hash: [u8; 32],
    },
    EventsLost {
        channel: &'static str,
        count: u64,
    },
    /// Someone new may be listening: an interface came back after a disconnect (its far side, a
    /// restarted rnsd or hub, has lost its path table), or a peer attached to one of our TCP
    /// servers (a client that was not there for our announces). Our destinations should be
    /// announced again, within the announce budget.
    NewListeners {
        cause: &'static str,
    },
}

/// How far an inbound Resource has come (see [`NodeEvent::Transfer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferStage {
    /// Parts are arriving (the first event of each Resource, or of each segment of a split one).
    Receiving,
    /// A segment of a split Resource is complete; `total_bytes` is the advertised size of the
    /// whole, decompressed: the first figure that tells a bomb from a big honest body.
    Segment { total_bytes: u64 },
    /// Completed or failed.
    Ended,
}

pub(super) enum Raw {
    Announce(AnnounceEvent),
    Link(LinkEventData),
    Data(ReceivedData),
    Resource(ResourceEvent),
    Proof([u8; 32]),
    Lagged(&'static str, u64),
}

pub(super) struct ProofSink(pub(super) mpsc::Sender<Raw>);

impl ReceiptHandler for ProofSink {
    /// A synchronous callback: a full queue loses the proof (the row is resent later), counted.
    fn on_receipt(&self, receipt: &DeliveryReceipt) {
        if self.0.try_send(Raw::Proof(receipt.message_id)).is_err() {
            crate::metrics::transport_events_lost("proofs", 1);
        }
    }
}

pub(super) fn drain<T: Clone + Send + 'static>(mut rx: broadcast::Receiver<T>, channel: &'static str, tx: mpsc::Sender<Raw>, wrap: fn(T) -> Raw) {
    tokio::spawn(async move {
        loop {
            let raw = match rx.recv().await {
                Ok(ev) => wrap(ev),
                Err(RecvError::Lagged(n)) => Raw::Lagged(channel, n),
                Err(RecvError::Closed) => break,
            };
            if tx.send(raw).await.is_err() {
                break;
            }
        }
    });
}

/// Pairs inbound packets with the hashes the proof callback captured. The callback runs right
/// after the crate publishes the packet, once per packet, so per destination the n-th hash
/// belongs to the n-th packet; whichever comes first waits for the other, briefly.
#[derive(Default)]
struct ProofPairing {
    hashes: HashMap<[u8; 16], VecDeque<(Instant, [u8; 32])>>,
    packets: HashMap<[u8; 16], VecDeque<(Instant, Vec<u8>)>>,
}

impl ProofPairing {
    /// A packet arrived: its event, if its hash is already here. A hash older than the wait
    /// belonged to a packet whose event was lost; it is dropped, never paired.
    fn packet(&mut self, dest: [u8; 16], data: Vec<u8>) -> Option<NodeEvent> {
        let fresh = self.hashes.get_mut(&dest).and_then(|q| {
            while q.front().is_some_and(|(t, _)| t.elapsed() >= PROOF_PAIRING_WAIT) {
                q.pop_front();
            }
            q.pop_front()
        });
        match fresh {
            Some((_, h)) => Some(NodeEvent::Packet { dest, data, packet_hash: Some(h) }),
            None => {
                self.packets.entry(dest).or_default().push_back((Instant::now(), data));
                None
            }
        }
    }

    /// A hash arrived: the event of the packet that waited for it, if one did.
    fn hash(&mut self, dest: [u8; 16], hash: [u8; 32]) -> Option<NodeEvent> {
        match self.packets.get_mut(&dest).and_then(VecDeque::pop_front) {
            Some((_, data)) => Some(NodeEvent::Packet { dest, data, packet_hash: Some(hash) }),
            None => {
                let q = self.hashes.entry(dest).or_default();
                if q.len() >= PROVED_QUEUE {
                    q.pop_front();
                }
                q.push_back((Instant::now(), hash));
                None
            }
        }
    }

    /// Forgets every waiting hash and sends the waiting packets on unprovable (their senders
    /// retry): after a loss, the order that pairs them no longer holds.
    fn clear(&mut self) {
        self.hashes.clear();
        for (_, q) in self.packets.iter_mut() {
            for (t, _) in q.iter_mut() {
                if let Some(old) = t.checked_sub(PROOF_PAIRING_WAIT) {
                    *t = old;
                }
            }
        }
    }

    /// Packets that waited too long go on without a hash (unprovable: the sender retries);
    /// hashes that waited too long belonged to a packet event the broadcast lost.
    fn expire(&mut self) -> Vec<NodeEvent> {
        let now = Instant::now();
        let old = |t: &Instant| now.duration_since(*t) >= PROOF_PAIRING_WAIT;
        let mut out = Vec::new();
        for (dest, q) in &mut self.packets {
            while q.front().is_some_and(|(t, _)| old(t)) {
                if let Some((_, data)) = q.pop_front() {
                    out.push(NodeEvent::Packet { dest: *dest, data, packet_hash: None });
                }
            }
        }
        for q in self.hashes.values_mut() {
            while q.front().is_some_and(|(t, _)| old(t)) {
                q.pop_front();
            }
        }
        self.packets.retain(|_, q| !q.is_empty());
        self.hashes.retain(|_, q| !q.is_empty());
        out
    }
}

pub(super) async fn pump(
    mut raw: mpsc::Receiver<Raw>,
    mut proved: mpsc::Receiver<([u8; 16], [u8; 32])>,
    out: mpsc::Sender<NodeEvent>,
    node: std::sync::Weak<Inner>,
) {
    let mut links: HashMap<[u8; 16], [u8; 16]> = HashMap::new();
    // The Resource each inbound link last reported parts of: one event per transfer, not per part.
    let mut receiving: HashMap<[u8; 16], [u8; 32]> = HashMap::new();
    let mut pairing = ProofPairing::default();
    let mut sweep = tokio::time::interval(PROOF_PAIRING_WAIT / 4);
    loop {
        let ev = tokio::select! {
            ev = raw.recv() => match ev {
                Some(ev) => ev,
                None => break,
            },
            Some((dest, hash)) = proved.recv() => {
                // A hash the callback could not queue shifts the order as a lost packet would.
                if node.upgrade().is_some_and(|n| n.hashes_lost.swap(false, std::sync::atomic::Ordering::Relaxed)) {
                    pairing.clear();
                }
                if let Some(event) = pairing.hash(dest, hash)
                    && out.send(event).await.is_err()
                {
                    break;
                }
                continue;
            }
            _ = sweep.tick() => {
                for event in pairing.expire() {
                    if out.send(event).await.is_err() {
                        return;
                    }
                }
                continue;
            }
        };
        let event = match ev {
            Raw::Lagged(channel, count) => {
                // A lost packet event would pair every later hash with the wrong packet.
                if channel == "received_data" {
                    pairing.clear();
                }
                Some(NodeEvent::EventsLost { channel, count })
            }
            Raw::Proof(packet_hash) => Some(NodeEvent::Proof { packet_hash }),
            Raw::Announce(a) => {
                let d = a.destination.lock().await;
                Some(NodeEvent::Announce {
                    dest: addr(&d.desc.address_hash),
                    public_key: public_key(&d.desc.identity),
                    name_hash: a.name_hash,
                    app_data: a.app_data.as_slice().to_vec(),
                    ratchet: a.ratchet,
                })
            }
            Raw::Link(l) => {
                let (dest, link_id) = (addr(&l.address_hash), addr(&l.id));
                match l.event {
                    LinkEvent::Activated => {
                        links.insert(link_id, dest);
                        let iface = match node.upgrade() {
                            Some(inner) => match inner.transport.find_in_link(&l.id).await {
                                Some(link) => link.lock().await.ingress_iface().map(|i| addr(&i)),
                                None => None,
                            },
                            None => None,
                        };
                        Some(NodeEvent::LinkEstablished { dest, link_id, iface })
                    }
                    LinkEvent::PeerIdentified(id) => {
                        Some(NodeEvent::LinkIdentified { dest, link_id, public_key: public_key(&id), identity_hash: addr(&id.address_hash) })
                    }
                    LinkEvent::Closed => {
                        links.remove(&link_id);
                        receiving.remove(&link_id);
                        Some(NodeEvent::LinkClosed { dest, link_id })
                    }
                    LinkEvent::Data(p) => match (p.context(), p.request_id()) {
                        (PacketContext::Request, Some(request_id)) => request_event(dest, link_id, request_id, p.as_slice()),
                        (PacketContext::None, _) => Some(NodeEvent::LinkPacket { dest, link_id, data: p.as_slice().to_vec() }),
                        _ => None,
                    },
                }
            }
            // Link payloads are echoed here with the link id as destination (FullWire); skip them.
            Raw::Data(d) if d.payload_mode == ReceivedPayloadMode::DestinationStripped && d.context == Some(PacketContext::None) => {
                pairing.packet(addr(&d.destination), d.data.as_slice().to_vec())
            }
            Raw::Data(_) => None,
            Raw::Resource(r)
                if matches!(
                    r.kind,
                    ResourceEventKind::OutboundComplete
                        | ResourceEventKind::OutboundFailed
                        | ResourceEventKind::OutboundRejected
                        | ResourceEventKind::OutboundCancelled
                ) =>
            {
                let done = matches!(r.kind, ResourceEventKind::OutboundComplete);
                if let Some(inner) = node.upgrade() {
                    let waiter = inner.resource_waiters.lock().ok().and_then(|mut w| w.remove(&r.hash.to_bytes()));
                    if let Some(tx) = waiter {
                        let _ = tx.send(done);
                    }
                }
                None
            }
            Raw::Resource(r) if !links.contains_key(&addr(&r.link_id)) => None,
            Raw::Resource(r) => {
                let (link_id, hash) = (addr(&r.link_id), r.hash.to_bytes());
                let stage = match &r.kind {
                    ResourceEventKind::Progress(_) if receiving.get(&link_id) != Some(&hash) => {
                        receiving.insert(link_id, hash);
                        Some(TransferStage::Receiving)
                    }
                    ResourceEventKind::SegmentComplete(seg) => {
                        receiving.remove(&link_id);
                        Some(TransferStage::Segment { total_bytes: seg.total_data_size })
                    }
                    ResourceEventKind::Complete(_) | ResourceEventKind::InboundFailed(_) => {
                        receiving.remove(&link_id);
                        Some(TransferStage::Ended)
                    }
                    _ => None,
                };
                if let Some(stage) = stage
                    && out.send(NodeEvent::Transfer { link_id, hash, stage }).await.is_err()
                {
                    break;
                }
                match r.kind {
                    ResourceEventKind::Complete(c) if !c.is_response => match links.get(&link_id).copied() {
                        None => None,
                        Some(dest) if c.is_request => {
                            let rid = c.request_id.as_deref().and_then(|b| <[u8; 16]>::try_from(b).ok());
                            let rid = rid.unwrap_or_else(|| truncated_hash(&c.data));
                            request_event(dest, link_id, rid, &c.data)
                        }
                        Some(dest) => Some(NodeEvent::LinkResource { dest, link_id, data: c.data }),
                    },
                    _ => None,
                }
            }
        };
        if let Some(event) = event
            && out.send(event).await.is_err()
        {
            break;
        }
    }
}

fn truncated_hash(data: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&sha2::Sha256::digest(data)[..16]);
    out
}

/// A request event from the body of an RNS request (see [`crate::wire::envelope`]).
fn request_event(dest: [u8; 16], link_id: [u8; 16], request_id: [u8; 16], body: &[u8]) -> Option<NodeEvent> {
    let r = crate::wire::envelope::unpack_request(body)?;
    Some(NodeEvent::Request { dest, link_id, request_id, path_hash: r.path_hash, data: r.data, requested_at: r.requested_at })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_pair_with_their_hashes_in_order_whichever_comes_first() {
        let mut p = ProofPairing::default();
        let hash = |e: Option<NodeEvent>| match e {
            Some(NodeEvent::Packet { data, packet_hash, .. }) => (data, packet_hash),
            other => panic!("{other:?}"),
        };
        assert!(p.packet([1; 16], vec![1]).is_none());
        assert!(p.packet([1; 16], vec![2]).is_none());
        assert_eq!(hash(p.hash([1; 16], [11; 32])), (vec![1], Some([11; 32])));
        assert!(p.hash([2; 16], [22; 32]).is_none(), "another destination's hash waits for its own packet");
        assert_eq!(hash(p.hash([1; 16], [12; 32])), (vec![2], Some([12; 32])));
        assert_eq!(hash(p.packet([2; 16], vec![3])), (vec![3], Some([22; 32])));
        assert!(p.packet([3; 16], vec![4]).is_none());
        std::thread::sleep(PROOF_PAIRING_WAIT);
        let expired = p.expire();
        assert!(matches!(expired.as_slice(), [NodeEvent::Packet { packet_hash: None, .. }]), "{expired:?}");
    }
}
