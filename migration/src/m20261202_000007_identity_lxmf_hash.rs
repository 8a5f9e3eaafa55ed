//! The `lxmf.delivery` hash of each known identity, so a post collected from a propagation node,
//! whose sender the server never heard announce, is verified with the key its link identify left.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum KnownIdentities {
    Table,
    LxmfHash,
}

const INDEX: &str = "idx_known_identities_lxmf_hash";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // Rows from before this migration have no hash yet; start-up fills them in (it needs
        // SHA-256, which SQL does not have on both backends).
        m.alter_table(Table::alter().table(KnownIdentities::Table).add_column(string_null(KnownIdentities::LxmfHash)).to_owned()).await?;
        m.create_index(Index::create().name(INDEX).table(KnownIdentities::Table).col(KnownIdentities::LxmfHash).to_owned()).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(Index::drop().name(INDEX).table(KnownIdentities::Table).to_owned()).await?;
        m.alter_table(Table::alter().table(KnownIdentities::Table).drop_column(KnownIdentities::LxmfHash).to_owned()).await
    }
}
