//! Sends queued mails over SMTP (lettre): `SMTP_URL` is `smtp://host:port` (plain, for a local
//! sink), `smtp://user:pass@host:587?tls=required` (STARTTLS) or `smtps://…` (TLS).
//!
//! - A mail is claimed with a lease, so two cores never send it at once.
//! - A mail is sent once. The `sent` mark after the server's acceptance is retried (the database
//!   restarting, a connection lost) for as long as the claim and a lease after it, and every write
//!   names the claim, so a late mark still lands unless another sender has taken the mail since,
//!   and a sender whose claim lapsed changes nothing. A mail is sent again (when its claim lapses,
//!   with the same `Message-ID`, from its `dedup_key`, which mail clients deduplicate on) only when
//!   the core dies between the server's acceptance and the mark, the database is away for the
//!   claim's remainder and a lease after it, or the server takes a mail without answering within
//!   `smtp_timeout` (SMTP cannot tell a lost answer from a refusal).
//! - A temporary failure (4xx, no connection) is retried with exponential backoff and jitter; a
//!   permanent one (5xx) or `max_attempts` failures park the mail, for the operator to look at
//!   (`GET /api/v1/ops/notifications?state=parked`) and retry.
//! - At most `per_hour` mails go to one recipient in an hour; the rest wait for the window.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::models::ticket::{qr_png, TicketRow, TICKET_COLUMNS};
use crate::tokens::ticket_code;
use shared_types::token::TokenSigner;

/// How long a sender holds the mails it claims, by default (no other sender takes them meanwhile).
pub const LEASE: Duration = Duration::from_secs(120);
/// How long one SMTP exchange (connect to the server's last answer) may take, by default.
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(20);
/// The longest wait between two tries of a `sent` mark.
const MARK_RETRY_MAX: Duration = Duration::from_secs(2);
/// The longest one try of a `sent` mark may take.
const MARK_TRY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct SenderSettings {
    /// `From:`.
    pub from: Mailbox,
    /// Attempts before a mail is parked.
    pub max_attempts: i32,
    /// The first retry's delay (doubled at each attempt, at most an hour).
    pub retry_base: Duration,
    /// Most mails to one recipient per hour.
    pub per_hour: i64,
    /// The domain of `Message-ID`s.
    pub domain: String,
    /// How long a claim on a batch of mails holds ([`LEASE`]). A mail is handed to the server only
    /// while a third of it is left, so that (with the default [`SMTP_TIMEOUT`]) the `sent` mark
    /// comes within the claim; the mark's retries go on for a lease after it.
    pub lease: Duration,
    /// How long one SMTP exchange may take ([`SMTP_TIMEOUT`]) before it is cut off.
    pub smtp_timeout: Duration,
}

pub struct Sender {
    db: PgPool,
    /// The transport and its connection pool. Replaced when an exchange is cut off: the connection
    /// it leaves half-way would otherwise go back to the pool, and the next mail would read the
    /// late answers of this one (a refusal read as an acceptance).
    smtp: std::sync::Mutex<AsyncSmtpTransport<Tokio1Executor>>,
    smtp_url: String,
    settings: SenderSettings,
    signer: TokenSigner,
}

#[derive(sqlx::FromRow)]
struct Due {
    id: Uuid,
    dedup_key: String,
    recipient: String,
    subject: String,
    text_body: String,
    html_body: String,
    ticket_ids: Vec<Uuid>,
    attempts: i32,
    /// This sender's claim on it, as the database wrote it: every later write names it, so that a
    /// sender whose claim lapsed and was taken by another changes nothing.
    lease_until: DateTime<Utc>,
}

/// Why a message could not be made: for now (the database did not answer: retried with backoff),
/// or ever (a recipient that is no address: parked at once).
enum Unsendable {
    Now(String),
    Ever(String),
}

/// What became of one attempt.
enum Sent {
    Ok,
    /// Too little of the claim was left to send it: given back, not an attempt.
    NotTried,
    /// Over the recipient's cap: try again at this time (not an attempt).
    Deferred(DateTime<Utc>),
    Failed {
        permanent: bool,
        error: String,
    },
}

impl Sender {
    pub fn new(
        db: PgPool,
        smtp_url: &str,
        settings: SenderSettings,
        signer: TokenSigner,
    ) -> Result<Self, String> {
        let smtp = std::sync::Mutex::new(transport(smtp_url, settings.smtp_timeout)?);
        Ok(Self { db, smtp, smtp_url: smtp_url.to_owned(), settings, signer })
    }

