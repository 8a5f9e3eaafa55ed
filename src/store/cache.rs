//! The client's local cache (`meshgroup client`): groups heard of, history, members seen and the
//! sync cursors, in one SQLite file in the client's data dir.
//!
//! The schema is small and the client's own (not the server's migrations): four tables created
//! by [`MIGRATIONS`], one step per entry, applied in order and counted in `PRAGMA user_version`,
//! so a cache written by an older client is brought forward on open.

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, QueryResult, Statement, TransactionTrait, Value};

use super::{StoreError, prepare_sqlite_file};

/// The cache's migrations: entry `i` brings `user_version` from `i` to `i + 1`.
const MIGRATIONS: &[&str] = &["
    CREATE TABLE cached_group (
        dest BLOB PRIMARY KEY NOT NULL,     -- meshchat.group destination hash
        lxmf_dest BLOB NOT NULL DEFAULT x'',
        public_key BLOB NOT NULL DEFAULT x'',
        name TEXT NOT NULL DEFAULT '',
        private INTEGER NOT NULL DEFAULT 0,
        member_count INTEGER NOT NULL DEFAULT 0,
        join_stamp_cost INTEGER NOT NULL DEFAULT 0,
        post_stamp_cost INTEGER NOT NULL DEFAULT 0,
        announce BLOB NOT NULL DEFAULT x'',  -- the last meshchat.group announce app data, as heard
        heard_at INTEGER NOT NULL DEFAULT 0,
        membership TEXT NOT NULL DEFAULT '', -- '', 'member', 'requested'
        rights INTEGER NOT NULL DEFAULT 0,
        message_cursor INTEGER NOT NULL DEFAULT 0,  -- highest message id synced
        event_cursor INTEGER NOT NULL DEFAULT 0,    -- highest event id synced
        read_cursor INTEGER NOT NULL DEFAULT 0      -- highest message id shown to the user
    );
    CREATE TABLE cached_message (
        dest BLOB NOT NULL,
        id INTEGER NOT NULL,
        sender BLOB NOT NULL,
        sender_name TEXT NOT NULL,
        timestamp_s REAL NOT NULL,
        content BLOB NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (dest, id)
    );
    CREATE TABLE cached_member (
        dest BLOB NOT NULL,
        identity BLOB NOT NULL,
        display_name TEXT NOT NULL,
        rights INTEGER NOT NULL,
        joined_at INTEGER NOT NULL,
        PRIMARY KEY (dest, identity)
    );
    CREATE TABLE profile (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);
"];

/// A group as the cache knows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CachedGroup {
    pub dest: [u8; 16],
    pub lxmf_dest: Vec<u8>,
    pub public_key: Vec<u8>,
    pub name: String,
    pub private: bool,
    pub member_count: i64,
    pub join_stamp_cost: i64,
    pub post_stamp_cost: i64,
    pub announce: Vec<u8>,
    pub heard_at: i64,
    pub membership: String,
    pub rights: i64,
    pub message_cursor: i64,
    pub event_cursor: i64,
    pub read_cursor: i64,
}

/// What the client heard or was told about a group; `None` fields stay as cached.
#[derive(Clone, Debug, Default)]
pub struct GroupNews {
    pub lxmf_dest: Option<Vec<u8>>,
    pub public_key: Option<Vec<u8>>,
    pub name: Option<String>,
    pub private: Option<bool>,
    pub member_count: Option<i64>,
    pub join_stamp_cost: Option<i64>,
    pub post_stamp_cost: Option<i64>,
    /// The announce app data, with the time it was heard.
    pub announce: Option<(Vec<u8>, i64)>,
    pub membership: Option<String>,
    pub rights: Option<i64>,
}

/// One cached post (or its tombstone: `deleted`, the content gone).
#[derive(Clone, Debug, PartialEq)]
pub struct CachedMessage {
    pub id: i64,
    pub sender: Vec<u8>,
    pub sender_name: String,
    pub timestamp_s: f64,
    pub content: Vec<u8>,
    pub deleted: bool,
}

/// One member as last seen in a roster page.
#[derive(Clone, Debug, PartialEq)]
pub struct CachedMember {
    pub identity: Vec<u8>,
    pub display_name: String,
    pub rights: i64,
    pub joined_at: i64,
}

/// Handle to the cache file; cheap to clone.
#[derive(Clone, Debug)]
pub struct ClientCache {
    db: DatabaseConnection,
}

fn stmt(sql: &str, values: impl IntoIterator<Item = Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Sqlite, sql, values)
}

fn blob(b: &[u8]) -> Value {
    Value::Bytes(Some(b.to_vec()))
}

