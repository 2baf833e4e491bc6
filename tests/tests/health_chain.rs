//! One request through every tier: edge Worker → Durable Object SQLite → core → PostgreSQL, with
//! the real core binary, workerd (wrangler dev) and PostgreSQL; and the 503 that names the tier that
//! is down when the core or its database is not there.

use std::time::Duration;

use e2e::{database_url, drop_database, free_port, scratch_dir, start_core, start_edge, Service};
use shared_types::{HealthReport, HealthStatus, Tier};

async fn health(edge: &Service) -> (u16, HealthReport) {
    // The edge bounds each tier's check (1.5 s here); 10 s means "it hung".
    let resp = e2e::http()
        .get(format!("{}/healthz", edge.url()))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap_or_else(|e| panic!("edge /healthz did not answer: {e}\n{}", edge.log_tail()));
    let status = resp.status().as_u16();
    let body = resp.text().await.expect("body");
    let report = serde_json::from_str(&body).unwrap_or_else(|e| panic!("not a health report ({e}): {body}"));
    (status, report)
}

fn status_of(report: &HealthReport, tier: Tier) -> HealthStatus {
    report.tier(tier).unwrap_or_else(|| panic!("{tier:?} missing from {report:?}")).status
}

#[tokio::test]
async fn health_chain_is_ok_end_to_end_and_names_the_tier_that_is_down() {
    let dir = scratch_dir("health_chain");
    let db_name = format!("e2e_health_{}", std::process::id());
    let db = database_url(&db_name);
    let (core_port, edge_port) = (free_port(), free_port());
    let core_url = format!("http://127.0.0.1:{core_port}");

    let core = start_core(core_port, &db, true, &dir);
    core.wait_ready("/healthz", Duration::from_secs(60)).await;
    let edge = start_edge(edge_port, &core_url, &dir.join("do-state"), &dir);
    edge.wait_ready("/healthz", Duration::from_secs(120)).await;

    // 1. Everything up: 200, every tier ok, the database's migration version reported.
    let (status, report) = health(&edge).await;
    assert_eq!(status, 200, "{report:?}\ncore log:\n{}\nedge log:\n{}", core.log_tail(), edge.log_tail());
    assert_eq!(report.status, HealthStatus::Ok);
    assert!(report.failing.is_empty());
    for tier in [Tier::Edge, Tier::DurableObject, Tier::Core, Tier::Database] {
        assert_eq!(status_of(&report, tier), HealthStatus::Ok, "{tier:?}: {report:?}");
    }
    let database = report.tier(Tier::Database).unwrap();
    assert_eq!(database.migration_version, regional_core::db::latest_known_migration());
    let first_row = probe_row(&report);

    // The Durable Object really wrote: the next probe's row comes after this one.
    let (_, again) = health(&edge).await;
    assert!(probe_row(&again) > first_row, "{again:?}");

    // 2. The core stopped: 503 naming the core; the database behind it cannot be checked.
    core.stop();
    let (status, report) = health(&edge).await;
    assert_eq!(status, 503, "{report:?}");
    assert_eq!(report.status, HealthStatus::Down);
    assert_eq!(report.failing, vec![Tier::Core, Tier::Database]);
    assert_eq!(status_of(&report, Tier::Core), HealthStatus::Down);
    assert_eq!(status_of(&report, Tier::Database), HealthStatus::Unknown);
    assert_eq!(status_of(&report, Tier::DurableObject), HealthStatus::Ok);

    // 3. A core whose database is unreachable: 503 naming only the database.
    let closed = free_port();
    let blind = start_core(core_port, &format!("postgres://postgres@127.0.0.1:{closed}/none"), false, &dir);
    blind.wait_ready("/healthz", Duration::from_secs(30)).await;
    let (status, report) = health(&edge).await;
    assert_eq!(status, 503, "{report:?}");
    assert_eq!(report.failing, vec![Tier::Database]);
    assert_eq!(status_of(&report, Tier::Core), HealthStatus::Ok);
    blind.stop();

    // 4. The real core back: all ok again, nothing to restart at the edge.
    let core = start_core(core_port, &db, true, &dir);
    core.wait_ready("/healthz", Duration::from_secs(60)).await;
    let (status, report) = health(&edge).await;
    assert_eq!(status, 200, "{report:?}");

    drop(edge);
    core.stop();
    drop_database(&db_name);
}

/// The row id the Durable Object wrote, from its detail ("row N written and read back").
fn probe_row(report: &HealthReport) -> i64 {
    let detail = report.tier(Tier::DurableObject).and_then(|t| t.detail.clone()).unwrap_or_default();
    detail
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no row id in {detail:?}"))
}

/// A SIGTERM'd core first stops being ready (`/readyz` 503) while it still answers, for
/// `SHUTDOWN_DRAIN_SECS`, then exits: a load balancer drains it without failing a request.
#[tokio::test]
async fn a_terminated_core_drains_before_it_exits() {
    let dir = scratch_dir("core_drain");
    let db_name = format!("e2e_drain_{}", std::process::id());
    let db = database_url(&db_name);
    let port = free_port();
    let mut core = e2e::start_core_with(port, &db, true, &dir, &[("SHUTDOWN_DRAIN_SECS", "3".to_owned())]);
    core.wait_ready("/readyz", Duration::from_secs(60)).await;
    let http = e2e::http();
    let get = |path: &str| http.get(format!("{}{path}", core.url())).timeout(Duration::from_secs(5)).send();
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    core.terminate();
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let draining = loop {
        let r = get("/readyz").await.expect("still serving while draining");
        if r.status() == 503 {
            break r.json::<serde_json::Value>().await.unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "never drained");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(draining["reasons"], serde_json::json!(["draining"]));
    assert_eq!(get("/healthz").await.unwrap().status(), 200, "requests are still answered");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !core.exited() {
        assert!(std::time::Instant::now() < deadline, "the core did not exit after draining");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(core);
    drop_database(&db_name);
}
