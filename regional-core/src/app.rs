//! The HTTP application: shared state, the router, and serving with graceful shutdown.

use std::time::Duration;

use axum::extract::Request;
use axum::routing::get;
use axum::Router;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;

use crate::config::ServeArgs;
use crate::error::ApiError;
use crate::{accounts, db, events, health, publishing, venues};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub health_timeout: Duration,
}

/// Every route of the core.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .merge(accounts::routes())
        .merge(venues::routes())
        .merge(events::routes())
        .fallback(|req: Request| async move { ApiError::NoRoute(req.uri().path().to_owned()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Migrates (when asked), binds and serves until SIGINT or SIGTERM.
pub async fn serve(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    if args.migrate {
        db::migrate(&args.database).await?;
    }
    let state = AppState { db: db::pool(&args.database)?, health_timeout: args.health_timeout() };
    match &args.core_signing_key {
        Some(key) => {
            let edge = publishing::EdgeClient::new(&args.edge_url, key.0.clone());
            tokio::spawn(publishing::run(state.db.clone(), edge));
            tracing::info!(edge = %args.edge_url, "publishing events to the edge");
        }
        None => tracing::warn!("CORE_SIGNING_KEY is not set: events will not be published to the edge"),
    }
    let listener = TcpListener::bind(args.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, database = %args.database.database_url, "core listening");
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown_signal()).await?;
    tracing::info!("core stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
