//! Checkout end to end through the local stack: buyers admitted (untimed), then each one holds two
//! seats at the edge, checks out through the edge, pays with the test provider and waits for the
//! order to be paid (webhook → confirmation at the edge → tickets), in one long poll. Leads with the CPU each completed
//! order cost the core, PostgreSQL, workerd and the load generator (their `/proc` counters, `cpu.rs`),
//! then completed checkouts per second, p50/p99 per step, PostgreSQL transactions per order, and the
//! core's resident memory and database connections (sampled from its `/metrics`).
//!
//! The event is made through the admin API with a platform admin's key (`PLATFORM_ADMIN_KEY`), so
//! the run needs nothing else prepared: a fresh organization per run.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use serde_json::{json, Value};

use crate::edge::nonce;
use crate::summary::{drive, summarize, Sample, Summary};

#[derive(Debug, Args)]
pub struct CheckoutArgs {
    #[arg(long, default_value = "http://127.0.0.1:8787")]
    edge: String,
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    core: String,
    /// The core's operators' listener (`CORE_METRICS_LISTEN`), for its memory and connections.
    #[arg(long, default_value = "http://127.0.0.1:9464")]
    core_metrics: String,
    /// Buyers, each buying two seats (at most 100,000).
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    buyers: u64,
    /// Concurrent buyers (at most 1024).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    concurrency: u64,
    /// Hard stop of the timed phase, in seconds (at most 1800).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=1800))]
    max_seconds: u64,
    /// A platform admin's API key (`regional-core create-admin`).
    #[arg(long, env = "PLATFORM_ADMIN_KEY", hide_env_values = true)]
    admin_key: String,
    /// The core's database, for its transaction counter (`pg_stat_database`).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
}

#[derive(Debug, Serialize)]
pub struct CheckoutReport {
    /// CPU per completed order by process, over the timed run (background work included), and the
    /// cores busy on average meanwhile.
    pub cpu_per_order: crate::cpu::Spent,
    pub cores_busy: f64,
    /// CPU per second by process while idle before the run (the core's loops, PostgreSQL's workers,
    /// workerd's timers): the part of `cpu_per_order` that does not depend on the orders.
    pub cpu_idle_per_second: crate::cpu::Spent,
    pub event: String,
    pub buyers: u64,
    pub concurrency: u64,
    pub completed: u64,
    pub seconds: f64,
    pub checkouts_per_second: f64,
    /// From the first request to the order seen paid.
    pub end_to_end: Summary,
    pub hold: Summary,
    pub checkout: Summary,
    pub approve: Summary,
    /// From the approval to the order seen paid (webhook, confirmation at the edge, tickets), as the
    /// buyer sees it with a long poll (`?wait=20&while=…`; an older core that answers at once is
    /// polled every 200 ms; `server_steps_ms` has the exact figures).
    pub confirm: Summary,
    /// Committed PostgreSQL transactions during the run per completed order, and the background
    /// rate (reconciler, test provider, publisher) measured while idle, subtracted.
    pub pg_transactions_per_order: f64,
    /// Requests the edge (the Worker) took per completed order besides the buyer's hold: the
    /// buyer's checkout and order polls, and the core's signed calls (`ticketing_edge_calls`, all of
    /// them, background ones included); then each part, per order.
    /// `None` when the core does not count its calls (older than `ticketing_edge_calls_total`).
    pub edge_requests_per_order: Option<f64>,
    pub edge_requests_by_kind: std::collections::BTreeMap<String, f64>,
    pub pg_transactions_per_order_raw: f64,
    pub pg_background_transactions_per_second: f64,
    pub core_rss_max_bytes: u64,
    pub db_connections_in_use_max: u64,
    /// The saga's own steps, from its audit timestamps (p50/p99 ms): `start_payment` (created →
    /// awaiting_payment: hold extended at the edge, payment created), `webhook_to_paid` (confirming →
    /// paid: hold confirmed at the edge, tickets issued).
    pub server_steps_ms: Value,
}

