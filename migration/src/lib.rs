//! Schema migrations for the integration worker.
//!
//! Migrations are plain SQL: partial indexes, check constraints and the audit table's
//! append-only trigger read more clearly in SQL than in a schema builder. This crate never
//! depends on `entity`; the models follow the schema, not the other way round.

pub use sea_orm_migration::prelude::*;

/// A migration that is one SQL script up and one down.
macro_rules! sql_migration {
    ($up:expr, $down:expr) => {
        #[derive(DeriveMigrationName)]
        pub struct Migration;

        #[async_trait::async_trait]
        impl MigrationTrait for Migration {
            async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
                manager.get_connection().execute_unprepared($up).await?;
                Ok(())
            }

            async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
                manager.get_connection().execute_unprepared($down).await?;
                Ok(())
            }
        }
    };
}

mod m20261204_000001_foundation;
mod m20261204_000002_jobs;
mod m20261204_000003_revocation;
mod m20261204_000004_job_queues;
mod m20261204_000005_outbox_pending;
mod m20261204_000006_hot_updates;
mod m20261204_000007_retention;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261204_000001_foundation::Migration),
            Box::new(m20261204_000002_jobs::Migration),
            Box::new(m20261204_000003_revocation::Migration),
            Box::new(m20261204_000004_job_queues::Migration),
            Box::new(m20261204_000005_outbox_pending::Migration),
            Box::new(m20261204_000006_hot_updates::Migration),
            Box::new(m20261204_000007_retention::Migration),
        ]
    }
}
