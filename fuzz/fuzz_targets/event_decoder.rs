//! The event decoder as a delivery meets it: envelope (size limit, UTF-8, JSON, CloudEvents
//! attributes, tenant), then the typed command. Any bytes: a command or a rejection, no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use praisma_worker::contract::Envelope;
use praisma_worker::contract::inbound::Command;

fuzz_target!(|data: &[u8]| {
    let header = data
        .first()
        .map(|_| "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    if let Ok(envelope) = Envelope::parse(data, 64 * 1024, header) {
        let _ = Command::from_envelope(&envelope);
    }
});
