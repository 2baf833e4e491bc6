//! Partner webhooks (docs/webhooks.md): endpoints registered by an organization's admins only,
//! checked against server-side request forgery, their secrets sealed at rest; domain events fanned
//! out once from the outbox, signed by the Standard Webhooks scheme and verified by a receiver that
//! uses the scheme's own JavaScript library (tests/fakes/webhook-receiver.mjs), retried on the
//! schedule, every attempt recorded, replayed with the same id, and an endpoint that keeps failing
//! disabled with a mail to its admins.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::{two_tenants, webhook_settings, Api};
use regional_core::bus::relay::{Relay, Sink};
use regional_core::webhooks::dispatch::Dispatcher;
use regional_core::webhooks::{Fanout, Webhooks};
use regional_core::AppState;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

/// The receiver: node with the `standardwebhooks` package, on a free loopback port.
struct Receiver {
    base: String,
    child: tokio::process::Child,
    http: reqwest::Client,
}

impl Receiver {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fakes/webhook-receiver.mjs");
        let child = tokio::process::Command::new("node")
            .arg(script)
            .arg(port.to_string())
            .kill_on_drop(true)
            .spawn()
            .expect("node (scripts/bootstrap.sh installs it)");
        let r = Self { base: format!("http://127.0.0.1:{port}"), child, http: reqwest::Client::new() };
        for _ in 0..100 {
            if r.http.get(format!("{}/received", r.base)).send().await.is_ok() {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the webhook receiver did not start");
    }

    async fn control(&self, c: Value) {
        let resp = self.http.put(format!("{}/control", self.base)).json(&c).send().await.unwrap();
        assert!(resp.status().is_success());
    }

    async fn received(&self) -> Vec<Value> {
        self.http.get(format!("{}/received", self.base)).send().await.unwrap().json().await.unwrap()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn with_hooks(db: &PgPool, local: bool, retries: &str, disable_after: Duration) -> (AppState, Arc<Webhooks>) {
    let mut state = AppState::new(db.clone(), Duration::from_secs(1));
    let hooks = Webhooks::new(webhook_settings(local, retries, disable_after));
    state.webhooks = Some(hooks.clone());
    (state, hooks)
}

/// An event of `org` (the domain events name it), with a paid order.
async fn an_event(api: &Api, key: &str, org: &str) -> Uuid {
    common::paid_tickets(api, key, org, &["A-1"]).await.0.parse().unwrap()
}

/// A domain event in the outbox, relayed in this process to the fan-out (as the core does
/// without a broker).
async fn domain_event(db: &PgPool, hooks: &Arc<Webhooks>, topic: &str, kind: &str, event: Uuid) -> i64 {
    let mut tx = db.begin().await.unwrap();
    let payload = json!({ "type": kind, "schema_version": 1, "at": "2026-12-05T20:00:00Z", "event_id": event,
                          "order_id": Uuid::new_v4(), "email": "buyer@example.test", "currency": "EUR", "total_minor": 4000 });
    regional_core::bus::outbox(&mut tx, topic, event, payload).await.unwrap();
    tx.commit().await.unwrap();
    let id: i64 = sqlx::query_scalar("SELECT max(id) FROM outbox").fetch_one(db).await.unwrap();
    let fanout: Arc<dyn regional_core::bus::Consumer> = Arc::new(Fanout::new(hooks.clone()));
    Relay::new(db.clone(), Sink::InProcess(vec![fanout])).relay_batch().await.expect("relay");
    id
}

/// Runs the dispatcher until `done` or `within` passes.
async fn dispatch_until(
    dispatcher: &Dispatcher,
    within: Duration,
    done: impl Fn(&[Value]) -> bool,
    receiver: &Receiver,
) {
    let until = std::time::Instant::now() + within;
    loop {
        dispatcher.run_once().await.unwrap();
        if done(&receiver.received().await) {
            return;
        }
        assert!(
            std::time::Instant::now() < until,
            "not done within {within:?}: {:?}",
            receiver.received().await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[sqlx::test]
async fn endpoints_are_checked_sealed_and_kept_to_their_organizations_admins(db: PgPool) {
    let (state, _) = with_hooks(&db, false, "", Duration::from_secs(3600));
    let api = Api::start_with(state).await;
    let (_, [(org, key), (_, other)]) = two_tenants(&api).await;
    let path = "/api/v1/webhook-endpoints";

    // Refused, naming the field, and nothing made: not https, a private address, the cloud's
    // metadata service, credentials, an unknown or no event type.
    for (body, field) in [
        (json!({ "url": "http://hooks.example.com/in", "event_types": ["order.paid"] }), "url"),
        (json!({ "url": "https://10.0.0.7/in", "event_types": ["order.paid"] }), "url"),
        (json!({ "url": "https://169.254.169.254/latest", "event_types": ["order.paid"] }), "url"),
        (json!({ "url": "https://localhost/in", "event_types": ["order.paid"] }), "url"),
        (json!({ "url": "https://a:b@hooks.example.com/", "event_types": ["order.paid"] }), "url"),
        (
            json!({ "url": "https://hooks.example.com/in", "event_types": ["order.teleported"] }),
            "event_types[0]",
        ),
        (json!({ "url": "https://hooks.example.com/in", "event_types": [] }), "event_types"),
        (
            json!({ "url": "https://hooks.example.com/in", "event_types": ["order.paid"], "description": "x".repeat(201) }),
            "description",
        ),
    ] {
        let (s, problem) = api.call(&key, Method::POST, path, Some(body.clone())).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {problem}");
        assert!(
            problem["errors"].as_array().unwrap().iter().any(|e| e["field"] == field),
            "{body}: {problem}"
        );
    }
    assert_eq!(api.count("webhook_endpoints").await, 0);

    // Registered: the secret shown once, never stored in plaintext, never in a replay's answer.
    let body = json!({ "url": "https://hooks.example.com/in", "event_types": ["order.paid", "order.paid", "ticket.checked_in"], "description": "CRM" });
    let (s, made) =
        api.call_with(&key, Method::POST, path, Some(body.clone()), &[("idempotency-key", "reg-1")]).await;
    assert_eq!(s, StatusCode::CREATED, "{made}");
    let secret = made["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_") && secret.len() > 40, "{secret}");
    assert_eq!(made["event_types"], json!(["order.paid", "ticket.checked_in"]), "each type once");
    assert_eq!(
        (made["enabled"].as_bool(), made["organization_id"].as_str()),
        (Some(true), Some(org.as_str()))
    );
    let raw: Vec<u8> =
        sqlx::query_scalar("SELECT secret_sealed FROM webhook_endpoints").fetch_one(&db).await.unwrap();
    let plain = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &secret[6..]).unwrap();
    assert!(!raw.windows(plain.len()).any(|w| w == plain.as_slice()), "sealed, not plaintext");
    let dump: String = sqlx::query_scalar("SELECT row_to_json(w)::text FROM webhook_endpoints w")
        .fetch_one(&db)
        .await
        .unwrap();
    assert!(!dump.contains(&secret[6..]), "not even base64 of it");
    let (s, again) =
        api.call_with(&key, Method::POST, path, Some(body), &[("idempotency-key", "reg-1")]).await;
    assert_eq!((s, &again["id"]), (StatusCode::CREATED, &made["id"]));
    assert!(again.get("secret").is_none() && again["secret_withheld"] == "secret", "{again}");
    let id = made["id"].as_str().unwrap();
    let one = format!("{path}/{id}");

    // Read, changed (a bad change changes nothing), disabled and enabled by the admin.
    let (s, listed) = api.get(&key, path).await;
    assert_eq!((s, listed["items"].as_array().unwrap().len()), (StatusCode::OK, 1));
    assert!(listed.to_string().find("whsec_").is_none(), "never listed with its secret");
    let (s, _) = api.call(&key, Method::PATCH, &one, Some(json!({ "url": "https://[::1]/" }))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, off) = api.call(&key, Method::PATCH, &one, Some(json!({ "enabled": false }))).await;
    assert_eq!((s, &off["disabled_reason"]), (StatusCode::OK, &json!("by_user")), "{off}");
    assert_eq!(off["url"], "https://hooks.example.com/in");
    let (_, on) = api
        .call(&key, Method::PATCH, &one, Some(json!({ "enabled": true, "event_types": ["order.refunded"] })))
        .await;
    assert_eq!(
        (&on["enabled"], &on["disabled_reason"], &on["event_types"]),
        (&json!(true), &Value::Null, &json!(["order.refunded"]))
    );

    // A rotation: a new secret, the old one signing beside it for the hours asked.
    let (s, rotated) = api
        .call(&key, Method::POST, &format!("{one}/rotate-secret"), Some(json!({ "keep_previous_hours": 2 })))
        .await;
    assert_eq!(s, StatusCode::OK, "{rotated}");
    assert!(
        rotated["secret"].as_str().unwrap().starts_with("whsec_") && rotated["secret"] != secret.as_str()
    );
    let until: chrono::DateTime<chrono::Utc> =
        rotated["previous_secret_until"].as_str().unwrap().parse().unwrap();
    assert!((until - chrono::Utc::now() - chrono::Duration::hours(2)).num_seconds().abs() < 60);
    let (s, _) = api
        .call(
            &key,
            Method::POST,
            &format!("{one}/rotate-secret"),
            Some(json!({ "keep_previous_hours": 500 })),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);

    // Another organization sees none of it; staff may not manage webhooks.
    for (method, p) in [
        (Method::GET, one.clone()),
        (Method::PATCH, one.clone()),
        (Method::DELETE, one.clone()),
        (Method::GET, format!("{one}/deliveries")),
        (Method::POST, format!("{one}/test")),
    ] {
        let (s, _) = api.call(&other, method.clone(), &p, Some(json!({}))).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{method} {p}");
    }
    let (s, others) = api.get(&other, path).await;
    assert_eq!((s, others["items"].as_array().unwrap().len()), (StatusCode::OK, 0));
    let (_, staff) =
        api.add_user(&key, json!({ "email": "staff@acme.test", "role": "organizer_staff" })).await;
    let (_, staff_key) = api.add_key(&key, &staff).await;
    let (s, _) = api.get(staff_key["key"].as_str().unwrap(), path).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // At most 16 an organization.
    for i in 1..16 {
        let (s, _) = api
            .call(
                &key,
                Method::POST,
                path,
                Some(json!({ "url": format!("https://h{i}.example.com/"), "event_types": ["order.paid"] })),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let (s, problem) = api
        .call(
            &key,
            Method::POST,
            path,
            Some(json!({ "url": "https://h.example.com/", "event_types": ["order.paid"] })),
        )
        .await;
    assert_eq!((s, &problem["reason"]), (StatusCode::CONFLICT, &json!("too_many_endpoints")), "{problem}");

    // Deleted.
    let (s, _) = api.call(&key, Method::DELETE, &one, None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(api.get(&key, &one).await.0, StatusCode::NOT_FOUND);

    // A core without CORE_WEBHOOK_KEYS answers 503, and changes nothing.
    let bare = Api::start(db.clone()).await;
    let (s, _) = bare
        .call(
            &key,
            Method::POST,
            path,
            Some(json!({ "url": "https://hooks.example.com/in", "event_types": ["order.paid"] })),
        )
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
}

#[sqlx::test]
async fn events_are_signed_verified_by_the_reference_library_retried_and_replayed(db: PgPool) {
    let (state, hooks) = with_hooks(&db, true, "1,1", Duration::from_secs(3600));
    let api = Api::start_with(state).await;
    let (_, [(org, key), (other_org, other_key)]) = two_tenants(&api).await;
    let receiver = Receiver::start().await;
    let (s, made) = api
        .call(
            &key,
            Method::POST,
            "/api/v1/webhook-endpoints",
            Some(json!({
            "url": format!("{}/hook", receiver.base), "event_types": ["order.paid", "ticket.checked_in"] })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{made}");
    let endpoint = made["id"].as_str().unwrap().to_owned();
    receiver.control(json!({ "secret": made["secret"], "fail_next": 2, "fail_status": 503 })).await;
    let event = an_event(&api, &key, &org).await;
    let other_event = an_event(&api, &other_key, &other_org).await;

    // Only the types asked for, of the endpoint's own organization, once each however often the
    // outbox offers them.
    let paid = domain_event(&db, &hooks, "orders", "order.paid", event).await;
    domain_event(&db, &hooks, "orders", "order.created", event).await;
    domain_event(&db, &hooks, "orders", "order.paid", other_event).await;
    regional_core::bus::relay::replay(&db, Some(paid), None, None).await.unwrap();
    let fanout: Arc<dyn regional_core::bus::Consumer> = Arc::new(Fanout::new(hooks.clone()));
    Relay::new(db.clone(), Sink::InProcess(vec![fanout])).relay_batch().await.unwrap();
    assert_eq!(api.count("webhook_deliveries").await, 1, "one delivery: order.paid of its own event");

    // Two refusals (503), then accepted: three attempts a second apart, each verified by the
    // library with the same webhook-id.
    let dispatcher = Dispatcher::new(db.clone(), hooks.clone()).unwrap();
    dispatch_until(
        &dispatcher,
        Duration::from_secs(20),
        |r| r.iter().any(|d| d["answered"] == 200),
        &receiver,
    )
    .await;
    let got = receiver.received().await;
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(
        got.iter().all(|d| d["verified"] == true
            && d["type"] == "order.paid"
            && d["content_type"] == "application/json"),
        "{got:?}"
    );
    assert!(got.iter().all(|d| d["id"] == got[0]["id"]), "one webhook-id for every attempt");
    let body: Value = serde_json::from_str(got[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!((&body["type"], &body["timestamp"]), (&json!("order.paid"), &json!("2026-12-05T20:00:00Z")));
    assert_eq!((&body["data"]["event_id"], &body["data"]["message_id"]), (&json!(event), &json!(paid)));

    // Every attempt recorded with its answer.
    let (s, deliveries) = api.get(&key, &format!("/api/v1/webhook-endpoints/{endpoint}/deliveries")).await;
    assert_eq!(s, StatusCode::OK);
    let delivery = &deliveries["items"][0];
    assert_eq!(
        (&delivery["state"], &delivery["tries"], &delivery["message_id"]),
        (&json!("succeeded"), &json!(3), &got[0]["id"])
    );
    let d = delivery["id"].as_str().unwrap().to_owned();
    let (_, detail) = api.get(&key, &format!("/api/v1/webhook-deliveries/{d}")).await;
    let attempts = detail["attempts"].as_array().unwrap();
    let statuses: Vec<&Value> = attempts.iter().map(|a| &a["status"]).collect();
    assert_eq!(statuses, [&json!(503), &json!(503), &json!(200)], "{detail}");
    assert!(attempts[0]["response"].as_str().unwrap().contains("asked to fail"));
    assert_eq!(detail["body"], body);
    let (s, _) = api.get(&other_key, &format!("/api/v1/webhook-deliveries/{d}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "another organization's delivery");
    let (_, failed) =
        api.get(&key, &format!("/api/v1/webhook-endpoints/{endpoint}/deliveries?state=failed")).await;
    assert_eq!(failed["items"].as_array().unwrap().len(), 0);

    // A replay: the same id again, verified. A pending one is not replayed twice.
    let (s, replayed) =
        api.call(&key, Method::POST, &format!("/api/v1/webhook-deliveries/{d}/replay"), None).await;
    assert_eq!((s, &replayed["state"]), (StatusCode::OK, &json!("pending")), "{replayed}");
    let (s, _) = api.call(&key, Method::POST, &format!("/api/v1/webhook-deliveries/{d}/replay"), None).await;
    assert_eq!(s, StatusCode::CONFLICT);
    dispatch_until(&dispatcher, Duration::from_secs(10), |r| r.len() == 4, &receiver).await;
    let got = receiver.received().await;
    assert_eq!(
        (&got[3]["id"], &got[3]["verified"], &got[3]["answered"]),
        (&got[0]["id"], &json!(true), &json!(200))
    );

    // A rotation: the old secret still signs (the receiver has not been told the new one yet),
    // then the new one alone once the receiver knows it.
    let (_, rotated) = api
        .call(&key, Method::POST, &format!("/api/v1/webhook-endpoints/{endpoint}/rotate-secret"), None)
        .await;
    let (_, ping) =
        api.call(&key, Method::POST, &format!("/api/v1/webhook-endpoints/{endpoint}/test"), None).await;
    assert_eq!(ping["event_type"], "webhook.test");
    // Tests are clicks: a few may wait at once, not a flood.
    let test = format!("/api/v1/webhook-endpoints/{endpoint}/test");
    for _ in 1..5 {
        assert_eq!(api.call(&key, Method::POST, &test, None).await.0, StatusCode::CREATED);
    }
    let (s, problem) = api.call(&key, Method::POST, &test, None).await;
    assert_eq!((s, &problem["reason"]), (StatusCode::CONFLICT, &json!("too_many_tests")), "{problem}");
    sqlx::query("DELETE FROM webhook_deliveries WHERE event_type = 'webhook.test' AND id <> $1")
        .bind(ping["id"].as_str().unwrap().parse::<Uuid>().unwrap())
        .execute(&db)
        .await
        .unwrap();
    dispatch_until(&dispatcher, Duration::from_secs(10), |r| r.len() == 5, &receiver).await;
    let got = receiver.received().await;
    assert_eq!(
        (&got[4]["verified"], &got[4]["type"]),
        (&json!(true), &json!("webhook.test")),
        "{:?}",
        got[4]
    );
    assert_eq!(
        got[4]["signature"].as_str().unwrap().split(' ').count(),
        2,
        "two signatures during a rotation"
    );
    receiver.control(json!({ "secret": rotated["secret"] })).await;
    api.call(&key, Method::POST, &format!("/api/v1/webhook-endpoints/{endpoint}/test"), None).await;
    dispatch_until(&dispatcher, Duration::from_secs(10), |r| r.len() == 6, &receiver).await;
    assert_eq!(receiver.received().await[5]["verified"], true);

    // A receiver with another secret refuses the signature: the check is real, and the refusal is
    // recorded as a failure (and retried).
    receiver.control(json!({ "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" })).await;
    let (_, ping) =
        api.call(&key, Method::POST, &format!("/api/v1/webhook-endpoints/{endpoint}/test"), None).await;
    dispatch_until(&dispatcher, Duration::from_secs(10), |r| r.len() == 7, &receiver).await;
    let got = receiver.received().await;
    assert_eq!((&got[6]["verified"], &got[6]["answered"]), (&json!(false), &json!(400)), "{:?}", got[6]);
    let (_, detail) =
        api.get(&key, &format!("/api/v1/webhook-deliveries/{}", ping["id"].as_str().unwrap())).await;
    assert_eq!((&detail["state"], &detail["last_status"]), (&json!("pending"), &json!(400)), "{detail}");
}

#[sqlx::test]
async fn an_endpoint_failing_too_long_is_disabled_its_admins_mailed_and_replayed_once_fixed(db: PgPool) {
    let (state, hooks) = with_hooks(&db, true, "1,1,1", Duration::from_secs(2));
    let api = Api::start_with(state).await;
    let (_, [(org, key), _]) = two_tenants(&api).await;
    let receiver = Receiver::start().await;
    let (_, made) = api
        .call(
            &key,
            Method::POST,
            "/api/v1/webhook-endpoints",
            Some(json!({
            "url": format!("{}/hook", receiver.base), "event_types": ["order.paid"], "description": "CRM" })),
        )
        .await;
    let endpoint = made["id"].as_str().unwrap().to_owned();
    // Refusing with an answer PostgreSQL's text cannot hold as it is (a NUL): still recorded.
    receiver.control(json!({ "secret": made["secret"], "fail_next": 1000, "fail_status": 500, "fail_body": "down\u{0}for maintenance" })).await;
    let event = an_event(&api, &key, &org).await;
    domain_event(&db, &hooks, "orders", "order.paid", event).await;
    domain_event(&db, &hooks, "orders", "order.paid", event).await;

    // It fails for longer than the limit: disabled by the core, its pending deliveries failed.
    let dispatcher = Dispatcher::new(db.clone(), hooks.clone()).unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        dispatcher.run_once().await.unwrap();
        let (_, e) = api.get(&key, &format!("/api/v1/webhook-endpoints/{endpoint}")).await;
        if e["enabled"] == false {
            assert_eq!(e["disabled_reason"], "failing", "{e}");
            assert!(e["failing_since"].is_string());
            break;
        }
        assert!(std::time::Instant::now() < until, "never disabled: {e}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let states: Vec<String> =
        sqlx::query_scalar("SELECT state FROM webhook_deliveries").fetch_all(&db).await.unwrap();
    assert_eq!(states, ["failed", "failed"]);
    let answer: String = sqlx::query_scalar("SELECT response FROM webhook_attempts ORDER BY id LIMIT 1")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(answer, "down\u{fffd}for maintenance");
    let tried = receiver.received().await.len();
    dispatcher.run_once().await.unwrap();
    assert_eq!(receiver.received().await.len(), tried, "nothing sent to a disabled endpoint");
    domain_event(&db, &hooks, "orders", "order.paid", event).await;
    assert_eq!(api.count("webhook_deliveries").await, 2, "no new delivery for a disabled endpoint");

    // Recorded by the core in the audit log, and the organization's admin mailed once.
    let (actor, action): (String, String) =
        sqlx::query_as("SELECT actor, action FROM audit_log WHERE subject = $1 ORDER BY id DESC LIMIT 1")
            .bind(format!("webhook_endpoint:{endpoint}"))
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!((actor.as_str(), action.as_str()), ("system:webhooks", "webhook_endpoint.disable"));
    let mails: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT recipient, subject, text_body FROM notifications WHERE kind = 'webhook_disabled'",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(mails[0].0, "admin@acme.test");
    assert!(mails[0].1.contains(&format!("{}/hook", receiver.base)), "{}", mails[0].1);
    assert!(mails[0].2.contains("HTTP 500") && mails[0].2.contains(&endpoint), "{}", mails[0].2);

    // Fixed: enabled again and its failed deliveries of the outage replayed, each delivered.
    receiver.control(json!({ "fail_next": 0 })).await;
    let (s, problem) = api
        .call(
            &key,
            Method::POST,
            &format!("/api/v1/webhook-endpoints/{endpoint}/replay"),
            Some(json!({ "since": "2020-01-01T00:00:00Z" })),
        )
        .await;
    assert_eq!(
        (s, &problem["reason"]),
        (StatusCode::CONFLICT, &json!("endpoint_disabled")),
        "enable it first"
    );
    let (_, on) = api
        .call(
            &key,
            Method::PATCH,
            &format!("/api/v1/webhook-endpoints/{endpoint}"),
            Some(json!({ "enabled": true })),
        )
        .await;
    assert_eq!((&on["enabled"], &on["failing_since"]), (&json!(true), &Value::Null), "{on}");
    let (s, problem) = api
        .call(
            &key,
            Method::POST,
            &format!("/api/v1/webhook-endpoints/{endpoint}/replay"),
            Some(json!({ "since": "2030-01-01T00:00:00Z", "until": "2029-01-01T00:00:00Z" })),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    let (s, replayed) = api
        .call(
            &key,
            Method::POST,
            &format!("/api/v1/webhook-endpoints/{endpoint}/replay"),
            Some(json!({ "since": "2020-01-01T00:00:00Z" })),
        )
        .await;
    assert_eq!((s, &replayed["replayed"]), (StatusCode::OK, &json!(2)), "{replayed}");
    let before = receiver.received().await.len();
    dispatch_until(
        &dispatcher,
        Duration::from_secs(10),
        |r| r[before..].iter().filter(|d| d["answered"] == 200).count() == 2,
        &receiver,
    )
    .await;
    let states: Vec<String> =
        sqlx::query_scalar("SELECT state FROM webhook_deliveries").fetch_all(&db).await.unwrap();
    assert_eq!(states, ["succeeded", "succeeded"]);
}

#[sqlx::test]
async fn a_private_address_is_refused_at_delivery_too(db: PgPool) {
    // Registered when the rules allowed it (or by a row changed behind the API): the dispatcher
    // checks again and sends nothing to a loopback address.
    let (state, hooks) = with_hooks(&db, false, "", Duration::from_secs(3600));
    let api = Api::start_with(state).await;
    let (_, [(org, key), _]) = two_tenants(&api).await;
    let receiver = Receiver::start().await;
    let (s, _) = api
        .call(
            &key,
            Method::POST,
            "/api/v1/webhook-endpoints",
            Some(json!({ "url": "https://hooks.example.com/in", "event_types": ["order.paid"] })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let port = receiver.base.rsplit(':').next().unwrap();
    sqlx::query("UPDATE webhook_endpoints SET url = $1")
        .bind(format!("https://127.0.0.1:{port}/hook"))
        .execute(&db)
        .await
        .unwrap();
    let event = an_event(&api, &key, &org).await;
    domain_event(&db, &hooks, "orders", "order.paid", event).await;
    let dispatcher = Dispatcher::new(db.clone(), hooks.clone()).unwrap();
    assert_eq!(dispatcher.run_once().await.unwrap(), 1);
    assert!(receiver.received().await.is_empty(), "nothing reached the loopback receiver");
    let (state, error): (String, String) =
        sqlx::query_as("SELECT state, last_error FROM webhook_deliveries").fetch_one(&db).await.unwrap();
    assert_eq!(state, "failed", "no retries in this schedule");
    assert!(error.contains("private or reserved address"), "{error}");
}

#[sqlx::test]
async fn two_dispatchers_send_each_delivery_once_and_one_endpoint_four_at_a_time(db: PgPool) {
    let (state, hooks) = with_hooks(&db, true, "1", Duration::from_secs(3600));
    let api = Api::start_with(state).await;
    let (_, [(org, key), _]) = two_tenants(&api).await;
    let receiver = Receiver::start().await;
    let (_, made) = api
        .call(
            &key,
            Method::POST,
            "/api/v1/webhook-endpoints",
            Some(json!({
            "url": format!("{}/hook", receiver.base), "event_types": ["order.paid"] })),
        )
        .await;
    receiver.control(json!({ "secret": made["secret"], "delay_ms": 300 })).await;
    let event = an_event(&api, &key, &org).await;
    for _ in 0..10 {
        domain_event(&db, &hooks, "orders", "order.paid", event).await;
    }
    // Two cores' dispatchers at once, round after round, until every delivery succeeded.
    let (a, b) = (
        Dispatcher::new(db.clone(), hooks.clone()).unwrap(),
        Dispatcher::new(db.clone(), hooks.clone()).unwrap(),
    );
    let until = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (x, y) = tokio::join!(a.run_once(), b.run_once());
        x.unwrap();
        y.unwrap();
        let done: i64 =
            sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries WHERE state = 'succeeded'")
                .fetch_one(&db)
                .await
                .unwrap();
        if done == 10 {
            break;
        }
        assert!(std::time::Instant::now() < until, "{done} of 10 delivered");
    }
    let got = receiver.received().await;
    let mut ids: Vec<&str> = got.iter().map(|d| d["id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!((got.len(), ids.len()), (10, 10), "each delivery once: {got:?}");
    let stats: Value =
        receiver.http.get(format!("{}/stats", receiver.base)).send().await.unwrap().json().await.unwrap();
    assert!(stats["max_in_flight"].as_i64().unwrap() <= 4, "one endpoint, four at a time over both: {stats}");
    let attempts = api.count("webhook_attempts").await;
    assert_eq!(attempts, 10);
}

#[sqlx::test]
async fn an_attempt_in_flight_when_its_endpoint_is_disabled_leaves_the_delivery_failed(db: PgPool) {
    let (state, hooks) = with_hooks(&db, true, "1,1", Duration::from_secs(3600));
    let api = Api::start_with(state).await;
    let (_, [(org, key), _]) = two_tenants(&api).await;
    let receiver = Receiver::start().await;
    let (_, made) = api
        .call(
            &key,
            Method::POST,
            "/api/v1/webhook-endpoints",
            Some(json!({
            "url": format!("{}/hook", receiver.base), "event_types": ["order.paid"] })),
        )
        .await;
    let endpoint = made["id"].as_str().unwrap().to_owned();
    receiver.control(json!({ "secret": made["secret"], "delay_ms": 1500, "fail_next": 1 })).await;
    let event = an_event(&api, &key, &org).await;
    domain_event(&db, &hooks, "orders", "order.paid", event).await;
    domain_event(&db, &hooks, "orders", "order.paid", event).await;
    let dispatcher = Arc::new(Dispatcher::new(db.clone(), hooks.clone()).unwrap());
    let running = {
        let d = dispatcher.clone();
        tokio::spawn(async move { d.run_once().await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The admin disables it while both attempts are in flight (one will fail, one succeed).
    let (s, off) = api
        .call(
            &key,
            Method::PATCH,
            &format!("/api/v1/webhook-endpoints/{endpoint}"),
            Some(json!({ "enabled": false })),
        )
        .await;
    assert_eq!((s, &off["disabled_reason"]), (StatusCode::OK, &json!("by_user")), "{off}");
    assert_eq!(running.await.unwrap(), 2);
    // Both attempts are history; neither made its delivery pending again (nothing would send it,
    // and nothing could replay it): both failed, replayable once enabled.
    assert_eq!(api.count("webhook_attempts").await, 2);
    let states: Vec<String> = sqlx::query_scalar("SELECT state FROM webhook_deliveries ORDER BY created_at")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(states, ["failed", "failed"]);
    // An admin's disabling is not an operator's problem: nothing waits, nothing is late.
    let metrics =
        api.http.get(format!("{}/metrics", api.metrics_base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("ticketing_webhook_deliveries_pending 0"), "{metrics}");
    let failing: Option<String> =
        sqlx::query_scalar("SELECT failing_since::text FROM webhook_endpoints").fetch_one(&db).await.unwrap();
    assert_eq!(failing, None, "a failure recorded after the disabling is not held against it");
}

#[sqlx::test]
async fn one_endpoints_backlog_does_not_hold_up_its_organizations_other_endpoints(db: PgPool) {
    let (state, hooks) = with_hooks(&db, true, "", Duration::from_secs(3600));
    let api = Api::start_with(state).await;
    let (_, [(org, key), _]) = two_tenants(&api).await;
    let receiver = Receiver::start().await;
    let mut secrets = Vec::new();
    for (path, kind) in [("busy", "order.paid"), ("quiet", "order.refunded")] {
        let (s, made) = api
            .call(
                &key,
                Method::POST,
                "/api/v1/webhook-endpoints",
                Some(json!({
                "url": format!("{}/{path}", receiver.base), "event_types": [kind] })),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{made}");
        secrets.push(made["secret"].clone());
    }
    // The receiver verifies with one secret: the busy endpoint's deliveries are refused (400) and
    // the quiet one's are not verified either; what matters is who was attempted in the round.
    receiver.control(json!({ "secret": secrets[1] })).await;
    let event = an_event(&api, &key, &org).await;
    for _ in 0..20 {
        domain_event(&db, &hooks, "orders", "order.paid", event).await;
    }
    domain_event(&db, &hooks, "orders", "order.refunded", event).await;
    // One round: four of the busy endpoint (its cap), and the quiet one's delivery too, although
    // twenty older deliveries of its organization wait.
    let dispatcher = Dispatcher::new(db.clone(), hooks.clone()).unwrap();
    assert_eq!(dispatcher.run_once().await.unwrap(), 5);
    let got = receiver.received().await;
    let quiet: Vec<&Value> = got.iter().filter(|d| d["path"] == "/quiet").collect();
    assert_eq!((quiet.len(), got.len()), (1, 5), "{got:?}");
    assert_eq!((&quiet[0]["verified"], &quiet[0]["answered"]), (&json!(true), &json!(200)));
}
