//! The saga's driver: performs the step each unfinished order state calls for (calls to the edge
//! and the payment provider, all idempotent), then records the transition with its audit row and
//! its effects (payment, tickets, outbox rows) in one transaction, conditional on the state it
//! started from. The reconciler ([`run`]) resumes every unfinished order from its recorded state,
//! so a crash at any point only delays an order; a lease keeps two workers off the same order.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::saga::{self, Input, OrderState, Outcome};
use super::Checkout;
use crate::bus::outbox;
use crate::edge_client::EdgeError;
use crate::payments::{PaymentProvider, PaymentRequest, ProviderError, RemoteState};
use shared_types::internal_api::{HoldAction, HoldAnswer, InternalRoute};
use shared_types::inventory::HoldState;

/// How long a worker may hold an order before another may take it over.
const LEASE_SECS: f64 = 60.0;
/// Longest wait between two attempts of a failing step.
const MAX_BACKOFF_SECS: i64 = 60;
/// Steps one drive performs at most (an order needs at most five to finish).
const MAX_STEPS: usize = 8;
/// After a transition, the process that made it drives the order on at once; the reconciler
/// steps in only if it has not within this time (so the two rarely meet on one order).
pub const HANDOVER_SECS: f64 = 5.0;

pub const ORDER_COLUMNS: &str =
    "id, organization_id, event_id, visitor_id, hold_id, email, state, outcome, currency, \
     total_minor, fee_minor, refund_minor, hold_expires_at, seats_after_refund, promo_code_id, attempts, return_url";

/// What the driver needs of an order.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrderRow {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub event_id: Uuid,
    pub visitor_id: String,
    pub hold_id: String,
    pub email: String,
    pub state: OrderState,
    pub outcome: Option<String>,
    pub currency: String,
    pub total_minor: i64,
    pub fee_minor: i64,
    pub refund_minor: i64,
    pub hold_expires_at: DateTime<Utc>,
    pub seats_after_refund: String,
    pub promo_code_id: Option<Uuid>,
    pub attempts: i32,
    pub return_url: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct PaymentRow {
    id: Uuid,
    provider_ref: Option<String>,
    state: String,
}

/// How a step ended.
enum Step {
    /// The order moved on: look again at once.
    Moved,
    /// The order moved on to a state that waits for the outside world (the buyer's payment) or
    /// is final: nothing more to do now.
    Parked,
    /// Nothing to do before this time.
    Wait(DateTime<Utc>),
    /// It failed; retry with backoff.
    Failed(String),
}

