//! Organizer reports (docs/reporting.md), read from the projections that [`projector::Projector`]
//! keeps (one row per event, tier and minute with sales), so that a report costs the same at a
//! thousand orders as at a million.
//!
//! - `GET /api/v1/events/{id}/report`        per tier and in total: tickets sold and refunded,
//!   money (gross, discounts, fees, tax, refunds, net), orders (created, paid, cancelled, abandoned,
//!   refunded) with the conversion and abandonment, promo codes
//! - `GET /api/v1/events/{id}/report/sales`  the same figures over time, per minute, hour or day in
//!   the event's time zone

pub mod dashboard;
pub mod edge;
pub mod exports;
pub mod projector;

use std::collections::BTreeMap;

use crate::api::Query;
use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use uuid::Uuid;

use crate::api::resource_routes;
use crate::auth::need;
use crate::error::{ApiError, Result};
use crate::extract::{OwnEvent, Replica};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    let reports = resource_routes! { [event_report], [sales], [settlement] };
    reports.merge(exports::routes())
}

/// Tickets and money, of one tier or in total. `net_minor` = gross − fees − refunds + the fees
/// given back by refunds: the organizer's ticket money after refunds, before commission.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Figures {
    pub tickets_sold: i64,
    pub tickets_refunded: i64,
    pub gross_minor: i64,
    pub discount_minor: i64,
    pub fee_minor: i64,
    pub tax_minor: i64,
    pub refunded_minor: i64,
    pub fee_refunded_minor: i64,
    pub net_minor: i64,
}

impl Figures {
    fn add(&mut self, o: &Figures) {
        self.tickets_sold += o.tickets_sold;
        self.tickets_refunded += o.tickets_refunded;
        self.gross_minor += o.gross_minor;
        self.discount_minor += o.discount_minor;
        self.fee_minor += o.fee_minor;
        self.tax_minor += o.tax_minor;
        self.refunded_minor += o.refunded_minor;
        self.fee_refunded_minor += o.fee_refunded_minor;
        self.net_minor += o.net_minor;
    }
}

pub(crate) const FIGURES: &str = "COALESCE(sum(tickets_sold), 0)::int8 AS tickets_sold,
    COALESCE(sum(tickets_refunded), 0)::int8 AS tickets_refunded,
    COALESCE(sum(gross_minor), 0)::int8 AS gross_minor, COALESCE(sum(discount_minor), 0)::int8 AS discount_minor,
    COALESCE(sum(fee_minor), 0)::int8 AS fee_minor, COALESCE(sum(tax_minor), 0)::int8 AS tax_minor,
    COALESCE(sum(refunded_minor), 0)::int8 AS refunded_minor,
    COALESCE(sum(fee_refunded_minor), 0)::int8 AS fee_refunded_minor,
    COALESCE(sum(gross_minor - fee_minor - refunded_minor + fee_refunded_minor), 0)::int8 AS net_minor";

#[derive(Debug, Serialize, utoipa::ToSchema)]
// Its own name in the OpenAPI document: the health report's `TierReport` is another schema.
#[schema(as = TierSales)]
pub struct TierReport {
    pub tier_id: Uuid,
    pub name: String,
    pub kind: String,
    pub currency: String,
    /// Places on sale in the tier.
    pub capacity: i64,
    /// Tickets sold and not refunded.
    pub live_tickets: i64,
    /// Places held at the edge now (absent when the edge cannot be reached).
    pub held: Option<u64>,
    /// Places on sale and neither held nor sold, at the edge now.
    pub available: Option<u64>,
    #[serde(flatten)]
    pub figures: Figures,
}

