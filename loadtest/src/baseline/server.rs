//! The baseline as a service, in its own process like the core: the design most ticketing
//! write-ups propose, behind HTTP so that its buyers pay the same kind of hop as the platform's.
//!
//! - `GET /seats`: the seats sold nowhere and locked by nobody (PostgreSQL's `available` rows minus
//!   Redis's locks), computed at most once a second and shared (the edge caches availability for a
//!   second too).
//! - `POST /holds` `{buyer, seats}`: `SET lock:<run>:<seat> <buyer> NX PX <hold>` for each seat; on
//!   a refusal the locks taken are given back and the answer is 409. Then the seats' versions are
//!   read and returned: the optimistic check the sale will make.
//! - `POST /orders` `{buyer, seats}`: the locks are extended to the payment window if they are still
//!   the buyer's (compare-and-extend; 409 when one lapsed and was taken), and the order is written.
//! - `POST /orders/{id}/pay` `{buyer, seats}`: the money is taken, then each seat is sold by
//!   `UPDATE … WHERE version = <read when holding>`; if one moved, the whole sale is rolled back and
//!   the money is refunded. The locks are released (compare-and-delete).
//! - `POST /orders/{id}/decline` `{buyer, seats}`: the order is cancelled, the locks released.
//!
//! An abandoned payment does nothing: its locks lapse.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use sqlx::PgPool;

use super::locks::Locks;

#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Where to listen; the bound address is printed as the first line of stdout.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    #[arg(long, default_value = "127.0.0.1:6379")]
    pub redis: String,
    /// The run whose seats and locks this serves (`baseline_seats.run`, `lock:<run>:*`).
    #[arg(long)]
    pub run: String,
    #[arg(long)]
    pub hold_ms: u64,
    #[arg(long)]
    pub payment_ms: u64,
    /// PostgreSQL connections (the core's default pool is 16).
    #[arg(long, default_value_t = 16)]
    pub pool: u32,
}

struct Srv {
    db: PgPool,
    redis: Locks,
    run: String,
    hold_ms: u64,
    payment_ms: u64,
    free: tokio::sync::Mutex<Option<(Instant, Arc<Vec<String>>)>>,
}

impl Srv {
    fn key(&self, seat: &str) -> String {
        format!("lock:{}:{seat}", self.run)
    }

    async fn release(&self, buyer: &str, seats: &[String]) {
        for seat in seats {
            let _ = self.redis.release(&self.key(seat), buyer).await;
        }
    }
}

/// A failure of this service (PostgreSQL or Redis): 503, as the core answers.
fn unavailable(e: impl std::fmt::Display) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "type": "unavailable", "detail": e.to_string() })))
        .into_response()
}

fn conflict(detail: &str) -> Response {
    (StatusCode::CONFLICT, Json(json!({ "type": "conflict", "detail": detail }))).into_response()
}

/// Serves until the parent kills the process.
pub async fn serve(args: ServerArgs) -> Result<(), String> {
    let db = sqlx::postgres::PgPoolOptions::new()
        .max_connections(args.pool)
        .acquire_timeout(Duration::from_secs(30))
        .connect(&args.database_url)
        .await
        .map_err(|e| format!("database: {e}"))?;
    let redis = Locks::new(&args.redis)?;
    redis.ping().await?;
    let app = router(db, redis, &args.run, args.hold_ms, args.payment_ms);
    let listener =
        tokio::net::TcpListener::bind(&args.listen).await.map_err(|e| format!("{}: {e}", args.listen))?;
    println!("{}", listener.local_addr().map_err(|e| e.to_string())?);
    axum::serve(listener, app).await.map_err(|e| e.to_string())
}

/// The service's routes for one run.
pub fn router(db: PgPool, redis: Locks, run: &str, hold_ms: u64, payment_ms: u64) -> Router {
    let srv = Arc::new(Srv {
        db,
        redis,
        run: run.to_owned(),
        hold_ms,
        payment_ms,
        free: tokio::sync::Mutex::new(None),
    });
    Router::new()
        .route("/seats", get(seats))
        .route("/holds", post(hold))
        .route("/orders", post(order))
        .route("/orders/{id}/pay", post(pay))
        .route("/orders/{id}/decline", post(decline))
        .with_state(srv)
}

async fn seats(State(srv): State<Arc<Srv>>) -> Response {
    let mut cached = srv.free.lock().await;
    if let Some((at, free)) = cached.as_ref() {
        if at.elapsed() < Duration::from_secs(1) {
            return Json(free.as_ref()).into_response();
        }
    }
    let available: Vec<String> =
        match sqlx::query_scalar("SELECT seat_id FROM baseline_seats WHERE run = $1 AND state = 'available'")
            .bind(&srv.run)
            .fetch_all(&srv.db)
            .await
        {
            Ok(a) => a,
            Err(e) => return unavailable(e),
        };
    let mut free = Vec::with_capacity(available.len());
    for chunk in available.chunks(1000) {
        let keys: Vec<String> = chunk.iter().map(|s| srv.key(s)).collect();
        match srv.redis.free(&keys).await {
            Ok(unlocked) => {
                free.extend(chunk.iter().zip(unlocked).filter(|(_, u)| *u).map(|(s, _)| s.clone()))
            }
            Err(e) => return unavailable(e),
        }
    }
    let free = Arc::new(free);
    *cached = Some((Instant::now(), free.clone()));
    Json(free.as_ref()).into_response()
}

