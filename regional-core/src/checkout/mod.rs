//! Checkout: from a hold at the edge to a paid order, with no money lost and no seat sold twice.
//!
//! - `POST /api/v1/checkout` (through the edge): the buyer's hold token (verified offline with
//!   the edge's public keys) and an `Idempotency-Key` become one order, priced here
//!   ([`pricing`]); the hold is extended for payment and a payment created with the provider.
//! - `GET /api/v1/orders/{id}` and `POST /api/v1/orders/{id}/cancel`: the buyer, with the order
//!   token the checkout answered.
//! - `POST /api/v1/webhooks/{provider}`: the provider's signed outcome.
//! - Organizers: `PUT /api/v1/events/{id}/sale-settings` (fees, tax, holds),
//!   `GET /api/v1/events/{id}/orders`, `POST /api/v1/orders/{id}/refund`.
//!
//! The saga ([`saga`]) is persisted in `orders.state`; [`driver`] performs its steps and the
//! reconciler resumes them after any crash.

pub mod driver;
pub mod pricing;
pub mod saga;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use shared_types::inventory::HoldSettings;
use shared_types::token::{
    unverified_audience, verify, Claims, Expectation, HoldGrant, KeyRing, TokenKind, TokenSigner,
};
use sqlx::PgPool;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use self::pricing::{Discount, LineIn, PricingSettings};
use self::saga::{Input, OrderState};
use crate::api::{self, Cursor, Listing, PageQuery};
use crate::app::AppState;
use crate::auth::{Caller, Permission};
use crate::error::ApiError;
use crate::events::EventState;
use crate::payments::{PaymentProvider, Provider, RemoteState, WebhookKind};
use crate::publishing::EdgeClient;

/// How long a buyer's order token lets them see their order.
const ORDER_TOKEN_DAYS: i64 = 400;

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

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_checkout))
        .routes(routes!(get_order))
        .routes(routes!(cancel_order))
        .routes(routes!(refund_order))
        .routes(routes!(webhook))
        .routes(routes!(set_sale_settings))
        .routes(routes!(list_orders))
}

pub(crate) fn checkout_of(state: &AppState) -> Result<Arc<Checkout>, ApiError> {
    state.checkout.clone().ok_or_else(|| {
        ApiError::Unavailable(
            "checkout is not configured on this core (CORE_SIGNING_KEY, EDGE_VERIFYING_KEYS)".into(),
        )
    })
}

/// The body of `POST /api/v1/checkout`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequest {
    /// The hold token the edge answered when the seats were held.
    pub hold_token: String,
    /// Where the tickets go.
    pub email: String,
    #[serde(default)]
    pub promo_code: Option<String>,
    /// Where the payment page sends the buyer back to, with the order id appended
    /// (`https://…/orders/`); http(s), at most 300 characters.
    #[serde(default)]
    pub return_url: Option<String>,
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
    /// Open this to pay (test provider).
    pub redirect_url: Option<String>,
    /// For Stripe.js.
    pub client_secret: Option<String>,
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

/// An order as its buyer and organizer see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrderView {
    pub id: Uuid,
    pub event_id: Uuid,
    pub state: OrderState,
    /// Why it ended as it did (`payment_failed`, `abandoned`, `hold_lost`, `buyer_cancelled`, ...).
    pub outcome: Option<String>,
    pub email: String,
    pub hold_id: String,
    pub currency: String,
    pub subtotal_minor: i64,
    pub discount_minor: i64,
    pub fee_minor: i64,
    pub tax_minor: i64,
    pub tax_included: bool,
    pub total_minor: i64,
    pub refund_minor: i64,
    /// Pay before this (the hold's expiry, extended for payment).
    pub hold_expires_at: DateTime<Utc>,
    pub lines: Vec<LineView>,
    pub payment: Option<PaymentView>,
    pub tickets: Vec<TicketView>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The answer to a checkout: the order and the buyer's token for it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CheckoutAnswer {
    pub order: OrderView,
    /// `Authorization: Bearer` for `GET /api/v1/orders/{id}` and its cancellation.
    pub order_token: String,
}

