//! Sends queued texts through the provider ([`super::twilio`]).
//!
//! - Texts are claimed with a lease, so two cores never send one at once; every later write names
//!   the claim (a sender whose claim lapsed changes nothing), and a text is handed to the provider
//!   only while a third of the claim is left (one attempt takes at most the provider's timeout).
//! - Just before it is handed over, one transaction under a lock on the number checks that the
//!   number has not opted out, that a transfer offer is still open, and that the number is under
//!   its cap counting texts sent in the last 24 hours and texts other cores are sending now; it
//!   then marks the text as being sent. An opt-out that comes later than that finds the text in
//!   flight and leaves it (it was sent before the STOP was read).
//! - The provider's refusal of an unsubscribed number (error 21610) opts it out here too.
//! - A temporary failure (no answer, 401, 403, 404, 429, 5xx: a token being rotated, the provider
//!   down) is retried with exponential backoff; a permanent one (another 4xx: a number that is
//!   none, a landline) or `max_attempts` failures end the text as `failed`.
//! - A text the provider took is `sent`; its delivery reports ([`super::routes`]) move it on.
//!
//! A text is sent at most once unless the provider takes it without its answer reaching us (a cut
//! connection, a timeout) or the `sent` mark cannot be written for a lease after the claim: the
//! Messages API has no idempotency key, so that text is tried again on its next attempt and may
//! arrive twice (docs/sms.md).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::twilio::{Refused, Twilio, UNSUBSCRIBED};

/// How long a sender holds the texts it claims.
pub const LEASE: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct SmsSenderSettings {
    /// Attempts before a text fails for good.
    pub max_attempts: i32,
    /// The first retry's delay (doubled at each attempt, at most an hour).
    pub retry_base: Duration,
    /// Most texts to one number in 24 hours.
    pub per_day: i64,
}

pub struct SmsSender {
    db: PgPool,
    provider: Twilio,
    settings: SmsSenderSettings,
}

#[derive(sqlx::FromRow)]
struct Due {
    id: Uuid,
    dedup_key: String,
    kind: String,
    recipient: String,
    body: String,
    attempts: i32,
    lease_until: DateTime<Utc>,
}

/// What the check before a send found.
enum Reserved {
    /// Marked as being sent: hand it over.
    Go,
    /// Not to be sent: suppressed, with why.
    Suppress(&'static str),
    /// Over the number's cap: try again then.
    Wait(DateTime<Utc>),
    /// The claim lapsed (another sender has the text).
    Lost,
}

fn count(outcome: &str) {
    crate::metrics::SMS_SENDS.get_or_create(&vec![("outcome", outcome.to_owned())]).inc();
}

impl SmsSender {
    pub fn new(db: PgPool, provider: Twilio, settings: SmsSenderSettings) -> Self {
        Self { db, provider, settings }
    }

