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

fn read(mut data: &[u8]) -> Result<Value, rmpv::decode::Error> {
    rmpv::decode::read_value_with_max_depth(&mut data, super::MSGPACK_MAX_DEPTH)
}

/// Unpacks a request; `None` when it is not `[number, 16 bytes, data]`.
pub fn unpack_request(body: &[u8]) -> Option<RequestEnvelope> {
    let value = read(body).ok()?;
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
    match read(data).map_err(|e| EnvelopeError::Msgpack(e.to_string()))? {
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
    fn reference_envelopes_unpack() {
        let r = unpack_request(&vector("example_packed_request_hex")).expect("request");
        assert_eq!((r.requested_at, hex::encode(r.path_hash), r.data), (1_700_000_000.0, "7e083f3ba54e2e9ce97f2145b0805d97".to_owned(), vec![]));
        let resp = unpack_response(&vector("example_packed_response_hex")).expect("response");
        assert!(matches!(resp, Value::Map(_)));
        assert_eq!(unpack_response(&[0x91, 0xc0]), Err(EnvelopeError::Shape));
        assert!(matches!(unpack_response(&[0x92]), Err(EnvelopeError::Msgpack(_))));
    }

    /// Found by the fuzz corpus replay: 500 nested maps overflowed a 2 MiB stack under rmpv's
    /// default depth limit of 1024 (`fuzz/corpus/request_envelope/crash-deep-nesting`).
    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let mut deep = vec![0x91; 100_000];
        deep.push(0xc0);
        let run = move || (unpack_request(&deep), unpack_response(&deep));
        let (request, response) = std::thread::Builder::new().stack_size(256 * 1024).spawn(run).expect("thread").join().expect("no overflow");
        assert_eq!(request, None);
        assert!(matches!(response, Err(EnvelopeError::Msgpack(_))));
        let mut nested = vec![0x93, 0xcb, 0, 0, 0, 0, 0, 0, 0, 0, 0xc4, 16];
        nested.extend([7; 16]);
        nested.extend([0x91; 3]);
        nested.push(0xc0);
        assert_eq!(unpack_request(&nested).map(|r| r.data), Some(vec![0x91, 0x91, 0x91, 0xc0]), "shallow nesting still passes");
    }
}
