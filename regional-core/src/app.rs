//! The HTTP application: shared state, the router, and serving with graceful shutdown.

use std::sync::Arc;
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

use crate::checkout::Checkout;
use crate::config::{DatabaseArgs, ProviderChoice, ServeArgs};
use crate::error::ApiError;
use crate::payments::{stripe::Stripe, testpay::TestPay, PaymentProvider as _, Provider};
use crate::{accounts, catalog, checkout, db, events, health, promotions, publishing, venues};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    /// Where reports, exports and the dashboard read: the replica when one is configured
    /// (`DATABASE_REPLICA_URL`), else the primary.
    pub read_db: PgPool,
    pub health_timeout: Duration,
    /// Checkout, when the core has its keys (else its routes answer 503).
    pub checkout: Option<Arc<Checkout>>,
    /// The platform's commission on an organizer's ticket money, in basis points (settlement).
    pub commission_bps: i64,
    /// What the edge knows of each sale (reports, dashboard, `/metrics`).
    pub edge: Arc<crate::reporting::edge::EdgeStats>,
    /// True once the core is shutting down: `/readyz` answers 503 so that no new traffic comes.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    /// The longest any request may take (`CORE_REQUEST_TIMEOUT_SECS`; see [`crate::limits`]).
    pub request_timeout: Duration,
}

impl AppState {
    /// State without checkout (admin and catalog only).
    pub fn new(db: PgPool, health_timeout: Duration) -> Self {
        Self {
            read_db: db.clone(),
            db,
            health_timeout,
            checkout: None,
            commission_bps: crate::config::DEFAULT_COMMISSION_BPS,
            edge: crate::reporting::edge::EdgeStats::disabled(),
            draining: Arc::default(),
            request_timeout: crate::limits::DEFAULT_TIMEOUT,
        }
    }
}

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
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req.extensions().get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
        })
        // One access line per request (status, latency), inside the request's span.
        .on_response(tower_http::trace::DefaultOnResponse::new().level(tracing::Level::INFO)))
        .layer(axum::middleware::from_fn(request_id))
        .with_state(state)
}

/// The operators' listener (`CORE_METRICS_LISTEN`): `/metrics` only, for Prometheus. Keep it off
/// the public network (docs/security.md); it answers within the same time limit as the API.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(|req: Request| async move { ApiError::NoRoute(req.uri().path().to_owned()) })
        .layer(axum::middleware::from_fn_with_state(state.request_timeout, crate::limits::bound))
        .layer(axum::middleware::from_fn(nosniff))
        .with_state(state)
}

