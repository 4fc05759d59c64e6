use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_log")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: String,
    pub channel_id: String,
    pub sequence: i64,
    pub action: String,
    pub outcome: String,
    pub origin: String,
    pub correlation_id: Option<String>,
    pub details: Json,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
    pub recorded_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
