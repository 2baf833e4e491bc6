//! The core's `/metrics`, in Prometheus text format through the `prometheus-client` crate.
//!
//! - Request metrics per route: counts by method, route template and status (errors are the 4xx
//!   and 5xx statuses), and a latency histogram by method and route. Route templates
//!   (`/api/v1/events/{id}`), never raw paths, so the number of series stays bounded.
//! - Figures read at scrape time (unfinished orders, the outbox, mail, the edge's picture, consumer
//!   lag): gathered into a [`Snapshot`] (`figures.rs`) and encoded as they are.

use std::sync::LazyLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::error::Result;
pub use crate::figures::{Labels, Snapshot};
use crate::state::AppState;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// What this process counts as it runs.
struct Live {
    requests: Family<Labels, Counter>,
    latency: Family<Labels, Histogram, fn() -> Histogram>,
}

static LIVE: LazyLock<Live> = LazyLock::new(|| Live {
    requests: Family::default(),
    latency: Family::new_with_constructor(latency_histogram),
});

/// Failed attempts to send a mail since start (the sender counts them).
pub static MAIL_FAILURES: LazyLock<Counter> = LazyLock::new(Counter::default);

/// What became of the SMS sender's attempts since start, by outcome (`sent`, `retried`, `failed`,
/// `suppressed`, `deferred`): `ticketing_sms_sends_total` (`crate::sms::sender`).
pub static SMS_SENDS: LazyLock<Family<Labels, Counter>> = LazyLock::new(Family::default);

/// The SMS provider's delivery reports since start, by status (a fixed set: others are refused):
/// `ticketing_sms_delivery_reports_total` (`crate::sms::routes`).
pub static SMS_REPORTS: LazyLock<Family<Labels, Counter>> = LazyLock::new(Family::default);

/// The middleware: times each request and counts it under its route.
pub async fn track(req: Request, next: Next) -> Response {
    let method = method_label(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| route_label(p.as_str()))
        .unwrap_or_else(|| "unmatched".into());
    let started = Instant::now();
    let resp = next.run(req).await;
    let seconds = started.elapsed().as_secs_f64();
    let status = resp.status().as_u16().to_string();
    LIVE.requests
        .get_or_create(&vec![("method", method.clone()), ("route", route.clone()), ("status", status)])
        .inc();
    LIVE.latency.get_or_create(&vec![("method", method), ("route", route)]).observe(seconds);
    resp
}

/// A method as a label value: the standard ones as they are, anything else `other`, so a client
/// sending made-up methods cannot add series without bound.
fn method_label(m: &axum::http::Method) -> String {
    use axum::http::Method;
    let known = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    if known.contains(m) {
        m.as_str().to_owned()
    } else {
        "other".to_owned()
    }
}

/// A route as a label value: `{id}` written `:id` (some scrapers' parsers stop at a brace).
fn route_label(v: &str) -> String {
    v.replace('{', ":").replace('}', "")
}

/// The request metrics, the mail failures and the edge calls, followed by `snapshot`, as Prometheus text.
pub fn render(snapshot: Snapshot) -> String {
    let mut registry = Registry::default();
    registry.register(
        "ticketing_http_requests",
        "HTTP requests by method, route and status",
        LIVE.requests.clone(),
    );
    registry.register(
        "ticketing_http_request_duration_seconds",
        "HTTP request latency by method and route",
        LIVE.latency.clone(),
    );
    registry.register(
        "ticketing_notification_failures",
        "Failed attempts to send a mail since start",
        MAIL_FAILURES.clone(),
    );
    registry.register(
        "ticketing_edge_calls",
        "Signed calls to the edge by call and outcome",
        crate::edge_client::CALLS.clone(),
    );
    registry.register(
        "ticketing_webhook_attempts",
        "Attempts to deliver partner webhooks since start, by outcome",
        crate::webhooks::dispatch::ATTEMPTS.clone(),
    );
    registry.register(
        "ticketing_sms_sends",
        "Attempts to send text messages since start, by outcome",
        SMS_SENDS.clone(),
    );
    registry.register(
        "ticketing_sms_delivery_reports",
        "The provider's delivery reports since start, by status",
        SMS_REPORTS.clone(),
    );
    registry.register_collector(Box::new(snapshot));
    crate::figures::encode(&registry)
}