/// Orders: how holds became orders and orders became sales.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct OrderFigures {
    pub created: i64,
    pub paid: i64,
    pub cancelled: i64,
    /// Cancelled because nobody paid in time (of `cancelled`).
    pub abandoned: i64,
    pub refunded: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PromoReport {
    pub code: String,
    pub orders: i64,
    pub discount_minor: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventReport {
    pub event_id: Uuid,
    pub tiers: Vec<TierReport>,
    pub totals: Figures,
    pub orders: OrderFigures,
    /// Paid orders per order created (0 to 1).
    pub conversion: f64,
    /// Abandoned orders per order created (0 to 1).
    pub abandonment: f64,
    pub promo_codes: Vec<PromoReport>,
    /// Orders created per hold placed at the edge (0 to 1; absent without the edge's figures).
    pub hold_to_order: Option<f64>,
    /// Whether the edge's figures (held, available, holds, waiting room) could be read.
    pub edge: EdgeStatus,
    pub holds: Option<edge::HoldCounters>,
    pub waiting_room: Option<edge::QueueFigures>,
    /// The waiting list (docs/waiting-list.md), when the event keeps one.
    pub waitlist: Option<edge::WaitlistFigures>,
    pub generated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EdgeStatus {
    pub available: bool,
    /// When the edge's figures were read.
    pub fetched_at: Option<DateTime<Utc>>,
    /// Why they are missing.
    pub error: Option<String>,
}

pub(crate) const ORDERS: &str = "COALESCE(sum(orders_created), 0)::int8 AS created, COALESCE(sum(orders_paid), 0)::int8 AS paid,
    COALESCE(sum(orders_cancelled), 0)::int8 AS cancelled, COALESCE(sum(orders_abandoned), 0)::int8 AS abandoned,
    COALESCE(sum(orders_refunded), 0)::int8 AS refunded";

/// `GET /api/v1/events/{id}/report`: the event's sale so far.
#[utoipa::path(get, path = "/api/v1/events/{id}/report", tag = "reporting", security(("api_key" = [])),
    params(("id" = String, Path, description = "the event id")),
    responses((status = 200, body = EventReport), crate::api::Problems))]
async fn event_report(
    State(state): State<AppState>,
    OwnEvent { event, .. }: OwnEvent<need::Read, Replica>,
) -> Result<Json<EventReport>> {
    Ok(Json(report_of(&state, event.id).await?))
}

/// The report of an event the caller may see.
pub async fn report_of(state: &AppState, event: Uuid) -> Result<EventReport> {
    let (tiers, picture) = tokio::join!(tier_reports(&state.read_db, event), state.edge.picture(event));
    let mut tiers = tiers?;
    if let Ok(p) = &picture {
        for t in &mut tiers {
            if let Some(c) = p.tier(t.tier_id, &t.kind) {
                t.held = Some(c.held);
                t.available = Some(c.available);
            }
        }
    }
    let mut totals = Figures::default();
    tiers.iter().for_each(|t| totals.add(&t.figures));
    let orders: OrderFigures =
        sqlx::query_as(&format!("SELECT {ORDERS} FROM report_event_minute WHERE event_id = $1"))
            .bind(event)
            .fetch_one(&state.read_db)
            .await?;
    let promo_codes: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT c.code, r.orders::int8, r.discount_minor FROM report_promo r JOIN promo_codes c ON c.id = r.promo_code_id
         WHERE r.event_id = $1 ORDER BY c.code",
    )
    .bind(event)
    .fetch_all(&state.read_db)
    .await?;
    let ratio = |n: i64| if orders.created > 0 { n as f64 / orders.created as f64 } else { 0.0 };
    let edge = EdgeStatus {
        available: picture.is_ok(),
        fetched_at: picture.as_ref().ok().map(|p| p.fetched_at),
        error: picture.as_ref().err().cloned(),
    };
    let picture = picture.ok();
    Ok(EventReport {
        event_id: event,
        hold_to_order: picture
            .as_ref()
            .filter(|p| p.holds.placed > 0)
            .map(|p| orders.created as f64 / p.holds.placed as f64),
        edge,
        holds: picture.as_ref().map(|p| p.holds.clone()),
        waitlist: picture.as_ref().and_then(|p| p.waitlist.clone()),
        waiting_room: picture.map(|p| p.queue),
        tiers,
        totals,
        conversion: ratio(orders.paid),
        abandonment: ratio(orders.abandoned),
        orders,
        promo_codes: promo_codes
            .into_iter()
            .map(|(code, orders, discount_minor)| PromoReport { code, orders, discount_minor })
            .collect(),
        generated_at: Utc::now(),
    })
}