/// A step whose last act was a transaction: moved on, or failed with its error.
fn moved(result: Result<(), sqlx::Error>) -> Step {
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

/// Writes one audit row.
#[allow(clippy::too_many_arguments)]
pub async fn audit(
    conn: &mut PgConnection,
    kind: &str,
    subject: Uuid,
    order: Uuid,
    actor: &str,
    from: Option<&str>,
    to: &str,
    details: Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO state_audit (subject_kind, subject_id, order_id, actor, from_state, to_state, details)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(kind)
    .bind(subject)
    .bind(order)
    .bind(actor)
    .bind(from)
    .bind(to)
    .bind(details)
    .execute(conn)
    .await?;
    Ok(())
}

/// Applies `input` to an order that is in `from`, if the saga allows it and the order is still
/// there: the new state, or `None` (nothing changed). In the caller's transaction.
pub async fn apply(
    conn: &mut PgConnection,
    order: Uuid,
    from: OrderState,
    input: Input,
    actor: &str,
    details: Value,
) -> Result<Option<OrderState>, sqlx::Error> {
    let Some(t) = saga::next(from, input) else { return Ok(None) };
    let changed = sqlx::query(
        "UPDATE orders SET state = $3, outcome = coalesce($4, outcome), attempts = 0, last_error = NULL,
             next_attempt_at = now() + make_interval(secs => $5), lease_until = NULL, updated_at = now()
         WHERE id = $1 AND state = $2",
    )
    .bind(order)
    .bind(from)
    .bind(t.to)
    .bind(t.outcome.map(Outcome::as_str))
    .bind(HANDOVER_SECS)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if !changed {
        return Ok(None);
    }
    let mut details = details;
    if let (Some(outcome), Value::Object(map)) = (t.outcome, &mut details) {
        map.insert("outcome".into(), outcome.as_str().into());
    }
    audit(conn, "order", order, order, actor, Some(from.as_str()), t.to.as_str(), details).await?;
    Ok(Some(t.to))
}

/// Records what the provider says of a payment (success is final; failure only of a pending one).
pub async fn record_payment(
    conn: &mut PgConnection,
    order: Uuid,
    remote: RemoteState,
    actor: &str,
) -> Result<(), sqlx::Error> {
    let to = match remote {
        RemoteState::Succeeded => "succeeded",
        RemoteState::Failed => "failed",
        RemoteState::Canceled => "cancelled",
        RemoteState::Pending => return Ok(()),
    };
    let allowed_from: &[&str] =
        if to == "succeeded" { &["pending", "failed", "cancelled"] } else { &["pending"] };
    let changed: Option<(Uuid, String)> = sqlx::query_as(
        "UPDATE payments p SET state = $2, updated_at = now()
         FROM (SELECT id, state FROM payments WHERE order_id = $1 FOR UPDATE) old
         WHERE p.id = old.id AND old.state = ANY($3) RETURNING p.id, old.state",
    )
    .bind(order)
    .bind(to)
    .bind(allowed_from)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some((payment, from)) = changed {
        audit(conn, "payment", payment, order, actor, Some(&from), to, json!({})).await?;
        payment_event(conn, order, &format!("payment.{to}"), json!({})).await?;
    }
    Ok(())
}

/// A `payments` event of the payment (or its refund) of `order`, written with one statement.
async fn payment_event(
    conn: &mut PgConnection,
    order: Uuid,
    kind: &str,
    extra: Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO outbox (topic, key, payload)
         SELECT 'payments', o.event_id::text, jsonb_build_object('type', $2::text, 'schema_version', 1,
             'order_id', o.id, 'event_id', o.event_id, 'organization_id', o.organization_id,
             'payment_id', p.id, 'provider', p.provider, 'provider_ref', p.provider_ref,
             'amount_minor', p.amount_minor, 'refunded_minor', p.refunded_minor, 'currency', p.currency,
             'at', now()) || $3::jsonb
         FROM orders o JOIN payments p ON p.order_id = o.id WHERE o.id = $1",
    )
    .bind(order)
    .bind(kind)
    .bind(extra)
    .execute(conn)
    .await?;
    Ok(())
}

fn event_payload(kind: &str, o: &OrderRow, extra: Value) -> Value {
    let mut payload = json!({
        "type": kind,
        "schema_version": 1,
        "order_id": o.id,
        "event_id": o.event_id,
        "organization_id": o.organization_id,
        "email": o.email,
        "currency": o.currency,
        "total_minor": o.total_minor,
        "at": Utc::now(),
    });
    if let (Value::Object(p), Value::Object(e)) = (&mut payload, extra) {
        p.extend(e);
    }
    payload
}

/// A refusal that means the hold no longer exists as a live hold of this order.
fn hold_gone(e: &EdgeError) -> bool {
    matches!(e, EdgeError::Refused { status: 404, .. })
        || matches!(e.reason(), "hold_expired" | "hold_released" | "hold_not_found")
}

/// A refusal that means the seats went elsewhere (or the hold is forgotten).
fn hold_lost(e: &EdgeError) -> bool {
    matches!(e, EdgeError::Refused { status: 404, .. })
        || matches!(e.reason(), "seats_unavailable" | "not_enough_available" | "hold_not_found")
}

impl Checkout {
    /// `action` on the order's hold at the edge.
    async fn on_hold(&self, o: &OrderRow, action: HoldAction) -> Result<Value, EdgeError> {
        self.edge.hold_action(&o.event_id.to_string(), &o.hold_id, action).await
    }

