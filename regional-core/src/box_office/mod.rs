//! The box office (docs/box-office.md): selling at the venue to the person at the counter, without
//! the line. Everything here needs [`Permission::SellAtVenue`](crate::auth::Permission) (the
//! `box_office` role and organizer admins), an event of the caller's organization, and is audited.
//!
//! - `POST   /api/v1/events/{id}/box-office/holds`                  hold seats or places, priced
//! - `DELETE /api/v1/events/{id}/box-office/holds/{hold}`           let a hold go
//! - `POST   /api/v1/events/{id}/box-office/sales`                  sell a hold: paid (cash or card
//!   on the venue's terminal), tickets issued
//! - `GET    /api/v1/events/{id}/box-office/orders/{order}/tickets` an order's tickets with codes
//! - `GET    /api/v1/events/{id}/box-office/orders/{order}/tickets.pdf` printable, a page a ticket
//! - `POST   /api/v1/events/{id}/box-office/tickets/{ticket}/reissue`   a lost ticket's new code
//!
//! A hold is placed at the edge by the core (`InternalRoute::PlaceHold`) under a visitor id of
//! its own (`box-office_…`), recorded in `box_office_holds`; a sale sells only such a hold of this
//! event, once (`orders.hold_id`), through the checkout saga ([`crate::checkout::counter`]).

mod pdf;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use shared_types::ids::{SeatId, VisitorId};
use shared_types::internal_api::{CoreHoldBody, HoldAnswer, InternalRoute, BOX_OFFICE_VISITOR_PREFIX};
use shared_types::inventory::FieldError;
use shared_types::inventory::HoldState;
use utoipa_axum::router::OpenApiRouter;
use uuid::Uuid;

use crate::api::{self, resource_routes, IdempotencyHeader};
use crate::auth::need;
use crate::checkout::counter::{CounterMethod, CounterSale, Sold};
use crate::checkout::create::Quote;
use crate::checkout::{Checkout, OrderView};
use crate::edge_client::EdgeError;
use crate::error::{ApiError, Result};
use crate::extract::OwnEvent;
use crate::fulfillment::tickets::{code_of, new_version, tickets_of, TicketCode};
use crate::models::event::Event;
use crate::state::AppState;
use pdf::PrintedTicket;

/// Live holds one clerk may have at once: a counter serves one person at a time, and a handful
/// covers a group split across tiers; more would let one key hold a house out of sale.
pub const LIVE_HOLDS_PER_CLERK: i64 = 10;

pub fn routes() -> OpenApiRouter<AppState> {
    resource_routes! {
        [box_office_hold], [box_office_release], [box_office_sale], [box_office_tickets], [box_office_print], [box_office_reissue],
        [box_office_paid_back], [box_office_refunds]
    }
}

/// What the clerk asks to hold: a buyer's hold request (the inventory's rules apply: seats all or
/// nothing, the best seats, general admission), with the tiers' ids as the event has them. One
/// object whose `kind` says which fields it takes (a field another kind takes is refused).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CounterHold {
    pub kind: CounterHoldKind,
    /// `seats`: exactly these seats, all or nothing.
    #[serde(default)]
    #[schema(max_items = 50)]
    pub seats: Vec<String>,
    /// `seats`, `best_available`: the section (an event sold by section needs it).
    #[serde(default)]
    pub section: Option<String>,
    /// `best_available`: only in this price zone.
    #[serde(default)]
    pub zone: Option<String>,
    /// `best_available`: only seats with this feature (`wheelchair`, `companion`, `easy_access`,
    /// `hearing_loop`, `limited_view`).
    #[serde(default)]
    pub accessibility: Option<String>,
    /// The tier: for seats, the seated tier to sell them under (the event's first when absent);
    /// for `general_admission`, which places (required).
    #[serde(default)]
    pub tier: Option<String>,
    /// `best_available`, `general_admission`: how many, 1 to 50.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 50)]
    pub quantity: Option<u32>,
}

/// Which kind of hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CounterHoldKind {
    Seats,
    BestAvailable,
    GeneralAdmission,
}

