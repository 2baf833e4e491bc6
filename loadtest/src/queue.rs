//! The waiting room through the edge: publish an event with a line (admission paused, so the line
//! only grows), let many buyers join (each its own visitor, solving the proof of work when asked),
//! then poll their places, and report join and poll throughput and latency, the Durable Object
//! requests each join and each poll cost (read from the objects' own counters), and each queue
//! shard's storage and wasm memory.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use serde_json::{json, Value};
use shared_types::token::TokenSigner;
use shared_types::waiting_room::pow_solve;

use crate::edge::{core_call, nonce, visitor_cookie};
use crate::ledger_bench::seat_map;
use crate::summary::{drive, Summary};
use shared_types::internal_api::InternalRoute;

#[derive(Debug, Args)]
pub struct QueueArgs {
    /// The edge's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8787")]
    edge: String,
    /// Buyers who join (each a new visitor); at most 1,000,000.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    buyers: u64,
    /// Status polls per buyer after everyone joined.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=100))]
    polls: u64,
    /// Queue shards of the event.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    shards: u16,
    /// Proof-of-work difficulty (0: no bot check).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=20))]
    difficulty: u8,
    /// Concurrent clients (at most 1024).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    concurrency: u64,
    /// Hard stop for each phase, in seconds (at most 1800).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=1800))]
    max_seconds: u64,
    /// The core's signing key, to publish the event and read the statistics.
    #[arg(long, env = "CORE_SIGNING_KEY", hide_env_values = true)]
    core_signing_key: String,
}

#[derive(Debug, Serialize)]
pub struct QueueReport {
    pub event: String,
    pub buyers: u64,
    pub shards: u16,
    pub difficulty: u8,
    pub concurrency: u64,
    /// Challenge requests (only with a proof of work).
    pub challenges: Option<Summary>,
    pub joins: Summary,
    pub polls: Summary,
    /// CPU per join and per status poll by process (workerd's is the objects' and the Worker's).
    pub cpu_per_join: crate::cpu::Spent,
    pub cpu_per_poll: crate::cpu::Spent,
    /// Durable Object requests during the joins, per join; during the polls, per poll.
    pub do_requests_per_join: f64,
    pub do_requests_per_poll: f64,
    /// The queue shards' write statements during the joins, per join, and during the polls, per
    /// poll (`storage_writes` of their stats; the coordinator's syncs of the shards included).
    pub storage_writes_per_join: Option<f64>,
    pub storage_writes_per_poll: Option<f64>,
    /// The counters behind those figures: (coordinator by route, shards by route), before and after each phase.
    pub counters: Value,
    /// Per queue shard at the end: places, storage bytes, wasm memory.
    pub shard_objects: Vec<Value>,
    pub storage_bytes_per_place: f64,
}

/// Every request any of the event's waiting-room objects has taken: coordinator + shards.
fn total_requests(stats: &Value) -> u64 {
    let sum = |v: &Value| v.as_object().map_or(0, |m| m.values().filter_map(Value::as_u64).sum::<u64>());
    let coordinator = sum(&stats["requests"]);
    let shards: u64 = stats["shards"].as_array().into_iter().flatten().map(|s| sum(&s["requests"])).sum();
    coordinator + shards
}

/// The queue shards' write statements so far (`None` when a shard did not say).
fn storage_writes(stats: &Value) -> Option<u64> {
    stats["shards"].as_array().into_iter().flatten().map(|s| s["storage_writes"].as_u64()).sum()
}

/// Requests the objects took for their own work (ticks, syncs, stats reads): not caused by buyers.
fn background_requests(stats: &Value) -> u64 {
    let coordinator = ["stats"].iter().filter_map(|k| stats["requests"][k].as_u64()).sum::<u64>();
    let shards: u64 = stats["shards"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| ["sync", "other"].iter().filter_map(|k| s["requests"][k].as_u64()).sum::<u64>())
        .sum();
    coordinator + shards
}

/// A solved challenge: the visitor cookie it came with, the challenge, the solution.
type Proof = (String, String, String);

