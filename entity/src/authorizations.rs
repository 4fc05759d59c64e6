use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "authorizations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub state_hash: Vec<u8>,
    pub tenant_id: String,
    pub channel_id: String,
    pub provider: String,
    pub redirect_uri: String,
    pub capabilities: Json,
    pub requested_scopes: Json,
    pub verifier_key_id: Option<String>,
    pub verifier_nonce: Option<Vec<u8>>,
    pub verifier_ciphertext: Option<Vec<u8>>,
    pub expires_at: DateTimeUtc,
    pub used_at: Option<DateTimeUtc>,
    pub used_by_event: Option<String>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
