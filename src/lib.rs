//! The Praisma Hub integration worker: it owns delegated OAuth connections to social platforms
//! for their whole life, driven by CloudEvents over RabbitMQ, and never lets a token out.
//!
//! # Layout
//! Each layer does one job: delivery → envelope → command → handler.
//!
//! - [`bus`]: broker plumbing only. [`bus::topology`] declares exchanges and queues,
//!   [`bus::link`] owns the connection and makes it again when it is lost,
//!   [`bus::consumer`] is the `select!` loop that acks only after the handler committed,
//!   [`bus::publisher`] publishes with confirms (a Nack is an error), [`bus::relay`] publishes the
//!   outbox, [`bus::hub_client`] is the hub's side (used by the demo and the tests).
//! - [`contract`]: wire types only. [`contract::envelope`] parses CloudEvents with a size limit,
//!   [`contract::inbound`] and [`contract::outbound`] are the events, [`contract::schema`]
//!   generates the AsyncAPI document and JSON Schemas from them, [`contract::trace`] carries
//!   W3C trace context.
//! - [`handlers`]: what each event does, one file per event (`consent_url`, `connect`,
//!   `token_expiring`, `revoke`, `operation`); [`handlers::process`] is the entry. Bad input
//!   ends in `handlers/rejected.rs` (audited, answered where possible, dead-lettered).
//! - [`jobs`]: durable work of a channel, run by the [`jobs::Scheduler`] in [`jobs::Slots`]:
//!   [`jobs::refresh`] (the single-flight token refresh and its fence),
//!   [`jobs::refresh_batch`] (successful refreshes stored in batches, same fence),
//!   [`jobs::platform_revocation`], [`jobs::operation`] (scheduled or retried operations);
//!   [`jobs::policy`] says when to refresh and how long to back off.
//! - [`group_commit`]: many tasks' writes in one transaction; `TokenExpiring` events
//!   (`handlers/token_expiring.rs`) and successful refreshes are written this way.
//! - [`domain`]: values valid by construction (tenant, channel, provider, capability, scopes,
//!   grant, error codes) and [`domain::secrets`], one type per secret.
//! - [`platform`]: every byte that crosses to a platform. [`platform::catalogue`] (provider
//!   definitions with their quirks as data, `catalogue.toml` built in with the eight platforms,
//!   capability grants), [`platform::oauth`] (authorization URL, code exchange, long-lived
//!   exchange, refresh, access-token renewal, granted-scope discovery, revocation; no
//!   redirects, timeouts), [`platform::token_response`] (each non-standard token answer's own
//!   type; error bodies of every shape), [`platform::api`] (operations: path guard, capped and
//!   redacted answers), [`platform::errors`] (classification into stable codes),
//!   [`platform::webhooks`] (Meta `signed_request` and TikTok signature verifiers).
//! - [`store`]: all SQL, one repository per table, each taking the caller's transaction.
//! - [`vault`]: AES-256-GCM-SIV key ring; ciphertexts bound to tenant, channel and kind.
//! - [`access`]: the only door to a plaintext access token: grant checks, then decryption.
//! - [`audit`]: audit records and their per-channel hash chain.
//! - [`health`] (`/healthz`, `/readyz`, `/metrics` on one small port) and [`metrics`] (what
//!   dashboards read, to Prometheus and over OTLP).
//! - [`retention`]: prunes settled events, their answers, finished jobs and expired consent
//!   states past the retention window (SQL in `store/retention.rs`).
//! - [`ops`]: the operator commands (`audit verify`, `keys rotate`, `channels show`,
//!   `dlq list` / `dlq replay`, `providers`, `webhooks verify-*`).
//! - [`settings`], [`clock`], [`startup`] (wiring, database creation and migrations), [`shutdown`],
//!   [`telemetry`], [`cli`], [`demo`], [`sandbox`] (the built-in platform for the demo, the
//!   load generator and the tests' platform quirks), [`bench`] (the load generator).

pub mod access;
pub mod audit;
pub mod bench;
pub mod bus;
pub mod cli;
pub mod clock;
pub mod contract;
pub mod demo;
pub mod domain;
pub mod group_commit;
pub mod handlers;
pub mod health;
pub mod jobs;
pub mod metrics;
pub mod ops;
pub mod platform;
pub mod random;
pub mod retention;
pub mod sandbox;
pub mod settings;
pub mod shutdown;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod vault;