/// Percentiles of the saga's steps for the event's orders, from `state_audit`.
async fn server_steps(db: &sqlx::PgPool, event: &str) -> Result<Value, String> {
    let row: (Option<f64>, Option<f64>, Option<f64>, Option<f64>) = sqlx::query_as(
        "WITH t AS (
             SELECT a.order_id, a.to_state, a.at FROM state_audit a JOIN orders o ON o.id = a.order_id
             WHERE o.event_id = $1::uuid AND a.subject_kind = 'order'),
         d AS (
             SELECT extract(epoch FROM (SELECT at FROM t t2 WHERE t2.order_id = c.order_id AND t2.to_state = 'awaiting_payment') - c.at) * 1000 AS start_ms,
                    extract(epoch FROM (SELECT at FROM t t2 WHERE t2.order_id = c.order_id AND t2.to_state = 'paid')
                                     - (SELECT at FROM t t2 WHERE t2.order_id = c.order_id AND t2.to_state = 'confirming')) * 1000 AS paid_ms
             FROM t c WHERE c.to_state = 'created')
         SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY start_ms), percentile_cont(0.99) WITHIN GROUP (ORDER BY start_ms),
                percentile_cont(0.5) WITHIN GROUP (ORDER BY paid_ms), percentile_cont(0.99) WITHIN GROUP (ORDER BY paid_ms)
         FROM d",
    )
    .bind(event)
    .fetch_one(db)
    .await
    .map_err(|e| e.to_string())?;
    Ok(json!({
        "start_payment": { "p50": row.0, "p99": row.1 },
        "webhook_to_paid": { "p50": row.2, "p99": row.3 },
    }))
}

struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Api {
    async fn send(&self, method: reqwest::Method, path: &str, body: Value) -> Result<Value, String> {
        let resp = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let answer: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            Ok(answer)
        } else {
            Err(format!("{path}: {status} {answer}"))
        }
    }
}

/// One organization, a venue with `seats` seats (rows of 50), an event on sale with a passthrough
/// line: the event id.
async fn set_up(http: &reqwest::Client, core: &str, admin_key: &str, seats: u64) -> Result<String, String> {
    let line = json!({ "mode": "passthrough", "bot": { "check": { "kind": "off" } }, "max_active": 10_000_000,
                       "rate_limits": { "joins_per_visitor_per_minute": 10 } });
    let holds = json!({ "hold_seconds": 600, "extension_seconds": 600, "max_tickets_per_visitor": 8 });
    set_up_with(http, core, admin_key, seats, line, holds).await
}

