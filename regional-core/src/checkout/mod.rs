//! Checkout: from a hold at the edge to a paid order, with no money lost and no seat sold twice.
//!
//! - `POST /api/v1/checkout` (through the edge): the buyer's hold token (verified offline with
//!   the edge's public keys) and an `Idempotency-Key` become one order, priced here
//!   ([`pricing`]); the hold is extended for payment (by the edge on the way, or else asked of it
//!   here) and a payment created with the provider.
//! - `GET /api/v1/orders/{id}` (a long poll with `?wait=…&while=…`: [`watch`]) and
//!   `POST /api/v1/orders/{id}/cancel`: the buyer, with the order token the checkout answered.
//! - `POST /api/v1/webhooks/{provider}`: the provider's signed outcome.
//! - Organizers: `PUT /api/v1/events/{id}/sale-settings` (fees, tax, holds),
//!   `GET /api/v1/events/{id}/orders`, `POST /api/v1/orders/{id}/refund`.
//!
//! The saga ([`saga`]) is persisted in `orders.state`; [`driver`] performs its steps and the
//! reconciler resumes them after any crash.

pub mod counter;
pub mod create;
pub mod driver;
mod orders;
mod payment_steps;
pub mod pricing;
mod quote;
pub mod record;
pub mod routes;
pub mod saga;
mod seat_steps;
pub mod watch;

/// The checkout's two reads that must stay look-ups, for the test that checks their plans.
#[doc(hidden)]
pub use quote::{pricing_read_sql, OWNED_TICKETS_SQL};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared_types::token::{KeyRing, TokenSigner};
use sqlx::PgPool;
use uuid::Uuid;

use self::saga::OrderState;
use crate::edge_client::EdgeClient;
use crate::error::{ApiError, Result};
use crate::payments::provider::Provider;

/// Everything checkout needs besides the database.
pub struct Checkout {
    pub db: PgPool,
    pub edge: EdgeClient,
    pub provider: Provider,
    /// The edge's public keys (hold tokens), several during a rotation.
    pub edge_keys: KeyRing,
    /// Signs order tokens, transfer links and ticket codes (the core's key).
    pub signer: TokenSigner,
    /// The core's earlier public keys, still trusted during a rotation (`CORE_PREVIOUS_VERIFYING_KEYS`):
    /// the ticket codes, order links and transfer links they signed keep working, and `/api/v1/keys`
    /// publishes them for offline scanners. Empty when no rotation is under way.
    pub previous_keys: KeyRing,
    /// A test-only crash point (`CORE_FAULT_INJECT`).
    pub fault: Option<String>,
    /// How long after the hold's expiry a payment may still arrive before it is cancelled.
    pub grace: chrono::Duration,
}

impl Checkout {
    /// The keys the core's own tokens are checked against: its signing key's, and the earlier ones.
    pub fn trusted_keys(&self) -> KeyRing {
        self.signer.verifying_ring().merge(&self.previous_keys)
    }
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LineView {
    pub tier_id: Uuid,
    pub seat_id: Option<String>,
    pub zone_id: Option<String>,
    pub price_minor: i64,
    pub discount_minor: i64,
    pub fee_minor: i64,
    pub tax_minor: i64,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PaymentView {
    pub provider: String,
    pub state: String,
    /// Open this to pay (the provider's page).
    pub redirect_url: Option<String>,
    pub refunded_minor: i64,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TicketView {
    pub id: Uuid,
    pub tier_id: Uuid,
    pub seat_id: Option<String>,
    pub state: String,
    pub version: i32,
    /// Given to someone else (an accepted transfer): the order no longer shows its code.
    #[serde(default)]
    pub transferred: bool,
}

/// An order's own record: who, for which event, where it stands and what it costs (the head of
/// [`OrderView`]; an event's order list shows the shorter `orders::OrderSummary`).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderHead {
    pub id: Uuid,
    pub event_id: Uuid,
    pub state: OrderState,
    /// Why it ended as it did (`payment_failed`, `abandoned`, `hold_lost`, `buyer_cancelled`, ...).
    pub outcome: Option<String>,
    pub email: String,
    /// The mobile number texts about the order go to (docs/sms.md), if the buyer gave one.
    #[serde(default)]
    pub phone: Option<String>,
    pub hold_id: String,
    pub currency: String,
    #[serde(flatten)]
    pub totals: pricing::Totals,
    pub refund_minor: i64,
    /// Pay before this (the hold's expiry, extended for payment).
    pub hold_expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An order as its buyer and organizer see it: its record, lines, payment and tickets.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrderView {
    #[serde(flatten)]
    pub head: OrderHead,
    pub lines: Vec<LineView>,
    pub payment: Option<PaymentView>,
    pub tickets: Vec<TicketView>,
}

const HEAD_COLUMNS: &str =
    "id, event_id, state, outcome, email, phone, hold_id, currency, subtotal_minor, discount_minor, \
    fee_minor, tax_minor, tax_included, total_minor, refund_minor, hold_expires_at, created_at, updated_at";

/// The full view of an order.
pub async fn view<'e, E: sqlx::PgExecutor<'e>>(db: E, id: Uuid) -> Result<OrderView> {
    // One statement: a buyer polling their order costs one round trip.
    let row: Option<(Value, Value, Option<Value>, Value)> = sqlx::query_as(&format!(
        "SELECT to_jsonb(h),
             (SELECT coalesce(jsonb_agg(to_jsonb(l) ORDER BY l.line), '[]') FROM
                 (SELECT line, tier_id, seat_id, zone_id, price_minor, discount_minor, fee_minor, tax_minor
                  FROM order_lines WHERE order_id = $1) l),
             (SELECT to_jsonb(p) FROM (SELECT provider, state, redirect_url, refunded_minor
                  FROM payments WHERE order_id = $1) p),
             (SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY t.seat_id, t.id), '[]') FROM
                 (SELECT t.id, t.tier_id, t.seat_id, t.state, t.version,
                         lower(t.holder_email) <> lower(o.email) AS transferred
                  FROM tickets t JOIN orders o ON o.id = t.order_id WHERE t.order_id = $1) t)
         FROM (SELECT {HEAD_COLUMNS} FROM orders WHERE id = $1) h"
    ))
    .bind(id)
    .fetch_optional(db)
    .await?;
    let (head, lines, payment, tickets) = row.ok_or(ApiError::NotFound)?;
    let corrupt = |e: serde_json::Error| ApiError::Database(sqlx::Error::Decode(Box::new(e)));
    Ok(OrderView {
        head: serde_json::from_value(head).map_err(corrupt)?,
        lines: serde_json::from_value(lines).map_err(corrupt)?,
        payment: payment.map(serde_json::from_value).transpose().map_err(corrupt)?,
        tickets: serde_json::from_value(tickets).map_err(corrupt)?,
    })
}

/// The order's view once its payment has started: while another worker (a concurrent retry of
/// the same checkout) is starting it, waits up to 5 s, so that both answers carry the payment.
async fn settled_view(db: &PgPool, id: Uuid) -> Result<OrderView> {
    let mut order = view(db, id).await?;
    for _ in 0..100 {
        if order.head.state != OrderState::Created {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        order = view(db, id).await?;
    }
    Ok(order)
}
