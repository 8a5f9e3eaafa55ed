//! The initial schema: groups, members, bans, join requests, history, events, outbox, tickets, announces.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Groups {
    Table,
    Id,
    IdentityHash,
    IdentityPrivateKey,
    GroupDestHash,
    LxmfDestHash,
    PublicName,
    PrivateName,
    Visibility,
    JoinStampCost,
    PostStampCost,
    HistoryPublic,
    Listed,
    FounderIdentityHash,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum GroupMembers {
    Table,
    Id,
    GroupId,
    IdentityHash,
    DisplayName,
    Permissions,
    NotifyMode,
    CreatedAt,
    UpdatedAt,
    LastSeen,
}

#[derive(DeriveIden)]
enum GroupBans {
    Table,
    Id,
    GroupId,
    IdentityHash,
    Reason,
    BannedBy,
    CreatedAt,
}

#[derive(DeriveIden)]
enum JoinRequests {
    Table,
    Id,
    GroupId,
    IdentityHash,
    DisplayName,
    Note,
    State,
    DecidedBy,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum GroupMessages {
    Table,
    Id,
    GroupId,
    MessageHash,
    SenderIdentityHash,
    Timestamp,
    Title,
    Content,
    Fields,
    ReceivedAt,
    DeletedAt,
    DeletedBy,
}

#[derive(DeriveIden)]
enum GroupEvents {
    Table,
    Id,
    GroupId,
    Kind,
    Actor,
    Subject,
    Detail,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Outbox {
    Table,
    Id,
    GroupId,
    MemberIdentityHash,
    Kind,
    MessageId,
    EventId,
    Mode,
    State,
    Attempts,
    NextAttemptAt,
    LastError,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Tickets {
    Table,
    Id,
    GroupId,
    IdentityHash,
    Ticket,
    ExpiresAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Announces {
    Table,
    Id,
    DestinationHash,
    Aspect,
    IdentityHash,
    PublicKey,
    AppData,
    Hops,
    FirstHeardAt,
    LastHeardAt,
}

/// A `group_id` column that disappears with its group.
fn group_fk(table: impl IntoIden + 'static, name: &str) -> ForeignKeyCreateStatement {
    ForeignKey::create().name(name).from(table, Alias::new("group_id")).to(Groups::Table, Groups::Id).on_delete(ForeignKeyAction::Cascade).to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Groups::Table)
                .if_not_exists()
                .col(big_pk_auto(Groups::Id))
                .col(string_uniq(Groups::IdentityHash))
                .col(blob(Groups::IdentityPrivateKey))
                .col(string_uniq(Groups::GroupDestHash))
                .col(string_uniq(Groups::LxmfDestHash))
                .col(string(Groups::PublicName))
                .col(string_null(Groups::PrivateName))
                .col(string(Groups::Visibility))
                .col(integer(Groups::JoinStampCost))
                .col(integer(Groups::PostStampCost))
                .col(boolean(Groups::HistoryPublic))
                .col(boolean(Groups::Listed))
                .col(string_null(Groups::FounderIdentityHash))
                .col(big_integer(Groups::CreatedAt))
                .col(big_integer(Groups::UpdatedAt))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(GroupMembers::Table)
                .if_not_exists()
                .col(big_pk_auto(GroupMembers::Id))
                .col(big_integer(GroupMembers::GroupId))
                .col(string(GroupMembers::IdentityHash))
                .col(string(GroupMembers::DisplayName))
                .col(big_integer(GroupMembers::Permissions))
                .col(string(GroupMembers::NotifyMode))
                .col(big_integer(GroupMembers::CreatedAt))
                .col(big_integer(GroupMembers::UpdatedAt))
                .col(big_integer(GroupMembers::LastSeen))
                .foreign_key(&mut group_fk(GroupMembers::Table, "fk_members_group"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_members_group_identity")
                .table(GroupMembers::Table)
                .col(GroupMembers::GroupId)
                .col(GroupMembers::IdentityHash)
                .unique()
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(GroupBans::Table)
                .if_not_exists()
                .col(big_pk_auto(GroupBans::Id))
                .col(big_integer(GroupBans::GroupId))
                .col(string(GroupBans::IdentityHash))
                .col(string(GroupBans::Reason))
                .col(string(GroupBans::BannedBy))
                .col(big_integer(GroupBans::CreatedAt))
                .foreign_key(&mut group_fk(GroupBans::Table, "fk_bans_group"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create().name("ux_bans_group_identity").table(GroupBans::Table).col(GroupBans::GroupId).col(GroupBans::IdentityHash).unique().to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(JoinRequests::Table)
                .if_not_exists()
                .col(big_pk_auto(JoinRequests::Id))
                .col(big_integer(JoinRequests::GroupId))
                .col(string(JoinRequests::IdentityHash))
                .col(string(JoinRequests::DisplayName))
                .col(string(JoinRequests::Note))
                .col(string(JoinRequests::State))
                .col(string_null(JoinRequests::DecidedBy))
                .col(big_integer(JoinRequests::CreatedAt))
                .col(big_integer(JoinRequests::UpdatedAt))
                .foreign_key(&mut group_fk(JoinRequests::Table, "fk_join_requests_group"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_join_requests_group_identity")
                .table(JoinRequests::Table)
                .col(JoinRequests::GroupId)
                .col(JoinRequests::IdentityHash)
                .unique()
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(GroupMessages::Table)
                .if_not_exists()
                .col(big_pk_auto(GroupMessages::Id))
                .col(big_integer(GroupMessages::GroupId))
                .col(string(GroupMessages::MessageHash))
                .col(string(GroupMessages::SenderIdentityHash))
                .col(double(GroupMessages::Timestamp))
                .col(blob(GroupMessages::Title))
                .col(blob(GroupMessages::Content))
                .col(blob(GroupMessages::Fields))
                .col(big_integer(GroupMessages::ReceivedAt))
                .col(big_integer_null(GroupMessages::DeletedAt))
                .col(string_null(GroupMessages::DeletedBy))
                .foreign_key(&mut group_fk(GroupMessages::Table, "fk_messages_group"))
                .to_owned(),
        )
        .await?;
        // De-duplication of sender retries, and the "latest N of a group" scan.
        m.create_index(
            Index::create()
                .name("ux_messages_group_hash")
                .table(GroupMessages::Table)
                .col(GroupMessages::GroupId)
                .col(GroupMessages::MessageHash)
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_index(Index::create().name("ix_messages_group_id").table(GroupMessages::Table).col(GroupMessages::GroupId).col(GroupMessages::Id).to_owned())
            .await?;

        m.create_table(
            Table::create()
                .table(GroupEvents::Table)
                .if_not_exists()
                .col(big_pk_auto(GroupEvents::Id))
                .col(big_integer(GroupEvents::GroupId))
                .col(string(GroupEvents::Kind))
                .col(string(GroupEvents::Actor))
                .col(string(GroupEvents::Subject))
                .col(string(GroupEvents::Detail))
                .col(big_integer(GroupEvents::CreatedAt))
                .foreign_key(&mut group_fk(GroupEvents::Table, "fk_events_group"))
                .to_owned(),
        )
        .await?;
        m.create_index(Index::create().name("ix_events_group_id").table(GroupEvents::Table).col(GroupEvents::GroupId).col(GroupEvents::Id).to_owned()).await?;

        m.create_table(
            Table::create()
                .table(Outbox::Table)
                .if_not_exists()
                .col(big_pk_auto(Outbox::Id))
                .col(big_integer(Outbox::GroupId))
                .col(string(Outbox::MemberIdentityHash))
                .col(string(Outbox::Kind))
                .col(big_integer_null(Outbox::MessageId))
                .col(big_integer_null(Outbox::EventId))
                .col(string(Outbox::Mode))
                .col(string(Outbox::State))
                .col(integer(Outbox::Attempts))
                .col(big_integer(Outbox::NextAttemptAt))
                .col(string_null(Outbox::LastError))
                .col(big_integer(Outbox::CreatedAt))
                .col(big_integer(Outbox::UpdatedAt))
                .foreign_key(&mut group_fk(Outbox::Table, "fk_outbox_group"))
                .to_owned(),
        )
        .await?;
        // The fan-out's "what is due now" scan.
        m.create_index(Index::create().name("ix_outbox_due").table(Outbox::Table).col(Outbox::State).col(Outbox::NextAttemptAt).to_owned()).await?;

        m.create_table(
            Table::create()
                .table(Tickets::Table)
                .if_not_exists()
                .col(big_pk_auto(Tickets::Id))
                .col(big_integer(Tickets::GroupId))
                .col(string(Tickets::IdentityHash))
                .col(blob(Tickets::Ticket))
                .col(big_integer(Tickets::ExpiresAt))
                .col(big_integer(Tickets::CreatedAt))
                .foreign_key(&mut group_fk(Tickets::Table, "fk_tickets_group"))
                .to_owned(),
        )
        .await?;
        m.create_index(Index::create().name("ix_tickets_group_identity").table(Tickets::Table).col(Tickets::GroupId).col(Tickets::IdentityHash).to_owned())
            .await?;

        m.create_table(
            Table::create()
                .table(Announces::Table)
                .if_not_exists()
                .col(big_pk_auto(Announces::Id))
                .col(string_uniq(Announces::DestinationHash))
                .col(string(Announces::Aspect))
                .col(string(Announces::IdentityHash))
                .col(blob(Announces::PublicKey))
                .col(blob(Announces::AppData))
                .col(integer(Announces::Hops))
                .col(big_integer(Announces::FirstHeardAt))
                .col(big_integer(Announces::LastHeardAt))
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(Announces::Table).to_owned()).await?;
        m.drop_table(Table::drop().table(Tickets::Table).to_owned()).await?;
        m.drop_table(Table::drop().table(Outbox::Table).to_owned()).await?;
        m.drop_table(Table::drop().table(GroupEvents::Table).to_owned()).await?;
        m.drop_table(Table::drop().table(GroupMessages::Table).to_owned()).await?;
        m.drop_table(Table::drop().table(JoinRequests::Table).to_owned()).await?;
        m.drop_table(Table::drop().table(GroupBans::Table).to_owned()).await?;
        m.drop_table(Table::drop().table(GroupMembers::Table).to_owned()).await?;
        m.drop_table(Table::drop().table(Groups::Table).to_owned()).await
    }
}
