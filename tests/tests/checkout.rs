//! Checkout end to end: workerd (wrangler dev) + the core binary + PostgreSQL, with the built-in
//! test provider reporting by signed webhook over HTTP.
//!
//! 1. `checkout_pays_declines_cancels_and_refuses_bad_webhooks`: hold → checkout through the edge →
//!    approval → paid, seats sold at the edge; the same key twice (and concurrently) gives one order
//!    and one payment; duplicate and out-of-order webhooks change nothing; bad and stale signatures
//!    are refused; a decline frees the seats; a buyer's cancellation refunds by the policy and puts
//!    the seats back on sale; tokens are checked.
//! 2. `checkout_recovers_from_crashes_an_unreachable_edge_and_expiry`: the core killed between payment
//!    and confirmation finishes the order after a restart; the edge unreachable during confirmation,
//!    then reachable; a hold that expires during payment is taken back when its seats are free and
//!    refunded when another buyer took them. Then the audit: no seat sold twice, every paid order
//!    with tickets, every refunded one with its refund.

use std::time::{Duration, Instant};

use e2e::{
    drop_database, free_port, get_json, hold, start_core_with, start_edge_with_keys, Admin, Gate, Service,
    Setup, TestKeys,
};
use regional_core::payments::signature;
use reqwest::Method;
use serde_json::{json, Value};
use shared_types::inventory::HoldState;
use sqlx::PgPool;

const WEBHOOK_SECRET: &str = "whsec_e2e_checkout";

fn core_env(keys: &TestKeys, edge_url: &str, public_url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("CORE_SIGNING_KEY", keys.core_signing_key()),
        ("EDGE_VERIFYING_KEYS", keys.edge.public_config()),
        ("EDGE_URL", edge_url.to_owned()),
        ("CORE_PUBLIC_URL", public_url.to_owned()),
        ("TESTPAY_WEBHOOK_SECRET", WEBHOOK_SECRET.to_owned()),
        ("PAYMENT_GRACE_SECS", "30".to_owned()),
        ("RECONCILE_INTERVAL_MS", "200".to_owned()),
    ]
}

/// An organization with a venue (six seats, a standing area) and two published, passthrough
/// events: one with ten-minute holds, one with holds of two seconds (plus two for payment).
async fn organize(core: &str, db: &str) -> (Admin, String, String) {
    let acme = Admin::root(core, db).organization("Acme", "acme").await;
    let seats: Vec<Value> = (1..=6)
        .map(|i| json!({ "id": format!("A-{i}"), "label": i.to_string(), "x": i, "y": 0, "zone": "std" }))
        .collect();
    let venue = acme
        .ok(
            Method::POST,
            "/api/v1/venues",
            json!({ "name": "Hall", "time_zone": "UTC", "zones": [{ "id": "std", "name": "Standard" }],
                    "ga_areas": [{ "id": "floor", "name": "Floor", "capacity": 100 }],
                    "sections": [{ "id": "A", "name": "A", "rows": [{ "label": "1", "seats": seats }] }] }),
        )
        .await;
    let mut events = Vec::new();
    for (title, hold_seconds, extension) in [("Long holds", 600, 600), ("Short holds", 2, 2)] {
        let event = acme
            .ok(
                Method::POST,
                "/api/v1/events",
                json!({ "venue_id": venue["id"], "title": title, "starts_at": "2027-06-01T20:00:00Z", "ends_at": "2027-06-01T23:00:00Z" }),
            )
            .await;
        let id = event["id"].as_str().unwrap().to_owned();
        acme.ok(
            Method::POST,
            &format!("/api/v1/events/{id}/tiers"),
            json!({ "name": "Seats", "kind": "seated", "currency": "EUR", "price_minor": 4000, "zone_prices": { "std": 5000 }, "quantity": 6 }),
        )
        .await;
        let settings = json!({
            "pricing": { "service_fee": { "per_ticket_minor": 150, "percent_bps": 500 }, "tax": { "rate_bps": 1900 } },
            "holds": { "hold_seconds": hold_seconds, "extension_seconds": extension, "max_tickets_per_visitor": 8 } });
        acme.publish_open(&id, settings).await;
        events.push(id);
    }
    (acme, events[0].clone(), events[1].clone())
}

/// Waits until every event is synced to the edge.
async fn synced(acme: &Admin, events: &[&str]) {
    for id in events {
        acme.sync_until(id, Duration::from_secs(90), |s| s["state"] == "synced").await;
    }
}

/// `POST /api/v1/checkout` through the edge: (status, answer).
async fn checkout(edge: &str, hold_token: &str, key: &str) -> (u16, Value) {
    checkout_with(edge, hold_token, key, json!(null)).await
}

