//! Ticket transfer by e-mail, accepted by its recipient.
//!
//! - `POST /api/v1/orders/{id}/tickets/{ticket}/transfer`         offer a ticket to an address (order token)
//! - `POST /api/v1/orders/{id}/tickets/{ticket}/transfer/cancel`  withdraw the open offer (order token)
//! - `GET  /api/v1/transfers/{id}`                                the offer, and the ticket's code once accepted (transfer token)
//! - `POST /api/v1/transfers/{id}/accept` · `/decline`            the recipient decides (transfer token)
//! - `GET  /api/v1/transfers/{id}/qr.svg|qr.png`                  the accepted ticket's QR code (transfer token)
//! - `POST /api/v1/transfers/{id}/transfer`                       the recipient, while holding it, offers it on (transfer token)
//! - `POST /api/v1/transfers/{id}/transfer/cancel`                and withdraws that offer
//!
//! The offer goes to the outbox (`ticket.transfer_offered`); the notifier mails the recipient a
//! link carrying a transfer token (signed by the core, `jti` the transfer, valid until the offer
//! expires), so that no secret is stored or published. Acceptance moves the ticket to the
//! recipient and bumps its version in one transaction: the giver's code stops admitting at once.
//! An offer expires after 72 hours or when the event starts, whichever is first.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use uuid::Uuid;

use crate::api::resource_routes;
use crate::audit::{self, Actor};
use crate::error::{ApiError, Result};
use crate::extract::{BuyerOrder, Recipient};
use crate::models::ticket::{qr_file, TicketRow, TICKET_COLUMNS};
use crate::origin::Origin;
use crate::state::AppState;
use crate::tokens::ticket_code;
use crate::validate::valid_email;

/// How long an offer stays open (unless the event starts first).
const OFFER_HOURS: i64 = 72;

pub fn routes() -> OpenApiRouter<AppState> {
    resource_routes! {
        [offer], [withdraw], [show], [accept], [decline], [transfer_qr], [pass_on], [withdraw_onward]
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct TransferRequest {
    /// Who receives the ticket.
    pub to_email: String,
    /// The recipient's mobile number in international form, for the offer by text message too,
    /// where the shop sends them (refused otherwise).
    #[serde(default)]
    #[schema(max_length = 32)]
    pub to_phone: Option<String>,
}

/// A transfer as its giver and recipient see it.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct TransferView {
    id: Uuid,
    ticket_id: Uuid,
    event_id: Uuid,
    event_title: String,
    starts_at: DateTime<Utc>,
    seat_id: Option<String>,
    tier: String,
    to_email: String,
    /// `offered`, `accepted`, `declined`, `cancelled` or `expired`.
    state: String,
    expires_at: DateTime<Utc>,
    /// The ticket's code, once accepted (for its new holder, while they hold it).
    #[sqlx(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<String>,
    /// Once accepted: the latest offer its recipient made of the ticket in turn
    /// (`{id, to_email, state, expires_at}`), if any.
    #[sqlx(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    onward: Option<serde_json::Value>,
}

const VIEW: &str = "SELECT x.id, x.ticket_id, x.event_id, e.title AS event_title, e.starts_at, t.seat_id,
        tt.name AS tier, x.to_email,
        CASE WHEN x.state = 'offered' AND x.expires_at <= now() THEN 'expired' ELSE x.state END AS state,
        x.expires_at
    FROM ticket_transfers x JOIN tickets t ON t.id = x.ticket_id JOIN events e ON e.id = x.event_id
    JOIN ticket_tiers tt ON tt.id = t.tier_id WHERE x.id = $1";

async fn view(db: &sqlx::PgPool, id: Uuid) -> Result<TransferView> {
    sqlx::query_as(VIEW).bind(id).fetch_optional(db).await?.ok_or(ApiError::NotFound)
}

/// `POST /api/v1/orders/{id}/tickets/{ticket}/transfer`: offers the ticket to `to_email`, who gets
/// a mail to accept it. The ticket keeps admitting its current holder until the offer is accepted.
#[utoipa::path(post, path = "/api/v1/orders/{id}/tickets/{ticket}/transfer", tag = "checkout", security(("order_token" = [])),
    params(("id" = String, Path, description = "the order id"), ("ticket" = String, Path, description = "the ticket id")),
    request_body = TransferRequest,
    responses((status = 201, body = TransferView), crate::api::Problems))]