/// [`set_up`] with the event's waiting-room settings and hold settings.
pub async fn set_up_with(
    http: &reqwest::Client,
    core: &str,
    admin_key: &str,
    seats: u64,
    waiting_room: Value,
    holds: Value,
) -> Result<String, String> {
    let tag = nonce().to_lowercase().replace(['-', '_'], "x");
    let root = Api { http: http.clone(), base: core.to_owned(), key: admin_key.to_owned() };
    let org = root
        .send(
            reqwest::Method::POST,
            "/api/v1/organizations",
            json!({ "name": format!("Bench {tag}"), "slug": format!("bench-{}", &tag[..12]) }),
        )
        .await?;
    let user = root
        .send(
            reqwest::Method::POST,
            "/api/v1/users",
            json!({ "email": format!("bench-{tag}@bench.test"), "role": "organizer_admin", "organization_id": org["id"] }),
        )
        .await?;
    let key = root
        .send(
            reqwest::Method::POST,
            &format!("/api/v1/users/{}/api-keys", user["id"].as_str().unwrap_or("")),
            json!({}),
        )
        .await?;
    let org_api =
        Api { http: http.clone(), base: core.to_owned(), key: key["key"].as_str().unwrap_or("").to_owned() };
    let rows: Vec<Value> = (0..seats.div_ceil(50))
        .map(|r| {
            let seats: Vec<Value> = (0..50)
                .map(|n| json!({ "id": format!("R{r}-{n}"), "label": n.to_string(), "x": n, "y": r, "zone": "std" }))
                .collect();
            json!({ "label": r.to_string(), "seats": seats })
        })
        .collect();
    let venue = org_api
        .send(
            reqwest::Method::POST,
            "/api/v1/venues",
            json!({ "name": "Bench arena", "time_zone": "UTC", "zones": [{ "id": "std", "name": "Standard" }],
                    "sections": [{ "id": "S", "name": "Stalls", "rows": rows }] }),
        )
        .await?;
    let event = org_api
        .send(
            reqwest::Method::POST,
            "/api/v1/events",
            json!({ "venue_id": venue["id"], "title": "Checkout bench", "starts_at": "2030-01-01T20:00:00Z", "ends_at": "2030-01-01T23:00:00Z" }),
        )
        .await?;
    let id = event["id"].as_str().unwrap_or("").to_owned();
    org_api
        .send(
            reqwest::Method::POST,
            &format!("/api/v1/events/{id}/tiers"),
            json!({ "name": "Seats", "kind": "seated", "currency": "EUR", "price_minor": 4500, "quantity": seats }),
        )
        .await?;
    org_api
        .send(
            reqwest::Method::PUT,
            &format!("/api/v1/events/{id}/sale-settings"),
            json!({ "pricing": { "service_fee": { "per_ticket_minor": 150, "percent_bps": 500 }, "tax": { "rate_bps": 1900 } },
                    "holds": holds }),
        )
        .await?;
    org_api.send(reqwest::Method::PUT, &format!("/api/v1/events/{id}/waiting-room"), waiting_room).await?;
    for state in ["published", "on_sale"] {
        org_api
            .send(reqwest::Method::POST, &format!("/api/v1/events/{id}/state"), json!({ "state": state }))
            .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let sync =
            org_api.send(reqwest::Method::GET, &format!("/api/v1/events/{id}/sync"), Value::Null).await?;
        if sync["state"] == "synced" {
            return Ok(id);
        }
        if Instant::now() > deadline {
            return Err(format!("the event never reached the edge: {sync}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn xact_commit(db: &sqlx::PgPool) -> Result<i64, String> {
    sqlx::query_scalar("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
        .fetch_one(db)
        .await
        .map_err(|e| e.to_string())
}

#[derive(Default)]
struct Steps {
    hold: Vec<Sample>,
    checkout: Vec<Sample>,
    approve: Vec<Sample>,
    confirm: Vec<Sample>,
    end_to_end: Vec<Sample>,
    /// Order polls sent to the edge.
    polls: u64,
}

async fn timed(samples: &Mutex<Vec<Sample>>, req: reqwest::RequestBuilder) -> Option<(u16, Value)> {
    let t = Instant::now();
    let answer = req.send().await;
    let out = match answer {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            Some((status, body))
        }
        Err(_) => None,
    };
    samples.lock().ok()?.push((out.as_ref().map(|o| o.0), t.elapsed()));
    out
}

/// One buyer: hold, check out, approve, wait until paid. `Some(200)` when paid.
async fn buy(
    client: reqwest::Client,
    edge: String,
    core: String,
    event: String,
    token: String,
    seats: Vec<String>,
    steps: Arc<Mutex<Steps>>,
) -> Option<u16> {
    let start = Instant::now();
    let hold_samples = Mutex::new(Vec::new());
    let checkout_samples = Mutex::new(Vec::new());
    let approve_samples = Mutex::new(Vec::new());
    let polls = std::sync::atomic::AtomicU64::new(0);
    let result = async {
        let (status, held) = timed(
            &hold_samples,
            client
                .post(format!("{edge}/api/v1/events/{event}/holds"))
                .bearer_auth(&token)
                .json(&json!({ "kind": "seats", "seats": seats })),
        )
        .await?;
        if status != 201 {
            return Some((status, None));
        }
        let hold_token = held["hold_token"].as_str()?.to_owned();
        let (status, answer) = timed(
            &checkout_samples,
            client
                .post(format!("{edge}/api/v1/checkout"))
                .header("idempotency-key", nonce())
                .json(&json!({ "hold_token": hold_token, "email": format!("{}@bench.test", nonce().to_lowercase()) })),
        )
        .await?;
        if status != 201 {
            return Some((status, None));
        }
        let page = answer["order"]["payment"]["redirect_url"].as_str()?;
        let payment = page.rsplit('/').next()?.to_owned();
        let (status, _) = timed(
            &approve_samples,
            client.post(format!("{core}/testpay/pay/{payment}/approve")).header("accept", "application/json"),
        )
        .await?;
        if status != 200 {
            return Some((status, None));
        }
        let approved = Instant::now();
        let id = answer["order"]["id"].as_str()?;
        let order_token = answer["order_token"].as_str()?;
        let deadline = approved + Duration::from_secs(120);
        loop {
            polls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // A long poll: the core answers once the order is paid (or has failed), or after 20 s.
            let asked = Instant::now();
            let order: Value = client
                .get(format!("{edge}/api/v1/orders/{id}?wait=20&while=awaiting_payment,confirming"))
                .bearer_auth(order_token)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            if order["state"] == "paid" {
                return Some((200, Some(approved.elapsed())));
            }
            if Instant::now() > deadline
                || !matches!(order["state"].as_str(), Some("awaiting_payment" | "confirming"))
            {
                return Some((599, None));
            }
            // A core without long polls (BENCH_AT an older commit) answers at once: polled every
            // 200 ms, as before.
            tokio::time::sleep(Duration::from_millis(200).saturating_sub(asked.elapsed())).await;
        }
    }
    .await;
    let mut s = steps.lock().ok()?;
    s.hold.extend(hold_samples.into_inner().ok()?);
    s.checkout.extend(checkout_samples.into_inner().ok()?);
    s.approve.extend(approve_samples.into_inner().ok()?);
    s.polls += polls.into_inner();
    let (status, confirm) = result.map_or((None, None), |(st, c)| (Some(st), c));
    if let Some(c) = confirm {
        s.confirm.push((Some(200), c));
    }
    s.end_to_end.push((status, start.elapsed()));
    status
}

pub async fn run(args: CheckoutArgs) -> Result<CheckoutReport, String> {
    let client = crate::edge::http_client(60, 1024)?;
    let db = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&args.database_url)
        .await
        .map_err(|e| format!("database: {e}"))?;
    let seats = args.buyers * 2;
    let event = set_up(&client, &args.core, &args.admin_key, seats).await?;
    let tokens =
        crate::queue::admit(&client, &args.edge, &event, args.buyers as usize, args.concurrency).await?;

    // The background rate of transactions (reconciler, provider deliveries) while nothing happens.
    let idle_from = xact_commit(&db).await?;
    let idle_cpu = crate::cpu::Snapshot::take(&crate::cpu::STACK)?;
    let idle_started = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_seconds = idle_started.elapsed().as_secs_f64();
    let idle_cpu = crate::cpu::Spent::between(&idle_cpu, &crate::cpu::Snapshot::take(&crate::cpu::STACK)?);
    let background = (xact_commit(&db).await? - idle_from) as f64 / idle_seconds;

    // The core's memory and connections, sampled while the run lasts.
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (client, core, running) = (client.clone(), args.core_metrics.clone(), running.clone());
        tokio::spawn(async move {
            let (mut rss, mut conns) = (0f64, 0f64);
            while running.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(scrape) = crate::sample::scrape(&client, &format!("{core}/metrics")).await {
                    let metric = |name| crate::sample::total(&scrape, name).unwrap_or(0.0);
                    rss = rss.max(metric("process_resident_memory_bytes"));
                    conns = conns.max(metric("ticketing_db_connections_in_use"));
                }
                tokio::time::sleep(Duration::from_millis(1000)).await;
            }
            (rss as u64, conns as u64)
        })
    };

    let steps = Arc::new(Mutex::new(Steps::default()));
    let metrics_url = format!("{}/metrics", args.core_metrics);
    // `None` when the core does not count its calls (an older core, `BENCH_AT`) or did not answer:
    // the figure is then unknown, never a zero.
    let edge_calls = |scrape: Option<prometheus_parse::Scrape>| {
        scrape
            .map(|s| crate::sample::by_label(&s, "ticketing_edge_calls_total", "call"))
            .filter(|calls| !calls.is_empty())
    };
    let calls_before = edge_calls(crate::sample::scrape(&client, &metrics_url).await);
    let before = xact_commit(&db).await?;
    let cpu_before = crate::cpu::Snapshot::take(&crate::cpu::STACK)?;
    let started = Instant::now();
    let work: Arc<Vec<(String, Vec<String>)>> = Arc::new(
        tokens
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                let (row, n) = (i * 2 / 50, i * 2 % 50);
                (t, vec![format!("R{row}-{n}"), format!("R{row}-{}", n + 1)])
            })
            .collect(),
    );
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let total = work.len();
    {
        let (client, steps, work, edge, core, event) = (
            client.clone(),
            steps.clone(),
            work.clone(),
            args.edge.clone(),
            args.core.clone(),
            event.clone(),
        );
        drive(args.concurrency, total, deadline, move |i| {
            let (client, steps, edge, core, event) =
                (client.clone(), steps.clone(), edge.clone(), core.clone(), event.clone());
            let (token, seats) = work[i].clone();
            async move { buy(client, edge, core, event, token, seats, steps).await }
        })
        .await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = crate::cpu::Spent::between(&cpu_before, &crate::cpu::Snapshot::take(&crate::cpu::STACK)?);
    let after = xact_commit(&db).await?;
    let calls_after = edge_calls(crate::sample::scrape(&client, &metrics_url).await);
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    let (rss, conns) = sampler.await.unwrap_or((0, 0));
    let steps = std::mem::take(&mut *steps.lock().map_err(|_| "poisoned")?);
    let completed = steps.end_to_end.iter().filter(|(s, _)| *s == Some(200)).count() as u64;
    let raw = (after - before) as f64 / completed.max(1) as f64;
    let per_order = |n: f64| (n / completed.max(1) as f64 * 100.0).round() / 100.0;
    let mut edge_requests_by_kind = std::collections::BTreeMap::new();
    edge_requests_by_kind.insert("buyer_checkout".to_owned(), per_order(steps.checkout.len() as f64));
    edge_requests_by_kind.insert("buyer_polls".to_owned(), per_order(steps.polls as f64));
    let edge_requests_per_order = match (&calls_before, &calls_after) {
        (Some(before), Some(after)) => {
            for (call, n) in after {
                let n = per_order(n - before.get(call).unwrap_or(&0.0));
                if n > 0.0 {
                    edge_requests_by_kind.insert(format!("core_{call}"), n);
                }
            }
            Some((edge_requests_by_kind.values().sum::<f64>() * 100.0).round() / 100.0)
        }
        _ => None,
    };
    let server_steps_ms = server_steps(&db, &event).await?;
    Ok(CheckoutReport {
        cpu_per_order: cpu.per(completed),
        cores_busy: cpu.cores_busy(seconds),
        cpu_idle_per_second: idle_cpu.per_second(idle_seconds),
        event,
        buyers: args.buyers,
        concurrency: args.concurrency,
        completed,
        seconds,
        checkouts_per_second: completed as f64 / seconds,
        end_to_end: summarize(&steps.end_to_end, seconds),
        hold: summarize(&steps.hold, seconds),
        checkout: summarize(&steps.checkout, seconds),
        approve: summarize(&steps.approve, seconds),
        confirm: summarize(&steps.confirm, seconds),
        pg_transactions_per_order: ((after - before) as f64 - background * seconds) / completed.max(1) as f64,
        pg_transactions_per_order_raw: raw,
        edge_requests_per_order,
        edge_requests_by_kind,
        pg_background_transactions_per_second: background,
        core_rss_max_bytes: rss,
        db_connections_in_use_max: conns,
        server_steps_ms,
    })
}
