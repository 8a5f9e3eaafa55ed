//! The server's own Reticulum identity, for its `meshchat.groupserver` destination (the hosting
//! service). One row; kept in the database like the group keys, so backups and PostgreSQL cover it.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ServerIdentity {
    Table,
    Id,
    PrivateKey,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(ServerIdentity::Table)
                .if_not_exists()
                .col(big_integer(ServerIdentity::Id).primary_key())
                .col(blob(ServerIdentity::PrivateKey))
                .col(big_integer(ServerIdentity::CreatedAt))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(ServerIdentity::Table).to_owned()).await
    }
}