fn group_row(r: &QueryResult) -> Result<CachedGroup, StoreError> {
    let dest: Vec<u8> = r.try_get("", "dest")?;
    Ok(CachedGroup {
        dest: <[u8; 16]>::try_from(dest.as_slice()).map_err(|_| StoreError::NotFound { what: "well-formed cached group" })?,
        lxmf_dest: r.try_get("", "lxmf_dest")?,
        public_key: r.try_get("", "public_key")?,
        name: r.try_get("", "name")?,
        private: r.try_get::<i64>("", "private")? != 0,
        member_count: r.try_get("", "member_count")?,
        join_stamp_cost: r.try_get("", "join_stamp_cost")?,
        post_stamp_cost: r.try_get("", "post_stamp_cost")?,
        announce: r.try_get("", "announce")?,
        heard_at: r.try_get("", "heard_at")?,
        membership: r.try_get("", "membership")?,
        rights: r.try_get("", "rights")?,
        message_cursor: r.try_get("", "message_cursor")?,
        event_cursor: r.try_get("", "event_cursor")?,
        read_cursor: r.try_get("", "read_cursor")?,
    })
}

impl ClientCache {
    /// Opens (creating it 0600 in a 0700 directory) the cache at `path` and migrates it.
    pub async fn open(path: &std::path::Path) -> Result<Self, StoreError> {
        prepare_sqlite_file(path)?;
        let mut opts = ConnectOptions::new(format!("sqlite://{}?mode=rwc", path.display()));
        // One connection: the client is one process with one writer, and the cache stays small.
        opts.sqlx_logging(false).max_connections(1);
        let db = Database::connect(opts).await?;
        let cache = ClientCache { db };
        cache.migrate().await?;
        Ok(cache)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let row = self.db.query_one_raw(stmt("PRAGMA user_version", [])).await?;
        let version = row.map(|r| r.try_get_by_index::<i64>(0)).transpose()?.unwrap_or(0).max(0) as usize;
        for (i, step) in MIGRATIONS.iter().enumerate().skip(version) {
            let txn = self.db.begin().await?;
            txn.execute_unprepared(step).await?;
            txn.execute_unprepared(&format!("PRAGMA user_version = {}", i + 1)).await?;
            txn.commit().await?;
        }
        Ok(())
    }

    /// Every cached group, the most recently heard first.
    pub async fn groups(&self) -> Result<Vec<CachedGroup>, StoreError> {
        let rows = self.db.query_all_raw(stmt("SELECT * FROM cached_group ORDER BY heard_at DESC, name", [])).await?;
        rows.iter().map(group_row).collect()
    }

    /// One group by its meshchat.group hash.
    pub async fn group(&self, dest: &[u8; 16]) -> Result<Option<CachedGroup>, StoreError> {
        let row = self.db.query_one_raw(stmt("SELECT * FROM cached_group WHERE dest = ?", [blob(dest)])).await?;
        row.as_ref().map(group_row).transpose()
    }

    /// The group whose `lxmf.delivery` is `lxmf` (the source of its fan-out copies).
    pub async fn group_by_lxmf(&self, lxmf: &[u8; 16]) -> Result<Option<CachedGroup>, StoreError> {
        let row = self.db.query_one_raw(stmt("SELECT * FROM cached_group WHERE lxmf_dest = ?", [blob(lxmf)])).await?;
        row.as_ref().map(group_row).transpose()
    }

