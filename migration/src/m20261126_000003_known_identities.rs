//! Public keys of identities the server has verified (link identify, signed LXMF), so members stay
//! reachable across restarts before their next announce.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum KnownIdentities {
    Table,
    Id,
    IdentityHash,
    PublicKey,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(KnownIdentities::Table)
                .if_not_exists()
                .col(big_pk_auto(KnownIdentities::Id))
                .col(string_uniq(KnownIdentities::IdentityHash))
                .col(blob(KnownIdentities::PublicKey))
                .col(big_integer(KnownIdentities::UpdatedAt))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(KnownIdentities::Table).to_owned()).await
    }
}
