//! Publishing from the core to a running edge (the real core binary, wrangler dev, PostgreSQL): an
//! event published while the edge is down is retried and its failure recorded; once the edge is up,
//! the edge holds exactly the published definition; a later change is pushed without disturbing a
//! live hold, nor does taking its seat off sale; an edge that lost its storage gets the event again
//! (found by the core's check, and by `regional-core republish`).

use std::time::{Duration, Instant};

use e2e::{core_command, drop_database, get_json, start_core_with, start_edge_with_keys, Admin, Setup};
use regional_core::edge_client::EdgeClient;
use serde_json::{json, Value};
use shared_types::internal_api::InternalRoute;

#[tokio::test]
async fn publishing_reaches_the_edge_retries_while_it_is_down_and_keeps_live_holds() {
    let Setup { dir, db_name, db_url: db, keys, core_port, edge_port, edge_url, .. } =
        Setup::new("publishing");
    let core = start_core_with(
        core_port,
        &db,
        true,
        &dir,
        &[
            ("CORE_SIGNING_KEY", keys.core_signing_key()),
            ("EDGE_URL", edge_url.clone()),
            ("EDGE_CHECK_SECS", "1".to_owned()),
        ],
    );
    core.wait_ready("/healthz", Duration::from_secs(60)).await;
    let root = Admin::root(&core.url(), &db);

    // An organization, its admin, a venue with two seats and a GA area, an event with two tiers.
    let acme = root.organization("Acme", "acme").await;
    let venue = acme
        .ok(
            reqwest::Method::POST,
            "/api/v1/venues",
            json!({ "name": "Hall", "time_zone": "UTC", "zones": [{ "id": "std", "name": "Standard" }],
                    "ga_areas": [{ "id": "floor", "name": "Floor", "capacity": 100 }],
                    "sections": [{ "id": "A", "name": "A", "rows": [{ "label": "1", "seats": [
                        { "id": "A-1", "label": "1", "x": 0, "y": 0, "zone": "std" },
                        { "id": "A-2", "label": "2", "x": 1, "y": 0, "zone": "std" } ] }] }] }),
        )
        .await;
    let event = acme
        .ok(
            reqwest::Method::POST,
            "/api/v1/events",
            json!({ "venue_id": venue["id"], "title": "Gig", "starts_at": "2027-01-01T20:00:00Z", "ends_at": "2027-01-01T23:00:00Z" }),
        )
        .await;
    let id = event["id"].as_str().unwrap().to_owned();
    let tiers = format!("/api/v1/events/{id}/tiers");
    acme.ok(
        reqwest::Method::POST,
        &tiers,
        json!({ "name": "Seats", "kind": "seated", "currency": "EUR", "price_minor": 4000, "quantity": 2 }),
    )
    .await;
    acme.ok(reqwest::Method::POST, &tiers, json!({ "name": "Standing", "kind": "ga", "ga_area": "floor", "currency": "EUR", "price_minor": 2500, "quantity": 60 }))
        .await;
    acme.ok(
        reqwest::Method::PUT,
        &format!("/api/v1/events/{id}/waiting-room"),
        json!({ "mode": "passthrough", "bot": { "check": { "kind": "off" } } }),
    )
    .await;

    // 1. Published while the edge is down: the push fails, is recorded, and waits to be retried.
    acme.ok(reqwest::Method::POST, &format!("/api/v1/events/{id}/state"), json!({ "state": "published" }))
        .await;
    let failing = acme.sync_until(&id, Duration::from_secs(20), |s| s["state"] == "failing").await;
    assert!(failing["attempts"].as_i64().unwrap() >= 1);
    assert!(failing["last_error"].as_str().unwrap().contains("unreachable"), "{failing}");

    // 2. The edge comes up; the retry (asked for now rather than waiting out the backoff) lands.
    let edge =
        start_edge_with_keys(edge_port, &core.url(), &dir.join("do-state"), &dir, &keys.edge_env_file(&dir));
    edge.wait_ready("/healthz", Duration::from_secs(120)).await;
    acme.ok(reqwest::Method::POST, &format!("/api/v1/events/{id}/sync"), json!({})).await;
    let (_, current) = acme.call(reqwest::Method::GET, &format!("/api/v1/events/{id}"), None).await;
    let version = current["version"].as_i64().unwrap();
    let synced = acme.sync_until(&id, Duration::from_secs(60), |s| s["state"] == "synced").await;
    assert_eq!(
        synced["synced_version"],
        version,
        "{synced}\nedge log:\n{}\ncore log:\n{}",
        edge.log_tail(),
        core.log_tail()
    );

    // The edge holds exactly what was published.
    let client = EdgeClient::new(&edge.url(), keys.core.clone());
    let stats = client.send(&id.to_string(), &InternalRoute::Stats, vec![]).await.unwrap();
    assert_eq!(stats["totals"]["capacity"], 2 + 60, "{stats}");
    assert_eq!(stats["shards"][0]["stats"]["inventory_version"], version);
    let availability = get_json(&format!("{}/api/v1/events/{id}/availability", edge.url()), None).await;
    assert_eq!(availability["seats"], "aa");
    assert_eq!(availability["tiers"][0][1]["capacity"], 60);
    let room = client.send(&id.to_string(), &InternalRoute::WaitingRoom, vec![]).await.unwrap();
    assert_eq!(room["view"]["settings"]["mode"], "passthrough");
    assert_eq!(room["view"]["settings"]["version"], version);

    // 3. A buyer holds a seat (through the line: passthrough lets them straight in).
    let buyer = e2e::http_builder().user_agent("e2e-buyer/1").build().unwrap();
    let queue = format!("{}/api/v1/events/{id}/queue", edge.url());
    let joined: Value = buyer.post(&queue).json(&json!({})).send().await.unwrap().json().await.unwrap();
    let ticket = joined["ticket"].as_str().unwrap_or_else(|| panic!("join: {joined}"));
    let admitted: Value = buyer.get(&queue).bearer_auth(ticket).send().await.unwrap().json().await.unwrap();
    let admission = admitted["admission_token"].as_str().unwrap_or_else(|| panic!("admission: {admitted}"));
    let hold = buyer
        .post(format!("{}/api/v1/events/{id}/holds", edge.url()))
        .bearer_auth(admission)
        .json(&json!({ "kind": "seats", "seats": ["A-1"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(hold.status(), 201);
    let hold: Value = hold.json().await.unwrap();
    let hold_id = hold["hold"]["id"].as_str().unwrap().to_owned();

    // 4. The organizer adds a tier: pushed as a new version, and the live hold is untouched.
    acme.ok(reqwest::Method::POST, &tiers, json!({ "name": "Late", "kind": "ga", "ga_area": "floor", "currency": "EUR", "price_minor": 3500, "quantity": 20 }))
        .await;
    let (_, current) = acme.call(reqwest::Method::GET, &format!("/api/v1/events/{id}"), None).await;
    let newer = current["version"].as_i64().unwrap();
    assert!(newer > version);
    acme.sync_until(&id, Duration::from_secs(30), |s| s["state"] == "synced" && s["synced_version"] == newer)
        .await;
    let stats = client.send(&id.to_string(), &InternalRoute::Stats, vec![]).await.unwrap();
    assert_eq!(stats["totals"]["capacity"], 2 + 60 + 20);
    assert_eq!(stats["totals"]["held"], 1);
    let still =
        client.send(&id.to_string(), &InternalRoute::Hold(hold_id.to_string()), vec![]).await.unwrap();
    assert_eq!(still["state"], "held", "{still}");

    // 5. Both seats taken off sale: the held one keeps its hold, the free one is no longer sold.
    acme.ok(reqwest::Method::PUT, &format!("/api/v1/events/{id}/seats-off-sale"), json!(["A-1", "A-2"]))
        .await;
    let (_, current) = acme.call(reqwest::Method::GET, &format!("/api/v1/events/{id}"), None).await;
    let newest = current["version"].as_i64().unwrap();
    acme.sync_until(&id, Duration::from_secs(30), |s| {
        s["state"] == "synced" && s["synced_version"] == newest
    })
    .await;
    let still =
        client.send(&id.to_string(), &InternalRoute::Hold(hold_id.to_string()), vec![]).await.unwrap();
    assert_eq!(still["state"], "held", "{still}");
    let availability = get_json(&format!("{}/api/v1/events/{id}/availability", edge.url()), None).await;
    assert_eq!(availability["seats"], "hx");

    // 6. With someone in the line, a change the edge would refuse (the mode of a started sale) is
    //    refused by the core before it answers, with the edge's reason, and changes nothing; a change
    //    naming only the ticket limit keeps every other field and reaches the edge.
    let room_path = format!("/api/v1/events/{id}/waiting-room");
    let (status, refused) =
        acme.call(reqwest::Method::PUT, &room_path, Some(json!({ "mode": "fifo" }))).await;
    assert_eq!((status, refused["reason"].as_str()), (409, Some("sale_started")), "{refused}");
    acme.ok(reqwest::Method::PUT, &room_path, json!({ "max_tickets_per_buyer": 2 })).await;
    let (_, current) = acme.call(reqwest::Method::GET, &format!("/api/v1/events/{id}"), None).await;
    let limited = current["version"].as_i64().unwrap();
    acme.sync_until(&id, Duration::from_secs(30), |s| {
        s["state"] == "synced" && s["synced_version"] == limited
    })
    .await;
    let room = client.send(&id.to_string(), &InternalRoute::WaitingRoom, vec![]).await.unwrap();
    let settings = &room["view"]["settings"];
    assert_eq!(
        (settings["mode"].as_str(), settings["max_tickets_per_buyer"].as_u64()),
        (Some("passthrough"), Some(2))
    );

    // 7. The edge loses its storage (a reset, a new account) while the core records the event as
    //    synced: the core's check finds the edge without it and pushes it again.
    drop(edge);
    std::fs::remove_dir_all(dir.join("do-state")).unwrap();
    let edge =
        start_edge_with_keys(edge_port, &core.url(), &dir.join("do-state"), &dir, &keys.edge_env_file(&dir));
    edge.wait_ready("/healthz", Duration::from_secs(120)).await;
    let availability_url = format!("{}/api/v1/events/{id}/availability", edge.url());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let back = get_json(&availability_url, None).await;
        if back["seats"].is_string() {
            // Both seats off sale, as defined; the hold went with the lost storage.
            assert_eq!(back["seats"], "xx", "the definition pushed again");
            break;
        }
        assert!(Instant::now() < deadline, "the edge never got the event back: {back}\n{}", core.log_tail());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The waiting room's push follows the inventory's: wait for it too.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let room = client.send(&id.to_string(), &InternalRoute::WaitingRoom, vec![]).await.ok();
        let settings = room.as_ref().map(|r| r["view"]["settings"]["max_tickets_per_buyer"].clone());
        if settings == Some(serde_json::json!(2)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the waiting room was not pushed again: {room:?}\n{}",
            core.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // 8. `regional-core republish` queues a push whatever the core records; an unknown event is
    //    refused.
    let (ok, out) = core_command(&db, &["republish", "--event", &id]);
    assert!(ok && out.contains("\"queued\":1"), "{out}");
    acme.sync_until(&id, Duration::from_secs(30), |s| s["state"] == "synced").await;
    let (ok, out) = core_command(&db, &["republish", "--all"]);
    assert!(ok && out.contains("\"queued\":1"), "{out}");
    let (ok, _) = core_command(&db, &["republish", "--event", &uuid::Uuid::new_v4().to_string()]);
    assert!(!ok, "an unknown event is refused");

    drop(edge);
    core.stop();
    drop_database(&db_name);
}
