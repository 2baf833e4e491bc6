//! Payment providers behind one trait: the built-in test provider ([`testpay`]) for local use and
//! tests, and Stripe ([`stripe`]), one of them chosen at start-up ([`provider::Provider`]). The saga only ever talks to [`PaymentProvider`]; every call is
//! idempotent by a key the core chooses (the order id), so a retried step never charges or refunds
//! twice. Outcomes arrive by signed webhook ([`signature`]); the reconciler also asks the provider
//! directly when a webhook is late.

pub mod provider;
pub mod signature;
pub mod stripe;
pub mod testpay;

use std::future::Future;

use signature::Delivery;

use serde::{Deserialize, Serialize};

/// The provider a payment taken at the box office is recorded under (cash, or the venue's own card
/// terminal: docs/box-office.md); no provider is called for it.
pub const BOX_OFFICE: &str = "box_office";

/// Where a payment stands at the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoteState {
    /// Waiting for the buyer (or in flight).
    Pending,
    Succeeded,
    Failed,
    Canceled,
}

/// A payment as the provider created it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedPayment {
    /// The provider's id for it.
    pub reference: String,
    /// The page the buyer opens to pay (the test provider's, Stripe Checkout's).
    pub redirect_url: Option<String>,
    pub state: RemoteState,
}

/// What the core asks a provider to charge.
#[derive(Debug, Clone)]
pub struct PaymentRequest<'a> {
    /// Unique per order: a retry creates nothing new.
    pub idempotency_key: &'a str,
    pub amount_minor: i64,
    pub currency: &'a str,
    /// The order id, carried in the provider's metadata and back in webhooks.
    pub order_id: &'a str,
    /// What the buyer sees on the provider's page (the event's title).
    pub description: &'a str,
    /// The buyer's address, so that the provider's page need not ask for it again.
    pub email: Option<&'a str>,
    /// Where the test provider's page sends the buyer back, with the order id appended. Stripe
    /// always sends buyers to the shop's order page (`BUYER_URL/orders/<id>`): an order cannot
    /// choose where a genuine payment page leads.
    pub return_url: Option<&'a str>,
    /// When the hold ends (Unix seconds), the same on every retry: the provider stops taking
    /// payment some time after it, as a backstop (the saga cancels the payment at the deadline).
    pub pay_by: i64,
}

/// A verified webhook's meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEvent {
    /// The provider's event id (deliveries of one event share it).
    pub id: String,
    pub kind: WebhookKind,
    /// The payment it is about.
    pub reference: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookKind {
    PaymentSucceeded,
    PaymentFailed,
    PaymentCanceled,
    /// Anything else (refund notices, other objects): acknowledged and ignored.
    Other,
}

impl WebhookKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PaymentSucceeded => "payment_succeeded",
            Self::PaymentFailed => "payment_failed",
            Self::PaymentCanceled => "payment_canceled",
            Self::Other => "other",
        }
    }
}

/// Why a provider call did not give an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Try again later (network, 5xx, rate limit).
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    /// The provider refused the request; retrying the same request will not help.
    #[error("provider refused: {0}")]
    Refused(String),
}

/// What one provider does for the saga.
pub trait PaymentProvider {
    /// The name stored with each payment (`testpay`, `stripe`).
    fn name(&self) -> &'static str;
    /// Creates a payment (idempotent by `request.idempotency_key`).
    fn create(
        &self,
        request: &PaymentRequest<'_>,
    ) -> impl Future<Output = Result<CreatedPayment, ProviderError>> + Send;
    /// The payment's current state (for the reconciler when a webhook is late).
    fn retrieve(&self, reference: &str) -> impl Future<Output = Result<RemoteState, ProviderError>> + Send;
    /// Cancels a payment that has not succeeded, so that it never can; answers the state it ends
    /// in (`Succeeded` when it was too late to cancel).
    fn cancel(&self, reference: &str) -> impl Future<Output = Result<RemoteState, ProviderError>> + Send;
    /// Refunds `amount_minor` of a succeeded payment (idempotent by `idempotency_key`); the
    /// provider's refund id.
    fn refund(
        &self,
        reference: &str,
        amount_minor: i64,
        idempotency_key: &str,
    ) -> impl Future<Output = Result<String, ProviderError>> + Send;
    /// Verifies a webhook delivery (signature, freshness) and reads what it says.
    fn verify_webhook(&self, delivery: &Delivery<'_>) -> Result<WebhookEvent, signature::SignatureError>;
}
