//! The Reticulum node: one per server process; wraps the reticulum-rs 0.16 transport.
//!
//! The crate publishes events on broadcast channels of capacity 1024 that drop
//! events for slow readers, so each channel gets a task that only forwards into an
//! unbounded queue. One pump task turns those raw events into [`NodeEvent`]s.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::OsRng;
use rns_transport::destination::link::{LinkEvent, LinkEventData};
use rns_transport::destination::{DestinationName, ProofStrategy, SingleInputDestination};
use rns_transport::hash::AddressHash;
use rns_transport::identity::{Identity, PrivateIdentity};
use rns_transport::iface::local::{LocalUnixClient, LocalUnixEndpoint};
use rns_transport::iface::tcp_client::TcpClient;
use rns_transport::iface::tcp_server::TcpServer;
use rns_transport::iface::{IfaceRole, InterfaceMode};
use rns_transport::packet::{Header, Packet, PacketContext, PacketDataBuffer};
use rns_transport::resource::{ResourceEvent, ResourceEventKind};
use rns_transport::transport::{
    AnnounceEvent, DeliveryReceipt, ReceiptHandler, ReceivedData, ReceivedPayloadMode, SendPacketOutcome, Transport, TransportConfig,
};
use sha2::Digest;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::{Mutex, mpsc};

const EVENT_QUEUE: usize = 8192;
/// RNS MTU 500 minus header (19) and the announce fields (148, no ratchet). The crate
/// itself only refuses at 256 KiB, which the reference and small-MTU links cannot carry.
pub const MAX_ANNOUNCE_APP_DATA: usize = 500 - 19 - 148;
/// RNS `Packet.ENCRYPTED_MDU` for a single packet to a SINGLE destination.
pub const MAX_OPPORTUNISTIC_PLAINTEXT: usize = 383;

/// One interface of the node (the config layer maps `config::InterfaceConfig` onto this).
pub enum InterfaceConfig {
    TcpServer {
        listen: SocketAddr,
    },
    TcpClient {
        target: String,
    },
    /// An operator's `rnsd`: the Unix socket `\0rns/<instance_name>`, or, for
    /// `shared_instance_type = tcp`, 127.0.0.1:`tcp_port` (Python's default is 37428).
    SharedInstance {
        instance_name: String,
        tcp_port: Option<u16>,
    },
}

#[derive(Default)]
pub struct NodeConfig {
    pub interfaces: Vec<InterfaceConfig>,
    /// 64-byte RNS private key of the transport identity; random when `None`.
    pub transport_identity: Option<[u8; 64]>,
    /// Where announced ratchets of remote peers are kept, so that outbound packets
    /// are encrypted to them like the reference does. `None` keeps them off.
    pub ratchet_store: Option<PathBuf>,
}

