//! API fuzzing from the document: schemathesis (PyPI, `tests/api-fuzz/requirements.txt`) generates
//! requests for every operation of the core's OpenAPI document (`/api/v1/openapi.json`), valid and
//! invalid, with an organizer's API key, against the real core binary and PostgreSQL, and checks:
//!
//! - no 5xx; every answer's status code, content type, headers and body as the document says;
//!   invalid input refused, and an operation answering what it does not document is a failure;
//! - (tests/api-fuzz/hooks.py) every error is problem+json with its `type`, `title` and `status`;
//!   no answer holds any id of another organization, which has its own venue, event and tiers.
//!
//! The edge's own document (`docs/edge-openapi.json`, served at the edge's `/api/v1/openapi.json`)
//! gets the same run with `tests/api-fuzz/edge.toml`, as an admitted buyer of two events on sale.
//!
//! Bounded: a fixed seed and a few examples per operation (`API_FUZZ_EXAMPLES`; 8 for the core, 40
//! for the edge), so the run is the same each time (about 2,300 requests to the core, 600 to the
//! edge, under a minute in all); raise it by hand to search longer.

use std::process::Command;
use std::time::Duration;

use e2e::{drop_database, repo_root, start_core_with, start_edge_with_keys, Admin, Setup};
use reqwest::Method;
use serde_json::{json, Value};

