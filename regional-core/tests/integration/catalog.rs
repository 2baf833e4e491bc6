//! The catalog against real PostgreSQL: venues from JSON and CSV, events and their state machine,
//! ticket tiers; validation names the field, another tenant's catalog answers 404.

use crate::common;

use common::{two_tenants, Api};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;

fn venue_json(rows: usize, per_row: usize) -> Value {
    let seats = |s: &str, r: usize| -> Vec<Value> {
        (0..per_row)
            .map(|n| json!({ "id": format!("{s}-{r}-{n}"), "label": format!("{n}"), "x": n, "y": r, "zone": if r == 0 { "front" } else { "std" },
                             "accessibility": if n == 0 { json!(["wheelchair"]) } else { json!([]) } }))
            .collect()
    };
    let sections: Vec<Value> = ["A", "B"]
        .iter()
        .map(|s| {
            let rows: Vec<Value> =
                (0..rows).map(|r| json!({ "label": format!("{r}"), "seats": seats(s, r) })).collect();
            json!({ "id": s, "name": format!("Section {s}"), "rows": rows })
        })
        .collect();
    json!({
        "name": "Globe Hall", "city": "Berlin", "address": "Hauptstr. 1", "time_zone": "Europe/Berlin",
        "zones": [{ "id": "front", "name": "Front" }, { "id": "std", "name": "Standard" }],
        "ga_areas": [{ "id": "floor", "name": "Floor", "capacity": 500 }],
        "sections": sections,
    })
}

/// `PUT /api/v1/venues/{id}/seats` with a CSV body.
async fn put_csv(api: &Api, key: &str, venue: &str, csv: &'static str) -> reqwest::Response {
    let url = format!("{}/api/v1/venues/{venue}/seats", api.base);
    api.http.put(url).bearer_auth(key).header("content-type", "text/csv").body(csv).send().await.unwrap()
}

