//! The discovery directory: group announces heard on the network.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "announces")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(unique)]
    pub destination_hash: String,
    /// `meshchat.group`, `lxmf.delivery`, ...
    pub aspect: String,
    pub identity_hash: String,
    pub public_key: Vec<u8>,
    pub app_data: Vec<u8>,
    pub hops: i32,
    pub first_heard_at: i64,
    pub last_heard_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