async fn offer(
    State(state): State<AppState>,
    origin: Origin,
    BuyerOrder { id: order, .. }: BuyerOrder,
    Path((_, ticket)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let ticket: Uuid = ticket.parse().map_err(|_| ApiError::NotFound)?;
    let to = recipient(&state, &body)?;
    let mut tx = state.db.begin().await?;
    // The ticket, still its order's (not given away), valid, and its event not started.
    let found: Option<(Uuid, String, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT t.event_id, t.state, o.email, e.starts_at FROM tickets t
         JOIN orders o ON o.id = t.order_id JOIN events e ON e.id = t.event_id
         WHERE t.id = $1 AND t.order_id = $2 AND lower(t.holder_email) = lower(o.email) FOR UPDATE OF t",
    )
    .bind(ticket)
    .bind(order)
    .fetch_optional(&mut *tx)
    .await?;
    let (event, ticket_state, from, starts_at) = found.ok_or(ApiError::NotFound)?;
    transferable(&ticket_state)?;
    let transfer = open_offer(&mut tx, ticket, order, event, &from, &to, starts_at).await?;
    let details = json!({ "transfer_id": transfer, "order_id": order });
    let buyer = Actor::buyer(order, origin);
    audit::record_for_event(
        &mut tx,
        &buyer,
        event,
        "ticket.transfer_offer",
        format!("ticket:{ticket}"),
        details,
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(view(&state.db, transfer).await?)).into_response())
}

/// An offer's recipient: an address, and a number where the shop sends texts.
struct OfferedTo {
    email: String,
    phone: Option<String>,
}

/// The offer's recipient from a [`TransferRequest`] body.
fn recipient(state: &AppState, body: &[u8]) -> Result<OfferedTo> {
    let req: TransferRequest = crate::api::parse_json(body)?;
    let email = req.to_email.trim().to_owned();
    if !valid_email(&email) {
        return Err(ApiError::field("to_email", "must be an e-mail address"));
    }
    let phone = match req.to_phone.as_deref().map(str::trim).filter(|p| !p.is_empty()) {
        None => None,
        Some(raw) => {
            let sms = state.sms.as_ref().ok_or_else(|| {
                ApiError::field(
                    "to_phone",
                    "this shop does not send text messages: leave the phone number out",
                )
            })?;
            Some(sms.reach.phone(raw).map_err(|why| ApiError::field("to_phone", &why))?)
        }
    };
    Ok(OfferedTo { email, phone })
}

/// Only a valid ticket (not used, not void) can change hands.
fn transferable(ticket_state: &str) -> Result<()> {
    if ticket_state != "valid" {
        return Err(ApiError::conflict(
            "not_transferable",
            format!("a ticket that is {ticket_state} cannot be transferred"),
        ));
    }
    Ok(())
}

/// Opens an offer of `ticket` from its holder `from` to `to`, in `tx` (the caller has checked that
/// `from` holds the valid ticket and locked its row), and writes `ticket.transfer_offered`.
async fn open_offer(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    ticket: Uuid,
    order: Uuid,
    event: Uuid,
    from: &str,
    to: &OfferedTo,
    starts_at: DateTime<Utc>,
) -> Result<Uuid> {
    let (to, to_phone) = (to.email.as_str(), to.phone.as_deref());
    if to.eq_ignore_ascii_case(from) {
        return Err(ApiError::field("to_email", "is the ticket's holder already"));
    }
    let expires_at = (Utc::now() + chrono::Duration::hours(OFFER_HOURS)).min(starts_at);
    if expires_at <= Utc::now() {
        return Err(ApiError::conflict(
            "too_late",
            "the event has started: its tickets can no longer be transferred",
        ));
    }
    // An expired offer no longer blocks a new one.
    sqlx::query("UPDATE ticket_transfers SET state = 'expired', decided_at = now() WHERE ticket_id = $1 AND state = 'offered' AND expires_at <= now()")
        .bind(ticket)
        .execute(&mut **tx)
        .await?;
    let transfer = Uuid::new_v4();
    let inserted = sqlx::query(
        "INSERT INTO ticket_transfers (id, ticket_id, order_id, event_id, from_email, to_email, expires_at, to_phone)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(transfer)
    .bind(ticket)
    .bind(order)
    .bind(event)
    .bind(from)
    .bind(to)
    .bind(expires_at)
    .bind(to_phone)
    .execute(&mut **tx)
    .await;
    match inserted {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(ApiError::conflict(
                "transfer_open",
                "this ticket is already offered to someone: cancel that offer first",
            ));
        }
        other => other?,
    };
    let payload = json!({ "type": "ticket.transfer_offered", "schema_version": 1, "transfer_id": transfer,
        "ticket_id": ticket, "order_id": order, "event_id": event, "from_email": from, "to_email": to, "expires_at": expires_at,
        "tickets": [ticket], "at": Utc::now() });
    crate::bus::outbox(tx, "tickets", event, payload).await?;
    Ok(transfer)
}

