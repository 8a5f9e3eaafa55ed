//! Pure wire codecs: no I/O, bytes in and typed values out (and back).
pub mod announce;
pub mod identity;
pub mod lxmf;
pub mod meshchat_json;
pub mod proto;
pub mod request;
pub mod stamp;
