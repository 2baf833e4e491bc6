//! `loadtest sale`: a flash sale played against the local stack (the edge in workerd, the core,
//! PostgreSQL), then audited.
//!
//! N buyers arrive on a curve (all in the on-sale second, or spread over some seconds), and each
//! one, like the buyer's page: asks for a challenge and solves its proof of work, joins the line,
//! polls when told to, is admitted, thinks, looks at the seat map, holds seats (a share of buyers
//! going for the same "best" block), thinks, checks out, and pays on the test provider's page (a
//! share declining, a share abandoning). Bots (a share of arrivals) join without solving the
//! challenge and must be refused. Every request is timed; requests in flight are bounded.
//!
//! With `--waitlist N`, N more people join the event's waiting list once it is sold out and are
//! offered the seats that come back (`waitlist.rs`; the list's audit: `crate::audit::waitlist`).
//!
//! At the end the run waits for the sale to settle (abandoned holds expire, orders finish) and
//! audits it (`crate::audit`). Results: JSON and an SVG chart in `--out`.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};
use shared_types::token::TokenSigner;
use shared_types::waiting_room::pow_solve;
use tokio::sync::Semaphore;

use crate::edge::{core_call, nonce};
use shared_types::internal_api::InternalRoute;
pub mod plan;
mod waitlist;

use self::plan::*;
use crate::baseline::BaselineReport;
use crate::summary::Summary;

/// How a buyer's visit ended.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    Paid,
    Declined,
    Abandoned,
    /// The order ended refunded (the hold was lost while paying and the seats were taken).
    Refunded,
    /// The line said sold out before their turn.
    SoldOutInLine,
    /// Admitted, but no seat was left to hold.
    NoSeats,
    /// Admitted, but every hold attempt met a conflict.
    GaveUp,
    /// Admitted, but the admission ran out (`session_seconds`) while waiting for a held seat.
    SessionExpired,
    /// A person refused by the edge (`reason`): should not happen.
    Refused(String),
    /// A bot refused (`reason`): the door works.
    BotRefused(String),
    /// A bot that got a place in line: the door failed.
    BotJoined,
    /// The run's time ran out while the buyer was still at it.
    TimedOut,
    /// A request failed (transport or 5xx) at this step.
    Failed(String),
}

/// What every buyer shares.
struct Ctx {
    http: reqwest::Client,
    core: String,
    edge: String,
    /// `{edge}/api/v1/events/{event}`.
    base: String,
    slots: Semaphore,
    started: Instant,
    deadline: Instant,
    records: Mutex<Vec<Rec>>,
    seat_ids: Vec<String>,
    hot_seats: usize,
    done: AtomicU64,
    sold: AtomicU64,
    /// Tickets seen paid: (ms since the start, tickets).
    sales: Mutex<Vec<(u32, u64)>>,
    /// Per buyer who got in: ms from joining to admission.
    waits: Mutex<Vec<u64>>,
    conflicts: AtomicU64,
    /// Each hold a buyer placed: when its request was sent (ms since the start) and its seats (as
    /// indexes into `seat_ids`), for the waiting list's audit.
    held: Mutex<Vec<(u32, Vec<usize>)>>,
    /// The orders buyers saw paid.
    paid_orders: Mutex<Vec<String>>,
    /// The orders checkout acknowledged (answered 201 with the order).
    acknowledged: Mutex<Vec<String>>,
    /// How long a request without an answer or with a 5xx is retried (`--retry-seconds`).
    retry_for: Duration,
    /// How long an admitted buyer who finds every seat held waits for one to come back.
    hold_wait: Duration,
}

/// An answer: status, body, and the `visitor` cookie if one was set.
struct Answer {
    status: u16,
    body: Value,
    cookie: Option<String>,
}

impl Ctx {
    fn now_ms(&self) -> u32 {
        self.started.elapsed().as_millis() as u32
    }

