//! Sends due deliveries (docs/webhooks.md, "Delivery").
//!
//! Every core runs a dispatcher: a pool of [`CONCURRENCY`] attempts at once. Whenever an attempt
//! ends (and at least every poll) it claims as many due deliveries of enabled endpoints as it has
//! free slots, about [`PER_ENDPOINT`] of one endpoint and [`PER_ORGANIZATION`] of one
//! organization in flight at most (over every core: the claims are rows; two cores claiming in the
//! same instant may briefly exceed them), so a slow partner holds up mostly itself. A claim is
//! a token and a lease (the attempt's longest time and a margin): only the claim's holder records
//! the outcome, and a core that dies mid-attempt leaves the delivery to be claimed again when the
//! lease ends (at least once).
//!
//! An attempt succeeds on any 2xx answer. It is recorded (status, the first 2 KiB of the answer,
//! or why none came) with the delivery's outcome in one transaction: succeeded; pending again
//! after the schedule's next delay; or failed once the schedule is spent. An endpoint whose
//! attempts have all failed for `disable_after`, when a delivery's schedule is spent, is disabled:
//! its pending deliveries fail, the audit log records it and its organization's admins get a mail.
//! A failure of the core's own (a secret it cannot open) does not count against the endpoint.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::settings::Sealed;
use super::{signing, target, Webhooks};

/// Attempts in flight at once, per core.
pub const CONCURRENCY: usize = 32;
/// Attempts to one endpoint in flight at once, over every core.
pub const PER_ENDPOINT: i64 = 4;
/// Attempts to one organization's endpoints in flight at once, over every core.
pub const PER_ORGANIZATION: i64 = 16;
/// The part of an answer kept.
pub const RESPONSE_MAX: usize = 2048;
/// Outcomes recorded at once (database connections of the background pool).
const RECORDING: usize = 4;

/// Attempts since start, by outcome (`succeeded`, `failed`): `ticketing_webhook_attempts_total`.
pub static ATTEMPTS: std::sync::LazyLock<
    prometheus_client::metrics::family::Family<
        crate::figures::Labels,
        prometheus_client::metrics::counter::Counter,
    >,
> = std::sync::LazyLock::new(Default::default);

/// A claimed delivery, with what sending it needs.
#[derive(Debug, sqlx::FromRow)]
struct Claimed {
    id: Uuid,
    claim: Uuid,
    endpoint_id: Uuid,
    body: String,
    tries: i32,
    url: String,
    secret_key_id: String,
    secret_sealed: Vec<u8>,
    previous_key_id: Option<String>,
    previous_sealed: Option<Vec<u8>>,
    previous_until: Option<DateTime<Utc>>,
}

/// What one attempt got.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub status: Option<u16>,
    pub response: Option<String>,
    pub error: Option<String>,
    pub duration: Duration,
    /// The failure was the core's own (it could not sign): not held against the endpoint.
    pub ours: bool,
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// One line for the delivery's `last_error` (and the mail).
    fn summary(&self) -> Option<String> {
        if self.succeeded() {
            return None;
        }
        Some(match (self.status, &self.error) {
            (Some(s), _) => format!("HTTP {s}"),
            (None, Some(e)) => e.clone(),
            (None, None) => "no answer".into(),
        })
    }
}

/// The sender of deliveries.
pub struct Dispatcher {
    db: PgPool,
    hooks: Arc<Webhooks>,
    client: reqwest::Client,
    slots: Arc<Semaphore>,
    /// Told each time an attempt ends (a slot is free: claim again at once).
    freed: Arc<tokio::sync::Notify>,
    /// Outcomes recorded at once: a few connections of the background pool, never all of them
    /// (the others wait here, holding none).
    recording: Semaphore,
}

impl Dispatcher {
    pub fn new(db: PgPool, hooks: Arc<Webhooks>) -> Result<Self, reqwest::Error> {
        let s = &hooks.settings;
        let mut client = reqwest::Client::builder()
            .timeout(s.timeout)
            .connect_timeout(s.timeout.min(Duration::from_secs(10)))
            // A redirect is an answer, not a new target: following one would reach addresses the
            // URL's checks never saw.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("ticketing-webhooks/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(PER_ENDPOINT as usize);
        if !s.allow_private {
            client = client.dns_resolver(Arc::new(target::PublicOnly)).no_proxy();
        }
        Ok(Self {
            db,
            hooks,
            client: client.build()?,
            slots: Arc::new(Semaphore::new(CONCURRENCY)),
            freed: Arc::new(tokio::sync::Notify::new()),
            recording: Semaphore::new(RECORDING),
        })
    }

