//! The baseline the flash sale is compared with: the design most ticketing write-ups propose.
//! A seat is held by a Redis lock (`SET lock:<run>:<seat> <buyer> NX PX <hold ms>`); the sale is
//! recorded by an optimistic-version update in PostgreSQL (`UPDATE … SET state = 'sold',
//! version = version + 1 WHERE seat = $1 AND version = <the version read when holding>`); money is
//! taken before that update, and given back when it finds the seat gone.
//!
//! - `server`: the design as an HTTP service in its own process (`loadtest baseline-server`,
//!   started by the run), like the core: the buyers pay an HTTP hop to reach it, as they do to
//!   reach the edge.
//! - this file: the buyers of the same plans (arrival, seat choice, think times, fates), with the
//!   same bound on requests in flight, then the sale's audit questions asked of its tables and of
//!   Redis. No line and no edge: that is the design being compared.
//! - `locks`: the seat locks in Redis, through the `redis` crate.

pub mod locks;
pub mod server;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::io::AsyncBufReadExt;
use tokio::sync::Semaphore;

use crate::sale::plan::{Rec, Step};
use crate::summary::Summary;
use locks::Locks;

/// The baseline's tables (created once; each run has its own `run` id).
pub(crate) async fn prepare(db: &PgPool, run: &str, seats: &[String]) -> Result<(), String> {
    for ddl in [
        "CREATE TABLE IF NOT EXISTS baseline_seats (run TEXT NOT NULL, seat_id TEXT NOT NULL, state TEXT NOT NULL,
             version INT NOT NULL DEFAULT 1, order_id UUID, PRIMARY KEY (run, seat_id))",
        "CREATE TABLE IF NOT EXISTS baseline_orders (id UUID PRIMARY KEY, run TEXT NOT NULL, state TEXT NOT NULL,
             seats INT NOT NULL, paid_minor BIGINT NOT NULL DEFAULT 0, refunded_minor BIGINT NOT NULL DEFAULT 0)",
        // No unique index on purpose: a double sale must be visible to the audit, not prevented here.
        "CREATE TABLE IF NOT EXISTS baseline_tickets (order_id UUID NOT NULL, run TEXT NOT NULL, seat_id TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS baseline_tickets_order ON baseline_tickets (order_id)",
    ] {
        sqlx::query(ddl).execute(db).await.map_err(|e| format!("baseline tables: {e}"))?;
    }
    sqlx::query("INSERT INTO baseline_seats (run, seat_id, state) SELECT $1, s, 'available' FROM unnest($2::text[]) s")
        .bind(run)
        .bind(seats)
        .execute(db)
        .await
        .map_err(|e| format!("baseline seats: {e}"))?;
    Ok(())
}

/// Starts `loadtest baseline-server` for the run and returns it with its base URL. The process is
/// killed when the handle is dropped.
async fn start_server(
    args: &crate::sale::plan::SaleArgs,
    run: &str,
) -> Result<(tokio::process::Child, String), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = tokio::process::Command::new(exe)
        .args(["baseline-server", "--run", run, "--redis", &args.redis])
        .args(["--hold-ms", &(u64::from(args.hold_seconds) * 1000).to_string()])
        .args(["--payment-ms", &(u64::from(args.payment_seconds) * 1000).to_string()])
        .env("DATABASE_URL", &args.database_url)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("baseline server: {e}"))?;
    let stdout = child.stdout.take().ok_or("baseline server: no stdout")?;
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(30), tokio::io::BufReader::new(stdout).read_line(&mut line))
        .await
        .map_err(|_| "baseline server: not listening after 30 s")?
        .map_err(|e| e.to_string())?;
    let addr = line.trim();
    if addr.is_empty() {
        return Err("baseline server exited before listening (see its stderr)".into());
    }
    Ok((child, format!("http://{addr}")))
}

