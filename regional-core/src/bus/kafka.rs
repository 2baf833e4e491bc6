//! The Kafka side of the bus (rdkafka): the relay's producer, and a runner that feeds one
//! [`Consumer`] from its own consumer group.
//!
//! The producer is idempotent with `acks=all` and never gives a message up (`message.timeout.ms=0`):
//! while the broker is down, deliveries wait, and the relay marks nothing sent. Messages are keyed by
//! event, so one event's messages share a partition and keep their order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Header, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sqlx::PgPool;

use super::{deliver, Consumer, Message, SCHEMA_VERSION, TOPICS};

/// How long a topic keeps a message (milliseconds): as long as the outbox keeps its copy
/// ([`crate::privacy::retention::OUTBOX_DAYS`]).
const RETENTION_MS: i64 = crate::privacy::retention::OUTBOX_DAYS * 86_400_000;

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

    /// Creates the topics (those that exist are left as they are: an operator who made them
    /// sets their retention).
    pub async fn create_topics(&self) -> Result<(), KafkaError> {
        let retention = RETENTION_MS.to_string();
        let admin: AdminClient<DefaultClientContext> = self.client().create()?;
        let names: Vec<String> = TOPICS.iter().map(|t| self.topic(t)).collect();
        let topics: Vec<NewTopic> = names
            .iter()
            .map(|n| {
                // Messages carry buyers' addresses: a topic keeps them as long as the outbox does
                // (docs/privacy.md), not the broker's default.
                NewTopic::new(n, self.partitions, TopicReplication::Fixed(self.replication_factor))
                    .set("retention.ms", &retention)
            })
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
    let stream: GroupConsumer = match settings
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
        .create_with_context(Rebalances::default())
    {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, group, "consumer: could not start");
            return;
        }
    };
    let topics: Vec<String> = consumer.topics().iter().map(|t| settings.topic(t)).collect();
    if let Err(e) = subscribe(&stream, &topics) {
        tracing::error!(error = %e, group, "consumer: could not subscribe");
        return;
    }
    tracing::info!(group, ?topics, "consumer: reading");
    let stream = Arc::new(stream);
    let watcher =
        tokio::spawn(watch_lag(Arc::downgrade(&stream), topics, consumer.name().to_owned(), stop.clone()));
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
    // threads. The lag watcher holds the consumer only within a measurement (on a blocking
    // thread too), so whichever lets it go last closes it off the runtime's threads.
    let _ = watcher.await;
    let _ = tokio::task::spawn_blocking(move || drop(stream)).await;
    tracing::info!(group, "consumer: stopped");
}