pub async fn run(args: QueueArgs) -> Result<QueueReport, String> {
    let core = crate::edge::core_signer(&args.core_signing_key)?;
    let client = crate::edge::http_client(30, usize::MAX)?;
    let event = format!("bench-q-{}", nonce().replace(['-', '_'], "x"));
    let inventory = seat_map(&event, 1, 1, 50);
    let body = serde_json::to_vec(&inventory).map_err(|e| e.to_string())?;
    let (status, answer) =
        core_call(&client, &core, &args.edge, &event, &InternalRoute::PutInventory, body).await?;
    if status != 200 {
        return Err(format!("publishing failed ({status}): {answer}"));
    }
    let check = if args.difficulty == 0 {
        json!({ "kind": "off" })
    } else {
        json!({ "kind": "proof_of_work", "difficulty": args.difficulty })
    };
    let settings = json!({
        "version": 1,
        "mode": "fifo",
        "paused": true,
        "queue_shards": args.shards,
        "bot": { "check": check, "raise_above_joins_per_minute": 100_000_000 },
        "rate_limits": { "joins_per_visitor_per_minute": 10 },
    });
    let body = serde_json::to_vec(&settings).map_err(|e| e.to_string())?;
    let (status, answer) =
        core_call(&client, &core, &args.edge, &event, &InternalRoute::PutWaitingRoom, body).await?;
    if status != 200 {
        return Err(format!("settings refused ({status}): {answer}"));
    }
    let stats = || {
        let (client, core, edge, event) = (client.clone(), core.clone(), args.edge.clone(), event.clone());
        async move {
            let (status, stats) =
                core_call(&client, &core, &edge, &event, &InternalRoute::WaitingRoom, vec![]).await?;
            if status != 200 {
                return Err(format!("stats failed ({status}): {stats}"));
            }
            Ok::<Value, String>(stats)
        }
    };
    let total = args.buyers as usize;
    let base = format!("{}/api/v1/events/{event}", args.edge);

    // Challenges first (solved here, not timed), then the joins.
    let solved: Arc<Vec<Mutex<Option<Proof>>>> = Arc::new((0..total).map(|_| Mutex::new(None)).collect());
    let challenges = if args.difficulty > 0 {
        let (client, base, solved) = (client.clone(), base.clone(), solved.clone());
        let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
        Some(
            drive(args.concurrency, total, deadline, move |i| {
                let (client, base, solved) = (client.clone(), base.clone(), solved.clone());
                async move {
                    let resp = client.post(format!("{base}/challenge")).send().await.ok()?;
                    let status = resp.status().as_u16();
                    let cookie = visitor_cookie(&resp).unwrap_or_default();
                    let body: Value = resp.json().await.ok()?;
                    let challenge = body["challenge"].as_str()?.to_owned();
                    let difficulty = body["difficulty"].as_u64()? as u8;
                    let solution = tokio::task::spawn_blocking({
                        let c = challenge.clone();
                        move || pow_solve(&c, difficulty)
                    })
                    .await
                    .ok()?;
                    *solved[i].lock().ok()? = Some((cookie, challenge, solution));
                    Some(status)
                }
            })
            .await,
        )
    } else {
        None
    };

    let before_joins = stats().await?;
    let cpu_before_joins = crate::cpu::Snapshot::take(&crate::cpu::STACK)?;
    let tickets: Arc<Vec<Mutex<Option<String>>>> = Arc::new((0..total).map(|_| Mutex::new(None)).collect());
    let joins = {
        let (client, base, solved, tickets) = (client.clone(), base.clone(), solved.clone(), tickets.clone());
        let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
        drive(args.concurrency, total, deadline, move |i| {
            let (client, base, solved, tickets) =
                (client.clone(), base.clone(), solved.clone(), tickets.clone());
            async move {
                let mut request = client.post(format!("{base}/queue"));
                let proof = solved[i].lock().ok()?.clone();
                request = match proof {
                    Some((cookie, challenge, solution)) => request
                        .header("cookie", cookie)
                        .json(&json!({ "challenge": challenge, "solution": solution })),
                    None => request.json(&json!({})),
                };
                let resp = request.send().await.ok()?;
                let status = resp.status().as_u16();
                let body: Value = resp.json().await.ok()?;
                if let Some(ticket) = body["ticket"].as_str() {
                    *tickets[i].lock().ok()? = Some(ticket.to_owned());
                }
                Some(status)
            }
        })
        .await
    };
    let cpu_after_joins = crate::cpu::Snapshot::take(&crate::cpu::STACK)?;
    let after_joins = stats().await?;
    let cpu_before_polls = crate::cpu::Snapshot::take(&crate::cpu::STACK)?;

    let polls_total = total * args.polls as usize;
    let polls = {
        let (client, base, tickets) = (client.clone(), base.clone(), tickets.clone());
        let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
        drive(args.concurrency, polls_total, deadline, move |i| {
            let (client, base, tickets) = (client.clone(), base.clone(), tickets.clone());
            async move {
                let ticket = tickets[i % total].lock().ok()?.clone()?;
                let resp = client.get(format!("{base}/queue")).bearer_auth(ticket).send().await.ok()?;
                let status = resp.status().as_u16();
                let _ = resp.bytes().await;
                Some(status)
            }
        })
        .await
    };
    let cpu_after_polls = crate::cpu::Snapshot::take(&crate::cpu::STACK)?;
    let after_polls = stats().await?;

    let caused = |a: &Value, b: &Value| {
        (total_requests(b) - total_requests(a))
            .saturating_sub(background_requests(b) - background_requests(a))
    };
    let per = |n: u64, d: u64| if d == 0 { 0.0 } else { n as f64 / d as f64 };
    let shard_objects: Vec<Value> = after_polls["shards"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            json!({
                "places": s["pre_joined"].as_u64().unwrap_or(0) + s["post_joined"].as_u64().unwrap_or(0),
                "storage_bytes": s["storage_bytes"],
                "wasm_memory_bytes": s["wasm_memory_bytes"],
                "requests": s["requests"],
            })
        })
        .collect();
    let places: u64 = shard_objects.iter().filter_map(|s| s["places"].as_u64()).sum();
    let storage: u64 = shard_objects.iter().filter_map(|s| s["storage_bytes"].as_u64()).sum();
    Ok(QueueReport {
        event,
        buyers: args.buyers,
        shards: args.shards,
        difficulty: args.difficulty,
        concurrency: args.concurrency,
        challenges,
        cpu_per_join: crate::cpu::Spent::between(&cpu_before_joins, &cpu_after_joins).per(joins.ok),
        cpu_per_poll: crate::cpu::Spent::between(&cpu_before_polls, &cpu_after_polls).per(polls.ok),
        do_requests_per_join: per(caused(&before_joins, &after_joins), joins.ok),
        do_requests_per_poll: per(caused(&after_joins, &after_polls), polls.ok),
        storage_writes_per_join: storage_writes(&after_joins)
            .zip(storage_writes(&before_joins))
            .map(|(b, a)| per(b.saturating_sub(a), joins.ok)),
        storage_writes_per_poll: storage_writes(&after_polls)
            .zip(storage_writes(&after_joins))
            .map(|(b, a)| per(b.saturating_sub(a), polls.ok)),
        joins,
        polls,
        counters: json!({
            "before_joins": [before_joins["requests"], before_joins["shards"].as_array().map(|s| s.iter().map(|x| x["requests"].clone()).collect::<Vec<_>>())],
            "after_joins": [after_joins["requests"], after_joins["shards"].as_array().map(|s| s.iter().map(|x| x["requests"].clone()).collect::<Vec<_>>())],
            "after_polls": [after_polls["requests"], after_polls["shards"].as_array().map(|s| s.iter().map(|x| x["requests"].clone()).collect::<Vec<_>>())],
        }),
        shard_objects,
        storage_bytes_per_place: per(storage, places),
    })
}

