//! One member's reaction (an emoji) to one group message; not a chat line of its own.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "message_reactions")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub group_id: i64,
    /// The group message reacted to.
    pub message_id: i64,
    pub member_identity_hash: String,
    pub emoji: String,
    pub created_at: i64,
    /// Whether its outbox rows have been written.
    pub fanned_out: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
