//! `regional-core`: parse the configuration, set up logging, run the subcommand.

use clap::Parser;
use regional_core::config::{CreateAdminArgs, ProbeArgs, ReplayOutboxArgs, RepublishArgs};
use regional_core::{accounts, db, demo, publishing, Command, Config, DatabaseArgs};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    if std::env::var("LOG_FORMAT").as_deref() == Ok("json") {
        tracing_subscriber::fmt().json().with_env_filter(filter).init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let outcome = match config.command {
        Some(Command::Migrate(args)) => db::migrate(&args).await.map_err(Into::into),
        Some(Command::CreateAdmin(args)) => create_admin(args).await,
        Some(Command::SeedDemo(args)) => seed_demo(args).await,
        Some(Command::Republish(args)) => republish(args).await,
        Some(Command::ReplayOutbox(args)) => replay_outbox(args).await,
        Some(Command::Probe(args)) => probe(args).await,
        Some(Command::Serve(args)) => regional_core::serve(args).await,
        None => regional_core::serve(config.serve).await,
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "regional-core failed");
            std::process::ExitCode::FAILURE
        }
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