/// `GET /metrics`: Prometheus text. Checkout's figures so far: unfinished orders by state and the age of the
/// oldest unfinished order (which must stay near zero plus the payment window).
async fn metrics(axum::extract::State(state): axum::extract::State<AppState>) -> Result<String, ApiError> {
    // Unfinished orders only (counted from a partial index, whatever the table's size); totals per
    // state belong to reporting's projections.
    let by_state: Vec<(String, i64)> = sqlx::query_as(
        "SELECT state, count(*) FROM orders
         WHERE state IN ('created', 'awaiting_payment', 'confirming', 'releasing', 'refunding')
         GROUP BY state ORDER BY state",
    )
    .fetch_all(&state.db)
    .await?;
    let oldest = checkout::driver::oldest_unfinished_age(&state.db).await?;
    let mut out = String::from(
        "# HELP ticketing_orders_unfinished Orders the saga is still working on, by state.\n# TYPE ticketing_orders_unfinished gauge\n",
    );
    for (s, n) in by_state {
        out.push_str(&format!("ticketing_orders_unfinished{{state=\"{s}\"}} {n}\n"));
    }
    out.push_str("# HELP ticketing_oldest_unfinished_order_age_seconds Age of the oldest order not yet paid, cancelled or refunded.\n");
    out.push_str("# TYPE ticketing_oldest_unfinished_order_age_seconds gauge\n");
    out.push_str(&format!("ticketing_oldest_unfinished_order_age_seconds {oldest}\n"));
    let in_use = state.db.size().saturating_sub(state.db.num_idle() as u32);
    out.push_str("# HELP ticketing_db_connections_in_use Database connections checked out of the pool.\n");
    out.push_str("# TYPE ticketing_db_connections_in_use gauge\n");
    out.push_str(&format!("ticketing_db_connections_in_use {in_use}\n"));
    out.push_str(&format!("ticketing_db_connections_open {}\n", state.db.size()));
    let (unsent, lag) = crate::bus::relay::backlog(&state.db).await?;
    out.push_str("# HELP ticketing_outbox_lag_seconds Age of the oldest outbox row not yet relayed.\n");
    out.push_str("# TYPE ticketing_outbox_lag_seconds gauge\n");
    out.push_str(&format!("ticketing_outbox_lag_seconds {lag}\n"));
    // Pending and parked only (partial indexes): sent mails are history.
    let mails: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM notifications WHERE state = 'pending'),
                (SELECT count(*) FROM notifications WHERE state = 'parked')",
    )
    .fetch_one(&state.db)
    .await?;
    out.push_str(
        "# HELP ticketing_notifications Mails waiting to be sent, and parked after repeated failure.\n",
    );
    out.push_str("# TYPE ticketing_notifications gauge\n");
    out.push_str(&format!("ticketing_notifications{{state=\"pending\"}} {}\n", mails.0));
    out.push_str(&format!("ticketing_notifications{{state=\"parked\"}} {}\n", mails.1));
    let failed = crate::notifications::sender::FAILED_ATTEMPTS.load(std::sync::atomic::Ordering::Relaxed);
    out.push_str(
        "# HELP ticketing_notification_failures_total Failed attempts to send a mail since start.\n",
    );
    out.push_str("# TYPE ticketing_notification_failures_total counter\n");
    out.push_str(&format!("ticketing_notification_failures_total {failed}\n"));
    out.push_str(&crate::metrics::render());
    out.push_str(&crate::bus::lag::render(unsent, lag));
    out.push_str(&state.edge.render());
    if let Some(rss) = resident_memory_bytes() {
        out.push_str("# HELP process_resident_memory_bytes Resident memory size in bytes.\n");
        out.push_str("# TYPE process_resident_memory_bytes gauge\n");
        out.push_str(&format!("process_resident_memory_bytes {rss}\n"));
    }
    Ok(out)
}

/// The process's resident memory (Linux: `/proc/self/statm`, in pages of 4 KiB).
fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
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
        .merge(checkout::routes())
        .merge(crate::fulfillment::tickets::routes())
        .merge(crate::fulfillment::transfers::routes())
        .merge(crate::notifications::ops::routes())
        .merge(crate::reporting::routes())
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
        (name = "checkout", description = "orders, payments, refunds, provider webhooks"),
        (name = "reporting", description = "organizers' reports, from the outbox's projections"),
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
    // No answer is ever sniffed into another type.
    resp.headers_mut().insert("x-content-type-options", axum::http::HeaderValue::from_static("nosniff"));
    resp
}

async fn nosniff(req: Request, next: axum::middleware::Next) -> axum::response::Response {
    let mut resp = next.run(req).await;
    resp.headers_mut().insert("x-content-type-options", axum::http::HeaderValue::from_static("nosniff"));
    resp
}

