//! The Kafka side of the bus (rdkafka): the relay's producer, and a runner that feeds one
//! [`Consumer`] from its own consumer group.
//!
//! The producer is idempotent with `acks=all` and never gives a message up (`message.timeout.ms=0`):
//! while the broker is down, deliveries wait, and the relay marks nothing sent. Messages are keyed by
//! event, so one event's messages share a partition and keep their order.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{Consumer as _, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::statistics::Statistics;
use rdkafka::ClientConfig;
use sqlx::PgPool;

use super::{deliver, Consumer, Message, SCHEMA_VERSION, TOPICS};

/// Where the broker is and how topics are named.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// `host:port[,host:port…]`.
    pub bootstrap: String,
    /// Prepended to every topic name (`ticketing.` gives `ticketing.orders.v1`).
    pub topic_prefix: String,
    /// Partitions of the topics the relay creates.
    pub partitions: i32,
    /// Replicas of each partition of the topics the relay creates.
    pub replication_factor: i32,
    /// librdkafka properties from the environment (`KAFKA_CONF_*`: TLS, SASL, tuning); values may be
    /// secret, so this type's `Debug` shows only the names.
    pub properties: Properties,
}

/// librdkafka properties set by the operator (`config::kafka_properties`).
#[derive(Clone, Default)]
pub struct Properties(pub Vec<(String, String)>);

impl std::fmt::Debug for Properties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|(k, _)| k)).finish()
    }
}

impl KafkaSettings {
    /// The Kafka topic of an outbox topic.
    pub fn topic(&self, outbox_topic: &str) -> String {
        format!("{}{outbox_topic}.v{SCHEMA_VERSION}", self.topic_prefix)
    }

    /// The outbox topic of a Kafka topic.
    fn outbox_topic<'a>(&self, kafka_topic: &'a str) -> &'a str {
        kafka_topic
            .strip_prefix(self.topic_prefix.as_str())
            .and_then(|t| t.rsplit_once(".v"))
            .map(|(t, _)| t)
            .unwrap_or(kafka_topic)
    }

    /// Every client's configuration: the operator's properties over the core's defaults. The
    /// properties the core's guarantees rest on are set after this, by the producer and the
    /// consumers, and cannot be given (`config::kafka_properties` refuses them).
    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap)
            .set("client.id", "ticketing-core")
            // Back on a returning broker within a second or two (the default backs off to 10 s).
            .set("reconnect.backoff.max.ms", "1000");
        let tls = self
            .properties
            .0
            .iter()
            .any(|(k, v)| k == "security.protocol" && v.to_ascii_lowercase().contains("ssl"));
        if tls && !self.properties.0.iter().any(|(k, _)| k == "ssl.ca.location") {
            // librdkafka's OpenSSL is compiled in and would look for certificates where this
            // system keeps none: find the system's CA bundle instead.
            c.set("ssl.ca.location", "probe");
        }
        for (k, v) in &self.properties.0 {
            c.set(k, v);
        }
        c
    }

    /// Fails when a property is unknown to librdkafka or its value is refused, naming the property
    /// and never its value (librdkafka's own message quotes the value, which may be a password):
    /// checked once at start-up.
    pub fn check(&self) -> Result<(), String> {
        match self.client().create::<AdminClient<DefaultClientContext>>() {
            Ok(_) => Ok(()),
            Err(KafkaError::ClientConfig(code, _, key, _)) => {
                Err(format!("kafka: the property {key} is refused by librdkafka ({code:?})"))
            }
            Err(e) => Err(format!("kafka: the client cannot be made: {e}")),
        }
    }

    /// Creates the topics (those that exist already are left as they are).
    pub async fn create_topics(&self) -> Result<(), KafkaError> {
        let admin: AdminClient<DefaultClientContext> = self.client().create()?;
        let names: Vec<String> = TOPICS.iter().map(|t| self.topic(t)).collect();
        let topics: Vec<NewTopic> = names
            .iter()
            .map(|n| NewTopic::new(n, self.partitions, TopicReplication::Fixed(self.replication_factor)))
            .collect();
        let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
        for result in admin.create_topics(&topics, &options).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    tracing::warn!(topic, %code, "could not create the topic");
                    return Err(KafkaError::AdminOp(code));
                }
            }
        }
        Ok(())
    }
}

