//! `POST /api/v1/checkout`: a buyer's hold becomes one order, exactly once per Idempotency-Key.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use shared_types::token::{unverified_audience, verify, Claims, Expectation, HoldGrant, TokenKind};
use sqlx::PgPool;
use uuid::Uuid;

use super::quote::*;
use super::saga::OrderState;
use super::*;
use crate::api::IdempotencyHeader;
use crate::api::{self};
use crate::error::{ApiError, Result};
use crate::state::AppState;
use crate::tokens::order_token;
use crate::validate::valid_email;

/// The body of `POST /api/v1/checkout`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequest {
    /// The hold token the edge answered when the seats were held.
    pub hold_token: String,
    /// Where the tickets go.
    #[schema(format = Email, min_length = 3, max_length = 254)]
    pub email: String,
    #[serde(default)]
    pub promo_code: Option<String>,
    /// A mobile number in international form (`+447700900123`) for the confirmation and the
    /// reminder by text message, where the shop sends them (the quote's `sms`); refused otherwise.
    #[serde(default)]
    #[schema(max_length = 32)]
    pub phone: Option<String>,
    /// Where the payment page sends the buyer back to, with the order id appended
    /// (`https://…/orders/`); http(s), at most 300 characters.
    #[serde(default)]
    #[schema(max_length = 300, pattern = "^https?://[^\\s]+$")]
    pub return_url: Option<String>,
}

/// The answer to a checkout: the order and the buyer's token for it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CheckoutAnswer {
    pub order: OrderView,
    /// `Authorization: Bearer` for `GET /api/v1/orders/{id}` and its cancellation.
    pub order_token: String,
}

pub(super) fn answer(status: StatusCode, replayed: bool, body: CheckoutAnswer) -> Response {
    let mut resp = (status, Json(body)).into_response();
    if replayed {
        resp.headers_mut().insert("idempotent-replayed", axum::http::HeaderValue::from_static("true"));
    }
    resp
}

/// The event and claims of a hold token the edge signed, unexpired.
fn verified_hold(co: &Checkout, token: &str) -> Result<(Uuid, Claims<HoldGrant>)> {
    let refused =
        |e: shared_types::token::TokenError| ApiError::Token { reason: e.reason(), detail: e.to_string() };
    let audience = unverified_audience(token)
        .ok_or(ApiError::Token { reason: "malformed", detail: "the hold token is malformed".into() })?;
    let expect = Expectation {
        kind: TokenKind::Hold,
        issuer: "edge",
        audience: &audience,
        subject: None,
        now: Utc::now().timestamp(),
    };
    let claims: Claims<HoldGrant> = verify(token, &co.edge_keys, &expect).map_err(refused)?;
    let event: Uuid = audience.parse().map_err(|_| ApiError::NotFound)?;
    Ok((event, claims))
}

/// [`price_hold`] with the promo code's guard (a quote's): codes cannot be guessed without limit,
/// so each attempt takes a slot per buyer and per hold, given back unless the code itself was
/// refused. A quote and a checkout share the slots: a quote is no way around them.
async fn price_guarded(db: &PgPool, event: Uuid, claims: &Claims<HoldGrant>, promo: &str) -> Result<Priced> {
    let attempts = PromoGuard::take(db, event, claims, promo).await?;
    let priced = price_hold(&mut *db.acquire().await?, event, &claims.extra, Some(promo)).await;
    attempts.settle(db, &priced).await?;
    priced
}

/// The slot a promo code's attempt takes (none without a code). Taken on the pool before any
/// transaction of the checkout begins, so that a refused code's rollback cannot give it back and
/// a request never waits for a second connection while it holds one.
struct PromoGuard(Option<crate::promotions::Attempts>);

impl PromoGuard {
    async fn take(db: &PgPool, event: Uuid, claims: &Claims<HoldGrant>, promo: &str) -> Result<Self> {
        if promo.is_empty() {
            return Ok(Self(None));
        }
        let attempts = crate::promotions::Attempts::new(event, &claims.sub, claims.extra.hold.as_str());
        attempts.take(db).await?;
        Ok(Self(Some(attempts)))
    }

    /// Gives the slot back unless the code itself was refused; after the checkout's transaction
    /// ended.
    async fn settle<T>(self, db: &PgPool, outcome: &Result<T>) -> Result<()> {
        match (self.0, outcome) {
            (None, _) => Ok(()),
            (Some(_), Err(e)) if e.is_field("promo_code") => Ok(()),
            (Some(attempts), _) => attempts.give_back(db).await,
        }
    }
}

