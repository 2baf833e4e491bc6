//! Recording a transition of the saga, in the caller's transaction: the new state (conditional on
//! the one it left), its audit row, the payment's state, and the outbox rows it causes. Used by the
//! driver, the provider's webhook and the buyer's and organizer's routes.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::PgConnection;
use uuid::Uuid;

use super::saga::{self, Input, OrderState, Outcome};
use crate::payments::RemoteState;

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
    apply_with(conn, order, from, input, actor, details, Also::default()).await
}

/// What a transition may set on the order besides its state, in the same statement (each
/// `UPDATE` of the order is a new row version and new index entries: docs/benchmarks.md).
#[derive(Debug, Default, Clone, Copy)]
pub struct Also {
    /// The hold's expiry, as the edge extended it.
    pub hold_expires_at: Option<DateTime<Utc>>,
    /// When the reconciler looks at the order next (default: [`HANDOVER_SECS`] from now).
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// [`apply`], setting `also` with the new state. The state, the columns and the audit row are
/// one statement: the audit row is written exactly when the state changes.
pub async fn apply_with(
    conn: &mut PgConnection,
    order: Uuid,
    from: OrderState,
    input: Input,
    actor: &str,
    details: Value,
    also: Also,
) -> Result<Option<OrderState>, sqlx::Error> {
    let Some(t) = saga::next(from, input) else { return Ok(None) };
    let mut details = details;
    if let (Some(outcome), Value::Object(map)) = (t.outcome, &mut details) {
        map.insert("outcome".into(), outcome.as_str().into());
    }
    let changed = sqlx::query(
        "WITH moved AS (
             UPDATE orders SET state = $3, outcome = coalesce($4, outcome), attempts = 0, last_error = NULL,
                 next_attempt_at = coalesce($6, now() + make_interval(secs => $5)),
                 hold_expires_at = coalesce($7, hold_expires_at), lease_until = NULL, updated_at = now()
             WHERE id = $1 AND state = $2 RETURNING id)
         INSERT INTO state_audit (subject_kind, subject_id, order_id, actor, from_state, to_state, details)
         SELECT 'order', id, id, $8, $2, $3, $9 FROM moved",
    )
    .bind(order)
    .bind(from)
    .bind(t.to)
    .bind(t.outcome.map(Outcome::as_str))
    .bind(HANDOVER_SECS)
    .bind(also.next_attempt_at)
    .bind(also.hold_expires_at)
    .bind(actor)
    .bind(details)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    Ok(changed.then_some(t.to))
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
pub(super) async fn payment_event(
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

pub(super) fn event_payload(kind: &str, o: &OrderRow, extra: Value) -> Value {
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

/// After a transition, the process that made it drives the order on at once; the reconciler
/// steps in only if it has not within this time (so the two rarely meet on one order).
pub const HANDOVER_SECS: f64 = 5.0;

pub const ORDER_COLUMNS: &str =
    "id, organization_id, event_id, visitor_id, hold_id, email, state, outcome, currency, \
     total_minor, fee_minor, refund_minor, hold_expires_at, seats_after_refund, promo_code_id, attempts, return_url, payment_description, hold_extended";

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
    /// What the buyer sees on the provider's page (`Tickets: <event>`), fixed at creation.
    pub payment_description: Option<String>,
    /// The hold came extended for payment (the edge did it as the checkout passed).
    pub hold_extended: bool,
}