#[derive(Deserialize)]
struct OrderHead {
    id: Uuid,
    event_id: Uuid,
    state: OrderState,
    outcome: Option<String>,
    email: String,
    hold_id: String,
    currency: String,
    subtotal_minor: i64,
    discount_minor: i64,
    fee_minor: i64,
    tax_minor: i64,
    tax_included: bool,
    total_minor: i64,
    refund_minor: i64,
    hold_expires_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

const HEAD_COLUMNS: &str =
    "id, event_id, state, outcome, email, hold_id, currency, subtotal_minor, discount_minor, \
    fee_minor, tax_minor, tax_included, total_minor, refund_minor, hold_expires_at, created_at, updated_at";

/// The full view of an order.
pub async fn view(db: &PgPool, id: Uuid) -> Result<OrderView, ApiError> {
    // One statement: a buyer polling their order costs one round trip.
    let row: Option<(Value, Value, Option<Value>, Value)> = sqlx::query_as(&format!(
        "SELECT to_jsonb(h),
             (SELECT coalesce(jsonb_agg(to_jsonb(l) ORDER BY l.line), '[]') FROM
                 (SELECT line, tier_id, seat_id, zone_id, price_minor, discount_minor, fee_minor, tax_minor
                  FROM order_lines WHERE order_id = $1) l),
             (SELECT to_jsonb(p) FROM (SELECT provider, state, redirect_url, client_secret, refunded_minor
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
    let h: OrderHead = serde_json::from_value(head).map_err(corrupt)?;
    Ok(OrderView {
        id: h.id,
        event_id: h.event_id,
        state: h.state,
        outcome: h.outcome,
        email: h.email,
        hold_id: h.hold_id,
        currency: h.currency,
        subtotal_minor: h.subtotal_minor,
        discount_minor: h.discount_minor,
        fee_minor: h.fee_minor,
        tax_minor: h.tax_minor,
        tax_included: h.tax_included,
        total_minor: h.total_minor,
        refund_minor: h.refund_minor,
        hold_expires_at: h.hold_expires_at,
        lines: serde_json::from_value(lines).map_err(corrupt)?,
        payment: payment.map(serde_json::from_value).transpose().map_err(corrupt)?,
        tickets: serde_json::from_value(tickets).map_err(corrupt)?,
        created_at: h.created_at,
        updated_at: h.updated_at,
    })
}

fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let key = headers
        .get("idempotency-key")
        .ok_or_else(|| ApiError::field("Idempotency-Key", "this header is required"))?
        .to_str()
        .map_err(|_| ApiError::field("Idempotency-Key", "must be visible ASCII"))?;
    if key.is_empty() || key.len() > 128 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::field("Idempotency-Key", "must be 1 to 128 visible ASCII characters"));
    }
    Ok(key.to_owned())
}

pub(crate) fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.rsplit_once('@') else { return false };
    (3..=254).contains(&email.len())
        && !local.is_empty()
        && domain.contains('.')
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn now_secs() -> i64 {
    Utc::now().timestamp()
}

/// The buyer's order token.
pub(crate) fn order_token(signer: &TokenSigner, order: Uuid, event: Uuid, visitor: &str) -> String {
    let now = now_secs();
    let claims = Claims {
        iss: "core".to_owned(),
        aud: event.to_string(),
        sub: visitor.to_owned(),
        iat: now,
        exp: now + ORDER_TOKEN_DAYS * 86_400,
        jti: order.to_string(),
        extra: json!({}),
    };
    signer.sign(TokenKind::Order, &claims)
}

/// The id a core-signed token of `kind` in `Authorization: Bearer` opens (its `jti`, which must be
/// `id`): order tokens open orders, transfer tokens open transfers.
pub(crate) fn authorize_token(
    co: &Checkout,
    headers: &HeaderMap,
    kind: TokenKind,
    id: &str,
) -> Result<Uuid, ApiError> {
    let (a, what) = match kind {
        TokenKind::Transfer => ("a", "transfer"),
        _ => ("an", "order"),
    };
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::Token {
            reason: "missing",
            detail: format!("{a} {what} token is required (Authorization: Bearer)"),
        })?
        .trim();
    let refused =
        |e: shared_types::token::TokenError| ApiError::Token { reason: e.reason(), detail: e.to_string() };
    let audience = unverified_audience(token).ok_or_else(|| ApiError::Token {
        reason: "malformed",
        detail: format!("the {what} token is malformed"),
    })?;
    let expect = Expectation { kind, issuer: "core", audience: &audience, subject: None, now: now_secs() };
    let claims: Claims<Value> = verify(token, &co.trusted_keys(), &expect).map_err(refused)?;
    if claims.jti != id {
        return Err(ApiError::NotFound);
    }
    id.parse().map_err(|_| ApiError::NotFound)
}

/// The order an order token in `Authorization: Bearer` opens (it must be for `id`).
pub(crate) fn authorize_buyer(checkout: &Checkout, headers: &HeaderMap, id: &str) -> Result<Uuid, ApiError> {
    authorize_token(checkout, headers, TokenKind::Order, id)
}

/// What pricing needs of the event.
#[derive(sqlx::FromRow)]
struct EventForSale {
    organization_id: Uuid,
    state: EventState,
    pricing: Value,
    hold_settings: Value,
    waiting_room: Value,
    tiers: Value,
    zones: Value,
}

#[derive(Deserialize, Clone)]
struct TierForSale {
    id: Uuid,
    kind: String,
    currency: String,
    price_minor: i64,
    zone_prices: Value,
    per_order_limit: i32,
    sale_starts_at: Option<DateTime<Utc>>,
    sale_ends_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct Promo {
    id: Uuid,
    kind: String,
    percent_off: Option<i32>,
    amount_off_minor: Option<i64>,
    currency: Option<String>,
    per_buyer_limit: Option<i32>,
    valid_from: Option<DateTime<Utc>>,
    valid_until: Option<DateTime<Utc>>,
    tier_ids: Vec<Uuid>,
    active: bool,
}

/// A priced order, ready to insert.
struct Priced {
    organization_id: Uuid,
    currency: String,
    lines: Vec<(Uuid, Option<String>, Option<String>, pricing::LinePrice)>,
    totals: pricing::Totals,
    promo: Option<Uuid>,
    limits: BuyerLimits,
}

/// Prices the hold's seats and places with the event's current prices, checking every rule of the
/// sale (state, tier windows, per-order limits, per-buyer cap, promo code).
async fn price_hold(
    db: &PgPool,
    event: Uuid,
    grant: &HoldGrant,
    promo_code: Option<&str>,
) -> Result<Priced, ApiError> {
    // Everything pricing reads, in one round trip: the event, its tiers and the seats' zones. What
    // the buyer already owns is counted in the order's transaction ([`BuyerLimits::enforce`]).
    let seats: Vec<String> = grant.seats.iter().map(|s| s.to_string()).collect();
    let e: EventForSale = sqlx::query_as(
        "SELECT e.organization_id, e.state, e.pricing, e.hold_settings, e.waiting_room,
             (SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY t.created_at, t.id), '[]') FROM
                 (SELECT id, kind, currency, price_minor, zone_prices, per_order_limit, sale_starts_at, sale_ends_at, created_at
                  FROM ticket_tiers WHERE event_id = e.id) t) AS tiers,
             (SELECT coalesce(jsonb_object_agg(seat_id, zone_id), '{}') FROM venue_seats
                  WHERE venue_id = e.venue_id AND seat_id = ANY($2)) AS zones
         FROM events e WHERE e.id = $1",
    )
    .bind(event)
    .bind(&seats)
    .fetch_optional(db)
    .await?
    .ok_or(ApiError::NotFound)?;
    if !matches!(e.state, EventState::Published | EventState::OnSale | EventState::SoldOut) {
        return Err(ApiError::conflict("event_not_on_sale", "this event is not on sale"));
    }
    let settings: PricingSettings = serde_json::from_value(e.pricing).unwrap_or_default();
    let holds: HoldSettings = serde_json::from_value(e.hold_settings).unwrap_or_default();
    // What the waiting room admits each buyer to (the admission token's `max_tickets`).
    let room: shared_types::waiting_room::WaitingRoomSettings =
        serde_json::from_value(e.waiting_room).unwrap_or_default();
    let corrupt = |e: serde_json::Error| ApiError::Database(sqlx::Error::Decode(Box::new(e)));
    let tiers: Vec<TierForSale> = serde_json::from_value(e.tiers).map_err(corrupt)?;
    let zones: HashMap<String, String> = serde_json::from_value(e.zones).map_err(corrupt)?;
    // (tier, seat, zone, price) per line.
    let mut lines: Vec<(TierForSale, Option<String>, Option<String>, i64)> = Vec::new();
    if !grant.seats.is_empty() {
        let tier = tiers
            .iter()
            .find(|t| t.kind == "seated")
            .ok_or_else(|| ApiError::conflict("not_priced", "the seats of this event have no price"))?;
        for seat in seats {
            let zone = zones.get(&seat).ok_or_else(|| {
                ApiError::conflict("not_priced", format!("seat {seat} is not in this event's venue"))
            })?;
            let price =
                tier.zone_prices.get(zone.as_str()).and_then(Value::as_i64).unwrap_or(tier.price_minor);
            lines.push((tier.clone(), Some(seat), Some(zone.clone()), price));
        }
    }
    if let Some(ga) = &grant.ga_tier {
        let tier = tiers
            .iter()
            .find(|t| t.kind == "ga" && t.id.to_string() == ga.as_str())
            .ok_or_else(|| ApiError::conflict("not_priced", "this tier is not sold any more"))?;
        for _ in 0..grant.ga_quantity {
            lines.push((tier.clone(), None, None, tier.price_minor));
        }
    }
    if lines.is_empty() {
        return Err(ApiError::conflict("empty_hold", "the hold holds nothing"));
    }
    let now = Utc::now();
    let mut per_tier: HashMap<Uuid, i32> = HashMap::new();
    for (tier, ..) in &lines {
        *per_tier.entry(tier.id).or_default() += 1;
        if tier.sale_starts_at.is_some_and(|s| now < s) || tier.sale_ends_at.is_some_and(|e| now >= e) {
            return Err(ApiError::conflict("sale_closed", "this tier is not on sale at this time"));
        }
    }
    for (tier, count) in &per_tier {
        let limit = tiers.iter().find(|t| t.id == *tier).map_or(i32::MAX, |t| t.per_order_limit);
        if *count > limit {
            return Err(ApiError::conflict(
                "per_order_limit",
                format!("at most {limit} tickets of this tier per order"),
            ));
        }
    }
    let currency = lines[0].0.currency.clone();
    let mut discount = None;
    let mut promo_id = None;
    let mut promo_limit = None;
    let mut eligible: Vec<Uuid> = Vec::new();
    if let Some(code) = promo_code.map(str::trim).filter(|c| !c.is_empty()) {
        let promo: Promo = sqlx::query_as(
            "SELECT id, kind, percent_off, amount_off_minor, currency, per_buyer_limit, valid_from, valid_until, tier_ids, active
             FROM promo_codes WHERE event_id = $1 AND code = upper($2)",
        )
        .bind(event)
        .bind(code)
        .fetch_optional(db)
        .await?
        .ok_or_else(|| ApiError::field("promo_code", "no such promo code"))?;
        if !promo.active
            || promo.valid_from.is_some_and(|f| now < f)
            || promo.valid_until.is_some_and(|u| now >= u)
        {
            return Err(ApiError::field("promo_code", "this promo code is not valid now"));
        }
        if promo.kind == "amount" && promo.currency.as_deref() != Some(currency.as_str()) {
            return Err(ApiError::field("promo_code", "this promo code is for another currency"));
        }
        eligible = if promo.tier_ids.is_empty() {
            per_tier.keys().copied().collect()
        } else {
            promo.tier_ids.clone()
        };
        discount = Some(match (promo.percent_off, promo.amount_off_minor) {
            (Some(p), _) => Discount::Percent(i64::from(p)),
            (None, Some(a)) => Discount::AmountOff(a),
            _ => Discount::Percent(0),
        });
        promo_id = Some(promo.id);
        promo_limit = promo.per_buyer_limit;
    }
    let inputs: Vec<LineIn> = lines
        .iter()
        .map(|(tier, _, _, price)| LineIn { price_minor: *price, discountable: eligible.contains(&tier.id) })
        .collect();
    if discount.is_some() && !inputs.iter().any(|l| l.discountable) {
        return Err(ApiError::field("promo_code", "this promo code does not apply to these tickets"));
    }
    let (prices, totals) = pricing::price(&inputs, discount, &settings);
    let lines_count = lines.len() as i64;
    Ok(Priced {
        organization_id: e.organization_id,
        currency,
        lines: lines
            .into_iter()
            .zip(prices)
            .map(|((tier, seat, zone, _), p)| (tier.id, seat, zone, p))
            .collect(),
        totals,
        promo: promo_id,
        limits: BuyerLimits {
            tickets: lines_count,
            cap: i64::from(holds.max_tickets_per_visitor.min(room.max_tickets_per_buyer)),
            promo: promo_id.zip(promo_limit),
        },
    })
}

