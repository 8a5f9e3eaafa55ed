//! Propagation nodes: members who stay unreachable get their copy deposited on one, and each
//! group's own inbox on it is synced, so posts left there while the server was away arrive.
//!
//! Deposit: `msgpack([time, [dest ‖ encrypt(packed[16:]) ‖ pn_stamp]])` over a link to the node's
//! `lxmf.propagation` destination. Sync: a link identified as the group, `/get [nil, nil]` for the
//! list, `/get [wants, [], limit_kb]` for the messages, `/get [nil, haves]` to purge them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rmpv::Value;
use sha2::{Digest, Sha256};

use super::outbound::Recipient;
use crate::transport::{Node, NodeError};
use crate::wire::identity::name_hash;

/// `LXStamper.WORKBLOCK_EXPAND_ROUNDS_PN`.
pub const PN_ROUNDS: usize = 1000;
/// The reference's default propagation stamp cost, used until the node's announce says otherwise.
const DEFAULT_PN_COST: u32 = 16;
/// Per sync, as the reference's client default (`delivery_per_transfer_limit`, KB).
const SYNC_LIMIT_KB: u32 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum PropagationError {
    #[error("no propagation node is configured or known")]
    NoNode,
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("propagation node refused: {0}")]
    Refused(String),
    #[error("cannot build the deposit: {0}")]
    Build(String),
}

/// The propagation node in use and what we know of the ones heard.
pub struct Propagation {
    node: Node,
    configured: Option<[u8; 16]>,
    heard: Mutex<HashMap<[u8; 16], u32>>,
}

impl Propagation {
    pub fn new(node: Node, configured: Option<[u8; 16]>) -> Self {
        Propagation { node, configured, heard: Mutex::default() }
    }

    /// Remembers a propagation node's announce (and its stamp cost).
    pub fn note_announce(&self, dest: [u8; 16], app_data: &[u8]) {
        if let Some(cost) = announced_cost(app_data)
            && let Ok(mut h) = self.heard.lock()
        {
            h.insert(dest, cost);
        }
    }

    /// Whether an announce is a propagation node's.
    pub fn is_pn_announce(name: &[u8; 10]) -> bool {
        *name == name_hash("lxmf.propagation")
    }

    /// The node to use: the configured one, else the most recently heard.
    pub fn target(&self) -> Option<([u8; 16], u32)> {
        let heard = self.heard.lock().ok()?;
        match self.configured {
            Some(d) => Some((d, heard.get(&d).copied().unwrap_or(DEFAULT_PN_COST))),
            None => heard.iter().next().map(|(d, c)| (*d, *c)),
        }
    }

    /// Deposits a packed message for a member; returns once the node has the whole transfer.
    pub async fn deposit(&self, to: &Recipient, packed: &[u8]) -> Result<(), PropagationError> {
        let (pn, cost) = self.target().ok_or(PropagationError::NoNode)?;
        if self.node.recall_identity(pn).await.is_none() {
            let _ = self.node.request_path(pn).await;
            return Err(PropagationError::NoNode);
        }
        let mut x = [0u8; 32];
        x.copy_from_slice(&to.public_key[..32]);
        let target = x25519_dalek::PublicKey::from(to.ratchet.unwrap_or(x));
        let body = packed.get(16..).ok_or_else(|| PropagationError::Build("short message".into()))?.to_vec();
        let (lxmf_dest, identity) = (to.lxmf_dest, to.identity_hash);
        // The workblock and the stamp search are CPU work: off the runtime.
        let data = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, PropagationError> {
            let ct = rns_transport::ratchets::encrypt_for_public_key(&target, &identity, &body, rand::rngs::OsRng)
                .map_err(|e| PropagationError::Build(format!("{e:?}")))?;
            let mut lxmf_data = lxmf_dest.to_vec();
            lxmf_data.extend_from_slice(&ct);
            let transient_id: [u8; 32] = Sha256::digest(&lxmf_data).into();
            let stamp = crate::wire::stamp::generate(&transient_id, PN_ROUNDS, cost).ok_or_else(|| PropagationError::Build("no stamp found".into()))?;
            lxmf_data.extend_from_slice(&stamp);
            let mut out = Vec::new();
            let container = Value::Array(vec![Value::F64(crate::store::now_ms() as f64 / 1000.0), Value::Array(vec![Value::Binary(lxmf_data)])]);
            rmpv::encode::write_value(&mut out, &container).map_err(|e| PropagationError::Build(e.to_string()))?;
            Ok(out)
        })
        .await
        .map_err(|e| PropagationError::Build(e.to_string()))??;
        let link = self.node.open_link(pn, "lxmf", "propagation", Duration::from_secs(20)).await?;
        self.node.send_resource(link, data, Duration::from_secs(120)).await?;
        Ok(())
    }

    /// Fetches a group's messages from the node as full packed messages (destination prefixed,
    /// decrypted). Call [`Propagation::purge`] with the result once they are stored.
    pub async fn fetch(&self, group_key: &[u8; 64], group_lxmf: [u8; 16]) -> Result<Fetched, PropagationError> {
        let (pn, _) = self.target().ok_or(PropagationError::NoNode)?;
        if self.node.recall_identity(pn).await.is_none() {
            let _ = self.node.request_path(pn).await;
            return Err(PropagationError::NoNode);
        }
        let link = self.node.open_link(pn, "lxmf", "propagation", Duration::from_secs(20)).await?;
        self.node.identify_link(link, group_key).await?;
        let timeout = Duration::from_secs(60);
        let list = self.node.link_request(link, "/get", Value::Array(vec![Value::Nil, Value::Nil]), timeout).await?;
        let ids = listed(list)?;
        if ids.is_empty() {
            return Ok(Fetched { link, messages: Vec::new(), haves: Vec::new() });
        }
        let wanted = Value::Array(vec![Value::Array(ids.clone()), Value::Array(vec![]), Value::from(SYNC_LIMIT_KB)]);
        let got = listed(self.node.link_request(link, "/get", wanted, timeout).await?)?;
        let inbox = Inbox::new(group_key, group_lxmf)?;
        let (messages, haves) = inbox.open(got);
        Ok(Fetched { link, messages, haves })
    }

    /// Tells the node to drop what was fetched, so the next sync does not fetch it again.
    pub async fn purge(&self, fetched: Fetched) -> Result<(), PropagationError> {
        if fetched.haves.is_empty() {
            return Ok(());
        }
        let purge = Value::Array(vec![Value::Nil, Value::Array(fetched.haves)]);
        self.node.link_request(fetched.link, "/get", purge, Duration::from_secs(60)).await?;
        Ok(())
    }
}

