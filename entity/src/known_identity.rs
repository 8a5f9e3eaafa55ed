//! A verified identity's public key (`x25519 ‖ ed25519`, 64 bytes).
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "known_identities")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(unique)]
    pub identity_hash: String,
    pub public_key: Vec<u8>,
    /// Its `lxmf.delivery` destination hash (hex); absent on rows from before it was kept.
    pub lxmf_hash: Option<String>,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
