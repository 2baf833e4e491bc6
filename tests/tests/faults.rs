//! The fault campaign (docs/reliability.md): a sale played by `loadtest sale` through the whole
//! stack as a deployment runs it (two core replicas behind a balancer, the edge in workerd, a
//! PostgreSQL cluster of the campaign's own, the Kafka-protocol broker, an SMTP server), while one
//! fault is injected as buyers buy. Afterwards:
//!
//! - the sale's audit (`loadtest/src/audit.rs`): no seat sold twice, no tier oversold, no money
//!   without a ticket, every paid order with its tickets, every hold ended, the edge and the core
//!   agreeing seat by seat, every order checkout acknowledged still there and every order a buyer
//!   saw paid still paid;
//! - every domain event relayed to the broker (the outbox empty);
//! - every mail sent, each exactly once at the SMTP server, and one confirmation per paid order;
//! - the time to recover: from the fault to the moment the stack is whole again (the edge's health
//!   chain green, for a dependency that was down its backlog drained, and every order paid by then
//!   with its confirmation queued: the consumers caught up).
//!
//! One test per fault. Each takes a minute or two, so only `postgres_restart` is part of the test
//! command; `scripts/faults.sh [fault]` runs them all (`--run-ignored all`), one after the other, and
//! prints the table of docs/reliability.md from the rows they write to `$CARGO_TARGET_DIR/faults/`.

use std::path::Path;
use std::time::{Duration, Instant};

use e2e::stack::{count, drained, Stack, UNCONFIRMED_5S};
use e2e::{create_admin, relayed_ids, run_sale, start_smtp_sink, start_tansu, Service};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::task::block_in_place;

/// How long the broker and the SMTP server stay down.
const OUTAGE: Duration = Duration::from_secs(30);
/// The fault comes once this many orders exist: buyers are buying (they arrive over 40 s).
const FAULT_AFTER_ORDERS: i64 = 20;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    PostgresRestart,
    KafkaDown,
    WorkerdRestart,
    CoreKilled,
    ReplicaLost,
    SmtpDown,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::PostgresRestart => "postgres_restart",
            Fault::KafkaDown => "kafka_down",
            Fault::WorkerdRestart => "workerd_restart",
            Fault::CoreKilled => "core_killed",
            Fault::ReplicaLost => "replica_lost",
            Fault::SmtpDown => "smtp_down",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Fault::PostgresRestart => {
                "PostgreSQL crashes (`pg_ctl stop -m immediate`) and starts again at once"
            }
            Fault::KafkaDown => "the Kafka broker is down for 30 s",
            Fault::WorkerdRestart => {
                "the workerd process is killed and started again (its objects' storage kept)"
            }
            Fault::CoreKilled => {
                "both core replicas are killed (SIGKILL) in the middle of sagas and started again"
            }
            Fault::ReplicaLost => "one of the two core replicas is killed (SIGKILL) and stays down",
            Fault::SmtpDown => "the SMTP server is down for 30 s",
        }
    }
}

