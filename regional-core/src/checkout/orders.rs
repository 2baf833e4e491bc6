//! Orders after checkout: the buyer's view and cancel (order token), the organizer's refund and
//! list (API key).

use crate::api::Query;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use super::saga::{Input, OrderState};
use super::*;
use crate::api::{self, Listing, PageQuery};
use crate::auth::{need, Can};
use crate::error::{ApiError, Result};
use crate::extract::BuyerOrder;
use crate::extract::OwnEvent;
use crate::state::AppState;

/// How long to wait for an order to move on (the long poll, `watch`).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct OrderWait {
    /// Seconds to wait, at most 20, while the order is in one of the `while` states (0: answer now).
    #[param(minimum = 0, maximum = 20)]
    wait: Option<u64>,
    /// The states to wait through, comma-separated (`awaiting_payment,confirming`); required with
    /// `wait`. Not a final state (`paid`, `cancelled`, `refunded`): an order never leaves those.
    #[serde(rename = "while")]
    #[param(rename = "while", max_length = 200)]
    while_states: Option<String>,
}

impl OrderWait {
    /// The states and the time to wait, checked.
    fn read(&self) -> Result<(Vec<OrderState>, std::time::Duration)> {
        let wait = self.wait.unwrap_or(0);
        if wait > super::watch::MAX_WAIT.as_secs() {
            return Err(ApiError::field("wait", "must be at most 20 seconds"));
        }
        let states = match self.while_states.as_deref() {
            None | Some("") if wait > 0 => {
                return Err(ApiError::field("while", "name the states to wait through, comma-separated"))
            }
            None | Some("") => Vec::new(),
            Some(list) if list.len() > 200 => return Err(ApiError::field("while", "at most 200 characters")),
            Some(list) => list
                .split(',')
                .map(|s| match serde_json::from_value::<OrderState>(Value::String(s.trim().to_owned())) {
                    Ok(OrderState::Paid | OrderState::Cancelled | OrderState::Refunded) => {
                        Err(ApiError::field("while", "names a final state: an order never leaves it"))
                    }
                    Ok(state) => Ok(state),
                    Err(_) => Err(ApiError::field("while", "lists a state orders do not have")),
                })
                .collect::<Result<_>>()?,
        };
        Ok((states, std::time::Duration::from_secs(wait)))
    }
}

/// `GET /api/v1/orders/{id}`: the buyer's order (with the order token from checkout). With
/// `?wait=N&while=S1,S2` it answers once the order is in none of those states, or after N
/// seconds (a long poll: one request rather than one every fraction of a second).
#[utoipa::path(get, path = "/api/v1/orders/{id}", tag = "checkout", security(("order_token" = [])),
    params(("id" = String, Path, description = "the order id"), OrderWait),
    responses((status = 200, body = OrderView), crate::api::Problems))]
pub(super) async fn get_order(
    State(state): State<AppState>,
    BuyerOrder { id, .. }: BuyerOrder,
    Query(wait): Query<OrderWait>,
) -> Result<Json<OrderView>> {
    let (states, wait) = wait.read()?;
    // Within the request's own bound, with room to answer.
    let wait = wait.min(state.request_timeout.saturating_sub(std::time::Duration::from_secs(2)));
    state.order_watch.wait(&state.db, id, states, wait).await;
    Ok(Json(view(&state.db, id).await?))
}

/// `POST /api/v1/orders/{id}/cancel`: the buyer cancels. Before payment the hold is released;
/// after, the event's refund policy decides how much comes back (fees are kept), and the seats go
/// back on sale.
#[utoipa::path(post, path = "/api/v1/orders/{id}/cancel", tag = "checkout", security(("order_token" = [])),
    params(("id" = String, Path, description = "the order id")),
    responses((status = 202, body = OrderView), crate::api::Problems))]