impl CounterHold {
    /// The inventory's hold request (`{"kind", …}`), or the fields that are wrong (answered here,
    /// without a call to the edge).
    fn request(&self) -> std::result::Result<Value, Vec<FieldError>> {
        if self.seats.len() > 50 {
            return Err(vec![FieldError::new("seats", "at most 50 seats a hold")]);
        }
        let mut errors = Vec::new();
        let mut id = |field: &str, value: &str| {
            if SeatId::parse(value).is_err() {
                errors
                    .push(FieldError::new(field, "must be 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-'"));
            }
        };
        for (i, seat) in self.seats.iter().enumerate() {
            id(&format!("seats[{i}]"), seat);
        }
        for (field, value) in [("section", &self.section), ("zone", &self.zone), ("tier", &self.tier)] {
            if let Some(v) = value {
                id(field, v);
            }
        }
        let mut refuse = |field: &str, why: &str| errors.push(FieldError::new(field, why));
        let quantity = match self.kind {
            CounterHoldKind::Seats => {
                if self.quantity.is_some() || self.zone.is_some() || self.accessibility.is_some() {
                    refuse("kind", "a hold of named seats takes seats, section and tier only");
                }
                self.seats.len() as u32
            }
            CounterHoldKind::BestAvailable => {
                if !self.seats.is_empty() {
                    refuse("seats", "the best seats are chosen by the inventory: name a quantity");
                }
                self.quantity.unwrap_or(0)
            }
            CounterHoldKind::GeneralAdmission => {
                if !self.seats.is_empty()
                    || self.section.is_some()
                    || self.zone.is_some()
                    || self.accessibility.is_some()
                {
                    refuse("kind", "general admission takes a tier and a quantity only");
                }
                if self.tier.is_none() {
                    refuse("tier", "general admission names its tier");
                }
                self.quantity.unwrap_or(0)
            }
        };
        if !(1..=50).contains(&quantity) {
            refuse("quantity", "must hold 1 to 50 seats or places");
        }
        let accessibility = match self.accessibility.as_deref() {
            None => None,
            Some(a) => match serde_json::from_value::<shared_types::inventory::Accessibility>(json!(a)) {
                Ok(_) => Some(a),
                Err(_) => {
                    refuse(
                        "accessibility",
                        "must be wheelchair, companion, easy_access, hearing_loop or limited_view",
                    );
                    None
                }
            },
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut request = json!({ "kind": self.kind });
        let fields = [
            ("seats", (!self.seats.is_empty()).then(|| json!(self.seats))),
            ("section", self.section.as_ref().map(|v| json!(v))),
            ("zone", self.zone.as_ref().map(|v| json!(v))),
            ("accessibility", accessibility.map(|v| json!(v))),
            ("tier", self.tier.as_ref().map(|v| json!(v))),
            ("quantity", (self.kind != CounterHoldKind::Seats).then(|| json!(quantity))),
        ];
        for (field, value) in fields {
            if let Some(v) = value {
                request[field] = v;
            }
        }
        Ok(request)
    }
}

/// A box-office hold, and what it costs.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CounterHoldAnswer {
    pub hold_id: String,
    #[schema(value_type = Vec<String>)]
    pub seats: Vec<SeatId>,
    /// General-admission places held (0 for seats).
    pub ga_quantity: u32,
    /// When the hold ends unless sold (milliseconds since the epoch).
    pub expires_at_ms: i64,
    pub quote: Quote,
    /// A retry with the same `Idempotency-Key`: the hold placed the first time.
    pub replayed: bool,
}

/// `POST /api/v1/events/{id}/box-office/holds`: holds seats or places for the person at the
/// counter, without the line (the waiting room and the per-buyer cap are the online sale's), and
/// prices them. A retry with the same `Idempotency-Key` answers the same hold. At most
/// [`LIVE_HOLDS_PER_CLERK`] live holds a clerk (`409 too_many_holds`).
#[utoipa::path(post, path = "/api/v1/events/{id}/box-office/holds", tag = "box office", security(("api_key" = [])),
    params(("id" = String, Path, description = "the event id"),
           ("Idempotency-Key" = Option<String>, Header, description = "the same hold for a retry: 1 to 128 visible ASCII characters", pattern = "^[!-~]{1,128}$")),
    request_body = CounterHold,
    responses((status = 201, body = CounterHoldAnswer), (status = 200, body = CounterHoldAnswer, description = "a retry"), crate::api::Problems))]
