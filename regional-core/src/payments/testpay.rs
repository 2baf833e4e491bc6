//! The built-in test provider, "testpay": a payment provider that runs inside the core process,
//! with its own books (`testpay_*` tables), for local use and tests. It behaves as a remote
//! provider would:
//!
//! - the core creates, retrieves, cancels and refunds payments through [`PaymentProvider`],
//!   idempotently by key;
//! - the buyer (or a tester) opens the payment page `GET /testpay/pay/{id}` and approves,
//!   declines or delays the payment;
//! - the outcome is reported by webhook to `POST /api/v1/webhooks/testpay`, over real HTTP,
//!   signed with Stripe's scheme (`Testpay-Signature: t=..,v1=..`), retried with backoff until
//!   acknowledged; a tester can ask for duplicate deliveries, a delay, and a stale failure event
//!   delivered after the success (out of order), as real providers do.

use std::time::Duration;

use crate::api::Query;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::PgPool;

use super::signature::{self, Delivery, SignatureError};
use super::{
    CreatedPayment, PaymentProvider, PaymentRequest, ProviderError, RemoteState, WebhookEvent, WebhookKind,
};
use crate::error::{ApiError, Result};
use crate::templates;

/// Deliveries are abandoned after this many failed attempts (about an hour of backoff).
const MAX_DELIVERY_ATTEMPTS: i32 = 20;
/// Longest wait between two delivery attempts.
const MAX_DELIVERY_BACKOFF_SECS: i64 = 60;

#[derive(Clone)]
pub struct TestPay {
    db: PgPool,
    /// Wakes the delivery loop when an outcome is owed (it also looks every 100 ms).
    wake: std::sync::Arc<tokio::sync::Notify>,
    /// Where its pages are and where it sends webhooks: the core's public base URL.
    public_url: String,
    webhook_secret: String,
}

impl std::fmt::Debug for TestPay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TestPay({}, ***)", self.public_url)
    }
}

/// A fresh webhook secret for a start without `TESTPAY_WEBHOOK_SECRET`: 192 bits from the operating
/// system, or an error (never a predictable secret) when its random source fails.
pub fn random_secret() -> Result<String, String> {
    random_secret_from(getrandom::getrandom)
}

fn random_secret_from(
    fill: impl FnOnce(&mut [u8]) -> Result<(), getrandom::Error>,
) -> Result<String, String> {
    let mut bytes = [0u8; 24];
    fill(&mut bytes).map_err(|e| format!("the test provider's webhook secret: no random source ({e})"))?;
    Ok(format!("whsec_{}", hex::encode(bytes)))
}

fn random_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

fn unavailable(e: sqlx::Error) -> ProviderError {
    ProviderError::Unavailable(e.to_string())
}

fn remote(state: &str) -> RemoteState {
    match state {
        "succeeded" => RemoteState::Succeeded,
        "failed" => RemoteState::Failed,
        "canceled" => RemoteState::Canceled,
        _ => RemoteState::Pending,
    }
}

impl TestPay {
    pub fn new(db: PgPool, public_url: &str, webhook_secret: String) -> Self {
        Self {
            db,
            wake: Default::default(),
            public_url: public_url.trim_end_matches('/').to_owned(),
            webhook_secret,
        }
    }

    fn page_url(&self, id: &str) -> String {
        format!("{}/testpay/pay/{id}", self.public_url)
    }