/// What one buyer may have of an event: checked in the order's transaction, under a lock on
/// (event, visitor) and one on (event, e-mail), so that concurrent checkouts of one buyer (holds
/// in several sections of a sectioned event, whose shards each see only their own) are counted
/// one after the other.
struct BuyerLimits {
    /// Tickets in this order.
    tickets: i64,
    /// The event's cap per buyer across all its sections: the smaller of `max_tickets_per_visitor`
    /// and the waiting room's `max_tickets_per_buyer` (what each admission allows).
    cap: i64,
    /// The promo code and its per-buyer limit, when it has one.
    promo: Option<(Uuid, i32)>,
}

impl BuyerLimits {
    async fn enforce(
        &self,
        tx: &mut sqlx::PgConnection,
        event: Uuid,
        visitor: &str,
        email: &str,
    ) -> Result<(), ApiError> {
        // Both keys made by PostgreSQL (the e-mail through the same lower() as the count), taken in
        // one order: two transactions never wait on each other's second lock.
        let keys: Vec<i64> = sqlx::query_scalar(
            "SELECT DISTINCT hashtextextended(key, 0) AS k FROM
                 unnest(ARRAY['buyer:' || $1 || ':visitor:' || $2, 'buyer:' || $1 || ':email:' || lower($3)]) AS key
             ORDER BY k",
        )
        .bind(event.to_string())
        .bind(visitor)
        .bind(email)
        .fetch_all(&mut *tx)
        .await?;
        for key in keys {
            sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(key).execute(&mut *tx).await?;
        }
        let owned: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM order_lines l JOIN orders o ON o.id = l.order_id
             WHERE o.event_id = $1 AND (o.visitor_id = $2 OR lower(o.email) = lower($3))
               AND o.state NOT IN ('cancelled', 'refunded')",
        )
        .bind(event)
        .bind(visitor)
        .bind(email)
        .fetch_one(&mut *tx)
        .await?;
        if owned + self.tickets > self.cap {
            return Err(ApiError::conflict(
                "limit_exceeded",
                format!("at most {} tickets per buyer for this event", self.cap),
            ));
        }
        if let Some((promo, limit)) = self.promo {
            let used: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM orders WHERE promo_code_id = $1 AND lower(email) = lower($2)
                   AND state NOT IN ('cancelled')",
            )
            .bind(promo)
            .bind(email)
            .fetch_one(&mut *tx)
            .await?;
            if used >= i64::from(limit) {
                return Err(ApiError::field("promo_code", "this promo code was already used by this buyer"));
            }
        }
        Ok(())
    }
}

