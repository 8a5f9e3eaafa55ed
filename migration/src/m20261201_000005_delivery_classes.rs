//! Delivery classes on the outbox (posts before direct notices before digests, durable across
//! restarts), the per-member digest opt-in that replaced a push per membership event, and the
//! display name a message was posted under (history keeps it after the sender leaves).
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Outbox {
    Table,
    Class,
    State,
    NextAttemptAt,
}

#[derive(DeriveIden)]
enum GroupMembers {
    Table,
    Digest,
}

#[derive(DeriveIden)]
enum GroupMessages {
    Table,
    FannedOut,
    SenderDisplayName,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(Table::alter().table(Outbox::Table).add_column(small_integer(Outbox::Class).default(0)).to_owned()).await?;
        m.alter_table(Table::alter().table(GroupMembers::Table).add_column(boolean(GroupMembers::Digest).default(false)).to_owned()).await?;
        m.alter_table(Table::alter().table(GroupMessages::Table).add_column(string(GroupMessages::SenderDisplayName).default("")).to_owned()).await?;
        // The due scan reads one class at a time, oldest first.
        m.create_index(
            Index::create().name("ix_outbox_due_class").table(Outbox::Table).col(Outbox::State).col(Outbox::Class).col(Outbox::NextAttemptAt).to_owned(),
        )
        .await?;
        // The periodic recovery scan looks for posts whose fan-out was never scheduled.
        m.create_index(Index::create().name("ix_group_messages_fanned_out").table(GroupMessages::Table).col(GroupMessages::FannedOut).to_owned()).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(Index::drop().name("ix_group_messages_fanned_out").table(GroupMessages::Table).to_owned()).await?;
        m.drop_index(Index::drop().name("ix_outbox_due_class").table(Outbox::Table).to_owned()).await?;
        m.alter_table(Table::alter().table(GroupMessages::Table).drop_column(GroupMessages::SenderDisplayName).to_owned()).await?;
        m.alter_table(Table::alter().table(GroupMembers::Table).drop_column(GroupMembers::Digest).to_owned()).await?;
        m.alter_table(Table::alter().table(Outbox::Table).drop_column(Outbox::Class).to_owned()).await
    }
}