    fn smtp(&self) -> AsyncSmtpTransport<Tokio1Executor> {
        self.smtp.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Sends due mails until asked to stop (a batch under way is finished: its mails sent and
    /// recorded).
    pub async fn run(self: Arc<Self>, poll: Duration, stop: crate::shutdown::Stop) {
        while !stop.requested() {
            match self.send_batch(Some(&stop)).await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "notifications: could not read due mails"),
            }
            if !stop.pause(poll).await {
                break;
            }
        }
    }

    /// Claims and sends one batch of due mails; answers how many it tried.
    pub async fn send_due(&self) -> Result<usize, sqlx::Error> {
        self.send_batch(None).await
    }

    /// [`Sender::send_due`], letting go of the mails not yet started once `stop` is asked.
    async fn send_batch(&self, stop: Option<&crate::shutdown::Stop>) -> Result<usize, sqlx::Error> {
        // The claim ends no sooner than this, by this process's monotonic clock: taken before the
        // database starts the lease, and blind to the two clocks' difference.
        let lease_ends = Instant::now() + self.settings.lease;
        let due: Vec<Due> = sqlx::query_as(
            "UPDATE notifications SET lease_until = now() + make_interval(secs => $1)
             WHERE id IN (SELECT id FROM notifications
                          WHERE state = 'pending' AND next_attempt_at <= now()
                            AND (lease_until IS NULL OR lease_until < now())
                          ORDER BY next_attempt_at LIMIT 16 FOR UPDATE SKIP LOCKED)
             RETURNING id, dedup_key, recipient, subject, text_body, html_body, ticket_ids, attempts, lease_until",
        )
        .bind(self.settings.lease.as_secs_f64())
        .fetch_all(&self.db)
        .await?;
        let n = due.len();
        // One recipient's mails one after the other (so that the cap counts each), recipients at once.
        let mut by_recipient: std::collections::BTreeMap<&str, Vec<&Due>> = Default::default();
        for d in &due {
            by_recipient.entry(d.recipient.as_str()).or_default().push(d);
        }
        let sends = by_recipient.into_values().map(|mails| async move {
            for d in mails {
                // Stopping: what is not started goes back for another core (or the next start).
                if stop.is_some_and(|s| s.requested()) {
                    self.release(d).await?;
                    continue;
                }
                let outcome = self.send_one(d, lease_ends).await;
                self.record(d, outcome, lease_ends).await?;
            }
            Ok::<(), sqlx::Error>(())
        });
        for r in futures_util::future::join_all(sends).await {
            r?;
        }
        Ok(n)
    }

