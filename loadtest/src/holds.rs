//! The hold path through the edge: publish a 20,000-seat event (one object, or sharded by
//! section), then place 2-seat holds from many visitors at a bounded concurrency, every request
//! with its own admission token, and report throughput, latency and the objects' statistics
//! (storage, wasm memory). Buyers get real admissions first (untimed: the event's line lets them
//! straight in); core calls are signed with the dev core key.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use serde_json::{json, Value};
use shared_types::inventory::Sharding;
use shared_types::token::TokenSigner;

use crate::edge::{core_call, nonce};
use crate::ledger_bench::seat_map;
use crate::queue::admissions;
use crate::summary::{drive, status_of, Summary};
use shared_types::internal_api::InternalRoute;

#[derive(Debug, Args)]
pub struct HoldsArgs {
    /// The edge's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8787")]
    edge: String,
    /// Sections of the map (the seats are split evenly); with --sharded each is its own object.
    #[arg(long, default_value_t = 8)]
    sections: usize,
    /// Seats in all (rounded down to whole rows of 50).
    #[arg(long, default_value_t = 20_000)]
    seats: usize,
    /// Shard the event by section.
    #[arg(long)]
    sharded: bool,
    /// Holds to place (each of 2 seats, by its own visitor); bounded by the map.
    #[arg(long, default_value_t = 2_000)]
    holds: usize,
    /// Concurrent clients (at most 1024).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    concurrency: u64,
    /// Hard stop, in seconds (at most 600).
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=600))]
    max_seconds: u64,
    /// The core's signing key, to publish the event.
    #[arg(long, env = "CORE_SIGNING_KEY", hide_env_values = true)]
    core_signing_key: String,
}

#[derive(Debug, Serialize)]
pub struct HoldsReport {
    event: String,
    seats: usize,
    sections: usize,
    sharded: bool,
    concurrency: u64,
    publish_seconds: f64,
    holds: Summary,
    /// CPU per hold placed by process (workerd's is the objects' and the Worker's), and the cores
    /// busy on average while holding.
    cpu_per_hold: crate::cpu::Spent,
    cores_busy: f64,
    /// The objects' write statements per hold placed (`storage_writes` of their stats, after the
    /// holds less after publishing; `None` when an object did not say).
    storage_writes_per_hold: Option<f64>,
    /// Per shard, right after publishing: storage bytes and the isolate's wasm memory.
    objects_after_publish: Vec<Value>,
    /// Per shard, after the holds.
    objects: Vec<Value>,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    #[arg(long, default_value = "http://127.0.0.1:8787")]
    edge: String,
    #[arg(long)]
    event: String,
    /// The waiting room's objects (coordinator and queue shards) instead of the inventory's.
    #[arg(long)]
    waiting_room: bool,
    /// With `--waiting-room`: the coordinator's whole answer (view, lines, stock, refusals, shards).
    #[arg(long)]
    raw: bool,
    #[arg(long, env = "CORE_SIGNING_KEY", hide_env_values = true)]
    core_signing_key: String,
}

/// One event's objects' statistics.
pub async fn stats(args: StatsArgs) -> Result<Vec<Value>, String> {
    let core = crate::edge::core_signer(&args.core_signing_key)?;
    let client = crate::edge::http_client(30, usize::MAX)?;
    if args.waiting_room {
        let (status, stats) =
            core_call(&client, &core, &args.edge, &args.event, &InternalRoute::WaitingRoom, vec![]).await?;
        if status != 200 {
            return Err(format!("stats failed ({status}): {stats}"));
        }
        if args.raw {
            return Ok(vec![stats]);
        }
        let shards = stats["shards"].as_array().cloned().unwrap_or_default();
        return Ok(shards
            .into_iter()
            .map(|s| {
                json!({
                    "places": s["pre_joined"].as_u64().unwrap_or(0) + s["post_joined"].as_u64().unwrap_or(0),
                    "storage_bytes": s["storage_bytes"],
                    "wasm_memory_bytes": s["wasm_memory_bytes"],
                })
            })
            .collect());
    }
    object_stats(&client, &core, &args.edge, &args.event).await
}

