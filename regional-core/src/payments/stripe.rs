//! Stripe, through its documented HTTP API: Checkout Sessions (create, retrieve, expire) and
//! Refunds, form-encoded with `Authorization: Bearer <secret key>` and `Idempotency-Key` on every
//! creating call; webhooks verified by `Stripe-Signature`. The base URL is configurable
//! (`STRIPE_API_BASE`), which is how the tests run it against a local server that answers as
//! Stripe documents (`scripts/fake-stripe.mjs`).
//!
//! Why Checkout Sessions (Stripe's hosted payment page) and not the Payment Element: the buyer's
//! card never touches our pages, so the shop stays out of PCI DSS scope beyond SAQ A, the edge's
//! pages keep their strict Content-Security-Policy (no third-party script on them), and Stripe's
//! page brings wallets, 3-D Secure and its own translations. The cost is a redirect, which the
//! order page already makes for the test provider. Cards only (wallets included): a seat hold
//! lasts minutes, so payment methods that settle days later (bank debits) cannot pay for it.

use std::time::Duration;

use serde_json::Value;

use super::signature::{self, Delivery, SignatureError};
use super::{
    CreatedPayment, PaymentProvider, PaymentRequest, ProviderError, RemoteState, WebhookEvent, WebhookKind,
};

/// The API version the adapter is written against (the shapes it reads).
pub const API_VERSION: &str = "2025-03-31.basil";
/// A session stays payable this long after the hold's end (`expires_at`), as a backstop: the saga
/// expires it itself at the deadline. Stripe takes an `expires_at` 30 minutes to 24 hours after the
/// session's creation, and a retried creation must send the same parameters (same idempotency key),
/// so the value is derived from the hold's end alone, never from the clock: an hour after it is
/// at least 30 minutes after any retry (creation is not retried once the hold has ended).
const EXPIRY_AFTER_HOLD_SECS: i64 = 3600;

#[derive(Clone)]
pub struct Stripe {
    base: String,
    secret_key: String,
    webhook_secrets: Vec<String>,
    /// Where Stripe sends the buyer back: the shop's order pages (`BUYER_URL/orders/`). Never a
    /// URL the order named: Stripe's page would then send a buyer wherever whoever made the order
    /// wanted (an open redirect behind a genuine checkout.stripe.com link).
    order_pages: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for Stripe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Stripe({}, ***)", self.base)
    }
}

/// `application/x-www-form-urlencoded`, as Stripe expects (brackets for nested keys).
fn form(fields: &[(&str, String)]) -> String {
    fn enc(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }
    fields.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

/// A Checkout Session's `status` and `payment_status` as the saga sees them.
fn state_of(session: &Value) -> RemoteState {
    match (session["status"].as_str(), session["payment_status"].as_str()) {
        (_, Some("paid")) => RemoteState::Succeeded,
        (Some("expired"), _) => RemoteState::Canceled,
        // open, or complete and waiting for a delayed method's outcome (not offered: cards only).
        _ => RemoteState::Pending,
    }
}

/// A PaymentIntent's `status` (payments made before Checkout Sessions).
fn intent_state(intent: &Value) -> RemoteState {
    match intent["status"].as_str() {
        Some("succeeded") => RemoteState::Succeeded,
        Some("canceled") => RemoteState::Canceled,
        _ => RemoteState::Pending,
    }
}

/// A session's id is the last path segment of every call made with it: only Stripe's characters.
fn valid_id(reference: &str) -> Result<&str, ProviderError> {
    let ok = !reference.is_empty()
        && reference.len() <= 255
        && reference.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(reference)
    } else {
        Err(ProviderError::Refused("not a Stripe id".into()))
    }
}