/// Migrates (when asked), binds and serves until SIGINT or SIGTERM.
pub async fn serve(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    // Every start-up rule first: a configuration that may not run changes nothing.
    let choice = args.validate()?;
    if args.migrate {
        db::migrate(&args.database).await?;
    }
    let mut state = AppState::new(db::pool(&args.database)?, args.health_timeout());
    state.commission_bps = i64::from(args.commission_bps);
    state.request_timeout = Duration::from_secs(args.request_timeout_secs);
    let ops = &args.operations;
    if let Some(replica) = &ops.replica_url {
        let replica = DatabaseArgs { database_url: replica.clone(), ..args.database.clone() };
        state.read_db = db::pool(&replica)?;
        tracing::info!(replica = %replica.database_url.redacted(), "reports read from the replica");
    }
    let mut extra = Router::<AppState>::new();
    match &args.core_signing_key {
        Some(key) => {
            let edge = publishing::EdgeClient::new(&args.edge_url, key.0.clone());
            tokio::spawn(publishing::run(state.db.clone(), edge));
            state.edge = crate::reporting::edge::EdgeStats::new(publishing::EdgeClient::new(
                &args.edge_url,
                key.0.clone(),
            ));
            let every = Duration::from_secs(ops.edge_scrape_secs.max(1));
            tokio::spawn(state.edge.clone().run_scraper(state.db.clone(), every));
            tracing::info!(edge = %args.edge_url, "publishing events to the edge");
        }
        None => tracing::warn!("CORE_SIGNING_KEY is not set: events will not be published to the edge"),
    }
    let c = &args.checkout;
    let provider = match choice {
        ProviderChoice::Stripe => {
            let key = c.stripe_secret_key.clone().ok_or("PAYMENT_PROVIDER=stripe needs STRIPE_SECRET_KEY")?;
            let secrets: Vec<String> = c
                .stripe_webhook_secrets
                .as_deref()
                .unwrap_or("")
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
            if secrets.is_empty() {
                return Err("PAYMENT_PROVIDER=stripe needs STRIPE_WEBHOOK_SECRETS".into());
            }
            Some(Provider::Stripe(Stripe::new(&c.stripe_api_base, key, secrets)))
        }
        ProviderChoice::Test => {
            tracing::warn!("development mode: the test payment provider is mounted (never in production)");
            let secret = match c.testpay_webhook_secret.clone() {
                Some(secret) => secret,
                None => crate::payments::testpay::random_secret()?,
            };
            let testpay = TestPay::new(state.db.clone(), &c.public_url, secret);
            tokio::spawn(testpay.clone().run_deliveries());
            extra = extra.merge(testpay.clone().routes());
            Some(Provider::Test(testpay))
        }
        ProviderChoice::None => None,
    };
    match (&args.core_signing_key, c.edge_verifying_keys.as_deref(), provider) {
        (Some(key), Some(edge_keys), Some(provider)) => {
            let edge_keys = shared_types::token::KeyRing::parse(edge_keys)
                .map_err(|e| format!("EDGE_VERIFYING_KEYS: {e}"))?;
            let previous_keys =
                shared_types::token::KeyRing::parse(c.core_previous_verifying_keys.as_deref().unwrap_or(""))
                    .map_err(|e| format!("CORE_PREVIOUS_VERIFYING_KEYS: {e}"))?;
            if previous_keys.kids().any(|kid| kid == key.0.kid()) {
                return Err(format!(
                    "CORE_PREVIOUS_VERIFYING_KEYS: {} is the signing key's id; list only earlier keys",
                    key.0.kid()
                )
                .into());
            }
            let checkout = Arc::new(Checkout {
                db: state.db.clone(),
                edge: publishing::EdgeClient::new(&args.edge_url, key.0.clone()),
                provider,
                edge_keys,
                signer: key.0.clone(),
                previous_keys,
                fault: c.fault_inject.clone(),
                grace: chrono::Duration::seconds(i64::from(c.payment_grace_secs)),
            });
            if let Some(point) = &c.fault_inject {
                tracing::warn!(
                    point,
                    "CORE_FAULT_INJECT is set: this core will crash on purpose (tests only)"
                );
            }
            tokio::spawn(checkout::driver::run(
                checkout.clone(),
                Duration::from_millis(c.reconcile_interval_ms),
            ));
            tracing::info!(provider = checkout.provider.name(), "checkout enabled");
            let gates = crate::fulfillment::checkin::Gates::server(checkout.clone());
            let grpc = c.grpc_listen;
            let tls = match (&c.grpc_tls_cert, &c.grpc_tls_key) {
                (Some(cert), Some(key)) => Some((
                    std::fs::read(cert).map_err(|e| format!("CORE_GRPC_TLS_CERT {}: {e}", cert.display()))?,
                    std::fs::read(key).map_err(|e| format!("CORE_GRPC_TLS_KEY {}: {e}", key.display()))?,
                )),
                _ => None,
            };
            let secure = tls.is_some();
            tokio::spawn(async move {
                if let Err(e) = crate::fulfillment::checkin::serve(gates, grpc, tls).await {
                    tracing::error!(error = %e, addr = %grpc, "the check-in service stopped");
                }
            });
            tracing::info!(addr = %grpc, tls = secure, "check-in (gRPC) listening");
            state.checkout = Some(checkout);
        }
        _ => tracing::warn!("CORE_SIGNING_KEY or EDGE_VERIFYING_KEYS is not set: checkout answers 503"),
    }
    start_fulfillment(&args, &state.db).await?;
    tokio::spawn(crate::api::run_pruner(state.db.clone(), Duration::from_secs(600)));
    let metrics_listener = TcpListener::bind(args.metrics_listen).await?;
    tracing::info!(addr = %metrics_listener.local_addr()?, "metrics listening (operators only)");
    let metrics_app = metrics_router(state.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(metrics_listener, metrics_app).await {
            tracing::error!(error = %e, "the metrics listener stopped");
        }
    });
    let listener = TcpListener::bind(args.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, database = %args.database.database_url, "core listening");
    let (draining, drain_for) = (state.draining.clone(), Duration::from_secs(ops.shutdown_drain_secs));
    let shutdown = async move {
        shutdown_signal().await;
        // Not ready any more, still serving: the load balancer sees /readyz fail and stops
        // sending new requests; those in flight and arriving meanwhile are answered.
        draining.store(true, std::sync::atomic::Ordering::SeqCst);
        tracing::info!(seconds = drain_for.as_secs(), "shutting down: draining");
        tokio::time::sleep(drain_for).await;
    };
    axum::serve(listener, router_with(state, extra)).with_graceful_shutdown(shutdown).await?;
    tracing::info!("core stopped");
    Ok(())
}