/// `POST /api/v1/orders/{id}/tickets/{ticket}/transfer/cancel`: withdraws the ticket's open offer.
#[utoipa::path(post, path = "/api/v1/orders/{id}/tickets/{ticket}/transfer/cancel", tag = "checkout", security(("order_token" = [])),
    params(("id" = String, Path, description = "the order id"), ("ticket" = String, Path, description = "the ticket id")),
    responses((status = 200, body = TransferView), crate::api::Problems))]
async fn withdraw(
    State(state): State<AppState>,
    origin: Origin,
    BuyerOrder { id: order, .. }: BuyerOrder,
    Path((_, ticket)): Path<(String, String)>,
) -> Result<Json<TransferView>> {
    let ticket: Uuid = ticket.parse().map_err(|_| ApiError::NotFound)?;
    let mut tx = state.db.begin().await?;
    let cancelled: Option<(Uuid, Uuid)> = sqlx::query_as(
        "UPDATE ticket_transfers SET state = 'cancelled', decided_at = now()
         WHERE ticket_id = $1 AND order_id = $2 AND state = 'offered' AND expires_at > now()
           AND lower(from_email) = (SELECT lower(email) FROM orders WHERE id = $2) RETURNING id, event_id",
    )
    .bind(ticket)
    .bind(order)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((t, event)) = cancelled {
        let details = json!({ "transfer_id": t, "order_id": order });
        let buyer = Actor::buyer(order, origin);
        audit::record_for_event(
            &mut tx,
            &buyer,
            event,
            "ticket.transfer_cancel",
            format!("ticket:{ticket}"),
            details,
        )
        .await?;
        tx.commit().await?;
        return Ok(Json(view(&state.db, t).await?));
    }
    drop(tx);
    // A ticket that is not this order's to give (another order's, given away, no one's) is not
    // found, as on the order's other ticket routes; only the order's own ticket without an open
    // offer is a conflict (found by the cross-tenant probe: another order's ticket was a 409).
    let its: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM tickets t JOIN orders o ON o.id = t.order_id
           WHERE t.id = $1 AND t.order_id = $2 AND lower(t.holder_email) = lower(o.email))",
    )
    .bind(ticket)
    .bind(order)
    .fetch_one(&state.db)
    .await?;
    if !its {
        return Err(ApiError::NotFound);
    }
    Err(ApiError::conflict("no_open_offer", "this ticket has no open transfer offer"))
}

/// `GET /api/v1/transfers/{id}`: the offer as its recipient sees it; with the ticket's code once
/// they accepted it (and while they hold it).
#[utoipa::path(get, path = "/api/v1/transfers/{id}", tag = "checkout", security(("transfer_token" = [])),
    params(("id" = String, Path, description = "the transfer id")),
    responses((status = 200, body = TransferView), crate::api::Problems))]
async fn show(State(state): State<AppState>, Recipient { co, id }: Recipient) -> Result<Json<TransferView>> {
    let mut v = view(&state.db, id).await?;
    if v.state == "accepted" {
        v.code = held_ticket(&state.db, id).await?.map(|t| ticket_code(&co.signer, &t));
        v.onward = sqlx::query_scalar(
            "SELECT json_build_object('id', y.id, 'to_email', y.to_email, 'expires_at', y.expires_at,
                 'state', CASE WHEN y.state = 'offered' AND y.expires_at <= now() THEN 'expired' ELSE y.state END)
             FROM ticket_transfers x JOIN ticket_transfers y ON y.ticket_id = x.ticket_id AND y.id <> x.id
               AND lower(y.from_email) = lower(x.to_email) AND y.created_at >= x.decided_at
             WHERE x.id = $1 ORDER BY y.created_at DESC LIMIT 1",
        )
        .bind(id)
        .fetch_optional(&state.db)
        .await?;
    }
    Ok(Json(v))
}

