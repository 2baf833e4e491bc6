//! A box-office sale as an order (docs/box-office.md): the clerk's hold, priced as checkout
//! prices a buyer's, becomes an order that is already paid for (cash, or a card on the venue's
//! own terminal) and so starts in `confirming`; the saga's driver then sells the hold at the edge
//! and issues the tickets, as for every order. One order per hold, ever (`orders.hold_id`): a
//! retried sale finds the order it made.
//!
//! What differs from an online checkout, and why:
//! - no payment provider: the payment is recorded `succeeded` with the clerk's method (provider
//!   [`PROVIDER`]); a refund of such an order is paid back at the counter ([`super::payment_steps`]);
//! - no promo code and no per-buyer cap (the waiting room's fairness rules): the clerk serves the
//!   person in front of them; the tiers' windows and per-order limits still apply;
//! - the address is optional: a walk-up buyer without one gets `walk-up-<order>@box-office.invalid`,
//!   which is never mailed (`privacy::undeliverable`); their tickets are printed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use shared_types::token::HoldGrant;
use uuid::Uuid;

use super::create::{insert_lines, order_created};
use super::quote::price_hold;
use super::record::{audit, payment_event, HANDOVER_SECS};
use super::Checkout;
use crate::auth::Caller;
use crate::error::{ApiError, Result};

/// The payment provider a box-office payment is recorded under.
pub const PROVIDER: &str = crate::payments::BOX_OFFICE;

/// How the walk-up buyer paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CounterMethod {
    Cash,
    /// A card on the venue's own terminal (its receipt number as `reference`).
    CardPresent,
}

impl CounterMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cash => "cash",
            Self::CardPresent => "card_present",
        }
    }
}

/// A sale the clerk makes of their hold.
pub struct CounterSale<'a> {
    pub event: Uuid,
    /// The hold as the edge has it (what a hold token would grant).
    pub grant: &'a HoldGrant,
    /// The hold's visitor (`box-office_…`).
    pub visitor: &'a str,
    pub clerk: &'a Caller,
    pub email: Option<&'a str>,
    pub phone: Option<&'a str>,
    pub method: CounterMethod,
    pub reference: Option<&'a str>,
    /// A digest of what was asked (a retry asking for something else is refused).
    pub request_hash: &'a str,
    /// The total the clerk charged (the hold's quote): a price changed since is refused.
    pub charged_minor: i64,
}

/// What recording a sale did.
pub enum Sold {
    /// Recorded now, and claimed by this process (its row) unless another took it at once.
    Recorded(Uuid, Option<Box<super::record::OrderRow>>),
    /// This hold was sold before (the caller answers that order, or refuses).
    Before,
}

/// True for a payment taken at the box office (its refund is paid back there).
pub fn at_counter(provider: &str) -> bool {
    provider == PROVIDER
}

/// What recording a refund paid back at the counter did.
pub enum PaidBack {
    /// Recorded now: the amount.
    Now(i64),
    /// Recorded before.
    Before,
}