pub(super) async fn cancel_order(
    State(state): State<AppState>,
    origin: crate::origin::Origin,
    BuyerOrder { co, id }: BuyerOrder,
) -> Result<(StatusCode, Json<OrderView>)> {
    let mut tx = state.db.begin().await?;
    type Row = (OrderState, i64, i64, DateTime<Utc>, Value, Uuid, bool);
    let (order_state, total, fee, starts_at, policy, org, at_counter): Row = sqlx::query_as(
        "SELECT o.state, o.total_minor, o.fee_minor, e.starts_at, e.refund_policy, o.organization_id,
                EXISTS (SELECT 1 FROM payments p WHERE p.order_id = o.id AND p.provider = $2)
             FROM orders o JOIN events e ON e.id = o.event_id WHERE o.id = $1 FOR UPDATE OF o",
    )
    .bind(id)
    .bind(super::counter::PROVIDER)
    .fetch_one(&mut *tx)
    .await?;
    let mut refunded = None;
    match order_state {
        OrderState::Created | OrderState::AwaitingPayment => {}
        // Paid at the box office: its money is given back there, by hand (an organizer admin's
        // refund records it), never by a click that nobody pays out.
        OrderState::Paid if at_counter => {
            return Err(ApiError::conflict(
                "paid_at_box_office",
                "this order was paid at the box office: refunds are made there",
            ));
        }
        OrderState::Paid => {
            // Scanned in, then refunded: a used ticket is not the buyer's to give back.
            if used_tickets(&mut tx, id).await? > 0 {
                return Err(ApiError::conflict(
                    "ticket_used",
                    "a ticket of this order was used at the gate: it cannot be refunded",
                ));
            }
            let windows: Vec<crate::promotions::RefundWindow> =
                serde_json::from_value(policy).unwrap_or_default();
            let percent = crate::promotions::refund_percent(&windows, starts_at, Utc::now());
            if percent == 0 {
                return Err(ApiError::conflict(
                    "not_refundable",
                    "the event's refund policy allows no refund now",
                ));
            }
            let refund = (total - fee).max(0) * i64::from(percent) / 100;
            sqlx::query("UPDATE orders SET refund_minor = $2, seats_after_refund = 'return' WHERE id = $1")
                .bind(id)
                .bind(refund)
                .execute(&mut *tx)
                .await?;
            refunded = Some((percent, refund));
        }
        _ => {
            return Err(ApiError::conflict(
                "not_cancellable",
                format!("an order that is {} cannot be cancelled", order_state.as_str()),
            ))
        }
    }
    record::apply(&mut tx, id, order_state, Input::BuyerCancels, "buyer", json!({})).await?;
    let details = json!({
        "from": order_state.as_str(),
        "refund_percent": refunded.map(|r| r.0),
        "refund_minor": refunded.map(|r| r.1),
    });
    let buyer = crate::audit::Actor::buyer(id, origin);
    crate::audit::record(&mut tx, &buyer, org, "order.cancel", format!("order:{id}"), details).await?;
    tx.commit().await?;
    co.drive(id).await;
    Ok((StatusCode::ACCEPTED, Json(view(&state.db, id).await?)))
}

/// Tickets of an order used at the gate. Check-in marks a ticket used only while its order is
/// paid, under a share lock on the order ([`crate::fulfillment::checkin`]): read under the order's
/// `FOR UPDATE`, this count cannot change before the refund is decided.
pub(super) async fn used_tickets(tx: &mut sqlx::PgConnection, order: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM tickets WHERE order_id = $1 AND state = 'used'")
        .bind(order)
        .fetch_one(tx)
        .await
}

/// The body of an organizer's refund.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RefundRequest {
    /// `return` (back on sale, the default) or `off_sale` (the default when used tickets are
    /// refunded: someone sat there).
    pub seats: Option<String>,
    /// The share of the total to refund, 1 to 100 (default 100).
    pub percent: Option<u8>,
    /// Refund an order whose tickets were used at the gate. Without it such an order is refused
    /// (`409 ticket_used`), so that a refund of someone who came in is always said explicitly.
    pub include_used: bool,
}

/// `POST /api/v1/orders/{id}/refund`: an organizer refunds a paid order (organizer admins).
#[utoipa::path(post, path = "/api/v1/orders/{id}/refund", tag = "checkout", security(("api_key" = [])),
    params(("id" = String, Path, description = "the order id")), request_body = RefundRequest,
    responses((status = 202, body = OrderView), crate::api::Problems))]
