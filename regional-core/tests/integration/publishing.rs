//! Publishing, on the core's side, against real PostgreSQL: what an event becomes at the edge (its
//! inventory and waiting-room settings), the queue of pushes, and retries with backoff when the edge
//! cannot be reached. (The push to a running edge in workerd is in `tests/tests/publishing.rs`.)

use crate::common;

use common::{two_tenants, Api};
use regional_core::edge_client::EdgeClient;
use regional_core::publishing;
use reqwest::{Method, StatusCode};
use serde_json::json;
use shared_types::token::TokenSigner;
use sqlx::PgPool;
use uuid::Uuid;

async fn published_event(api: &Api, key: &str) -> String {
    let venue = json!({
        "name": "Hall", "time_zone": "UTC",
        "zones": [{ "id": "front", "name": "Front" }, { "id": "back", "name": "Back" }],
        "ga_areas": [{ "id": "floor", "name": "Floor", "capacity": 100 }],
        "sections": [{ "id": "A", "name": "A", "rows": [{ "label": "1", "seats": [
            { "id": "A-1", "label": "1", "x": 0, "y": 0, "zone": "front" },
            { "id": "A-2", "label": "2", "x": 1, "y": 0, "zone": "back", "accessibility": ["wheelchair"] } ] }] }],
    });
    let (_, v) = api.call(key, Method::POST, "/api/v1/venues", Some(venue)).await;
    let body = json!({ "venue_id": v["id"], "title": "Gig", "starts_at": "2027-01-01T20:00:00Z", "ends_at": "2027-01-01T23:00:00Z" });
    let (_, e) = api.call(key, Method::POST, "/api/v1/events", Some(body)).await;
    let id = e["id"].as_str().unwrap().to_owned();
    let tiers = format!("/api/v1/events/{id}/tiers");
    let seated = json!({ "name": "Seats", "kind": "seated", "currency": "EUR", "price_minor": 3000, "zone_prices": { "front": 5000 }, "quantity": 2 });
    assert_eq!(api.call(key, Method::POST, &tiers, Some(seated)).await.0, StatusCode::CREATED);
    let ga = json!({ "name": "Standing", "kind": "ga", "ga_area": "floor", "currency": "EUR", "price_minor": 2000, "quantity": 80 });
    assert_eq!(api.call(key, Method::POST, &tiers, Some(ga)).await.0, StatusCode::CREATED);
    let room = json!({ "admit_per_minute": 120, "mode": "fifo", "bot": { "check": { "kind": "off" } } });
    let (s, r) = api.call(key, Method::PUT, &format!("/api/v1/events/{id}/waiting-room"), Some(room)).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let (s, e) = api
        .call(key, Method::POST, &format!("/api/v1/events/{id}/state"), Some(json!({ "state": "published" })))
        .await;
    assert_eq!(s, StatusCode::OK, "{e}");
    id
}

