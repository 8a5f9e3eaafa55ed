//! One message of a group's history, as received; deletion leaves a tombstone.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "group_messages")]
pub struct Model {
    /// Increases with every insert, so it is also the per-group order.
    #[sea_orm(primary_key)]
    pub id: i64,
    pub group_id: i64,
    /// LXMF message hash (hex); unique per group so sender retries de-duplicate.
    pub message_hash: String,
    pub sender_identity_hash: String,
    /// The LXMF timestamp chosen by the sender (float seconds).
    pub timestamp: f64,
    pub title: Vec<u8>,
    pub content: Vec<u8>,
    /// Raw msgpack of the LXMF fields map.
    pub fields: Vec<u8>,
    pub received_at: i64,
    pub deleted_at: Option<i64>,
    pub deleted_by: Option<String>,
    /// Whether its outbox rows have been written.
    pub fanned_out: bool,
    /// The sender's display name when the message was posted (kept after they leave).
    pub sender_display_name: String,
    /// The group message this one answers (LXMF `FIELD_REPLY_TO`, resolved), if any.
    pub reply_to_id: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