async fn box_office_hold(
    State(state): State<AppState>,
    OwnEvent { caller, event, .. }: OwnEvent<need::SellAtVenue>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response> {
    let co = state.checkout()?;
    let key = IdempotencyHeader::from_headers(&headers)?.map(|h| h.0.as_str().to_owned());
    let asked: CounterHold = api::parse_json(&body)?;
    let request = asked.request().map_err(ApiError::Validation)?;
    // A key names one visitor (so the edge's idempotency answers a retry with the same hold);
    // without one, the core makes a key of its own (so that the edge client's resend of a
    // request that never arrived places no second hold).
    let key = key.unwrap_or_else(|| format!("core-{}", Uuid::new_v4().simple()));
    let digest = Sha256::digest(format!("{}:{}:{key}", caller.user_id, event.id));
    let visitor = format!("{BOX_OFFICE_VISITOR_PREFIX}{}", &hex::encode(digest)[..40]);
    // One clerk's holds are counted under a lock on the clerk, held across the edge's call. Only
    // tried: a clerk's second request while one is under way is refused at once rather than
    // holding a connection while it waits.
    let mut tx = state.db.begin().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("box-office:{}", caller.user_id))
        .fetch_one(&mut *tx)
        .await?;
    if !locked {
        return Err(ApiError::RateLimited { reason: "clerk_busy", retry_after_secs: 1 });
    }
    // A retry of a hold still live is answered by the edge as it was; anything else counts.
    let retry: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM box_office_holds
                        WHERE user_id = $2 AND visitor_id = $1 AND ended_at IS NULL AND expires_at > now())",
    )
    .bind(&visitor)
    .bind(caller.user_id)
    .fetch_one(&mut *tx)
    .await?;
    if !retry {
        let live: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM box_office_holds WHERE user_id = $1 AND ended_at IS NULL AND expires_at > now()",
        )
        .bind(caller.user_id)
        .fetch_one(&mut *tx)
        .await?;
        if live >= LIVE_HOLDS_PER_CLERK {
            return Err(ApiError::conflict(
                "too_many_holds",
                format!("at most {LIVE_HOLDS_PER_CLERK} live holds a clerk: sell or release one first"),
            ));
        }
    }
    let placing = CoreHoldBody {
        visitor: VisitorId::parse(&visitor).map_err(|e| ApiError::Unavailable(e.to_string()))?,
        request: request.clone(),
        idempotency_key: Some(key),
    };
    let body = serde_json::to_vec(&placing).unwrap_or_default();
    let answer =
        co.edge.send(&event.id.to_string(), &InternalRoute::PlaceHold, body).await.map_err(edge_refusal)?;
    let replayed = answer.get("replayed").and_then(Value::as_bool).unwrap_or(false);
    let hold: HoldAnswer = serde_json::from_value(answer.get("hold").cloned().unwrap_or(Value::Null))
        .map_err(|e| ApiError::Unavailable(format!("the edge's hold is not one: {e}")))?;
    let grant = hold.grant().ok_or_else(|| ApiError::Unavailable("the edge's hold id is not one".into()))?;
    // A retry of a hold that ended, or whose sale is recorded (the edge may not have sold it yet):
    // the clerk places a new one.
    let ended: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM box_office_holds WHERE hold_id = $1 AND ended_at IS NOT NULL)
             OR EXISTS (SELECT 1 FROM orders WHERE hold_id = $1)",
    )
    .bind(&hold.id)
    .fetch_one(&mut *tx)
    .await?;
    if hold.state != HoldState::Held || ended {
        return Err(ApiError::conflict("hold_ended", "this key's hold has ended: hold again with a new key"));
    }
    // Priced before it is recorded, in this transaction: a hold this request placed that the
    // event cannot price (a tier's per-order limit, a closed sale window) is released at once, and
    // the refusal said; a retry's hold is left as it is (it is recorded, and released only by
    // `DELETE`, under its row's lock).
    let quote = match co.counter_quote(&mut tx, event.id, &grant, state.sms.is_some()).await {
        Ok(quote) => quote,
        Err(refused) => {
            if !replayed {
                let route = InternalRoute::HoldAction(
                    hold.id.clone(),
                    shared_types::internal_api::HoldAction::Release,
                );
                if let Err(e) = co.edge.send(&event.id.to_string(), &route, Vec::new()).await {
                    tracing::warn!(hold = %hold.id, error = %e, "a box-office hold the event cannot price was not released: it expires");
                }
            }
            return Err(refused);
        }
    };
    let quantity = hold.seats.len() as i32 + hold.ga.as_ref().map_or(0, |g| g.quantity as i32);
    let expires_at =
        chrono::DateTime::from_timestamp_millis(hold.expires_at).unwrap_or_else(chrono::Utc::now);
    let recorded = sqlx::query(
        "INSERT INTO box_office_holds (hold_id, event_id, organization_id, user_id, visitor_id, quantity, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (hold_id) DO NOTHING",
    )
    .bind(&hold.id)
    .bind(event.id)
    .bind(event.organization_id)
    .bind(caller.user_id)
    .bind(&visitor)
    .bind(quantity.max(1))
    .bind(expires_at)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if recorded == 1 {
        let details = json!({ "request": request, "seats": hold.seats, "ga": hold.ga, "expires_at_ms": hold.expires_at });
        crate::audit::by(
            &mut tx,
            &caller,
            event.organization_id,
            "box_office.hold",
            format!("hold:{}", hold.id),
            details,
        )
        .await?;
    }
    tx.commit().await?;
    let status = if replayed { StatusCode::OK } else { StatusCode::CREATED };
    let answer = CounterHoldAnswer {
        hold_id: hold.id,
        seats: hold.seats,
        ga_quantity: hold.ga.map_or(0, |g| g.quantity),
        expires_at_ms: hold.expires_at,
        quote,
        replayed,
    };
    Ok((status, Json(answer)).into_response())
}

/// The edge's refusal as the clerk sees it: its reason kept where it is one of the inventory's.
fn edge_refusal(e: EdgeError) -> ApiError {
    const REASONS: [&str; 10] = [
        "seats_unavailable",
        "not_enough_available",
        "tier_not_on_sale",
        "limit_exceeded",
        "idempotency_conflict",
        "hold_expired",
        "hold_released",
        "hold_sold",
        "stale_inventory",
        "unpublished",
    ];
    match e {
        EdgeError::Refused { status: 400, detail, .. } => ApiError::Malformed(detail),
        EdgeError::Refused { status: 422, detail, .. } => ApiError::field("request", &detail),
        EdgeError::Refused { status: 404, reason, .. } if reason.is_empty() || reason == "unpublished" => {
            ApiError::conflict("not_on_sale", "this event is not on sale at the edge")
        }
        EdgeError::Refused { status: 404, .. } => ApiError::NotFound,
        EdgeError::Refused { reason, detail, .. } => {
            let reason = REASONS.into_iter().find(|r| *r == reason).unwrap_or("hold_refused");
            ApiError::conflict(reason, detail)
        }
        EdgeError::Unreachable(why) => {
            tracing::warn!(error = %why, "a box-office call to the edge failed");
            ApiError::Unavailable("the edge is unavailable; try again shortly".into())
        }
    }
}