/// Every tier of the event with its figures.
async fn tier_reports(db: &sqlx::PgPool, event: Uuid) -> Result<Vec<TierReport>> {
    let rows: Vec<(Uuid, String, String, String, i64, sqlx::types::Json<Figures>)> =
        sqlx::query_as(&format!(
            "SELECT t.id, t.name, t.kind, t.currency, t.quantity::int8,
                (SELECT to_jsonb(f) FROM (SELECT {FIGURES} FROM report_tier_minute r
                                          WHERE r.event_id = t.event_id AND r.tier_id = t.id) f)
         FROM ticket_tiers t WHERE t.event_id = $1 ORDER BY t.created_at, t.id"
        ))
        .bind(event)
        .fetch_all(db)
        .await?;
    let tiers: Vec<TierReport> = rows
        .into_iter()
        .map(|(tier_id, name, kind, currency, capacity, f)| TierReport {
            tier_id,
            name,
            kind,
            currency,
            capacity,
            live_tickets: f.0.tickets_sold - f.0.tickets_refunded,
            held: None,
            available: None,
            figures: f.0,
        })
        .collect();
    Ok(tiers)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SalesQuery {
    /// `minute`, `hour` (default) or `day`, in the event's time zone.
    #[param(pattern = "^(minute|hour|day)$")]
    pub bucket: Option<String>,
    /// From this time (RFC 3339), inclusive.
    pub from: Option<DateTime<Utc>>,
    /// Until this time (RFC 3339), exclusive.
    pub to: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SalesBucket {
    /// The bucket's start.
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub figures: Figures,
    pub orders: OrderFigures,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SalesReport {
    pub event_id: Uuid,
    pub bucket: String,
    pub time_zone: String,
    pub buckets: Vec<SalesBucket>,
}

/// The sums `columns` of a projection `table` per bucket, buckets starting at the event's local
/// boundaries (a day is the organizer's day, not UTC's).
async fn bucketed<T: serde::de::DeserializeOwned + Send + Unpin + 'static>(
    db: &sqlx::PgPool,
    table: &str,
    columns: &str,
    event: Uuid,
    bucket: &str,
    q: &SalesQuery,
    time_zone: &str,
) -> Result<Vec<(DateTime<Utc>, sqlx::types::Json<T>)>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT b, to_jsonb(f) FROM (
             SELECT date_trunc($2, minute, $5) AS b, {columns} FROM {table}
             WHERE event_id = $1 AND ($3::timestamptz IS NULL OR minute >= $3) AND ($4::timestamptz IS NULL OR minute < $4)
             GROUP BY 1) f ORDER BY 1"
    ))
    .bind(event)
    .bind(bucket)
    .bind(q.from)
    .bind(q.to)
    .bind(time_zone)
    .fetch_all(db)
    .await
}

/// `GET /api/v1/events/{id}/report/sales`: sales over time (only buckets with activity).
#[utoipa::path(get, path = "/api/v1/events/{id}/report/sales", tag = "reporting", security(("api_key" = [])),
    params(("id" = String, Path, description = "the event id"), SalesQuery),
    responses((status = 200, body = SalesReport), crate::api::Problems))]
