//! The Stripe adapter against a local server that answers as Stripe's API reference documents
//! (form-encoded PaymentIntents and Refunds, bearer secret key, `Idempotency-Key`, error objects),
//! and Stripe webhooks through the core's route (`Stripe-Signature`, tolerance, rotation).

use crate::common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use common::{checkout, state_with, Api};
use regional_core::checkout::Checkout;
use regional_core::payments::provider::Provider;
use regional_core::payments::stripe::Stripe;
use regional_core::payments::{signature, PaymentProvider, PaymentRequest, ProviderError, RemoteState};
use serde_json::{json, Value};
use shared_types::token::TokenSigner;
use sqlx::PgPool;

#[derive(Default)]
struct Books {
    intents: HashMap<String, Value>,
    /// Idempotency-Key → the first answer.
    replies: HashMap<String, Value>,
    refunds: Vec<Value>,
    fail_next: bool,
}

type Shared = Arc<Mutex<Books>>;

fn form(body: &str) -> HashMap<String, String> {
    body.split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| {
            let decode = |s: &str| {
                let bytes = s.as_bytes();
                let mut out = Vec::new();
                let mut i = 0;
                while i < bytes.len() {
                    if bytes[i] == b'%' && i + 2 < bytes.len() + 1 {
                        out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                        i += 3;
                    } else {
                        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
                        i += 1;
                    }
                }
                String::from_utf8(out).unwrap()
            };
            (decode(k), decode(v))
        })
        .collect()
}

fn stripe_error(status: StatusCode, code: &str, message: &str) -> (StatusCode, Json<Value>) {
    (status, Json(json!({ "error": { "type": "invalid_request_error", "code": code, "message": message } })))
}

fn authorized(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer sk_test_local")
}

async fn create_intent(
    State(books): State<Shared>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, Json<Value>) {
    if !authorized(&headers) {
        return stripe_error(StatusCode::UNAUTHORIZED, "invalid_api_key", "Invalid API Key provided");
    }
    let mut b = books.lock().unwrap();
    if std::mem::take(&mut b.fail_next) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": { "type": "api_error", "message": "boom" } })),
        );
    }
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
    if let Some(reply) = key.as_ref().and_then(|k| b.replies.get(k)) {
        return (StatusCode::OK, Json(reply.clone()));
    }
    let f = form(&body);
    let (Some(amount), Some(currency)) = (f.get("amount"), f.get("currency")) else {
        return stripe_error(StatusCode::BAD_REQUEST, "parameter_missing", "Missing required param: amount.");
    };
    let id = format!("pi_{}", b.intents.len() + 1);
    let intent = json!({
        "id": id, "object": "payment_intent", "amount": amount.parse::<i64>().unwrap(), "currency": currency,
        "status": "requires_payment_method", "client_secret": format!("{id}_secret_abc"),
        "metadata": { "order_id": f.get("metadata[order_id]") },
        "automatic_payment_methods": { "enabled": f.get("automatic_payment_methods[enabled]") == Some(&"true".to_owned()) },
    });
    b.intents.insert(id, intent.clone());
    if let Some(k) = key {
        b.replies.insert(k, intent.clone());
    }
    (StatusCode::OK, Json(intent))
}

async fn get_intent(State(books): State<Shared>, Path(id): Path<String>) -> (StatusCode, Json<Value>) {
    match books.lock().unwrap().intents.get(&id) {
        Some(i) => (StatusCode::OK, Json(i.clone())),
        None => stripe_error(StatusCode::NOT_FOUND, "resource_missing", "No such payment_intent"),
    }
}

async fn cancel_intent(State(books): State<Shared>, Path(id): Path<String>) -> (StatusCode, Json<Value>) {
    let mut b = books.lock().unwrap();
    let Some(intent) = b.intents.get_mut(&id) else {
        return stripe_error(StatusCode::NOT_FOUND, "resource_missing", "No such payment_intent");
    };
    if matches!(intent["status"].as_str(), Some("succeeded" | "canceled")) {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            "payment_intent_unexpected_state",
            "You cannot cancel this PaymentIntent because it has a status of succeeded.",
        );
    }
    intent["status"] = json!("canceled");
    (StatusCode::OK, Json(intent.clone()))
}