    /// Claims what its free slots can send, each attempt in a task of its own, again as soon as an
    /// attempt ends or after `every` (reading the subscriptions again at most every `every`);
    /// until asked to stop, then waits for the attempts in flight (those cut short by the
    /// process's end are claimed again when their lease ends).
    pub async fn run(self: Arc<Self>, every: Duration, stop: crate::shutdown::Stop) {
        let mut refreshed: Option<Instant> = None;
        while !stop.requested() {
            if refreshed.is_none_or(|at| at.elapsed() >= every) {
                match self.hooks.refresh(&self.db).await {
                    Ok(()) => refreshed = Some(Instant::now()),
                    Err(e) => {
                        tracing::warn!(error = %e, "webhooks: could not read the subscriptions; retrying")
                    }
                }
            }
            let free = self.slots.available_permits();
            let mut full = false;
            if free > 0 {
                match self.claim(free).await {
                    Ok(claimed) => {
                        full = claimed.len() == free;
                        for d in claimed {
                            let Ok(slot) = self.slots.clone().acquire_owned().await else { break };
                            let me = self.clone();
                            tokio::spawn(async move {
                                me.deliver(d).await;
                                drop(slot);
                                me.freed.notify_one();
                            });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "webhooks: claiming failed; retrying"),
                }
            }
            // At most 50 claims a second, whatever ends when.
            if !stop.pause(Duration::from_millis(20)).await {
                break;
            }
            if !full {
                let go_on = tokio::select! {
                    go_on = stop.pause(every) => go_on,
                    _ = self.freed.notified() => true,
                };
                if !go_on {
                    break;
                }
            }
        }
        let _ = self.slots.acquire_many(CONCURRENCY as u32).await;
    }

    /// One round, to the end: claims what is due (as many as the pool holds), sends it, records
    /// each. Answers how many were tried.
    pub async fn run_once(&self) -> Result<usize, sqlx::Error> {
        let claimed = self.claim(CONCURRENCY).await?;
        let n = claimed.len();
        futures_util::future::join_all(claimed.into_iter().map(|d| self.deliver(d))).await;
        Ok(n)
    }

    /// Claims up to `limit` due deliveries of enabled endpoints, within the in-flight caps.
    async fn claim(&self, limit: usize) -> Result<Vec<Claimed>, sqlx::Error> {
        // The lease: the attempt's longest time and a margin for recording it.
        let lease = self.hooks.settings.timeout + Duration::from_secs(30);
        sqlx::query_as(
            "WITH busy AS (
                 SELECT endpoint_id, organization_id, count(*) AS n FROM webhook_deliveries
                 WHERE state = 'pending' AND lease_until > now() GROUP BY endpoint_id, organization_id
             ),
             busy_org AS (SELECT organization_id, sum(n) AS n FROM busy GROUP BY organization_id),
             of_endpoint AS (
                 SELECT d.id, d.organization_id, d.next_attempt_at,
                        row_number() OVER (PARTITION BY d.endpoint_id ORDER BY d.next_attempt_at, d.id)
                            + coalesce(b.n, 0) AS n
                 FROM webhook_deliveries d
                 JOIN webhook_endpoints w ON w.id = d.endpoint_id AND w.enabled
                 LEFT JOIN busy b ON b.endpoint_id = d.endpoint_id
                 WHERE d.state = 'pending' AND d.next_attempt_at <= now()
                   AND (d.lease_until IS NULL OR d.lease_until <= now())
             ),
             -- The organization's cap counts only what the endpoints' caps let through: one
             -- endpoint's backlog does not hold up the organization's other endpoints.
             of_organization AS (
                 SELECT e.id, e.next_attempt_at,
                        row_number() OVER (PARTITION BY e.organization_id ORDER BY e.next_attempt_at, e.id)
                            + coalesce(o.n, 0) AS n
                 FROM of_endpoint e LEFT JOIN busy_org o ON o.organization_id = e.organization_id
                 WHERE e.n <= $2
             ),
             due AS (
                 SELECT d.id FROM webhook_deliveries d
                 WHERE d.id IN (SELECT id FROM of_organization WHERE n <= $3 ORDER BY next_attempt_at LIMIT $1)
                 FOR UPDATE SKIP LOCKED
             )
             UPDATE webhook_deliveries d SET claim = gen_random_uuid(), lease_until = now() + $4 * interval '1 millisecond'
             FROM due, webhook_endpoints w
             WHERE d.id = due.id AND w.id = d.endpoint_id AND w.enabled
               AND d.state = 'pending' AND d.next_attempt_at <= now()
               AND (d.lease_until IS NULL OR d.lease_until <= now())
             RETURNING d.id, d.claim, d.endpoint_id, d.body, d.tries, w.url, w.secret_key_id, w.secret_sealed,
                       w.previous_key_id, w.previous_sealed, w.previous_until",
        )
        .bind(limit as i64)
        .bind(PER_ENDPOINT)
        .bind(PER_ORGANIZATION)
        .bind(lease.as_millis() as i64)
        .fetch_all(&self.db)
        .await
    }

