//! API fuzzing from the document: schemathesis (PyPI, `tests/api-fuzz/requirements.txt`) generates
//! requests for every operation of the core's OpenAPI document (`/api/v1/openapi.json`), valid and
//! invalid, with an organizer's API key, against the real core binary and PostgreSQL, and checks:
//!
//! - no 5xx; every answer's status code, content type, headers and body as the document says;
//!   invalid input refused, and an operation answering what it does not document is a failure;
//! - (tests/api-fuzz/hooks.py) every error is problem+json with its `type`, `title` and `status`;
//!   no answer holds any id of another organization;
//! - before it, every operation with a path parameter asked with the other organization's ids,
//!   placeholder by placeholder, answers exactly as for ids that exist nowhere ([`probe_cross_tenant`]).
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
    let Setup { dir, db_name, db_url: db, keys, core_port, edge_port, edge_url, core_url } =
        Setup::new("api_fuzz");
    // Configured as for a sale: keys, a payment provider (whose webhooks come back to the core's
    // public address), and the edge (wrangler dev), which the routes that read the waiting list and
    // the seats ask.
    let env = [
        ("CORE_SIGNING_KEY", keys.core_signing_key()),
        ("EDGE_VERIFYING_KEYS", keys.edge.public_config()),
        ("EDGE_URL", edge_url.clone()),
        ("CORE_PUBLIC_URL", core_url),
        ("TESTPAY_WEBHOOK_SECRET", "whsec_e2e_api_fuzz".to_owned()),
        // Partner webhooks (endpoints stay public https: no CORE_WEBHOOK_ALLOW_PRIVATE).
        ("CORE_WEBHOOK_KEYS", "fuzz-1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8".to_owned()),
    ];
    let core = start_core_with(core_port, &db, true, &dir, &env);
    let edge =
        start_edge_with_keys(edge_port, &core.url(), &dir.join("do-state"), &dir, &keys.edge_env_file(&dir));
    core.wait_ready("/healthz", Duration::from_secs(60)).await;
    edge.wait_ready("/healthz", Duration::from_secs(120)).await;
    let root = Admin::root(&core.url(), &db);
    let acme = root.organization("Acme", "acme").await;
    let rival = root.organization("Rival", "rival").await;

    // Each organization has one of everything a path can name: the rival's to probe with, Acme's
    // own to pair them with.
    let sites = (core.url(), edge_url.clone());
    let theirs = Estate::build(&rival, "rival", &sites, &keys).await;
    let ours = Estate::build(&acme, "acme", &sites, &keys).await;

    // Every operation of the document with a path parameter, asked as Acme (its API key, its
    // buyer's order token, its ticket recipient's transfer token, as the operation's security
    // says) with the rival's ids, placeholder by placeholder: must answer exactly as for an id
    // that does not exist, 404, and show none of the rival's ids. Schemathesis cannot learn the
    // rival's ids; this loop tries them all, every run.
    let before = theirs.snapshot(&rival, &core.url()).await;
    let document = e2e::get_json(&format!("{}/api/v1/openapi.json", core.url()), None).await;
    let probed = probe_cross_tenant(&core.url(), &document, &acme.key, &ours, &theirs).await;
    // Every probe the document's routes make today: a route added or removed changes it (update it
    // after checking the new route's probes are the ones it needs).
    assert_eq!(probed, 90, "cross-tenant probes");

    let core_document = format!("{}/api/v1/openapi.json", core.url());
    let auth = format!("Authorization: Bearer {}", acme.key);
    let env = [("FOREIGN_IDS", theirs.shown().join(",")), ("FOREIGN_PUBLIC", theirs.public().join(","))];
    schemathesis(
        &dir.join("core"),
        &core_document,
        &core.url(),
        "schemathesis.toml",
        &[&auth],
        &env,
        (8, 1000),
    );

    // Nothing the probes and the fuzzing did with Acme's credentials touched the rival's things.
    let after = theirs.snapshot(&rival, &core.url()).await;
    for ((path, was), (_, is)) in before.iter().zip(&after) {
        assert_eq!(was, is, "the rival's {path} changed");
    }

    edge.stop();
    core.stop();
    drop_database(&db_name);
}

