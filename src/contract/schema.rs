//! The machine-readable contract: an AsyncAPI 3 document whose message payloads are JSON Schemas
//! generated from the Rust types above, so the document cannot drift from the code.

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value, json};

use super::inbound::{self, INBOUND};
use super::outbound::{self, OutboundEvent};

struct Message {
    event_type: &'static str,
    routing_key: &'static str,
    data: Schema,
    inbound: bool,
}

fn data_schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.root_schema_for::<T>()
}

fn messages() -> Vec<Message> {
    let mut generator = SchemaGenerator::default();
    let g = &mut generator;
    let mut messages = Vec::new();
    let inbound_schemas = [
        data_schema::<inbound::ConsentUrlRequested>(g),
        data_schema::<inbound::ConnectRequested>(g),
        data_schema::<inbound::TokenExpiring>(g),
        data_schema::<inbound::RevokeRequested>(g),
        data_schema::<inbound::OperationRequested>(g),
    ];
    for ((event_type, routing_key), data) in INBOUND.into_iter().zip(inbound_schemas) {
        messages.push(Message {
            event_type,
            routing_key,
            data,
            inbound: true,
        });
    }
    fn out<T: OutboundEvent>(g: &mut SchemaGenerator) -> Message {
        Message {
            event_type: T::TYPE,
            routing_key: T::ROUTING_KEY,
            data: data_schema::<T>(g),
            inbound: false,
        }
    }
    messages.extend([
        out::<outbound::ConsentUrlIssued>(g),
        out::<outbound::ConnectionEstablished>(g),
        out::<outbound::ConnectionFailed>(g),
        out::<outbound::TokenRefreshed>(g),
        out::<outbound::TokenRefreshFailed>(g),
        out::<outbound::ConnectionReauthRequired>(g),
        out::<outbound::ConnectionRevoked>(g),
        out::<outbound::RevokeRejected>(g),
        out::<outbound::OperationCompleted>(g),
        out::<outbound::OperationRejected>(g),
    ]);
    messages.push(Message {
        event_type: outbound::AuditRecorded::TYPE,
        routing_key: "audit.integration.{action}",
        data: data_schema::<outbound::AuditRecorded>(g),
        inbound: false,
    });
    messages
}

/// The CloudEvents envelope around one event type's data, as a standalone JSON Schema.
fn event_schema(message: &Message) -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": format!("urn:praisma:integrations:{}", message.event_type),
        "title": message.event_type,
        "type": "object",
        "required": ["specversion", "id", "source", "type", "tenantid", "data"],
        "properties": {
            "specversion": { "const": "1.0" },
            "id": { "type": "string", "minLength": 1, "maxLength": 128,
                    "description": "Idempotency key, unique per tenant." },
            "source": { "type": "string", "minLength": 1 },
            "type": { "const": message.event_type },
            "time": { "type": "string", "format": "date-time" },
            "tenantid": { "type": "string", "minLength": 1, "maxLength": 128,
                          "pattern": "^[A-Za-z0-9][A-Za-z0-9_.:-]*$" },
            "correlationid": { "type": "string", "description": "The id of the event this one answers." },
            "traceparent": { "type": "string", "description": "W3C trace context." },
            "datacontenttype": { "type": "string" },
            "data": message.data.as_value(),
        }
    })
}

/// Every event's JSON Schema, keyed by event type.
pub fn json_schemas() -> Map<String, Value> {
    messages()
        .iter()
        .map(|m| (m.event_type.to_owned(), event_schema(m)))
        .collect()
}

/// The AsyncAPI 3 document for the worker, seen from the worker (it receives the inbound
/// events and sends the outbound ones).
pub fn asyncapi(exchange: &str) -> Value {
    let messages = messages();
    let mut channels = Map::new();
    let mut operations = Map::new();
    let mut components = Map::new();
    for message in &messages {
        let name = message.event_type;
        components.insert(
            name.to_owned(),
            json!({
                "name": name,
                "contentType": super::envelope::CONTENT_TYPE,
                "payload": event_schema(message),
            }),
        );
        channels.insert(
            name.to_owned(),
            json!({
                "address": message.routing_key,
                "messages": { name: { "$ref": format!("#/components/messages/{name}") } },
                "bindings": { "amqp": { "is": "routingKey", "exchange": {
                    "name": exchange, "type": "topic", "durable": true, "autoDelete": false, "vhost": "/" } } },
            }),
        );
        let (action, verb) = if message.inbound {
            ("receive", "handle")
        } else {
            ("send", "publish")
        };
        operations.insert(
            format!("{verb}{name}"),
            json!({
                "action": action,
                "channel": { "$ref": format!("#/channels/{name}") },
                "messages": [{ "$ref": format!("#/channels/{name}/messages/{name}") }],
            }),
        );
    }
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Praisma Hub integration worker",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Owns delegated OAuth connections to social platforms. Every message is a \
                CloudEvents 1.0 event in structured JSON mode. Inbound events with the AMQP reply_to \
                property also get their final outcome on that queue.",
        },
        "defaultContentType": super::envelope::CONTENT_TYPE,
        "channels": channels,
        "operations": operations,
        "components": { "messages": components },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_of_the_contract_is_documented() {
        let schemas = json_schemas();
        for name in [
            "ConsentUrlRequested",
            "ConnectRequested",
            "TokenExpiring",
            "RevokeRequested",
            "OperationRequested",
            "ConsentUrlIssued",
            "ConnectionEstablished",
            "ConnectionFailed",
            "TokenRefreshed",
            "TokenRefreshFailed",
            "ConnectionReauthRequired",
            "ConnectionRevoked",
            "OperationCompleted",
            "OperationRejected",
            "AuditRecorded",
        ] {
            assert!(schemas.contains_key(name), "{name} has no schema");
        }
        let connect = &schemas["ConnectRequested"]["properties"]["data"];
        assert_eq!(connect["required"], json!(["state"]));
        let doc = asyncapi("praisma.integrations");
        assert_eq!(
            doc["channels"]["ConnectRequested"]["address"],
            "integration.connect.requested"
        );
        assert_eq!(doc["operations"]["handleConnectRequested"]["action"], "receive");
    }
}
