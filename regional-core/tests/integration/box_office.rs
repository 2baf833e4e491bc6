//! The box office (docs/box-office.md): a clerk holds seats without the line, sells them for cash
//! or a card on the venue's terminal, prints the tickets (rendered by poppler, an independent PDF
//! reader, and their QR codes read back by rqrr to codes that verify offline), re-issues a lost
//! one; every step audited, within the clerk's organization and bounds. The edge's hold routes
//! are a stand-in here that keeps holds as the inventory does (the real inventory's side of a
//! box-office hold is tested in workerd: tests/workerd/box-office.test.mjs; the whole path end to
//! end in tests/tests/storefront.rs).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::common::{self, checkout, decode_png, state_with, two_tenants, Api};
use regional_core::checkout::Checkout;
use reqwest::Method;
use serde_json::{json, Value};
use shared_types::token::{verify, Claims, Expectation, TicketGrant, TokenKind, TokenSigner};
use sqlx::PgPool;

/// The stand-in edge's holds: by id, and the idempotency keys' answers by visitor and key.
#[derive(Default)]
pub(crate) struct Holds {
    by_id: HashMap<String, Value>,
    keys: HashMap<(String, String), String>,
    /// Every confirm's body (a box-office sale ends no buyer's session).
    confirms: Vec<Value>,
    /// Confirms answer 503 (the edge unreachable for a while).
    failing_confirms: bool,
}

