//! Links: answering requests on inbound ones, and opening, identifying and using outbound ones.

use std::sync::Arc;
use std::time::Duration;

use rns_transport::destination::DestinationName;
use rns_transport::hash::AddressHash;
use rns_transport::identity::PrivateIdentity;
use rns_transport::transport::SendPacketOutcome;
use tokio::sync::Mutex;

use super::{Node, NodeError, addr};

impl Node {
    pub async fn respond(&self, link_id: [u8; 16], request_id: [u8; 16], response: Vec<u8>) -> Result<(), NodeError> {
        let packed = crate::wire::envelope::pack_response(&request_id, response);
        // The crate picks packet or Resource by the link MDU.
        match self.inner.transport.send_response(&AddressHash::new(link_id), request_id.to_vec(), packed, None).await {
            Err(rns_transport::error::RnsError::InvalidArgument) => Err(NodeError::UnknownLink(link_id)),
            // The link and its interface exist, so "no route" means the interface's send queue
            // refused the packet: the crate reports a full queue that way.
            Err(rns_transport::error::RnsError::ConnectionError) => Err(NodeError::QueueFull),
            other => other.map(|_| ()).map_err(NodeError::from),
        }
    }

    /// Tears down an inbound link: its Resources in progress are dropped with it, undecompressed.
    pub async fn close_link(&self, link_id: [u8; 16]) -> Result<(), NodeError> {
        let link = self.inner.transport.find_in_link(&AddressHash::new(link_id)).await.ok_or(NodeError::UnknownLink(link_id))?;
        self.inner.transport.teardown_link(&link).await?;
        Ok(())
    }

    /// Opens (or reuses) an outbound link to a remote destination whose identity we know, and
    /// waits until it is active. Returns the link id for the calls below.
    pub async fn open_link(&self, dest: [u8; 16], app: &str, aspects: &str, timeout: Duration) -> Result<[u8; 16], NodeError> {
        self.open_link_known(dest, None, app, aspects, timeout).await
    }

    /// [`Node::open_link`] to a destination whose identity (`x25519 ‖ ed25519`) we may hold from
    /// elsewhere (a member's link identify), used when the node has heard no announce of it.
    pub async fn open_link_known(&self, dest: [u8; 16], known: Option<[u8; 64]>, app: &str, aspects: &str, timeout: Duration) -> Result<[u8; 16], NodeError> {
        let address_hash = AddressHash::new(dest);
        let identity = match self.inner.transport.destination_identity(&address_hash).await {
            Some(identity) => identity,
            None => known.map(|k| rns_transport::identity::Identity::new_from_slices(&k[..32], &k[32..])).ok_or(NodeError::UnknownIdentity(dest))?,
        };
        let desc = rns_transport::destination::DestinationDesc { identity, address_hash, name: DestinationName::new(app, aspects) };
        let link = self.inner.transport.link(desc).await;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (status, id) = {
                let l = link.lock().await;
                (l.status(), addr(l.id()))
            };
            match status {
                rns_transport::destination::link::LinkStatus::Active => {
                    self.inner.out_links.lock().await.insert(id, link);
                    return Ok(id);
                }
                rns_transport::destination::link::LinkStatus::Closed => return Err(NodeError::LinkFailed(dest)),
                _ if tokio::time::Instant::now() >= deadline => return Err(NodeError::LinkFailed(dest)),
                _ => tokio::time::sleep(Duration::from_millis(25)).await,
            }
        }
    }

    async fn out_link(&self, link_id: [u8; 16]) -> Result<Arc<Mutex<rns_transport::destination::link::Link>>, NodeError> {
        self.inner.out_links.lock().await.get(&link_id).cloned().ok_or(NodeError::UnknownLink(link_id))
    }

    /// Proves who we are on an outbound link (LINKIDENTIFY), as a group identity.
    pub async fn identify_link(&self, link_id: [u8; 16], private_key: &[u8; 64]) -> Result<(), NodeError> {
        let identity = PrivateIdentity::from_private_key_bytes(private_key).map_err(|_| NodeError::InvalidKey)?;
        let link = self.out_link(link_id).await?;
        let packet = {
            let l = link.lock().await;
            l.identify_packet(&l.identify_payload(&identity))?
        };
        match self.inner.transport.send_link_packet_on_bound_iface(&link, packet).await {
            SendPacketOutcome::SentDirect | SendPacketOutcome::SentBroadcast => Ok(()),
            other => Err(NodeError::NotSent(other)),
        }
    }

    /// Sends an RNS request on an outbound link and returns the response element.
    pub async fn link_request(&self, link_id: [u8; 16], path: &str, data: rmpv::Value, timeout: Duration) -> Result<rmpv::Value, NodeError> {
        let link = self.out_link(link_id).await?;
        let request = rns_transport::destination::link::Link::request_payload(path, data)?;
        let mut receipt = self.inner.transport.send_request_on_link(&link, request, timeout, None).await?;
        let response = tokio::time::timeout(timeout + Duration::from_secs(5), receipt.wait())
            .await
            .map_err(|_| NodeError::RequestFailed("timed out".into()))?
            .map_err(|e| NodeError::RequestFailed(format!("{e:?}")))?;
        crate::wire::envelope::unpack_response(&response.data).map_err(|e| NodeError::RequestFailed(e.to_string()))
    }

    /// Sends bytes as a Resource on an outbound link and waits for the receiver's proof.
    pub async fn send_resource(&self, link_id: [u8; 16], data: Vec<u8>, timeout: Duration) -> Result<(), NodeError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let waiters = &self.inner.resource_waiters;
        let mut tx = Some(tx);
        self.inner
            .transport
            .send_resource_observed(&AddressHash::new(link_id), data, None, |hash| {
                if let (Ok(mut w), Some(tx)) = (waiters.lock(), tx.take()) {
                    w.insert(hash.to_bytes(), tx);
                }
            })
            .await?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(true)) => Ok(()),
            Ok(_) => Err(NodeError::RequestFailed("resource transfer failed".into())),
            Err(_) => Err(NodeError::RequestFailed("resource transfer timed out".into())),
        }
    }
}
