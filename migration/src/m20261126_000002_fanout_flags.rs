//! Marks messages and events whose outbox rows are written, so a crash between storing a post and
//! scheduling its fan-out is repaired at start-up.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum GroupMessages {
    Table,
    FannedOut,
}

#[derive(DeriveIden)]
enum GroupEvents {
    Table,
    FannedOut,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(Table::alter().table(GroupMessages::Table).add_column(boolean(GroupMessages::FannedOut).default(false)).to_owned()).await?;
        m.alter_table(Table::alter().table(GroupEvents::Table).add_column(boolean(GroupEvents::FannedOut).default(false)).to_owned()).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(Table::alter().table(GroupMessages::Table).drop_column(GroupMessages::FannedOut).to_owned()).await?;
        m.alter_table(Table::alter().table(GroupEvents::Table).drop_column(GroupEvents::FannedOut).to_owned()).await
    }
}
