//! Operator commands: the tools of the people on call. Each reads or repairs state with the
//! worker running; none prints a secret.

pub mod audit_verify;
pub mod channels_show;
pub mod dlq;
pub mod keys_rotate;
pub mod progress;
pub mod providers;
