//! The audit at the end of every sale: reads the edge's state (its signed statistics route and the
//! public seat availability) and the core's database, and checks the invariants of
//! `../shared/design/ARCHITECTURE.md`. Any failed check makes the run fail loudly.
//!
//! 1. no seat sold twice (two live tickets for one seat);
//! 2. no tier oversold (live tickets within the tier's quantity);
//! 3. every paid order has one live ticket per line;
//! 4. every refunded order has its succeeded refund, of its amount;
//! 5. money taken only for orders that are paid or refunded;
//! 6. no order left unfinished once the sale settled;
//! 7. every hold ended (sold, released or expired) at the edge;
//! 8. the edge and the core agree on what is sold: the same count, and, seat by seat, the seats the
//!    edge shows sold are exactly those with a live ticket;
//! 9. (for `loadtest sale`, from what its buyers were told) every order checkout acknowledged is in
//!    the database, and every order a buyer saw paid is paid or refunded there
//!    ([`acknowledged_orders`]).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};
use shared_types::token::TokenSigner;
use sqlx::PgPool;

use crate::edge::core_call;
use shared_types::internal_api::InternalRoute;

pub mod waitlist;

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Audit {
    /// True when every check passed.
    pub clean: bool,
    pub checks: Vec<Check>,
    /// How long the sale took to settle after the buyers stopped.
    pub settled_after_seconds: f64,
    /// What the audit counted, for the report.
    pub figures: Value,
}

async fn count(db: &PgPool, sql: &str, event: &str) -> Result<i64, String> {
    sqlx::query_scalar(sql).bind(event).fetch_one(db).await.map_err(|e| format!("audit query: {e}"))
}

pub(crate) const UNFINISHED: &str = "SELECT count(*) FROM orders WHERE event_id = $1::uuid
    AND state IN ('created', 'awaiting_payment', 'confirming', 'releasing', 'refunding')";

/// Nothing acknowledged is lost: each order checkout answered `201` for exists (of this event), and
/// each order a buyer saw `paid` is still paid (or refunded, by the organizer). Ids are the
/// orders' UUIDs as the API gave them.
pub async fn acknowledged_orders(
    db: &PgPool,
    event: &str,
    acknowledged: &[String],
    seen_paid: &[String],
) -> Result<Vec<Check>, String> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT id::text, state::text FROM orders WHERE event_id = $1::uuid AND id::text = ANY($2)",
    )
    .bind(event)
    .bind(acknowledged.iter().chain(seen_paid).cloned().collect::<Vec<_>>())
    .fetch_all(db)
    .await
    .map_err(|e| format!("audit query: {e}"))?;
    let state: std::collections::HashMap<String, String> = rows.into_iter().collect();
    let lost: Vec<&String> = acknowledged.iter().filter(|id| !state.contains_key(*id)).collect();
    let unpaid: Vec<String> = seen_paid
        .iter()
        .filter(|id| !matches!(state.get(*id).map(String::as_str), Some("paid" | "refunded")))
        .map(|id| format!("{id}: {}", state.get(id).map_or("missing", String::as_str)))
        .collect();
    Ok(vec![
        Check {
            name: "acknowledged_orders_durable",
            ok: lost.is_empty(),
            detail: format!(
                "{} acknowledged by checkout, {} not in the database {lost:?}",
                acknowledged.len(),
                lost.len()
            ),
        },
        Check {
            name: "orders_seen_paid_stay_paid",
            ok: unpaid.is_empty(),
            detail: format!(
                "{} seen paid by their buyers, {} not paid now {unpaid:?}",
                seen_paid.len(),
                unpaid.len()
            ),
        },
    ])
}

/// The edge's statistics of the event (signed core call).
async fn edge_stats(
    http: &reqwest::Client,
    signer: &TokenSigner,
    edge: &str,
    event: &str,
) -> Result<Value, String> {
    let (status, stats) = core_call(http, signer, edge, event, &InternalRoute::Stats, vec![]).await?;
    if status != 200 {
        return Err(format!("the edge's statistics: {status} {stats}"));
    }
    Ok(stats)
}

/// The invariants that are a count of rows that must be zero: (name, the count, what it counts).
const ZERO_COUNTS: [(&str, &str, &str); 6] = [
    (
        "no_seat_sold_twice",
        "SELECT count(*) FROM (SELECT seat_id FROM tickets WHERE event_id = $1::uuid AND seat_id IS NOT NULL
           AND state <> 'void' GROUP BY seat_id HAVING count(*) > 1) d",
        "seats with two live tickets",
    ),
    (
        "no_tier_oversold",
        "SELECT count(*) FROM ticket_tiers t WHERE t.event_id = $1::uuid
           AND (SELECT count(*) FROM tickets k WHERE k.tier_id = t.id AND k.state <> 'void') > t.quantity",
        "tiers with more live tickets than places",
    ),
    (
        "paid_orders_have_their_tickets",
        "SELECT count(*) FROM orders o WHERE o.event_id = $1::uuid AND o.state = 'paid'
           AND (SELECT count(*) FROM tickets t WHERE t.order_id = o.id AND t.state <> 'void')
            <> (SELECT count(*) FROM order_lines l WHERE l.order_id = o.id)",
        "paid orders without all their tickets",
    ),
    (
        "refunded_orders_have_their_refund",
        "SELECT count(*) FROM orders o WHERE o.event_id = $1::uuid AND o.state = 'refunded' AND o.refund_minor > 0
           AND NOT EXISTS (SELECT 1 FROM refunds r WHERE r.order_id = o.id AND r.state = 'succeeded'
                           AND r.amount_minor = o.refund_minor)",
        "refunded orders without it",
    ),
    (
        "money_only_for_paid_or_refunded",
        "SELECT count(*) FROM orders o JOIN payments p ON p.order_id = o.id JOIN testpay_payments t ON t.id = p.provider_ref
         WHERE o.event_id = $1::uuid AND t.state = 'succeeded' AND o.state NOT IN ('paid', 'refunded')",
        "orders with money taken and no outcome",
    ),
    ("no_order_unfinished", UNFINISHED, "orders unfinished"),
];

