//! The JSON dialect of the link API, as MeshChat's group-chat prototype (`GroupChatClient`) speaks
//! it: request bodies are UTF-8 JSON objects, answers are JSON objects, errors are `{"error": …}`.
//!
//! Pure functions only. The API layer turns a decoded [`JsonRequest`] into the same group
//! operation a protobuf body would become, so both dialects share every rule.

use serde::Serialize;
use serde_json::{Map, Value};

/// Longest display name, in characters (the store's bound; longer is refused, not cut).
pub const MAX_DISPLAY_NAME_CHARS: usize = 64;
/// Longest post, in UTF-8 bytes of `content`.
pub const MAX_CONTENT_BYTES: usize = 32 * 1024;
/// Longest `challenge` or `stamp` of a join, in bytes (before hex encoding).
pub const MAX_STAMP_BYTES: usize = 32;

/// Whether a request body is in the JSON dialect: a nil data element (`data=None` in RNS), or
/// bytes whose first byte is `{`. A protobuf body never starts with `{` (it would be field 15 as
/// a deprecated group), and an empty protobuf message is sent as empty bytes, not nil.
pub fn is_json(body: Option<&[u8]>) -> bool {
    match body {
        None => true,
        Some(b) => b.first() == Some(&b'{'),
    }
}

/// Why a JSON request body was refused. The text is what the caller reads in `{"error": …}`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    #[error("Failed to parse request data as JSON: {0}")]
    Malformed(String),
    #[error("the request data must be a JSON object")]
    NotObject,
    #[error("{field} must be {expected}")]
    WrongType { field: &'static str, expected: &'static str },
    #[error("{field} is missing")]
    Missing { field: &'static str },
    #[error("{field} is longer than {max} {unit}")]
    TooLong { field: &'static str, max: usize, unit: &'static str },
    #[error("order must be \"asc\" or \"desc\"")]
    BadOrder,
    #[error("an empty message")]
    Empty,
    #[error("{0} is not available in the JSON dialect; send its protobuf body as bytes (b\"\" for an empty message)")]
    UnsupportedPath(String),
}

/// Order of a history page: `asc` pages forward (`id > after_id`), `desc` back (`id < after_id`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonOrder {
    Asc,
    Desc,
}

/// A decoded JSON request. Absent and `null` fields are `None` (the server's defaults apply).
#[derive(Clone, Debug, PartialEq)]
pub enum JsonRequest {
    /// `/api/v1/info`: no fields.
    Info,
    /// `/api/v1/join`: `{display_name, challenge?, stamp?}`; the last two hex, for a group with a join cost.
    Join { display_name: String, challenge: Vec<u8>, stamp: Vec<u8> },
    /// `/api/v1/leave`: no fields.
    Leave,
    /// `/api/v1/members`: `{page, limit}`, pages numbered from 1 (0 counts as 1).
    Members { page: Option<u64>, limit: Option<u64> },
    /// `/api/v1/messages`: `{order, limit, after_id}`; a missing order is `asc`.
    Messages { order: JsonOrder, limit: Option<u64>, after_id: Option<i64> },
    /// `/api/v1/messages/send`: `{timestamp, content}`; `timestamp` in seconds, as `time.time()`.
    Send { timestamp: Option<f64>, content: String },
}