/// The body of `POST /api/v1/checkout/quote`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuoteRequest {
    /// The hold token the edge answered when the seats were held.
    pub hold_token: String,
    #[serde(default)]
    pub promo_code: Option<String>,
}

/// One ticket of a quote.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QuoteLine {
    pub tier_id: Uuid,
    pub tier_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seat: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    pub price_minor: i64,
    pub discount_minor: i64,
    pub fee_minor: i64,
    pub tax_minor: i64,
}

/// What a hold would cost as an order now: each ticket and the totals, as checkout would charge.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Quote {
    pub currency: String,
    pub lines: Vec<QuoteLine>,
    #[serde(flatten)]
    pub totals: super::pricing::Totals,
    /// The promo code applied, as the buyer typed it (upper case).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promo_code: Option<String>,
    /// When the hold (and so this price) ends.
    pub hold_expires_at_ms: i64,
    /// Whether this shop sends text messages: checkout then takes a `phone`.
    pub sms: bool,
}

/// `POST /api/v1/checkout/quote`: the price summary of a hold before the order exists (tickets,
/// fees, tax, a promo code), by the rules checkout itself applies, so the order costs what the
/// buyer saw (unless the organizer changes prices meanwhile). Changes nothing but the promo code's
/// attempt count.
#[utoipa::path(post, path = "/api/v1/checkout/quote", tag = "checkout",
    request_body = QuoteRequest,
    responses((status = 200, body = Quote), crate::api::Problems))]
pub(super) async fn quote_checkout(State(state): State<AppState>, body: Bytes) -> Result<Json<Quote>> {
    let co = state.checkout()?;
    let req: QuoteRequest = api::parse_json(&body)?;
    let (event, claims) = verified_hold(&co, &req.hold_token)?;
    crate::promotions::Attempts::quotes(claims.extra.hold.as_str()).take(&state.db).await?;
    let promo = req.promo_code.as_deref().map(str::trim).unwrap_or("").to_uppercase();
    let priced = price_guarded(&state.db, event, &claims, &promo).await?;
    let promo = priced.promo.map(|_| promo);
    let mut conn = state.db.acquire().await?;
    Ok(Json(quote_of(&mut conn, priced, promo, claims.extra.expires_at_ms, state.sms.is_some()).await?))
}

/// A priced hold as a [`Quote`] (its lines named by their tiers).
pub(super) async fn quote_of(
    db: &mut sqlx::PgConnection,
    priced: Priced,
    promo_code: Option<String>,
    hold_expires_at_ms: i64,
    sms: bool,
) -> Result<Quote> {
    let tier_ids: Vec<Uuid> = priced.lines.iter().map(|(tier, ..)| *tier).collect();
    let names: std::collections::HashMap<Uuid, String> =
        sqlx::query_as::<_, (Uuid, String)>("SELECT id, name FROM ticket_tiers WHERE id = ANY($1)")
            .bind(&tier_ids)
            .fetch_all(db)
            .await?
            .into_iter()
            .collect();
    let lines = priced
        .lines
        .into_iter()
        .map(|(tier, seat, zone, p)| QuoteLine {
            tier_id: tier,
            tier_name: names.get(&tier).cloned().unwrap_or_default(),
            seat,
            zone,
            price_minor: p.price_minor,
            discount_minor: p.discount_minor,
            fee_minor: p.fee_minor,
            tax_minor: p.tax_minor,
        })
        .collect();
    Ok(Quote { currency: priced.currency, lines, totals: priced.totals, promo_code, hold_expires_at_ms, sms })
}

/// `POST /api/v1/checkout`: turns a hold into an order (once per `Idempotency-Key`) and starts its
/// payment. `201` with the order and the buyer's order token; a retry with the same key answers
/// the same order (`200`, `Idempotent-Replayed: true`).
#[utoipa::path(post, path = "/api/v1/checkout", tag = "checkout",
    params(("Idempotency-Key" = String, Header, description = "one order per key: 1 to 128 visible ASCII characters", pattern = "^[!-~]{1,128}$")),
    request_body = CheckoutRequest,
    responses((status = 201, body = CheckoutAnswer), (status = 200, body = CheckoutAnswer, description = "a retry"),
        crate::api::Problems,
        (status = 503, description = "the edge or the provider is unavailable; retry with the same key", body = crate::api::ProblemDoc, content_type = "application/problem+json")))]
