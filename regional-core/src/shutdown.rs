//! Stopping together. `serve` starts the background work (checkout's driver, the relay and its
//! consumers, publishing, mail, reminders, pruning) and the check-in service as [`Tasks`]; on
//! SIGTERM, once HTTP has drained, it asks them to stop and waits (up to a bound) for each to
//! finish the step it is in. A task sees the request through its [`Stop`]: its waits between
//! rounds end early ([`Stop::pause`]), and it returns instead of starting another round.
//!
//! Not tasks: the drive of an order that a request starts at once (a payment webhook, a checkout)
//! runs on its own; cut short at exit, its order keeps its lease until it lapses (`LEASE_SECS`,
//! `checkout/driver.rs`), then any replica's reconciler resumes it.
//!
//! Nothing depends on a task finishing: every step is recorded in PostgreSQL and leased, so a task
//! cut short (a crash, or a task that overruns the bound) is taken over by another replica. A
//! graceful stop only avoids redoing work and logs that each task ended. A leaf.

use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A task's view of the stop request. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    /// A stop that is never requested (for tools and tests that run one round by hand).
    pub fn never() -> Self {
        // A sender that lives as long as the process and never sends (a dropped one would read
        // as a stop).
        static NEVER: LazyLock<watch::Sender<bool>> = LazyLock::new(|| watch::channel(false).0);
        Stop(NEVER.subscribe())
    }

    /// True once a stop has been requested (or its [`Tasks`] are gone, which means the same).
    pub fn requested(&self) -> bool {
        *self.0.borrow() || self.0.has_changed().is_err()
    }

    /// Resolves when a stop is requested.
    pub async fn wait(&self) {
        let mut rx = self.0.clone();
        // An error means the sender is gone: stopping then is right too.
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// Waits `d`, or less when a stop is requested meanwhile: true when the task should go on.
    pub async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => !self.requested(),
            _ = self.wait() => false,
        }
    }
}

/// The tasks of one process and the means to stop them.
#[derive(Debug)]
pub struct Tasks {
    tx: Arc<watch::Sender<bool>>,
    running: Vec<(&'static str, JoinHandle<()>)>,
}

impl Default for Tasks {
    fn default() -> Self {
        Self::new()
    }
}

impl Tasks {
    pub fn new() -> Self {
        Self { tx: Arc::new(watch::channel(false).0), running: Vec::new() }
    }

    /// A handle that asks every task to stop (without waiting for them): HTTP's shutdown uses it
    /// the moment the listener closes, so that the tasks and the requests in flight finish at once.
    pub fn trigger(&self) -> impl Fn() + Send + Sync + 'static {
        let tx = self.tx.clone();
        move || {
            let _ = tx.send(true);
        }
    }

    /// What a task is given to see the stop request.
    pub fn stop(&self) -> Stop {
        Stop(self.tx.subscribe())
    }

    /// How many tasks were started.
    pub fn len(&self) -> usize {
        self.running.len()
    }

    /// True when no task was started.
    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Starts `task` (given its [`Stop`]) under `name`.
    pub fn spawn<F, Fut>(&mut self, name: &'static str, task: F)
    where
        F: FnOnce(Stop) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let handle = tokio::spawn(task(self.stop()));
        self.running.push((name, handle));
    }

    /// Asks every task to stop and waits up to `within` for them all; those still running then
    /// are aborted (and named in the log). Answers how many stopped by themselves.
    pub async fn stop_all(self, within: Duration) -> usize {
        let _ = self.tx.send(true);
        let deadline = tokio::time::Instant::now() + within;
        let mut stopped = 0;
        for (name, mut handle) in self.running {
            match tokio::time::timeout_at(deadline, &mut handle).await {
                Ok(Ok(())) => stopped += 1,
                Ok(Err(e)) => tracing::error!(task = name, error = %e, "a background task had failed"),
                Err(_) => {
                    handle.abort();
                    tracing::warn!(task = name, "a background task did not stop in time; aborted");
                }
            }
        }
        stopped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_finish_their_round_then_stop_and_an_overrunning_one_is_aborted() {
        let mut tasks = Tasks::new();
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        let tx = done_tx.clone();
        tasks.spawn("polite", move |stop| async move {
            let mut rounds = 0;
            loop {
                rounds += 1;
                if !stop.pause(Duration::from_secs(3600)).await {
                    break;
                }
            }
            tx.send(rounds).unwrap();
        });
        tasks.spawn("stubborn", |_stop| async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
        let started = std::time::Instant::now();
        let stopped = tasks.stop_all(Duration::from_millis(300)).await;
        assert_eq!(stopped, 1, "the polite task stopped, the stubborn one was aborted");
        assert_eq!(done_rx.recv().await, Some(1), "it ended in its first pause, not after an hour");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(!Stop::never().requested());
        drop(done_tx);
    }
}