    /// Sends one request (waiting for a slot), times it, records it; with `--retry-seconds`, sends
    /// it again every half second while it gets no answer or a 5xx, within that time. Each attempt
    /// is recorded.
    async fn send(&self, step: Step, req: reqwest::RequestBuilder) -> Option<Answer> {
        let give_up = Instant::now() + self.retry_for;
        let mut req = req;
        loop {
            let again = req.try_clone();
            let answer = self.send_once(step, req).await;
            let failed = answer.as_ref().is_none_or(|a| a.status >= 500);
            match again {
                Some(next) if failed && Instant::now() < give_up && !self.out_of_time() => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    req = next;
                }
                _ => return answer,
            }
        }
    }

    /// One attempt of [`Ctx::send`].
    async fn send_once(&self, step: Step, req: reqwest::RequestBuilder) -> Option<Answer> {
        let _slot = self.slots.acquire().await.ok()?;
        let t = Instant::now();
        let answer = match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let cookie = crate::edge::visitor_cookie(&resp);
                let body = resp.json().await.unwrap_or(Value::Null);
                Some(Answer { status, body, cookie })
            }
            Err(_) => None,
        };
        let rec = (step, answer.as_ref().map(|a| a.status), self.now_ms(), t.elapsed());
        if let Ok(mut r) = self.records.lock() {
            r.push(rec);
        }
        answer
    }

    fn out_of_time(&self) -> bool {
        Instant::now() > self.deadline
    }
}

fn reason(body: &Value) -> String {
    body["reason"].as_str().or(body["type"].as_str()).unwrap_or("unknown").to_owned()
}

/// One visit, start to end.
async fn visit(ctx: Arc<Ctx>, mut plan: Plan) -> Outcome {
    tokio::time::sleep(plan.arrive_after).await;
    let base = &ctx.base;
    if plan.bot {
        // A bot skips the page: no challenge solved, a made-up solution.
        let Some(a) = ctx
            .send(
                Step::Bot,
                ctx.http.post(format!("{base}/queue")).json(&json!({ "challenge": "x", "solution": "0" })),
            )
            .await
        else {
            return Outcome::Failed("bot".into());
        };
        return if a.body["ticket"].is_string() {
            Outcome::BotJoined
        } else {
            Outcome::BotRefused(reason(&a.body))
        };
    }
    let (cookie, join) = match solve_challenge(&ctx, None).await {
        Ok(solved) => solved,
        Err(outcome) => return outcome,
    };
    let Some(j) = ctx
        .send(Step::Join, ctx.http.post(format!("{base}/queue")).header("cookie", &cookie).json(&join))
        .await
    else {
        return Outcome::Failed("join".into());
    };
    let Some(ticket) = j.body["ticket"].as_str().map(str::to_owned) else {
        return match j.status {
            409 if reason(&j.body) == "sold-out" => Outcome::SoldOutInLine,
            s if s >= 500 => Outcome::Failed("join".into()),
            _ => Outcome::Refused(reason(&j.body)),
        };
    };
    let joined = Instant::now();
    // The line: poll when told to.
    let admission = loop {
        if ctx.out_of_time() {
            return Outcome::TimedOut;
        }
        let Some(p) = ctx
            .send(
                Step::Poll,
                ctx.http.get(format!("{base}/queue")).header("cookie", &cookie).bearer_auth(&ticket),
            )
            .await
        else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        if let Some(token) = p.body["admission_token"].as_str() {
            break token.to_owned();
        }
        let status = &p.body["status"];
        match status["state"].as_str().or(p.body["state"].as_str()) {
            Some("sold_out") | Some("closed") => return Outcome::SoldOutInLine,
            _ if p.status >= 400 && p.status < 500 && p.status != 429 => {
                return Outcome::Refused(reason(&p.body))
            }
            _ => {}
        }
        let after = status["poll_after_seconds"].as_u64().unwrap_or(2).clamp(1, 30);
        tokio::time::sleep(Duration::from_secs(after)).await;
    };
    if let Ok(mut w) = ctx.waits.lock() {
        w.push(joined.elapsed().as_millis() as u64);
    }
    let outcome = shop(&ctx, &mut plan, &admission).await;
    // Who leaves without buying says so (the page's "leave" button), which frees their place under
    // the cap at once; who abandoned just vanished (their session times out).
    if matches!(outcome, Outcome::NoSeats | Outcome::GaveUp | Outcome::Declined) {
        ctx.send(Step::Leave, ctx.http.delete(format!("{base}/queue")).bearer_auth(&admission)).await;
    }
    outcome
}

