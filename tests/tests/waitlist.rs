//! The waiting list end to end: the core binary (test payment provider, a real SMTP server),
//! wrangler dev and PostgreSQL. An event of two seats sells out; three people join its waiting list
//! at the edge; one buyer cancels and is refunded, which returns a seat; the first person on the
//! list — and nobody else — gets the offer by mail, follows its link in Chromium
//! (`tests/browser/waitlist.mjs`), lands on the summary of the seat held for them, pays and gets
//! the ticket. The list's history shows the offer went to the first in line, and was claimed. One
//! of those waiting has their address erased (their entry leaves the list at the edge); a buyer
//! gets their order again by a sign-in link, in Chromium (`tests/browser/my-tickets.mjs`).

use std::path::Path;
use std::time::{Duration, Instant};

use e2e::{free_port, get_json, hold, start_core_with, start_edge_with_keys, start_smtp_sink, Admin, Setup};
use reqwest::Method;
use serde_json::{json, Value};

/// A venue with one row of two seats; an event on sale with a waiting list, without a line.
async fn organize(acme: &Admin) -> String {
    let seats: Vec<Value> = (1..=2)
        .map(|i| json!({ "id": format!("A-{i}"), "label": i.to_string(), "x": i, "y": 1, "zone": "std" }))
        .collect();
    let venue = acme
        .ok(
            Method::POST,
            "/api/v1/venues",
            json!({ "name": "Small hall", "time_zone": "Europe/Berlin", "zones": [{ "id": "std", "name": "Standard" }],
                    "sections": [{ "id": "A", "name": "Stalls", "rows": [{ "label": "A", "seats": seats }] }] }),
        )
        .await;
    let event = acme
        .ok(
            Method::POST,
            "/api/v1/events",
            json!({ "venue_id": venue["id"], "title": "Waiting list night", "starts_at": "2027-06-01T20:00:00Z", "ends_at": "2027-06-01T23:00:00Z" }),
        )
        .await;
    let id = event["id"].as_str().unwrap().to_owned();
    acme.ok(
        Method::POST,
        &format!("/api/v1/events/{id}/tiers"),
        json!({ "name": "Seats", "kind": "seated", "currency": "EUR", "price_minor": 4000, "quantity": 2 }),
    )
    .await;
    let settings = json!({
        "pricing": { "service_fee": { "per_ticket_minor": 150, "percent_bps": 0 }, "tax": { "rate_bps": 0 } },
        "holds": { "hold_seconds": 600, "extension_seconds": 600, "max_tickets_per_visitor": 4 } });
    acme.publish_open(&id, settings).await;
    let waitlist = json!({ "waitlist": { "enabled": true, "claim_seconds": 600, "max_offers_out": 5 } });
    acme.ok(Method::PUT, &format!("/api/v1/events/{id}/waiting-room"), waitlist).await;
    id
}

