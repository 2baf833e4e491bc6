//! Stripe, through its documented HTTP API: PaymentIntents (create, retrieve, cancel) and
//! Refunds, form-encoded with `Authorization: Bearer <secret key>` and `Idempotency-Key` on every
//! creating call; webhooks verified by `Stripe-Signature`. The base URL is configurable
//! (`STRIPE_API_BASE`), which is how the tests run it against a local server that answers as
//! Stripe documents.

use std::time::Duration;

use serde_json::Value;

use super::signature::{self, Delivery, SignatureError};
use super::{
    CreatedPayment, PaymentProvider, PaymentRequest, ProviderError, RemoteState, WebhookEvent, WebhookKind,
};

#[derive(Clone)]
pub struct Stripe {
    base: String,
    secret_key: String,
    webhook_secrets: Vec<String>,
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

/// A PaymentIntent's `status` as the saga sees it.
fn state_of(status: &str) -> RemoteState {
    match status {
        "succeeded" => RemoteState::Succeeded,
        "canceled" => RemoteState::Canceled,
        // requires_payment_method after a failed attempt is still payable: pending for the saga,
        // the failure itself arrives as `payment_intent.payment_failed`.
        _ => RemoteState::Pending,
    }
}

impl Stripe {
    pub fn new(base: &str, secret_key: String, webhook_secrets: Vec<String>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .user_agent(concat!("ticketing-core/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Self { base: base.trim_end_matches('/').to_owned(), secret_key, webhook_secrets, http }
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
            .header("Stripe-Version", "2024-06-20");
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
        if status.as_u16() == 429 || status.is_server_error() || status.as_u16() == 409 {
            // 409: an idempotent request still in flight at Stripe; try again.
            Err(ProviderError::Unavailable(format!("stripe answered {status}: {message}")))
        } else {
            Err(ProviderError::Refused(format!("stripe answered {status}: {message}")))
        }
    }
}

impl PaymentProvider for Stripe {
    fn name(&self) -> &'static str {
        "stripe"
    }

    async fn create(&self, request: &PaymentRequest<'_>) -> Result<CreatedPayment, ProviderError> {
        let body = form(&[
            ("amount", request.amount_minor.to_string()),
            ("currency", request.currency.to_ascii_lowercase()),
            ("description", request.description.to_owned()),
            ("metadata[order_id]", request.order_id.to_owned()),
            ("automatic_payment_methods[enabled]", "true".to_owned()),
        ]);
        let pi = self
            .send(reqwest::Method::POST, "/v1/payment_intents", Some(body), Some(request.idempotency_key))
            .await?;
        let reference = pi["id"].as_str().ok_or_else(|| ProviderError::Refused("no id in answer".into()))?;
        Ok(CreatedPayment {
            reference: reference.to_owned(),
            redirect_url: None,
            client_secret: pi["client_secret"].as_str().map(str::to_owned),
            state: state_of(pi["status"].as_str().unwrap_or("")),
        })
    }

    async fn retrieve(&self, reference: &str) -> Result<RemoteState, ProviderError> {
        let pi =
            self.send(reqwest::Method::GET, &format!("/v1/payment_intents/{reference}"), None, None).await?;
        Ok(state_of(pi["status"].as_str().unwrap_or("")))
    }

    async fn cancel(&self, reference: &str) -> Result<RemoteState, ProviderError> {
        let path = format!("/v1/payment_intents/{reference}/cancel");
        match self.send(reqwest::Method::POST, &path, Some(String::new()), None).await {
            Ok(pi) => Ok(state_of(pi["status"].as_str().unwrap_or(""))),
            // Stripe refuses to cancel a succeeded (or already canceled) intent: ask what it is.
            Err(ProviderError::Refused(_)) => self.retrieve(reference).await,
            Err(e) => Err(e),
        }
    }

    async fn refund(&self, reference: &str, amount_minor: i64, key: &str) -> Result<String, ProviderError> {
        let body = form(&[("payment_intent", reference.to_owned()), ("amount", amount_minor.to_string())]);
        let refund = self.send(reqwest::Method::POST, "/v1/refunds", Some(body), Some(key)).await?;
        match refund["status"].as_str() {
            Some("failed" | "canceled") => Err(ProviderError::Refused("the refund failed".into())),
            _ => {
                refund["id"].as_str().map(str::to_owned).ok_or_else(|| ProviderError::Refused("no id".into()))
            }
        }
    }

    fn verify_webhook(&self, delivery: &Delivery<'_>) -> Result<WebhookEvent, SignatureError> {
        const KINDS: [(&str, WebhookKind); 3] = [
            ("payment_intent.succeeded", WebhookKind::PaymentSucceeded),
            ("payment_intent.payment_failed", WebhookKind::PaymentFailed),
            ("payment_intent.canceled", WebhookKind::PaymentCanceled),
        ];
        // The payment an event is about: the intent itself, or the one a charge or refund names.
        signature::read_event(delivery, &self.webhook_secrets, &KINDS, |e| {
            let object = &e["data"]["object"];
            match object["object"].as_str() {
                Some("payment_intent") => object["id"].as_str(),
                _ => object["payment_intent"].as_str(),
            }
        })
    }
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

    #[test]
    fn webhooks_are_read_from_stripes_event_shape() {
        let stripe = Stripe::new("http://x", "sk".into(), vec!["whsec_1".into()]);
        let body = br#"{"id":"evt_1","object":"event","type":"payment_intent.succeeded","data":{"object":{"id":"pi_1","object":"payment_intent","status":"succeeded"}}}"#;
        let header = signature::sign("whsec_1", 1_800_000_000, body);
        let event =
            stripe.verify_webhook(&Delivery { signature: Some(&header), body, now: 1_800_000_010 }).unwrap();
        assert_eq!(
            event,
            WebhookEvent {
                id: "evt_1".into(),
                kind: WebhookKind::PaymentSucceeded,
                reference: "pi_1".into()
            }
        );
        assert_eq!(
            stripe.verify_webhook(&Delivery { signature: Some(&header), body, now: 1_800_000_400 }),
            Err(SignatureError::Stale)
        );
    }
}
