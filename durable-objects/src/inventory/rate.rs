//! How often one visitor may ask an inventory object for a hold: at most [`HOLDS_PER_WINDOW`] in
//! each [`WINDOW_MS`] window, counted in the object (the single writer of its seats, so the count is
//! exact per object). A hold over the rate is answered `429` with `Retry-After` before the ledger
//! sees it: nothing is placed or remembered. The windows live in memory only (an evicted object
//! starts counting afresh, which is harmless for a rate), and ended windows are dropped by the
//! object's alarm and, when there are many, at most once a window: the map holds the visitors of
//! the last two minutes at most.

use std::collections::HashMap;

use shared_types::ids::VisitorId;

use super::ledger::Millis;

/// Hold requests one visitor may make of one object per window: a buyer picks and re-picks seats a
/// few times a minute; a script sending fresh keys is cut off here.
pub const HOLDS_PER_WINDOW: u32 = 30;
/// The edge's variable that changes [`HOLDS_PER_WINDOW`], for a test environment that asks more of
/// one visitor than a buyer would (the API fuzzing); production leaves it unset.
pub const RATE_VAR: &str = "HOLDS_PER_VISITOR_PER_MINUTE";
/// The most [`RATE_VAR`] may allow.
pub const MAX_HOLDS_PER_WINDOW: u32 = 10_000;

/// The rate [`RATE_VAR`] sets: 1 to [`MAX_HOLDS_PER_WINDOW`]; anything else, or nothing, is
/// [`HOLDS_PER_WINDOW`].
pub fn per_window(configured: Option<&str>) -> u32 {
    configured
        .and_then(|v| v.trim().parse().ok())
        .filter(|n| (1..=MAX_HOLDS_PER_WINDOW).contains(n))
        .unwrap_or(HOLDS_PER_WINDOW)
}
/// The window.
pub const WINDOW_MS: Millis = 60_000;
/// Ended windows are dropped once the map holds this many visitors.
const PRUNE_ABOVE: usize = 4_096;

#[derive(Debug)]
pub struct HoldRate {
    /// Requests a visitor may make in a window ([`per_window`]).
    per_window: u32,
    /// Each visitor's current window: when it started, and the requests in it.
    windows: HashMap<VisitorId, (Millis, u32)>,
    /// When ended windows were last dropped (at most once a window, so a big sale pays it once a
    /// minute, not on every hold).
    pruned_at: Millis,
}

impl Default for HoldRate {
    fn default() -> Self {
        HoldRate::new(HOLDS_PER_WINDOW)
    }
}

impl HoldRate {
    pub fn new(per_window: u32) -> Self {
        HoldRate { per_window, windows: HashMap::new(), pruned_at: 0 }
    }

    /// Counts one hold request of `visitor` at `now`; `Err(ms)` when over the rate, with how long
    /// until the window ends.
    pub fn attempt(&mut self, visitor: &VisitorId, now: Millis) -> Result<(), Millis> {
        if self.windows.len() >= PRUNE_ABOVE && now - self.pruned_at >= WINDOW_MS {
            self.prune(now);
        }
        let window = self.windows.entry(visitor.clone()).or_insert((now, 0));
        if now - window.0 >= WINDOW_MS {
            *window = (now, 0);
        }
        if window.1 >= self.per_window {
            return Err(window.0 + WINDOW_MS - now);
        }
        window.1 += 1;
        Ok(())
    }

    /// Drops the windows that ended before `now`.
    pub fn prune(&mut self, now: Millis) {
        self.windows.retain(|_, (start, _)| now - *start < WINDOW_MS);
        self.pruned_at = now;
    }

    /// Visitors with a window.
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visitor(n: u32) -> VisitorId {
        VisitorId::parse(&format!("v{n:016x}")).unwrap()
    }

    #[test]
    fn a_visitor_gets_the_rate_and_then_waits_for_the_window() {
        let mut rate = HoldRate::default();
        let t0 = 1_800_000_000_000;
        for i in 0..HOLDS_PER_WINDOW {
            assert_eq!(rate.attempt(&visitor(1), t0 + Millis::from(i)), Ok(()));
        }
        assert_eq!(rate.attempt(&visitor(1), t0 + 1_000), Err(WINDOW_MS - 1_000));
        assert_eq!(rate.attempt(&visitor(2), t0 + 1_000), Ok(()), "another visitor has their own");
        assert_eq!(rate.attempt(&visitor(1), t0 + WINDOW_MS), Ok(()), "a new window");
    }

    #[test]
    fn the_environment_may_change_the_rate_within_bounds() {
        assert_eq!(per_window(None), HOLDS_PER_WINDOW);
        assert_eq!(per_window(Some("600")), 600);
        for refused in ["0", "-1", "10001", "many", ""] {
            assert_eq!(per_window(Some(refused)), HOLDS_PER_WINDOW, "{refused}");
        }
        let mut rate = HoldRate::new(2);
        let t0 = 1_800_000_000_000;
        assert!(rate.attempt(&visitor(1), t0).is_ok() && rate.attempt(&visitor(1), t0).is_ok());
        assert!(rate.attempt(&visitor(1), t0).is_err());
    }

    #[test]
    fn ended_windows_are_dropped_so_the_map_stays_small() {
        let mut rate = HoldRate::default();
        let t0 = 1_800_000_000_000;
        for n in 0..10_000 {
            let _ = rate.attempt(&visitor(n), t0 + Millis::from(n) * 100);
        }
        // 600 visitors a minute: never more than two windows' worth, pruned once a minute at most.
        assert!(rate.len() <= PRUNE_ABOVE + 1_200, "{}", rate.len());
        rate.prune(t0 + 10_000 * 100 + WINDOW_MS);
        assert!(rate.is_empty());
    }
}