/// The transferred ticket, while its recipient still holds it.
async fn held_ticket(db: &sqlx::PgPool, transfer: Uuid) -> Result<Option<TicketRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {TICKET_COLUMNS} FROM ticket_transfers x JOIN tickets t ON t.id = x.ticket_id JOIN events e ON e.id = t.event_id
         WHERE x.id = $1 AND x.state = 'accepted' AND t.state <> 'void' AND lower(t.holder_email) = lower(x.to_email)"
    ))
    .bind(transfer)
    .fetch_optional(db)
    .await
}

/// `POST /api/v1/transfers/{id}/accept`: the ticket becomes the recipient's, with a new code; the
/// giver's code no longer admits. Accepting twice answers the same.
#[utoipa::path(post, path = "/api/v1/transfers/{id}/accept", tag = "checkout", security(("transfer_token" = [])),
    params(("id" = String, Path, description = "the transfer id")),
    responses((status = 200, body = TransferView), crate::api::Problems))]
async fn accept(
    State(state): State<AppState>,
    origin: Origin,
    Recipient { co, id }: Recipient,
) -> Result<Json<TransferView>> {
    let mut tx = state.db.begin().await?;
    let offer: Option<(Uuid, Uuid, String, String, String, bool)> = sqlx::query_as(
        "SELECT ticket_id, event_id, from_email, to_email, state, expires_at <= now() FROM ticket_transfers WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let (ticket, event, from, to, offer_state, expired) = offer.ok_or(ApiError::NotFound)?;
    match (offer_state.as_str(), expired) {
        ("accepted", _) => {
            drop(tx);
            return show(State(state), Recipient { co, id }).await;
        }
        ("offered", false) => {}
        ("offered", true) => return Err(ApiError::conflict("offer_expired", "this offer has expired")),
        (s, _) => return Err(ApiError::conflict("offer_closed", format!("this offer was {s}"))),
    }
    // Still the giver's and valid (a used, refunded or re-given ticket cannot move). A new holder
    // starts afresh: an erasure the giver asked for (docs/privacy.md) is not theirs.
    let moved: Option<i32> = sqlx::query_scalar(
        "UPDATE tickets SET holder_email = $3, version = version + 1, updated_at = now(), erase_requested_at = NULL
         WHERE id = $1 AND state = 'valid' AND lower(holder_email) = lower($2) RETURNING version",
    )
    .bind(ticket)
    .bind(&from)
    .bind(&to)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(version) = moved else {
        sqlx::query("UPDATE ticket_transfers SET state = 'cancelled', decided_at = now() WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        return Err(ApiError::conflict(
            "not_transferable",
            "the ticket can no longer be transferred (used, refunded or re-given)",
        ));
    };
    sqlx::query("UPDATE ticket_transfers SET state = 'accepted', decided_at = now() WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let payload = json!({ "type": "ticket.transferred", "schema_version": 1, "transfer_id": id, "ticket_id": ticket,
        "event_id": event, "version": version, "at": Utc::now() });
    crate::bus::outbox(&mut tx, "tickets", event, payload).await?;
    let details = json!({ "transfer_id": id, "version": version });
    let actor = Actor::recipient(id, origin);
    audit::record_for_event(
        &mut tx,
        &actor,
        event,
        "ticket.transfer_accept",
        format!("ticket:{ticket}"),
        details,
    )
    .await?;
    tx.commit().await?;
    show(State(state), Recipient { co, id }).await
}

/// `POST /api/v1/transfers/{id}/decline`: the recipient says no; the ticket stays its giver's.
#[utoipa::path(post, path = "/api/v1/transfers/{id}/decline", tag = "checkout", security(("transfer_token" = [])),
    params(("id" = String, Path, description = "the transfer id")),
    responses((status = 200, body = TransferView), crate::api::Problems))]
async fn decline(
    State(state): State<AppState>,
    origin: Origin,
    Recipient { id, .. }: Recipient,
) -> Result<Json<TransferView>> {
    let mut tx = state.db.begin().await?;
    let declined: Option<(Uuid, Uuid)> = sqlx::query_as(
        "UPDATE ticket_transfers SET state = 'declined', decided_at = now()
         WHERE id = $1 AND state = 'offered' AND expires_at > now() RETURNING ticket_id, event_id",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((ticket, event)) = declined {
        let actor = Actor::recipient(id, origin);
        let details = json!({ "transfer_id": id });
        audit::record_for_event(
            &mut tx,
            &actor,
            event,
            "ticket.transfer_decline",
            format!("ticket:{ticket}"),
            details,
        )
        .await?;
    }
    tx.commit().await?;
    let v = view(&state.db, id).await?;
    match declined {
        Some(_) => Ok(Json(v)),
        None => Err(ApiError::conflict("offer_closed", format!("this offer is {}", v.state))),
    }
}