    /// Records the webhooks an outcome owes the merchant.
    async fn owe(
        &self,
        tx: &mut sqlx::PgConnection,
        events: &[(String, Value, i64)],
    ) -> Result<(), sqlx::Error> {
        for (id, payload, delay_ms) in events {
            sqlx::query(
                "INSERT INTO testpay_deliveries (event_id, payload, next_attempt_at)
                 VALUES ($1, $2, now() + make_interval(secs => $3))",
            )
            .bind(id)
            .bind(payload)
            .bind(*delay_ms as f64 / 1000.0)
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }

    fn event(kind: &str, payment: &str, reference: &str, status: &str) -> (String, Value) {
        let id = random_id("evt");
        let body = json!({
            "id": id,
            "type": kind,
            "created": chrono::Utc::now().timestamp(),
            "data": { "payment": { "id": payment, "reference": reference, "status": status } },
        });
        (id, body)
    }

    /// The tester's decision on a payment; what the page shows afterwards.
    /// The message to show and the buyer's way back.
    async fn decide(&self, id: &str, decision: Decision, opts: &Options) -> Result<(String, Option<String>)> {
        let mut tx = self.db.begin().await?;
        let row: Option<(String, String, Option<String>)> = sqlx::query_as(
            "SELECT state, reference, return_url FROM testpay_payments WHERE id = $1 FOR UPDATE",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((state, reference, return_url)) = row else { return Err(ApiError::NotFound) };
        let back = return_url.map(|u| format!("{u}{reference}"));
        if !matches!(state.as_str(), "requires_payment" | "processing") {
            return Ok((format!("This payment is already {state}."), back));
        }
        let new_state = match decision {
            Decision::Approve => "succeeded",
            Decision::Decline => "failed",
        };
        sqlx::query("UPDATE testpay_payments SET state = $2 WHERE id = $1")
            .bind(id)
            .bind(new_state)
            .execute(&mut *tx)
            .await?;
        let delay = opts.delay_ms.unwrap_or(0).clamp(0, 600_000);
        let kind = if new_state == "succeeded" { "payment.succeeded" } else { "payment.failed" };
        let (event_id, payload) = Self::event(kind, id, &reference, new_state);
        let mut deliveries = Vec::new();
        // Duplicates are the same event (same id) delivered again, as providers do.
        for i in 0..=opts.duplicates.unwrap_or(0).min(5) {
            deliveries.push((event_id.clone(), payload.clone(), delay + i64::from(i) * 50));
        }
        if opts.stale_failure.unwrap_or(false) && new_state == "succeeded" {
            // A failure of an earlier attempt, delivered after the success.
            let (id2, p2) = Self::event("payment.failed", id, &reference, "failed");
            deliveries.push((id2, p2, delay + 300));
        }
        self.owe(&mut tx, &deliveries).await?;
        tx.commit().await?;
        self.wake.notify_one();
        Ok((format!("Payment {new_state}."), back))
    }

    /// Sends due webhooks once; how many were attempted.
    pub async fn deliver_due(&self, http: &reqwest::Client) -> Result<usize, sqlx::Error> {
        let due: Vec<(i64, Value, i32)> = sqlx::query_as(
            "UPDATE testpay_deliveries SET next_attempt_at = now() + interval '30 seconds'
             WHERE id IN (SELECT id FROM testpay_deliveries WHERE delivered_at IS NULL AND next_attempt_at <= now()
                          AND attempts < $1 ORDER BY next_attempt_at, id LIMIT 32 FOR UPDATE SKIP LOCKED)
             RETURNING id, payload, attempts",
        )
        .bind(MAX_DELIVERY_ATTEMPTS)
        .fetch_all(&self.db)
        .await?;
        // Concurrently, as a provider's delivery fleet would (one slow merchant call does not hold
        // up the others).
        use futures_util::StreamExt as _;
        let count = due.len();
        let results: Vec<Result<(), sqlx::Error>> = futures_util::stream::iter(due)
            .map(|(id, payload, attempts)| async move { self.deliver(http, id, &payload, attempts).await })
            .buffer_unordered(16)
            .collect()
            .await;
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
        Ok(count)
    }

    /// One delivery attempt, recorded.
    async fn deliver(
        &self,
        http: &reqwest::Client,
        id: i64,
        payload: &Value,
        attempts: i32,
    ) -> Result<(), sqlx::Error> {
        let body = serde_json::to_vec(payload).unwrap_or_default();
        let header = signature::sign(&self.webhook_secret, chrono::Utc::now().timestamp(), &body);
        let outcome = http
            .post(format!("{}/api/v1/webhooks/testpay", self.public_url))
            .header("content-type", "application/json")
            .header("testpay-signature", header)
            .body(body)
            .send()
            .await;
        let error = match outcome {
            Ok(resp) if resp.status().is_success() => None,
            Ok(resp) => Some(format!("merchant answered {}", resp.status())),
            Err(e) => Some(format!("merchant unreachable: {}", e.without_url())),
        };
        match error {
            None => {
                sqlx::query("UPDATE testpay_deliveries SET delivered_at = now(), attempts = attempts + 1 WHERE id = $1")
                    .bind(id)
                    .execute(&self.db)
                    .await?;
            }
            Some(error) => {
                let backoff = (1i64 << attempts.clamp(0, 6)).min(MAX_DELIVERY_BACKOFF_SECS);
                sqlx::query(
                    "UPDATE testpay_deliveries SET attempts = attempts + 1, last_error = $2,
                         next_attempt_at = now() + make_interval(secs => $3) WHERE id = $1",
                )
                .bind(id)
                .bind(&error)
                .bind(backoff as f64)
                .execute(&self.db)
                .await?;
                tracing::warn!(delivery = id, attempt = attempts + 1, %error, "testpay webhook not acknowledged");
            }
        }
        Ok(())
    }

    /// The delivery loop: runs until asked to stop.
    pub async fn run_deliveries(self, stop: crate::shutdown::Stop) {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default();
        while !stop.requested() {
            match self.deliver_due(&http).await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "testpay could not read its deliveries"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = self.wake.notified() => {}
                _ = stop.wait() => break,
            }
        }
    }

    /// The tester's pages and buttons, under `/testpay`.
    pub fn routes<S>(self) -> Router<S> {
        Router::new()
            .route("/testpay/pay/{id}", get(page))
            .route("/testpay/pay/{id}/{decision}", post(decide))
            .with_state(self)
    }
}

#[derive(Clone, Copy)]
enum Decision {
    Approve,
    Decline,
}

/// What a tester can ask of a decision (query string or form).
#[derive(Debug, Default, Deserialize)]
struct Options {
    /// Deliver the outcome this many extra times (same event id).
    duplicates: Option<u32>,
    /// Hold the outcome's webhook back this long.
    delay_ms: Option<i64>,
    /// After a success, also deliver a stale failure event (out of order).
    stale_failure: Option<bool>,
}

async fn page(State(pay): State<TestPay>, Path(id): Path<String>) -> Result<Response> {
    let row: Option<(i64, String, String, String)> =
        sqlx::query_as("SELECT amount_minor, currency, state, reference FROM testpay_payments WHERE id = $1")
            .bind(&id)
            .fetch_optional(&pay.db)
            .await?;
    let Some((amount, currency, state, reference)) = row else { return Err(ApiError::NotFound) };
    let amount = format!("{}.{:02} {currency}", amount / 100, amount % 100);
    let open = matches!(state.as_str(), "requires_payment" | "processing");
    let context = json!({
        "title": format!("testpay: {amount}"), "id": id, "amount": amount, "reference": reference,
        "state": state, "open": open,
    });
    Ok(Html(templates::render("testpay/pay.html", context)?).into_response())
}

async fn decide(
    State(pay): State<TestPay>,
    Path((id, decision)): Path<(String, String)>,
    Query(query): Query<Options>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response> {
    let decision = match decision.as_str() {
        "approve" => Decision::Approve,
        "decline" => Decision::Decline,
        _ => return Err(ApiError::NotFound),
    };
    // Options from the query string, or from the page's form.
    let mut form = Options::default();
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    for (name, value) in fields {
        match name.as_str() {
            "delay_ms" => form.delay_ms = value.parse().ok(),
            "duplicates" => form.duplicates = value.parse().ok(),
            "stale_failure" => form.stale_failure = Some(value == "true" || value == "1"),
            _ => {}
        }
    }
    let opts = Options {
        duplicates: query.duplicates.or(form.duplicates),
        delay_ms: query.delay_ms.or(form.delay_ms),
        stale_failure: query.stale_failure.or(form.stale_failure),
    };
    let (message, back) = pay.decide(&id, decision, &opts).await?;
    let wants_json = headers.get("accept").and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("json"));
    Ok(if wants_json {
        Json(json!({ "message": message, "return_url": back })).into_response()
    } else {
        let context = json!({ "title": "testpay", "message": message, "back": back });
        Html(templates::render("testpay/decided.html", context)?).into_response()
    })
}

impl PaymentProvider for TestPay {
    fn name(&self) -> &'static str {
        "testpay"
    }