#[tokio::test]
async fn the_core_answers_anything_as_its_document_says_and_never_with_another_tenants_data() {
    let Setup { dir, db_name, db_url: db, keys, core_port, edge_port, edge_url, .. } = Setup::new("api_fuzz");
    // Configured as for a sale: keys, a payment provider, and the edge (wrangler dev), which the
    // routes that read the waiting list and the seats ask.
    let env = [
        ("CORE_SIGNING_KEY", keys.core_signing_key()),
        ("EDGE_VERIFYING_KEYS", keys.edge.public_config()),
        ("EDGE_URL", edge_url),
        ("TESTPAY_WEBHOOK_SECRET", "whsec_e2e_api_fuzz".to_owned()),
    ];
    let core = start_core_with(core_port, &db, true, &dir, &env);
    let edge =
        start_edge_with_keys(edge_port, &core.url(), &dir.join("do-state"), &dir, &keys.edge_env_file(&dir));
    core.wait_ready("/healthz", Duration::from_secs(60)).await;
    edge.wait_ready("/healthz", Duration::from_secs(120)).await;
    let root = Admin::root(&core.url(), &db);
    let acme = root.organization("Acme", "acme").await;
    let rival = root.organization("Rival", "rival").await;

    // The other tenant's data: a venue, an event with a seated and a standing tier.
    let venue = rival
        .ok(
            Method::POST,
            "/api/v1/venues",
            json!({ "name": "Rival Hall", "time_zone": "UTC", "zones": [{ "id": "std", "name": "Standard" }],
                    "ga_areas": [{ "id": "floor", "name": "Floor", "capacity": 100 }],
                    "sections": [{ "id": "A", "name": "A", "rows": [{ "label": "1", "seats": [
                        { "id": "A-1", "label": "1", "x": 0, "y": 0, "zone": "std" } ] }] }] }),
        )
        .await;
    let event = rival
        .ok(
            Method::POST,
            "/api/v1/events",
            json!({ "venue_id": venue["id"], "title": "Rival night", "starts_at": "2027-01-01T20:00:00Z", "ends_at": "2027-01-01T23:00:00Z" }),
        )
        .await;
    let event_id = event["id"].as_str().unwrap().to_owned();
    let tiers = format!("/api/v1/events/{event_id}/tiers");
    let seated = rival
        .ok(Method::POST, &tiers, json!({ "name": "Seats", "kind": "seated", "currency": "EUR", "price_minor": 4000, "quantity": 1 }))
        .await;
    let standing = rival
        .ok(Method::POST, &tiers, json!({ "name": "Standing", "kind": "ga", "ga_area": "floor", "currency": "EUR", "price_minor": 2500, "quantity": 60 }))
        .await;
    let (_, orgs) = rival.call(Method::GET, "/api/v1/organizations", None).await;
    let rival_org = orgs["items"][0]["id"].as_str().expect("the rival's organization").to_owned();
    let (_, keys) = rival.call(Method::GET, "/api/v1/api-keys", None).await;
    let rival_key = keys["items"][0]["id"].as_str().expect("the rival's key").to_owned();
    let (_, users) = rival.call(Method::GET, "/api/v1/users", None).await;
    let rival_user = users["items"][0]["id"].as_str().expect("the rival's user").to_owned();
    let foreign: Vec<String> = [&venue["id"], &event["id"], &seated["id"], &standing["id"]]
        .iter()
        .map(|v| v.as_str().expect("an id").to_owned())
        .chain([rival_org, rival_key, rival_user])
        .collect();

    // Acme's own: a venue and an event, so that its listings are not empty.
    let own = acme
        .ok(
            Method::POST,
            "/api/v1/venues",
            json!({ "name": "Acme Hall", "time_zone": "UTC", "zones": [{ "id": "std", "name": "Standard" }],
                    "sections": [{ "id": "B", "name": "B", "rows": [{ "label": "1", "seats": [
                        { "id": "B-1", "label": "1", "x": 0, "y": 0, "zone": "std" } ] }] }] }),
        )
        .await;
    acme.ok(
        Method::POST,
        "/api/v1/events",
        json!({ "venue_id": own["id"], "title": "Acme night", "starts_at": "2027-02-01T20:00:00Z", "ends_at": "2027-02-01T23:00:00Z" }),
    )
    .await;

    // Every operation of the document with a path parameter, asked with Acme's key for each of the
    // rival's ids: none may answer 2xx or show the id. Schemathesis cannot learn the rival's ids;
    // this loop tries them all, every run.
    let document = e2e::get_json(&format!("{}/api/v1/openapi.json", core.url()), None).await;
    let http = reqwest::Client::new();
    let mut probed = 0;
    for (template, operations) in document["paths"].as_object().expect("paths") {
        if !template.contains('{') {
            continue;
        }
        for method in operations.as_object().expect("operations").keys() {
            let Ok(method) = method.to_uppercase().parse::<Method>() else { continue };
            for id in &foreign {
                let path = fill(template, id);
                let resp = http
                    .request(method.clone(), format!("{}{path}", core.url()))
                    .bearer_auth(&acme.key)
                    .json(&json!({}))
                    .send()
                    .await
                    .expect("the core answers");
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                assert!(
                    !status.is_success(),
                    "{method} {path} with another organization's id answered {status}: {body}"
                );
                // A problem may name the request's own path (`instance`): that is the caller's, not data.
                let mut answer: Value = serde_json::from_str(&body).unwrap_or(Value::String(body.clone()));
                if let Some(problem) = answer.as_object_mut() {
                    problem.remove("instance");
                }
                let shown = answer.to_string();
                assert!(
                    !shown.contains(id.as_str()),
                    "{method} {path} showed another organization's id: {body}"
                );
                probed += 1;
            }
        }
    }
    assert!(probed > 100, "only {probed} cross-tenant probes");

    let core_document = format!("{}/api/v1/openapi.json", core.url());
    let auth = format!("Authorization: Bearer {}", acme.key);
    let env = [("FOREIGN_IDS", foreign.join(","))];
    schemathesis(
        &dir.join("core"),
        &core_document,
        &core.url(),
        "schemathesis.toml",
        &[&auth],
        &env,
        (8, 1000),
    );

    // Nothing the fuzzing did with Acme's key touched the rival's event or venue.
    let (status, still) = rival.call(Method::GET, &format!("/api/v1/events/{event_id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        (still["title"].clone(), still["state"].clone()),
        (json!("Rival night"), event["state"].clone())
    );
    let (_, listed) = rival.call(Method::GET, &tiers, None).await;
    let names: Vec<&Value> =
        listed["items"].as_array().map(|a| a.iter().map(|t| &t["name"]).collect()).unwrap_or_default();
    assert_eq!(names.len(), 2, "the rival's tiers changed: {listed}");
    let (_, hall) =
        rival.call(Method::GET, &format!("/api/v1/venues/{}", venue["id"].as_str().unwrap()), None).await;
    assert_eq!((hall["name"].clone(), hall["seat_count"].clone()), (json!("Rival Hall"), json!(1)), "{hall}");

    edge.stop();
    core.stop();
    drop_database(&db_name);
}

#[tokio::test]
async fn the_edge_answers_anything_as_its_document_says() {
    let Setup { dir, db_name, db_url: db, keys, core_port, edge_port, edge_url, .. } =
        Setup::new("api_fuzz_edge");
    let env = [
        ("CORE_SIGNING_KEY", keys.core_signing_key()),
        ("EDGE_VERIFYING_KEYS", keys.edge.public_config()),
        ("EDGE_URL", edge_url.clone()),
        ("TESTPAY_WEBHOOK_SECRET", "whsec_e2e_api_fuzz".to_owned()),
    ];
    let core = start_core_with(core_port, &db, true, &dir, &env);
    let edge =
        start_edge_with_keys(edge_port, &core.url(), &dir.join("do-state"), &dir, &keys.edge_env_file(&dir));
    core.wait_ready("/healthz", Duration::from_secs(60)).await;
    edge.wait_ready("/healthz", Duration::from_secs(120)).await;
    let acme = Admin::root(&core.url(), &db).organization("Acme", "acme").await;

    // An event on sale: ten seats in two price zones, under two seated tiers, and standing places.
    let seats: Vec<Value> = (1..=10)
        .map(|i| {
            json!({ "id": format!("A-{i}"), "label": i.to_string(), "x": i, "y": 0,
                          "zone": if i <= 5 { "front" } else { "back" } })
        })
        .collect();
    let venue = acme
        .ok(
            Method::POST,
            "/api/v1/venues",
            json!({ "name": "Fuzz Hall", "time_zone": "UTC",
                    "zones": [{ "id": "front", "name": "Front" }, { "id": "back", "name": "Back" }],
                    "ga_areas": [{ "id": "floor", "name": "Floor", "capacity": 40 }],
                    "sections": [{ "id": "A", "name": "A", "rows": [{ "label": "1", "seats": seats }] }] }),
        )
        .await;
    let open = event(&acme, &venue["id"], "Fuzz night").await;
    let tiers = format!("/api/v1/events/{open}/tiers");
    for tier in [
        json!({ "name": "Full", "kind": "seated", "currency": "EUR", "price_minor": 4000, "quantity": 10 }),
        json!({ "name": "Reduced", "kind": "seated", "currency": "EUR", "price_minor": 2500, "quantity": 4 }),
    ] {
        acme.ok(Method::POST, &tiers, tier).await;
    }
    let standing = acme
        .ok(
            Method::POST,
            &tiers,
            json!({ "name": "Standing", "kind": "ga", "ga_area": "floor", "currency": "EUR", "price_minor": 2000, "quantity": 40 }),
        )
        .await["id"]
        .clone();
    acme.publish_open(&open, sale_settings()).await;

    // A second, sold out (its one seat held by another buyer), that keeps a waiting list.
    let small = acme
        .ok(
            Method::POST,
            "/api/v1/venues",
            json!({ "name": "Fuzz Room", "time_zone": "UTC", "zones": [{ "id": "std", "name": "Standard" }],
                    "sections": [{ "id": "B", "name": "B", "rows": [{ "label": "1", "seats": [
                        { "id": "B-1", "label": "1", "x": 0, "y": 0, "zone": "std" } ] }] }] }),
        )
        .await;
    let sold_out = event(&acme, &small["id"], "Fuzz matinee").await;
    acme.ok(
        Method::POST,
        &format!("/api/v1/events/{sold_out}/tiers"),
        json!({ "name": "Seat", "kind": "seated", "currency": "EUR", "price_minor": 4000, "quantity": 1 }),
    )
    .await;
    acme.publish_open(&sold_out, sale_settings()).await;
    let waitlist = json!({ "waitlist": { "enabled": true, "claim_seconds": 600, "max_offers_out": 5 } });
    acme.ok(Method::PUT, &format!("/api/v1/events/{sold_out}/waiting-room"), waitlist).await;
    for id in [&open, &sold_out] {
        acme.sync_until(id, Duration::from_secs(90), |s| s["state"] == "synced").await;
    }
    e2e::hold(&edge_url, &sold_out, &["B-1"]).await;

    // The fuzzer is a buyer admitted to the open event (tests/api-fuzz/edge.toml), and another
    // buyer is the one who leaves the line.
    let (visitor, admission) = admitted(&edge_url, &open).await;
    let (leaver_visitor, leaver) = admitted(&edge_url, &open).await;
    let held: Value = reqwest::Client::new()
        .post(format!("{edge_url}/api/v1/events/{open}/holds"))
        .bearer_auth(&admission)
        .header("user-agent", "api-fuzz/1")
        .json(&json!({ "kind": "general_admission", "tier": standing, "quantity": 1 }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hold = held["hold"]["id"].as_str().unwrap_or_else(|| panic!("the fuzzer's hold: {held}")).to_owned();

    // The document the edge serves is the one in docs/.
    let served = e2e::get_json(&format!("{edge_url}/api/v1/openapi.json"), None).await;
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join("docs/edge-openapi.json")).unwrap())
            .unwrap();
    assert!(served == file, "the edge serves another document than docs/edge-openapi.json: rebuild it");

    let env = [
        ("EDGE_FUZZ_EVENT", open.clone()),
        ("EDGE_FUZZ_SOLD_OUT_EVENT", sold_out.clone()),
        ("EDGE_FUZZ_ADMISSION", admission),
        ("EDGE_FUZZ_VISITOR", visitor),
        ("EDGE_FUZZ_LEAVER", leaver),
        ("EDGE_FUZZ_LEAVER_VISITOR", leaver_visitor),
        ("EDGE_FUZZ_HOLD", hold),
    ];
    let document = format!("{edge_url}/api/v1/openapi.json");
    schemathesis(&dir.join("edge"), &document, &edge_url, "edge.toml", &[], &env, (40, 500));

    // Whatever the fuzzing did, the ledger's counts still add up: in each section and GA tier,
    // every place is available, held or sold, and only one of them (no seat is off sale here).
    let seats = e2e::get_json(&format!("{edge_url}/api/v1/events/{open}/availability"), None).await;
    let groups = seats["sections"].as_array().unwrap().iter().chain(seats["tiers"].as_array().unwrap());
    for group in groups {
        let n = |k: &str| group[1][k].as_u64().unwrap();
        assert_eq!(n("available") + n("held") + n("sold"), n("capacity"), "{group} in {seats}");
    }
    let free = seats["seats"].as_str().unwrap().bytes().filter(|&c| c == b'a').count() as u64;
    assert_eq!(free, seats["sections"][0][1]["available"].as_u64().unwrap(), "{seats}");

    edge.stop();
    core.stop();
    drop_database(&db_name);
}

/// A new buyer, admitted to `event` through its line: (visitor, admission token).
async fn admitted(edge: &str, event: &str) -> (String, String) {
    let buyer = reqwest::Client::builder().user_agent("api-fuzz/1").build().unwrap();
    let queue = format!("{edge}/api/v1/events/{event}/queue");
    let joined: Value = buyer.post(&queue).send().await.unwrap().json().await.unwrap();
    let (ticket, visitor) = (joined["ticket"].as_str().unwrap(), joined["visitor"].as_str().unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let polled: Value = buyer.get(&queue).bearer_auth(ticket).send().await.unwrap().json().await.unwrap();
        if let Some(token) = polled["admission_token"].as_str() {
            return (visitor.to_owned(), token.to_owned());
        }
        assert!(std::time::Instant::now() < deadline, "never admitted: {polled}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// An event of Acme's at `venue`: its id.
async fn event(acme: &Admin, venue: &Value, title: &str) -> String {
    let event = acme
        .ok(
            Method::POST,
            "/api/v1/events",
            json!({ "venue_id": venue, "title": title, "starts_at": "2027-03-01T20:00:00Z", "ends_at": "2027-03-01T23:00:00Z" }),
        )
        .await;
    event["id"].as_str().unwrap().to_owned()
}

fn sale_settings() -> Value {
    json!({ "pricing": { "service_fee": { "per_ticket_minor": 150, "percent_bps": 0 }, "tax": { "rate_bps": 0 } },
            "holds": { "hold_seconds": 600, "extension_seconds": 600, "max_tickets_per_visitor": 6 } })
}

/// Runs schemathesis (`E2E_SCHEMATHESIS`) against `document` at `base` with the settings
/// `tests/api-fuzz/{config}`, these headers on every request, our checks (hooks.py) and `env`, with
/// `examples` per operation and phase (`API_FUZZ_EXAMPLES` overrides it); fails on any failure it
/// reports, or when it made fewer than `at_least` requests. Its output is kept in `dir`.
fn schemathesis(
    dir: &std::path::Path,
    document: &str,
    base: &str,
    config: &str,
    headers: &[&str],
    env: &[(&str, String)],
    (examples, at_least): (u32, u32),
) {
    let program = std::env::var("E2E_SCHEMATHESIS").expect("E2E_SCHEMATHESIS: run through scripts/test.sh");
    let examples = std::env::var("API_FUZZ_EXAMPLES").unwrap_or_else(|_| examples.to_string());
    std::fs::create_dir_all(dir).unwrap();
    let mut cmd = Command::new(program);
    cmd.args(["--config-file", repo_root().join("tests/api-fuzz").join(config).to_str().unwrap()])
        .args(["run", document, "--url", base]);
    for header in headers {
        cmd.args(["--header", header]);
    }
    let out = cmd
        .args(["--checks", "all"])
        .args(["--max-examples", &examples, "--seed", "20261203", "--workers", "1"])
        .args(["--phases", "examples,coverage,fuzzing", "--request-timeout", "20"])
        .args(["--report", "junit", "--report-dir", dir.to_str().unwrap()])
        .args(["--no-color"])
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("PYTHONPATH", repo_root().join("tests/api-fuzz"))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("schemathesis runs");
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let log = dir.join("schemathesis.log");
    std::fs::write(&log, &printed).ok();
    assert!(
        out.status.success(),
        "schemathesis found failures (whole output in {}):\n{}",
        log.display(),
        tail(&printed, 200)
    );
    let generated = printed
        .lines()
        .find_map(|l| l.trim().split_once(" generated, ").and_then(|(n, _)| n.parse::<u32>().ok()))
        .unwrap_or(0);
    assert!(generated >= at_least, "schemathesis made only {generated} requests:\n{}", tail(&printed, 60));
}

/// A path template with every `{parameter}` filled with `id`.
fn fill(template: &str, id: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let end = rest[start..].find('}').map_or(rest.len(), |e| start + e + 1);
        out.push_str(&rest[..start]);
        out.push_str(id);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
