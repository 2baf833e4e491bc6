//! Reports against real PostgreSQL with generated sales: 300 orders over two tiers (unpaid, paid,
//! declined, abandoned, refunded by the buyer or in part by the organizer, paid after the hold was
//! lost; some with a promo code; tax added or included), their outbox messages delivered to the
//! projector (some twice). Every figure of the report equals a direct count over orders and their
//! lines; the sales over time fall in the event's local hours and days; another tenant gets 404.
//! Reports read through a read-only pool (a replica's stand-in), and the organizer's dashboard shows
//! the same figures behind its sign-in.

use crate::common;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, DurationRound as _, TimeZone, Utc};
use common::{two_tenants, Api};
use regional_core::bus::relay::{Relay, Sink};
use regional_core::reporting::projector::Projector;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

/// A small deterministic generator (the same sales on every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

async fn deliver_all(db: &PgPool) {
    let projector: Arc<dyn regional_core::bus::Consumer> = Arc::new(Projector);
    let mut relay = Relay::new(db.clone(), Sink::InProcess(vec![projector]));
    while relay.relay_batch().await.unwrap() > 0 {}
}

async fn message(db: &PgPool, kind: &str, order: Uuid, event: Uuid, at: DateTime<Utc>, extra: Value) {
    let mut p = json!({ "type": kind, "schema_version": 1, "order_id": order, "event_id": event,
                        "organization_id": Uuid::nil(), "email": "b@example.test", "currency": "EUR",
                        "total_minor": 0, "at": at });
    p.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    regional_core::bus::schema::check(&p).unwrap();
    let mut tx = db.begin().await.unwrap();
    regional_core::bus::outbox(&mut tx, "orders", event, p).await.unwrap();
    tx.commit().await.unwrap();
}