/// `GET /metrics`: Prometheus text. Checkout's figures so far: unfinished orders by state and the age of the
/// oldest unfinished order (which must stay near zero plus the payment window).
pub async fn scrape(State(state): State<AppState>) -> Result<impl IntoResponse> {
    // Unfinished orders only (counted from a partial index, whatever the table's size); totals per
    // state belong to reporting's projections.
    let by_state: Vec<(String, i64)> = sqlx::query_as(
        "SELECT state, count(*) FROM orders
         WHERE state IN ('created', 'awaiting_payment', 'confirming', 'releasing', 'refunding')
         GROUP BY state ORDER BY state",
    )
    .fetch_all(&state.db)
    .await?;
    let oldest = crate::checkout::driver::oldest_unfinished_age(&state.db).await?;
    let mut s = Snapshot::default();
    for (st, n) in by_state {
        s.gauge(
            "ticketing_orders_unfinished",
            "Orders the saga is still working on, by state",
            vec![("state", st)],
            n,
        );
    }
    s.gauge(
        "ticketing_oldest_unfinished_order_age_seconds",
        "Age of the oldest order not yet paid, cancelled or refunded",
        vec![],
        oldest,
    );
    for (name, pool) in [("requests", &state.db), ("background", &state.background_db)] {
        let in_use = pool.size().saturating_sub(pool.num_idle() as u32);
        let labels = || vec![("pool", name.to_owned())];
        s.gauge(
            "ticketing_db_connections_in_use",
            "Database connections checked out of each pool",
            labels(),
            in_use,
        );
        s.gauge(
            "ticketing_db_connections_open",
            "Database connections open in each pool",
            labels(),
            pool.size(),
        );
    }
    let (unsent, lag) = crate::bus::relay::backlog(&state.db).await?;
    s.gauge("ticketing_outbox_lag_seconds", "Age of the oldest outbox row not yet relayed", vec![], lag);
    // Pending and parked only (partial indexes): sent mails are history.
    let mails: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM notifications WHERE state = 'pending'),
                (SELECT count(*) FROM notifications WHERE state = 'parked')",
    )
    .fetch_one(&state.db)
    .await?;
    for (st, n) in [("pending", mails.0), ("parked", mails.1)] {
        s.gauge(
            "ticketing_notifications",
            "Mails waiting to be sent, and parked after repeated failure",
            vec![("state", st.into())],
            n,
        );
    }
    // Partner webhooks: deliveries of enabled endpoints waiting (a partial index); how long the
    // most overdue one of an organization with no attempt in flight has been due (nobody is
    // sending: a slow partner, whose attempts are in flight, does not move it); endpoints the
    // core disabled after a long failure.
    let hooks: (i64, f64, i64) = sqlx::query_as(
        "SELECT count(*),
                coalesce(extract(epoch FROM now() - min(d.next_attempt_at) FILTER (
                    WHERE d.next_attempt_at <= now() AND NOT EXISTS (
                        SELECT 1 FROM webhook_deliveries x
                        WHERE x.organization_id = d.organization_id AND x.state = 'pending'
                          AND x.lease_until > now()))), 0)::float8,
                (SELECT count(*) FROM webhook_endpoints WHERE disabled_reason = 'failing')
         FROM webhook_deliveries d JOIN webhook_endpoints w ON w.id = d.endpoint_id AND w.enabled
         WHERE d.state = 'pending'",
    )
    .fetch_one(&state.db)
    .await?;
    s.gauge(
        "ticketing_webhook_deliveries_pending",
        "Partner webhook deliveries waiting for an attempt",
        vec![],
        hooks.0,
    );
    s.gauge(
        "ticketing_webhook_delay_seconds",
        "How long the most overdue partner webhook delivery of an organization with none in flight has been due",
        vec![],
        hooks.1,
    );
    s.gauge(
        "ticketing_webhook_endpoints_disabled",
        "Partner webhook endpoints disabled by the core after a long failure",
        vec![],
        hooks.2,
    );
    // Texts: how many wait, and how long the most overdue has been due (a partial index).
    let texts: (i64, f64) = sqlx::query_as(
        "SELECT count(*), coalesce(extract(epoch FROM now() - min(next_attempt_at) FILTER (
                    WHERE next_attempt_at <= now() AND (lease_until IS NULL OR lease_until < now()))), 0)::float8
         FROM sms_messages WHERE state = 'pending'",
    )
    .fetch_one(&state.db)
    .await?;
    s.gauge("ticketing_sms_pending", "Text messages waiting to be sent", vec![], texts.0);
    s.gauge(
        "ticketing_sms_delay_seconds",
        "How long the most overdue text message nobody is sending has been due",
        vec![],
        texts.1,
    );
    // The push queue to the edge, by state (one row per published event).
    let sync: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM edge_sync WHERE state <> 'synced' GROUP BY state")
            .fetch_all(&state.db)
            .await?;
    for st in ["pending", "failing", "lost"] {
        let n = sync.iter().find(|(k, _)| k == st).map_or(0, |(_, n)| *n);
        s.gauge(
            "ticketing_edge_sync_events",
            "Events whose push to the edge is pending, failing or lost",
            vec![("state", st.into())],
            n,
        );
    }
    crate::bus::lag::collect(&mut s, unsent, lag);
    state.edge.collect(&mut s);
    if let Some(rss) = resident_memory_bytes() {
        s.gauge("process_resident_memory_bytes", "Resident memory size in bytes", vec![], rss);
    }
    Ok(([(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)], render(s)))
}

/// The process's resident memory (Linux: `/proc/self/statm`, in pages of 4 KiB).
fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