/// The stamp cost a propagation node's announce asks for, if the app data says (over-deep msgpack
/// says nothing, as for `courier::delivery_announce`).
pub fn announced_cost(app_data: &[u8]) -> Option<u32> {
    if crate::wire::msgpack_too_deep(app_data) {
        return None;
    }
    lxmf_core::pn_stamp_cost_from_app_data(Some(app_data)).map(|cost| cost.clamp(0, 254) as u32)
}

/// The list a `/get` answers with (message ids, or the messages); anything else is a refusal.
pub fn listed(response: Value) -> Result<Vec<Value>, PropagationError> {
    match response {
        Value::Array(items) => Ok(items),
        other => Err(PropagationError::Refused(format!("{other}"))),
    }
}

/// A group's keys for opening what its inbox on the node holds.
pub struct Inbox {
    secret: x25519_dalek::StaticSecret,
    identity_hash: [u8; 16],
    lxmf_dest: [u8; 16],
}

impl Inbox {
    /// The group's decryption key and identity hash, derived once per sync.
    pub fn new(group_key: &[u8; 64], lxmf_dest: [u8; 16]) -> Result<Self, PropagationError> {
        let secret = x25519_dalek::StaticSecret::from(<[u8; 32]>::try_from(&group_key[..32]).map_err(|_| PropagationError::Build("key".into()))?);
        let group = crate::wire::identity::GroupIdentity::from_private_key(group_key).map_err(|e| PropagationError::Build(e.to_string()))?;
        Ok(Inbox { secret, identity_hash: group.hash, lxmf_dest })
    }

    /// Opens the messages a `/get` returned: every binary item is one `lxmf_data`
    /// (`dest ‖ ciphertext`). Returns the packed messages addressed to this group (destination
    /// prefixed, decrypted) and the ids of every item, to purge. Other items are skipped.
    pub fn open(&self, items: Vec<Value>) -> (Vec<Vec<u8>>, Vec<Value>) {
        let mut out = Vec::new();
        let mut haves = Vec::new();
        for item in items {
            let Value::Binary(lxmf_data) = item else { continue };
            haves.push(Value::Binary(Sha256::digest(&lxmf_data).to_vec()));
            if lxmf_data.len() <= 16 || lxmf_data[..16] != self.lxmf_dest {
                continue;
            }
            match rns_transport::ratchets::decrypt_with_private_key(&self.secret, &self.identity_hash, &lxmf_data[16..]) {
                Ok(plain) => {
                    let mut packed = self.lxmf_dest.to_vec();
                    packed.extend(plain);
                    out.push(packed);
                }
                Err(err) => tracing::info!(?err, "undecryptable propagated message"),
            }
        }
        (out, haves)
    }
}

/// What one sync fetched: the messages, and the ids to purge once they are stored.
pub struct Fetched {
    link: [u8; 16],
    pub messages: Vec<Vec<u8>>,
    haves: Vec<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_opens_the_reference_message() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors.json")).expect("vectors");
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        let hx = |k: &str| hex::decode(v["propagation"][k].as_str().expect("hex")).expect("hex");
        let inbox = Inbox::new(&crate::fuzzing::GROUP_KEY, crate::fuzzing::GROUP_LXMF).expect("keys");
        let (messages, haves) = inbox.open(vec![Value::Binary(hx("lxmf_data_hex")), Value::Binary(vec![0; 40]), Value::Nil]);
        assert_eq!(haves, vec![Value::Binary(hx("transient_id_hex")), Value::Binary(Sha256::digest([0; 40]).to_vec())]);
        assert_eq!(messages.len(), 1);
        assert!(crate::wire::lxmf::unpack(&messages[0]).is_ok());
        assert_eq!(announced_cost(&hex::decode(v["propagation"]["pn_app_data_example_hex"].as_str().expect("hex")).expect("hex")), Some(16));
        assert!(listed(Value::from(0xf0u8)).is_err());
    }
}
