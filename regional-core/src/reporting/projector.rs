//! The `reporting` outbox consumer: keeps the report tables (migration `…_reporting`) in step with
//! orders. Each message changes a few counters in the transaction that records it as consumed, so a
//! redelivered message counts once and a report never scans orders.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::bus::{Consumer, HandleFuture, Message};

pub struct Projector;

impl Consumer for Projector {
    fn name(&self) -> &'static str {
        "reporting"
    }

    fn topics(&self) -> &'static [&'static str] {
        &["orders"]
    }

    fn wants(&self, m: &Message) -> bool {
        matches!(m.kind(), "order.created" | "order.paid" | "order.cancelled" | "order.refunded")
    }

    fn handle<'a>(&'a self, tx: &'a mut PgConnection, m: &'a Message) -> HandleFuture<'a> {
        Box::pin(async move {
            let p = &m.payload;
            let (Some(order), Some(event), Some(at)) = (
                p["order_id"].as_str().and_then(|s| s.parse::<Uuid>().ok()),
                p["event_id"].as_str().and_then(|s| s.parse::<Uuid>().ok()),
                p["at"].as_str(),
            ) else {
                return Ok(());
            };
            let outcome = p["outcome"].as_str().unwrap_or_default();
            match m.kind() {
                "order.created" => bump(tx, event, at, "orders_created").await?,
                "order.paid" => paid(tx, order, event, at).await?,
                "order.cancelled" => {
                    bump(tx, event, at, "orders_cancelled").await?;
                    if matches!(outcome, "abandoned" | "hold_expired") {
                        bump(tx, event, at, "orders_abandoned").await?;
                    }
                }
                // Money taken after the hold was lost, and given back: never a sale.
                "order.refunded" if outcome == "hold_lost" => bump(tx, event, at, "orders_cancelled").await?,
                "order.refunded" => {
                    let refund = p["refund_minor"].as_i64().unwrap_or_default();
                    refunded(tx, order, event, at, refund).await?;
                }
                _ => {}
            }
            Ok(())
        })
    }
}

/// Adds one to an order counter of the event's minute.
async fn bump(tx: &mut PgConnection, event: Uuid, at: &str, column: &'static str) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO report_event_minute (event_id, minute, {column}) VALUES ($1, date_trunc('minute', $2::timestamptz), 1)
         ON CONFLICT (event_id, minute) DO UPDATE SET {column} = report_event_minute.{column} + 1"
    ))
    .bind(event)
    .bind(at)
    .execute(tx)
    .await?;
    Ok(())
}

/// One tier's share of an order: (tier, tickets, gross, discount, fee, tax).
type TierShare = (Uuid, i64, i64, i64, i64, i64);

/// The order's lines summed per tier, each line's gross being what the buyer paid for it.
async fn shares(tx: &mut PgConnection, order: Uuid) -> Result<Vec<TierShare>, sqlx::Error> {
    sqlx::query_as(
        "SELECT l.tier_id, count(*)::int8,
                sum(l.price_minor - l.discount_minor + l.fee_minor + CASE WHEN o.tax_included THEN 0 ELSE l.tax_minor END)::int8,
                sum(l.discount_minor)::int8, sum(l.fee_minor)::int8, sum(l.tax_minor)::int8
         FROM order_lines l JOIN orders o ON o.id = l.order_id WHERE l.order_id = $1
         GROUP BY l.tier_id ORDER BY l.tier_id",
    )
    .bind(order)
    .fetch_all(tx)
    .await
}

async fn add_tier(
    tx: &mut PgConnection,
    event: Uuid,
    tier: Uuid,
    at: &str,
    sold: [i64; 5],
    refunded: [i64; 3],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO report_tier_minute (event_id, tier_id, minute, tickets_sold, gross_minor, discount_minor, fee_minor, tax_minor,
             tickets_refunded, refunded_minor, fee_refunded_minor)
         VALUES ($1, $2, date_trunc('minute', $3::timestamptz), $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (event_id, tier_id, minute) DO UPDATE SET
             tickets_sold = report_tier_minute.tickets_sold + EXCLUDED.tickets_sold,
             gross_minor = report_tier_minute.gross_minor + EXCLUDED.gross_minor,
             discount_minor = report_tier_minute.discount_minor + EXCLUDED.discount_minor,
             fee_minor = report_tier_minute.fee_minor + EXCLUDED.fee_minor,
             tax_minor = report_tier_minute.tax_minor + EXCLUDED.tax_minor,
             tickets_refunded = report_tier_minute.tickets_refunded + EXCLUDED.tickets_refunded,
             refunded_minor = report_tier_minute.refunded_minor + EXCLUDED.refunded_minor,
             fee_refunded_minor = report_tier_minute.fee_refunded_minor + EXCLUDED.fee_refunded_minor",
    )
    .bind(event)
    .bind(tier)
    .bind(at)
    .bind(sold[0] as i32)
    .bind(sold[1])
    .bind(sold[2])
    .bind(sold[3])
    .bind(sold[4])
    .bind(refunded[0] as i32)
    .bind(refunded[1])
    .bind(refunded[2])
    .execute(tx)
    .await?;
    Ok(())
}

