use sea_orm_migration::prelude::*;

// Retention prunes by age. These tables are appended in time order, so a BRIN index finds the
// old end for a few pages of index, and costs next to nothing per row written (a B-tree on the
// same columns would add an entry per refresh to the hottest tables).
const UP: &str = r#"
CREATE INDEX inbox_by_age ON inbox USING brin (received_at) WITH (autosummarize = on);
CREATE INDEX outbox_by_age ON outbox USING brin (created_at) WITH (autosummarize = on);
CREATE INDEX jobs_finished_by_age ON jobs USING brin (finished_at) WITH (autosummarize = on);
"#;

const DOWN: &str = r#"
DROP INDEX IF EXISTS jobs_finished_by_age;
DROP INDEX IF EXISTS outbox_by_age;
DROP INDEX IF EXISTS inbox_by_age;
"#;

sql_migration!(UP, DOWN);
