//! SMS (docs/sms.md) against the local Twilio (`scripts/fake-twilio.mjs`, which speaks Twilio's
//! Messages API and signs its reports as Twilio does; tests/fakes/twilio.test.mjs holds it to
//! Twilio's own Node library): a paid order's confirmation and a transfer offer go out as texts
//! to the numbers given, the provider's signed delivery reports move them forward only, a STOP
//! texted back opts the number out (and START back in), the provider's refusal of an unsubscribed
//! number opts it out too, the per-number cap defers, failures retry or end, and operators see it
//! all.

use crate::common;

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{paid_tickets, two_tenants, Api};
use regional_core::bus::relay::{Relay, Sink};
use regional_core::notifications::{reminders, MailSettings, Notifier};
use regional_core::sms::sender::{SmsSender, SmsSenderSettings};
use regional_core::sms::twilio::{Twilio, TwilioSettings};
use regional_core::sms::{Reach, Sms};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

const SID: &str = "AC00000000000000000000000000000001";
const TOKEN: &str = "local-auth-token-0123456789";
const BUYER: &str = "+447700900123";

/// The local Twilio, stopped when dropped.
struct LocalTwilio {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Drop for LocalTwilio {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LocalTwilio {
    /// Texts sent back go to `incoming`.
    fn start(incoming: &str) -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/fake-twilio.mjs");
        let mut child = Command::new("node")
            .args([script, "--sid", SID, "--token", TOKEN, "--incoming", incoming])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node runs scripts/fake-twilio.mjs");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let ready: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        Self { child, base: ready["url"].as_str().unwrap().to_owned(), http: reqwest::Client::new() }
    }

    async fn control(&self, path: &str, body: Value) -> Value {
        let resp = self.http.post(format!("{}{path}", self.base)).json(&body).send().await.unwrap();
        assert!(resp.status().is_success());
        resp.json().await.unwrap()
    }

    async fn messages(&self) -> Vec<Value> {
        self.http.get(format!("{}/_fake/messages", self.base)).send().await.unwrap().json().await.unwrap()
    }
}

fn signer() -> shared_types::token::TokenSigner {
    shared_types::token::TokenSigner::from_seed("core-test", [4; 32]).unwrap()
}

/// The core with SMS on, served on its own port (the provider signs over the core's URL), and the
/// local Twilio that texts it back.
async fn with_sms(db: &PgPool) -> (Api, LocalTwilio, Sms) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public_url = format!("http://{}", listener.local_addr().unwrap());
    let twilio = LocalTwilio::start(&format!("{public_url}/api/v1/sms/incoming"));
    let sms = Sms {
        provider: TwilioSettings {
            api_base: twilio.base.clone(),
            account_sid: SID.into(),
            auth_token: TOKEN.into(),
            from: "+15005550006".into(),
            public_url,
        },
        reach: Reach::default(),
    };
    let mut state = common::with_checkout(db, &signer());
    state.sms = Some(Arc::new(sms.clone()));
    (Api::start_on(listener, state).await, twilio, sms)
}

fn sender(db: &PgPool, sms: &Sms, per_day: i64) -> SmsSender {
    let settings = SmsSenderSettings { max_attempts: 3, retry_base: Duration::from_millis(10), per_day };
    SmsSender::new(db.clone(), Twilio::new(sms.provider.clone(), Duration::from_secs(5)), settings)
}

/// Delivers the outbox to the notifier, in this process (as the core does without a broker).
async fn relay(db: &PgPool) {
    let settings =
        Arc::new(MailSettings { buyer_url: "https://tickets.example.test".into(), signer: signer() });
    let notifier: Arc<dyn regional_core::bus::Consumer> = Arc::new(Notifier::new(settings));
    Relay::new(db.clone(), Sink::InProcess(vec![notifier])).relay_batch().await.expect("relay");
}

async fn text_of(db: &PgPool, kind: &str) -> (String, String, Option<String>, Option<i64>, String) {
    sqlx::query_as(
        "SELECT state, recipient, provider_status, error_code, body FROM sms_messages WHERE kind = $1",
    )
    .bind(kind)
    .fetch_one(db)
    .await
    .unwrap()
}

