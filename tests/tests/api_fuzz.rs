//! API fuzzing from the document: schemathesis (PyPI, `tests/api-fuzz/requirements.txt`) generates
//! requests for every operation of the core's OpenAPI document (`/api/v1/openapi.json`), valid and
//! invalid, with an organizer's API key, against the real core binary and PostgreSQL, and checks:
//!
//! - no 5xx; every answer's status code, content type, headers and body as the document says;
//!   invalid input refused, and an operation answering what it does not document is a failure;
//! - (tests/api-fuzz/hooks.py) every error is problem+json with its `type`, `title` and `status`;
//!   no answer holds any id of another organization, which has its own venue, event and tiers.
//!
//! Bounded: a fixed seed and a few examples per operation (`API_FUZZ_EXAMPLES`, default 8), so the
//! run is the same each time and takes a couple of minutes; raise it by hand to search longer.

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

    let schemathesis =
        std::env::var("E2E_SCHEMATHESIS").expect("E2E_SCHEMATHESIS: run through scripts/test.sh");
    let examples = std::env::var("API_FUZZ_EXAMPLES").unwrap_or_else(|_| "8".into());
    let report = dir.join("schemathesis");
    let out = Command::new(schemathesis)
        .args(["--config-file", repo_root().join("tests/api-fuzz/schemathesis.toml").to_str().unwrap()])
        .args(["run", &format!("{}/api/v1/openapi.json", core.url()), "--url", &core.url()])
        .args(["--header", &format!("Authorization: Bearer {}", acme.key)])
        .args(["--checks", "all"])
        .args(["--max-examples", &examples, "--seed", "20261203", "--workers", "1"])
        .args(["--phases", "examples,coverage,fuzzing", "--request-timeout", "20"])
        .args(["--report", "junit", "--report-dir", report.to_str().unwrap()])
        .args(["--no-color"])
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("PYTHONPATH", repo_root().join("tests/api-fuzz"))
        .env("FOREIGN_IDS", foreign.join(","))
        .output()
        .expect("schemathesis runs");
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    std::fs::write(dir.join("schemathesis.log"), &printed).ok();
    assert!(
        out.status.success(),
        "schemathesis found failures (whole output in {}):\n{}",
        dir.join("schemathesis.log").display(),
        tail(&printed, 200)
    );
    let generated = printed
        .lines()
        .find_map(|l| l.trim().split_once(" generated, ").and_then(|(n, _)| n.parse::<u32>().ok()))
        .unwrap_or(0);
    assert!(generated > 1000, "schemathesis made only {generated} requests:\n{}", tail(&printed, 60));

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