/// The relay's producer.
pub struct Publisher {
    settings: KafkaSettings,
    producer: FutureProducer,
}

impl Publisher {
    pub fn new(settings: KafkaSettings) -> Result<Self, KafkaError> {
        let producer = Self::producer(&settings)?;
        Ok(Self { settings, producer })
    }

    fn producer(settings: &KafkaSettings) -> Result<FutureProducer, KafkaError> {
        settings
            .client()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // Never give a message up: while the broker is away, deliveries wait.
            .set("message.timeout.ms", "0")
            .set("linger.ms", "5")
            .create()
    }

    /// Sends `rows` in order and waits for the broker's acknowledgements; answers how many rows, from
    /// the first, were acknowledged. After a failure the producer is replaced (its successor starts
    /// a new idempotent session), and the relay sends the rest again.
    pub async fn publish(&mut self, rows: &[Message]) -> usize {
        let mut pending = Vec::with_capacity(rows.len());
        for row in rows {
            let topic = self.settings.topic(&row.topic);
            let value = row.to_wire();
            let id = row.id.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header { key: "message-id", value: Some(&id) })
                .insert(Header { key: "type", value: Some(row.kind()) });
            let record = FutureRecord::to(&topic).key(&row.key).payload(&value).headers(headers);
            match self.producer.send_result(record) {
                Ok(delivery) => pending.push(delivery),
                Err((e, _)) => {
                    tracing::warn!(error = %e, message = row.id, "relay: the producer refused a message");
                    break;
                }
            }
        }
        let mut acknowledged = 0;
        let mut failed = pending.len() < rows.len();
        for delivery in pending {
            match delivery.await {
                Ok(Ok(_)) if !failed => acknowledged += 1,
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    tracing::warn!(error = %e, "relay: the broker did not take a message");
                    failed = true;
                }
                Err(_) => failed = true,
            }
        }
        if failed {
            match Self::producer(&self.settings) {
                Ok(p) => {
                    let _ = self.producer.flush(Duration::from_secs(1));
                    self.producer = p;
                }
                Err(e) => tracing::warn!(error = %e, "relay: could not renew the producer"),
            }
        }
        acknowledged
    }
}