#[derive(thiserror::Error, Debug)]
pub enum NodeError {
    #[error("interface {0}: {1}")]
    Interface(String, String),
    #[error("invalid private key")]
    InvalidKey,
    #[error("destination {} is not registered here", hex::encode(.0))]
    UnknownDestination([u8; 16]),
    #[error("no identity known for destination {}", hex::encode(.0))]
    UnknownIdentity([u8; 16]),
    #[error("link {} not found", hex::encode(.0))]
    UnknownLink([u8; 16]),
    #[error("packet not sent: {0:?}")]
    NotSent(SendPacketOutcome),
    #[error("every interface's send queue is full")]
    QueueFull,
    #[error("{0} bytes is over the limit of {1}")]
    TooLarge(usize, usize),
    #[error("msgpack: {0}")]
    Encode(String),
    #[error("reticulum: {0}")]
    Rns(#[from] rns_transport::error::RnsError),
    #[error("no link to {} could be established", hex::encode(.0))]
    LinkFailed([u8; 16]),
    #[error("request failed: {0}")]
    RequestFailed(String),
}

#[derive(Debug, Clone)]
pub enum NodeEvent {
    LinkEstablished {
        dest: [u8; 16],
        link_id: [u8; 16],
    },
    LinkIdentified {
        dest: [u8; 16],
        link_id: [u8; 16],
        public_key: [u8; 64],
        identity_hash: [u8; 16],
    },
    /// `data` is the request's data element: bin as is, nil as empty, anything else as its msgpack.
    Request {
        dest: [u8; 16],
        link_id: [u8; 16],
        request_id: [u8; 16],
        path_hash: [u8; 16],
        data: Vec<u8>,
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
}

enum Raw {
    Announce(AnnounceEvent),
    Link(LinkEventData),
    Data(ReceivedData),
    Resource(ResourceEvent),
    Proof([u8; 32]),
    Lagged(&'static str, u64),
}

struct Registered {
    dest: Arc<Mutex<SingleInputDestination>>,
    app_data: Option<Vec<u8>>,
}

struct Inner {
    transport: Transport,
    dests: Mutex<HashMap<[u8; 16], Registered>>,
    // Packet hashes captured by the proof callback, consumed by the pump.
    proved_tx: mpsc::UnboundedSender<([u8; 16], [u8; 32])>,
    // Interfaces that reconnect say so here, and every destination is announced again.
    reconnect_tx: mpsc::Sender<AddressHash>,
    // Outbound links we opened, by link id, and who waits for which outbound Resource.
    out_links: Mutex<HashMap<[u8; 16], Arc<Mutex<rns_transport::destination::link::Link>>>>,
    resource_waiters: std::sync::Mutex<HashMap<[u8; 32], tokio::sync::oneshot::Sender<bool>>>,
}

#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

struct ProofSink(mpsc::UnboundedSender<Raw>);

impl ReceiptHandler for ProofSink {
    fn on_receipt(&self, receipt: &DeliveryReceipt) {
        let _ = self.0.send(Raw::Proof(receipt.message_id));
    }
}

impl Node {
    pub async fn start(cfg: NodeConfig) -> Result<(Node, mpsc::Receiver<NodeEvent>), NodeError> {
        let identity = match cfg.transport_identity {
            Some(key) => PrivateIdentity::from_private_key_bytes(&key).map_err(|_| NodeError::InvalidKey)?,
            None => PrivateIdentity::new_from_rand(OsRng),
        };
        let mut tcfg = TransportConfig::new("meshgroup", &identity, true);
        if let Some(path) = cfg.ratchet_store {
            tcfg.set_ratchet_store_path(path);
        }
        let transport = Transport::new(tcfg);

        let (raw_tx, raw_rx) = mpsc::unbounded_channel();
        let (proved_tx, proved_rx) = mpsc::unbounded_channel();
        let (out_tx, out_rx) = mpsc::channel(EVENT_QUEUE);

        drain(transport.recv_announces().await, "announces", raw_tx.clone(), Raw::Announce);
        drain(transport.in_link_events(), "in_links", raw_tx.clone(), Raw::Link);
        drain(transport.received_data_events(), "received_data", raw_tx.clone(), Raw::Data);
        drain(transport.resource_events(), "resources", raw_tx.clone(), Raw::Resource);
        transport.set_receipt_handler(Box::new(ProofSink(raw_tx))).await;

        let (reconnect_tx, reconnect_rx) = mpsc::channel(16);
        let node = Node {
            inner: Arc::new(Inner {
                transport,
                dests: Mutex::new(HashMap::new()),
                proved_tx,
                reconnect_tx,
                out_links: Mutex::new(HashMap::new()),
                resource_waiters: std::sync::Mutex::new(HashMap::new()),
            }),
        };
        tokio::spawn(pump(raw_rx, proved_rx, out_tx, Arc::downgrade(&node.inner)));

        tokio::spawn(reannounce_on_reconnect(Arc::downgrade(&node.inner), reconnect_rx));
        node.open_interfaces(cfg.interfaces).await?;
        Ok((node, out_rx))
    }

    /// Opens interfaces. A server opens them after registering its destinations, so no early
    /// path request goes unanswered.
    pub async fn open_interfaces(&self, interfaces: Vec<InterfaceConfig>) -> Result<(), NodeError> {
        for iface in interfaces {
            self.add_interface(iface, self.inner.reconnect_tx.clone()).await?;
        }
        Ok(())
    }