/// Injects `fault`; answers when the stack is whole again, timed from the fault's start, and for
/// a dependency that was down, the backlog it left (rows waiting when it came back).
async fn inject(stack: &mut Stack, fault: Fault, db: &PgPool) -> (Duration, Option<i64>) {
    let t = Instant::now();
    let mut backlog = None;
    match fault {
        Fault::PostgresRestart => {
            block_in_place(|| {
                stack.pg.crash();
                stack.pg.up();
            });
            stack.healthy().await;
        }
        Fault::KafkaDown => {
            let broker = stack.kafka.take().expect("the broker");
            block_in_place(|| broker.crash());
            tokio::time::sleep(OUTAGE).await;
            stack.kafka = Some(block_in_place(|| start_tansu(stack.kafka_port, &stack.dir.join("kafka"))));
            backlog = Some(count(db, "SELECT count(*) FROM outbox WHERE sent_at IS NULL").await);
            drained(db, "SELECT count(*) FROM outbox WHERE sent_at IS NULL").await;
        }
        Fault::WorkerdRestart => {
            let edge = stack.edge.take().expect("the edge");
            block_in_place(|| edge.crash());
            stack.start_edge().await;
            stack.healthy().await;
        }
        Fault::CoreKilled => {
            let replicas: Vec<Service> =
                stack.cores.iter_mut().map(|c| c.take().expect("a replica")).collect();
            block_in_place(|| replicas.into_iter().for_each(Service::crash));
            stack.start_core(0).await;
            stack.start_core(1).await;
            stack.healthy().await;
        }
        Fault::ReplicaLost => {
            let replica = stack.cores[0].take().expect("replica A");
            block_in_place(|| replica.crash());
            stack.healthy().await;
        }
        Fault::SmtpDown => {
            let smtp = stack.smtp.take().expect("the SMTP server");
            block_in_place(|| smtp.crash());
            tokio::time::sleep(OUTAGE).await;
            stack.smtp = Some(block_in_place(|| start_smtp_sink(stack.smtp_port, &stack.mail_dir)));
            backlog = Some(count(db, "SELECT count(*) FROM notifications WHERE state <> 'sent'").await);
            drained(db, "SELECT count(*) FROM notifications WHERE state <> 'sent'").await;
        }
    }
    // Whole again also means the consumers caught up: every order paid by now has its confirmation
    // queued (a consumer group whose members were killed rejoins first). The orders paid by now,
    // not by age: a consumer group that stalls at the fault leaves the orders paid a moment ago
    // waiting as much as the older ones.
    let paid: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM orders WHERE state = 'paid'").fetch_all(db).await.unwrap();
    confirmed(db, &paid).await;
    (t.elapsed(), backlog)
}

/// Waits until each of `orders` has its confirmation queued (3 minutes at most).
async fn confirmed(db: &PgPool, orders: &[uuid::Uuid]) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let waiting: Result<i64, _> = sqlx::query_scalar(
            "SELECT count(*) FROM unnest($1::uuid[]) AS o(id)
             WHERE NOT EXISTS (SELECT 1 FROM notifications n WHERE n.order_id = o.id AND n.kind = 'order_confirmation')",
        )
        .bind(orders)
        .fetch_one(db)
        .await;
        if waiting.as_ref().is_ok_and(|n| *n == 0) {
            return;
        }
        assert!(Instant::now() < deadline, "paid orders still without their confirmation: {waiting:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `Message-ID` of every mail the SMTP server kept (one file per mail received).
fn message_ids(dir: &Path) -> Vec<String> {
    let files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .map(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            let id = text
                .lines()
                .take_while(|l| !l.is_empty())
                .find(|l| l.to_ascii_lowercase().starts_with("message-id:"))
                .map(|l| l["message-id:".len()..].trim().to_owned());
            id.unwrap_or_else(|| panic!("a mail without a Message-ID: {}", f.display()))
        })
        .collect()
}

/// The `Message-ID` the core gives the mail of a notification (`notifications/sender.rs`: the
/// first 16 bytes of SHA-256 of its dedup key, in hex, at the mail domain), without the domain.
fn expected_id(dedup_key: &str) -> String {
    use sha2::Digest as _;
    format!("<{}@", hex::encode(&sha2::Sha256::digest(dedup_key.as_bytes())[..16]))
}

