//! The retention job (docs/privacy.md, "What is kept"): run by the core's pruner every ten minutes,
//! by one core at a time (an advisory lock; the others skip that run), in small batches, each its
//! own transaction:
//!
//! 1. addresses whose erasure waited for their event ([`super::erase`]): erased once it is over;
//! 2. the buyers' addresses of an event [`Retention::after_event_days`] after it ended (orders,
//!    tickets, transfers, mails); the amounts stay;
//! 3. orders never paid (cancelled): their address after [`CANCELLED_DAYS`];
//! 4. mails and text messages after [`MAIL_DAYS`] (a sign-in link's after a day: it opens the
//!    buyer's orders);
//! 5. the outbox's messages a week after they were published ([`OUTBOX_DAYS`]);
//! 6. sign-in requests' rate records after a day.

use sqlx::PgPool;
use uuid::Uuid;

use super::{erase, Scope, Subject};

/// Days an order never paid keeps its address (to answer the buyer who asks what happened).
pub const CANCELLED_DAYS: i64 = 30;
/// Days a mail is kept after it was queued (the operator's view of what was sent, and parked
/// mails to send again).
pub const MAIL_DAYS: i64 = 30;
/// Days the ids of texts people sent are kept: a signed STOP or START replayed (Twilio's signatures
/// carry no time) is recognised for as long. Ids only: no number, no words.
pub const INCOMING_TEXT_DAYS: i64 = 400;
/// Days a published domain event stays in the outbox (the topics keep theirs as long).
pub const OUTBOX_DAYS: i64 = 7;
/// Rows one statement changes.
const BATCH: i64 = 500;
/// Most batches of one step in one run (the next run goes on).
const MAX_BATCHES: usize = 200;

/// The retention settings (`CORE_PERSONAL_DATA_RETENTION_DAYS`).
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Days after an event ended that its buyers' addresses are kept.
    pub after_event_days: u32,
}

/// What one run did, by step.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub deferred_erasures: u64,
    pub orders: u64,
    pub tickets: u64,
    pub transfers: u64,
    pub events_done: u64,
    pub cancelled_orders: u64,
    pub mails: u64,
    pub texts: u64,
    /// Ids of texts people sent (their replay guard), after [`INCOMING_TEXT_DAYS`].
    pub texts_received: u64,
    pub outbox_messages: u64,
    pub sign_in_requests: u64,
}

impl Pruned {
    pub fn total(&self) -> u64 {
        self.deferred_erasures
            + self.orders
            + self.tickets
            + self.transfers
            + self.cancelled_orders
            + self.mails
            + self.texts
            + self.texts_received
            + self.outbox_messages
            + self.sign_in_requests
    }
}

/// Runs every step once, unless another core is running them (then nothing: the next run goes on).
pub async fn run(db: &PgPool, settings: Retention) -> Result<Pruned, sqlx::Error> {
    // A session lock on a connection of its own, closed at the end whatever happens (so the lock
    // can never stay behind on a pooled connection).
    let mut lock = db.acquire().await?.detach();
    let mine: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended('privacy-retention', 0))")
            .fetch_one(&mut lock)
            .await?;
    if !mine {
        return Ok(Pruned::default());
    }
    let done = run_steps(db, settings).await;
    let _ = sqlx::Connection::close(lock).await;
    done
}