/// Measures the consumer group's lag every [`super::lag::INTERVAL`] until asked to stop, from the
/// broker itself: over every partition of its topics, the high watermark less the group's
/// committed offset. Not librdkafka's statistics: they know only the partitions this member
/// fetches, and say nothing (-1) for a partition whose fetching never started, which is exactly
/// the stall an alert must see. So each replica reports the whole group's lag (take the largest).
///
/// It is also the group's watchdog: a partition that is behind and whose committed offset has not
/// moved for [`STALL`] while it is not this member's is owned by nobody who works on it. The
/// member then leaves the group and joins again, which makes the coordinator hand every partition
/// out anew. (Found by the fault campaign: after both replicas were killed at once, the test
/// broker, tansu 0.6.0, formed the group with an empty assignment and kept it; docs/reliability.md.)
/// A stalled partition this member owns is not a lost assignment (its consumer is retrying a
/// message), and is left to the lag alert. A partition stalled on another replica for that reason
/// (its database down, say) looks orphaned from here (the coordinator's description of the group
/// cannot tell it from a dead member's, see [`rejoin_if_orphaned`]): each rejoin that changes
/// nothing doubles the wait before the next, up to [`MAX_STALL`], so that such an outage costs a
/// few rebalances. The members back off together: every other member sees the group rebalance
/// (its [`Rebalances`]) during the stall and waits as if it had rejoined itself, and each waits a
/// little more of its own, drawn anew for each wait ([`jitter_of`]), so that the first to act is
/// mostly seen by the others before they act too. With many replicas, one stall costs a rebalance
/// or a few per wait (those whose waits end within the seconds a rebalance takes to be seen), not
/// one per replica.
async fn watch_lag(
    stream: std::sync::Weak<GroupConsumer>,
    topics: Vec<String>,
    name: String,
    stop: crate::shutdown::Stop,
) {
    let mut progress = Progress::new(Some(member_seed()));
    let mut failures = 0u32;
    // A rejoin whose subscribe failed left the member out of the group: it subscribes again at
    // each tick until that works (it would otherwise wait for a stall to be seen again).
    let mut unsubscribed = false;
    // The group's rebalances this member took part in, and which it caused.
    let mut rebalancing = Rebalancing::default();
    // The member's first assignment, from `run_consumer`'s subscribe, is its own doing too.
    rebalancing.caused(Instant::now());
    super::lag::watching(&name);
    while stop.pause(super::lag::INTERVAL).await {
        let Some(handed) = stream.upgrade().map(|c| c.context().handed()) else { return };
        if rebalancing.foreign(handed, Instant::now()) {
            progress.rebalanced(Instant::now());
        }
        if unsubscribed {
            let Some(outcome) = on_consumer(&stream, &topics, subscribe).await else { return };
            match outcome {
                Some(Ok(())) => {
                    unsubscribed = false;
                    rebalancing.caused(Instant::now());
                    // A full stall time before the watchdog looks again: the member has no
                    // partitions until the group hands them out.
                    progress.pause_watch(Instant::now());
                    tracing::info!(consumer = name, "consumer: subscribed again");
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, consumer = name, "consumer: could not subscribe again")
                }
                None => {}
            }
        }
        let Some(measured) = on_consumer(&stream, &topics, group_lag).await else { return };
        let partitions = match measured {
            Some(Ok(partitions)) => partitions,
            outcome => {
                // The broker unreachable, or a topic without its partitions: the lag is unknown
                // (`/metrics` says since when), and the watchdog waits for a full stall time of
                // measurements before it acts again.
                failures += 1;
                let error = match outcome {
                    Some(Err(e)) => e.to_string(),
                    _ => "the measurement stopped".to_owned(),
                };
                if failures == UNMEASURED_WARN_AFTER {
                    tracing::warn!(error, consumer = name, failures, "consumer: lag not measured");
                } else {
                    tracing::debug!(error, consumer = name, "consumer: lag not measured");
                }
                progress.pause_watch(Instant::now());
                continue;
            }
        };
        failures = 0;
        let now = Instant::now();
        let (stalled, still) = progress.stalled(now, &partitions);
        super::lag::behind(&name, partitions.iter().map(|p| p.behind).sum(), still);
        if stalled.is_empty() {
            continue;
        }
        let rejoin = move |c: &GroupConsumer, t: &[String]| rejoin_if_orphaned(c, t, &stalled);
        let Some(outcome) = on_consumer(&stream, &topics, rejoin).await else { return };
        match outcome {
            Some(Ok(Rejoin::NotNeeded)) => {}
            Some(Ok(Rejoin::Done)) => {
                unsubscribed = false;
                rebalancing.caused(now);
                tracing::warn!(
                    consumer = name,
                    "consumer: partitions behind and owned by nobody; rejoined the group"
                );
                progress.rejoined(now);
            }
            Some(Ok(Rejoin::SubscribeFailed(e))) => {
                tracing::warn!(error = %e, consumer = name, "consumer: left the group and could not join again");
                unsubscribed = true;
                progress.rejoined(now);
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, consumer = name, "consumer: could not read its assignment");
                progress.pause_watch(now);
            }
            None => {}
        }
    }
}

/// Runs `f` with the consumer and its topics on the blocking pool (librdkafka's calls block):
/// `None` once the consumer is gone (the watcher then stops), `Some(None)` if `f` panicked.
async fn on_consumer<T, F>(
    stream: &std::sync::Weak<GroupConsumer>,
    topics: &[String],
    f: F,
) -> Option<Option<T>>
where
    F: FnOnce(&GroupConsumer, &[String]) -> T + Send + 'static,
    T: Send + 'static,
{
    let consumer = stream.upgrade()?;
    let topics = topics.to_vec();
    Some(tokio::task::spawn_blocking(move || f(&consumer, &topics)).await.ok())
}

/// How long a partition may be behind without its committed offset moving before the watchdog
/// takes it for orphaned (when it is not this member's), at first; and at most, after rejoins
/// that changed nothing.
const STALL: Duration = Duration::from_secs(30);
const MAX_STALL: Duration = Duration::from_secs(600);

