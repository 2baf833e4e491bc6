//! Two core replicas against one database, as a deployment runs them (infra/k8s: two or more pods).
//! Both start at once (both migrating), both serve HTTP (the edge proxies checkouts to one, the
//! organizer's calls and the test provider's payments go to the other) and both run every
//! background task. A short flash sale goes through them, then the event comes within its
//! reminder lead. What must hold:
//!
//! - each order is driven once: its recorded transitions form one unbroken chain, and its hold is
//!   confirmed at the edge by one call (the edge logs every call of the core's);
//! - each outbox row reaches Kafka once (the relay's advisory lock: one relay at a time);
//! - each publish is pushed to the edge once (the push queue's leases);
//! - each reminder is mailed once (the queue's dedup key, the sender's leases);
//! - on SIGTERM each replica drains, stops check-in and every background task at the end of its
//!   step, and exits 0.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use e2e::{
    create_admin, drop_database, free_port, relayed_ids, run_sale, start_core_with, start_smtp_sink,
    start_workerd_edge, Setup,
};
use serde_json::Value;
use sqlx::PgPool;

async fn count(db: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// `(event, version)` of every "event synced to the edge" line in a core's JSON log.
fn pushes(log: &str) -> Vec<(String, i64)> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "event synced to the edge")
        .map(|v| {
            (
                v["fields"]["event"].as_str().unwrap_or_default().to_owned(),
                v["fields"]["version"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

/// The fields of a core's "core stopped" line, if it logged one.
fn stopped_line(log: &str) -> Option<Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["fields"]["message"] == "core stopped")
        .map(|v| v["fields"].clone())
}

#[tokio::test]
async fn two_replicas_share_the_work_and_do_each_thing_once() {
    let Setup { dir, db_name, db_url, keys, core_port, edge_port, core_url, edge_url } =
        Setup::new("replicas");
    let smtp_port = free_port();
    let mail_dir = dir.join("mail");
    let _smtp = start_smtp_sink(smtp_port, &mail_dir);
    let bootstrap = std::env::var("KAFKA_BOOTSTRAP").expect("KAFKA_BOOTSTRAP: run through scripts/test.sh");
    let prefix = format!("replicas{}.", std::process::id());
    let env = vec![
        ("CORE_SIGNING_KEY", keys.core_signing_key()),
        ("EDGE_VERIFYING_KEYS", keys.edge.public_config()),
        ("EDGE_URL", edge_url.clone()),
        ("RECONCILE_INTERVAL_MS", "300".to_owned()),
        ("KAFKA_BOOTSTRAP", bootstrap.clone()),
        ("KAFKA_TOPIC_PREFIX", prefix.clone()),
        ("SMTP_URL", format!("smtp://127.0.0.1:{smtp_port}")),
        ("REMINDER_CHECK_SECS", "1".to_owned()),
        ("LOG_FORMAT", "json".to_owned()),
        ("RUST_LOG", "info,sqlx=warn".to_owned()),
        ("SHUTDOWN_DRAIN_SECS", "1".to_owned()),
    ];
    // Both at once, both migrating (sqlx's migration lock lets one do it).
    let other_port = free_port();
    let other_url = format!("http://127.0.0.1:{other_port}");
    let mut a = start_core_with(core_port, &db_url, true, &dir, &env);
    let mut b = start_core_with(other_port, &db_url, true, &dir, &env);
    a.wait_ready("/readyz", Duration::from_secs(90)).await;
    b.wait_ready("/readyz", Duration::from_secs(90)).await;
    let edge = start_workerd_edge(edge_port, &core_url, &dir.join("do-state"), &dir, &keys);
    edge.wait_ready("/healthz", Duration::from_secs(120)).await;
    let admin = create_admin(&db_url, "root@replicas.test");

    // The sale: set up and paid through replica B, checkouts through the edge to replica A.
    let plan = "--buyers 120 --seats 40 --hot-seats 10 --hot-share 0.5 --max-tickets 2 --arrival burst \
                --on-sale-in 3 --difficulty 2 --bot-share 0 --decline-share 0.1 --abandon-share 0.1 \
                --think-min-ms 50 --think-max-ms 300 --hold-seconds 8 --payment-seconds 10 \
                --admit-per-minute 3000 --max-active 60 --session-seconds 60 --concurrency 32 \
                --max-seconds 180";
    let run = run_sale(&edge_url, &other_url, &db_url, &keys, &admin, &dir.join("results"), plan).await;
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "the sale or its audit failed:\n{stdout}\n{}\n--- core A ---\n{}\n--- core B ---\n{}",
        String::from_utf8_lossy(&run.stderr),
        a.log_tail(),
        b.log_tail()
    );
    let report: Value = serde_json::from_str(&stdout).expect("the report is JSON");
    assert_eq!(report["audit"]["clean"], true, "{}", report["audit"]);
    let paid = report["outcomes"]["paid"].as_u64().unwrap_or(0);
    assert!(paid > 0, "{}", report["outcomes"]);

    let db = PgPool::connect(&db_url).await.unwrap();
    // Every order has finished (the saga is not still working on one).
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&db, "SELECT count(*) FROM orders WHERE state IN ('created', 'awaiting_payment', 'confirming', 'releasing', 'refunding')").await > 0 {
        assert!(Instant::now() < deadline, "orders left unfinished");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Each order driven once: every recorded transition starts where the previous one ended (a
    // step taken twice would start from a state the order had already left), one payment each.
    let broken = count(
        &db,
        "SELECT count(*) FROM (
           SELECT from_state, lag(to_state) OVER (PARTITION BY order_id ORDER BY id) AS before
           FROM state_audit WHERE subject_kind = 'order') t
         WHERE before IS NOT NULL AND from_state IS DISTINCT FROM before",
    )
    .await;
    assert_eq!(broken, 0, "an order's step was taken twice");
    let paid_orders = count(&db, "SELECT count(*) FROM orders WHERE state = 'paid'").await;
    assert!(paid_orders >= paid as i64);
    // The chain above cannot show two drivers racing through one step (the loser's update changes
    // nothing and records nothing), but their calls to the edge can: the edge logs each call of
    // the core's, and each order's hold is confirmed by one.
    let mut confirms: HashMap<String, usize> = HashMap::new();
    for line in edge.log_text().lines() {
        let Ok(v) = serde_json::from_str::<Value>(line.trim_start_matches(|c| c != '{')) else { continue };
        let path = v["path"].as_str().unwrap_or_default();
        if v["message"] == "core call" && path.ends_with("/confirm") {
            *confirms.entry(path.to_owned()).or_default() += 1;
        }
    }
    let twice: Vec<_> = confirms.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "a hold was confirmed by two calls: {twice:?}");
    assert!(
        confirms.len() as i64 >= paid_orders,
        "{} confirmations for {paid_orders} paid orders",
        confirms.len()
    );

    // Each publish pushed once, by one replica or the other.
    let mut pushed: HashMap<(String, i64), usize> = HashMap::new();
    for p in pushes(&a.log_text()).into_iter().chain(pushes(&b.log_text())) {
        *pushed.entry(p).or_default() += 1;
    }
    assert!(!pushed.is_empty(), "the event was pushed to the edge");
    assert!(pushed.values().all(|&n| n == 1), "a version was pushed twice: {pushed:?}");

    // The event comes within its reminder lead (24 h): one reminder per ticket holder.
    sqlx::query(
        "UPDATE events SET starts_at = now() + interval '2 hours', ends_at = now() + interval '5 hours'",
    )
    .execute(&db)
    .await
    .unwrap();
    let holders =
        count(&db, "SELECT count(DISTINCT lower(holder_email)) FROM tickets WHERE state = 'valid'").await;
    assert!(holders > 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    let reminded =
        |subjects: Vec<String>| subjects.iter().filter(|s| s.ends_with("is coming up")).count() as i64;
    while reminded(e2e::mail_subjects(&mail_dir)) < holders {
        assert!(
            Instant::now() < deadline,
            "reminders: {} of {holders} mailed",
            reminded(e2e::mail_subjects(&mail_dir))
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(reminded(e2e::mail_subjects(&mail_dir)), holders, "each holder reminded once");
    assert_eq!(
        count(&db, "SELECT count(*) FROM notifications WHERE kind = 'event_reminder' AND state = 'sent'")
            .await,
        holders
    );

    // Each outbox row relayed once.
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&db, "SELECT count(*) FROM outbox WHERE sent_at IS NULL").await > 0 {
        assert!(Instant::now() < deadline, "the outbox did not drain");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let rows: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM outbox ORDER BY id").fetch_all(&db).await.unwrap();
    let mut seen: BTreeMap<i64, usize> = BTreeMap::new();
    for id in relayed_ids(&bootstrap, &prefix, rows.len()).await {
        *seen.entry(id).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "relayed more than once: {twice:?}");
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), rows, "every outbox row reached Kafka");

    // SIGTERM: each replica drains, stops every task at the end of its step, and exits 0.
    a.terminate();
    b.terminate();
    for (name, core) in [("A", &mut a), ("B", &mut b)] {
        let status = core.wait_exit(Duration::from_secs(30));
        assert!(
            status.is_some_and(|s| s.success()),
            "replica {name} exited {status:?}:\n{}",
            core.log_tail()
        );
        let line = stopped_line(&core.log_text())
            .unwrap_or_else(|| panic!("replica {name}: no 'core stopped' line"));
        assert!(line["tasks"].as_u64().unwrap_or(0) >= 8, "replica {name}: {line}");
        assert_eq!(line["tasks"], line["stopped"], "replica {name}: every task stopped by itself: {line}");
        assert!(!core.log_text().contains("did not stop in time"), "replica {name}");
    }
    db.close().await;
    drop(edge);
    drop_database(&db_name);
}
