//! CloudEvents 1.0 in structured JSON mode: the only shape that enters or leaves the worker.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::TraceParent;
use crate::domain::{ErrorCode, EventId, TenantId};

pub const CONTENT_TYPE: &str = "application/cloudevents+json";
pub const SPEC_VERSION: &str = "1.0";
pub const WORKER_SOURCE: &str = "/praisma/integration-worker";

/// An inbound event whose attributes are valid; `data` is checked by [`super::Command`].
#[derive(Debug, Clone)]
pub struct Envelope {
    pub id: EventId,
    pub source: String,
    pub event_type: String,
    pub time: Option<DateTime<Utc>>,
    pub tenant: TenantId,
    pub correlation_id: Option<String>,
    pub traceparent: Option<TraceParent>,
    pub data: Value,
}

/// Why an inbound message was refused, with whatever of it could be read. `reason` is written
/// by the worker and never quotes the message.
#[derive(Debug, Clone)]
pub struct RejectedEvent {
    pub code: ErrorCode,
    pub reason: String,
    pub tenant: Option<TenantId>,
    pub event_id: Option<EventId>,
    /// Set when the type is known, so the rejection can be answered with that type's outcome.
    pub event_type: Option<String>,
    pub traceparent: Option<TraceParent>,
}

impl RejectedEvent {
    fn malformed(reason: impl Into<String>) -> Box<Self> {
        Box::new(Self {
            code: ErrorCode::InvalidEvent,
            reason: reason.into(),
            tenant: None,
            event_id: None,
            event_type: None,
            traceparent: None,
        })
    }
}

impl Envelope {
    /// Parses a delivery body. `header_traceparent` is the AMQP header, used when the event
    /// carries no `traceparent` attribute of its own.
    pub fn parse(body: &[u8], max_bytes: usize, header_traceparent: Option<&str>) -> Result<Self, Box<RejectedEvent>> {
        if body.len() > max_bytes {
            return Err(RejectedEvent::malformed(format!(
                "the message is larger than {max_bytes} bytes"
            )));
        }
        let text = std::str::from_utf8(body).map_err(|_| RejectedEvent::malformed("the message is not UTF-8"))?;
        let value: Value =
            serde_json::from_str(text).map_err(|_| RejectedEvent::malformed("the message is not valid JSON"))?;
        let Value::Object(mut object) = value else {
            return Err(RejectedEvent::malformed("the message is not a JSON object"));
        };
        let mut take_string = |name: &str| match object.remove(name) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        };

        let tenant = take_string("tenantid").and_then(|t| TenantId::parse(t).ok());
        let event_id = take_string("id").and_then(|i| EventId::parse(i).ok());
        let traceparent = take_string("traceparent")
            .as_deref()
            .and_then(TraceParent::parse)
            .or_else(|| header_traceparent.and_then(TraceParent::parse));
        let event_type = take_string("type");
        let specversion = take_string("specversion");
        let source = take_string("source");
        let correlation_id = take_string("correlationid");
        let time = take_string("time");
        let data = object.remove("data");

        let reject = |reason: &str| {
            Box::new(RejectedEvent {
                code: ErrorCode::InvalidEvent,
                reason: reason.to_owned(),
                tenant: tenant.clone(),
                event_id: event_id.clone(),
                event_type: None,
                traceparent,
            })
        };
        if specversion.as_deref() != Some(SPEC_VERSION) {
            return Err(reject("specversion must be \"1.0\""));
        }
        let Some(tenant_id) = tenant.clone() else {
            return Err(reject("tenantid is missing or not a valid tenant id"));
        };
        let Some(id) = event_id.clone() else {
            return Err(reject("id is missing or not a valid event id"));
        };
        let Some(source) = source.filter(|s| !s.is_empty()) else {
            return Err(reject("source is missing"));
        };
        let Some(event_type) = event_type.filter(|t| !t.is_empty()) else {
            return Err(reject("type is missing"));
        };
        let time = match time {
            None => None,
            Some(raw) => Some(
                DateTime::parse_from_rfc3339(&raw)
                    .map_err(|_| reject("time is not an RFC 3339 timestamp"))?
                    .with_timezone(&Utc),
            ),
        };
        Ok(Self {
            id,
            source,
            event_type,
            time,
            tenant: tenant_id,
            correlation_id,
            traceparent,
            data: data.unwrap_or(Value::Null),
        })
    }

    pub fn rejected(&self, code: ErrorCode, reason: impl Into<String>, answerable: bool) -> Box<RejectedEvent> {
        Box::new(RejectedEvent {
            code,
            reason: reason.into(),
            tenant: Some(self.tenant.clone()),
            event_id: Some(self.id.clone()),
            event_type: answerable.then(|| self.event_type.clone()),
            traceparent: self.traceparent,
        })
    }
}

/// An outbound CloudEvent, ready to be stored in the outbox.
#[derive(Debug, Clone, Serialize)]
pub struct OutboundEnvelope<'a, T: Serialize> {
    pub specversion: &'static str,
    pub id: Uuid,
    pub source: &'static str,
    #[serde(rename = "type")]
    pub event_type: &'static str,
    pub time: DateTime<Utc>,
    pub tenantid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlationid: Option<&'a str>,
    pub traceparent: String,
    pub datacontenttype: &'static str,
    pub data: &'a T,
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::contract::Command;

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(|n| serde_json::json!(n)),
            ".{0,40}".prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                prop::collection::btree_map("[a-z_]{1,12}", inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_bytes_are_refused_or_parsed_never_a_panic(body in prop::collection::vec(any::<u8>(), 0..2048)) {
            if let Ok(envelope) = Envelope::parse(&body, 4096, None) {
                let _ = Command::from_envelope(&envelope);
            }
        }

        #[test]
        fn any_event_shape_is_refused_or_parsed_never_a_panic(
            data in json_value(),
            event_type in prop_oneof![
                Just("ConsentUrlRequested"), Just("ConnectRequested"), Just("TokenExpiring"),
                Just("RevokeRequested"), Just("OperationRequested"), Just("Other"),
            ],
            tenant in prop_oneof![Just(serde_json::json!("t1")), json_value()],
        ) {
            let event = serde_json::json!({
                "specversion": "1.0", "id": "e1", "source": "/p", "type": event_type, "tenantid": tenant, "data": data,
            });
            let body = serde_json::to_vec(&event).unwrap_or_default();
            match Envelope::parse(&body, 1 << 20, None) {
                Ok(envelope) => { let _ = Command::from_envelope(&envelope); }
                Err(rejected) => prop_assert!(!rejected.reason.is_empty()),
            }
        }
    }
}