/// One of everything of an organization's that a path can name: a venue (one seat, a standing
/// area), an event on sale with a seated and a standing tier, a promo code, an order paid for the
/// seat, its ticket offered to a friend, a standing place held at the box office; the organization,
/// its admin and the admin's API key; and
/// the credentials of its buyer (the order's token) and of the ticket's recipient (the transfer's
/// token, as the offer mail carries it).
struct Estate {
    organization: String,
    user: String,
    api_key: String,
    venue: String,
    event: String,
    tier: String,
    standing: String,
    code: String,
    order: String,
    ticket: String,
    transfer: String,
    /// A webhook endpoint (disabled, so that nothing about it moves during the probe) and a
    /// delivery of its test ping.
    webhook_endpoint: String,
    webhook_delivery: String,
    /// A box-office hold of a standing place (docs/box-office.md).
    hold: String,
    /// A series whose template (and only date) is the event (docs/series.md).
    series: String,
    order_token: String,
    transfer_token: String,
    /// Its name (`acme`, `rival`): the venue's, the event's, the buyer's and the friend's
    /// addresses are made from it.
    slug: String,
}

impl Estate {
    async fn build(org: &Admin, slug: &str, (core, edge): &(String, String), keys: &e2e::TestKeys) -> Self {
        let http = e2e::http();
        let venue = org
            .ok(
                Method::POST,
                "/api/v1/venues",
                json!({ "name": format!("{slug} hall"), "time_zone": "UTC", "zones": [{ "id": "std", "name": "Standard" }],
                        "ga_areas": [{ "id": "floor", "name": "Floor", "capacity": 100 }],
                        "sections": [{ "id": "A", "name": "A", "rows": [{ "label": "1", "seats": [
                            { "id": "A-1", "label": "1", "x": 0, "y": 0, "zone": "std" } ] }] }] }),
            )
            .await;
        let event = event(org, &venue["id"], &format!("{slug} night")).await;
        let tiers = format!("/api/v1/events/{event}/tiers");
        let seated = org
            .ok(Method::POST, &tiers, json!({ "name": "Seats", "kind": "seated", "currency": "EUR", "price_minor": 4000, "quantity": 1 }))
            .await;
        let standing = org
            .ok(Method::POST, &tiers, json!({ "name": "Standing", "kind": "ga", "ga_area": "floor", "currency": "EUR", "price_minor": 2500, "quantity": 60 }))
            .await;
        let code = org
            .ok(
                Method::POST,
                &format!("/api/v1/events/{event}/promo-codes"),
                json!({ "code": "TENANT10", "kind": "percent", "percent_off": 10 }),
            )
            .await;
        org.publish_open(&event, sale_settings()).await;
        org.sync_until(&event, Duration::from_secs(90), |s| s["state"] == "synced").await;

        // Its buyer takes the seat and pays.
        let (_, hold_token) = e2e::hold(edge, &event, &["A-1"]).await;
        let resp = http
            .post(format!("{edge}/api/v1/checkout"))
            .header("idempotency-key", format!("{slug}-order"))
            .json(&json!({ "hold_token": hold_token, "email": format!("buyer@{slug}.test") }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "{slug}'s checkout");
        let answer: Value = resp.json().await.unwrap();
        let order = answer["order"]["id"].as_str().expect("an order").to_owned();
        let order_token = answer["order_token"].as_str().expect("its token").to_owned();
        let page = answer["order"]["payment"]["redirect_url"].as_str().expect("a payment page");
        let paid = http
            .post(format!("{core}/testpay/pay/{}/approve", page.rsplit('/').next().unwrap()))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(paid.status(), 200, "{slug}'s payment");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let seen = e2e::get_json(&format!("{core}/api/v1/orders/{order}"), Some(&order_token)).await;
            if seen["state"] == "paid" {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{slug}'s order never paid: {seen}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let tickets =
            e2e::get_json(&format!("{core}/api/v1/orders/{order}/tickets"), Some(&order_token)).await;
        let ticket =
            tickets[0]["id"].as_str().unwrap_or_else(|| panic!("{slug}'s ticket: {tickets}")).to_owned();

        // The ticket offered to a friend, and the friend's token as the offer mail carries it.
        let to_email = format!("friend@{slug}.test");
        let offered: Value = http
            .post(format!("{core}/api/v1/orders/{order}/tickets/{ticket}/transfer"))
            .bearer_auth(&order_token)
            .json(&json!({ "to_email": to_email }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let transfer =
            offered["id"].as_str().unwrap_or_else(|| panic!("{slug}'s transfer: {offered}")).to_owned();
        let at = |v: &Value| {
            v.as_str().and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok()).expect("a time")
        };
        let (_, shown) = org.call(Method::GET, &format!("/api/v1/events/{event}"), None).await;
        let transfer_token = regional_core::tokens::transfer_token(
            &keys.core,
            transfer.parse().unwrap(),
            event.parse().unwrap(),
            &to_email,
            at(&offered["expires_at"]),
            at(&shown["ends_at"]),
        );

        // A partner's endpoint, its test ping, then disabled (its record stays as it is).
        let hook = org
            .ok(
                Method::POST,
                "/api/v1/webhook-endpoints",
                json!({ "url": format!("https://hooks.{slug}.example/in"), "event_types": ["order.paid"] }),
            )
            .await;
        let webhook_endpoint = hook["id"].as_str().expect("an endpoint").to_owned();
        let ping = org
            .ok(Method::POST, &format!("/api/v1/webhook-endpoints/{webhook_endpoint}/test"), json!(null))
            .await;
        org.ok(
            Method::PATCH,
            &format!("/api/v1/webhook-endpoints/{webhook_endpoint}"),
            json!({ "enabled": false }),
        )
        .await;

        // A standing place held at the box office.
        let counter = org
            .ok(
                Method::POST,
                &format!("/api/v1/events/{event}/box-office/holds"),
                json!({ "kind": "general_admission", "tier": standing["id"], "quantity": 1 }),
            )
            .await;
        let hold = counter["hold_id"].as_str().expect("a box-office hold").to_owned();

        // The event as a series' template (the series public with it).
        let series = org.ok(Method::POST, "/api/v1/series", json!({ "from_event": event })).await;
        let series = series["id"].as_str().expect("a series").to_owned();

        let first = |listing: Value, what: &str| {
            listing["items"][0]["id"]
                .as_str()
                .unwrap_or_else(|| panic!("{slug}'s {what}: {listing}"))
                .to_owned()
        };
        Estate {
            organization: first(org.call(Method::GET, "/api/v1/organizations", None).await.1, "organization"),
            user: first(org.call(Method::GET, "/api/v1/users", None).await.1, "user"),
            api_key: first(org.call(Method::GET, "/api/v1/api-keys", None).await.1, "API key"),
            venue: venue["id"].as_str().unwrap().to_owned(),
            event,
            tier: seated["id"].as_str().unwrap().to_owned(),
            standing: standing["id"].as_str().unwrap().to_owned(),
            code: code["id"].as_str().unwrap().to_owned(),
            order,
            ticket,
            transfer,
            webhook_endpoint,
            webhook_delivery: ping["id"].as_str().expect("a delivery").to_owned(),
            hold,
            series,
            order_token,
            transfer_token,
            slug: slug.to_owned(),
        }
    }

    /// What no answer to another organization may show: every id of this estate, its buyers'
    /// addresses and its tokens ([`Estate::public`] among them).
    fn shown(&self) -> Vec<String> {
        let ids = [
            &self.organization,
            &self.user,
            &self.api_key,
            &self.venue,
            &self.code,
            &self.order,
            &self.ticket,
            &self.transfer,
            &self.webhook_endpoint,
            &self.webhook_delivery,
            &self.hold,
            &self.order_token,
            &self.transfer_token,
        ];
        let slug = &self.slug;
        let addresses = [format!("buyer@{slug}.test"), format!("friend@{slug}.test")];
        ids.into_iter().cloned().chain(addresses).chain(self.public()).collect()
    }

    /// What the public catalog shows of a published event (its id, its tiers', its title and its
    /// venue's name): anyone may see them there, and only there.
    fn public(&self) -> Vec<String> {
        let slug = &self.slug;
        vec![
            self.event.clone(),
            self.tier.clone(),
            self.standing.clone(),
            self.series.clone(),
            format!("{slug} night"),
            format!("{slug} hall"),
        ]
    }

    /// Everything this organization can read of its estate (as its admin, its buyer and the
    /// ticket's recipient), to compare before and after the probe and the fuzzing.
    async fn snapshot(&self, org: &Admin, core: &str) -> Vec<(String, Value)> {
        let (e, v) = (&self.event, &self.venue);
        let mut seen = Vec::new();
        for path in [
            format!("/api/v1/events/{e}"),
            format!("/api/v1/events/{e}/tiers"),
            format!("/api/v1/events/{e}/promo-codes"),
            format!("/api/v1/events/{e}/orders"),
            format!("/api/v1/events/{e}/waitlist"),
            format!("/api/v1/venues/{v}"),
            format!("/api/v1/series/{}", self.series),
            format!("/api/v1/series/{}/dates", self.series),
            format!("/api/v1/users/{}", self.user),
            format!("/api/v1/organizations/{}", self.organization),
            "/api/v1/api-keys".to_owned(),
            format!("/api/v1/webhook-endpoints/{}", self.webhook_endpoint),
        ] {
            let (status, mut answer) = org.call(Method::GET, &path, None).await;
            // When a key was last used moves with this very reading (the rival's own key): not the
            // probe's doing.
            for key in answer["items"].as_array_mut().into_iter().flatten() {
                key.as_object_mut().map(|k| k.remove("last_used_at"));
            }
            seen.push((path, json!({ "status": status, "answer": answer })));
        }
        for (path, token) in [
            (format!("/api/v1/orders/{}", self.order), &self.order_token),
            (format!("/api/v1/orders/{}/tickets", self.order), &self.order_token),
            (format!("/api/v1/transfers/{}", self.transfer), &self.transfer_token),
        ] {
            seen.push((path.clone(), e2e::get_json(&format!("{core}{path}"), Some(token)).await));
        }
        seen
    }

    /// The id of this estate's thing that the path parameter `{name}`, after the segment `before`,
    /// names; `None` for a parameter that names no one's thing (a file's name).
    fn named(&self, before: &str, name: &str) -> Option<&str> {
        let id: &String = match (before, name) {
            (_, "file") => return None,
            ("venues", "id") => &self.venue,
            ("events", "id") => &self.event,
            ("tiers", "tier") => &self.tier,
            ("promo-codes", "code") => &self.code,
            ("orders", "id") => &self.order,
            ("tickets", "ticket") => &self.ticket,
            ("transfers", "id") => &self.transfer,
            ("organizations", "id") => &self.organization,
            ("users", "id") => &self.user,
            ("api-keys", "id") => &self.api_key,
            ("webhook-endpoints", "id") => &self.webhook_endpoint,
            ("webhook-deliveries", "id") => &self.webhook_delivery,
            ("holds", "hold") => &self.hold,
            ("orders", "order") => &self.order,
            ("series", "id") => &self.series,
            _ => panic!("the cross-tenant probe does not know what {{{name}}} after /{before}/ names: teach Estate::named"),
        };
        Some(id)
    }

    /// This organization's credential for an operation secured by `scheme`.
    fn credential<'a>(&'a self, scheme: &str, api_key: &'a str) -> &'a str {
        match scheme {
            "api_key" => api_key,
            "order_token" => &self.order_token,
            "transfer_token" => &self.transfer_token,
            other => panic!("the cross-tenant probe has no credential for {other}: teach Estate::credential"),
        }
    }
}

/// Routes open to anyone (no security in the document): they name nothing of a tenant's that is
/// not public. A route added without security fails the probe until it is listed here.
const PUBLIC: [(&str, &str); 3] = [
    ("GET", "/api/v1/catalog/events/{id}"),
    ("GET", "/api/v1/catalog/series/{id}"),
    ("POST", "/api/v1/webhooks/{provider}"),
];

/// The platform operators' routes: an organizer's key is refused by its role (403) before any id
/// is read (probed once each, with an id of no one's).
const OPERATORS: &str = "/api/v1/ops/";

/// The cross-tenant probe (see the test): every operation of `document` with a path parameter,
/// every way of filling its placeholders with `ours` and `theirs` but all ours, with our
/// credential for it (`api_key`, our organizer's, where an API key is wanted); each asked twice,
/// with the rival's ids and with ids that do not exist, which must both answer 404 with the same
/// problem and show none of the rival's ids (the operators' routes: 403). Answers the number of
/// probes.
async fn probe_cross_tenant(
    core: &str,
    document: &Value,
    api_key: &str,
    ours: &Estate,
    theirs: &Estate,
) -> usize {
    let http = e2e::http();
    let mut probed = 0;
    for (template, operations) in document["paths"].as_object().expect("paths") {
        if !template.contains('{') {
            continue;
        }
        for (method, operation) in operations.as_object().expect("operations") {
            let Ok(method) = method.to_uppercase().parse::<Method>() else { continue };
            let scheme = operation["security"][0].as_object().and_then(|s| s.keys().next().cloned());
            let Some(scheme) = scheme else {
                assert!(
                    PUBLIC.contains(&(method.as_str(), template.as_str())),
                    "{method} {template} has no security: list it in PUBLIC if it is meant to be open"
                );
                continue;
            };
            if template.starts_with(OPERATORS) {
                // Refused by role whatever the id: one probe, with an id of no one's.
                let path = template.replace("{id}", &uuid::Uuid::new_v4().to_string());
                let body = operation.get("requestBody").map(|_| valid_body(&method, template));
                let (status, answer) = ask(&http, core, &method, &path, api_key, body).await;
                assert_eq!(status, 403, "{method} {path} with an organizer's key: {answer}");
                probed += 1;
                continue;
            }
            let slots = slots(template, ours, theirs);
            let owned = slots.iter().filter(|s| matches!(s, Slot::Owned(..))).count();
            // Each owned placeholder ours or theirs, never all ours.
            for pick in 1..(1u32 << owned) {
                let (foreign, missing) = fill(&slots, pick);
                let credential = ours.credential(&scheme, api_key);
                let body = operation.get("requestBody").map(|_| valid_body(&method, template));
                let (status, mut answer) =
                    ask(&http, core, &method, &foreign, credential, body.clone()).await;
                let (no_ones, mut baseline) = ask(&http, core, &method, &missing, credential, body).await;
                // A problem may name the request's own path (`instance`): the caller's, not data.
                // Everything else must be the same, word for word.
                for problem in [&mut answer, &mut baseline] {
                    if let Some(problem) = problem.as_object_mut() {
                        problem.remove("instance");
                    }
                }
                assert_eq!(
                    (status, &answer),
                    (no_ones, &baseline),
                    "{method} {foreign} (another organization's) answered unlike {missing} (no one's)"
                );
                assert_eq!(status, 404, "{method} {foreign}: {answer}");
                let shown = answer.to_string();
                for id in theirs.shown() {
                    assert!(
                        !shown.contains(&id),
                        "{method} {foreign} showed another organization's {id}: {shown}"
                    );
                }
                probed += 1;
            }
        }
    }
    probed
}

/// A path template's parts: literal text, a placeholder naming a tenant's thing (ours, theirs),
/// or a file's name.
enum Slot {
    Text(String),
    Owned(String, String),
    File(&'static str),
}

fn slots(template: &str, ours: &Estate, theirs: &Estate) -> Vec<Slot> {
    let mut slots = Vec::new();
    let mut before = "";
    for segment in template.split('/').skip(1) {
        slots.push(Slot::Text("/".to_owned()));
        match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            None => {
                slots.push(Slot::Text(segment.to_owned()));
                before = segment;
            }
            Some(name) => match (ours.named(before, name), theirs.named(before, name)) {
                (Some(o), Some(t)) => slots.push(Slot::Owned(o.to_owned(), t.to_owned())),
                _ => slots.push(Slot::File(if template.contains("/exports/") {
                    "orders.csv"
                } else {
                    "qr.svg"
                })),
            },
        }
    }
    slots
}

/// The path with the `pick`ed owned placeholders (bit i for the i-th) the rival's and the rest
/// ours; and the same with fresh ids, no one's, in place of the rival's.
fn fill(slots: &[Slot], pick: u32) -> (String, String) {
    let (mut foreign, mut missing) = (String::new(), String::new());
    let mut i = 0;
    for slot in slots {
        match slot {
            Slot::Text(t) => {
                foreign.push_str(t);
                missing.push_str(t);
            }
            Slot::File(f) => {
                foreign.push_str(f);
                missing.push_str(f);
            }
            Slot::Owned(ours, theirs) => {
                if pick & (1 << i) != 0 {
                    foreign.push_str(theirs);
                    missing.push_str(&uuid::Uuid::new_v4().to_string());
                } else {
                    foreign.push_str(ours);
                    missing.push_str(ours);
                }
                i += 1;
            }
        }
    }
    (foreign, missing)
}

/// A body the operation accepts, so that the probe reaches the lookup of its ids rather than
/// stopping at the body's validation. An operation with a body not listed here fails the probe.
fn valid_body(method: &Method, template: &str) -> String {
    let body = match (method.as_str(), template) {
        ("POST", "/api/v1/events/{id}/promo-codes") => {
            json!({ "code": "PROBE", "kind": "percent", "percent_off": 10 })
        }
        ("PUT", "/api/v1/events/{id}/refund-policy") => json!([{ "hours_before": 24, "percent": 100 }]),
        ("POST", "/api/v1/orders/{id}/tickets/{ticket}/transfer")
        | ("POST", "/api/v1/transfers/{id}/transfer") => {
            json!({ "to_email": "probe@acme.test" })
        }
        ("POST", "/api/v1/events/{id}/state") => json!({ "state": "cancelled" }),
        ("POST", "/api/v1/events/{id}/box-office/holds") => {
            json!({ "kind": "general_admission", "tier": "floor", "quantity": 1 })
        }
        ("POST", "/api/v1/events/{id}/box-office/sales") => {
            json!({ "hold": "h0-probe", "payment": "cash", "total_minor": 0 })
        }
        ("POST", "/api/v1/events/{id}/box-office/tickets/{ticket}/reissue") => json!({ "reason": "probe" }),
        ("POST", "/api/v1/events/{id}/box-office/orders/{order}/paid-back") => json!({ "method": "cash" }),
        ("PATCH", "/api/v1/events/{id}") => json!({ "title": "Probed" }),
        ("PATCH", "/api/v1/series/{id}") => json!({ "title": "Probed" }),
        ("POST", "/api/v1/series/{id}/dates") => {
            json!({ "dates": [{ "starts_at": "2030-01-01T10:00:00Z" }] })
        }
        ("POST", "/api/v1/series/{id}/state") => json!({ "state": "published" }),
        ("PUT", "/api/v1/events/{id}/waiting-room") => json!({ "mode": "passthrough" }),
        ("PUT", "/api/v1/events/{id}/seats-off-sale") => json!(["A-1"]),
        ("POST", "/api/v1/events/{id}/tiers") => {
            json!({ "name": "Probe", "kind": "ga", "ga_area": "floor", "currency": "EUR", "price_minor": 100, "quantity": 1 })
        }
        ("PATCH", "/api/v1/events/{id}/tiers/{tier}") => json!({ "name": "Probed" }),
        ("PUT", "/api/v1/events/{id}/sale-settings") => sale_settings(),
        ("POST", "/api/v1/orders/{id}/refund") => json!({ "include_used": false }),
        ("POST", "/api/v1/users/{id}/api-keys") => json!({}),
        ("PATCH", "/api/v1/webhook-endpoints/{id}") => json!({ "description": "probed" }),
        ("POST", "/api/v1/webhook-endpoints/{id}/rotate-secret") => json!({}),
        ("POST", "/api/v1/webhook-endpoints/{id}/replay") => json!({ "since": "2020-01-01T00:00:00Z" }),
        ("PUT", "/api/v1/venues/{id}/seats") => {
            return "section,row,seat,label,x,y,zone,accessibility,aisle_after\r\nA,1,A-1,1,0,0,std,,\r\n"
                .to_owned()
        }
        _ => panic!("{method} {template} takes a body the cross-tenant probe cannot make: teach valid_body"),
    };
    body.to_string()
}

/// Asks `path` with `credential` (and `body`, CSV or JSON as it looks): its status and answer.
async fn ask(
    http: &reqwest::Client,
    core: &str,
    method: &Method,
    path: &str,
    credential: &str,
    body: Option<String>,
) -> (u16, Value) {
    let mut req = http.request(method.clone(), format!("{core}{path}")).bearer_auth(credential);
    if let Some(body) = body {
        let kind = if body.starts_with("section,") { "text/csv" } else { "application/json" };
        req = req.header("content-type", kind).body(body);
    }
    let resp = req.send().await.expect("the core answers");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
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
    // The fuzzer is one visitor and asks more holds a minute than a buyer may (30, then `429
    // hold-rate`): the test environment raises the rate, so that its holds reach the ledger.
    let env_file = keys.edge_env_file(&dir);
    let mut vars = std::fs::read_to_string(&env_file).unwrap();
    vars.push_str("HOLDS_PER_VISITOR_PER_MINUTE=600\n");
    std::fs::write(&env_file, vars).unwrap();
    let edge = start_edge_with_keys(edge_port, &core.url(), &dir.join("do-state"), &dir, &env_file);
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
    // Another buyer's hold, which no answer to the fuzzer may show.
    let (others_hold, others_token) = e2e::hold(&edge_url, &sold_out, &["B-1"]).await;

    // The fuzzer is a buyer admitted to the open event (tests/api-fuzz/edge.toml), and another
    // buyer is the one who leaves the line.
    let (visitor, admission) = admitted(&edge_url, &open).await;
    let (leaver_visitor, leaver) = admitted(&edge_url, &open).await;
    let held: Value = e2e::http()
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
        ("FOREIGN_IDS", format!("{others_hold},{others_token}")),
        ("API_FUZZ_STATUSES", dir.join("edge-statuses.json").display().to_string()),
    ];
    let document = format!("{edge_url}/api/v1/openapi.json");
    schemathesis(&dir.join("edge"), &document, &edge_url, "edge.toml", &[], &env, (40, 500));
    // The holds reached the ledger: most were answered by it, not refused by the rate (with the
    // default rate, 48 of 80 were 429).
    let statuses: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("edge-statuses.json")).unwrap()).unwrap();
    let holds = statuses["place_hold"].as_object().cloned().unwrap_or_default();
    let all: u64 = holds.values().filter_map(Value::as_u64).sum();
    let limited = holds.get("429").and_then(Value::as_u64).unwrap_or(0);
    assert!(all >= 50 && limited * 10 <= all, "the holds' answers: {statuses}");

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
    let buyer = e2e::http_builder().user_agent("api-fuzz/1").build().unwrap();
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

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
