//! Queries on `outbox`: batched fill, the due scan, and state transitions of the fan-out.
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set, Statement, TransactionTrait,
};

use super::{OutboxRow, Store, StoreError, now_ms};
use crate::domain::DeliveryClass;
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
    pub class: DeliveryClass,
    /// A reaction's rows name it here, and the reacted-to message in `message_id`.
    pub reaction_id: Option<i64>,
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
                reaction_id: Set(r.reaction_id),
                mode: Set(r.mode.to_owned()),
                class: Set(r.class.as_i16()),
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
        .map(|r| serde_json::json!({"g": r.group_id, "m": r.member_identity_hash, "k": r.kind, "mi": r.message_id, "ei": r.event_id, "r": r.reaction_id, "mo": r.mode, "c": r.class.as_i16()}))
        .collect();
    let sql = "INSERT INTO outbox (group_id, member_identity_hash, kind, message_id, event_id, reaction_id, mode, class, state, attempts, \
               next_attempt_at, created_at, updated_at) \
               SELECT g, m, k, mi, ei, r, mo, c, 'pending', 0, $2, $2, $2 \
               FROM json_to_recordset($1::json) AS t(g bigint, m text, k text, mi bigint, ei bigint, r bigint, mo text, c smallint)";
    let values = [serde_json::Value::Array(batch).to_string().into(), now.into()];
    txn.execute_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, values)).await?;
    Ok(())
}

/// The item whose fan-out a batch of rows is, marked in the same transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FannedOut {
    Message(i64),
    Event(i64),
    Reaction(i64),
    /// Rows of no item (benchmarks, tests).
    Nothing,
}

impl Store {
    /// Writes every row in one transaction: either the whole fan-out is scheduled or none of it.
    pub async fn insert_outbox_batch(&self, rows: Vec<NewOutboxRow>) -> Result<u64, StoreError> {
        self.schedule_fanout(rows, FannedOut::Nothing).await
    }

    /// Writes a fan-out's rows and marks its message or event as fanned out, in one transaction,
    /// so after a crash exactly the unscheduled items are found again (see [`Store::unfanned`]).
    /// Idempotent: an item already marked is left alone and `Ok(0)` returned, so the periodic
    /// recovery and a late hand-off can never write a second set of rows for one post.
    pub async fn schedule_fanout(&self, rows: Vec<NewOutboxRow>, item: FannedOut) -> Result<u64, StoreError> {
        let (message_id, event_id, reaction_id) = match item {
            FannedOut::Message(id) => (Some(id), None, None),
            FannedOut::Event(id) => (None, Some(id), None),
            FannedOut::Reaction(id) => (None, None, Some(id)),
            FannedOut::Nothing => (None, None, None),
        };
        self.timed("schedule_fanout", async {
            let now = now_ms();
            let total = rows.len() as u64;
            let txn = self.db.begin().await?;
            if let Some(id) = message_id {
                let marked = entity::group_message::Entity::update_many()
                    .col_expr(entity::group_message::Column::FannedOut, sea_orm::sea_query::Expr::value(true))
                    .filter(entity::group_message::Column::Id.eq(id))
                    .filter(entity::group_message::Column::FannedOut.eq(false))
                    .exec(&txn)
                    .await?;
                if marked.rows_affected == 0 {
                    return Ok(0);
                }
            }
            if let Some(id) = event_id {
                let marked = entity::group_event::Entity::update_many()
                    .col_expr(entity::group_event::Column::FannedOut, sea_orm::sea_query::Expr::value(true))
                    .filter(entity::group_event::Column::Id.eq(id))
                    .filter(entity::group_event::Column::FannedOut.eq(false))
                    .exec(&txn)
                    .await?;
                if marked.rows_affected == 0 {
                    return Ok(0);
                }
            }
            if let Some(id) = reaction_id
                && !Store::mark_reaction_fanned_out(&txn, id).await?
            {
                return Ok(0);
            }
            if self.db.get_database_backend() == DbBackend::Postgres {
                insert_pg(&txn, &rows, now).await?;
            } else {
                insert_chunked(&txn, rows, now).await?;
            }
            txn.commit().await?;
            Ok(total)
        })
        .await
    }