/// `GET /api/v1/transfers/{id}/{file}`: `qr.svg` or `qr.png` of the accepted ticket (transfer token).
#[utoipa::path(get, path = "/api/v1/transfers/{id}/{file}", tag = "checkout", security(("transfer_token" = [])),
    params(("id" = String, Path, description = "the transfer id"), ("file" = String, Path, description = "qr.svg or qr.png")),
    responses((status = 200, description = "image/svg+xml or image/png"), crate::api::Problems))]
async fn transfer_qr(
    State(state): State<AppState>,
    Recipient { co, id }: Recipient,
    Path((_, file)): Path<(String, String)>,
) -> Result<Response> {
    let ticket = held_ticket(&state.db, id).await?.ok_or(ApiError::NotFound)?;
    qr_file(&ticket_code(&co.signer, &ticket), &file)
}

/// `POST /api/v1/transfers/{id}/transfer`: the recipient of an accepted transfer, while they hold
/// the ticket, offers it on to someone else (the same rules as the buyer's offer).
#[utoipa::path(post, path = "/api/v1/transfers/{id}/transfer", tag = "checkout", security(("transfer_token" = [])),
    params(("id" = String, Path, description = "the accepted transfer's id")),
    request_body = TransferRequest,
    responses((status = 201, body = TransferView), crate::api::Problems))]
async fn pass_on(
    State(state): State<AppState>,
    origin: Origin,
    Recipient { id, .. }: Recipient,
    body: axum::body::Bytes,
) -> Result<Response> {
    let to = recipient(&state, &body)?;
    let mut tx = state.db.begin().await?;
    // Accepted, and the ticket still this recipient's.
    let found: Option<(Uuid, Uuid, Uuid, String, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT t.id, t.order_id, t.event_id, t.state, x.to_email, e.starts_at
         FROM ticket_transfers x JOIN tickets t ON t.id = x.ticket_id JOIN events e ON e.id = t.event_id
         WHERE x.id = $1 AND x.state = 'accepted' AND lower(t.holder_email) = lower(x.to_email) FOR UPDATE OF t",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((ticket, order, event, ticket_state, holder, starts_at)) = found else {
        return Err(ApiError::conflict(
            "not_holder",
            "this ticket is not yours to give: accept the offer first (or you gave it on already)",
        ));
    };
    transferable(&ticket_state)?;
    let transfer = open_offer(&mut tx, ticket, order, event, &holder, &to, starts_at).await?;
    let details = json!({ "transfer_id": transfer, "from_transfer_id": id });
    let actor = Actor::recipient(id, origin);
    audit::record_for_event(
        &mut tx,
        &actor,
        event,
        "ticket.transfer_offer",
        format!("ticket:{ticket}"),
        details,
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(view(&state.db, transfer).await?)).into_response())
}

/// `POST /api/v1/transfers/{id}/transfer/cancel`: withdraws the offer the recipient made of it.
#[utoipa::path(post, path = "/api/v1/transfers/{id}/transfer/cancel", tag = "checkout", security(("transfer_token" = [])),
    params(("id" = String, Path, description = "the accepted transfer's id")),
    responses((status = 200, body = TransferView), crate::api::Problems))]
async fn withdraw_onward(
    State(state): State<AppState>,
    origin: Origin,
    Recipient { id, .. }: Recipient,
) -> Result<Json<TransferView>> {
    let mut tx = state.db.begin().await?;
    let cancelled: Option<(Uuid, Uuid, Uuid)> = sqlx::query_as(
        "UPDATE ticket_transfers y SET state = 'cancelled', decided_at = now()
         FROM ticket_transfers x
         WHERE x.id = $1 AND x.state = 'accepted' AND y.ticket_id = x.ticket_id
           AND lower(y.from_email) = lower(x.to_email) AND y.state = 'offered' AND y.expires_at > now()
         RETURNING y.id, y.ticket_id, y.event_id",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((t, ticket, event)) = cancelled else {
        return Err(ApiError::conflict("no_open_offer", "you have no open offer of this ticket"));
    };
    let details = json!({ "transfer_id": t, "from_transfer_id": id });
    let actor = Actor::recipient(id, origin);
    audit::record_for_event(
        &mut tx,
        &actor,
        event,
        "ticket.transfer_cancel",
        format!("ticket:{ticket}"),
        details,
    )
    .await?;
    tx.commit().await?;
    Ok(Json(view(&state.db, t).await?))
}