impl Stripe {
    /// `buyer_url`: the shop's public URL, where Stripe sends buyers back.
    pub fn new(base: &str, secret_key: String, webhook_secrets: Vec<String>, buyer_url: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .user_agent(concat!("ticketing-core/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Self {
            base: base.trim_end_matches('/').to_owned(),
            secret_key,
            webhook_secrets,
            order_pages: format!("{}/orders/", buyer_url.trim_end_matches('/')),
            http,
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
        idempotency_key: Option<&str>,
    ) -> Result<Value, ProviderError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.secret_key)
            .header("Stripe-Version", API_VERSION);
        if let Some(key) = idempotency_key {
            req = req.header("Idempotency-Key", key);
        }
        if let Some(body) = body {
            req = req.header("content-type", "application/x-www-form-urlencoded").body(body);
        }
        let resp = req.send().await.map_err(|e| ProviderError::Unavailable(e.without_url().to_string()))?;
        let status = resp.status();
        let value: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        let message = value["error"]["message"].as_str().unwrap_or("").to_owned();
        let kind = value["error"]["type"].as_str().unwrap_or("");
        // Refused means "this request will never succeed": the saga then gives up on the order.
        // What an operator must fix (a wrong or restricted key: 401, 403; a wrong base: 404) or
        // Stripe is busy with (409: the same idempotent request in flight; 429; 5xx), or a
        // parameter drift of ours (an idempotency error), is retried instead, and logged.
        let retry = matches!(status.as_u16(), 401 | 403 | 404 | 409 | 429)
            || status.is_server_error()
            || kind == "idempotency_error";
        if matches!(status.as_u16(), 401 | 403) || kind == "idempotency_error" {
            tracing::error!(%status, kind, "stripe refused the core itself: check STRIPE_SECRET_KEY and the account");
        }
        if retry {
            Err(ProviderError::Unavailable(format!("stripe answered {status}: {message}")))
        } else {
            Err(ProviderError::Refused(format!("stripe answered {status}: {message}")))
        }
    }

    /// A payment made before Checkout Sessions (a PaymentIntent, `pi_…`): it could never be paid
    /// (the order page had no way to pay with it), so it only needs cancelling and reading.
    fn legacy(reference: &str) -> bool {
        reference.starts_with("pi_")
    }

    async fn session(&self, reference: &str) -> Result<Value, ProviderError> {
        let path = format!("/v1/checkout/sessions/{}", valid_id(reference)?);
        self.send(reqwest::Method::GET, &path, None, None).await
    }
}

