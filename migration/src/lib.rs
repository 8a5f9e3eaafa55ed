//! Database migrations, run at start-up by `meshgroup serve` and by every CLI command.
pub use sea_orm_migration::prelude::*;

mod m20261126_000001_initial;
mod m20261126_000002_fanout_flags;
mod m20261126_000003_known_identities;
mod m20261126_000004_server;
mod m20261201_000005_delivery_classes;
mod m20261202_000006_threads;
mod m20261202_000007_identity_lxmf_hash;

/// Applies every migration in order; sea-orm records what already ran.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261126_000001_initial::Migration),
            Box::new(m20261126_000002_fanout_flags::Migration),
            Box::new(m20261126_000003_known_identities::Migration),
            Box::new(m20261126_000004_server::Migration),
            Box::new(m20261201_000005_delivery_classes::Migration),
            Box::new(m20261202_000006_threads::Migration),
            Box::new(m20261202_000007_identity_lxmf_hash::Migration),
        ]
    }
}
