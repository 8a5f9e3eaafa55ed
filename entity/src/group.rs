//! A hosted group: one RNS identity with a `meshchat.group` and an `lxmf.delivery` destination.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "groups")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(unique)]
    pub identity_hash: String,
    /// `x25519_private(32) ‖ ed25519_seed(32)`, the Reticulum identity file format.
    pub identity_private_key: Vec<u8>,
    #[sea_orm(unique)]
    pub group_dest_hash: String,
    #[sea_orm(unique)]
    pub lxmf_dest_hash: String,
    pub public_name: String,
    pub private_name: Option<String>,
    /// `public` or `private`.
    pub visibility: String,
    pub join_stamp_cost: i32,
    pub post_stamp_cost: i32,
    /// Whether non-members may read the history of a public group.
    pub history_public: bool,
    /// Whether a private group appears (as "Private Group") in the server directory.
    pub listed: bool,
    pub founder_identity_hash: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Most bytes of attachments (images, files, audio together) a post may carry.
    pub attachment_max_bytes: i64,
    /// Attachment kinds allowed: bit 1 images, 2 files, 4 audio.
    pub attachment_kinds: i32,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