struct Ctx {
    http: reqwest::Client,
    url: String,
    seat_ids: Vec<String>,
    hot_seats: usize,
    slots: Semaphore,
    started: Instant,
    records: Mutex<Vec<Rec>>,
    /// Tickets sold: (ms since the start, tickets), for the chart.
    sales: Mutex<Vec<(u32, u64)>>,
    conflicts: AtomicU64,
}

impl Ctx {
    /// One request to the baseline service under the bound of requests in flight, timed per step.
    async fn call(&self, step: Step, path: &str, body: Option<Value>) -> Result<(u16, Value), ()> {
        let _slot = self.slots.acquire().await;
        let t = Instant::now();
        let url = format!("{}{path}", self.url);
        let request = match body {
            Some(b) => self.http.post(url).json(&b),
            None => self.http.get(url),
        };
        let answer = match request.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                r.json::<Value>().await.map(|v| (status, v)).map_err(|_| ())
            }
            Err(_) => Err(()),
        };
        let started = t.duration_since(self.started).as_millis() as u32;
        if let Ok(mut r) = self.records.lock() {
            r.push((step, answer.as_ref().ok().map(|a| a.0), started, t.elapsed()));
        }
        answer
    }
}

/// How a baseline buyer's visit ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    Paid,
    /// Paid, then the optimistic update found a seat gone: the money went back.
    PaidThenRefunded,
    /// A lock lapsed before checkout and another buyer took the seat.
    LostHold,
    Declined,
    Abandoned,
    NoSeats,
    GaveUp,
    /// The run's time ran out while the buyer was still at it.
    TimedOut,
    Failed,
}

async fn visit(ctx: Arc<Ctx>, plan: crate::sale::plan::Plan, buyer: usize) -> Outcome {
    tokio::time::sleep(plan.arrive_after).await;
    tokio::time::sleep(plan.think[0]).await;
    let mut rng = plan.rng;
    let me = format!("b{buyer}");
    let mut held: Option<Value> = None;
    for attempt in 1..=6 {
        let Ok((200, free)) = ctx.call(Step::Availability, "/seats", None).await else {
            return Outcome::Failed;
        };
        let free: std::collections::HashSet<&str> =
            free.as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        let range = if plan.hot && attempt <= 3 { 0..ctx.hot_seats } else { 0..ctx.seat_ids.len() };
        let mut choices: Vec<usize> = range.filter(|&i| free.contains(ctx.seat_ids[i].as_str())).collect();
        if choices.is_empty() {
            if plan.hot && attempt <= 3 {
                continue;
            }
            return Outcome::NoSeats;
        }
        let start = choices[(crate::sale::plan::next(&mut rng) % choices.len() as u64) as usize];
        choices.retain(|&i| i >= start);
        let seats: Vec<&str> = choices.iter().take(plan.tickets).map(|&i| ctx.seat_ids[i].as_str()).collect();
        match ctx.call(Step::Hold, "/holds", Some(json!({ "buyer": me, "seats": seats }))).await {
            Ok((201, answer)) => {
                held = Some(answer["seats"].clone());
                break;
            }
            Ok((409, _)) => {
                ctx.conflicts.fetch_add(1, Ordering::Relaxed);
            }
            _ => return Outcome::Failed,
        }
    }
    let Some(seats) = held else { return Outcome::GaveUp };
    tokio::time::sleep(plan.think[1]).await;
    let body = json!({ "buyer": me, "seats": &seats });
    let order = match ctx.call(Step::Checkout, "/orders", Some(body.clone())).await {
        Ok((201, answer)) => answer["order"].as_str().unwrap_or_default().to_owned(),
        Ok((409, _)) => return Outcome::LostHold,
        _ => return Outcome::Failed,
    };
    let (path, outcome) = match plan.fate {
        crate::sale::plan::Fate::Abandon => return Outcome::Abandoned,
        crate::sale::plan::Fate::Decline => (format!("/orders/{order}/decline"), Outcome::Declined),
        crate::sale::plan::Fate::Pay => (format!("/orders/{order}/pay"), Outcome::Paid),
    };
    match ctx.call(Step::Pay, &path, Some(body)).await {
        Ok((200, answer)) if answer["state"] == "refunded" => Outcome::PaidThenRefunded,
        Ok((200, answer)) if answer["state"] == "paid" => {
            let at = ctx.started.elapsed().as_millis() as u32;
            if let Ok(mut sales) = ctx.sales.lock() {
                sales.push((at, seats.as_array().map_or(0, Vec::len) as u64));
            }
            Outcome::Paid
        }
        Ok((200, _)) => outcome,
        _ => Outcome::Failed,
    }
}

