//! The buyers' sign-in links (docs/privacy.md, "A buyer's own orders"): no account and no
//! password; a buyer who lost their mails gives their address and gets a link, valid
//! [`SIGN_IN_MINUTES`] minutes, to a page that lists their orders and the tickets given to them,
//! each with the link that opens it (a fresh order or transfer token).
//!
//! The answer to a request is the same whether the address has orders or not (no one learns who
//! bought), and a mail goes only to an address that has something. Bounds: [`PER_ADDRESS`]
//! requests an address an hour, [`PER_CLIENT`] a client an hour (`429` beyond, with
//! `Retry-After`), and the mail sender's own per-recipient cap. The client bound holds only where
//! the core tells clients apart (`CORE_TRUSTED_PROXIES` names the edge): without it every buyer
//! comes from the edge's address, and one bound for all would let anyone lock everyone out. Every
//! `202` waits for the same floor ([`ANSWER_FLOOR`]), so that its time does not tell either.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::Subject;
use crate::api::JsonBody;
use crate::error::{ApiError, Result};
use crate::origin::Origin;
use crate::state::AppState;
use crate::tokens::{order_token, sign_in_token, signed_in, transfer_token, SIGN_IN_MINUTES};

/// Sign-in requests for one address in an hour.
pub const PER_ADDRESS: i64 = 3;
/// Sign-in requests from one client address in an hour.
pub const PER_CLIENT: i64 = 20;
/// The least time a sign-in request takes to answer (far above what its work takes), so that the
/// time does not tell a known address from an unknown one.
const ANSWER_FLOOR: std::time::Duration = std::time::Duration::from_millis(250);
/// Most orders (and, apart, transfers) the list shows, newest first.
pub const LIST_MAX: i64 = 200;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignInRequest {
    /// The address the orders were bought with (or tickets given to).
    #[schema(min_length = 3, max_length = 254)]
    pub email: String,
}

/// The same answer whatever the address.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SignInAccepted {
    pub detail: String,
    /// How long the link works, in minutes.
    pub valid_minutes: i64,
}

/// `POST /api/v1/buyer/sign-in`: mails a sign-in link to the address, if it has orders or tickets.
#[utoipa::path(post, path = "/api/v1/buyer/sign-in", tag = "checkout", request_body = SignInRequest,
    responses((status = 202, body = SignInAccepted, description = "a link is on its way if the address has orders or tickets here"),
              crate::api::Problems))]
pub async fn request_sign_in(
    State(state): State<AppState>,
    origin: Origin,
    JsonBody(req): JsonBody<SignInRequest>,
) -> Result<(StatusCode, Json<SignInAccepted>)> {
    let mail = state.mail.clone().ok_or_else(|| {
        ApiError::Unavailable("sign-in links are not configured on this core (CORE_SIGNING_KEY)".into())
    })?;
    let subject =
        Subject::parse(&req.email).ok_or_else(|| ApiError::field("email", "must be an e-mail address"))?;
    let address_key = hex::encode(Sha256::digest(subject.as_str().as_bytes()));
    let client = origin.ip.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
    // Every request takes as long, whether the address is known or not (the mail is rendered for
    // each, and the answer waits for the same floor): its time tells nobody who bought.
    let answer_at = tokio::time::Instant::now() + ANSWER_FLOOR;
    let token = sign_in_token(&mail.signer, subject.as_str());
    let context = json!({
        "sign_in": {
            "link": format!("{}/my-tickets#{token}", mail.buyer_url.trim_end_matches('/')),
            "minutes": SIGN_IN_MINUTES,
        },
    });
    let rendered = crate::notifications::templates::render("sign_in_link", &context)?;
    let by_client = !state.trusted_proxies.0.is_empty();
    let mut tx = state.db.begin().await?;
    // One request of an address (and of a client, where clients are told apart) at a time, so
    // that the bounds hold under concurrency.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('sign-in:' || $1, 0))")
        .bind(&address_key)
        .execute(&mut *tx)
        .await?;
    if by_client {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('sign-in-client:' || $1, 0))")
            .bind(&client)
            .execute(&mut *tx)
            .await?;
    }
    let (from_address, from_client): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE address_key = $1), count(*) FILTER (WHERE client = $2)
         FROM sign_in_requests WHERE at > now() - interval '1 hour' AND (address_key = $1 OR client = $2)",
    )
    .bind(&address_key)
    .bind(&client)
    .fetch_one(&mut *tx)
    .await?;
    if from_address >= PER_ADDRESS {
        return Err(ApiError::RateLimited { reason: "sign_in_address", retry_after_secs: 3600 });
    }
    if by_client && from_client >= PER_CLIENT {
        return Err(ApiError::RateLimited { reason: "sign_in_client", retry_after_secs: 3600 });
    }
    sqlx::query("INSERT INTO sign_in_requests (address_key, client) VALUES ($1, $2)")
        .bind(&address_key)
        .bind(&client)
        .execute(&mut *tx)
        .await?;
    let known: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM orders WHERE lower(email) = $1 AND state <> 'created')
             OR EXISTS (SELECT 1 FROM tickets WHERE lower(holder_email) = $1)
             OR EXISTS (SELECT 1 FROM ticket_transfers WHERE lower(to_email) = $1 AND state IN ('offered', 'accepted'))",
    )
    .bind(subject.as_str())
    .fetch_one(&mut *tx)
    .await?;
    if known {
        let dedup = format!("sign_in:{}", Uuid::new_v4());
        let to = req.email.trim();
        crate::notifications::queue(&mut tx, &dedup, "sign_in_link", to, &rendered, &[], None, None).await?;
    }
    tx.commit().await?;
    tokio::time::sleep_until(answer_at).await;
    Ok((
        StatusCode::ACCEPTED,
        Json(SignInAccepted {
            detail: "if this address has orders or tickets here, a sign-in link is on its way".into(),
            valid_minutes: SIGN_IN_MINUTES,
        }),
    ))
}