/// A member's seed for its jitter (random, so that the members of a group that see one stall at
/// the same moment do not all act at once).
fn member_seed() -> u64 {
    let mut bytes = [0u8; 8];
    // Without randomness every member waits the same: the back-off still works, less spread.
    let _ = getrandom::getrandom(&mut bytes);
    u64::from_le_bytes(bytes)
}

/// The most a member waits more than the others ([`jitter_of`]): at the first wait (one
/// measurement's interval: the first cure of an orphaned partition is not put off), doubling with
/// each wait after it up to the most.
const FIRST_JITTER: Duration = Duration::from_secs(5);
const JITTER: Duration = STALL;

/// A member's extra wait: its `draw`th (its seed and the draw mixed by splitmix64), for a wait
/// `step` doublings into a stall, between none and [`FIRST_JITTER`] doubled `step` times, at most
/// [`JITTER`]. Drawn anew for each wait, so that members whose waits ended together once do not end
/// together again.
fn jitter_of(seed: u64, draw: u64, step: u64) -> Duration {
    let mut z = seed.wrapping_add(draw.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let most = (FIRST_JITTER * (1u32 << step.min(8) as u32)).min(JITTER);
    most * (z % 1_000) as u32 / 1_000
}

/// The consumer's context: counts the assignments the group handed this member (one per
/// rebalance it took part in), which the watchdog reads to see other members' rejoins.
#[derive(Default)]
pub struct Rebalances(AtomicU64);

impl Rebalances {
    fn handed(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl ClientContext for Rebalances {}

impl ConsumerContext for Rebalances {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(assigned) = rebalance {
            self.0.fetch_add(1, Ordering::Relaxed);
            // Which partitions this member works on, for the operator who wonders why one is not.
            let partitions: Vec<String> =
                assigned.elements().iter().map(|p| format!("{}/{}", p.topic(), p.partition())).collect();
            tracing::info!(
                count = partitions.len(),
                partitions = partitions.join(","),
                "consumer: partitions assigned"
            );
        }
    }
}

/// A consumer of the group, with its [`Rebalances`].
type GroupConsumer = StreamConsumer<Rebalances>;

/// How long after a member's own rejoin (or subscribe) the rebalances it sees are taken for its
/// own doing: the group's rebalance completes within a few seconds of it (one rejoin may show as
/// more than one assignment).
const OWN_REBALANCE: Duration = Duration::from_secs(15);

/// Which of the group's rebalances (the [`Rebalances`] count) a member caused.
#[derive(Default)]
struct Rebalancing {
    seen: u64,
    own_until: Option<Instant>,
}

impl Rebalancing {
    /// The member rejoined or subscribed at `now`.
    fn caused(&mut self, now: Instant) {
        self.own_until = Some(now + OWN_REBALANCE);
    }

    /// Whether the group rebalanced since the last look (`handed`: the count now), and not by
    /// this member's doing.
    /// Several rebalances within [`OWN_REBALANCE`] of the first one seen are one round (members
    /// that acted together): one back-off for them all.
    fn foreign(&mut self, handed: u64, now: Instant) -> bool {
        if handed == self.seen {
            return false;
        }
        self.seen = handed;
        if self.own_until.is_some_and(|until| now < until) {
            return false;
        }
        self.own_until = Some(now + OWN_REBALANCE);
        true
    }
}
/// Failed measurements in a row before the watcher says so at `warn` (a blip is `debug`).
const UNMEASURED_WARN_AFTER: u32 = 3;

/// One partition of the group, as the broker says.
struct PartitionLag {
    topic: String,
    partition: i32,
    /// The group's committed offset (-1: none).
    committed: i64,
    behind: i64,
}

/// The watchdog's memory. Two clocks: where each partition's committed offset was last seen to
/// move (only progress resets it: the lag in seconds that `/metrics` shows and the alert reads),
/// and when the watchdog last acted or lost sight of the broker (a rejoin, a failed measurement:
/// it waits a full stall time from there before it acts again). A rejoin that changes nothing must
/// not hide the stall from the alert.
struct Progress {
    seen: HashMap<(String, i32), (i64, Instant)>,
    /// The watchdog's own clock; `None` until it first acts or loses sight.
    watch_from: Option<Instant>,
    wait: Duration,
    /// This member's seed for its extra wait (`None`: none), the extras drawn so far, the
    /// doublings of the wait in this stall, and the current wait's extra ([`jitter_of`]).
    seed: Option<u64>,
    draws: u64,
    steps: u64,
    jitter: Duration,
    /// Whether a partition behind was standing still at the last measurement.
    stalling: bool,
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new(None)
    }
}

impl Progress {
    fn new(seed: Option<u64>) -> Self {
        let jitter = seed.map_or(Duration::ZERO, |s| jitter_of(s, 0, 0));
        Progress {
            seen: HashMap::new(),
            watch_from: None,
            wait: STALL,
            seed,
            draws: 0,
            steps: 0,
            jitter,
            stalling: false,
        }
    }

    /// A new extra wait for the next action.
    fn draw(&mut self) {
        self.draws += 1;
        self.jitter = self.seed.map_or(Duration::ZERO, |s| jitter_of(s, self.draws, self.steps));
    }

    /// The partitions behind that the watchdog takes for stalled (still for the wait, and the wait
    /// passed since it last acted or lost sight), and the longest any partition behind has gone
    /// without its committed offset moving.
    fn stalled(&mut self, now: Instant, partitions: &[PartitionLag]) -> (Vec<(String, i32)>, Duration) {
        let (mut stalled, mut longest) = (Vec::new(), Duration::ZERO);
        let watched_for = self.watch_from.map_or(Duration::MAX, |from| now.saturating_duration_since(from));
        for p in partitions {
            let key = (p.topic.clone(), p.partition);
            let seen = self.seen.entry(key.clone()).or_insert((p.committed, now));
            if seen.0 != p.committed || p.behind == 0 {
                *seen = (p.committed, now);
                continue;
            }
            let still = now.saturating_duration_since(seen.1);
            longest = longest.max(still);
            if still.min(watched_for) >= self.wait + self.jitter {
                stalled.push(key);
            }
        }
        self.stalling = !longest.is_zero();
        if longest.is_zero() {
            // Every partition behind moved: the next stall gets the first wait, and the first
            // wait's short extra.
            self.wait = STALL;
            if self.steps > 0 {
                self.steps = 0;
                self.draw();
            }
        }
        (stalled, longest)
    }

    /// The broker could not be asked: the watchdog waits a full stall time of measurements before
    /// it acts (what it did not see says nothing about the group). Progress clocks run on.
    fn pause_watch(&mut self, now: Instant) {
        self.watch_from = Some(now);
    }

    /// After a rejoin: the group gets twice the wait before the next one, unless it moves.
    fn rejoined(&mut self, now: Instant) {
        self.pause_watch(now);
        self.wait = (self.wait * 2).min(MAX_STALL);
        self.steps += 1;
        self.draw();
    }

    /// The group rebalanced, not by this member's doing: during a stall, that was another member's
    /// rejoin (or a member come or gone, which hands the partitions out anew as well), and this
    /// member waits as if it had rejoined itself. Outside a stall it changes nothing.
    fn rebalanced(&mut self, now: Instant) {
        if self.stalling {
            self.rejoined(now);
        }
    }
}

/// What the watchdog did about stalled partitions.
enum Rejoin {
    /// They are this member's.
    NotNeeded,
    /// Left the group and joined again.
    Done,
    /// Left the group and could not subscribe again.
    SubscribeFailed(KafkaError),
}

/// Leaves the group and joins again when one of `stalled` is not assigned to this member. (The
/// coordinator's own description of the group is no help: a member killed without leaving stays in
/// it, with its partitions, until the coordinator notices; tansu 0.6.0 notices only when a request
/// arrives, so the partitions of the dead look owned.)
fn rejoin_if_orphaned(
    consumer: &GroupConsumer,
    topics: &[String],
    stalled: &[(String, i32)],
) -> KafkaResult<Rejoin> {
    let mine = consumer.assignment()?;
    if stalled.iter().all(|(t, p)| mine.find_partition(t, *p).is_some()) {
        return Ok(Rejoin::NotNeeded);
    }
    consumer.unsubscribe();
    Ok(match subscribe(consumer, topics) {
        Ok(()) => Rejoin::Done,
        Err(e) => Rejoin::SubscribeFailed(e),
    })
}

fn subscribe(consumer: &GroupConsumer, topics: &[String]) -> KafkaResult<()> {
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names)
}

