//! LXMF messages: pack, unpack, message hash, signature and the stamp element (pure functions).
//!
//! Packed form: `dest(16) ‖ source(16) ‖ signature(64) ‖ msgpack([timestamp, title, content, fields(, stamp)])`.
//! `message_id = sha256(dest ‖ source ‖ msgpack(payload[:4]))`, signed as `dest ‖ source ‖ payload4 ‖ id`.
//! As in the reference, an unstamped payload is hashed as received (never re-encoded), and a stamped
//! one is re-encoded without its stamp the way Python's umsgpack would (floats as float64).

use rmpv::Value;
use sha2::{Digest, Sha256};

/// Header bytes before the payload.
pub const HEADER_LEN: usize = 16 + 16 + 64;
/// `FIELD_TICKET`: `[expires: float, ticket: 16 bytes]`.
pub const FIELD_TICKET: u64 = 0x0C;
/// `FIELD_CUSTOM_TYPE` / `FIELD_CUSTOM_DATA` / `FIELD_CUSTOM_META`: our sender attribution.
pub const FIELD_CUSTOM_TYPE: u64 = 0xFB;
pub const FIELD_CUSTOM_DATA: u64 = 0xFC;
pub const FIELD_CUSTOM_META: u64 = 0xFD;
/// `FIELD_FILE_ATTACHMENTS`, `FIELD_IMAGE`, `FIELD_AUDIO`: attachments, as LXMF defines them.
pub const FIELD_FILE_ATTACHMENTS: u64 = 0x05;
pub const FIELD_IMAGE: u64 = 0x06;
pub const FIELD_AUDIO: u64 = 0x07;
/// `FIELD_REPLY_TO`: the hash (32 bytes) of the message answered.
pub const FIELD_REPLY_TO: u64 = 0x30;
/// `FIELD_REPLY_QUOTE`: the quoted text of the message answered.
pub const FIELD_REPLY_QUOTE: u64 = 0x31;
/// `FIELD_REACTION`: `{0x00: target message hash, 0x01: the reaction, an emoji}`.
pub const FIELD_REACTION: u64 = 0x40;
/// Longest reaction we take, in bytes: an emoji with its modifiers, not a message.
pub const MAX_REACTION_LEN: usize = 32;
/// The value of `FIELD_CUSTOM_TYPE` on messages relayed by a meshgroup server.
pub const CUSTOM_TYPE_GROUP: &str = "meshgroup.v1";
/// Largest packed message we accept (the reference's default delivery limit is 1000 KB).
pub const MAX_PACKED_LEN: usize = 1_000_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LxmfError {
    #[error("message too short ({0} bytes)")]
    TooShort(usize),
    #[error("message too large ({0} bytes)")]
    TooLarge(usize),
    #[error("payload is not valid msgpack")]
    BadMsgpack,
    #[error("payload has the wrong shape: {0}")]
    BadShape(&'static str),
}

/// An unpacked message. `fields` keeps the sender's msgpack bytes of the map.
#[derive(Clone, Debug, PartialEq)]
pub struct LxmfMessage {
    pub destination: [u8; 16],
    pub source: [u8; 16],
    pub signature: [u8; 64],
    pub timestamp: f64,
    pub title: Vec<u8>,
    pub content: Vec<u8>,
    pub fields: Vec<u8>,
    pub stamp: Option<Vec<u8>>,
    /// `sha256(dest ‖ source ‖ payload4)`.
    pub message_id: [u8; 32],
    /// `dest ‖ source ‖ payload4 ‖ message_id`, what the signature covers.
    pub signed_part: Vec<u8>,
}

impl LxmfMessage {
    /// Checks the Ed25519 signature with the sender's 64-byte public key (`x25519 ‖ ed25519`).
    pub fn signature_valid(&self, sender_public_key: &[u8; 64]) -> bool {
        let mut ed = [0u8; 32];
        ed.copy_from_slice(&sender_public_key[32..]);
        rns_transport::identity::verify(ed, &self.signed_part, &self.signature)
    }

    /// The fields map decoded, for reading tickets, attribution and the like.
    pub fn fields_map(&self) -> Result<Vec<(Value, Value)>, LxmfError> {
        decode_fields(&self.fields)
    }
}

fn bytes_of(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::Binary(b) => Some(b.clone()),
        Value::String(s) => Some(s.as_bytes().to_vec()),
        Value::Nil => Some(Vec::new()),
        _ => None,
    }
}

fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut out, v);
    out
}

/// Python's umsgpack turns every float into float64 when re-encoding.
fn as_python_would(v: &Value) -> Value {
    match v {
        Value::F32(f) => Value::F64(f64::from(*f)),
        Value::Array(a) => Value::Array(a.iter().map(as_python_would).collect()),
        Value::Map(m) => Value::Map(m.iter().map(|(k, v)| (as_python_would(k), as_python_would(v))).collect()),
        other => other.clone(),
    }
}

fn read_value(mut data: &[u8]) -> Result<(Value, usize), LxmfError> {
    let total = data.len();
    let v = rmpv::decode::read_value_with_max_depth(&mut data, super::MSGPACK_MAX_DEPTH).map_err(|_| LxmfError::BadMsgpack)?;
    Ok((v, total - data.len()))
}

/// Decodes msgpack that must be a map (an LXMF `fields` element).
pub fn decode_fields(bytes: &[u8]) -> Result<Vec<(Value, Value)>, LxmfError> {
    let (v, used) = read_value(bytes)?;
    if used != bytes.len() {
        return Err(LxmfError::BadShape("trailing bytes after fields"));
    }
    match v {
        Value::Map(m) => Ok(m),
        Value::Nil => Ok(Vec::new()),
        _ => Err(LxmfError::BadShape("fields is not a map")),
    }
}

/// Unpacks a full packed message (for opportunistic delivery, prefix the packet's destination hash).
pub fn unpack(packed: &[u8]) -> Result<LxmfMessage, LxmfError> {
    if packed.len() < HEADER_LEN + 1 {
        return Err(LxmfError::TooShort(packed.len()));
    }
    if packed.len() > MAX_PACKED_LEN {
        return Err(LxmfError::TooLarge(packed.len()));
    }
    let mut destination = [0u8; 16];
    let mut source = [0u8; 16];
    let mut signature = [0u8; 64];
    destination.copy_from_slice(&packed[..16]);
    source.copy_from_slice(&packed[16..32]);
    signature.copy_from_slice(&packed[32..96]);
    let raw_payload = &packed[HEADER_LEN..];
    let (payload, used) = read_value(raw_payload)?;
    if used != raw_payload.len() {
        return Err(LxmfError::BadShape("trailing bytes after payload"));
    }
    let Value::Array(items) = payload else { return Err(LxmfError::BadShape("payload is not a list")) };
    if !(4..=5).contains(&items.len()) {
        return Err(LxmfError::BadShape("payload must have 4 or 5 elements"));
    }
    let timestamp = match &items[0] {
        Value::F64(f) => *f,
        Value::F32(f) => f64::from(*f),
        Value::Integer(i) => i.as_f64().ok_or(LxmfError::BadShape("timestamp"))?,
        _ => return Err(LxmfError::BadShape("timestamp is not a number")),
    };
    let title = bytes_of(&items[1]).ok_or(LxmfError::BadShape("title is not bytes"))?;
    let content = bytes_of(&items[2]).ok_or(LxmfError::BadShape("content is not bytes"))?;
    let fields = match &items[3] {
        Value::Map(_) | Value::Nil => encode(&items[3]),
        _ => return Err(LxmfError::BadShape("fields is not a map")),
    };
    let (stamp, payload4) = if items.len() == 5 {
        let stamp = bytes_of(&items[4]).ok_or(LxmfError::BadShape("stamp is not bytes"))?;
        let four = Value::Array(items[..4].iter().map(as_python_would).collect());
        (Some(stamp), encode(&four))
    } else {
        (None, raw_payload.to_vec())
    };
    let mut signed_part = Vec::with_capacity(32 + payload4.len() + 32);
    signed_part.extend_from_slice(&destination);
    signed_part.extend_from_slice(&source);
    signed_part.extend_from_slice(&payload4);
    let message_id: [u8; 32] = Sha256::digest(&signed_part).into();
    signed_part.extend_from_slice(&message_id);
    Ok(LxmfMessage { destination, source, signature, timestamp, title, content, fields, stamp, message_id, signed_part })
}

/// A message to send: the group identity signs it.
#[derive(Clone, Debug)]
pub struct OutgoingMessage<'a> {
    pub destination: [u8; 16],
    pub source: [u8; 16],
    pub timestamp: f64,
    pub title: &'a [u8],
    pub content: &'a [u8],
    /// Encoded as an empty map `{}` when empty, like the reference.
    pub fields: Vec<(Value, Value)>,
    pub stamp: Option<&'a [u8]>,
}