/// Real admissions for `count` new visitors of `event` (untimed setup for the hold benchmarks):
/// its line is set to let everyone straight in, and each visitor joins and exchanges its ticket.
pub async fn admissions(
    client: &reqwest::Client,
    core: &TokenSigner,
    edge: &str,
    event: &str,
    count: usize,
    concurrency: u64,
) -> Result<Vec<String>, String> {
    let settings = json!({
        "version": 1,
        "mode": "passthrough",
        "bot": { "check": { "kind": "off" } },
        "max_active": 10_000_000,
        "rate_limits": { "joins_per_visitor_per_minute": 10 },
    });
    let body = serde_json::to_vec(&settings).map_err(|e| e.to_string())?;
    let (status, answer) = core_call(client, core, edge, event, &InternalRoute::PutWaitingRoom, body).await?;
    if status != 200 {
        return Err(format!("settings refused ({status}): {answer}"));
    }
    admit(client, edge, event, count, concurrency).await
}

/// A new visitor's ticket. A join that fails (an answer without a ticket, or none) is tried again
/// up to three times, and said on stderr: this is set-up for the hold benchmarks, not what they
/// measure.
async fn join(client: &reqwest::Client, base: &str) -> Option<String> {
    for attempt in 0..4 {
        let answer = match client.post(base).json(&json!({})).send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                match resp.json::<Value>().await {
                    Ok(v) if v["ticket"].is_string() => return v["ticket"].as_str().map(str::to_owned),
                    Ok(v) => format!("{status} {v}"),
                    Err(e) => format!("{status} {e}"),
                }
            }
            Err(e) => e.to_string(),
        };
        eprintln!("join {}: {answer}", if attempt < 3 { "tried again" } else { "failed" });
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Joins `count` new visitors to `event`'s line (which must let them straight in) and exchanges
/// each ticket for an admission token.
pub async fn admit(
    client: &reqwest::Client,
    edge: &str,
    event: &str,
    count: usize,
    concurrency: u64,
) -> Result<Vec<String>, String> {
    let tokens: Arc<Vec<Mutex<Option<String>>>> = Arc::new((0..count).map(|_| Mutex::new(None)).collect());
    let base = format!("{edge}/api/v1/events/{event}/queue");
    let summary = {
        let (client, tokens) = (client.clone(), tokens.clone());
        let deadline = Instant::now() + Duration::from_secs(600);
        drive(concurrency, count, deadline, move |i| {
            let (client, base, tokens) = (client.clone(), base.clone(), tokens.clone());
            async move {
                let ticket = join(&client, &base).await?;
                let resp = client.get(&base).bearer_auth(&ticket).send().await.ok()?;
                let status = resp.status().as_u16();
                let answer: Value = resp.json().await.ok()?;
                *tokens[i].lock().ok()? = answer["admission_token"].as_str().map(str::to_owned);
                Some(status)
            }
        })
        .await
    };
    let tokens: Vec<String> = tokens.iter().filter_map(|t| t.lock().ok().and_then(|t| t.clone())).collect();
    if tokens.len() < count {
        return Err(format!("only {} of {count} admissions ({:?})", tokens.len(), summary.statuses));
    }
    Ok(tokens)
}