/// Every partition of `topics` with the group's committed offset and the messages after it (a
/// partition without a committed offset counts from its first message: the group starts there).
fn group_lag(consumer: &GroupConsumer, topics: &[String]) -> KafkaResult<Vec<PartitionLag>> {
    const WAIT: Duration = Duration::from_secs(2);
    let mut partitions = TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), WAIT)?;
        for t in metadata.topics() {
            // A topic the broker cannot describe (unknown, no leader) is not a topic with no lag.
            if let Some(e) = t.error() {
                return Err(KafkaError::MetadataFetch(e.into()));
            }
            if t.partitions().is_empty() {
                return Err(KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition));
            }
            for p in t.partitions() {
                partitions.add_partition(t.name(), p.id());
            }
        }
    }
    let committed = consumer.committed_offsets(partitions, WAIT)?;
    // Every partition's watermarks in two requests to each broker, whatever the partitions: the
    // log's end (the special time -1, "latest") and its start (-2, "earliest"). Asked a partition
    // at a time they cost a round trip each (half a second each on the test broker: 12 partitions
    // made a measurement of 6 s, longer than its interval).
    let at = |offset: Offset| -> KafkaResult<TopicPartitionList> {
        let mut asked = TopicPartitionList::new();
        for p in committed.elements() {
            asked.add_partition_offset(p.topic(), p.partition(), offset)?;
        }
        consumer.offsets_for_times(asked, WAIT)
    };
    let (ends, starts) = (at(Offset::End)?, at(Offset::Beginning)?);
    let offset_in = |list: &TopicPartitionList, topic: &str, partition: i32| -> KafkaResult<i64> {
        let found = list
            .find_partition(topic, partition)
            .ok_or(KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition))?;
        found.error()?;
        found
            .offset()
            .to_raw()
            .filter(|o| *o >= 0)
            .ok_or(KafkaError::MetadataFetch(RDKafkaErrorCode::OffsetNotAvailable))
    };
    let mut out = Vec::new();
    for p in committed.elements() {
        let high = offset_in(&ends, p.topic(), p.partition())?;
        let low = offset_in(&starts, p.topic(), p.partition())?;
        out.push(PartitionLag {
            topic: p.topic().to_owned(),
            partition: p.partition(),
            committed: p.offset().to_raw().unwrap_or(-1),
            behind: unapplied(p.offset(), low, high),
        });
    }
    Ok(out)
}