/// The bot check as the page passes it: asks for a challenge (with the visitor's `cookie`, if they
/// have one) and solves its proof of work off the async threads. The visitor cookie, and the
/// fields a join sends.
async fn solve_challenge(ctx: &Ctx, cookie: Option<&str>) -> Result<(String, Value), Outcome> {
    let mut req = ctx.http.post(format!("{}/challenge", ctx.base));
    if let Some(cookie) = cookie {
        req = req.header("cookie", cookie);
    }
    let Some(c) = ctx.send(Step::Challenge, req).await else {
        return Err(Outcome::Failed("challenge".into()));
    };
    if c.status != 200 {
        return Err(Outcome::Refused(reason(&c.body)));
    }
    let cookie = c.cookie.or(cookie.map(str::to_owned)).unwrap_or_default();
    let mut join = json!({});
    if let (Some(challenge), Some(difficulty)) = (c.body["challenge"].as_str(), c.body["difficulty"].as_u64())
    {
        let challenge = challenge.to_owned();
        let solution = {
            let challenge = challenge.clone();
            tokio::task::spawn_blocking(move || pow_solve(&challenge, difficulty as u8))
                .await
                .unwrap_or_default()
        };
        join = json!({ "challenge": challenge, "solution": solution });
    }
    Ok((cookie, join))
}

