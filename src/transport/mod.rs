//! The Reticulum side: one node per server process, wrapping the reticulum-rs 0.16 transport.
//!
//! The node is split by job: [`interfaces`] opens them, [`registry`] holds our destinations and
//! sends single packets, [`announce`] announces them, [`links`] answers and opens links,
//! [`pump`] turns the crate's event channels into [`NodeEvent`]s.

pub mod announce;
pub mod interfaces;
pub mod links;
pub mod pump;
pub mod registry;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::OsRng;
use rns_transport::destination::SingleInputDestination;
use rns_transport::hash::AddressHash;
use rns_transport::identity::{Identity, PrivateIdentity};
use rns_transport::transport::{SendPacketOutcome, Transport, TransportConfig};
use tokio::sync::{Mutex, mpsc};

use crate::config::{Config, ConfigError, InterfaceConfig};
pub use pump::{NodeEvent, TransferStage};
use pump::{PROVED_QUEUE, ProofSink, RAW_QUEUE, Raw, drain};

const EVENT_QUEUE: usize = 8192;

#[derive(Default)]
pub struct NodeConfig {
    pub interfaces: Vec<interfaces::InterfaceConfig>,
    /// 64-byte RNS private key of the transport identity; random when `None`.
    pub transport_identity: Option<[u8; 64]>,
    /// Where announced ratchets of remote peers are kept, so that outbound packets
    /// are encrypted to them like the reference does. `None` keeps them off.
    pub ratchet_store: Option<PathBuf>,
    /// The largest request a peer may advertise as a Resource, in transfer (compressed) bytes:
    /// the crate refuses a bigger advertisement before it accepts a single part. `None`: no limit.
    pub max_request_transfer: Option<usize>,
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
    #[error("no interface is up")]
    NoInterface,
    #[error("{0} bytes is over the limit of {1}")]
    TooLarge(usize, usize),
    #[error("reticulum: {0}")]
    Rns(#[from] rns_transport::error::RnsError),
    #[error("no link to {} could be established", hex::encode(.0))]
    LinkFailed([u8; 16]),
    #[error("request failed: {0}")]
    RequestFailed(String),
}

struct Registered {
    dest: Arc<Mutex<SingleInputDestination>>,
    app_data: Option<Vec<u8>>,
}

struct Inner {
    transport: Transport,
    dests: Mutex<HashMap<[u8; 16], Registered>>,
    // Packet hashes captured by the proof callback, consumed by the pump.
    proved_tx: mpsc::Sender<([u8; 16], [u8; 32])>,
    // Set when the proof callback could not queue a hash: the pump's pairing starts over.
    hashes_lost: Arc<std::sync::atomic::AtomicBool>,
    // Interfaces that reconnect say so here, and every destination is announced again.
    reconnect_tx: mpsc::Sender<AddressHash>,
    // Outbound links we opened, by link id, and who waits for which outbound Resource.
    out_links: Mutex<HashMap<[u8; 16], Arc<Mutex<rns_transport::destination::link::Link>>>>,
    resource_waiters: std::sync::Mutex<HashMap<[u8; 32], tokio::sync::oneshot::Sender<bool>>>,
    // The status of each TCP server we listen on: the crate tells of accepted clients only there.
    listeners: std::sync::Mutex<Vec<rns_transport::iface::tcp_server::TcpListenerRuntimeStatusHandle>>,
    // Set on every destination we register (see `NodeConfig::max_request_transfer`).
    max_request_transfer: Option<usize>,
}

#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

/// The first pause after an interface refused a send for a full queue; it doubles, four times.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(25);

/// Runs a send, and runs it again after a pause while the interfaces refuse it for a full queue
/// (about 0.4 s in all): back-pressure instead of a silent drop. Every pause is counted.
pub async fn with_backpressure<T, F, Fut>(mut send: F) -> Result<T, NodeError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, NodeError>>,
{
    let mut pause = QUEUE_FULL_PAUSE;
    loop {
        match send().await {
            Err(NodeError::QueueFull) if pause <= QUEUE_FULL_PAUSE * 8 => {
                crate::metrics::send_backpressure();
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            other => return other,
        }
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

        let (raw_tx, raw_rx) = mpsc::channel(RAW_QUEUE);
        let (proved_tx, proved_rx) = mpsc::channel(PROVED_QUEUE);
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
                hashes_lost: Arc::new(std::sync::atomic::AtomicBool::new(false)),
                reconnect_tx,
                out_links: Mutex::new(HashMap::new()),
                resource_waiters: std::sync::Mutex::new(HashMap::new()),
                listeners: std::sync::Mutex::new(Vec::new()),
                max_request_transfer: cfg.max_request_transfer,
            }),
        };
        tokio::spawn(announce::forward_reconnects(reconnect_rx, out_tx.clone()));
        tokio::spawn(announce::watch_new_peers(Arc::downgrade(&node.inner), out_tx.clone()));
        tokio::spawn(pump::pump(raw_rx, proved_rx, out_tx, Arc::downgrade(&node.inner)));
        node.open_interfaces(cfg.interfaces).await?;
        Ok((node, out_rx))
    }
}

/// Maps the configured interfaces onto the node's.
pub fn node_config(cfg: &Config) -> Result<NodeConfig, ConfigError> {
    let mut interfaces = Vec::new();
    for iface in &cfg.reticulum.interfaces {
        interfaces.push(match iface {
            InterfaceConfig::TcpServer { listen } => interfaces::InterfaceConfig::TcpServer {
                listen: listen.parse().map_err(|_| ConfigError::Invalid(format!("tcp_server listen: not an address: {listen}")))?,
            },
            InterfaceConfig::TcpClient { target } => interfaces::InterfaceConfig::TcpClient { target: target.clone() },
            InterfaceConfig::SharedInstance { instance_name, shared_instance_type, port } => {
                let tcp_port = match shared_instance_type.as_str() {
                    "unix" => None,
                    "tcp" => Some(*port),
                    other => return Err(ConfigError::Invalid(format!("shared_instance_type must be unix or tcp, not {other}"))),
                };
                interfaces::InterfaceConfig::SharedInstance { instance_name: instance_name.clone(), tcp_port }
            }
        });
    }
    Ok(NodeConfig {
        interfaces,
        transport_identity: None,
        ratchet_store: Some(cfg.data_dir.join("ratchets")),
        // The envelope (timestamp, path hash) and the link encryption add well under 1 KiB.
        max_request_transfer: Some(cfg.limits.max_request_bytes.saturating_add(1024)),
    })
}