    /// Takes an order for one step, if nobody else has it. (The reconciler only asks for orders
    /// whose next attempt is due; a drive after a fresh event goes at once.)
    async fn claim(&self, id: Uuid) -> Result<Option<OrderRow>, sqlx::Error> {
        sqlx::query_as(&format!(
            "UPDATE orders SET lease_until = now() + make_interval(secs => $2)
             WHERE id = $1 AND state IN ('created', 'awaiting_payment', 'confirming', 'releasing', 'refunding')
               AND (lease_until IS NULL OR lease_until < now())
             RETURNING {ORDER_COLUMNS}"
        ))
        .bind(id)
        .bind(LEASE_SECS)
        .fetch_optional(&self.db)
        .await
    }

    /// Moves an order as far as it can go now.
    pub async fn drive(&self, id: Uuid) {
        for _ in 0..MAX_STEPS {
            let order = match self.claim(id).await {
                Ok(Some(o)) => o,
                Ok(None) => return,
                Err(e) => {
                    tracing::error!(order = %id, error = %e, "could not claim the order");
                    return;
                }
            };
            let outcome = self.step(&order).await;
            let recorded = match outcome {
                Step::Moved => continue,
                Step::Parked => return,
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
            return;
        }
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

    async fn payment(&self, order: Uuid) -> Result<Option<PaymentRow>, sqlx::Error> {
        sqlx::query_as("SELECT id, provider_ref, state FROM payments WHERE order_id = $1")
            .bind(order)
            .fetch_optional(&self.db)
            .await
    }

    /// `created`: extend the hold for payment, create the payment.
    async fn start_payment(&self, o: &OrderRow) -> Step {
        let extended = match self.on_hold(o, HoldAction::Extend).await {
            Ok(hold) => {
                serde_json::from_value::<HoldAnswer>(hold).map_err(|e| EdgeError::Unreachable(e.to_string()))
            }
            Err(e) => Err(e),
        };
        let hold = match extended {
            Ok(hold) => hold,
            Err(e) if e.reason() == "already_extended" => {
                match self.edge.hold(&o.event_id.to_string(), &o.hold_id).await {
                    Ok(hold) if hold.state == HoldState::Held => hold,
                    Ok(_) => return self.simple(o, Input::HoldGone, json!({})).await,
                    Err(e) => return Step::Failed(e.to_string()),
                }
            }
            Err(e) if hold_gone(&e) => {
                return self.simple(o, Input::HoldGone, json!({ "edge": e.reason() })).await
            }
            Err(e) => return Step::Failed(e.to_string()),
        };
        let expires_at = DateTime::<Utc>::from_timestamp_millis(hold.expires_at).unwrap_or(o.hold_expires_at);
        let free = o.total_minor == 0;
        let created = if free {
            None
        } else {
            let key = format!("order-{}", o.id);
            let order_id = o.id.to_string();
            let request = PaymentRequest {
                idempotency_key: &key,
                amount_minor: o.total_minor,
                currency: &o.currency,
                order_id: &order_id,
                description: "tickets",
                return_url: o.return_url.as_deref(),
            };
            match self.provider.create(&request).await {
                Ok(p) => Some(p),
                Err(e) => return Step::Failed(e.to_string()),
            }
        };
        let result: Result<Step, sqlx::Error> = async {
            let mut tx = self.db.begin().await?;
            let payment = Uuid::new_v4();
            let inserted = sqlx::query(
                "INSERT INTO payments (id, order_id, provider, provider_ref, state, amount_minor, currency, redirect_url, client_secret)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (order_id) DO NOTHING",
            )
            .bind(payment)
            .bind(o.id)
            .bind(self.provider.name())
            .bind(created.as_ref().map(|p| p.reference.clone()))
            .bind(if free { "succeeded" } else { "pending" })
            .bind(o.total_minor)
            .bind(&o.currency)
            .bind(created.as_ref().and_then(|p| p.redirect_url.clone()))
            .bind(created.as_ref().and_then(|p| p.client_secret.clone()))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 1 {
                let to = if free { "succeeded" } else { "pending" };
                audit(&mut tx, "payment", payment, o.id, "checkout", None, to, json!({ "provider": self.provider.name() })).await?;
            }
            sqlx::query("UPDATE orders SET hold_expires_at = $2 WHERE id = $1")
                .bind(o.id)
                .bind(expires_at)
                .execute(&mut *tx)
                .await?;
            let moved = apply(&mut tx, o.id, o.state, Input::PaymentCreated, "checkout", json!({})).await?;
            if moved.is_some() {
                if free {
                    apply(&mut tx, o.id, OrderState::AwaitingPayment, Input::PaymentSucceeded, "checkout", json!({ "free": true }))
                        .await?;
                } else {
                    // Nothing to do before the deadline unless the provider reports first.
                    sqlx::query("UPDATE orders SET next_attempt_at = $2 WHERE id = $1")
                        .bind(o.id)
                        .bind(expires_at + self.grace)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            tx.commit().await?;
            Ok(if free { Step::Moved } else { Step::Parked })
        }
        .await;
        result.unwrap_or_else(Step::from)
    }

    /// `awaiting_payment`: at the deadline, cancel the payment at the provider (which tells us if
    /// it was too late to cancel).
    async fn await_payment(&self, o: &OrderRow) -> Step {
        let deadline = o.hold_expires_at + self.grace;
        if Utc::now() < deadline {
            return Step::Wait(deadline);
        }
        let payment = match self.payment(o.id).await {
            Ok(Some(p)) => p,
            Ok(None) => return Step::Failed("no payment recorded".into()),
            Err(e) => return e.into(),
        };
        let Some(reference) = payment.provider_ref.as_deref() else {
            return self.simple(o, Input::DeadlinePassed, json!({})).await;
        };
        match self.provider.cancel(reference).await {
            Ok(RemoteState::Pending) => Step::Failed("the provider could not cancel the payment yet".into()),
            Ok(remote) => self.payment_outcome(o, remote, "reconciler").await,
            Err(e) => Step::Failed(e.to_string()),
        }
    }

    /// Records the provider's answer about a payment and feeds it to the saga.
    async fn payment_outcome(&self, o: &OrderRow, remote: RemoteState, actor: &str) -> Step {
        let input = match remote {
            RemoteState::Succeeded => Input::PaymentSucceeded,
            RemoteState::Failed => Input::PaymentFailed,
            RemoteState::Canceled => Input::DeadlinePassed,
            RemoteState::Pending => return Step::Wait(Utc::now()),
        };
        let result: Result<(), sqlx::Error> = async {
            let mut tx = self.db.begin().await?;
            record_payment(&mut tx, o.id, remote, actor).await?;
            apply(&mut tx, o.id, o.state, input, actor, json!({})).await?;
            tx.commit().await
        }
        .await;
        moved(result)
    }

    /// A transition with no other effect.
    async fn simple(&self, o: &OrderRow, input: Input, details: Value) -> Step {
        let result: Result<(), sqlx::Error> = async {
            let mut tx = self.db.begin().await?;
            apply(&mut tx, o.id, o.state, input, "checkout", details).await?;
            tx.commit().await
        }
        .await;
        moved(result)
    }

    /// `confirming`: sell the hold at the edge (or take its seats back if it expired and they
    /// are still free), then mark the order paid and issue its tickets, in one transaction.
    async fn confirm(&self, o: &OrderRow) -> Step {
        self.fault("crash-before-confirm");
        let sold = match self.on_hold(o, HoldAction::Confirm).await {
            Ok(_) => Ok("confirmed"),
            Err(e) if matches!(e.reason(), "hold_expired" | "hold_released") => {
                match self.on_hold(o, HoldAction::Reclaim).await {
                    Ok(_) => Ok("reclaimed"),
                    Err(e) if hold_lost(&e) => Err(e),
                    Err(e) => return Step::Failed(e.to_string()),
                }
            }
            Err(e) if hold_lost(&e) => Err(e),
            Err(e) => return Step::Failed(e.to_string()),
        };
        self.fault("crash-after-confirm");
        match sold {
            Ok(how) => self.mark_paid(o, how).await,
            Err(e) => {
                let result: Result<(), sqlx::Error> = async {
                    let mut tx = self.db.begin().await?;
                    sqlx::query("UPDATE orders SET refund_minor = total_minor WHERE id = $1")
                        .bind(o.id)
                        .execute(&mut *tx)
                        .await?;
                    if apply(
                        &mut tx,
                        o.id,
                        o.state,
                        Input::HoldLost,
                        "checkout",
                        json!({ "edge": e.reason() }),
                    )
                    .await?
                    .is_some()
                    {
                        let payload =
                            event_payload("order.hold_lost", o, json!({ "refund_minor": o.total_minor }));
                        outbox(&mut tx, "orders", o.event_id, payload).await?;
                    }
                    tx.commit().await
                }
                .await;
                moved(result)
            }
        }
    }

    async fn mark_paid(&self, o: &OrderRow, how: &str) -> Step {
        let result: Result<(), sqlx::Error> = async {
            let mut tx = self.db.begin().await?;
            if apply(&mut tx, o.id, o.state, Input::HoldSold, "checkout", json!({ "hold": how }))
                .await?
                .is_none()
            {
                return Ok(());
            }
            let tickets: Vec<(Uuid, Uuid, Option<String>)> = sqlx::query_as(
                "INSERT INTO tickets (id, order_id, organization_id, event_id, tier_id, seat_id, holder_email)
                 SELECT gen_random_uuid(), l.order_id, $2, $3, l.tier_id, l.seat_id, $4
                 FROM order_lines l WHERE l.order_id = $1 ORDER BY l.line
                 RETURNING id, tier_id, seat_id",
            )
            .bind(o.id)
            .bind(o.organization_id)
            .bind(o.event_id)
            .bind(&o.email)
            .fetch_all(&mut *tx)
            .await?;
            let tickets: Vec<Value> = tickets
                .iter()
                .map(|(id, tier, seat)| json!({ "ticket_id": id, "tier_id": tier, "seat_id": seat }))
                .collect();
            outbox(
                &mut tx,
                "orders",
                o.event_id,
                event_payload("order.paid", o, json!({ "tickets": tickets })),
            )
            .await?;
            let issued = event_payload("ticket.issued", o, json!({ "tickets": tickets }));
            outbox(&mut tx, "tickets", o.event_id, issued).await?;
            tx.commit().await
        }
        .await;
        match result {
            Ok(()) => {
                // Closed-loop admission: the buyer's shopping session is over (best effort: the
                // session also ends by itself when its time is up).
                let body = serde_json::to_vec(&json!({ "visitor": o.visitor_id })).unwrap_or_default();
                let ended = self.edge.send(&o.event_id.to_string(), &InternalRoute::EndSession, body).await;
                if let Err(e) = ended {
                    tracing::info!(order = %o.id, error = %e, "could not end the buyer's session");
                }
                Step::Parked
            }
            Err(sqlx::Error::Database(e)) if e.constraint() == Some("tickets_one_live_per_seat") => {
                // The edge sold a seat that already has a live ticket: never issue it twice.
                tracing::error!(order = %o.id, "a seat of this order already has a live ticket: refusing to issue it twice");
                Step::Failed("a seat of this order already has a live ticket".into())
            }
            Err(e) => e.into(),
        }
    }

    /// `releasing`: make sure the payment can no longer succeed, then release the hold.
    async fn release(&self, o: &OrderRow) -> Step {
        let payment = match self.payment(o.id).await {
            Ok(p) => p,
            Err(e) => return e.into(),
        };
        if let Some(PaymentRow { provider_ref: Some(reference), state, .. }) = &payment {
            if state == "pending" {
                match self.provider.cancel(reference).await {
                    Ok(RemoteState::Succeeded) => {
                        return self.payment_outcome(o, RemoteState::Succeeded, "reconciler").await
                    }
                    Ok(RemoteState::Pending) => {
                        return Step::Failed("the payment could not be cancelled yet".into())
                    }
                    Ok(remote) => {
                        let result: Result<(), sqlx::Error> = async {
                            let mut tx = self.db.begin().await?;
                            record_payment(&mut tx, o.id, remote, "checkout").await?;
                            tx.commit().await
                        }
                        .await;
                        if let Err(e) = result {
                            return e.into();
                        }
                    }
                    Err(e) => return Step::Failed(e.to_string()),
                }
            }
        }
        match self.on_hold(o, HoldAction::Release).await {
            Ok(_) => {}
            Err(e) if hold_gone(&e) => {}
            Err(e) => return Step::Failed(e.to_string()),
        }
        let result: Result<(), sqlx::Error> = async {
            let mut tx = self.db.begin().await?;
            if apply(&mut tx, o.id, o.state, Input::HoldReleased, "checkout", json!({})).await?.is_some() {
                if let Some(promo) = o.promo_code_id {
                    sqlx::query("UPDATE promo_codes SET uses = uses - 1 WHERE id = $1 AND uses > 0")
                        .bind(promo)
                        .execute(&mut *tx)
                        .await?;
                }
                outbox(
                    &mut tx,
                    "orders",
                    o.event_id,
                    event_payload("order.cancelled", o, json!({ "outcome": o.outcome })),
                )
                .await?;
            }
            tx.commit().await
        }
        .await;
        moved(result)
    }

    /// `refunding`: refund through the provider (idempotent), give the seats back (or take them
    /// off sale), void the tickets.
    async fn refund(&self, o: &OrderRow) -> Step {
        let payment = match self.payment(o.id).await {
            Ok(Some(p)) => p,
            Ok(None) => return Step::Failed("no payment recorded".into()),
            Err(e) => return e.into(),
        };
        if o.refund_minor > 0 {
            if let Some(reference) = payment.provider_ref.as_deref() {
                let inserted = sqlx::query(
                    "INSERT INTO refunds (id, order_id, payment_id, amount_minor, reason, state)
                     VALUES ($1, $2, $3, $4, $5, 'pending') ON CONFLICT (order_id) DO NOTHING",
                )
                .bind(Uuid::new_v4())
                .bind(o.id)
                .bind(payment.id)
                .bind(o.refund_minor)
                .bind(o.outcome.as_deref().unwrap_or("refund"))
                .execute(&self.db)
                .await;
                if let Err(e) = inserted {
                    return e.into();
                }
                let key = format!("refund-{}", o.id);
                let refund_ref = match self.provider.refund(reference, o.refund_minor, &key).await {
                    Ok(r) => r,
                    Err(ProviderError::Refused(e)) => {
                        tracing::error!(order = %o.id, error = %e, "the provider refused a refund: the operator must look at it");
                        return Step::Failed(format!("refund refused: {e}"));
                    }
                    Err(e) => return Step::Failed(e.to_string()),
                };
                let result: Result<(), sqlx::Error> = async {
                    let mut tx = self.db.begin().await?;
                    let changed: Option<Uuid> = sqlx::query_scalar(
                        "UPDATE refunds SET state = 'succeeded', provider_ref = $2, updated_at = now()
                         WHERE order_id = $1 AND state <> 'succeeded' RETURNING id",
                    )
                    .bind(o.id)
                    .bind(&refund_ref)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some(refund) = changed {
                        audit(
                            &mut tx,
                            "refund",
                            refund,
                            o.id,
                            "checkout",
                            Some("pending"),
                            "succeeded",
                            json!({ "amount_minor": o.refund_minor }),
                        )
                        .await?;
                        sqlx::query(
                            "UPDATE payments SET refunded_minor = $2, updated_at = now() WHERE id = $1",
                        )
                        .bind(payment.id)
                        .bind(o.refund_minor)
                        .execute(&mut *tx)
                        .await?;
                        payment_event(&mut tx, o.id, "payment.refunded", json!({ "refund_id": refund }))
                            .await?;
                    }
                    tx.commit().await
                }
                .await;
                if let Err(e) = result {
                    return e.into();
                }
            }
        }
        // The seats: only a sold hold has any to give back.
        if o.outcome.as_deref() != Some(Outcome::HoldLost.as_str()) {
            if o.seats_after_refund == "off_sale" {
                match self.take_off_sale(o).await {
                    Ok(true) => {}
                    Ok(false) => return Step::Wait(Utc::now() + chrono::Duration::milliseconds(500)),
                    Err(e) => return e.into(),
                }
            }
            match self.on_hold(o, HoldAction::Return).await {
                Ok(_) => {}
                Err(e) if matches!(e.reason(), "not_returnable" | "not_sold") => {}
                Err(e) => return Step::Failed(e.to_string()),
            }
        }
        let result: Result<(), sqlx::Error> = async {
            let mut tx = self.db.begin().await?;
            if apply(&mut tx, o.id, o.state, Input::Refunded, "checkout", json!({ "refund_minor": o.refund_minor })).await?.is_some() {
                let void: Vec<Uuid> = sqlx::query_scalar(
                    "UPDATE tickets SET state = 'void', updated_at = now() WHERE order_id = $1 AND state = 'valid' RETURNING id",
                )
                .bind(o.id)
                .fetch_all(&mut *tx)
                .await?;
                if !void.is_empty() {
                    let voided = event_payload("ticket.voided", o, json!({ "ticket_ids": void }));
                    outbox(&mut tx, "tickets", o.event_id, voided).await?;
                }
                let payload = event_payload("order.refunded", o, json!({ "refund_minor": o.refund_minor, "outcome": o.outcome }));
                outbox(&mut tx, "orders", o.event_id, payload).await?;
            }
            tx.commit().await
        }
        .await;
        moved(result)
    }

    /// Puts the order's seats on the event's off-sale list and waits until the edge has that
    /// version (so that returning them never makes them free, even for a moment). True when the
    /// edge has it.
    async fn take_off_sale(&self, o: &OrderRow) -> Result<bool, sqlx::Error> {
        let mut tx = self.db.begin().await?;
        let missing: Vec<String> = sqlx::query_scalar(
            "SELECT l.seat_id FROM order_lines l, events e WHERE l.order_id = $1 AND e.id = $2 AND l.seat_id IS NOT NULL
               AND NOT e.off_sale_seats ? l.seat_id",
        )
        .bind(o.id)
        .bind(o.event_id)
        .fetch_all(&mut *tx)
        .await?;
        if !missing.is_empty() {
            sqlx::query("UPDATE events SET off_sale_seats = off_sale_seats || $2 WHERE id = $1")
                .bind(o.event_id)
                .bind(json!(missing))
                .execute(&mut *tx)
                .await?;
            crate::publishing::touch(&mut tx, o.event_id).await.map_err(|e| match e {
                crate::error::ApiError::Database(e) => e,
                other => sqlx::Error::Protocol(other.to_string()),
            })?;
            tx.commit().await?;
            return Ok(false);
        }
        tx.commit().await?;
        let synced: Option<bool> = sqlx::query_scalar(
            "SELECT coalesce(s.synced_version, 0) >= e.version FROM events e JOIN edge_sync s ON s.event_id = e.id WHERE e.id = $1",
        )
        .bind(o.event_id)
        .fetch_optional(&self.db)
        .await?;
        Ok(synced.unwrap_or(false))
    }

    /// Test-only crash points, named by `CORE_FAULT_INJECT` (see docs/checkout.md).
    fn fault(&self, point: &str) {
        if self.fault.as_deref() == Some(point) {
            tracing::error!(point, "CORE_FAULT_INJECT: crashing on purpose");
            std::process::abort();
        }
    }
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

/// The reconciler: runs until the process stops.
pub async fn run(checkout: std::sync::Arc<Checkout>, interval: Duration) {
    use futures_util::StreamExt as _;
    loop {
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
        tokio::time::sleep(interval).await;
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
