//! How long an inventory object remembers what ended: released and expired holds (so that a
//! retried release or a late confirm gets a precise answer rather than "not found") and the
//! answers to idempotency keys (so that a retried hold gets its first answer). An hour each by
//! default; the alarm forgets them after it, from memory and storage alike. An answer is kept at
//! least as long as the hold it placed may live, whatever the setting ([`Retention::answers_under`]):
//! a retry while its hold lives is always a replay, never a second hold; and an ended hold at least
//! as long as its answer ([`Retention::ended_holds_under`]).
//!
//! The edge's [`VAR`] shortens both, for a run that must reach the objects' steady state sooner
//! than an hour (the soak, docs/reliability.md). Production leaves it unset (a unit test of the
//! edge refuses it in `wrangler.toml`, and the objects say so at `warn` when it is set): a shorter
//! memory of ended holds narrows the time in which a payment that completes after its hold ended
//! can still take the seats back (the core's reclaim) rather than be refunded. It may not lengthen
//! them: what an object remembers is bounded by the default.

use shared_types::inventory::HoldSettings;

/// Milliseconds (the ledger's `Millis`).
type Millis = i64;

/// How long ended holds and the answers to idempotency keys are remembered, by default.
pub const DEFAULT_RETENTION_MS: Millis = 60 * 60 * 1000;
/// How long the answer to an idempotency key is remembered, by default.
pub const IDEMPOTENCY_RETENTION_MS: Millis = DEFAULT_RETENTION_MS;
/// How long an ended (released or expired) hold is remembered, by default.
pub const ENDED_HOLD_RETENTION_MS: Millis = DEFAULT_RETENTION_MS;

/// The edge's variable that shortens both retentions to its number of seconds.
pub const VAR: &str = "HOLD_RECORDS_RETENTION_SECONDS";
/// The least [`VAR`] may set: five minutes for the core's confirm or reclaim after a hold ended
/// (a payment completing late), well past the test provider's webhooks and the core's retries.
pub const MIN_SECONDS: i64 = 300;
/// The most [`VAR`] may set: the default.
pub const MAX_SECONDS: i64 = DEFAULT_RETENTION_MS / 1_000;

/// How long what ended is remembered: ended holds and the answers to idempotency keys alike, each
/// then kept longer where the event's hold settings need it ([`Retention::answers_under`],
/// [`Retention::ended_holds_under`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub ms: Millis,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { ms: DEFAULT_RETENTION_MS }
    }
}

impl Retention {
    /// The retention [`VAR`] sets: [`MIN_SECONDS`] to [`MAX_SECONDS`]; anything else, or nothing,
    /// is the default.
    pub fn configured(value: Option<&str>) -> Self {
        match value.and_then(|v| v.trim().parse::<i64>().ok()) {
            Some(s) if (MIN_SECONDS..=MAX_SECONDS).contains(&s) => Retention { ms: s * 1_000 },
            _ => Retention::default(),
        }
    }

    /// How long an answer is kept for an event with `settings`: the retention, and at least as
    /// long as the hold it placed may live (its hold time and its one extension).
    pub fn answers_under(&self, settings: &HoldSettings) -> Millis {
        let longest =
            (Millis::from(settings.hold_seconds) + Millis::from(settings.extension_seconds)) * 1_000;
        self.ms.max(longest)
    }

    /// How long an ended hold is kept for an event with `settings`: at least as long as an answer
    /// that names it ([`Retention::answers_under`]; the answer was given before the hold ended, so
    /// the hold outlives it). An answer never names a forgotten hold: a retry gets the hold as it
    /// is, ended, never the snapshot of a hold that is gone, and a restart (which reads an answer
    /// from its hold's row) answers the same.
    pub fn ended_holds_under(&self, settings: &HoldSettings) -> Millis {
        self.answers_under(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variable_shortens_both_within_bounds_and_nothing_else_changes_the_default() {
        assert_eq!(Retention::configured(Some(" 300 ")), Retention { ms: 300_000 });
        assert_eq!(Retention::configured(Some("900")).ms, 900_000);
        for bad in
            [None, Some(""), Some("299"), Some("60"), Some("3601"), Some("-1"), Some("5m"), Some("1e3")]
        {
            assert_eq!(Retention::configured(bad), Retention::default(), "{bad:?}");
        }
        assert_eq!(Retention::configured(Some("3600")), Retention::default());
    }

    #[test]
    fn an_answer_outlives_the_hold_it_placed() {
        let settings = |hold_seconds, extension_seconds| HoldSettings {
            hold_seconds,
            extension_seconds,
            max_tickets_per_visitor: 8,
        };
        let short = Retention::configured(Some("300"));
        assert_eq!(short.answers_under(&settings(600, 600)), 1_200_000);
        assert_eq!(short.answers_under(&settings(60, 60)), 300_000);
        // At the edge's bounds a hold may live two hours: longer than the default hour.
        assert_eq!(Retention::default().answers_under(&settings(3_600, 3_600)), 7_200_000);
        assert_eq!(Retention::default().answers_under(&settings(600, 600)), 3_600_000);
        // An ended hold outlives the answers that name it.
        assert_eq!(short.ended_holds_under(&settings(600, 600)), 1_200_000);
        assert_eq!(short.ended_holds_under(&settings(60, 60)), 300_000);
        assert_eq!(Retention::default().ended_holds_under(&settings(3_600, 3_600)), 7_200_000);
    }
}