pub(super) async fn create_checkout(
    State(state): State<AppState>,
    IdempotencyHeader(idempotency): IdempotencyHeader,
    body: Bytes,
) -> Result<Response> {
    let co = state.checkout()?;
    let key = idempotency.as_str().to_owned();
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
    let phone = match req.phone.as_deref().map(str::trim).filter(|p| !p.is_empty()) {
        None => None,
        Some(raw) => {
            let sms = state.sms.as_ref().ok_or_else(|| {
                ApiError::field("phone", "this shop does not send text messages: leave the phone number out")
            })?;
            Some(sms.reach.phone(raw).map_err(|why| ApiError::field("phone", &why))?)
        }
    };
    let (event, claims) = verified_hold(&co, &req.hold_token)?;
    let visitor = claims.sub.clone();
    let hold = claims.extra.hold.to_string();
    let promo = req.promo_code.as_deref().map(str::trim).unwrap_or("").to_uppercase();
    // A phone number is part of the request (a retry with another is another request); an order
    // without one hashes as before the field existed.
    let mut request = format!("{hold}\n{}\n{promo}", email.to_lowercase());
    if let Some(phone) = &phone {
        request.push_str(&format!("\n{phone}"));
    }
    let hash = hex::encode(Sha256::digest(request.as_bytes()));

    // One transaction makes the order (`insert_order`); a retry is found by the insert's
    // conflict, not by a read before it (docs/checkout.md, "What an order costs").
    let made = match PromoGuard::take(&state.db, event, &claims, &promo).await {
        Ok(guard) => {
            let order = NewOrder {
                event,
                claims: &claims,
                email: &email,
                phone: phone.as_deref(),
                key: &key,
                hash: &hash,
                promo: &promo,
            };
            let made = insert_order(&state.db, &order, req.return_url.as_deref()).await;
            guard.settle(&state.db, &made).await?;
            made
        }
        Err(e) => Err(e),
    };
    let claimed = match made {
        Ok(Made::Claimed(row)) => row,
        Ok(Made::Exists) => {
            // A retry (same key), the same hold under another key, or a concurrent request that
            // won (the insert waited for it to commit): the order that exists.
            return replay(&state, &co, &visitor, &key, &hold, &hash).await?.ok_or_else(|| {
                ApiError::Unavailable(
                    "this checkout is being made by another request; retry with the same Idempotency-Key"
                        .into(),
                )
            });
        }
        // A retry refused now (the event closed since, the code used up by this very order, the
        // attempts spent) still answers the order it made.
        Err(refused) => {
            return match replay(&state, &co, &visitor, &key, &hold, &hash).await? {
                Some(answer) => Ok(answer),
                None => Err(refused),
            }
        }
    };
    let id = claimed.as_ref().map(|row| row.id);

    // Start the payment now; its transaction reads the view this answers.
    let started = match claimed {
        Some(row) => co.drive_claimed(*row).await,
        None => None,
    };
    let order = match (started, id) {
        (Some(order), _) => order,
        (None, Some(id)) => settled_view(&state.db, id).await?,
        (None, None) => {
            return Err(ApiError::Unavailable(
                "the order could not be taken; retry with the same Idempotency-Key".into(),
            ))
        }
    };
    if order.head.state == OrderState::Created {
        return Err(ApiError::Unavailable(
            "the order is recorded but its payment could not be started yet; retry with the same Idempotency-Key".into(),
        ));
    }
    let token = order_token(&co.signer, order.head.id, event, &visitor);
    Ok(answer(StatusCode::CREATED, false, CheckoutAnswer { order, order_token: token }))
}

/// What a checkout asks to insert.
struct NewOrder<'a> {
    event: Uuid,
    claims: &'a Claims<HoldGrant>,
    email: &'a str,
    phone: Option<&'a str>,
    key: &'a str,
    hash: &'a str,
    promo: &'a str,
}

enum Made {
    /// Inserted, and claimed by this process (its row), unless another took it at once.
    Claimed(Option<Box<super::record::OrderRow>>),
    /// An order with this key or this hold exists.
    Exists,
}

