//! Checkout's route list ([`routes`]), the payment provider's webhook, and an event's sale
//! settings.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use shared_types::inventory::HoldSettings;
use utoipa_axum::router::OpenApiRouter;
use uuid::Uuid;

use super::create::*;
use super::orders::*;
use super::pricing::PricingSettings;
use super::saga::{Input, OrderState};
use super::*;
use crate::api::resource_routes;
use crate::api::JsonBody;
use crate::auth::need;
use crate::error::{ApiError, Result};
use crate::extract::OwnEvent;
use crate::payments::signature::Delivery;
use crate::payments::{PaymentProvider, RemoteState, WebhookKind};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    resource_routes! {
        [create_checkout], [quote_checkout], [get_order], [cancel_order], [refund_order], [webhook], [set_sale_settings],
        [list_orders]
    }
}

/// `POST /api/v1/webhooks/{provider}`: a provider's signed report. Each provider event counts
/// once (duplicates answer `200` and change nothing); an unknown payment answers `404` so that the
/// provider retries.
#[utoipa::path(post, path = "/api/v1/webhooks/{provider}", tag = "checkout",
    params(("provider" = String, Path, description = "testpay or stripe")),
    request_body(content = Object, description = "the provider's event, signed (Stripe-Signature / Testpay-Signature)"),
    responses((status = 200, body = Object), crate::api::Problems))]
pub(super) async fn webhook(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>> {
    let co = state.checkout()?;
    if provider != co.provider.name() {
        return Err(ApiError::NotFound);
    }
    let header = headers.get(format!("{provider}-signature")).and_then(|v| v.to_str().ok());
    let event = co
        .provider
        .verify_webhook(&Delivery { signature: header, body: &body, now: Utc::now().timestamp() })
        .map_err(|e| ApiError::Token { reason: e.reason(), detail: e.to_string() })?;
    let mut tx = state.db.begin().await?;
    let fresh = sqlx::query(
        "INSERT INTO webhook_events (provider, event_id, kind, provider_ref) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(&provider)
    .bind(&event.id)
    .bind(event.kind.as_str())
    .bind(&event.reference)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !fresh {
        return Ok(Json(json!({ "received": true, "duplicate": true })));
    }
    let (remote, input) = match event.kind {
        WebhookKind::PaymentSucceeded => (RemoteState::Succeeded, Input::PaymentSucceeded),
        WebhookKind::PaymentFailed => (RemoteState::Failed, Input::PaymentFailed),
        // Cancelled at the provider: the saga's own cancellation at the deadline (Stripe reports
        // the session it expired), so the order was not paid in time rather than refused.
        WebhookKind::PaymentCanceled => (RemoteState::Canceled, Input::DeadlinePassed),
        WebhookKind::Other => {
            tx.commit().await?;
            return Ok(Json(json!({ "received": true, "ignored": true })));
        }
    };
    let order: Option<(Uuid, OrderState)> = sqlx::query_as(
        "SELECT o.id, o.state FROM payments p JOIN orders o ON o.id = p.order_id
         WHERE p.provider = $1 AND p.provider_ref = $2 FOR UPDATE OF o",
    )
    .bind(&provider)
    .bind(&event.reference)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((order, order_state)) = order else {
        // Not recorded yet (the checkout is still finishing): the provider will deliver again.
        return Err(ApiError::NotFound);
    };
    let actor = format!("{provider}:{}", event.id);
    record::record_payment(&mut tx, order, remote, &actor).await?;
    let moved =
        record::apply(&mut tx, order, order_state, input, &actor, json!({ "webhook": event.id })).await?;
    // The order moved: this process takes it for its next step (confirming the seats) in the same
    // transaction, and drives it at once with the row in hand.
    let claimed = match moved {
        Some(_) => super::driver::claim(&mut *tx, order).await?,
        None => None,
    };
    tx.commit().await?;
    if let Some(row) = claimed {
        // A buyer may be waiting on this order (`watch`): told as soon as it has moved on.
        let watch = state.order_watch.clone();
        tokio::spawn(async move {
            co.drive_claimed(row).await;
            watch.poke();
        });
    }
    Ok(Json(json!({ "received": true, "order_state": moved.unwrap_or(order_state) })))
}

/// An event's sale settings: fees and tax (core) and hold behaviour (edge).
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SaleSettings {
    #[serde(default)]
    pub pricing: PricingSettings,
    /// `hold_seconds`, `extension_seconds`, `max_tickets_per_visitor`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub holds: HoldSettings,
}

/// `PUT /api/v1/events/{id}/sale-settings`: fees, tax and holds (pushed to the edge).
#[utoipa::path(put, path = "/api/v1/events/{id}/sale-settings", tag = "catalog", security(("api_key" = [])),
    params(("id" = String, Path, description = "the resource id")), request_body = SaleSettings,
    responses((status = 200, body = SaleSettings), crate::api::Problems))]
pub(super) async fn set_sale_settings(
    State(state): State<AppState>,
    OwnEvent { caller, event, .. }: OwnEvent<need::ManageCatalog>,
    JsonBody(settings): JsonBody<SaleSettings>,
) -> Result<Json<SaleSettings>> {
    let mut errors: Vec<shared_types::inventory::FieldError> = settings
        .pricing
        .validate()
        .into_iter()
        .map(|(f, m)| shared_types::inventory::FieldError::new(format!("pricing.{f}"), m))
        .collect();
    // The edge's own bounds (one definition): what passes here, the edge takes.
    errors.extend(settings.holds.validate("holds."));
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let mut tx = state.db.begin().await?;
    let before: (serde_json::Value, serde_json::Value) =
        sqlx::query_as("SELECT pricing, hold_settings FROM events WHERE id = $1 FOR UPDATE")
            .bind(event.id)
            .fetch_one(&mut *tx)
            .await?;
    let (pricing, holds) = (
        serde_json::to_value(settings.pricing).unwrap_or_default(),
        serde_json::to_value(settings.holds).unwrap_or_default(),
    );
    sqlx::query("UPDATE events SET pricing = $2, hold_settings = $3 WHERE id = $1")
        .bind(event.id)
        .bind(&pricing)
        .bind(&holds)
        .execute(&mut *tx)
        .await?;
    crate::publishing::touch(&mut tx, event.id).await?;
    let details = crate::audit::diff(
        &serde_json::json!({ "pricing": before.0, "holds": before.1 }),
        &serde_json::json!({ "pricing": pricing, "holds": holds }),
    );
    let subject = format!("event:{}", event.id);
    crate::audit::by(&mut tx, &caller, event.organization_id, "event.set_sale_settings", subject, details)
        .await?;
    tx.commit().await?;
    Ok(Json(settings))
}