/// A partition's messages after the group's committed `offset`, between the watermarks.
fn unapplied(offset: Offset, low: i64, high: i64) -> i64 {
    let from = match offset {
        Offset::Offset(o) => o.max(low),
        _ => low,
    };
    (high - from).max(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_behind_that_does_not_move_for_the_stall_time_is_stalled() {
        let t0 = Instant::now();
        let at = |committed, behind| PartitionLag { topic: "t".into(), partition: 0, committed, behind };
        let mut progress = Progress::default();
        let mut stalled = |at_time, p| progress.stalled(at_time, &[p]);
        assert_eq!(stalled(t0, at(5, 3)), (vec![], Duration::ZERO));
        assert_eq!(stalled(t0 + STALL / 2, at(5, 3)), (vec![], STALL / 2));
        assert_eq!(stalled(t0 + STALL, at(5, 3)), (vec![("t".to_owned(), 0)], STALL));
        // Moving, or caught up, is not stalled; the clock starts again from there.
        assert_eq!(stalled(t0 + STALL, at(6, 2)), (vec![], Duration::ZERO));
        assert!(stalled(t0 + STALL * 2 - Duration::from_secs(1), at(6, 2)).0.is_empty());
        assert_eq!(stalled(t0 + STALL * 3, at(6, 0)), (vec![], Duration::ZERO));
        assert!(stalled(t0 + STALL * 3 + Duration::from_secs(1), at(6, 4)).0.is_empty());
        assert_eq!(stalled(t0 + STALL * 4 + Duration::from_secs(1), at(6, 4)).0.len(), 1);
        // A rejoin that changes nothing doubles the wait before the next one; the stall it did not
        // cure goes on counting (the alert must see it: 2 × STALL + 1 s still, from t0 + 3 × STALL).
        let t1 = t0 + STALL * 5;
        progress.rejoined(t1);
        assert_eq!(
            progress.stalled(t1 + Duration::from_secs(1), &[at(6, 4)]),
            (vec![], STALL * 2 + Duration::from_secs(1))
        );
        assert!(progress.stalled(t1 + STALL, &[at(6, 4)]).0.is_empty());
        assert_eq!(progress.stalled(t1 + STALL * 2, &[at(6, 4)]).0.len(), 1);
        progress.rejoined(t1 + STALL * 2);
        assert!(progress.stalled(t1 + STALL * 5, &[at(6, 4)]).0.is_empty());
        assert_eq!(progress.stalled(t1 + STALL * 6, &[at(6, 4)]).0.len(), 1);
        // Moving again: back to the first wait.
        assert!(progress.stalled(t1 + STALL * 6, &[at(7, 4)]).0.is_empty());
        assert_eq!(progress.stalled(t1 + STALL * 7, &[at(7, 4)]).0.len(), 1);
    }

    #[test]
    fn rejoins_and_lost_sight_of_the_broker_never_reset_the_stall_the_alert_reads() {
        // The fault the watchdog cannot cure: a partition nobody moves for 20 minutes, rejoins
        // every time the wait allows, a measurement failing now and then. The seconds still only
        // grow (the alert's `> 300 for 5m` fires), and the rejoins come ever further apart.
        let t0 = Instant::now();
        let p = PartitionLag { topic: "t".into(), partition: 0, committed: 5, behind: 3 };
        let mut progress = Progress::default();
        let (mut last_still, mut rejoins) = (Duration::ZERO, Vec::new());
        for tick in 0..=240u32 {
            let now = t0 + super::super::lag::INTERVAL * tick;
            if tick % 50 == 49 {
                progress.pause_watch(now);
                continue;
            }
            let (stalled, still) = progress.stalled(now, std::slice::from_ref(&p));
            assert!(still >= last_still, "the stall went back from {last_still:?} to {still:?}");
            assert_eq!(still, now - t0);
            last_still = still;
            if !stalled.is_empty() {
                progress.rejoined(now);
                rejoins.push((now - t0).as_secs());
            }
        }
        // The first after 30 s; then each gap at least twice the last wait (the lost measurements
        // only push a rejoin later), up to 600 s.
        assert_eq!(rejoins.first(), Some(&30), "{rejoins:?}");
        assert!(rejoins.len() >= 4, "{rejoins:?}");
        for (i, w) in rejoins.windows(2).enumerate() {
            let wait = (30u64 << (i + 1)).min(600);
            assert!(w[1] - w[0] >= wait, "gap {i} of {rejoins:?} shorter than {wait} s");
        }
    }

    #[test]
    fn the_members_of_a_group_back_off_together() {
        // Five members watch a partition that a sixth owns and cannot move for 20 minutes (its
        // database down, say: a stall no rejoin cures, which looks orphaned from the others). Each
        // measures every INTERVAL at its own phase, with its own jitters (drawn); each rejoin
        // rebalances the group, which every member's count shows 3 s later.
        const SEEN_AFTER: u64 = 3;
        let rebalances = |together: bool, seed: u64| -> Vec<u64> {
            let t0 = Instant::now();
            let p = PartitionLag { topic: "t".into(), partition: 0, committed: 5, behind: 3 };
            let members = 5usize;
            let phases: Vec<u64> =
                (0..members).map(|m| jitter_of(!seed, m as u64, 3).as_millis() as u64 / 30 % 5).collect();
            let mut progress: Vec<Progress> =
                (0..members).map(|m| Progress::new(together.then_some(seed * 1_000 + m as u64))).collect();
            let mut rebalancing: Vec<Rebalancing> = (0..members).map(|_| Rebalancing::default()).collect();
            let mut at: Vec<u64> = Vec::new();
            for second in 0..1_200u64 {
                let now = t0 + Duration::from_secs(second);
                for m in (0..members).filter(|m| second % 5 == phases[*m]) {
                    let handed = at.iter().filter(|t| **t + SEEN_AFTER <= second).count() as u64;
                    if together && rebalancing[m].foreign(handed, now) {
                        progress[m].rebalanced(now);
                    }
                    if !progress[m].stalled(now, std::slice::from_ref(&p)).0.is_empty() {
                        at.push(second);
                        progress[m].rejoined(now);
                        rebalancing[m].caused(now);
                    }
                }
            }
            at
        };
        let mut counts = Vec::new();
        for seed in 1..=20 {
            // Each on its own: every member rejoins at each of its waits (30, 90, 210, 450, 930 s).
            let apart = rebalances(false, seed);
            assert!(apart.len() >= 20, "{apart:?}");
            // Together: the waits still double and the cure is still tried from the first stall
            // time, but at each step only the members whose waits end within a few seconds of the
            // first act (at the first step, whose extra wait is short, most of them may).
            let together = rebalances(true, seed);
            assert!(
                together.len() <= 15 && together[0] >= 30 && together[0] < 40,
                "seed {seed}: {together:?}"
            );
            counts.push(together.len());
        }
        let mean = counts.iter().sum::<usize>() as f64 / counts.len() as f64;
        // 7 to 14, 10 on average, when written (against 25 apart).
        assert!(mean <= 12.0, "{counts:?}");
        // Outside a stall a rebalance changes nothing: the first wait stays the first.
        let mut calm = Progress::default();
        let t0 = Instant::now();
        let moving = PartitionLag { topic: "t".into(), partition: 0, committed: 5, behind: 0 };
        calm.stalled(t0, std::slice::from_ref(&moving));
        calm.rebalanced(t0);
        assert_eq!((calm.wait, calm.watch_from), (STALL, None));
    }

    #[test]
    fn a_members_own_rejoin_is_not_taken_for_anothers() {
        let s = Duration::from_secs;
        let t0 = Instant::now();
        let mut r = Rebalancing::default();
        assert!(r.foreign(1, t0), "a rebalance it did not cause");
        assert!(!r.foreign(1, t0 + s(5)), "nothing new");
        assert!(!r.foreign(2, t0 + s(10)), "another member acting in the same round: one back-off");
        r.caused(t0 + s(20));
        // Its own rejoin, seen as two assignments within the window.
        assert!(!r.foreign(3, t0 + s(25)));
        assert!(!r.foreign(4, t0 + s(30)));
        assert!(r.foreign(5, t0 + s(20) + OWN_REBALANCE), "after the window, another's");
    }

    #[test]
    fn each_member_waits_a_share_of_the_stall_of_its_own() {
        let first: Vec<Duration> = (0..1_000).map(|_| jitter_of(member_seed(), 0, 0)).collect();
        assert!(first.iter().all(|d| *d < FIRST_JITTER), "the first cure is not put off");
        let later: Vec<Duration> = (0..1_000).map(|draw| jitter_of(member_seed(), draw, 3)).collect();
        assert!(later.iter().all(|d| *d < JITTER));
        assert!(later.iter().any(|d| *d < JITTER / 4) && later.iter().any(|d| *d > JITTER * 3 / 4));
        // The first wait ends its extra after the stall time, and the next wait's extra is another.
        let t0 = Instant::now();
        let p = PartitionLag { topic: "t".into(), partition: 0, committed: 5, behind: 3 };
        let seed = (0..).find(|s| jitter_of(*s, 0, 0) >= Duration::from_secs(2)).unwrap();
        assert!(jitter_of(seed, 0, 0) < FIRST_JITTER);
        let extra = jitter_of(seed, 0, 0);
        let mut late = Progress::new(Some(seed));
        late.stalled(t0, std::slice::from_ref(&p));
        assert!(late.stalled(t0 + STALL, std::slice::from_ref(&p)).0.is_empty());
        assert_eq!(late.stalled(t0 + STALL + extra, std::slice::from_ref(&p)).0.len(), 1);
        late.rejoined(t0 + STALL + extra);
        assert_eq!(late.jitter, jitter_of(seed, 1, 1));
        // The partition moves: the next stall starts again from the first wait's short extra.
        let moved = PartitionLag { committed: 6, ..p };
        late.stalled(t0 + STALL * 3, std::slice::from_ref(&moved));
        assert_eq!((late.wait, late.steps, late.jitter), (STALL, 0, jitter_of(seed, 2, 0)));
    }

    #[test]
    fn a_partition_never_committed_counts_from_its_first_message() {
        assert_eq!(unapplied(Offset::Offset(7), 0, 10), 3);
        assert_eq!(unapplied(Offset::Invalid, 4, 10), 6);
        assert_eq!(unapplied(Offset::Offset(2), 4, 10), 6, "committed before what is kept");
        assert_eq!(unapplied(Offset::Offset(12), 0, 10), 0);
    }

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
