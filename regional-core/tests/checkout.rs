//! Checkout's refusals against real PostgreSQL: every bad request answers problem+json with a
//! stable type and reason, and changes nothing (no order, no payment, no audit row).

mod common;

use common::{checkout, state_with, Api};
use regional_core::checkout::Checkout;
use serde_json::{json, Value};
use shared_types::ids::HoldId;
use shared_types::token::{Claims, HoldGrant, TokenKind, TokenSigner};
use sqlx::PgPool;

fn hold_token(signer: &TokenSigner, event: &str, exp_from_now: i64) -> String {
    let now = chrono::Utc::now().timestamp();
    let hold = HoldId::parse("h0-0123abcd").unwrap();
    signer.sign(
        TokenKind::Hold,
        &Claims {
            iss: "edge".into(),
            aud: event.into(),
            sub: "v0123456789abcdef".into(),
            iat: now,
            exp: now + exp_from_now,
            jti: hold.to_string(),
            extra: HoldGrant {
                hold,
                seats: vec![shared_types::ids::SeatId::parse("A-1").unwrap()],
                ga_tier: None,
                ga_quantity: 0,
                expires_at_ms: (now + exp_from_now) * 1000,
            },
        },
    )
}

#[sqlx::test]
async fn bad_checkouts_answer_problem_json_and_change_nothing(db: PgPool) {
    let edge = TokenSigner::from_seed("edge-test", [3; 32]).unwrap();
    let core = TokenSigner::from_seed("core-test", [4; 32]).unwrap();
    let api =
        Api::start_with(state_with(Checkout { edge_keys: edge.verifying_ring(), ..checkout(&db, &core) }))
            .await;
    let addr = api.base.trim_start_matches("http://").to_owned();
    let url = format!("http://{addr}/api/v1/checkout");
    let event = "00000000-0000-0000-0000-00000000e001";
    let good = hold_token(&edge, event, 600);
    let stranger = TokenSigner::from_seed("edge-other", [5; 32]).unwrap();

    // (what, Idempotency-Key, body, status, problem type, reason)
    type Case<'a> = (&'a str, Option<&'a str>, String, u16, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            "no idempotency key",
            None,
            json!({ "hold_token": good, "email": "a@b.test" }).to_string(),
            422,
            "validation-failed",
            "",
        ),
        ("not JSON", Some("k1"), "{".into(), 400, "malformed-request", ""),
        (
            "unknown field",
            Some("k2"),
            json!({ "hold_token": good, "email": "a@b.test", "x": 1 }).to_string(),
            400,
            "malformed-request",
            "",
        ),
        (
            "bad e-mail",
            Some("k3"),
            json!({ "hold_token": good, "email": "nope" }).to_string(),
            422,
            "validation-failed",
            "",
        ),
        (
            "bad return url",
            Some("k4"),
            json!({ "hold_token": good, "email": "a@b.test", "return_url": "javascript:alert(1)" })
                .to_string(),
            422,
            "validation-failed",
            "",
        ),
        (
            "garbage token",
            Some("k5"),
            json!({ "hold_token": "x.y.z", "email": "a@b.test" }).to_string(),
            401,
            "unauthorized",
            "malformed",
        ),
        (
            "unknown key",
            Some("k6"),
            json!({ "hold_token": hold_token(&stranger, event, 600), "email": "a@b.test" }).to_string(),
            401,
            "unauthorized",
            "unknown-key",
        ),
        (
            "expired",
            Some("k7"),
            json!({ "hold_token": hold_token(&edge, event, -5), "email": "a@b.test" }).to_string(),
            401,
            "unauthorized",
            "expired",
        ),
        (
            "no such event",
            Some("k8"),
            json!({ "hold_token": good, "email": "a@b.test" }).to_string(),
            404,
            "not-found",
            "",
        ),
    ];
    let http = reqwest::Client::new();
    for (what, key, body, status, kind, reason) in cases {
        let mut req = http.post(&url).header("content-type", "application/json").body(body);
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{what}");
        assert_eq!(resp.headers()["content-type"], "application/problem+json", "{what}");
        let problem: Value = resp.json().await.unwrap();
        assert_eq!(problem["type"], format!("https://errors.ticketing.dev/{kind}"), "{what}: {problem}");
        if !reason.is_empty() {
            assert_eq!(problem["reason"], reason, "{what}: {problem}");
        }
    }
    for table in ["orders", "payments", "state_audit", "testpay_payments"] {
        let n: i64 =
            sqlx::query_scalar(&format!("SELECT count(*) FROM {table}")).fetch_one(&db).await.unwrap();
        assert_eq!(n, 0, "{table}");
    }
    // An order token is needed to read an order, and only its own.
    let resp = http
        .get(format!("http://{addr}/api/v1/orders/00000000-0000-0000-0000-000000000001"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = http
        .get(format!("http://{addr}/api/v1/orders/00000000-0000-0000-0000-000000000001"))
        .bearer_auth(&good)
        .send()
        .await
        .unwrap();
    let problem: Value = resp.json().await.unwrap();
    assert_eq!(problem["reason"], "wrong-kind", "a hold token is not an order token: {problem}");
}
