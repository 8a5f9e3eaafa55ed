//! Our destinations: registering them (with the proof policy), proving packets to them, and sending
//! single prepared packets to remote ones.

use rns_transport::destination::{DestinationName, ProofStrategy, SingleInputDestination};
use rns_transport::hash::AddressHash;
use rns_transport::identity::{Identity, PrivateIdentity};
use rns_transport::packet::{Header, Packet, PacketContext, PacketDataBuffer};
use rns_transport::transport::SendPacketOutcome;

use super::{Node, NodeError, Registered, addr, public_key};

/// RNS `Packet.ENCRYPTED_MDU` for a single packet to a SINGLE destination.
pub const MAX_OPPORTUNISTIC_PLAINTEXT: usize = 383;

impl Node {
    pub async fn register_destination(&self, private_key: &[u8; 64], app: &str, aspects: &str) -> Result<[u8; 16], NodeError> {
        let identity = PrivateIdentity::from_private_key_bytes(private_key).map_err(|_| NodeError::InvalidKey)?;
        let mut dest = SingleInputDestination::new(identity, DestinationName::new(app, aspects));
        let hash = addr(&dest.desc.address_hash);
        // PROVE_APP with a callback that declines: the callback is the only place the crate
        // exposes the hash of an inbound packet, and we prove ourselves with `prove` once
        // the message is stored, so a proof never acknowledges something we could lose.
        dest.set_proof_strategy(ProofStrategy::App);
        let (proved, lost) = (self.inner.proved_tx.clone(), self.inner.hashes_lost.clone());
        dest.set_proof_requested_callback(Box::new(move |p: &Packet| {
            if proved.try_send((hash, p.hash().to_bytes())).is_err() {
                lost.store(true, std::sync::atomic::Ordering::Relaxed);
                crate::metrics::transport_events_lost("packet_hashes", 1);
            }
            false
        }));
        if let Some(limit) = self.inner.max_request_transfer {
            dest.set_max_request_size(limit)?;
        }
        let dest = self.inner.transport.register_destination(dest).await;
        self.inner.dests.lock().await.insert(hash, Registered { dest, app_data: None });
        Ok(hash)
    }

    pub async fn deregister_destination(&self, dest: [u8; 16]) -> Result<(), NodeError> {
        self.inner.dests.lock().await.remove(&dest).ok_or(NodeError::UnknownDestination(dest))?;
        self.inner.transport.deregister_destination(&AddressHash::new(dest)).await;
        Ok(())
    }

    /// Sends the delivery proof of an inbound packet to one of our destinations: the explicit
    /// form `packet_hash ‖ Ed25519(packet_hash)`, addressed to the packet's truncated hash.
    pub async fn prove(&self, dest: [u8; 16], packet_hash: [u8; 32]) -> Result<(), NodeError> {
        let handle = {
            let dests = self.inner.dests.lock().await;
            dests.get(&dest).ok_or(NodeError::UnknownDestination(dest))?.dest.clone()
        };
        let signature = handle.lock().await.identity.sign(&packet_hash);
        let mut data = Vec::with_capacity(32 + 64);
        data.extend_from_slice(&packet_hash);
        data.extend_from_slice(&signature.to_bytes());
        let hash = rns_transport::hash::Hash::new(packet_hash);
        let packet = Packet {
            header: Header { packet_type: rns_transport::packet::PacketType::Proof, ..Default::default() },
            ifac: None,
            destination: AddressHash::new_from_hash(&hash),
            transport: None,
            context: PacketContext::None,
            data: PacketDataBuffer::new_from_slice(&data),
        };
        self.inner.transport.send_packet(packet).await;
        Ok(())
    }

    /// Hands an already encrypted packet (see `lxmf::outbound::prepare`) to the transport, so the
    /// costly per-recipient crypto runs on our worker pool rather than under the transport lock.
    /// Returns the packet hash, which the recipient's delivery proof will name.
    pub async fn send_prepared(&self, dest: [u8; 16], public_key: &[u8; 64], aspect: (&str, &str), ciphertext: &[u8]) -> Result<[u8; 32], NodeError> {
        if ciphertext.len() > rns_transport::packet::PACKET_MDU {
            return Err(NodeError::TooLarge(ciphertext.len(), rns_transport::packet::PACKET_MDU));
        }
        let identity = Identity::try_new_from_slices(&public_key[..32], &public_key[32..])?;
        let packet = Packet {
            header: Header::default(),
            ifac: None,
            destination: AddressHash::new(dest),
            transport: None,
            context: PacketContext::None,
            data: PacketDataBuffer::new_from_slice(ciphertext),
        };
        let mut hash = None;
        let trace = self
            .inner
            .transport
            .send_prepared_single_packet_observed_with_trace(packet, identity, DestinationName::new(aspect.0, aspect.1), |h| hash = Some(h.to_bytes()))
            .await?;
        match (trace.outcome, hash) {
            (SendPacketOutcome::SentDirect | SendPacketOutcome::SentBroadcast, Some(h)) => Ok(h),
            // Interfaces there were, and every one refused: their send queues are full.
            (_, _) if trace.dispatch.matched_ifaces > 0 => Err(NodeError::QueueFull),
            (outcome, _) => Err(NodeError::NotSent(outcome)),
        }
    }

    /// Broadcasts a path request; fails when no interface took it (none is up yet).
    pub async fn request_path(&self, dest: [u8; 16]) -> Result<(), NodeError> {
        let trace = self.inner.transport.request_path(&AddressHash::new(dest), None, None).await;
        if trace.sent_ifaces + trace.queued_ifaces == 0 { Err(NodeError::NoInterface) } else { Ok(()) }
    }

    pub async fn recall_identity(&self, dest: [u8; 16]) -> Option<[u8; 64]> {
        self.inner.transport.destination_identity(&AddressHash::new(dest)).await.map(|i| public_key(&i))
    }
}
