//! A hold priced for an order: the event, its tiers and sale settings and the promo code, read
//! from the pool ([`price_hold`]); and the buyer's limits ([`BuyerLimits`]), counted and enforced
//! in the order's transaction.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use shared_types::inventory::HoldSettings;
use shared_types::token::HoldGrant;
use uuid::Uuid;

use super::pricing::{Discount, LineIn, PricingSettings};
use super::*;
use crate::error::{ApiError, Result};
use crate::models::event::{EventState, TierOffer, TIER_OFFER_COLUMNS};

/// What pricing needs of the event.
#[derive(sqlx::FromRow)]
pub(super) struct EventForSale {
    organization_id: Uuid,
    state: EventState,
    pricing: Value,
    hold_settings: Value,
    waiting_room: Value,
    tiers: Value,
    zones: Value,
}

#[derive(sqlx::FromRow)]
pub(super) struct Promo {
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
pub(super) struct Priced {
    pub(super) organization_id: Uuid,
    pub(super) currency: String,
    pub(super) lines: Vec<PricedLine>,
    pub(super) totals: pricing::Totals,
    pub(super) promo: Option<Uuid>,
    pub(super) limits: BuyerLimits,
}

/// One line of a priced hold: its tier, seat and zone (for a seat), and its price.
pub(super) type PricedLine = (Uuid, Option<String>, Option<String>, pricing::LinePrice);

/// What pricing reads, in one statement: the event, its tiers and the held seats' zones (`$1` the
/// event, `$2` the seats). The zones are read seat by seat through the venue's primary key (the
/// `LIMIT 1` keeps the planner from turning the look-ups into a join): a statement the server has
/// run five times gets a generic plan, and for a venue not analyzed since its seats came in (a
/// venue imported just before its sale) that plan read every seat of the venue to keep two
/// (4,000 rows a checkout in the benchmark, 100,000 in a stadium). Checked by
/// `regional-core/tests/integration/checkout.rs`.
pub fn pricing_read_sql() -> String {
    format!(
        "SELECT e.organization_id, e.state, e.pricing, e.hold_settings, e.waiting_room,
             (SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY t.created_at, t.id), '[]') FROM
                 (SELECT {TIER_OFFER_COLUMNS}, created_at
                  FROM ticket_tiers WHERE event_id = e.id) t) AS tiers,
             (SELECT coalesce(jsonb_object_agg(held.seat_id, v.zone_id), '{{}}')
                  FROM unnest($2::text[]) AS held(seat_id)
                  CROSS JOIN LATERAL (SELECT zone_id FROM venue_seats
                      WHERE venue_id = e.venue_id AND seat_id = held.seat_id LIMIT 1) v) AS zones
         FROM events e WHERE e.id = $1"
    )
}

/// How many tickets a buyer already has for an event (`$1` the event, `$2` the visitor, `$3` the
/// e-mail address, `$4` the order being made, which is left out): by visitor and by address, each
/// through its own index (`orders_event_visitor`, `orders_event_email`), so that a generic plan
/// never reads the event's other orders (its plan is checked as [`pricing_read_sql`]'s is; an order
/// both by the visitor and by the address is counted once: the `UNION` drops the second).
pub const OWNED_TICKETS_SQL: &str = "SELECT count(*) FROM (
         SELECT id FROM orders WHERE event_id = $1 AND visitor_id = $2
             AND state NOT IN ('cancelled', 'refunded') AND id <> $4
         UNION
         SELECT id FROM orders WHERE event_id = $1 AND lower(email) = lower($3)
             AND state NOT IN ('cancelled', 'refunded') AND id <> $4) o
     JOIN order_lines l ON l.order_id = o.id";

/// Prices the hold's seats and places with the event's current prices, checking every rule of the
/// sale (state, tier windows, per-order limits, per-buyer cap, promo code).
pub(super) async fn price_hold(
    db: &mut sqlx::PgConnection,
    event: Uuid,
    grant: &HoldGrant,
    promo_code: Option<&str>,
) -> Result<Priced> {
    // Everything pricing reads, in one round trip: the event, its tiers and the seats' zones. What
    // the buyer already owns is counted in the order's transaction ([`BuyerLimits::enforce`]).
    let seats: Vec<String> = grant.seats.iter().map(|s| s.to_string()).collect();
    let e: EventForSale = sqlx::query_as(&pricing_read_sql())
        .bind(event)
        .bind(&seats)
        .fetch_optional(&mut *db)
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
    let tiers: Vec<TierOffer> = serde_json::from_value(e.tiers).map_err(corrupt)?;
    let zones: HashMap<String, String> = serde_json::from_value(e.zones).map_err(corrupt)?;
    // (tier, seat, zone, price) per line.
    let mut lines: Vec<(TierOffer, Option<String>, Option<String>, i64)> = Vec::new();
    if !grant.seats.is_empty() {
        // The tier the hold names (the edge checked it was one of the event's when it was
        // placed; it may have been removed since), or the event's first seated tier.
        let tier = match &grant.seated_tier {
            Some(named) => tiers
                .iter()
                .find(|t| t.kind == "seated" && t.id.to_string() == named.as_str())
                .ok_or_else(|| ApiError::conflict("not_priced", "this tier is not sold any more"))?,
            None => tiers
                .iter()
                .find(|t| t.kind == "seated")
                .ok_or_else(|| ApiError::conflict("not_priced", "the seats of this event have no price"))?,
        };
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
        .fetch_optional(&mut *db)
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
pub(super) struct BuyerLimits {
    /// Tickets in this order.
    pub(super) tickets: i64,
    /// The event's cap per buyer across all its sections: the smaller of `max_tickets_per_visitor`
    /// and the waiting room's `max_tickets_per_buyer` (what each admission allows).
    pub(super) cap: i64,
    /// The promo code and its per-buyer limit, when it has one.
    pub(super) promo: Option<(Uuid, i32)>,
}

impl BuyerLimits {
    /// Checks the buyer's limits in the transaction that inserts `order` (which the counts leave
    /// out), under locks that serialize one buyer's checkouts until each commits.
    pub(super) async fn enforce(
        &self,
        tx: &mut sqlx::PgConnection,
        order: Uuid,
        event: Uuid,
        visitor: &str,
        email: &str,
    ) -> Result<()> {
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
        let owned: i64 = sqlx::query_scalar(OWNED_TICKETS_SQL)
            .bind(event)
            .bind(visitor)
            .bind(email)
            .bind(order)
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
                   AND state NOT IN ('cancelled') AND id <> $3",
            )
            .bind(promo)
            .bind(email)
            .bind(order)
            .fetch_one(&mut *tx)
            .await?;
            if used >= i64::from(limit) {
                return Err(ApiError::field("promo_code", "this promo code was already used by this buyer"));
            }
        }
        Ok(())
    }
}
