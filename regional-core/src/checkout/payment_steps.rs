//! The saga's payment steps (see `driver.rs`): start the payment with the provider, await its
//! outcome, record it, and refund (whole or in part). Each calls the provider idempotently (the
//! order's keys) and records the transition in one transaction, conditional on the state it
//! started from.

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::driver::{hold_gone, moved, Step};
use super::record::OrderRow;
use super::record::{apply, apply_with, audit, event_payload, payment_event, record_payment, Also};
use super::saga::{Input, OrderState, Outcome};
use super::Checkout;
use crate::bus::outbox;
use crate::edge_client::EdgeError;
use crate::payments::{PaymentProvider, PaymentRequest, ProviderError, RemoteState};
use shared_types::internal_api::{HoldAction, HoldAnswer};
use shared_types::inventory::HoldState;

impl Checkout {
    /// `created`: extend the hold for payment (unless the edge did as it forwarded the checkout,
    /// and this is the first try, the extended hold not yet expired: a retry asks the edge again,
    /// which reads the hold and finds whether it still stands), create the payment.
    pub(super) async fn start_payment(&self, o: &OrderRow) -> Step {
        let fresh = o.attempts == 0 && o.hold_expires_at > Utc::now();
        let expires_at = if o.hold_extended && fresh {
            o.hold_expires_at
        } else {
            match self.extend_hold(o).await {
                Ok(at) => at,
                Err(step) => return step,
            }
        };
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
                description: o.payment_description.as_deref().unwrap_or("Tickets"),
                email: Some(&o.email),
                return_url: o.return_url.as_deref(),
                pay_by: expires_at.timestamp(),
            };
            match self.provider.create(&request).await {
                Ok(p) => Some(p),
                // Refused (not unavailable): retrying the same request cannot help.
                Err(ProviderError::Refused(e)) => {
                    tracing::warn!(order = %o.id, error = %e, "the provider refused to create the payment");
                    return self.simple(o, Input::PaymentRefused, json!({ "provider_refused": e })).await;
                }
                Err(e) => return Step::Failed(e.to_string()),
            }
        };
        let result: Result<Step, sqlx::Error> = async {
            let mut tx = self.db.begin().await?;
            let payment = Uuid::new_v4();
            let inserted = sqlx::query(
                "INSERT INTO payments (id, order_id, provider, provider_ref, state, amount_minor, currency, redirect_url)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (order_id) DO NOTHING",
            )
            .bind(payment)
            .bind(o.id)
            .bind(self.provider.name())
            .bind(created.as_ref().map(|p| p.reference.clone()))
            .bind(if free { "succeeded" } else { "pending" })
            .bind(o.total_minor)
            .bind(&o.currency)
            .bind(created.as_ref().and_then(|p| p.redirect_url.clone()))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 1 {
                let to = if free { "succeeded" } else { "pending" };
                audit(&mut tx, "payment", payment, o.id, "checkout", None, to, json!({ "provider": self.provider.name() })).await?;
            }
            // The hold's new expiry and, unless the order is free, nothing to do before the
            // deadline unless the provider reports first: with the state, in one statement.
            let also = Also {
                hold_expires_at: Some(expires_at),
                next_attempt_at: (!free).then(|| expires_at + self.grace),
            };
            let moved = apply_with(&mut tx, o.id, o.state, Input::PaymentCreated, "checkout", json!({}), also).await?;
            if moved.is_none() {
                sqlx::query("UPDATE orders SET hold_expires_at = $2 WHERE id = $1")
                    .bind(o.id)
                    .bind(expires_at)
                    .execute(&mut *tx)
                    .await?;
            } else if free {
                apply(&mut tx, o.id, OrderState::AwaitingPayment, Input::PaymentSucceeded, "checkout", json!({ "free": true }))
                    .await?;
            }
            // What checkout answers, read in this transaction rather than in one of its own.
            let step = if free {
                Step::Moved
            } else {
                let view = super::view(&mut *tx, o.id).await.map_err(|e| match e {
                    crate::error::ApiError::Database(e) => e,
                    other => sqlx::Error::Protocol(other.to_string()),
                })?;
                Step::Started(Box::new(view))
            };
            tx.commit().await?;
            Ok(step)
        }
        .await;
        result.unwrap_or_else(Step::from)
    }

    /// Extends the order's hold for payment at the edge: its new expiry, or the step that ends
    /// this attempt (the hold gone, the edge unreachable).
    async fn extend_hold(&self, o: &OrderRow) -> Result<DateTime<Utc>, Step> {
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
                    Ok(_) => return Err(self.simple(o, Input::HoldGone, json!({})).await),
                    Err(e) => return Err(Step::Failed(e.to_string())),
                }
            }
            Err(e) if hold_gone(&e) => {
                return Err(self.simple(o, Input::HoldGone, json!({ "edge": e.reason() })).await)
            }
            Err(e) => return Err(Step::Failed(e.to_string())),
        };
        Ok(DateTime::<Utc>::from_timestamp_millis(hold.expires_at).unwrap_or(o.hold_expires_at))
    }

    /// `awaiting_payment`: at the deadline, cancel the payment at the provider (which tells us if
    /// it was too late to cancel).
    pub(super) async fn await_payment(&self, o: &OrderRow) -> Step {
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
    pub(super) async fn payment_outcome(&self, o: &OrderRow, remote: RemoteState, actor: &str) -> Step {
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

    /// `refunding`: refund through the provider (idempotent), give the seats back (or take them
    /// off sale), void the tickets.
    pub(super) async fn refund(&self, o: &OrderRow) -> Step {
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
                // Taken at the box office: no provider to call. The refund stays `pending` until
                // a clerk records it paid back at the counter (`Checkout::record_counter_payout`).
                if !super::counter::at_counter(&payment.provider) {
                    let key = format!("refund-{}", o.id);
                    let refund_ref = match self.provider.refund(reference, o.refund_minor, &key).await {
                        Ok(r) => r,
                        Err(ProviderError::Refused(e)) => {
                            tracing::error!(order = %o.id, error = %e, "the provider refused a refund: the operator must look at it");
                            return Step::Failed(format!("refund refused: {e}"));
                        }
                        Err(e) => return Step::Failed(e.to_string()),
                    };
                    if let Err(e) = self.refund_succeeded(o, payment.id, &refund_ref).await {
                        return e.into();
                    }
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

    /// Records a provider's refund as done: the refund `succeeded` with its reference, the
    /// payment's refunded amount, the `payment.refunded` event (once).
    async fn refund_succeeded(
        &self,
        o: &OrderRow,
        payment: Uuid,
        refund_ref: &str,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.db.begin().await?;
        let changed: Option<Uuid> = sqlx::query_scalar(
            "UPDATE refunds SET state = 'succeeded', provider_ref = $2, updated_at = now()
             WHERE order_id = $1 AND state <> 'succeeded' RETURNING id",
        )
        .bind(o.id)
        .bind(refund_ref)
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
            sqlx::query("UPDATE payments SET refunded_minor = $2, updated_at = now() WHERE id = $1")
                .bind(payment)
                .bind(o.refund_minor)
                .execute(&mut *tx)
                .await?;
            payment_event(&mut tx, o.id, "payment.refunded", json!({ "refund_id": refund })).await?;
        }
        tx.commit().await
    }
}
