//! `regional-core`: parse the configuration, set up logging, run the subcommand.

use clap::Parser;
use regional_core::{db, Command, Config};
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
