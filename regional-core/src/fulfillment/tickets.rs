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
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use qrcode::{EcLevel, QrCode};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use shared_types::token::{Claims, TicketGrant, TokenKind, TokenSigner};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::checkout::{authorize_buyer, checkout_of};
use crate::error::ApiError;

/// Pixels per QR module in the PNG, and the quiet zone around the code (in modules).
const PNG_SCALE: usize = 6;
const QUIET_ZONE: usize = 4;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(keys))
        .routes(routes!(order_tickets))
        .routes(routes!(ticket_qr))
        .routes(routes!(reissue))
}

/// The columns of a [`TicketRow`], from `tickets t JOIN events e ON e.id = t.event_id`.
pub const TICKET_COLUMNS: &str =
    "t.id, t.event_id, t.tier_id, t.seat_id, t.holder_email, t.version, t.state, t.created_at, e.ends_at";

/// A ticket as its code needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TicketRow {
    pub id: Uuid,
    pub event_id: Uuid,
    pub tier_id: Uuid,
    pub seat_id: Option<String>,
    pub holder_email: String,
    pub version: i32,
    pub state: String,
    pub created_at: DateTime<Utc>,
    /// The event's end: codes are good until a day after it.
    pub ends_at: DateTime<Utc>,
}

/// The holder as a code names them.
pub fn holder_of(email: &str) -> String {
    Sha256::digest(email.trim().to_lowercase().as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The ticket's code.
pub fn code(signer: &TokenSigner, t: &TicketRow) -> String {
    let claims = Claims {
        iss: "core".to_owned(),
        aud: t.event_id.to_string(),
        sub: t.id.to_string(),
        iat: t.created_at.timestamp(),
        exp: (t.ends_at + chrono::Duration::days(1)).timestamp(),
        jti: format!("{}.{}", t.id, t.version),
        extra: TicketGrant {
            seat: t.seat_id.clone(),
            tier: t.tier_id.to_string(),
            holder: holder_of(&t.holder_email),
            version: t.version.max(1) as u32,
        },
    };
    signer.sign(TokenKind::Ticket, &claims)
}

fn qr(code: &str) -> Result<QrCode, ApiError> {
    // Medium error correction: a phone screen with a scratch or glare still reads.
    QrCode::with_error_correction_level(code.as_bytes(), EcLevel::M)
        .map_err(|e| ApiError::Unavailable(format!("the code does not fit a QR code: {e}")))
}

/// The QR code as SVG.
pub fn qr_svg(code: &str) -> Result<String, ApiError> {
    Ok(qr(code)?.render::<qrcode::render::svg::Color<'_>>().quiet_zone(true).min_dimensions(256, 256).build())
}

/// The QR code as an 8-bit greyscale PNG.
pub fn qr_png(code: &str) -> Result<Vec<u8>, ApiError> {
    let qr = qr(code)?;
    let modules = qr.width();
    let dark = qr.to_colors();
    let side = (modules + 2 * QUIET_ZONE) * PNG_SCALE;
    let mut pixels = vec![255u8; side * side];
    for y in 0..modules {
        for x in 0..modules {
            if dark[y * modules + x] == qrcode::Color::Dark {
                for dy in 0..PNG_SCALE {
                    let row = (y + QUIET_ZONE) * PNG_SCALE + dy;
                    let start = row * side + (x + QUIET_ZONE) * PNG_SCALE;
                    pixels[start..start + PNG_SCALE].fill(0);
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, side as u32, side as u32);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let written = encoder.write_header().and_then(|mut w| w.write_image_data(&pixels));
    written.map_err(|e| ApiError::Unavailable(format!("the PNG could not be written: {e}")))?;
    Ok(out)
}

async fn tickets_of(
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
    responses((status = 200, body = Object, description = "{\"keys\": [{\"kid\", \"alg\": \"EdDSA\", \"crv\": \"Ed25519\", \"public_key\": base64url, \"current\": bool}]}: the signing key first, then earlier keys still trusted during a rotation")))]
async fn keys(State(state): State<AppState>) -> Result<Response, ApiError> {
    let co = checkout_of(&state)?;
    // The signing key first (new codes carry it), then the earlier ones still trusted.
    let current = co.signer.kid().to_owned();
    let mut keys: Vec<(String, String)> =
        co.trusted_keys().public_keys().map(|(kid, key)| (kid.to_owned(), key)).collect();
    keys.sort_by_key(|(kid, _)| *kid != current);
    let keys: Vec<_> = keys
        .into_iter()
        .map(|(kid, key)| json!({ "kid": kid, "alg": "EdDSA", "crv": "Ed25519", "public_key": key, "current": kid == current }))
        .collect();
    let body = json!({ "keys": keys });
    Ok(([(header::CACHE_CONTROL, "public, max-age=300")], Json(body)).into_response())
}

/// `GET /api/v1/orders/{id}/tickets`: the order's live tickets with their codes (order token).
#[utoipa::path(get, path = "/api/v1/orders/{id}/tickets", tag = "checkout", security(("order_token" = [])),
    params(("id" = String, Path, description = "the order id")),
    responses((status = 200, body = Vec<TicketCode>), (status = "4XX", description = "a problem (RFC 9457)", body = crate::api::ProblemDoc, content_type = "application/problem+json")))]
async fn order_tickets(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Vec<TicketCode>>, ApiError> {
    let co = checkout_of(&state)?;
    let order = authorize_buyer(&co, &headers, &id)?;
    let rows = tickets_of(&state.db, order, None).await?;
    Ok(Json(
        rows.iter()
            .map(|t| TicketCode {
                id: t.id,
                seat_id: t.seat_id.clone(),
                tier_id: t.tier_id,
                version: t.version,
                state: t.state.clone(),
                code: code(&co.signer, t),
            })
            .collect(),
    ))
}

/// `GET /api/v1/orders/{id}/tickets/{ticket}/{file}`: `qr.svg` or `qr.png` (order token).
#[utoipa::path(get, path = "/api/v1/orders/{id}/tickets/{ticket}/{file}", tag = "checkout", security(("order_token" = [])),
    params(("id" = String, Path, description = "the order id"), ("ticket" = String, Path, description = "the ticket id"),
           ("file" = String, Path, description = "qr.svg or qr.png")),
    responses((status = 200, description = "image/svg+xml or image/png"), (status = "4XX", description = "a problem (RFC 9457)", body = crate::api::ProblemDoc, content_type = "application/problem+json")))]
async fn ticket_qr(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, ticket, file)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let co = checkout_of(&state)?;
    let order = authorize_buyer(&co, &headers, &id)?;
    let ticket: Uuid = ticket.parse().map_err(|_| ApiError::NotFound)?;
    let row =
        tickets_of(&state.db, order, Some(ticket)).await?.into_iter().next().ok_or(ApiError::NotFound)?;
    qr_file(&code(&co.signer, &row), &file)
}

/// A code's QR code as the file `qr.svg` or `qr.png` (private: a code admits whoever shows it).
pub fn qr_file(code: &str, file: &str) -> Result<Response, ApiError> {
    let private = (header::CACHE_CONTROL, "private, no-store");
    match file {
        "qr.svg" => Ok(([(header::CONTENT_TYPE, "image/svg+xml"), private], qr_svg(code)?).into_response()),
        "qr.png" => Ok(([(header::CONTENT_TYPE, "image/png"), private], qr_png(code)?).into_response()),
        _ => Err(ApiError::NotFound),
    }
}

/// `POST /api/v1/orders/{id}/tickets/{ticket}/reissue`: the buyer lost the code (or fears it was
/// copied): the ticket gets a new version, so its old code no longer admits (check-in answers
/// `old-version`). A used or void ticket cannot be re-issued.
#[utoipa::path(post, path = "/api/v1/orders/{id}/tickets/{ticket}/reissue", tag = "checkout", security(("order_token" = [])),
    params(("id" = String, Path, description = "the order id"), ("ticket" = String, Path, description = "the ticket id")),
    responses((status = 200, body = TicketCode), (status = "4XX", description = "a problem (RFC 9457)", body = crate::api::ProblemDoc, content_type = "application/problem+json")))]
async fn reissue(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, ticket)): Path<(String, String)>,
) -> Result<Json<TicketCode>, ApiError> {
    let co = checkout_of(&state)?;
    let order = authorize_buyer(&co, &headers, &id)?;
    let ticket: Uuid = ticket.parse().map_err(|_| ApiError::NotFound)?;
    let mut tx = state.db.begin().await?;
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
    crate::bus::outbox(&mut tx, "tickets", event, payload).await?;
    tx.commit().await?;
    let row =
        tickets_of(&state.db, order, Some(ticket)).await?.into_iter().next().ok_or(ApiError::NotFound)?;
    Ok(Json(TicketCode {
        id: row.id,
        seat_id: row.seat_id.clone(),
        tier_id: row.tier_id,
        version: row.version,
        state: row.state.clone(),
        code: code(&co.signer, &row),
    }))
}