#[sqlx::test]
async fn a_published_event_becomes_a_valid_inventory_and_waiting_room(db: PgPool) {
    let api = Api::start(db.clone()).await;
    let (_, [(_, acme), _]) = two_tenants(&api).await;
    let id = published_event(&api, &acme).await;
    let (inventory, room) = publishing::definition(&db, id.parse().unwrap()).await.unwrap();
    inventory.validate().expect("the edge accepts what the core sends");
    assert_eq!(inventory.event.as_str(), id);
    assert_eq!(inventory.seat_map.seat_count(), 2);
    let price = |zone: &str| {
        inventory.seat_map.zones.iter().find(|z| z.id.as_str() == zone).unwrap().price.amount_minor
    };
    assert_eq!((price("front"), price("back")), (5000, 3000), "zone price, else the tier's price");
    assert_eq!(inventory.seat_map.seated_tiers.len(), 1);
    assert_eq!(inventory.seat_map.ga_tiers.len(), 1);
    assert_eq!(inventory.seat_map.ga_tiers[0].capacity, 80);
    assert_eq!(room.admit_per_minute, 120);
    let (_, event) = api.get(&acme, &format!("/api/v1/events/{id}")).await;
    assert_eq!(inventory.version, event["version"].as_u64().unwrap());
    assert_eq!(room.version, inventory.version, "both carry the event's version");
    // Queued for the edge.
    let (_, sync) = api.get(&acme, &format!("/api/v1/events/{id}/sync")).await;
    assert_eq!(sync["state"], "pending");
    assert_eq!(sync["wanted_version"], event["version"]);
    // A second seated tier goes to the edge with its own prices: buyers choose it per hold.
    let tiers = format!("/api/v1/events/{id}/tiers");
    let vip = json!({ "name": "VIP", "kind": "seated", "currency": "EUR", "price_minor": 9000, "zone_prices": { "back": 7000 }, "quantity": 2 });
    let (s, vip) = api.call(&acme, Method::POST, &tiers, Some(vip)).await;
    assert_eq!(s, StatusCode::CREATED, "{vip}");
    let (with_vip, _) = publishing::definition(&db, id.parse().unwrap()).await.unwrap();
    with_vip.validate().expect("the edge accepts every seated tier");
    let prices: Vec<(String, Vec<i64>)> = with_vip
        .seat_map
        .seated_tiers
        .iter()
        .map(|t| (t.name.clone(), t.prices.iter().map(|p| p.price.amount_minor).collect()))
        .collect();
    assert_eq!(prices, [("Seats".to_owned(), vec![5000, 3000]), ("VIP".to_owned(), vec![9000, 7000])]);
    assert_eq!(with_vip.seat_map.seated_tiers[1].id.as_str(), vip["id"].as_str().unwrap());
    let front = with_vip.seat_map.zones.iter().find(|z| z.id.as_str() == "front").unwrap();
    assert_eq!(front.price.amount_minor, 5000, "a zone's own price stays the first tier's");
}

