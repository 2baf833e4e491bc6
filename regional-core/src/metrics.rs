//! Request metrics per route for `/metrics`: counts by method, route template and status (errors
//! are the 4xx and 5xx statuses), and a latency histogram by method and route. Route templates
//! (`/api/v1/events/{id}`), never raw paths, so the number of series stays bounded.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::error::Result;
use crate::state::AppState;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

#[derive(Default)]
struct Latency {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct Registry {
    requests: BTreeMap<(String, String, u16), u64>,
    latency: BTreeMap<(String, String), Latency>,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

/// The middleware: times each request and counts it under its route.
pub async fn track(req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let started = Instant::now();
    let resp = next.run(req).await;
    let seconds = started.elapsed().as_secs_f64();
    let status = resp.status().as_u16();
    if let Ok(mut guard) = REGISTRY.lock() {
        let r = guard.get_or_insert_with(Registry::default);
        *r.requests.entry((method.clone(), route.clone(), status)).or_default() += 1;
        let l = r.latency.entry((method, route)).or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                l.counts[i] += 1;
            }
        }
        l.count += 1;
        l.sum += seconds;
    }
    resp
}

/// A route as a label value: `{id}` written `:id` (some scrapers' parsers stop at a brace), then
/// escaped as the text format wants.
fn label(v: &str) -> String {
    v.replace('{', ":").replace('}', "").replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The metrics in Prometheus text format.
pub fn render() -> String {
    let mut out = String::from(
        "# HELP ticketing_http_requests_total HTTP requests by method, route and status.\n# TYPE ticketing_http_requests_total counter\n",
    );
    let Ok(guard) = REGISTRY.lock() else { return out };
    let Some(r) = guard.as_ref() else { return out };
    for ((method, route, status), n) in &r.requests {
        out.push_str(&format!(
            "ticketing_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}\n",
            label(route)
        ));
    }
    out.push_str(
        "# HELP ticketing_http_request_duration_seconds HTTP request latency by method and route.\n",
    );
    out.push_str("# TYPE ticketing_http_request_duration_seconds histogram\n");
    for ((method, route), l) in &r.latency {
        let route = label(route);
        for (i, bound) in BUCKETS.iter().enumerate() {
            out.push_str(&format!(
                "ticketing_http_request_duration_seconds_bucket{{method=\"{method}\",route=\"{route}\",le=\"{bound}\"}} {}\n",
                l.counts[i]
            ));
        }
        out.push_str(&format!(
            "ticketing_http_request_duration_seconds_bucket{{method=\"{method}\",route=\"{route}\",le=\"+Inf\"}} {}\n",
            l.count
        ));
        out.push_str(&format!(
            "ticketing_http_request_duration_seconds_sum{{method=\"{method}\",route=\"{route}\"}} {}\n",
            l.sum
        ));
        out.push_str(&format!(
            "ticketing_http_request_duration_seconds_count{{method=\"{method}\",route=\"{route}\"}} {}\n",
            l.count
        ));
    }
    out
}

/// `GET /metrics`: Prometheus text. Checkout's figures so far: unfinished orders by state and the age of the
/// oldest unfinished order (which must stay near zero plus the payment window).
pub async fn scrape(State(state): State<AppState>) -> Result<String> {
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
    // The push queue to the edge, by state (one row per published event).
    let sync: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM edge_sync WHERE state <> 'synced' GROUP BY state")
            .fetch_all(&state.db)
            .await?;
    out.push_str(
        "# HELP ticketing_edge_sync_events Events whose push to the edge is pending, failing or lost.\n",
    );
    out.push_str("# TYPE ticketing_edge_sync_events gauge\n");
    for s in ["pending", "failing", "lost"] {
        let n = sync.iter().find(|(k, _)| k == s).map_or(0, |(_, n)| *n);
        out.push_str(&format!("ticketing_edge_sync_events{{state=\"{s}\"}} {n}\n"));
    }
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
