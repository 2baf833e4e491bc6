//! Ticket codes and their QR codes.
//!
//! A ticket's code is a JWS (EdDSA, the core's key, `typ: ticket`) naming the event (`aud`), the
//! ticket (`sub`), its version (`jti` = `<ticket>.<version>`), the seat and tier, and the holder (a
//! hash of their e-mail). It is computed from the ticket's row whenever it is asked for (Ed25519 is
//! deterministic and `iat` is the ticket's creation), so nothing secret is stored. A scanner verifies
//! it offline with `GET /api/v1/keys`.
//!
//! - `GET /api/v1/keys`                                       the core's public keys (public)
//! - `GET /api/v1/orders/{id}/tickets`                        the order's live tickets with their codes (order token)
//! - `GET /api/v1/orders/{id}/tickets/{ticket}/qr.svg|qr.png` a ticket's QR code (order token)
//! - `POST /api/v1/orders/{id}/tickets/{ticket}/reissue`      a new code; the old one stops working (order token)

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde::Serialize;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use uuid::Uuid;

use crate::api::resource_routes;
use crate::error::{ApiError, Result};
use crate::extract::BuyerOrder;
use crate::models::ticket::{qr_file, TicketRow, TICKET_COLUMNS};
use crate::state::AppState;
use crate::tokens::ticket_code;

pub fn routes() -> OpenApiRouter<AppState> {
    resource_routes! { [keys], [order_tickets], [ticket_qr], [reissue] }
}

/// An order's live tickets its buyer holds (or the one named), in seat order.
pub async fn tickets_of(
    db: &sqlx::PgPool,
    order: Uuid,
    ticket: Option<Uuid>,
) -> Result<Vec<TicketRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {TICKET_COLUMNS} FROM tickets t JOIN events e ON e.id = t.event_id JOIN orders o ON o.id = t.order_id
         WHERE t.order_id = $1 AND ($2::uuid IS NULL OR t.id = $2) AND t.state <> 'void'
           AND lower(t.holder_email) = lower(o.email)
         ORDER BY t.seat_id, t.id"
    ))
    .bind(order)
    .bind(ticket)
    .fetch_all(db)
    .await
}

/// One ticket with its code.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TicketCode {
    pub id: Uuid,
    pub seat_id: Option<String>,
    pub tier_id: Uuid,
    pub version: i32,
    pub state: String,
    /// The signed code the QR code carries.
    pub code: String,
}

/// `GET /api/v1/keys`: the core's public keys, for scanners to verify ticket codes offline.
#[utoipa::path(get, path = "/api/v1/keys", tag = "public",
    responses((status = 200, body = KeySet, description = "the signing key first, then earlier keys still trusted during a rotation"), crate::api::Problems))]
async fn keys(State(state): State<AppState>) -> Result<Response> {
    let co = state.checkout()?;
    // The signing key first (new codes carry it), then the earlier ones still trusted.
    let current = co.signer.kid().to_owned();
    let mut keys: Vec<(String, String)> =
        co.trusted_keys().public_keys().map(|(kid, key)| (kid.to_owned(), key)).collect();
    keys.sort_by_key(|(kid, _)| *kid != current);
    let keys = keys
        .into_iter()
        .map(|(kid, public_key)| PublicKey {
            current: kid == current,
            kid,
            alg: "EdDSA",
            crv: "Ed25519",
            public_key,
        })
        .collect();
    Ok(([(header::CACHE_CONTROL, "public, max-age=300")], Json(KeySet { keys })).into_response())
}

/// The core's public keys (`GET /api/v1/keys`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeySet {
    pub keys: Vec<PublicKey>,
}

/// One Ed25519 public key that signs ticket codes.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublicKey {
    /// The key id ticket codes name in their header.
    pub kid: String,
    #[schema(example = "EdDSA")]
    pub alg: &'static str,
    #[schema(example = "Ed25519")]
    pub crv: &'static str,
    /// The 32-byte public key, base64url without padding.
    pub public_key: String,
    /// True for the key that signs new codes.
    pub current: bool,
}

/// `GET /api/v1/orders/{id}/tickets`: the order's live tickets with their codes (order token).
#[utoipa::path(get, path = "/api/v1/orders/{id}/tickets", tag = "checkout", security(("order_token" = [])),
    params(("id" = String, Path, description = "the order id")),
    responses((status = 200, body = Vec<TicketCode>), crate::api::Problems))]
async fn order_tickets(
    State(state): State<AppState>,
    BuyerOrder { co, id: order }: BuyerOrder,
) -> Result<Json<Vec<TicketCode>>> {
    let rows = tickets_of(&state.db, order, None).await?;
    Ok(Json(rows.iter().map(|t| code_of(&co.signer, t)).collect()))
}

