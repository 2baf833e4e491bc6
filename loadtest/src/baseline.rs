//! The baseline the flash sale is compared with: the design most ticketing write-ups propose.
//! A seat is held by a Redis lock (`SET lock:<run>:<seat> <buyer> NX PX <hold ms>`); the sale is
//! recorded by an optimistic-version update in PostgreSQL (`UPDATE … SET state = 'sold',
//! version = version + 1 WHERE seat = $1 AND version = <the version read when holding>`); money is
//! taken before that update, and given back when it finds the seat gone. No line, no edge: the
//! buyers of the same plan (arrival, seat choice, think times, fates) hit it directly, with the same
//! bound on requests in flight. The same audit questions are asked of its tables and of Redis.
//!
//! Redis is spoken to in RESP over a few pooled connections (`SET … NX PX`, a compare-and-delete
//! script, `SCAN`): the commands the design needs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::summary::{summarize, Sample, Summary};

/// Releases a lock only if it is still ours (a lapsed lock may belong to another buyer now): the
/// compare-and-delete the careful write-ups recommend.
const RELEASE: &str =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

/// One RESP connection.
struct Resp {
    stream: BufReader<TcpStream>,
}

impl Resp {
    async fn connect(addr: &str) -> Result<Self, String> {
        let stream = TcpStream::connect(addr).await.map_err(|e| format!("redis {addr}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(Self { stream: BufReader::new(stream) })
    }

    /// Sends a command; returns a simple reply (`+OK`, `:1`, `$…` bulk as text, `*…` array as
    /// lines joined by `\n`; a nil bulk as `None`).
    async fn call(&mut self, args: &[&str]) -> Result<Option<String>, String> {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.stream.get_mut().write_all(out.as_bytes()).await.map_err(|e| e.to_string())?;
        self.reply().await
    }

    async fn line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        self.stream.read_line(&mut line).await.map_err(|e| e.to_string())?;
        Ok(line.trim_end_matches("\r\n").to_owned())
    }

    fn reply(
        &mut self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Option<String>, String>> + Send + '_>>
    {
        Box::pin(async move {
            let line = self.line().await?;
            let (kind, rest) = line.split_at(1.min(line.len()));
            match kind {
                "+" | ":" => Ok(Some(rest.to_owned())),
                "-" => Err(format!("redis: {rest}")),
                "$" if rest == "-1" => Ok(None),
                "$" => Ok(Some(self.line().await?)),
                "*" => {
                    let n: i64 = rest.parse().map_err(|_| "redis: bad array")?;
                    let mut items = Vec::new();
                    for _ in 0..n.max(0) {
                        items.push(self.reply().await?.unwrap_or_default());
                    }
                    Ok(Some(items.join("\n")))
                }
                _ => Err(format!("redis: unexpected reply {line:?}")),
            }
        })
    }
}

/// A few Redis connections, taken and given back.
struct Redis {
    addr: String,
    idle: Mutex<Vec<Resp>>,
}

impl Redis {
    async fn call(&self, args: &[&str]) -> Result<Option<String>, String> {
        let conn = self.idle.lock().ok().and_then(|mut v| v.pop());
        let mut conn = match conn {
            Some(c) => c,
            None => Resp::connect(&self.addr).await?,
        };
        let answer = conn.call(args).await;
        if answer.is_ok() {
            if let Ok(mut idle) = self.idle.lock() {
                idle.push(conn);
            }
        }
        answer
    }

    /// Keys matching `pattern` (SCAN, so Redis is never blocked).
    async fn count(&self, pattern: &str) -> Result<usize, String> {
        let (mut cursor, mut n) = ("0".to_owned(), 0);
        loop {
            let reply =
                self.call(&["SCAN", &cursor, "MATCH", pattern, "COUNT", "1000"]).await?.unwrap_or_default();
            let mut lines = reply.lines();
            cursor = lines.next().unwrap_or("0").to_owned();
            n += lines.filter(|l| !l.is_empty()).count();
            if cursor == "0" {
                return Ok(n);
            }
        }
    }
}

/// The baseline's tables (created once; each run has its own `run` id).
async fn prepare(db: &PgPool, run: &str, seats: &[String]) -> Result<(), String> {
    for ddl in [
        "CREATE TABLE IF NOT EXISTS baseline_seats (run TEXT NOT NULL, seat_id TEXT NOT NULL, state TEXT NOT NULL,
             version INT NOT NULL DEFAULT 1, order_id UUID, PRIMARY KEY (run, seat_id))",
        "CREATE TABLE IF NOT EXISTS baseline_orders (id UUID PRIMARY KEY, run TEXT NOT NULL, state TEXT NOT NULL,
             seats INT NOT NULL, paid_minor BIGINT NOT NULL DEFAULT 0, refunded_minor BIGINT NOT NULL DEFAULT 0)",
        // No unique index on purpose: a double sale must be visible to the audit, not prevented here.
        "CREATE TABLE IF NOT EXISTS baseline_tickets (order_id UUID NOT NULL, run TEXT NOT NULL, seat_id TEXT NOT NULL)",
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

struct Ctx {
    db: PgPool,
    redis: Redis,
    run: String,
    seat_ids: Vec<String>,
    hot_seats: usize,
    hold_ms: u64,
    slots: Semaphore,
    started: Instant,
    samples: Mutex<BTreeMap<&'static str, Vec<Sample>>>,
    conflicts: AtomicU64,
}

impl Ctx {
    fn record(&self, step: &'static str, ok: bool, took: Duration) {
        if let Ok(mut s) = self.samples.lock() {
            s.entry(step).or_default().push((Some(if ok { 200 } else { 409 }), took));
        }
    }
}

/// How a baseline buyer's visit ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    Paid,
    /// Paid, then the optimistic update found a seat gone: the money went back.
    PaidThenRefunded,
    Declined,
    Abandoned,
    NoSeats,
    GaveUp,
    Failed,
}

async fn visit(ctx: Arc<Ctx>, plan: crate::sale::Plan, buyer: usize) -> Outcome {
    tokio::time::sleep(plan.arrive_after).await;
    tokio::time::sleep(plan.think[0]).await;
    let mut rng = plan.rng;
    let me = format!("b{buyer}");
    let mut held: Option<Vec<(String, i32)>> = None;
    for attempt in 1..=6 {
        let _slot = ctx.slots.acquire().await;
        let t = Instant::now();
        let free: Vec<String> = match sqlx::query_scalar(
            "SELECT seat_id FROM baseline_seats WHERE run = $1 AND state = 'available'",
        )
        .bind(&ctx.run)
        .fetch_all(&ctx.db)
        .await
        {
            Ok(f) => f,
            Err(_) => return Outcome::Failed,
        };
        ctx.record("availability", true, t.elapsed());
        let free: std::collections::HashSet<&str> = free.iter().map(String::as_str).collect();
        let range = if plan.hot && attempt <= 3 { 0..ctx.hot_seats } else { 0..ctx.seat_ids.len() };
        let mut choices: Vec<usize> = range.filter(|&i| free.contains(ctx.seat_ids[i].as_str())).collect();
        if choices.is_empty() {
            if plan.hot && attempt <= 3 {
                continue;
            }
            return Outcome::NoSeats;
        }
        let start = choices[(crate::sale::next(&mut rng) % choices.len() as u64) as usize];
        choices.retain(|&i| i >= start);
        let seats: Vec<&str> = choices.iter().take(plan.tickets).map(|&i| ctx.seat_ids[i].as_str()).collect();
        // The hold: a lock per seat, then the versions the sale will be checked against.
        let t = Instant::now();
        let ttl = ctx.hold_ms.to_string();
        let mut locked = Vec::new();
        for seat in &seats {
            let key = format!("lock:{}:{seat}", ctx.run);
            match ctx.redis.call(&["SET", &key, &me, "NX", "PX", &ttl]).await {
                Ok(Some(_)) => locked.push(key),
                Ok(None) => break,
                Err(_) => return Outcome::Failed,
            }
        }
        if locked.len() < seats.len() {
            for key in &locked {
                let _ = ctx.redis.call(&["EVAL", RELEASE, "1", key, &me]).await;
            }
            ctx.conflicts.fetch_add(1, Ordering::Relaxed);
            ctx.record("hold", false, t.elapsed());
            continue;
        }
        let versions: Vec<(String, i32)> = match sqlx::query_as(
            "SELECT seat_id, version FROM baseline_seats WHERE run = $1 AND seat_id = ANY($2)",
        )
        .bind(&ctx.run)
        .bind(&seats)
        .fetch_all(&ctx.db)
        .await
        {
            Ok(v) => v,
            Err(_) => return Outcome::Failed,
        };
        ctx.record("hold", true, t.elapsed());
        held = Some(versions);
        break;
    }
    let Some(held) = held else { return Outcome::GaveUp };
    let unlock = |ctx: Arc<Ctx>, seats: Vec<String>| {
        let me = me.clone();
        async move {
            for seat in &seats {
                let _ =
                    ctx.redis.call(&["EVAL", RELEASE, "1", &format!("lock:{}:{seat}", ctx.run), &me]).await;
            }
        }
    };
    tokio::time::sleep(plan.think[1]).await;
    let _slot = ctx.slots.acquire().await;
    let order = uuid_v4();
    let t = Instant::now();
    let created = sqlx::query(
        "INSERT INTO baseline_orders (id, run, state, seats) VALUES ($1::uuid, $2, 'awaiting_payment', $3)",
    )
    .bind(&order)
    .bind(&ctx.run)
    .bind(held.len() as i32)
    .execute(&ctx.db)
    .await;
    ctx.record("checkout", created.is_ok(), t.elapsed());
    if created.is_err() {
        return Outcome::Failed;
    }
    let seats: Vec<String> = held.iter().map(|h| h.0.clone()).collect();
    match plan.fate {
        crate::sale::Fate::Abandon => return Outcome::Abandoned,
        crate::sale::Fate::Decline => {
            let _ = sqlx::query("UPDATE baseline_orders SET state = 'cancelled' WHERE id = $1::uuid")
                .bind(&order)
                .execute(&ctx.db)
                .await;
            unlock(ctx.clone(), seats).await;
            return Outcome::Declined;
        }
        crate::sale::Fate::Pay => {}
    }
    // The money is taken, then the seats are sold if their versions have not moved.
    let t = Instant::now();
    let amount = 4_500 * held.len() as i64;
    let sold = async {
        let mut tx = ctx.db.begin().await?;
        sqlx::query("UPDATE baseline_orders SET paid_minor = $2 WHERE id = $1::uuid")
            .bind(&order)
            .bind(amount)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let mut tx = ctx.db.begin().await?;
        let mut all = true;
        for (seat, version) in &held {
            let n = sqlx::query(
                "UPDATE baseline_seats SET state = 'sold', version = version + 1, order_id = $4::uuid
                 WHERE run = $1 AND seat_id = $2 AND version = $3",
            )
            .bind(&ctx.run)
            .bind(seat)
            .bind(version)
            .bind(&order)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            all &= n == 1;
            if n == 1 {
                sqlx::query("INSERT INTO baseline_tickets (order_id, run, seat_id) VALUES ($1::uuid, $2, $3)")
                    .bind(&order)
                    .bind(&ctx.run)
                    .bind(seat)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        if all {
            sqlx::query("UPDATE baseline_orders SET state = 'paid' WHERE id = $1::uuid")
                .bind(&order)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        } else {
            tx.rollback().await?;
            sqlx::query("UPDATE baseline_orders SET state = 'refunded', refunded_minor = paid_minor WHERE id = $1::uuid")
                .bind(&order)
                .execute(&ctx.db)
                .await?;
        }
        Ok::<bool, sqlx::Error>(all)
    }
    .await;
    ctx.record("pay", sold.is_ok(), t.elapsed());
    unlock(ctx.clone(), seats).await;
    match sold {
        Ok(true) => Outcome::Paid,
        Ok(false) => Outcome::PaidThenRefunded,
        Err(_) => Outcome::Failed,
    }
}

fn uuid_v4() -> String {
    let mut b = [0u8; 16];
    let _ = getrandom::getrandom(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
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
}

/// Plays `plans` against the baseline and audits it.
pub async fn run(
    args: &crate::sale::SaleArgs,
    plans: Vec<crate::sale::Plan>,
    db: &PgPool,
    redis_addr: &str,
) -> Result<BaselineReport, String> {
    let run = format!("r{}", &uuid_v4()[..8]);
    let seat_ids = crate::sale::seat_ids(args.seats);
    prepare(db, &run, &seat_ids).await?;
    let redis = Redis { addr: redis_addr.to_owned(), idle: Mutex::new(Vec::new()) };
    redis.call(&["PING"]).await?;
    let hold_ms = u64::from(args.hold_seconds) * 1000;
    let ctx = Arc::new(Ctx {
        db: db.clone(),
        redis,
        run: run.clone(),
        hot_seats: args.hot_seats.min(args.seats) as usize,
        seat_ids,
        hold_ms,
        slots: Semaphore::new(args.concurrency as usize),
        started: Instant::now(),
        samples: Mutex::new(BTreeMap::new()),
        conflicts: AtomicU64::new(0),
    });
    let tasks: Vec<_> = plans
        .into_iter()
        .enumerate()
        .filter(|(_, p)| !p.bot)
        .map(|(i, plan)| tokio::spawn(visit(ctx.clone(), plan, i)))
        .collect();
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    for t in tasks {
        let o = t.await.unwrap_or(Outcome::Failed);
        let key =
            serde_json::to_value(o).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        *outcomes.entry(key).or_default() += 1;
    }
    let seconds = ctx.started.elapsed().as_secs_f64();
    // Abandoned locks lapse on their own.
    let settle = Instant::now();
    while ctx.redis.count(&format!("lock:{run}:*")).await? > 0
        && settle.elapsed() < Duration::from_millis(hold_ms + 5_000)
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let audit = audit(&ctx, seconds_since(settle)).await?;
    let samples = std::mem::take(&mut *ctx.samples.lock().map_err(|_| "poisoned")?);
    let holds = samples.get("hold").map_or(0, |s| s.iter().filter(|x| x.0 == Some(200)).count());
    let tickets_sold = audit.figures["tickets"].as_i64().unwrap_or(0);
    Ok(BaselineReport {
        run,
        seconds,
        outcomes,
        tickets_sold,
        hold_conflicts: ctx.conflicts.load(Ordering::Relaxed),
        holds_per_second: holds as f64 / seconds.max(1e-9),
        steps: samples.iter().map(|(k, v)| ((*k).to_owned(), summarize(v, seconds))).collect(),
        audit,
    })
}

fn seconds_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

/// The sale's audit questions, asked of the baseline's tables and Redis.
async fn audit(ctx: &Ctx, settled: f64) -> Result<crate::audit::Audit, String> {
    let q = |sql: &'static str| {
        let (db, run) = (ctx.db.clone(), ctx.run.clone());
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
    let locks = ctx.redis.count(&format!("lock:{}:*", ctx.run)).await?;
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

/// The side-by-side table of the two runs.
pub fn comparison(platform: &crate::sale::SaleReport, baseline: &BaselineReport) -> Value {
    let hold = |s: &BTreeMap<String, Summary>| {
        s.get("hold").map(|h| json!({ "p50_ms": h.p50_ms, "p99_ms": h.p99_ms }))
    };
    json!({
        "holds_per_second": { "platform": platform.steps.get("hold").map(|h| h.statuses.get(&201).copied().unwrap_or(0) as f64 / platform.seconds.max(1e-9)), "baseline": baseline.holds_per_second },
        "hold_latency": { "platform": hold(&platform.steps), "baseline": hold(&baseline.steps) },
        "hold_conflicts": { "platform": platform.hold_conflicts, "baseline": baseline.hold_conflicts },
        "tickets_sold": { "platform": platform.tickets_sold, "baseline": baseline.tickets_sold },
        "double_sales_found": {
            "platform": platform.audit.checks.iter().find(|c| c.name == "no_seat_sold_twice").map(|c| !c.ok),
            "baseline": baseline.audit.checks.iter().find(|c| c.name == "no_seat_sold_twice").map(|c| !c.ok),
        },
        "paid_then_refunded": { "baseline": baseline.outcomes.get("paid_then_refunded").copied().unwrap_or(0) },
        "audit_clean": { "platform": platform.audit.clean, "baseline": baseline.audit.clean },
    })
}