/// The visitor of a box-office hold of this event (404 for any other hold: a buyer's is never
/// the box office's).
async fn counter_hold(db: &sqlx::PgPool, event: &Event, hold: &str) -> Result<String> {
    sqlx::query_scalar("SELECT visitor_id FROM box_office_holds WHERE hold_id = $1 AND event_id = $2")
        .bind(hold)
        .bind(event.id)
        .fetch_optional(db)
        .await?
        .ok_or(ApiError::NotFound)
}

/// `DELETE /api/v1/events/{id}/box-office/holds/{hold}`: the buyer changed their mind; the seats
/// go back on sale now. `204`, also for a hold released or ended before; `409 hold_sold` once its
/// sale is recorded (even before the edge has sold it). Any clerk of the organization may release
/// its box office's holds (a counter hands over to the next).
///
/// The hold is ended here first (its row locked, as a sale locks it: a hold is released or sold,
/// never both), then at the edge: an edge that cannot be reached leaves it held there until its
/// expiry at the latest (`503`: ask again to let it go sooner); no sale can take it meanwhile.
#[utoipa::path(delete, path = "/api/v1/events/{id}/box-office/holds/{hold}", tag = "box office", security(("api_key" = [])),
    params(("id" = String, Path, description = "the event id"), ("hold" = String, Path, description = "the hold id")),
    responses((status = 204, description = "released"), crate::api::Problems))]
async fn box_office_release(
    State(state): State<AppState>,
    OwnEvent { caller, event, .. }: OwnEvent<need::SellAtVenue>,
    Path((_, hold)): Path<(String, String)>,
) -> Result<StatusCode> {
    let co = state.checkout()?;
    let mut tx = state.db.begin().await?;
    let ended: Option<Option<chrono::DateTime<chrono::Utc>>> = sqlx::query_scalar(
        "SELECT ended_at FROM box_office_holds WHERE hold_id = $1 AND event_id = $2 FOR UPDATE",
    )
    .bind(&hold)
    .bind(event.id)
    .fetch_optional(&mut *tx)
    .await?;
    let ended = ended.ok_or(ApiError::NotFound)?;
    // Its own statement, after the lock: it sees a sale that committed while this waited.
    let sold: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM orders WHERE hold_id = $1)")
        .bind(&hold)
        .fetch_one(&mut *tx)
        .await?;
    if sold {
        return Err(ApiError::conflict("hold_sold", "this hold is sold: refund its order instead"));
    }
    if ended.is_none() {
        sqlx::query("UPDATE box_office_holds SET ended_at = now() WHERE hold_id = $1")
            .bind(&hold)
            .execute(&mut *tx)
            .await?;
        crate::audit::by(
            &mut tx,
            &caller,
            event.organization_id,
            "box_office.release",
            format!("hold:{hold}"),
            json!({}),
        )
        .await?;
    }
    tx.commit().await?;
    let route = InternalRoute::HoldAction(hold.clone(), shared_types::internal_api::HoldAction::Release);
    match co.edge.send(&event.id.to_string(), &route, Vec::new()).await {
        Ok(_) => Ok(StatusCode::NO_CONTENT),
        // Ended at the edge already (expired, released, or forgotten an hour after).
        Err(e) if matches!(e.reason(), "hold_expired" | "hold_released" | "hold_not_found") => {
            Ok(StatusCode::NO_CONTENT)
        }
        Err(EdgeError::Unreachable(why)) => {
            tracing::warn!(%hold, error = %why, "a released box-office hold could not be released at the edge yet");
            Err(ApiError::Unavailable(
                "released here, but the edge could not be told: ask again (the seats come back at the hold's expiry at the latest)".into(),
            ))
        }
        Err(e) => Err(edge_refusal(e)),
    }
}

/// The body of a sale.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SaleRequest {
    /// The box-office hold to sell.
    #[schema(max_length = 64)]
    pub hold: String,
    /// How the buyer paid: `cash`, or `card_present` (the venue's own card terminal).
    pub payment: CounterMethod,
    /// What was charged: the hold's quoted total. A price changed since is refused
    /// (`409 price_changed`) rather than recorded as something else.
    #[schema(minimum = 0)]
    pub total_minor: i64,
    /// The card terminal's receipt number (card payments only), for the day's reconciliation.
    #[serde(default)]
    #[schema(max_length = 64)]
    pub reference: Option<String>,
    /// Where the tickets and the confirmation go; absent for a walk-up buyer who takes them printed.
    #[serde(default)]
    #[schema(format = Email, min_length = 3, max_length = 254)]
    pub email: Option<String>,
    /// A mobile number for the confirmation by text (where the shop sends texts).
    #[serde(default)]
    #[schema(max_length = 32)]
    pub phone: Option<String>,
}