/// The outbox relay (to Kafka, or to the consumers in this process), the consumers, the mail
/// sender and the reminders.
async fn start_fulfillment(args: &ServeArgs, db: &sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
    use crate::bus::{kafka, relay};
    use crate::notifications::{reminders, sender, MailSettings, Notifier};
    let f = &args.fulfillment;
    let mut consumers: Vec<Arc<dyn crate::bus::Consumer>> =
        vec![Arc::new(crate::reporting::projector::Projector)];
    if let Some(key) = &args.core_signing_key {
        let mail = Arc::new(MailSettings {
            buyer_url: f.buyer_url.clone().unwrap_or_else(|| args.edge_url.clone()),
            signer: key.0.clone(),
        });
        consumers.push(Arc::new(Notifier::new(mail.clone())));
        let lead = chrono::Duration::hours(f.reminder_lead_hours);
        tokio::spawn(reminders::run(db.clone(), mail, lead, Duration::from_secs(60)));
        match &f.smtp_url {
            Some(url) => {
                let from: lettre::message::Mailbox =
                    f.mail_from.parse().map_err(|e| format!("MAIL_FROM: {e}"))?;
                // Message-IDs in the sender's own domain (RFC 5322 wants them globally unique).
                let domain = from.email.domain().to_owned();
                let settings = sender::SenderSettings {
                    from,
                    max_attempts: f.notify_max_attempts.max(1),
                    retry_base: Duration::from_millis(f.notify_retry_base_ms),
                    per_hour: f.notify_per_hour.max(1),
                    domain,
                };
                let s = sender::Sender::new(db.clone(), url, settings, key.0.clone())?;
                tokio::spawn(Arc::new(s).run(Duration::from_millis(500)));
                tracing::info!("notifications: sending mail over SMTP");
            }
            None => tracing::warn!("SMTP_URL is not set: mails are queued, not sent"),
        }
    }
    let poll = Duration::from_millis(f.outbox_poll_ms);
    let sink = match &f.kafka_bootstrap {
        Some(bootstrap) => {
            let settings = kafka::KafkaSettings {
                bootstrap: bootstrap.clone(),
                topic_prefix: f.kafka_topic_prefix.clone(),
                partitions: f.kafka_partitions.max(1),
            };
            if let Err(e) = settings.create_topics().await {
                // The broker may be down now: the relay waits for it; topics can be made later.
                tracing::warn!(error = %e, "kafka: could not create the topics");
            }
            for c in consumers {
                tokio::spawn(kafka::run_consumer(db.clone(), settings.clone(), c));
            }
            tracing::info!(bootstrap, "outbox: relayed to Kafka");
            relay::Sink::Kafka(kafka::Publisher::new(settings)?)
        }
        None => {
            tracing::info!("outbox: delivered in-process (KAFKA_BOOTSTRAP is not set)");
            consumers.iter().for_each(|c| crate::bus::lag::in_process(c.name()));
            relay::Sink::InProcess(consumers)
        }
    };
    tokio::spawn(relay::Relay::new(db.clone(), sink).run(poll));
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