    /// Sends one claimed delivery and records what came of it.
    async fn deliver(&self, d: Claimed) {
        let outcome = self.attempt(&d).await;
        let label = if outcome.succeeded() { "succeeded" } else { "failed" };
        ATTEMPTS.get_or_create(&vec![("outcome", label.to_owned())]).inc();
        if let Err(e) = self.record(&d, &outcome).await {
            // The lease ends and the delivery is tried again: at least once.
            tracing::warn!(error = %e, delivery = %d.id, "webhooks: an attempt's outcome was not recorded");
        }
    }

    /// The secrets that sign: the current one, and the previous one while a rotation lasts (left
    /// out, with a warning, when it does not open: the current one still signs).
    fn secrets(&self, d: &Claimed) -> Result<Vec<Vec<u8>>, String> {
        let keys = &self.hooks.settings.keys;
        let context = d.endpoint_id.as_bytes();
        let current = Sealed { key_id: d.secret_key_id.clone(), bytes: d.secret_sealed.clone() };
        let mut secrets = vec![keys.open(&current, context)?];
        if let (Some(kid), Some(bytes), Some(until)) =
            (&d.previous_key_id, &d.previous_sealed, d.previous_until)
        {
            if until > Utc::now() {
                match keys.open(&Sealed { key_id: kid.clone(), bytes: bytes.clone() }, context) {
                    Ok(previous) => secrets.push(previous),
                    Err(e) => {
                        tracing::warn!(endpoint = %d.endpoint_id, error = %e, "webhooks: the previous secret does not open; signing with the current one only")
                    }
                }
            }
        }
        Ok(secrets)
    }