fn answer(status: StatusCode, replayed: bool, body: CheckoutAnswer) -> Response {
    let mut resp = (status, Json(body)).into_response();
    if replayed {
        resp.headers_mut().insert("idempotent-replayed", axum::http::HeaderValue::from_static("true"));
    }
    resp
}

/// `POST /api/v1/checkout`: turns a hold into an order (once per `Idempotency-Key`) and starts its
/// payment. `201` with the order and the buyer's order token; a retry with the same key answers
/// the same order (`200`, `Idempotent-Replayed: true`).
#[utoipa::path(post, path = "/api/v1/checkout", tag = "checkout",
    params(("Idempotency-Key" = String, Header, description = "one order per key")),
    request_body = CheckoutRequest,
    responses((status = 201, body = CheckoutAnswer), (status = 200, body = CheckoutAnswer, description = "a retry"),
        (status = "4XX", description = "a problem (RFC 9457)", body = crate::api::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "the edge or the provider is unavailable; retry with the same key", body = crate::api::ProblemDoc, content_type = "application/problem+json")))]
async fn create_checkout(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let co = checkout_of(&state)?;
    let key = idempotency_key(&headers)?;
    let req: CheckoutRequest = api::parse_json(&body)?;
    let email = req.email.trim().to_owned();
    if !valid_email(&email) {
        return Err(ApiError::field("email", "must be an e-mail address"));
    }
    if let Some(url) = &req.return_url {
        let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
        let clean = !url.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '<' | '>'));
        if !scheme_ok || url.len() > 300 || !clean {
            return Err(ApiError::field("return_url", "must be an http(s) URL of at most 300 characters"));
        }
    }
    let refused =
        |e: shared_types::token::TokenError| ApiError::Token { reason: e.reason(), detail: e.to_string() };
    let audience = unverified_audience(&req.hold_token)
        .ok_or(ApiError::Token { reason: "malformed", detail: "the hold token is malformed".into() })?;
    let expect = Expectation {
        kind: TokenKind::Hold,
        issuer: "edge",
        audience: &audience,
        subject: None,
        now: now_secs(),
    };
    let claims: Claims<HoldGrant> = verify(&req.hold_token, &co.edge_keys, &expect).map_err(refused)?;
    let event: Uuid = audience.parse().map_err(|_| ApiError::NotFound)?;
    let visitor = claims.sub.clone();
    let hold = claims.extra.hold.to_string();
    let promo = req.promo_code.as_deref().map(str::trim).unwrap_or("").to_uppercase();
    let hash = Sha256::digest(format!("{hold}\n{}\n{promo}", email.to_lowercase()).as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();

    // A retry (same key), or the same hold under another key: the order that exists.
    if let Some(existing) = existing_order(&state.db, &visitor, &key, &hold).await? {
        if existing.visitor_id != visitor || (existing.hold_id == hold && existing.request_hash != hash) {
            return Err(ApiError::conflict(
                "idempotency_conflict",
                "this hold is already being bought with other details",
            ));
        }
        if existing.hold_id != hold {
            return Err(ApiError::conflict(
                "idempotency_conflict",
                "this Idempotency-Key was used for another checkout",
            ));
        }
        if existing.state == OrderState::Created {
            co.drive(existing.id).await;
        }
        let order = settled_view(&state.db, existing.id).await?;
        let token = order_token(&co.signer, order.id, order.event_id, &visitor);
        return Ok(answer(StatusCode::OK, true, CheckoutAnswer { order, order_token: token }));
    }

    // Promo codes cannot be guessed without limit: each attempt takes a slot per buyer and per
    // hold, given back unless the code itself was refused.
    let attempts = crate::promotions::Attempts::new(event, &visitor, &hold);
    if !promo.is_empty() {
        attempts.take(&state.db).await?;
    }
    let priced = match price_hold(&state.db, event, &claims.extra, Some(promo.as_str())).await {
        Err(e) if e.is_field("promo_code") => return Err(e),
        other => {
            if !promo.is_empty() {
                attempts.give_back(&state.db).await?;
            }
            other?
        }
    };
    let id = Uuid::new_v4();
    let expires_at =
        DateTime::<Utc>::from_timestamp_millis(claims.extra.expires_at_ms).unwrap_or_else(Utc::now);
    let mut tx = state.db.begin().await?;
    priced.limits.enforce(&mut tx, event, &visitor, &email).await?;
    let inserted = sqlx::query(
        "INSERT INTO orders (id, organization_id, event_id, visitor_id, hold_id, idempotency_key, request_hash, email, state,
             currency, subtotal_minor, discount_minor, fee_minor, tax_minor, tax_included, total_minor, promo_code_id, hold_expires_at,
             next_attempt_at, return_url)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'created', $9, $10, $11, $12, $13, $14, $15, $16, $17,
             now() + make_interval(secs => $18), $19)
         ON CONFLICT DO NOTHING",
    )
    .bind(id)
    .bind(priced.organization_id)
    .bind(event)
    .bind(&visitor)
    .bind(&hold)
    .bind(&key)
    .bind(&hash)
    .bind(&email)
    .bind(&priced.currency)
    .bind(priced.totals.subtotal_minor)
    .bind(priced.totals.discount_minor)
    .bind(priced.totals.fee_minor)
    .bind(priced.totals.tax_minor)
    .bind(priced.totals.tax_included)
    .bind(priced.totals.total_minor)
    .bind(priced.promo)
    .bind(expires_at)
    .bind(driver::HANDOVER_SECS)
    .bind(&req.return_url)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        // A concurrent request with the same key or hold won: answer its order.
        drop(tx);
        return Box::pin(create_checkout(State(state), headers, body)).await;
    }
    // Reporting counts orders created (the hold-to-order conversion); one statement, same transaction.
    sqlx::query(
        "INSERT INTO outbox (topic, key, payload)
         SELECT 'orders', event_id::text, jsonb_build_object('type', 'order.created', 'schema_version', 1,
             'order_id', id, 'event_id', event_id, 'organization_id', organization_id, 'email', email,
             'currency', currency, 'total_minor', total_minor, 'at', created_at)
         FROM orders WHERE id = $1",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?;
    for (i, (tier, seat, zone, p)) in priced.lines.iter().enumerate() {
        sqlx::query(
            "INSERT INTO order_lines (order_id, line, tier_id, seat_id, zone_id, price_minor, discount_minor, fee_minor, tax_minor)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(id)
        .bind(i as i32)
        .bind(tier)
        .bind(seat)
        .bind(zone)
        .bind(p.price_minor)
        .bind(p.discount_minor)
        .bind(p.fee_minor)
        .bind(p.tax_minor)
        .execute(&mut *tx)
        .await?;
    }
    if let Some(promo) = priced.promo {
        let counted = sqlx::query(
            "UPDATE promo_codes SET uses = uses + 1 WHERE id = $1 AND (max_uses IS NULL OR uses < max_uses)",
        )
        .bind(promo)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if counted == 0 {
            return Err(ApiError::field("promo_code", "this promo code has been used up"));
        }
    }
    driver::audit(
        &mut tx,
        "order",
        id,
        id,
        &format!("buyer:{visitor}"),
        None,
        "created",
        json!({ "total_minor": priced.totals.total_minor }),
    )
    .await?;
    tx.commit().await?;

    co.drive(id).await;
    let order = settled_view(&state.db, id).await?;
    if order.state == OrderState::Created {
        return Err(ApiError::Unavailable(
            "the order is recorded but its payment could not be started yet; retry with the same Idempotency-Key".into(),
        ));
    }
    let token = order_token(&co.signer, id, event, &visitor);
    Ok(answer(StatusCode::CREATED, false, CheckoutAnswer { order, order_token: token }))
}

/// The order's view once its payment has started: while another worker (a concurrent retry of
/// the same checkout) is starting it, waits up to 5 s, so that both answers carry the payment.
async fn settled_view(db: &PgPool, id: Uuid) -> Result<OrderView, ApiError> {
    let mut order = view(db, id).await?;
    for _ in 0..100 {
        if order.state != OrderState::Created {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        order = view(db, id).await?;
    }
    Ok(order)
}

#[derive(sqlx::FromRow)]
struct Existing {
    id: Uuid,
    visitor_id: String,
    hold_id: String,
    request_hash: String,
    state: OrderState,
}

async fn existing_order(
    db: &PgPool,
    visitor: &str,
    key: &str,
    hold: &str,
) -> Result<Option<Existing>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, visitor_id, hold_id, request_hash, state FROM orders
         WHERE (visitor_id = $1 AND idempotency_key = $2) OR hold_id = $3
         ORDER BY (visitor_id = $1 AND idempotency_key = $2) DESC LIMIT 1",
    )
    .bind(visitor)
    .bind(key)
    .bind(hold)
    .fetch_optional(db)
    .await
}

