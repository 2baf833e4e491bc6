//! Request metrics per route for `/metrics`: counts by method, route template and status (errors
//! are the 4xx and 5xx statuses), and a latency histogram by method and route. Route templates
//! (`/api/v1/events/{id}`), never raw paths, so the number of series stays bounded.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;

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