/// A sale: the order (paid), its tickets with their codes, and where to print them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SaleAnswer {
    pub order: OrderView,
    pub tickets: Vec<TicketCode>,
    /// The printable tickets (this API, with the clerk's key).
    pub tickets_pdf: String,
}

/// `POST /api/v1/events/{id}/box-office/sales`: sells the clerk's hold to the person at the
/// counter, who paid cash or by card on the venue's terminal: the order is recorded paid, the
/// hold sold at the edge and the tickets issued before this answers (`201`). One sale per hold:
/// the same request again answers the same order (`200`); another request for a sold hold is
/// `409 hold_sold`; a hold released or ended first `409 hold_released` / `hold_expired` (nothing
/// recorded); a price changed since the quote `409 price_changed`. When the edge cannot be
/// reached the order is recorded and finishes on its own (`202`, the order `confirming`): ask the
/// order's tickets again shortly. Should the hold's seats be lost before the edge sells it, the
/// order is refunded and the answer is `409 hold_lost` naming it: give the money back and record
/// it (`…/orders/{order}/paid-back`).
#[utoipa::path(post, path = "/api/v1/events/{id}/box-office/sales", tag = "box office", security(("api_key" = [])),
    params(("id" = String, Path, description = "the event id")),
    request_body = SaleRequest,
    responses((status = 201, body = SaleAnswer), (status = 200, body = SaleAnswer, description = "the same sale again"),
        (status = 202, body = SaleAnswer, description = "recorded; the tickets follow when the edge answers"), crate::api::Problems))]
