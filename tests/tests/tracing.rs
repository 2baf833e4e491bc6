//! Traces across the tiers: the core exports its spans over OTLP/HTTP to a receiver
//! (scripts/otlp-sink.py, decoding with the official `opentelemetry-proto` package), and the W3C
//! `traceparent` is carried both ways:
//!
//! - buyer → edge → core: the edge starts a trace (a buyer's own `traceparent` is not continued)
//!   and the core's server span continues it, with the edge's span as its parent;
//! - core → edge: each call the core makes is a client span, and the edge logs the trace and that
//!   span as the parent of its work ("core call"), so the two can be joined.

use std::time::{Duration, Instant};

use e2e::{core_command, drop_database, free_port, start_core_with, start_workerd_edge, Service, Setup};
use serde_json::Value;

fn start_otlp_sink(port: u16, out: &std::path::Path, dir: &std::path::Path) -> Service {
    let python = std::env::var("E2E_PYTHON").expect("E2E_PYTHON: run through scripts/test.sh");
    let mut cmd = std::process::Command::new(python);
    cmd.arg(e2e::repo_root().join("scripts/otlp-sink.py"))
        .args(["--port", &port.to_string(), "--out"])
        .arg(out);
    e2e::spawn_service("otlp-sink", cmd, port, dir)
}

fn spans(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Waits until some exported span satisfies `want`.
async fn span_where(path: &std::path::Path, what: &str, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = spans(path).into_iter().find(|s| want(s)) {
            return s;
        }
        assert!(Instant::now() < deadline, "no exported span {what}; got:\n{:#?}", spans(path));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn traces_are_exported_over_otlp_and_traceparent_goes_edge_to_core_and_back() {
    let Setup { dir, db_name, db_url, keys, core_port, edge_port, core_url, edge_url } =
        Setup::new("tracing");
    let sink_port = free_port();
    let exported = dir.join("spans.jsonl");
    let _sink = start_otlp_sink(sink_port, &exported, &dir);
    let env = vec![
        ("CORE_SIGNING_KEY", keys.core_signing_key()),
        ("EDGE_VERIFYING_KEYS", keys.edge.public_config()),
        ("EDGE_URL", edge_url.clone()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{sink_port}")),
        // Export every 200 ms rather than every 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY", "200".to_owned()),
    ];
    let core = start_core_with(core_port, &db_url, true, &dir, &env);
    core.wait_ready("/readyz", Duration::from_secs(60)).await;
    let edge = start_workerd_edge(edge_port, &core_url, &dir.join("do-state"), &dir, &keys);
    edge.wait_ready("/healthz", Duration::from_secs(120)).await;

    // Buyer → edge → core: the edge starts the trace (a buyer's own traceparent, well-formed or
    // not, is not continued: the edge is the trust boundary); the core's span continues it, with
    // the edge's span as its parent, and its request id is that trace.
    let buyer_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut seen = Vec::new();
    for buyer in [
        format!("00-{buyer_trace}-00f067aa0ba902b7-00"),
        format!("00-{buyer_trace}-00f067aa0ba902b7-03"),
        format!("01-{buyer_trace}-00f067aa0ba902b7-01-more"),
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01".to_owned(),
        "junk".to_owned(),
    ] {
        let resp = e2e::http()
            .get(format!("{edge_url}/api/v1/keys"))
            .header("traceparent", &buyer)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert!(
            request_id.len() == 32 && request_id != buyer_trace,
            "{buyer}: a trace of the edge's: {request_id}"
        );
        let server =
            span_where(&exported, "of the edge's trace", |s| s["trace_id"] == request_id.as_str()).await;
        assert_eq!(server["service"], "ticketing-core");
        assert_eq!(server["kind"], 2, "a server span (SPAN_KIND_SERVER)");
        assert_eq!(server["name"], "GET /api/v1/keys", "named by its route");
        let parent = server["parent_span_id"].as_str().unwrap();
        assert!(
            parent.len() == 16 && parent != "00f067aa0ba902b7" && parent != "0000000000000000",
            "the edge's span: {parent}"
        );
        seen.push(request_id);
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 5, "a trace per request");

    // Core → edge: the demo event is published; the push is a client span, and the edge's log
    // names the same trace and that span as the parent of its work.
    let (ok, out) = core_command(&db_url, &["seed-demo"]);
    assert!(ok, "{out}");
    let client =
        span_where(&exported, "of a call to the edge", |s| s["kind"] == 3 && s["name"] == "edge PUT").await;
    let (client_trace, client_span) =
        (client["trace_id"].as_str().unwrap(), client["span_id"].as_str().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    let logged = loop {
        let found = edge.log_text().lines().find_map(|l| {
            let v: Value = serde_json::from_str(l.trim_start_matches(|c| c != '{')).ok()?;
            (v["message"] == "core call" && v["trace_id"] == client_trace).then_some(v)
        });
        if let Some(v) = found {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "the edge never logged trace {client_trace}:\n{}",
            edge.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(logged["parent_id"], client_span, "the core's client span is the parent of the edge's work");
    assert_eq!(logged["method"], "PUT");
    assert!(logged["status"].as_u64().is_some_and(|s| s < 300), "{logged}");

    // Only the core's own spans: requests by route, calls to the edge (never the exporter's own
    // HTTP, never the probes).
    for span in spans(&exported) {
        let name = span["name"].as_str().unwrap_or_default();
        assert!(
            name.starts_with("GET /")
                || name.starts_with("PUT /")
                || name.starts_with("POST /")
                || name.starts_with("edge "),
            "{span}"
        );
        assert!(!name.ends_with("z"), "probes are not traced: {span}");
        assert_ne!(span["trace_id"], buyer_trace, "{span}");
    }

    drop(edge);
    drop(core);
    drop_database(&db_name);
}
