//! Notifications against a real SMTP server (nodemailer's smtp-server, `scripts/smtp-sink.mjs`):
//! the outbox delivered in-process to the notifier, mails rendered from the templates and sent by
//! the sender; read back as MIME by an independent parser (mail-parser) and the QR code by an
//! independent decoder (rqrr).

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{decode_png, paid_tickets, two_tenants, with_checkout, Api};
use mail_parser::{MessageParser, MimeHeaders};
use regional_core::bus::relay::{replay, Relay, Sink};
use regional_core::notifications::sender::{Sender, SenderSettings};
use regional_core::notifications::{reminders, MailSettings, Notifier};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use shared_types::token::{verify, Claims, Expectation, TicketGrant, TokenKind, TokenSigner};
use sqlx::PgPool;
use uuid::Uuid;

/// The SMTP sink, on a free port, keeping messages in a directory of its own.
struct SmtpSink {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl SmtpSink {
    fn start(extra: &[&str]) -> Self {
        let mut r = [0u8; 6];
        getrandom::getrandom(&mut r).unwrap();
        let dir = std::env::temp_dir().join(format!("smtp-sink-{}", hex::encode(r)));
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/smtp-sink.mjs");
        let mut child = Command::new("node")
            .arg(script)
            .args(["--port", "0", "--dir"])
            .arg(&dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("node (scripts/lib.sh puts it on PATH)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let ready: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("smtp sink said {line:?}"));
        Self { child, port: ready["smtp"].as_u64().unwrap() as u16, dir }
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// The raw messages received, oldest first.
    fn messages(&self) -> Vec<Vec<u8>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        files.iter().map(|f| std::fs::read(f).unwrap()).collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn signer() -> TokenSigner {
    TokenSigner::from_seed("core-test", [4; 32]).unwrap()
}

fn sender(db: &PgPool, sink: &SmtpSink, max_attempts: i32, per_hour: i64) -> Sender {
    sender_leasing(db, sink, max_attempts, per_hour, regional_core::notifications::sender::LEASE)
}

fn sender_leasing(db: &PgPool, sink: &SmtpSink, max_attempts: i32, per_hour: i64, lease: Duration) -> Sender {
    let settings = SenderSettings {
        from: "Tickets <tickets@example.test>".parse().unwrap(),
        max_attempts,
        retry_base: Duration::from_millis(10),
        per_hour,
        domain: "example.test".into(),
        lease,
        // Generous: the tests' short leases are about the mark, not the server.
        smtp_timeout: Duration::from_secs(10),
    };
    Sender::new(db.clone(), &sink.url(), settings, signer()).unwrap()
}

pub(crate) fn mail_settings() -> Arc<MailSettings> {
    Arc::new(MailSettings { buyer_url: "https://tickets.example.test".into(), signer: signer() })
}

/// Delivers the outbox to the notifier, in this process (as the core does without a broker).
pub(crate) async fn relay(db: &PgPool) {
    let notifier: Arc<dyn regional_core::bus::Consumer> = Arc::new(Notifier::new(mail_settings()));
    let mut relay = Relay::new(db.clone(), Sink::InProcess(vec![notifier]));
    relay.relay_batch().await.expect("relay");
}

/// An `order.paid` message for a paid order, as checkout writes it.
async fn order_paid(db: &PgPool, order: Uuid, event: &str, tickets: &[Uuid]) {
    let mut tx = db.begin().await.unwrap();
    let event: Uuid = event.parse().unwrap();
    let tickets: Vec<Value> = tickets.iter().map(|t| json!({ "ticket_id": t })).collect();
    let payload = json!({ "type": "order.paid", "schema_version": 1, "order_id": order, "event_id": event,
                          "email": "Buyer@Example.test", "tickets": tickets });
    regional_core::bus::outbox(&mut tx, "orders", event, payload).await.unwrap();
    tx.commit().await.unwrap();
}

/// A paid order of one ticket whose confirmation is queued, not sent, and an SMTP sink to send it to.
async fn a_queued_confirmation(db: &PgPool) -> (Api, SmtpSink) {
    let api = Api::start_with(with_checkout(db, &signer())).await;
    let (_, [(org, key), _]) = two_tenants(&api).await;
    let (event, order, tickets) = paid_tickets(&api, &key, &org, &["A-1"]).await;
    let sink = SmtpSink::start(&[]);
    order_paid(db, order, &event, &tickets).await;
    relay(db).await;
    (api, sink)
}

async fn state_of(db: &PgPool, kind: &str) -> (String, i32, Option<String>) {
    sqlx::query_as("SELECT state, attempts, last_error FROM notifications WHERE kind = $1")
        .bind(kind)
        .fetch_one(db)
        .await
        .unwrap()
}

/// The outbox's ids, and which of them are unsent.
async fn outbox_ids(db: &PgPool) -> (Vec<i64>, Vec<i64>) {
    let rows: Vec<(i64, bool)> =
        sqlx::query_as("SELECT id, sent_at IS NULL FROM outbox ORDER BY id").fetch_all(db).await.unwrap();
    (rows.iter().map(|r| r.0).collect(), rows.iter().filter(|r| r.1).map(|r| r.0).collect())
}

#[sqlx::test]
async fn several_messages_go_into_the_outbox_in_one_statement_in_their_order(db: PgPool) {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let messages: Vec<(&str, Uuid, Value)> = (0..5)
        .map(|n| {
            (
                if n % 2 == 0 { "orders" } else { "tickets" },
                if n < 3 { a } else { b },
                json!({ "type": "test.message", "schema_version": 1, "n": n }),
            )
        })
        .collect();
    let mut tx = db.begin().await.unwrap();
    regional_core::bus::outbox_all(&mut tx, messages.clone()).await.unwrap();
    regional_core::bus::outbox_all(&mut tx, vec![]).await.unwrap();
    tx.commit().await.unwrap();
    let rows: Vec<(String, String, Value)> =
        sqlx::query_as("SELECT topic, key, payload FROM outbox ORDER BY id").fetch_all(&db).await.unwrap();
    let expected: Vec<(String, String, Value)> =
        messages.iter().map(|(t, k, p)| (t.to_string(), k.to_string(), p.clone())).collect();
    assert_eq!(rows, expected);
}

#[sqlx::test]
async fn the_outbox_is_replayed_from_an_id_or_a_time_up_to_an_id(db: PgPool) {
    let event = Uuid::new_v4();
    for n in 0..5 {
        let mut tx = db.begin().await.unwrap();
        let payload = json!({ "type": "test.message", "schema_version": 1, "n": n });
        regional_core::bus::outbox(&mut tx, "orders", event, payload).await.unwrap();
        tx.commit().await.unwrap();
    }
    relay(&db).await;
    let (ids, unsent) = outbox_ids(&db).await;
    assert!(unsent.is_empty());
    assert_eq!(replay(&db, Some(ids[2]), None, Some(ids[3])).await.unwrap(), 2);
    assert_eq!(outbox_ids(&db).await.1, ids[2..4]);
    // Marking again what is already waiting changes nothing.
    assert_eq!(replay(&db, Some(ids[2]), None, Some(ids[3])).await.unwrap(), 0);
    relay(&db).await;
    assert!(outbox_ids(&db).await.1.is_empty(), "the relay sent them again");

    sqlx::query("UPDATE outbox SET created_at = now() - interval '1 hour' WHERE id < $1")
        .bind(ids[4])
        .execute(&db)
        .await
        .unwrap();
    let since = chrono::Utc::now() - chrono::Duration::minutes(5);
    assert_eq!(replay(&db, None, Some(since), None).await.unwrap(), 1);
    assert_eq!(outbox_ids(&db).await.1, [ids[4]]);
    assert_eq!(replay(&db, Some(ids[4] + 1), None, None).await.unwrap(), 0, "nothing after the newest");
}

#[sqlx::test]
async fn a_paid_order_mails_its_tickets_once_to_a_real_smtp_server(db: PgPool) {
    let api = Api::start_with(with_checkout(&db, &signer())).await;
    let (_, [(org, key), _]) = two_tenants(&api).await;
    let (event, order, tickets) = paid_tickets(&api, &key, &org, &["A-1", "A-2"]).await;
    let sink = SmtpSink::start(&[]);
    order_paid(&db, order, &event, &tickets).await;
    relay(&db).await;
    // The same message delivered again (an operator's replay of the outbox, or a relay that crashed
    // before marking it) queues nothing more.
    assert_eq!(replay(&db, Some(0), None, None).await.unwrap(), 1);
    relay(&db).await;
    assert_eq!(api.count("notifications").await, 1);

    let sender = sender(&db, &sink, 5, 20);
    assert_eq!(sender.send_due().await.unwrap(), 1);
    assert_eq!(sender.send_due().await.unwrap(), 0, "a sent mail is not sent again");
    assert_eq!(state_of(&db, "order_confirmation").await.0, "sent");

    let raw = sink.messages();
    assert_eq!(raw.len(), 1, "one mail");
    let mail = MessageParser::default().parse(&raw[0]).expect("MIME");
    assert_eq!(mail.subject(), Some("Your tickets for Gig"));
    assert_eq!(mail.to().and_then(|a| a.first()).and_then(|a| a.address()), Some("Buyer@Example.test"));
    assert!(mail.message_id().is_some_and(|id| id.ends_with("@example.test")));
    let text = mail.body_text(0).expect("a plain-text body");
    assert!(text.contains("seat A-1") && text.contains("seat A-2"), "{text}");
    assert!(text.contains(&format!("https://tickets.example.test/orders/{order}#")), "{text}");
    let html = mail.body_html(0).expect("an HTML body");
    assert!(html.contains("<li>Seats, seat A-1</li>"), "{html}");

    // Each ticket's QR code is attached and decodes to a code that verifies with the core's key.
    let pngs: Vec<_> =
        mail.attachments().filter(|a| a.content_type().is_some_and(|c| c.subtype() == Some("png"))).collect();
    assert_eq!(pngs.len(), 2);
    let mut seats = Vec::new();
    for png in pngs {
        let code = decode_png(png.contents());
        let expect = Expectation {
            kind: TokenKind::Ticket,
            issuer: "core",
            audience: &event,
            subject: None,
            now: chrono::Utc::now().timestamp(),
        };
        let claims: Claims<TicketGrant> =
            verify(&code, &signer().verifying_ring(), &expect).expect("the code verifies");
        assert!(tickets.iter().any(|t| t.to_string() == claims.sub));
        seats.push(claims.extra.seat.unwrap());
    }
    seats.sort();
    assert_eq!(seats, ["A-1", "A-2"]);
}

#[sqlx::test]
async fn a_database_error_while_the_mail_is_made_is_retried_not_parked(db: PgPool) {
    // Found by the fault campaign (tests/tests/faults.rs, PostgreSQL restarted during a sale): the
    // tickets' QR codes are drawn when the mail is made, and a database error there parked the
    // confirmation for good, as if its address were wrong.
    let (_api, sink) = a_queued_confirmation(&db).await;
    sqlx::query("ALTER TABLE tickets RENAME TO tickets_away").execute(&db).await.unwrap();
    let sender = sender(&db, &sink, 5, 20);
    sender.send_due().await.unwrap();
    let (state, attempts, error) = state_of(&db, "order_confirmation").await;
    assert_eq!((state.as_str(), attempts), ("pending", 1), "{error:?}");
    sqlx::query("ALTER TABLE tickets_away RENAME TO tickets").execute(&db).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while state_of(&db, "order_confirmation").await.0 != "sent" {
        assert!(std::time::Instant::now() < deadline, "never sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
        sender.send_due().await.unwrap();
    }
    assert_eq!(sink.messages().len(), 1, "one mail");
}

/// Makes the database refuse every `sent` mark (as while PostgreSQL restarts) until
/// [`take_marks`].
async fn refuse_marks(db: &PgPool) {
    sqlx::raw_sql(
        "CREATE TABLE mark_refused (x int);
         INSERT INTO mark_refused VALUES (1);
         CREATE FUNCTION refuse_mark() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF EXISTS (SELECT 1 FROM mark_refused) THEN
             RAISE EXCEPTION 'the database is away' USING ERRCODE = '57P03';
           END IF;
           RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_mark BEFORE UPDATE ON notifications
           FOR EACH ROW WHEN (NEW.state = 'sent') EXECUTE FUNCTION refuse_mark();",
    )
    .execute(db)
    .await
    .unwrap();
}

async fn take_marks(db: &PgPool) {
    sqlx::query("DELETE FROM mark_refused").execute(db).await.unwrap();
}

/// The `Message-ID` of each mail the sink got.
fn message_ids(sink: &SmtpSink) -> Vec<String> {
    sink.messages()
        .iter()
        .map(|raw| {
            MessageParser::default().parse(raw).and_then(|m| m.message_id().map(str::to_owned)).unwrap()
        })
        .collect()
}

#[sqlx::test]
async fn a_mail_the_server_accepted_while_the_database_was_away_is_not_sent_again(db: PgPool) {
    // Found by a review of the fault campaign's mail check (tests/tests/faults.rs): the `sent` mark
    // was tried once, so a database that went away between the server's acceptance and the mark
    // left the mail claimed but unmarked, and it went out a second time when the claim lapsed.
    let (_api, sink) = a_queued_confirmation(&db).await;
    // The database refuses the mark for a moment, then takes it.
    refuse_marks(&db).await;
    let back = {
        let db = db.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            take_marks(&db).await;
        })
    };
    let sender = sender(&db, &sink, 5, 20);
    let first = sender.send_due().await;
    back.await.unwrap();
    // Its claim lapses (two minutes later) and the sender looks again.
    sqlx::query(
        "UPDATE notifications SET lease_until = now() - interval '1 second' WHERE lease_until IS NOT NULL",
    )
    .execute(&db)
    .await
    .unwrap();
    sender.send_due().await.unwrap();
    assert_eq!(sink.messages().len(), 1, "the mail was sent again (first round: {first:?})");
    assert_eq!(state_of(&db, "order_confirmation").await.0, "sent");
    first.expect("the mark is retried until the database takes it");
}

#[sqlx::test]
async fn a_mark_the_database_takes_after_the_claim_ended_still_lands_when_nobody_took_the_mail(db: PgPool) {
    // The mark names the claim, so it is safe after the claim's end: it lands unless another sender
    // has taken the mail since. Found by a review: the sender gave up at the claim's end, which
    // made a second mail certain.
    let (_api, sink) = a_queued_confirmation(&db).await;
    refuse_marks(&db).await;
    let lease = Duration::from_secs(3);
    let back = {
        let db = db.clone();
        tokio::spawn(async move {
            tokio::time::sleep(lease + lease / 2).await;
            take_marks(&db).await;
        })
    };
    let sender = sender_leasing(&db, &sink, 5, 20, lease);
    sender.send_due().await.expect("the mark lands after the claim's end");
    back.await.unwrap();
    assert_eq!(state_of(&db, "order_confirmation").await.0, "sent");
    assert_eq!(sender.send_due().await.unwrap(), 0, "nothing left to send");
    assert_eq!(sink.messages().len(), 1);
}

#[sqlx::test]
async fn a_mark_refused_for_a_lease_past_the_claim_is_given_up_and_the_mail_goes_again_with_its_id(
    db: PgPool,
) {
    // What sending once cannot cover (docs/reliability.md, "Known limits"): a database away from
    // the server's acceptance until a lease past the claim. The sender gives up, and the mail goes
    // out again under the same Message-ID (which mail clients show once).
    let (_api, sink) = a_queued_confirmation(&db).await;
    refuse_marks(&db).await;
    let lease = Duration::from_secs(3);
    let sender = sender_leasing(&db, &sink, 5, 20, lease);
    let started = std::time::Instant::now();
    assert!(sender.send_due().await.is_err(), "the mark cannot have been taken");
    assert!(started.elapsed() >= lease, "gave up within the claim: {:?}", started.elapsed());
    assert_eq!(state_of(&db, "order_confirmation").await.0, "pending");
    take_marks(&db).await;
    // The claim has lapsed by now: the mail goes again.
    assert_eq!(sender.send_due().await.unwrap(), 1);
    assert_eq!(state_of(&db, "order_confirmation").await.0, "sent");
    let ids = message_ids(&sink);
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(ids[0], ids[1], "a mail sent again carries its Message-ID");
}

#[sqlx::test]
async fn a_failing_smtp_server_means_retries_then_a_parked_mail_the_operator_can_retry(db: PgPool) {
    let api = Api::start_with(with_checkout(&db, &signer())).await;
    let (root, [(org, key), (_, other_key)]) = two_tenants(&api).await;
    let (event, order, tickets) = paid_tickets(&api, &key, &org, &["A-1"]).await;
    order_paid(&db, order, &event, &tickets).await;
    relay(&db).await;

    // 451: temporary. Retried with backoff until the attempts run out, then parked.
    let failing = SmtpSink::start(&["--fail", "451"]);
    let sender = sender(&db, &failing, 3, 20);
    let mut rounds = 0;
    while state_of(&db, "order_confirmation").await.0 == "pending" {
        sender.send_due().await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        rounds += 1;
        assert!(rounds < 200, "never parked");
    }
    let (state, attempts, error) = state_of(&db, "order_confirmation").await;
    assert_eq!((state.as_str(), attempts), ("parked", 3));
    assert!(error.unwrap().contains("451"));
    assert!(failing.messages().is_empty());

    // The operator sees it, and why, in the API and in /metrics.
    let (s, parked) = api.get(&root, "/api/v1/ops/notifications?state=parked").await;
    assert_eq!(s, StatusCode::OK, "{parked}");
    assert_eq!(parked["items"].as_array().unwrap().len(), 1);
    let id = parked["items"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(parked["items"][0]["attempts"], 3);
    let (s, _) = api.get(&other_key, "/api/v1/ops/notifications").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "an organizer is not the operator");
    let metrics =
        api.http.get(format!("{}/metrics", api.metrics_base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l == "ticketing_notifications{state=\"parked\"} 1"), "{metrics}");

    // Retried by the operator against a working server: sent.
    let (s, retried) =
        api.call(&root, Method::POST, &format!("/api/v1/ops/notifications/{id}/retry"), None).await;
    assert_eq!(s, StatusCode::OK, "{retried}");
    assert_eq!(retried["state"], "pending");
    let (s, again) =
        api.call(&root, Method::POST, &format!("/api/v1/ops/notifications/{id}/retry"), None).await;
    assert_eq!((s, again["reason"].as_str()), (StatusCode::CONFLICT, Some("not_parked")), "{again}");
    let working = SmtpSink::start(&[]);
    sender_for(&db, &working).send_due().await.unwrap();
    assert_eq!(state_of(&db, "order_confirmation").await.0, "sent");
    assert_eq!(working.messages().len(), 1);
}

fn sender_for(db: &PgPool, sink: &SmtpSink) -> Sender {
    sender(db, sink, 3, 20)
}

#[sqlx::test]
async fn a_permanent_refusal_parks_at_once(db: PgPool) {
    let api = Api::start_with(with_checkout(&db, &signer())).await;
    let (_, [(org, key), _]) = two_tenants(&api).await;
    let (event, order, tickets) = paid_tickets(&api, &key, &org, &["A-1"]).await;
    order_paid(&db, order, &event, &tickets).await;
    relay(&db).await;
    let refusing = SmtpSink::start(&["--fail", "550"]);
    sender(&db, &refusing, 8, 20).send_due().await.unwrap();
    let (state, attempts, error) = state_of(&db, "order_confirmation").await;
    assert_eq!((state.as_str(), attempts), ("parked", 1));
    assert!(error.unwrap().contains("550"));
}

#[sqlx::test]
async fn one_recipient_gets_at_most_the_hourly_cap_and_the_rest_waits(db: PgPool) {
    let api = Api::start_with(with_checkout(&db, &signer())).await;
    let (_, [(org, key), _]) = two_tenants(&api).await;
    let sink = SmtpSink::start(&[]);
    for seat in ["A-1", "B-1", "C-1"] {
        let (event, order, tickets) = paid_tickets(&api, &key, &org, &[seat]).await;
        order_paid(&db, order, &event, &tickets).await;
    }
    relay(&db).await;
    assert_eq!(api.count("notifications").await, 3);
    let sender = sender(&db, &sink, 5, 2);
    sender.send_due().await.unwrap();
    sender.send_due().await.unwrap();
    assert_eq!(sink.messages().len(), 2, "the cap is two an hour");
    let waiting: (String, i32, f64) = sqlx::query_as(
        "SELECT state, attempts, EXTRACT(EPOCH FROM next_attempt_at - now())::float8 FROM notifications WHERE state <> 'sent'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!((waiting.0.as_str(), waiting.1), ("pending", 0), "deferred, not failed");
    assert!(waiting.2 > 3500.0, "it waits for the hour's window: {}", waiting.2);
}

#[sqlx::test]
async fn an_event_near_its_start_reminds_each_holder_once(db: PgPool) {
    let api = Api::start_with(with_checkout(&db, &signer())).await;
    let (_, [(org, key), _]) = two_tenants(&api).await;
    let (event, _, tickets) = paid_tickets(&api, &key, &org, &["A-1", "A-2"]).await;
    // The second ticket was given to someone else; the event is published and starts in 3 hours.
    sqlx::query("UPDATE tickets SET holder_email = 'friend@example.test' WHERE id = $1")
        .bind(tickets[1])
        .execute(&db)
        .await
        .unwrap();
    sqlx::query("UPDATE events SET state = 'published', starts_at = now() + interval '3 hours', ends_at = now() + interval '6 hours' WHERE id = $1::uuid")
        .bind(&event)
        .execute(&db)
        .await
        .unwrap();
    let lead = chrono::Duration::hours(24);
    assert_eq!(reminders::queue_due(&db, &mail_settings(), lead).await.unwrap(), 2);
    assert_eq!(reminders::queue_due(&db, &mail_settings(), lead).await.unwrap(), 0, "once per event");
    let sink = SmtpSink::start(&[]);
    sender(&db, &sink, 5, 20).send_due().await.unwrap();
    let mut to: Vec<String> = sink
        .messages()
        .iter()
        .map(|raw| {
            let m = MessageParser::default().parse(raw).unwrap();
            assert_eq!(m.subject(), Some("Gig is coming up"));
            m.to().and_then(|a| a.first()).and_then(|a| a.address()).unwrap().to_owned()
        })
        .collect();
    to.sort();
    assert_eq!(to, ["Buyer@Example.test", "friend@example.test"]);
}

#[sqlx::test]
async fn each_outcome_gets_its_mail_and_a_lost_hold_is_told_once(db: PgPool) {
    let api = Api::start_with(with_checkout(&db, &signer())).await;
    let (_, [(org, key), _]) = two_tenants(&api).await;
    let (event, lost, _) = paid_tickets(&api, &key, &org, &["A-1"]).await;
    let (_, cancelled, _) = paid_tickets(&api, &key, &org, &["B-1"]).await;
    let (_, refunded, _) = paid_tickets(&api, &key, &org, &["C-1"]).await;
    let event_id: Uuid = event.parse().unwrap();
    let mut tx = db.begin().await.unwrap();
    let base = |kind: &str, order: Uuid, extra: Value| {
        let mut p = json!({ "type": kind, "schema_version": 1, "order_id": order, "event_id": event_id,
                            "email": "Buyer@Example.test", "currency": "EUR", "total_minor": 4000 });
        p.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        p
    };
    for payload in [
        // The hold expired while paying and another buyer took the seat: one mail, not a second
        // one when the refund completes.
        base("order.hold_lost", lost, json!({ "refund_minor": 4000 })),
        base("order.refunded", lost, json!({ "refund_minor": 4000, "outcome": "hold_lost" })),
        base("order.cancelled", cancelled, json!({ "outcome": "payment_failed" })),
        base("order.refunded", refunded, json!({ "refund_minor": 3000, "outcome": "buyer_cancelled" })),
    ] {
        regional_core::bus::outbox(&mut tx, "orders", event_id, payload).await.unwrap();
    }
    tx.commit().await.unwrap();
    relay(&db).await;
    let queued: Vec<(String, Uuid, String)> =
        sqlx::query_as("SELECT kind, order_id, subject FROM notifications ORDER BY kind")
            .fetch_all(&db)
            .await
            .unwrap();
    let kinds: Vec<(&str, Uuid)> = queued.iter().map(|(k, o, _)| (k.as_str(), *o)).collect();
    assert_eq!(kinds, [("hold_lost", lost), ("order_cancelled", cancelled), ("order_refunded", refunded)]);
    assert_eq!(queued[0].2, "Your seats for Gig could not be kept");
    let refund_text: String =
        sqlx::query_scalar("SELECT text_body FROM notifications WHERE kind = 'order_refunded'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert!(refund_text.contains("was refunded: 30.00 EUR of 40.00 EUR (you cancelled it)"), "{refund_text}");
}

/// Every writer of the outbox passes one rule (the table's `outbox_row` constraint): a known topic,
/// a key, a payload naming its type at schema version 1. A row that breaks it is refused and
/// nothing is written.
#[sqlx::test]
async fn an_outbox_row_that_breaks_the_rule_is_refused(db: PgPool) {
    let event = Uuid::new_v4();
    let good = json!({ "type": "order.paid", "schema_version": 1 });
    let cases = [
        ("unknown-topic", good.clone()),
        ("orders", json!({ "schema_version": 1 })),
        ("orders", json!({ "type": 7, "schema_version": 1 })),
        ("orders", json!({ "type": "order.paid", "schema_version": 2 })),
    ];
    for (topic, payload) in cases {
        let mut tx = db.begin().await.unwrap();
        let written = regional_core::bus::outbox(&mut tx, topic, event, payload.clone()).await;
        assert!(written.is_err(), "{topic} {payload} was accepted");
    }
    let mut tx = db.begin().await.unwrap();
    regional_core::bus::outbox(&mut tx, "orders", event, good).await.unwrap();
    tx.commit().await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox").fetch_one(&db).await.unwrap();
    assert_eq!(rows, 1);
}
