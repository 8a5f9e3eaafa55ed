//! Outbound LXMF from a group identity: one signed message per member, encrypted to that member.
//!
//! [`prepare`] is the CPU part (pack, Ed25519 sign, X25519 + HKDF + AES-CBC + HMAC) and runs on the
//! worker pool; the node only hands the ciphertext to the interfaces.

use rmpv::Value;

use crate::wire::lxmf::{CUSTOM_TYPE_GROUP, FIELD_CUSTOM_META, FIELD_CUSTOM_TYPE, FIELD_TICKET, OutgoingMessage, Signer, pack};

/// RNS `Packet.ENCRYPTED_MDU`: the largest plaintext of one encrypted packet.
pub const MAX_PLAINTEXT: usize = 383;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OutboundError {
    #[error("message of {0} bytes does not fit one packet")]
    TooLarge(usize),
    #[error("cannot build the message: {0}")]
    Build(String),
}

/// A member as the sender needs to know them.
#[derive(Clone, Debug)]
pub struct Recipient {
    pub identity_hash: [u8; 16],
    pub lxmf_dest: [u8; 16],
    pub public_key: [u8; 64],
    /// The member's latest announced ratchet, which the reference encrypts to when known.
    pub ratchet: Option<[u8; 32]>,
    /// The stamp cost the member's `lxmf.delivery` announces; their client drops unstamped mail.
    pub stamp_cost: u32,
}

/// What to say.
#[derive(Clone, Debug)]
pub struct Body {
    pub timestamp: f64,
    pub title: Vec<u8>,
    pub content: Vec<u8>,
    pub fields: Vec<(Value, Value)>,
}

/// A message ready to hand to the node.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub lxmf_dest: [u8; 16],
    pub public_key: [u8; 64],
    pub ciphertext: Vec<u8>,
    pub message_id: [u8; 32],
}

/// How one member's copy travels.
#[derive(Clone, Debug)]
pub enum Outgoing {
    /// One encrypted packet.
    Packet(Prepared),
    /// Too large for a packet: the full packed message, for a direct link (the link encrypts it).
    Direct { lxmf_dest: [u8; 16], packed: Vec<u8>, message_id: [u8; 32] },
}

/// Packs and signs one member's copy: `(packed, message_id)`.
/// A member who announced a stamp cost gets a 32-byte stamp of that cost (as the reference sends),
/// mined with a SHA-256 midstate so it costs milliseconds, not seconds.
pub fn pack_for(group: &Signer, group_lxmf: [u8; 16], to: &Recipient, body: &Body) -> Result<(Vec<u8>, [u8; 32]), OutboundError> {
    let mut msg = OutgoingMessage {
        destination: to.lxmf_dest,
        source: group_lxmf,
        timestamp: body.timestamp,
        title: &body.title,
        content: &body.content,
        fields: body.fields.clone(),
        stamp: None,
    };
    let (packed, message_id) = pack(&msg, group).map_err(|e| OutboundError::Build(e.to_string()))?;
    if to.stamp_cost == 0 {
        return Ok((packed, message_id));
    }
    let stamp = crate::wire::stamp::generate(&message_id, crate::wire::stamp::MESSAGE_ROUNDS, to.stamp_cost)
        .ok_or_else(|| OutboundError::Build("no stamp found".into()))?;
    msg.stamp = Some(&stamp);
    pack(&msg, group).map_err(|e| OutboundError::Build(e.to_string()))
}

/// A packet when the message fits one, else the packed message for a direct link.
/// The same inputs always give the same message id, so a resend after a crash is a duplicate the
/// member's client drops.
pub fn prepare_any(group: &Signer, group_lxmf: [u8; 16], to: &Recipient, body: &Body) -> Result<Outgoing, OutboundError> {
    let (packed, message_id) = pack_for(group, group_lxmf, to, body)?;
    let plaintext = &packed[16..];
    if plaintext.len() > MAX_PLAINTEXT {
        return Ok(Outgoing::Direct { lxmf_dest: to.lxmf_dest, packed, message_id });
    }
    let mut x = [0u8; 32];
    x.copy_from_slice(&to.public_key[..32]);
    let target = x25519_dalek::PublicKey::from(to.ratchet.unwrap_or(x));
    let ciphertext = rns_transport::ratchets::encrypt_for_public_key(&target, &to.identity_hash, plaintext, rand::rngs::OsRng)
        .map_err(|e| OutboundError::Build(format!("{e:?}")))?;
    Ok(Outgoing::Packet(Prepared { lxmf_dest: to.lxmf_dest, public_key: to.public_key, ciphertext, message_id }))
}

/// Packs, signs and encrypts one message for one member as a single packet (`packed[16:]`).
pub fn prepare(group: &Signer, group_lxmf: [u8; 16], to: &Recipient, body: &Body) -> Result<Prepared, OutboundError> {
    match prepare_any(group, group_lxmf, to, body)? {
        Outgoing::Packet(p) => Ok(p),
        Outgoing::Direct { packed, .. } => Err(OutboundError::TooLarge(packed.len() - 16)),
    }
}

