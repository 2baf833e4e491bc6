//! Consumer lag, for `/metrics`: how many relayed messages each consumer has not applied yet, and
//! how old the newest one it applied was when it was behind.
//!
//! With Kafka, librdkafka's statistics (every [`STATS_INTERVAL_MS`]) give each assigned
//! partition's lag (high watermark − committed position); with the in-process bus the consumers
//! apply each relay batch as it is read, so their lag is the outbox's: rows not yet relayed.

use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex};

/// How often a Kafka consumer's statistics arrive.
pub const STATS_INTERVAL_MS: u32 = 5_000;

#[derive(Debug, Clone, Copy, Default)]
struct Lag {
    messages: i64,
    /// Age of the last applied message when it was applied.
    applied_age_secs: f64,
    in_process: bool,
}

static LAG: LazyLock<Mutex<BTreeMap<String, Lag>>> = LazyLock::new(Mutex::default);

fn update(consumer: &str, f: impl FnOnce(&mut Lag)) {
    if let Ok(mut lag) = LAG.lock() {
        f(lag.entry(consumer.to_owned()).or_default());
    }
}

/// The consumer runs in-process (fed by the relay).
pub fn in_process(consumer: &str) {
    update(consumer, |l| l.in_process = true);
}

/// Messages behind, from the broker's statistics.
pub fn behind(consumer: &str, messages: i64) {
    update(consumer, |l| l.messages = messages.max(0));
}

/// A message was applied `age_secs` after it was relayed.
pub fn applied(consumer: &str, age_secs: f64) {
    update(consumer, |l| l.applied_age_secs = age_secs.max(0.0));
}

/// Each consumer's lag into `s`; in-process consumers take the outbox's unsent rows and their lag.
pub fn collect(s: &mut crate::figures::Snapshot, outbox_unsent: i64, outbox_lag_secs: f64) {
    let Ok(lag) = LAG.lock() else { return };
    for (name, l) in lag.iter() {
        let n = if l.in_process { outbox_unsent } else { l.messages };
        s.gauge(
            "ticketing_consumer_lag_messages",
            "Relayed messages a consumer has not applied yet",
            vec![("consumer", name.clone())],
            n,
        );
    }
    for (name, l) in lag.iter() {
        let secs = match (l.in_process, l.messages) {
            (true, _) => outbox_lag_secs,
            (false, 0) => 0.0,
            (false, _) => l.applied_age_secs,
        };
        s.gauge(
            "ticketing_consumer_lag_seconds",
            "How far behind a consumer is in time (0 when caught up)",
            vec![("consumer", name.clone())],
            secs,
        );
    }
}

/// The lag alone, as Prometheus text (for tests and tools).
pub fn render(outbox_unsent: i64, outbox_lag_secs: f64) -> String {
    let mut s = crate::figures::Snapshot::default();
    collect(&mut s, outbox_unsent, outbox_lag_secs);
    s.to_text()
}
