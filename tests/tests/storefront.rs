//! The storefront end to end with Stripe as the payment provider: the core binary with
//! `PAYMENT_PROVIDER=stripe` against the local Stripe (`scripts/fake-stripe.mjs`: Checkout Sessions,
//! its hosted page, signed webhooks), wrangler dev, PostgreSQL, and buyers in headless Chromium
//! (`tests/browser/storefront.mjs`):
//!
//! - a keyboard-only buyer finds the event from the front page, picks the second seated tier and
//!   two seats in the list view, pays on Stripe's page and comes back to the tickets;
//! - another buys three standing places of the event's general-admission tier the same way;
//! - the first cancels: the refund goes to Stripe, against the session's payment;
//! - a payment Stripe refuses to create ends its order at once (not when the hold runs out);
//! - the box office sells two seats for cash at the counter, without the line, and prints them;
//! - the event becomes a series with two more dates, published at once; a buyer goes from the
//!   front page to the series' dates, picks the last, and buys a standing place of that date.

use std::time::{Duration, Instant};

use e2e::{
    drop_database, free_port, get_json, hold, start_core_with, start_edge_with_keys, start_fake_stripe,
    Admin, Setup,
};
use reqwest::Method;
use serde_json::{json, Value};

const STRIPE_KEY: &str = "sk_test_e2e_storefront";
const WEBHOOK_SECRET: &str = "whsec_e2e_storefront";

/// A venue with two rows (the front one dearer) and a standing floor; an event with two seated
/// tiers (adult, reduced) and a standing tier, on sale, without a line or bot check.
async fn organize(acme: &Admin) -> String {
    let row = |label: &str, zone: &str| {
        let seats: Vec<Value> = (1..=6)
            .map(|i| json!({ "id": format!("{label}-{i}"), "label": i.to_string(), "x": i, "y": label.len(), "zone": zone }))
            .collect();
        json!({ "label": label, "seats": seats })
    };
    let venue = acme
        .ok(
            Method::POST,
            "/api/v1/venues",
            json!({ "name": "Hall", "time_zone": "Europe/Berlin",
                    "zones": [{ "id": "front", "name": "Front" }, { "id": "back", "name": "Back" }],
                    "ga_areas": [{ "id": "floor", "name": "Floor", "capacity": 100 }],
                    "sections": [{ "id": "A", "name": "Stalls", "rows": [row("A", "front"), row("B", "back")] }] }),
        )
        .await;
    let event = acme
        .ok(
            Method::POST,
            "/api/v1/events",
            json!({ "venue_id": venue["id"], "title": "Storefront night", "starts_at": "2027-06-01T20:00:00Z", "ends_at": "2027-06-01T23:00:00Z" }),
        )
        .await;
    let id = event["id"].as_str().unwrap().to_owned();
    let tiers = format!("/api/v1/events/{id}/tiers");
    for tier in [
        json!({ "name": "Adult", "kind": "seated", "currency": "EUR", "price_minor": 4000, "zone_prices": { "front": 6000 }, "quantity": 12 }),
        json!({ "name": "Reduced", "kind": "seated", "currency": "EUR", "price_minor": 2500, "zone_prices": { "front": 4000 }, "quantity": 4 }),
        json!({ "name": "Standing", "kind": "ga", "ga_area": "floor", "currency": "EUR", "price_minor": 3000, "quantity": 50 }),
    ] {
        acme.ok(Method::POST, &tiers, tier).await;
    }
    let settings = json!({
        "pricing": { "service_fee": { "per_ticket_minor": 150, "percent_bps": 0 }, "tax": { "rate_bps": 0 } },
        "holds": { "hold_seconds": 600, "extension_seconds": 600, "max_tickets_per_visitor": 8 } });
    acme.publish_open(&id, settings).await;
    id
}

/// A buyer in Chromium (`tests/browser/storefront.mjs <mode>`): what it printed.
fn browser_buyer(edge: &str, event: &str, args: &[&str]) -> Value {
    let out = std::process::Command::new("node")
        .current_dir(e2e::repo_root())
        .args(["tests/browser/storefront.mjs", edge, event])
        .args(args)
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "the browser buyer ({args:?}) failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the buyer prints JSON")
}

