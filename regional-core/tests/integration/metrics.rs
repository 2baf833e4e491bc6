//! `/metrics` parses as Prometheus text (read back by an independent parser) and moves: requests
//! are counted per route template and status with their latency, and the saga's gauges follow a
//! sale.

use crate::common;

use common::{paid_tickets, two_tenants, with_checkout, Api};
use prometheus_parse::{Scrape, Value};
use reqwest::StatusCode;
use shared_types::token::TokenSigner;
use sqlx::PgPool;

async fn scrape(api: &Api) -> Scrape {
    let text =
        api.http.get(format!("{}/metrics", api.metrics_base)).send().await.unwrap().text().await.unwrap();
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text format")
}

fn value(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| x.metric == metric && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(h) => h.last().map(|b| b.count).unwrap_or_default(),
            Value::Summary(_) => f64::NAN,
        })
}

#[sqlx::test]
async fn metrics_parse_and_move_with_requests_and_a_sale(db: PgPool) {
    let signer = TokenSigner::from_seed("core-test", [4; 32]).unwrap();
    let api = Api::start_with(with_checkout(&db, &signer)).await;
    let (_, [(org, key), _]) = two_tenants(&api).await;
    let before = scrape(&api).await;
    let listed = |s: &Scrape| {
        value(s, "ticketing_http_requests_total", &[("route", "/api/v1/events"), ("status", "200")])
    };

    for _ in 0..3 {
        let (s, _) = api.get(&key, "/api/v1/events").await;
        assert_eq!(s, StatusCode::OK);
    }
    let (s, _) = api.get(&key, "/api/v1/events/not-an-id").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = api.get(&key, "/no/such/route").await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let after = scrape(&api).await;
    assert_eq!(listed(&after).unwrap() - listed(&before).unwrap_or(0.0), 3.0);
    // Templates, never raw paths: the bad id counts under its route.
    assert_eq!(
        value(&after, "ticketing_http_requests_total", &[("route", "/api/v1/events/:id"), ("status", "404")]),
        Some(1.0)
    );
    assert_eq!(
        value(&after, "ticketing_http_requests_total", &[("route", "unmatched"), ("status", "404")]),
        Some(1.0)
    );
    assert!(after.samples.iter().all(|x| !x.labels.get("route").is_some_and(|r| r.contains("not-an-id"))));
    let timed = value(
        &after,
        "ticketing_http_request_duration_seconds",
        &[("route", "/api/v1/events"), ("method", "GET")],
    );
    assert!(timed.unwrap() >= 3.0, "the histogram counts the requests: {timed:?}");

    // A sale in progress shows in the saga's gauges.
    assert_eq!(value(&after, "ticketing_orders_unfinished", &[("state", "awaiting_payment")]), None);
    let (_, order, _) = paid_tickets(&api, &key, &org, &["A-1"]).await;
    sqlx::query("UPDATE orders SET state = 'awaiting_payment' WHERE id = $1")
        .bind(order)
        .execute(&db)
        .await
        .unwrap();
    let during = scrape(&api).await;
    assert_eq!(value(&during, "ticketing_orders_unfinished", &[("state", "awaiting_payment")]), Some(1.0));
    assert!(value(&during, "ticketing_oldest_unfinished_order_age_seconds", &[]).is_some());
    assert!(value(&during, "ticketing_outbox_lag_seconds", &[]).is_some());
    // The push queue to the edge, which the alert rules read (infra/prometheus/alerts.yml).
    for state in ["pending", "failing", "lost"] {
        assert!(value(&during, "ticketing_edge_sync_events", &[("state", state)]).is_some(), "{state}");
    }
}