pub(super) async fn refund_order(
    State(state): State<AppState>,
    Can(caller, _): Can<need::Refund>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<OrderView>)> {
    let co = state.checkout()?;
    let id: Uuid = id.parse().map_err(|_| ApiError::NotFound)?;
    let req: RefundRequest = if body.is_empty() { RefundRequest::default() } else { api::parse_json(&body)? };
    if !matches!(req.seats.as_deref(), None | Some("return" | "off_sale")) {
        return Err(ApiError::field("seats", "must be return or off_sale"));
    }
    let percent = req.percent.unwrap_or(100);
    if !(1..=100).contains(&percent) {
        return Err(ApiError::field("percent", "must be 1 to 100"));
    }
    let mut tx = state.db.begin().await?;
    let row: Option<(Uuid, OrderState, i64)> =
        sqlx::query_as("SELECT organization_id, state, total_minor FROM orders WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let (org, order_state, total) = row.filter(|(org, ..)| caller.sees(*org)).ok_or(ApiError::NotFound)?;
    if order_state != OrderState::Paid {
        return Err(ApiError::conflict(
            "not_refundable",
            format!("an order that is {} cannot be refunded", order_state.as_str()),
        ));
    }
    let used = used_tickets(&mut tx, id).await?;
    if used > 0 && !req.include_used {
        return Err(ApiError::conflict(
            "ticket_used",
            format!("{used} ticket(s) of this order were used at the gate; to refund anyway, send include_used: true"),
        ));
    }
    let seats = match (req.seats.as_deref(), used) {
        (Some("return"), 1..) => {
            return Err(ApiError::field("seats", "the seats of used tickets cannot go back on sale"))
        }
        (Some(seats), _) => seats,
        (None, 0) => "return",
        (None, _) => "off_sale",
    };
    sqlx::query("UPDATE orders SET refund_minor = $2, seats_after_refund = $3 WHERE id = $1")
        .bind(id)
        .bind(total * i64::from(percent) / 100)
        .bind(seats)
        .execute(&mut *tx)
        .await?;
    let details = json!({ "seats": seats, "percent": percent, "used_tickets": used });
    record::apply(
        &mut tx,
        id,
        order_state,
        Input::OrganizerRefunds,
        &format!("user:{}", caller.user_id),
        details.clone(),
    )
    .await?;
    let details =
        json!({ "refund_minor": total * i64::from(percent) / 100, "total_minor": total, "request": details });
    crate::audit::by(&mut tx, &caller, org, "order.refund", format!("order:{id}"), details).await?;
    tx.commit().await?;
    co.drive(id).await;
    Ok((StatusCode::ACCEPTED, Json(view(&state.db, id).await?)))
}

/// One row of an event's order list.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct OrderSummary {
    id: Uuid,
    state: OrderState,
    outcome: Option<String>,
    email: String,
    currency: String,
    total_minor: i64,
    refund_minor: i64,
    created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OrderFilter {
    /// Only orders in this state.
    pub state: Option<OrderState>,
    /// Only orders of this buyer (any case): the box office finds a buyer's order by it.
    #[param(max_length = 254)]
    pub email: Option<String>,
}

/// `GET /api/v1/events/{id}/orders[?state=&email=]`: an event's orders, newest last (cursor
/// pagination).
#[utoipa::path(get, path = "/api/v1/events/{id}/orders", tag = "checkout", security(("api_key" = [])),
    params(("id" = String, Path, description = "the event id"), PageQuery, OrderFilter),
    responses((status = 200, body = Listing<OrderSummary>), crate::api::Problems))]
pub(super) async fn list_orders(
    State(state): State<AppState>,
    OwnEvent { event, .. }: OwnEvent<need::Read>,
    Query(page): Query<PageQuery>,
    Query(filter): Query<OrderFilter>,
) -> Result<Json<Listing<OrderSummary>>> {
    let email = filter.email.as_deref().map(str::trim).filter(|e| !e.is_empty());
    if email.is_some_and(|e| e.chars().count() > 254) {
        return Err(ApiError::field("email", "must be at most 254 characters"));
    }
    let query = sqlx::query_as(
        "SELECT id, state, outcome, email, currency, total_minor, refund_minor, created_at FROM orders
         WHERE event_id = $1 AND ($2::text IS NULL OR state = $2) AND ($3::text IS NULL OR lower(email) = lower($3))
           AND (created_at, id) > ($4, $5)
         ORDER BY created_at, id LIMIT $6",
    )
    .bind(event.id)
    .bind(filter.state.map(OrderState::as_str))
    .bind(email);
    Ok(Json(page.fetch(query, &state.db, |r: &OrderSummary| (r.created_at, r.id)).await?))
}