    /// Sends due texts until asked to stop.
    pub async fn run(self: Arc<Self>, poll: Duration, stop: crate::shutdown::Stop) {
        while !stop.requested() {
            match self.send_batch(Some(&stop)).await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "sms: could not read due texts"),
            }
            if !stop.pause(poll).await {
                break;
            }
        }
    }

    /// Claims and sends one batch of due texts; answers how many it claimed.
    pub async fn send_due(&self) -> Result<usize, sqlx::Error> {
        self.send_batch(None).await
    }

    async fn send_batch(&self, stop: Option<&crate::shutdown::Stop>) -> Result<usize, sqlx::Error> {
        // The claim ends no sooner than this, by this process's clock (taken before the database
        // starts the lease).
        let lease_ends = Instant::now() + LEASE;
        let due: Vec<Due> = sqlx::query_as(
            "UPDATE sms_messages SET lease_until = now() + make_interval(secs => $1)
             WHERE id IN (SELECT id FROM sms_messages
                          WHERE state = 'pending' AND next_attempt_at <= now()
                            AND (lease_until IS NULL OR lease_until < now())
                            -- Handed to the provider by a sender whose mark may still land: not
                            -- before it has had a lease past its claim to write it.
                            AND (sending_at IS NULL OR sending_at < now() - make_interval(secs => $1 * 2))
                          ORDER BY next_attempt_at LIMIT 16 FOR UPDATE SKIP LOCKED)
             RETURNING id, dedup_key, kind, recipient, body, attempts, lease_until",
        )
        .bind(LEASE.as_secs_f64())
        .fetch_all(&self.db)
        .await?;
        let n = due.len();
        // One number's texts one after the other (so that its cap counts each), numbers at once.
        let mut by_number: std::collections::BTreeMap<&str, Vec<&Due>> = Default::default();
        for d in &due {
            by_number.entry(d.recipient.as_str()).or_default().push(d);
        }
        let sends = by_number.into_values().map(|texts| async move {
            for d in texts {
                let stopping = stop.is_some_and(|s| s.requested());
                if stopping || lease_ends.saturating_duration_since(Instant::now()) < LEASE / 3 {
                    // Given back for another core (or the next batch): not an attempt.
                    self.release(d).await?;
                    continue;
                }
                self.send_one(d, lease_ends).await?;
            }
            Ok::<(), sqlx::Error>(())
        });
        for r in futures_util::future::join_all(sends).await {
            r?;
        }
        Ok(n)
    }

    async fn release(&self, d: &Due) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE sms_messages SET lease_until = NULL WHERE id = $1 AND lease_until = $2")
            .bind(d.id)
            .bind(d.lease_until)
            .execute(&self.db)
            .await?;
        Ok(())
    }

    /// The check before a send, in one transaction under a lock on the number (see the module).
    async fn reserve(&self, d: &Due) -> Result<Reserved, sqlx::Error> {
        let mut tx = self.db.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('sms:' || $1, 0))")
            .bind(&d.recipient)
            .execute(&mut *tx)
            .await?;
        let opted_out: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM sms_opt_outs WHERE phone = $1)")
                .bind(&d.recipient)
                .fetch_one(&mut *tx)
                .await?;
        if opted_out {
            return Ok(Reserved::Suppress("the number opted out"));
        }
        if d.kind == "transfer_offer" {
            let transfer = d.dedup_key.strip_prefix("transfer_offer:").and_then(|t| t.parse::<Uuid>().ok());
            let open: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM ticket_transfers WHERE id = $1 AND state = 'offered' AND expires_at > now())",
            )
            .bind(transfer)
            .fetch_one(&mut *tx)
            .await?;
            if !open {
                return Ok(Reserved::Suppress("the offer is no longer open"));
            }
        }
        let (used, oldest): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
            "SELECT count(*), min(sent_at) FROM sms_messages
             WHERE recipient = $1 AND id <> $2
               AND (sent_at > now() - interval '24 hours' OR sending_at > now() - make_interval(secs => $3))",
        )
        .bind(&d.recipient)
        .bind(d.id)
        .bind(LEASE.as_secs_f64())
        .fetch_one(&mut *tx)
        .await?;
        if used >= self.settings.per_day {
            // When the oldest sent leaves the window; a minute when only texts in flight fill it.
            let at = oldest.map_or_else(
                || Utc::now() + chrono::Duration::minutes(1),
                |o| o + chrono::Duration::hours(24),
            );
            return Ok(Reserved::Wait(at));
        }
        // Handed over only while a third of the claim is left (by the database's clock as well).
        let mine = sqlx::query(
            "UPDATE sms_messages SET sending_at = now()
             WHERE id = $1 AND lease_until = $2 AND state = 'pending' AND lease_until > now() + make_interval(secs => $3)",
        )
        .bind(d.id)
        .bind(d.lease_until)
        .bind((LEASE / 3).as_secs_f64())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(if mine == 1 { Reserved::Go } else { Reserved::Lost })
    }

    async fn send_one(&self, d: &Due, lease_ends: Instant) -> Result<(), sqlx::Error> {
        match self.reserve(d).await? {
            Reserved::Go => {}
            Reserved::Suppress(why) => return self.finish(d, "suppressed", None, why).await,
            Reserved::Wait(at) => {
                let done = sqlx::query(
                    "UPDATE sms_messages SET next_attempt_at = $3, lease_until = NULL WHERE id = $1 AND lease_until = $2",
                )
                .bind(d.id)
                .bind(d.lease_until)
                .bind(at)
                .execute(&self.db)
                .await?;
                if done.rows_affected() == 1 {
                    tracing::info!(sms = %d.id, until = %at, "sms deferred: the number's daily cap");
                    count("deferred");
                }
                return Ok(());
            }
            Reserved::Lost => return Ok(()),
        }
        match self.provider.send(&d.recipient, &d.body).await {
            Ok(accepted) => self.mark_sent(d, accepted, lease_ends).await,
            Err(Refused { code: Some(UNSUBSCRIBED), message, .. }) => {
                let mut tx = self.db.begin().await?;
                super::opt_out(&mut tx, &d.recipient, "provider").await?;
                tx.commit().await?;
                self.finish(d, "suppressed", Some(UNSUBSCRIBED), &message).await
            }
            Err(refused) => self.failed(d, refused).await,
        }
    }

    /// Records a text the provider took. Retried (the database restarting, a connection lost)
    /// until a lease after the claim: the mark names the claim, so a late one lands unless another
    /// sender took the text since (which then sends it again: logged).
    async fn mark_sent(
        &self,
        d: &Due,
        accepted: super::twilio::Accepted,
        lease_ends: Instant,
    ) -> Result<(), sqlx::Error> {
        let status = accepted.status.as_deref().unwrap_or("queued");
        let give_up = lease_ends + LEASE;
        let mut wait = Duration::from_millis(50);
        loop {
            let marked = sqlx::query(
                "UPDATE sms_messages SET state = 'sent', sent_at = now(), sending_at = NULL, attempts = attempts + 1,
                     provider_sid = $3, provider_status = $4, status_rank = $5, status_at = now(),
                     lease_until = NULL, last_error = NULL, error_code = NULL
                 WHERE id = $1 AND lease_until = $2",
            )
            .bind(d.id)
            .bind(d.lease_until)
            .bind(&accepted.sid)
            .bind(status)
            .bind(super::routes::rank(status))
            .execute(&self.db)
            .await;
            match marked {
                Ok(done) if done.rows_affected() == 1 => {
                    tracing::info!(sms = %d.id, provider_sid = ?accepted.sid, "sms sent");
                    count("sent");
                    return Ok(());
                }
                Ok(_) => {
                    // An earlier try whose answer was lost may have been the one that marked it.
                    let (state, sid): (String, Option<String>) =
                        sqlx::query_as("SELECT state, provider_sid FROM sms_messages WHERE id = $1")
                            .bind(d.id)
                            .fetch_one(&self.db)
                            .await?;
                    if state == "sent" && sid.is_some() && sid == accepted.sid {
                        count("sent");
                    } else {
                        tracing::error!(sms = %d.id, "sms sent, but another sender took it before the mark: it may go out twice");
                    }
                    return Ok(());
                }
                Err(e) if Instant::now() + wait < give_up => {
                    tracing::warn!(sms = %d.id, error = %e, "sms sent but not yet marked: retrying the mark");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    tracing::error!(sms = %d.id, error = %e, "sms sent, but not marked: it will be sent again");
                    return Err(e);
                }
            }
        }
    }

    /// Ends a text without sending it (`suppressed`, or `failed` for good).
    async fn finish(&self, d: &Due, state: &str, code: Option<i64>, error: &str) -> Result<(), sqlx::Error> {
        let done = sqlx::query(
            "UPDATE sms_messages SET state = $3, error_code = $4, last_error = $5, lease_until = NULL, sending_at = NULL,
                 status_at = now()
             WHERE id = $1 AND lease_until = $2 AND state = 'pending'",
        )
        .bind(d.id)
        .bind(d.lease_until)
        .bind(state)
        .bind(code)
        .bind(error)
        .execute(&self.db)
        .await?;
        if done.rows_affected() == 1 {
            count(state);
        }
        Ok(())
    }

    /// A refused attempt: the provider's message is kept on the row (the operator's view), never
    /// logged (it may quote the number).
    async fn failed(&self, d: &Due, refused: Refused) -> Result<(), sqlx::Error> {
        let attempts = d.attempts + 1;
        if refused.permanent || attempts >= self.settings.max_attempts {
            tracing::error!(sms = %d.id, attempts, code = ?refused.code, "sms failed for good");
            sqlx::query("UPDATE sms_messages SET attempts = $3 WHERE id = $1 AND lease_until = $2")
                .bind(d.id)
                .bind(d.lease_until)
                .bind(attempts)
                .execute(&self.db)
                .await?;
            return self.finish(d, "failed", refused.code, &refused.message).await;
        }
        tracing::warn!(sms = %d.id, attempts, code = ?refused.code, "sms not sent; will retry");
        let next = Utc::now() + crate::notifications::sender::backoff(self.settings.retry_base, attempts);
        let done = sqlx::query(
            "UPDATE sms_messages SET attempts = $3, error_code = $4, last_error = $5, next_attempt_at = $6,
                 lease_until = NULL, sending_at = NULL
             WHERE id = $1 AND lease_until = $2",
        )
        .bind(d.id)
        .bind(d.lease_until)
        .bind(attempts)
        .bind(refused.code)
        .bind(&refused.message)
        .bind(next)
        .execute(&self.db)
        .await?;
        if done.rows_affected() == 1 {
            count("retried");
        }
        Ok(())
    }
}