/// Feeds `consumer` from its own consumer group until asked to stop: each message is applied
/// once ([`deliver`]; retried while the database fails) before its offset is stored. On a stop,
/// the message in hand is finished and the stored offsets are committed before the group is left.
pub async fn run_consumer(
    db: PgPool,
    settings: KafkaSettings,
    consumer: Arc<dyn Consumer>,
    stop: crate::shutdown::Stop,
) {
    let group = format!("{}{}", settings.topic_prefix, consumer.name());
    let stream: StreamConsumer<LagContext> = match settings
        .client()
        .set("group.id", &group)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "500")
        // An offset is stored only after its message was applied.
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // A member that died is replaced within 10 s (the default waits 45 s).
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set("statistics.interval.ms", super::lag::STATS_INTERVAL_MS.to_string())
        .create_with_context(LagContext { consumer: consumer.name().to_owned() })
    {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, group, "consumer: could not start");
            return;
        }
    };
    let topics: Vec<String> = consumer.topics().iter().map(|t| settings.topic(t)).collect();
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    if let Err(e) = stream.subscribe(&names) {
        tracing::error!(error = %e, group, "consumer: could not subscribe");
        return;
    }
    tracing::info!(group, ?topics, "consumer: reading");
    loop {
        let received = tokio::select! {
            biased;
            _ = stop.wait() => break,
            m = stream.recv() => m,
        };
        let m = match received {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, group, "consumer: receive failed");
                stop.pause(Duration::from_millis(200)).await;
                continue;
            }
        };
        let key = m.key().and_then(|k| std::str::from_utf8(k).ok()).unwrap_or_default();
        let topic = settings.outbox_topic(m.topic());
        match m.payload().and_then(|p| Message::from_wire(topic, key, p)) {
            Some(message) if !consumer.wants(&message) => {}
            Some(message) => {
                let mut backoff = Duration::from_millis(100);
                let mut applied = true;
                while let Err(e) = deliver(&db, consumer.as_ref(), &message).await {
                    tracing::warn!(error = %e, group, message = message.id, "consumer failed; retrying");
                    if !stop.pause(backoff).await {
                        applied = false;
                        break;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
                if !applied {
                    // Asked to stop while the database fails: the offset is not stored, so the
                    // group's next member applies this message.
                    break;
                }
                if let Some(sent_ms) = m.timestamp().to_millis() {
                    let age = (chrono::Utc::now().timestamp_millis() - sent_ms) as f64 / 1000.0;
                    super::lag::applied(consumer.name(), age);
                }
            }
            None => tracing::warn!(
                group,
                topic = m.topic(),
                offset = m.offset(),
                "consumer: skipped a message that is not ours"
            ),
        }
        if let Err(e) = stream.store_offset_from_message(&m) {
            tracing::warn!(error = %e, group, "consumer: could not store the offset");
        }
    }
    // Dropping the consumer closes it: librdkafka commits the stored offsets (what was applied,
    // never more) and leaves the group, so that its partitions move to another replica at once.
    // Closing waits for the broker (up to the session timeout when it is down): off the runtime's
    // threads.
    let _ = tokio::task::spawn_blocking(move || drop(stream)).await;
    tracing::info!(group, "consumer: stopped");
}

/// Reads each consumer's lag from librdkafka's statistics: the sum over its assigned partitions.
struct LagContext {
    consumer: String,
}

impl ClientContext for LagContext {
    fn stats(&self, statistics: Statistics) {
        let behind: i64 = statistics
            .topics
            .values()
            .flat_map(|t| t.partitions.values())
            .filter(|p| p.partition >= 0 && p.consumer_lag >= 0)
            .map(|p| p.consumer_lag)
            .sum();
        super::lag::behind(&self.consumer, behind);
    }
}

impl ConsumerContext for LagContext {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_carry_the_prefix_and_the_schema_version() {
        let s = KafkaSettings {
            bootstrap: String::new(),
            topic_prefix: "ticketing.".into(),
            partitions: 3,
            replication_factor: 1,
            properties: Properties::default(),
        };
        assert_eq!(s.topic("orders"), "ticketing.orders.v1");
        assert_eq!(s.outbox_topic("ticketing.orders.v1"), "orders");
        assert_eq!(s.outbox_topic("ticketing.checkins.v1"), "checkins");
    }

    #[test]
    fn unknown_properties_stop_the_start_and_secrets_do_not_print() {
        let mut s = KafkaSettings {
            bootstrap: "127.0.0.1:9".into(),
            topic_prefix: "t.".into(),
            partitions: 1,
            replication_factor: 1,
            properties: Properties(vec![("sasl.password".into(), "s3cret".into())]),
        };
        assert!(s.check().is_ok());
        assert!(!format!("{s:?}").contains("s3cret"), "{s:?}");
        s.properties.0.push(("no.such.property".into(), "1".into()));
        let e = s.check().unwrap_err();
        assert!(e.contains("no.such.property"), "{e}");
        // A refused value is not echoed (it may be a password put under the wrong name).
        s.properties.0 = vec![("acks".into(), "s3cret-value".into())];
        let e = s.check().unwrap_err();
        assert!(e.contains("acks") && !e.contains("s3cret-value"), "{e}");
    }
}
