//! A group state change (join, leave, kick, ban, delete, rename) that members are told about.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "group_events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub group_id: i64,
    /// `joined`, `left`, `kicked`, `banned`, `unbanned`, `message_deleted`, `renamed`, ...
    pub kind: String,
    /// Who did it (identity hash, or `owner`).
    pub actor: String,
    /// Whom or what it concerns (identity hash or message id), may be empty.
    pub subject: String,
    pub detail: String,
    pub created_at: i64,
    /// Whether its outbox rows have been written.
    pub fanned_out: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