/// Plays the sale with `fault` injected, checks everything the campaign promises, and writes the
/// row of docs/reliability.md.
async fn campaign(fault: Fault) {
    let mut stack = Stack::start(fault.name()).await;
    let db = PgPool::connect(&stack.pg.url()).await.unwrap();
    let admin = create_admin(&stack.pg.url(), "root@faults.test");
    // 600 buyers (2 % bots) arriving over 40 s for 200 seats; holds of 10 s, payments of 15 s; each
    // buyer retries for up to 90 s a request that got no answer or a 5xx, as the buyer's page does.
    let plan = "--buyers 600 --seats 200 --hot-seats 20 --hot-share 0.3 --max-tickets 2 --arrival spread \
                --spread-seconds 40 --on-sale-in 3 --difficulty 2 --bot-share 0.02 --decline-share 0.1 \
                --abandon-share 0.1 --think-min-ms 200 --think-max-ms 1500 --hold-seconds 10 \
                --payment-seconds 15 --admit-per-minute 3000 --max-active 150 --session-seconds 90 \
                --concurrency 64 --max-seconds 400 --retry-seconds 90";
    let (edge_url, core_url, db_url) = (stack.edge_url(), stack.balancer.url(), stack.pg.url());
    let (keys, results) = (stack.keys.clone(), stack.dir.join("results"));
    let sale =
        tokio::spawn(
            async move { run_sale(&edge_url, &core_url, &db_url, &keys, &admin, &results, plan).await },
        );
    // The fault comes while buyers buy: once the first orders exist.
    let deadline = Instant::now() + Duration::from_secs(120);
    while count(&db, "SELECT count(*) FROM orders").await < FAULT_AFTER_ORDERS {
        assert!(Instant::now() < deadline && !sale.is_finished(), "the sale never got going");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fault_started: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT now()").fetch_one(&db).await.unwrap();
    // Sagas under way when the fault came (an order between its creation and its confirmation):
    // a core killed "in the middle of sagas" must have had some.
    let in_flight = count(
        &db,
        "SELECT count(*) FROM orders WHERE state IN ('created', 'awaiting_payment', 'confirming')",
    )
    .await;
    if matches!(fault, Fault::CoreKilled | Fault::ReplicaLost) {
        assert!(in_flight > 0, "{}: no saga was under way when the core was killed", fault.name());
    }
    let (recovered, backlog) = inject(&mut stack, fault, &db).await;
    let run = sale.await.expect("the sale ran");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let logs = || {
        let tail = |s: &Option<Service>| s.as_ref().map(Service::log_tail).unwrap_or_default();
        format!("--- core B ---\n{}\n--- edge ---\n{}", tail(&stack.cores[1]), tail(&stack.edge))
    };
    assert!(
        run.status.success(),
        "{}: the sale or its audit failed:\n{stdout}\n{}\n{}",
        fault.name(),
        String::from_utf8_lossy(&run.stderr),
        logs()
    );
    let report: Value = serde_json::from_str(&stdout).expect("the report is JSON");
    assert_eq!(report["audit"]["clean"], true, "{}: {}", fault.name(), report["audit"]);
    for check in ["acknowledged_orders_durable", "orders_seen_paid_stay_paid", "no_seat_sold_twice"] {
        let checks = report["audit"]["checks"].as_array().unwrap();
        assert!(checks.iter().any(|c| c["name"] == check && c["ok"] == true), "{check}: {checks:?}");
    }
    let paid = count(&db, "SELECT count(*) FROM orders WHERE state = 'paid'").await;
    assert!(paid > 0, "{}: no order was paid: {}", fault.name(), report["outcomes"]);
    // Buyers went on buying once the fault had begun (the fault did not come after the sale).
    let later: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE created_at > $1")
        .bind(fault_started)
        .fetch_one(&db)
        .await
        .unwrap();
    assert!(later > 0, "{}: no order was made after the fault began", fault.name());

    // Every domain event reached the broker: each outbox row is marked sent and is in its topic.
    drained(&db, "SELECT count(*) FROM outbox WHERE sent_at IS NULL").await;
    let outbox: Vec<i64> = sqlx::query_scalar("SELECT id FROM outbox").fetch_all(&db).await.unwrap();
    let relayed =
        relayed_ids(&format!("127.0.0.1:{}", stack.kafka_port), &format!("{}.", fault.name()), outbox.len())
            .await;
    let in_topics: std::collections::BTreeSet<i64> = relayed.iter().copied().collect();
    let missing: Vec<&i64> = outbox.iter().filter(|id| !in_topics.contains(id)).collect();
    assert!(missing.is_empty(), "{}: outbox rows not in the broker: {missing:?}", fault.name());
    let broker_duplicates = relayed.len() - in_topics.len();

    // Every mail went out, and the SMTP server got each (by its Message-ID) exactly once; one
    // confirmation per paid order. (The sender retries its `sent` mark while its lease holds, so a
    // database away for a moment sends nothing twice: notifications.rs
    // `a_mail_the_server_accepted_while_the_database_was_away_is_not_sent_again`.)
    tokio::time::sleep(Duration::from_secs(5)).await;
    drained(&db, UNCONFIRMED_5S).await;
    drained(&db, "SELECT count(*) FROM notifications WHERE state <> 'sent'").await;
    let unconfirmed = count(
        &db,
        "SELECT count(*) FROM orders o WHERE o.state = 'paid' AND (SELECT count(*) FROM notifications n
           WHERE n.order_id = o.id AND n.kind = 'order_confirmation' AND n.state = 'sent') <> 1",
    )
    .await;
    assert_eq!(unconfirmed, 0, "{}: paid orders without exactly one confirmation", fault.name());
    let keys: Vec<String> = sqlx::query_scalar("SELECT dedup_key FROM notifications WHERE state = 'sent'")
        .fetch_all(&db)
        .await
        .unwrap();
    let expected: std::collections::BTreeSet<String> = keys.iter().map(|k| expected_id(k)).collect();
    let received = message_ids(&stack.mail_dir);
    let of = |id: &str| expected.iter().find(|e| id.starts_with(e.as_str())).cloned();
    let unknown: Vec<&String> = received.iter().filter(|id| of(id).is_none()).collect();
    assert!(unknown.is_empty(), "{}: mails nobody queued: {unknown:?}", fault.name());
    let got: std::collections::BTreeSet<String> = received.iter().filter_map(|id| of(id)).collect();
    let lost: Vec<&String> = expected.difference(&got).collect();
    assert!(lost.is_empty(), "{}: mails recorded sent that the server never got: {lost:?}", fault.name());
    let mails_resent = received.len() - got.len();
    let mut seen = std::collections::BTreeSet::new();
    let twice: Vec<&String> = received.iter().filter(|id| !seen.insert(id.as_str())).collect();
    assert!(twice.is_empty(), "{}: mails the SMTP server got more than once: {twice:?}", fault.name());

    let steps = report["steps"].as_object().cloned().unwrap_or_default();
    let failed_requests: u64 = steps
        .values()
        .map(|s| {
            s["errors"].as_u64().unwrap_or(0)
                + s["statuses"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .filter(|(k, _)| k.starts_with('5'))
                            .map(|(_, v)| v.as_u64().unwrap_or(0))
                            .sum()
                    })
                    .unwrap_or(0)
        })
        .sum();
    let outcomes = &report["outcomes"];
    let sum = |pick: &dyn Fn(&str) -> bool| -> u64 {
        let picked = outcomes.as_object().map(|o| o.iter().filter(|(k, _)| pick(k)).collect::<Vec<_>>());
        picked.unwrap_or_default().iter().map(|(_, v)| v.as_u64().unwrap_or(0)).sum()
    };
    // Buyers the fault turned away: a step that failed after its retries, a refusal a person
    // should never get, a visit that ran out of time.
    let buyers_failed = sum(&|k| k.starts_with("failed_"));
    let buyers_refused = sum(&|k| k == "refused");
    let buyers_timed_out = sum(&|k| k == "timed_out");
    let row = json!({
        "fault": fault.name(),
        "what": fault.what(),
        "recovered_after_s": (recovered.as_secs_f64() * 10.0).round() / 10.0,
        "down_s": if backlog.is_some() { OUTAGE.as_secs() } else { 0 },
        "backlog_at_restore": backlog,
        "sagas_in_flight_at_fault": in_flight,
        "paid_orders": paid,
        "tickets_sold": report["tickets_sold"],
        "failed_requests": failed_requests,
        "buyers_failed": buyers_failed,
        "buyers_refused": buyers_refused,
        "buyers_timed_out": buyers_timed_out,
        "mails_sent": expected.len(),
        "mails_resent": mails_resent,
        "events_relayed": outbox.len(),
        "broker_duplicates": broker_duplicates,
        "audit_clean": true,
        "sale_seconds": report["seconds"],
    });
    let out = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| e2e::repo_root().join("target"));
    let out = out.join("faults");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join(format!("{}.json", fault.name())), row.to_string()).unwrap();
    println!("FAULT-ROW {row}");
    db.close().await;
}

/// The one fault the test command plays too (a minute and a half), so that the campaign's harness
/// cannot rot between campaigns: the database crashing mid-sale found a bug.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart() {
    campaign(Fault::PostgresRestart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the fault campaign: scripts/faults.sh"]
async fn kafka_down() {
    campaign(Fault::KafkaDown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the fault campaign: scripts/faults.sh"]
async fn workerd_restart() {
    campaign(Fault::WorkerdRestart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the fault campaign: scripts/faults.sh"]
async fn core_killed() {
    campaign(Fault::CoreKilled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the fault campaign: scripts/faults.sh"]
async fn replica_lost() {
    campaign(Fault::ReplicaLost).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the fault campaign: scripts/faults.sh"]
async fn smtp_down() {
    campaign(Fault::SmtpDown).await;
}
