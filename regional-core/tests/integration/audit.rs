//! The audit log (docs/audit.md): every change made through the admin API, and every refund,
//! cancellation, re-issue and transfer, is one row with who, when, what and from where, written
//! with the change; read back filtered, paged and exported by the organization's admins only;
//! append-only in the database; kept for the retention period.

use crate::common;

use std::collections::BTreeSet;

use common::{paid_tickets, two_tenants, with_checkout, Api};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use shared_types::token::TokenSigner;
use sqlx::PgPool;

fn signer() -> TokenSigner {
    TokenSigner::from_seed("core-test", [4; 32]).unwrap()
}

/// The audit rows after `after` (by id), oldest first, as the API shows them.
async fn rows_after(db: &PgPool, after: i64) -> Vec<Value> {
    sqlx::query_scalar(
        "SELECT jsonb_build_object('id', id, 'organization_id', organization_id, 'actor', actor,
                 'actor_role', actor_role, 'api_key_id', api_key_id, 'action', action, 'subject', subject,
                 'details', details, 'ip', host(ip), 'user_agent', user_agent, 'request_id', request_id)
         FROM audit_log WHERE id > $1 ORDER BY id",
    )
    .bind(after)
    .fetch_all(db)
    .await
    .unwrap()
}

async fn last_id(db: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM audit_log").fetch_one(db).await.unwrap()
}

/// A user's id, from their key's public part.
async fn user_of(db: &PgPool, key: &str) -> String {
    let id = &key[3..19];
    let user: uuid::Uuid = sqlx::query_scalar("SELECT user_id FROM api_keys WHERE id = $1")
        .bind(id)
        .fetch_one(db)
        .await
        .unwrap();
    format!("user:{user}")
}

/// One change through the API and the one audit row it must leave.
struct Step<'a> {
    method: Method,
    /// The route as the OpenAPI document names it.
    route: &'static str,
    path: String,
    body: Option<Value>,
    /// `text/csv` instead of JSON.
    csv: Option<&'a str>,
    action: &'static str,
    /// The subject, or its `{kind}:` when the id is made by the change.
    subject: String,
}

fn step(
    method: Method,
    route: &'static str,
    path: impl Into<String>,
    body: Option<Value>,
    action: &'static str,
    subject: impl Into<String>,
) -> Step<'static> {
    Step { method, route, path: path.into(), body, csv: None, action, subject: subject.into() }
}