/// Buys `seat` through the API with the test provider: (order id, order token).
async fn buy(edge: &str, core: &str, event: &str, seat: &str) -> (String, String) {
    let (_, token) = hold(edge, event, &[seat]).await;
    let answer: Value = e2e::http()
        .post(format!("{edge}/api/v1/checkout"))
        .header("idempotency-key", format!("buy-{seat}"))
        .json(&json!({ "hold_token": token, "email": format!("buyer-{seat}@e2e.test") }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let page = answer["order"]["payment"]["redirect_url"].as_str().unwrap_or_else(|| panic!("{answer}"));
    let payment = page.rsplit('/').next().unwrap();
    let resp = e2e::http()
        .post(format!("{core}/testpay/pay/{payment}/approve"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (id, order_token) =
        (answer["order"]["id"].as_str().unwrap(), answer["order_token"].as_str().unwrap());
    order_until(edge, id, order_token, "paid").await;
    (id.to_owned(), order_token.to_owned())
}

async fn order_until(edge: &str, id: &str, token: &str, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = get_json(&format!("{edge}/api/v1/orders/{id}"), Some(token)).await;
        if o["state"] == state {
            return o;
        }
        assert!(Instant::now() < deadline, "the order never became {state}: {o}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A person at the edge, with their own `visitor` cookie (set by their join).
struct Person {
    http: reqwest::Client,
    email: String,
    cookie: std::sync::Mutex<String>,
}

impl Person {
    fn new(email: &str) -> Self {
        let http = e2e::http_builder().user_agent("e2e-person/1").build().unwrap();
        Self { http, email: email.to_owned(), cookie: std::sync::Mutex::new(String::new()) }
    }

    async fn join(&self, edge: &str, event: &str) -> Value {
        let resp = self
            .http
            .post(format!("{edge}/api/v1/events/{event}/waitlist"))
            .json(&json!({ "email": self.email, "seats": true, "quantity": 1 }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        let set = resp.headers()["set-cookie"].to_str().unwrap();
        *self.cookie.lock().unwrap() = set.split(';').next().unwrap().to_owned();
        resp.json().await.unwrap()
    }

    async fn entry(&self, edge: &str, event: &str) -> Value {
        let cookie = self.cookie.lock().unwrap().clone();
        let resp = self.http.get(format!("{edge}/api/v1/events/{event}/waitlist")).header("cookie", cookie);
        resp.send().await.unwrap().json().await.unwrap()
    }
}

/// The mails the SMTP server kept, as (recipients line, subject, raw text).
fn mails(dir: &Path) -> Vec<(String, String, String)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .filter_map(|f| {
            let raw = std::fs::read_to_string(f).ok()?;
            let header = |name: &str| {
                raw.lines()
                    .find(|l| l.to_ascii_lowercase().starts_with(name))
                    .map(|l| l[name.len()..].trim().to_owned())
                    .unwrap_or_default()
            };
            Some((
                header("to:"),
                header("subject:"),
                raw.replace("=\r\n", "").replace("=\n", "").replace("=3D", "="),
            ))
        })
        .collect()
}

#[tokio::test]
async fn a_refunded_seat_goes_by_mail_to_the_first_on_the_list_who_pays_for_it_in_chromium() {
    let Setup { dir, db_name, db_url, keys, core_port, edge_port, core_url, edge_url } =
        Setup::new("waitlist");
    let smtp_port = free_port();
    let mail_dir = dir.join("mail");
    let _smtp = start_smtp_sink(smtp_port, &mail_dir);
    let env = [
        ("CORE_SIGNING_KEY", keys.core_signing_key()),
        ("EDGE_VERIFYING_KEYS", keys.edge.public_config()),
        ("EDGE_URL", edge_url.clone()),
        ("CORE_PUBLIC_URL", core_url.clone()),
        ("BUYER_URL", edge_url.clone()),
        ("SMTP_URL", format!("smtp://127.0.0.1:{smtp_port}")),
        ("WAITLIST_POLL_SECS", "1".to_owned()),
    ];
    let core = start_core_with(core_port, &db_url, true, &dir, &env);
    core.wait_ready("/healthz", Duration::from_secs(60)).await;
    let edge =
        start_edge_with_keys(edge_port, &core_url, &dir.join("do-state"), &dir, &keys.edge_env_file(&dir));
    edge.wait_ready("/healthz", Duration::from_secs(120)).await;
    let root = Admin::root(&core_url, &db_url);
    let acme = root.organization("Acme", "acme").await;
    let event = organize(&acme).await;
    acme.sync_until(&event, Duration::from_secs(90), |s| s["state"] == "synced").await;

    // Sold out: both seats bought.
    let (first_order, first_token) = buy(&edge_url, &core_url, &event, "A-1").await;
    buy(&edge_url, &core_url, &event, "A-2").await;
    let seats = get_json(&format!("{edge_url}/api/v1/events/{event}/availability"), None).await;
    assert_eq!(seats["seats"], "ss");

    // Three people join the waiting list, in this order.
    let people =
        [Person::new("first@e2e.test"), Person::new("second@e2e.test"), Person::new("third@e2e.test")];
    for (i, p) in people.iter().enumerate() {
        let entry = p.join(&edge_url, &event).await;
        assert_eq!(entry["position"], i + 1, "{entry}");
    }

    // The first buyer cancels and is refunded: A-1 comes back, and is held for the first person.
    let resp = e2e::http()
        .post(format!("{edge_url}/api/v1/orders/{first_order}/cancel"))
        .bearer_auth(&first_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    order_until(&edge_url, &first_order, &first_token, "refunded").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let link = loop {
        let offers: Vec<_> = mails(&mail_dir)
            .into_iter()
            .filter(|(_, subject, _)| subject.starts_with("Places for you"))
            .collect();
        if let Some((to, _, text)) = offers.first() {
            assert!(to.contains("first@e2e.test"), "the offer went to {to}");
            assert_eq!(offers.len(), 1, "one offer, one mail");
            let prefix = format!("{edge_url}/events/{event}/offer#");
            let start = text.find(&prefix).unwrap_or_else(|| panic!("no link in {text}"));
            let end = text[start..]
                .find(|c: char| c.is_whitespace() || c == '"' || c == '<')
                .map_or(text.len(), |e| start + e);
            break text[start..end].to_owned();
        }
        assert!(Instant::now() < deadline, "no offer mailed\n{}", core.log_tail());
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(people[0].entry(&edge_url, &event).await["state"], "offered");
    assert_eq!(people[1].entry(&edge_url, &event).await["position"], 1);
    let seats = get_json(&format!("{edge_url}/api/v1/events/{event}/availability"), None).await;
    assert_eq!(seats["seats"], "hs", "the returned seat was never on public sale");

    // The first person follows the link in Chromium, sees the seat's summary, pays.
    let out = std::process::Command::new("node")
        .current_dir(e2e::repo_root())
        .args(["tests/browser/waitlist.mjs", &link])
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "the browser failed:\n{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        core.log_tail()
    );
    let bought: Value = serde_json::from_slice(&out.stdout).expect("the browser prints JSON");
    assert_eq!(bought["tickets"], json!(["Seat A-1 — valid"]), "{bought}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while people[0].entry(&edge_url, &event).await["state"] != "claimed" {
        assert!(Instant::now() < deadline, "the offer was never claimed");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let db = sqlx::PgPool::connect(&db_url).await.unwrap();
    let holders: Vec<String> = sqlx::query_scalar(
        "SELECT o.email FROM tickets t JOIN orders o ON o.id = t.order_id WHERE t.state = 'valid' AND t.seat_id = 'A-1'",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(holders.len(), 1, "{holders:?}");
    db.close().await;

    // The organizer's view: one offer made and claimed, two still waiting.
    let (status, summary) = acme.call(Method::GET, &format!("/api/v1/events/{event}/waitlist"), None).await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["waiting"], 2, "{summary}");
    assert_eq!(summary["offers"]["made"], 1);
    assert_eq!(summary["offers"]["claimed"], 1);
    // The report carries the list's figures (read from the edge, kept a few seconds).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, report) = acme.call(Method::GET, &format!("/api/v1/events/{event}/report"), None).await;
        let list = &report["waitlist"];
        if list["offers"]["claimed"] == 1 {
            assert_eq!(
                (list["enabled"].as_bool(), list["waiting"].as_u64()),
                (Some(true), Some(2)),
                "{list}"
            );
            assert_eq!(list["by_pool"]["seats"]["waiting"], 2, "{list}");
            break;
        }
        assert!(Instant::now() < deadline, "the report never showed the claim: {report}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The export: the two still waiting, in order, with their addresses; the buyer's is gone.
    let csv = e2e::http()
        .get(format!("{core_url}/api/v1/events/{event}/waitlist/export"))
        .bearer_auth(&acme.key)
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), 200);
    assert!(csv.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let csv = csv.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "number,joined_at,email,wants,quantity,state,position");
    assert!(lines[1].starts_with("1,") && lines[1].ends_with(",,seats,1,claimed,"), "{csv}");
    assert!(lines[2].contains(",second@e2e.test,seats,1,waiting,1"), "{csv}");
    assert!(lines[3].contains(",third@e2e.test,seats,1,waiting,2"), "{csv}");
    // The history, to audit the order: three joins, the seat back, one offer to entry 1, its
    // claim; nobody's visitor id or address hash.
    let (status, history) =
        acme.call(Method::GET, &format!("/api/v1/events/{event}/waitlist/history?limit=100"), None).await;
    assert_eq!(status, 200, "{history}");
    let records = history["records"].as_array().unwrap();
    let of = |kind: &str| records.iter().filter(|r| r["type"] == kind).collect::<Vec<_>>();
    assert_eq!(of("joined").len(), 3, "{history}");
    assert_eq!(of("offered")[0]["offer"]["number"], 1, "{history}");
    assert_eq!(of("claimed")[0]["number"], 1, "{history}");
    assert!(
        !history.to_string().contains("visitor") && !history.to_string().contains("email_key"),
        "{history}"
    );
    let (status, _) =
        acme.call(Method::GET, &format!("/api/v1/events/{event}/waitlist/history?limit=0"), None).await;
    assert_eq!(status, 422);
    // Another organization sees none of it.
    let other = root.organization("Other", "other").await;
    let (status, _) = other.call(Method::GET, &format!("/api/v1/events/{event}/waitlist"), None).await;
    assert_eq!(status, 404);
    let (status, _) =
        other.call(Method::GET, &format!("/api/v1/events/{event}/waitlist/history"), None).await;
    assert_eq!(status, 404);
    let csv = e2e::http()
        .get(format!("{core_url}/api/v1/events/{event}/waitlist/export"))
        .bearer_auth(&other.key)
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), 404, "the export is the organizer's only");
    let (status, _) = other.call(Method::POST, &format!("/api/v1/events/{event}/waitlist/close"), None).await;
    assert_eq!(status, 404);
    // Personal data (docs/privacy.md). The second person asks to be forgotten: their entry leaves
    // the list at the edge, its address with it, and the third waits first.
    let erased = acme
        .ok(Method::POST, "/api/v1/privacy/erasure-requests", json!({ "email": "Second@e2e.test" }))
        .await;
    assert_eq!(erased["waitlist_entries"], 1, "{erased}");
    assert_eq!(people[1].entry(&edge_url, &event).await["state"], "left");
    assert_eq!(people[2].entry(&edge_url, &event).await["position"], 1);
    let found =
        acme.ok(Method::POST, "/api/v1/privacy/access-requests", json!({ "email": "third@e2e.test" })).await;
    assert_eq!(found["waitlist_entries"][0]["event_id"], event.as_str(), "{found}");
    let found =
        acme.ok(Method::POST, "/api/v1/privacy/access-requests", json!({ "email": "second@e2e.test" })).await;
    assert_eq!(found["waitlist_entries"], json!([]), "{found}");
    // A buyer who lost their mails asks for a sign-in link on "My tickets" and follows it, in
    // Chromium: their order is listed and opens, paid.
    let browse = |args: &[&str]| {
        let out = std::process::Command::new("node")
            .current_dir(e2e::repo_root())
            .arg("tests/browser/my-tickets.mjs")
            .args(args)
            .output()
            .expect("node runs");
        let said =
            format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "the browser failed:\n{said}\n{}", core.log_tail());
        serde_json::from_slice::<Value>(&out.stdout).expect("the browser prints JSON")
    };
    let asked = browse(&["ask", &edge_url, "buyer-A-2@e2e.test"]);
    assert!(asked["sent"].as_str().unwrap().contains("Check your mailbox"), "{asked}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let link = loop {
        if let Some(link) =
            e2e::mail_link(&mail_dir, "Your orders and tickets", &format!("{edge_url}/my-tickets#"))
        {
            break link;
        }
        assert!(Instant::now() < deadline, "no sign-in link mailed\n{}", core.log_tail());
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let mine = browse(&["open", &link]);
    assert_eq!(mine["orders"].as_array().map(Vec::len), Some(1), "{mine}");
    assert!(mine["orders"][0].as_str().unwrap().contains("Waiting list night"), "{mine}");
    assert_eq!(mine["tickets"], json!(["Seat A-2 — valid"]), "{mine}");
    // The organizer closes it: those waiting leave.
    let closed = acme.ok(Method::POST, &format!("/api/v1/events/{event}/waitlist/close"), json!({})).await;
    assert_eq!((closed["closed"].as_bool(), closed["waiting"].as_u64()), (Some(true), Some(0)), "{closed}");
    assert_eq!(people[2].entry(&edge_url, &event).await["state"], "left");
    drop(edge);
    core.stop();
    e2e::drop_database(&db_name);
}