/// The identity that signs: build it once per group (from its 64-byte key) and reuse it, since
/// deriving it costs about as much as signing.
pub type Signer = rns_transport::identity::PrivateIdentity;

/// A signer from a Reticulum identity file's 64 bytes.
pub fn signer(private_key: &[u8]) -> Result<Signer, LxmfError> {
    Signer::from_private_key_bytes(private_key).map_err(|_| LxmfError::BadShape("signing key"))
}

/// Packs and signs; returns `(packed, message_id)`.
pub fn pack(msg: &OutgoingMessage<'_>, signer: &Signer) -> Result<(Vec<u8>, [u8; 32]), LxmfError> {
    let payload4 = encode(&Value::Array(vec![
        Value::F64(msg.timestamp),
        Value::Binary(msg.title.to_vec()),
        Value::Binary(msg.content.to_vec()),
        Value::Map(msg.fields.clone()),
    ]));
    let mut hashed = Vec::with_capacity(32 + payload4.len() + 32);
    hashed.extend_from_slice(&msg.destination);
    hashed.extend_from_slice(&msg.source);
    hashed.extend_from_slice(&payload4);
    let message_id: [u8; 32] = Sha256::digest(&hashed).into();
    hashed.extend_from_slice(&message_id);
    let signature = signer.sign(&hashed).to_bytes();
    let payload = match msg.stamp {
        None => payload4,
        Some(stamp) => encode(&Value::Array(vec![
            Value::F64(msg.timestamp),
            Value::Binary(msg.title.to_vec()),
            Value::Binary(msg.content.to_vec()),
            Value::Map(msg.fields.clone()),
            Value::Binary(stamp.to_vec()),
        ])),
    };
    let mut packed = Vec::with_capacity(HEADER_LEN + payload.len());
    packed.extend_from_slice(&msg.destination);
    packed.extend_from_slice(&msg.source);
    packed.extend_from_slice(&signature);
    packed.extend_from_slice(&payload);
    Ok((packed, message_id))
}

fn field(fields: &[(Value, Value)], key: u64) -> Option<&Value> {
    fields.iter().find(|(k, _)| k.as_u64() == Some(key)).map(|(_, v)| v)
}

fn hash32(v: &Value) -> Option<[u8; 32]> {
    bytes_of(v)?.try_into().ok()
}

/// Reads `FIELD_REPLY_TO` when it is a 32-byte message hash.
pub fn reply_to_field(fields: &[(Value, Value)]) -> Option<[u8; 32]> {
    hash32(field(fields, FIELD_REPLY_TO)?)
}

/// Reads `FIELD_REACTION`: `Ok(None)` when there is none, an error when it is malformed (a
/// reaction without a 32-byte target, or whose content is empty, not UTF-8, or too long).
pub fn reaction_field(fields: &[(Value, Value)]) -> Result<Option<([u8; 32], String)>, LxmfError> {
    let Some(v) = field(fields, FIELD_REACTION) else { return Ok(None) };
    let Value::Map(m) = v else { return Err(LxmfError::BadShape("reaction is not a map")) };
    let target = field(m, 0x00).and_then(hash32).ok_or(LxmfError::BadShape("reaction target is not a 32-byte hash"))?;
    let emoji = match field(m, 0x01) {
        Some(Value::String(s)) => s.as_str().map(str::to_owned),
        Some(Value::Binary(b)) => String::from_utf8(b.clone()).ok(),
        _ => None,
    }
    .ok_or(LxmfError::BadShape("reaction content is not text"))?;
    if !valid_reaction(&emoji) {
        return Err(LxmfError::BadShape("reaction content must be one short emoji"));
    }
    Ok(Some((target, emoji)))
}

/// A reaction is short text, not a message: non-blank, at most [`MAX_REACTION_LEN`] bytes, no
/// control characters.
pub fn valid_reaction(emoji: &str) -> bool {
    !emoji.trim().is_empty() && emoji.len() <= MAX_REACTION_LEN && !emoji.chars().any(char::is_control)
}

/// Attachment kinds, as bits of a group's policy.
pub const KIND_IMAGE: u32 = 1;
pub const KIND_FILE: u32 = 2;
pub const KIND_AUDIO: u32 = 4;

