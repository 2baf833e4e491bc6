//! The saga's seat steps (see `driver.rs`): confirm the hold at the edge and mark the order paid
//! with its tickets; release the hold of an order that will not be paid; take seats off sale
//! after a refund that keeps them; and the transitions that need no outside call.

use serde_json::{json, Value};
use uuid::Uuid;

use super::driver::{hold_gone, hold_lost, moved, PaymentRow, Step};
use super::record::OrderRow;
use super::record::{apply, event_payload, record_payment};
use super::saga::Input;
use super::Checkout;
use crate::bus::{outbox, outbox_all};
use crate::payments::{PaymentProvider, RemoteState};
use shared_types::internal_api::HoldAction;

impl Checkout {
    /// A transition with no other effect.
    pub(super) async fn simple(&self, o: &OrderRow, input: Input, details: Value) -> Step {
        let result: Result<(), sqlx::Error> = async {
            let mut tx = self.db.begin().await?;
            apply(&mut tx, o.id, o.state, input, "checkout", details).await?;
            tx.commit().await
        }
        .await;
        moved(result)
    }

    /// `confirming`: sell the hold at the edge (or take its seats back if it expired and they
    /// are still free), which ends the buyer's shopping session there in the same call, then mark
    /// the order paid and issue its tickets, in one transaction.
    pub(super) async fn confirm(&self, o: &OrderRow) -> Step {
        self.fault("crash-before-confirm");
        let event = o.event_id.to_string();
        let sell = |action| self.edge.sell(&event, &o.hold_id, action, &o.visitor_id);
        let sold = match sell(HoldAction::Confirm).await {
            Ok(_) => Ok("confirmed"),
            Err(e) if matches!(e.reason(), "hold_expired" | "hold_released") => {
                match sell(HoldAction::Reclaim).await {
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

    pub(super) async fn mark_paid(&self, o: &OrderRow, how: &str) -> Step {
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
            let paid = event_payload("order.paid", o, json!({ "tickets": tickets }));
            let issued = event_payload("ticket.issued", o, json!({ "tickets": tickets }));
            outbox_all(&mut tx, vec![("orders", o.event_id, paid), ("tickets", o.event_id, issued)]).await?;
            tx.commit().await
        }
        .await;
        match result {
            Ok(()) => Step::Parked,
            Err(sqlx::Error::Database(e)) if e.constraint() == Some("tickets_one_live_per_seat") => {
                // The edge sold a seat that already has a live ticket: never issue it twice.
                tracing::error!(order = %o.id, "a seat of this order already has a live ticket: refusing to issue it twice");
                Step::Failed("a seat of this order already has a live ticket".into())
            }
            Err(e) => e.into(),
        }
    }

    /// `releasing`: make sure the payment can no longer succeed, then release the hold.
    pub(super) async fn release(&self, o: &OrderRow) -> Step {
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

    /// Puts the order's seats on the event's off-sale list and waits until the edge has that
    /// version (so that returning them never makes them free, even for a moment). True when the
    /// edge has it.
    pub(super) async fn take_off_sale(&self, o: &OrderRow) -> Result<bool, sqlx::Error> {
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
}
