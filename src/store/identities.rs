//! Queries on `known_identities`.
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, Set};

use super::{Store, StoreError, now_ms};
use entity::known_identity::{ActiveModel, Column, Entity};

impl Store {
    /// Records a verified public key (idempotent).
    pub async fn remember_identity(&self, identity_hash: &str, public_key: &[u8]) -> Result<(), StoreError> {
        self.timed("remember_identity", async {
            let am = ActiveModel {
                identity_hash: Set(identity_hash.to_owned()),
                public_key: Set(public_key.to_vec()),
                updated_at: Set(now_ms()),
                ..Default::default()
            };
            Entity::insert(am)
                .on_conflict(OnConflict::column(Column::IdentityHash).update_columns([Column::PublicKey, Column::UpdatedAt]).to_owned())
                .exec_without_returning(&self.db)
                .await?;
            Ok(())
        })
        .await
    }

    pub async fn known_identity(&self, identity_hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.timed("known_identity", async { Ok(Entity::find().filter(Column::IdentityHash.eq(identity_hash)).one(&self.db).await?.map(|m| m.public_key)) })
            .await
    }
}
