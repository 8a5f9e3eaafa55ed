//! Queries on `group_events`, the record of state changes that members are told about.
use std::collections::HashMap;

use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set};

use super::{Event, Store, StoreError, now_ms};
use entity::group_event;

impl Store {
    pub async fn insert_event(&self, group_id: i64, kind: &str, actor: &str, subject: &str, detail: &str, owes_notice: bool) -> Result<Event, StoreError> {
        self.timed("insert_event", async {
            Ok(group_event::ActiveModel {
                group_id: Set(group_id),
                kind: Set(kind.to_owned()),
                actor: Set(actor.to_owned()),
                subject: Set(subject.to_owned()),
                detail: Set(detail.to_owned()),
                created_at: Set(now_ms()),
                // Only an event that owes a notice waits for its fan-out (see `Store::unfanned`).
                fanned_out: Set(!owes_notice),
                ..Default::default()
            }
            .insert(&self.db)
            .await?)
        })
        .await
    }

    /// Where the digests of a group resume: the id of its last digest event, or its newest event
    /// when it never had one (a new server does not report what came before it ran).
    pub async fn digest_cursor(&self, group_id: i64, digest_kinds: &[&str]) -> Result<i64, StoreError> {
        self.timed("digest_cursor", async {
            let last_digest: Option<i64> = group_event::Entity::find()
                .select_only()
                .column_as(group_event::Column::Id.max(), "m")
                .filter(group_event::Column::GroupId.eq(group_id))
                .filter(group_event::Column::Kind.is_in(digest_kinds.iter().copied()))
                .into_tuple::<Option<i64>>()
                .one(&self.db)
                .await?
                .flatten();
            if let Some(id) = last_digest {
                return Ok(id);
            }
            Ok(group_event::Entity::find()
                .select_only()
                .column_as(group_event::Column::Id.max(), "m")
                .filter(group_event::Column::GroupId.eq(group_id))
                .into_tuple::<Option<i64>>()
                .one(&self.db)
                .await?
                .flatten()
                .unwrap_or(0))
        })
        .await
    }

    /// Events of a group after `after_id`, counted by kind (one aggregate, however many), and the
    /// newest id among them (`after_id` when there are none).
    pub async fn event_counts_since(&self, group_id: i64, after_id: i64) -> Result<(HashMap<String, u64>, i64), StoreError> {
        self.timed("event_counts_since", async {
            let rows = group_event::Entity::find()
                .select_only()
                .column(group_event::Column::Kind)
                .column_as(group_event::Column::Id.count(), "n")
                .column_as(group_event::Column::Id.max(), "m")
                .filter(group_event::Column::GroupId.eq(group_id))
                .filter(group_event::Column::Id.gt(after_id))
                .group_by(group_event::Column::Kind)
                .into_tuple::<(String, i64, i64)>()
                .all(&self.db)
                .await?;
            let last = rows.iter().map(|(_, _, m)| *m).max().unwrap_or(after_id);
            Ok((rows.into_iter().map(|(k, n, _)| (k, n.max(0) as u64)).collect(), last))
        })
        .await
    }

    /// When an event happened (Unix ms), if it exists.
    pub async fn event_time(&self, id: i64) -> Result<Option<i64>, StoreError> {
        self.timed("event_time", async { Ok(group_event::Entity::find_by_id(id).one(&self.db).await?.map(|e| e.created_at)) }).await
    }

    /// The latest `limit` events of a group after `after_id`, newest first (history's event view).
    pub async fn events_after(&self, group_id: i64, after_id: i64, limit: u64) -> Result<Vec<Event>, StoreError> {
        self.timed("events_after", async {
            Ok(group_event::Entity::find()
                .filter(group_event::Column::GroupId.eq(group_id))
                .filter(group_event::Column::Id.gt(after_id))
                .order_by_desc(group_event::Column::Id)
                .limit(limit)
                .all(&self.db)
                .await?)
        })
        .await
    }
}
