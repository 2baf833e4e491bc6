//! Checkout's refusals against real PostgreSQL: every bad request answers problem+json with a
//! stable type and reason, and changes nothing (no order, no payment, no audit row).

use crate::common;

use common::{checkout, state_with, two_tenants, Api};
use regional_core::checkout::Checkout;
use serde_json::{json, Value};
use shared_types::ids::HoldId;
use shared_types::token::{Claims, HoldGrant, TokenKind, TokenSigner};
use sqlx::PgPool;

/// The core with checkout on, trusting the test edge's key: the API, the edge's signer and the
/// core's.
async fn checkout_api(db: &PgPool) -> (Api, TokenSigner, TokenSigner) {
    let edge = TokenSigner::from_seed("edge-test", [3; 32]).unwrap();
    let core = TokenSigner::from_seed("core-test", [4; 32]).unwrap();
    let state = state_with(Checkout { edge_keys: edge.verifying_ring(), ..checkout(db, &core) });
    (Api::start_with(state).await, edge, core)
}

fn hold_token(signer: &TokenSigner, event: &str, exp_from_now: i64) -> String {
    hold_of(signer, event, exp_from_now, "h0-0123abcd", &["A-1"])
}

/// A hold token for `seats` under `hold` (its shard is its prefix: `h1-…` is section B's object).
fn hold_of(signer: &TokenSigner, event: &str, exp_from_now: i64, hold: &str, seats: &[&str]) -> String {
    hold_for(signer, event, exp_from_now, hold, seats, "v0123456789abcdef")
}

fn hold_for(
    signer: &TokenSigner,
    event: &str,
    exp_from_now: i64,
    hold: &str,
    seats: &[&str],
    visitor: &str,
) -> String {
    hold_under(signer, event, exp_from_now, hold, seats, visitor, None)
}

/// A hold token for `seats` sold under `seated_tier` (the event's first seated tier when `None`).
fn hold_under(
    signer: &TokenSigner,
    event: &str,
    exp_from_now: i64,
    hold: &str,
    seats: &[&str],
    visitor: &str,
    seated_tier: Option<&str>,
) -> String {
    let now = chrono::Utc::now().timestamp();
    let hold = HoldId::parse(hold).unwrap();
    signer.sign(
        TokenKind::Hold,
        &Claims {
            iss: "edge".into(),
            aud: event.into(),
            sub: visitor.into(),
            iat: now,
            exp: now + exp_from_now,
            jti: hold.to_string(),
            extra: HoldGrant {
                hold,
                seats: seats.iter().map(|s| shared_types::ids::SeatId::parse(s).unwrap()).collect(),
                ga_tier: None,
                ga_quantity: 0,
                seated_tier: seated_tier.map(|t| shared_types::ids::TierId::parse(t).unwrap()),
                expires_at_ms: (now + exp_from_now) * 1000,
                extended: false,
            },
        },
    )
}