/// `GET /api/v1/orders/{id}`: the buyer's order (with the order token from checkout).
#[utoipa::path(get, path = "/api/v1/orders/{id}", tag = "checkout", security(("order_token" = [])),
    params(("id" = String, Path, description = "the order id")),
    responses((status = 200, body = OrderView), (status = "4XX", description = "a problem (RFC 9457)", body = crate::api::ProblemDoc, content_type = "application/problem+json")))]
async fn get_order(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<OrderView>, ApiError> {
    let co = checkout_of(&state)?;
    let id = authorize_buyer(&co, &headers, &id)?;
    Ok(Json(view(&state.db, id).await?))
}

/// `POST /api/v1/orders/{id}/cancel`: the buyer cancels. Before payment the hold is released;
/// after, the event's refund policy decides how much comes back (fees are kept), and the seats go
/// back on sale.
#[utoipa::path(post, path = "/api/v1/orders/{id}/cancel", tag = "checkout", security(("order_token" = [])),
    params(("id" = String, Path, description = "the order id")),
    responses((status = 202, body = OrderView), (status = "4XX", description = "a problem (RFC 9457)", body = crate::api::ProblemDoc, content_type = "application/problem+json")))]
async fn cancel_order(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<OrderView>), ApiError> {
    let co = checkout_of(&state)?;
    let id = authorize_buyer(&co, &headers, &id)?;
    let mut tx = state.db.begin().await?;
    let (order_state, total, fee, starts_at, policy): (OrderState, i64, i64, DateTime<Utc>, Value) =
        sqlx::query_as(
            "SELECT o.state, o.total_minor, o.fee_minor, e.starts_at, e.refund_policy FROM orders o
         JOIN events e ON e.id = o.event_id WHERE o.id = $1 FOR UPDATE OF o",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    match order_state {
        OrderState::Created | OrderState::AwaitingPayment => {}
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
        }
        _ => {
            return Err(ApiError::conflict(
                "not_cancellable",
                format!("an order that is {} cannot be cancelled", order_state.as_str()),
            ))
        }
    }
    driver::apply(&mut tx, id, order_state, Input::BuyerCancels, "buyer", json!({})).await?;
    tx.commit().await?;
    co.drive(id).await;
    Ok((StatusCode::ACCEPTED, Json(view(&state.db, id).await?)))
}