async fn checkout_with(edge: &str, hold_token: &str, key: &str, promo: Value) -> (u16, Value) {
    let resp = e2e::http()
        .post(format!("{edge}/api/v1/checkout"))
        .header("idempotency-key", key)
        .json(&json!({ "hold_token": hold_token, "email": format!("{key}@e2e.test"), "promo_code": promo }))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

/// The tester presses a button on the test provider's page.
async fn decide(core: &str, order: &Value, decision: &str, query: &str) {
    let page =
        order["payment"]["redirect_url"].as_str().unwrap_or_else(|| panic!("no payment page: {order}"));
    let payment = page.rsplit('/').next().unwrap();
    let resp = e2e::http()
        .post(format!("{core}/testpay/pay/{payment}/{decision}?{query}"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{decision}");
}

/// Polls the buyer's view of the order (through the edge) until `done` holds.
async fn order_until(edge: &str, answer: &Value, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let id = answer["order"]["id"].as_str().unwrap();
    let token = answer["order_token"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let order = get_json(&format!("{edge}/api/v1/orders/{id}"), Some(token)).await;
        if done(&order) {
            return order;
        }
        assert!(Instant::now() < deadline, "order never became {what}: {order}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn availability(edge: &str, event: &str) -> String {
    // The availability of an isolate is cached for a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let a: Value = reqwest::get(format!("{edge}/api/v1/events/{event}/availability"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    a["seats"].as_str().unwrap().to_owned()
}

async fn count(db: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db).await.unwrap()
}

/// The checks that must hold whatever happened: no seat with two live tickets, every paid order
/// with one ticket per line, every refunded order with a succeeded refund of its amount, no order
/// left unfinished, money at the provider equal to what the orders kept.
async fn audit(db: &PgPool) {
    // Orders the run did not wait for (a cancelled event's sweep) may still be on a step the
    // reconciler retries after a transient failure (an edge call that failed once): they must end,
    // within a minute; then every check below holds.
    let unfinished =
        "SELECT count(*) FROM orders WHERE state IN ('created', 'confirming', 'releasing', 'refunding')";
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while count(db, unfinished).await > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(count(db, "SELECT count(*) FROM (SELECT event_id, seat_id FROM tickets WHERE state <> 'void' GROUP BY 1, 2 HAVING count(*) > 1) d").await, 0);
    assert_eq!(
        count(db, "SELECT count(*) FROM orders o WHERE state = 'paid' AND (SELECT count(*) FROM tickets t WHERE t.order_id = o.id AND t.state = 'valid') <> (SELECT count(*) FROM order_lines l WHERE l.order_id = o.id)").await,
        0,
        "a paid order without its tickets"
    );
    assert_eq!(
        count(db, "SELECT count(*) FROM orders o WHERE state = 'refunded' AND refund_minor > 0 AND NOT EXISTS (SELECT 1 FROM refunds r WHERE r.order_id = o.id AND r.state = 'succeeded' AND r.amount_minor = o.refund_minor)").await,
        0,
        "a refunded order without its refund"
    );
    assert_eq!(
        count(
            db,
            "SELECT count(*) FROM orders WHERE state IN ('created', 'confirming', 'releasing', 'refunding')"
        )
        .await,
        0
    );
    assert_eq!(
        count(db, "SELECT count(*) FROM orders o JOIN payments p ON p.order_id = o.id JOIN testpay_payments t ON t.id = p.provider_ref
                   WHERE t.state = 'succeeded' AND o.state NOT IN ('paid', 'refunded')").await,
        0,
        "money taken for an order that is neither paid nor refunded"
    );
    assert_eq!(
        count(db, "SELECT count(*) FROM orders o JOIN payments p ON p.order_id = o.id JOIN testpay_payments t ON t.id = p.provider_ref
                   WHERE t.refunded_minor <> o.refund_minor").await,
        0,
        "the provider refunded another amount than the order says"
    );
    // Every domain event the run wrote matches its documented schema (docs/schemas/events.v1.json).
    let payloads: Vec<serde_json::Value> =
        sqlx::query_scalar("SELECT payload FROM outbox ORDER BY id").fetch_all(db).await.unwrap();
    for p in &payloads {
        if let Err(e) = regional_core::bus::schema::check(p) {
            panic!("an outbox message does not match the schema: {e}\n{p}");
        }
    }
}

/// Ends a sale test: the audit, then the edge, the core and the database go.
async fn audit_and_stop(db: PgPool, edge: Service, core: Service, db_name: &str) {
    audit(&db).await;
    db.close().await;
    drop(edge);
    core.stop();
    drop_database(db_name);
}

async fn pool(db: &str) -> PgPool {
    sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(db).await.expect("database")
}

#[tokio::test]
async fn checkout_pays_declines_cancels_and_refuses_bad_webhooks() {
    let Setup { dir, db_name, db_url, keys, core_port, edge_port, core_url, edge_url } =
        Setup::new("checkout");
    // Domain events go through the real broker to the notifier, which mails a real SMTP server.
    let smtp_port = free_port();
    let mail_dir = dir.join("mail");
    let _smtp = e2e::start_smtp_sink(smtp_port, &mail_dir);
    let mut env = core_env(&keys, &edge_url, &core_url);
    let bootstrap = std::env::var("KAFKA_BOOTSTRAP").expect("KAFKA_BOOTSTRAP: run through scripts/test.sh");
    env.push(("KAFKA_BOOTSTRAP", bootstrap));
    env.push(("KAFKA_TOPIC_PREFIX", format!("e2e{}.", std::process::id())));
    env.push(("SMTP_URL", format!("smtp://127.0.0.1:{smtp_port}")));
    // A partner listens (partner webhooks, to a receiver on loopback: development mode's rule).
    env.push(("CORE_WEBHOOK_KEYS", "e2e-1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8".to_owned()));
    env.push(("CORE_WEBHOOK_ALLOW_PRIVATE", "true".to_owned()));
    env.push(("CORE_WEBHOOK_POLL_MS", "200".to_owned()));
    let hook_port = free_port();
    let _receiver = e2e::start_webhook_receiver(hook_port, &dir);
    // Texts go through the local Twilio, whose signed reports come back to the core.
    let twilio_port = free_port();
    let (sid, token) = ("AC00000000000000000000000000000e2e", "e2e-auth-token-0123456789");
    let _twilio =
        e2e::start_fake_twilio(twilio_port, &dir, sid, token, &format!("{core_url}/api/v1/sms/incoming"));
    env.push(("SMS_API_BASE", format!("http://127.0.0.1:{twilio_port}")));
    env.push(("TWILIO_ACCOUNT_SID", sid.to_owned()));
    env.push(("TWILIO_AUTH_TOKEN", token.to_owned()));
    env.push(("SMS_FROM", "+15005550006".to_owned()));
    let core = start_core_with(core_port, &db_url, true, &dir, &env);
    core.wait_ready("/healthz", Duration::from_secs(60)).await;
    let edge =
        start_edge_with_keys(edge_port, &core_url, &dir.join("do-state"), &dir, &keys.edge_env_file(&dir));
    edge.wait_ready("/healthz", Duration::from_secs(120)).await;
    let db = pool(&db_url).await;
    let (acme, event, _) = organize(&core_url, &db_url).await;
    let hook = acme
        .ok(Method::POST, "/api/v1/webhook-endpoints", json!({
            "url": format!("http://127.0.0.1:{hook_port}/partner"), "event_types": ["order.paid", "order.refunded"] }))
        .await;
    e2e::webhook_receiver_control(hook_port, json!({ "secret": hook["secret"] })).await;
    synced(&acme, &[&event]).await;

    // 1. Hold two seats; the same checkout key sent twice at once, then again: one order, one payment.
    let (hold_id, token) = hold(&edge_url, &event, &["A-1", "A-2"]).await;
    let ((s1, a1), (s2, a2)) =
        tokio::join!(checkout(&edge_url, &token, "key-1"), checkout(&edge_url, &token, "key-1"));
    assert!(
        [200, 201].contains(&s1) && [200, 201].contains(&s2),
        "{s1} {a1}\n{s2} {a2}\n{}",
        core.log_tail()
    );
    assert_eq!(a1["order"]["id"], a2["order"]["id"]);
    let (s3, a3) = checkout(&edge_url, &token, "key-1").await;
    assert_eq!((s3, &a3["order"]["id"]), (200, &a1["order"]["id"]));
    let answer = a3;
    let order = &answer["order"];
    assert_eq!(order["state"], "awaiting_payment", "{order}");
    // 2 × (5000 + fee 150 + 5 % = 400 + tax 19 % of 5400 = 1026).
    assert_eq!(order["total_minor"], 2 * (5000 + 400 + 1026), "{order}");
    assert_eq!(count(&db, "SELECT count(*) FROM orders").await, 1);
    assert_eq!(count(&db, "SELECT count(*) FROM payments").await, 1);
    assert_eq!(count(&db, "SELECT count(*) FROM testpay_payments").await, 1);
    // The hold was extended for payment.
    assert!(order["hold_expires_at"].as_str().unwrap() > answer["order"]["created_at"].as_str().unwrap());

    // 2. Approved, reported three times, plus a stale failure delivered after the success.
    decide(&core_url, order, "approve", "duplicates=2&stale_failure=true").await;
    let paid = order_until(&edge_url, &answer, "paid", |o| o["state"] == "paid").await;
    assert_eq!(paid["tickets"].as_array().unwrap().len(), 2, "{paid}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&db, "SELECT count(*) FROM testpay_deliveries WHERE delivered_at IS NULL").await > 0 {
        assert!(Instant::now() < deadline, "webhooks never delivered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(count(&db, "SELECT count(*) FROM testpay_deliveries").await, 4);
    assert_eq!(count(&db, "SELECT count(*) FROM webhook_events").await, 2, "one per distinct event");
    let again = order_until(&edge_url, &answer, "still paid", |_| true).await;
    assert_eq!(
        (again["state"].as_str(), again["payment"]["state"].as_str()),
        (Some("paid"), Some("succeeded"))
    );
    assert_eq!(count(&db, "SELECT count(*) FROM tickets").await, 2);
    assert_eq!(availability(&edge_url, &event).await, "ssaaaa");
    let client = regional_core::edge_client::EdgeClient::new(&edge_url, keys.core.clone());
    let at_edge = client.hold(&event, &hold_id).await.unwrap();
    assert_eq!(at_edge.state, HoldState::Sold);
    let trail: Vec<(String,)> =
        sqlx::query_as("SELECT to_state FROM state_audit WHERE subject_kind = 'order' ORDER BY id")
            .fetch_all(&db)
            .await
            .unwrap();
    let trail: Vec<&str> = trail.iter().map(|t| t.0.as_str()).collect();
    assert_eq!(trail, ["created", "awaiting_payment", "confirming", "paid"]);
    assert!(sqlx::query("DELETE FROM state_audit").execute(&db).await.is_err(), "the audit is append-only");
    assert_eq!(count(&db, "SELECT count(*) FROM outbox WHERE payload->>'type' = 'order.paid'").await, 1);

    // 3. Webhooks with a bad or stale signature are refused and change nothing.
    let body =
        json!({ "id": "evt_forged", "type": "payment.succeeded", "data": { "payment": { "id": "tp_x" } } })
            .to_string();
    let now = chrono::Utc::now().timestamp();
    for (header, reason) in [
        (signature::sign("whsec_wrong", now, body.as_bytes()), "bad-signature"),
        (signature::sign(WEBHOOK_SECRET, now - 3600, body.as_bytes()), "stale-signature"),
        ("t=1,v1=zz".to_owned(), "malformed-signature"),
    ] {
        let resp = e2e::http()
            .post(format!("{core_url}/api/v1/webhooks/testpay"))
            .header("testpay-signature", header)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        let problem: Value = resp.json().await.unwrap();
        assert_eq!(problem["reason"], reason, "{problem}");
    }
    assert_eq!(count(&db, "SELECT count(*) FROM webhook_events").await, 2);

    // 4. Declined: the order is cancelled and its seat is free again.
    let (_, token) = hold(&edge_url, &event, &["A-3"]).await;
    let (status, declined) = checkout(&edge_url, &token, "key-2").await;
    assert_eq!(status, 201, "{declined}");
    decide(&core_url, &declined["order"], "decline", "").await;
    let cancelled = order_until(&edge_url, &declined, "cancelled", |o| o["state"] == "cancelled").await;
    assert_eq!(cancelled["outcome"], "payment_failed");
    assert_eq!(availability(&edge_url, &event).await, "ssaaaa");

    // 5. Tokens: a forged hold token stops at the edge; an order needs its own token.
    let cut = token.rfind('.').unwrap() + 1;
    let flipped = if &token[cut..cut + 1] == "A" { "B" } else { "A" };
    let forged = format!("{}{flipped}{}", &token[..cut], &token[cut + 1..]);
    let (status, problem) = checkout(&edge_url, &forged, "key-3").await;
    assert_eq!((status, problem["reason"].as_str()), (401, Some("bad-signature")), "{problem}");
    let other = declined["order_token"].as_str().unwrap();
    let resp = e2e::http()
        .get(format!("{edge_url}/api/v1/orders/{}", answer["order"]["id"].as_str().unwrap()))
        .bearer_auth(other)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = reqwest::get(format!("{edge_url}/api/v1/orders/{}", answer["order"]["id"].as_str().unwrap()))
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // 6. The buyer cancels the paid order: refunded by the policy (fees kept), seats back on sale.
    let resp = e2e::http()
        .post(format!("{edge_url}/api/v1/orders/{}/cancel", answer["order"]["id"].as_str().unwrap()))
        .bearer_auth(answer["order_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let refunded = order_until(&edge_url, &answer, "refunded", |o| o["state"] == "refunded").await;
    let fees = refunded["fee_minor"].as_i64().unwrap();
    assert_eq!(refunded["refund_minor"].as_i64().unwrap(), refunded["total_minor"].as_i64().unwrap() - fees);
    assert!(refunded["tickets"].as_array().unwrap().iter().all(|t| t["state"] == "void"), "{refunded}");
    assert_eq!(availability(&edge_url, &event).await, "aaaaaa");

    // The buyers were told, by mail, through Kafka: the tickets, the declined order, the refund.
    let deadline = Instant::now() + Duration::from_secs(60);
    let wanted = [
        "Your tickets for Long holds",
        "Your order for Long holds was cancelled",
        "Your refund for Long holds",
    ];
    loop {
        let subjects = e2e::mail_subjects(&mail_dir);
        if wanted.iter().all(|w| subjects.iter().filter(|s| s == w).count() == 1) {
            break;
        }
        assert!(Instant::now() < deadline, "mails received: {subjects:?}\n{}", core.log_tail());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(count(&db, "SELECT count(*) FROM outbox WHERE sent_at IS NULL").await, 0, "all relayed");

    // The partner heard of the order too, through Kafka and the webhooks' consumer group: paid,
    // then refunded, once each, each signature verified by the Standard Webhooks' library.
    let paid_order = answer["order"]["id"].clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = e2e::webhooks_received(hook_port).await;
        let of_order: Vec<&Value> = got
            .iter()
            .filter(|d| {
                serde_json::from_str::<Value>(d["body"].as_str().unwrap_or("{}"))
                    .is_ok_and(|b| b["data"]["order_id"] == paid_order)
            })
            .collect();
        let types: Vec<&str> = of_order.iter().filter_map(|d| d["type"].as_str()).collect();
        if types == ["order.paid", "order.refunded"] {
            assert!(got.iter().all(|d| d["verified"] == true && d["answered"] == 200), "{got:?}");
            break;
        }
        assert!(Instant::now() < deadline, "the partner got {got:?}\n{}", core.log_tail());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // 7. A buyer in Chromium: the line, the purchase page, the test provider's page, the order page.
    let out = std::process::Command::new("node")
        .current_dir(e2e::repo_root())
        .args(["tests/browser/buy.mjs", &edge_url, &event, "friend@e2e.test", "+44 7700 900123"])
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "the browser buyer failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let bought: Value = serde_json::from_slice(&out.stdout).expect("the script reports its order");
    let seat = bought["tickets"][0].as_str().unwrap().split(' ').nth(1).unwrap().to_owned();

    // 7a. The number the buyer gave gets the confirmation by text through the local Twilio, which
    //     reports it delivered to the core (signed, answered 204), with the order's link.
    let order_path = bought["order"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = loop {
        let sent = get_json(&format!("http://127.0.0.1:{twilio_port}/_fake/messages"), None).await;
        let delivered = sent.as_array().into_iter().flatten().find(|m| {
            m["to"] == "+447700900123"
                && m["status"] == "delivered"
                && m["callbacks"].as_array().is_some_and(|c| c.len() == 2)
        });
        if let Some(m) = delivered {
            break m.clone();
        }
        assert!(Instant::now() < deadline, "no text delivered: {sent}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(text["body"].as_str().unwrap().contains(&format!("{edge_url}{order_path}#")), "{text}");
    assert!(text["callbacks"].as_array().unwrap().iter().all(|c| c["answer"] == 204), "{text}");
    // The friend's number, given on the order page's offer form, gets the offer by text.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let sent = get_json(&format!("http://127.0.0.1:{twilio_port}/_fake/messages"), None).await;
        let offer = sent.as_array().into_iter().flatten().find(|m| m["to"] == "+447700900124");
        if let Some(m) = offer {
            assert!(m["body"].as_str().unwrap().contains(&format!("{edge_url}/transfers/")), "{m}");
            break;
        }
        assert!(Instant::now() < deadline, "no offer text: {sent}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let state: String =
        sqlx::query_scalar("SELECT state FROM sms_messages WHERE recipient = '+447700900123'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(state, "delivered");

    // 7b. The browser buyer gave the ticket to a friend, who gets the offer by mail, opens its link
    //     in Chromium, accepts, and sees the ticket's QR code; the ticket is theirs with a new code.
    let deadline = Instant::now() + Duration::from_secs(60);
    let link = loop {
        if let Some(link) = e2e::mail_link(
            &mail_dir,
            "browser@e2e.test is sending you a ticket",
            &format!("{edge_url}/transfers/"),
        ) {
            break link;
        }
        assert!(Instant::now() < deadline, "no offer mail: {:?}", e2e::mail_subjects(&mail_dir));
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let out = std::process::Command::new("node")
        .current_dir(e2e::repo_root())
        .args(["tests/browser/accept.mjs", &link])
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "the recipient failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (holder, version): (String, i32) = sqlx::query_as("SELECT holder_email, version FROM tickets WHERE seat_id = $1 AND event_id = $2::uuid AND state = 'valid'")
        .bind(&seat)
        .bind(&event)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!((holder.as_str(), version), ("friend@e2e.test", 2));
    // The recipient offered it on and withdrew the offer: still theirs, the offer on record.
    let onward: Vec<(String, String)> = sqlx::query_as(
        "SELECT to_email, state FROM ticket_transfers WHERE event_id = $1::uuid AND from_email = 'friend@e2e.test'",
    )
    .bind(&event)
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(onward, [("third@e2e.test".to_owned(), "cancelled".to_owned())]);

    // 8. With a promo code; then the organizer refunds it and takes the seat off sale.
    acme.ok(
        Method::POST,
        &format!("/api/v1/events/{event}/promo-codes"),
        json!({ "code": "SAVE10", "kind": "percent", "percent_off": 10 }),
    )
    .await;
    let (_, token) = hold(&edge_url, &event, &["A-5"]).await;
    let (status, promo) = checkout_with(&edge_url, &token, "key-4", json!("save10")).await;
    assert_eq!(status, 201, "{promo}");
    // 5000 - 500; fee 150 + 225; tax 19 % of 4875 = 926.
    assert_eq!(
        (promo["order"]["discount_minor"].as_i64(), promo["order"]["total_minor"].as_i64()),
        (Some(500), Some(4500 + 375 + 926))
    );
    decide(&core_url, &promo["order"], "approve", "").await;
    order_until(&edge_url, &promo, "paid", |o| o["state"] == "paid").await;
    let (status, answer) = acme
        .call(
            Method::POST,
            &format!("/api/v1/orders/{}/refund", promo["order"]["id"].as_str().unwrap()),
            Some(json!({ "seats": "off_sale", "percent": 50 })),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    let refunded = order_until(&edge_url, &promo, "refunded", |o| o["state"] == "refunded").await;
    assert_eq!(refunded["refund_minor"].as_i64(), Some((4500 + 375 + 926) / 2));
    let seats = availability(&edge_url, &event).await;
    assert_eq!(&seats[4..5], "x", "the refunded seat is off sale, not free: {seats}");
    let browser_seat: usize = seat.trim_start_matches("A-").parse().unwrap();
    assert_eq!(&seats[browser_seat - 1..browser_seat], "s", "the browser's seat is sold: {seats}");

    // 9. The organizer cancels the event: the paid order is refunded in full, the unpaid one cancelled.
    let (_, token) = hold(&edge_url, &event, &["A-6"]).await;
    let (_, paid_one) = checkout(&edge_url, &token, "key-5").await;
    decide(&core_url, &paid_one["order"], "approve", "").await;
    order_until(&edge_url, &paid_one, "paid", |o| o["state"] == "paid").await;
    let (_, token) = hold(&edge_url, &event, &["A-1"]).await;
    let (_, unpaid) = checkout(&edge_url, &token, "key-6").await;
    assert_eq!(unpaid["order"]["state"], "awaiting_payment", "{unpaid}");
    acme.ok(Method::POST, &format!("/api/v1/events/{event}/state"), json!({ "state": "cancelled" })).await;
    let refunded = order_until(&edge_url, &paid_one, "refunded", |o| o["state"] == "refunded").await;
    assert_eq!(
        (refunded["outcome"].as_str(), &refunded["refund_minor"]),
        (Some("event_cancelled"), &refunded["total_minor"])
    );
    let cancelled = order_until(&edge_url, &unpaid, "cancelled", |o| o["state"] == "cancelled").await;
    assert_eq!(cancelled["outcome"], "event_cancelled");
    assert_eq!(cancelled["payment"]["state"], "cancelled", "{cancelled}");
    audit_and_stop(db, edge, core, &db_name).await;
}

#[tokio::test]
async fn checkout_recovers_from_crashes_an_unreachable_edge_and_expiry() {
    let Setup { dir, db_name, db_url, keys, core_port, edge_port, core_url, edge_url } =
        Setup::new("checkout-faults");
    // The core reaches the edge through a gate the test can close.
    let gate = Gate::start(edge_port).await;
    let start = |fault: Option<&str>| -> Service {
        let mut env = core_env(&keys, &gate.url(), &core_url);
        if let Some(point) = fault {
            env.push(("CORE_FAULT_INJECT", point.to_owned()));
        }
        start_core_with(core_port, &db_url, true, &dir, &env)
    };
    let core = start(None);
    core.wait_ready("/healthz", Duration::from_secs(60)).await;
    let edge =
        start_edge_with_keys(edge_port, &core_url, &dir.join("do-state"), &dir, &keys.edge_env_file(&dir));
    edge.wait_ready("/healthz", Duration::from_secs(120)).await;
    let db = pool(&db_url).await;
    let (acme, long, short) = organize(&core_url, &db_url).await;
    synced(&acme, &[&long, &short]).await;
    core.stop();

    // 1. The core crashes between the payment's success and the hold's confirmation.
    let core = start(Some("crash-before-confirm"));
    core.wait_ready("/healthz", Duration::from_secs(60)).await;
    let (_, token) = hold(&edge_url, &long, &["A-1"]).await;
    let (status, crashed) = checkout(&edge_url, &token, "crash-1").await;
    assert_eq!(status, 201, "{crashed}");
    decide(&core_url, &crashed["order"], "approve", "").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{core_url}/healthz")).await.is_ok() {
        assert!(Instant::now() < deadline, "the core never crashed:\n{}", core.log_tail());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let state: String = sqlx::query_scalar("SELECT state FROM orders").fetch_one(&db).await.unwrap();
    assert_eq!(state, "confirming", "the crash came after the payment was recorded");
    drop(core);
    let core = start(None);
    core.wait_ready("/healthz", Duration::from_secs(60)).await;
    let paid = order_until(&edge_url, &crashed, "paid after the restart", |o| o["state"] == "paid").await;
    assert_eq!(paid["tickets"].as_array().unwrap().len(), 1);

    // 2. The edge is unreachable while the payment succeeds; the order waits, then finishes.
    let (_, token) = hold(&edge_url, &long, &["A-2"]).await;
    let (status, cut) = checkout(&edge_url, &token, "cut-1").await;
    assert_eq!(status, 201, "{cut}");
    gate.close().await;
    decide(&core_url, &cut["order"], "approve", "").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (state, attempts): (String, i32) =
            sqlx::query_as("SELECT state, attempts FROM orders WHERE id = $1::uuid")
                .bind(cut["order"]["id"].as_str().unwrap())
                .fetch_one(&db)
                .await
                .unwrap();
        if state == "confirming" && attempts >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "no failed confirmation recorded: {state} {attempts}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    gate.open();
    order_until(&edge_url, &cut, "paid once the edge is back", |o| o["state"] == "paid").await;

    // 3. A hold expires during payment and nobody took its seat: the seat is taken back, no refund.
    let (hold_a, token) = hold(&edge_url, &short, &["A-3"]).await;
    let (status, late) = checkout(&edge_url, &token, "late-1").await;
    assert_eq!(status, 201, "{late}");
    let client = regional_core::edge_client::EdgeClient::new(&edge_url, keys.core.clone());
    let expired = |hold: String| {
        let client = client.clone();
        let short = short.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let h = client.hold(&short, &hold).await.unwrap();
                if h.state == HoldState::Expired {
                    return;
                }
                assert!(Instant::now() < deadline, "the hold never expired: {h:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    expired(hold_a.clone()).await;
    decide(&core_url, &late["order"], "approve", "").await;
    let kept = order_until(&edge_url, &late, "paid after reclaiming", |o| o["state"] == "paid").await;
    assert_eq!(kept["refund_minor"], 0);
    let h = client.hold(&short, &hold_a).await.unwrap();
    assert_eq!(h.state, HoldState::Sold, "{h:?}");

    // 4. A hold expires during payment and another buyer takes its seat: refunded, and told why.
    let (hold_b, token) = hold(&edge_url, &short, &["A-4"]).await;
    let (status, lost) = checkout(&edge_url, &token, "lost-1").await;
    assert_eq!(status, 201, "{lost}");
    expired(hold_b).await;
    let (rival, _) = hold(&edge_url, &short, &["A-4"]).await;
    decide(&core_url, &lost["order"], "approve", "").await;
    let refunded = order_until(&edge_url, &lost, "refunded", |o| o["state"] == "refunded").await;
    assert_eq!(refunded["outcome"], "hold_lost");
    assert_eq!(refunded["refund_minor"], refunded["total_minor"]);
    assert_eq!(count(&db, "SELECT count(*) FROM outbox WHERE payload->>'type' = 'order.hold_lost'").await, 1);
    let h = client.hold(&short, &rival).await.unwrap();
    assert_eq!(h.state, HoldState::Held, "the other buyer keeps the seat: {h:?}");

    audit_and_stop(db, edge, core, &db_name).await;
}

/// 3. What organizers and operators see of a live sale, through a real line (first come, first
///    served): the report's held and available seats and waiting-room figures read from the edge,
///    the edge's statistics scraped into `/metrics` with the consumers' lag, and the dashboard in
///    Chromium, signed in with the organizer's key, refreshing itself to the next sale.
#[tokio::test]
async fn reports_metrics_and_the_dashboard_show_the_live_sale() {
    let Setup { dir, db_name, db_url, keys, core_port, edge_port, core_url, edge_url } =
        Setup::new("live_sale");
    let mut env = core_env(&keys, &edge_url, &core_url);
    env.push(("EDGE_SCRAPE_SECS", "1".to_owned()));
    env.push(("LOG_FORMAT", "json".to_owned()));
    let metrics_url = format!("http://127.0.0.1:{}", free_port());
    env.push(("CORE_METRICS_LISTEN", metrics_url.trim_start_matches("http://").to_owned()));
    let core = start_core_with(core_port, &db_url, true, &dir, &env);
    core.wait_ready("/readyz", Duration::from_secs(60)).await;
    let edge =
        start_edge_with_keys(edge_port, &core_url, &dir.join("do-state"), &dir, &keys.edge_env_file(&dir));
    edge.wait_ready("/healthz", Duration::from_secs(120)).await;
    let (acme, event, _) = organize(&core_url, &db_url).await;
    acme.ok(
        Method::PUT,
        &format!("/api/v1/events/{event}/waiting-room"),
        json!({ "mode": "fifo", "admit_per_minute": 600, "bot": { "check": { "kind": "off" } } }),
    )
    .await;
    synced(&acme, &[&event]).await;

    // A sale: one buyer pays for A-1, another holds A-2; a bot-like request is refused.
    let (_, token) = hold(&edge_url, &event, &["A-1"]).await;
    let (s, first) = checkout(&edge_url, &token, "live-1").await;
    assert_eq!(s, 201, "{first}");
    decide(&core_url, &first["order"], "approve", "").await;
    order_until(&edge_url, &first, "paid", |o| o["state"] == "paid").await;
    // One id from the edge to the core's JSON log lines: the trace the edge starts (a buyer's own
    // traceparent is not continued: the edge is the trust boundary), answered as x-request-id.
    let buyer_trace = "0af7651916cd43dd8448eb211c80319c";
    let traced = e2e::http()
        .get(format!("{edge_url}/api/v1/orders/{}", first["order"]["id"].as_str().unwrap()))
        .bearer_auth(first["order_token"].as_str().unwrap())
        .header("traceparent", format!("00-{buyer_trace}-b7ad6b7169203331-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(traced.status(), 200);
    let trace = traced.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(trace.len() == 32 && trace != buyer_trace, "the edge's trace: {trace}");
    let trace = trace.as_str();
    let deadline = Instant::now() + Duration::from_secs(5);
    let line: Value = loop {
        let logged = std::fs::read_to_string(dir.join(format!("core-{core_port}.log"))).unwrap();
        if let Some(l) = logged.lines().find(|l| l.contains(trace)) {
            break serde_json::from_str(l).expect("a JSON log line");
        }
        assert!(Instant::now() < deadline, "the core did not log the request");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(line["span"]["request_id"], trace, "{line}");
    let (_, second_token) = hold(&edge_url, &event, &["A-2"]).await;
    let refused = e2e::http_builder()
        .user_agent("x".repeat(600))
        .build()
        .unwrap()
        .post(format!("{edge_url}/api/v1/events/{event}/queue"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(refused.status().is_client_error());

    // The report: sold from the projections, held and available and the line from the edge.
    let deadline = Instant::now() + Duration::from_secs(30);
    let report = loop {
        let (_, r) = acme.call(Method::GET, &format!("/api/v1/events/{event}/report"), None).await;
        let ready = r["tiers"][0]["live_tickets"] == 1
            && r["tiers"][0]["held"] == 1
            && r["waiting_room"]["refusals"]["bad-headers"].as_u64() >= Some(1);
        if ready {
            break r;
        }
        assert!(Instant::now() < deadline, "the report never showed the sale: {r}\n{}", core.log_tail());
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(report["edge"]["available"], true, "{report}");
    assert_eq!(report["tiers"][0]["available"], 4, "six seats, one sold, one held");
    let line = &report["waiting_room"];
    assert_eq!((line["admitted_total"].as_u64(), line["waiting"].as_u64()), (Some(2), Some(0)), "{line}");
    assert_eq!(line["phase"], "open");
    assert!(line["admitted_per_minute"].as_f64().unwrap() >= 2.0, "{line}");
    assert_eq!(report["holds"]["placed"], 2);
    assert_eq!(report["hold_to_order"], 0.5, "one order of two holds");

    // /metrics: the edge's figures, scraped every second, and the consumers' lag.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = reqwest::get(format!("{metrics_url}/metrics")).await.unwrap().text().await.unwrap();
        let e = format!("event=\"{event}\"");
        let wanted = [
            format!("ticketing_edge_seats{{{e},state=\"held\"}} 1"),
            format!("ticketing_edge_seats{{{e},state=\"sold\"}} 1"),
            format!("ticketing_edge_holds_total{{{e},outcome=\"placed\"}} 2"),
            format!("ticketing_edge_queue_admitted_total{{{e}}} 2"),
            format!("ticketing_edge_scrape_ok{{{e}}} 1"),
            "ticketing_consumer_lag_messages{consumer=\"reporting\"} 0".to_owned(),
        ];
        // Whole lines: counts are integers in the text (`1`, not `1.0` or `10`).
        let refused = format!("ticketing_edge_refusals_total{{{e},reason=\"bad-headers\"}} ");
        if wanted.iter().all(|w| text.lines().any(|l| l == w))
            && text.lines().any(|l| l.starts_with(&refused))
        {
            break;
        }
        assert!(Instant::now() < deadline, "metrics never showed the edge: {text}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The dashboard in Chromium: the sale as it stands, then the next sale without a reload.
    let mut browser = std::process::Command::new("node")
        .current_dir(e2e::repo_root())
        .args(["tests/browser/dashboard.mjs", &core_url, &acme.key, &event, "1 / 6", "2 / 6"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("node runs");
    let lines = std::io::BufRead::lines(std::io::BufReader::new(browser.stdout.take().unwrap()));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || lines.map_while(Result::ok).for_each(|l| drop(tx.send(l))));
    let first_line = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(line) => line,
        Err(_) => {
            let out = browser.wait_with_output().unwrap();
            panic!("the dashboard did not show the sale:\n{}", String::from_utf8_lossy(&out.stderr))
        }
    };
    let shown: Value = serde_json::from_str(&first_line).unwrap();
    assert_eq!(shown["held"], "1", "{shown}");
    assert_eq!(shown["orders_paid"], "1", "{shown}");
    assert_eq!(shown["hold_to_order"], "50 %", "{shown}");
    assert_eq!((shown["phase"].as_str(), shown["waiting"].as_str()), (Some("open"), Some("0")), "{shown}");
    assert_eq!(shown["chart_total"], "1", "this minute's sale is on the chart: {shown}");
    assert!(shown["refusals"]["bad-headers"].as_u64() >= Some(1), "{shown}");
    assert!(shown["gross"].as_str().unwrap().ends_with(" EUR"), "{shown}");

    let (s, second) = checkout(&edge_url, &second_token, "live-2").await;
    assert_eq!(s, 201, "{second}");
    decide(&core_url, &second["order"], "approve", "").await;
    order_until(&edge_url, &second, "paid", |o| o["state"] == "paid").await;
    let refreshed = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
    let out = browser.wait_with_output().unwrap();
    assert!(
        out.status.success() && refreshed.contains("\"refreshed\":true"),
        "the dashboard did not refresh to the next sale: {refreshed}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(edge);
    drop(core);
    drop_database(&db_name);
}
