#![allow(clippy::unwrap_used, clippy::expect_used)]

//! The integration tests: one binary, each test with its own database, exchange and queues,
//! and its own real OAuth 2.0 authorization server (oidc-provider, see `tests/peer`).

mod common;

mod bad_input;
mod binary;
mod connect;
mod crash;
mod observability;
mod operations;
mod ops;
mod platforms;
mod refresh;
mod retention;
mod revoke;
mod secrets_at_rest;
