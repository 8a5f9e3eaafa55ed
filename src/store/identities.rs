//! Queries on `known_identities`.
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set};

use super::{Store, StoreError, now_ms};
use entity::known_identity::{ActiveModel, Column, Entity};

/// Rows filled in per statement by [`Store::backfill_lxmf_hashes`].
const BACKFILL_PAGE: u64 = 500;

impl Store {
    /// Records a verified public key with its `lxmf.delivery` hash (idempotent).
    pub async fn remember_identity(&self, identity_hash: &str, lxmf_hash: &str, public_key: &[u8]) -> Result<(), StoreError> {
        self.timed("remember_identity", async {
            let am = ActiveModel {
                identity_hash: Set(identity_hash.to_owned()),
                lxmf_hash: Set(Some(lxmf_hash.to_owned())),
                public_key: Set(public_key.to_vec()),
                updated_at: Set(now_ms()),
                ..Default::default()
            };
            Entity::insert(am)
                .on_conflict(OnConflict::column(Column::IdentityHash).update_columns([Column::PublicKey, Column::LxmfHash, Column::UpdatedAt]).to_owned())
                .exec_without_returning(&self.db)
                .await?;
            Ok(())
        })
        .await
    }

    /// The public key of the identity whose `lxmf.delivery` hash is `lxmf_hash`, if one was verified.
    pub async fn identity_by_lxmf_hash(&self, lxmf_hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.timed("identity_by_lxmf_hash", async { Ok(Entity::find().filter(Column::LxmfHash.eq(lxmf_hash)).one(&self.db).await?.map(|m| m.public_key)) })
            .await
    }

    /// Fills in the `lxmf.delivery` hash of rows kept before it was, a page at a time; `derive`
    /// maps an identity hash (hex) to it, or `None` for a row that cannot be read (left as it is).
    /// Returns how many rows were filled in.
    pub async fn backfill_lxmf_hashes(&self, derive: impl Fn(&str) -> Option<String>) -> Result<u64, StoreError> {
        let mut filled = 0;
        let mut after = 0;
        loop {
            let page = self
                .timed("backfill_lxmf_hashes", async {
                    Ok(Entity::find()
                        .filter(Column::LxmfHash.is_null())
                        .filter(Column::Id.gt(after))
                        .order_by_asc(Column::Id)
                        .limit(BACKFILL_PAGE)
                        .all(&self.db)
                        .await?)
                })
                .await?;
            let Some(last) = page.last() else { return Ok(filled) };
            after = last.id;
            for row in page {
                let Some(lxmf_hash) = derive(&row.identity_hash) else { continue };
                let am = ActiveModel { id: Set(row.id), lxmf_hash: Set(Some(lxmf_hash)), ..Default::default() };
                self.timed("backfill_lxmf_hashes", async { Ok(Entity::update(am).exec(&self.db).await.map(|_| ())?) }).await?;
                filled += 1;
            }
        }
    }
}
