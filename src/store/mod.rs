//! Repositories: all SQL lives here. Each function takes the connection or transaction it runs
//! in, so handlers decide transaction boundaries and repositories never open one behind their
//! back. Every query is scoped by tenant, except the outbox relay's, which publishes for all.

pub mod audit;
pub mod authorizations;
pub mod channels;
pub mod inbox;
pub mod jobs;
pub mod outbox;
pub mod tokens;

use sea_orm::{DbBackend, Statement, Value};

pub(crate) fn sql(sql: &str, values: impl IntoIterator<Item = Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}