#[sqlx::test]
async fn an_unreachable_edge_is_retried_with_backoff_and_the_failure_recorded(db: PgPool) {
    let api = Api::start(db.clone()).await;
    let (_, [(_, acme), _]) = two_tenants(&api).await;
    let id = published_event(&api, &acme).await;
    let signer = TokenSigner::from_seed("core-test", [7; 32]).unwrap();
    // Port 9 on loopback: nothing listens, every push fails at once.
    let edge = EdgeClient::new("http://127.0.0.1:9", signer);
    assert_eq!(publishing::sync_due(&db, &edge).await.unwrap(), 1);
    let (_, sync) = api.get(&acme, &format!("/api/v1/events/{id}/sync")).await;
    assert_eq!(sync["state"], "failing");
    assert_eq!(sync["attempts"], 1);
    assert!(sync["last_error"].as_str().unwrap().contains("unreachable"), "{sync}");
    // Not due again before its backoff.
    assert_eq!(publishing::sync_due(&db, &edge).await.unwrap(), 0);
    // The organizer may ask for a retry now; a draft cannot be synced.
    let (s, _) = api.call(&acme, Method::POST, &format!("/api/v1/events/{id}/sync"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(publishing::sync_due(&db, &edge).await.unwrap(), 1);
    let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM edge_sync WHERE event_id = $1")
        .bind(id.parse::<Uuid>().unwrap())
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(attempts, 1, "an asked-for retry starts counting again");
}

#[sqlx::test]
async fn the_demo_seeds_once_and_reissues_its_key(db: PgPool) {
    let first = regional_core::demo::seed(&db).await.unwrap();
    let second = regional_core::demo::seed(&db).await.unwrap();
    assert!(first.created && !second.created);
    assert_eq!(first.event, second.event, "one demo event, however often the run command starts");
    assert_eq!(first.on_sale_at.timestamp(), second.on_sale_at.timestamp());
    assert_ne!(first.organizer_key, second.organizer_key);
    let (inventory, room) = publishing::definition(&db, first.event).await.unwrap();
    inventory.validate().expect("a valid inventory");
    assert_eq!(inventory.seat_map.seat_count(), 400);
    assert_eq!(inventory.seat_map.ga_tiers[0].capacity, 300);
    assert_eq!(room.on_sale_at_ms, Some(first.on_sale_at.timestamp_millis()));
    let api = Api::start(db).await;
    let path = format!("/api/v1/events/{}", first.event);
    assert_eq!(api.get(&first.organizer_key, &path).await.1["reason"], "revoked");
    let (s, e) = api.get(&second.organizer_key, &path).await;
    assert_eq!((s, e["state"].as_str()), (StatusCode::OK, Some("on_sale")));
}

#[sqlx::test]
async fn a_price_or_title_change_of_a_published_event_is_queued_for_the_edge(db: PgPool) {
    let api = Api::start(db.clone()).await;
    let (_, [(_, acme), (_, globex)]) = two_tenants(&api).await;
    let id = published_event(&api, &acme).await;
    let (_, before) = api.get(&acme, &format!("/api/v1/events/{id}")).await;
    let (_, tiers) = api.get(&acme, &format!("/api/v1/events/{id}/tiers")).await;
    let tier = tiers["items"][0]["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/events/{id}/tiers/{tier}");
    let (s, t) =
        api.call(&acme, Method::PATCH, &path, Some(json!({ "zone_prices": { "front": 5500 } }))).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    let (s, e) = api
        .call(&acme, Method::PATCH, &format!("/api/v1/events/{id}"), Some(json!({ "title": "Gig (moved)" })))
        .await;
    assert_eq!(s, StatusCode::OK, "{e}");
    assert_eq!(e["version"].as_i64().unwrap(), before["version"].as_i64().unwrap() + 2);
    let (inventory, room) = publishing::definition(&db, id.parse().unwrap()).await.unwrap();
    assert_eq!(inventory.version as i64, e["version"].as_i64().unwrap());
    assert_eq!(
        inventory.seat_map.zones.iter().find(|z| z.id.as_str() == "front").unwrap().price.amount_minor,
        5500
    );
    assert_eq!(room.display_name, "Gig (moved)");
    let (_, sync) = api.get(&acme, &format!("/api/v1/events/{id}/sync")).await;
    assert_eq!(sync["wanted_version"], e["version"]);
    // Bad changes and other tenants change nothing.
    let (s, _) = api.call(&acme, Method::PATCH, &path, Some(json!({ "price_minor": -5 }))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        api.call(&globex, Method::PATCH, &path, Some(json!({ "price_minor": 1 }))).await.0,
        StatusCode::NOT_FOUND
    );
    let (s, _) = api
        .call(
            &acme,
            Method::PATCH,
            &format!("/api/v1/events/{id}"),
            Some(json!({ "ends_at": "2020-01-01T00:00:00Z" })),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, after) = api.get(&acme, &format!("/api/v1/events/{id}")).await;
    assert_eq!(after["version"], e["version"]);
}

#[sqlx::test]
async fn seats_taken_off_sale_are_marked_in_what_the_edge_gets(db: PgPool) {
    let api = Api::start(db.clone()).await;
    let (_, [(_, acme), (_, globex)]) = two_tenants(&api).await;
    let id = published_event(&api, &acme).await;
    let path = format!("/api/v1/events/{id}/seats-off-sale");
    let (s, p) = api.call(&acme, Method::PUT, &path, Some(json!(["A-2", "Z-9"]))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(p["errors"][0]["field"], "[1]");
    assert_eq!(api.call(&globex, Method::PUT, &path, Some(json!(["A-2"]))).await.0, StatusCode::NOT_FOUND);
    let (s, _) = api.call(&acme, Method::PUT, &path, Some(json!(["A-2"]))).await;
    assert_eq!(s, StatusCode::OK);
    let (inventory, _) = publishing::definition(&db, id.parse().unwrap()).await.unwrap();
    inventory.validate().unwrap();
    let off: Vec<&str> =
        inventory.seat_map.seats().filter(|(_, _, s)| s.off_sale).map(|(_, _, s)| s.id.as_str()).collect();
    assert_eq!(off, ["A-2"]);
    let (_, sync) = api.get(&acme, &format!("/api/v1/events/{id}/sync")).await;
    assert_eq!(sync["wanted_version"].as_u64().unwrap(), inventory.version);
}

#[sqlx::test]
async fn a_published_events_venue_may_gain_seats_but_not_lose_them(db: PgPool) {
    let api = Api::start(db.clone()).await;
    let (_, [(_, acme), _]) = two_tenants(&api).await;
    let id = published_event(&api, &acme).await;
    let (_, event) = api.get(&acme, &format!("/api/v1/events/{id}")).await;
    let venue = event["venue_id"].as_str().unwrap().to_owned();
    let put = |csv: &'static str| {
        let (http, base, key) = (api.http.clone(), api.base.clone(), acme.clone());
        let url = format!("{base}/api/v1/venues/{venue}/seats");
        async move {
            let resp = http
                .put(url)
                .bearer_auth(key)
                .header("content-type", "text/csv")
                .body(csv)
                .send()
                .await
                .unwrap();
            let status = resp.status();
            (status, resp.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (s, p) =
        put("section,row,seat,label,x,y,zone,accessibility,aisle_after\nA,1,A-1,1,0,0,front,,\n").await;
    assert_eq!(
        (s, p["reason"].as_str()),
        (StatusCode::CONFLICT, Some("venue_in_use")),
        "removing A-2 is refused"
    );
    let (s, v) = put(
        "section,row,seat,label,x,y,zone,accessibility,aisle_after\nA,1,A-1,1,0,0,front,,\nA,1,A-2,2,1,0,back,wheelchair,\nA,1,A-3,3,2,0,back,,\n",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (inventory, _) = publishing::definition(&db, id.parse().unwrap()).await.unwrap();
    assert_eq!(inventory.seat_map.seat_count(), 3, "the new seat goes to the edge");
    let (_, after) = api.get(&acme, &format!("/api/v1/events/{id}")).await;
    assert!(after["version"].as_i64() > event["version"].as_i64());
    let (_, sync) = api.get(&acme, &format!("/api/v1/events/{id}/sync")).await;
    assert_eq!(sync["wanted_version"], after["version"]);
}

#[sqlx::test]
async fn waiting_room_changes_name_only_what_changes_and_sale_settings_keep_the_edges_bounds(db: PgPool) {
    let api = Api::start(db.clone()).await;
    let (_, [(_, acme), _]) = two_tenants(&api).await;
    let id = published_event(&api, &acme).await;
    let path = format!("/api/v1/events/{id}/waiting-room");
    let sale = 4_000_000_000_000i64;
    let (s, r) =
        api.call(&acme, Method::PUT, &path, Some(json!({ "on_sale_at_ms": sale, "max_active": 50 }))).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    // During the sale the organizer lowers the per-buyer limit, naming only it: nothing else moves.
    let (s, r) = api.call(&acme, Method::PUT, &path, Some(json!({ "max_tickets_per_buyer": 2 }))).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(
        (
            r["on_sale_at_ms"].as_i64(),
            r["max_active"].as_u64(),
            r["admit_per_minute"].as_u64(),
            r["mode"].as_str()
        ),
        (Some(sale), Some(50), Some(120), Some("fifo")),
        "{r}"
    );
    assert_eq!(r["max_tickets_per_buyer"], 2);
    assert_eq!(r["bot"]["check"]["kind"], "off", "nested fields the patch does not name stay");
    // `null` resets one field to its default; unknown fields and bad values change nothing.
    let (s, r) = api.call(&acme, Method::PUT, &path, Some(json!({ "max_active": null }))).await;
    assert_eq!(
        (s, r["max_active"].as_u64(), r["on_sale_at_ms"].as_i64()),
        (StatusCode::OK, Some(1000), Some(sale))
    );
    for bad in [json!({ "no_such_field": 1 }), json!({ "max_tickets_per_buyer": 0 }), json!([1])] {
        let (s, p) = api.call(&acme, Method::PUT, &path, Some(bad.clone())).await;
        assert!(s.is_client_error(), "{bad}: {p}");
    }
    // The retired per-event address limit is refused by name (the platform's binding has it).
    let retired = json!({ "rate_limits": { "per_ip_per_minute": 5 } });
    let (s, p) = api.call(&acme, Method::PUT, &path, Some(retired)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    assert!(p.to_string().contains("rate_limits.per_ip_per_minute"), "{p}");
    let (room_json,): (serde_json::Value,) =
        sqlx::query_as("SELECT waiting_room FROM events WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(
        (room_json["max_tickets_per_buyer"].as_u64(), room_json["on_sale_at_ms"].as_i64()),
        (Some(2), Some(sale))
    );

    // Hold settings: the core takes exactly what the edge takes (60 per visitor was accepted here and
    // refused there, and every later push of the event failed with it).
    let settings = format!("/api/v1/events/{id}/sale-settings");
    let (s, p) = api
        .call(&acme, Method::PUT, &settings, Some(json!({ "holds": { "max_tickets_per_visitor": 60 } })))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    assert_eq!(p["errors"][0]["field"], "holds.max_tickets_per_visitor");
    let (s, _) = api
        .call(&acme, Method::PUT, &settings, Some(json!({ "holds": { "max_tickets_per_visitor": 50 } })))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (inventory, _) = publishing::definition(&db, id.parse().unwrap()).await.unwrap();
    inventory.validate().expect("the edge accepts what the core accepted");
}

/// A stand-in for the edge's `GET …/layout`: the inventory version it holds of each event (absent:
/// 404, as an edge that lost the event answers), or 503 for every event when `down`.
async fn fake_edge(held: std::collections::HashMap<String, u64>, down: bool) -> String {
    use axum::extract::Path;
    use axum::http::StatusCode as Code;
    use axum::response::IntoResponse;
    let held = std::sync::Arc::new(held);
    let app = axum::Router::new().route(
        "/internal/v1/events/{id}/layout",
        axum::routing::get(move |Path(id): Path<String>| {
            let held = held.clone();
            async move {
                match (down, held.get(&id)) {
                    (true, _) => Code::SERVICE_UNAVAILABLE.into_response(),
                    (false, Some(v)) => axum::Json(json!({ "inventory_version": v })).into_response(),
                    (false, None) => {
                        (Code::NOT_FOUND, axum::Json(json!({ "reason": "unpublished" }))).into_response()
                    }
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[sqlx::test]
async fn the_core_pushes_again_what_the_edge_lost_unless_it_has_orders(db: PgPool) {
    let api = Api::start(db.clone()).await;
    let (_, [(org, acme), _]) = two_tenants(&api).await;
    let (lost, older, kept) = (
        published_event(&api, &acme).await,
        published_event(&api, &acme).await,
        published_event(&api, &acme).await,
    );
    // A fourth has an order: the edge alone held what it sold, so it must never be pushed afresh.
    let sold = published_event(&api, &acme).await;
    sqlx::query(
        "INSERT INTO orders (id, organization_id, event_id, visitor_id, hold_id, idempotency_key, request_hash, email, state,
             currency, subtotal_minor, discount_minor, fee_minor, tax_minor, total_minor, hold_expires_at)
         VALUES ($1, $2, $3, 'v0123456789abcdef', 'h0-00000001', 'k', 'x', 'b@example.test', 'paid', 'EUR', 1, 0, 0, 0, 1, now())",
    )
    .bind(Uuid::new_v4())
    .bind(org.parse::<Uuid>().unwrap())
    .bind(sold.parse::<Uuid>().unwrap())
    .execute(&db)
    .await
    .unwrap();
    // The core records all four as pushed at their current version.
    sqlx::query("UPDATE edge_sync SET state = 'synced', synced_version = wanted_version, synced_at = now()")
        .execute(&db)
        .await
        .unwrap();
    // An event's (state, synced version) in the push queue.
    let sync_row = |id: &str| {
        let db = db.clone();
        let id: Uuid = id.parse().unwrap();
        async move {
            sqlx::query_as::<_, (String, i64)>(
                "SELECT state, synced_version FROM edge_sync WHERE event_id = $1",
            )
            .bind(id)
            .fetch_one(&db)
            .await
            .unwrap()
        }
    };
    let state = |id: &str| {
        let row = sync_row(id);
        async move { row.await.0 }
    };
    let version = |id: &str| {
        let row = sync_row(id);
        async move { row.await.1 }
    };
    let signer = TokenSigner::from_seed("core-test", [7; 32]).unwrap();

    // An edge that cannot be asked changes nothing, nor does a 404 that is not the edge saying it
    // does not know the event (an edge without the route yet, during a deploy).
    let elsewhere = format!("{}/elsewhere", fake_edge(Default::default(), false).await);
    let unknown_route = EdgeClient::new(&elsewhere, signer.clone());
    assert_eq!(publishing::check_edge(&db, &unknown_route).await.unwrap(), 0);
    assert_eq!(state(&lost).await, "synced");
    let down = EdgeClient::new(&fake_edge(Default::default(), true).await, signer.clone());
    assert_eq!(publishing::check_edge(&db, &down).await.unwrap(), 0);
    assert_eq!(state(&lost).await, "synced");

    // The edge lost two events and holds one at an older version: the two without orders are queued,
    // the one with orders is marked lost (and not pushed), the one held up to date is left alone.
    let held =
        [(older.clone(), version(&older).await as u64 - 1), (kept.clone(), version(&kept).await as u64)];
    let edge = EdgeClient::new(&fake_edge(held.into_iter().collect(), false).await, signer);
    assert_eq!(publishing::check_edge(&db, &edge).await.unwrap(), 2);
    assert_eq!(state(&sold).await, "lost");
    assert_eq!(
        (state(&lost).await, state(&older).await, state(&kept).await),
        ("pending".into(), "pending".into(), "synced".into())
    );
    let (_, sync) = api.get(&acme, &format!("/api/v1/events/{lost}/sync")).await;
    assert_eq!(sync["last_error"], "the edge no longer held this event", "{sync}");

    // The publisher pushes the queued ones, never the lost one.
    let due: Vec<Uuid> =
        sqlx::query_scalar("SELECT event_id FROM edge_sync WHERE state IN ('pending', 'failing')")
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(due.len(), 2, "{due:?}");
    assert_eq!(publishing::sync_due(&db, &edge).await.unwrap(), 2);
    assert_eq!(state(&sold).await, "lost");
    // A change of the lost event (a new version to push) leaves it lost.
    let (s, _) = api
        .call(&acme, Method::PUT, &format!("/api/v1/events/{sold}/seats-off-sale"), Some(json!(["A-1"])))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(state(&sold).await, "lost", "a change never pushes an event with orders afresh");

    // Asking for a push queues one even when the core records the event as synced.
    let (s, sync) = api.call(&acme, Method::POST, &format!("/api/v1/events/{kept}/sync"), None).await;
    assert_eq!((s, sync["state"].as_str()), (StatusCode::OK, Some("pending")), "{sync}");
    // And so does `regional-core republish`, for one event or all of them; not for the lost one
    // with orders, nor for an unknown event.
    sqlx::query("UPDATE edge_sync SET state = 'synced' WHERE state <> 'lost'").execute(&db).await.unwrap();
    assert_eq!(publishing::republish(&db, Some(kept.parse().unwrap())).await.unwrap(), 1);
    assert_eq!(publishing::republish(&db, None).await.unwrap(), 3, "all but the one with orders");
    assert_eq!(publishing::republish(&db, Some(sold.parse().unwrap())).await.unwrap(), 0);
    assert_eq!(publishing::republish(&db, Some(Uuid::new_v4())).await.unwrap(), 0);
    let (_, sync) = api.call(&acme, Method::POST, &format!("/api/v1/events/{sold}/sync"), None).await;
    assert_eq!(sync["state"], "lost", "asking does not push an event with orders afresh: {sync}");
}