/// One attachment of a message, as the link API hands it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// `FIELD_IMAGE`, `FIELD_FILE_ATTACHMENTS` or `FIELD_AUDIO`.
    pub field: u64,
    /// The file name, the image type (`webp`, `png`, …), or the audio mode (as text).
    pub name: String,
    pub data: Vec<u8>,
}

/// The attachment kind of a field key, if it is one.
pub fn attachment_kind(key: u64) -> Option<u32> {
    match key {
        FIELD_IMAGE => Some(KIND_IMAGE),
        FIELD_FILE_ATTACHMENTS => Some(KIND_FILE),
        FIELD_AUDIO => Some(KIND_AUDIO),
        _ => None,
    }
}

/// The attachment fields of a message, summed up for a policy: the kinds present (bits) and
/// their size, the msgpack bytes of their values, whatever their shape.
pub fn attachment_size(fields: &[(Value, Value)]) -> (u32, usize) {
    fields.iter().filter_map(|(k, v)| Some((attachment_kind(k.as_u64()?)?, encode(v).len()))).fold((0, 0), |(kinds, size), (k, n)| (kinds | k, size + n))
}

fn text_of(v: &Value) -> String {
    match v {
        Value::Integer(i) => i.to_string(),
        other => bytes_of(other).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default(),
    }
}

/// Every attachment of a message: `FIELD_IMAGE = [type, data]`, `FIELD_AUDIO = [mode, data]`,
/// `FIELD_FILE_ATTACHMENTS = [[name, data], …]`. Entries of another shape are skipped.
pub fn attachments(fields: &[(Value, Value)]) -> Vec<Attachment> {
    let pair = |field: u64, v: &Value| match v {
        Value::Array(a) if a.len() >= 2 => bytes_of(&a[1]).map(|data| Attachment { field, name: text_of(&a[0]), data }),
        _ => None,
    };
    let mut out = Vec::new();
    for (k, v) in fields {
        match k.as_u64() {
            Some(f @ (FIELD_IMAGE | FIELD_AUDIO)) => out.extend(pair(f, v)),
            Some(FIELD_FILE_ATTACHMENTS) => {
                if let Value::Array(files) = v {
                    out.extend(files.iter().filter_map(|f| pair(FIELD_FILE_ATTACHMENTS, f)));
                }
            }
            _ => {}
        }
    }
    out
}

/// `FIELD_REACTION` as we send it, naming the recipient's own copy of the target; the content is
/// UTF-8 bytes, as LXMF's `REACTION_CONTENT` specifies.
pub fn reaction_value(target: &[u8], emoji: &str) -> (Value, Value) {
    let map = vec![(Value::from(0x00u8), Value::Binary(target.to_vec())), (Value::from(0x01u8), Value::Binary(emoji.as_bytes().to_vec()))];
    (Value::from(FIELD_REACTION), Value::Map(map))
}

/// Reads `FIELD_TICKET` (`[expires, ticket]`) if present and well formed.
pub fn ticket_field(fields: &[(Value, Value)]) -> Option<(f64, Vec<u8>)> {
    let (_, v) = fields.iter().find(|(k, _)| k.as_u64() == Some(FIELD_TICKET))?;
    let Value::Array(a) = v else { return None };
    let expires = a.first()?.as_f64()?;
    let ticket = bytes_of(a.get(1)?)?;
    (ticket.len() == 16).then_some((expires, ticket))
}

/// Who wrote a message a group relayed, as its `FIELD_CUSTOM_META` says (see `lxmf::outbound::attribution`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Attribution {
    /// The author's identity hash.
    pub sender: Vec<u8>,
    /// The author's display name.
    pub name: String,
    /// The original message hash.
    pub message_hash: Vec<u8>,
    /// The history id.
    pub id: i64,
    /// `message`, `short`, or an event kind such as `kicked`.
    pub kind: String,
}