    async fn add_interface(&self, iface: InterfaceConfig, reconnect: mpsc::Sender<AddressHash>) -> Result<(), NodeError> {
        let manager = self.inner.transport.iface_manager();
        match iface {
            InterfaceConfig::TcpServer { listen } => {
                let (server, started) = TcpServer::new(listen.to_string(), manager.clone()).with_startup_result();
                manager.lock().await.spawn(server, TcpServer::spawn);
                let err = |e: String| NodeError::Interface(listen.to_string(), e);
                match tokio::time::timeout(Duration::from_secs(5), started).await {
                    Ok(Ok(Ok(()))) => Ok(()),
                    Ok(Ok(Err(e))) => Err(err(e)),
                    Ok(Err(_)) => Err(err("listener task ended".into())),
                    Err(_) => Err(err("bind timed out".into())),
                }
            }
            InterfaceConfig::TcpClient { target } => {
                let client = TcpClient::new(target).with_reconnect_events(reconnect);
                manager.lock().await.spawn(client, TcpClient::spawn);
                Ok(())
            }
            InterfaceConfig::SharedInstance { instance_name, tcp_port } => {
                // Marking the interface as a shared-instance link before it starts fixes
                // hop counting and turns off announce pacing towards rnsd.
                let prepare = |m: &mut rns_transport::iface::InterfaceManager, a: AddressHash| {
                    m.set_shared_instance(a, true);
                    Ok::<(), NodeError>(())
                };
                let (_, activate, cancel) = match tcp_port {
                    Some(port) => {
                        let c = TcpClient::new(format!("127.0.0.1:{port}")).with_reconnect_events(reconnect);
                        manager.lock().await.try_spawn_deferred_as_with_mode(c, TcpClient::spawn, IfaceRole::Unicast, InterfaceMode::Full, prepare)?
                    }
                    None => {
                        // The crate adds neither the "rns/" prefix nor the instance name.
                        let ep = LocalUnixEndpoint::abstract_name(format!("rns/{instance_name}"));
                        let c = LocalUnixClient::new_connect(ep).with_reconnect_events(reconnect);
                        manager.lock().await.try_spawn_deferred_as_with_mode(c, LocalUnixClient::spawn, IfaceRole::Unicast, InterfaceMode::Full, prepare)?
                    }
                };
                self.inner.transport.activate_shared_instance_interface(activate, &cancel).await?;
                Ok(())
            }
        }
    }

    pub async fn register_destination(&self, private_key: &[u8; 64], app: &str, aspects: &str) -> Result<[u8; 16], NodeError> {
        let identity = PrivateIdentity::from_private_key_bytes(private_key).map_err(|_| NodeError::InvalidKey)?;
        let mut dest = SingleInputDestination::new(identity, DestinationName::new(app, aspects));
        let hash = addr(&dest.desc.address_hash);
        // PROVE_APP with a callback that declines: the callback is the only place the crate
        // exposes the hash of an inbound packet, and we prove ourselves with `prove` once
        // the message is stored, so a proof never acknowledges something we could lose.
        dest.set_proof_strategy(ProofStrategy::App);
        let proved = self.inner.proved_tx.clone();
        dest.set_proof_requested_callback(Box::new(move |p: &Packet| {
            let _ = proved.send((hash, p.hash().to_bytes()));
            false
        }));
        let dest = self.inner.transport.register_destination(dest).await;
        self.inner.dests.lock().await.insert(hash, Registered { dest, app_data: None });
        Ok(hash)
    }

    pub async fn deregister_destination(&self, dest: [u8; 16]) -> Result<(), NodeError> {
        self.inner.dests.lock().await.remove(&dest).ok_or(NodeError::UnknownDestination(dest))?;
        self.inner.transport.deregister_destination(&AddressHash::new(dest)).await;
        Ok(())
    }

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

