//! `GET /healthz`: the core's own health, which is its database's. Bounded by a timeout so that a
//! stuck database makes the answer "down", never a hang.

use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use shared_types::{CoreHealth, Tier, TierReport};

use crate::db;
use crate::state::AppState;

#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "the core and its database are up", body = CoreHealth), (status = 503, description = "the database is down", body = CoreHealth)))]
pub async fn healthz(State(app): State<AppState>) -> (StatusCode, Json<CoreHealth>) {
    let (checked, latency_ms) = check_database(&app).await;
    let database = match checked {
        Ok(version) => {
            TierReport { migration_version: version, ..TierReport::ok(Tier::Database, latency_ms) }
        }
        Err(why) => TierReport::down(Tier::Database, latency_ms, why),
    };
    let health = CoreHealth::new(env!("CARGO_PKG_VERSION"), database);
    let status = StatusCode::from_u16(health.http_status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    (status, Json(health))
}

/// The database's newest applied migration, or why it could not be read, within the health
/// timeout; and how long the check took (ms). What `/healthz` and `/readyz` both ask.
async fn check_database(app: &AppState) -> (Result<Option<i64>, String>, f64) {
    let started = Instant::now();
    let checked = match tokio::time::timeout(app.health_timeout, db::migration_version(&app.db)).await {
        Ok(Ok(version)) => Ok(version),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health: database check failed");
            Err(database_failure(&e))
        }
        Err(_) => Err(format!("no answer within {} ms", app.health_timeout.as_millis())),
    };
    (checked, started.elapsed().as_secs_f64() * 1000.0)
}

/// A short, safe description of why the database check failed (no SQL, no credentials).
fn database_failure(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::PoolTimedOut => "no connection available (database unreachable?)".into(),
        sqlx::Error::Io(io) => format!("connection failed: {}", io.kind()),
        sqlx::Error::Database(db) if db.code().as_deref() == Some("42P01") => "migrations not applied".into(),
        sqlx::Error::Database(db) => format!("database error {}", db.code().unwrap_or_default()),
        _ => "database check failed".into(),
    }
}

/// `GET /livez`: the process serves requests (a supervisor restarts it when this fails). It reads
/// nothing: a slow database must not get a healthy core killed.
#[utoipa::path(get, path = "/livez", tag = "operations", responses((status = 200, description = "the process is up", body = Object)))]
pub async fn livez() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "up", "version": env!("CARGO_PKG_VERSION") }))
}

/// `GET /readyz`: whether a load balancer should send this core traffic. Ready when the database
/// answers within the health timeout, its schema is the one this binary knows (not older: a
/// rolling deploy waits for the migration), and the core is not shutting down.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200, description = "ready for traffic", body = Object), (status = 503, description = "not ready: draining, database down, or schema behind", body = Object)))]
pub async fn readyz(State(app): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let mut reasons = Vec::new();
    if app.draining.load(std::sync::atomic::Ordering::SeqCst) {
        reasons.push("draining".to_owned());
    }
    match check_database(&app).await.0 {
        Ok(version) if version < db::latest_known_migration() => reasons.push(format!(
            "schema at migration {} but this binary needs {}",
            version.unwrap_or(0),
            db::latest_known_migration().unwrap_or(0)
        )),
        Ok(_) => {}
        Err(why) => reasons.push(why),
    }
    if reasons.is_empty() {
        (StatusCode::OK, Json(serde_json::json!({ "status": "ready" })))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "not_ready", "reasons": reasons })),
        )
    }
}
