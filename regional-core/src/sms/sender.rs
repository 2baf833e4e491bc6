//! Sends queued texts through the provider ([`super::twilio`]).
//!
//! - A message is claimed with a lease, so two cores never send it at once; every write after names
//!   the claim (a sender whose claim lapsed changes nothing).
//! - A number that opted out since the message was queued gets nothing (`suppressed`); the
//!   provider's refusal of an unsubscribed number (error 21610) opts it out here too.
//! - At most `per_day` messages go to one number in 24 hours; the rest wait for the window.
//! - A temporary failure (no answer, 429, 5xx) is retried with exponential backoff; a permanent one
//!   (another 4xx) or `max_attempts` failures end the message as `failed`.
//! - A message the provider took is `sent`; its delivery reports ([`super::routes`]) move it to
//!   `delivered`, `undelivered` or `failed`.
//!
//! A message is sent at most once unless the provider takes it without its answer reaching us (a
//! cut connection, a timeout): the Messages API has no idempotency key, so that message is tried
//! again on its next attempt, and may arrive twice.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::twilio::{Refused, Twilio, UNSUBSCRIBED};

fn count(outcome: &str) {
    crate::metrics::SMS_SENDS.get_or_create(&vec![("outcome", outcome.to_owned())]).inc();
}

/// How long a sender holds the messages it claims.
pub const LEASE: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct SmsSenderSettings {
    /// Attempts before a message fails for good.
    pub max_attempts: i32,
    /// The first retry's delay (doubled at each attempt, at most an hour).
    pub retry_base: Duration,
    /// Most messages to one number in 24 hours.
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
    recipient: String,
    body: String,
    attempts: i32,
    lease_until: DateTime<Utc>,
}

impl SmsSender {
    pub fn new(db: PgPool, provider: Twilio, settings: SmsSenderSettings) -> Self {
        Self { db, provider, settings }
    }

    /// Sends due messages until asked to stop.
    pub async fn run(self: Arc<Self>, poll: Duration, stop: crate::shutdown::Stop) {
        while !stop.requested() {
            match self.send_due().await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "sms: could not read due messages"),
            }
            if !stop.pause(poll).await {
                break;
            }
        }
    }

    /// Claims and sends one batch of due messages (one number's one after another, so that its
    /// cap counts each); answers how many it claimed.
    pub async fn send_due(&self) -> Result<usize, sqlx::Error> {
        let due: Vec<Due> = sqlx::query_as(
            "UPDATE sms_messages SET lease_until = now() + make_interval(secs => $1)
             WHERE id IN (SELECT id FROM sms_messages
                          WHERE state = 'pending' AND next_attempt_at <= now()
                            AND (lease_until IS NULL OR lease_until < now())
                          ORDER BY next_attempt_at LIMIT 16 FOR UPDATE SKIP LOCKED)
             RETURNING id, recipient, body, attempts, lease_until",
        )
        .bind(LEASE.as_secs_f64())
        .fetch_all(&self.db)
        .await?;
        let n = due.len();
        let mut by_number: std::collections::BTreeMap<&str, Vec<&Due>> = Default::default();
        for d in &due {
            by_number.entry(d.recipient.as_str()).or_default().push(d);
        }
        let sends = by_number.into_values().map(|texts| async move {
            for d in texts {
                self.send_one(d).await?;
            }
            Ok::<(), sqlx::Error>(())
        });
        for r in futures_util::future::join_all(sends).await {
            r?;
        }
        Ok(n)
    }

    async fn send_one(&self, d: &Due) -> Result<(), sqlx::Error> {
        // Opted out since it was queued: never sent.
        let opted_out: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM sms_opt_outs WHERE phone = $1)")
                .bind(&d.recipient)
                .fetch_one(&self.db)
                .await?;
        if opted_out {
            return self.finish(d, "suppressed", None, "the number opted out").await;
        }
        let (sent, oldest): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
            "SELECT count(*), min(sent_at) FROM sms_messages
             WHERE recipient = $1 AND sent_at > now() - interval '24 hours'",
        )
        .bind(&d.recipient)
        .fetch_one(&self.db)
        .await?;
        if sent >= self.settings.per_day {
            let at = oldest.unwrap_or_else(Utc::now) + chrono::Duration::hours(24);
            sqlx::query(
                "UPDATE sms_messages SET next_attempt_at = $3, lease_until = NULL WHERE id = $1 AND lease_until = $2",
            )
            .bind(d.id)
            .bind(d.lease_until)
            .bind(at)
            .execute(&self.db)
            .await?;
            tracing::info!(sms = %d.id, until = %at, "sms deferred: the number's daily cap");
            count("deferred");
            return Ok(());
        }
        match self.provider.send(&d.recipient, &d.body).await {
            Ok(accepted) => {
                let done = sqlx::query(
                    "UPDATE sms_messages SET state = 'sent', sent_at = now(), attempts = attempts + 1,
                         provider_sid = $3, provider_status = $4, status_at = now(), lease_until = NULL, last_error = NULL
                     WHERE id = $1 AND lease_until = $2",
                )
                .bind(d.id)
                .bind(d.lease_until)
                .bind(&accepted.sid)
                .bind(&accepted.status)
                .execute(&self.db)
                .await?;
                if done.rows_affected() == 1 {
                    tracing::info!(sms = %d.id, provider_sid = %accepted.sid, "sms sent");
                    count("sent");
                }
                Ok(())
            }
            Err(Refused { code: Some(UNSUBSCRIBED), message, .. }) => {
                let mut tx = self.db.begin().await?;
                super::opt_out(&mut tx, &d.recipient, "provider").await?;
                sqlx::query("UPDATE sms_messages SET error_code = $2, last_error = $3 WHERE id = $1")
                    .bind(d.id)
                    .bind(UNSUBSCRIBED)
                    .bind(&message)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                count("suppressed");
                Ok(())
            }
            Err(refused) => self.failed(d, refused).await,
        }
    }

    /// Ends a message without sending it (`suppressed`, or `failed` for good).
    async fn finish(&self, d: &Due, state: &str, code: Option<i64>, error: &str) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE sms_messages SET state = $3, error_code = $4, last_error = $5, lease_until = NULL, status_at = now()
             WHERE id = $1 AND lease_until = $2",
        )
        .bind(d.id)
        .bind(d.lease_until)
        .bind(state)
        .bind(code)
        .bind(error)
        .execute(&self.db)
        .await?;
        count(state);
        Ok(())
    }

    async fn failed(&self, d: &Due, refused: Refused) -> Result<(), sqlx::Error> {
        let attempts = d.attempts + 1;
        if refused.permanent || attempts >= self.settings.max_attempts {
            tracing::error!(sms = %d.id, attempts, error = %refused.message, "sms failed for good");
            sqlx::query("UPDATE sms_messages SET attempts = $3 WHERE id = $1 AND lease_until = $2")
                .bind(d.id)
                .bind(d.lease_until)
                .bind(attempts)
                .execute(&self.db)
                .await?;
            return self.finish(d, "failed", refused.code, &refused.message).await;
        }
        tracing::warn!(sms = %d.id, attempts, error = %refused.message, "sms not sent; will retry");
        let next = Utc::now() + crate::notifications::sender::backoff(self.settings.retry_base, attempts);
        sqlx::query(
            "UPDATE sms_messages SET attempts = $3, error_code = $4, last_error = $5, next_attempt_at = $6, lease_until = NULL
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
        count("retried");
        Ok(())
    }
}
