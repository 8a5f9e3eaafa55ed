//! Queries on `group_messages`: durable insert with de-duplication, history pages, tombstones.
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveModelTrait, ColumnTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set};

use super::{Message, Store, StoreError, now_ms};
use entity::group_message::{ActiveModel, Column, Entity};

/// Rows per multi-row INSERT of a post batch: 13 bound values a row stay far below both backends'
/// parameter limits.
const BATCH_CHUNK: usize = 256;

/// The row of a new message, received at `now`.
fn message_row(new: NewMessage, now: i64, fanned_out: bool) -> ActiveModel {
    ActiveModel {
        group_id: Set(new.group_id),
        message_hash: Set(new.message_hash),
        sender_identity_hash: Set(new.sender_identity_hash),
        sender_display_name: Set(new.sender_display_name),
        timestamp: Set(new.timestamp),
        title: Set(new.title),
        content: Set(new.content),
        fields: Set(new.fields),
        received_at: Set(now),
        deleted_at: Set(None),
        deleted_by: Set(None),
        fanned_out: Set(fanned_out),
        reply_to_id: Set(new.reply_to_id),
        ..Default::default()
    }
}

/// A message as accepted from a member, before it has an id.
#[derive(Clone, Debug)]
pub struct NewMessage {
    pub group_id: i64,
    pub message_hash: String,
    pub sender_identity_hash: String,
    /// The name the sender posts under; the group fills it in from the membership.
    pub sender_display_name: String,
    pub timestamp: f64,
    pub title: Vec<u8>,
    pub content: Vec<u8>,
    pub fields: Vec<u8>,
    /// The group message it answers (its `FIELD_REPLY_TO`, resolved by the group).
    pub reply_to_id: Option<i64>,
}

/// Whether an insert stored a new row or met a sender's retry of one already stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertOutcome {
    Inserted(i64),
    Duplicate(i64),
}