async fn box_office_sale(
    State(state): State<AppState>,
    OwnEvent { caller, event, .. }: OwnEvent<need::SellAtVenue>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let co = state.checkout()?;
    let sale: SaleRequest = api::parse_json(&body)?;
    let mut errors = Vec::new();
    let email = sale.email.as_deref().map(str::trim).filter(|e| !e.is_empty());
    if email.is_some_and(|e| !crate::validate::valid_email(e)) {
        errors.push(FieldError::new("email", "must be an e-mail address"));
    }
    let reference = receipt(sale.payment, sale.reference.as_deref()).unwrap_or_else(|e| {
        errors.push(e);
        None
    });
    if sale.total_minor < 0 {
        errors.push(FieldError::new("total_minor", "must be the amount charged, 0 or more"));
    }
    let phone = match sale.phone.as_deref().map(str::trim).filter(|p| !p.is_empty()) {
        None => None,
        Some(raw) => match state.sms.as_ref() {
            None => {
                errors.push(FieldError::new(
                    "phone",
                    "this shop does not send text messages: leave the phone number out",
                ));
                None
            }
            Some(sms) => match sms.reach.phone(raw) {
                Ok(p) => Some(p),
                Err(why) => {
                    errors.push(FieldError::new("phone", why));
                    None
                }
            },
        },
    };
    if sale.hold.len() > 64 {
        errors.push(FieldError::new("hold", "must be a hold id"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let visitor = counter_hold(&state.db, &event, &sale.hold).await?;
    let request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        sale.hold,
        sale.payment.as_str(),
        sale.total_minor,
        reference.unwrap_or(""),
        email.map(str::to_lowercase).unwrap_or_default(),
        phone.as_deref().unwrap_or("")
    );
    let hash = hex::encode(Sha256::digest(request.as_bytes()));
    if let Some(answer) = sold_before(&state, &co, &event, &sale.hold, &hash).await? {
        return Ok(answer);
    }
    // The hold as the edge has it now: a sale of an ended one is refused before any money is
    // recorded (the clerk places a new one).
    let answer =
        co.edge.send(&event.id.to_string(), &InternalRoute::Hold(sale.hold.clone()), Vec::new()).await;
    let hold: HoldAnswer = serde_json::from_value(answer.map_err(edge_refusal)?)
        .map_err(|e| ApiError::Unavailable(format!("the edge's hold is not one: {e}")))?;
    if hold.visitor != visitor {
        return Err(ApiError::NotFound);
    }
    let ended = match hold.state {
        HoldState::Held => None,
        HoldState::Expired => {
            Some(ApiError::conflict("hold_expired", "this hold has ended: place a new one"))
        }
        HoldState::Released => {
            Some(ApiError::conflict("hold_released", "this hold was released: place a new one"))
        }
        _ => Some(ApiError::conflict("hold_sold", "this hold is sold")),
    };
    if let Some(refusal) = ended {
        // No longer the clerk's to count.
        sqlx::query("UPDATE box_office_holds SET ended_at = now() WHERE hold_id = $1 AND ended_at IS NULL")
            .bind(&sale.hold)
            .execute(&state.db)
            .await?;
        return Err(refusal);
    }
    let grant = hold.grant().ok_or(ApiError::NotFound)?;
    let counter = CounterSale {
        event: event.id,
        grant: &grant,
        visitor: &visitor,
        clerk: &caller,
        email,
        phone: phone.as_deref(),
        method: sale.payment,
        reference,
        request_hash: &hash,
        charged_minor: sale.total_minor,
    };
    let id = match co.record_counter_sale(&counter).await? {
        Sold::Recorded(id, claimed) => {
            if let Some(row) = claimed {
                co.drive_claimed(*row).await;
            }
            id
        }
        // A concurrent request with the same hold won.
        Sold::Before => {
            return sold_before(&state, &co, &event, &sale.hold, &hash).await?.ok_or(ApiError::NotFound);
        }
    };
    sale_answer(&state, &co, &event, id, false).await
}

/// The answer to a sale of a hold sold before: the same request's order, or `409 hold_sold`.
async fn sold_before(
    state: &AppState,
    co: &Checkout,
    event: &Event,
    hold: &str,
    hash: &str,
) -> Result<Option<Response>> {
    let before: Option<(Uuid, String)> =
        sqlx::query_as("SELECT id, request_hash FROM orders WHERE hold_id = $1 AND event_id = $2")
            .bind(hold)
            .bind(event.id)
            .fetch_optional(&state.db)
            .await?;
    match before {
        None => Ok(None),
        Some((id, h)) if h == hash => {
            co.drive(id).await;
            Ok(Some(sale_answer(state, co, event, id, true).await?))
        }
        Some(_) => Err(ApiError::conflict("hold_sold", "this hold was sold with other details")),
    }
}

async fn sale_answer(
    state: &AppState,
    co: &Checkout,
    event: &Event,
    id: Uuid,
    replayed: bool,
) -> Result<Response> {
    use crate::checkout::saga::OrderState;
    let order = crate::checkout::view(&state.db, id).await?;
    let status = match (order.head.state, replayed) {
        (OrderState::Paid, false) => StatusCode::CREATED,
        (OrderState::Paid, true) => StatusCode::OK,
        (OrderState::Confirming, _) => StatusCode::ACCEPTED,
        // The seats were lost before the edge sold them, or the order was refunded since.
        _ => {
            let why = match order.head.outcome.as_deref() {
                Some("hold_lost") | None => "its seats were lost before the edge sold them".to_owned(),
                Some(outcome) => format!("it was refunded since ({outcome})"),
            };
            return Err(ApiError::conflict(
                "hold_lost",
                format!(
                    "order {id} is {}: {why}; give the money back and record it (…/orders/{id}/paid-back)",
                    order.head.state.as_str()
                ),
            ));
        }
    };
    let tickets = tickets_of(&state.db, id, None).await?.iter().map(|t| code_of(&co.signer, t)).collect();
    let pdf = format!("/api/v1/events/{}/box-office/orders/{id}/tickets.pdf", event.id);
    Ok((status, Json(SaleAnswer { order, tickets, tickets_pdf: pdf })).into_response())
}

/// The order `{order}` of this event (404 for another event's).
async fn own_order(db: &sqlx::PgPool, event: &Event, order: &str) -> Result<Uuid> {
    let order: Uuid = order.parse().map_err(|_| ApiError::NotFound)?;
    let found: Option<Uuid> = sqlx::query_scalar("SELECT id FROM orders WHERE id = $1 AND event_id = $2")
        .bind(order)
        .bind(event.id)
        .fetch_optional(db)
        .await?;
    found.ok_or(ApiError::NotFound)
}

/// `GET /api/v1/events/{id}/box-office/orders/{order}/tickets`: an order's live tickets held by
/// its buyer, with their codes (to show or print at the counter; find the order by the buyer's
/// address with `GET /api/v1/events/{id}/orders?email=`). Audited: codes admit.
#[utoipa::path(get, path = "/api/v1/events/{id}/box-office/orders/{order}/tickets", tag = "box office", security(("api_key" = [])),
    params(("id" = String, Path, description = "the event id"), ("order" = String, Path, description = "the order id")),
    responses((status = 200, body = Vec<TicketCode>), crate::api::Problems))]
async fn box_office_tickets(
    State(state): State<AppState>,
    OwnEvent { caller, event, .. }: OwnEvent<need::SellAtVenue>,
    Path((_, order)): Path<(String, String)>,
) -> Result<Json<Vec<TicketCode>>> {
    let co = state.checkout()?;
    let order = own_order(&state.db, &event, &order).await?;
    let rows = tickets_of(&state.db, order, None).await?;
    let mut conn = state.db.acquire().await?;
    let details = json!({ "tickets": rows.len() });
    crate::audit::by(
        &mut conn,
        &caller,
        event.organization_id,
        "box_office.tickets",
        format!("order:{order}"),
        details,
    )
    .await?;
    Ok(Json(rows.iter().map(|t| code_of(&co.signer, t)).collect()))
}

/// `GET /api/v1/events/{id}/box-office/orders/{order}/tickets.pdf`: the order's valid tickets its
/// buyer holds, printable: an A4 page each with its QR code. Audited.
#[utoipa::path(get, path = "/api/v1/events/{id}/box-office/orders/{order}/tickets.pdf", tag = "box office", security(("api_key" = [])),
    params(("id" = String, Path, description = "the event id"), ("order" = String, Path, description = "the order id")),
    responses((status = 200, description = "application/pdf: a page a ticket"), crate::api::Problems))]