async fn run_steps(db: &PgPool, settings: Retention) -> Result<Pruned, sqlx::Error> {
    let mut out = Pruned { deferred_erasures: deferred(db).await?, ..Pruned::default() };
    events(db, settings, &mut out).await?;
    let cancelled = format!(
        "UPDATE orders SET email = erased_address(id), visitor_id = 'erased:' || id, last_error = NULL,
                           phone = NULL, erased_at = now()
         WHERE id IN (SELECT id FROM orders WHERE state = 'cancelled' AND erased_at IS NULL
                      AND updated_at < now() - interval '{CANCELLED_DAYS} days' LIMIT {BATCH})"
    );
    let mails = format!(
        "DELETE FROM notifications WHERE id IN (SELECT id FROM notifications
           WHERE created_at < now() - interval '{MAIL_DAYS} days'
              OR (kind = 'sign_in_link' AND created_at < now() - interval '1 day') LIMIT {BATCH})"
    );
    let texts = format!(
        "DELETE FROM sms_messages WHERE id IN (SELECT id FROM sms_messages
           WHERE created_at < now() - interval '{MAIL_DAYS} days' LIMIT {BATCH})"
    );
    let incoming = format!(
        "DELETE FROM sms_incoming WHERE message_sid IN (SELECT message_sid FROM sms_incoming
           WHERE received_at < now() - interval '{INCOMING_TEXT_DAYS} days' LIMIT {BATCH})"
    );
    let messages = format!(
        "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox
           WHERE sent_at < now() - interval '{OUTBOX_DAYS} days' LIMIT {BATCH})"
    );
    let requests = format!(
        "DELETE FROM sign_in_requests WHERE id IN (SELECT id FROM sign_in_requests
           WHERE at < now() - interval '1 day' LIMIT {BATCH})"
    );
    for (count, statement) in [
        (&mut out.cancelled_orders, cancelled),
        (&mut out.mails, mails),
        (&mut out.texts, texts),
        (&mut out.texts_received, incoming),
        (&mut out.outbox_messages, messages),
        (&mut out.sign_in_requests, requests),
    ] {
        *count += batches(db, &statement, None).await?;
    }
    Ok(out)
}

/// Runs `statement` (which changes at most [`BATCH`] rows, binding `event` as `$1` when given)
/// until it changes fewer; answers how many rows it changed in all, and whether it got to the end
/// (else the next run goes on).
async fn batches_to_end(
    db: &PgPool,
    statement: &str,
    event: Option<Uuid>,
) -> Result<(u64, bool), sqlx::Error> {
    let mut total = 0;
    for _ in 0..MAX_BATCHES {
        let mut query = sqlx::query(statement);
        if let Some(event) = event {
            query = query.bind(event);
        }
        let changed = query.execute(db).await?.rows_affected();
        total += changed;
        if changed < BATCH as u64 {
            return Ok((total, true));
        }
    }
    Ok((total, false))
}

/// [`batches_to_end`], for the steps that simply go on at the next run.
async fn batches(db: &PgPool, statement: &str, event: Option<Uuid>) -> Result<u64, sqlx::Error> {
    Ok(batches_to_end(db, statement, event).await?.0)
}

/// Step 1: erasures that waited for their event, now over: each (event, address) erased as a
/// request for that event alone would.
async fn deferred(db: &PgPool) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    for _ in 0..MAX_BATCHES {
        let due: Vec<(Uuid, String)> = sqlx::query_as(&format!(
            "SELECT DISTINCT d.event_id, d.address FROM (
                 SELECT o.event_id, lower(o.email) AS address FROM orders o JOIN events e ON e.id = o.event_id
                 WHERE o.erase_requested_at IS NOT NULL AND o.erased_at IS NULL AND e.ends_at <= now()
                 UNION ALL
                 SELECT t.event_id, lower(t.holder_email) FROM tickets t JOIN events e ON e.id = t.event_id
                 WHERE t.erase_requested_at IS NOT NULL AND t.erased_at IS NULL AND e.ends_at <= now()
                 UNION ALL
                 SELECT x.event_id, lower(x.to_email) FROM ticket_transfers x JOIN events e ON e.id = x.event_id
                 WHERE x.erase_requested_at IS NOT NULL AND x.to_email NOT LIKE '%@erased.invalid'
                   AND e.ends_at <= now()
             ) d LIMIT {BATCH}"
        ))
        .fetch_all(db)
        .await?;
        if due.is_empty() {
            break;
        }
        let mut progressed = false;
        for (event, address) in due {
            let mut tx = db.begin().await?;
            let erased = match Subject::parse(&address) {
                Some(subject) => {
                    let done =
                        erase::erase(&mut tx, Scope::Platform, &subject, erase::Upcoming::Keep, Some(event))
                            .await?;
                    done.orders + done.tickets + done.transfers
                }
                None => 0,
            };
            if erased == 0 {
                // An address the rules no longer take (stored before they changed): erased row by row,
                // texts first (they are found through the rows' addresses).
                sqlx::query(
                    "DELETE FROM sms_messages s USING orders o
                     WHERE s.order_id = o.id AND o.event_id = $1 AND lower(o.email) = $2
                       AND o.erase_requested_at IS NOT NULL AND o.erased_at IS NULL",
                )
                .bind(event)
                .bind(&address)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "DELETE FROM sms_messages s USING ticket_transfers x
                     WHERE x.event_id = $1 AND lower(x.to_email) = $2 AND x.erase_requested_at IS NOT NULL
                       AND s.kind = 'transfer_offer' AND s.dedup_key = 'transfer_offer:' || x.id",
                )
                .bind(event)
                .bind(&address)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE orders SET email = erased_address(id), visitor_id = 'erased:' || id, phone = NULL, erased_at = now()
                     WHERE event_id = $1 AND lower(email) = $2 AND erase_requested_at IS NOT NULL AND erased_at IS NULL",
                )
                .bind(event)
                .bind(&address)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE tickets SET holder_email = erased_address(id), erased_at = now()
                     WHERE event_id = $1 AND lower(holder_email) = $2 AND erase_requested_at IS NOT NULL AND erased_at IS NULL",
                )
                .bind(event)
                .bind(&address)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE ticket_transfers SET to_email = erased_address(id), to_phone = NULL
                     WHERE event_id = $1 AND lower(to_email) = $2 AND erase_requested_at IS NOT NULL",
                )
                .bind(event)
                .bind(&address)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            total += 1;
            progressed = true;
        }
        if !progressed {
            break;
        }
    }
    Ok(total)
}