    pub async fn respond(&self, link_id: [u8; 16], request_id: [u8; 16], response: Vec<u8>) -> Result<(), NodeError> {
        let env = rmpv::Value::Array(vec![rmpv::Value::Binary(request_id.to_vec()), rmpv::Value::Binary(response)]);
        let mut packed = Vec::new();
        rmpv::encode::write_value(&mut packed, &env).map_err(|e| NodeError::Encode(e.to_string()))?;
        // The crate picks packet or Resource by the link MDU.
        match self.inner.transport.send_response(&AddressHash::new(link_id), request_id.to_vec(), packed, None).await {
            Err(rns_transport::error::RnsError::InvalidArgument) => Err(NodeError::UnknownLink(link_id)),
            other => other.map(|_| ()).map_err(NodeError::from),
        }
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

    /// Opens (or reuses) an outbound link to a remote destination whose identity we know, and
    /// waits until it is active. Returns the link id for the calls below.
    pub async fn open_link(&self, dest: [u8; 16], app: &str, aspects: &str, timeout: Duration) -> Result<[u8; 16], NodeError> {
        let address_hash = AddressHash::new(dest);
        let identity = self.inner.transport.destination_identity(&address_hash).await.ok_or(NodeError::UnknownIdentity(dest))?;
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
        crate::wire::envelope::unpack_response(response.data.as_slice()).map_err(|e| match e {
            crate::wire::envelope::EnvelopeError::Msgpack(m) => NodeError::Encode(m),
            shape => NodeError::RequestFailed(shape.to_string()),
        })
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

    pub async fn request_path(&self, dest: [u8; 16]) -> Result<(), NodeError> {
        self.inner.transport.request_path(&AddressHash::new(dest), None, None).await;
        Ok(())
    }

    pub async fn recall_identity(&self, dest: [u8; 16]) -> Option<[u8; 64]> {
        self.inner.transport.destination_identity(&AddressHash::new(dest)).await.map(|i| public_key(&i))
    }
}

fn addr(a: &AddressHash) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(a.as_slice());
    out
}

fn public_key(identity: &Identity) -> [u8; 64] {
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(identity.public_key_bytes());
    out[32..].copy_from_slice(identity.verifying_key_bytes());
    out
}

fn drain<T: Clone + Send + 'static>(mut rx: broadcast::Receiver<T>, channel: &'static str, tx: mpsc::UnboundedSender<Raw>, wrap: fn(T) -> Raw) {
    tokio::spawn(async move {
        loop {
            let raw = match rx.recv().await {
                Ok(ev) => wrap(ev),
                Err(RecvError::Lagged(n)) => Raw::Lagged(channel, n),
                Err(RecvError::Closed) => break,
            };
            if tx.send(raw).is_err() {
                break;
            }
        }
    });
}

async fn reannounce_on_reconnect(node: std::sync::Weak<Inner>, mut rx: mpsc::Receiver<AddressHash>) {
    // A restarted rnsd (or hub) has lost its path table and the crate does not re-announce.
    // Path requests still reach us, but peers that wait for announces would not find us.
    while rx.recv().await.is_some() {
        let Some(inner) = node.upgrade() else { break };
        let dests: Vec<_> = inner.dests.lock().await.values().map(|r| (r.dest.clone(), r.app_data.clone())).collect();
        tracing::info!(count = dests.len(), "interface reconnected; re-announcing destinations");
        for (dest, app_data) in dests {
            inner.transport.send_announce(&dest, app_data.as_deref()).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn pump(
    mut raw: mpsc::UnboundedReceiver<Raw>,
    mut proved: mpsc::UnboundedReceiver<([u8; 16], [u8; 32])>,
    out: mpsc::Sender<NodeEvent>,
    node: std::sync::Weak<Inner>,
) {
    let mut links: HashMap<[u8; 16], [u8; 16]> = HashMap::new();
    while let Some(ev) = raw.recv().await {
        let event = match ev {
            Raw::Lagged(channel, count) => Some(NodeEvent::EventsLost { channel, count }),
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
                        Some(NodeEvent::LinkEstablished { dest, link_id })
                    }
                    LinkEvent::PeerIdentified(id) => {
                        Some(NodeEvent::LinkIdentified { dest, link_id, public_key: public_key(&id), identity_hash: addr(&id.address_hash) })
                    }
                    LinkEvent::Closed => {
                        links.remove(&link_id);
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
                let dest = addr(&d.destination);
                // The proof callback runs right after this event is published, once per packet.
                let mut packet_hash = None;
                while let Ok(Some((pd, h))) = tokio::time::timeout(Duration::from_secs(1), proved.recv()).await {
                    if pd == dest {
                        packet_hash = Some(h);
                        break;
                    }
                }
                Some(NodeEvent::Packet { dest, data: d.data.as_slice().to_vec(), packet_hash })
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
            Raw::Resource(r) => match r.kind {
                ResourceEventKind::Complete(c) if !c.is_response => {
                    let link_id = addr(&r.link_id);
                    match links.get(&link_id).copied() {
                        None => None,
                        Some(dest) if c.is_request => {
                            let rid = c.request_id.as_deref().and_then(|b| <[u8; 16]>::try_from(b).ok());
                            let rid = rid.unwrap_or_else(|| truncated_hash(&c.data));
                            request_event(dest, link_id, rid, &c.data)
                        }
                        Some(dest) => Some(NodeEvent::LinkResource { dest, link_id, data: c.data }),
                    }
                }
                _ => None,
            },
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

/// The node event for an RNS request body (see [`crate::wire::envelope::unpack_request`]).
fn request_event(dest: [u8; 16], link_id: [u8; 16], request_id: [u8; 16], body: &[u8]) -> Option<NodeEvent> {
    let r = crate::wire::envelope::unpack_request(body)?;
    Some(NodeEvent::Request { dest, link_id, request_id, path_hash: r.path_hash, data: r.data, requested_at: r.requested_at })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_body_becomes_an_event() {
        let body = rmpv::Value::Array(vec![rmpv::Value::F64(1.5), rmpv::Value::Binary(vec![7; 16]), rmpv::Value::Binary(vec![1, 2])]);
        let mut buf = Vec::new();
        rmpv::encode::write_value(&mut buf, &body).unwrap();
        let Some(NodeEvent::Request { path_hash, data, requested_at, .. }) = request_event([0; 16], [1; 16], [2; 16], &buf) else {
            panic!("not a request");
        };
        assert_eq!((path_hash, data, requested_at), ([7; 16], vec![1, 2], 1.5));
    }
}
