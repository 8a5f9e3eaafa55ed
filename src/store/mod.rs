//! The store: the only module that talks to the database. Every query of meshgroup lives here.
//!
//! The backend is chosen by URL: `sqlite://…?mode=rwc` (the embedded default) or `postgres://…`.
//! Methods return entity models or small typed results; callers never see SQL.

mod announces;
pub mod cache;
mod events;
mod groups;
mod hosting;
mod identities;
mod join_requests;
mod members;
mod messages;
mod outbox;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod threads;
mod tickets;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use migration::MigratorTrait;
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr, SqlErr};

pub use entity::announce::Model as Announce;
pub use entity::group::Model as Group;
pub use entity::group_ban::Model as Ban;
pub use entity::group_event::Model as Event;
pub use entity::group_member::Model as Member;
pub use entity::group_message::Model as Message;
pub use entity::join_request::Model as JoinRequest;
pub use entity::outbox::Model as OutboxRow;
pub use entity::ticket::Model as Ticket;
pub use groups::{GroupPatch, NewGroup};
pub use hosting::{DirectoryQuery, DirectoryRow, DirectorySort};
pub use messages::{HistoryQuery, InsertOutcome, NewMessage, Order};
pub use outbox::{FannedOut, NewOutboxRow};
pub use threads::{Copy, Reaction, ReactionOutcome};

/// Everything that can go wrong in the store, as callers need to tell it apart.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    #[error("{what} not found")]
    NotFound { what: &'static str },
    #[error("{what} already exists")]
    Conflict { what: &'static str },
    #[error("identity is banned from this group")]
    Banned,
    #[error("cannot prepare the database at {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("the database is unreachable; calls are refused until it answers again")]
    Unreachable,
}

impl StoreError {
    /// Maps a unique-constraint violation to `Conflict`, anything else to `Db`.
    fn conflict_or_db(err: DbErr, what: &'static str) -> Self {
        match err.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(_)) => StoreError::Conflict { what },
            _ => StoreError::Db(err),
        }
    }

    /// Whether the database could not be reached (or was not tried for that reason), rather than
    /// that it refused a statement.
    pub fn is_unreachable(&self) -> bool {
        use sea_orm::{RuntimeErr, sqlx};
        let sqlx_unreachable = |e: &sqlx::Error| match e {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed | sqlx::Error::Tls(_) => true,
            // PostgreSQL going down or gone: admin shutdown, crash shutdown, cannot connect now
            // (57P01-57P03), and the connection exception class (08).
            sqlx::Error::Database(d) => d.code().is_some_and(|c| c.starts_with("57P0") || c.starts_with("08")),
            _ => false,
        };
        match self {
            StoreError::Unreachable => true,
            StoreError::Db(DbErr::ConnectionAcquire(_) | DbErr::Conn(_)) => true,
            StoreError::Db(DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e))) => sqlx_unreachable(e),
            _ => false,
        }
    }
}

/// How long a PostgreSQL call waits for a connection, connecting included (at start-up too).
/// Short, because a caller that waits holds the group actor it serves.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a SQLite call waits for one of the pool's connections.
const SQLITE_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// While the database is unreachable, how often the probe pings it.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Handle to the database; cheap to clone (the pool and its reachability are shared).
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
    /// Set while PostgreSQL is unreachable; `None` on SQLite, where a local file is not
    /// unreachable and a busy pool is not an outage.
    away: Option<Arc<AtomicBool>>,
}

