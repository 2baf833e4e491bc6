//! The provider a deployment is configured with: one enum over the implementations, so that the
//! saga holds one concrete type.

use super::signature::{Delivery, SignatureError};
use super::stripe::Stripe;
use super::testpay::TestPay;
use super::{CreatedPayment, PaymentProvider, PaymentRequest, ProviderError, RemoteState, WebhookEvent};

/// The provider a deployment is configured with.
#[derive(Clone)]
pub enum Provider {
    Test(TestPay),
    Stripe(Stripe),
}

impl PaymentProvider for Provider {
    fn name(&self) -> &'static str {
        match self {
            Self::Test(p) => p.name(),
            Self::Stripe(p) => p.name(),
        }
    }

    async fn create(&self, request: &PaymentRequest<'_>) -> Result<CreatedPayment, ProviderError> {
        match self {
            Self::Test(p) => p.create(request).await,
            Self::Stripe(p) => p.create(request).await,
        }
    }

    async fn retrieve(&self, reference: &str) -> Result<RemoteState, ProviderError> {
        match self {
            Self::Test(p) => p.retrieve(reference).await,
            Self::Stripe(p) => p.retrieve(reference).await,
        }
    }

    async fn cancel(&self, reference: &str) -> Result<RemoteState, ProviderError> {
        match self {
            Self::Test(p) => p.cancel(reference).await,
            Self::Stripe(p) => p.cancel(reference).await,
        }
    }

    async fn refund(&self, reference: &str, amount_minor: i64, key: &str) -> Result<String, ProviderError> {
        match self {
            Self::Test(p) => p.refund(reference, amount_minor, key).await,
            Self::Stripe(p) => p.refund(reference, amount_minor, key).await,
        }
    }

    fn verify_webhook(&self, delivery: &Delivery<'_>) -> Result<WebhookEvent, SignatureError> {
        match self {
            Self::Test(p) => p.verify_webhook(delivery),
            Self::Stripe(p) => p.verify_webhook(delivery),
        }
    }
}