impl PaymentProvider for Stripe {
    fn name(&self) -> &'static str {
        "stripe"
    }

    async fn create(&self, request: &PaymentRequest<'_>) -> Result<CreatedPayment, ProviderError> {
        let back = format!("{}{}", self.order_pages, request.order_id);
        let expires_at = request.pay_by + EXPIRY_AFTER_HOLD_SECS;
        let mut fields = vec![
            ("mode", "payment".to_owned()),
            ("line_items[0][quantity]", "1".to_owned()),
            ("line_items[0][price_data][currency]", request.currency.to_ascii_lowercase()),
            ("line_items[0][price_data][unit_amount]", request.amount_minor.to_string()),
            ("line_items[0][price_data][product_data][name]", request.description.to_owned()),
            ("payment_method_types[0]", "card".to_owned()),
            ("success_url", back.clone()),
            ("cancel_url", back),
            ("client_reference_id", request.order_id.to_owned()),
            ("metadata[order_id]", request.order_id.to_owned()),
            ("payment_intent_data[metadata][order_id]", request.order_id.to_owned()),
            ("expires_at", expires_at.to_string()),
        ];
        if let Some(email) = request.email {
            fields.push(("customer_email", email.to_owned()));
        }
        let session = self
            .send(
                reqwest::Method::POST,
                "/v1/checkout/sessions",
                Some(form(&fields)),
                Some(request.idempotency_key),
            )
            .await?;
        let reference = session["id"]
            .as_str()
            .ok_or_else(|| ProviderError::Unavailable("no id in stripe's answer".into()))?;
        let url = session["url"].as_str().filter(|u| u.starts_with("https://") || u.starts_with("http://"));
        Ok(CreatedPayment {
            reference: valid_id(reference)
                .map_err(|_| ProviderError::Unavailable("stripe answered an id it does not make".into()))?
                .to_owned(),
            redirect_url: url.map(str::to_owned),
            state: state_of(&session),
        })
    }

    async fn retrieve(&self, reference: &str) -> Result<RemoteState, ProviderError> {
        if Self::legacy(reference) {
            let path = format!("/v1/payment_intents/{}", valid_id(reference)?);
            return Ok(intent_state(&self.send(reqwest::Method::GET, &path, None, None).await?));
        }
        Ok(state_of(&self.session(reference).await?))
    }

    async fn cancel(&self, reference: &str) -> Result<RemoteState, ProviderError> {
        let path = if Self::legacy(reference) {
            format!("/v1/payment_intents/{}/cancel", valid_id(reference)?)
        } else {
            format!("/v1/checkout/sessions/{}/expire", valid_id(reference)?)
        };
        match self.send(reqwest::Method::POST, &path, Some(String::new()), None).await {
            Ok(answer) if Self::legacy(reference) => Ok(intent_state(&answer)),
            Ok(session) => Ok(state_of(&session)),
            // Stripe refuses to expire a session that is no longer open (paid, or expired already):
            // ask what it is.
            Err(ProviderError::Refused(_)) => self.retrieve(reference).await,
            Err(e) => Err(e),
        }
    }

    async fn refund(&self, reference: &str, amount_minor: i64, key: &str) -> Result<String, ProviderError> {
        // A refund names the session's PaymentIntent, which exists once the buyer has paid.
        let intent = if Self::legacy(reference) {
            reference.to_owned()
        } else {
            let session = self.session(reference).await?;
            let intent =
                session["payment_intent"].as_str().or_else(|| session["payment_intent"]["id"].as_str());
            intent
                .ok_or_else(|| ProviderError::Refused("the session has no payment to refund".into()))?
                .to_owned()
        };
        let body = form(&[("payment_intent", intent), ("amount", amount_minor.to_string())]);
        let refund = self.send(reqwest::Method::POST, "/v1/refunds", Some(body), Some(key)).await?;
        match refund["status"].as_str() {
            Some("failed" | "canceled") => Err(ProviderError::Refused("the refund failed".into())),
            _ => {
                refund["id"].as_str().map(str::to_owned).ok_or_else(|| ProviderError::Refused("no id".into()))
            }
        }
    }

    fn verify_webhook(&self, delivery: &Delivery<'_>) -> Result<WebhookEvent, SignatureError> {
        // The Checkout Session events an endpoint subscribes to (infra/README.md); the payment is
        // the session. Anything else is acknowledged and ignored.
        signature::read_event(delivery, &self.webhook_secrets, classify)
    }
}