/// Tickets of an order used at the gate. Check-in marks a ticket used only while its order is
/// paid, under a share lock on the order ([`crate::fulfillment::checkin`]): read under the order's
/// `FOR UPDATE`, this count cannot change before the refund is decided.
async fn used_tickets(tx: &mut sqlx::PgConnection, order: Uuid) -> Result<i64, sqlx::Error> {
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
    responses((status = 202, body = OrderView), (status = "4XX", description = "a problem (RFC 9457)", body = crate::api::ProblemDoc, content_type = "application/problem+json")))]
async fn refund_order(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<OrderView>), ApiError> {
    caller.require(Permission::Refund)?;
    let co = checkout_of(&state)?;
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
    let _ = org;
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
    driver::apply(
        &mut tx,
        id,
        order_state,
        Input::OrganizerRefunds,
        &format!("user:{}", caller.user_id),
        json!({ "seats": seats, "percent": percent, "used_tickets": used }),
    )
    .await?;
    tx.commit().await?;
    co.drive(id).await;
    Ok((StatusCode::ACCEPTED, Json(view(&state.db, id).await?)))
}

/// `POST /api/v1/webhooks/{provider}`: a provider's signed report. Each provider event counts
/// once (duplicates answer `200` and change nothing); an unknown payment answers `404` so that the
/// provider retries.
#[utoipa::path(post, path = "/api/v1/webhooks/{provider}", tag = "checkout",
    params(("provider" = String, Path, description = "testpay or stripe")),
    request_body(content = Object, description = "the provider's event, signed (Stripe-Signature / Testpay-Signature)"),
    responses((status = 200, body = Object), (status = "4XX", description = "a problem (RFC 9457)", body = crate::api::ProblemDoc, content_type = "application/problem+json")))]
