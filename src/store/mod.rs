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

/// The placeholders of a multi-row `VALUES` list: `($1, $2), ($3, $4)` for 2 rows of 2 columns.
pub(crate) fn value_rows(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|row| {
            let placeholders: Vec<String> = (1..=columns)
                .map(|column| format!("${}", row * columns + column))
                .collect();
            format!("({})", placeholders.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `(tenant, key)` pairs as a `VALUES` list and its values, for `(tenant_id, …) IN (VALUES …)`:
/// batch queries stay scoped by tenant like every other.
pub(crate) fn tenant_pairs<'a>(
    pairs: impl ExactSizeIterator<Item = (&'a crate::domain::TenantId, Value)>,
) -> (String, Vec<Value>) {
    let rows = value_rows(pairs.len(), 2);
    let values = pairs.flat_map(|(tenant, key)| [tenant.as_str().into(), key]).collect();
    (rows, values)
}

#[cfg(test)]
mod tests {
    #[test]
    fn value_rows_number_placeholders_row_by_row() {
        assert_eq!(super::value_rows(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(super::value_rows(1, 1), "($1)");
    }
}
