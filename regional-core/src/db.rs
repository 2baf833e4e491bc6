//! The database: the connection pool and the migrations embedded in the binary.

use std::time::Duration;

use sqlx::migrate::{MigrateDatabase, Migrator};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres};

use crate::config::DatabaseArgs;

/// Every migration in `regional-core/migrations`, compiled in.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Creates the database if it does not exist yet, then applies pending migrations.
pub async fn migrate(args: &DatabaseArgs) -> Result<(), sqlx::Error> {
    let url = args.database_url.expose();
    if !Postgres::database_exists(url).await? {
        tracing::info!(database = %args.database_url, "creating database");
        match Postgres::create_database(url).await {
            Ok(()) => {}
            // Another replica starting at the same moment made it first: what we wanted.
            Err(e) if made_concurrently(&e) => {
                tracing::info!(database = %args.database_url, "the database was created by another process")
            }
            Err(e) => return Err(e),
        }
    }
    let pool = PgPoolOptions::new().max_connections(1).connect(url).await?;
    MIGRATOR.run(&pool).await?;
    pool.close().await;
    Ok(())
}

/// True when CREATE DATABASE lost a race to another session: `duplicate_database` (42P04), or
/// the catalog's unique index when both got past the existence check at once (23505).
fn made_concurrently(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().is_some_and(|c| c == "42P04" || c == "23505"))
}

/// A pool that connects on demand, so the core starts (and reports the database as down on
/// `/healthz`) even while PostgreSQL is unreachable.
pub fn pool(args: &DatabaseArgs) -> Result<PgPool, sqlx::Error> {
    pool_of(args, args.max_connections)
}

/// The background work's own pool (`DATABASE_BACKGROUND_CONNECTIONS`): the outbox relay (which
/// keeps one connection for its lock), the consumers, mail, reminders, publishing and pruning wait
/// for these, never for checkout's.
pub fn background_pool(args: &DatabaseArgs, connections: u32) -> Result<PgPool, sqlx::Error> {
    pool_of(args, connections)
}

fn pool_of(args: &DatabaseArgs, connections: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(Duration::from_secs(3))
        .connect_lazy(args.database_url.expose())
}

/// The newest migration applied successfully, or `None` on an empty database.
pub async fn migration_version(pool: &PgPool) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success").fetch_one(pool).await
}

/// The newest migration this binary knows.
pub fn latest_known_migration() -> Option<i64> {
    MIGRATOR.iter().map(|m| m.version).max()
}