async fn create_refund(
    State(books): State<Shared>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, Json<Value>) {
    let mut b = books.lock().unwrap();
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
    if let Some(reply) = key.as_ref().and_then(|k| b.replies.get(k)) {
        return (StatusCode::OK, Json(reply.clone()));
    }
    let f = form(&body);
    let pi = f.get("payment_intent").cloned().unwrap_or_default();
    let amount: i64 = f.get("amount").and_then(|a| a.parse().ok()).unwrap_or(0);
    let Some(intent) = b.intents.get(&pi).cloned() else {
        return stripe_error(StatusCode::NOT_FOUND, "resource_missing", "No such payment_intent");
    };
    let refunded: i64 =
        b.refunds.iter().filter(|r| r["payment_intent"] == pi).map(|r| r["amount"].as_i64().unwrap()).sum();
    if intent["status"] != "succeeded" || refunded + amount > intent["amount"].as_i64().unwrap() {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            "charge_already_refunded",
            "Refund amount is greater than the unrefunded amount.",
        );
    }
    let refund = json!({ "id": format!("re_{}", b.refunds.len() + 1), "object": "refund", "amount": amount, "payment_intent": pi, "status": "succeeded" });
    b.refunds.push(refund.clone());
    if let Some(k) = key {
        b.replies.insert(k, refund.clone());
    }
    (StatusCode::OK, Json(refund))
}

async fn local_stripe() -> (String, Shared) {
    let books: Shared = Arc::default();
    let app = Router::new()
        .route("/v1/payment_intents", post(create_intent))
        .route("/v1/payment_intents/{id}", get(get_intent))
        .route("/v1/payment_intents/{id}/cancel", post(cancel_intent))
        .route("/v1/refunds", post(create_refund))
        .with_state(books.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), books)
}

fn request<'a>(key: &'a str) -> PaymentRequest<'a> {
    PaymentRequest {
        idempotency_key: key,
        amount_minor: 12_852,
        currency: "EUR",
        order_id: "order-1",
        description: "tickets",
        return_url: None,
    }
}

#[tokio::test]
async fn payment_intents_and_refunds_follow_stripes_api() {
    let (base, books) = local_stripe().await;
    let stripe = Stripe::new(&base, "sk_test_local".into(), vec!["whsec_a".into()]);

    // The same idempotency key creates one intent; its fields are as Stripe expects them.
    let first = stripe.create(&request("order-1")).await.unwrap();
    let again = stripe.create(&request("order-1")).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(first.state, RemoteState::Pending);
    assert_eq!(first.client_secret.as_deref(), Some("pi_1_secret_abc"));
    {
        let b = books.lock().unwrap();
        assert_eq!(b.intents.len(), 1);
        let pi = &b.intents["pi_1"];
        assert_eq!((pi["amount"].as_i64(), pi["currency"].as_str()), (Some(12_852), Some("eur")));
        assert_eq!(pi["metadata"]["order_id"], "order-1");
        assert_eq!(pi["automatic_payment_methods"]["enabled"], true);
    }
    assert_eq!(stripe.retrieve("pi_1").await.unwrap(), RemoteState::Pending);

    // Cancelling a pending intent cancels it; one that already succeeded says so.
    assert_eq!(stripe.cancel("pi_1").await.unwrap(), RemoteState::Canceled);
    let paid = stripe.create(&request("order-2")).await.unwrap();
    books.lock().unwrap().intents.get_mut(&paid.reference).unwrap()["status"] = json!("succeeded");
    assert_eq!(stripe.cancel(&paid.reference).await.unwrap(), RemoteState::Succeeded);

    // Refunds: idempotent by key; more than was paid is refused (not retried).
    let r1 = stripe.refund(&paid.reference, 5_000, "refund-order-2").await.unwrap();
    let r2 = stripe.refund(&paid.reference, 5_000, "refund-order-2").await.unwrap();
    assert_eq!(r1, r2);
    assert_eq!(books.lock().unwrap().refunds.len(), 1);
    assert!(matches!(
        stripe.refund(&paid.reference, 10_000, "refund-more").await,
        Err(ProviderError::Refused(_))
    ));

    // A 5xx is worth retrying; a wrong key is not.
    books.lock().unwrap().fail_next = true;
    assert!(matches!(stripe.create(&request("order-3")).await, Err(ProviderError::Unavailable(_))));
    let wrong = Stripe::new(&base, "sk_test_wrong".into(), vec![]);
    assert!(matches!(wrong.create(&request("order-4")).await, Err(ProviderError::Refused(_))));
}

#[sqlx::test]
async fn stripe_webhooks_are_verified_deduplicated_and_accepted_during_a_rotation(db: PgPool) {
    let (base, _) = local_stripe().await;
    let signer = TokenSigner::from_seed("core-test", [7; 32]).unwrap();
    let stripe = Stripe::new(&base, "sk_test_local".into(), vec!["whsec_new".into(), "whsec_old".into()]);
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
    let succeeded = json!({ "id": "evt_2", "object": "event", "type": "payment_intent.succeeded",
                             "data": { "object": { "id": "pi_unknown", "object": "payment_intent", "status": "succeeded" } } })
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