async fn sales(
    State(state): State<AppState>,
    OwnEvent { event, .. }: OwnEvent<need::Read, Replica>,
    Query(q): Query<SalesQuery>,
) -> Result<Json<SalesReport>> {
    let bucket = q.bucket.clone().unwrap_or_else(|| "hour".into());
    if !["minute", "hour", "day"].contains(&bucket.as_str()) {
        return Err(ApiError::field("bucket", "must be minute, hour or day"));
    }
    let (db, zone) = (&state.read_db, &event.details.schedule.time_zone);
    let money: Vec<(DateTime<Utc>, sqlx::types::Json<Figures>)> =
        bucketed(db, "report_tier_minute", FIGURES, event.id, &bucket, &q, zone).await?;
    let orders: Vec<(DateTime<Utc>, sqlx::types::Json<OrderFigures>)> =
        bucketed(db, "report_event_minute", ORDERS, event.id, &bucket, &q, zone).await?;
    let mut buckets: BTreeMap<DateTime<Utc>, SalesBucket> = BTreeMap::new();
    let empty = |at| SalesBucket { at, figures: Figures::default(), orders: OrderFigures::default() };
    for (at, f) in money {
        buckets.entry(at).or_insert_with(|| empty(at)).figures = f.0;
    }
    for (at, o) in orders {
        buckets.entry(at).or_insert_with(|| empty(at)).orders = o.0;
    }
    Ok(Json(SalesReport {
        event_id: event.id,
        bucket,
        time_zone: event.details.schedule.time_zone.clone(),
        buckets: buckets.into_values().collect(),
    }))
}

/// What the organizer is owed for one currency of an event.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SettlementLine {
    pub currency: String,
    pub tickets_sold: i64,
    pub tickets_refunded: i64,
    /// What buyers paid.
    pub gross_minor: i64,
    pub refunded_minor: i64,
    /// Service fees the platform keeps (fees minus those refunded).
    pub platform_fees_minor: i64,
    /// Tax within the ticket money (the organizer remits it).
    pub tax_minor: i64,
    /// gross − refunds − platform fees: the organizer's ticket money.
    pub ticket_revenue_minor: i64,
    /// The platform's commission on the ticket money (rounded half up).
    pub commission_minor: i64,
    /// ticket revenue − commission.
    pub payout_minor: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Settlement {
    pub event_id: Uuid,
    pub commission_bps: i64,
    pub lines: Vec<SettlementLine>,
    pub generated_at: DateTime<Utc>,
}

/// The settlement of `event` with the platform's commission `bps`.
pub async fn settlement_of(db: &sqlx::PgPool, event: Uuid, bps: i64) -> Result<Settlement> {
    let mut by_currency: BTreeMap<String, Figures> = BTreeMap::new();
    for t in tier_reports(db, event).await? {
        by_currency.entry(t.currency).or_default().add(&t.figures);
    }
    let lines = by_currency
        .into_iter()
        .map(|(currency, f)| {
            let revenue = f.net_minor;
            let commission = (i128::from(revenue) * i128::from(bps) + 5_000).div_euclid(10_000) as i64;
            SettlementLine {
                currency,
                tickets_sold: f.tickets_sold,
                tickets_refunded: f.tickets_refunded,
                gross_minor: f.gross_minor,
                refunded_minor: f.refunded_minor,
                platform_fees_minor: f.fee_minor - f.fee_refunded_minor,
                tax_minor: f.tax_minor,
                ticket_revenue_minor: revenue,
                commission_minor: commission,
                payout_minor: revenue - commission,
            }
        })
        .collect();
    Ok(Settlement { event_id: event, commission_bps: bps, lines, generated_at: Utc::now() })
}

/// `GET /api/v1/events/{id}/settlement`: what the organizer is owed (per currency), after refunds,
/// the platform's fees and its commission (`PLATFORM_COMMISSION_BPS`).
#[utoipa::path(get, path = "/api/v1/events/{id}/settlement", tag = "reporting", security(("api_key" = [])),
    params(("id" = String, Path, description = "the event id")),
    responses((status = 200, body = Settlement), crate::api::Problems))]
async fn settlement(
    State(state): State<AppState>,
    OwnEvent { event, .. }: OwnEvent<need::Read, Replica>,
) -> Result<Json<Settlement>> {
    Ok(Json(settlement_of(&state.read_db, event.id, state.commission_bps).await?))
}
