//! Consumer lag, for `/metrics`: how many relayed messages each consumer has not applied yet, and
//! how far behind in time that puts it.
//!
//! With Kafka, each replica asks the broker every [`INTERVAL`] for the whole consumer group's lag
//! (`kafka::watch_lag`: high watermarks less committed offsets, over every partition), so the
//! replicas report the same figure: alert on the largest. With the in-process bus the consumers
//! apply each relay batch as it is read, so their lag is the outbox's: rows not yet relayed.
//!
//! In time, a Kafka consumer that is behind is as far behind as the larger of: how long any
//! partition of its group that is behind has gone without its committed offset moving (the group
//! as the broker sees it, so the same on every replica: a stalled group's grows), and how old the
//! messages this replica applies are when it applies them (while it applies any).

use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// How often a Kafka consumer group's lag is measured.
pub const INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, Default)]
struct Lag {
    messages: i64,
    /// The longest a partition behind has gone without its committed offset moving.
    still: Duration,
    /// Age of the last applied message when it was applied, and when that was.
    applied_age_secs: f64,
    applied_at: Option<Instant>,
    in_process: bool,
    /// Kafka consumers: when the watcher began, and when the broker last answered it.
    watched_since: Option<Instant>,
    measured_at: Option<Instant>,
}

impl Lag {
    /// Whether there is a lag to show: an in-process consumer's is the outbox's, a Kafka
    /// consumer's is unknown until the broker first answers (no figure, rather than a false 0).
    fn known(&self) -> bool {
        self.in_process || self.measured_at.is_some()
    }

    /// Seconds since the lag was last measured (since the watcher began, if never): the figures
    /// above are that old. `None` for in-process consumers (nothing to ask).
    fn unmeasured(&self, now: Instant) -> Option<f64> {
        let since = self.measured_at.or(self.watched_since)?;
        Some(now.saturating_duration_since(since).as_secs_f64())
    }

    /// Seconds behind (Kafka consumers): 0 when caught up.
    fn seconds(&self, now: Instant) -> f64 {
        if self.messages == 0 {
            return 0.0;
        }
        // The age of what this replica applies counts while it applies (its partitions may
        // since have gone to another replica).
        let applying = self.applied_at.is_some_and(|at| now.saturating_duration_since(at) <= INTERVAL * 2);
        let age = if applying { self.applied_age_secs } else { 0.0 };
        self.still.as_secs_f64().max(age)
    }
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

/// A Kafka consumer's lag watcher begins (its lag is unknown until the broker first answers).
pub fn watching(consumer: &str) {
    update(consumer, |l| {
        l.watched_since.get_or_insert_with(Instant::now);
    });
}

/// Messages the group is behind, and the longest a partition behind has gone without its
/// committed offset moving, as the broker says.
pub fn behind(consumer: &str, messages: i64, still: Duration) {
    update(consumer, |l| {
        l.messages = messages.max(0);
        l.still = still;
        l.measured_at = Some(Instant::now());
    });
}

/// A message was applied `age_secs` after it was relayed.
pub fn applied(consumer: &str, age_secs: f64) {
    update(consumer, |l| {
        l.applied_age_secs = age_secs.max(0.0);
        l.applied_at = Some(Instant::now());
    });
}

/// Each consumer's lag into `s`; in-process consumers take the outbox's unsent rows and their lag.
pub fn collect(s: &mut crate::figures::Snapshot, outbox_unsent: i64, outbox_lag_secs: f64) {
    let Ok(lag) = LAG.lock() else { return };
    for (name, l) in lag.iter().filter(|(_, l)| l.known()) {
        let n = if l.in_process { outbox_unsent } else { l.messages };
        s.gauge(
            "ticketing_consumer_lag_messages",
            "Relayed messages a consumer has not applied yet",
            vec![("consumer", name.clone())],
            n,
        );
    }
    let now = Instant::now();
    for (name, l) in lag.iter().filter(|(_, l)| l.known()) {
        let secs = if l.in_process { outbox_lag_secs } else { l.seconds(now) };
        s.gauge(
            "ticketing_consumer_lag_seconds",
            "How far behind a consumer is in time (0 when caught up)",
            vec![("consumer", name.clone())],
            secs,
        );
    }
    for (name, l) in lag.iter() {
        if let Some(age) = l.unmeasured(now) {
            s.gauge(
                "ticketing_consumer_lag_unmeasured_seconds",
                "How long since a Kafka consumer's lag was last measured from the broker",
                vec![("consumer", name.clone())],
                age,
            );
        }
    }
}

/// The lag alone, as Prometheus text (for tests and tools).
pub fn render(outbox_unsent: i64, outbox_lag_secs: f64) -> String {
    let mut s = crate::figures::Snapshot::default();
    collect(&mut s, outbox_unsent, outbox_lag_secs);
    s.to_text()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stalled_consumer_falls_further_behind_in_time() {
        let t0 = Instant::now();
        let mut l = Lag { messages: 5, still: Duration::from_secs(30), ..Lag::default() };
        // Behind, its committed offsets still for 30 s: 30 s behind.
        assert_eq!(l.seconds(t0), 30.0);
        // Applying old messages as it goes: as far behind as they are old.
        (l.still, l.applied_at, l.applied_age_secs) = (Duration::from_secs(1), Some(t0), 4.0);
        assert_eq!(l.seconds(t0 + Duration::from_secs(2)), 4.0);
        // What it applied long ago says nothing now.
        assert_eq!(l.seconds(t0 + INTERVAL * 3), 1.0);
        // Caught up.
        l.messages = 0;
        assert_eq!(l.seconds(t0), 0.0);
    }

    #[test]
    fn a_lag_never_or_long_ago_measured_says_how_old_it_is() {
        let t0 = Instant::now();
        assert_eq!(Lag { in_process: true, ..Lag::default() }.unmeasured(t0), None);
        let mut l = Lag { watched_since: Some(t0), ..Lag::default() };
        assert_eq!(l.unmeasured(t0 + Duration::from_secs(40)), Some(40.0), "never measured");
        l.measured_at = Some(t0 + Duration::from_secs(50));
        assert_eq!(l.unmeasured(t0 + Duration::from_secs(65)), Some(15.0));
    }

    #[test]
    fn a_lag_not_measured_yet_is_no_figure_rather_than_zero() {
        watching("lag-test-unmeasured");
        let text = render(0, 0.0);
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("lag-test-unmeasured")).collect();
        assert!(
            lines.iter().all(|l| l.starts_with("ticketing_consumer_lag_unmeasured_seconds")),
            "{lines:?}"
        );
        assert_eq!(lines.len(), 1, "{text}");
        behind("lag-test-unmeasured", 7, Duration::from_secs(3));
        let text = render(0, 0.0);
        assert!(
            text.contains("ticketing_consumer_lag_messages{consumer=\"lag-test-unmeasured\"} 7"),
            "{text}"
        );
    }
}