/// Step 2: the events over for longer than the retention: their buyers' addresses, then the event
/// marked done (it is never looked at again).
async fn events(db: &PgPool, settings: Retention, out: &mut Pruned) -> Result<(), sqlx::Error> {
    let due: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM events WHERE personal_data_erased_at IS NULL
           AND ends_at < now() - make_interval(days => $1) ORDER BY ends_at LIMIT 20",
    )
    .bind(settings.after_event_days as i32)
    .fetch_all(db)
    .await?;
    for event in due {
        let steps = [
            format!(
                "UPDATE tickets SET holder_email = erased_address(id), erased_at = now()
                 WHERE id IN (SELECT id FROM tickets WHERE event_id = $1 AND erased_at IS NULL LIMIT {BATCH})"
            ),
            format!(
                "UPDATE ticket_transfers SET from_email = erased_address(id), to_email = erased_address(id), to_phone = NULL
                 WHERE id IN (SELECT id FROM ticket_transfers WHERE event_id = $1
                              AND (from_email NOT LIKE '%@erased.invalid' OR to_email NOT LIKE '%@erased.invalid'
                                   OR to_phone IS NOT NULL)
                              LIMIT {BATCH})"
            ),
            format!(
                "UPDATE orders SET email = erased_address(id), visitor_id = 'erased:' || id, last_error = NULL,
                                   phone = NULL, erased_at = now()
                 WHERE id IN (SELECT id FROM orders WHERE event_id = $1 AND erased_at IS NULL LIMIT {BATCH})"
            ),
            format!("DELETE FROM notifications WHERE id IN (SELECT id FROM notifications WHERE event_id = $1 LIMIT {BATCH})"),
            format!("DELETE FROM sms_messages WHERE id IN (SELECT id FROM sms_messages WHERE event_id = $1 LIMIT {BATCH})"),
        ];
        let mut finished = true;
        let mut counts = [0u64; 5];
        for (i, step) in steps.iter().enumerate() {
            let (n, done) = batches_to_end(db, step, Some(event)).await?;
            counts[i] = n;
            finished &= done;
        }
        let [tickets, transfers, orders, mails, texts] = counts;
        out.texts += texts;
        out.tickets += tickets;
        out.transfers += transfers;
        out.orders += orders;
        out.mails += mails;
        if !finished {
            // More than one run's share: the next run goes on with this event.
            continue;
        }
        sqlx::query("UPDATE events SET personal_data_erased_at = now() WHERE id = $1")
            .bind(event)
            .execute(db)
            .await?;
        out.events_done += 1;
    }
    Ok(())
}