/// Runs `step` with `key` and checks its row: the action and subject, the organization, the caller
/// (user, role, key id), where it came from (the loopback address, the user agent, the answer's
/// request id). Answers the body.
async fn change(
    api: &Api,
    key: &str,
    org: &str,
    role: &str,
    step: Step<'_>,
    done: &mut BTreeSet<String>,
) -> Value {
    let before = last_id(&api.db).await;
    let mut req = api
        .http
        .request(step.method.clone(), format!("{}{}", api.base, step.path))
        .bearer_auth(key)
        .header("user-agent", "audit-test/1.0");
    if let Some(csv) = step.csv {
        req = req.header("content-type", "text/csv").body(csv.to_owned());
    } else if let Some(body) = &step.body {
        req = req.json(body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{} {}: {status} {body}", step.method, step.path);
    let rows = rows_after(&api.db, before).await;
    assert_eq!(rows.len(), 1, "{} {}: one audit row, got {rows:?}", step.method, step.route);
    let row = &rows[0];
    assert_eq!(row["action"], step.action, "{row}");
    if step.subject.ends_with(':') {
        assert!(row["subject"].as_str().unwrap().starts_with(&step.subject), "{row}");
    } else {
        assert_eq!(row["subject"], step.subject, "{row}");
    }
    assert_eq!(row["organization_id"], org, "{row}");
    assert_eq!(row["actor"], user_of(&api.db, key).await, "{row}");
    assert_eq!(row["actor_role"], role, "{row}");
    assert_eq!(row["api_key_id"], &key[3..19], "{row}");
    assert_eq!(row["ip"], "127.0.0.1", "{row}");
    assert_eq!(row["user_agent"], "audit-test/1.0", "{row}");
    assert_eq!(row["request_id"], request_id.as_str(), "{row}");
    done.insert(format!("{} {}", step.method.as_str().to_lowercase(), step.route));
    body
}

/// A stand-in for the edge's internal API: the waiting list answers its counts.
async fn fake_edge() -> String {
    let app = axum::Router::new()
        .fallback(|| async { axum::Json(json!({ "waiting": 0, "anyone_joined": false })) });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[sqlx::test]
async fn every_change_an_api_key_makes_is_one_audit_row_with_who_and_from_where(db: PgPool) {
    let mut state = with_checkout(&db, &signer());
    let edge = regional_core::edge_client::EdgeClient::new(&fake_edge().await, signer());
    state.edge = regional_core::reporting::edge::EdgeStats::new(edge);
    let hooks = common::webhook_settings(false, "", std::time::Duration::from_secs(3600));
    state.webhooks = Some(regional_core::webhooks::Webhooks::new(hooks));
    let api = Api::start_with(state).await;
    let (root, [(org, key), _]) = two_tenants(&api).await;
    let mut done = BTreeSet::new();
    let admin = "organizer_admin";

    // The operator makes an organization: the row is the new organization's.
    let before = last_id(&db).await;
    let (s, third) = api
        .call(
            &root,
            Method::POST,
            "/api/v1/organizations",
            Some(json!({ "name": "Initech", "slug": "initech" })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{third}");
    let rows = rows_after(&db, before).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (&rows[0]["action"], &rows[0]["organization_id"]),
        (&json!("organization.create"), &third["id"])
    );
    assert_eq!((&rows[0]["actor_role"], &rows[0]["ip"]), (&json!("platform_admin"), &json!("127.0.0.1")));
    done.insert("post /api/v1/organizations".to_owned());

    // Accounts.
    let user = change(
        &api,
        &key,
        &org,
        admin,
        step(
            Method::POST,
            "/api/v1/users",
            "/api/v1/users",
            Some(json!({ "email": "staff@acme.test", "role": "organizer_staff" })),
            "user.create",
            "user:",
        ),
        &mut done,
    )
    .await;
    let path = format!("/api/v1/users/{}/api-keys", user["id"].as_str().unwrap());
    let made = change(
        &api,
        &key,
        &org,
        admin,
        step(Method::POST, "/api/v1/users/{id}/api-keys", path, None, "api_key.create", "api_key:"),
        &mut done,
    )
    .await;
    assert!(
        !rows_after(&db, 0).await.iter().any(|r| r.to_string().contains(made["key"].as_str().unwrap())),
        "no secret in the log"
    );
    let kid = made["id"].as_str().unwrap();
    change(
        &api,
        &key,
        &org,
        admin,
        step(
            Method::DELETE,
            "/api/v1/api-keys/{id}",
            format!("/api/v1/api-keys/{kid}"),
            None,
            "api_key.revoke",
            format!("api_key:{kid}"),
        ),
        &mut done,
    )
    .await;

    // The catalog: a venue and its seats, an event, its tiers, codes and settings.
    let venue = change(&api, &key, &org, admin, step(Method::POST, "/api/v1/venues", "/api/v1/venues", Some(json!({
        "name": "Hall", "time_zone": "UTC", "zones": [{ "id": "std", "name": "Standard" }],
        "sections": [{ "id": "A", "name": "A", "rows": [{ "label": "1", "seats": [
            { "id": "A-1", "label": "1", "x": 0, "y": 0, "zone": "std" }, { "id": "A-2", "label": "2", "x": 1, "y": 0, "zone": "std" }] }] }] })),
        "venue.create", "venue:"), &mut done).await;
    let v = venue["id"].as_str().unwrap();
    let csv = "section,row,seat,label,x,y,zone,accessibility,aisle_after\nA,1,A-1,1,0,0,std,,\nA,1,A-2,2,1,0,std,,\nA,1,A-3,3,2,0,std,,\n";
    let seats = Step {
        csv: Some(csv),
        ..step(
            Method::PUT,
            "/api/v1/venues/{id}/seats",
            format!("/api/v1/venues/{v}/seats"),
            None,
            "venue.replace_seats",
            format!("venue:{v}"),
        )
    };
    change(&api, &key, &org, admin, seats, &mut done).await;
    let event = change(
        &api,
        &key,
        &org,
        admin,
        step(
            Method::POST,
            "/api/v1/events",
            "/api/v1/events",
            Some(json!({ "venue_id": v, "title": "Gig",
        "starts_at": "2027-01-01T20:00:00Z", "ends_at": "2027-01-01T23:00:00Z" })),
            "event.create",
            "event:",
        ),
        &mut done,
    )
    .await;
    let e = event["id"].as_str().unwrap().to_owned();
    let subject = format!("event:{e}");
    change(
        &api,
        &key,
        &org,
        admin,
        step(
            Method::PATCH,
            "/api/v1/events/{id}",
            format!("/api/v1/events/{e}"),
            Some(json!({ "title": "Gig II" })),
            "event.update",
            &subject,
        ),
        &mut done,
    )
    .await;
    let updated = rows_after(&db, last_id(&db).await - 1).await;
    assert_eq!(
        updated[0]["details"],
        json!({ "title": { "from": "Gig", "to": "Gig II" } }),
        "the change, from and to"
    );
    let tier = change(&api, &key, &org, admin, step(Method::POST, "/api/v1/events/{id}/tiers", format!("/api/v1/events/{e}/tiers"),
        Some(json!({ "name": "Seats", "kind": "seated", "currency": "EUR", "price_minor": 4000, "quantity": 3 })), "tier.create", "tier:"), &mut done).await;
    let t = tier["id"].as_str().unwrap();
    change(
        &api,
        &key,
        &org,
        admin,
        step(
            Method::PATCH,
            "/api/v1/events/{id}/tiers/{tier}",
            format!("/api/v1/events/{e}/tiers/{t}"),
            Some(json!({ "price_minor": 4500 })),
            "tier.update",
            format!("tier:{t}"),
        ),
        &mut done,
    )
    .await;
    let priced = rows_after(&db, last_id(&db).await - 1).await;
    assert_eq!(priced[0]["details"], json!({ "price_minor": { "from": 4000, "to": 4500 } }));
    let code = change(
        &api,
        &key,
        &org,
        admin,
        step(
            Method::POST,
            "/api/v1/events/{id}/promo-codes",
            format!("/api/v1/events/{e}/promo-codes"),
            Some(json!({ "code": "EARLY", "kind": "percent", "percent_off": 10, "max_uses": 10 })),
            "promo_code.create",
            "promo_code:",
        ),
        &mut done,
    )
    .await;
    let c = code["id"].as_str().unwrap();
    change(
        &api,
        &key,
        &org,
        admin,
        step(
            Method::DELETE,
            "/api/v1/events/{id}/promo-codes/{code}",
            format!("/api/v1/events/{e}/promo-codes/{c}"),
            None,
            "promo_code.deactivate",
            format!("promo_code:{c}"),
        ),
        &mut done,
    )
    .await;
    change(
        &api,
        &key,
        &org,
        admin,
        step(
            Method::PUT,
            "/api/v1/events/{id}/refund-policy",
            format!("/api/v1/events/{e}/refund-policy"),
            Some(json!([{ "hours_before": 24, "percent": 100 }])),
            "event.set_refund_policy",
            &subject,
        ),
        &mut done,
    )
    .await;
    change(&api, &key, &org, admin, step(Method::PUT, "/api/v1/events/{id}/sale-settings", format!("/api/v1/events/{e}/sale-settings"),
        Some(json!({ "pricing": { "service_fee": { "per_ticket_minor": 150, "percent_bps": 0 }, "tax": { "rate_bps": 0 } } })),
        "event.set_sale_settings", &subject), &mut done).await;
    change(
        &api,
        &key,
        &org,
        admin,
        step(
            Method::PUT,
            "/api/v1/events/{id}/waiting-room",
            format!("/api/v1/events/{e}/waiting-room"),
            Some(json!({ "admit_per_minute": 120 })),
            "event.set_waiting_room",
            &subject,
        ),
        &mut done,
    )
    .await;
    change(
        &api,
        &key,
        &org,
        admin,
        step(
            Method::PUT,
            "/api/v1/events/{id}/seats-off-sale",
            format!("/api/v1/events/{e}/seats-off-sale"),
            Some(json!(["A-3"])),
            "event.set_seats_off_sale",
            &subject,
        ),
        &mut done,
    )
    .await;
    let off = rows_after(&db, last_id(&db).await - 1).await;
    assert_eq!(
        (&off[0]["details"]["taken_off"], &off[0]["details"]["taken_off_seats"]),
        (&json!(1), &json!(["A-3"]))
    );
    change(
        &api,
        &key,
        &org,
        admin,
        step(
            Method::POST,
            "/api/v1/events/{id}/state",
            format!("/api/v1/events/{e}/state"),
            Some(json!({ "state": "published" })),
            "event.state",
            &subject,
        ),
        &mut done,
    )
    .await;
    change(
        &api,
        &key,
        &org,
        admin,
        step(
            Method::POST,
            "/api/v1/events/{id}/sync",
            format!("/api/v1/events/{e}/sync"),
            None,
            "event.sync",
            &subject,
        ),
        &mut done,
    )
    .await;
    // The event as a series' template: the series, its dates, their states.
    let series = change(
        &api,
        &key,
        &org,
        admin,
        step(
            Method::POST,
            "/api/v1/series",
            "/api/v1/series",
            Some(json!({ "from_event": e })),
            "series.create",
            "series:",
        ),
        &mut done,
    )
    .await;
    let sid = series["id"].as_str().unwrap();
    let series_subject = format!("series:{sid}");
    change(
        &api,
        &key,
        &org,
        admin,
        step(
            Method::PATCH,
            "/api/v1/series/{id}",
            format!("/api/v1/series/{sid}"),
            Some(json!({ "title": "The season" })),
            "series.update",
            &series_subject,
        ),
        &mut done,
    )
    .await;
    let later = chrono::Utc::now() + chrono::Duration::days(40);
    change(
        &api,
        &key,
        &org,
        admin,
        step(
            Method::POST,
            "/api/v1/series/{id}/dates",
            format!("/api/v1/series/{sid}/dates"),
            Some(json!({ "dates": [{ "starts_at": later }] })),
            "series.dates",
            &series_subject,
        ),
        &mut done,
    )
    .await;
    change(
        &api,
        &key,
        &org,
        admin,
        step(
            Method::POST,
            "/api/v1/series/{id}/state",
            format!("/api/v1/series/{sid}/state"),
            // (The date already published: a date moved is one more row, its own `event.state`.)
            Some(json!({ "state": "published", "dates": [e] })),
            "series.state",
            &series_subject,
        ),
        &mut done,
    )
    .await;
    change(
        &api,
        &key,
        &org,
        admin,
        step(
            Method::POST,
            "/api/v1/events/{id}/waitlist/close",
            format!("/api/v1/events/{e}/waitlist/close"),
            None,
            "event.close_waitlist",
            &subject,
        ),
        &mut done,
    )
    .await;

    // Money: an organizer's refund of a paid order.
    let (paid_event, order, _) = paid_tickets(&api, &key, &org, &["B-1"]).await;
    change(
        &api,
        &key,
        &org,
        admin,
        step(
            Method::POST,
            "/api/v1/orders/{id}/refund",
            format!("/api/v1/orders/{order}/refund"),
            Some(json!({ "percent": 50 })),
            "order.refund",
            format!("order:{order}"),
        ),
        &mut done,
    )
    .await;

    // Operations: the operator retries a parked mail of this organization's event.
    let mail = uuid::Uuid::new_v4();
    sqlx::query("INSERT INTO notifications (id, dedup_key, kind, recipient, subject, text_body, html_body, event_id, state)
                 VALUES ($1, $1::text, 'order_confirmation', 'b@example.test', 's', 't', 'h', $2::uuid, 'parked')")
        .bind(mail)
        .bind(&paid_event)
        .execute(&db)
        .await
        .unwrap();
    change(
        &api,
        &root,
        &org,
        "platform_admin",
        step(
            Method::POST,
            "/api/v1/ops/notifications/{id}/retry",
            format!("/api/v1/ops/notifications/{mail}/retry"),
            None,
            "notification.retry",
            format!("notification:{mail}"),
        ),
        &mut done,
    )
    .await;

    // Partner webhooks: an endpoint registered, changed, its secret rotated, a test sent, its
    // failed deliveries replayed, one delivery replayed, and the endpoint deleted.
    let hook = change(
        &api,
        &key,
        &org,
        admin,
        step(
            Method::POST,
            "/api/v1/webhook-endpoints",
            "/api/v1/webhook-endpoints",
            Some(json!({ "url": "https://hooks.example.com/in", "event_types": ["order.paid"] })),
            "webhook_endpoint.create",
            "webhook_endpoint:",
        ),
        &mut done,
    )
    .await;
    let w = hook["id"].as_str().unwrap().to_owned();
    let hook_subject = format!("webhook_endpoint:{w}");
    assert!(
        !rows_after(&db, 0).await.iter().any(|r| r.to_string().contains(hook["secret"].as_str().unwrap())),
        "no webhook secret in the log"
    );
    change(
        &api,
        &key,
        &org,
        admin,
        step(
            Method::PATCH,
            "/api/v1/webhook-endpoints/{id}",
            format!("/api/v1/webhook-endpoints/{w}"),
            Some(json!({ "description": "CRM" })),
            "webhook_endpoint.update",
            &hook_subject,
        ),
        &mut done,
    )
    .await;
    change(
        &api,
        &key,
        &org,
        admin,
        step(
            Method::POST,
            "/api/v1/webhook-endpoints/{id}/rotate-secret",
            format!("/api/v1/webhook-endpoints/{w}/rotate-secret"),
            None,
            "webhook_endpoint.rotate_secret",
            &hook_subject,
        ),
        &mut done,
    )
    .await;
    let ping = change(
        &api,
        &key,
        &org,
        admin,
        step(
            Method::POST,
            "/api/v1/webhook-endpoints/{id}/test",
            format!("/api/v1/webhook-endpoints/{w}/test"),
            None,
            "webhook_endpoint.test",
            &hook_subject,
        ),
        &mut done,
    )
    .await;
    sqlx::query("UPDATE webhook_deliveries SET state = 'failed'").execute(&db).await.unwrap();
    change(
        &api,
        &key,
        &org,
        admin,
        step(
            Method::POST,
            "/api/v1/webhook-endpoints/{id}/replay",
            format!("/api/v1/webhook-endpoints/{w}/replay"),
            Some(json!({ "since": "2020-01-01T00:00:00Z" })),
            "webhook_endpoint.replay",
            &hook_subject,
        ),
        &mut done,
    )
    .await;
    sqlx::query("UPDATE webhook_deliveries SET state = 'failed'").execute(&db).await.unwrap();
    let d = ping["id"].as_str().unwrap();
    change(
        &api,
        &key,
        &org,
        admin,
        step(
            Method::POST,
            "/api/v1/webhook-deliveries/{id}/replay",
            format!("/api/v1/webhook-deliveries/{d}/replay"),
            None,
            "webhook_delivery.replay",
            format!("webhook_delivery:{d}"),
        ),
        &mut done,
    )
    .await;
    change(
        &api,
        &key,
        &org,
        admin,
        step(
            Method::DELETE,
            "/api/v1/webhook-endpoints/{id}",
            format!("/api/v1/webhook-endpoints/{w}"),
            None,
            "webhook_endpoint.delete",
            &hook_subject,
        ),
        &mut done,
    )
    .await;

    // Privacy requests (docs/privacy.md): the person is named by a hash, never by the address.
    let person = format!("person:{}", regional_core::tokens::holder_of("buyer@example.test"));
    for (route, action) in [
        ("/api/v1/privacy/access-requests", "privacy.access"),
        ("/api/v1/privacy/erasure-requests", "privacy.erasure"),
    ] {
        let body = Some(json!({ "email": "Buyer@Example.test" }));
        change(&api, &key, &org, admin, step(Method::POST, route, route, body, action, &person), &mut done)
            .await;
    }
    assert!(
        !rows_after(&db, 0).await.iter().any(|r| r.to_string().to_lowercase().contains("buyer@example.test")),
        "no address in the log"
    );

    // The box office (docs/box-office.md), through a core whose edge keeps holds (a stand-in).
    let (counter_url, _) = crate::box_office::counter_edge().await;
    let co = regional_core::checkout::Checkout {
        edge: regional_core::edge_client::EdgeClient::new(&counter_url, signer()),
        ..common::checkout(&db, &signer())
    };
    let desk = Api::start_with(common::state_with(co)).await;
    let (ev, _) = crate::box_office::counter_event(&desk, &key).await;
    let counter = |rest: &str| format!("/api/v1/events/{ev}/box-office/{rest}");
    let seats = Some(json!({ "kind": "seats", "seats": ["A-1"] }));
    let held = change(
        &desk,
        &key,
        &org,
        admin,
        step(
            Method::POST,
            "/api/v1/events/{id}/box-office/holds",
            counter("holds"),
            seats.clone(),
            "box_office.hold",
            "hold:",
        ),
        &mut done,
    )
    .await;
    let hold = held["hold_id"].as_str().unwrap();
    let route = "/api/v1/events/{id}/box-office/holds/{hold}";
    change(
        &desk,
        &key,
        &org,
        admin,
        step(
            Method::DELETE,
            route,
            counter(&format!("holds/{hold}")),
            None,
            "box_office.release",
            format!("hold:{hold}"),
        ),
        &mut done,
    )
    .await;
    let held = change(
        &desk,
        &key,
        &org,
        admin,
        step(
            Method::POST,
            "/api/v1/events/{id}/box-office/holds",
            counter("holds"),
            seats,
            "box_office.hold",
            "hold:",
        ),
        &mut done,
    )
    .await;
    let sale = Some(
        json!({ "hold": held["hold_id"], "payment": "cash", "total_minor": held["quote"]["total_minor"] }),
    );
    let sold = change(
        &desk,
        &key,
        &org,
        admin,
        step(
            Method::POST,
            "/api/v1/events/{id}/box-office/sales",
            counter("sales"),
            sale,
            "box_office.sale",
            "order:",
        ),
        &mut done,
    )
    .await;
    let t = sold["tickets"][0]["id"].as_str().unwrap();
    let route = "/api/v1/events/{id}/box-office/tickets/{ticket}/reissue";
    let reason = Some(json!({ "reason": "lost" }));
    change(
        &desk,
        &key,
        &org,
        admin,
        step(
            Method::POST,
            route,
            counter(&format!("tickets/{t}/reissue")),
            reason,
            "ticket.reissue",
            format!("ticket:{t}"),
        ),
        &mut done,
    )
    .await;

    // A counter sale refunded by the organizer, its money given back at the counter.
    let sold_order = sold["order"]["id"].as_str().unwrap();
    let refund = step(
        Method::POST,
        "/api/v1/orders/{id}/refund",
        format!("/api/v1/orders/{sold_order}/refund"),
        Some(json!({})),
        "order.refund",
        format!("order:{sold_order}"),
    );
    change(&desk, &key, &org, admin, refund, &mut done).await;
    let paid_back = step(
        Method::POST,
        "/api/v1/events/{id}/box-office/orders/{order}/paid-back",
        counter(&format!("orders/{sold_order}/paid-back")),
        Some(json!({ "method": "cash" })),
        "box_office.paid_back",
        format!("order:{sold_order}"),
    );
    change(&desk, &key, &org, admin, paid_back, &mut done).await;

    // Every route an API key may change something with is above: a new one fails here until it
    // records its changes and is added.
    let (_, doc) = api.get("", "/api/v1/openapi.json").await;
    let mut changing = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let keyed =
                op["security"].as_array().is_some_and(|s| s.iter().any(|r| r.get("api_key").is_some()));
            if keyed && method != "get" {
                changing.insert(format!("{method} {path}"));
            }
        }
    }
    assert_eq!(changing, done, "every changing route with an API key is audited (and tested here)");

    // Refused changes leave no row.
    let before = last_id(&db).await;
    let (s, _) =
        api.call(&key, Method::PATCH, &format!("/api/v1/events/{e}"), Some(json!({ "title": "" }))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = api.call(&key, Method::POST, &format!("/api/v1/orders/{order}/refund"), None).await;
    assert_eq!(s, StatusCode::CONFLICT, "refunded already");
    assert_eq!(last_id(&db).await, before, "a refused change is not in the log");
}

#[sqlx::test]
async fn a_buyers_cancellation_reissue_and_transfers_are_in_the_organizers_log(db: PgPool) {
    let api = Api::start_with(with_checkout(&db, &signer())).await;
    let (_, [(org, key), _]) = two_tenants(&api).await;
    let (event, order, tickets) = paid_tickets(&api, &key, &org, &["A-1", "A-2"]).await;
    let token = common::order_token(&signer(), order, &event);
    let buyer = format!("buyer:order:{order}");
    let buyer = buyer.as_str();
    let call = |method: Method, path: String, token: String, body: Option<Value>| {
        let req = api
            .http
            .request(method, format!("{}{path}", api.base))
            .bearer_auth(token)
            .header("user-agent", "phone/2");
        let req = match body {
            Some(b) => req.json(&b),
            None => req,
        };
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let expect = |rows: Vec<Value>, actor: &str, action: &str, subject: String| {
        assert_eq!(rows.len(), 1, "{rows:?}");
        let r = &rows[0];
        assert_eq!(
            (r["actor"].as_str(), r["action"].as_str(), r["subject"].as_str()),
            (Some(actor), Some(action), Some(subject.as_str())),
            "{r}"
        );
        assert_eq!(
            (r["organization_id"].as_str(), r["ip"].as_str(), r["user_agent"].as_str()),
            (Some(org.as_str()), Some("127.0.0.1"), Some("phone/2"))
        );
        assert!(r["actor_role"].is_null() && r["api_key_id"].is_null());
        assert!(!r.to_string().to_lowercase().contains("@example.test"), "no address in the log: {r}");
    };
    let ticket = format!("/api/v1/orders/{order}/tickets/{}", tickets[0]);
    let t0 = format!("ticket:{}", tickets[0]);

    let before = last_id(&db).await;
    let (s, _) = call(Method::POST, format!("{ticket}/reissue"), token.clone(), None).await;
    assert_eq!(s, StatusCode::OK);
    expect(rows_after(&db, before).await, buyer, "ticket.reissue", t0.clone());

    let before = last_id(&db).await;
    let (s, _) = call(
        Method::POST,
        format!("{ticket}/transfer"),
        token.clone(),
        Some(json!({ "to_email": "friend@example.test" })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    expect(rows_after(&db, before).await, buyer, "ticket.transfer_offer", t0.clone());
    let before = last_id(&db).await;
    let (s, _) = call(Method::POST, format!("{ticket}/transfer/cancel"), token.clone(), None).await;
    assert_eq!(s, StatusCode::OK);
    expect(rows_after(&db, before).await, buyer, "ticket.transfer_cancel", t0.clone());

    // Offered again, accepted by its recipient (named by the transfer, not by their address).
    let (s, offer) = call(
        Method::POST,
        format!("{ticket}/transfer"),
        token.clone(),
        Some(json!({ "to_email": "friend2@example.test" })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let x = offer["id"].as_str().unwrap().to_owned();
    let link = crate::transfers::offer_link(&db, "friend2@example.test").await;
    let transfer_token = link.split_once('#').unwrap().1.to_owned();
    let recipient = format!("recipient:transfer:{x}");
    let before = last_id(&db).await;
    let (s, _) =
        call(Method::POST, format!("/api/v1/transfers/{x}/accept"), transfer_token.clone(), None).await;
    assert_eq!(s, StatusCode::OK);
    expect(rows_after(&db, before).await, &recipient, "ticket.transfer_accept", t0.clone());
    let before = last_id(&db).await;
    let (s, _) =
        call(Method::POST, format!("/api/v1/transfers/{x}/accept"), transfer_token.clone(), None).await;
    assert_eq!(s, StatusCode::OK, "accepting twice answers the same");
    assert_eq!(last_id(&db).await, before, "and changes nothing, so records nothing");

    // Passed on, withdrawn; passed on again and declined by the next recipient.
    let before = last_id(&db).await;
    let (s, _) = call(
        Method::POST,
        format!("/api/v1/transfers/{x}/transfer"),
        transfer_token.clone(),
        Some(json!({ "to_email": "third@example.test" })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    expect(rows_after(&db, before).await, &recipient, "ticket.transfer_offer", t0.clone());
    let before = last_id(&db).await;
    let (s, _) =
        call(Method::POST, format!("/api/v1/transfers/{x}/transfer/cancel"), transfer_token.clone(), None)
            .await;
    assert_eq!(s, StatusCode::OK);
    expect(rows_after(&db, before).await, &recipient, "ticket.transfer_cancel", t0.clone());
    let (s, onward) = call(
        Method::POST,
        format!("/api/v1/transfers/{x}/transfer"),
        transfer_token.clone(),
        Some(json!({ "to_email": "fourth@example.test" })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let y = onward["id"].as_str().unwrap().to_owned();
    let link = crate::transfers::offer_link(&db, "fourth@example.test").await;
    let next_token = link.split_once('#').unwrap().1.to_owned();
    let before = last_id(&db).await;
    let (s, _) = call(Method::POST, format!("/api/v1/transfers/{y}/decline"), next_token, None).await;
    assert_eq!(s, StatusCode::OK);
    expect(
        rows_after(&db, before).await,
        &format!("recipient:transfer:{y}"),
        "ticket.transfer_decline",
        t0.clone(),
    );

    // The buyer cancels the paid order within the refund policy.
    let (s, _) = api
        .call(
            &key,
            Method::PUT,
            &format!("/api/v1/events/{event}/refund-policy"),
            Some(json!([{ "hours_before": 1, "percent": 100 }])),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let before = last_id(&db).await;
    let (s, body) = call(Method::POST, format!("/api/v1/orders/{order}/cancel"), token.clone(), None).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{body}");
    let rows = rows_after(&db, before).await;
    assert_eq!(rows[0]["details"]["refund_percent"], 100, "{rows:?}");
    expect(rows, buyer, "order.cancel", format!("order:{order}"));

    // Every route a buyer's or a recipient's token changes something with is above.
    let (_, doc) = api.get("", "/api/v1/openapi.json").await;
    let mut changing = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let schemes = op["security"].as_array().cloned().unwrap_or_default();
            let by_token =
                schemes.iter().any(|r| r.get("order_token").is_some() || r.get("transfer_token").is_some());
            if by_token && method != "get" {
                changing.insert(format!("{method} {path}"));
            }
        }
    }
    let done: BTreeSet<String> = [
        "post /api/v1/orders/{id}/cancel",
        "post /api/v1/orders/{id}/tickets/{ticket}/reissue",
        "post /api/v1/orders/{id}/tickets/{ticket}/transfer",
        "post /api/v1/orders/{id}/tickets/{ticket}/transfer/cancel",
        "post /api/v1/transfers/{id}/accept",
        "post /api/v1/transfers/{id}/decline",
        "post /api/v1/transfers/{id}/transfer",
        "post /api/v1/transfers/{id}/transfer/cancel",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(changing, done, "every changing route with a buyer's token is audited (and tested here)");
}

/// `GET /api/v1/audit-log?query` with `key`.
async fn read(api: &Api, key: &str, query: &str) -> (StatusCode, Value) {
    api.get(key, &format!("/api/v1/audit-log{query}")).await
}

#[sqlx::test]
async fn the_log_is_read_filtered_paged_and_exported_by_its_organizations_admins_only(db: PgPool) {
    let api = Api::start(db.clone()).await;
    let (root, [(acme, acme_key), (globex, globex_key)]) = two_tenants(&api).await;
    for i in 0..5 {
        let body = json!({ "email": format!("s{i}@acme.test"), "role": "organizer_staff" });
        assert_eq!(api.add_user(&acme_key, body).await.0, StatusCode::CREATED);
    }
    let (_, staff) = api.add_user(&acme_key, json!({ "email": "box@acme.test", "role": "box_office" })).await;
    let (_, staff_key) = api.add_key(&acme_key, &staff).await;
    let staff_key = staff_key["key"].as_str().unwrap().to_owned();

    // An organization's own log only, oldest first, a page at a time.
    let (s, page) = read(&api, &acme_key, "?action=user.create&limit=4").await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    assert!(items.iter().all(|r| r["organization_id"] == acme.as_str() && r["action"] == "user.create"));
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, rest) = read(&api, &acme_key, &format!("?action=user.create&limit=4&cursor={cursor}")).await;
    let rest = rest["items"].as_array().unwrap();
    assert_eq!(rest.len(), 3, "seven users: six here, the admin by the operator");
    assert!(rest[0]["id"].as_i64() > items[3]["id"].as_i64());
    let (_, keys) = read(&api, &acme_key, "?action=api_key.*").await;
    assert!(keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["action"].as_str().unwrap().starts_with("api_key.")));
    assert!(!keys["items"].as_array().unwrap().is_empty());
    let actor = user_of(&db, &acme_key).await;
    let (_, mine) = read(&api, &acme_key, &format!("?actor={actor}")).await;
    assert_eq!(mine["items"].as_array().unwrap().len(), 7, "six users and one key, by acme's admin");
    let (_, none) = read(&api, &acme_key, "?since=2100-01-01T00:00:00Z").await;
    assert!(none["items"].as_array().unwrap().is_empty());
    let (_, all) = read(&api, &acme_key, "?until=2100-01-01T00:00:00Z&limit=200").await;
    let total = all["items"].as_array().unwrap().len();

    // Another organization's log is not found; staff and box office may not read it at all.
    let (s, _) = read(&api, &globex_key, &format!("?organization={acme}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, theirs) = read(&api, &globex_key, "").await;
    assert!(theirs["items"].as_array().unwrap().iter().all(|r| r["organization_id"] == globex.as_str()));
    let (s, p) = read(&api, &staff_key, "").await;
    assert_eq!(
        (s, p["type"].as_str()),
        (StatusCode::FORBIDDEN, Some("https://errors.ticketing.dev/forbidden"))
    );
    // The operator's own address, user agent and key are the operator's to see: the organization
    // sees that the operator made its admin, not from where.
    let made_by_operator = |rows: &Value| {
        rows["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["actor_role"] == "platform_admin")
            .cloned()
            .unwrap()
    };
    let (_, tenant_view) = read(&api, &acme_key, "?action=user.create&limit=1").await;
    let row = made_by_operator(&tenant_view);
    assert!(row["ip"].is_null() && row["user_agent"].is_null() && row["api_key_id"].is_null(), "{row}");
    let (_, operator_view) =
        read(&api, &root, &format!("?organization={acme}&action=user.create&limit=1")).await;
    let row = made_by_operator(&operator_view);
    assert_eq!(row["ip"], "127.0.0.1");
    assert!(row["api_key_id"].is_string());
    // The operator reads any one organization, or all.
    let (_, one) = read(&api, &root, &format!("?organization={acme}&limit=200")).await;
    assert_eq!(one["items"].as_array().unwrap().len(), total);
    let (_, every) = read(&api, &root, "?limit=200").await;
    assert!(every["items"].as_array().unwrap().len() > total);

    // Bad filters are problems; an empty filter is no filter (as a form sends it), and a window that
    // ends before it starts selects nothing.
    for bad in ["?limit=0", "?limit=201"] {
        let (s, p) = read(&api, &acme_key, bad).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {p}");
    }
    for bad in ["?since=yesterday", "?organization=x", "?cursor=x&nope=1", "?format=csv"] {
        let (s, _) = read(&api, &acme_key, bad).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {s}");
    }
    let long = "a".repeat(201);
    let (s, _) = read(&api, &acme_key, &format!("?actor={long}")).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, empty) = read(&api, &acme_key, "?actor=&action=&subject=&cursor=&limit=200").await;
    assert_eq!((s, empty["items"].as_array().unwrap().len()), (StatusCode::OK, total));
    let (s, none) = read(&api, &acme_key, "?since=2100-01-01T00:00:00Z&until=2000-01-01T00:00:00Z").await;
    assert_eq!((s, none["items"].as_array().unwrap().len()), (StatusCode::OK, 0));

    // The export: every row the filters select, as CSV read back by an independent parser, or
    // as NDJSON.
    let resp = api
        .http
        .get(format!("{}/api/v1/audit-log/export", api.base))
        .bearer_auth(&acme_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/csv; charset=utf-8");
    let text = resp.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        [
            "id",
            "at",
            "organization_id",
            "actor",
            "actor_role",
            "api_key_id",
            "action",
            "subject",
            "ip",
            "user_agent",
            "request_id",
            "details"
        ]
    );
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), total);
    assert!(records.iter().all(|r| &r[2] == acme.as_str()));
    let details: Value = serde_json::from_str(&records[1][11]).unwrap();
    assert!(details.is_object());
    let resp = api
        .http
        .get(format!("{}/api/v1/audit-log/export?format=ndjson&action=user.create", api.base))
        .bearer_auth(&acme_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let text = resp.text().await.unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 7);
    assert!(lines.iter().all(|l| l["action"] == "user.create"));
    let (s, _) = api.get(&staff_key, "/api/v1/audit-log/export").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = api.get(&acme_key, "/api/v1/audit-log/export?format=xml").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = api.get(&acme_key, "/api/v1/audit-log/export?limit=5").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "the export has no pages");
}

#[sqlx::test]
async fn the_log_is_append_only_and_only_the_retention_job_deletes_old_rows(db: PgPool) {
    let api = Api::start(db.clone()).await;
    let (_, [(_, key), _]) = two_tenants(&api).await;
    api.add_user(&key, json!({ "email": "s@acme.test", "role": "organizer_staff" })).await;
    sqlx::query("INSERT INTO audit_log (at, actor, action, subject) VALUES (now() - interval '500 days', 'user:x', 'old.one', 'x:1')")
        .execute(&db)
        .await
        .unwrap();
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM audit_log").fetch_one(&db).await.unwrap()
    };
    let n = count().await;
    for sql in ["UPDATE audit_log SET actor = 'someone else'", "DELETE FROM audit_log", "TRUNCATE audit_log"]
    {
        let e = sqlx::query(sql).execute(&db).await.unwrap_err();
        assert!(e.to_string().contains("append-only"), "{sql}: {e}");
    }
    // A cutoff set outside the job deletes nothing newer than it.
    let mut tx = db.begin().await.unwrap();
    sqlx::query("SELECT set_config('ticketing.audit_prune_before', '2000-01-01T00:00:00Z', true)")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert!(sqlx::query("DELETE FROM audit_log WHERE action = 'user.create'")
        .execute(&mut *tx)
        .await
        .is_err());
    drop(tx);
    assert_eq!(count().await, n);
    // The job: rows older than the retention period go, the rest stay.
    assert_eq!(regional_core::audit::prune(&db, 400).await.unwrap(), 1);
    assert_eq!(count().await, n - 1);
    assert_eq!(regional_core::audit::prune(&db, 400).await.unwrap(), 0);
    let old: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'old.one'")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(old, 0);
}

#[sqlx::test]
async fn the_client_address_comes_from_a_trusted_proxy_only(db: PgPool) {
    let root =
        regional_core::accounts::create_platform_admin(&db, "root@platform.test", "Root").await.unwrap().key;
    for (trusted, want) in [("", "127.0.0.1"), ("127.0.0.0/8", "203.0.113.7")] {
        let mut state = regional_core::AppState::new(db.clone(), std::time::Duration::from_secs(1));
        state.trusted_proxies = regional_core::origin::TrustedProxies::parse(trusted).unwrap();
        let api = Api::start_with(state).await;
        let before = last_id(&db).await;
        let slug = format!("org{}", trusted.len());
        let (s, _) = api
            .call_with(
                &root,
                Method::POST,
                "/api/v1/organizations",
                Some(json!({ "name": slug, "slug": slug })),
                &[("x-forwarded-for", "198.51.100.1, 203.0.113.7")],
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
        let rows = rows_after(&db, before).await;
        assert_eq!(rows[0]["ip"], want, "trusted: {trusted:?}");
    }
}
