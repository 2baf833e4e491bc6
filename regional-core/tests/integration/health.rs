//! The core's `/healthz` and error bodies, served for real on a loopback port against PostgreSQL.

use std::time::Duration;

use regional_core::{db, router, AppState};
use shared_types::{CoreHealth, HealthStatus, Problem, ProblemType};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

async fn spawn(pool: PgPool) -> String {
    let state = AppState::new(pool, Duration::from_millis(1000));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(state)).await.unwrap() });
    format!("http://{addr}")
}

#[sqlx::test]
async fn healthz_reports_the_newest_applied_migration(pool: PgPool) {
    let base = spawn(pool).await;
    let resp = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let health: CoreHealth = resp.json().await.unwrap();
    assert_eq!(health.status, HealthStatus::Ok);
    assert_eq!(health.database.status, HealthStatus::Ok);
    assert_eq!(health.database.migration_version, db::latest_known_migration());
    assert!(health.database.migration_version.is_some());
}

#[sqlx::test(migrations = false)]
async fn healthz_is_503_on_a_database_without_migrations(pool: PgPool) {
    let base = spawn(pool).await;
    let resp = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(resp.status(), 503);
    let health: CoreHealth = resp.json().await.unwrap();
    assert_eq!(health.database.status, HealthStatus::Down);
    assert_eq!(health.database.detail.as_deref(), Some("migrations not applied"));
}

#[tokio::test]
async fn healthz_is_503_and_prompt_when_the_database_is_unreachable() {
    // Port 9 (discard) on loopback: nothing listens there, so every connection is refused.
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy("postgres://postgres@127.0.0.1:9/none")
        .unwrap();
    let base = spawn(pool).await;
    let resp = tokio::time::timeout(Duration::from_secs(5), reqwest::get(format!("{base}/healthz")))
        .await
        .expect("healthz must answer within its timeout, not hang")
        .unwrap();
    assert_eq!(resp.status(), 503);
    let health: CoreHealth = resp.json().await.unwrap();
    assert_eq!(health.status, HealthStatus::Down);
    assert_eq!(health.database.status, HealthStatus::Down);
    assert!(health.database.detail.is_some());
}

#[sqlx::test]
async fn unknown_routes_and_methods_answer_problem_json(pool: PgPool) {
    let base = spawn(pool).await;
    let client = reqwest::Client::new();

    let resp = client.get(format!("{base}/no/such/thing")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let problem: Problem = resp.json().await.unwrap();
    assert!(problem.is(ProblemType::NotFound));
    assert_eq!(problem.instance.as_deref(), Some("/no/such/thing"));

    let resp = client.delete(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    let problem: Problem = resp.json().await.unwrap();
    assert!(problem.is(ProblemType::MethodNotAllowed));
}

#[sqlx::test]
async fn every_answer_carries_a_request_id_taken_from_the_caller_or_made(pool: PgPool) {
    let base = spawn(pool).await;
    let client = reqwest::Client::new();
    let made = client.get(format!("{base}/healthz")).send().await.unwrap();
    let id = made.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 32);
    let given = client.get(format!("{base}/nope")).header("x-request-id", "req-123").send().await.unwrap();
    assert_eq!(given.headers()["x-request-id"], "req-123");
    let traced = client
        .get(format!("{base}/healthz"))
        .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .send()
        .await
        .unwrap();
    assert_eq!(traced.headers()["x-request-id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    let junk = client.get(format!("{base}/healthz")).header("x-request-id", "bad id!").send().await.unwrap();
    assert_ne!(junk.headers()["x-request-id"], "bad id!");
}

/// Readiness, for a load balancer: ready on a migrated database; not ready when the schema is
/// behind the binary (a rolling deploy before its migration), or while draining at shutdown;
/// `/livez` stays up through all of it (it reads nothing).
#[sqlx::test]
async fn readyz_follows_the_schema_and_draining_while_livez_stays_up(pool: PgPool) {
    let state = AppState::new(pool.clone(), Duration::from_millis(1000));
    let draining = state.draining.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router(state)).await.unwrap() });
    let ready = |base: String| async move {
        let resp = reqwest::get(format!("{base}/readyz")).await.unwrap();
        (resp.status().as_u16(), resp.json::<serde_json::Value>().await.unwrap())
    };
    assert_eq!(ready(base.clone()).await, (200, serde_json::json!({ "status": "ready" })));

    let newest = db::latest_known_migration().unwrap();
    sqlx::query("UPDATE _sqlx_migrations SET success = false WHERE version = $1")
        .bind(newest)
        .execute(&pool)
        .await
        .unwrap();
    let (status, body) = ready(base.clone()).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["reasons"][0].as_str().unwrap().contains(&newest.to_string()), "{body}");
    sqlx::query("UPDATE _sqlx_migrations SET success = true WHERE version = $1")
        .bind(newest)
        .execute(&pool)
        .await
        .unwrap();

    draining.store(true, std::sync::atomic::Ordering::SeqCst);
    let (status, body) = ready(base.clone()).await;
    assert_eq!((status, body["reasons"].clone()), (503, serde_json::json!(["draining"])));
    let live = reqwest::get(format!("{base}/livez")).await.unwrap();
    assert_eq!(live.status(), 200);
}

/// Replicas started at once against a database that does not exist yet all come up: the one that
/// loses the race to create it takes the database the other made (then sqlx's migration lock
/// lets one of them migrate).
#[tokio::test]
async fn replicas_that_start_at_once_all_create_and_migrate_the_database() {
    use regional_core::config::{DatabaseArgs, DatabaseUrl};
    let server = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let server = server.rsplit_once('/').map_or(server.as_str(), |(s, _)| s).to_owned();
    let name = format!("race_{}", uuid::Uuid::new_v4().simple());
    let args = DatabaseArgs {
        database_url: format!("{server}/{name}").parse::<DatabaseUrl>().unwrap(),
        max_connections: 1,
    };
    let starts = (0..4).map(|_| db::migrate(&args));
    let outcomes = futures_util::future::join_all(starts).await;
    let admin = PgPoolOptions::new().max_connections(1).connect(&format!("{server}/postgres")).await.unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&admin).await.unwrap();
    for outcome in outcomes {
        assert!(outcome.is_ok(), "a replica failed to start: {outcome:?}");
    }
}