/// The edge's internal hold routes as the inventory answers them: a placed hold (`POST /holds`,
/// replayed for a visitor's key seen before, `409 seats_unavailable` for a seat held or sold),
/// a hold (`GET`), and its actions (confirm sells a held hold, release lets it go, return answers
/// it). `expire(hold)` ends a hold as its alarm would.
pub(crate) async fn counter_edge() -> (String, Arc<Mutex<Holds>>) {
    let holds = Arc::new(Mutex::new(Holds::default()));
    let state = holds.clone();
    let app = axum::Router::new().fallback(
        move |method: axum::http::Method, uri: axum::http::Uri, body: axum::body::Bytes| {
            let holds = state.clone();
            async move {
                let parts: Vec<String> = uri.path().split('/').map(str::to_owned).collect();
                // ["", "internal", "v1", "events", event, rest…]
                let rest = &parts[5..];
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let mut h = holds.lock().unwrap();
                let problem = |status: u16, reason: &str| {
                    (
                        axum::http::StatusCode::from_u16(status).unwrap(),
                        axum::Json(json!({ "reason": reason, "detail": reason })),
                    )
                };
                match (method.as_str(), rest.iter().map(String::as_str).collect::<Vec<_>>().as_slice()) {
                    ("POST", ["holds"]) => {
                        let visitor = body["visitor"].as_str().unwrap().to_owned();
                        assert!(visitor.starts_with("box-office_"), "{visitor}");
                        let key = body["idempotency_key"].as_str().map(str::to_owned);
                        if let Some(id) = key.as_ref().and_then(|k| h.keys.get(&(visitor.clone(), k.clone())))
                        {
                            let hold = h.by_id[id].clone();
                            return (
                                axum::http::StatusCode::OK,
                                axum::Json(json!({ "hold": hold, "replayed": true })),
                            );
                        }
                        let request = &body["request"];
                        let seats: Vec<String> = request["seats"]
                            .as_array()
                            .map(|s| s.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
                            .unwrap_or_default();
                        let taken = h.by_id.values().any(|other| {
                            matches!(other["state"].as_str(), Some("held" | "sold"))
                                && other["seats"]
                                    .as_array()
                                    .is_some_and(|o| o.iter().any(|s| seats.iter().any(|x| s == x)))
                        });
                        if taken {
                            return problem(409, "seats_unavailable");
                        }
                        let id = format!("h0-{:08x}", h.by_id.len() + 1);
                        let mut hold = json!({
                            "id": id, "visitor": visitor, "state": "held", "created_at": 1, "extended": false,
                            "expires_at": chrono::Utc::now().timestamp_millis() + 600_000,
                        });
                        if request["kind"] == "general_admission" {
                            hold["ga"] = json!({ "tier": request["tier"], "quantity": request["quantity"] });
                        } else {
                            hold["seats"] = json!(seats);
                        }
                        h.by_id.insert(id.clone(), hold.clone());
                        if let Some(k) = key {
                            h.keys.insert((visitor, k), id);
                        }
                        (
                            axum::http::StatusCode::CREATED,
                            axum::Json(json!({ "hold": hold, "replayed": false })),
                        )
                    }
                    (_, ["holds", id, ..]) if !h.by_id.contains_key(*id) => problem(404, "hold_not_found"),
                    ("GET", ["holds", id]) => (axum::http::StatusCode::OK, axum::Json(h.by_id[*id].clone())),
                    ("POST", ["holds", id, action]) => {
                        let (id, action) = (id.to_string(), action.to_string());
                        let state = h.by_id[&id]["state"].as_str().unwrap().to_owned();
                        match (action.as_str(), state.as_str()) {
                            ("confirm", _) if h.failing_confirms => return problem(503, "unavailable"),
                            ("confirm", "held") => {
                                h.confirms.push(body);
                                h.by_id.get_mut(&id).unwrap()["state"] = json!("sold");
                            }
                            ("release", "held") => h.by_id.get_mut(&id).unwrap()["state"] = json!("released"),
                            ("return", "sold") => {}
                            (_, "expired") => return problem(409, "hold_expired"),
                            (_, "sold") => return problem(409, "hold_sold"),
                            _ => return problem(409, "hold_released"),
                        }
                        (axum::http::StatusCode::OK, axum::Json(h.by_id[&id].clone()))
                    }
                    _ => problem(404, "no_route"),
                }
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, holds)
}

struct Counter {
    api: Api,
    signer: TokenSigner,
    edge: Arc<Mutex<Holds>>,
    event: String,
    ga_tier: String,
    /// The organizer admin's key, the box-office clerk's (and their user id), the other tenant's admin's.
    admin: String,
    clerk: String,
    clerk_id: String,
    stranger: String,
    org: String,
}

/// An event on sale with four seats (3000 each) and a general-admission tier (2500), a clerk of
/// the organization's box office, a scanner and a catalog staff member.
async fn counter(db: &PgPool) -> Counter {
    let signer = TokenSigner::from_seed("core-test", [4; 32]).unwrap();
    let (edge_url, edge) = counter_edge().await;
    let co = Checkout {
        edge: regional_core::edge_client::EdgeClient::new(&edge_url, signer.clone()),
        ..checkout(db, &signer)
    };
    let api = Api::start_with(state_with(co)).await;
    let (root, [(org, admin), (_, stranger)]) = two_tenants(&api).await;
    let (id, ga_tier) = counter_event(&api, &admin).await;
    let (s, user) = api
        .add_user(&root, json!({ "email": "desk@acme.test", "role": "box_office", "organization_id": org }))
        .await;
    assert_eq!(s, 201, "{user}");
    let (_, key) = api.add_key(&root, &user).await;
    Counter {
        signer,
        edge,
        event: id,
        ga_tier,
        admin,
        clerk: key["key"].as_str().unwrap().to_owned(),
        clerk_id: user["id"].as_str().unwrap().to_owned(),
        stranger,
        org,
        api,
    }
}

/// An event of `admin`'s organization on sale, as publishing leaves it (the edge is a stand-in):
/// four seats A-1..A-4 at 3000 ("Stalls") and standing places at 2500 ("Standing"). Its id and
/// the standing tier's.
pub(crate) async fn counter_event(api: &Api, admin: &str) -> (String, String) {
    let seats: Vec<Value> = (1..=4)
        .map(|n| json!({ "id": format!("A-{n}"), "label": n.to_string(), "x": n, "y": 0, "zone": "std" }))
        .collect();
    let (s, venue) = api
        .call(admin, Method::POST, "/api/v1/venues", Some(json!({
            "name": "Grand Hall", "time_zone": "Europe/Berlin", "zones": [{ "id": "std", "name": "Standard" }],
            "ga_areas": [{ "id": "floor", "name": "Floor", "capacity": 500 }],
            "sections": [{ "id": "A", "name": "A", "rows": [{ "label": "1", "seats": seats }] }] })))
        .await;
    assert_eq!(s, 201, "{venue}");
    let (s, event) = api
        .call(
            admin,
            Method::POST,
            "/api/v1/events",
            Some(json!({ "venue_id": venue["id"], "title": "Café Concert",
            "starts_at": "2027-01-01T19:30:00Z", "ends_at": "2027-01-01T23:00:00Z" })),
        )
        .await;
    assert_eq!(s, 201, "{event}");
    let id = event["id"].as_str().unwrap().to_owned();
    let tiers = format!("/api/v1/events/{id}/tiers");
    let (s, _) = api
        .call(
            admin,
            Method::POST,
            &tiers,
            Some(json!({
            "name": "Stalls", "kind": "seated", "currency": "EUR", "price_minor": 3000, "quantity": 4 })),
        )
        .await;
    assert_eq!(s, 201);
    let (s, ga) = api
        .call(admin, Method::POST, &tiers, Some(json!({
            "name": "Standing", "kind": "ga", "ga_area": "floor", "currency": "EUR", "price_minor": 2500, "quantity": 100 })))
        .await;
    assert_eq!(s, 201, "{ga}");
    sqlx::query("UPDATE events SET state = 'on_sale' WHERE id = $1::uuid")
        .bind(&id)
        .execute(&api.db)
        .await
        .unwrap();
    (id, ga["id"].as_str().unwrap().to_owned())
}

impl Counter {
    fn path(&self, rest: &str) -> String {
        format!("/api/v1/events/{}/box-office/{rest}", self.event)
    }

    async fn hold(&self, body: Value, key: Option<&str>) -> (u16, Value) {
        let headers: Vec<(&str, &str)> = key.map(|k| vec![("idempotency-key", k)]).unwrap_or_default();
        let (s, v) =
            self.api.call_with(&self.clerk, Method::POST, &self.path("holds"), Some(body), &headers).await;
        (s.as_u16(), v)
    }

    async fn sell(&self, body: Value) -> (u16, Value) {
        let (s, v) = self.api.call(&self.clerk, Method::POST, &self.path("sales"), Some(body)).await;
        (s.as_u16(), v)
    }

    async fn audit_actions(&self) -> Vec<(String, String)> {
        sqlx::query_as("SELECT action, actor FROM audit_log WHERE action LIKE 'box_office.%' OR action = 'ticket.reissue' ORDER BY id")
            .fetch_all(&self.api.db)
            .await
            .unwrap()
    }

    /// The order's tickets printed: each page's text, and each page's QR code as read from the
    /// page rendered by poppler.
    async fn printed(&self, order: &str) -> (Vec<String>, Vec<String>) {
        let resp = self
            .api
            .http
            .get(format!("{}{}", self.api.base, self.path(&format!("orders/{order}/tickets.pdf"))))
            .bearer_auth(&self.clerk)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/pdf");
        assert_eq!(resp.headers()["cache-control"], "private, no-store");
        let pdf = resp.bytes().await.unwrap();
        let dir = std::env::temp_dir().join(format!("box-office-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tickets.pdf");
        std::fs::write(&file, &pdf).unwrap();
        let run = |cmd: &str, args: &[&str]| {
            let out = std::process::Command::new(cmd)
                .args(args)
                .output()
                .unwrap_or_else(|e| panic!("{cmd} (poppler-utils: scripts/bootstrap.sh installs it): {e}"));
            assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).unwrap()
        };
        let file = file.to_str().unwrap();
        let pages: Vec<String> = run("pdftotext", &["-layout", file, "-"])
            .split('\u{c}')
            .filter(|p| !p.trim().is_empty())
            .map(str::to_owned)
            .collect();
        let prefix = dir.join("page");
        run("pdftoppm", &["-r", "110", "-gray", "-png", file, prefix.to_str().unwrap()]);
        let mut images: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "png"))
            .collect();
        images.sort();
        let codes = images.iter().map(|p| decode_png(&std::fs::read(p).unwrap())).collect();
        std::fs::remove_dir_all(&dir).unwrap();
        (pages, codes)
    }
}

#[sqlx::test]
async fn the_box_office_holds_sells_for_cash_and_card_prints_tickets_that_scan_and_reissues_one(db: PgPool) {
    let c = counter(&db).await;

    // Two seats held without the line, priced; a retry with its key is the same hold.
    let seats = json!({ "kind": "seats", "seats": ["A-1", "A-2"] });
    let (s, held) = c.hold(seats.clone(), Some("desk-1")).await;
    assert_eq!(s, 201, "{held}");
    assert_eq!(held["quote"]["total_minor"], 6000, "{held}");
    assert_eq!(held["quote"]["lines"][0]["tier_name"], "Stalls");
    let hold = held["hold_id"].as_str().unwrap().to_owned();
    let (s, again) = c.hold(seats, Some("desk-1")).await;
    assert_eq!(
        (s, again["hold_id"].as_str(), again["replayed"].as_bool()),
        (200, Some(hold.as_str()), Some(true))
    );
    // A seat held is not held twice.
    let (s, p) = c.hold(json!({ "kind": "seats", "seats": ["A-2", "A-3"] }), None).await;
    assert_eq!((s, p["reason"].as_str()), (409, Some("seats_unavailable")), "{p}");

    // Sold for cash to a walk-up buyer who gave no address: paid, tickets issued at once.
    let sale = json!({ "hold": hold, "payment": "cash", "total_minor": 6000 });
    let (s, sold) = c.sell(sale.clone()).await;
    assert_eq!(s, 201, "{sold}");
    assert_eq!(sold["order"]["state"], "paid", "{sold}");
    assert_eq!(sold["order"]["payment"]["provider"], "box_office");
    assert_eq!(sold["order"]["payment"]["state"], "succeeded");
    assert!(sold["order"]["email"].as_str().unwrap().ends_with("@box-office.invalid"), "{sold}");
    let order = sold["order"]["id"].as_str().unwrap().to_owned();
    let codes: Vec<String> =
        sold["tickets"].as_array().unwrap().iter().map(|t| t["code"].as_str().unwrap().to_owned()).collect();
    assert_eq!(codes.len(), 2);
    assert!(
        c.edge.lock().unwrap().confirms.iter().all(|b| b.get("end_session_of").is_none()),
        "no session to end"
    );
    // The same sale again is the same order; another for the sold hold is refused.
    let (s, replay) = c.sell(sale).await;
    assert_eq!((s, replay["order"]["id"].as_str()), (200, Some(order.as_str())), "{replay}");
    let (s, p) = c.sell(json!({ "hold": hold, "payment": "card_present", "total_minor": 6000 })).await;
    assert_eq!((s, p["reason"].as_str()), (409, Some("hold_sold")), "{p}");
    // A sold hold is not released (its seats would go back on sale with the money kept).
    let (s, p) = c.api.call(&c.clerk, Method::DELETE, &c.path(&format!("holds/{hold}")), None).await;
    assert_eq!((s.as_u16(), p["reason"].as_str()), (409, Some("hold_sold")), "{p}");
    assert_eq!(c.edge.lock().unwrap().by_id[&hold]["state"], "sold");
    // Its key again does not answer it as a live hold.
    let (s, p) = c.hold(json!({ "kind": "seats", "seats": ["A-1", "A-2"] }), Some("desk-1")).await;
    assert_eq!((s, p["reason"].as_str()), (409, Some("hold_ended")), "{p}");
    let (orders, payments): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM orders WHERE sold_by IS NOT NULL), (SELECT count(*) FROM payments WHERE method = 'cash')",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!((orders, payments), (1, 1));
    crate::notifications::relay(&db).await;
    let mails: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications").fetch_one(&db).await.unwrap();
    assert_eq!(mails, 0, "a walk-up buyer without an address is never mailed");

    // Printed: a page a ticket, the event and the seat on it, and a QR code a reader decodes to the
    // ticket's code, which verifies offline with the core's key.
    let (pages, printed) = c.printed(&order).await;
    assert_eq!(pages.len(), 2, "{pages:?}");
    assert!(
        pages[0].contains("Café Concert") && pages[0].contains("Grand Hall") && pages[0].contains("Seat A-1"),
        "{}",
        pages[0]
    );
    assert!(
        pages[0].contains("Fri 1 Jan 2027, 20:30 (Europe/Berlin)"),
        "the event's local time: {}",
        pages[0]
    );
    assert_eq!(printed, codes);
    let expect = Expectation {
        kind: TokenKind::Ticket,
        issuer: "core",
        audience: &c.event,
        subject: None,
        now: chrono::Utc::now().timestamp(),
    };
    let claims: Claims<TicketGrant> = verify(&printed[0], &c.signer.verifying_ring(), &expect).unwrap();
    assert_eq!(claims.extra.seat.as_deref(), Some("A-1"));

    // Lost: re-issued at the counter, the new code printed, the old one no longer the ticket's.
    let ticket = sold["tickets"][0]["id"].as_str().unwrap().to_owned();
    let (s, reissued) = c
        .api
        .call(
            &c.clerk,
            Method::POST,
            &c.path(&format!("tickets/{ticket}/reissue")),
            Some(json!({ "reason": "lost" })),
        )
        .await;
    assert_eq!((s.as_u16(), reissued["version"].as_i64()), (200, Some(2)), "{reissued}");
    let (pages, printed) = c.printed(&order).await;
    assert!(pages[0].contains("re-issued: version 2"), "{}", pages[0]);
    assert_eq!(printed[0], reissued["code"].as_str().unwrap());
    assert_ne!(printed[0], codes[0]);
    assert_eq!(printed[1], codes[1], "the other ticket unchanged");

    // A card on the venue's terminal, for a buyer who gave an address: the receipt kept.
    let ga = json!({ "kind": "general_admission", "tier": c.ga_tier, "quantity": 3 });
    let (s, held) = c.hold(ga, None).await;
    assert_eq!((s, held["quote"]["total_minor"].as_i64()), (201, Some(7500)), "{held}");
    let (s, sold) = c
        .sell(json!({ "hold": held["hold_id"], "payment": "card_present", "reference": "R-0042", "email": "Walk.In@Example.test", "total_minor": 7500 }))
        .await;
    assert_eq!(s, 201, "{sold}");
    assert_eq!(sold["tickets"].as_array().unwrap().len(), 3);
    let card_order = sold["order"]["id"].as_str().unwrap().to_owned();
    // The clerk finds a buyer's order by their address (any case).
    let (s, found) =
        c.api.get(&c.clerk, &format!("/api/v1/events/{}/orders?email=walk.in@example.TEST", c.event)).await;
    assert_eq!(s, 200, "{found}");
    let ids: Vec<&str> =
        found["items"].as_array().unwrap().iter().map(|o| o["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [card_order.as_str()]);
    let (method, reference, amount): (String, String, i64) = sqlx::query_as(
        "SELECT method, counter_reference, amount_minor FROM payments WHERE order_id = $1::uuid",
    )
    .bind(&card_order)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!((method.as_str(), reference.as_str(), amount), ("card_present", "R-0042", 7500));
    crate::notifications::relay(&db).await;
    let mailed: Vec<(String, String)> =
        sqlx::query_as("SELECT kind, recipient FROM notifications").fetch_all(&db).await.unwrap();
    assert_eq!(
        mailed,
        [("order_confirmation".to_owned(), "Walk.In@Example.test".to_owned())],
        "the buyer who gave an address"
    );

    // The buyer's order link cannot refund a counter sale (nobody would pay it out); the
    // organizer admin's refund records the money given back at the counter.
    let visitor: String = sqlx::query_scalar("SELECT visitor_id FROM orders WHERE id = $1::uuid")
        .bind(&card_order)
        .fetch_one(&db)
        .await
        .unwrap();
    let token = common::order_token_as(&c.signer, card_order.parse().unwrap(), &c.event, &visitor);
    let resp = c
        .api
        .http
        .post(format!("{}/api/v1/orders/{card_order}/cancel", c.api.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    let p: Value = resp.json().await.unwrap();
    assert_eq!(p["reason"], "paid_at_box_office", "{p}");
    let (s, refunded) = c
        .api
        .call(&c.admin, Method::POST, &format!("/api/v1/orders/{card_order}/refund"), Some(json!({})))
        .await;
    assert_eq!(s, 202, "{refunded}");
    let refund_of = |order: String| {
        let db = db.clone();
        async move {
            sqlx::query_as::<_, (String, String, i64)>(
                "SELECT o.state, r.state, p.refunded_minor FROM orders o JOIN refunds r ON r.order_id = o.id
                 JOIN payments p ON p.order_id = o.id WHERE o.id = $1::uuid",
            )
            .bind(order)
            .fetch_one(&db)
            .await
            .unwrap()
        }
    };
    // Refunded (the tickets void, the seats back), the money due at the counter until a clerk
    // gives it back: no provider was called (the test provider is unreachable here).
    assert_eq!(refund_of(card_order.clone()).await, ("refunded".to_owned(), "pending".to_owned(), 0));
    // The buyer is told to collect it at the box office, not to wait for their bank.
    crate::notifications::relay(&db).await;
    let (text,): (String,) =
        sqlx::query_as("SELECT text_body FROM notifications WHERE kind = 'order_refunded'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert!(text.contains("collect your refund there") && !text.contains("your bank"), "{text}");
    let (s, due) = c.api.get(&c.clerk, &format!("{}?state=pending", c.path("refunds"))).await;
    assert_eq!(
        (s.as_u16(), due["items"][0]["order_id"].as_str(), due["items"][0]["amount_minor"].as_i64()),
        (200, Some(card_order.as_str()), Some(7500)),
        "{due}"
    );
    let (s, p) =
        c.api.call(&c.clerk, Method::GET, &c.path(&format!("orders/{card_order}/tickets.pdf")), None).await;
    assert_eq!((s.as_u16(), p["reason"].as_str()), (409, Some("no_tickets")), "{p}");
    let paid_back = c.path(&format!("orders/{card_order}/paid-back"));
    let (s, p) = c
        .api
        .call(&c.clerk, Method::POST, &paid_back, Some(json!({ "method": "cash", "reference": "X" })))
        .await;
    assert_eq!((s.as_u16(), p["errors"][0]["field"].as_str()), (422, Some("reference")), "{p}");
    let (s, view) = c
        .api
        .call(
            &c.clerk,
            Method::POST,
            &paid_back,
            Some(json!({ "method": "card_present", "reference": "RF-0042" })),
        )
        .await;
    assert_eq!((s.as_u16(), view["payment"]["refunded_minor"].as_i64()), (200, Some(7500)), "{view}");
    assert_eq!(refund_of(card_order.clone()).await, ("refunded".to_owned(), "succeeded".to_owned(), 7500));
    let again = json!({ "method": "card_present", "reference": "RF-0042" });
    let (s, _) = c.api.call(&c.clerk, Method::POST, &paid_back, Some(again)).await;
    assert_eq!(s, 200, "the same record again answers the order");
    let (s, p) = c.api.call(&c.clerk, Method::POST, &paid_back, Some(json!({ "method": "cash" }))).await;
    assert_eq!((s.as_u16(), p["reason"].as_str()), (409, Some("already_paid_back")), "a second payout: {p}");
    let (s, p) = c
        .api
        .call(
            &c.clerk,
            Method::POST,
            &c.path(&format!("orders/{order}/paid-back")),
            Some(json!({ "method": "cash" })),
        )
        .await;
    assert_eq!((s.as_u16(), p["reason"].as_str()), (409, Some("no_refund_due")), "{p}");
    let refunded_events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE payload->>'type' = 'payment.refunded'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(refunded_events, 1, "told once, when it was given back");

    // Everything the clerk did, in the audit log under their name.
    let clerk = format!("user:{}", c.clerk_id);
    let actions = c.audit_actions().await;
    let mine: Vec<&str> = actions.iter().filter(|(_, a)| *a == clerk).map(|(x, _)| x.as_str()).collect();
    assert_eq!(
        mine,
        [
            "box_office.hold",
            "box_office.sale",
            "box_office.print",
            "ticket.reissue",
            "box_office.print",
            "box_office.hold",
            "box_office.sale",
            "box_office.paid_back"
        ],
        "{actions:?}"
    );
    let (details,): (Value,) =
        sqlx::query_as("SELECT details FROM audit_log WHERE action = 'ticket.reissue'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(details["reason"], "lost");
    let _ = &c.org;
}

#[sqlx::test]
async fn the_box_office_sells_only_its_own_holds_in_its_organization_within_its_bounds(db: PgPool) {
    let c = counter(&db).await;
    let seats = json!({ "kind": "seats", "seats": ["A-1"] });

    // Roles and tenants: a scanner and catalog staff may not sell, another organization's admin
    // does not see the event.
    let (root_scanner, staff) = {
        let root: String = c.admin.clone();
        let mut keys = Vec::new();
        for role in ["scanner", "organizer_staff"] {
            let (s, user) =
                c.api.add_user(&root, json!({ "email": format!("{role}@acme.test"), "role": role })).await;
            assert_eq!(s, 201, "{user}");
            let (_, key) = c.api.add_key(&root, &user).await;
            keys.push(key["key"].as_str().unwrap().to_owned());
        }
        (keys[0].clone(), keys[1].clone())
    };
    for key in [&root_scanner, &staff] {
        let (s, p) = c.api.call(key, Method::POST, &c.path("holds"), Some(seats.clone())).await;
        assert_eq!(
            (s.as_u16(), p["type"].as_str().map(|t| t.ends_with("forbidden"))),
            (403, Some(true)),
            "{p}"
        );
    }
    let (s, _) = c.api.call(&c.stranger, Method::POST, &c.path("holds"), Some(seats.clone())).await;
    assert_eq!(s, 404);

    // Bad requests change nothing.
    for (body, status) in [
        (json!({ "kind": "seats", "seats": [] }), 422),
        (json!({ "kind": "seats", "seats": ["A 1"] }), 422),
        (json!({ "kind": "general_admission", "tier": c.ga_tier, "quantity": 51 }), 422),
        (json!({ "kind": "best_available", "quantity": 0 }), 422),
        (json!({ "kind": "teleport" }), 400),
        (json!({ "kind": "seats", "seats": ["A-1"], "price": 1 }), 400),
    ] {
        let (s, p) = c.hold(body.clone(), None).await;
        assert_eq!(s, status, "{body}: {p}");
    }
    assert_eq!(c.api.count("box_office_holds").await, 0);

    // A buyer's hold (not the box office's) cannot be sold at the counter.
    let (s, _) = c.sell(json!({ "hold": "h0-0000beef", "payment": "cash", "total_minor": 3000 })).await;
    assert_eq!(s, 404);
    let (s, held) = c.hold(seats.clone(), None).await;
    assert_eq!(s, 201, "{held}");
    let hold = held["hold_id"].as_str().unwrap().to_owned();
    for (body, field) in [
        (json!({ "hold": hold, "payment": "cash", "reference": "R-1", "total_minor": 3000 }), "reference"),
        (
            json!({ "hold": hold, "payment": "card_present", "reference": "R\n1", "total_minor": 3000 }),
            "reference",
        ),
        (json!({ "hold": hold, "payment": "cash", "email": "not an address", "total_minor": 3000 }), "email"),
        (json!({ "hold": hold, "payment": "cash", "phone": "+447700900123", "total_minor": 3000 }), "phone"),
    ] {
        let (s, p) = c.sell(body.clone()).await;
        assert_eq!((s, p["errors"][0]["field"].as_str()), (422, Some(field)), "{body}: {p}");
    }
    let (s, p) = c.sell(json!({ "hold": hold, "payment": "cheque", "total_minor": 3000 })).await;
    assert_eq!(s, 400, "{p}");
    // Another organization's admin cannot sell this event's hold.
    let (s, _) = c
        .api
        .call(
            &c.stranger,
            Method::POST,
            &c.path("sales"),
            Some(json!({ "hold": hold, "payment": "cash", "total_minor": 3000 })),
        )
        .await;
    assert_eq!(s, 404);

    // An ended hold is refused before any money is recorded.
    c.edge.lock().unwrap().by_id.get_mut(&hold).unwrap()["state"] = json!("expired");
    let (s, p) = c.sell(json!({ "hold": hold, "payment": "cash", "total_minor": 3000 })).await;
    assert_eq!((s, p["reason"].as_str()), (409, Some("hold_expired")), "{p}");
    assert_eq!(c.api.count("orders").await, 0);
    assert_eq!(c.api.count("payments").await, 0);

    // A hold the event cannot price (over the tier's per-order limit of 8) is released at once.
    let (s, p) = c.hold(json!({ "kind": "general_admission", "tier": c.ga_tier, "quantity": 9 }), None).await;
    assert_eq!((s, p["reason"].as_str()), (409, Some("per_order_limit")), "{p}");
    let states: Vec<String> = c
        .edge
        .lock()
        .unwrap()
        .by_id
        .values()
        .filter(|h| h["ga"]["quantity"] == 9)
        .map(|h| h["state"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(states, ["released"]);
    assert_eq!(c.api.count("box_office_holds").await, 1, "the unpriced hold is not the clerk's");

    // A price changed between the quote and the sale is refused, not recorded otherwise.
    let (s, held) = c.hold(json!({ "kind": "seats", "seats": ["A-2"] }), None).await;
    assert_eq!((s, held["quote"]["total_minor"].as_i64()), (201, Some(3000)), "{held}");
    sqlx::query("UPDATE ticket_tiers SET price_minor = 3500 WHERE kind = 'seated'")
        .execute(&db)
        .await
        .unwrap();
    let (s, p) = c.sell(json!({ "hold": held["hold_id"], "payment": "cash", "total_minor": 3000 })).await;
    assert_eq!((s, p["reason"].as_str()), (409, Some("price_changed")), "{p}");
    assert_eq!(c.api.count("orders").await, 0);
    let (s, sold) = c.sell(json!({ "hold": held["hold_id"], "payment": "cash", "total_minor": 3500 })).await;
    assert_eq!(s, 201, "{sold}");
    // The edge unreachable when the sale is made: recorded (202, the order confirming) and the
    // hold, still held at the edge, can no longer be released (the money is in the till); the
    // same request later finds the order paid.
    let (_, held) = c.hold(json!({ "kind": "seats", "seats": ["A-3"] }), None).await;
    let hold3 = held["hold_id"].as_str().unwrap().to_owned();
    c.edge.lock().unwrap().failing_confirms = true;
    let sale3 = json!({ "hold": hold3, "payment": "cash", "total_minor": 3500 });
    let (s, pending) = c.sell(sale3.clone()).await;
    assert_eq!((s, pending["order"]["state"].as_str()), (202, Some("confirming")), "{pending}");
    let (s, p) = c.api.call(&c.clerk, Method::DELETE, &c.path(&format!("holds/{hold3}")), None).await;
    assert_eq!((s.as_u16(), p["reason"].as_str()), (409, Some("hold_sold")), "{p}");
    assert_eq!(c.edge.lock().unwrap().by_id[&hold3]["state"], "held", "not released at the edge");
    c.edge.lock().unwrap().failing_confirms = false;
    sqlx::query("UPDATE orders SET lease_until = NULL, next_attempt_at = now()").execute(&db).await.unwrap();
    let (s, done) = c.sell(sale3).await;
    assert_eq!((s, done["order"]["state"].as_str()), (200, Some("paid")), "{done}");
    // A re-issue of a ticket that is not valid, or of no ticket of this event, changes nothing.
    let ticket = sold["tickets"][0]["id"].as_str().unwrap().to_owned();
    sqlx::query("UPDATE tickets SET state = 'used' WHERE id = $1::uuid")
        .bind(&ticket)
        .execute(&db)
        .await
        .unwrap();
    let counter = &c;
    let reissue = |t: String| {
        let path = counter.path(&format!("tickets/{t}/reissue"));
        async move {
            counter.api.call(&counter.clerk, Method::POST, &path, Some(json!({ "reason": "lost" }))).await
        }
    };
    let (s, p) = reissue(ticket.clone()).await;
    assert_eq!((s.as_u16(), p["reason"].as_str()), (409, Some("not_reissuable")), "{p}");
    let (s, _) = reissue(uuid::Uuid::new_v4().to_string()).await;
    assert_eq!(s, 404);
    let (s, p) = c
        .api
        .call(
            &c.clerk,
            Method::POST,
            &c.path(&format!("tickets/{ticket}/reissue")),
            Some(json!({ "reason": "lost\nat the bar" })),
        )
        .await;
    assert_eq!((s.as_u16(), p["errors"][0]["field"].as_str()), (422, Some("reason")), "{p}");

    // At most ten live holds a clerk, whatever keys they use; releasing one makes room (and is
    // audited).
    let (s, old) = c
        .hold(json!({ "kind": "general_admission", "tier": c.ga_tier, "quantity": 1 }), Some("old-key"))
        .await;
    assert_eq!(s, 201, "{old}");
    let (s, _) = c
        .api
        .call(&c.clerk, Method::DELETE, &c.path(&format!("holds/{}", old["hold_id"].as_str().unwrap())), None)
        .await;
    assert_eq!(s, 204);
    sqlx::query("UPDATE box_office_holds SET ended_at = now() WHERE ended_at IS NULL")
        .execute(&db)
        .await
        .unwrap();
    let mut live = Vec::new();
    for _ in 0..10 {
        let (s, held) =
            c.hold(json!({ "kind": "general_admission", "tier": c.ga_tier, "quantity": 1 }), None).await;
        assert_eq!(s, 201, "{held}");
        live.push(held["hold_id"].as_str().unwrap().to_owned());
    }
    // An old key the edge has forgotten (its answers are kept an hour) is a new hold, and counts.
    c.edge.lock().unwrap().keys.clear();
    let (s, p) = c
        .hold(json!({ "kind": "general_admission", "tier": c.ga_tier, "quantity": 1 }), Some("old-key"))
        .await;
    assert_eq!((s, p["reason"].as_str()), (409, Some("too_many_holds")), "{p}");
    let ga = json!({ "kind": "general_admission", "tier": c.ga_tier, "quantity": 1 });
    let (s, p) = c.hold(ga.clone(), None).await;
    assert_eq!((s, p["reason"].as_str()), (409, Some("too_many_holds")), "{p}");
    let (s, _) = c.api.call(&c.clerk, Method::DELETE, &c.path(&format!("holds/{}", live[0])), None).await;
    assert_eq!(s, 204);
    let (s, _) = c.api.call(&c.clerk, Method::DELETE, &c.path(&format!("holds/{}", live[0])), None).await;
    assert_eq!(s, 204, "released again: nothing held, as asked");
    assert_eq!(c.edge.lock().unwrap().by_id[&live[0]]["state"], "released");
    let (s, _) = c.hold(ga, None).await;
    assert_eq!(s, 201);
    let (s, _) = c.api.call(&c.clerk, Method::DELETE, &c.path("holds/h0-0000beef"), None).await;
    assert_eq!(s, 404, "not a box-office hold");
    let releases = c.audit_actions().await.iter().filter(|(a, _)| a == "box_office.release").count();
    assert_eq!(releases, 2);
}
