//! Domain events: the transactional outbox, its relay, and its consumers (docs/events.md).
//!
//! A state change writes its events into `outbox` in the same transaction ([`outbox`]). The
//! [`relay::Relay`] publishes unsent rows in id order and marks them sent only once they are
//! delivered: to Kafka (idempotent producer, `acks=all`, keyed by event) when `KAFKA_BOOTSTRAP` is
//! set, else straight to the same consumers in this process. Either way a consumer sees each
//! message at least once, and [`deliver`] makes its effect happen once: the effect and a row in
//! `consumed_messages` commit together.

pub mod kafka;
pub mod lag;
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
    /// Whether it does anything with `message` (one it does not want costs nothing: no
    /// transaction, no record).
    fn wants(&self, message: &Message) -> bool {
        let _ = message;
        true
    }
    /// Applies `message` inside `tx` (committed with the record that it was applied).
    fn handle<'a>(&'a self, tx: &'a mut PgConnection, message: &'a Message) -> HandleFuture<'a>;
}

/// What [`Consumer::handle`] answers: the work of applying one message, boxed so that consumers
/// can be kept as `dyn Consumer`.
pub type HandleFuture<'a> = BoxFuture<'a, Result<(), ConsumerError>>;

/// Applies `message` to `consumer` once: `Ok(false)` when it had already been applied (or the
/// consumer does not want it).
pub async fn deliver(db: &PgPool, consumer: &dyn Consumer, message: &Message) -> Result<bool, ConsumerError> {
    Ok(deliver_batch(db, consumer, std::slice::from_ref(message)).await? == 1)
}

/// Applies `messages` (in order) to `consumer` in one transaction, each once; answers how many
/// were applied now. All or none: an error leaves every message to be offered again.
pub async fn deliver_batch(
    db: &PgPool,
    consumer: &dyn Consumer,
    messages: &[Message],
) -> Result<usize, ConsumerError> {
    let wanted: Vec<&Message> = messages
        .iter()
        .filter(|m| consumer.topics().contains(&m.topic.as_str()) && consumer.wants(m))
        .collect();
    if wanted.is_empty() {
        return Ok(0);
    }
    let mut tx = db.begin().await?;
    let ids: Vec<i64> = wanted.iter().map(|m| m.id).collect();
    let fresh: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO consumed_messages (consumer, message_id) SELECT $1, unnest($2::int8[])
         ON CONFLICT DO NOTHING RETURNING message_id",
    )
    .bind(consumer.name())
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    let fresh: std::collections::HashSet<i64> = fresh.into_iter().collect();
    let mut applied = 0;
    for m in wanted.into_iter().filter(|m| fresh.contains(&m.id)) {
        consumer.handle(&mut tx, m).await?;
        applied += 1;
    }
    tx.commit().await?;
    Ok(applied)
}

/// Appends a domain event to the outbox, in the caller's transaction: it is published if and only
/// if that transaction commits. `key` is the event the message belongs to. What a row must be (a
/// topic of [`TOPICS`], a payload with its `type` at [`SCHEMA_VERSION`]) is the table's constraint
/// `outbox_row`, which every writer passes: this function, [`outbox_all`], and the three
/// statements that build their payload in SQL to stay one statement on a hot path
/// (`checkout/create.rs`, `checkout/record.rs` `payment_event`, `fulfillment/checkin.rs`).
pub async fn outbox(
    conn: &mut PgConnection,
    topic: &str,
    key: Uuid,
    payload: Value,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO outbox (topic, key, payload) VALUES ($1, $2, $3)")
        .bind(topic)
        .bind(key.to_string())
        .bind(payload)
        .execute(conn)
        .await?;
    Ok(())
}

/// [`outbox`] for several messages in one statement (one round trip), in the order given: their
/// ids, which the relay sends them by, follow it.
pub async fn outbox_all(
    conn: &mut PgConnection,
    messages: Vec<(&str, Uuid, Value)>,
) -> Result<(), sqlx::Error> {
    let topics: Vec<&str> = messages.iter().map(|m| m.0).collect();
    let keys: Vec<String> = messages.iter().map(|m| m.1.to_string()).collect();
    let payloads: Vec<Value> = messages.into_iter().map(|m| m.2).collect();
    sqlx::query(
        "INSERT INTO outbox (topic, key, payload)
         SELECT topic, key, payload FROM unnest($1::text[], $2::text[], $3::jsonb[])
           WITH ORDINALITY AS m(topic, key, payload, n) ORDER BY n",
    )
    .bind(topics)
    .bind(keys)
    .bind(payloads)
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