impl InsertOutcome {
    pub fn id(self) -> i64 {
        match self {
            InsertOutcome::Inserted(id) | InsertOutcome::Duplicate(id) => id,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Order {
    #[default]
    NewestFirst,
    OldestFirst,
}

/// One page of history: at most `limit` rows strictly before or after a message id.
#[derive(Clone, Copy, Debug, Default)]
pub struct HistoryQuery {
    pub limit: u64,
    pub before_id: Option<i64>,
    pub after_id: Option<i64>,
    pub order: Order,
    /// Also the group's events with an id above this (newest first, at most `limit`); the
    /// message query ignores it.
    pub events_after: Option<i64>,
}

impl Store {
    /// Commits the message before returning, so an acknowledgement sent afterwards is never a lie.
    pub async fn insert_message(&self, new: NewMessage) -> Result<InsertOutcome, StoreError> {
        let mut out = self.insert_message_batch(vec![new]).await?;
        out.pop().ok_or(StoreError::NotFound { what: "message" })
    }

    /// Stores posts in one transaction (a group commit: one commit, however many posts arrived
    /// together) and returns, in order, each one's id, or the id it already had (a retry). Every
    /// post is committed before this returns. Three statements per batch, not two per post: the
    /// hashes already stored, one multi-row insert, and the ids.
    pub async fn insert_message_batch(&self, rows: Vec<NewMessage>) -> Result<Vec<InsertOutcome>, StoreError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        self.timed("insert_message_batch", async {
            let now = now_ms();
            let txn = self.begin_write().await?;
            // One group per batch (a group commits its own posts); grouped anyway, to stay correct.
            let mut by_group: std::collections::BTreeMap<i64, Vec<String>> = std::collections::BTreeMap::new();
            for r in &rows {
                by_group.entry(r.group_id).or_default().push(r.message_hash.clone());
            }
            let ids_of = |group: i64, hashes: Vec<String>| {
                Entity::find()
                    .select_only()
                    .column(Column::MessageHash)
                    .column(Column::Id)
                    .filter(Column::GroupId.eq(group))
                    .filter(Column::MessageHash.is_in(hashes))
                    .into_tuple::<(String, i64)>()
            };
            let mut stored_before: std::collections::HashSet<(i64, String)> = std::collections::HashSet::new();
            for (group, hashes) in &by_group {
                for (hash, _) in ids_of(*group, hashes.clone()).all(&txn).await? {
                    stored_before.insert((*group, hash));
                }
            }
            let keys: Vec<(i64, String)> = rows.iter().map(|r| (r.group_id, r.message_hash.clone())).collect();
            let models: Vec<ActiveModel> = rows.into_iter().map(|new| message_row(new, now, false)).collect();
            let mut models = models.into_iter().peekable();
            while models.peek().is_some() {
                let chunk: Vec<ActiveModel> = models.by_ref().take(BATCH_CHUNK).collect();
                match Entity::insert_many(chunk)
                    .on_conflict(OnConflict::columns([Column::GroupId, Column::MessageHash]).do_nothing().to_owned())
                    .exec_without_returning(&txn)
                    .await
                {
                    Ok(_) | Err(DbErr::RecordNotInserted) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            let mut ids: std::collections::HashMap<(i64, String), i64> = std::collections::HashMap::new();
            for (group, hashes) in by_group {
                for (hash, id) in ids_of(group, hashes).all(&txn).await? {
                    ids.insert((group, hash), id);
                }
            }
            txn.commit().await?;
            // The first post of a hash in the batch is the insert; a retry in the same batch, or
            // a hash stored before, is a duplicate.
            let mut seen = std::collections::HashSet::new();
            keys.into_iter()
                .map(|key| {
                    let id = *ids.get(&key).ok_or(StoreError::NotFound { what: "message" })?;
                    let fresh = !stored_before.contains(&key) && seen.insert(key);
                    Ok(if fresh { InsertOutcome::Inserted(id) } else { InsertOutcome::Duplicate(id) })
                })
                .collect()
        })
        .await
    }

    /// Seeds many messages at once (benchmarks, tests, imports): one transaction, multi-row inserts.
    /// Rows that repeat a stored `(group_id, message_hash)` are skipped; returns how many were stored.
    pub async fn insert_messages_bulk(&self, rows: Vec<NewMessage>) -> Result<u64, StoreError> {
        // 500 rows of 10 columns stay well under SQLite's and PostgreSQL's bound-parameter limits.
        const CHUNK: usize = 500;
        self.timed("insert_messages_bulk", async {
            let now = now_ms();
            let txn = self.begin_write().await?;
            let mut stored = 0;
            let mut rows = rows.into_iter().peekable();
            while rows.peek().is_some() {
                let chunk: Vec<ActiveModel> = rows
                    .by_ref()
                    .take(CHUNK)
                    // Seeded or imported history is old news: no member is notified of it, and
                    // start-up recovery must not take it for unfinished fan-outs.
                    .map(|new| message_row(new, now, true))
                    .collect();
                stored += Entity::insert_many(chunk)
                    .on_conflict(OnConflict::columns([Column::GroupId, Column::MessageHash]).do_nothing().to_owned())
                    .exec_without_returning(&txn)
                    .await?;
            }
            txn.commit().await?;
            Ok(stored)
        })
        .await
    }

    pub async fn message(&self, group_id: i64, id: i64) -> Result<Message, StoreError> {
        self.timed("message", async {
            Entity::find_by_id(id).filter(Column::GroupId.eq(group_id)).one(&self.db).await?.ok_or(StoreError::NotFound { what: "message" })
        })
        .await
    }

    /// A page of history; it walks the `(group_id, id)` index, so its cost does not grow with history.
    pub async fn history(&self, group_id: i64, q: HistoryQuery) -> Result<Vec<Message>, StoreError> {
        Ok(self.history_page(group_id, q).await?.0)
    }

    /// A page of history, and whether more messages lie beyond it in the direction it was read
    /// (one row more is read to know), so a client pages on without knowing the server's cap.
    pub async fn history_page(&self, group_id: i64, q: HistoryQuery) -> Result<(Vec<Message>, bool), StoreError> {
        self.timed("history", async {
            let mut sel = Entity::find().filter(Column::GroupId.eq(group_id));
            if let Some(b) = q.before_id {
                sel = sel.filter(Column::Id.lt(b));
            }
            if let Some(a) = q.after_id {
                sel = sel.filter(Column::Id.gt(a));
            }
            // "after X" pages forward from X; everything else pages back from the newest.
            let ascending_scan = q.after_id.is_some();
            sel = if ascending_scan { sel.order_by_asc(Column::Id) } else { sel.order_by_desc(Column::Id) };
            let mut rows = sel.limit(q.limit.saturating_add(1)).all(&self.db).await?;
            let more = rows.len() as u64 > q.limit;
            rows.truncate(q.limit as usize);
            let want_ascending = q.order == Order::OldestFirst;
            if ascending_scan != want_ascending {
                rows.reverse();
            }
            Ok((rows, more))
        })
        .await
    }

    pub async fn count_messages(&self) -> Result<u64, StoreError> {
        self.timed("count_messages", async { Ok(Entity::find().count(&self.db).await?) }).await
    }

    /// Turns a message into a tombstone: its body is erased, its id and who deleted it stay.
    pub async fn delete_message(&self, group_id: i64, id: i64, deleted_by: &str) -> Result<Message, StoreError> {
        self.timed("delete_message", async {
            let msg = Entity::find_by_id(id).filter(Column::GroupId.eq(group_id)).one(&self.db).await?.ok_or(StoreError::NotFound { what: "message" })?;
            if msg.deleted_at.is_some() {
                return Ok(msg);
            }
            let mut am: ActiveModel = msg.into();
            am.title = Set(Vec::new());
            am.content = Set(Vec::new());
            am.fields = Set(Vec::new());
            am.deleted_at = Set(Some(now_ms()));
            am.deleted_by = Set(Some(deleted_by.to_owned()));
            Ok(am.update(&self.db).await?)
        })
        .await
    }
}
