//! The client's node events: group announces into the cache, fan-out copies into the cache and
//! out to the reader (proven once cached), and the proofs of the client's own LXMF posts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::store::cache::{CachedMessage, ClientCache, GroupNews};
use crate::transport::{Node, NodeEvent};
use crate::wire::identity::{GROUP_ASPECT, name_hash};
use crate::wire::lxmf::{read_attribution, unpack};
use crate::wire::proto as pb;

/// A message the group relayed to this client.
#[derive(Clone, Debug)]
pub struct Incoming {
    /// The group's `meshchat.group` hash.
    pub group: [u8; 16],
    pub group_name: String,
    /// `message` (cached), `short` (a notice; fetch with history), or an event kind.
    pub kind: String,
    pub message: CachedMessage,
}

/// Proofs of the client's own packets, and who waits for which.
#[derive(Default)]
pub(super) struct Proofs {
    waiting: Mutex<HashMap<[u8; 32], oneshot::Sender<()>>>,
    // A proof can beat the waiter's registration; it is kept a while.
    early: Mutex<HashMap<[u8; 32], Instant>>,
}

const EARLY_PROOF_TTL: Duration = Duration::from_secs(60);

impl Proofs {
    fn proved(&self, hash: [u8; 32]) {
        match self.waiting.lock().ok().and_then(|mut w| w.remove(&hash)) {
            Some(tx) => {
                let _ = tx.send(());
            }
            None => {
                if let Ok(mut e) = self.early.lock() {
                    e.retain(|_, t| t.elapsed() < EARLY_PROOF_TTL);
                    e.insert(hash, Instant::now());
                }
            }
        }
    }

    /// Whether the packet `hash` is proven within `timeout`.
    pub(super) async fn wait(&self, hash: [u8; 32], timeout: Duration) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.early.lock().ok().and_then(|mut e| e.remove(&hash)).is_some() {
            return true;
        }
        if let Ok(mut w) = self.waiting.lock() {
            w.insert(hash, tx);
        }
        let proved = matches!(tokio::time::timeout(timeout, rx).await, Ok(Ok(())));
        if let Ok(mut w) = self.waiting.lock() {
            w.remove(&hash);
        }
        proved
    }
}

pub(super) struct Ctx {
    pub node: Node,
    pub cache: ClientCache,
    pub my_lxmf: [u8; 16],
    pub incoming: mpsc::Sender<Incoming>,
    pub proofs: Arc<Proofs>,
    pub propagation: Arc<crate::lxmf::propagation::Propagation>,
}

/// Handles the node's events until the node goes away.
pub(super) async fn run(ctx: Ctx, mut events: mpsc::Receiver<NodeEvent>) {
    let group_name = name_hash(GROUP_ASPECT);
    while let Some(ev) = events.recv().await {
        match ev {
            NodeEvent::Announce { dest, public_key, name_hash: nh, app_data, .. } if nh == group_name => {
                // An announce without our app data (api_version 0: empty, or not a GroupAnnounce)
                // is no group's: nothing is cached from it.
                let Some(a) = crate::wire::announce::decode_group_announce(&app_data).ok().filter(|a| a.api_version > 0) else {
                    tracing::debug!(dest = %hex::encode(dest), "a meshchat.group announce without a GroupAnnounce");
                    continue;
                };
                let news = GroupNews {
                    public_key: Some(public_key.to_vec()),
                    lxmf_dest: (a.lxmf_destination.len() == 16).then(|| a.lxmf_destination.clone()),
                    name: Some(a.name.clone()),
                    private: Some(a.visibility == pb::Visibility::Private as i32),
                    member_count: Some(i64::from(a.member_count)),
                    join_stamp_cost: Some(i64::from(a.join_stamp_cost)),
                    post_stamp_cost: Some(i64::from(a.post_stamp_cost)),
                    announce: Some((app_data, crate::store::now_ms())),
                    ..Default::default()
                };
                // A member learns the private name from info; an announce does not overwrite it.
                let news = match ctx.cache.group(&dest).await {
                    Ok(Some(g)) if g.membership == "member" && g.private => GroupNews { name: None, ..news },
                    _ => news,
                };
                if let Err(err) = ctx.cache.note_group(&dest, news).await {
                    tracing::warn!(%err, "caching a group announce failed");
                }
            }
            NodeEvent::Announce { dest, name_hash: nh, app_data, .. } if crate::lxmf::propagation::Propagation::is_pn_announce(&nh) => {
                ctx.propagation.note_announce(dest, &app_data);
            }
            NodeEvent::Packet { dest, data, packet_hash } if dest == ctx.my_lxmf => {
                let mut packed = dest.to_vec();
                packed.extend_from_slice(&data);
                // Proven only once cached: a copy we could not keep is sent again.
                if copy(&ctx, &packed).await
                    && let Some(hash) = packet_hash
                    && let Err(err) = ctx.node.prove(dest, hash).await
                {
                    tracing::warn!(%err, "proving a copy failed");
                }
            }
            NodeEvent::LinkPacket { dest, data, .. } | NodeEvent::LinkResource { dest, data, .. } if dest == ctx.my_lxmf => {
                copy(&ctx, &data).await;
            }
            NodeEvent::Proof { packet_hash } => ctx.proofs.proved(packet_hash),
            _ => {}
        }
    }
}

/// Takes in one copy relayed by a group: checks it came from a group we know, signed by it,
/// caches a post, hands it to the reader. Returns whether it may be proven.
async fn copy(ctx: &Ctx, packed: &[u8]) -> bool {
    let msg = match unpack(packed) {
        Ok(m) => m,
        Err(err) => {
            tracing::warn!(%err, "an LXMF message that does not unpack");
            return false;
        }
    };
    let group = match ctx.cache.group_by_lxmf(&msg.source).await {
        Ok(Some(g)) => g,
        Ok(None) => {
            tracing::info!(source = %hex::encode(msg.source), "an LXMF message from outside the cached groups, ignored");
            return true;
        }
        Err(err) => {
            tracing::warn!(%err, "cache lookup failed");
            return false;
        }
    };
    let Ok(key) = <[u8; 64]>::try_from(group.public_key.as_slice()) else { return false };
    if !msg.signature_valid(&key) {
        tracing::warn!(group = %hex::encode(group.dest), "a copy with a bad signature, dropped");
        return false;
    }
    let attribution = msg.fields_map().ok().and_then(|f| read_attribution(&f)).unwrap_or_default();
    let kind = if attribution.kind.is_empty() { "message".to_owned() } else { attribution.kind.clone() };
    // The server prefixes the author ("alice: ") for stock clients; the cache keeps the text.
    let prefix = format!("{}: ", attribution.name);
    let content = msg.content.strip_prefix(prefix.as_bytes()).unwrap_or(&msg.content).to_vec();
    let message =
        CachedMessage { id: attribution.id, sender: attribution.sender, sender_name: attribution.name, timestamp_s: msg.timestamp, content, deleted: false };
    if kind == "message"
        && message.id > 0
        && let Err(err) = ctx.cache.put_live_message(&group.dest, &message).await
    {
        tracing::warn!(%err, "caching a copy failed");
        return false;
    }
    // A reader that falls behind misses the live line, not the message: it is cached.
    let _ = ctx.incoming.try_send(Incoming { group: group.dest, group_name: group.name, kind, message });
    true
}