/// Reads a relayed message's attribution: `None` unless `FIELD_CUSTOM_TYPE` is
/// [`CUSTOM_TYPE_GROUP`] and `FIELD_CUSTOM_META` is a map. Missing keys stay empty.
pub fn read_attribution(fields: &[(Value, Value)]) -> Option<Attribution> {
    let field = |key: u64| fields.iter().find(|(k, _)| k.as_u64() == Some(key)).map(|(_, v)| v);
    if field(FIELD_CUSTOM_TYPE).and_then(bytes_of)? != CUSTOM_TYPE_GROUP.as_bytes() {
        return None;
    }
    let Value::Map(meta) = field(FIELD_CUSTOM_META)? else { return None };
    let mut a = Attribution::default();
    for (k, v) in meta {
        match k.as_str() {
            Some("s") => a.sender = bytes_of(v).unwrap_or_default(),
            Some("n") => a.name = bytes_of(v).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default(),
            Some("h") => a.message_hash = bytes_of(v).unwrap_or_default(),
            Some("i") => a.id = v.as_i64().unwrap_or_default(),
            Some("k") => a.kind = bytes_of(v).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default(),
            _ => {}
        }
    }
    Some(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v() -> serde_json::Value {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors.json")).expect("vectors");
        serde_json::from_str(&text).expect("json")
    }

    fn hx(v: &serde_json::Value) -> Vec<u8> {
        hex::decode(v.as_str().expect("str")).expect("hex")
    }

    #[test]
    fn unpack_matches_reference_vector() {
        let v = v();
        let m = &v["lxmf_message"];
        let msg = unpack(&hx(&m["packed_hex"])).expect("unpack");
        assert_eq!(msg.message_id.to_vec(), hx(&m["message_id_hex"]));
        assert_eq!(msg.signed_part, hx(&m["signed_data_hex"]));
        assert_eq!(msg.content, hx(&m["content_hex"]));
        assert_eq!(msg.title, hx(&m["title_hex"]));
        let pk: [u8; 64] = hx(&v["identity"]["public_key_hex"]).try_into().expect("64");
        assert!(msg.signature_valid(&pk));
        // the stamped variant has the same id and signature
        let stamped = unpack(&hx(&m["stamped_with_ticket_packed_hex"])).expect("unpack");
        assert_eq!(stamped.message_id, msg.message_id);
        assert!(stamped.signature_valid(&pk));
        assert_eq!(stamped.stamp.as_deref(), Some(hx(&m["ticket_stamp_hex"]).as_slice()));
        // opportunistic body: the packet's destination hash is prefixed back
        let mut opp = msg.destination.to_vec();
        opp.extend(hx(&m["opportunistic_packet_plaintext_hex"]));
        assert_eq!(unpack(&opp).expect("unpack").message_id, msg.message_id);
    }

    #[test]
    fn pack_matches_reference_vector() {
        let v = v();
        let m = &v["lxmf_message"];
        let key: [u8; 64] = hx(&v["identity"]["private_key_hex"]).try_into().expect("64");
        let reference = unpack(&hx(&m["packed_hex"])).expect("unpack");
        let fields = reference.fields_map().expect("fields");
        let out = OutgoingMessage {
            destination: reference.destination,
            source: reference.source,
            timestamp: reference.timestamp,
            title: &reference.title,
            content: &reference.content,
            fields,
            stamp: None,
        };
        let (packed, id) = pack(&out, &signer(&key).expect("key")).expect("pack");
        assert_eq!(packed, hx(&m["packed_hex"]));
        assert_eq!(id.to_vec(), hx(&m["message_id_hex"]));
    }

    #[test]
    fn malformed_payloads_are_refused() {
        let v = v();
        let good = hx(&v["lxmf_message"]["packed_hex"]);
        assert_eq!(unpack(&good[..50]), Err(LxmfError::TooShort(50)));
        let mut bad = good[..HEADER_LEN].to_vec();
        bad.extend([0x94, 0xcb]); // a list of four whose first float is cut off
        assert_eq!(unpack(&bad), Err(LxmfError::BadMsgpack));
        let mut wrong = good[..HEADER_LEN].to_vec();
        wrong.extend(encode(&Value::Array(vec![Value::from("x"), Value::Nil, Value::Nil, Value::Nil])));
        assert!(matches!(unpack(&wrong), Err(LxmfError::BadShape(_))));
        let mut truncated = good.clone();
        truncated.truncate(good.len() - 3);
        assert!(unpack(&truncated).is_err());
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(unpack(&trailing).is_err());
        let mut seed = 7u64;
        for len in 0..400usize {
            let mut data = good[..HEADER_LEN].to_vec();
            data.extend((0..len).map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (seed >> 33) as u8
            }));
            let _ = unpack(&data);
        }
    }

    #[test]
    fn reply_and_reaction_fields_round_trip() {
        let target = [7u8; 32];
        let fields = vec![(Value::from(FIELD_REPLY_TO), Value::Binary(target.to_vec())), reaction_value(&target, "👍")];
        let decoded = decode_fields(&encode(&Value::Map(fields))).expect("fields");
        assert_eq!(reply_to_field(&decoded), Some(target));
        assert_eq!(reaction_field(&decoded), Ok(Some((target, "👍".to_owned()))));
        assert_eq!(reaction_field(&[]), Ok(None));
        assert_eq!(reply_to_field(&[(Value::from(FIELD_REPLY_TO), Value::Binary(vec![1; 16]))]), None, "not a message hash");
        let bad = |v: Value| reaction_field(&[(Value::from(FIELD_REACTION), v)]).is_err();
        assert!(bad(Value::from(1)));
        assert!(bad(Value::Map(vec![(Value::from(0x01u8), Value::from("👍"))])), "no target");
        assert!(bad(Value::Map(vec![(Value::from(0x00u8), Value::Binary(target.to_vec())), (Value::from(0x01u8), Value::from(""))])));
        assert!(bad(Value::Map(vec![(Value::from(0x00u8), Value::Binary(target.to_vec())), (Value::from(0x01u8), Value::from("x".repeat(40)))])));
    }

    #[test]
    fn attachments_are_found_and_measured() {
        let fields = vec![
            (Value::from(FIELD_IMAGE), Value::Array(vec![Value::from("webp"), Value::Binary(vec![1; 100])])),
            (Value::from(FIELD_FILE_ATTACHMENTS), Value::Array(vec![Value::Array(vec![Value::from("a.txt"), Value::Binary(vec![2; 10])]), Value::from(3)])),
            (Value::from(FIELD_AUDIO), Value::Array(vec![Value::from(16), Value::Binary(vec![3; 5])])),
            (Value::from(FIELD_REPLY_TO), Value::Binary(vec![0; 32])),
        ];
        let found = attachments(&fields);
        assert_eq!(found.len(), 3, "the malformed file entry is skipped");
        assert_eq!((found[0].field, found[0].name.as_str(), found[0].data.len()), (FIELD_IMAGE, "webp", 100));
        assert_eq!((found[1].name.as_str(), found[2].name.as_str()), ("a.txt", "16"));
        let (kinds, size) = attachment_size(&fields);
        assert_eq!(kinds, KIND_IMAGE | KIND_FILE | KIND_AUDIO);
        assert!(size > 115 && size < 160, "{size}");
        assert_eq!(attachment_size(&fields[3..]), (0, 0));
    }

    #[test]
    fn attribution_round_trips_and_needs_the_group_type() {
        let fields = crate::lxmf::outbound::attribution(&[1; 16], "alice", &[2; 32], 42, "message");
        let a = read_attribution(&fields).expect("attribution");
        assert_eq!(a, Attribution { sender: vec![1; 16], name: "alice".into(), message_hash: vec![2; 32], id: 42, kind: "message".into() });
        let mut other = fields.clone();
        other[0].1 = Value::from("someone.else");
        assert_eq!(read_attribution(&other), None);
        assert_eq!(read_attribution(&fields[..1]), None, "no meta map");
    }

    #[test]
    fn empty_fields_pack_as_map() {
        let key = signer(&[1u8; 64]).expect("key");
        let (packed, _) =
            pack(&OutgoingMessage { destination: [2; 16], source: [3; 16], timestamp: 1.0, title: b"", content: b"x", fields: vec![], stamp: None }, &key)
                .expect("pack");
        assert_eq!(*packed.last().expect("byte"), 0x80, "fields encoded as {{}}");
    }
}

/// App data of an `lxmf.delivery` announce: `[display_name (bin), stamp_cost (int or nil), [0]]`.
/// Stock clients read the name and generate stamps of the announced cost by themselves.
pub fn delivery_announce(display_name: &str, stamp_cost: u32) -> Vec<u8> {
    let cost = if (1..255).contains(&stamp_cost) { Value::from(stamp_cost) } else { Value::Nil };
    encode(&Value::Array(vec![Value::Binary(display_name.as_bytes().to_vec()), cost, Value::Array(vec![Value::from(0u8)])]))
}

#[cfg(test)]
mod announce_tests {
    #[test]
    fn delivery_announce_matches_reference_layout() {
        // mp([b"Test Group", 8, [0]]) as in the reference vector's app_data.
        assert_eq!(hex::encode(super::delivery_announce("Test Group", 8)), "93c40a546573742047726f7570089100");
        assert_eq!(hex::encode(super::delivery_announce("x", 0)), "93c40178c09100");
    }
}
