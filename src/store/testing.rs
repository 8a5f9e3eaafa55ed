//! Test support: a fresh store on every backend under test (SQLite always, PostgreSQL when configured).
#![doc(hidden)]

use super::{Store, StoreError};

/// The environment variable naming the PostgreSQL server for the second pass of every store test.
pub const TEST_DATABASE_URL: &str = "MESHGROUP_TEST_DATABASE_URL";

/// A store on a throw-away database; PostgreSQL databases are dropped when this is dropped.
pub struct TestStore {
    pub store: Store,
    /// The PostgreSQL database name, for tests that hand the URL to a child process.
    pub name: Option<String>,
    /// A scratch directory, removed on drop (it holds the SQLite file, and whatever a bench puts there).
    dir: tempfile_dir::Dir,
    pg_drop: Option<(String, String)>,
}

impl TestStore {
    /// The scratch directory (on the temporary directory's file system).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir.path
    }

    /// Clears a known identity's `lxmf.delivery` hash, as a server from before it was kept left it.
    pub async fn forget_lxmf_hash(&self, identity_hash: &str) -> Result<(), StoreError> {
        use entity::known_identity::{Column, Entity};
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
        Entity::update_many()
            .col_expr(Column::LxmfHash, Expr::value(Option::<String>::None))
            .filter(Column::IdentityHash.eq(identity_hash))
            .exec(&self.store.db)
            .await?;
        Ok(())
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        if let Some((admin_url, name)) = self.pg_drop.take() {
            // Best effort; leftover test databases are harmless and are named mg_test_*.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
                if let Ok(rt) = rt {
                    rt.block_on(async {
                        if let Ok(db) = sea_orm::Database::connect(admin_url.as_str()).await {
                            use sea_orm::ConnectionTrait;
                            let _ = db.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
                        }
                    });
                }
            })
            .join();
        }
    }
}

/// One store test as two named tests, `NAME::sqlite` and `NAME::postgres`, so a failure names its
/// backend. The PostgreSQL one needs MESHGROUP_TEST_DATABASE_URL (set by `.ci/run`'s second pass);
/// without it, it says so and passes.
#[macro_export]
macro_rules! store_test {
    ($name:ident, |$t:ident| $body:block) => {
        mod $name {
            use super::*;
            use $crate::store::testing::{TEST_DATABASE_URL, TestStore};

            async fn run($t: TestStore) -> Result<(), Box<dyn std::error::Error>> {
                $body
                Ok(())
            }

            #[tokio::test]
            async fn sqlite() -> Result<(), Box<dyn std::error::Error>> {
                run($crate::store::testing::sqlite().await?).await
            }

            #[tokio::test]
            async fn postgres() -> Result<(), Box<dyn std::error::Error>> {
                let Ok(url) = std::env::var(TEST_DATABASE_URL) else {
                    eprintln!("skipped: {TEST_DATABASE_URL} is not set");
                    return Ok(());
                };
                run($crate::store::testing::postgres(&url).await?).await
            }
        }
    };
}

/// A fresh SQLite store in a temporary directory.
pub async fn sqlite() -> Result<TestStore, StoreError> {
    let dir = tempfile_dir::Dir::new()?;
    let url = format!("sqlite://{}/test.db?mode=rwc", dir.path.display());
    Ok(TestStore { store: Store::open(&url).await?, name: None, dir, pg_drop: None })
}

/// A fresh database on the PostgreSQL server at `admin_url`.
pub async fn postgres(admin_url: &str) -> Result<TestStore, StoreError> {
    use sea_orm::ConnectionTrait;
    let name = format!("mg_test_{}", hex::encode(rand::random::<[u8; 6]>()));
    let admin = sea_orm::Database::connect(admin_url).await?;
    admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await?;
    let url = match admin_url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => format!("{admin_url}/{name}"),
    };
    let store = Store::open(&url).await?;
    Ok(TestStore { store, name: Some(name.clone()), dir: tempfile_dir::Dir::new()?, pg_drop: Some((admin_url.to_owned(), name)) })
}

/// A tiny temporary directory, removed on drop (avoids a runtime dependency on `tempfile`).
mod tempfile_dir {
    use super::StoreError;

    pub struct Dir {
        pub path: std::path::PathBuf,
    }

    impl Dir {
        pub fn new() -> Result<Self, StoreError> {
            let path = std::env::temp_dir().join(format!("meshgroup-test-{}", hex::encode(rand::random::<[u8; 8]>())));
            std::fs::create_dir_all(&path).map_err(|source| StoreError::Io { path: path.display().to_string(), source })?;
            Ok(Dir { path })
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
