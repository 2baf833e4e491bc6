//! The saga's driver: performs the step each unfinished order state calls for (calls to the edge
//! and the payment provider, all idempotent), then records the transition with its audit row and
//! its effects (payment, tickets, outbox rows) in one transaction, conditional on the state it
//! started from. The reconciler ([`run`]) resumes every unfinished order from its recorded state,
//! so a crash at any point only delays an order; a lease keeps two workers off the same order.
//!
//! Here: claiming an order (the lease), the loop of steps, the reconciler. The steps themselves are
//! in `payment_steps.rs` (the provider's side) and `seat_steps.rs` (the edge's side); recording a
//! transition is `record.rs`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use super::record::{apply, OrderRow, ORDER_COLUMNS};
use super::saga::{Input, OrderState};
use super::{Checkout, OrderView};
use crate::edge_client::EdgeError;
use shared_types::internal_api::HoldAction;

/// How long a worker may hold an order before another may take it over.
const LEASE_SECS: f64 = 60.0;
/// Longest wait between two attempts of a failing step.
const MAX_BACKOFF_SECS: i64 = 60;
/// Steps one drive performs at most (an order needs at most five to finish).
const MAX_STEPS: usize = 8;

#[derive(Debug, Clone, sqlx::FromRow)]
pub(super) struct PaymentRow {
    pub(super) id: Uuid,
    /// `testpay`, `stripe`, or [`super::counter::PROVIDER`] (money taken at the box office).
    pub(super) provider: String,
    pub(super) provider_ref: Option<String>,
    pub(super) state: String,
}

/// How a step ended.
pub(super) enum Step {
    /// The order moved on: look again at once.
    Moved,
    /// The order moved on to a state that waits for the outside world (the buyer's payment) or
    /// is final: nothing more to do now.
    Parked,
    /// Parked after starting the payment, with the order's view as that step's transaction left
    /// it (what checkout answers).
    Started(Box<OrderView>),
    /// Nothing to do before this time.
    Wait(DateTime<Utc>),
    /// It failed; retry with backoff.
    Failed(String),
}

/// A step whose last act was a transaction: moved on, or failed with its error.
pub(super) fn moved(result: Result<(), sqlx::Error>) -> Step {
    match result {
        Ok(()) => Step::Moved,
        Err(e) => e.into(),
    }
}

impl From<sqlx::Error> for Step {
    fn from(e: sqlx::Error) -> Self {
        Step::Failed(format!("database: {e}"))
    }
}

/// A refusal that means the hold no longer exists as a live hold of this order.
pub(super) fn hold_gone(e: &EdgeError) -> bool {
    matches!(e, EdgeError::Refused { status: 404, .. })
        || matches!(e.reason(), "hold_expired" | "hold_released" | "hold_not_found")
}

/// A refusal that means the seats went elsewhere (or the hold is forgotten).
pub(super) fn hold_lost(e: &EdgeError) -> bool {
    matches!(e, EdgeError::Refused { status: 404, .. })
        || matches!(e.reason(), "seats_unavailable" | "not_enough_available" | "hold_not_found")
}

impl Checkout {
    /// `action` on the order's hold at the edge.
    pub(super) async fn on_hold(&self, o: &OrderRow, action: HoldAction) -> Result<Value, EdgeError> {
        self.edge.hold_action(&o.event_id.to_string(), &o.hold_id, action).await
    }

    /// Moves an order as far as it can go now.
    pub async fn drive(&self, id: Uuid) {
        self.drive_from(id, None).await;
    }

    /// [`Checkout::drive`] for an order the caller's transaction has just claimed ([`claim`]), its
    /// row in hand: the first step goes without a claim of its own. The order's view when the last
    /// step recorded one (starting the payment does), so that checkout need not read it again.
    pub async fn drive_claimed(&self, order: OrderRow) -> Option<OrderView> {
        self.drive_from(order.id, Some(order)).await
    }

    async fn drive_from(&self, id: Uuid, mut claimed: Option<OrderRow>) -> Option<OrderView> {
        for _ in 0..MAX_STEPS {
            let order = match claimed.take() {
                Some(o) => o,
                None => match claim(&self.db, id).await {
                    Ok(Some(o)) => o,
                    Ok(None) => return None,
                    Err(e) => {
                        tracing::error!(order = %id, error = %e, "could not claim the order");
                        return None;
                    }
                },
            };
            let outcome = self.step(&order).await;
            let recorded = match outcome {
                Step::Moved => continue,
                Step::Parked => return None,
                Step::Started(view) => return Some(*view),
                Step::Wait(at) => {
                    sqlx::query("UPDATE orders SET next_attempt_at = $2, lease_until = NULL WHERE id = $1")
                        .bind(id)
                        .bind(at)
                        .execute(&self.db)
                        .await
                }
                Step::Failed(error) => {
                    let backoff = (1i64 << order.attempts.clamp(0, 6)).min(MAX_BACKOFF_SECS);
                    tracing::warn!(order = %id, state = order.state.as_str(), attempt = order.attempts + 1, %error, "checkout step failed; will retry");
                    sqlx::query(
                        "UPDATE orders SET attempts = attempts + 1, last_error = $2, lease_until = NULL,
                             next_attempt_at = now() + make_interval(secs => $3) WHERE id = $1",
                    )
                    .bind(id)
                    .bind(error)
                    .bind(backoff as f64)
                    .execute(&self.db)
                    .await
                }
            };
            if let Err(e) = recorded {
                tracing::error!(order = %id, error = %e, "could not record a step");
            }
            return None;
        }
        None
    }

