//! Domain events: the transactional outbox, its relay, and its consumers (docs/events.md).
//!
//! A state change writes its events into `outbox` in the same transaction ([`outbox`]). The
//! [`relay::Relay`] publishes unsent rows in id order and marks them sent only once they are
//! delivered: to Kafka (idempotent producer, `acks=all`, keyed by event) when `KAFKA_BOOTSTRAP` is
//! set, else straight to the same consumers in this process. Either way a consumer sees each
//! message at least once, and [`deliver`] makes its effect happen once: the effect and a row in
//! `consumed_messages` commit together.

pub mod kafka;
pub mod relay;
pub mod schema;

use futures_util::future::BoxFuture;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// The topics (Kafka topic `<prefix><topic>.v<SCHEMA_VERSION>`).
pub const TOPICS: [&str; 4] = ["orders", "payments", "tickets", "checkins"];

/// The version of every message's JSON schema (its `schema_version` field, and the topic suffix).
pub const SCHEMA_VERSION: u32 = 1;

/// One outbox row: a domain event on its way to the consumers.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Message {
    /// The outbox id: unique, increasing in commit order for causally related events.
    pub id: i64,
    pub topic: String,
    /// The partition key: the event (so each event's messages stay in order).
    pub key: String,
    pub payload: Value,
}

impl Message {
    /// The message's type (`order.paid`, …).
    pub fn kind(&self) -> &str {
        self.payload["type"].as_str().unwrap_or_default()
    }

    /// The bytes on the wire: the payload with its `message_id`.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut value = self.payload.clone();
        if let Value::Object(map) = &mut value {
            map.insert("message_id".into(), self.id.into());
        }
        serde_json::to_vec(&value).unwrap_or_default()
    }

    /// Reads a message from the wire (`None` when it is not one of ours).
    pub fn from_wire(topic: &str, key: &str, bytes: &[u8]) -> Option<Self> {
        let payload: Value = serde_json::from_slice(bytes).ok()?;
        let id = payload.get("message_id")?.as_i64()?;
        payload.get("type")?.as_str()?;
        Some(Self { id, topic: topic.to_owned(), key: key.to_owned(), payload })
    }
}

/// A consumer failed in a way that may pass (the database): the message is offered again.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConsumerError(String);

impl From<sqlx::Error> for ConsumerError {
    fn from(e: sqlx::Error) -> Self {
        Self(e.to_string())
    }
}

impl From<String> for ConsumerError {
    fn from(e: String) -> Self {
        Self(e)
    }
}

/// Something that reacts to domain events. It must not fail for a message it cannot use (it
/// ignores it); an error means "try again later", and the message is offered again.
pub trait Consumer: Send + Sync + 'static {
    /// The consumer group: each message's effect happens once per name.
    fn name(&self) -> &'static str;
    /// The topics it reads.
    fn topics(&self) -> &'static [&'static str];
    /// Applies `message` inside `tx` (committed with the record that it was applied).
    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        message: &'a Message,
    ) -> BoxFuture<'a, Result<(), ConsumerError>>;
}

/// Applies `message` to `consumer` once: `Ok(false)` when it had already been applied.
pub async fn deliver(db: &PgPool, consumer: &dyn Consumer, message: &Message) -> Result<bool, ConsumerError> {
    let mut tx = db.begin().await?;
    let first: Option<i64> = sqlx::query_scalar(
        "INSERT INTO consumed_messages (consumer, message_id) VALUES ($1, $2)
         ON CONFLICT DO NOTHING RETURNING message_id",
    )
    .bind(consumer.name())
    .bind(message.id)
    .fetch_optional(&mut *tx)
    .await?;
    if first.is_none() {
        return Ok(false);
    }
    consumer.handle(&mut tx, message).await?;
    tx.commit().await?;
    Ok(true)
}

/// Appends a domain event to the outbox, in the caller's transaction: it is published if and only
/// if that transaction commits. `key` is the event the message belongs to.
pub async fn outbox(
    conn: &mut PgConnection,
    topic: &str,
    key: Uuid,
    payload: Value,
) -> Result<(), sqlx::Error> {
    debug_assert!(TOPICS.contains(&topic), "unknown topic {topic}");
    debug_assert!(payload["type"].is_string() && payload["schema_version"] == SCHEMA_VERSION);
    sqlx::query("INSERT INTO outbox (topic, key, payload) VALUES ($1, $2, $3)")
        .bind(topic)
        .bind(key.to_string())
        .bind(payload)
        .execute(conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_wire_form_carries_the_message_id_and_reads_back() {
        let m = Message {
            id: 42,
            topic: "orders".into(),
            key: "e".into(),
            payload: json!({ "type": "order.paid", "schema_version": 1, "order_id": "o" }),
        };
        let wire = m.to_wire();
        let back = Message::from_wire("orders", "e", &wire).unwrap();
        assert_eq!(back.id, 42);
        assert_eq!(back.kind(), "order.paid");
        assert_eq!(back.payload["order_id"], "o");
        assert!(Message::from_wire("orders", "e", b"{\"type\":\"x\"}").is_none());
        assert!(Message::from_wire("orders", "e", b"not json").is_none());
    }
}