fn uuid_v4() -> String {
    let mut b = [0u8; 16];
    let _ = getrandom::getrandom(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

#[derive(Debug, Serialize)]
pub struct BaselineReport {
    pub run: String,
    pub seconds: f64,
    pub outcomes: BTreeMap<String, u64>,
    pub tickets_sold: i64,
    pub hold_conflicts: u64,
    /// Holds placed per second over the run.
    pub holds_per_second: f64,
    pub steps: BTreeMap<String, Summary>,
    pub audit: crate::audit::Audit,
    /// Requests per second, latency and tickets sold over its run (SVG).
    pub chart: String,
}

/// Plays `plans` against the baseline service and audits it.
pub async fn run(
    args: &crate::sale::plan::SaleArgs,
    plans: Vec<crate::sale::plan::Plan>,
    db: &PgPool,
    event: &str,
) -> Result<BaselineReport, String> {
    let run = format!("r{}", &uuid_v4()[..8]);
    let seat_ids = crate::sale::plan::seat_ids(args.seats);
    prepare(db, &run, &seat_ids).await?;
    let redis = Locks::new(&args.redis)?;
    redis.ping().await?;
    let (server, url) = start_server(args, &run).await?;
    let http = crate::edge::http_client(30, args.concurrency as usize)?;
    let ctx = Arc::new(Ctx {
        http,
        url,
        hot_seats: args.hot_seats.min(args.seats) as usize,
        seat_ids,
        slots: Semaphore::new(args.concurrency as usize),
        started: Instant::now(),
        records: Mutex::new(Vec::new()),
        sales: Mutex::new(Vec::new()),
        conflicts: AtomicU64::new(0),
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.max_seconds);
    let tasks: Vec<_> = plans
        .into_iter()
        .enumerate()
        .filter(|(_, p)| !p.bot)
        .map(|(i, plan)| {
            let visit = visit(ctx.clone(), plan, i);
            tokio::spawn(async move {
                tokio::time::timeout_at(deadline, visit).await.unwrap_or(Outcome::TimedOut)
            })
        })
        .collect();
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    for t in tasks {
        let o = t.await.unwrap_or(Outcome::Failed);
        let key =
            serde_json::to_value(o).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        *outcomes.entry(key).or_default() += 1;
    }
    let seconds = ctx.started.elapsed().as_secs_f64();
    drop(server);
    // Abandoned payments' locks lapse on their own (the payment window after checkout).
    let settle = Instant::now();
    let lapse = Duration::from_secs(u64::from(args.hold_seconds.max(args.payment_seconds)) + 5);
    while redis.count(&format!("lock:{run}:*")).await? > 0 && settle.elapsed() < lapse {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let audit = audit(db, &redis, &run, settle.elapsed().as_secs_f64()).await?;
    let records = std::mem::take(&mut *ctx.records.lock().map_err(|_| "poisoned")?);
    let sales = std::mem::take(&mut *ctx.sales.lock().map_err(|_| "poisoned")?);
    let steps = crate::sale::plan::step_summaries(&records, seconds);
    let holds = records.iter().filter(|r| r.0 == Step::Hold && r.1 == Some(201)).count();
    let tickets_sold = audit.figures["tickets"].as_i64().unwrap_or(0);
    let chart = args.out.join(format!("sale-{event}-baseline.svg"));
    let title = "The same buyers against the baseline (Redis lock + optimistic PostgreSQL)";
    std::fs::write(&chart, crate::sale::plan::chart(&records, &sales, seconds, title, &[]))
        .map_err(|e| e.to_string())?;
    Ok(BaselineReport {
        run,
        seconds,
        outcomes,
        tickets_sold,
        hold_conflicts: ctx.conflicts.load(Ordering::Relaxed),
        holds_per_second: holds as f64 / seconds.max(1e-9),
        steps,
        audit,
        chart: chart.display().to_string(),
    })
}

/// The sale's audit questions, asked of the baseline's tables and Redis.
async fn audit(db: &PgPool, redis: &Locks, run: &str, settled: f64) -> Result<crate::audit::Audit, String> {
    let q = |sql: &'static str| {
        let (db, run) = (db.clone(), run.to_owned());
        async move { sqlx::query_scalar::<_, i64>(sql).bind(run).fetch_one(&db).await.map_err(|e| e.to_string()) }
    };
    let twice = q("SELECT count(*) FROM (SELECT seat_id FROM baseline_tickets WHERE run = $1 GROUP BY seat_id HAVING count(*) > 1) d").await?;
    let tickets = q("SELECT count(*) FROM baseline_tickets WHERE run = $1").await?;
    let seats = q("SELECT count(*) FROM baseline_seats WHERE run = $1").await?;
    let short = q("SELECT count(*) FROM baseline_orders o WHERE run = $1 AND state = 'paid'
                   AND (SELECT count(*) FROM baseline_tickets t WHERE t.order_id = o.id) <> o.seats")
    .await?;
    let kept = q("SELECT count(*) FROM baseline_orders WHERE run = $1 AND paid_minor > 0 AND state NOT IN ('paid', 'refunded')").await?;
    let refunded = q("SELECT count(*) FROM baseline_orders WHERE run = $1 AND state = 'refunded'").await?;
    let sold_seats = q("SELECT count(*) FROM baseline_seats WHERE run = $1 AND state = 'sold'").await?;
    let locks = redis.count(&format!("lock:{run}:*")).await?;
    let check = |name, ok, detail: String| crate::audit::Check { name, ok, detail };
    let checks = vec![
        check("no_seat_sold_twice", twice == 0, format!("{twice} seats with two tickets")),
        check("no_tier_oversold", tickets <= seats, format!("{tickets} tickets for {seats} seats")),
        check(
            "paid_orders_have_their_tickets",
            short == 0,
            format!("{short} paid orders without all their tickets"),
        ),
        check(
            "money_only_for_paid_or_refunded",
            kept == 0,
            format!("{kept} orders with money taken and no outcome"),
        ),
        check("every_hold_ended", locks == 0, format!("{locks} locks left")),
        check(
            "sold_counts_equal",
            sold_seats == tickets,
            format!("{sold_seats} seats sold, {tickets} tickets"),
        ),
    ];
    Ok(crate::audit::Audit {
        clean: checks.iter().all(|c| c.ok),
        checks,
        settled_after_seconds: settled,
        figures: json!({ "tickets": tickets, "refunded_orders": refunded, "sold_seats": sold_seats }),
    })
}

#[cfg(test)]
mod tests {
    //! The baseline is only a fair comparison if it is correct: its lock refuses a second buyer, its
    //! availability hides locked seats, and when a lock lapses during a payment its version check
    //! refuses the first buyer's sale and refunds him. Real PostgreSQL and Redis (the test command
    //! starts Redis when none runs).
    use super::*;

    fn redis_addr() -> String {
        std::env::var("BASELINE_REDIS").unwrap_or_else(|_| "127.0.0.1:6379".into())
    }

    async fn post(http: &reqwest::Client, url: &str, body: Value) -> (u16, Value) {
        let r = http.post(url).json(&body).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    #[sqlx::test]
    async fn a_lapsed_lock_loses_the_seat_to_the_version_check_and_is_refunded(db: PgPool) {
        let run = format!("t{}", &uuid_v4()[..8]);
        let seats = crate::sale::plan::seat_ids(4);
        prepare(&db, &run, &seats).await.unwrap();
        let redis_addr = redis_addr();
        let app = server::router(db.clone(), Locks::new(&redis_addr).unwrap(), &run, 60_000, 400);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let http = reqwest::Client::new();

        // A holds R0-0; B is refused it; the seat list no longer offers it.
        let (status, a_hold) =
            post(&http, &format!("{base}/holds"), json!({ "buyer": "a", "seats": ["R0-0"] })).await;
        assert_eq!(status, 201, "{a_hold}");
        assert_eq!(a_hold["seats"], json!([["R0-0", 1]]));
        let (status, _) =
            post(&http, &format!("{base}/holds"), json!({ "buyer": "b", "seats": ["R0-1", "R0-0"] })).await;
        assert_eq!(status, 409);
        let free: Vec<String> = http.get(format!("{base}/seats")).send().await.unwrap().json().await.unwrap();
        assert_eq!(free, ["R0-1", "R0-2", "R0-3"], "R0-1 was given back when R0-0 was refused");

        // A checks out (the lock now lasts the 400 ms payment window) and is slow to pay.
        let body = json!({ "buyer": "a", "seats": a_hold["seats"] });
        let (status, a_order) = post(&http, &format!("{base}/orders"), body.clone()).await;
        assert_eq!(status, 201, "{a_order}");
        tokio::time::sleep(Duration::from_millis(600)).await;

        // Meanwhile the lock lapsed: B takes the seat and buys it.
        let (status, b_hold) =
            post(&http, &format!("{base}/holds"), json!({ "buyer": "b", "seats": ["R0-0"] })).await;
        assert_eq!(status, 201, "{b_hold}");
        let b_body = json!({ "buyer": "b", "seats": b_hold["seats"] });
        let (_, b_order) = post(&http, &format!("{base}/orders"), b_body.clone()).await;
        let b_id = b_order["order"].as_str().unwrap();
        let (status, paid) = post(&http, &format!("{base}/orders/{b_id}/pay"), b_body).await;
        assert_eq!((status, paid["state"].as_str()), (200, Some("paid")));

        // A's money is taken, the version has moved: no sale, a refund.
        let a_id = a_order["order"].as_str().unwrap();
        let (status, refunded) = post(&http, &format!("{base}/orders/{a_id}/pay"), body).await;
        assert_eq!((status, refunded["state"].as_str()), (200, Some("refunded")));

        let audit = audit(&db, &Locks::new(&redis_addr).unwrap(), &run, 0.0).await.unwrap();
        assert!(audit.clean, "{audit:?}");
        assert_eq!(audit.figures["tickets"], 1);
        assert_eq!(audit.figures["refunded_orders"], 1);
    }

    #[sqlx::test]
    async fn the_audit_sees_a_double_sale(db: PgPool) {
        let run = format!("t{}", &uuid_v4()[..8]);
        prepare(&db, &run, &crate::sale::plan::seat_ids(2)).await.unwrap();
        for order in [uuid_v4(), uuid_v4()] {
            sqlx::query("INSERT INTO baseline_orders (id, run, state, seats, paid_minor) VALUES ($1::uuid, $2, 'paid', 1, 4500)")
                .bind(&order)
                .bind(&run)
                .execute(&db)
                .await
                .unwrap();
            sqlx::query(
                "INSERT INTO baseline_tickets (order_id, run, seat_id) VALUES ($1::uuid, $2, 'R0-0')",
            )
            .bind(&order)
            .bind(&run)
            .execute(&db)
            .await
            .unwrap();
        }
        let redis_addr = redis_addr();
        let audit = audit(&db, &Locks::new(&redis_addr).unwrap(), &run, 0.0).await.unwrap();
        assert!(!audit.clean);
        let failed: Vec<&str> = audit.checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
        assert!(failed.contains(&"no_seat_sold_twice"), "{failed:?}");
    }
}
