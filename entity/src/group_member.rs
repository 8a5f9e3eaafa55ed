//! Membership of one identity in one group, with its delegated rights and notification mode.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "group_members")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub group_id: i64,
    pub identity_hash: String,
    pub display_name: String,
    /// Bit set of delegated rights (see `meshgroup::domain::Rights`).
    pub permissions: i64,
    /// `full`, `short` or `none`.
    pub notify_mode: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_seen: i64,
    /// Opted in to the periodic digest of membership changes (off by default).
    pub digest: bool,
    /// Text-only (for members on LoRa): posts come without their attachments, with a line saying
    /// what was left out; the member fetches those over the link API.
    pub text_only: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