/// `GET /api/v1/orders/{id}/tickets/{ticket}/{file}`: `qr.svg` or `qr.png` (order token).
#[utoipa::path(get, path = "/api/v1/orders/{id}/tickets/{ticket}/{file}", tag = "checkout", security(("order_token" = [])),
    params(("id" = String, Path, description = "the order id"), ("ticket" = String, Path, description = "the ticket id"),
           ("file" = String, Path, description = "qr.svg or qr.png")),
    responses((status = 200, description = "image/svg+xml or image/png"), crate::api::Problems))]
async fn ticket_qr(
    State(state): State<AppState>,
    BuyerOrder { co, id: order }: BuyerOrder,
    Path((_, ticket, file)): Path<(String, String, String)>,
) -> Result<Response> {
    let ticket: Uuid = ticket.parse().map_err(|_| ApiError::NotFound)?;
    let row =
        tickets_of(&state.db, order, Some(ticket)).await?.into_iter().next().ok_or(ApiError::NotFound)?;
    qr_file(&ticket_code(&co.signer, &row), &file)
}

/// `POST /api/v1/orders/{id}/tickets/{ticket}/reissue`: the buyer lost the code (or fears it was
/// copied): the ticket gets a new version, so its old code no longer admits (check-in answers
/// `old-version`). A used or void ticket cannot be re-issued.
#[utoipa::path(post, path = "/api/v1/orders/{id}/tickets/{ticket}/reissue", tag = "checkout", security(("order_token" = [])),
    params(("id" = String, Path, description = "the order id"), ("ticket" = String, Path, description = "the ticket id")),
    responses((status = 200, body = TicketCode), crate::api::Problems))]
async fn reissue(
    State(state): State<AppState>,
    origin: crate::origin::Origin,
    BuyerOrder { co, id: order }: BuyerOrder,
    Path((_, ticket)): Path<(String, String)>,
) -> Result<Json<TicketCode>> {
    let ticket: Uuid = ticket.parse().map_err(|_| ApiError::NotFound)?;
    let mut tx = state.db.begin().await?;
    let (version, event) = new_version(&mut tx, ticket, order).await?;
    let details = json!({ "order_id": order, "version": version });
    let buyer = crate::audit::Actor::buyer(order, origin);
    crate::audit::record_for_event(
        &mut tx,
        &buyer,
        event,
        "ticket.reissue",
        format!("ticket:{ticket}"),
        details,
    )
    .await?;
    tx.commit().await?;
    let row =
        tickets_of(&state.db, order, Some(ticket)).await?.into_iter().next().ok_or(ApiError::NotFound)?;
    Ok(Json(code_of(&co.signer, &row)))
}

/// A ticket of `order` (held by the order's buyer) gets a new version, so its old code no longer
/// admits, with its `ticket.reissued` event; in the caller's transaction (which audits who asked).
/// The new version and the ticket's event; 404 for no such ticket, 409 for one not valid.
pub async fn new_version(tx: &mut sqlx::PgConnection, ticket: Uuid, order: Uuid) -> Result<(i32, Uuid)> {
    let bumped: Option<(i32, Uuid)> = sqlx::query_as(
        "UPDATE tickets t SET version = version + 1, updated_at = now() FROM orders o
         WHERE t.id = $1 AND t.order_id = $2 AND t.state = 'valid' AND o.id = t.order_id
           AND lower(t.holder_email) = lower(o.email)
         RETURNING t.version, t.event_id",
    )
    .bind(ticket)
    .bind(order)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((version, event)) = bumped else {
        let exists: Option<String> = sqlx::query_scalar(
            "SELECT t.state FROM tickets t JOIN orders o ON o.id = t.order_id
                 WHERE t.id = $1 AND t.order_id = $2 AND lower(t.holder_email) = lower(o.email)",
        )
        .bind(ticket)
        .bind(order)
        .fetch_optional(&mut *tx)
        .await?;
        return Err(match exists {
            Some(state) => {
                ApiError::conflict("not_reissuable", format!("a ticket that is {state} cannot be re-issued"))
            }
            None => ApiError::NotFound,
        });
    };
    let payload = json!({ "type": "ticket.reissued", "schema_version": 1, "ticket_id": ticket, "order_id": order,
                          "event_id": event, "version": version, "at": Utc::now() });
    crate::bus::outbox(&mut *tx, "tickets", event, payload).await?;
    Ok((version, event))
}

/// A ticket with its code.
pub fn code_of(signer: &shared_types::token::TokenSigner, row: &TicketRow) -> TicketCode {
    TicketCode {
        id: row.id,
        seat_id: row.seat_id.clone(),
        tier_id: row.tier_id,
        version: row.version,
        state: row.state.clone(),
        code: ticket_code(signer, row),
    }
}