    /// Gives up the claim on a mail not tried.
    async fn release(&self, d: &Due) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE notifications SET lease_until = NULL WHERE id = $1 AND lease_until = $2")
            .bind(d.id)
            .bind(d.lease_until)
            .execute(&self.db)
            .await?;
        Ok(())
    }

    /// Sends one mail if the claim leaves time to send it and mark it: a third of the lease, checked
    /// after the mail is made and just before the server is called; the SMTP exchange is then cut
    /// off after `smtp_timeout` (lettre's async transport bounds only the connect).
    async fn send_one(&self, d: &Due, lease_ends: Instant) -> Sent {
        // The recipient's cap: mails sent to them in the last hour.
        let window: Result<(i64, Option<DateTime<Utc>>), _> = sqlx::query_as(
            "SELECT count(*), min(sent_at) FROM notifications
             WHERE recipient = $1 AND state = 'sent' AND sent_at > now() - interval '1 hour'",
        )
        .bind(&d.recipient)
        .fetch_one(&self.db)
        .await;
        match window {
            Ok((sent, oldest)) if sent >= self.settings.per_hour => {
                let at = oldest.unwrap_or_else(Utc::now) + chrono::Duration::hours(1);
                return Sent::Deferred(at);
            }
            Ok(_) => {}
            Err(e) => return Sent::Failed { permanent: false, error: e.to_string() },
        }
        let message = match self.message(d).await {
            Ok(m) => m,
            Err(Unsendable::Now(error)) => return Sent::Failed { permanent: false, error },
            Err(Unsendable::Ever(error)) => return Sent::Failed { permanent: true, error },
        };
        if lease_ends.saturating_duration_since(Instant::now()) < self.settings.lease / 3 {
            return Sent::NotTried;
        }
        match tokio::time::timeout(self.settings.smtp_timeout, self.smtp().send(message)).await {
            Ok(Ok(_)) => Sent::Ok,
            Ok(Err(e)) => Sent::Failed { permanent: e.is_permanent(), error: e.to_string() },
            // The server may have taken it without our seeing the answer: SMTP cannot tell.
            Err(_) => {
                // A fresh pool: the cut-off connection stays in the old one, closed with it.
                if let Ok(fresh) = transport(&self.smtp_url, self.settings.smtp_timeout) {
                    *self.smtp.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
                }
                Sent::Failed { permanent: false, error: "the SMTP server did not answer in time".into() }
            }
        }
    }

    /// The MIME message: text and HTML alternatives, each ticket's QR code attached.
    async fn message(&self, d: &Due) -> Result<lettre::Message, Unsendable> {
        let to: Mailbox = d.recipient.parse().map_err(|e| Unsendable::Ever(format!("recipient: {e}")))?;
        let digest = Sha256::digest(d.dedup_key.as_bytes());
        let id = hex::encode(&digest[..16]);
        let bodies = MultiPart::alternative_plain_html(d.text_body.clone(), d.html_body.clone());
        let mut body = MultiPart::mixed().multipart(bodies);
        if !d.ticket_ids.is_empty() {
            // Drawn now, so that a code re-issued since the mail was queued is the current one.
            let tickets: Vec<TicketRow> = sqlx::query_as(&format!(
                "SELECT {TICKET_COLUMNS} FROM tickets t JOIN events e ON e.id = t.event_id
                 WHERE t.id = ANY($1) AND t.state = 'valid' ORDER BY t.seat_id, t.id"
            ))
            .bind(&d.ticket_ids)
            .fetch_all(&self.db)
            .await
            // The database out of reach for a moment (a restart, a failover): try again later.
            .map_err(|e| Unsendable::Now(e.to_string()))?;
            for (n, t) in tickets.iter().enumerate() {
                let png =
                    qr_png(&ticket_code(&self.signer, t)).map_err(|e| Unsendable::Ever(e.to_string()))?;
                let name = match &t.seat_id {
                    Some(seat) => {
                        format!("ticket-{}.png", seat.replace(|c: char| !c.is_ascii_alphanumeric(), "-"))
                    }
                    None => format!("ticket-{}.png", n + 1),
                };
                let png_type =
                    ContentType::parse("image/png").map_err(|e| Unsendable::Ever(e.to_string()))?;
                body = body.singlepart(Attachment::new(name).body(png, png_type));
            }
        }
        lettre::Message::builder()
            .from(self.settings.from.clone())
            .to(to)
            .subject(d.subject.clone())
            .message_id(Some(format!("<{id}@{}>", self.settings.domain)))
            .multipart(body)
            .map_err(|e| Unsendable::Ever(e.to_string()))
    }

    /// Records what became of a mail, under this sender's claim (a claim that lapsed and was
    /// taken by another sender changes nothing).
    async fn record(&self, d: &Due, outcome: Sent, lease_ends: Instant) -> Result<(), sqlx::Error> {
        match outcome {
            Sent::Ok => self.mark_sent(d, lease_ends).await?,
            Sent::NotTried => self.release(d).await?,
            Sent::Deferred(at) => {
                let done = sqlx::query(
                    "UPDATE notifications SET next_attempt_at = $3, lease_until = NULL
                     WHERE id = $1 AND lease_until = $2",
                )
                .bind(d.id)
                .bind(d.lease_until)
                .bind(at)
                .execute(&self.db)
                .await?;
                if done.rows_affected() == 1 {
                    tracing::info!(notification = %d.id, until = %at, "notification deferred: the recipient's hourly cap");
                }
            }
            Sent::Failed { permanent, error } => {
                let attempts = d.attempts + 1;
                let park = permanent || attempts >= self.settings.max_attempts;
                let next = Utc::now() + backoff(self.settings.retry_base, attempts);
                let done = sqlx::query(
                    "UPDATE notifications SET attempts = $3, last_error = $4, lease_until = NULL,
                         state = CASE WHEN $5 THEN 'parked' ELSE 'pending' END, next_attempt_at = $6
                     WHERE id = $1 AND lease_until = $2",
                )
                .bind(d.id)
                .bind(d.lease_until)
                .bind(attempts)
                .bind(&error)
                .bind(park)
                .bind(next)
                .execute(&self.db)
                .await?;
                // Another sender has it now (this claim lapsed): its outcome is the one that counts.
                if done.rows_affected() == 0 {
                    return Ok(());
                }
                crate::metrics::MAIL_FAILURES.inc();
                if park {
                    tracing::error!(notification = %d.id, attempts, error, "notification parked: the operator must look at it");
                } else {
                    tracing::warn!(notification = %d.id, attempts, error, "notification failed; will retry");
                }
            }
        }
        Ok(())
    }

    /// Marks a mail the server accepted as sent. A mark lost now sends it again once the claim
    /// lapses and another sender takes it, so it is retried (the database restarting, a connection
    /// lost), past the claim's end too: the mark names the claim, so a late one succeeds only while
    /// nobody has taken the mail since. Each try is bounded; the retries stop a lease after the
    /// claim's end.
    async fn mark_sent(&self, d: &Due, lease_ends: Instant) -> Result<(), sqlx::Error> {
        let give_up = lease_ends + self.settings.lease;
        let mut wait = Duration::from_millis(50);
        loop {
            let marked = tokio::time::timeout(
                MARK_TRY,
                sqlx::query(
                    "UPDATE notifications SET state = 'sent', sent_at = now(), attempts = attempts + 1,
                         lease_until = NULL, last_error = NULL
                     WHERE id = $1 AND lease_until = $2",
                )
                .bind(d.id)
                .bind(d.lease_until)
                .execute(&self.db),
            )
            .await;
            let error = match marked {
                Ok(Ok(done)) if done.rows_affected() == 1 => {
                    tracing::info!(notification = %d.id, "notification sent");
                    return Ok(());
                }
                Ok(Ok(_)) => {
                    // An earlier try that timed out may have been the one that marked it.
                    let state: Option<String> =
                        sqlx::query_scalar("SELECT state FROM notifications WHERE id = $1")
                            .bind(d.id)
                            .fetch_optional(&self.db)
                            .await?;
                    if state.as_deref() != Some("sent") {
                        tracing::error!(notification = %d.id, "notification sent, but another sender took it before the mark: it may go out twice, with the same Message-ID");
                    }
                    return Ok(());
                }
                Ok(Err(e)) => e,
                Err(_) => sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the mark did not answer in time",
                )),
            };
            let left = give_up.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::error!(notification = %d.id, error = %error, "notification sent, but not marked: it will be sent again once its claim lapses, with the same Message-ID");
                return Err(error);
            }
            tracing::warn!(notification = %d.id, error = %error, "notification sent but not yet marked: retrying the mark");
            // The last try comes at the end, however the backoff falls.
            tokio::time::sleep(wait.min(left)).await;
            wait = (wait * 2).min(MARK_RETRY_MAX);
        }
    }
}

