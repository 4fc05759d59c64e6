//! SeaORM models, one per table, in the shape `sea-orm-cli generate entity` writes.
//! Queries live in the worker's `store` layer, never here.

pub mod audit_log;
pub mod authorizations;
pub mod channel_tokens;
pub mod channels;
pub mod inbox;
pub mod job_waiters;
pub mod jobs;
pub mod outbox;
pub mod outbox_pending;