    async fn attempt(&self, d: &Claimed) -> Outcome {
        let started = Instant::now();
        let failed = |error: String, ours: bool| Outcome {
            status: None,
            response: None,
            error: Some(truncate(&error, 500)),
            duration: started.elapsed(),
            ours,
        };
        // Checked again at each attempt: the rules may have tightened since registration.
        let url = match target::check_url(&d.url, self.hooks.settings.allow_private) {
            Ok(url) => url,
            Err(why) => return failed(format!("the endpoint's URL {why}"), false),
        };
        let secrets = match self.secrets(d) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(endpoint = %d.endpoint_id, error = %e, "webhooks: a signing secret does not open");
                return failed(format!("the core could not sign: {e}"), true);
            }
        };
        let id = message_id(d.id);
        let timestamp = Utc::now().timestamp();
        let request = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signing::header(&secrets, &id, timestamp, &d.body))
            .body(d.body.clone());
        let mut response = match request.send().await {
            Ok(r) => r,
            Err(e) => return failed(describe(&e), false),
        };
        let status = response.status().as_u16();
        let mut kept = Vec::new();
        while kept.len() < RESPONSE_MAX {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    kept.extend_from_slice(&chunk[..chunk.len().min(RESPONSE_MAX - kept.len())])
                }
                Ok(None) | Err(_) => break,
            }
        }
        let text = String::from_utf8_lossy(&kept);
        Outcome {
            status: Some(status),
            response: Some(truncate(&text, RESPONSE_MAX)),
            error: None,
            duration: started.elapsed(),
            ours: false,
        }
    }

    /// Records an attempt and its delivery's outcome, if this core still holds the claim (the
    /// endpoint disabled or deleted meanwhile, or the lease taken over: the attempt is history,
    /// the delivery's state is not this attempt's to set). Locks the endpoint before the delivery,
    /// as every route does.
    async fn record(&self, d: &Claimed, outcome: &Outcome) -> Result<(), sqlx::Error> {
        let _turn = self.recording.acquire().await.map_err(|_| sqlx::Error::PoolClosed)?;
        let mut tx = self.db.begin().await?;
        let endpoint: Option<(bool, Option<DateTime<Utc>>)> = sqlx::query_as(
            "SELECT enabled, failing_since FROM webhook_endpoints WHERE id = $1 FOR NO KEY UPDATE",
        )
        .bind(d.endpoint_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((enabled, _)) = endpoint else { return Ok(()) };
        sqlx::query(
            "INSERT INTO webhook_attempts (delivery_id, duration_ms, status, response, error, succeeded)
             SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM webhook_deliveries WHERE id = $1)",
        )
        .bind(d.id)
        .bind(i32::try_from(outcome.duration.as_millis()).unwrap_or(i32::MAX))
        .bind(outcome.status.map(i32::from))
        .bind(&outcome.response)
        .bind(&outcome.error)
        .bind(outcome.succeeded())
        .execute(&mut *tx)
        .await?;
        let tries = d.tries + 1;
        let (state, retry_in) = if outcome.succeeded() {
            ("succeeded", None)
        } else {
            match self.hooks.settings.retries.after(tries) {
                Some(delay) => ("pending", Some(delay)),
                None => ("failed", None),
            }
        };
        let mine = sqlx::query(
            "UPDATE webhook_deliveries
             SET state = $3, tries = $4, last_status = $5, last_error = $6, updated_at = now(),
                 claim = NULL, lease_until = NULL,
                 next_attempt_at = CASE WHEN $7::bigint IS NULL THEN next_attempt_at
                                        ELSE now() + $7 * interval '1 millisecond' END
             WHERE id = $1 AND claim = $2 AND state = 'pending'",
        )
        .bind(d.id)
        .bind(d.claim)
        .bind(state)
        .bind(tries)
        .bind(outcome.status.map(i32::from))
        .bind(outcome.summary())
        .bind(retry_in.map(|r| r.as_millis() as i64))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if mine && enabled && !outcome.ours {
            if outcome.succeeded() {
                sqlx::query("UPDATE webhook_endpoints SET failing_since = NULL WHERE id = $1 AND failing_since IS NOT NULL")
                    .bind(d.endpoint_id)
                    .execute(&mut *tx)
                    .await?;
            } else {
                let since: (DateTime<Utc>, bool) = sqlx::query_as(
                    "UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, now()) WHERE id = $1
                     RETURNING failing_since, failing_since <= now() - $2 * interval '1 millisecond'",
                )
                .bind(d.endpoint_id)
                .bind(self.hooks.settings.disable_after.as_millis() as i64)
                .fetch_one(&mut *tx)
                .await?;
                // Failing that long, and this delivery's whole schedule spent: the endpoint has
                // been failing all along, not once days ago and once now.
                if since.1 && state == "failed" {
                    disable(&mut tx, d.endpoint_id, since.0, outcome.summary().unwrap_or_default()).await?;
                }
            }
        }
        tx.commit().await
    }
}

/// The `webhook-id` of a delivery: the same at every attempt and replay (receivers deduplicate
/// by it).
pub fn message_id(delivery: Uuid) -> String {
    format!("msg_{}", delivery.simple())
}

/// Fails every pending delivery of a disabled endpoint (replayable once it is enabled again); an
/// attempt in flight loses its claim, so its outcome does not make it pending again.
pub(super) async fn fail_pending(conn: &mut PgConnection, endpoint: Uuid) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE webhook_deliveries SET state = 'failed', last_error = 'the endpoint was disabled',
             claim = NULL, lease_until = NULL, updated_at = now()
         WHERE endpoint_id = $1 AND state = 'pending'",
    )
    .bind(endpoint)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Disables a failing endpoint: its pending deliveries fail, the audit log records it, and its
