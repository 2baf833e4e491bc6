//! The buyer's long poll of an order: `GET /api/v1/orders/{id}?wait=20&while=awaiting_payment,confirming`
//! answers as soon as the order is in none of the `while` states, or after `wait` seconds,
//! whichever comes first, so that a page (or the load generator) learns its order is paid with one
//! request instead of one every fraction of a second, each of which costs an edge request and a
//! database read.
//!
//! One watcher per process looks after every waiting request: each round it reads the states of
//! all the orders waited on in one query (at most one round per [`MIN_ROUND`], at least one per
//! [`ROUND`] while anyone waits), and wakes the requests whose order moved. A request that starts
//! waiting asks for a round at once (so an order that already moved answers without delay), and
//! so does a webhook that moved an order in this process ([`OrderWatch::poke`]). An order moved
//! by another replica is seen at the next round. Bounded: at most [`MAX_WAIT`] per request,
//! [`MAX_WAITERS_PER_ORDER`] requests per order and [`MAX_WAITERS`] per process (beyond them a
//! request answers at once, as a plain read would); a request that ends early (the client gone,
//! the request's time bound) is forgotten at once; a draining core answers every waiting request
//! at its next round.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{oneshot, Notify};
use uuid::Uuid;

use super::saga::OrderState;

/// The longest a request may wait.
pub const MAX_WAIT: Duration = Duration::from_secs(20);
/// The most requests one process keeps waiting.
pub const MAX_WAITERS: usize = 10_000;
/// The most requests kept waiting on one order (a page open in a few tabs).
pub const MAX_WAITERS_PER_ORDER: usize = 4;
/// A round at least this often while anyone waits (orders moved by another replica).
const ROUND: Duration = Duration::from_millis(100);
/// At most one round this often (many requests starting at once share one query).
const MIN_ROUND: Duration = Duration::from_millis(20);

struct Waiter {
    /// Which request this is (to forget it however the request ends).
    ticket: u64,
    states: Vec<OrderState>,
    wake: oneshot::Sender<()>,
}

/// Forgets its waiter when the request ends, whether it was answered, timed out, or dropped (the
/// client went away, the request's time bound cut it off).
struct Registered<'a> {
    watch: &'a OrderWatch,
    id: Uuid,
    ticket: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.watch.forget(self.id, self.ticket);
    }
}

/// The process's waiting requests and their watcher.
pub struct OrderWatch {
    waiting: Mutex<HashMap<Uuid, Vec<Waiter>>>,
    count: std::sync::atomic::AtomicUsize,
    tickets: std::sync::atomic::AtomicU64,
    round: Notify,
    started: AtomicBool,
    draining: Arc<AtomicBool>,
}

impl OrderWatch {
    /// A watch that answers everyone at once when `draining` is set.
    pub fn new(draining: Arc<AtomicBool>) -> Arc<Self> {
        Arc::new(Self {
            waiting: Mutex::default(),
            count: Default::default(),
            tickets: Default::default(),
            round: Notify::new(),
            started: AtomicBool::new(false),
            draining,
        })
    }

    /// How many requests are waiting now.
    pub fn waiting(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Waits until order `id` is in none of `states`, at most `wait`. Returns at once when the
    /// process is draining or already keeps [`MAX_WAITERS`] requests waiting, or
    /// [`MAX_WAITERS_PER_ORDER`] on this order: the caller then reads and answers the order as it
    /// is.
    pub async fn wait(self: &Arc<Self>, db: &PgPool, id: Uuid, states: Vec<OrderState>, wait: Duration) {
        if states.is_empty() || wait.is_zero() || self.draining.load(Ordering::Relaxed) {
            return;
        }
        let (tx, rx) = oneshot::channel();
        let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
        {
            let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            let on_order = waiting.get(&id).map_or(0, Vec::len);
            if self.count.load(Ordering::Relaxed) >= MAX_WAITERS || on_order >= MAX_WAITERS_PER_ORDER {
                return;
            }
            waiting.entry(id).or_default().push(Waiter { ticket, states, wake: tx });
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        let _registered = Registered { watch: self, id, ticket };
        self.start(db);
        self.round.notify_one();
        let _ = tokio::time::timeout(wait.min(MAX_WAIT), rx).await;
    }

    /// Asks for a round now: an order moved in this process.
    pub fn poke(&self) {
        if self.count.load(Ordering::Relaxed) > 0 {
            self.round.notify_one();
        }
    }

    /// Drops request `ticket`'s waiter on `id`, if a round has not already woken it.
    fn forget(&self, id: Uuid, ticket: u64) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = waiting.get_mut(&id) {
            let before = list.len();
            list.retain(|w| w.ticket != ticket);
            self.count.fetch_sub(before - list.len(), Ordering::Relaxed);
            if list.is_empty() {
                waiting.remove(&id);
            }
        }
    }

    /// The watcher, started by the first request that waits.
    fn start(self: &Arc<Self>, db: &PgPool) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let (watch, db) = (self.clone(), db.clone());
        tokio::spawn(async move {
            loop {
                if watch.count.load(Ordering::Relaxed) == 0 {
                    // Nobody waits: sleep until someone does.
                    watch.round.notified().await;
                    continue;
                }
                if let Err(e) = watch.one_round(&db).await {
                    tracing::warn!(error = %e, "could not read the orders waited on");
                }
                tokio::time::sleep(MIN_ROUND).await;
                let _ = tokio::time::timeout(ROUND - MIN_ROUND, watch.round.notified()).await;
            }
        });
    }