    async fn step(&self, o: &OrderRow) -> Step {
        match o.state {
            OrderState::Created => self.start_payment(o).await,
            OrderState::AwaitingPayment => self.await_payment(o).await,
            OrderState::Confirming => self.confirm(o).await,
            OrderState::Releasing => self.release(o).await,
            OrderState::Refunding => self.refund(o).await,
            OrderState::Paid | OrderState::Cancelled | OrderState::Refunded => Step::Wait(Utc::now()),
        }
    }

    pub(super) async fn payment(&self, order: Uuid) -> Result<Option<PaymentRow>, sqlx::Error> {
        sqlx::query_as("SELECT id, provider, provider_ref, state FROM payments WHERE order_id = $1")
            .bind(order)
            .fetch_optional(&self.db)
            .await
    }

    /// Test-only crash points, named by `CORE_FAULT_INJECT` (see docs/checkout.md).
    pub(super) fn fault(&self, point: &str) {
        if self.fault.as_deref() == Some(point) {
            tracing::error!(point, "CORE_FAULT_INJECT: crashing on purpose");
            std::process::abort();
        }
    }
}

/// Takes an order for one step, if nobody else has it: its row, or `None`. On the pool, or in the
/// transaction that moved the order (checkout's insert, the webhook), which saves a round trip
/// and a transaction. (The reconciler only asks for orders whose next attempt is due; a drive
/// after a fresh event goes at once.)
pub(super) async fn claim<'e, E: sqlx::PgExecutor<'e>>(
    db: E,
    id: Uuid,
) -> Result<Option<OrderRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE orders SET lease_until = now() + make_interval(secs => $2)
         WHERE id = $1 AND state IN ('created', 'awaiting_payment', 'confirming', 'releasing', 'refunding')
           AND (lease_until IS NULL OR lease_until < now())
         RETURNING {ORDER_COLUMNS}"
    ))
    .bind(id)
    .bind(LEASE_SECS)
    .fetch_optional(db)
    .await
}

/// Orders of cancelled events that still hold money or seats: the organizer's cancellation
/// reaches each of them (a full refund, seats returned).
async fn sweep_cancelled_events(db: &PgPool) -> Result<Vec<Uuid>, sqlx::Error> {
    let orders: Vec<(Uuid, OrderState)> = sqlx::query_as(
        "SELECT o.id, o.state FROM orders o
         WHERE o.event_id IN (SELECT id FROM events WHERE state = 'cancelled')
           AND o.state IN ('created', 'awaiting_payment', 'paid') LIMIT 200",
    )
    .fetch_all(db)
    .await?;
    let mut moved = Vec::new();
    for (id, state) in orders {
        let mut tx = db.begin().await?;
        if state == OrderState::Paid {
            sqlx::query("UPDATE orders SET refund_minor = total_minor, seats_after_refund = 'return' WHERE id = $1 AND state = 'paid'")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        if apply(&mut tx, id, state, Input::EventCancelled, "organizer", json!({})).await?.is_some() {
            moved.push(id);
        }
        tx.commit().await?;
    }
    Ok(moved)
}

/// Unfinished orders whose next step is due.
async fn due(db: &PgPool) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM orders
         WHERE state IN ('created', 'awaiting_payment', 'confirming', 'releasing', 'refunding')
           AND next_attempt_at <= now() AND (lease_until IS NULL OR lease_until < now())
         ORDER BY next_attempt_at LIMIT 64",
    )
    .fetch_all(db)
    .await
}

/// The reconciler: runs until asked to stop (the orders being driven are taken to the end of
/// their step first; each step is recorded, so another replica would resume them anyway).
pub async fn run(checkout: std::sync::Arc<Checkout>, interval: Duration, stop: crate::shutdown::Stop) {
    use futures_util::StreamExt as _;
    while !stop.requested() {
        if let Err(e) = sweep_cancelled_events(&checkout.db).await {
            tracing::error!(error = %e, "reconciler could not sweep cancelled events");
        }
        match due(&checkout.db).await {
            Ok(ids) => {
                let n = ids.len();
                futures_util::stream::iter(ids).for_each_concurrent(8, |id| checkout.drive(id)).await;
                if n == 64 {
                    continue;
                }
            }
            Err(e) => tracing::error!(error = %e, "reconciler could not read unfinished orders"),
        }
        if !stop.pause(interval).await {
            break;
        }
    }
}

/// The age of the oldest unfinished order, in seconds (0 when none): a metric that must stay small.
pub async fn oldest_unfinished_age(db: &PgPool) -> Result<f64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce(extract(epoch FROM now() - min(created_at))::float8, 0) FROM orders
         WHERE state IN ('created', 'awaiting_payment', 'confirming', 'releasing', 'refunding')",
    )
    .fetch_one(db)
    .await
}
