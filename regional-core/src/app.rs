//! The HTTP application: shared state, the router, and serving with graceful shutdown.

use std::time::Duration;

use axum::extract::Request;
use axum::routing::get;
use axum::Router;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::ServeArgs;
use crate::error::ApiError;
use crate::{accounts, catalog, db, events, health, promotions, publishing, venues};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub health_timeout: Duration,
}

/// Every route of the core.
pub fn router(state: AppState) -> Router {
    let (routes, openapi) = documented_routes().split_for_parts();
    let document = serde_json::to_value(&openapi).unwrap_or_default();
    routes
        .route("/api/v1/openapi.json", get(move || async move { axum::Json(document) }))
        .fallback(|req: Request| async move { ApiError::NoRoute(req.uri().path().to_owned()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req.extensions().get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(axum::middleware::from_fn(request_id))
        .with_state(state)
}

/// The OpenAPI 3.1 document of every route (served at `/api/v1/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    documented_routes().into_openapi()
}

/// Every API route, each registered together with its documentation: a route cannot exist
/// without being in the OpenAPI document.
fn documented_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .merge(accounts::routes())
        .merge(venues::routes())
        .merge(events::routes())
        .merge(promotions::routes())
        .merge(catalog::routes())
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Ticketing regional core", description = "The organizers' admin API, the public catalog and operations. Errors are RFC 9457 problem+json (see docs/api.md)."),
    modifiers(&BearerKeys),
    tags(
        (name = "accounts", description = "organizations, users, API keys"),
        (name = "catalog", description = "venues, events, tiers, promo codes, refund policies"),
        (name = "publishing", description = "what the edge holds of an event"),
        (name = "public", description = "the buyers' catalog (no key)"),
        (name = "operations", description = "health"),
    )
)]
struct ApiDoc;

/// API keys: `Authorization: Bearer tk_<id>_<secret>`.
struct BearerKeys;

impl utoipa::Modify for BearerKeys {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("tk_<id>_<secret>").build(),
            ),
        );
    }
}

/// The id of one request: the caller's `x-request-id` (or the trace id of its W3C `traceparent`,
/// as the edge sends it) when well-formed, else a new one. It is in every log line of the request
/// (the span) and in the answer's `x-request-id`.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

fn incoming_id(req: &Request) -> Option<String> {
    let headers = req.headers();
    let ok = |s: &str| {
        (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if let Some(id) = headers.get("x-request-id").and_then(|v| v.to_str().ok()).filter(|s| ok(s)) {
        return Some(id.to_owned());
    }
    // traceparent: version-traceid-parentid-flags; the trace id names the whole chain.
    let trace = headers.get("traceparent").and_then(|v| v.to_str().ok())?;
    let id = trace.split('-').nth(1)?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
}

async fn request_id(mut req: Request, next: axum::middleware::Next) -> axum::response::Response {
    let id = incoming_id(&req).unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut resp = next.run(req).await;
    if let Ok(value) = axum::http::HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", value);
    }
    resp
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