    /// Reads the states of every order waited on and wakes those that moved.
    async fn one_round(&self, db: &PgPool) -> Result<(), sqlx::Error> {
        if self.draining.load(Ordering::Relaxed) {
            let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            waiting.clear();
            self.count.store(0, Ordering::Relaxed);
            return Ok(());
        }
        let ids: Vec<Uuid> = self.waiting.lock().unwrap_or_else(|e| e.into_inner()).keys().copied().collect();
        let states: Vec<(Uuid, OrderState)> =
            sqlx::query_as("SELECT id, state FROM orders WHERE id = ANY($1)")
                .bind(&ids)
                .fetch_all(db)
                .await?;
        let states: HashMap<Uuid, OrderState> = states.into_iter().collect();
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        for id in ids {
            let Some(list) = waiting.get_mut(&id) else { continue };
            let now = states.get(&id).copied();
            let (moved, still): (Vec<Waiter>, Vec<Waiter>) = list
                .drain(..)
                .partition(|w| w.wake.is_closed() || now.is_none_or(|s| !w.states.contains(&s)));
            *list = still;
            self.count.fetch_sub(moved.len(), Ordering::Relaxed);
            for w in moved {
                let _ = w.wake.send(());
            }
            if list.is_empty() {
                waiting.remove(&id);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool that never connects: the watcher's rounds fail (and are logged), which these tests
    /// do not need.
    fn nowhere() -> PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_millis(50))
            .connect_lazy("postgres://nobody@127.0.0.1:9/none")
            .unwrap()
    }

    #[tokio::test]
    async fn a_request_that_ends_early_leaves_no_waiter_behind() {
        let watch = OrderWatch::new(Arc::default());
        let db = nowhere();
        let id = Uuid::new_v4();
        // Cut off mid-wait, as a client that went away or the request's time bound would.
        let cut = tokio::time::timeout(
            Duration::from_millis(50),
            watch.wait(&db, id, vec![OrderState::AwaitingPayment], Duration::from_secs(20)),
        )
        .await;
        assert!(cut.is_err(), "it was still waiting");
        assert_eq!(watch.waiting(), 0);
        assert!(watch.waiting.lock().unwrap().is_empty());
        // Timed out on its own: forgotten too.
        watch.wait(&db, id, vec![OrderState::AwaitingPayment], Duration::from_millis(20)).await;
        assert_eq!(watch.waiting(), 0);
    }

    #[tokio::test]
    async fn one_order_keeps_a_few_requests_waiting_and_a_draining_core_none() {
        let watch = OrderWatch::new(Arc::default());
        let db = nowhere();
        let id = Uuid::new_v4();
        let waits: Vec<_> = (0..MAX_WAITERS_PER_ORDER)
            .map(|_| {
                let (watch, db) = (watch.clone(), db.clone());
                tokio::spawn(async move {
                    watch.wait(&db, id, vec![OrderState::AwaitingPayment], Duration::from_secs(20)).await
                })
            })
            .collect();
        while watch.waiting() < MAX_WAITERS_PER_ORDER {
            tokio::task::yield_now().await;
        }
        // One more on the same order answers at once.
        tokio::time::timeout(
            Duration::from_secs(5),
            watch.wait(&db, id, vec![OrderState::AwaitingPayment], Duration::from_secs(20)),
        )
        .await
        .expect("past the order's bound, no wait");
        // Draining: the next round answers everyone, and nobody waits any more.
        watch.draining.store(true, Ordering::Relaxed);
        for w in waits {
            tokio::time::timeout(Duration::from_secs(5), w).await.expect("answered").unwrap();
        }
        assert_eq!(watch.waiting(), 0);
        tokio::time::timeout(
            Duration::from_secs(1),
            watch.wait(&db, Uuid::new_v4(), vec![OrderState::AwaitingPayment], Duration::from_secs(20)),
        )
        .await
        .expect("a draining core waits for nothing");
    }
}
