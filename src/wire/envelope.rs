//! RNS request and response envelopes on a link (pure functions).
//!
//! A request's plaintext is `msgpack([requested_at, path_hash(16), data])`; a response's is
//! `msgpack([request_id(16), response])`, as Python's `RNS.Link.request` and `RequestReceipt` use.

use rmpv::Value;

/// An unpacked request envelope.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestEnvelope {
    pub requested_at: f64,
    pub path_hash: [u8; 16],
    /// The data element: bin as is, nil as empty, anything else as its msgpack.
    pub data: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("msgpack: {0}")]
    Msgpack(String),
    #[error("malformed response envelope")]
    Shape,
}

/// Unpacks a request; `None` when it is not `[number, 16 bytes, data]`.
pub fn unpack_request(body: &[u8]) -> Option<RequestEnvelope> {
    let value = rmpv::decode::read_value(&mut &body[..]).ok()?;
    let Value::Array(items) = value else {
        return None;
    };
    let [at, path, data] = items.as_slice() else {
        return None;
    };
    let requested_at = at.as_f64()?;
    let path_hash = <[u8; 16]>::try_from(path.as_slice()?).ok()?;
    let data = match data {
        Value::Binary(b) => b.clone(),
        Value::Nil => Vec::new(),
        other => {
            let mut buf = Vec::new();
            rmpv::encode::write_value(&mut buf, other).ok()?;
            buf
        }
    };
    Some(RequestEnvelope { requested_at, path_hash, data })
}

/// The response element of a response envelope (a two-element list).
pub fn unpack_response(data: &[u8]) -> Result<Value, EnvelopeError> {
    match rmpv::decode::read_value(&mut &data[..]).map_err(|e| EnvelopeError::Msgpack(e.to_string()))? {
        Value::Array(mut items) if items.len() == 2 => Ok(items.swap_remove(1)),
        _ => Err(EnvelopeError::Shape),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(key: &str) -> Vec<u8> {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors.json")).expect("vectors");
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        hex::decode(v["requests"][key].as_str().expect("hex")).expect("hex")
    }

    #[test]
    fn request_body_unpacks() {
        let body = Value::Array(vec![Value::F64(1.5), Value::Binary(vec![7; 16]), Value::Binary(vec![1, 2])]);
        let mut buf = Vec::new();
        rmpv::encode::write_value(&mut buf, &body).expect("encode");
        assert_eq!(unpack_request(&buf), Some(RequestEnvelope { requested_at: 1.5, path_hash: [7; 16], data: vec![1, 2] }));
    }

    #[test]
    fn reference_envelopes_unpack() {
        let r = unpack_request(&vector("example_packed_request_hex")).expect("request");
        assert_eq!((r.requested_at, hex::encode(r.path_hash), r.data), (1_700_000_000.0, "7e083f3ba54e2e9ce97f2145b0805d97".to_owned(), vec![]));
        let resp = unpack_response(&vector("example_packed_response_hex")).expect("response");
        assert!(matches!(resp, Value::Map(_)));
        assert_eq!(unpack_response(&[0x91, 0xc0]), Err(EnvelopeError::Shape));
        assert!(matches!(unpack_response(&[0x92]), Err(EnvelopeError::Msgpack(_))));
    }
}