async fn box_office_print(
    State(state): State<AppState>,
    OwnEvent { caller, event, .. }: OwnEvent<need::SellAtVenue>,
    Path((_, order)): Path<(String, String)>,
) -> Result<Response> {
    let co = state.checkout()?;
    let order = own_order(&state.db, &event, &order).await?;
    let rows: Vec<_> =
        tickets_of(&state.db, order, None).await?.into_iter().filter(|t| t.state == "valid").collect();
    if rows.is_empty() {
        return Err(ApiError::conflict("no_tickets", "this order has no valid tickets to print"));
    }
    let (venue,): (String,) = sqlx::query_as("SELECT name FROM venues WHERE id = $1")
        .bind(event.venue_id)
        .fetch_one(&state.db)
        .await?;
    let tiers: std::collections::HashMap<Uuid, String> =
        sqlx::query_as::<_, (Uuid, String)>("SELECT id, name FROM ticket_tiers WHERE event_id = $1")
            .bind(event.id)
            .fetch_all(&state.db)
            .await?
            .into_iter()
            .collect();
    let d = &event.details;
    let starts =
        crate::models::event::local_time(d.schedule.starts_at, &d.schedule.time_zone, "%a %-d %b %Y, %H:%M");
    let printed: Vec<PrintedTicket> = rows
        .iter()
        .map(|t| PrintedTicket {
            title: d.title.clone(),
            venue: venue.clone(),
            starts: format!("{starts} ({})", d.schedule.time_zone),
            tier: tiers.get(&t.tier_id).cloned().unwrap_or_default(),
            place: t.seat_id.as_ref().map_or("General admission".to_owned(), |s| format!("Seat {s}")),
            order,
            ticket: t.id,
            version: t.version,
            code: code_of(&co.signer, t).code,
        })
        .collect();
    let bytes = pdf::tickets_pdf(&format!("Tickets: {}", d.title), &printed)?;
    let mut conn = state.db.acquire().await?;
    let details = json!({ "tickets": printed.iter().map(|t| json!({ "id": t.ticket, "version": t.version })).collect::<Vec<_>>() });
    crate::audit::by(
        &mut conn,
        &caller,
        event.organization_id,
        "box_office.print",
        format!("order:{order}"),
        details,
    )
    .await?;
    let disposition = format!("inline; filename=\"tickets-{order}.pdf\"");
    Ok((
        [
            (header::CONTENT_TYPE, "application/pdf".to_owned()),
            (header::CACHE_CONTROL, "private, no-store".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        bytes,
    )
        .into_response())
}

/// The body of a re-issue at the counter.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ReissueRequest {
    /// Why (kept in the audit log): `lost`, `stolen`, `damaged`, …
    #[schema(max_length = 200)]
    pub reason: Option<String>,
}

/// `POST /api/v1/events/{id}/box-office/tickets/{ticket}/reissue`: a buyer who lost their ticket
/// (and shows who they are) gets it again: a new version, so the lost code no longer admits
/// (check-in answers `old-version`); print the order's tickets again. Only a valid ticket its
/// order's buyer holds; audited with the reason.
#[utoipa::path(post, path = "/api/v1/events/{id}/box-office/tickets/{ticket}/reissue", tag = "box office", security(("api_key" = [])),
    params(("id" = String, Path, description = "the event id"), ("ticket" = String, Path, description = "the ticket id")),
    request_body(content = Option<ReissueRequest>),
    responses((status = 200, body = TicketCode), crate::api::Problems))]