impl Checkout {
    /// The clerk gave a counter sale's refund back (cash, or on the venue's terminal): the refund
    /// the saga left `pending` is recorded `succeeded`, the payment's refunded amount set, the
    /// `payment.refunded` event written and the clerk's audit row, in one transaction.
    pub async fn record_counter_payout(
        &self,
        order: Uuid,
        clerk: &Caller,
        method: CounterMethod,
        reference: Option<&str>,
    ) -> Result<PaidBack> {
        let mut tx = self.db.begin().await?;
        let due: Option<(Uuid, Uuid, i64, String, Uuid)> = sqlx::query_as(
            "SELECT r.id, r.payment_id, r.amount_minor, r.state, o.organization_id
             FROM refunds r JOIN payments p ON p.id = r.payment_id JOIN orders o ON o.id = r.order_id
             WHERE r.order_id = $1 AND p.provider = $2 FOR UPDATE OF r",
        )
        .bind(order)
        .bind(PROVIDER)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((refund, payment, amount, state, organization)) = due else {
            return Err(ApiError::conflict(
                "no_refund_due",
                "this order has no refund to give back at the counter",
            ));
        };
        let reference = reference.map(str::to_owned).unwrap_or_else(|| format!("counter-refund-{order}"));
        if state == "succeeded" {
            // The same record again is a retry; anything else is a second payout being recorded.
            let same: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM refunds WHERE id = $1 AND provider_ref = $2)",
            )
            .bind(refund)
            .bind(&reference)
            .fetch_one(&mut *tx)
            .await?;
            return if same {
                Ok(PaidBack::Before)
            } else {
                Err(ApiError::conflict("already_paid_back", "this refund was recorded as given back already"))
            };
        }
        sqlx::query(
            "UPDATE refunds SET state = 'succeeded', provider_ref = $2, updated_at = now() WHERE id = $1",
        )
        .bind(refund)
        .bind(&reference)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE payments SET refunded_minor = $2, updated_at = now() WHERE id = $1")
            .bind(payment)
            .bind(amount)
            .execute(&mut *tx)
            .await?;
        let actor = format!("user:{}", clerk.user_id);
        let details = json!({ "amount_minor": amount, "method": method });
        audit(&mut tx, "refund", refund, order, &actor, Some("pending"), "succeeded", details.clone())
            .await?;
        payment_event(&mut tx, order, "payment.refunded", json!({ "refund_id": refund })).await?;
        let details = json!({ "amount_minor": amount, "method": method, "reference": reference });
        crate::audit::by(
            &mut tx,
            clerk,
            organization,
            "box_office.paid_back",
            format!("order:{order}"),
            details,
        )
        .await?;
        tx.commit().await?;
        Ok(PaidBack::Now(amount))
    }

    /// What the clerk's hold costs, by the rules [`Checkout::record_counter_sale`] applies.
    /// `sms`: whether the shop sends texts (the sale then takes a `phone`).
    /// On the caller's connection (a hold request prices in its own transaction).
    pub async fn counter_quote(
        &self,
        conn: &mut sqlx::PgConnection,
        event: Uuid,
        grant: &HoldGrant,
        sms: bool,
    ) -> Result<super::create::Quote> {
        let priced = price_hold(&mut *conn, event, grant, None).await?;
        super::create::quote_of(conn, priced, None, grant.expires_at_ms, sms).await
    }

    /// Records a box-office sale (one transaction: the order in `confirming`, its lines, the
    /// payment taken, their state audit and events, the hold's end, the clerk's audit row); the
    /// caller drives it on ([`Checkout::drive_claimed`]).
    pub async fn record_counter_sale(&self, sale: &CounterSale<'_>) -> Result<Sold> {
        let id = Uuid::new_v4();
        let hold = sale.grant.hold.as_str();
        let mut tx = self.db.begin().await?;
        // The hold's row, locked: a release waits for this sale, or this sale for the release
        // (`box_office::release`), so a hold is never both released and sold at the counter.
        let ended: Option<Option<DateTime<Utc>>> = sqlx::query_scalar(
            "SELECT ended_at FROM box_office_holds WHERE hold_id = $1 AND event_id = $2 FOR UPDATE",
        )
        .bind(hold)
        .bind(sale.event)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(ended) = ended else { return Err(ApiError::NotFound) };
        let before: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM orders WHERE hold_id = $1)")
            .bind(hold)
            .fetch_one(&mut *tx)
            .await?;
        if before {
            return Ok(Sold::Before);
        }
        if ended.is_some() {
            return Err(ApiError::conflict("hold_released", "this hold was released: place a new one"));
        }
        let priced = price_hold(&mut tx, sale.event, sale.grant, None).await?;
        if priced.totals.total_minor != sale.charged_minor {
            return Err(ApiError::conflict(
                "price_changed",
                format!(
                    "the hold now costs {} {} (prices changed since it was quoted): charge that, or release it",
                    priced.totals.total_minor, priced.currency
                ),
            ));
        }
        let email = match sale.email {
            Some(email) => email.to_owned(),
            None => format!("walk-up-{id}@box-office.invalid"),
        };
        let expires_at =
            DateTime::<Utc>::from_timestamp_millis(sale.grant.expires_at_ms).unwrap_or_else(Utc::now);
        let inserted = sqlx::query(
            "INSERT INTO orders (id, organization_id, event_id, visitor_id, hold_id, idempotency_key, request_hash, email, state,
                 currency, subtotal_minor, discount_minor, fee_minor, tax_minor, tax_included, total_minor, hold_expires_at,
                 next_attempt_at, payment_description, phone, sold_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'confirming', $9, $10, $11, $12, $13, $14, $15, $16,
                 now() + make_interval(secs => $17), (SELECT 'Tickets: ' || title FROM events WHERE id = $3), $18, $19)
             ON CONFLICT (hold_id) DO NOTHING",
        )
        .bind(id)
        .bind(priced.organization_id)
        .bind(sale.event)
        .bind(sale.visitor)
        .bind(hold)
        .bind(format!("box-office:{hold}"))
        .bind(sale.request_hash)
        .bind(&email)
        .bind(&priced.currency)
        .bind(priced.totals.subtotal_minor)
        .bind(priced.totals.discount_minor)
        .bind(priced.totals.fee_minor)
        .bind(priced.totals.tax_minor)
        .bind(priced.totals.tax_included)
        .bind(priced.totals.total_minor)
        .bind(expires_at)
        .bind(HANDOVER_SECS)
        .bind(sale.phone)
        .bind(sale.clerk.user_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            // Sold by a concurrent request meanwhile (the hold's row lock makes this rare).
            return Ok(Sold::Before);
        }
        order_created(&mut tx, id).await?;
        insert_lines(&mut tx, id, &priced.lines).await?;
        let payment = Uuid::new_v4();
        sqlx::query(
            "INSERT INTO payments (id, order_id, provider, provider_ref, state, amount_minor, currency, method, counter_reference)
             VALUES ($1, $2, $3, $4, 'succeeded', $5, $6, $7, $8)",
        )
        .bind(payment)
        .bind(id)
        .bind(PROVIDER)
        .bind(format!("counter-{id}"))
        .bind(priced.totals.total_minor)
        .bind(&priced.currency)
        .bind(sale.method.as_str())
        .bind(sale.reference)
        .execute(&mut *tx)
        .await?;
        let actor = format!("user:{}", sale.clerk.user_id);
        let total = priced.totals.total_minor;
        audit(
            &mut tx,
            "order",
            id,
            id,
            &actor,
            None,
            "confirming",
            json!({ "total_minor": total, "channel": "box_office" }),
        )
        .await?;
        audit(&mut tx, "payment", payment, id, &actor, None, "succeeded", json!({ "method": sale.method }))
            .await?;
        payment_event(&mut tx, id, "payment.succeeded", json!({})).await?;
        sqlx::query("UPDATE box_office_holds SET ended_at = coalesce(ended_at, now()) WHERE hold_id = $1")
            .bind(hold)
            .execute(&mut *tx)
            .await?;
        let details = json!({
            "hold_id": hold, "method": sale.method, "reference": sale.reference, "currency": priced.currency,
            "total_minor": total, "tickets": priced.lines.len(), "walk_up": sale.email.is_none(),
        });
        crate::audit::by(
            &mut tx,
            sale.clerk,
            priced.organization_id,
            "box_office.sale",
            format!("order:{id}"),
            details,
        )
        .await?;
        let claimed = super::driver::claim(&mut *tx, id).await?;
        tx.commit().await?;
        Ok(Sold::Recorded(id, claimed.map(Box::new)))
    }
}