/// Who wrote a relayed message, for group-aware clients (documented in docs/protocol.md):
/// `FIELD_CUSTOM_TYPE = "meshgroup.v1"`, `FIELD_CUSTOM_META = {"s": sender identity (16 B),
/// "n": display name, "h": original message hash (32 B), "i": history id, "k": kind}`.
pub fn attribution(sender: &[u8], name: &str, message_hash: &[u8], id: i64, kind: &str) -> Vec<(Value, Value)> {
    vec![
        (Value::from(FIELD_CUSTOM_TYPE), Value::from(CUSTOM_TYPE_GROUP)),
        (
            Value::from(FIELD_CUSTOM_META),
            Value::Map(vec![
                (Value::from("s"), Value::Binary(sender.to_vec())),
                (Value::from("n"), Value::from(name)),
                (Value::from("h"), Value::Binary(message_hash.to_vec())),
                (Value::from("i"), Value::from(id)),
                (Value::from("k"), Value::from(kind)),
            ]),
        ),
    ]
}

/// `FIELD_TICKET = [expires, ticket]`: later posts carrying `TH(ticket ‖ message_id)` skip the work.
pub fn ticket_field(expires_s: f64, ticket: &[u8]) -> (Value, Value) {
    (Value::from(FIELD_TICKET), Value::Array(vec![Value::F64(expires_s), Value::Binary(ticket.to_vec())]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::identity::{GroupIdentity, LXMF_ASPECT};

    fn signer(key: &[u8]) -> Signer {
        crate::wire::lxmf::signer(key).expect("key")
    }

    #[test]
    fn prepared_message_decrypts_and_verifies() {
        let group = GroupIdentity::generate();
        let member = GroupIdentity::generate();
        let to =
            Recipient { identity_hash: member.hash, lxmf_dest: member.destination(LXMF_ASPECT), public_key: member.public_key, ratchet: None, stamp_cost: 0 };
        let body = Body { timestamp: 1.5, title: vec![], content: b"alice: hi".to_vec(), fields: attribution(&[1; 16], "alice", &[2; 32], 7, "message") };
        let p = prepare(&signer(&group.private_key), group.destination(LXMF_ASPECT), &to, &body).expect("prepare");
        let again = prepare(&signer(&group.private_key), group.destination(LXMF_ASPECT), &to, &body).expect("prepare");
        assert_eq!(p.message_id, again.message_id, "deterministic id, so resends de-duplicate");
        assert_ne!(p.ciphertext, again.ciphertext, "fresh ephemeral key each time");
        // decrypt as the member would, then unpack and verify as the reference does
        let secret = x25519_dalek::StaticSecret::from(<[u8; 32]>::try_from(&member.private_key[..32]).expect("32"));
        let plain = rns_transport::ratchets::decrypt_with_private_key(&secret, &member.hash, &p.ciphertext).expect("decrypt");
        let mut packed = to.lxmf_dest.to_vec();
        packed.extend(plain);
        let msg = crate::wire::lxmf::unpack(&packed).expect("unpack");
        assert!(msg.signature_valid(&group.public_key));
        assert_eq!(msg.content, b"alice: hi");
    }

    #[test]
    fn members_with_a_stamp_cost_get_a_valid_stamp() {
        let group = GroupIdentity::generate();
        let member = GroupIdentity::generate();
        let to =
            Recipient { identity_hash: member.hash, lxmf_dest: member.destination(LXMF_ASPECT), public_key: member.public_key, ratchet: None, stamp_cost: 6 };
        let body = Body { timestamp: 1.0, title: vec![], content: b"hi".to_vec(), fields: vec![] };
        let (packed, id) = pack_for(&signer(&group.private_key), group.destination(LXMF_ASPECT), &to, &body).expect("pack");
        let msg = crate::wire::lxmf::unpack(&packed).expect("unpack");
        assert_eq!(msg.message_id, id, "the stamp does not change the message id");
        assert!(msg.signature_valid(&group.public_key));
        let stamp = msg.stamp.expect("stamped");
        assert_eq!(stamp.len(), 32);
        let wb = crate::wire::stamp::workblock(&id, crate::wire::stamp::MESSAGE_ROUNDS);
        assert!(crate::wire::stamp::value(&wb, &stamp) >= 6);
    }

    #[test]
    fn oversize_is_refused() {
        let group = GroupIdentity::generate();
        let member = GroupIdentity::generate();
        let to =
            Recipient { identity_hash: member.hash, lxmf_dest: member.destination(LXMF_ASPECT), public_key: member.public_key, ratchet: None, stamp_cost: 0 };
        let body = Body { timestamp: 1.0, title: vec![], content: vec![b'x'; 400], fields: vec![] };
        assert!(matches!(prepare(&signer(&group.private_key), [0; 16], &to, &body), Err(OutboundError::TooLarge(_))));
    }
}
