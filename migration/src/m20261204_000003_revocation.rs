use sea_orm_migration::prelude::*;

const UP: &str = r#"
-- How the platform took the revocation: confirmed, failed, unsupported or skipped. Null until
-- the attempt is over (the channel is disabled locally before the platform is told).
ALTER TABLE channels ADD COLUMN platform_revocation text
    CHECK (platform_revocation IN ('confirmed', 'failed', 'unsupported', 'skipped'));
"#;

const DOWN: &str = "ALTER TABLE channels DROP COLUMN IF EXISTS platform_revocation;";

sql_migration!(UP, DOWN);