/// One of the buyer's orders.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct MyOrder {
    pub id: Uuid,
    pub event_id: Uuid,
    pub event_title: String,
    pub venue: String,
    pub starts_at: DateTime<Utc>,
    pub time_zone: String,
    pub state: String,
    pub currency: String,
    pub total_minor: i64,
    pub tickets: i64,
    pub created_at: DateTime<Utc>,
    #[serde(skip)]
    pub visitor_id: String,
    /// The order's page: `/orders/{id}#<order token>` (relative to the shop).
    #[sqlx(skip)]
    pub link: String,
}

/// A ticket offered or given to the buyer by someone else.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct MyTransfer {
    pub id: Uuid,
    pub event_id: Uuid,
    pub event_title: String,
    pub venue: String,
    pub starts_at: DateTime<Utc>,
    pub time_zone: String,
    /// `offered` (waiting for them) or `accepted`.
    pub state: String,
    pub created_at: DateTime<Utc>,
    #[serde(skip)]
    pub expires_at: DateTime<Utc>,
    #[serde(skip)]
    pub ends_at: DateTime<Utc>,
    /// The transfer's page: `/transfers/{id}#<transfer token>` (relative to the shop).
    #[sqlx(skip)]
    pub link: String,
}

/// What a sign-in link shows.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MyOrders {
    pub email: String,
    /// Newest first, at most 200.
    pub orders: Vec<MyOrder>,
    /// Tickets offered or given to this address, newest first, at most 200.
    pub transfers: Vec<MyTransfer>,
    /// When the sign-in link stops working.
    pub expires_at: DateTime<Utc>,
}

/// `GET /api/v1/buyer/orders`: the orders and received tickets of the address a sign-in token was
/// mailed to, each with a link that opens it.
#[utoipa::path(get, path = "/api/v1/buyer/orders", tag = "checkout", security(("sign_in_token" = [])),
    responses((status = 200, body = MyOrders), crate::api::Problems))]
pub async fn my_orders(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<MyOrders>> {
    let co = state.checkout()?;
    let (address, exp) = signed_in(&co.trusted_keys(), &headers)?;
    let mut orders: Vec<MyOrder> = sqlx::query_as(
        "SELECT o.id, o.event_id, e.title AS event_title, v.name AS venue, e.starts_at, e.time_zone, o.state,
                o.currency, o.total_minor, o.created_at, o.visitor_id,
                (SELECT count(*) FROM tickets t WHERE t.order_id = o.id AND t.state <> 'void') AS tickets
         FROM orders o JOIN events e ON e.id = o.event_id JOIN venues v ON v.id = e.venue_id
         WHERE lower(o.email) = $1 AND o.state <> 'created'
         ORDER BY o.created_at DESC, o.id DESC LIMIT $2",
    )
    .bind(&address)
    .bind(LIST_MAX)
    .fetch_all(&state.db)
    .await?;
    for o in &mut orders {
        o.link = format!("/orders/{}#{}", o.id, order_token(&co.signer, o.id, o.event_id, &o.visitor_id));
    }
    let mut transfers: Vec<MyTransfer> = sqlx::query_as(
        "SELECT x.id, x.event_id, e.title AS event_title, v.name AS venue, e.starts_at, e.time_zone, x.state,
                x.created_at, x.expires_at, e.ends_at
         FROM ticket_transfers x JOIN events e ON e.id = x.event_id JOIN venues v ON v.id = e.venue_id
         WHERE lower(x.to_email) = $1 AND x.state IN ('offered', 'accepted')
         ORDER BY x.created_at DESC, x.id DESC LIMIT $2",
    )
    .bind(&address)
    .bind(LIST_MAX)
    .fetch_all(&state.db)
    .await?;
    for x in &mut transfers {
        let token = transfer_token(&co.signer, x.id, x.event_id, &address, x.expires_at, x.ends_at);
        x.link = format!("/transfers/{}#{token}", x.id);
    }
    Ok(Json(MyOrders {
        email: address,
        orders,
        transfers,
        expires_at: DateTime::from_timestamp(exp, 0).unwrap_or_else(Utc::now),
    }))
}