#[derive(Deserialize)]
struct HoldBody {
    buyer: String,
    seats: Vec<String>,
}

async fn hold(State(srv): State<Arc<Srv>>, Json(body): Json<HoldBody>) -> Response {
    if body.seats.is_empty() || body.seats.len() > 8 {
        return (StatusCode::BAD_REQUEST, Json(json!({ "type": "bad-seats" }))).into_response();
    }
    let mut locked = Vec::new();
    for seat in &body.seats {
        match srv.redis.lock(&srv.key(seat), &body.buyer, srv.hold_ms).await {
            Ok(false) => break,
            Ok(true) => locked.push(seat.clone()),
            Err(e) => {
                srv.release(&body.buyer, &locked).await;
                return unavailable(e);
            }
        }
    }
    if locked.len() < body.seats.len() {
        srv.release(&body.buyer, &locked).await;
        return conflict("a seat is locked by another buyer");
    }
    let versions: Result<Vec<(String, i32)>, _> =
        sqlx::query_as("SELECT seat_id, version FROM baseline_seats WHERE run = $1 AND seat_id = ANY($2) AND state = 'available'")
            .bind(&srv.run)
            .bind(&body.seats)
            .fetch_all(&srv.db)
            .await;
    match versions {
        Ok(v) if v.len() == body.seats.len() => {
            (StatusCode::CREATED, Json(json!({ "seats": v }))).into_response()
        }
        Ok(_) => {
            srv.release(&body.buyer, &locked).await;
            conflict("a seat is already sold")
        }
        Err(e) => {
            srv.release(&body.buyer, &locked).await;
            unavailable(e)
        }
    }
}

#[derive(Deserialize)]
struct OrderBody {
    buyer: String,
    /// The seats and the versions read when holding them.
    seats: Vec<(String, i32)>,
}

async fn order(State(srv): State<Arc<Srv>>, Json(body): Json<OrderBody>) -> Response {
    for (seat, _) in &body.seats {
        match srv.redis.extend(&srv.key(seat), &body.buyer, srv.payment_ms).await {
            Ok(true) => {}
            Ok(false) => return conflict("a lock lapsed and was taken"),
            Err(e) => return unavailable(e),
        }
    }
    let id = super::uuid_v4();
    match sqlx::query(
        "INSERT INTO baseline_orders (id, run, state, seats) VALUES ($1::uuid, $2, 'awaiting_payment', $3)",
    )
    .bind(&id)
    .bind(&srv.run)
    .bind(body.seats.len() as i32)
    .execute(&srv.db)
    .await
    {
        Ok(_) => (StatusCode::CREATED, Json(json!({ "order": id }))).into_response(),
        Err(e) => unavailable(e),
    }
}

async fn decline(
    State(srv): State<Arc<Srv>>,
    Path(id): Path<String>,
    Json(body): Json<OrderBody>,
) -> Response {
    if let Err(e) =
        sqlx::query("UPDATE baseline_orders SET state = 'cancelled' WHERE id = $1::uuid AND run = $2")
            .bind(&id)
            .bind(&srv.run)
            .execute(&srv.db)
            .await
    {
        return unavailable(e);
    }
    let seats: Vec<String> = body.seats.into_iter().map(|s| s.0).collect();
    srv.release(&body.buyer, &seats).await;
    Json(json!({ "state": "cancelled" })).into_response()
}

async fn pay(State(srv): State<Arc<Srv>>, Path(id): Path<String>, Json(body): Json<OrderBody>) -> Response {
    let amount = 4_500 * body.seats.len() as i64;
    let sold = async {
        // The money is taken first (the provider's answer), in its own transaction.
        sqlx::query("UPDATE baseline_orders SET paid_minor = $2 WHERE id = $1::uuid AND run = $3")
            .bind(&id)
            .bind(amount)
            .bind(&srv.run)
            .execute(&srv.db)
            .await?;
        let mut tx = srv.db.begin().await?;
        let mut all = true;
        for (seat, version) in &body.seats {
            let n = sqlx::query(
                "UPDATE baseline_seats SET state = 'sold', version = version + 1, order_id = $4::uuid
                 WHERE run = $1 AND seat_id = $2 AND version = $3",
            )
            .bind(&srv.run)
            .bind(seat)
            .bind(version)
            .bind(&id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            all &= n == 1;
            if n == 1 {
                sqlx::query("INSERT INTO baseline_tickets (order_id, run, seat_id) VALUES ($1::uuid, $2, $3)")
                    .bind(&id)
                    .bind(&srv.run)
                    .bind(seat)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        if all {
            sqlx::query("UPDATE baseline_orders SET state = 'paid' WHERE id = $1::uuid")
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        } else {
            tx.rollback().await?;
            sqlx::query("UPDATE baseline_orders SET state = 'refunded', refunded_minor = paid_minor WHERE id = $1::uuid")
                .bind(&id)
                .execute(&srv.db)
                .await?;
        }
        Ok::<bool, sqlx::Error>(all)
    }
    .await;
    let seats: Vec<String> = body.seats.into_iter().map(|s| s.0).collect();
    srv.release(&body.buyer, &seats).await;
    match sold {
        Ok(true) => Json(json!({ "state": "paid" })).into_response(),
        Ok(false) => Json(json!({ "state": "refunded" })).into_response(),
        Err(e) => unavailable(e),
    }
}