async fn box_office_reissue(
    State(state): State<AppState>,
    OwnEvent { caller, event, .. }: OwnEvent<need::SellAtVenue>,
    Path((_, ticket)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<TicketCode>> {
    let co = state.checkout()?;
    let ticket: Uuid = ticket.parse().map_err(|_| ApiError::NotFound)?;
    let request: ReissueRequest = if body.trim_ascii().is_empty() || body.trim_ascii() == b"null" {
        ReissueRequest::default()
    } else {
        api::parse_json(&body)?
    };
    let reason = request.reason.as_deref().map(str::trim).unwrap_or("");
    if reason.chars().count() > 200 || reason.chars().any(char::is_control) {
        return Err(ApiError::field("reason", "must be at most 200 characters, on one line"));
    }
    let order: Option<Uuid> =
        sqlx::query_scalar("SELECT order_id FROM tickets WHERE id = $1 AND event_id = $2")
            .bind(ticket)
            .bind(event.id)
            .fetch_optional(&state.db)
            .await?;
    let order = order.ok_or(ApiError::NotFound)?;
    let mut tx = state.db.begin().await?;
    let (version, _) = new_version(&mut tx, ticket, order).await?;
    let details = json!({ "order_id": order, "version": version, "reason": reason, "at": "box_office" });
    crate::audit::by(
        &mut tx,
        &caller,
        event.organization_id,
        "ticket.reissue",
        format!("ticket:{ticket}"),
        details,
    )
    .await?;
    tx.commit().await?;
    let row =
        tickets_of(&state.db, order, Some(ticket)).await?.into_iter().next().ok_or(ApiError::NotFound)?;
    Ok(Json(code_of(&co.signer, &row)))
}

/// The body of a refund given back at the counter.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaidBackRequest {
    /// How it was given back: `cash`, or `card_present` (a refund on the venue's terminal).
    pub method: CounterMethod,
    /// The terminal's refund receipt (card only).
    #[serde(default)]
    #[schema(max_length = 64)]
    pub reference: Option<String>,
}

/// The receipt rules of a counter payment or refund: none for cash; for a card, 1 to 64 printable
/// ASCII characters.
fn receipt(method: CounterMethod, reference: Option<&str>) -> std::result::Result<Option<&str>, FieldError> {
    let reference = reference.map(str::trim).filter(|r| !r.is_empty());
    match (method, reference) {
        (CounterMethod::Cash, Some(_)) => Err(FieldError::new("reference", "cash has no terminal receipt")),
        (_, Some(r)) if r.len() > 64 || !r.bytes().all(|b| b.is_ascii_graphic() || b == b' ') => {
            Err(FieldError::new("reference", "must be 1 to 64 printable ASCII characters"))
        }
        _ => Ok(reference),
    }
}

/// `POST /api/v1/events/{id}/box-office/orders/{order}/paid-back`: the refund of a counter sale
/// (an organizer admin's refund, a lost hold, a cancelled event) was given back at the counter:
/// recorded `succeeded` with the `payment.refunded` event (until then it is `pending`: docs/box-office.md).
/// Again for one recorded: the order as it is; `409 no_refund_due` for an order with no counter
/// refund. Audited.
#[utoipa::path(post, path = "/api/v1/events/{id}/box-office/orders/{order}/paid-back", tag = "box office", security(("api_key" = [])),
    params(("id" = String, Path, description = "the event id"), ("order" = String, Path, description = "the order id")),
    request_body = PaidBackRequest,
    responses((status = 200, body = OrderView), crate::api::Problems))]
async fn box_office_paid_back(
    State(state): State<AppState>,
    OwnEvent { caller, event, .. }: OwnEvent<need::SellAtVenue>,
    Path((_, order)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<OrderView>> {
    let co = state.checkout()?;
    let order = own_order(&state.db, &event, &order).await?;
    let paid: PaidBackRequest = api::parse_json(&body)?;
    let reference =
        receipt(paid.method, paid.reference.as_deref()).map_err(|e| ApiError::Validation(vec![e]))?;
    co.record_counter_payout(order, &caller, paid.method, reference).await?;
    Ok(Json(crate::checkout::view(&state.db, order).await?))
}

/// A counter sale's refund.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct CounterRefund {
    pub id: Uuid,
    pub order_id: Uuid,
    pub amount_minor: i64,
    pub currency: String,
    /// `pending` (to give back at the counter) or `succeeded` (given back).
    pub state: String,
    /// Why: the order's outcome (`organizer_refunded`, `hold_lost`, `event_cancelled`…).
    pub reason: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct RefundFilter {
    /// `pending` (still to give back) or `succeeded`.
    state: Option<RefundState>,
}

#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
enum RefundState {
    Pending,
    Succeeded,
}

/// `GET /api/v1/events/{id}/box-office/refunds[?state=pending]`: the event's counter sales'
/// refunds, oldest first (paged): what is still to give back at the counter.
#[utoipa::path(get, path = "/api/v1/events/{id}/box-office/refunds", tag = "box office", security(("api_key" = [])),
    params(("id" = String, Path, description = "the event id"), crate::api::PageQuery, RefundFilter),
    responses((status = 200, body = crate::api::Listing<CounterRefund>), crate::api::Problems))]
async fn box_office_refunds(
    State(state): State<AppState>,
    OwnEvent { event, .. }: OwnEvent<need::SellAtVenue>,
    crate::api::Query(page): crate::api::Query<crate::api::PageQuery>,
    crate::api::Query(filter): crate::api::Query<RefundFilter>,
) -> Result<Json<crate::api::Listing<CounterRefund>>> {
    let wanted = filter.state.map(|s| match s {
        RefundState::Pending => "pending",
        RefundState::Succeeded => "succeeded",
    });
    let query = sqlx::query_as(
        "SELECT r.id, r.order_id, r.amount_minor, p.currency, r.state, r.reason, r.created_at, r.updated_at
         FROM refunds r JOIN payments p ON p.id = r.payment_id JOIN orders o ON o.id = r.order_id
         WHERE o.event_id = $1 AND ($2::text IS NULL OR r.state = $2) AND p.provider = $3
           AND (r.created_at, r.id) > ($4, $5)
         ORDER BY r.created_at, r.id LIMIT $6",
    )
    .bind(event.id)
    .bind(wanted)
    .bind(crate::checkout::counter::PROVIDER);
    Ok(Json(page.fetch(query, &state.db, |r: &CounterRefund| (r.created_at, r.id)).await?))
}