    /// Records what was learnt about a group, creating its row if it is new.
    pub async fn note_group(&self, dest: &[u8; 16], news: GroupNews) -> Result<(), StoreError> {
        let txn = self.db.begin().await?;
        txn.execute_raw(stmt("INSERT INTO cached_group (dest) VALUES (?) ON CONFLICT (dest) DO NOTHING", [blob(dest)])).await?;
        let mut sets: Vec<&str> = Vec::new();
        let mut values: Vec<Value> = Vec::new();
        let mut set = |col: &'static str, v: Option<Value>| {
            if let Some(v) = v {
                sets.push(col);
                values.push(v);
            }
        };
        set("lxmf_dest = ?", news.lxmf_dest.map(|b| blob(&b)));
        set("public_key = ?", news.public_key.map(|b| blob(&b)));
        set("name = ?", news.name.map(Value::from));
        set("private = ?", news.private.map(|p| Value::from(i64::from(p))));
        set("member_count = ?", news.member_count.map(Value::from));
        set("join_stamp_cost = ?", news.join_stamp_cost.map(Value::from));
        set("post_stamp_cost = ?", news.post_stamp_cost.map(Value::from));
        let (announce, heard_at) = news.announce.map_or((None, None), |(a, t)| (Some(blob(&a)), Some(Value::from(t))));
        set("announce = ?", announce);
        set("heard_at = ?", heard_at);
        set("membership = ?", news.membership.map(Value::from));
        set("rights = ?", news.rights.map(Value::from));
        if !sets.is_empty() {
            values.push(blob(dest));
            txn.execute_raw(stmt(&format!("UPDATE cached_group SET {} WHERE dest = ?", sets.join(", ")), values)).await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// Stores a page of synced history and events in one transaction: the messages, the
    /// tombstones named by `deleted_ids` (their text is dropped), and both cursors moved forward.
    /// A page that fails to commit leaves the cursors where they were, so the next sync asks again.
    pub async fn apply_sync(&self, dest: &[u8; 16], messages: &[CachedMessage], deleted_ids: &[i64], event_cursor: i64) -> Result<(), StoreError> {
        let txn = self.db.begin().await?;
        for m in messages {
            put_message(&txn, dest, m).await?;
        }
        for id in deleted_ids {
            txn.execute_raw(stmt("UPDATE cached_message SET content = x'', deleted = 1 WHERE dest = ? AND id = ?", [blob(dest), Value::from(*id)])).await?;
        }
        let top = messages.iter().map(|m| m.id).max().unwrap_or(0);
        txn.execute_raw(stmt(
            "UPDATE cached_group SET message_cursor = MAX(message_cursor, ?), event_cursor = MAX(event_cursor, ?) WHERE dest = ?",
            [Value::from(top), Value::from(event_cursor), blob(dest)],
        ))
        .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Stores one message that arrived live (a fan-out copy). The sync cursor is not moved: a
    /// copy may overtake an older post still in flight, which the next sync fetches.
    pub async fn put_live_message(&self, dest: &[u8; 16], m: &CachedMessage) -> Result<(), StoreError> {
        put_message(&self.db, dest, m).await
    }

    /// The newest `limit` messages of a group, oldest first.
    pub async fn history(&self, dest: &[u8; 16], limit: u64) -> Result<Vec<CachedMessage>, StoreError> {
        let rows = self
            .db
            .query_all_raw(stmt(
                "SELECT * FROM (SELECT * FROM cached_message WHERE dest = ? ORDER BY id DESC LIMIT ?) ORDER BY id",
                [blob(dest), Value::from(limit.min(i64::MAX as u64) as i64)],
            ))
            .await?;
        rows.iter()
            .map(|r| {
                Ok(CachedMessage {
                    id: r.try_get("", "id")?,
                    sender: r.try_get("", "sender")?,
                    sender_name: r.try_get("", "sender_name")?,
                    timestamp_s: r.try_get("", "timestamp_s")?,
                    content: r.try_get("", "content")?,
                    deleted: r.try_get::<i64>("", "deleted")? != 0,
                })
            })
            .collect()
    }

    /// Messages above the read cursor, per group: the unread counts of the group list.
    pub async fn unread(&self, dest: &[u8; 16]) -> Result<i64, StoreError> {
        let row = self
            .db
            .query_one_raw(stmt(
                "SELECT COUNT(*) AS n FROM cached_message m JOIN cached_group g ON g.dest = m.dest WHERE m.dest = ? AND m.id > g.read_cursor AND m.deleted = 0",
                [blob(dest)],
            ))
            .await?;
        Ok(row.map(|r| r.try_get::<i64>("", "n")).transpose()?.unwrap_or(0))
    }

    /// Marks everything up to `id` as read.
    pub async fn mark_read(&self, dest: &[u8; 16], id: i64) -> Result<(), StoreError> {
        self.db.execute_raw(stmt("UPDATE cached_group SET read_cursor = MAX(read_cursor, ?) WHERE dest = ?", [Value::from(id), blob(dest)])).await?;
        Ok(())
    }

    /// Replaces the cached roster of a group with a complete one.
    pub async fn replace_members(&self, dest: &[u8; 16], members: &[CachedMember]) -> Result<(), StoreError> {
        let txn = self.db.begin().await?;
        txn.execute_raw(stmt("DELETE FROM cached_member WHERE dest = ?", [blob(dest)])).await?;
        for m in members {
            txn.execute_raw(stmt(
                "INSERT INTO cached_member (dest, identity, display_name, rights, joined_at) VALUES (?, ?, ?, ?, ?)",
                [blob(dest), blob(&m.identity), Value::from(m.display_name.clone()), Value::from(m.rights), Value::from(m.joined_at)],
            ))
            .await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// The cached roster, in join order.
    pub async fn members(&self, dest: &[u8; 16]) -> Result<Vec<CachedMember>, StoreError> {
        let rows = self.db.query_all_raw(stmt("SELECT * FROM cached_member WHERE dest = ? ORDER BY joined_at, identity", [blob(dest)])).await?;
        rows.iter()
            .map(|r| {
                Ok(CachedMember {
                    identity: r.try_get("", "identity")?,
                    display_name: r.try_get("", "display_name")?,
                    rights: r.try_get("", "rights")?,
                    joined_at: r.try_get("", "joined_at")?,
                })
            })
            .collect()
    }

    /// Forgets a group's history, roster and membership (after leaving it, or being removed).
    pub async fn forget_membership(&self, dest: &[u8; 16]) -> Result<(), StoreError> {
        let txn = self.db.begin().await?;
        txn.execute_raw(stmt("UPDATE cached_group SET membership = '', rights = 0 WHERE dest = ?", [blob(dest)])).await?;
        txn.execute_raw(stmt("DELETE FROM cached_member WHERE dest = ?", [blob(dest)])).await?;
        txn.commit().await?;
        Ok(())
    }

    /// A profile value (the display name, ...).
    pub async fn profile(&self, key: &str) -> Result<Option<String>, StoreError> {
        let row = self.db.query_one_raw(stmt("SELECT value FROM profile WHERE key = ?", [Value::from(key)])).await?;
        Ok(row.map(|r| r.try_get::<String>("", "value")).transpose()?)
    }

    pub async fn set_profile(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.db
            .execute_raw(stmt(
                "INSERT INTO profile (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [Value::from(key), Value::from(value)],
            ))
            .await?;
        Ok(())
    }
}

async fn put_message(db: &impl ConnectionTrait, dest: &[u8; 16], m: &CachedMessage) -> Result<(), StoreError> {
    // A tombstone wins over text: a copy that arrives after the deletion must not bring it back.
    db.execute_raw(stmt(
        "INSERT INTO cached_message (dest, id, sender, sender_name, timestamp_s, content, deleted) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (dest, id) DO UPDATE SET deleted = MAX(deleted, excluded.deleted),
           content = CASE WHEN MAX(deleted, excluded.deleted) = 1 THEN x'' ELSE excluded.content END,
           sender_name = excluded.sender_name",
        [
            blob(dest),
            Value::from(m.id),
            blob(&m.sender),
            Value::from(m.sender_name.clone()),
            Value::from(m.timestamp_s),
            blob(if m.deleted { &[] } else { &m.content }),
            Value::from(i64::from(m.deleted)),
        ],
    ))
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: i64, text: &str) -> CachedMessage {
        CachedMessage { id, sender: vec![1; 16], sender_name: "alice".into(), timestamp_s: 1.0, content: text.as_bytes().to_vec(), deleted: false }
    }

    #[tokio::test]
    async fn sync_pages_move_cursors_and_tombstones_drop_text() -> Result<(), Box<dyn std::error::Error>> {
        let dir = std::env::temp_dir().join(format!("meshgroup-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cache = ClientCache::open(&dir.join("cache.db")).await?;
        let g = [7u8; 16];
        cache.note_group(&g, GroupNews { name: Some("Mesh".into()), membership: Some("member".into()), ..Default::default() }).await?;
        cache.apply_sync(&g, &[msg(1, "one"), msg(2, "two")], &[], 5).await?;
        let row = cache.group(&g).await?.ok_or("group")?;
        assert_eq!((row.message_cursor, row.event_cursor, row.name.as_str()), (2, 5, "Mesh"));
        cache.apply_sync(&g, &[], &[1], 4).await?;
        let h = cache.history(&g, 10).await?;
        assert_eq!((h[0].deleted, h[0].content.is_empty(), h[1].content.as_slice()), (true, true, b"two".as_slice()));
        assert_eq!(cache.group(&g).await?.ok_or("group")?.event_cursor, 5, "cursors never go back");
        // A late live copy of a deleted message does not bring the text back.
        cache.put_live_message(&g, &msg(1, "one")).await?;
        assert!(cache.history(&g, 10).await?[0].content.is_empty());
        assert_eq!(cache.unread(&g).await?, 1);
        cache.mark_read(&g, 2).await?;
        assert_eq!(cache.unread(&g).await?, 0);
        drop(cache);
        // Reopening runs no migration twice.
        let again = ClientCache::open(&dir.join("cache.db")).await?;
        assert_eq!(again.history(&g, 1).await?.len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
