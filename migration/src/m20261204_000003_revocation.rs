use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
-- How the platform took the revocation: confirmed, failed, unsupported or skipped. Null until
-- the attempt is over (the channel is disabled locally before the platform is told).
ALTER TABLE channels ADD COLUMN platform_revocation text
    CHECK (platform_revocation IN ('confirmed', 'failed', 'unsupported', 'skipped'));
"#;

const DOWN: &str = "ALTER TABLE channels DROP COLUMN IF EXISTS platform_revocation;";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(UP).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(DOWN).await?;
        Ok(())
    }
}