#[sqlx::test]
async fn bad_checkouts_answer_problem_json_and_change_nothing(db: PgPool) {
    let (api, edge, _core) = checkout_api(&db).await;
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

/// An event on sale in a venue of sections A, B and C (four seats each, 30.00 a seat), sold by
/// section, with `cap` tickets per buyer: (event id, the organizer's key).
async fn on_sale(api: &Api, cap: u32) -> (String, String) {
    let (_, [(_, key), _]) = two_tenants(api).await;
    let section = |id: &str| {
        let seats: Vec<Value> = (1..=4)
            .map(|n| json!({ "id": format!("{id}-{n}"), "label": n.to_string(), "x": n, "y": 0, "zone": "std" }))
            .collect();
        json!({ "id": id, "name": id, "rows": [{ "label": "1", "seats": seats }] })
    };
    let (s, venue) = api
        .call(
            &key,
            reqwest::Method::POST,
            "/api/v1/venues",
            Some(json!({
            "name": "Hall", "time_zone": "UTC", "zones": [{ "id": "std", "name": "Standard" }],
            "sections": [section("A"), section("B"), section("C")] })),
        )
        .await;
    assert_eq!(s, 201, "{venue}");
    let (s, event) = api
        .call(
            &key,
            reqwest::Method::POST,
            "/api/v1/events",
            Some(json!({ "venue_id": venue["id"], "title": "Gig",
            "starts_at": "2027-01-01T20:00:00Z", "ends_at": "2027-01-01T23:00:00Z" })),
        )
        .await;
    assert_eq!(s, 201, "{event}");
    let id = event["id"].as_str().unwrap().to_owned();
    let (s, tier) = api
        .call(
            &key,
            reqwest::Method::POST,
            &format!("/api/v1/events/{id}/tiers"),
            Some(json!({
            "name": "Seats", "kind": "seated", "currency": "EUR", "price_minor": 3000, "quantity": 12 })),
        )
        .await;
    assert_eq!(s, 201, "{tier}");
    // On sale as publishing leaves it (the edge is not part of this test).
    sqlx::query("UPDATE events SET state = 'on_sale', hold_settings = $2 WHERE id = $1::uuid")
        .bind(&id)
        .bind(json!({ "max_tickets_per_visitor": cap }))
        .execute(&api.db)
        .await
        .unwrap();
    (id, key)
}

async fn post_checkout(api: &Api, key: &str, body: Value) -> (u16, Value) {
    let resp = api
        .http
        .post(format!("{}/api/v1/checkout", api.base))
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

#[sqlx::test]
async fn seats_are_priced_under_the_seated_tier_their_hold_names(db: PgPool) {
    let (api, edge, _core) = checkout_api(&db).await;
    let (event, key) = on_sale(&api, 12).await;
    let (s, reduced) = api
        .call(
            &key,
            reqwest::Method::POST,
            &format!("/api/v1/events/{event}/tiers"),
            Some(json!({ "name": "Reduced", "kind": "seated", "currency": "EUR", "price_minor": 1200, "quantity": 12 })),
        )
        .await;
    assert_eq!(s, 201, "{reduced}");
    let reduced = reduced["id"].as_str().unwrap();
    let visitor = "v0123456789abcdef";
    let cases = [
        ("h0-00000a01", ["A-1", "A-2"], Some(reduced), 201, 2400),
        ("h0-00000a02", ["A-3", "A-4"], None, 201, 6000),
        ("h0-00000a03", ["A-5", "A-6"], Some("00000000-0000-0000-0000-000000000bad"), 409, 0),
    ];
    for (n, (hold, seats, tier, status, total)) in cases.into_iter().enumerate() {
        let token = hold_under(&edge, &event, 600, hold, &seats, visitor, tier);
        // The price summary first: what the order will cost, each ticket under its tier.
        let resp = api
            .http
            .post(format!("{}/api/v1/checkout/quote", api.base))
            .json(&json!({ "hold_token": token }))
            .send()
            .await
            .unwrap();
        let quoted_status = resp.status().as_u16();
        let quote: Value = resp.json().await.unwrap();
        if status == 201 {
            assert_eq!(quoted_status, 200, "{quote}");
            assert_eq!(quote["total_minor"], total, "{quote}");
            assert_eq!(quote["lines"].as_array().unwrap().len(), 2);
            assert_eq!(quote["lines"][0]["tier_name"], if tier.is_some() { "Reduced" } else { "Seats" });
            assert_eq!(quote["lines"][0]["seat"], seats[0]);
        } else {
            assert_eq!((quoted_status, quote["reason"].as_str()), (409, Some("not_priced")), "{quote}");
        }
        let (s, answer) = post_checkout(
            &api,
            &format!("tier-{n}"),
            json!({ "hold_token": token, "email": "fan@example.test" }),
        )
        .await;
        if status == 409 {
            assert_eq!((s, answer["reason"].as_str()), (409, Some("not_priced")), "{answer}");
            continue;
        }
        // The order is made (its payment cannot start here: no edge to extend the hold).
        assert!(matches!(s, 201 | 503), "{tier:?}: {answer}");
        let (recorded,): (i64,) = sqlx::query_as("SELECT total_minor FROM orders WHERE hold_id = $1")
            .bind(hold)
            .fetch_one(&db)
            .await
            .unwrap();
        assert_eq!(recorded, total, "{tier:?}");
    }
    let (priced_under,): (i64,) = sqlx::query_as("SELECT count(*) FROM order_lines WHERE tier_id = $1::uuid")
        .bind(reduced)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(priced_under, 2, "each line records the tier it was sold under");
    // A quote with a code that does not exist is the checkout's answer, and counts as a guess.
    let token = hold_under(&edge, &event, 600, "h0-00000a09", &["B-1"], visitor, None);
    let resp = api
        .http
        .post(format!("{}/api/v1/checkout/quote", api.base))
        .json(&json!({ "hold_token": token, "promo_code": "NOPE" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 422);
    let guesses: i32 =
        sqlx::query_scalar("SELECT failures FROM promo_attempts WHERE scope = 'hold:h0-00000a09'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(guesses, 1, "the guess is counted like a checkout's");
    // A hold may ask for its price a bounded number of times in a window.
    let mut statuses = Vec::new();
    for _ in 0..30 {
        let resp = api
            .http
            .post(format!("{}/api/v1/checkout/quote", api.base))
            .json(&json!({ "hold_token": token }))
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses[..29], [200; 29], "{statuses:?}");
    assert_eq!(statuses[29], 429, "the 31st quote of this hold");
}

#[sqlx::test]
async fn one_buyers_concurrent_checkouts_across_sections_share_the_event_cap(db: PgPool) {
    let (api, edge, _core) = checkout_api(&db).await;
    let (event, _) = on_sale(&api, 2).await;
    // The buyer holds the cap (two seats) in each section (each section's object allows it), and
    // checks all three out at once.
    let holds =
        [("h0-00000a01", ["A-1", "A-2"]), ("h1-00000b01", ["B-1", "B-2"]), ("h2-00000c01", ["C-1", "C-2"])];
    let mut runs = Vec::new();
    for (round, (hold, seats)) in holds.iter().enumerate() {
        let token = hold_of(&edge, &event, 600, hold, seats);
        let api = &api;
        runs.push(async move {
            post_checkout(
                api,
                &format!("cap-{round}"),
                json!({ "hold_token": token, "email": "fan@example.test" }),
            )
            .await
        });
    }
    let answers = futures_util::future::join_all(runs).await;
    let refused = answers.iter().filter(|(s, p)| *s == 409 && p["reason"] == "limit_exceeded").count();
    assert_eq!(refused, 2, "{answers:?}");
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders").fetch_one(&db).await.unwrap();
    let lines: i64 = sqlx::query_scalar("SELECT count(*) FROM order_lines").fetch_one(&db).await.unwrap();
    assert_eq!((orders, lines), (1, 2), "one order of two tickets: the cap is the event's");
}

#[sqlx::test]
async fn promo_codes_cannot_be_guessed_and_their_buyer_limit_holds_under_concurrency(db: PgPool) {
    let (api, edge, _core) = checkout_api(&db).await;
    let (event, key) = on_sale(&api, 12).await;
    let (s, code) = api
        .call(
            &key,
            reqwest::Method::POST,
            &format!("/api/v1/events/{event}/promo-codes"),
            Some(json!({
            "code": "FRIENDS", "kind": "percent", "percent_off": 50, "per_buyer_limit": 1 })),
        )
        .await;
    assert_eq!(s, 201, "{code}");

    // Guessing on one hold: five wrong codes, then the hold may try no more, not even the right one.
    let token = hold_of(&edge, &event, 600, "h0-00000a01", &["A-1"]);
    for n in 0..5 {
        let (s, p) = post_checkout(
            &api,
            &format!("g{n}"),
            json!({
            "hold_token": token, "email": "guess@example.test", "promo_code": format!("GUESS{n}") }),
        )
        .await;
        assert_eq!((s, p["errors"][0]["field"].as_str()), (422, Some("promo_code")), "{p}");
    }
    let resp = api
        .http
        .post(format!("{}/api/v1/checkout", api.base))
        .header("idempotency-key", "g5")
        .json(&json!({ "hold_token": token, "email": "guess@example.test", "promo_code": "FRIENDS" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let wait: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=900).contains(&wait), "{wait}");
    let p: Value = resp.json().await.unwrap();
    assert_eq!(
        (p["type"].as_str(), p["reason"].as_str()),
        (Some("https://errors.ticketing.dev/rate-limited"), Some("promo-attempts"))
    );
    // Other holds of the same buyer share a bound of ten per event (the refused sixth counted too).
    for n in 0..4 {
        let other = hold_of(&edge, &event, 600, &format!("h1-0000b{n:03}"), &["B-1"]);
        let (s, _) = post_checkout(
            &api,
            &format!("o{n}"),
            json!({
            "hold_token": other, "email": "guess@example.test", "promo_code": "NOPE1" }),
        )
        .await;
        assert_eq!(s, 422);
    }
    let last = hold_of(&edge, &event, 600, "h2-0000c001", &["C-1"]);
    let (s, p) = post_checkout(
        &api,
        "o-last",
        json!({
        "hold_token": last, "email": "guess@example.test", "promo_code": "NOPE2" }),
    )
    .await;
    assert_eq!((s, p["reason"].as_str()), (429, Some("promo-attempts")), "{p}");
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders").fetch_one(&db).await.unwrap();
    assert_eq!(orders, 0, "refusals change nothing");

    // Guesses sent at once get no more slots than guesses sent one by one.
    let fresh = hold_for(&edge, &event, 600, "h2-0000c002", &["C-2"], "v00000000000000c2");
    let guesses = (0..20).map(|n| {
        let (api, fresh) = (&api, fresh.clone());
        async move {
            post_checkout(
                api,
                &format!("par-{n}"),
                json!({
                "hold_token": fresh, "email": "par@example.test", "promo_code": format!("PAR{n}") }),
            )
            .await
            .0
        }
    });
    let statuses = futures_util::future::join_all(guesses).await;
    assert_eq!(statuses.iter().filter(|s| **s == 422).count(), 5, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 15, "{statuses:?}");

    // The per-buyer limit of a code, with two checkouts of one buyer at once, from two browsers
    // (two visitors, one e-mail; neither the guesser above).
    let mut runs = Vec::new();
    let two = [("h0-00000a02", "A-2", "v00000000000000a2"), ("h1-00000b02", "B-2", "v00000000000000b2")];
    for (n, (hold, seat, visitor)) in two.into_iter().enumerate() {
        let token = token_for_visitor(&edge, &event, hold, seat, visitor);
        let api = &api;
        runs.push(async move {
            post_checkout(
                api,
                &format!("friends-{n}"),
                json!({
                "hold_token": token, "email": "Fan@Example.test", "promo_code": "friends" }),
            )
            .await
        });
    }
    let answers = futures_util::future::join_all(runs).await;
    let refused =
        answers.iter().filter(|(s, p)| *s == 422 && p["errors"][0]["field"] == "promo_code").count();
    assert_eq!(refused, 1, "{answers:?}");
    let with_code: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE promo_code_id IS NOT NULL")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(with_code, 1);
}

fn token_for_visitor(signer: &TokenSigner, event: &str, hold: &str, seat: &str, visitor: &str) -> String {
    hold_for(signer, event, 600, hold, &[seat], visitor)
}

#[sqlx::test]
async fn the_checkout_cap_is_also_what_the_waiting_room_admits_each_buyer_to(db: PgPool) {
    let (api, edge, _core) = checkout_api(&db).await;
    let (event, _) = on_sale(&api, 12).await;
    // The line admits each buyer to two tickets (their admission's max_tickets); in a sectioned
    // event each section's object sees only its own, so checkout counts them all.
    sqlx::query("UPDATE events SET waiting_room = '{\"max_tickets_per_buyer\": 2}' WHERE id = $1::uuid")
        .bind(&event)
        .execute(&db)
        .await
        .unwrap();
    let token = hold_of(&edge, &event, 600, "h0-00000a01", &["A-1", "A-2", "A-3"]);
    let (s, p) =
        post_checkout(&api, "three", json!({ "hold_token": token, "email": "fan@example.test" })).await;
    assert_eq!((s, p["reason"].as_str()), (409, Some("limit_exceeded")), "{p}");
    assert!(p["detail"].as_str().unwrap().contains("at most 2"), "{p}");
}

/// A stand-in for the edge's internal hold routes: every hold action answers the hold as held for
/// ten more minutes, ending a session answers `{}`. Counts the calls by their last path segment.
/// The calls (the last part of each path) and their JSON bodies (`null` for none), in order.
type Seen<T> = std::sync::Arc<std::sync::Mutex<Vec<T>>>;

async fn counting_edge(hold: &str) -> (String, Seen<String>, Seen<Value>) {
    let calls = Seen::<String>::default();
    let bodies = Seen::<Value>::default();
    let (seen, seen_bodies) = (calls.clone(), bodies.clone());
    let hold = hold.to_owned();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri, body: axum::body::Bytes| {
        let (seen, seen_bodies, hold) = (seen.clone(), seen_bodies.clone(), hold.clone());
        async move {
            let last = uri.path().rsplit('/').next().unwrap_or_default().to_owned();
            seen.lock().unwrap().push(last.clone());
            seen_bodies.lock().unwrap().push(serde_json::from_slice(&body).unwrap_or(Value::Null));
            let expires_at = chrono::Utc::now().timestamp_millis() + 600_000;
            let state = if last == "confirm" { "sold" } else { "held" };
            match last.as_str() {
                "end" => axum::Json(json!({})),
                _ => axum::Json(json!({ "id": hold, "state": state, "expires_at": expires_at })),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, calls, bodies)
}

/// One statement by the simple protocol: one transaction exactly (a prepared statement's parse
/// is a transaction of its own).
async fn one_value(c: &mut sqlx::PgConnection, sql: &str) -> String {
    use sqlx::Row;
    let row = sqlx::raw_sql(sql).fetch_one(c).await.unwrap();
    row.try_get::<Option<String>, _>(0).unwrap().unwrap_or_default()
}

/// Committed transactions in the test's database, as PostgreSQL counts them once every other
/// connection to it has ended (a backend reports its counts when it exits at the latest; until
/// then they may wait up to 10 s), read on a connection of its own, and how many transactions that
/// reading made itself (they are in the next reading).
async fn commits(options: &sqlx::postgres::PgConnectOptions) -> (i64, i64) {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect_with(options).await.unwrap();
    let mut made = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        made += 1;
        let open = one_value(
            &mut c,
            "SELECT string_agg(coalesce(state, '') || ': ' || coalesce(query, ''), '; ') FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .await;
        if open.is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "other connections stay open: {open}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    made += 1;
    let n = one_value(
        &mut c,
        "SELECT xact_commit::text FROM pg_stat_database WHERE datname = current_database()",
    )
    .await;
    c.close().await.unwrap();
    (n.parse().unwrap(), made)
}

/// What paid orders took of the core alone (a stand-in edge, the test provider).
struct PaidOrders {
    /// The core's calls to the edge, by their last path segment, and their bodies.
    edge_calls: Vec<String>,
    edge_bodies: Vec<Value>,
    /// The buyers, in order.
    visitors: Vec<String>,
    /// PostgreSQL transactions committed from the first checkout to the last order paid, the
    /// test provider's own left out (Stripe's, in production).
    transactions: i64,
}

/// `n` buyers' whole paths one after the other, on one connection of a pool of their own, every
/// transaction counted: checkout, the provider's webhook, the confirmation. `extended`: the hold
/// tokens say the edge extended the holds as it forwarded the checkouts.
async fn paid_orders(
    options: &sqlx::postgres::PgConnectOptions,
    event: &str,
    first: usize,
    n: usize,
    extended: bool,
) -> PaidOrders {
    let (edge_url, edge_calls, edge_bodies) = counting_edge("h0-0123abcd").await;
    let edge = TokenSigner::from_seed("edge-test", [3; 32]).unwrap();
    let core = TokenSigner::from_seed("core-test", [4; 32]).unwrap();
    // Lazy: no connection before the first reading.
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect_lazy_with(options.clone());
    let provider =
        regional_core::payments::provider::Provider::Test(regional_core::payments::testpay::TestPay::new(
            pool.clone(),
            "http://127.0.0.1:9",
            "whsec_test".into(),
        ));
    let api = Api::start_with(state_with(Checkout {
        edge: regional_core::edge_client::EdgeClient::new(&edge_url, core.clone()),
        provider,
        edge_keys: edge.verifying_ring(),
        ..checkout(&pool, &core)
    }))
    .await;
    let (before, reading) = commits(options).await;
    // The order's state is watched on a connection of its own, its transactions counted here.
    let mut watching = {
        use sqlx::Connection;
        sqlx::PgConnection::connect_with(options).await.unwrap()
    };
    let (mut watched, mut visitors) = (0, Vec::new());
    for i in first..first + n {
        let visitor = format!("v0123456789abc{i:03}");
        let hold = format!("h0-0000a{i:03}");
        // The event's twelve seats: A-1 to C-4.
        let seat = format!("{}-{}", ["A", "B", "C"][i / 4], i % 4 + 1);
        let now = chrono::Utc::now().timestamp();
        let token = hold_for(&edge, event, 600, &hold, &[&seat], &visitor);
        let mut claims: Claims<HoldGrant> = shared_types::token::verify(
            &token,
            &edge.verifying_ring(),
            &shared_types::token::Expectation {
                kind: TokenKind::Hold,
                issuer: "edge",
                audience: event,
                subject: None,
                now,
            },
        )
        .unwrap();
        claims.extra.extended = extended;
        let token = edge.sign(TokenKind::Hold, &claims);
        let (s, answer) = post_checkout(
            &api,
            &format!("key-{i}"),
            json!({ "hold_token": token, "email": format!("b{i}@example.test") }),
        )
        .await;
        assert_eq!(s, 201, "{answer}");
        assert_eq!(answer["order"]["state"], "awaiting_payment", "{answer}");
        let order = answer["order"]["id"].as_str().unwrap().to_owned();
        let reference =
            answer["order"]["payment"]["redirect_url"].as_str().unwrap().rsplit('/').next().unwrap();
        let body = serde_json::to_vec(&json!({ "id": format!("evt_{i}"), "type": "payment.succeeded",
            "created": now,
            "data": { "payment": { "id": reference, "reference": "r", "status": "succeeded" } } }))
        .unwrap();
        let signature = regional_core::payments::signature::sign("whsec_test", now, &body);
        let resp = api
            .http
            .post(format!("{}/api/v1/webhooks/testpay", api.base))
            .header("content-type", "application/json")
            .header("testpay-signature", signature)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        // Paid: the confirmation runs on after the webhook's answer.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            watched += 1;
            let state =
                one_value(&mut watching, &format!("SELECT state FROM orders WHERE id = '{order}'")).await;
            if state == "paid" {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the order is {state}");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        visitors.push(visitor);
    }
    {
        use sqlx::Connection;
        watching.close().await.unwrap();
    }
    // Whatever the driver does after `paid` counts too: the pool closes once its connection is
    // back (a step still running holds it).
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    pool.close().await;
    let (after, _) = commits(options).await;
    let edge_calls = edge_calls.lock().unwrap().clone();
    let edge_bodies = edge_bodies.lock().unwrap().clone();
    // The test provider's one transaction an order (creating the payment) is not the core's.
    PaidOrders {
        edge_calls,
        edge_bodies,
        visitors,
        transactions: after - before - reading - watched - n as i64,
    }
}

/// The PostgreSQL transactions of one order on the buyer's path once the core runs warm (its
/// statements prepared: a prepare on a new connection is a transaction of its own), as the
/// difference between one order and nine, each run on a fresh connection, divided by eight and
/// rounded; and what the nine asked of the edge. Rounded because an autovacuum worker that visits
/// the database meanwhile (a busy machine: every test makes one) adds its own transactions to a
/// run, a few at most: ±3 in a run moves the quotient by less than half.
async fn one_warm_order(db: PgPool, extended: bool) -> (i64, PaidOrders) {
    let options = (*db.connect_options()).clone();
    let setup = state_with(checkout(&db, &TokenSigner::from_seed("core-test", [4; 32]).unwrap()));
    let (event, _) = on_sale(&Api::start_with(setup).await, 8).await;
    db.close().await;
    let one = paid_orders(&options, &event, 0, 1, extended).await;
    let nine = paid_orders(&options, &event, 1, 9, extended).await;
    let each = (nine.transactions - one.transactions) as f64 / 8.0;
    eprintln!(
        "one order: {} transactions; nine: {}; a warm order: {each}",
        one.transactions, nine.transactions
    );
    (each.round() as i64, nine)
}

/// The buyer's whole path against the core alone, from an edge that forwards the checkout as it
/// came (an edge older than the extension on the way): checkout answers the order with its payment
/// (the view read in the payment's transaction), the provider's webhook claims the order in its
/// own transaction and drives it to `paid` at once (nothing else drives it here: no reconciler
/// runs), and the core calls the edge twice: the extend for payment, and the sale, which ends the
/// buyer's session in the same call. Four transactions (docs/checkout.md, "What an order costs").
#[sqlx::test]
async fn a_paid_order_takes_checkout_a_webhook_and_two_edge_calls(db: PgPool) {
    let (transactions, paid) = one_warm_order(db, false).await;
    assert_eq!(paid.edge_calls, ["extend", "confirm"].repeat(9));
    assert_eq!(*paid.edge_bodies.last().unwrap(), json!({ "end_session_of": paid.visitors[8] }));
    assert_eq!(transactions, 4, "PostgreSQL transactions on the buyer's path");
}

/// The same path when the edge extended the hold as it forwarded the checkout (its token says
/// so): the core calls the edge once, for the sale, and commits the same four transactions.
#[sqlx::test]
async fn an_order_whose_hold_the_edge_extended_takes_one_edge_call(db: PgPool) {
    let (transactions, paid) = one_warm_order(db, true).await;
    assert_eq!(paid.edge_calls, ["confirm"].repeat(9));
    assert_eq!(*paid.edge_bodies.last().unwrap(), json!({ "end_session_of": paid.visitors[8] }));
    assert_eq!(transactions, 4, "PostgreSQL transactions on the buyer's path");
}

/// The buyer's long poll (`?wait=N&while=…`): answers as soon as the order leaves the states
/// named (here when the provider's webhook has it paid), at once when it is already past them,
/// after `wait` when it stays; bad waits are refused naming the field.
#[sqlx::test]
async fn an_orders_long_poll_answers_when_the_order_moves_on(db: PgPool) {
    let (edge_url, _, _) = counting_edge("h0-0123abcd").await;
    let edge = TokenSigner::from_seed("edge-test", [3; 32]).unwrap();
    let core = TokenSigner::from_seed("core-test", [4; 32]).unwrap();
    let api = Api::start_with(state_with(Checkout {
        edge: regional_core::edge_client::EdgeClient::new(&edge_url, core.clone()),
        edge_keys: edge.verifying_ring(),
        ..checkout(&db, &core)
    }))
    .await;
    let (event, _) = on_sale(&api, 4).await;
    let (s, answer) = post_checkout(
        &api,
        "k",
        json!({ "hold_token": hold_token(&edge, &event, 600), "email": "b@example.test" }),
    )
    .await;
    assert_eq!(s, 201, "{answer}");
    let (id, token) =
        (answer["order"]["id"].as_str().unwrap().to_owned(), answer["order_token"].as_str().unwrap());
    let get = |query: &str| {
        let request =
            api.http.get(format!("{}/api/v1/orders/{id}{query}", api.base)).bearer_auth(token).send();
        async move {
            let resp = tokio::time::timeout(std::time::Duration::from_secs(15), request)
                .await
                .expect("an answer")
                .unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };

    for (query, field) in [
        ("?wait=21&while=awaiting_payment", "wait"),
        ("?wait=5", "while"),
        ("?wait=5&while=", "while"),
        ("?wait=5&while=awaiting_payment,later", "while"),
        ("?wait=5&while=confirming,paid", "while"),
    ] {
        let (s, p) = get(query).await;
        assert_eq!((s, p["errors"][0]["field"].as_str()), (422, Some(field)), "{query}: {p}");
    }
    let (s, p) = get("?wait=x").await;
    assert_eq!((s, p["type"].as_str()), (400, Some("https://errors.ticketing.dev/malformed-request")), "{p}");

    // Already past the states named, or no wait: at once.
    let (s, o) = get("?wait=20&while=created").await;
    assert_eq!((s, o["state"].as_str()), (200, Some("awaiting_payment")));
    // Still in them after `wait`: the order as it is.
    let (s, o) = get("?wait=1&while=awaiting_payment").await;
    assert_eq!((s, o["state"].as_str()), (200, Some("awaiting_payment")));

    // Waiting through the payment: the answer comes once the webhook has the order paid.
    let poll = tokio::spawn(get("?wait=20&while=awaiting_payment,confirming"));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!poll.is_finished(), "the poll waits while the order awaits its payment");
    let reference = answer["order"]["payment"]["redirect_url"].as_str().unwrap().rsplit('/').next().unwrap();
    let now = chrono::Utc::now().timestamp();
    let body = serde_json::to_vec(&json!({ "id": "evt_1", "type": "payment.succeeded", "created": now,
        "data": { "payment": { "id": reference, "reference": "r", "status": "succeeded" } } }))
    .unwrap();
    let resp = api
        .http
        .post(format!("{}/api/v1/webhooks/testpay", api.base))
        .header("testpay-signature", regional_core::payments::signature::sign("whsec_test", now, &body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (s, o) = poll.await.unwrap();
    assert_eq!((s, o["state"].as_str()), (200, Some("paid")), "{o}");
    assert_eq!(o["tickets"].as_array().map(Vec::len), Some(1), "{o}");
}

/// Rows of `table` (its heap or any of its indexes) a plan read, as `EXPLAIN (ANALYZE, FORMAT
/// JSON)` reports them: what each node returned and what its filters and rechecks threw away.
fn rows_read(plan: &Value, table: &str) -> f64 {
    let index_prefix = format!("{table}_");
    let mine = plan["Relation Name"] == table
        || plan["Index Name"].as_str().is_some_and(|i| i.starts_with(&index_prefix));
    let loops = plan["Actual Loops"].as_f64().unwrap_or(1.0);
    let here = if mine {
        ["Actual Rows", "Rows Removed by Filter", "Rows Removed by Index Recheck"]
            .iter()
            .map(|k| plan[*k].as_f64().unwrap_or(0.0))
            .sum::<f64>()
            * loops
    } else {
        0.0
    };
    here + plan["Plans"].as_array().into_iter().flatten().map(|p| rows_read(p, table)).sum::<f64>()
}

/// The checkout's two reads that grow with an event stay look-ups by the buyer's own rows under the
/// generic plan PostgreSQL gives a prepared statement after its fifth run (what every pooled
/// connection of a busy core uses): pricing reads the held seats of the venue, not all its seats
/// (it read the venue's 3,000 here, and 4,000 a checkout in the benchmark), and the buyer's count
/// reads the buyer's orders, not the event's.
#[sqlx::test]
async fn the_checkouts_reads_stay_the_buyers_own_rows_under_a_generic_plan(db: PgPool) {
    use regional_core::checkout::{pricing_read_sql, OWNED_TICKETS_SQL};
    let (api, _edge, _core) = checkout_api(&db).await;
    let (event, _) = on_sale(&api, 4).await;
    // A large venue and a large sale: 3,000 more seats, 3,000 other buyers' orders.
    sqlx::query(
        "INSERT INTO venue_seats (venue_id, seat_id, section_id, row_label, label, position, x, y, zone_id)
         SELECT v.venue_id, 'A-p' || g, v.section_id, 'P', 'p' || g, 100 + g, g, 5, v.zone_id
         FROM venue_seats v JOIN events e ON e.venue_id = v.venue_id, generate_series(1, 3000) g
         WHERE e.id = $1::uuid AND v.seat_id = 'A-1'",
    )
    .bind(&event)
    .execute(&db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO orders (id, organization_id, event_id, visitor_id, hold_id, idempotency_key,
             request_hash, email, state, currency, subtotal_minor, discount_minor, fee_minor, tax_minor,
             total_minor, hold_expires_at)
         SELECT gen_random_uuid(), e.organization_id, e.id, 'v' || lpad(g::text, 32, '0'), 'h0-p' || g,
             'k' || g, 'x', 'buyer' || g || '@example.test', 'paid', 'EUR', 3000, 0, 0, 0, 3000, now()
         FROM events e, generate_series(1, 3000) g WHERE e.id = $1::uuid",
    )
    .bind(&event)
    .execute(&db)
    .await
    .unwrap();
    let plans = [
        ("venue_seats", format!("pricing('{event}', ARRAY['A-1', 'A-2'])")),
        (
            "orders",
            format!(
                "owned('{event}', 'v{}', 'buyer7@example.test', '{}')",
                "0".repeat(32),
                uuid::Uuid::new_v4()
            ),
        ),
    ];
    // Before the tables are analyzed (a venue imported and a sale begun since autovacuum's last
    // visit: the planner takes them for small) and after.
    for analyzed in [false, true] {
        if analyzed {
            sqlx::raw_sql("ANALYZE venue_seats; ANALYZE orders; ANALYZE order_lines")
                .execute(&db)
                .await
                .unwrap();
        }
        // A connection of its own each round: its plans are made afresh.
        let mut conn: sqlx::PgConnection =
            sqlx::Connection::connect_with(&*db.connect_options()).await.unwrap();
        sqlx::raw_sql(&format!(
            "SET plan_cache_mode = force_generic_plan;
             PREPARE pricing(uuid, text[]) AS {};
             PREPARE owned(uuid, text, text, uuid) AS {OWNED_TICKETS_SQL};",
            pricing_read_sql()
        ))
        .execute(&mut conn)
        .await
        .unwrap();
        for (table, execute) in &plans {
            let plan: Value =
                sqlx::query_scalar(&format!("EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE {execute}"))
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
            let read = rows_read(&plan[0]["Plan"], table);
            assert!(read <= 10.0, "analyzed {analyzed}: {execute} read {read} rows of {table}: {plan:#}");
        }
    }
    // An earlier order of two tickets that is the buyer's both by visitor and by address counts
    // two, not four.
    let visitor = format!("v{:0>32}", 7);
    sqlx::query(
        "INSERT INTO order_lines (order_id, line, tier_id, price_minor, discount_minor, fee_minor, tax_minor)
         SELECT o.id, n, t.id, 3000, 0, 0, 0 FROM orders o JOIN ticket_tiers t ON t.event_id = o.event_id,
             generate_series(0, 1) n
         WHERE o.event_id = $1::uuid AND o.visitor_id = $2",
    )
    .bind(&event)
    .bind(&visitor)
    .execute(&db)
    .await
    .unwrap();
    let owned: i64 = sqlx::query_scalar(OWNED_TICKETS_SQL)
        .bind(uuid::Uuid::parse_str(&event).unwrap())
        .bind(&visitor)
        .bind("Buyer7@Example.test")
        .bind(uuid::Uuid::new_v4())
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(owned, 2);
}

#[sqlx::test]
async fn a_phone_number_is_taken_where_texts_are_sent_and_refused_elsewhere(db: PgPool) {
    let quote = |api: &Api, token: &str| {
        api.http
            .post(format!("{}/api/v1/checkout/quote", api.base))
            .json(&json!({ "hold_token": token }))
            .send()
    };
    // A shop without SMS: the quote says so, and a number is refused naming the field (nothing made).
    let (api, edge, core) = checkout_api(&db).await;
    let (event, _) = on_sale(&api, 12).await;
    let token = hold_of(&edge, &event, 600, "h0-00000c01", &["A-1"]);
    let q: Value = quote(&api, &token).await.unwrap().json().await.unwrap();
    assert_eq!(q["sms"], false, "{q}");
    let body = json!({ "hold_token": token, "email": "fan@example.test", "phone": "+447700900123" });
    let (s, p) = post_checkout(&api, "phone-1", body.clone()).await;
    assert_eq!((s, p["errors"][0]["field"].as_str()), (422, Some("phone")), "{p}");
    assert_eq!(api.count("orders").await, 0);

    // A shop texting numbers of the UK only.
    let mut state = state_with(Checkout { edge_keys: edge.verifying_ring(), ..checkout(&db, &core) });
    state.sms = Some(std::sync::Arc::new(regional_core::sms::Sms {
        provider: regional_core::sms::twilio::TwilioSettings {
            api_base: "http://127.0.0.1:9".into(),
            account_sid: "AC00000000000000000000000000000001".into(),
            auth_token: "local-auth-token-0123456789".into(),
            from: "+15005550006".into(),
            public_url: "http://127.0.0.1:9".into(),
        },
        reach: regional_core::sms::Reach { allowed_prefixes: vec!["+44".into()] },
    }));
    let api = Api::start_with(state).await;
    let q: Value = quote(&api, &token).await.unwrap().json().await.unwrap();
    assert_eq!(q["sms"], true, "{q}");
    for (phone, says) in
        [("+1 415 555 0100", "+44"), ("07700 900123", "international form"), ("+44", "international form")]
    {
        let (s, p) = post_checkout(
            &api,
            "phone-2",
            json!({ "hold_token": token, "email": "fan@example.test", "phone": phone }),
        )
        .await;
        assert_eq!((s, p["errors"][0]["field"].as_str()), (422, Some("phone")), "{phone}: {p}");
        assert!(p["errors"][0]["message"].as_str().unwrap().contains(says), "{phone}: {p}");
    }
    assert_eq!(api.count("orders").await, 0);
    let body = json!({ "hold_token": token, "email": "fan@example.test", "phone": "+44 7700 900123" });
    let (s, answer) = post_checkout(&api, "phone-3", body.clone()).await;
    // The order is made (its payment cannot start here: no edge to extend the hold).
    assert!(matches!(s, 201 | 503), "{answer}");
    let stored: Option<String> = sqlx::query_scalar("SELECT phone FROM orders").fetch_one(&db).await.unwrap();
    assert_eq!(stored.as_deref(), Some("+447700900123"));
    // A retry is the same order; the same hold with another number is another request.
    assert!(matches!(post_checkout(&api, "phone-3", body).await.0, 200 | 503));
    let other = json!({ "hold_token": token, "email": "fan@example.test", "phone": "+447700900999" });
    let (s, p) = post_checkout(&api, "phone-3", other).await;
    assert_eq!((s, p["reason"].as_str()), (409, Some("idempotency_conflict")), "{p}");
}
