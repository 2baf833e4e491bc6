//! Event series against real PostgreSQL (docs/series.md): an event becomes a series' template, its
//! dates are added from a recurrence rule or a list (copies of the template, each its own event,
//! never twice at one start), published at once, listed in the public catalog with their series,
//! and reported per date and summed; another tenant sees none of it.

use crate::common::{two_tenants, Api};
use chrono::{DateTime, Duration, DurationRound, NaiveDate, TimeZone, Utc};
use chrono_tz::Europe::Berlin;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

/// A start a month from now on the hour, as the test's first date (dates must be in the future).
fn first_start() -> DateTime<Utc> {
    (Utc::now() + Duration::days(30)).duration_trunc(Duration::hours(1)).unwrap()
}

/// A venue with two zones of seats and a floor; an event at it starting `starts`, with a seated
/// tier priced by zone and a standing tier whose sale ends an hour before the start, a refund
/// policy, an on-sale time and two seats off sale.
pub(crate) async fn template_event(api: &Api, key: &str, starts: DateTime<Utc>) -> String {
    template_event_in(api, key, starts, "UTC").await
}

/// [`template_event`] at a venue in the time zone `zone`.
async fn template_event_in(api: &Api, key: &str, starts: DateTime<Utc>, zone: &str) -> String {
    let seats: Vec<Value> = (0..4)
        .map(|n| json!({ "id": format!("A-{n}"), "label": format!("{n}"), "x": n, "y": 0, "zone": if n < 2 { "front" } else { "std" } }))
        .collect();
    let venue = json!({
        "name": "Globe Hall", "city": "Berlin", "address": "Hauptstr. 1", "time_zone": zone,
        "zones": [{ "id": "front", "name": "Front" }, { "id": "std", "name": "Standard" }],
        "ga_areas": [{ "id": "floor", "name": "Floor", "capacity": 100 }],
        "sections": [{ "id": "A", "name": "Section A", "rows": [{ "label": "1", "seats": seats }] }],
    });
    let (s, v) = api.call(key, Method::POST, "/api/v1/venues", Some(venue)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let body = json!({ "venue_id": v["id"], "title": "Museum after dark", "genre": "exhibition",
                       "starts_at": starts, "ends_at": starts + Duration::hours(2), "color": "#1a7f37" });
    let (s, e) = api.call(key, Method::POST, "/api/v1/events", Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
    let id = e["id"].as_str().unwrap().to_owned();
    let tiers = [
        json!({ "name": "Seat", "kind": "seated", "currency": "EUR", "price_minor": 3000,
                "zone_prices": { "front": 4500 }, "quantity": 4, "per_order_limit": 4 }),
        json!({ "name": "Standing", "kind": "ga", "ga_area": "floor", "currency": "EUR", "price_minor": 1500,
                "quantity": 100, "sale_starts_at": starts - Duration::days(10), "sale_ends_at": starts - Duration::hours(1) }),
    ];
    for tier in tiers {
        let (s, t) = api.call(key, Method::POST, &format!("/api/v1/events/{id}/tiers"), Some(tier)).await;
        assert_eq!(s, StatusCode::CREATED, "{t}");
    }
    let calls = [
        (Method::PUT, "refund-policy", json!([{ "hours_before": 48, "percent": 100 }])),
        (
            Method::PUT,
            "waiting-room",
            json!({ "on_sale_at_ms": (starts - Duration::days(7)).timestamp_millis(), "paused": true }),
        ),
        (Method::PUT, "seats-off-sale", json!(["A-3"])),
    ];
    for (method, path, body) in calls {
        let (s, answer) = api.call(key, method, &format!("/api/v1/events/{id}/{path}"), Some(body)).await;
        assert_eq!(s, StatusCode::OK, "{path}: {answer}");
    }
    id
}

async fn event_row(db: &PgPool, id: &str) -> Value {
    sqlx::query_scalar(
        "SELECT jsonb_build_object('title', title, 'color', color, 'refund_policy', refund_policy, 'off_sale_seats', off_sale_seats,
                                   'waiting_room', waiting_room, 'state', state, 'series_id', series_id, 'venue_id', venue_id,
                                   'starts_at', starts_at, 'ends_at', ends_at,
                                   'tiers', (SELECT jsonb_agg(jsonb_build_object('name', name, 'kind', kind, 'price_minor', price_minor,
                                             'zone_prices', zone_prices, 'quantity', quantity, 'sale_starts_at', sale_starts_at,
                                             'sale_ends_at', sale_ends_at, 'id', id) ORDER BY created_at, id)
                                             FROM ticket_tiers WHERE event_id = events.id))
         FROM events WHERE id = $1::uuid",
    )
    .bind(id)
    .fetch_one(db)
    .await
    .unwrap()
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str().unwrap().parse().unwrap()
}

#[sqlx::test]
async fn a_series_adds_its_dates_from_a_rule_or_a_list_each_a_copy_of_its_template_and_never_twice(
    db: PgPool,
) {
    let api = Api::start(db.clone()).await;
    let (root, [(org, acme), (_, globex)]) = two_tenants(&api).await;
    let first = first_start();
    let template = template_event(&api, &acme, first).await;

    // The event becomes the series' template and its first date; once only.
    let (s, series) =
        api.call(&acme, Method::POST, "/api/v1/series", Some(json!({ "from_event": template }))).await;
    assert_eq!(s, StatusCode::CREATED, "{series}");
    assert_eq!(
        (series["title"].as_str(), series["sale_windows"].as_str()),
        (Some("Museum after dark"), Some("relative"))
    );
    let sid = series["id"].as_str().unwrap().to_owned();
    let (s, again) =
        api.call(&acme, Method::POST, "/api/v1/series", Some(json!({ "from_event": template }))).await;
    assert_eq!((s, again["reason"].as_str()), (StatusCode::CONFLICT, Some("already_in_series")), "{again}");
    let (s, other) =
        api.call(&globex, Method::POST, "/api/v1/series", Some(json!({ "from_event": template }))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "another tenant's event: {other}");
    assert_eq!(api.count("event_series").await, 1);

    // Daily at the template's hour for six days but the third: five dates, the first the template.
    let rule = json!({ "rule": "FREQ=DAILY;COUNT=6", "first": first.naive_utc(),
                       "skip_days": [(first + Duration::days(2)).date_naive()] });
    let path = format!("/api/v1/series/{sid}/dates");
    let (s, added) = api.call(&acme, Method::POST, &path, Some(rule.clone())).await;
    assert_eq!(s, StatusCode::CREATED, "{added}");
    let created = added["created"].as_array().unwrap();
    assert_eq!(created.len(), 4, "{added}");
    assert_eq!(
        added["existing"][0]["id"].as_str(),
        Some(template.as_str()),
        "the template's start has its date"
    );
    let starts: Vec<DateTime<Utc>> = created.iter().map(|d| time(&d["starts_at"])).collect();
    let days: Vec<i64> = starts.iter().map(|s| (*s - first).num_days()).collect();
    assert_eq!(days, [1, 3, 4, 5]);

    // Each date is a draft copy: texts, colour, policy, seats off sale, tiers and prices, its
    // sale windows and on-sale time moved with it, its line not paused; its tiers its own.
    let t = event_row(&db, &template).await;
    for d in created {
        let row = event_row(&db, d["id"].as_str().unwrap()).await;
        let shift = time(&row["starts_at"]) - first;
        assert_eq!(time(&row["ends_at"]) - time(&row["starts_at"]), Duration::hours(2));
        for same in ["title", "color", "refund_policy", "off_sale_seats", "venue_id"] {
            assert_eq!(row[same], t[same], "{same}");
        }
        assert_eq!((row["state"].as_str(), row["series_id"].as_str()), (Some("draft"), Some(sid.as_str())));
        assert_eq!(row["waiting_room"]["paused"], false);
        assert_eq!(
            row["waiting_room"]["on_sale_at_ms"].as_i64().unwrap()
                - t["waiting_room"]["on_sale_at_ms"].as_i64().unwrap(),
            shift.num_milliseconds()
        );
        let (tiers, template_tiers) = (row["tiers"].as_array().unwrap(), t["tiers"].as_array().unwrap());
        assert_eq!(tiers.len(), 2);
        for (tier, of) in tiers.iter().zip(template_tiers) {
            for same in ["name", "kind", "price_minor", "zone_prices", "quantity"] {
                assert_eq!(tier[same], of[same], "{same}");
            }
            assert_ne!(tier["id"], of["id"]);
        }
        assert_eq!(time(&tiers[1]["sale_ends_at"]) - time(&template_tiers[1]["sale_ends_at"]), shift);
    }

    // The same rule again makes nothing (200, all existing); so does a replay by key.
    let (s, again) = api.call(&acme, Method::POST, &path, Some(rule.clone())).await;
    assert_eq!(
        (s, again["created"].as_array().unwrap().len(), again["existing"].as_array().unwrap().len()),
        (StatusCode::OK, 0, 5)
    );
    assert_eq!(sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events").fetch_one(&db).await.unwrap(), 5);

    // Fixed sale windows: a listed date keeps the template's own times, and its own length.
    let (s, patched) = api
        .call(
            &acme,
            Method::PATCH,
            &format!("/api/v1/series/{sid}"),
            Some(json!({ "sale_windows": "fixed", "title": "After dark" })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{patched}");
    let later = first + Duration::days(20);
    let list = json!({ "dates": [{ "starts_at": later, "ends_at": later + Duration::hours(3) }, { "starts_at": later + Duration::hours(4) }] });
    let (s, added) = api
        .call_with(&acme, Method::POST, &path, Some(list.clone()), &[("idempotency-key", "dates-1")])
        .await;
    assert_eq!(s, StatusCode::CREATED, "{added}");
    let (s, replay) =
        api.call_with(&acme, Method::POST, &path, Some(list), &[("idempotency-key", "dates-1")]).await;
    assert_eq!((s, &replay), (StatusCode::CREATED, &added), "a replay by key gets the first answer");
    let listed = event_row(&db, added["created"][0]["id"].as_str().unwrap()).await;
    assert_eq!(listed["tiers"][1]["sale_ends_at"], t["tiers"][1]["sale_ends_at"]);
    assert_eq!(listed["waiting_room"]["on_sale_at_ms"], t["waiting_room"]["on_sale_at_ms"]);
    assert_eq!(time(&listed["ends_at"]) - time(&listed["starts_at"]), Duration::hours(3));
    let second = event_row(&db, added["created"][1]["id"].as_str().unwrap()).await;
    assert_eq!(
        time(&second["ends_at"]) - time(&second["starts_at"]),
        Duration::hours(2),
        "the template's length"
    );

    // Bad requests name their field and add nothing.
    let before = api.count("events").await;
    let bad = [
        json!({ "rule": "FREQ=DAILY", "first": first.naive_utc() }),
        json!({ "rule": "FREQ=DAILY;COUNT=2\nRDATE:20300101T100000", "first": first.naive_utc() }),
        json!({ "dates": [{ "starts_at": Utc::now() - Duration::days(1) }] }),
        json!({ "dates": [{ "starts_at": later }], "rule": "FREQ=DAILY;COUNT=2", "first": first.naive_utc() }),
        json!({}),
        json!({ "rule": "FREQ=DAILY;COUNT=2", "first": first.naive_utc(), "minutes": 0 }),
    ];
    for body in bad {
        let (s, problem) = api.call(&acme, Method::POST, &path, Some(body.clone())).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {problem}");
        assert!(problem["errors"][0]["field"].is_string(), "{problem}");
    }
    assert_eq!(api.count("events").await, before);

    // A date does not move onto another's start.
    let (s, taken) = api
        .call(
            &acme,
            Method::PATCH,
            &format!("/api/v1/events/{}", created[0]["id"].as_str().unwrap()),
            Some(json!({ "starts_at": first, "ends_at": first + Duration::hours(1) })),
        )
        .await;
    assert_eq!((s, taken["reason"].as_str()), (StatusCode::CONFLICT, Some("date_taken")), "{taken}");

    // Dates listed by start, paged; the series with its dates by state.
    let (s, page) = api.get(&acme, &format!("/api/v1/series/{sid}/dates?limit=4")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(page["items"][0]["id"].as_str(), Some(template.as_str()));
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, rest) = api.get(&acme, &format!("/api/v1/series/{sid}/dates?limit=4&cursor={cursor}")).await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 3);
    let (_, view) = api.get(&acme, &format!("/api/v1/series/{sid}")).await;
    assert_eq!(
        (view["dates"].as_i64(), view["dates_by_state"]["draft"].as_i64()),
        (Some(7), Some(7)),
        "{view}"
    );
    assert_eq!(view["title"], "After dark");
    let (_, all) = api.get(&acme, "/api/v1/series").await;
    assert_eq!(all["items"].as_array().unwrap().len(), 1);

    // Another tenant sees and changes none of it; a scanner changes nothing.
    for (method, p, body) in [
        (Method::GET, format!("/api/v1/series/{sid}"), None),
        (Method::GET, format!("/api/v1/series/{sid}/dates"), None),
        (Method::GET, format!("/api/v1/series/{sid}/report"), None),
        (Method::PATCH, format!("/api/v1/series/{sid}"), Some(json!({ "title": "Mine" }))),
        (Method::POST, path.clone(), Some(rule.clone())),
        (Method::POST, format!("/api/v1/series/{sid}/state"), Some(json!({ "state": "published" }))),
    ] {
        let (s, _) = api.call(&globex, method, &p, body).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{p}");
    }
    let (_, globex_list) = api.get(&globex, "/api/v1/series").await;
    assert_eq!(globex_list["items"], json!([]));
    let (s, scanner) = api
        .add_user(&root, json!({ "email": "door@acme.test", "role": "scanner", "organization_id": org }))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{scanner}");
    let (_, scanner_key) = api.add_key(&root, &scanner).await;
    let scanner_key = scanner_key["key"].as_str().unwrap();
    let (s, _) = api.call(scanner_key, Method::POST, &path, Some(rule)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Each change is in the organization's log.
    let actions: Vec<String> =
        sqlx::query_scalar("SELECT action FROM audit_log WHERE action LIKE 'series.%' ORDER BY id")
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(actions, ["series.create", "series.dates", "series.dates", "series.update", "series.dates"]);
}

#[sqlx::test]
async fn a_series_publishes_at_once_shows_its_dates_to_buyers_and_reports_per_date_and_in_all(db: PgPool) {
    let api = Api::start(db.clone()).await;
    let (_, [(_, acme), (_, globex)]) = two_tenants(&api).await;
    let first = first_start();
    let template = template_event(&api, &acme, first).await;
    let (_, series) = api
        .call(
            &acme,
            Method::POST,
            "/api/v1/series",
            Some(json!({ "from_event": template, "title": "Slots" })),
        )
        .await;
    let sid = series["id"].as_str().unwrap().to_owned();
    let (s, added) = api
        .call(&acme, Method::POST, &format!("/api/v1/series/{sid}/dates"),
              Some(json!({ "rule": "FREQ=HOURLY;COUNT=4", "first": (first + Duration::days(1)).naive_utc(), "minutes": 45 })))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{added}");
    let dates: Vec<String> = std::iter::once(template.clone())
        .chain(added["created"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap().to_owned()))
        .collect();

    // Not yet in the catalog: a series of drafts is nobody's business.
    let (s, _) = api.get("", &format!("/api/v1/catalog/series/{sid}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // A date without tiers cannot be published: it is left, the others move, in one call.
    let bare = &dates[4];
    sqlx::query("DELETE FROM ticket_tiers WHERE event_id = $1::uuid").bind(bare).execute(&db).await.unwrap();
    let state = format!("/api/v1/series/{sid}/state");
    let stranger = Uuid::new_v4().to_string();
    let (s, _) = api.call(&acme, Method::POST, &state, Some(json!({ "state": "completed" }))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "a series' dates are not completed in bulk");
    let (s, moved) = api.call(&acme, Method::POST, &state, Some(json!({ "state": "published" }))).await;
    assert_eq!(s, StatusCode::OK, "{moved}");
    assert_eq!(moved["changed"].as_array().unwrap().len(), 4, "{moved}");
    assert_eq!(moved["left"], json!([{ "id": bare, "state": "draft", "reason": "no_tiers" }]));
    let pushes: i64 = sqlx::query_scalar("SELECT count(*) FROM edge_sync").fetch_one(&db).await.unwrap();
    assert_eq!(pushes, 4, "each published date is pushed to the edge");
    let named = json!({ "state": "on_sale", "dates": [dates[0], dates[1], stranger] });
    let (s, moved) = api.call(&acme, Method::POST, &state, Some(named)).await;
    assert_eq!(s, StatusCode::OK, "{moved}");
    assert_eq!(moved["changed"].as_array().unwrap().len(), 2);
    assert_eq!(moved["left"], json!([{ "id": stranger, "state": null, "reason": "not_in_series" }]));
    let (_, again) =
        api.call(&acme, Method::POST, &state, Some(json!({ "state": "on_sale", "dates": [dates[0]] }))).await;
    assert_eq!(again["left"][0]["reason"], "already");

    // The catalog: each date names its series; a search can show a series once, at its first date.
    let (_, all) = api.get("", "/api/v1/catalog/events").await;
    assert_eq!(all["items"].as_array().unwrap().len(), 4);
    assert!(all["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["series_id"] == sid.as_str() && e["series_dates"] == 4));
    let (_, once) = api.get("", "/api/v1/catalog/events?one_per_series=true").await;
    assert_eq!(once["items"].as_array().unwrap().len(), 1, "{once}");
    assert_eq!(
        (once["items"][0]["id"].as_str(), once["items"][0]["series_title"].as_str()),
        (Some(template.as_str()), Some("Slots"))
    );
    let from = (first + Duration::hours(1)).to_rfc3339();
    let (_, later) =
        api.get("", &format!("/api/v1/catalog/events?one_per_series=true&from={}", urlencode(&from))).await;
    assert_eq!(later["items"][0]["id"].as_str(), Some(dates[1].as_str()), "its first date the search finds");
    let (_, only) = api.get("", &format!("/api/v1/catalog/events?series={sid}&limit=2")).await;
    assert_eq!(only["items"].as_array().unwrap().len(), 2);

    // An event's answer lists its series' dates from its own on; the series' answer every date,
    // paged.
    let (s, one) = api.get("", &format!("/api/v1/catalog/events/{}", dates[2])).await;
    assert_eq!(s, StatusCode::OK);
    let next: Vec<&str> =
        one["series"]["next"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(next, [&dates[2], &dates[3]].map(String::as_str));
    assert_eq!(
        (one["series"]["dates"].as_i64(), one["series"]["path"].as_str()),
        (Some(4), Some(format!("/series/{sid}").as_str()))
    );
    assert_eq!(
        one["series"]["next"][1]["time_local"].as_str(),
        Some((first + Duration::hours(2)).format("%H:%M").to_string().as_str()),
        "the venue's time (UTC here) of the date after"
    );
    let (s, page) = api.get("", &format!("/api/v1/catalog/series/{sid}?limit=3")).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert_eq!(
        (page["title"].as_str(), page["venue_name"].as_str(), page["dates"].as_i64()),
        (Some("Slots"), Some("Globe Hall"), Some(4))
    );
    assert_eq!(page["items"][0]["buy_path"].as_str(), Some(format!("/events/{template}").as_str()));
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, rest) = api.get("", &format!("/api/v1/catalog/series/{sid}?limit=3&cursor={cursor}")).await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    let (s, _) = api.get("", &format!("/api/v1/catalog/series/{}", Uuid::new_v4())).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Reports: per date and summed, money per currency, from the projections.
    let tier_of = |event: &str| {
        let db = db.clone();
        let event = event.to_owned();
        async move {
            sqlx::query_scalar::<_, Uuid>(
                "SELECT id FROM ticket_tiers WHERE event_id = $1::uuid ORDER BY created_at LIMIT 1",
            )
            .bind(event)
            .fetch_one(&db)
            .await
            .unwrap()
        }
    };
    for (event, sold, gross) in [(&dates[0], 3, 9000), (&dates[1], 2, 6000)] {
        sqlx::query("INSERT INTO report_tier_minute (event_id, tier_id, minute, tickets_sold, gross_minor) VALUES ($1::uuid, $2, now(), $3, $4)")
            .bind(event)
            .bind(tier_of(event).await)
            .bind(sold)
            .bind(gross)
            .execute(&db)
            .await
            .unwrap();
        sqlx::query("INSERT INTO report_event_minute (event_id, minute, orders_created, orders_paid) VALUES ($1::uuid, now(), 2, 1)")
            .bind(event)
            .execute(&db)
            .await
            .unwrap();
    }
    let (s, report) = api.get(&acme, &format!("/api/v1/series/{sid}/report?limit=2")).await;
    assert_eq!(s, StatusCode::OK, "{report}");
    assert_eq!(report["dates"], 5);
    let totals = &report["totals"];
    assert_eq!(
        (totals["live_tickets"].as_i64(), totals["capacity"].as_i64()),
        (Some(5), Some(4 * 104)),
        "{totals}"
    );
    assert_eq!(
        (totals["money"][0]["currency"].as_str(), totals["money"][0]["gross_minor"].as_i64()),
        (Some("EUR"), Some(15000))
    );
    assert_eq!((totals["orders"]["created"].as_i64(), totals["orders"]["paid"].as_i64()), (Some(4), Some(2)));
    let per_date: Vec<(Option<&str>, Option<i64>)> = report["per_date"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["event_id"].as_str(), d["live_tickets"].as_i64()))
        .collect();
    assert_eq!(per_date, [(Some(dates[0].as_str()), Some(3)), (Some(dates[1].as_str()), Some(2))]);
    let next = report["next_cursor"].as_str().unwrap();
    let (_, rest) = api.get(&acme, &format!("/api/v1/series/{sid}/report?limit=2&cursor={next}")).await;
    assert_eq!(rest["per_date"][0]["event_id"].as_str(), Some(dates[2].as_str()));
    assert_eq!(rest["per_date"][0]["live_tickets"], 0);
    assert_eq!(rest["totals"], *totals, "the totals are the whole series' on every page");
    let (s, _) = api.get(&globex, &format!("/api/v1/series/{sid}/report")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

/// The first day at least ten days from now after which Berlin's clocks change (its offset at
/// noon differs from the next day's).
fn day_before_a_clock_change() -> NaiveDate {
    let noon = |d: NaiveDate| Berlin.from_local_datetime(&d.and_hms_opt(12, 0, 0).unwrap()).unwrap();
    let mut day = (Utc::now() + Duration::days(10)).date_naive();
    while noon(day).naive_utc() - noon(day).naive_local()
        == noon(day.succ_opt().unwrap()).naive_utc() - noon(day.succ_opt().unwrap()).naive_local()
    {
        day = day.succ_opt().unwrap();
    }
    day
}

#[sqlx::test]
async fn dates_keep_local_times_across_a_clock_change_free_cancelled_starts_and_report_each_currency(
    db: PgPool,
) {
    let api = Api::start(db.clone()).await;
    let (_, [(_, acme), _]) = two_tenants(&api).await;
    // Four days at 20:00 in Berlin, the clocks changing after the second.
    let first_day = day_before_a_clock_change().pred_opt().unwrap();
    let local = |d: NaiveDate, h: u32| {
        Berlin.from_local_datetime(&d.and_hms_opt(h, 0, 0).unwrap()).unwrap().with_timezone(&Utc)
    };
    let first = local(first_day, 20);
    let template = template_event_in(&api, &acme, first, "Europe/Berlin").await;
    let (_, series) =
        api.call(&acme, Method::POST, "/api/v1/series", Some(json!({ "from_event": template }))).await;
    let sid = series["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/series/{sid}/dates");
    let rule = json!({ "rule": "FREQ=DAILY;COUNT=4", "first": format!("{first_day}T20:00") });
    let (s, added) = api.call(&acme, Method::POST, &path, Some(rule.clone())).await;
    assert_eq!(s, StatusCode::CREATED, "{added}");
    let created = added["created"].as_array().unwrap().clone();
    assert_eq!(created.len(), 3);
    for (i, d) in created.iter().enumerate() {
        let day = first_day + Duration::days(i as i64 + 1);
        assert_eq!(time(&d["starts_at"]), local(day, 20), "20:00 local on day {i}");
        // Sales end at 19:00 local and the line opens a week before at 20:00 local, on every date.
        let row = event_row(&db, d["id"].as_str().unwrap()).await;
        assert_eq!(time(&row["tiers"][1]["sale_ends_at"]), local(day, 19), "{row}");
        let on_sale = row["waiting_room"]["on_sale_at_ms"].as_i64().unwrap();
        assert_eq!(on_sale, local(day - Duration::days(7), 20).timestamp_millis(), "{row}");
    }

    // A cancelled draft frees its start: the same rule again makes it anew. Drafts only.
    let last = created[2]["id"].as_str().unwrap().to_owned();
    let state = format!("/api/v1/series/{sid}/state");
    let (s, cancelled) =
        api.call(&acme, Method::POST, &state, Some(json!({ "state": "cancelled", "dates": [last] }))).await;
    assert_eq!((s, cancelled["changed"].as_array().map(Vec::len)), (StatusCode::OK, Some(1)), "{cancelled}");
    let pushed: i64 = sqlx::query_scalar("SELECT count(*) FROM edge_sync WHERE event_id = $1::uuid")
        .bind(&last)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(pushed, 0, "a draft was never at the edge: its cancellation is not pushed there");
    let (_, again) = api.call(&acme, Method::POST, &path, Some(rule)).await;
    assert_eq!(
        (again["created"].as_array().map(Vec::len), again["existing"].as_array().map(Vec::len)),
        (Some(1), Some(3)),
        "{again}"
    );
    let remade = again["created"][0]["id"].as_str().unwrap().to_owned();
    assert_ne!(remade, last);

    // Published, then on sale; a sold-out date opens again only when named; drafts only are
    // cancelled in bulk.
    let (_, published) = api.call(&acme, Method::POST, &state, Some(json!({ "state": "published" }))).await;
    assert_eq!(published["changed"].as_array().map(Vec::len), Some(4), "{published}");
    let (_, refused) = api.call(&acme, Method::POST, &state, Some(json!({ "state": "cancelled" }))).await;
    assert!(
        refused["left"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["reason"] == "not_a_draft" || l["reason"] == "already"),
        "{refused}"
    );
    assert_eq!(refused["changed"], json!([]));
    let (_, on_sale) = api.call(&acme, Method::POST, &state, Some(json!({ "state": "on_sale" }))).await;
    assert_eq!(on_sale["changed"].as_array().map(Vec::len), Some(4), "{on_sale}");
    let sold_out = created[0]["id"].as_str().unwrap().to_owned();
    sqlx::query("UPDATE events SET state = 'sold_out' WHERE id = $1::uuid")
        .bind(&sold_out)
        .execute(&db)
        .await
        .unwrap();
    let (_, all) = api.call(&acme, Method::POST, &state, Some(json!({ "state": "on_sale" }))).await;
    assert!(
        all["left"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["id"] == sold_out.as_str() && l["reason"] == "not_named"),
        "{all}"
    );
    let (_, named) =
        api.call(&acme, Method::POST, &state, Some(json!({ "state": "on_sale", "dates": [sold_out] }))).await;
    assert_eq!(named["changed"][0]["id"], sold_out.as_str(), "{named}");

    // The series' dates from a day of the venue's (not UTC's): from the second date's day.
    let second_day = first_day + Duration::days(1);
    let (s, page) = api.get("", &format!("/api/v1/catalog/series/{sid}?from_day={second_day}")).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert_eq!(page["items"][0]["id"], created[0]["id"], "{page}");
    let (s, bad) = api.get("", &format!("/api/v1/catalog/series/{sid}?from_day=2027-02-30")).await;
    assert_eq!((s, bad["errors"][0]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("from_day")));
    // A date's answer lists the dates from its own on.
    let (_, one) = api.get("", &format!("/api/v1/catalog/events/{remade}")).await;
    assert_eq!(one["series"]["next"][0]["id"].as_str(), Some(remade.as_str()), "{one}");

    // The report: money per currency; a cancelled date's places are not on sale.
    sqlx::query("UPDATE ticket_tiers SET currency = 'USD' WHERE event_id = $1::uuid")
        .bind(&remade)
        .execute(&db)
        .await
        .unwrap();
    for (event, gross) in [(&template, 4500), (&remade, 5000)] {
        sqlx::query(
            "INSERT INTO report_tier_minute (event_id, tier_id, minute, tickets_sold, gross_minor)
             SELECT $1::uuid, id, now(), 1, $2 FROM ticket_tiers WHERE event_id = $1::uuid ORDER BY created_at LIMIT 1",
        )
        .bind(event)
        .bind(gross)
        .execute(&db)
        .await
        .unwrap();
    }
    let (s, report) = api.get(&acme, &format!("/api/v1/series/{sid}/report")).await;
    assert_eq!(s, StatusCode::OK, "{report}");
    let money: Vec<(&str, i64)> = report["totals"]["money"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["currency"].as_str().unwrap(), m["gross_minor"].as_i64().unwrap()))
        .collect();
    assert_eq!(money, [("EUR", 4500), ("USD", 5000)]);
    assert_eq!(report["dates"], 5, "the cancelled date is one of its dates");
    assert_eq!(report["totals"]["capacity"], 4 * 104, "but its places are not on sale");
    assert_eq!(report["totals"]["live_tickets"], 2);
}
