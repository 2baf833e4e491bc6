//! `GET /healthz`: the core's own health, which is its database's. Bounded by a timeout so that a
//! stuck database makes the answer "down", never a hang.

use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use shared_types::{CoreHealth, Tier, TierReport};

use crate::app::AppState;
use crate::db;

#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "the core and its database are up", body = Object), (status = 503, description = "the database is down", body = Object)))]
pub async fn healthz(State(app): State<AppState>) -> (StatusCode, Json<CoreHealth>) {
    let started = Instant::now();
    let checked = tokio::time::timeout(app.health_timeout, db::migration_version(&app.db)).await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let database = match checked {
        Ok(Ok(version)) => {
            TierReport { migration_version: version, ..TierReport::ok(Tier::Database, latency_ms) }
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health: database check failed");
            TierReport::down(Tier::Database, latency_ms, database_failure(&e))
        }
        Err(_) => TierReport::down(
            Tier::Database,
            latency_ms,
            format!("no answer within {} ms", app.health_timeout.as_millis()),
        ),
    };
    let health = CoreHealth::new(env!("CARGO_PKG_VERSION"), database);
    let status = StatusCode::from_u16(health.http_status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    (status, Json(health))
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
