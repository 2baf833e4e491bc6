//! The Stripe adapter against the local Stripe (`scripts/fake-stripe.mjs`, which answers as Stripe's
//! API reference documents and is itself checked with Stripe's official Node library): Checkout
//! Sessions and Refunds, bearer secret key, `Idempotency-Key`, error objects; and Stripe webhooks
//! through the core's route (`Stripe-Signature`, tolerance, rotation).

use crate::common;

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};

use common::{checkout, state_with, Api};
use regional_core::checkout::Checkout;
use regional_core::payments::provider::Provider;
use regional_core::payments::stripe::Stripe;
use regional_core::payments::{signature, PaymentProvider, PaymentRequest, ProviderError, RemoteState};
use serde_json::{json, Value};
use shared_types::token::TokenSigner;
use sqlx::PgPool;

/// The local Stripe, stopped when dropped.
struct LocalStripe {
    child: Child,
    base: String,
}

impl Drop for LocalStripe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LocalStripe {
    fn start() -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/fake-stripe.mjs");
        let mut child = Command::new("node")
            .args([script, "--key", "sk_test_local"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node runs scripts/fake-stripe.mjs");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let ready: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        Self { child, base: ready["url"].as_str().unwrap().to_owned() }
    }

    async fn session(&self, id: &str) -> Value {
        reqwest::Client::new()
            .get(format!("{}/v1/checkout/sessions/{id}", self.base))
            .bearer_auth("sk_test_local")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The buyer pays on the hosted page (the fake's form); where it sends them back.
    async fn pay(&self, page: &str, card: &str) -> (u16, String) {
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let resp = client.post(page).form(&[("card", card)]).send().await.unwrap();
        let status = resp.status().as_u16();
        let location = resp.headers().get("location").map(|l| l.to_str().unwrap().to_owned());
        (status, location.unwrap_or_default())
    }
}

fn request<'a>(key: &'a str, order: &'a str, pay_by: i64) -> PaymentRequest<'a> {
    PaymentRequest {
        idempotency_key: key,
        amount_minor: 12_852,
        currency: "EUR",
        order_id: order,
        description: "Tickets: Long holds",
        email: Some("buyer@example.test"),
        return_url: Some("https://shop.example.test/orders/"),
        pay_by,
    }
}

#[tokio::test]
async fn checkout_sessions_and_refunds_follow_stripes_api() {
    let fake = LocalStripe::start();
    let stripe = Stripe::new(&fake.base, "sk_test_local".into(), vec!["whsec_a".into()], "https://shop.test");
    // A hold that ends in ten minutes; the same creation retried a second later (a timeout, a
    // crash before the payment was recorded) sends the same parameters, so Stripe answers the
    // same session rather than an idempotency error.
    let now = chrono::Utc::now().timestamp();
    let first = stripe.create(&request("order-1", "o-1", now + 600)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let again = stripe.create(&request("order-1", "o-1", now + 600)).await.unwrap();
    assert_eq!(first, again, "the same idempotency key makes one session");
    assert_eq!(first.state, RemoteState::Pending);
    let page = first.redirect_url.clone().expect("the hosted page");
    assert!(page.starts_with(&fake.base), "{page}");
    let session = fake.session(&first.reference).await;
    assert_eq!((session["amount_total"].as_i64(), session["currency"].as_str()), (Some(12_852), Some("eur")));
    assert_eq!(session["metadata"]["order_id"], "o-1");
    assert_eq!(session["client_reference_id"], "o-1");
    assert_eq!(session["customer_email"], "buyer@example.test");
    assert_eq!(session["payment_method_types"], json!(["card"]));
    // Back to the shop's own order page, whatever way back the order named (an order must not
    // turn Stripe's genuine page into a redirect to anywhere).
    assert_eq!(session["success_url"], "https://shop.test/orders/o-1");
    assert_eq!(session["cancel_url"], "https://shop.test/orders/o-1");
    // Payable until an hour after the hold's end at the latest (the saga expires it at the end).
    assert_eq!(session["expires_at"].as_i64(), Some(now + 600 + 3600));
    assert_eq!(stripe.retrieve(&first.reference).await.unwrap(), RemoteState::Pending);

    // Cancelling an open session expires it; the buyer can no longer pay on its page.
    assert_eq!(stripe.cancel(&first.reference).await.unwrap(), RemoteState::Canceled);
    assert_eq!(fake.pay(&page, "4242424242424242").await.0, 410);
    assert_eq!(stripe.cancel(&first.reference).await.unwrap(), RemoteState::Canceled, "twice is the same");

    // A declined card leaves the session open; a good one pays and sends the buyer back.
    let paid = stripe.create(&request("order-2", "o-2", now + 7200)).await.unwrap();
    let page = paid.redirect_url.clone().unwrap();
    assert_eq!(fake.pay(&page, "4000000000000002").await.0, 200);
    assert_eq!(stripe.retrieve(&paid.reference).await.unwrap(), RemoteState::Pending);
    assert_eq!(fake.pay(&page, "4242424242424242").await, (303, "https://shop.test/orders/o-2".into()));
    assert_eq!(stripe.retrieve(&paid.reference).await.unwrap(), RemoteState::Succeeded);
    // Too late to cancel: the adapter says it was paid.
    assert_eq!(stripe.cancel(&paid.reference).await.unwrap(), RemoteState::Succeeded);

    // Refunds go to the session's PaymentIntent: idempotent by key; more than was paid is refused.
    let r1 = stripe.refund(&paid.reference, 5_000, "refund-order-2").await.unwrap();
    let r2 = stripe.refund(&paid.reference, 5_000, "refund-order-2").await.unwrap();
    assert_eq!(r1, r2);
    assert!(matches!(
        stripe.refund(&paid.reference, 10_000, "refund-more").await,
        Err(ProviderError::Refused(_))
    ));
    // An unpaid session has nothing to refund.
    let unpaid = stripe.create(&request("order-3", "o-3", now + 600)).await.unwrap();
    assert!(matches!(
        stripe.refund(&unpaid.reference, 100, "refund-3").await,
        Err(ProviderError::Refused(_))
    ));

    // A 5xx is worth retrying, and so is a wrong key (the operator's to fix: the order must not
    // fail for it); a request Stripe refuses as such is not; an id that is not Stripe's never
    // reaches it.
    reqwest::Client::new().post(format!("{}/_fake/fail-next", fake.base)).send().await.unwrap();
    assert!(matches!(
        stripe.create(&request("order-4", "o-4", now + 600)).await,
        Err(ProviderError::Unavailable(_))
    ));
    let wrong = Stripe::new(&fake.base, "sk_test_wrong".into(), vec![], "https://shop.test");
    assert!(matches!(
        wrong.create(&request("order-5", "o-5", now + 600)).await,
        Err(ProviderError::Unavailable(_))
    ));
    let tiny = PaymentRequest { amount_minor: 49, ..request("order-6", "o-6", now + 600) };
    assert!(matches!(stripe.create(&tiny).await, Err(ProviderError::Refused(_))), "under Stripe's minimum");
    assert!(matches!(stripe.retrieve("cs_1/../../v1/refunds").await, Err(ProviderError::Refused(_))));
}

#[sqlx::test]
async fn stripe_webhooks_are_verified_deduplicated_and_accepted_during_a_rotation(db: PgPool) {
    let signer = TokenSigner::from_seed("core-test", [7; 32]).unwrap();
    let secrets = vec!["whsec_new".into(), "whsec_old".into()];
    let stripe = Stripe::new("http://127.0.0.1:9", "sk_test_local".into(), secrets, "https://shop.test");
    let api = Api::start_with(state_with(Checkout {
        provider: Provider::Stripe(stripe),
        ..checkout(&db, &signer)
    }))
    .await;
    let addr = api.base.trim_start_matches("http://").to_owned();
    let url = format!("http://{addr}/api/v1/webhooks/stripe");
    let send = |body: String, header: String| {
        let url = url.clone();
        async move {
            let resp = reqwest::Client::new()
                .post(url)
                .header("stripe-signature", header)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let now = chrono::Utc::now().timestamp();
    let refund_event = json!({ "id": "evt_1", "object": "event", "type": "charge.refunded",
                                "data": { "object": { "id": "ch_1", "object": "charge", "payment_intent": "pi_9" } } })
    .to_string();
    // Signed with the old secret during a rotation: accepted (and ignored: not a payment outcome).
    let (status, answer) =
        send(refund_event.clone(), signature::sign("whsec_old", now, refund_event.as_bytes())).await;
    assert_eq!((status, answer["ignored"].as_bool()), (200, Some(true)), "{answer}");
    // The same event again: a duplicate, nothing happens.
    let (status, answer) =
        send(refund_event.clone(), signature::sign("whsec_new", now, refund_event.as_bytes())).await;
    assert_eq!((status, answer["duplicate"].as_bool()), (200, Some(true)), "{answer}");
    // A payment outcome for a payment the core does not know (yet): 404, so that Stripe retries.
    let succeeded = json!({ "id": "evt_2", "object": "event", "type": "checkout.session.completed",
                             "data": { "object": { "id": "cs_unknown", "object": "checkout.session",
                                                   "status": "complete", "payment_status": "paid",
                                                   "metadata": { "order_id": "order-not-yet-recorded" } } } })
    .to_string();
    let (status, _) = send(succeeded.clone(), signature::sign("whsec_new", now, succeeded.as_bytes())).await;
    assert_eq!(status, 404);
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_events WHERE event_id = 'evt_2'")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(seen, 0, "an event that was not processed is not remembered");
    // Forged, stale and unsigned deliveries are refused.
    for (header, reason) in [
        (signature::sign("whsec_other", now, succeeded.as_bytes()), "bad-signature"),
        (signature::sign("whsec_new", now - 301, succeeded.as_bytes()), "stale-signature"),
    ] {
        let (status, problem) = send(succeeded.clone(), header).await;
        assert_eq!((status, problem["reason"].as_str()), (401, Some(reason)), "{problem}");
    }
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/webhooks/stripe"))
        .body(succeeded)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // The other provider's route does not exist on a Stripe deployment.
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/webhooks/testpay"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}