/// Waits until the text `kind` is in `state` (the provider's reports arrive on their own).
async fn until_state(db: &PgPool, dedup_key: &str, state: &str) {
    for _ in 0..100 {
        let now: String = sqlx::query_scalar("SELECT state FROM sms_messages WHERE dedup_key = $1")
            .bind(dedup_key)
            .fetch_one(db)
            .await
            .unwrap();
        if now == state {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rows: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT dedup_key, state, provider_status, last_error FROM sms_messages ORDER BY created_at",
    )
    .fetch_all(db)
    .await
    .unwrap();
    panic!("{dedup_key} never became {state}: {rows:?}");
}

/// A signed form from the provider to one of the core's routes (`sign_with` the auth token, or a
/// wrong one).
async fn provider_post(
    api: &Api,
    sms: &Sms,
    path: &str,
    params: &[(&str, &str)],
    sign_with: &str,
) -> StatusCode {
    let owned: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let signature =
        regional_core::sms::twilio::signature(sign_with, &sms.provider.callback_url(path), &owned);
    api.http
        .post(format!("{}{path}", api.base))
        .header("x-twilio-signature", signature)
        .form(&owned)
        .send()
        .await
        .unwrap()
        .status()
}

#[sqlx::test]
async fn a_confirmation_is_texted_reported_delivered_and_stop_opts_the_number_out(db: PgPool) {
    let (api, twilio, sms) = with_sms(&db).await;
    let (root, [(org, key), _]) = two_tenants(&api).await;
    let (event, order, tickets) = paid_tickets(&api, &key, &org, &["A-1", "A-2"]).await;
    sqlx::query("UPDATE orders SET phone = $2 WHERE id = $1")
        .bind(order)
        .bind(BUYER)
        .execute(&db)
        .await
        .unwrap();
    let event: Uuid = event.parse().unwrap();
    let mut tx = db.begin().await.unwrap();
    let listed: Vec<Value> = tickets.iter().map(|t| json!({ "ticket_id": t })).collect();
    let paid = json!({ "type": "order.paid", "schema_version": 1, "order_id": order, "event_id": event,
                       "email": "Buyer@Example.test", "tickets": listed });
    regional_core::bus::outbox(&mut tx, "orders", event, paid).await.unwrap();
    tx.commit().await.unwrap();
    relay(&db).await;
    relay(&db).await;

    // Queued once, beside the mail, with the order's link and how to stop.
    let (state, to, _, _, body) = text_of(&db, "order_confirmation").await;
    assert_eq!((state.as_str(), to.as_str()), ("pending", BUYER));
    assert!(body.contains(&format!("https://tickets.example.test/orders/{order}#")), "{body}");
    assert!(body.contains("2 tickets") && body.contains("Reply STOP"), "{body}");
    assert_eq!(api.count("sms_messages").await, 1, "a message relayed twice texts once");

    // Sent, then reported sent and delivered by the provider's signed callbacks.
    let sender = sender(&db, &sms, 2);
    assert_eq!(sender.send_due().await.unwrap(), 1);
    let key_of = format!("order_confirmation:{order}");
    until_state(&db, &key_of, "delivered").await;
    let (_, _, status, _, _) = text_of(&db, "order_confirmation").await;
    assert_eq!(status.as_deref(), Some("delivered"));
    let sent = twilio.messages().await;
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0]["to"].as_str(), sent[0]["from"].as_str()), (Some(BUYER), Some("+15005550006")));
    assert_eq!(sent[0]["body"].as_str(), Some(body.as_str()));
    let answers: Vec<&Value> =
        sent[0]["callbacks"].as_array().unwrap().iter().map(|c| &c["answer"]).collect();
    assert_eq!(answers, [&json!(204), &json!(204)], "the core took both reports");

    // A report signed with another token is refused and changes nothing; a late, older one too.
    let sid = sent[0]["sid"].as_str().unwrap();
    let report =
        [("AccountSid", SID), ("MessageSid", sid), ("MessageStatus", "failed"), ("ErrorCode", "30008")];
    let s = provider_post(&api, &sms, "/api/v1/sms/status", &report, "another-token-0123456789").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let late = [("AccountSid", SID), ("MessageSid", sid), ("MessageStatus", "sent")];
    assert_eq!(provider_post(&api, &sms, "/api/v1/sms/status", &late, TOKEN).await, StatusCode::NO_CONTENT);
    let made_up = [("AccountSid", SID), ("MessageSid", sid), ("MessageStatus", "exploded")];
    assert_eq!(
        provider_post(&api, &sms, "/api/v1/sms/status", &made_up, TOKEN).await,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let other_account = [
        ("AccountSid", "AC99999999999999999999999999999999"),
        ("MessageSid", sid),
        ("MessageStatus", "failed"),
    ];
    assert_eq!(
        provider_post(&api, &sms, "/api/v1/sms/status", &other_account, TOKEN).await,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(text_of(&db, "order_confirmation").await.0, "delivered");

    // The number's cap (2 a day here): the second text goes, the third waits for the window.
    let mut conn = db.acquire().await.unwrap();
    for n in 1..=2 {
        let queued = regional_core::sms::queue(
            &mut conn,
            &format!("extra:{n}"),
            "event_reminder",
            BUYER,
            "Reminder. Reply STOP to stop these texts.",
            Some(order),
            Some(event),
        )
        .await
        .unwrap();
        assert!(queued);
    }
    assert_eq!(sender.send_due().await.unwrap(), 2);
    let (waiting, wait): (String, f64) = sqlx::query_as(
        "SELECT dedup_key, extract(epoch FROM next_attempt_at - now())::float8 FROM sms_messages
         WHERE dedup_key LIKE 'extra:%' AND state = 'pending'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert!(wait > 23.0 * 3600.0, "deferred a day, not {wait} s");
    let went = if waiting == "extra:1" { "extra:2" } else { "extra:1" };
    until_state(&db, went, "delivered").await;

    // STOP texted back: the number is opted out, the waiting text suppressed, nothing more queued.
    let answer = twilio.control("/_fake/reply", json!({ "from": BUYER, "body": "Stop" })).await;
    assert_eq!(answer["delivered"]["status"], 200, "{answer}");
    assert!(answer["delivered"]["body"].as_str().unwrap().contains("<Response>"));
    let source: String = sqlx::query_scalar("SELECT source FROM sms_opt_outs WHERE phone = $1")
        .bind(BUYER)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(source, "keyword");
    until_state(&db, &waiting, "suppressed").await;
    let again =
        regional_core::sms::queue(&mut conn, "extra:3", "event_reminder", BUYER, "x STOP", None, None)
            .await
            .unwrap();
    assert!(!again, "an opted-out number is not queued");
    // START: texts may go again.
    twilio.control("/_fake/reply", json!({ "from": BUYER, "body": "START" })).await;
    assert_eq!(api.count("sms_opt_outs").await, 0);
    assert!(regional_core::sms::queue(&mut conn, "extra:4", "event_reminder", BUYER, "x STOP", None, None)
        .await
        .unwrap());
    // An incoming text not signed by the provider changes nothing.
    let forged = [("AccountSid", SID), ("From", BUYER), ("Body", "STOP")];
    let s = provider_post(&api, &sms, "/api/v1/sms/incoming", &forged, "another-token-0123456789").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(api.count("sms_opt_outs").await, 0);

    // Operators see texts and their status; organizers do not.
    let (s, delivered) = api.get(&root, "/api/v1/ops/sms?state=delivered").await;
    assert_eq!(s, StatusCode::OK, "{delivered}");
    let items = delivered["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(items
        .iter()
        .all(|i| i["recipient"] == BUYER && i["provider_sid"].as_str().unwrap().starts_with("SM")));
    assert!(items[0].get("body").is_none(), "a text's link is not shown");
    assert_eq!(api.get(&root, "/api/v1/ops/sms?state=lost").await.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(api.get(&key, "/api/v1/ops/sms").await.0, StatusCode::FORBIDDEN);
    // /metrics counts the sends and the reports.
    let metrics = reqwest::get(format!("{}/metrics", api.metrics_base)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("ticketing_sms_sends_total{outcome=\"sent\"} 2"), "{metrics}");
    assert!(metrics.contains("ticketing_sms_delivery_reports_total{status=\"delivered\"}"), "{metrics}");
}

#[sqlx::test]
async fn refusals_opt_out_end_or_retry_as_the_provider_says(db: PgPool) {
    let (api, twilio, sms) = with_sms(&db).await;
    let mut conn = db.acquire().await.unwrap();
    for (key, to) in [("blocked", "+15005550004"), ("landline", "+15005550009")] {
        assert!(regional_core::sms::queue(
            &mut conn,
            key,
            "event_reminder",
            to,
            "Hi. Reply STOP to stop these texts.",
            None,
            None
        )
        .await
        .unwrap());
    }
    let sender = sender(&db, &sms, 5);
    assert_eq!(sender.send_due().await.unwrap(), 2);
    let row = |key: &'static str| {
        let db = db.clone();
        async move {
            sqlx::query_as::<_, (String, Option<i64>, i32)>(
                "SELECT state, error_code, attempts FROM sms_messages WHERE dedup_key = $1",
            )
            .bind(key)
            .fetch_one(&db)
            .await
            .unwrap()
        }
    };
    // Twilio's 21610: the number unsubscribed there; opted out here too, the text suppressed.
    let (state, code, _) = row("blocked").await;
    assert_eq!((state.as_str(), code), ("suppressed", Some(21610)));
    let source: String = sqlx::query_scalar("SELECT source FROM sms_opt_outs WHERE phone = '+15005550004'")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(source, "provider");
    // A number that cannot take texts: failed for good at the first attempt.
    assert_eq!(row("landline").await, ("failed".to_owned(), Some(21614), 1));
    // The provider's 500: retried later (one attempt spent), then sent.
    regional_core::sms::queue(&mut conn, "flaky", "event_reminder", "+447700900200", "Hi STOP", None, None)
        .await
        .unwrap();
    twilio.control("/_fake/fail-next", json!({})).await;
    assert_eq!(sender.send_due().await.unwrap(), 1);
    let (state, code, attempts) = row("flaky").await;
    assert_eq!((state.as_str(), code, attempts), ("pending", Some(20500), 1));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sender.send_due().await.unwrap(), 1);
    until_state(&db, "flaky", "delivered").await;
    // The provider marks an unreachable handset: reported undelivered with its code.
    twilio.control("/_fake/unreachable", json!({ "to": "+447700900300" })).await;
    regional_core::sms::queue(&mut conn, "gone", "event_reminder", "+447700900300", "Hi STOP", None, None)
        .await
        .unwrap();
    sender.send_due().await.unwrap();
    until_state(&db, "gone", "undelivered").await;
    let code: Option<i64> =
        sqlx::query_scalar("SELECT error_code FROM sms_messages WHERE dedup_key = 'gone'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(code, Some(30003));
    drop(api);
}

#[sqlx::test]
async fn a_transfer_offer_is_texted_to_the_number_its_giver_gives_and_reminders_to_buyers(db: PgPool) {
    let (api, twilio, sms) = with_sms(&db).await;
    let (_, [(org, key), _]) = two_tenants(&api).await;
    let (event, order, tickets) = paid_tickets(&api, &key, &org, &["A-1", "A-2"]).await;
    sqlx::query("UPDATE orders SET phone = $2 WHERE id = $1")
        .bind(order)
        .bind(BUYER)
        .execute(&db)
        .await
        .unwrap();
    let token = common::order_token(&signer(), order, &event);
    let offer = |body: Value| {
        let url = format!("{}/api/v1/orders/{order}/tickets/{}/transfer", api.base, tickets[0]);
        api.http.post(url).bearer_auth(&token).json(&body).send()
    };
    // A number not in international form is refused, naming the field.
    let resp = offer(json!({ "to_email": "friend@example.test", "to_phone": "07700 900456" })).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = resp.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "to_phone", "{problem}");
    let resp =
        offer(json!({ "to_email": "friend@example.test", "to_phone": "+44 7700 900456" })).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    relay(&db).await;
    let (state, to, _, _, body) = text_of(&db, "transfer_offer").await;
    assert_eq!((state.as_str(), to.as_str()), ("pending", "+447700900456"));
    sqlx::query("UPDATE sms_messages SET created_at = now() - interval '2 days'").execute(&db).await.unwrap();
    assert!(
        body.contains("https://tickets.example.test/transfers/") && body.contains("Buyer@Example.test"),
        "{body}"
    );

    // Withdrawn before it was sent: the text is not sent.
    let withdraw = api
        .http
        .post(format!("{}/api/v1/orders/{order}/tickets/{}/transfer/cancel", api.base, tickets[0]))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(withdraw.status(), StatusCode::OK);
    assert_eq!(sender(&db, &sms, 5).send_due().await.unwrap(), 1);
    assert_eq!(text_of(&db, "transfer_offer").await.0, "suppressed");
    // Offered again and again to new numbers: three texts from an order a day, then mail only.
    for n in 0..4 {
        let phone = format!("+44770090050{n}");
        let resp = offer(json!({ "to_email": "friend@example.test", "to_phone": phone })).await.unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        relay(&db).await;
        let url = format!("{}/api/v1/orders/{order}/tickets/{}/transfer/cancel", api.base, tickets[0]);
        api.http.post(url).bearer_auth(&token).send().await.unwrap();
    }
    let offers: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sms_messages WHERE kind = 'transfer_offer' AND created_at > now() - interval '1 day'",
    )
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(offers, regional_core::sms::OFFER_TEXTS_PER_ORDER_PER_DAY);

    // The event's reminder: by text to the buyer for the ticket they still hold.
    sqlx::query("UPDATE events SET starts_at = now() + interval '2 hours', ends_at = now() + interval '5 hours', state = 'on_sale' WHERE id = $1::uuid")
        .bind(&event)
        .execute(&db)
        .await
        .unwrap();
    let settings = MailSettings { buyer_url: "https://tickets.example.test".into(), signer: signer() };
    reminders::queue_due(&db, &settings, chrono::Duration::hours(24)).await.unwrap();
    let (_, to, _, _, body) = text_of(&db, "event_reminder").await;
    assert_eq!(to, BUYER);
    assert!(
        body.starts_with("Reminder: Gig at Hall") && body.contains(&format!("/orders/{order}#")),
        "{body}"
    );

    // Without SMS, a number is refused rather than kept for nothing.
    let plain = Api::start_with(common::with_checkout(&db, &signer())).await;
    let resp = plain
        .http
        .post(format!("{}/api/v1/orders/{order}/tickets/{}/transfer", plain.base, tickets[1]))
        .bearer_auth(&token)
        .json(&json!({ "to_email": "other@example.test", "to_phone": "+447700900789" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = resp.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "to_phone", "{problem}");
    assert!(problem["errors"][0]["message"].as_str().unwrap().contains("does not send text messages"));
    assert!(twilio.messages().await.is_empty());
}

#[sqlx::test]
async fn a_stop_while_a_text_is_claimed_is_honoured_before_it_is_sent_and_replays_change_nothing(db: PgPool) {
    let (api, twilio, sms) = with_sms(&db).await;
    let mut conn = db.acquire().await.unwrap();
    assert!(regional_core::sms::queue(&mut conn, "held", "event_reminder", BUYER, "Hi STOP", None, None)
        .await
        .unwrap());
    // A sender has claimed it (its lease) when the STOP arrives: the STOP leaves the claimed text
    // to the sender, which checks again under the number's lock and does not send it.
    sqlx::query("UPDATE sms_messages SET lease_until = now() + interval '2 minutes'")
        .execute(&db)
        .await
        .unwrap();
    let stop = [("AccountSid", SID), ("MessageSid", "SM0001"), ("From", BUYER), ("Body", "stop")];
    assert_eq!(provider_post(&api, &sms, "/api/v1/sms/incoming", &stop, TOKEN).await, StatusCode::OK);
    assert_eq!(text_of(&db, "event_reminder").await.0, "pending", "a claimed text is the sender's to end");
    sqlx::query("UPDATE sms_messages SET lease_until = NULL").execute(&db).await.unwrap();
    assert_eq!(sender(&db, &sms, 5).send_due().await.unwrap(), 1);
    assert_eq!(text_of(&db, "event_reminder").await.0, "suppressed");
    assert!(twilio.messages().await.is_empty(), "nothing reached the provider");

    // START, then the STOP's signed request replayed: it counts once, the number stays opted in.
    let start = [("AccountSid", SID), ("MessageSid", "SM0002"), ("From", BUYER), ("Body", "START")];
    assert_eq!(provider_post(&api, &sms, "/api/v1/sms/incoming", &start, TOKEN).await, StatusCode::OK);
    assert_eq!(api.count("sms_opt_outs").await, 0);
    assert_eq!(provider_post(&api, &sms, "/api/v1/sms/incoming", &stop, TOKEN).await, StatusCode::OK);
    assert_eq!(api.count("sms_opt_outs").await, 0, "a replayed STOP changes nothing");
    let no_id = [("AccountSid", SID), ("From", BUYER), ("Body", "STOP")];
    assert_eq!(
        provider_post(&api, &sms, "/api/v1/sms/incoming", &no_id, TOKEN).await,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    // A status the Messages API has for incoming texts is acknowledged and ignored.
    let incoming = [("AccountSid", SID), ("MessageSid", "SM0003"), ("MessageStatus", "received")];
    assert_eq!(
        provider_post(&api, &sms, "/api/v1/sms/status", &incoming, TOKEN).await,
        StatusCode::NO_CONTENT
    );
}

#[sqlx::test]
async fn texts_another_core_is_sending_count_toward_the_cap_and_a_wrong_token_is_retried(db: PgPool) {
    let (_api, twilio, sms) = with_sms(&db).await;
    let mut conn = db.acquire().await.unwrap();
    for n in 0..6 {
        regional_core::sms::queue(
            &mut conn,
            &format!("t{n}"),
            "event_reminder",
            BUYER,
            "Hi STOP",
            None,
            None,
        )
        .await
        .unwrap();
    }
    // Another core is handing two of them to the provider right now (its claim, marked as being
    // sent): with a cap of 2, this core's four wait, though none was sent yet.
    sqlx::query(
        "UPDATE sms_messages SET lease_until = now() + interval '2 minutes', sending_at = now()
         WHERE dedup_key IN ('t0', 't1')",
    )
    .execute(&db)
    .await
    .unwrap();
    let settings = SmsSenderSettings { max_attempts: 3, retry_base: Duration::from_millis(10), per_day: 2 };
    let this =
        SmsSender::new(db.clone(), Twilio::new(sms.provider.clone(), Duration::from_secs(5)), settings);
    assert_eq!(this.send_due().await.unwrap(), 4);
    let waiting: Vec<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM next_attempt_at - now())::float8 FROM sms_messages WHERE sending_at IS NULL",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(waiting.len(), 4);
    assert!(
        waiting.iter().all(|w| (30.0..=61.0).contains(w)),
        "a minute: only texts in flight fill the cap: {waiting:?}"
    );
    assert!(twilio.messages().await.is_empty());
    // The other core's claim lapses without a send (it died): its texts go, within the cap.
    sqlx::query("UPDATE sms_messages SET lease_until = NULL, sending_at = NULL, next_attempt_at = now()")
        .execute(&db)
        .await
        .unwrap();
    assert_eq!(this.send_due().await.unwrap(), 6);
    assert_eq!(twilio.messages().await.len(), 2, "two a day to the number, whichever core sends");

    // The provider refuses the credentials (a token being rotated): retried, not failed.
    let mut wrong = sms.provider.clone();
    wrong.auth_token = "not-the-token-0123456789".into();
    regional_core::sms::queue(&mut conn, "other", "event_reminder", "+447700900777", "Hi STOP", None, None)
        .await
        .unwrap();
    let settings = SmsSenderSettings { max_attempts: 3, retry_base: Duration::from_millis(10), per_day: 2 };
    SmsSender::new(db.clone(), Twilio::new(wrong, Duration::from_secs(5)), settings)
        .send_due()
        .await
        .unwrap();
    let (state, code, attempts): (String, Option<i64>, i32) =
        sqlx::query_as("SELECT state, error_code, attempts FROM sms_messages WHERE dedup_key = 'other'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!((state.as_str(), code, attempts), ("pending", Some(20003), 1));
}