/// organization's admins are mailed (once per disabling).
async fn disable(
    tx: &mut PgConnection,
    endpoint: Uuid,
    failing_since: DateTime<Utc>,
    last_error: String,
) -> Result<(), sqlx::Error> {
    let row: Option<(Uuid, String, String, DateTime<Utc>, String)> = sqlx::query_as(
        "UPDATE webhook_endpoints w SET enabled = false, disabled_reason = 'failing', disabled_at = now(), updated_at = now()
         FROM organizations o
         WHERE w.id = $1 AND w.enabled AND o.id = w.organization_id
         RETURNING w.organization_id, w.url, w.description, w.disabled_at, o.name",
    )
    .bind(endpoint)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((organization, url, description, disabled_at, org_name)) = row else { return Ok(()) };
    fail_pending(tx, endpoint).await?;
    let actor = crate::audit::Actor::system("webhooks");
    let details = json!({ "reason": "failing", "failing_since": failing_since, "last_error": last_error });
    crate::audit::record(
        tx,
        &actor,
        organization,
        "webhook_endpoint.disable",
        format!("webhook_endpoint:{endpoint}"),
        details,
    )
    .await?;
    let admins: Vec<String> = sqlx::query_scalar(
        "SELECT email FROM users WHERE organization_id = $1 AND role = 'organizer_admin' AND NOT disabled ORDER BY created_at",
    )
    .bind(organization)
    .fetch_all(&mut *tx)
    .await?;
    let when = |t: DateTime<Utc>| t.format("%A %-d %B %Y, %H:%M UTC").to_string();
    let context = json!({
        "endpoint": {
            "id": endpoint,
            "url": url,
            "description": if description.is_empty() { "no description".to_owned() } else { description },
            "organization": org_name,
            "failing_since": when(failing_since),
            "failing_since_rfc3339": failing_since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "disabled_at": when(disabled_at),
            "last_error": last_error,
            "retention_days": super::settings::DELIVERY_RETENTION_DAYS,
        }
    });
    let mail = match crate::notifications::templates::render("webhook_disabled", &context) {
        Ok(mail) => mail,
        Err(e) => {
            tracing::error!(error = %e, "webhooks: the disabled endpoint's mail did not render");
            return Ok(());
        }
    };
    for admin in admins {
        let key = format!("webhook_disabled:{endpoint}:{}:{admin}", disabled_at.timestamp_millis());
        crate::notifications::queue(tx, &key, "webhook_disabled", &admin, &mail, &[], None, None).await?;
    }
    tracing::warn!(%endpoint, %organization, "webhooks: an endpoint failing since {failing_since} was disabled");
    Ok(())
}

/// Why a request got no answer, in words an organizer can act on (never the secret).
fn describe(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut text = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "could not connect".to_owned()
    } else {
        "the request failed".to_owned()
    };
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// At most `max` bytes of `s`, whole characters, NUL replaced (PostgreSQL's text cannot hold it:
/// a partner answering one must not make its attempt unrecordable, and so retried for ever).
fn truncate(s: &str, max: usize) -> String {
    let clean = s.replace('\0', "\u{fffd}");
    let mut end = clean.len().min(max);
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    clean[..end].to_owned()
}

/// Deletes deliveries (and their attempts) older than the retention (their bodies carry buyers'
/// addresses), in batches; answers how many.
pub async fn prune(db: &PgPool) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let done = sqlx::query(
            "DELETE FROM webhook_deliveries WHERE id IN (
                 SELECT id FROM webhook_deliveries WHERE created_at < now() - make_interval(days => $1) LIMIT 5000)",
        )
        .bind(super::settings::DELIVERY_RETENTION_DAYS)
        .execute(db)
        .await?;
        total += done.rows_affected();
        if done.rows_affected() < 5000 {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn what_is_kept_of_an_answer_is_bounded_whole_characters_without_nul() {
        assert_eq!(super::truncate("bad\0news", 100), "bad\u{fffd}news");
        assert_eq!(super::truncate("ééé", 3), "é", "never half a character");
        assert_eq!(super::truncate(&"x".repeat(5000), super::RESPONSE_MAX).len(), super::RESPONSE_MAX);
    }
}