/// Admitted: seats, hold, checkout, payment.
async fn shop(ctx: &Ctx, plan: &mut Plan, admission: &str) -> Outcome {
    let base = &ctx.base;
    tokio::time::sleep(plan.think[0]).await;

    // Seats: look at the map, pick, hold; on a conflict look again (three tries in the hot block,
    // then anywhere), as a person would.
    let mut hold_token = None;
    let mut attempt = 0;
    let look_until = Instant::now() + ctx.hold_wait;
    while attempt < 6 {
        attempt += 1;
        if ctx.out_of_time() {
            return Outcome::TimedOut;
        }
        let Some(a) = ctx.send(Step::Availability, ctx.http.get(format!("{base}/availability"))).await else {
            continue;
        };
        let map = a.body["seats"].as_str().unwrap_or_default().as_bytes().to_vec();
        let free = |range: std::ops::Range<usize>| -> Vec<usize> {
            range.filter(|&i| map.get(i) == Some(&b'a')).collect()
        };
        let hot = plan.hot && attempt <= 3;
        let mut choices = if hot { free(0..ctx.hot_seats) } else { free(0..ctx.seat_ids.len()) };
        if choices.is_empty() {
            if hot {
                continue;
            }
            // Nothing free but some held: a person waits for a hold to lapse, and looks again.
            if map.contains(&b'h') && Instant::now() < look_until {
                attempt -= 1;
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
            return Outcome::NoSeats;
        }
        // Together if possible: a random free seat and the free ones right after it.
        let start = choices[(next(&mut plan.rng) % choices.len() as u64) as usize];
        choices.retain(|&i| i >= start);
        let picked: Vec<usize> = choices.iter().take(plan.tickets).copied().collect();
        let seats: Vec<&str> = picked.iter().map(|&i| ctx.seat_ids[i].as_str()).collect();
        let sent = ctx.now_ms();
        let Some(h) = ctx
            .send(
                Step::Hold,
                ctx.http
                    .post(format!("{base}/holds"))
                    .bearer_auth(admission)
                    // One key per hold asked for (as the buyer's page sends): a retry of a hold
                    // whose answer was lost gets that hold again, never a second one.
                    .header("idempotency-key", nonce())
                    .json(&json!({ "kind": "seats", "seats": seats })),
            )
            .await
        else {
            continue;
        };
        match h.status {
            200 | 201 => {
                hold_token = h.body["hold_token"].as_str().map(str::to_owned);
                if let Ok(mut held) = ctx.held.lock() {
                    held.push((sent, picked));
                }
                break;
            }
            409 => {
                ctx.conflicts.fetch_add(1, Ordering::Relaxed);
            }
            s if s >= 500 => return Outcome::Failed("hold".into()),
            401 if reason(&h.body) == "expired" => return Outcome::SessionExpired,
            _ => return Outcome::Refused(reason(&h.body)),
        }
    }
    let Some(hold_token) = hold_token else { return Outcome::GaveUp };
    tokio::time::sleep(plan.think[1]).await;
    let email = format!("{}@sale.test", nonce().to_lowercase().replace(['-', '_'], "x"));
    buy(ctx, &hold_token, &email, plan.fate).await
}

/// A hold bought: checkout, then the test provider's page (paying, declining, or leaving it as
/// `fate` says), then the order page polled until the order has an outcome.
async fn buy(ctx: &Ctx, hold_token: &str, email: &str, fate: Fate) -> Outcome {
    let Some(o) = ctx
        .send(
            Step::Checkout,
            ctx.http
                .post(format!("{}/api/v1/checkout", ctx.edge))
                .header("idempotency-key", nonce())
                .json(&json!({ "hold_token": hold_token, "email": email })),
        )
        .await
    else {
        return Outcome::Failed("checkout".into());
    };
    // 201, or 200 for a retry with the same key whose first answer was lost: the same order.
    let acknowledged = matches!(o.status, 200 | 201);
    if acknowledged {
        if let (Ok(mut acked), Some(id)) = (ctx.acknowledged.lock(), o.body["order"]["id"].as_str()) {
            acked.push(id.to_owned());
        }
    }
    if !acknowledged {
        return if o.status >= 500 {
            Outcome::Failed("checkout".into())
        } else {
            Outcome::Refused(reason(&o.body))
        };
    }
    let decision = match fate {
        Fate::Abandon => return Outcome::Abandoned,
        Fate::Decline => "decline",
        Fate::Pay => "approve",
    };
    let (id, token) = (
        o.body["order"]["id"].as_str().unwrap_or_default().to_owned(),
        o.body["order_token"].as_str().unwrap_or_default().to_owned(),
    );
    let mut redirect = o.body["order"]["payment"]["redirect_url"].as_str().map(str::to_owned);
    // An order whose payment is not started yet (a retry answered while the core still waits on
    // the edge or the provider): the order page shows "Pay now" once it is, as the buyer sees it.
    let give_up = Instant::now() + ctx.retry_for;
    while redirect.is_none() && Instant::now() < give_up && !ctx.out_of_time() {
        let Some(order) = order_page(ctx, &id, &token).await else { continue };
        if matches!(order["state"].as_str(), Some("cancelled" | "refunded")) {
            return Outcome::Failed("checkout".into());
        }
        redirect = order["payment"]["redirect_url"].as_str().map(str::to_owned);
    }
    let payment = redirect.as_deref().and_then(|u| u.rsplit('/').next());
    let Some(payment) = payment else { return Outcome::Failed("checkout".into()) };
    let Some(p) = ctx
        .send(
            Step::Pay,
            ctx.http
                .post(format!("{}/testpay/pay/{payment}/{decision}", ctx.core))
                .header("accept", "application/json"),
        )
        .await
    else {
        return Outcome::Failed("pay".into());
    };
    if p.status != 200 {
        return Outcome::Failed("pay".into());
    }
    // The order page: polled until the order has an outcome.
    loop {
        if ctx.out_of_time() {
            return Outcome::TimedOut;
        }
        let Some(order) = order_page(ctx, &id, &token).await else { continue };
        match order["state"].as_str() {
            Some("paid") => {
                if let Ok(mut paid) = ctx.paid_orders.lock() {
                    paid.push(id.to_owned());
                }
                let n = order["tickets"].as_array().map_or(0, Vec::len) as u64;
                ctx.sold.fetch_add(n, Ordering::Relaxed);
                if let Ok(mut sales) = ctx.sales.lock() {
                    sales.push((ctx.now_ms(), n));
                }
                return Outcome::Paid;
            }
            Some("cancelled") => return Outcome::Declined,
            Some("refunded") => return Outcome::Refunded,
            _ => {}
        }
    }
}

/// The order page, looked at again half a second later (`None`: no answer).
async fn order_page(ctx: &Ctx, id: &str, token: &str) -> Option<Value> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let url = format!("{}/api/v1/orders/{id}", ctx.edge);
    ctx.send(Step::Order, ctx.http.get(url).bearer_auth(token)).await.map(|o| o.body)
}

