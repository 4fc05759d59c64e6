use sea_orm_migration::prelude::*;

// One index served both the due scan and the lease scan, so a claim filtered its way through
// every future refresh: with a million channels scheduled, each claim read a million entries.
// Each scan now has its own index and reads only what it returns.
const UP: &str = r#"
DROP INDEX IF EXISTS jobs_due;
CREATE INDEX jobs_pending_due ON jobs (run_at) WHERE status = 'pending';
CREATE INDEX jobs_running_lease ON jobs (lease_until) WHERE status = 'running';
"#;

const DOWN: &str = r#"
DROP INDEX IF EXISTS jobs_running_lease;
DROP INDEX IF EXISTS jobs_pending_due;
CREATE INDEX jobs_due ON jobs (run_at) WHERE status IN ('pending', 'running');
"#;

sql_migration!(UP, DOWN);
