//! CPU spent by the processes of a local run, from their own counters in `/proc` (through the
//! `procfs` crate): the figure a benchmark leads with, because CPU per order does not move between
//! machines the way orders per second do.
//!
//! A process group is every process whose name (`/proc/<pid>/comm`) is the group's: the core
//! (`regional-core`, each replica), PostgreSQL (`postgres`: the postmaster, its backends and its
//! workers), the edge (`workerd`), plus this load generator itself. A group's CPU is the sum over its
//! live processes of their user and system time and of their reaped children's: a backend that
//! ended during the run is counted in its postmaster's children's time, a live one in its own, so
//! every tick is counted once. Processes that ended before the run are left out by taking a
//! snapshot before and after and keeping the difference.

use std::collections::BTreeMap;

use serde::Serialize;

/// The groups a local stack has, as `(group, process name)`.
pub const STACK: [(&str, &str); 3] =
    [("core", "regional-core"), ("postgres", "postgres"), ("workerd", "workerd")];
/// This load generator's own group.
pub const SELF: &str = "loadtest";

/// CPU ticks by group at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot(BTreeMap<String, u64>);

fn ticks(stat: &procfs::process::Stat) -> u64 {
    stat.utime + stat.stime + stat.cutime.max(0) as u64 + stat.cstime.max(0) as u64
}

impl Snapshot {
    /// The ticks of each of `groups` and of this process now. A process that vanishes while being
    /// read is skipped (it is then counted in its parent's reaped children's time, if the parent is
    /// in the group).
    pub fn take(groups: &[(&str, &str)]) -> Result<Self, String> {
        let mut by_group: BTreeMap<String, u64> = groups.iter().map(|(g, _)| ((*g).to_owned(), 0)).collect();
        let me = procfs::process::Process::myself().map_err(|e| format!("/proc/self: {e}"))?;
        let own = me.stat().map_err(|e| format!("/proc/self/stat: {e}"))?;
        by_group.insert(SELF.to_owned(), ticks(&own));
        let all = procfs::process::all_processes().map_err(|e| format!("/proc: {e}"))?;
        for process in all.flatten() {
            let Ok(stat) = process.stat() else { continue };
            if let Some((group, _)) = groups.iter().find(|(_, name)| *name == stat.comm) {
                *by_group.entry((*group).to_owned()).or_default() += ticks(&stat);
            }
        }
        Ok(Self(by_group))
    }
}

/// CPU milliseconds by group between two snapshots, and in all.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Spent {
    pub by_process_ms: BTreeMap<String, f64>,
    pub total_ms: f64,
}

impl Spent {
    pub fn between(before: &Snapshot, after: &Snapshot) -> Self {
        let per_tick = 1_000.0 / procfs::ticks_per_second() as f64;
        let by_process_ms: BTreeMap<String, f64> = after
            .0
            .iter()
            .map(|(group, t)| {
                (group.clone(), t.saturating_sub(*before.0.get(group).unwrap_or(&0)) as f64 * per_tick)
            })
            .collect();
        let total_ms = by_process_ms.values().sum();
        Self { by_process_ms, total_ms }
    }

    /// The same figures divided by `n` (per order, per hold…), rounded to 0.01 ms.
    pub fn per(&self, n: u64) -> Self {
        self.divided(n.max(1) as f64)
    }

    /// The same figures per second of `seconds`.
    pub fn per_second(&self, seconds: f64) -> Self {
        self.divided(seconds.max(1e-3))
    }

    fn divided(&self, n: f64) -> Self {
        let round = |ms: f64| (ms / n * 100.0).round() / 100.0;
        Self {
            by_process_ms: self.by_process_ms.iter().map(|(g, ms)| (g.clone(), round(*ms))).collect(),
            total_ms: round(self.total_ms),
        }
    }

    /// Cores busy on average over `seconds` (the whole spend divided by the wall time).
    pub fn cores_busy(&self, seconds: f64) -> f64 {
        (self.total_ms / 1_000.0 / seconds.max(1e-9) * 100.0).round() / 100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_loop_here_is_counted_as_this_process_cpu() {
        let before = Snapshot::take(&STACK).unwrap();
        // Spin until the counters show 200 ms of this process's CPU (however busy the machine is),
        // bounded at 60 s of wall time.
        let started = std::time::Instant::now();
        let mut x = 0u64;
        let spent = loop {
            for _ in 0..1_000_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            let spent = Spent::between(&before, &Snapshot::take(&STACK).unwrap());
            if spent.by_process_ms[SELF] >= 200.0 || started.elapsed().as_secs() >= 60 {
                break spent;
            }
        };
        assert!(spent.by_process_ms[SELF] >= 200.0, "{spent:?}");
        assert!(spent.by_process_ms.contains_key("postgres") && spent.by_process_ms.contains_key("workerd"));
        assert!(spent.total_ms >= spent.by_process_ms[SELF]);
        let per = spent.per(4);
        assert!((per.by_process_ms[SELF] * 4.0 - spent.by_process_ms[SELF]).abs() < 0.1, "{per:?} {spent:?}");
    }
}