/// Waits (at most `within`) until no order of the event is unfinished and no hold is live, then
/// audits.
pub async fn settle_and_audit(
    http: &reqwest::Client,
    signer: &TokenSigner,
    edge: &str,
    db: &PgPool,
    event: &str,
    seat_ids: &[String],
    within: Duration,
) -> Result<Audit, String> {
    let started = Instant::now();
    loop {
        let unfinished = count(db, UNFINISHED, event).await?;
        let live = edge_stats(http, signer, edge, event).await?["stats"]["live_holds"].as_u64().unwrap_or(0);
        if (unfinished == 0 && live == 0) || started.elapsed() > within {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let settled = started.elapsed().as_secs_f64();
    let mut audit = audit(http, signer, edge, db, event, seat_ids).await?;
    audit.settled_after_seconds = settled;
    Ok(audit)
}

/// The checks. `seat_ids`: the seat map's seat ids in order (the availability string's order).
pub async fn audit(
    http: &reqwest::Client,
    signer: &TokenSigner,
    edge: &str,
    db: &PgPool,
    event: &str,
    seat_ids: &[String],
) -> Result<Audit, String> {
    let mut checks = Vec::new();
    let mut check = |name: &'static str, ok: bool, detail: String| checks.push(Check { name, ok, detail });

    for (name, sql, what) in ZERO_COUNTS {
        let n = count(db, sql, event).await?;
        check(name, n == 0, format!("{n} {what}"));
    }

    let stats = edge_stats(http, signer, edge, event).await?;
    let s = &stats["stats"];
    let n = |k: &str| s[k].as_u64().unwrap_or(0);
    check(
        "every_hold_ended",
        n("live_holds") == 0 && n("holds_sold") <= n("holds_placed"),
        format!(
            "{} placed: {} sold, {} released, {} expired, {} live",
            n("holds_placed"),
            n("holds_sold"),
            n("holds_released"),
            n("holds_expired"),
            n("live_holds")
        ),
    );
    let live_tickets =
        count(db, "SELECT count(*) FROM tickets WHERE event_id = $1::uuid AND state <> 'void'", event)
            .await?;
    let edge_sold = stats["totals"]["sold"].as_u64().unwrap_or(0);
    check(
        "sold_counts_equal_at_edge_and_core",
        edge_sold as i64 == live_tickets,
        format!("edge {edge_sold} sold, core {live_tickets} live tickets"),
    );
    // Seat by seat, from the buyers' availability (cached a second at the edge).
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let availability: Value = http
        .get(format!("{edge}/api/v1/events/{event}/availability"))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let edge_seats: BTreeSet<&str> = availability["seats"]
        .as_str()
        .unwrap_or_default()
        .bytes()
        .zip(seat_ids)
        .filter(|(c, _)| *c == b's')
        .map(|(_, id)| id.as_str())
        .collect();
    let core_seats: Vec<String> = sqlx::query_scalar(
        "SELECT seat_id FROM tickets WHERE event_id = $1::uuid AND seat_id IS NOT NULL AND state <> 'void'",
    )
    .bind(event)
    .fetch_all(db)
    .await
    .map_err(|e| e.to_string())?;
    let core_seats: BTreeSet<&str> = core_seats.iter().map(String::as_str).collect();
    let only_edge: Vec<&&str> = edge_seats.difference(&core_seats).take(5).collect();
    let only_core: Vec<&&str> = core_seats.difference(&edge_seats).take(5).collect();
    check(
        "sold_seats_equal_at_edge_and_core",
        only_edge.is_empty() && only_core.is_empty(),
        format!(
            "{} seats sold at the edge, {} with a live ticket; only at the edge: {only_edge:?}; only in the core: {only_core:?}",
            edge_seats.len(),
            core_seats.len()
        ),
    );
    let orders: Vec<(String, i64)> = sqlx::query_as(
        "SELECT state, count(*) FROM orders WHERE event_id = $1::uuid GROUP BY state ORDER BY state",
    )
    .bind(event)
    .fetch_all(db)
    .await
    .map_err(|e| e.to_string())?;
    let clean = checks.iter().all(|c| c.ok);
    Ok(Audit {
        clean,
        checks,
        settled_after_seconds: 0.0,
        figures: json!({
            "orders_by_state": orders.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
            "live_tickets": live_tickets,
            "edge": { "totals": stats["totals"], "holds": s },
        }),
    })
}
