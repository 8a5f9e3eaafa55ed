//! Queries on `group_events`, the record of state changes that members are told about.
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set};

use super::{Event, Store, StoreError, now_ms};
use entity::group_event;

impl Store {
    pub async fn insert_event(
        &self,
        group_id: i64,
        kind: &str,
        actor: &str,
        subject: &str,
        detail: &str,
    ) -> Result<Event, StoreError> {
        self.timed("insert_event", async {
            Ok(group_event::ActiveModel {
                group_id: Set(group_id),
                kind: Set(kind.to_owned()),
                actor: Set(actor.to_owned()),
                subject: Set(subject.to_owned()),
                detail: Set(detail.to_owned()),
                created_at: Set(now_ms()),
                fanned_out: Set(false),
                ..Default::default()
            }
            .insert(&self.db)
            .await?)
        })
        .await
    }

    /// The latest `limit` events of a group, newest first.
    pub async fn events(&self, group_id: i64, limit: u64) -> Result<Vec<Event>, StoreError> {
        self.timed("events", async {
            Ok(group_event::Entity::find()
                .filter(group_event::Column::GroupId.eq(group_id))
                .order_by_desc(group_event::Column::Id)
                .limit(limit)
                .all(&self.db)
                .await?)
        })
        .await
    }
}
