//! LXMF below the group rules: outbound messages (prepare, sign, encrypt), the courier that sends
//! them and pairs their proofs, the propagation-node client, and the text-command parser. Inbound
//! handling, which runs the group rules, is [`crate::api::lxmf`].

pub mod commands;
pub mod courier;
pub mod outbound;
pub mod propagation;
