//! W3C trace context (`traceparent`), carried through so that a dashboard sees one trace from
//! the hub's request to the worker's answer.

use std::fmt;

/// A parsed `traceparent`: version 00, a 16-byte trace id, an 8-byte parent span id, flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub flags: u8,
}

impl TraceParent {
    pub fn parse(raw: &str) -> Option<Self> {
        let mut parts = raw.trim().split('-');
        let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || version != "00" {
            return None;
        }
        let trace_id: [u8; 16] = decode_hex(trace)?.try_into().ok()?;
        let span_id: [u8; 8] = decode_hex(span)?.try_into().ok()?;
        let flags = *decode_hex(flags)?.first()?;
        let all_zero = |bytes: &[u8]| bytes.iter().all(|b| *b == 0);
        if all_zero(&trace_id) || all_zero(&span_id) {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            flags,
        })
    }

    /// The worker's own span under `parent`, or the root of a new sampled trace.
    pub fn child_of(parent: Option<&TraceParent>) -> Self {
        let mut span_id = [0u8; 8];
        crate::random::fill(&mut span_id);
        match parent {
            Some(parent) => Self {
                trace_id: parent.trace_id,
                span_id,
                flags: parent.flags,
            },
            None => {
                let mut trace_id = [0u8; 16];
                crate::random::fill(&mut trace_id);
                Self {
                    trace_id,
                    span_id,
                    flags: 1,
                }
            }
        }
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            encode_hex(&self.trace_id),
            encode_hex(&self.span_id),
            self.flags
        )
    }
}

fn decode_hex(raw: &str) -> Option<Vec<u8>> {
    if !raw.len().is_multiple_of(2) || !raw.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    (0..raw.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&raw[i..i + 2], 16).ok())
        .collect()
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_keeps_the_trace_and_replaces_the_span() {
        let parent = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let parent = parent.as_ref();
        assert!(parent.is_some());
        let child = TraceParent::child_of(parent);
        let text = child.to_string();
        assert!(text.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(!text.contains("00f067aa0ba902b7"));
        assert!(TraceParent::parse(&text).is_some());
        assert!(TraceParent::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
        assert!(TraceParent::parse("garbage").is_none());
    }
}
