//! The msgpack envelopes of RNS link requests and responses (`RNS.Link.request`,
//! `RNS.Link.handle_request`): pure functions over bytes.

use rmpv::Value;

/// A request body, `mp([requested_at, path_hash, data])`, as RNS packs it.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestBody {
    pub requested_at: f64,
    pub path_hash: [u8; 16],
    /// The data element: `None` for nil (`data=None` in RNS), bin as is, a str as its UTF-8
    /// bytes, anything else as its msgpack. Nil and an empty bin stay apart: the link API
    /// chooses its dialect by that.
    pub data: Option<Vec<u8>>,
}

/// Reads a request body; `None` for anything that is not one (the request goes unanswered).
pub fn decode_request(body: &[u8]) -> Option<RequestBody> {
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
        Value::Binary(b) => Some(b.clone()),
        Value::Nil => None,
        Value::String(s) => Some(s.as_bytes().to_vec()),
        other => {
            let mut buf = Vec::new();
            rmpv::encode::write_value(&mut buf, other).ok()?;
            Some(buf)
        }
    };
    Some(RequestBody { requested_at, path_hash, data })
}

/// Packs a response, `mp([request_id, response])`.
pub fn encode_response(request_id: &[u8; 16], response: Vec<u8>) -> Vec<u8> {
    let env = Value::Array(vec![Value::Binary(request_id.to_vec()), Value::Binary(response)]);
    let mut packed = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut packed, &env);
    packed
}

/// Reads a response envelope and returns its response element.
pub fn decode_response(packed: &[u8]) -> Result<Value, String> {
    match rmpv::decode::read_value(&mut &packed[..]).map_err(|e| e.to_string())? {
        Value::Array(mut items) if items.len() == 2 => Ok(items.swap_remove(1)),
        _ => Err("malformed response envelope".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_body_unpacks() {
        let body = Value::Array(vec![Value::F64(1.5), Value::Binary(vec![7; 16]), Value::Binary(vec![1, 2])]);
        let mut buf = Vec::new();
        rmpv::encode::write_value(&mut buf, &body).expect("encode");
        assert_eq!(decode_request(&buf), Some(RequestBody { requested_at: 1.5, path_hash: [7; 16], data: Some(vec![1, 2]) }));
        assert_eq!(decode_request(&[0xc1]), None, "not msgpack");
        assert_eq!(decode_request(&[0x92, 0x01, 0x02]), None, "two elements");
    }

    #[test]
    fn nil_and_empty_bin_stay_apart() {
        // The bytes RNS 1.5.7 packs for `[t, path_hash, None]` and `[t, path_hash, b""]`.
        let packed = |data: Value| {
            let mut buf = Vec::new();
            rmpv::encode::write_value(&mut buf, &Value::Array(vec![Value::F64(1.0), Value::Binary(vec![7; 16]), data])).expect("encode");
            buf
        };
        let data = |buf: &[u8]| decode_request(buf).expect("a request").data;
        let nil = packed(Value::Nil);
        let empty = packed(Value::Binary(vec![]));
        assert_eq!((nil.last(), empty[empty.len() - 2..].to_vec()), (Some(&0xc0), vec![0xc4, 0x00]), "msgpack nil vs bin8 of length 0");
        assert_eq!(data(&nil), None);
        assert_eq!(data(&empty), Some(vec![]));
        assert_eq!(data(&packed(Value::from("{}"))), Some(b"{}".to_vec()));
    }

    #[test]
    fn a_response_round_trips() {
        let packed = encode_response(&[3; 16], vec![9, 9]);
        assert_eq!(decode_response(&packed), Ok(Value::Binary(vec![9, 9])));
        assert!(decode_response(&[0x90]).is_err());
    }
}