#[derive(Debug, Serialize)]
pub struct SaleReport {
    pub event: String,
    pub settings: Value,
    pub seconds: f64,
    /// The sale's figures in one place: buyers admitted, holds placed, conflicts, holds expired and
    /// released (the edge's counters), orders paid and refunded, refusals by reason.
    pub counts: Value,
    /// Buyers that ended each way.
    pub outcomes: BTreeMap<String, u64>,
    /// Refusals by reason (people and bots).
    pub refused: BTreeMap<String, u64>,
    pub tickets_sold: u64,
    pub hold_conflicts: u64,
    pub requests: u64,
    pub requests_per_second: f64,
    /// Per step: throughput and latency percentiles.
    pub steps: BTreeMap<String, Summary>,
    /// Minute by minute: requests and latency percentiles.
    pub timeline: Vec<Window>,
    /// Memory and backlog every `--sample-seconds` while the buyers bought (`crate::sample`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<crate::sample::Sample>,
    /// From joining to admission, over the buyers admitted (ms).
    pub wait_ms: Value,
    /// Durable Object requests per buyer (queue objects and inventory objects, from their counters).
    pub do_requests_per_buyer: f64,
    pub audit: crate::audit::Audit,
    /// The waiting-list phase (`--waitlist`): its members' outcomes and the list's figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waitlist: Option<Value>,
    pub chart: String,
    /// The same plans against the baseline, and the two side by side (with `--baseline`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<crate::baseline::BaselineReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comparison: Option<Value>,
}

/// The event's Durable Object requests, from the objects' own counters (the inventory shards, the
/// queue coordinator and shards), read every 5 s. A counter lives in its object's memory, so an
/// object evicted while idle (after a sell-out, say) starts again from zero: a counter found lower
/// than last time is counted from zero, as Prometheus's `increase` does. The reads themselves
/// (the inventory's request, the coordinator's `stats`, the shards' `other`) are left out.
struct DoRequests {
    http: reqwest::Client,
    signer: TokenSigner,
    edge: String,
    event: String,
    /// Each object's last counter, and the requests counted so far.
    seen: Mutex<(BTreeMap<String, u64>, u64)>,
}

impl DoRequests {
    /// Reads every counter and returns the requests counted since the first read.
    async fn sample(&self) -> Result<u64, String> {
        let (_, stats) =
            core_call(&self.http, &self.signer, &self.edge, &self.event, &InternalRoute::Stats, vec![])
                .await?;
        let (_, room) =
            core_call(&self.http, &self.signer, &self.edge, &self.event, &InternalRoute::WaitingRoom, vec![])
                .await?;
        let routes = |v: &Value, own: &str| {
            v.as_object()
                .map_or(0, |m| m.iter().filter(|(k, _)| *k != own).filter_map(|(_, n)| n.as_u64()).sum())
        };
        let mut now: Vec<(String, u64)> = vec![("coordinator".into(), routes(&room["requests"], "stats"))];
        for (i, shard) in room["shards"].as_array().into_iter().flatten().enumerate() {
            now.push((format!("queue-{i}"), routes(&shard["requests"], "other")));
        }
        for shard in stats["shards"].as_array().into_iter().flatten() {
            let n = shard["stats"]["requests"].as_u64().unwrap_or(0);
            now.push((format!("inventory-{}", shard["shard"]), n.saturating_sub(1)));
        }
        let mut seen = self.seen.lock().map_err(|_| "poisoned")?;
        let (last, total) = &mut *seen;
        *total += increase(last, now);
        Ok(*total)
    }
}

/// What counters grew by since `last` (then `last` holds `now`). A counter lower than last time was
/// reset (its object restarted): all of it is new. An object first seen after the first reading
/// (a shard woken during the run) is new too; the first reading itself only sets the base.
fn increase(last: &mut BTreeMap<String, u64>, now: Vec<(String, u64)>) -> u64 {
    let first = last.is_empty();
    let mut grown = 0;
    for (object, n) in now {
        let before = last.insert(object, n);
        if !first {
            grown += match before {
                Some(b) if n >= b => n - b,
                _ => n,
            };
        }
    }
    grown
}

