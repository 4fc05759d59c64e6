//! Wire types only: what crosses the bus, and the machine-readable contract generated from them.

pub mod envelope;
pub mod inbound;
pub mod outbound;
pub mod schema;
pub mod trace;

pub use envelope::{Envelope, OutboundEnvelope, RejectedEvent};
pub use inbound::Command;
pub use trace::TraceParent;