    async fn create(&self, request: &PaymentRequest<'_>) -> Result<CreatedPayment, ProviderError> {
        let (id, state): (String, String) = sqlx::query_as(
            "WITH made AS (
                 INSERT INTO testpay_payments (id, idempotency_key, amount_minor, currency, reference, state, return_url)
                 VALUES ($1, $2, $3, $4, $5, 'requires_payment', $6)
                 ON CONFLICT (idempotency_key) DO NOTHING RETURNING id, state)
             SELECT id, state FROM made
             UNION ALL SELECT id, state FROM testpay_payments WHERE idempotency_key = $2
             LIMIT 1",
        )
        .bind(random_id("tp"))
        .bind(request.idempotency_key)
        .bind(request.amount_minor)
        .bind(request.currency)
        .bind(request.order_id)
        .bind(request.return_url)
        .fetch_one(&self.db)
        .await
        .map_err(unavailable)?;
        Ok(CreatedPayment { redirect_url: Some(self.page_url(&id)), reference: id, state: remote(&state) })
    }

    async fn retrieve(&self, reference: &str) -> Result<RemoteState, ProviderError> {
        let state: Option<String> = sqlx::query_scalar("SELECT state FROM testpay_payments WHERE id = $1")
            .bind(reference)
            .fetch_optional(&self.db)
            .await
            .map_err(unavailable)?;
        state.map(|s| remote(&s)).ok_or_else(|| ProviderError::Refused("no such payment".into()))
    }

    async fn cancel(&self, reference: &str) -> Result<RemoteState, ProviderError> {
        let mut tx = self.db.begin().await.map_err(unavailable)?;
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT state, reference FROM testpay_payments WHERE id = $1 FOR UPDATE")
                .bind(reference)
                .fetch_optional(&mut *tx)
                .await
                .map_err(unavailable)?;
        let Some((state, order)) = row else { return Err(ProviderError::Refused("no such payment".into())) };
        if matches!(state.as_str(), "requires_payment" | "processing") {
            sqlx::query("UPDATE testpay_payments SET state = 'canceled' WHERE id = $1")
                .bind(reference)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            let (id, payload) = Self::event("payment.canceled", reference, &order, "canceled");
            self.owe(&mut tx, &[(id, payload, 0)]).await.map_err(unavailable)?;
            tx.commit().await.map_err(unavailable)?;
            return Ok(RemoteState::Canceled);
        }
        Ok(remote(&state))
    }

    async fn refund(&self, reference: &str, amount_minor: i64, key: &str) -> Result<String, ProviderError> {
        let mut tx = self.db.begin().await.map_err(unavailable)?;
        let existing: Option<String> =
            sqlx::query_scalar("SELECT id FROM testpay_refunds WHERE idempotency_key = $1")
                .bind(key)
                .fetch_optional(&mut *tx)
                .await
                .map_err(unavailable)?;
        if let Some(id) = existing {
            return Ok(id);
        }
        let charged: Option<(String, i64, i64)> = sqlx::query_as(
            "SELECT state, amount_minor, refunded_minor FROM testpay_payments WHERE id = $1 FOR UPDATE",
        )
        .bind(reference)
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        let Some((state, amount, refunded)) = charged else {
            return Err(ProviderError::Refused("no such payment".into()));
        };
        if state != "succeeded" || amount_minor <= 0 || refunded + amount_minor > amount {
            return Err(ProviderError::Refused(format!("cannot refund {amount_minor} of a {state} payment")));
        }
        let id = random_id("re");
        sqlx::query("INSERT INTO testpay_refunds (id, idempotency_key, payment_id, amount_minor) VALUES ($1, $2, $3, $4)")
            .bind(&id)
            .bind(key)
            .bind(reference)
            .bind(amount_minor)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        sqlx::query("UPDATE testpay_payments SET refunded_minor = refunded_minor + $2 WHERE id = $1")
            .bind(reference)
            .bind(amount_minor)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(id)
    }

    fn verify_webhook(&self, delivery: &Delivery<'_>) -> Result<WebhookEvent, SignatureError> {
        signature::read_event(delivery, std::slice::from_ref(&self.webhook_secret), |kind, e| {
            let kind = match kind {
                "payment.succeeded" => WebhookKind::PaymentSucceeded,
                "payment.failed" => WebhookKind::PaymentFailed,
                "payment.canceled" => WebhookKind::PaymentCanceled,
                _ => WebhookKind::Other,
            };
            (kind, e["data"]["payment"]["id"].as_str())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_random_source_is_an_error_not_a_predictable_secret() {
        let failed = random_secret_from(|_| Err(getrandom::Error::UNSUPPORTED));
        assert!(failed.is_err());
        let a = random_secret().unwrap();
        assert!(a.starts_with("whsec_") && a.len() == 6 + 48);
        assert_ne!(a, random_secret().unwrap());
    }
}
