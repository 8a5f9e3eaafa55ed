//! One delivery still owed to one member: a message or a notice, until confirmed or expired.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "outbox")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub group_id: i64,
    pub member_identity_hash: String,
    /// `message` (a group message) or `notice` (a group event).
    pub kind: String,
    pub message_id: Option<i64>,
    pub event_id: Option<i64>,
    /// The member's mode when the row was made: `full` or `short`.
    pub mode: String,
    /// `pending`, `sent`, `delivered`, `propagated` or `expired`.
    pub state: String,
    pub attempts: i32,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Delivery class: 0 post copies, 1 direct notices, 2 digests; lower goes first.
    pub class: i16,
    /// The LXMF message hash of this member's copy, once it was built (32 bytes): an inbound
    /// reply or reaction to the copy resolves through it.
    pub copy_hash: Option<Vec<u8>>,
    /// The reaction this row carries (kind `reaction`; `message_id` is then the reacted-to message).
    pub reaction_id: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