/// What a verified Stripe event means for us. The Checkout Session events an endpoint subscribes
/// to (infra/README.md); the payment is the session. Anything else is acknowledged and ignored.
pub fn classify<'e>(kind: &str, event: &'e serde_json::Value) -> (WebhookKind, Option<&'e str>) {
    let session = &event["data"]["object"];
    // Not a session, or not one of ours (another integration on the same Stripe account: ours
    // carry the order's id), is acknowledged and left alone rather than refused, which would have
    // Stripe retry it for days.
    let ours = session["metadata"]["order_id"].as_str().is_some_and(|o| !o.is_empty());
    if session["object"].as_str() != Some("checkout.session") || !ours {
        return (WebhookKind::Other, None);
    }
    let kind = match kind {
        // Completed means paid for cards; a delayed method's completion is not yet paid.
        "checkout.session.completed" if session["payment_status"] == "paid" => WebhookKind::PaymentSucceeded,
        "checkout.session.async_payment_succeeded" => WebhookKind::PaymentSucceeded,
        "checkout.session.async_payment_failed" => WebhookKind::PaymentFailed,
        "checkout.session.expired" => WebhookKind::PaymentCanceled,
        _ => WebhookKind::Other,
    };
    (kind, session["id"].as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_encoded_as_stripe_expects() {
        assert_eq!(
            form(&[("metadata[order_id]", "a b&c".into()), ("amount", "100".into())]),
            "metadata%5Border_id%5D=a%20b%26c&amount=100"
        );
    }

    fn event(kind: &str, object: serde_json::Value) -> Vec<u8> {
        serde_json::json!({ "id": "evt_1", "object": "event", "type": kind, "data": { "object": object } })
            .to_string()
            .into_bytes()
    }

    #[test]
    fn webhooks_are_read_from_stripes_event_shape() {
        let stripe = Stripe::new("http://x", "sk".into(), vec!["whsec_1".into()], "https://shop.test");
        let read = |body: &[u8], now: i64| {
            let header = signature::sign("whsec_1", 1_800_000_000, body);
            stripe.verify_webhook(&Delivery { signature: Some(&header), body, now })
        };
        let session = |status: &str, paid: &str| {
            serde_json::json!({ "id": "cs_1", "object": "checkout.session", "status": status, "payment_status": paid,
                                "metadata": { "order_id": "o-1" } })
        };
        let kind = |body: Vec<u8>| read(&body, 1_800_000_010).unwrap();
        let paid = kind(event("checkout.session.completed", session("complete", "paid")));
        assert_eq!(
            paid,
            WebhookEvent {
                id: "evt_1".into(),
                kind: WebhookKind::PaymentSucceeded,
                reference: "cs_1".into()
            }
        );
        // Completed but not yet paid (a delayed method) is not a success; its outcome follows.
        let unpaid = kind(event("checkout.session.completed", session("complete", "unpaid")));
        assert_eq!(unpaid.kind, WebhookKind::Other);
        for (name, expected) in [
            ("checkout.session.async_payment_succeeded", WebhookKind::PaymentSucceeded),
            ("checkout.session.async_payment_failed", WebhookKind::PaymentFailed),
            ("checkout.session.expired", WebhookKind::PaymentCanceled),
        ] {
            assert_eq!(kind(event(name, session("complete", "unpaid"))).kind, expected, "{name}");
        }
        // Another integration's session is not ours to act on.
        let foreign = serde_json::json!({ "id": "cs_2", "object": "checkout.session", "status": "complete", "payment_status": "paid" });
        assert_eq!(kind(event("checkout.session.completed", foreign)).kind, WebhookKind::Other);
        // Events about other objects (a PaymentIntent, a charge) are acknowledged and ignored.
        let intent = serde_json::json!({ "id": "pi_1", "object": "payment_intent", "status": "succeeded" });
        assert_eq!(kind(event("payment_intent.succeeded", intent)).kind, WebhookKind::Other);
        let body = event("checkout.session.completed", session("complete", "paid"));
        assert_eq!(read(&body, 1_800_000_400), Err(SignatureError::Stale));
    }

    #[test]
    fn sessions_are_read_as_the_saga_needs() {
        let s = |status: &str, paid: &str| serde_json::json!({ "status": status, "payment_status": paid });
        assert_eq!(state_of(&s("open", "unpaid")), RemoteState::Pending);
        assert_eq!(state_of(&s("complete", "paid")), RemoteState::Succeeded);
        assert_eq!(state_of(&s("complete", "unpaid")), RemoteState::Pending);
        assert_eq!(state_of(&s("expired", "unpaid")), RemoteState::Canceled);
        assert!(valid_id("cs_test_a1B2").is_ok());
        for bad in ["", "cs/../x", "cs_1?expand=x", "cs 1"] {
            assert!(valid_id(bad).is_err(), "{bad:?}");
        }
    }
}