/// Waits until the seats at `range` of the edge's availability (seat-map order) are all available.
async fn back_on_sale(edge: &str, event: &str, range: std::ops::Range<usize>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let a = get_json(&format!("{edge}/api/v1/events/{event}/availability"), None).await;
        let seats = a["seats"].as_str().unwrap_or_default().to_owned();
        if seats.get(range.clone()).is_some_and(|s| s.bytes().all(|b| b == b'a')) {
            return;
        }
        assert!(Instant::now() < deadline, "seats {range:?} never came back on sale: {a}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn count(db: &sqlx::PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db).await.unwrap()
}

#[tokio::test]
async fn buyers_pay_on_stripes_page_by_keyboard_and_for_standing_places() {
    let Setup { dir, db_name, db_url, keys, core_port, edge_port, core_url, edge_url } =
        Setup::new("storefront");
    let stripe_port = free_port();
    let stripe = start_fake_stripe(
        stripe_port,
        &dir,
        STRIPE_KEY,
        &format!("{core_url}/api/v1/webhooks/stripe"),
        WEBHOOK_SECRET,
    );
    let env = [
        ("CORE_SIGNING_KEY", keys.core_signing_key()),
        ("EDGE_VERIFYING_KEYS", keys.edge.public_config()),
        ("EDGE_URL", edge_url.clone()),
        ("CORE_PUBLIC_URL", core_url.clone()),
        ("BUYER_URL", edge_url.clone()),
        ("PAYMENT_PROVIDER", "stripe".to_owned()),
        ("STRIPE_API_BASE", stripe.url()),
        ("STRIPE_SECRET_KEY", STRIPE_KEY.to_owned()),
        ("STRIPE_WEBHOOK_SECRETS", WEBHOOK_SECRET.to_owned()),
        ("RECONCILE_INTERVAL_MS", "200".to_owned()),
    ];
    let core = start_core_with(core_port, &db_url, true, &dir, &env);
    core.wait_ready("/healthz", Duration::from_secs(60)).await;
    let edge =
        start_edge_with_keys(edge_port, &core_url, &dir.join("do-state"), &dir, &keys.edge_env_file(&dir));
    edge.wait_ready("/healthz", Duration::from_secs(120)).await;
    let acme = Admin::root(&core_url, &db_url).organization("Acme", "acme").await;
    let event = organize(&acme).await;
    acme.sync_until(&event, Duration::from_secs(90), |s| s["state"] == "synced").await;
    let db = sqlx::PgPool::connect(&db_url).await.unwrap();

    // 1. By keyboard: two front-row seats at the reduced price (4000 + 150 fee each).
    let keyboard = browser_buyer(&edge_url, &event, &["keyboard", "A-3", "A-4"]);
    let summary: Vec<&str> =
        keyboard["summary"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    assert_eq!(summary.len(), 2, "{keyboard}");
    assert!(summary.iter().all(|l| l.contains("Reduced") && l.contains("40.00")), "{summary:?}");
    let tickets = keyboard["tickets"].as_array().unwrap();
    assert_eq!(tickets, &[json!("Seat A-3 — valid"), json!("Seat A-4 — valid")], "{keyboard}");

    // 2. Three standing places (3 × (3000 + 150)).
    let standing = browser_buyer(&edge_url, &event, &["ga"]);
    assert_eq!(standing["tickets"].as_array().unwrap().len(), 3, "{standing}");
    assert!(standing["tickets"].as_array().unwrap().iter().all(|t| t == "Standing — valid"), "{standing}");

    // The core saw both payments through Stripe's webhooks; every event was acknowledged.
    let orders: Vec<(String, i64, String, String)> = sqlx::query_as(
        "SELECT o.state, o.total_minor, p.provider, p.provider_ref FROM orders o JOIN payments p ON p.order_id = o.id ORDER BY o.created_at",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(orders.len(), 2, "{orders:?}");
    assert_eq!((orders[0].0.as_str(), orders[0].1), ("paid", 2 * 4150));
    assert_eq!((orders[1].0.as_str(), orders[1].1), ("paid", 3 * 3150));
    assert!(orders.iter().all(|o| o.2 == "stripe" && o.3.starts_with("cs_")), "{orders:?}");
    let tiers: Vec<String> = sqlx::query_scalar(
        "SELECT t.name FROM tickets k JOIN ticket_tiers t ON t.id = k.tier_id WHERE k.state = 'valid' ORDER BY t.name",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(tiers, ["Reduced", "Reduced", "Standing", "Standing", "Standing"]);
    let sent = get_json(&format!("{}/_fake/events", stripe.url()), None).await;
    let sent = sent.as_array().unwrap();
    assert!(sent.len() >= 2 && sent.iter().all(|e| e["acknowledged"] == true), "{sent:?}");

    // 3. The keyboard buyer cancels: refunded in full at Stripe, the seats back on sale.
    let order = keyboard["order"].as_str().unwrap();
    let resp = e2e::http()
        .post(format!("{edge_url}/api/v1/orders/{order}/cancel"))
        .bearer_auth(keyboard["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = get_json(&format!("{edge_url}/api/v1/orders/{order}"), keyboard["token"].as_str()).await;
        if o["state"] == "refunded" {
            assert_eq!(o["refund_minor"].as_i64(), Some(2 * 4000), "fees are kept: {o}");
            break;
        }
        assert!(Instant::now() < deadline, "never refunded: {o}\n{}", core.log_tail());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let refund: String = sqlx::query_scalar("SELECT provider_ref FROM refunds WHERE state = 'succeeded'")
        .fetch_one(&db)
        .await
        .unwrap();
    // Stripe refunded that amount of the keyboard buyer's session's payment, once.
    let refunds = get_json(&format!("{}/_fake/refunds", stripe.url()), None).await;
    let session =
        get_json(&format!("{}/v1/checkout/sessions/{}", stripe.url(), orders[0].3), Some(STRIPE_KEY)).await;
    assert_eq!(refunds.as_array().map(Vec::len), Some(1), "{refunds}");
    assert_eq!(refunds[0]["id"], refund.as_str());
    assert_eq!(refunds[0]["amount"], 2 * 4000);
    assert_eq!(refunds[0]["payment_intent"], session["payment_intent"], "{session}");
    assert_eq!(count(&db, "SELECT count(*) FROM tickets WHERE state = 'valid'").await, 3);
    // Its seats are back on sale at the edge (A-3 and A-4: the third and fourth of row A).
    back_on_sale(&edge_url, &event, 2..4).await;

    // 4. Stripe refuses to create a payment: the order is cancelled within seconds (its hold lasts
    // ten minutes), as payment_failed.
    e2e::http().post(format!("{}/_fake/refuse-next", stripe.url())).send().await.unwrap();
    let (_, token) = hold(&edge_url, &event, &["B-1"]).await;
    let resp = e2e::http()
        .post(format!("{edge_url}/api/v1/checkout"))
        .header("idempotency-key", "refused-1")
        .json(&json!({ "hold_token": token, "email": "refused@e2e.test" }))
        .send()
        .await
        .unwrap();
    let answer: Value = resp.json().await.unwrap();
    let (id, order_token) =
        (answer["order"]["id"].as_str().unwrap(), answer["order_token"].as_str().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = get_json(&format!("{edge_url}/api/v1/orders/{id}"), Some(order_token)).await;
        if o["state"] == "cancelled" {
            assert_eq!(o["outcome"], "payment_failed", "{o}");
            break;
        }
        assert!(Instant::now() < deadline, "a refused payment left the order {o}\n{}", core.log_tail());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // B-1 (the first of row B) is back on sale.
    back_on_sale(&edge_url, &event, 6..7).await;

    // 5. The box office sells B-5 and B-6 to someone at the counter for cash: held at the real
    // edge without the line, sold there, tickets issued and printed (the PDF read by poppler).
    let desk = acme
        .ok(Method::POST, "/api/v1/users", json!({ "email": "desk@acme.test", "role": "box_office" }))
        .await;
    let key = acme
        .ok(Method::POST, &format!("/api/v1/users/{}/api-keys", desk["id"].as_str().unwrap()), json!({}))
        .await;
    let clerk = Admin::new(&core_url, key["key"].as_str().unwrap());
    let counter = format!("/api/v1/events/{event}/box-office");
    let held = clerk
        .ok(Method::POST, &format!("{counter}/holds"), json!({ "kind": "seats", "seats": ["B-5", "B-6"] }))
        .await;
    assert_eq!(held["quote"]["total_minor"], 2 * (4000 + 150), "{held}");
    let sold = clerk
        .ok(Method::POST, &format!("{counter}/sales"), json!({ "hold": held["hold_id"], "payment": "cash", "total_minor": held["quote"]["total_minor"] }))
        .await;
    assert_eq!(sold["order"]["state"], "paid", "{sold}");
    assert_eq!(sold["tickets"].as_array().map(Vec::len), Some(2), "{sold}");
    // B-5 and B-6 (the last two of row B) are sold at the edge (its availability is cached a second).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let a = get_json(&format!("{edge_url}/api/v1/events/{event}/availability"), None).await;
        if a["seats"].as_str().and_then(|s| s.get(10..12)) == Some("ss") {
            break;
        }
        assert!(Instant::now() < deadline, "B-5 and B-6 not sold at the edge: {a}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pdf = e2e::http()
        .get(format!("{core_url}{}", sold["tickets_pdf"].as_str().unwrap()))
        .bearer_auth(&clerk.key)
        .send()
        .await
        .unwrap();
    assert_eq!(pdf.headers()["content-type"], "application/pdf");
    let file = dir.join("box-office.pdf");
    std::fs::write(&file, pdf.bytes().await.unwrap()).unwrap();
    let text = std::process::Command::new("pdftotext")
        .arg(&file)
        .arg("-")
        .output()
        .expect("pdftotext (poppler-utils)");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("Storefront night") && text.contains("Seat B-5") && text.contains("Seat B-6"),
        "{text}"
    );

    // 6. A series: the event is its template and first date; a rule adds the next two days at the
    // same local hour (Berlin, 22:00), published in one call; a buyer in Chromium picks the last
    // date from the series' page and pays for a standing place of it, that date's own.
    let series = acme.ok(Method::POST, "/api/v1/series", json!({ "from_event": event })).await;
    let sid = series["id"].as_str().unwrap().to_owned();
    let added = acme
        .ok(
            Method::POST,
            &format!("/api/v1/series/{sid}/dates"),
            json!({ "rule": "FREQ=DAILY;COUNT=3", "first": "2027-06-01T22:00:00" }),
        )
        .await;
    assert_eq!(
        (added["created"].as_array().map(Vec::len), added["existing"][0]["id"].as_str()),
        (Some(2), Some(event.as_str())),
        "{added}"
    );
    let last = added["created"][1]["id"].as_str().unwrap().to_owned();
    assert_eq!(added["created"][1]["starts_at"], "2027-06-03T20:00:00Z");
    let moved =
        acme.ok(Method::POST, &format!("/api/v1/series/{sid}/state"), json!({ "state": "published" })).await;
    assert_eq!(moved["changed"].as_array().map(Vec::len), Some(2), "{moved}");
    acme.sync_until(&last, Duration::from_secs(90), |s| s["state"] == "synced").await;
    let picked = browser_buyer(&edge_url, &last, &["series", &sid]);
    assert_eq!(picked["summary"].as_array().map(Vec::len), Some(1), "{picked}");
    let paid = format!("SELECT count(*) FROM orders WHERE event_id = '{last}' AND state = 'paid'");
    assert_eq!(count(&db, &paid).await, 1, "the standing place is the picked date's: {picked}");
    assert_eq!(
        count(
            &db,
            &format!("SELECT count(*) FROM orders WHERE event_id = '{event}' AND email = 'series@e2e.test'")
        )
        .await,
        0
    );

    db.close().await;
    drop(edge);
    core.stop();
    drop(stripe);
    drop_database(&db_name);
}