async fn webhook(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let co = checkout_of(&state)?;
    if provider != co.provider.name() {
        return Err(ApiError::NotFound);
    }
    let header = headers.get(format!("{provider}-signature")).and_then(|v| v.to_str().ok());
    let event = co
        .provider
        .verify_webhook(header, &body, now_secs())
        .map_err(|e| ApiError::Token { reason: e.reason(), detail: e.to_string() })?;
    let mut tx = state.db.begin().await?;
    let fresh = sqlx::query(
        "INSERT INTO webhook_events (provider, event_id, kind, provider_ref) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(&provider)
    .bind(&event.id)
    .bind(event.kind.as_str())
    .bind(&event.reference)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !fresh {
        return Ok(Json(json!({ "received": true, "duplicate": true })));
    }
    let (remote, input) = match event.kind {
        WebhookKind::PaymentSucceeded => (RemoteState::Succeeded, Input::PaymentSucceeded),
        WebhookKind::PaymentFailed => (RemoteState::Failed, Input::PaymentFailed),
        WebhookKind::PaymentCanceled => (RemoteState::Canceled, Input::PaymentFailed),
        WebhookKind::Other => {
            tx.commit().await?;
            return Ok(Json(json!({ "received": true, "ignored": true })));
        }
    };
    let order: Option<(Uuid, OrderState)> = sqlx::query_as(
        "SELECT o.id, o.state FROM payments p JOIN orders o ON o.id = p.order_id
         WHERE p.provider = $1 AND p.provider_ref = $2 FOR UPDATE OF o",
    )
    .bind(&provider)
    .bind(&event.reference)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((order, order_state)) = order else {
        // Not recorded yet (the checkout is still finishing): the provider will deliver again.
        return Err(ApiError::NotFound);
    };
    let actor = format!("{provider}:{}", event.id);
    driver::record_payment(&mut tx, order, remote, &actor).await?;
    let moved =
        driver::apply(&mut tx, order, order_state, input, &actor, json!({ "webhook": event.id })).await?;
    tx.commit().await?;
    if moved.is_some() {
        tokio::spawn(async move { co.drive(order).await });
    }
    Ok(Json(json!({ "received": true, "order_state": moved.unwrap_or(order_state) })))
}

/// An event's sale settings: fees and tax (core) and hold behaviour (edge).
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SaleSettings {
    #[serde(default)]
    pub pricing: PricingSettings,
    /// `hold_seconds`, `extension_seconds`, `max_tickets_per_visitor`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub holds: HoldSettings,
}

/// `PUT /api/v1/events/{id}/sale-settings`: fees, tax and holds (pushed to the edge).
#[utoipa::path(put, path = "/api/v1/events/{id}/sale-settings", tag = "catalog", security(("api_key" = [])),
    params(("id" = String, Path, description = "the resource id")), request_body = SaleSettings,
    responses((status = 200, body = SaleSettings), (status = "4XX", description = "a problem (RFC 9457)", body = crate::api::ProblemDoc, content_type = "application/problem+json")))]