async fn paid(tx: &mut PgConnection, order: Uuid, event: Uuid, at: &str) -> Result<(), sqlx::Error> {
    for (tier, tickets, gross, discount, fee, tax) in shares(tx, order).await? {
        add_tier(tx, event, tier, at, [tickets, gross, discount, fee, tax], [0; 3]).await?;
    }
    bump(tx, event, at, "orders_paid").await?;
    sqlx::query(
        "INSERT INTO report_promo (event_id, promo_code_id, orders, discount_minor)
         SELECT event_id, promo_code_id, 1, discount_minor FROM orders WHERE id = $1 AND promo_code_id IS NOT NULL
         ON CONFLICT (event_id, promo_code_id) DO UPDATE SET orders = report_promo.orders + 1,
             discount_minor = report_promo.discount_minor + EXCLUDED.discount_minor",
    )
    .bind(order)
    .execute(tx)
    .await?;
    Ok(())
}

/// A refund of `refund` minor units: ticket money goes back first, fees last (a buyer's
/// cancellation that keeps the fees gives none back; a full refund gives them all back). Both are
/// spread over the order's tiers by their gross and fees, the remainders to the largest shares.
async fn refunded(
    tx: &mut PgConnection,
    order: Uuid,
    event: Uuid,
    at: &str,
    refund: i64,
) -> Result<(), sqlx::Error> {
    let shares = shares(tx, order).await?;
    let total: i64 = shares.iter().map(|s| s.2).sum();
    let fees: i64 = shares.iter().map(|s| s.4).sum();
    let fee_back = (refund - (total - fees)).clamp(0, fees);
    let money = allocate(refund, &shares.iter().map(|s| s.2).collect::<Vec<_>>());
    let fee_money = allocate(fee_back, &shares.iter().map(|s| s.4).collect::<Vec<_>>());
    for (i, (tier, tickets, ..)) in shares.iter().enumerate() {
        add_tier(tx, event, *tier, at, [0; 5], [*tickets, money[i], fee_money[i]]).await?;
    }
    bump(tx, event, at, "orders_refunded").await
}

/// Splits `amount` in proportion to `weights` (largest remainders first), so that the parts add up
/// to exactly `amount`. Equal parts when every weight is zero.
pub fn allocate(amount: i64, weights: &[i64]) -> Vec<i64> {
    if weights.is_empty() {
        return vec![];
    }
    let sum: i64 = weights.iter().sum();
    let weights: Vec<i64> = if sum > 0 { weights.to_vec() } else { vec![1; weights.len()] };
    let sum: i128 = weights.iter().map(|&w| i128::from(w)).sum();
    let mut parts: Vec<i64> =
        weights.iter().map(|&w| (i128::from(amount) * i128::from(w) / sum) as i64).collect();
    let mut rest = amount - parts.iter().sum::<i64>();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order
        .sort_by_key(|&i| std::cmp::Reverse((i128::from(amount) * i128::from(weights[i]) % sum, weights[i])));
    for &i in order.iter().cycle() {
        if rest == 0 {
            break;
        }
        parts[i] += rest.signum();
        rest -= rest.signum();
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::allocate;
    use proptest::prelude::*;

    #[test]
    fn shares_follow_the_weights() {
        assert_eq!(allocate(100, &[1, 1, 1]), vec![34, 33, 33]);
        assert_eq!(allocate(90, &[6000, 3000]), vec![60, 30]);
        assert_eq!(allocate(7, &[0, 0]), vec![4, 3]);
        assert!(allocate(5, &[]).is_empty());
    }

    proptest! {
        #[test]
        fn parts_add_up_and_stay_in_proportion(amount in 0i64..10_000_000, weights in prop::collection::vec(0i64..100_000, 1..8)) {
            let parts = allocate(amount, &weights);
            prop_assert_eq!(parts.iter().sum::<i64>(), amount);
            let sum: i64 = weights.iter().sum();
            if sum > 0 {
                for (p, w) in parts.iter().zip(&weights) {
                    let exact = amount as f64 * *w as f64 / sum as f64;
                    prop_assert!((*p as f64 - exact).abs() < 1.0 + 1e-9, "{} vs {}", p, exact);
                }
            }
        }
    }
}
