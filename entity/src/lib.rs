//! sea-orm entities: the persistent shape of every hosted group, its members, bans, history and outbox.
//!
//! Hashes (identity and destination) are stored as 32-character lowercase hex, the form Reticulum
//! tools print, so operators can query the database by eye. Times are Unix milliseconds (`i64`),
//! which both SQLite and PostgreSQL store and compare the same way.

pub mod announce;
pub mod group;
pub mod group_ban;
pub mod group_event;
pub mod group_member;
pub mod group_message;
pub mod join_request;
pub mod known_identity;
pub mod message_reaction;
pub mod outbox;
pub mod server_identity;
pub mod ticket;