async fn set_sale_settings(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<SaleSettings>, ApiError> {
    caller.require(Permission::ManageCatalog)?;
    let event = crate::events::find_event(&state.db, &caller, &id).await?;
    let settings: SaleSettings = api::parse_json(&body)?;
    let mut errors: Vec<shared_types::inventory::FieldError> = settings
        .pricing
        .validate()
        .into_iter()
        .map(|(f, m)| shared_types::inventory::FieldError::new(format!("pricing.{f}"), m))
        .collect();
    // The edge's own bounds (one definition): what passes here, the edge takes.
    errors.extend(settings.holds.validate("holds."));
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let mut tx = state.db.begin().await?;
    sqlx::query("UPDATE events SET pricing = $2, hold_settings = $3 WHERE id = $1")
        .bind(event.id)
        .bind(serde_json::to_value(settings.pricing).unwrap_or_default())
        .bind(serde_json::to_value(settings.holds).unwrap_or_default())
        .execute(&mut *tx)
        .await?;
    crate::events::touch(&mut tx, event.id).await?;
    tx.commit().await?;
    Ok(Json(settings))
}

/// One row of an event's order list.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct OrderSummary {
    pub id: Uuid,
    pub state: OrderState,
    pub outcome: Option<String>,
    pub email: String,
    pub currency: String,
    pub total_minor: i64,
    pub refund_minor: i64,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OrderFilter {
    /// Only orders in this state.
    pub state: Option<OrderState>,
}

/// `GET /api/v1/events/{id}/orders`: an event's orders, newest last (cursor pagination).
#[utoipa::path(get, path = "/api/v1/events/{id}/orders", tag = "checkout", security(("api_key" = [])),
    params(("id" = String, Path, description = "the event id"), PageQuery, OrderFilter),
    responses((status = 200, body = Object), (status = "4XX", description = "a problem (RFC 9457)", body = crate::api::ProblemDoc, content_type = "application/problem+json")))]
async fn list_orders(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(page): Query<PageQuery>,
    Query(filter): Query<OrderFilter>,
) -> Result<Json<Listing<OrderSummary>>, ApiError> {
    caller.require(Permission::Read)?;
    let event = crate::events::find_event(&state.db, &caller, &id).await?;
    let limit = page.limit()?;
    let after = page.after()?;
    let rows: Vec<OrderSummary> = sqlx::query_as(
        "SELECT id, state, outcome, email, currency, total_minor, refund_minor, created_at FROM orders
         WHERE event_id = $1 AND ($2::text IS NULL OR state = $2)
           AND ($3::timestamptz IS NULL OR (created_at, id) > ($3, $4::uuid))
         ORDER BY created_at, id LIMIT $5",
    )
    .bind(event.id)
    .bind(filter.state.map(OrderState::as_str))
    .bind(after.as_ref().map(|c| c.at))
    .bind(after.as_ref().and_then(|c| c.id.parse::<Uuid>().ok()))
    .bind(limit + 1)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(api::page(rows, limit, |r| Cursor { at: r.created_at, id: r.id.to_string() })))
}