/// Decodes the body of a JSON-dialect request to `path`. Pure: any input gives a value or an
/// error, never a panic. Unknown keys are ignored.
pub fn decode_request(path: &str, body: Option<&[u8]>) -> Result<JsonRequest, JsonError> {
    let obj = match body {
        None => Map::new(),
        Some(b) => match serde_json::from_slice::<Value>(b) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err(JsonError::NotObject),
            Err(e) => return Err(JsonError::Malformed(e.to_string())),
        },
    };
    match path {
        "/api/v1/info" => Ok(JsonRequest::Info),
        "/api/v1/leave" => Ok(JsonRequest::Leave),
        "/api/v1/join" => {
            let display_name = opt_str(&obj, "display_name")?.unwrap_or_default();
            if display_name.chars().count() > MAX_DISPLAY_NAME_CHARS {
                return Err(JsonError::TooLong { field: "display_name", max: MAX_DISPLAY_NAME_CHARS, unit: "characters" });
            }
            Ok(JsonRequest::Join { display_name, challenge: opt_hex(&obj, "challenge")?, stamp: opt_hex(&obj, "stamp")? })
        }
        "/api/v1/members" => Ok(JsonRequest::Members { page: opt_u64(&obj, "page")?, limit: opt_u64(&obj, "limit")? }),
        "/api/v1/messages" => {
            let order = match opt_str(&obj, "order")?.as_deref() {
                None | Some("asc") => JsonOrder::Asc,
                Some("desc") => JsonOrder::Desc,
                Some(_) => return Err(JsonError::BadOrder),
            };
            let after_id = opt_u64(&obj, "after_id")?.map(|id| i64::try_from(id).unwrap_or(i64::MAX));
            Ok(JsonRequest::Messages { order, limit: opt_u64(&obj, "limit")?, after_id })
        }
        "/api/v1/messages/send" => {
            let content = opt_str(&obj, "content")?.ok_or(JsonError::Missing { field: "content" })?;
            if content.len() > MAX_CONTENT_BYTES {
                return Err(JsonError::TooLong { field: "content", max: MAX_CONTENT_BYTES, unit: "bytes" });
            }
            if content.trim().is_empty() {
                return Err(JsonError::Empty);
            }
            let timestamp = match obj.get("timestamp") {
                None | Some(Value::Null) => None,
                Some(v) => Some(v.as_f64().ok_or(JsonError::WrongType { field: "timestamp", expected: "a number" })?),
            };
            Ok(JsonRequest::Send { timestamp, content })
        }
        other => Err(JsonError::UnsupportedPath(other.to_owned())),
    }
}

fn opt_str(obj: &Map<String, Value>, field: &'static str) -> Result<Option<String>, JsonError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(JsonError::WrongType { field, expected: "a string" }),
    }
}

fn opt_u64(obj: &Map<String, Value>, field: &'static str) -> Result<Option<u64>, JsonError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or(JsonError::WrongType { field, expected: "a whole number, 0 or more" }),
    }
}

fn opt_hex(obj: &Map<String, Value>, field: &'static str) -> Result<Vec<u8>, JsonError> {
    let Some(s) = opt_str(obj, field)? else { return Ok(Vec::new()) };
    if s.len() > 2 * MAX_STAMP_BYTES {
        return Err(JsonError::TooLong { field, max: MAX_STAMP_BYTES, unit: "bytes" });
    }
    hex::decode(&s).map_err(|_| JsonError::WrongType { field, expected: "a hex string" })
}

/// `/api/v1/info`'s answer: the prototype's three fields.
#[derive(Clone, Debug, Serialize)]
pub struct InfoBody<'a> {
    /// `public` or `private`.
    pub group_type: &'a str,
    /// The name the caller may see: "Private Group" for strangers to a private group.
    pub public_display_name: &'a str,
    pub members_count: u64,
}

/// One entry of `/api/v1/members`.
#[derive(Clone, Debug, Serialize)]
pub struct MemberEntry {
    /// Hex, as the prototype's database stores it.
    pub identity_hash: String,
    pub display_name: String,
}

/// One entry of `/api/v1/messages`.
#[derive(Clone, Debug, Serialize)]
pub struct MessageEntry {
    pub id: i64,
    /// The sender's identity hash, hex.
    pub member_identity_hash: String,
    /// The name the sender posted under (not in the prototype; extra keys are harmless to it).
    pub display_name: String,
    /// UTF-8 text; invalid sequences are replaced.
    pub content: String,
    /// When the server stored it, UTC, in the form the prototype's database writes:
    /// `2026-12-02 01:02:03.456000+00:00`.
    pub created_at: String,
    /// A tombstone: the message was deleted and its content erased.
    pub deleted: bool,
    /// The id of the message it answers (LXMF `FIELD_REPLY_TO`, resolved); only when it answers one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<i64>,
    /// Reaction counts, emoji to members, when it has any.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub reactions: std::collections::BTreeMap<String, u64>,
}