/// Each shard's live holds, storage bytes and the memory of the WebAssembly instance its object
/// runs in, from the signed stats route.
pub(crate) async fn object_stats(
    client: &reqwest::Client,
    core: &TokenSigner,
    edge: &str,
    event: &str,
) -> Result<Vec<Value>, String> {
    let (status, stats) = core_call(client, core, edge, event, &InternalRoute::Stats, vec![]).await?;
    if status != 200 {
        return Err(format!("stats failed ({status}): {stats}"));
    }
    Ok(stats["shards"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            json!({
                "shard": s["shard"],
                "live_holds": s["stats"]["stats"]["live_holds"],
                "storage_bytes": s["stats"]["storage_bytes"],
                "storage_writes": s["stats"]["storage_writes"],
                "wasm_memory_bytes": s["stats"]["wasm_memory_bytes"],
            })
        })
        .collect())
}

pub async fn run(args: HoldsArgs) -> Result<HoldsReport, String> {
    let core = crate::edge::core_signer(&args.core_signing_key)?;
    let client = crate::edge::http_client(30, usize::MAX)?;
    let per_row = 50;
    let rows = (args.seats / args.sections / per_row).max(1);
    let event = format!(
        "bench-{}-{}",
        nonce().replace(['-', '_'], "x"),
        if args.sharded { "sharded" } else { "single" }
    );
    let mut inventory = seat_map(&event, args.sections, rows, per_row);
    inventory.sharding = if args.sharded { Sharding::BySection } else { Sharding::None };
    let seats = inventory.seat_map.seat_count();

    let started = Instant::now();
    let body = serde_json::to_vec(&inventory).map_err(|e| e.to_string())?;
    let (status, answer) =
        core_call(&client, &core, &args.edge, &event, &InternalRoute::PutInventory, body).await?;
    if status != 200 {
        return Err(format!("publishing failed ({status}): {answer}"));
    }
    let publish_seconds = started.elapsed().as_secs_f64();
    let objects_after_publish = object_stats(&client, &core, &args.edge, &event).await?;

    // Every hold: two adjacent seats, one visitor with a real admission (joined before timing).
    let pairs: Vec<(String, Vec<String>)> = inventory
        .seat_map
        .sections
        .iter()
        .flat_map(|s| {
            s.rows.iter().flat_map(move |r| {
                r.seats
                    .chunks(2)
                    .map(move |pair| (s.id.to_string(), pair.iter().map(|x| x.id.to_string()).collect()))
            })
        })
        .take(args.holds.min(seats / 2))
        .collect();
    // Untimed set-up, at most 32 at once: one local workerd drops some of 128 new connections
    // opened together ("error sending request", before and after 2026-12-05 alike), and the
    // admissions are not what this measures.
    let tokens =
        admissions(&client, &core, &args.edge, &event, pairs.len(), args.concurrency.min(32)).await?;
    let holds: Vec<(String, Value)> = pairs
        .into_iter()
        .zip(tokens)
        .map(|((section, ids), token)| (token, json!({ "kind": "seats", "seats": ids, "section": section })))
        .collect();
    let total = holds.len();
    let holds = Arc::new(holds);
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let url = format!("{}/api/v1/events/{event}/holds", args.edge);
    let cpu_before = crate::cpu::Snapshot::take(&crate::cpu::STACK)?;
    let started = Instant::now();
    let summary = {
        let client = client.clone();
        drive(args.concurrency, total, deadline, move |i| {
            let (client, url, holds) = (client.clone(), url.clone(), holds.clone());
            async move {
                let (token, body) = &holds[i];
                // With a key of its own, as the buyer's page sends each hold (`assets/buy.js`).
                let key = format!("bench-hold-{i}");
                status_of(
                    client
                        .post(&url)
                        .bearer_auth(token)
                        .header("idempotency-key", key)
                        .json(body)
                        .send()
                        .await,
                )
                .await
            }
        })
        .await
    };
    let cpu = crate::cpu::Spent::between(&cpu_before, &crate::cpu::Snapshot::take(&crate::cpu::STACK)?);
    let seconds = started.elapsed().as_secs_f64();

    let objects = object_stats(&client, &core, &args.edge, &event).await?;
    let writes = |shards: &[Value]| -> Option<f64> {
        shards.iter().map(|s| s["storage_writes"].as_f64()).sum::<Option<f64>>()
    };
    let storage_writes_per_hold = writes(&objects)
        .zip(writes(&objects_after_publish))
        .filter(|_| summary.ok > 0)
        .map(|(after, before)| (after - before) / summary.ok as f64);
    Ok(HoldsReport {
        event,
        seats,
        sections: args.sections,
        sharded: args.sharded,
        concurrency: args.concurrency,
        publish_seconds,
        cpu_per_hold: cpu.per(summary.ok),
        cores_busy: cpu.cores_busy(seconds),
        storage_writes_per_hold,
        holds: summary,
        objects_after_publish,
        objects,
    })
}
