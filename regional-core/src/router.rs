//! Every route of the core, each with its documentation, and the layers around them (limits,
//! metrics, tracing, request ids). The top of the import graph: it imports the handlers, and
//! nothing imports it but `serve` (docs/architecture.md, "The core's layers").

use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use tower_http::trace::{OnResponse as _, TraceLayer};
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::middleware::{nosniff, request_id, RequestId};
use crate::state::AppState;
use crate::{accounts, catalog, checkout, events, health, promotions, venues};

/// Every route of the core.
pub fn router(state: AppState) -> Router {
    router_with(state, Router::new())
}

/// [`router`] plus routes that are not part of the API (the test provider's pages). `/metrics` is
/// not here: it shows every tenant's figures, so it has a listener of its own ([`metrics_router`]).
pub fn router_with(state: AppState, extra: Router<AppState>) -> Router {
    let (routes, openapi) = documented_routes().split_for_parts();
    let document = serde_json::to_value(&openapi).unwrap_or_default();
    routes
        .route("/api/v1/openapi.json", get(move || async move { axum::Json(document) }))
        .merge(crate::reporting::dashboard::routes())
        .merge(extra)
        .fallback(|req: Request| async move { ApiError::NoRoute(req.uri().path().to_owned()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // Body and time limits of every route, then axum's own ceiling for what reaches a handler.
        .layer(axum::middleware::from_fn_with_state(state.request_timeout, crate::limits::bound))
        .layer(axum::extract::DefaultBodyLimit::max(crate::limits::MAX_BODY))
        .layer(axum::middleware::from_fn(crate::metrics::track))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                // One access line per request (status, latency), inside the request's span.
                .on_response(|resp: &Response, latency, span: &tracing::Span| {
                    span.record("http.response.status_code", resp.status().as_u16());
                    tower_http::trace::DefaultOnResponse::new()
                        .level(tracing::Level::INFO)
                        .on_response(resp, latency, span)
                }),
        )
        // Where the request came from, for the audit log (after the request id is known).
        .layer(axum::middleware::from_fn_with_state(state.trusted_proxies.clone(), crate::origin::origin))
        .layer(axum::middleware::from_fn(request_id))
        .with_state(state)
}

/// A request's span: named by its route template (bounded, unlike raw paths), continuing the
/// caller's trace (`traceparent`), with the request id every log line of it carries.
fn request_span(req: &Request) -> tracing::Span {
    let id = req.extensions().get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str());
    let method = req.method();
    if matches!(route, "/livez" | "/readyz" | "/healthz") {
        // Probes (every few seconds from every prober) are logged, not traced: a debug span is
        // below the traces' filter (telemetry.rs).
        return tracing::debug_span!("probe", method = %method, path = %req.uri().path(), request_id = %id);
    }
    let span = tracing::info_span!(
        "request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        method = %method,
        path = %req.uri().path(),
        http.route = route,
        request_id = %id,
        http.response.status_code = tracing::field::Empty,
    );
    crate::telemetry::continue_trace(&span, req.headers());
    span
}

/// The operators' listener (`CORE_METRICS_LISTEN`): `/metrics` only, for Prometheus. Keep it off
/// the public network (docs/security.md); it answers within the same time limit as the API.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(crate::metrics::scrape))
        .fallback(|req: Request| async move { ApiError::NoRoute(req.uri().path().to_owned()) })
        .layer(axum::middleware::from_fn_with_state(state.request_timeout, crate::limits::bound))
        .layer(axum::middleware::from_fn(nosniff))
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
        .routes(routes!(health::livez))
        .routes(routes!(health::readyz))
        .merge(accounts::routes())
        .merge(venues::routes())
        .merge(events::routes())
        .merge(promotions::routes())
        .merge(catalog::routes())
        .merge(checkout::routes::routes())
        .merge(crate::fulfillment::tickets::routes())
        .merge(crate::fulfillment::transfers::routes())
        .merge(crate::notifications::ops::routes())
        .merge(crate::reporting::routes())
        .merge(crate::audit::routes())
        .merge(crate::webhooks::routes::routes())
        .merge(crate::privacy::routes::routes())
        .merge(crate::sms::routes::routes())
        .merge(crate::box_office::routes())
        .merge(crate::series::routes())
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Ticketing regional core", description = "The organizers' admin API, the public catalog and operations. Errors are RFC 9457 problem+json (see docs/api.md)."),
    modifiers(&BearerKeys),
    components(schemas(crate::api::ProblemDoc)),
    tags(
        (name = "accounts", description = "organizations, users, API keys"),
        (name = "catalog", description = "venues, events, tiers, promo codes, refund policies"),
        (name = "publishing", description = "what the edge holds of an event"),
        (name = "public", description = "the buyers' catalog (no key)"),
        (name = "checkout", description = "orders, payments, refunds, provider webhooks"),
        (name = "reporting", description = "organizers' reports, from the outbox's projections"),
        (name = "operations", description = "health"),
        (name = "webhooks", description = "partner webhooks: endpoints, deliveries, replays"),
        (name = "privacy", description = "personal data: access and erasure requests (docs/privacy.md)"),
        (name = "box office", description = "selling at the venue: holds without the line, cash and card-present sales, printed tickets, re-issues (docs/box-office.md)"),
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
        components.add_security_scheme(
            "order_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWS (EdDSA), from checkout")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "sign_in_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWS (EdDSA), from the sign-in link's mail")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "transfer_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWS (EdDSA), from the transfer offer's mail")
                    .build(),
            ),
        );
    }
}