/// Formats Unix milliseconds as the prototype's `created_at`.
pub fn created_at(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.format("%Y-%m-%d %H:%M:%S%.6f+00:00").to_string()).unwrap_or_default()
}

/// Encodes an answer object.
pub fn encode<T: Serialize>(body: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail; the fallback keeps the caller from a panic anyway.
    serde_json::to_vec(body).unwrap_or_else(|_| br#"{"error":"internal error"}"#.to_vec())
}

/// `{"success": message}` plus any extra keys (`id`, `state`).
pub fn success(message: &str, extra: &[(&str, Value)]) -> Vec<u8> {
    let mut m = Map::new();
    m.insert("success".into(), Value::from(message));
    for (k, v) in extra {
        m.insert((*k).to_owned(), v.clone());
    }
    encode(&Value::Object(m))
}

/// `{"error": message, "code": code}`; a join that needs a stamp also carries `stamp_cost` and
/// `challenge` (hex), which the client stamps and sends back as `challenge` and `stamp`.
pub fn error(message: &str, code: &str, stamp: Option<(u32, &[u8])>) -> Vec<u8> {
    let mut m = Map::new();
    m.insert("error".into(), Value::from(message));
    m.insert("code".into(), Value::from(code));
    if let Some((cost, challenge)) = stamp {
        m.insert("stamp_cost".into(), Value::from(cost));
        m.insert("challenge".into(), Value::from(hex::encode(challenge)));
    }
    encode(&Value::Object(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATHS: &[&str] = &["/api/v1/info", "/api/v1/join", "/api/v1/leave", "/api/v1/members", "/api/v1/messages", "/api/v1/messages/send", "/api/v1/bans"];

    #[test]
    fn the_dialect_is_chosen_by_the_body() {
        assert!(is_json(None));
        assert!(is_json(Some(b"{}")));
        assert!(!is_json(Some(b"")), "an empty protobuf message is empty bytes");
        assert!(!is_json(Some(&[0x0a, 0x01, b'x'])));
        assert!(!is_json(Some(b" {}")), "leading whitespace would be a protobuf field 4 varint");
    }

    #[test]
    fn the_prototype_shapes_decode() {
        let d = |p: &str, b: &str| decode_request(p, Some(b.as_bytes()));
        assert_eq!(decode_request("/api/v1/info", None), Ok(JsonRequest::Info));
        assert_eq!(decode_request("/api/v1/leave", None), Ok(JsonRequest::Leave));
        assert_eq!(
            d("/api/v1/join", r#"{"display_name": "Test Display Name"}"#),
            Ok(JsonRequest::Join { display_name: "Test Display Name".into(), challenge: vec![], stamp: vec![] })
        );
        assert_eq!(
            d("/api/v1/join", r#"{"display_name": null, "challenge": "0a0b", "stamp": "ff"}"#),
            Ok(JsonRequest::Join { display_name: String::new(), challenge: vec![10, 11], stamp: vec![255] })
        );
        assert_eq!(d("/api/v1/members", r#"{"page": 1, "limit": 10}"#), Ok(JsonRequest::Members { page: Some(1), limit: Some(10) }));
        assert_eq!(decode_request("/api/v1/members", None), Ok(JsonRequest::Members { page: None, limit: None }));
        assert_eq!(
            d("/api/v1/messages", r#"{"order": "desc", "limit": 1, "after_id": null}"#),
            Ok(JsonRequest::Messages { order: JsonOrder::Desc, limit: Some(1), after_id: None })
        );
        assert_eq!(d("/api/v1/messages", r#"{"after_id": 7}"#), Ok(JsonRequest::Messages { order: JsonOrder::Asc, limit: None, after_id: Some(7) }));
        assert_eq!(
            d("/api/v1/messages/send", r#"{"timestamp": 1764637323.25, "content": "hello world!"}"#),
            Ok(JsonRequest::Send { timestamp: Some(1764637323.25), content: "hello world!".into() })
        );
    }

    #[test]
    fn bad_bodies_are_refused_with_a_reason() {
        let d = |p: &str, b: &str| decode_request(p, Some(b.as_bytes())).map(|_| ()).unwrap_err();
        assert!(matches!(d("/api/v1/join", "{not json"), JsonError::Malformed(_)));
        assert_eq!(d("/api/v1/join", r#"{"display_name": 5}"#), JsonError::WrongType { field: "display_name", expected: "a string" });
        assert!(matches!(d("/api/v1/join", &format!(r#"{{"display_name": "{}"}}"#, "x".repeat(65))), JsonError::TooLong { .. }));
        assert!(matches!(d("/api/v1/join", r#"{"stamp": "zz"}"#), JsonError::WrongType { field: "stamp", .. }));
        assert!(matches!(d("/api/v1/join", &format!(r#"{{"challenge": "{}"}}"#, "00".repeat(33))), JsonError::TooLong { .. }));
        assert_eq!(d("/api/v1/members", r#"{"page": -1}"#), JsonError::WrongType { field: "page", expected: "a whole number, 0 or more" });
        assert_eq!(d("/api/v1/members", r#"{"limit": "10"}"#), JsonError::WrongType { field: "limit", expected: "a whole number, 0 or more" });
        assert_eq!(d("/api/v1/messages", r#"{"order": "sideways"}"#), JsonError::BadOrder);
        assert_eq!(d("/api/v1/messages", r#"{"after_id": 1.5}"#), JsonError::WrongType { field: "after_id", expected: "a whole number, 0 or more" });
        assert_eq!(d("/api/v1/messages/send", r#"{"timestamp": 1}"#), JsonError::Missing { field: "content" });
        assert_eq!(d("/api/v1/messages/send", r#"{"content": "  "}"#), JsonError::Empty);
        assert_eq!(d("/api/v1/messages/send", r#"{"content": ["x"]}"#), JsonError::WrongType { field: "content", expected: "a string" });
        assert_eq!(d("/api/v1/messages/send", r#"{"content": "x", "timestamp": "now"}"#), JsonError::WrongType { field: "timestamp", expected: "a number" });
        assert!(matches!(d("/api/v1/messages/send", &format!(r#"{{"content": "{}"}}"#, "x".repeat(MAX_CONTENT_BYTES + 1))), JsonError::TooLong { .. }));
        assert_eq!(d("/api/v1/info", "[1]"), JsonError::NotObject);
        assert!(matches!(decode_request("/api/v1/bans", None), Err(JsonError::UnsupportedPath(_))));
    }

    #[test]
    fn random_bodies_never_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let alphabet = br#"{}[]":,0123456789.-eE truefalsnul\u00"#;
        for len in 0..400usize {
            let body: Vec<u8> = (0..len)
                .map(|i| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    if i == 0 {
                        b'{'
                    } else if seed.is_multiple_of(3) {
                        seed as u8
                    } else {
                        alphabet[(seed as usize >> 8) % alphabet.len()]
                    }
                })
                .collect();
            for p in PATHS {
                let _ = decode_request(p, Some(&body));
            }
        }
    }

    #[test]
    fn answers_have_the_prototype_shape() {
        let v: Value = serde_json::from_slice(&error("nope", "stamp_required", Some((8, &[1, 2])))).expect("json");
        assert_eq!(v, serde_json::json!({"error": "nope", "code": "stamp_required", "stamp_cost": 8, "challenge": "0102"}));
        let v: Value = serde_json::from_slice(&success("Message received", &[("id", Value::from(3))])).expect("json");
        assert_eq!(v, serde_json::json!({"success": "Message received", "id": 3}));
        assert_eq!(created_at(1_764_637_323_456), "2025-12-02 01:02:03.456000+00:00");
    }
}