/// Current wall-clock time in Unix milliseconds, the unit of every stored timestamp.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Store {
    /// Connects, prepares the SQLite file (0600 inside a 0700 directory), and runs migrations.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        if let Some(path) = sqlite_path(url) {
            prepare_sqlite_file(&path)?;
        }
        let mut opts = ConnectOptions::new(url.to_owned());
        opts.sqlx_logging(false);
        let sqlite = url.starts_with("sqlite:");
        // sea-orm maps both `connect_timeout` and `acquire_timeout` to one sqlx timeout.
        if sqlite {
            // SQLite has one writer; a small pool avoids lock churn without serialising reads.
            // Waiting for one of its connections is load, so the wait may be longer.
            opts.max_connections(4).acquire_timeout(SQLITE_ACQUIRE_TIMEOUT);
            // On every connection of the pool, not only the first: `synchronous` is per connection,
            // and a connection left at FULL syncs the disk on every commit. In WAL mode NORMAL
            // loses no committed transaction on a crash of the process, only (rarely) the last
            // ones on a power loss.
            opts.map_sqlx_sqlite_opts(|o| {
                use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
                o.journal_mode(SqliteJournalMode::Wal).synchronous(SqliteSynchronous::Normal)
            });
        } else {
            opts.acquire_timeout(ACQUIRE_TIMEOUT);
        }
        let db = Database::connect(opts).await?;
        migration::Migrator::up(&db, None).await?;
        Ok(Store { db, away: (!sqlite).then(|| Arc::new(AtomicBool::new(false))) })
    }

    /// Closes the pool for every clone, waiting for connections in use to come back: done at
    /// shutdown inside the runtime, so no connection is dropped after the runtime is gone.
    pub async fn close(&self) {
        if let Err(err) = self.db.close_by_ref().await {
            tracing::warn!(%err, "closing the database pool failed");
        }
    }

    /// The backend name, for logs and test output.
    pub fn backend(&self) -> &'static str {
        match self.db.get_database_backend() {
            sea_orm::DatabaseBackend::Postgres => "postgres",
            sea_orm::DatabaseBackend::Sqlite => "sqlite",
            _ => "other",
        }
    }

    /// Starts a transaction that will write. On SQLite it takes the write lock at `BEGIN`
    /// (`BEGIN IMMEDIATE`): a deferred transaction that reads first and writes second fails at once
    /// with SQLITE_BUSY_SNAPSHOT (517) when another connection committed in between (the busy
    /// timeout does not cover that case), which turned concurrent joins into INTERNAL errors.
    async fn begin_write(&self) -> Result<sea_orm::DatabaseTransaction, DbErr> {
        use sea_orm::{SqliteTransactionMode, TransactionOptions, TransactionTrait};
        let mode = (self.db.get_database_backend() == sea_orm::DatabaseBackend::Sqlite).then_some(SqliteTransactionMode::Immediate);
        self.db.begin_with_options(TransactionOptions { sqlite_transaction_mode: mode, ..Default::default() }).await
    }

    /// Whether `err` is a pool timeout with every connection in use: load, not an outage. (With
    /// the server away, sqlx retries refused connections until the same timeout.)
    fn busy(&self, err: &StoreError) -> bool {
        let timed_out = matches!(err, StoreError::Db(DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::Timeout)));
        timed_out && self.db.get_database_backend() == sea_orm::DatabaseBackend::Postgres && {
            let pool = self.db.get_postgres_connection_pool();
            pool.num_idle() == 0 && pool.size() >= pool.options().get_max_connections()
        }
    }

    /// After `op` could not reach the database: refuses every call at once until a ping answers,
    /// so that an outage costs callers milliseconds, not an acquire timeout each (a caller that
    /// waits holds its group actor). One probe task at a time: the first failure starts it.
    fn probe_until_back(&self, op: &'static str) {
        let Some(away) = self.away.clone() else { return };
        if away.compare_exchange(false, true, Ordering::Relaxed, Ordering::Relaxed).is_err() {
            return;
        }
        tracing::error!(op, "the database is unreachable; store calls are refused until it answers a ping");
        let db = self.db.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PROBE_EVERY).await;
                if db.ping().await.is_ok() {
                    away.store(false, Ordering::Relaxed);
                    tracing::info!("the database answers again");
                    return;
                }
            }
        });
    }

    /// Runs one store operation and records its duration under `op`.
    async fn timed<T, F>(&self, op: &'static str, fut: F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, StoreError>>,
    {
        if self.away.as_ref().is_some_and(|a| a.load(Ordering::Relaxed)) {
            crate::metrics::db_held(op);
            return Err(StoreError::Unreachable);
        }
        let started = Instant::now();
        let out = fut.await;
        crate::metrics::db_query(op, started.elapsed(), out.is_ok());
        if out.as_ref().err().is_some_and(|e| e.is_unreachable() && !self.busy(e)) {
            self.probe_until_back(op);
        }
        out
    }
}

/// The file path of a `sqlite://PATH?…` URL, unless it is in memory.
fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return None;
    }
    Some(std::path::PathBuf::from(path))
}

/// The group identity keys live in this file, so only the server's user may read it.
fn prepare_sqlite_file(path: &std::path::Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |source| StoreError::Io { path: path.display().to_string(), source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).map_err(io)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    }
    std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(())
}
