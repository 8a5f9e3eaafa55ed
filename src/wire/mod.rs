//! Pure wire codecs: no I/O, bytes in and typed values out (and back).
pub mod announce;
pub mod envelope;
pub mod identity;
pub mod lxmf;
pub mod meshchat_json;
pub mod paths;
pub mod proto;
pub mod stamp;

/// How deep any msgpack of network input may nest. The decoder recurses once per level (and so
/// do re-encoding and dropping the value); rmpv's own limit of 1024 overflowed a 2 MiB thread
/// stack in a debug build. Nothing we read nests more than three levels.
pub const MSGPACK_MAX_DEPTH: usize = 32;

/// Whether `data` is msgpack nested deeper than [`MSGPACK_MAX_DEPTH`]. For bytes handed to a
/// crate decoder that recurses up to 1024 levels (`lxmf-wire`'s announce parsers), checked first.
pub fn msgpack_too_deep(mut data: &[u8]) -> bool {
    matches!(rmpv::decode::read_value_with_max_depth(&mut data, MSGPACK_MAX_DEPTH), Err(rmpv::decode::Error::DepthLimitExceeded))
}
