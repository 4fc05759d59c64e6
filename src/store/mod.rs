//! Repositories: all SQL lives here. Each function takes the connection or transaction it runs
//! in, so handlers decide transaction boundaries and repositories never open one behind their
//! back. Every query is scoped by tenant, except the outbox relay's, which publishes for all.

pub mod audit;
pub mod authorizations;
pub mod channels;
pub mod inbox;
pub mod jobs;
pub mod outbox;
pub mod retention;
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

/// Rows of several tenants by their unique row ids: the values for [`scoped_ids`], the tenants
/// and ids as two parallel arrays.
pub(crate) fn tenants_and_ids(keys: &[(&crate::domain::TenantId, uuid::Uuid)]) -> [Value; 2] {
    let tenants: Vec<String> = keys.iter().map(|(tenant, _)| tenant.as_str().to_owned()).collect();
    let ids: Vec<uuid::Uuid> = keys.iter().map(|(_, id)| *id).collect();
    [tenants.into(), ids.into()]
}

/// The condition on `table` matching [`tenants_and_ids`] bound at `$tenants` and `$ids`: each row found
/// by its id (a primary-key lookup, whatever the table's statistics say; a join or a
/// tenant-first condition was planned as a scan of everything a tenant has) must belong to
/// the tenant paired with that id. Batch queries stay scoped by tenant like every other.
pub(crate) fn scoped_ids(table: &str, id_column: &str, tenants: usize, ids: usize) -> String {
    let (id, tenant) = (format!("{table}.{id_column}"), format!("{table}.tenant_id"));
    format!("{id} = ANY(${ids}) AND {tenant} = (${tenants}::text[])[array_position(${ids}::uuid[], {id})]")
}

#[cfg(test)]
mod tests {
    #[test]
    fn value_rows_number_placeholders_row_by_row() {
        assert_eq!(super::value_rows(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(super::value_rows(1, 1), "($1)");
    }
}