/// The SMTP transport for `url`, its connect bounded by `timeout`.
fn transport(url: &str, timeout: Duration) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    Ok(AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
        .map_err(|e| format!("SMTP_URL: {e}"))?
        .timeout(Some(timeout))
        .build())
}

/// The wait before attempt `attempts + 1`: `base · 2^(attempts-1)`, at most an hour, with up to 25 %
/// jitter so that a recovering server is not hit by every retry at once.
pub(crate) fn backoff(base: Duration, attempts: i32) -> chrono::Duration {
    let exp = base.as_millis() as u64 * (1u64 << (attempts - 1).clamp(0, 20));
    let capped = exp.min(3_600_000);
    let mut r = [0u8; 2];
    let _ = getrandom::getrandom(&mut r);
    let jitter = capped * u64::from(u16::from_le_bytes(r) % 256) / 1024;
    chrono::Duration::milliseconds((capped + jitter) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let base = Duration::from_millis(1000);
        let first = backoff(base, 1).num_milliseconds();
        assert!((1000..=1250).contains(&first), "{first}");
        let third = backoff(base, 3).num_milliseconds();
        assert!((4000..=5000).contains(&third), "{third}");
        let late = backoff(base, 40).num_milliseconds();
        assert!((3_600_000..=4_500_000).contains(&late), "{late}");
    }
}
