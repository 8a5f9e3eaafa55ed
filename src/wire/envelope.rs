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
    /// The data element: `None` for nil (`data=None` in RNS), bin as is, a str as its UTF-8
    /// bytes, anything else as its msgpack. Nil and an empty bin stay apart: the link API
    /// chooses its dialect by that.
    pub data: Option<Vec<u8>>,
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
        Value::Binary(b) => Some(b.clone()),
        Value::Nil => None,
        Value::String(s) => Some(s.as_bytes().to_vec()),
        other => {
            let mut buf = Vec::new();
            rmpv::encode::write_value(&mut buf, other).ok()?;
            Some(buf)
        }
    };
    Some(RequestEnvelope { requested_at, path_hash, data })
}

/// Packs a response, `mp([request_id, response])`.
pub fn pack_response(request_id: &[u8; 16], response: Vec<u8>) -> Vec<u8> {
    let env = Value::Array(vec![Value::Binary(request_id.to_vec()), Value::Binary(response)]);
    let mut packed = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut packed, &env);
    packed
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
        assert_eq!(
            (r.requested_at, hex::encode(r.path_hash), r.data),
            (1_700_000_000.0, "7e083f3ba54e2e9ce97f2145b0805d97".to_owned(), None),
            "the vector packs data=None"
        );
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
        assert_eq!(unpack_request(&nested).map(|r| r.data), Some(Some(vec![0x91, 0x91, 0x91, 0xc0])), "shallow nesting still passes");
    }

    #[test]
    fn nil_and_empty_bin_stay_apart() {
        // The bytes RNS 1.5.7 packs for `[t, path_hash, None]` and `[t, path_hash, b""]`.
        let packed = |data: Value| {
            let mut buf = Vec::new();
            rmpv::encode::write_value(&mut buf, &Value::Array(vec![Value::F64(1.0), Value::Binary(vec![7; 16]), data])).expect("encode");
            buf
        };
        let data = |buf: &[u8]| unpack_request(buf).expect("a request").data;
        let nil = packed(Value::Nil);
        let empty = packed(Value::Binary(vec![]));
        assert_eq!((nil.last(), empty[empty.len() - 2..].to_vec()), (Some(&0xc0), vec![0xc4, 0x00]), "msgpack nil vs bin8 of length 0");
        assert_eq!(data(&nil), None);
        assert_eq!(data(&empty), Some(vec![]));
        assert_eq!(data(&packed(Value::from("{}"))), Some(b"{}".to_vec()));
    }

    #[test]
    fn a_response_round_trips() {
        let packed = pack_response(&[3; 16], vec![9, 9]);
        assert_eq!(unpack_response(&packed), Ok(Value::Binary(vec![9, 9])));
        assert!(unpack_response(&[0x90]).is_err());
    }
}