    /// Rows whose time has come: pending ones, and sent ones whose proof did not arrive in time
    /// (which makes a crash mid-send a retry). Every post copy comes before any direct notice and
    /// every notice before any digest; within a class the groups take turns (row 1 of each group,
    /// then row 2 of each, ...), and each group's rows, so each member's, stay in id order. So a
    /// new post is never behind notices, nor behind another group's bulk.
    pub async fn due_outbox(&self, now: i64, limit: u64) -> Result<Vec<OutboxRow>, StoreError> {
        self.timed("due_outbox", async {
            let sql = "SELECT id, group_id, member_identity_hash, kind, message_id, event_id, mode, state, attempts, \
                       next_attempt_at, last_error, created_at, updated_at, class, copy_hash, reaction_id FROM ( \
                       SELECT o.*, ROW_NUMBER() OVER (PARTITION BY o.class, o.group_id ORDER BY o.id) AS turn \
                       FROM outbox o WHERE o.state IN ('pending', 'sent') AND o.next_attempt_at <= $1) t \
                       ORDER BY class, turn, group_id LIMIT $2";
            let backend = self.db.get_database_backend();
            let stmt = Statement::from_sql_and_values(backend, sql, [now.into(), (limit.min(i64::MAX as u64) as i64).into()]);
            Ok(Entity::find().from_raw_sql(stmt).all(&self.db).await?)
        })
        .await
    }

    /// Moves a row to a new state, recording the attempt and when to try again (one statement).
    pub async fn update_outbox(&self, id: i64, state: &str, attempts: i32, next_attempt_at: i64, last_error: Option<String>) -> Result<(), StoreError> {
        self.timed("update_outbox", async {
            let done = Entity::update_many()
                .col_expr(Column::State, Expr::value(state))
                .col_expr(Column::Attempts, Expr::value(attempts))
                .col_expr(Column::NextAttemptAt, Expr::value(next_attempt_at))
                .col_expr(Column::LastError, Expr::value(last_error))
                .col_expr(Column::UpdatedAt, Expr::value(now_ms()))
                .filter(Column::Id.eq(id))
                .exec(&self.db)
                .await?;
            if done.rows_affected == 0 {
                return Err(StoreError::NotFound { what: "outbox row" });
            }
            Ok(())
        })
        .await
    }

    /// Moves rows still waiting (pending or sent) to `state` in one statement: `sent` before any
    /// of a round goes out (a proof that comes back fast then finds its row sent, and its
    /// `delivered` is never overwritten), or back to `pending` when a shutdown stopped the round
    /// before they went. A row already delivered is left alone.
    pub async fn mark_outbox(&self, ids: &[i64], state: &'static str, attempts: i32, next_attempt_at: i64) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.timed("mark_outbox", async {
            Entity::update_many()
                .col_expr(Column::State, Expr::value(state))
                .col_expr(Column::Attempts, Expr::value(attempts))
                .col_expr(Column::NextAttemptAt, Expr::value(next_attempt_at))
                .col_expr(Column::LastError, Expr::value(Option::<String>::None))
                .col_expr(Column::UpdatedAt, Expr::value(now_ms()))
                .filter(Column::Id.is_in(ids.iter().copied()))
                .filter(Column::State.is_in(["pending", "sent"]))
                .exec(&self.db)
                .await?;
            Ok(())
        })
        .await
    }

    /// Makes the rows that wait for these members' paths due now (pending ones due later; sent
    /// ones await their proofs and are left alone), in one statement. Returns how many.
    pub async fn outbox_due_now(&self, members: &[String], now: i64) -> Result<u64, StoreError> {
        if members.is_empty() {
            return Ok(0);
        }
        self.timed("outbox_due_now", async {
            let done = Entity::update_many()
                .col_expr(Column::NextAttemptAt, Expr::value(now))
                .col_expr(Column::UpdatedAt, Expr::value(now))
                .filter(Column::State.eq("pending"))
                .filter(Column::NextAttemptAt.gt(now))
                .filter(Column::MemberIdentityHash.is_in(members.iter().cloned()))
                .exec(&self.db)
                .await?;
            Ok(done.rows_affected)
        })
        .await
    }

    /// Marks rows whose proofs arrived as delivered, in one statement.
    pub async fn mark_outbox_delivered(&self, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.timed("mark_outbox_delivered", async {
            let now = now_ms();
            Entity::update_many()
                .col_expr(Column::State, Expr::value("delivered"))
                .col_expr(Column::NextAttemptAt, Expr::value(now))
                .col_expr(Column::UpdatedAt, Expr::value(now))
                .filter(Column::Id.is_in(ids.iter().copied()))
                .exec(&self.db)
                .await?;
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
        self.timed("event", async { entity::group_event::Entity::find_by_id(id).one(&self.db).await?.ok_or(StoreError::NotFound { what: "event" }) }).await
    }

    /// Row counts per state and class, for the outbox-depth gauge.
    pub async fn outbox_depth(&self) -> Result<Vec<(String, DeliveryClass, i64)>, StoreError> {
        self.timed("outbox_depth", async {
            let rows = Entity::find()
                .select_only()
                .column(Column::State)
                .column(Column::Class)
                .column_as(Column::Id.count(), "n")
                .group_by(Column::State)
                .group_by(Column::Class)
                .into_tuple::<(String, i16, i64)>()
                .all(&self.db)
                .await?;
            Ok(rows.into_iter().map(|(s, c, n)| (s, DeliveryClass::from_i16(c), n)).collect())
        })
        .await
    }
}
