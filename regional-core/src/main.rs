//! `regional-core`: parse the configuration, set up logging, run the subcommand.

use clap::Parser;
use regional_core::config::{CreateAdminArgs, ProbeArgs, ReplayOutboxArgs, RepublishArgs};
use regional_core::{accounts, db, demo, publishing, telemetry, Command, Config, DatabaseArgs};

fn main() -> std::process::ExitCode {
    let config = Config::parse();
    // Logs and traces first, outside the runtime (the OTLP exporter's HTTP client blocks).
    let telemetry = telemetry::init();
    let outcome = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => {
            let outcome = runtime.block_on(run(config));
            // Blocking work still running (a Kafka consumer closing against a broker that is
            // down) gets a bound, so that the flush below happens within the pod's grace period.
            runtime.shutdown_timeout(std::time::Duration::from_secs(5));
            outcome
        }
        Err(e) => Err(e.into()),
    };
    // Spans still in the batch are exported before the process ends.
    telemetry.shutdown();
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "regional-core failed");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    match config.command {
        Some(Command::Migrate(args)) => db::migrate(&args).await.map_err(Into::into),
        Some(Command::CreateAdmin(args)) => create_admin(args).await,
        Some(Command::SeedDemo(args)) => seed_demo(args).await,
        Some(Command::Republish(args)) => republish(args).await,
        Some(Command::ReplayOutbox(args)) => replay_outbox(args).await,
        Some(Command::Probe(args)) => probe(args).await,
        Some(Command::Serve(args)) => regional_core::serve(args).await,
        None => regional_core::serve(config.serve).await,
    }
}

/// `regional-core create-admin`: migrates, creates the admin, prints the key (to stdout, once).
async fn create_admin(args: CreateAdminArgs) -> Result<(), Box<dyn std::error::Error>> {
    db::migrate(&args.database).await?;
    let pool = db::pool(&args.database)?;
    let made = accounts::create_platform_admin(&pool, &args.email, &args.name)
        .await
        .map_err(|e| format!("create-admin: {e}"))?;
    println!("{}", serde_json::to_string_pretty(&made)?);
    Ok(())
}

/// `regional-core seed-demo`: migrates, seeds the demo, prints what to open.
async fn seed_demo(args: DatabaseArgs) -> Result<(), Box<dyn std::error::Error>> {
    db::migrate(&args).await?;
    let pool = db::pool(&args)?;
    let made = demo::seed(&pool).await?;
    println!("{}", serde_json::to_string_pretty(&made)?);
    Ok(())
}

/// `regional-core republish`: queues the pushes, prints how many.
async fn republish(args: RepublishArgs) -> Result<(), Box<dyn std::error::Error>> {
    let pool = db::pool(&args.database)?;
    let queued = publishing::republish(&pool, args.event).await?;
    if let (Some(event), 0) = (args.event, queued) {
        return Err(
            format!("republish: event {event} is not published, has orders, or does not exist").into()
        );
    }
    println!("{}", serde_json::json!({ "queued": queued }));
    Ok(())
}

/// `regional-core replay-outbox`: marks the range unsent, prints how many.
async fn replay_outbox(args: ReplayOutboxArgs) -> Result<(), Box<dyn std::error::Error>> {
    let pool = db::pool(&args.database)?;
    let marked = regional_core::bus::relay::replay(&pool, args.from_id, args.since, args.until_id).await?;
    println!("{}", serde_json::json!({ "marked_unsent": marked }));
    Ok(())
}

/// `regional-core probe URL`: the health check of an image without a shell.
async fn probe(args: ProbeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(2)).no_proxy().build()?;
    let status = client.get(&args.url).send().await?.status();
    if status != reqwest::StatusCode::OK {
        return Err(format!("probe: {} answered {status}", args.url).into());
    }
    Ok(())
}
