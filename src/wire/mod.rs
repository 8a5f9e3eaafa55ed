//! Pure wire codecs: no I/O, bytes in and typed values out (and back).
pub mod envelope;
pub mod identity;
pub mod lxmf;
pub mod proto;
pub mod stamp;