/// A one-seat venue in `time_zone` and an event `title` there: the event id.
async fn one_seat_event(api: &Api, key: &str, time_zone: &str, title: &str) -> Uuid {
    let (s, venue) = api
        .call(key, Method::POST, "/api/v1/venues", Some(json!({
            "name": "Hall", "time_zone": time_zone, "zones": [{ "id": "std", "name": "Standard" }],
            "sections": [{ "id": "A", "name": "A", "rows": [{ "label": "1", "seats": [{ "id": "A-1", "label": "1", "x": 0, "y": 0, "zone": "std" }] }] }] })))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{venue}");
    let (s, event) = api
        .call(
            key,
            Method::POST,
            "/api/v1/events",
            Some(json!({ "venue_id": venue["id"], "title": title,
            "starts_at": "2027-03-01T20:00:00Z", "ends_at": "2027-03-01T23:00:00Z" })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{event}");
    event["id"].as_str().unwrap().parse().unwrap()
}

#[sqlx::test]
async fn reports_equal_direct_counts_and_stay_with_their_tenant(db: PgPool) {
    let mut state = regional_core::AppState::new(db.clone(), std::time::Duration::from_millis(1000));
    state.read_db = replica(&db);
    let api = Api::start_with(state).await;
    let (_, [(org, key), (_, other_key)]) = two_tenants(&api).await;
    let org: Uuid = org.parse().unwrap();
    let event_id = one_seat_event(&api, &key, "Europe/Paris", "Gig").await;
    let mut tiers = Vec::new();
    for (name, price) in [("Floor", 5000), ("Balcony", 3000)] {
        let (s, tier) = api
            .call(
                &key,
                Method::POST,
                &format!("/api/v1/events/{event_id}/tiers"),
                Some(json!({
                "name": name, "kind": "seated", "currency": "EUR", "price_minor": price, "quantity": 1000 })),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{tier}");
        tiers.push((tier["id"].as_str().unwrap().parse::<Uuid>().unwrap(), price));
    }
    let (s, promo) = api
        .call(
            &key,
            Method::POST,
            &format!("/api/v1/events/{event_id}/promo-codes"),
            Some(json!({ "code": "SAVE10", "kind": "percent", "percent_off": 10 })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{promo}");
    let promo_id: Uuid = promo["id"].as_str().unwrap().parse().unwrap();

    // 300 orders over about five hours, from 2027-01-01 21:00 UTC (22:00 in Paris): past local midnight.
    let mut rng = Lcg(7);
    let start = Utc.with_ymd_and_hms(2027, 1, 1, 21, 0, 0).unwrap();
    let mut sold_per_hour: BTreeMap<DateTime<Utc>, i64> = BTreeMap::new();
    for n in 0..300 {
        let order = Uuid::new_v4();
        let created = start + Duration::seconds((n * 60) as i64 + rng.next(50) as i64);
        let with_promo = rng.next(4) == 0;
        let tax_included = rng.next(2) == 0;
        let lines: Vec<(Uuid, i64)> = (0..1 + rng.next(4)).map(|_| tiers[rng.next(2) as usize]).collect();
        let (mut subtotal, mut discount, mut fee, mut tax) = (0, 0, 0, 0);
        let mut line_rows = Vec::new();
        for &(tier, price) in &lines {
            let d = if with_promo { price / 10 } else { 0 };
            let f = 150 + (price - d) * 5 / 100;
            let t = (price - d + f) * 19 / 100;
            subtotal += price;
            discount += d;
            fee += f;
            tax += t;
            line_rows.push((tier, price, d, f, t));
        }
        let total = subtotal - discount + fee + if tax_included { 0 } else { tax };
        // What became of it: 0 unpaid, 1 paid, 2 declined, 3 abandoned, 4 buyer refund (fees kept),
        // 5 organizer half refund, 6 hold lost, 7 organizer full refund (fees back).
        let fate = rng.next(8);
        let (state, outcome, refund) = match fate {
            0 => ("awaiting_payment", None, 0),
            1 => ("paid", None, 0),
            2 => ("cancelled", Some("payment_failed"), 0),
            3 => ("cancelled", Some("abandoned"), 0),
            4 => ("refunded", Some("buyer_cancelled"), total - fee),
            5 => ("refunded", Some("organizer_refunded"), total / 2),
            6 => ("refunded", Some("hold_lost"), total),
            _ => ("refunded", Some("organizer_refunded"), total),
        };
        sqlx::query(
            "INSERT INTO orders (id, organization_id, event_id, visitor_id, hold_id, idempotency_key, request_hash, email, state,
                 currency, subtotal_minor, discount_minor, fee_minor, tax_minor, tax_included, total_minor, promo_code_id,
                 hold_expires_at, outcome, refund_minor, created_at)
             VALUES ($1, $2, $3, 'v0123456789abcdef', $4, $4, 'x', 'b@example.test', $5, 'EUR', $6, $7, $8, $9, $10, $11, $12,
                 $13, $14, $15, $13)",
        )
        .bind(order)
        .bind(org)
        .bind(event_id)
        .bind(format!("h-{order}"))
        .bind(state)
        .bind(subtotal)
        .bind(discount)
        .bind(fee)
        .bind(tax)
        .bind(tax_included)
        .bind(total)
        .bind(with_promo.then_some(promo_id))
        .bind(created)
        .bind(outcome)
        .bind(refund)
        .execute(&db)
        .await
        .unwrap();
        for (i, (tier, price, d, f, t)) in line_rows.iter().enumerate() {
            sqlx::query(
                "INSERT INTO order_lines (order_id, line, tier_id, seat_id, price_minor, discount_minor, fee_minor, tax_minor)
                 VALUES ($1, $2, $3, NULL, $4, $5, $6, $7)",
            )
            .bind(order)
            .bind(i as i32)
            .bind(tier)
            .bind(price)
            .bind(d)
            .bind(f)
            .bind(t)
            .execute(&db)
            .await
            .unwrap();
        }
        // The messages the saga writes, in its order, at its times.
        let total_v = json!({ "total_minor": total });
        message(&db, "order.created", order, event_id, created, total_v.clone()).await;
        let paid_at = created + Duration::seconds(20);
        if matches!(fate, 1 | 4 | 5 | 7) {
            let paid = json!({ "total_minor": total, "tickets": [] });
            message(&db, "order.paid", order, event_id, paid_at, paid).await;
            let hour = paid_at.duration_trunc(Duration::hours(1)).unwrap();
            *sold_per_hour.entry(hour).or_default() += lines.len() as i64;
        }
        let later = created + Duration::minutes(5);
        let refunded = json!({ "refund_minor": refund, "outcome": outcome });
        match fate {
            2 | 3 => {
                message(&db, "order.cancelled", order, event_id, later, json!({ "outcome": outcome })).await
            }
            4 | 5 | 7 => message(&db, "order.refunded", order, event_id, later, refunded.clone()).await,
            6 => {
                message(&db, "order.hold_lost", order, event_id, paid_at, json!({ "refund_minor": refund }))
                    .await;
                message(&db, "order.refunded", order, event_id, later, refunded.clone()).await;
            }
            _ => {}
        }
    }
    deliver_all(&db).await;
    // A relay that crashed before marking: a third of the messages come again, and count once.
    sqlx::query("UPDATE outbox SET sent_at = NULL WHERE id % 3 = 0").execute(&db).await.unwrap();
    deliver_all(&db).await;

    let (s, report) = api.get(&key, &format!("/api/v1/events/{event_id}/report")).await;
    assert_eq!(s, StatusCode::OK, "{report}");

    // The direct counts, from orders and their lines.
    let sold = "o.state IN ('paid', 'refunded') AND o.outcome IS DISTINCT FROM 'hold_lost'";
    for (i, (tier, _)) in tiers.iter().enumerate() {
        let direct: (i64, i64, i64, i64, i64, i64) = sqlx::query_as(&format!(
            "SELECT count(*), COALESCE(sum(l.price_minor - l.discount_minor + l.fee_minor + CASE WHEN o.tax_included THEN 0 ELSE l.tax_minor END), 0)::int8,
                    COALESCE(sum(l.discount_minor), 0)::int8, COALESCE(sum(l.fee_minor), 0)::int8, COALESCE(sum(l.tax_minor), 0)::int8,
                    count(*) FILTER (WHERE o.state = 'refunded')
             FROM order_lines l JOIN orders o ON o.id = l.order_id WHERE l.tier_id = $1 AND {sold}"
        ))
        .bind(tier)
        .fetch_one(&db)
        .await
        .unwrap();
        let t = &report["tiers"][i];
        assert_eq!(t["tier_id"], tier.to_string());
        let got = |f: &str| t[f].as_i64().unwrap();
        assert_eq!(
            (
                got("tickets_sold"),
                got("gross_minor"),
                got("discount_minor"),
                got("fee_minor"),
                got("tax_minor"),
                got("tickets_refunded")
            ),
            direct,
            "tier {i}"
        );
        assert_eq!(got("live_tickets"), direct.0 - direct.5);
    }
    let direct: (i64, i64, i64, i64) = sqlx::query_as(&format!(
        "SELECT COALESCE(sum(total_minor), 0)::int8, COALESCE(sum(fee_minor), 0)::int8, COALESCE(sum(refund_minor), 0)::int8,
                COALESCE(sum(GREATEST(0, LEAST(fee_minor, refund_minor - (total_minor - fee_minor)))), 0)::int8
         FROM orders o WHERE {sold}"
    ))
    .fetch_one(&db)
    .await
    .unwrap();
    let totals = &report["totals"];
    let got = |f: &str| totals[f].as_i64().unwrap();
    assert_eq!(
        (got("gross_minor"), got("fee_minor"), got("refunded_minor"), got("fee_refunded_minor")),
        direct
    );
    assert_eq!(got("net_minor"), direct.0 - direct.1 - direct.2 + direct.3);
    assert!(direct.2 > 0 && direct.3 > 0, "the sales include refunds that gave fees back");

    let orders: (i64, i64, i64, i64, i64) = sqlx::query_as(&format!(
        "SELECT count(*), count(*) FILTER (WHERE {sold}),
                count(*) FILTER (WHERE o.state = 'cancelled' OR o.outcome = 'hold_lost'),
                count(*) FILTER (WHERE o.outcome IN ('abandoned', 'hold_expired')),
                count(*) FILTER (WHERE o.state = 'refunded' AND o.outcome <> 'hold_lost')
         FROM orders o"
    ))
    .fetch_one(&db)
    .await
    .unwrap();
    let o = &report["orders"];
    let got = |f: &str| o[f].as_i64().unwrap();
    assert_eq!((got("created"), got("paid"), got("cancelled"), got("abandoned"), got("refunded")), orders);
    assert!((report["conversion"].as_f64().unwrap() - orders.1 as f64 / orders.0 as f64).abs() < 1e-9);
    let promo: (i64, i64) = sqlx::query_as(&format!(
        "SELECT count(*), COALESCE(sum(discount_minor), 0)::int8 FROM orders o WHERE promo_code_id IS NOT NULL AND {sold}"
    ))
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(
        report["promo_codes"],
        json!([{ "code": "SAVE10", "orders": promo.0, "discount_minor": promo.1 }])
    );

    // Over time: tickets sold per hour; days are Paris days (orders from 22:00 local run past midnight).
    let (s, hours) = api.get(&key, &format!("/api/v1/events/{event_id}/report/sales?bucket=hour")).await;
    assert_eq!(s, StatusCode::OK, "{hours}");
    let per_hour: BTreeMap<DateTime<Utc>, i64> = hours["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["tickets_sold"].as_i64().unwrap() > 0)
        .map(|b| (b["at"].as_str().unwrap().parse().unwrap(), b["tickets_sold"].as_i64().unwrap()))
        .collect();
    assert_eq!(per_hour, sold_per_hour);
    let (_, days) = api.get(&key, &format!("/api/v1/events/{event_id}/report/sales?bucket=day")).await;
    let starts: Vec<&str> =
        days["buckets"].as_array().unwrap().iter().map(|b| b["at"].as_str().unwrap()).collect();
    assert_eq!(starts, ["2026-12-31T23:00:00Z", "2027-01-01T23:00:00Z"], "midnight in Paris");
    let day_total: i64 =
        days["buckets"].as_array().unwrap().iter().map(|b| b["orders"]["created"].as_i64().unwrap()).sum();
    assert_eq!(day_total, 300);
    let (s, bad) = api.get(&key, &format!("/api/v1/events/{event_id}/report/sales?bucket=week")).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");

    // The settlement: ticket money after refunds and the platform's fees, less 5 % commission.
    let (s, settlement) = api.get(&key, &format!("/api/v1/events/{event_id}/settlement")).await;
    assert_eq!(s, StatusCode::OK, "{settlement}");
    let line = &settlement["lines"][0];
    let revenue = direct.0 - direct.1 - direct.2 + direct.3;
    let commission = (revenue * 500 + 5_000) / 10_000;
    assert_eq!(line["gross_minor"], direct.0);
    assert_eq!(line["platform_fees_minor"], direct.1 - direct.3);
    assert_eq!(line["ticket_revenue_minor"], revenue);
    assert_eq!(
        (line["commission_minor"].as_i64(), line["payout_minor"].as_i64()),
        (Some(commission), Some(revenue - commission))
    );
    let csv = api
        .http
        .get(format!("{}/api/v1/events/{event_id}/exports/settlement.csv", api.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let mut reader = csv::Reader::from_reader(std::io::Cursor::new(csv.bytes().await.unwrap()));
    let row: std::collections::HashMap<String, String> = reader.deserialize().next().unwrap().unwrap();
    let major = |minor: i64| format!("{}.{:02}", minor / 100, minor % 100);
    assert_eq!((row["currency"].as_str(), row["payout_due"].clone()), ("EUR", major(revenue - commission)));

    // Another tenant's key does not see the event.
    for path in [
        format!("/api/v1/events/{event_id}/report"),
        format!("/api/v1/events/{event_id}/report/sales"),
        format!("/api/v1/events/{event_id}/settlement"),
        format!("/api/v1/events/{event_id}/exports/orders.csv"),
    ] {
        let (s, _) = api.get(&other_key, &path).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }

    // Every report above was read through the replica's connections, which cannot write.
    let on_replica: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ticketing-replica' AND datname = current_database()",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert!(on_replica > 0, "the reports used the replica pool");
    // No edge in this test: its figures are marked unavailable, the rest of the report stands.
    assert_eq!(report["edge"]["available"], false);
    assert!(report["tiers"][0]["held"].is_null() && report["waiting_room"].is_null());

    dashboard_shows_the_report(&api, &key, &other_key, event_id, &report).await;
}

/// A stand-in for a read replica: the same database through connections that cannot write (as a
/// hot standby's cannot), named so that the test sees they were used.
fn replica(db: &PgPool) -> PgPool {
    let options = (*db.connect_options())
        .clone()
        .application_name("ticketing-replica")
        .options([("default_transaction_read_only", "on")]);
    sqlx::postgres::PgPoolOptions::new().max_connections(4).connect_lazy_with(options)
}

/// The dashboard: sign-in with the key (a cookie), the event list, the event's page with the
/// report's figures, the live panel, tenants, a bad key, sign-out.
async fn dashboard_shows_the_report(api: &Api, key: &str, other_key: &str, event: Uuid, report: &Value) {
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let base = &api.base;
    let page = http.get(format!("{base}/dashboard")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("name=\"key\""), "the sign-in form");
    let bad = http
        .post(format!("{base}/dashboard/sign-in"))
        .form(&[("key", "tk_0123456789abcdef_nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    assert!(bad.headers().get("set-cookie").is_none());
    let signed = http.post(format!("{base}/dashboard/sign-in")).form(&[("key", key)]).send().await.unwrap();
    assert_eq!(signed.status(), StatusCode::SEE_OTHER);
    let cookie = signed.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/dashboard"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let get = |path: String, cookie: String| {
        let http = http.clone();
        async move { http.get(format!("{base}{path}")).header("cookie", cookie).send().await.unwrap() }
    };
    let list = get("/dashboard".into(), cookie.clone()).await.text().await.unwrap();
    assert!(list.contains(&format!("/dashboard/events/{event}")) && list.contains(">Gig<"), "{list}");
    let resp = get(format!("/dashboard/events/{event}"), cookie.clone()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-security-policy"].to_str().unwrap().contains("script-src 'self'"));
    let html = resp.text().await.unwrap();
    let live: i64 =
        report["tiers"].as_array().unwrap().iter().map(|t| t["live_tickets"].as_i64().unwrap()).sum();
    let gross = report["totals"]["gross_minor"].as_i64().unwrap();
    assert!(html.contains(&format!("data-figure=\"sold\">{live} / 2000<")), "sold vs capacity");
    assert!(
        html.contains(&format!("data-figure=\"gross\">{}.{:02} EUR<", gross / 100, gross % 100)),
        "revenue"
    );
    let paid = report["orders"]["paid"].as_i64().unwrap();
    assert!(html.contains(&format!("data-figure=\"orders-paid\">{paid}<")));
    assert!(html.contains("data-figure=\"edge-unavailable\""), "no edge here: said so");
    assert!(html.contains("/dashboard/assets/dashboard.js"));
    let panel = get(format!("/dashboard/events/{event}/live"), cookie.clone()).await.text().await.unwrap();
    assert!(panel.contains(&format!("data-figure=\"sold\">{live} / 2000<")) && !panel.contains("<html"));
    // Without the cookie the panel is refused; the page sends the browser to sign in.
    let (s, _) = api.get("", &format!("/dashboard/events/{event}/live")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(
        get(format!("/dashboard/events/{event}"), String::new()).await.status(),
        StatusCode::SEE_OTHER
    );
    // Another tenant's organizer does not see the event.
    let other =
        http.post(format!("{base}/dashboard/sign-in")).form(&[("key", other_key)]).send().await.unwrap();
    let other_cookie = other.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    assert_eq!(
        get(format!("/dashboard/events/{event}"), other_cookie.clone()).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(format!("/dashboard/events/{event}/live"), other_cookie).await.status(),
        StatusCode::NOT_FOUND
    );
    let out = http.post(format!("{base}/dashboard/sign-out")).header("cookie", cookie).send().await.unwrap();
    assert!(out.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
}

/// The resident memory of this process (the core runs in it), in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4096
}

#[sqlx::test]
async fn a_hundred_thousand_orders_export_streams_with_bounded_memory_and_parses_back(db: PgPool) {
    use std::io::Write as _;
    let api = Api::start(db.clone()).await;
    let (_, [(org, key), _]) = two_tenants(&api).await;
    sqlx::query("UPDATE organizations SET time_zone = 'America/New_York' WHERE id = $1::uuid")
        .bind(&org)
        .execute(&db)
        .await
        .unwrap();
    let event_id = one_seat_event(&api, &key, "UTC", "Big").await.to_string();
    // Addresses that need quoting, and some that a spreadsheet would run as a formula.
    sqlx::query(
        "INSERT INTO orders (id, organization_id, event_id, visitor_id, hold_id, idempotency_key, request_hash, email, state,
             currency, subtotal_minor, discount_minor, fee_minor, tax_minor, total_minor, hold_expires_at, created_at)
         SELECT gen_random_uuid(), $1::uuid, $2::uuid, 'v0123456789abcdef', 'h-' || g, 'k-' || g, 'x',
                CASE WHEN g % 1000 = 0 THEN '\"q, ' || g || '\"@x.test' WHEN g % 1000 = 1 THEN '=cmd' || g || '@x.test'
                     ELSE 'b' || g || '@x.test' END,
                'paid', 'EUR', 5000 + g % 100, 0, 150, 0, 5150 + g % 100, now(),
                timestamptz '2027-01-01 00:00:00+00' + g * interval '1 second'
         FROM generate_series(1, 100000) g",
    )
    .bind(&org)
    .bind(&event_id)
    .execute(&db)
    .await
    .unwrap();

    let before = rss();
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(before));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss(), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
    };
    let url = format!("{}/api/v1/events/{event_id}/exports/orders.csv", api.base);
    let resp = api.http.get(url).bearer_auth(&key).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().get("content-length").is_none(), "streamed, not sized in advance");
    let path = std::env::temp_dir().join(format!("orders-{}.csv", Uuid::new_v4()));
    let mut file = std::fs::File::create(&path).unwrap();
    let mut resp = resp;
    let mut bytes = 0;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        bytes += chunk.len();
        file.write_all(&chunk).unwrap();
    }
    sampler.abort();
    let grew = peak.load(std::sync::atomic::Ordering::Relaxed).saturating_sub(before);
    eprintln!("export: {bytes} bytes; resident memory grew by {} KiB", grew / 1024);
    assert!(bytes > 10_000_000);
    assert!(grew < (bytes as u64) / 2, "memory grew by {grew} bytes for a {bytes}-byte export");

    // Parsed back by an independent parser: the same rows, in order, times in New York.
    let rows: Vec<(Uuid, String, i64, DateTime<Utc>)> =
        sqlx::query_as("SELECT id, email, total_minor, created_at FROM orders ORDER BY created_at, id")
            .fetch_all(&db)
            .await
            .unwrap();
    let mut reader = csv::Reader::from_path(&path).unwrap();
    assert_eq!(
        reader.headers().unwrap().iter().take(3).collect::<Vec<_>>(),
        ["order_id", "created_at", "state"]
    );
    let mut n = 0;
    for (record, (id, email, total, created)) in reader.records().zip(&rows) {
        let r = record.unwrap();
        assert_eq!(&r[0], id.to_string());
        let at = DateTime::parse_from_rfc3339(&r[1]).unwrap();
        assert_eq!(at.with_timezone(&Utc), *created);
        assert_eq!(at.offset().local_minus_utc(), -5 * 3600, "the organization's zone");
        let expected = if email.starts_with('=') { format!("'{email}") } else { email.clone() };
        assert_eq!(&r[4], expected);
        assert_eq!(&r[11], format!("{}.{:02}", total / 100, total % 100));
        n += 1;
    }
    assert_eq!(n, 100_000);
    let _ = std::fs::remove_file(&path);
}