/// The order's one transaction: pricing's read, the insert, the buyer's limits, its lines, outbox
/// and audit rows, the promo code's use, and this process's claim on it.
async fn insert_order(db: &PgPool, o: &NewOrder<'_>, return_url: Option<&str>) -> Result<Made> {
    let (visitor, hold) = (o.claims.sub.as_str(), o.claims.extra.hold.as_str());
    let id = Uuid::new_v4();
    let expires_at =
        DateTime::<Utc>::from_timestamp_millis(o.claims.extra.expires_at_ms).unwrap_or_else(Utc::now);
    let mut tx = db.begin().await?;
    let priced = price_hold(&mut tx, o.event, &o.claims.extra, Some(o.promo)).await?;
    let inserted = sqlx::query(
        "INSERT INTO orders (id, organization_id, event_id, visitor_id, hold_id, idempotency_key, request_hash, email, state,
             currency, subtotal_minor, discount_minor, fee_minor, tax_minor, tax_included, total_minor, promo_code_id, hold_expires_at,
             next_attempt_at, return_url, payment_description, hold_extended, phone)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'created', $9, $10, $11, $12, $13, $14, $15, $16, $17,
             now() + make_interval(secs => $18), $19, (SELECT 'Tickets: ' || title FROM events WHERE id = $3), $20, $21)
         ON CONFLICT DO NOTHING",
    )
    .bind(id)
    .bind(priced.organization_id)
    .bind(o.event)
    .bind(visitor)
    .bind(hold)
    .bind(o.key)
    .bind(o.hash)
    .bind(o.email)
    .bind(&priced.currency)
    .bind(priced.totals.subtotal_minor)
    .bind(priced.totals.discount_minor)
    .bind(priced.totals.fee_minor)
    .bind(priced.totals.tax_minor)
    .bind(priced.totals.tax_included)
    .bind(priced.totals.total_minor)
    .bind(priced.promo)
    .bind(expires_at)
    .bind(record::HANDOVER_SECS)
    .bind(return_url)
    .bind(o.claims.extra.extended)
    .bind(o.phone)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(Made::Exists);
    }
    // The buyer's limits count their other orders, under locks that serialize one buyer's
    // checkouts until each commits.
    priced.limits.enforce(&mut tx, id, o.event, visitor, o.email).await?;
    // Reporting counts orders created (the hold-to-order conversion); one statement, same transaction.
    order_created(&mut tx, id).await?;
    insert_lines(&mut tx, id, &priced.lines).await?;
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
    record::audit(
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
    let claimed = super::driver::claim(&mut *tx, id).await?;
    tx.commit().await?;
    Ok(Made::Claimed(claimed.map(Box::new)))
}

/// The `order.created` event of an order just inserted, in one statement.
pub(super) async fn order_created(tx: &mut sqlx::PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO outbox (topic, key, payload)
         SELECT 'orders', event_id::text, jsonb_build_object('type', 'order.created', 'schema_version', 1,
             'order_id', id, 'event_id', event_id, 'organization_id', organization_id, 'email', email,
             'currency', currency, 'total_minor', total_minor, 'at', created_at)
         FROM orders WHERE id = $1",
    )
    .bind(id)
    .execute(tx)
    .await?;
    Ok(())
}

/// The order's lines, in one statement whatever their number.
pub(super) async fn insert_lines(
    tx: &mut sqlx::PgConnection,
    order: Uuid,
    lines: &[PricedLine],
) -> Result<(), sqlx::Error> {
    let n = lines.len();
    let (mut line, mut tier, mut seat, mut zone) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut price, mut discount, mut fee, mut tax) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    for (i, (t, s, z, p)) in lines.iter().enumerate() {
        line.push(i as i32);
        tier.push(*t);
        seat.push(s.clone());
        zone.push(z.clone());
        price.push(p.price_minor);
        discount.push(p.discount_minor);
        fee.push(p.fee_minor);
        tax.push(p.tax_minor);
    }
    sqlx::query(
        "INSERT INTO order_lines (order_id, line, tier_id, seat_id, zone_id, price_minor, discount_minor, fee_minor, tax_minor)
         SELECT $1, l.* FROM unnest($2::int4[], $3::uuid[], $4::text[], $5::text[], $6::int8[], $7::int8[], $8::int8[], $9::int8[])
             AS l(line, tier_id, seat_id, zone_id, price_minor, discount_minor, fee_minor, tax_minor)",
    )
    .bind(order)
    .bind(line)
    .bind(tier)
    .bind(seat)
    .bind(zone)
    .bind(price)
    .bind(discount)
    .bind(fee)
    .bind(tax)
    .execute(tx)
    .await?;
    Ok(())
}

/// The answer to a retry (same key), or to the same hold under another key: the order that
/// exists, or a conflict when the details differ; `None` when there is no such order.
async fn replay(
    state: &AppState,
    co: &Checkout,
    visitor: &str,
    key: &str,
    hold: &str,
    hash: &str,
) -> Result<Option<Response>> {
    let Some(existing) = existing_order(&state.db, visitor, key, hold).await? else { return Ok(None) };
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
    let token = order_token(&co.signer, order.head.id, order.head.event_id, visitor);
    Ok(Some(answer(StatusCode::OK, true, CheckoutAnswer { order, order_token: token })))
}

#[derive(sqlx::FromRow)]
pub(super) struct Existing {
    id: Uuid,
    visitor_id: String,
    hold_id: String,
    request_hash: String,
    state: OrderState,
}

pub(super) async fn existing_order(
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
