//! Queries on `outbox`: batched fill, the due scan, and state transitions of the fan-out.
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set, Statement, TransactionTrait,
};

use super::{OutboxRow, Store, StoreError, now_ms};
use entity::outbox::{ActiveModel, Column, Entity};

/// Rows per INSERT statement: keeps SQLite under its bound-parameter limit.
const INSERT_CHUNK: usize = 500;

/// One delivery to schedule.
#[derive(Clone, Debug)]
pub struct NewOutboxRow {
    pub group_id: i64,
    pub member_identity_hash: String,
    pub kind: &'static str,
    pub message_id: Option<i64>,
    pub event_id: Option<i64>,
    pub mode: &'static str,
}

/// Multi-row INSERTs of at most [`INSERT_CHUNK`] rows, for SQLite.
async fn insert_chunked(txn: &DatabaseTransaction, rows: Vec<NewOutboxRow>, now: i64) -> Result<(), StoreError> {
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<ActiveModel> = rows
            .by_ref()
            .take(INSERT_CHUNK)
            .map(|r| ActiveModel {
                group_id: Set(r.group_id),
                member_identity_hash: Set(r.member_identity_hash),
                kind: Set(r.kind.to_owned()),
                message_id: Set(r.message_id),
                event_id: Set(r.event_id),
                mode: Set(r.mode.to_owned()),
                state: Set("pending".to_owned()),
                attempts: Set(0),
                next_attempt_at: Set(now),
                last_error: Set(None),
                created_at: Set(now),
                updated_at: Set(now),
                ..Default::default()
            })
            .collect();
        Entity::insert_many(chunk).exec_without_returning(txn).await?;
    }
    Ok(())
}

/// PostgreSQL takes the whole batch as one JSON parameter expanded server-side: one statement
/// with one bound value, where multi-row INSERTs spent most of their time binding 12 values a row.
async fn insert_pg(txn: &DatabaseTransaction, rows: &[NewOutboxRow], now: i64) -> Result<(), StoreError> {
    let batch: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| serde_json::json!({"g": r.group_id, "m": r.member_identity_hash, "k": r.kind, "mi": r.message_id, "ei": r.event_id, "mo": r.mode}))
        .collect();
    let sql = "INSERT INTO outbox (group_id, member_identity_hash, kind, message_id, event_id, mode, state, attempts, \
               next_attempt_at, created_at, updated_at) \
               SELECT g, m, k, mi, ei, mo, 'pending', 0, $2, $2, $2 \
               FROM json_to_recordset($1::json) AS t(g bigint, m text, k text, mi bigint, ei bigint, mo text)";
    let values = [serde_json::Value::Array(batch).to_string().into(), now.into()];
    txn.execute_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, values)).await?;
    Ok(())
}

impl Store {
    /// Writes every row in one transaction: either the whole fan-out is scheduled or none of it.
    pub async fn insert_outbox_batch(&self, rows: Vec<NewOutboxRow>) -> Result<u64, StoreError> {
        self.schedule_fanout(rows, None, None).await
    }

    /// Writes a fan-out's rows and marks its message or event as fanned out, in one transaction,
    /// so after a crash exactly the unscheduled items are found again (see [`Store::unfanned`]).
    pub async fn schedule_fanout(&self, rows: Vec<NewOutboxRow>, message_id: Option<i64>, event_id: Option<i64>) -> Result<u64, StoreError> {
        self.timed("schedule_fanout", async {
            let now = now_ms();
            let total = rows.len() as u64;
            let txn = self.db.begin().await?;
            if self.db.get_database_backend() == DbBackend::Postgres {
                insert_pg(&txn, &rows, now).await?;
            } else {
                insert_chunked(&txn, rows, now).await?;
            }
            if let Some(id) = message_id {
                entity::group_message::Entity::update_many()
                    .col_expr(entity::group_message::Column::FannedOut, sea_orm::sea_query::Expr::value(true))
                    .filter(entity::group_message::Column::Id.eq(id))
                    .exec(&txn)
                    .await?;
            }
            if let Some(id) = event_id {
                entity::group_event::Entity::update_many()
                    .col_expr(entity::group_event::Column::FannedOut, sea_orm::sea_query::Expr::value(true))
                    .filter(entity::group_event::Column::Id.eq(id))
                    .exec(&txn)
                    .await?;
            }
            txn.commit().await?;
            Ok(total)
        })
        .await
    }

    /// Rows whose time has come, oldest first (so each member gets messages in order): pending
    /// ones, and sent ones whose proof did not arrive in time (which makes a crash mid-send a retry).
    pub async fn due_outbox(&self, now: i64, limit: u64) -> Result<Vec<OutboxRow>, StoreError> {
        self.timed("due_outbox", async {
            Ok(Entity::find()
                .filter(Column::State.is_in(["pending", "sent"]))
                .filter(Column::NextAttemptAt.lte(now))
                .order_by_asc(Column::Id)
                .limit(limit)
                .all(&self.db)
                .await?)
        })
        .await
    }

    /// Moves a row to a new state, recording the attempt and when to try again.
    pub async fn update_outbox(
        &self,
        id: i64,
        state: &str,
        attempts: i32,
        next_attempt_at: i64,
        last_error: Option<String>,
    ) -> Result<(), StoreError> {
        self.timed("update_outbox", async {
            let row = Entity::find_by_id(id).one(&self.db).await?.ok_or(StoreError::NotFound { what: "outbox row" })?;
            let mut am: ActiveModel = row.into();
            am.state = Set(state.to_owned());
            am.attempts = Set(attempts);
            am.next_attempt_at = Set(next_attempt_at);
            am.last_error = Set(last_error);
            am.updated_at = Set(now_ms());
            am.update(&self.db).await?;
            Ok(())
        })
        .await
    }

    /// Messages and events stored but never scheduled (a crash hit between the two commits).
    pub async fn unfanned(&self, limit: u64) -> Result<(Vec<super::Message>, Vec<super::Event>), StoreError> {
        self.timed("unfanned", async {
            let messages = entity::group_message::Entity::find()
                .filter(entity::group_message::Column::FannedOut.eq(false))
                .filter(entity::group_message::Column::DeletedAt.is_null())
                .order_by_asc(entity::group_message::Column::Id)
                .limit(limit)
                .all(&self.db)
                .await?;
            let events = entity::group_event::Entity::find()
                .filter(entity::group_event::Column::FannedOut.eq(false))
                .order_by_asc(entity::group_event::Column::Id)
                .limit(limit)
                .all(&self.db)
                .await?;
            Ok((messages, events))
        })
        .await
    }

    pub async fn event(&self, id: i64) -> Result<super::Event, StoreError> {
        self.timed("event", async {
            entity::group_event::Entity::find_by_id(id).one(&self.db).await?.ok_or(StoreError::NotFound { what: "event" })
        })
        .await
    }

    /// Every row of one member (tests and diagnostics).
    pub async fn outbox_for(&self, member: &str) -> Result<Vec<OutboxRow>, StoreError> {
        self.timed("outbox_for", async {
            Ok(Entity::find().filter(Column::MemberIdentityHash.eq(member)).order_by_asc(Column::Id).all(&self.db).await?)
        })
        .await
    }

    /// Row counts per state, for the outbox-depth gauge.
    pub async fn outbox_depth(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.timed("outbox_depth", async {
            Ok(Entity::find()
                .select_only()
                .column(Column::State)
                .column_as(Column::Id.count(), "n")
                .group_by(Column::State)
                .into_tuple::<(String, i64)>()
                .all(&self.db)
                .await?)
        })
        .await
    }
}
