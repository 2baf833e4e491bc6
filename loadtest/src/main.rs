//! The load generator and benchmarks. Every run is bounded in count and time, targets loopback
//! (or the URL given), and prints machine-readable JSON.
//!
//! - `loadtest http`   GET one URL (the health chain by default) at a concurrency
//! - `loadtest ledger` the hold ledger natively (holds per second, expiry sweep cost)
//! - `loadtest holds`  2-seat holds through the edge and its objects (one object or sharded)
//! - `loadtest queue`  joins and polls of the waiting room through the edge (DO requests per poll)
//! - `loadtest checkout` hold → checkout → test payment → paid, end to end (checkouts per second)
//! - `loadtest sale`   a whole flash sale (line, challenge, admission, seats, holds, checkout,
//!   payment) by N buyers, then the audit; results as JSON and an SVG chart
//! - `loadtest audit`  the audit alone, of an event a `sale` made
//! - `loadtest baseline-server` (hidden) the design `sale --baseline` compares with, as a service

mod audit;
mod baseline;
mod chart;
mod checkout;
mod cpu;
mod edge;
mod holds;
mod inspector;
mod ledger_bench;
mod queue;
mod sale;
mod sample;
mod summary;

use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

/// What the load generator says it is (the edge refuses requests without a User-Agent).
pub const USER_AGENT: &str = concat!("ticketing-loadtest/", env!("CARGO_PKG_VERSION"));
use summary::{drive, status_of};

#[derive(Debug, Parser)]
#[command(name = "loadtest", about = "Bounded load and benchmarks for the ticketing platform")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// GET one URL repeatedly.
    Http(HttpArgs),
    /// Benchmark the hold ledger natively.
    Ledger {
        /// Rounds of filling a 20,000-seat map with 2-seat holds.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1000))]
        rounds: u64,
    },
    /// Place 2-seat holds through the edge.
    Holds(holds::HoldsArgs),
    /// Join and poll the waiting room through the edge.
    Queue(queue::QueueArgs),
    /// Print an event's objects' statistics (signed core call).
    Stats(holds::StatsArgs),
    /// Buy end to end: hold, checkout, test payment, paid.
    Checkout(checkout::CheckoutArgs),
    /// Play a flash sale and audit it (exits non-zero when the audit finds a violation).
    Sale(Box<sale::plan::SaleArgs>),
    /// Audit an event a `sale` made.
    Audit(AuditArgs),
    /// The baseline design as a service (started by `sale --baseline`, one run's seats).
    #[command(hide = true)]
    BaselineServer(baseline::server::ServerArgs),
}

#[derive(Debug, clap::Args)]
struct AuditArgs {
    #[arg(long, default_value = "http://127.0.0.1:8787")]
    edge: String,
    #[arg(long)]
    event: String,
    /// The event's seats (the sale's `--seats`).
    #[arg(long)]
    seats: u64,
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    #[arg(long, env = "CORE_SIGNING_KEY", hide_env_values = true)]
    core_signing_key: String,
}

#[derive(Debug, clap::Args)]
struct HttpArgs {
    /// URL to request (GET).
    #[arg(long, default_value = "http://127.0.0.1:8787/healthz")]
    url: String,
    /// Total requests (at most 1,000,000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    requests: u64,
    /// Concurrent clients (at most 1024).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024))]
    concurrency: u64,
    /// Hard stop, in seconds (at most 600).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=600))]
    max_seconds: u64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Each command answers its report and whether it passed (a sale or an audit fails on a
    // violation, with its report still printed).
    let (name, outcome) = match cli.command {
        Command::Http(args) => ("http", Ok(passed(http(args).await))),
        Command::Ledger { rounds } => ("ledger", Ok(passed(ledger_bench::run(rounds as usize)))),
        Command::Holds(args) => ("holds", holds::run(args).await.map(passed)),
        Command::Checkout(args) => ("checkout", checkout::run(args).await.map(passed)),
        Command::Queue(args) => ("queue", queue::run(args).await.map(passed)),
        Command::Stats(args) => ("stats", holds::stats(args).await.map(passed)),
        Command::BaselineServer(args) => {
            ("baseline-server", baseline::server::serve(args).await.map(|()| None))
        }
        Command::Sale(args) => ("sale", sale::run(*args).await.map(|r| Some((json(&r), r.audit.clean)))),
        Command::Audit(args) => ("audit", run_audit(args).await.map(|a| Some((json(&a), a.clean)))),
    };
    match outcome {
        Ok(Some((report, clean))) => {
            println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            if clean {
                return std::process::ExitCode::SUCCESS;
            }
            eprintln!("loadtest {name}: THE AUDIT FOUND VIOLATIONS (see the report above)");
            std::process::ExitCode::FAILURE
        }
        Ok(None) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadtest {name}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn json(report: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(report).unwrap_or_default()
}

/// A report with nothing to fail on.
fn passed(report: impl serde::Serialize) -> Option<(serde_json::Value, bool)> {
    Some((json(&report), true))
}

async fn http(args: HttpArgs) -> serde_json::Value {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_idle_timeout(edge::IDLE_CONNECTION)
        .build()
        .unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let url = args.url.clone();
    let summary = drive(args.concurrency, args.requests as usize, deadline, move |_| {
        let (client, url) = (client.clone(), url.clone());
        async move { status_of(client.get(&url).send().await).await }
    })
    .await;
    serde_json::json!({ "url": args.url, "concurrency": args.concurrency, "result": summary })
}

async fn run_audit(args: AuditArgs) -> Result<audit::Audit, String> {
    let http = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .pool_idle_timeout(edge::IDLE_CONNECTION)
        .build()
        .map_err(|e| e.to_string())?;
    let signer = shared_types::token::TokenSigner::parse(&args.core_signing_key)
        .map_err(|e| format!("CORE_SIGNING_KEY: {e}"))?;
    let db = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&args.database_url)
        .await
        .map_err(|e| format!("database: {e}"))?;
    audit::audit(&http, &signer, &args.edge, &db, &args.event, &sale::plan::seat_ids(args.seats)).await
}
