//! The outbox relay: publishes unsent outbox rows in id order, and marks a row sent only after its
//! sink acknowledged it (the broker, with `acks=all`; or every in-process consumer, committed). A
//! crash between the two sends the row again: consumers deduplicate by message id ([`super::deliver_batch`]).
//!
//! One relay publishes at a time across every core (a PostgreSQL advisory lock held on a dedicated
//! connection), so rows go out in one order; the others wait to take over.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

use super::kafka::Publisher;
use super::{deliver_batch, Consumer, Message};
use crate::shutdown::Stop;

/// The advisory lock that makes one relay the publisher ("outbox" in ASCII).
const RELAY_LOCK: i64 = 0x6f75_7462_6f78;

/// Where the relay delivers.
pub enum Sink {
    /// A Kafka-protocol broker; the consumers read it in their own groups.
    Kafka(Publisher),
    /// No broker: straight to the consumers, in this process.
    InProcess(Vec<Arc<dyn Consumer>>),
}

pub struct Relay {
    db: PgPool,
    sink: Sink,
    /// Rows per batch.
    batch: i64,
    /// Test only: stop (as a crash would) after this many rows of a batch were acknowledged, before
    /// marking any of them sent.
    crash_after: Option<usize>,
}

impl Relay {
    pub fn new(db: PgPool, sink: Sink) -> Self {
        Self { db, sink, batch: 500, crash_after: None }
    }

    pub fn with_batch(mut self, rows: i64) -> Self {
        self.batch = rows.max(1);
        self
    }

    /// Test only: see [`Relay::crash_after`].
    pub fn crashing_after(mut self, rows: usize) -> Self {
        self.crash_after = Some(rows);
        self
    }

    /// Publishes until asked to stop: takes the relay lock, then relays every `poll` (at once
    /// again while batches come back full). On a stop, the batch under way is finished first (the
    /// broker's acknowledgements recorded), then the lock is released at once, so that another
    /// replica relays without waiting for this process to end.
    pub async fn run(mut self, poll: Duration, stop: Stop) {
        while !stop.requested() {
            let mut lock = match self.db.acquire().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "relay: no database connection");
                    stop.pause(poll).await;
                    continue;
                }
            };
            let held: Result<bool, _> = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(RELAY_LOCK)
                .fetch_one(&mut *lock)
                .await;
            if !matches!(held, Ok(true)) {
                // Another core relays; try again later (it may stop).
                drop(lock);
                stop.pause(poll * 4).await;
                continue;
            }
            tracing::info!(sink = self.sink_name(), "relay: publishing the outbox");
            let mut idle = 0u32;
            while !stop.requested() {
                match self.relay_batch().await {
                    Ok(n) if n as i64 >= self.batch => continue,
                    Ok(0) => idle += 1,
                    Ok(_) => idle = 0,
                    Err(e) => tracing::warn!(error = %e, "relay: batch failed; retrying"),
                }
                // Polled, not woken by NOTIFY: PostgreSQL serializes the commits of transactions
                // that notify, which would throttle every checkout.
                if !stop.pause(poll).await {
                    break;
                }
                if idle >= 50 {
                    // Idle for a while: is the lock still ours? (A lost connection releases it.)
                    idle = 0;
                    let still: Result<i64, _> =
                        sqlx::query_scalar("SELECT 1::int8").fetch_one(&mut *lock).await;
                    if still.is_err() {
                        break;
                    }
                }
            }
            if stop.requested() {
                // The lock is the connection's (a pooled one would keep it): released by hand.
                let _ =
                    sqlx::query("SELECT pg_advisory_unlock($1)").bind(RELAY_LOCK).execute(&mut *lock).await;
                tracing::info!("relay: stopped; the lock is released");
            }
        }
    }

    fn sink_name(&self) -> &'static str {
        match self.sink {
            Sink::Kafka(_) => "kafka",
            Sink::InProcess(_) => "in-process",
        }
    }

    /// Relays one batch of unsent rows; answers how many were marked sent.
    pub async fn relay_batch(&mut self) -> Result<usize, String> {
        let rows: Vec<Message> = sqlx::query_as(
            "SELECT id, topic, key, payload FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT $1",
        )
        .bind(self.batch)
        .fetch_all(&self.db)
        .await
        .map_err(|e| e.to_string())?;
        if rows.is_empty() {
            return Ok(0);
        }
        let rows = match self.crash_after {
            Some(n) => &rows[..n.min(rows.len())],
            None => &rows[..],
        };
        let delivered = match &mut self.sink {
            Sink::Kafka(publisher) => publisher.publish(rows).await,
            Sink::InProcess(consumers) => deliver_in_process(&self.db, consumers, rows).await,
        };
        if self.crash_after.is_some() {
            return Err(format!("simulated crash after {delivered} acknowledged rows, none marked sent"));
        }
        let ids: Vec<i64> = rows[..delivered].iter().map(|m| m.id).collect();
        if !ids.is_empty() {
            sqlx::query("UPDATE outbox SET sent_at = now() WHERE id = ANY($1)")
                .bind(&ids)
                .execute(&self.db)
                .await
                .map_err(|e| e.to_string())?;
        }
        if delivered < rows.len() {
            return Err(format!("{} of {} rows delivered", delivered, rows.len()));
        }
        Ok(delivered)
    }
}

/// Delivers `rows` to every consumer, each consumer's share in one transaction; answers how many
/// rows every consumer applied (all of them, or none: a failed consumer has them all again, and
/// the others recognize what they already applied).
async fn deliver_in_process(db: &PgPool, consumers: &[Arc<dyn Consumer>], rows: &[Message]) -> usize {
    for c in consumers {
        if let Err(e) = deliver_batch(db, c.as_ref(), rows).await {
            tracing::warn!(consumer = c.name(), error = %e, "consumer failed; retrying");
            return 0;
        }
    }
    rows.len()
}

/// The relay's backlog: outbox rows not yet relayed, and seconds since the oldest of them was
/// written (0 when none). One read of the partial index `outbox_unsent`.
pub async fn backlog(db: &PgPool) -> Result<(i64, f64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at))::float8, 0)
         FROM outbox WHERE sent_at IS NULL",
    )
    .fetch_one(db)
    .await
}

/// Marks the outbox's messages in a range as unsent (`regional-core replay-outbox`): those with an id
/// from `from_id`, or written from `since`, up to `until_id` when given. The relay then sends them
/// again in id order; the core's consumers apply each message once (`consumed_messages`), so only
/// downstream readers of Kafka see them again. Answers how many were marked.
pub async fn replay(
    db: &PgPool,
    from_id: Option<i64>,
    since: Option<chrono::DateTime<chrono::Utc>>,
    until_id: Option<i64>,
) -> Result<u64, sqlx::Error> {
    let marked = sqlx::query(
        "UPDATE outbox SET sent_at = NULL
         WHERE sent_at IS NOT NULL
           AND ($1::int8 IS NULL OR id >= $1)
           AND ($2::timestamptz IS NULL OR created_at >= $2)
           AND ($3::int8 IS NULL OR id <= $3)",
    )
    .bind(from_id)
    .bind(since)
    .bind(until_id)
    .execute(db)
    .await?;
    Ok(marked.rows_affected())
}
