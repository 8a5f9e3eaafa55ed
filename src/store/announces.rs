//! Queries on `announces`, the directory of destinations heard on the network.
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};

use super::{Announce, Store, StoreError, now_ms};
use entity::announce::{ActiveModel, Column, Entity};

impl Store {
    /// Records or refreshes an announce; the first-heard time is kept.
    pub async fn upsert_announce(
        &self,
        destination_hash: &str,
        aspect: &str,
        identity_hash: &str,
        public_key: Vec<u8>,
        app_data: Vec<u8>,
        hops: i32,
    ) -> Result<(), StoreError> {
        self.timed("upsert_announce", async {
            let now = now_ms();
            let am = ActiveModel {
                destination_hash: Set(destination_hash.to_owned()),
                aspect: Set(aspect.to_owned()),
                identity_hash: Set(identity_hash.to_owned()),
                public_key: Set(public_key),
                app_data: Set(app_data),
                hops: Set(hops),
                first_heard_at: Set(now),
                last_heard_at: Set(now),
                ..Default::default()
            };
            Entity::insert(am)
                .on_conflict(
                    OnConflict::column(Column::DestinationHash)
                        .update_columns([Column::AppData, Column::Hops, Column::LastHeardAt, Column::PublicKey])
                        .to_owned(),
                )
                .exec_without_returning(&self.db)
                .await?;
            Ok(())
        })
        .await
    }

    /// Heard destinations of one aspect, most recently heard first.
    pub async fn announces(&self, aspect: &str) -> Result<Vec<Announce>, StoreError> {
        self.timed("announces", async { Ok(Entity::find().filter(Column::Aspect.eq(aspect)).order_by_desc(Column::LastHeardAt).all(&self.db).await?) }).await
    }

    pub async fn announce(&self, destination_hash: &str) -> Result<Option<Announce>, StoreError> {
        self.timed("announce", async { Ok(Entity::find().filter(Column::DestinationHash.eq(destination_hash)).one(&self.db).await?) }).await
    }
}