/// Creates the event, plays the sale, settles, audits, writes the results.
pub async fn run(args: SaleArgs) -> Result<SaleReport, String> {
    args.sample.check()?;
    let http = crate::edge::http_client(60, args.concurrency as usize)?;
    let signer = crate::edge::core_signer(&args.core_signing_key)?;
    let db = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&args.database_url)
        .await
        .map_err(|e| format!("database: {e}"))?;
    let on_sale_at = chrono_ms() + args.on_sale_in as i64 * 1000;
    let settings = json!({
        "mode": "shuffle_then_fifo",
        "on_sale_at_ms": on_sale_at,
        "admit_per_minute": args.admit_per_minute,
        "max_active": args.max_active,
        "session_seconds": args.session_seconds,
        "return_grace_seconds": 30,
        "bot": { "check": if args.difficulty == 0 { json!({ "kind": "off" }) } else { json!({ "kind": "proof_of_work", "difficulty": args.difficulty }) },
                 "raise_above_joins_per_minute": 100_000_000 },
        "rate_limits": { "joins_per_visitor_per_minute": 10 },
        "waitlist": { "enabled": args.waitlist > 0, "claim_seconds": args.waitlist_claim_seconds, "max_offers_out": 50 },
    });
    let holds = json!({ "hold_seconds": args.hold_seconds, "extension_seconds": args.payment_seconds, "max_tickets_per_visitor": 8 });
    let event =
        crate::checkout::set_up_with(&http, &args.core, &args.admin_key, args.seats, settings.clone(), holds)
            .await?;
    let seat_ids = seat_ids(args.seats);
    let counter = DoRequests {
        http: http.clone(),
        signer: signer.clone(),
        edge: args.edge.clone(),
        event: event.to_string(),
        seen: Mutex::new((BTreeMap::new(), 0)),
    };
    counter.sample().await?;
    let counter = Arc::new(counter);
    let sampler = {
        let counter = counter.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let _ = counter.sample().await;
            }
        })
    };

    // Wait for the on-sale second: the burst arrives in it (the shuffled pre-queue is for who came earlier).
    let until = on_sale_at - chrono_ms();
    if until > 0 {
        tokio::time::sleep(Duration::from_millis(until as u64)).await;
    }
    let started = Instant::now();
    let ctx = Arc::new(Ctx {
        http: http.clone(),
        core: args.core.clone(),
        edge: args.edge.clone(),
        base: format!("{}/api/v1/events/{event}", args.edge),
        slots: Semaphore::new(args.concurrency as usize),
        started,
        deadline: started + Duration::from_secs(args.max_seconds),
        records: Mutex::new(Vec::with_capacity(args.buyers as usize * 12)),
        seat_ids,
        hot_seats: args.hot_seats.min(args.seats) as usize,
        done: AtomicU64::new(0),
        sold: AtomicU64::new(0),
        sales: Mutex::new(Vec::new()),
        waits: Mutex::new(Vec::new()),
        conflicts: AtomicU64::new(0),
        held: Mutex::new(Vec::new()),
        paid_orders: Mutex::new(Vec::new()),
        acknowledged: Mutex::new(Vec::new()),
        retry_for: Duration::from_secs(args.retry_seconds),
        hold_wait: Duration::from_secs(u64::from(args.hold_seconds.max(args.payment_seconds)) + 10),
    });
    let progress = tokio::spawn(progress(ctx.clone(), args.buyers));
    let watched = crate::sample::EdgeEvent {
        signer: signer.clone(),
        edge: args.edge.clone(),
        event: event.to_string(),
    };
    let resources = crate::sample::Sampler::start(&args.sample, http.clone(), db.clone(), watched, started);
    let started_epoch_ms = chrono_ms() - started.elapsed().as_millis() as i64;
    // The waiting list's members, its mail reader and its watcher (`waitlist.rs`).
    let list_plans = waitlist_plans(&args);
    let list = Arc::new(waitlist::List::new(db.clone(), event.clone(), list_plans.len()));
    let mut list_tasks = Vec::new();
    if !list_plans.is_empty() {
        list_tasks.push(tokio::spawn(waitlist::read_mail(list.clone())));
        list_tasks.push(tokio::spawn(waitlist::watch(
            ctx.clone(),
            list.clone(),
            signer.clone(),
            args.admin_key.clone(),
            args.waitlist_refunds,
        )));
    }
    let members: Vec<_> = list_plans
        .into_iter()
        .enumerate()
        .map(|(n, plan)| tokio::spawn(waitlist::member(ctx.clone(), list.clone(), plan, n)))
        .collect();
    let tasks: Vec<_> = plans(&args)
        .into_iter()
        .map(|plan| {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let outcome = visit(ctx.clone(), plan).await;
                ctx.done.fetch_add(1, Ordering::Relaxed);
                outcome
            })
        })
        .collect();
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(tasks.len());
    for t in tasks {
        outcomes.push(t.await.unwrap_or(Outcome::Failed("panic".into())));
    }
    list.sale_done.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut list_outcomes: BTreeMap<String, u64> = BTreeMap::new();
    for m in members {
        *list_outcomes.entry(m.await.unwrap_or_else(|_| "failed_panic".into())).or_default() += 1;
    }
    list_tasks.iter().for_each(|t| t.abort());
    let seconds = started.elapsed().as_secs_f64();
    let samples = resources.finish().await;
    progress.abort();
    eprintln!();
    sampler.abort();
    let do_requests = counter.sample().await?;

    // Settle: abandoned holds expire, their orders end; then audit edge and core.
    let audit = crate::audit::settle_and_audit(
        &http,
        &signer,
        &args.edge,
        &db,
        &event,
        &ctx.seat_ids,
        Duration::from_secs(u64::from(args.hold_seconds.max(args.payment_seconds)) + 120),
    )
    .await?;

    let records = std::mem::take(&mut *ctx.records.lock().map_err(|_| "poisoned")?);
    let mut audit = audit;
    let acknowledged = ctx.acknowledged.lock().map_err(|_| "poisoned")?.clone();
    let paid = ctx.paid_orders.lock().map_err(|_| "poisoned")?.clone();
    audit.checks.extend(crate::audit::acknowledged_orders(&db, &event, &acknowledged, &paid).await?);
    audit.clean = audit.checks.iter().all(|c| c.ok);
    let waitlist = if args.waitlist > 0 {
        let at = |ms: u64| started_epoch_ms + ms as i64;
        let public = list.public_at_first_entry();
        let seen = crate::audit::waitlist::Observed {
            first_entry_ms: list.first_entry_ms().map(at),
            public_after_ms: public.as_ref().map(|(t, _)| at(*t)),
            public: public.map(|(_, seats)| seats.into_iter().collect()).unwrap_or_default(),
            holds: std::mem::take(&mut *ctx.held.lock().map_err(|_| "poisoned")?)
                .into_iter()
                .map(|(sent, seats)| (at(u64::from(sent)), seats))
                .collect(),
        };
        let (checks, figures) =
            crate::audit::waitlist::audit(&http, &signer, &args.edge, &db, &event, &seen).await?;
        audit.checks.extend(checks);
        audit.clean = audit.checks.iter().all(|c| c.ok);
        let refunded = list.refunded_tickets.load(Ordering::Relaxed);
        Some(
            json!({ "members": args.waitlist, "outcomes": list_outcomes, "figures": figures, "refunded_tickets": refunded }),
        )
    } else {
        None
    };
    let steps = step_summaries(&records, seconds);
    let mut counted: BTreeMap<String, u64> = BTreeMap::new();
    let mut refused: BTreeMap<String, u64> = BTreeMap::new();
    for o in &outcomes {
        let key = match o {
            Outcome::Refused(r) | Outcome::BotRefused(r) => {
                *refused.entry(r.clone()).or_default() += 1;
                if matches!(o, Outcome::Refused(_)) { "refused" } else { "bot_refused" }.to_owned()
            }
            Outcome::Failed(step) => format!("failed_{step}"),
            other => serde_json::to_value(other)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
        };
        *counted.entry(key).or_default() += 1;
    }
    let mut waits = ctx.waits.lock().map_err(|_| "poisoned")?.clone();
    waits.sort_unstable();
    let pct = |p: f64| crate::summary::percentile(&waits, p);
    let people =
        outcomes.iter().filter(|o| !matches!(o, Outcome::BotRefused(_) | Outcome::BotJoined)).count();
    let chart_path = args.out.join(format!("sale-{event}.svg"));
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let sales = std::mem::take(&mut *ctx.sales.lock().map_err(|_| "poisoned")?);
    std::fs::write(&chart_path, chart(&records, &sales, seconds, &format!("Flash sale {event}"), &samples))
        .map_err(|e| e.to_string())?;
    let holds = &audit.figures["edge"]["holds"];
    let count = |key: &str| counted.get(key).copied().unwrap_or(0);
    let counts = json!({
        "admitted": waits.len(),
        "held": steps.get("hold").and_then(|h| h.statuses.get(&201)).copied().unwrap_or(0),
        "conflicts": ctx.conflicts.load(Ordering::Relaxed),
        "holds_expired": holds["holds_expired"],
        "holds_released": holds["holds_released"],
        "holds_sold": holds["holds_sold"],
        "paid": count("paid"),
        "declined": count("declined"),
        "abandoned": count("abandoned"),
        "refunded": count("refunded"),
        "refused": refused.values().sum::<u64>(),
        "refused_by_reason": refused,
    });
    let report = SaleReport {
        event: event.clone(),
        counts,
        settings: json!({
            "buyers": args.buyers, "seats": args.seats, "hot_seats": args.hot_seats, "hot_share": args.hot_share,
            "max_tickets": args.max_tickets, "arrival": args.arrival, "spread_seconds": args.spread_seconds,
            "admit_per_minute": args.admit_per_minute, "max_active": args.max_active, "difficulty": args.difficulty,
            "bot_share": args.bot_share, "decline_share": args.decline_share, "abandon_share": args.abandon_share,
            "think_ms": [args.think_min_ms, args.think_max_ms], "hold_seconds": args.hold_seconds,
            "payment_seconds": args.payment_seconds, "session_seconds": args.session_seconds,
            "concurrency": args.concurrency, "seed": args.seed, "waitlist": args.waitlist,
            "waitlist_claim_seconds": args.waitlist_claim_seconds, "waitlist_refunds": args.waitlist_refunds,
        }),
        seconds,
        outcomes: counted,
        refused,
        tickets_sold: ctx.sold.load(Ordering::Relaxed),
        hold_conflicts: ctx.conflicts.load(Ordering::Relaxed),
        requests: records.len() as u64,
        requests_per_second: records.len() as f64 / seconds.max(1e-9),
        steps,
        timeline: timeline(&records),
        samples,
        wait_ms: json!({ "admitted": waits.len(), "p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "max": waits.last() }),
        do_requests_per_buyer: do_requests as f64 / people.max(1) as f64,
        audit,
        waitlist,
        chart: chart_path.display().to_string(),
        baseline: None,
        comparison: None,
    };
    let mut report = report;
    if args.baseline {
        eprintln!(
            "the same {} buyers against the baseline (Redis locks + optimistic PostgreSQL)",
            args.buyers
        );
        let baseline = crate::baseline::run(&args, plans(&args), &db, &event).await?;
        report.comparison = Some(comparison(&report, &baseline));
        report.baseline = Some(baseline);
    }
    let json_path = args.out.join(format!("sale-{event}.json"));
    std::fs::write(&json_path, serde_json::to_vec_pretty(&report).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    eprintln!("results: {} and {}", json_path.display(), chart_path.display());
    Ok(report)
}

fn chrono_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A line on stderr every second: a bar on a terminal, a plain line every 10 s otherwise.
async fn progress(ctx: Arc<Ctx>, buyers: u64) {
    let tty = std::io::stderr().is_terminal();
    let mut last_requests = 0usize;
    let mut tick = 0u64;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        tick += 1;
        let done = ctx.done.load(Ordering::Relaxed);
        let requests = ctx.records.lock().map(|r| r.len()).unwrap_or(0);
        let rate = requests - last_requests;
        last_requests = requests;
        let sold = ctx.sold.load(Ordering::Relaxed);
        let filled = (done * 30 / buyers.max(1)) as usize;
        let line = format!(
            "[{}{}] {done}/{buyers} buyers done · {sold} tickets sold · {rate} req/s · {} s",
            "#".repeat(filled),
            " ".repeat(30 - filled),
            ctx.started.elapsed().as_secs()
        );
        if tty {
            eprint!("\r{line}");
        } else if tick.is_multiple_of(10) {
            eprintln!("{line}");
        }
    }
}

/// The side-by-side table of the two runs.
pub fn comparison(platform: &SaleReport, baseline: &BaselineReport) -> Value {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_grow_across_resets_and_late_objects() {
        let mut last = BTreeMap::new();
        let read = |v: &[(&str, u64)]| v.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect::<Vec<_>>();
        assert_eq!(increase(&mut last, read(&[("queue-0", 10), ("inventory", 5)])), 0, "the base");
        assert_eq!(increase(&mut last, read(&[("queue-0", 15), ("inventory", 9)])), 9);
        // The inventory object was evicted and started again from zero; a new shard woke.
        assert_eq!(increase(&mut last, read(&[("queue-0", 15), ("inventory", 3), ("queue-1", 4)])), 7);
        assert_eq!(increase(&mut last, read(&[("queue-0", 16), ("inventory", 3), ("queue-1", 4)])), 1);
    }
}
