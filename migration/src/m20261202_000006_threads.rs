//! Threads and reactions across the relay: the LXMF hash of every member's copy (on its outbox
//! row, so a reply or reaction to any copy resolves to the group message, and the mapping lives
//! and goes with the row), the group message a post answers, reactions as their own rows, each
//! group's attachment policy and each member's text-only setting.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Outbox {
    Table,
    CopyHash,
    MessageId,
    MemberIdentityHash,
    ReactionId,
}

#[derive(DeriveIden)]
enum GroupMessages {
    Table,
    ReplyToId,
}

#[derive(DeriveIden)]
enum Groups {
    Table,
    Id,
    AttachmentMaxBytes,
    AttachmentKinds,
}

#[derive(DeriveIden)]
enum GroupMembers {
    Table,
    TextOnly,
}

/// Attachments of at most this many bytes in all by default: a photo thumbnail or a short voice
/// note, not a file that would occupy a LoRa channel for an hour per member.
const DEFAULT_ATTACHMENT_MAX_BYTES: i64 = 32 * 1024;
/// Images, files and audio (bits 1, 2, 4) are allowed by default, within the size.
const DEFAULT_ATTACHMENT_KINDS: i32 = 7;

#[derive(DeriveIden)]
enum MessageReactions {
    Table,
    Id,
    GroupId,
    MessageId,
    MemberIdentityHash,
    Emoji,
    CreatedAt,
    FannedOut,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per statement.
        m.alter_table(Table::alter().table(Outbox::Table).add_column(blob_null(Outbox::CopyHash)).to_owned()).await?;
        m.alter_table(Table::alter().table(Outbox::Table).add_column(big_integer_null(Outbox::ReactionId)).to_owned()).await?;
        m.alter_table(Table::alter().table(GroupMessages::Table).add_column(big_integer_null(GroupMessages::ReplyToId)).to_owned()).await?;
        m.alter_table(Table::alter().table(Groups::Table).add_column(big_integer(Groups::AttachmentMaxBytes).default(DEFAULT_ATTACHMENT_MAX_BYTES)).to_owned())
            .await?;
        m.alter_table(Table::alter().table(Groups::Table).add_column(integer(Groups::AttachmentKinds).default(DEFAULT_ATTACHMENT_KINDS)).to_owned()).await?;
        m.alter_table(Table::alter().table(GroupMembers::Table).add_column(boolean(GroupMembers::TextOnly).default(false)).to_owned()).await?;
        // An inbound reply or reaction names a copy by its hash.
        m.create_index(Index::create().name("ix_outbox_copy_hash").table(Outbox::Table).col(Outbox::CopyHash).to_owned()).await?;
        // The fan-out maps a target to each recipient's copy of it; a deletion finds a post's queued copies.
        m.create_index(Index::create().name("ix_outbox_message_member").table(Outbox::Table).col(Outbox::MessageId).col(Outbox::MemberIdentityHash).to_owned())
            .await?;
        m.create_table(
            Table::create()
                .table(MessageReactions::Table)
                .if_not_exists()
                .col(big_pk_auto(MessageReactions::Id))
                .col(big_integer(MessageReactions::GroupId))
                .col(big_integer(MessageReactions::MessageId))
                .col(string(MessageReactions::MemberIdentityHash))
                .col(string(MessageReactions::Emoji))
                .col(big_integer(MessageReactions::CreatedAt))
                .col(boolean(MessageReactions::FannedOut).default(false))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_reactions_group")
                        .from(MessageReactions::Table, MessageReactions::GroupId)
                        .to(Groups::Table, Groups::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        // One reaction of a kind per member per message: a sender's retry is a duplicate.
        m.create_index(
            Index::create()
                .name("ux_reactions_message_member_emoji")
                .table(MessageReactions::Table)
                .col(MessageReactions::MessageId)
                .col(MessageReactions::MemberIdentityHash)
                .col(MessageReactions::Emoji)
                .unique()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(MessageReactions::Table).to_owned()).await?;
        m.drop_index(Index::drop().name("ix_outbox_message_member").table(Outbox::Table).to_owned()).await?;
        m.drop_index(Index::drop().name("ix_outbox_copy_hash").table(Outbox::Table).to_owned()).await?;
        m.alter_table(Table::alter().table(GroupMembers::Table).drop_column(GroupMembers::TextOnly).to_owned()).await?;
        m.alter_table(Table::alter().table(Groups::Table).drop_column(Groups::AttachmentKinds).to_owned()).await?;
        m.alter_table(Table::alter().table(Groups::Table).drop_column(Groups::AttachmentMaxBytes).to_owned()).await?;
        m.alter_table(Table::alter().table(GroupMessages::Table).drop_column(GroupMessages::ReplyToId).to_owned()).await?;
        m.alter_table(Table::alter().table(Outbox::Table).drop_column(Outbox::ReactionId).to_owned()).await?;
        m.alter_table(Table::alter().table(Outbox::Table).drop_column(Outbox::CopyHash).to_owned()).await
    }
}