async fn venue(api: &Api, key: &str) -> String {
    let (s, v) = api.call(key, Method::POST, "/api/v1/venues", Some(venue_json(3, 10))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["id"].as_str().unwrap().to_owned()
}

async fn event(api: &Api, key: &str, venue: &str) -> String {
    let body = json!({ "venue_id": venue, "title": "Opening Night", "genre": "concert",
                       "starts_at": "2027-03-01T19:00:00Z", "ends_at": "2027-03-01T22:00:00Z",
                       "images": ["https://img.example/1.jpg"] });
    let (s, e) = api.call(key, Method::POST, "/api/v1/events", Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
    assert_eq!(e["state"], "draft");
    assert_eq!(e["time_zone"], "Europe/Berlin", "the venue's zone by default");
    e["id"].as_str().unwrap().to_owned()
}

#[sqlx::test]
async fn a_venue_imports_from_json_and_its_seat_map_reads_back(db: PgPool) {
    let api = Api::start(db).await;
    let (_, [(_, acme), _]) = two_tenants(&api).await;
    let id = venue(&api, &acme).await;
    let (s, v) = api.get(&acme, &format!("/api/v1/venues/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["seat_count"], 60);
    assert_eq!(v["sections"][1]["id"], "B");
    assert_eq!(v["sections"][1]["rows"][2]["seats"][9]["id"], "B-2-9");
    assert_eq!(v["sections"][0]["rows"][0]["seats"][0]["accessibility"], json!(["wheelchair"]));
    assert_eq!(v["ga_areas"][0]["capacity"], 500);
    let (_, list) = api.get(&acme, "/api/v1/venues").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

#[sqlx::test]
async fn a_bad_venue_is_refused_naming_each_field_and_nothing_is_stored(db: PgPool) {
    let api = Api::start(db).await;
    let (_, [(_, acme), _]) = two_tenants(&api).await;
    let mut bad = venue_json(1, 3);
    bad["time_zone"] = json!("nowhere at all");
    bad["sections"][1]["rows"][0]["seats"][0]["id"] = json!("A-0-1"); // taken in section A
    bad["sections"][0]["rows"][0]["seats"][2]["zone"] = json!("vip"); // no such zone
    bad["ga_areas"][0]["capacity"] = json!(0);
    let (s, p) = api.call(&acme, Method::POST, "/api/v1/venues", Some(bad)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> =
        p["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(
        fields,
        [
            "time_zone",
            "ga_areas[0].capacity",
            "sections[0].rows[0].seats[2].zone",
            "sections[1].rows[0].seats[0].id"
        ]
    );
    let (s, _) = api.call(&acme, Method::POST, "/api/v1/venues", Some(json!({ "name": "x" }))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "a missing required field is a malformed body");
    assert_eq!(api.count("venues").await, 0);
    assert_eq!(api.count("venue_seats").await, 0);
}

#[sqlx::test]
async fn seats_import_from_csv_and_duplicates_are_refused(db: PgPool) {
    let api = Api::start(db).await;
    let (_, [(_, acme), _]) = two_tenants(&api).await;
    let id = venue(&api, &acme).await;
    let csv = "section,row,seat,label,x,y,zone,accessibility,aisle_after\n\
               A,1,A-1-1,1,0,0,front,wheelchair;companion,false\n\
               A,1,A-1-2,2,1,0,front,,true\n\
               C,1,C-1-1,1,0,9,std,,\n";
    let resp = put_csv(&api, &acme, &id, csv).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["seat_count"], 3);
    let (_, full) = api.get(&acme, &format!("/api/v1/venues/{id}")).await;
    assert_eq!(full["sections"][0]["name"], "Section A", "known sections keep their names");
    assert_eq!(full["sections"][1]["id"], "C");
    assert_eq!(
        full["sections"][0]["rows"][0]["seats"][0]["accessibility"],
        json!(["wheelchair", "companion"])
    );
    // Two seats at one place: refused, and the seats stay as they were.
    let dup = "section,row,seat,label,x,y,zone,accessibility,aisle_after\nA,1,A-1-1,1,0,0,front,,\nA,1,A-1-9,1,0,0,front,,\n";
    let resp = put_csv(&api, &acme, &id, dup).await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(api.count("venue_seats").await, 3);
}

/// PostgreSQL's text cannot hold NUL: in a CSV, in the address or its query, it is refused as a
/// malformed request (not a 500 from the database), and nothing changes.
#[sqlx::test]
async fn nul_in_a_csv_or_the_address_is_refused_before_the_database(db: PgPool) {
    let api = Api::start(db).await;
    let (_, [(_, acme), _]) = two_tenants(&api).await;
    let id = venue(&api, &acme).await;
    let seats = api.count("venue_seats").await;
    let nul = "section,row,seat,label,x,y,zone,accessibility,aisle_after\nA,1,A-1-1,1\u{0},0,0,front,,\n";
    let resp = put_csv(&api, &acme, &id, nul).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let problem: Value = resp.json().await.unwrap();
    assert!(problem["type"].as_str().unwrap().ends_with("malformed-request"), "{problem}");
    assert_eq!(api.count("venue_seats").await, seats);
    for path in ["/api/v1/venues/%00", "/api/v1/venues?cursor=a%00b"] {
        let (s, problem) = api.get(&acme, path).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {problem}");
        assert!(problem["type"].as_str().unwrap().ends_with("malformed-request"), "{path}: {problem}");
    }
}

#[sqlx::test]
async fn events_follow_their_state_machine(db: PgPool) {
    let api = Api::start(db).await;
    let (_, [(_, acme), _]) = two_tenants(&api).await;
    let venue = venue(&api, &acme).await;
    let event = event(&api, &acme, &venue).await;
    let to = |state: &str| json!({ "state": state });
    let path = format!("/api/v1/events/{event}/state");
    // No tiers yet: cannot publish.
    let (s, p) = api.call(&acme, Method::POST, &path, Some(to("published"))).await;
    assert_eq!((s, p["reason"].as_str()), (StatusCode::CONFLICT, Some("no_tiers")));
    // Skipping a step is refused.
    let (s, p) = api.call(&acme, Method::POST, &path, Some(to("on_sale"))).await;
    assert_eq!((s, p["reason"].as_str()), (StatusCode::CONFLICT, Some("invalid_transition")));
    let tier = json!({ "name": "Standard", "kind": "seated", "currency": "EUR", "price_minor": 4500,
                       "zone_prices": { "front": 6500 }, "quantity": 60 });
    let (s, t) = api.call(&acme, Method::POST, &format!("/api/v1/events/{event}/tiers"), Some(tier)).await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    for state in ["published", "on_sale", "sold_out", "on_sale", "cancelled"] {
        let (s, e) = api.call(&acme, Method::POST, &path, Some(to(state))).await;
        assert_eq!(s, StatusCode::OK, "{state}: {e}");
        assert_eq!(e["state"], state);
    }
    // Cancelled is final.
    let (s, _) = api.call(&acme, Method::POST, &path, Some(to("on_sale"))).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = api.call(&acme, Method::POST, &path, Some(to("someday"))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, listed) = api.get(&acme, "/api/v1/events?state=cancelled").await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    let (_, none) = api.get(&acme, "/api/v1/events?state=draft").await;
    assert_eq!(none["items"].as_array().unwrap().len(), 0);
}

#[sqlx::test]
async fn an_events_colour_is_checked_normalized_changed_and_cleared(db: PgPool) {
    let api = Api::start(db).await;
    let (_, [(_, acme), _]) = two_tenants(&api).await;
    let venue = venue(&api, &acme).await;
    let body = |color: Value| {
        json!({ "venue_id": venue, "title": "Coloured", "starts_at": "2027-03-01T19:00:00Z",
                "ends_at": "2027-03-01T22:00:00Z", "color": color })
    };
    // Not a colour: refused naming the field, nothing stored.
    for bad in [json!("red"), json!("#12345"), json!("#1a7f37;}body{display:none"), json!(7)] {
        let (s, p) = api.call(&acme, Method::POST, "/api/v1/events", Some(body(bad.clone()))).await;
        assert!(s.is_client_error(), "{bad}: {s} {p}");
    }
    assert_eq!(api.count("events").await, 0);
    let (s, p) = api.call(&acme, Method::POST, "/api/v1/events", Some(body(json!("red")))).await;
    assert_eq!(
        (s, p["errors"][0]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("color")),
        "{p}"
    );
    // `#ABC` is kept as `#aabbcc`; a change replaces it, `null` clears it, absent keeps it.
    let (s, e) = api.call(&acme, Method::POST, "/api/v1/events", Some(body(json!("#ABC")))).await;
    assert_eq!((s, e["color"].as_str()), (StatusCode::CREATED, Some("#aabbcc")), "{e}");
    let path = format!("/api/v1/events/{}", e["id"].as_str().unwrap());
    let (_, e) = api.call(&acme, Method::PATCH, &path, Some(json!({ "color": "#1A7F37" }))).await;
    assert_eq!(e["color"], "#1a7f37");
    let (_, e) = api.call(&acme, Method::PATCH, &path, Some(json!({ "title": "Renamed" }))).await;
    assert_eq!(e["color"], "#1a7f37");
    let (_, e) = api.call(&acme, Method::PATCH, &path, Some(json!({ "color": null }))).await;
    assert_eq!(e["color"], Value::Null);
}

#[sqlx::test]
async fn tiers_are_validated_against_the_venue(db: PgPool) {
    let api = Api::start(db).await;
    let (_, [(_, acme), _]) = two_tenants(&api).await;
    let venue = venue(&api, &acme).await;
    let event = event(&api, &acme, &venue).await;
    let path = format!("/api/v1/events/{event}/tiers");
    let bad = json!({ "name": "", "kind": "ga", "ga_area": "floor", "currency": "eur", "price_minor": -1, "quantity": 900 });
    let (s, p) = api.call(&acme, Method::POST, &path, Some(bad)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> =
        p["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["name", "currency", "price_minor", "quantity"]);
    let bad_zone = json!({ "name": "VIP", "kind": "seated", "currency": "EUR", "price_minor": 1, "quantity": 1, "zone_prices": { "vip": 1 } });
    let (s, p) = api.call(&acme, Method::POST, &path, Some(bad_zone)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(p["errors"][0]["field"], "zone_prices.vip");
    let ga = json!({ "name": "Floor", "kind": "ga", "ga_area": "floor", "currency": "EUR", "price_minor": 3000, "quantity": 500 });
    assert_eq!(api.call(&acme, Method::POST, &path, Some(ga)).await.0, StatusCode::CREATED);
    let dollars = json!({ "name": "Floor USD", "kind": "ga", "ga_area": "floor", "currency": "USD", "price_minor": 3000, "quantity": 5 });
    let (s, p) = api.call(&acme, Method::POST, &path, Some(dollars)).await;
    assert_eq!(
        (s, p["errors"][0]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("currency")),
        "one currency per event"
    );
    let (_, tiers) = api.get(&acme, &path).await;
    assert_eq!(tiers["items"].as_array().unwrap().len(), 1);
    assert_eq!(api.count("ticket_tiers").await, 1);
}

#[sqlx::test]
async fn another_tenants_catalog_answers_404_and_scanners_cannot_create_events(db: PgPool) {
    let api = Api::start(db).await;
    let (_, [(_, acme), (_, globex)]) = two_tenants(&api).await;
    let venue = venue(&api, &acme).await;
    let event = event(&api, &acme, &venue).await;
    for (method, path, body) in [
        (Method::GET, format!("/api/v1/venues/{venue}"), None),
        (Method::GET, format!("/api/v1/events/{event}"), None),
        (Method::GET, format!("/api/v1/events/{event}/tiers"), None),
        (Method::POST, format!("/api/v1/events/{event}/state"), Some(json!({ "state": "cancelled" }))),
        (
            Method::POST,
            format!("/api/v1/events/{event}/tiers"),
            Some(
                json!({ "name": "x", "kind": "ga", "ga_area": "floor", "currency": "EUR", "price_minor": 1, "quantity": 1 }),
            ),
        ),
    ] {
        let (s, p) = api.call(&globex, method.clone(), &path, body).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{method} {path}: {p}");
    }
    // Globex cannot put an event in Acme's venue either.
    let body = json!({ "venue_id": venue, "title": "Squat", "starts_at": "2027-03-01T19:00:00Z", "ends_at": "2027-03-01T22:00:00Z" });
    let (s, p) = api.call(&globex, Method::POST, "/api/v1/events", Some(body.clone())).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(p["errors"][0]["field"], "venue_id");
    // A scanner of Acme cannot create events.
    let (_, user) = api.add_user(&acme, json!({ "email": "gate@acme.test", "role": "scanner" })).await;
    let (_, key) = api.add_key(&acme, &user).await;
    let scanner = key["key"].as_str().unwrap();
    let mut mine = body;
    mine["venue_id"] = json!(venue);
    let (s, _) = api.call(scanner, Method::POST, "/api/v1/events", Some(mine)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(api.count("events").await, 1);
}

#[sqlx::test]
async fn buyers_search_published_events_without_a_key_and_see_tiers_and_prices(db: PgPool) {
    let api = Api::start(db).await;
    let (_, [(_, acme), (_, globex)]) = two_tenants(&api).await;
    let tier = json!({ "name": "Standard", "kind": "seated", "currency": "EUR", "price_minor": 4500, "zone_prices": { "front": 6500 }, "quantity": 60 });
    let mut published = Vec::new();
    for (key, title, genre, starts) in [
        (&acme, "Jazz Night", "jazz", "2027-03-01T19:00:00Z"),
        (&acme, "Rock Festival", "rock", "2027-04-01T19:00:00Z"),
        (&globex, "Late Jazz Session", "jazz", "2027-05-01T19:00:00Z"),
        (&globex, "Draft Only", "jazz", "2027-06-01T19:00:00Z"),
    ] {
        let venue = venue(&api, key).await;
        let body = json!({ "venue_id": venue, "title": title, "genre": genre, "starts_at": starts, "ends_at": "2027-12-31T23:00:00Z" });
        let (_, e) = api.call(key, Method::POST, "/api/v1/events", Some(body)).await;
        let id = e["id"].as_str().unwrap().to_owned();
        api.call(key, Method::POST, &format!("/api/v1/events/{id}/tiers"), Some(tier.clone())).await;
        if title != "Draft Only" {
            let (s, _) = api
                .call(
                    key,
                    Method::POST,
                    &format!("/api/v1/events/{id}/state"),
                    Some(json!({ "state": "published" })),
                )
                .await;
            assert_eq!(s, StatusCode::OK);
            published.push(id);
        }
    }
    let get = |path: String| {
        let http = api.http.clone();
        let base = api.base.clone();
        async move {
            let resp = http.get(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(resp.headers()["cache-control"], "public, max-age=30");
            let status = resp.status();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    let titles = |v: &Value| {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["title"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let (s, all) = get("/api/v1/catalog/events".into()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        titles(&all),
        ["Jazz Night", "Rock Festival", "Late Jazz Session"],
        "drafts are not listed; by start time"
    );
    let first = &all["items"][0];
    let local = first["starts_local"].as_str().unwrap_or_default();
    assert!(
        local.contains("2027") && local.contains(':'),
        "the start in the event's zone, readable: {first}"
    );
    assert_eq!(
        titles(&get("/api/v1/catalog/events?q=jazz".into()).await.1),
        ["Jazz Night", "Late Jazz Session"]
    );
    assert_eq!(titles(&get("/api/v1/catalog/events?genre=ROCK".into()).await.1), ["Rock Festival"]);
    assert_eq!(
        titles(
            &get(
                "/api/v1/catalog/events?city=berlin&from=2027-03-15T00:00:00Z&to=2027-04-15T00:00:00Z".into()
            )
            .await
            .1
        ),
        ["Rock Festival"]
    );
    let (_, first) = get("/api/v1/catalog/events?limit=2".into()).await;
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    assert_eq!(
        titles(&get(format!("/api/v1/catalog/events?limit=2&cursor={cursor}")).await.1),
        ["Late Jazz Session"]
    );
    let (s, one) = get(format!("/api/v1/catalog/events/{}", published[0])).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(one["tiers"][0]["zone_prices"]["front"], 6500);
    assert_eq!(
        one["tiers"][0]["price_range"],
        json!({ "min_minor": 4500, "max_minor": 6500 }),
        "the base price in the zone the tier gives no price, its own in the other"
    );
    assert_eq!(one["zones"][0], json!({ "id": "front", "name": "Front" }));
    assert_eq!(one["tiers"][0]["sale_state"], "on_sale");
    assert_eq!(one["buy_path"], format!("/events/{}", published[0]));
    assert_eq!(one["city"], "Berlin");
    // Drafts are not public.
    let (_, drafts) = api.get(&globex, "/api/v1/events?state=draft").await;
    let draft = drafts["items"][0]["id"].as_str().unwrap().to_owned();
    let resp = api.http.get(format!("{}/api/v1/catalog/events/{draft}", api.base)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    // An event that is over is listed only when asked for by date (the front page shows what is
    // still to come).
    sqlx::query(
        "UPDATE events SET starts_at = now() - interval '3 hours', ends_at = now() - interval '1 hour'
         WHERE title = 'Jazz Night'",
    )
    .execute(&api.db)
    .await
    .unwrap();
    assert_eq!(titles(&get("/api/v1/catalog/events".into()).await.1), ["Rock Festival", "Late Jazz Session"]);
    assert_eq!(
        titles(&get("/api/v1/catalog/events?from=2000-01-01T00:00:00Z".into()).await.1),
        ["Jazz Night", "Rock Festival", "Late Jazz Session"]
    );
}

#[sqlx::test]
async fn promo_codes_and_refund_policies_are_validated_and_scoped(db: PgPool) {
    let api = Api::start(db).await;
    let (_, [(_, acme), (_, globex)]) = two_tenants(&api).await;
    let venue = venue(&api, &acme).await;
    let event = event(&api, &acme, &venue).await;
    let (_, tier) = api
        .call(&acme, Method::POST, &format!("/api/v1/events/{event}/tiers"), Some(json!({ "name": "Std", "kind": "seated", "currency": "EUR", "price_minor": 4500, "quantity": 60 })))
        .await;
    let codes = format!("/api/v1/events/{event}/promo-codes");
    let good = json!({ "code": "EARLY-20", "kind": "percent", "percent_off": 20, "max_uses": 100, "per_buyer_limit": 2,
                       "valid_from": "2027-01-01T00:00:00Z", "valid_until": "2027-02-01T00:00:00Z", "tier_ids": [tier["id"]] });
    let (s, code) = api.call(&acme, Method::POST, &codes, Some(good.clone())).await;
    assert_eq!(s, StatusCode::CREATED, "{code}");
    assert_eq!(code["uses"], 0);
    let (s, p) = api.call(&acme, Method::POST, &codes, Some(good)).await;
    assert_eq!((s, p["reason"].as_str()), (StatusCode::CONFLICT, Some("code_taken")));
    let bad = json!({ "code": "x", "kind": "amount", "percent_off": 5, "max_uses": 0, "tier_ids": [uuid::Uuid::new_v4()] });
    let (s, p) = api.call(&acme, Method::POST, &codes, Some(bad)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> =
        p["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["code", "amount_off_minor", "currency", "percent_off", "max_uses", "tier_ids[0]"]);
    let amount = json!({ "code": "TENOFF", "kind": "amount", "amount_off_minor": 1000, "currency": "EUR" });
    assert_eq!(api.call(&acme, Method::POST, &codes, Some(amount)).await.0, StatusCode::CREATED);
    let (_, listed) = api.get(&acme, &codes).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    let (s, off) =
        api.call(&acme, Method::DELETE, &format!("{codes}/{}", code["id"].as_str().unwrap()), None).await;
    assert_eq!((s, off["active"].as_bool()), (StatusCode::OK, Some(false)));
    // Another tenant sees none of it.
    assert_eq!(api.get(&globex, &codes).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        api.call(&globex, Method::DELETE, &format!("{codes}/{}", code["id"].as_str().unwrap()), None).await.0,
        StatusCode::NOT_FOUND
    );

    let policy = format!("/api/v1/events/{event}/refund-policy");
    let (s, _) = api
        .call(
            &acme,
            Method::PUT,
            &policy,
            Some(json!([{ "hours_before": 168, "percent": 100 }, { "hours_before": 24, "percent": 50 }])),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, e) = api.get(&acme, &format!("/api/v1/events/{event}")).await;
    assert_eq!(e["refund_policy"][1]["percent"], 50);
    let (s, p) = api
        .call(
            &acme,
            Method::PUT,
            &policy,
            Some(json!([{ "hours_before": 24, "percent": 50 }, { "hours_before": 48, "percent": 100 }])),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(p["errors"][0]["field"], "[1].hours_before");
    assert_eq!(api.call(&globex, Method::PUT, &policy, Some(json!([]))).await.0, StatusCode::NOT_FOUND);
    // What is wrong with the route comes before what is wrong with the body: another tenant's
    // event (or tier) is a 404 and a closed event a 409, whatever the body says.
    let tier_path = format!("/api/v1/events/{event}/tiers/{}", tier["id"].as_str().unwrap());
    let junk = Some(json!({ "no_such_field": true }));
    assert_eq!(api.call(&globex, Method::PATCH, &tier_path, junk.clone()).await.0, StatusCode::NOT_FOUND);
    let no_tier = format!("/api/v1/events/{event}/tiers/not-a-tier");
    assert_eq!(api.call(&acme, Method::PATCH, &no_tier, junk.clone()).await.0, StatusCode::NOT_FOUND);
    let state = format!("/api/v1/events/{event}/state");
    let (s, _) = api.call(&acme, Method::POST, &state, Some(json!({ "state": "cancelled" }))).await;
    assert_eq!(s, StatusCode::OK);
    let (s, p) = api.call(&acme, Method::PUT, &policy, Some(json!({ "not": "windows" }))).await;
    assert_eq!((s, p["reason"].as_str()), (StatusCode::CONFLICT, Some("event_closed")));
}
