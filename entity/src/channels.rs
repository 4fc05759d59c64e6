use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "channels")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: String,
    pub channel_id: String,
    pub provider: String,
    pub status: String,
    pub generation: i32,
    pub requested_scopes: Json,
    pub granted_scopes: Json,
    pub token_version: i64,
    pub expires_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub revoked_at: Option<DateTimeUtc>,
    pub revoked_origin: Option<String>,
    pub tokens_updated_at: Option<DateTimeUtc>,
    pub platform_revocation: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::channel_tokens::Entity")]
    ChannelTokens,
}

impl Related<super::channel_tokens::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::ChannelTokens.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
