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
//! by another replica is seen at the next round. Bounded: at most [`MAX_WAIT`] per request and
//! [`MAX_WAITERS`] requests per process (beyond them a request answers at once, as a plain read
//! would); a draining core answers every waiting request at once.

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
/// A round at least this often while anyone waits (orders moved by another replica).
const ROUND: Duration = Duration::from_millis(100);
/// At most one round this often (many requests starting at once share one query).
const MIN_ROUND: Duration = Duration::from_millis(20);

struct Waiter {
    states: Vec<OrderState>,
    wake: oneshot::Sender<()>,
}

/// The process's waiting requests and their watcher.
pub struct OrderWatch {
    waiting: Mutex<HashMap<Uuid, Vec<Waiter>>>,
    count: std::sync::atomic::AtomicUsize,
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
    /// process is draining or already keeps [`MAX_WAITERS`] requests waiting: the caller then
    /// reads and answers the order as it is.
    pub async fn wait(self: &Arc<Self>, db: &PgPool, id: Uuid, states: Vec<OrderState>, wait: Duration) {
        if states.is_empty() || wait.is_zero() || self.draining.load(Ordering::Relaxed) {
            return;
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            if self.count.load(Ordering::Relaxed) >= MAX_WAITERS {
                return;
            }
            waiting.entry(id).or_default().push(Waiter { states, wake: tx });
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        self.start(db);
        self.round.notify_one();
        let _ = tokio::time::timeout(wait.min(MAX_WAIT), rx).await;
        self.forget(id);
    }

    /// Asks for a round now: an order moved in this process.
    pub fn poke(&self) {
        if self.count.load(Ordering::Relaxed) > 0 {
            self.round.notify_one();
        }
    }

    /// Drops the waiters of `id` whose request has ended (timed out or woken).
    fn forget(&self, id: Uuid) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = waiting.get_mut(&id) {
            let before = list.len();
            list.retain(|w| !w.wake.is_closed());
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
            let (moved, still): (Vec<Waiter>, Vec<Waiter>) =
                list.drain(..).partition(|w| now.is_none_or(|s| !w.states.contains(&s)));
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
