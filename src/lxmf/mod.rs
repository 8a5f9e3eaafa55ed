//! LXMF for every hosted group: inbound posts to `lxmf.delivery`, replies, and delivery tracking.

pub mod courier;
pub mod outbound;

use std::sync::Arc;
use std::time::Duration;

use crate::actors::group::Call;
use crate::actors::supervisor::{DestKind, lookup};
use crate::group::{Caller, GroupError, Op, Reply};
use crate::store::{InsertOutcome, NewMessage};
use crate::transport::router::Services;
use crate::wire::identity::identity_hash;
use crate::wire::lxmf::{LxmfMessage, unpack};

/// How long an inbound message waits for its sender's identity before it is dropped unproven
/// (the sender will retry, and by then the path request has usually been answered).
const IDENTITY_WAIT: Duration = Duration::from_secs(20);

/// Inbound LXMF handling.
#[derive(Default)]
pub struct Inbound;

/// How an LXMF message reached us, for metrics.
#[derive(Clone, Copy, Debug)]
pub enum Method {
    Opportunistic,
    Direct,
}

impl Method {
    fn label(self) -> &'static str {
        match self {
            Method::Opportunistic => "opportunistic",
            Method::Direct => "direct",
        }
    }
}

impl Inbound {
    /// A single encrypted packet to one of our destinations: the destination hash is implied.
    pub fn opportunistic(&self, s: Arc<Services>, dest: [u8; 16], data: Vec<u8>, packet_hash: Option<[u8; 32]>) {
        let mut packed = dest.to_vec();
        packed.extend_from_slice(&data);
        tokio::spawn(async move {
            let accepted = receive(&s, dest, &packed, Method::Opportunistic).await;
            if accepted && let Some(h) = packet_hash {
                // Only now, with the message committed, does the sender learn it was delivered.
                if let Err(err) = s.node.prove(dest, h).await {
                    tracing::warn!(%err, "cannot send delivery proof");
                }
            }
        });
    }

    /// A full packed message over a link (a packet or a Resource); the transport proves those itself.
    pub fn direct(&self, s: Arc<Services>, dest: [u8; 16], packed: Vec<u8>) {
        tokio::spawn(async move {
            receive(&s, dest, &packed, Method::Direct).await;
        });
    }
}

/// Validates, authorises and stores one inbound message; returns whether it may be proven
/// (stored now, or stored before: a sender's retry).
async fn receive(s: &Services, dest: [u8; 16], packed: &[u8], method: Method) -> bool {
    let outcome = |o: &'static str| crate::metrics::lxmf_received(method.label(), o);
    let Some(route) = lookup(&s.registry, &dest).filter(|r| r.kind == DestKind::Lxmf) else {
        outcome("unknown_destination");
        return false;
    };
    let msg = match unpack(packed) {
        Ok(m) if m.destination == dest => m,
        Ok(_) => {
            outcome("malformed");
            return false;
        }
        Err(err) => {
            tracing::info!(%err, "malformed LXMF message refused");
            outcome("malformed");
            return false;
        }
    };
    let Some(public_key) = sender_key(s, &msg).await else {
        tracing::info!(source = %hex::encode(msg.source), "sender identity unknown; message not proven");
        outcome("unknown_sender");
        return false;
    };
    if !msg.signature_valid(&public_key) {
        tracing::info!(source = %hex::encode(msg.source), "bad LXMF signature");
        outcome("bad_signature");
        return false;
    }
    let sender = hex::encode(identity_hash(&public_key));
    let post = Op::Post(NewMessage {
        group_id: route.group_id,
        message_hash: hex::encode(msg.message_id),
        sender_identity_hash: sender.clone(),
        timestamp: msg.timestamp,
        title: msg.title.clone(),
        content: msg.content.clone(),
        fields: msg.fields.clone(),
    });
    match route.addr.send(Call { caller: Caller::Identity(sender.clone()), op: post }).await {
        Ok(Ok(Reply::Posted(InsertOutcome::Inserted(_)))) => {
            outcome("accepted");
            true
        }
        Ok(Ok(Reply::Posted(InsertOutcome::Duplicate(_)))) => {
            outcome("duplicate");
            true
        }
        Ok(Ok(_)) => false,
        Ok(Err(GroupError::Forbidden(reason))) => {
            let banned = reason.contains("banned") || is_banned(s, route.group_id, &sender).await;
            outcome(if banned { "banned" } else { "not_member" });
            tracing::info!(sender, group = route.group_id, banned, "post refused");
            false
        }
        Ok(Err(err)) => {
            tracing::warn!(%err, group = route.group_id, "post failed");
            outcome("error");
            false
        }
        Err(err) => {
            tracing::error!(%err, "group actor unavailable");
            outcome("error");
            false
        }
    }
}

async fn is_banned(s: &Services, group_id: i64, identity: &str) -> bool {
    s.store.bans(group_id).await.map(|b| b.iter().any(|b| b.identity_hash == identity)).unwrap_or(false)
}

/// The sender's public key from an announce the node heard; if none yet, ask the network and wait.
async fn sender_key(s: &Services, msg: &LxmfMessage) -> Option<[u8; 64]> {
    if let Some(k) = s.node.recall_identity(msg.source).await {
        return Some(k);
    }
    let _ = s.node.request_path(msg.source).await;
    let deadline = tokio::time::Instant::now() + IDENTITY_WAIT;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if let Some(k) = s.node.recall_identity(msg.source).await {
            return Some(k);
        }
    }
    None
}
