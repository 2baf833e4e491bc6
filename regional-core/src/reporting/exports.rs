//! CSV exports of an event (docs/reporting.md lists the columns): orders, tickets, refunds and the
//! settlement. Streamed page by page (keyset pagination, 2,000 rows a query), so that a million
//! rows never sit in memory; times in the organization's time zone (RFC 3339 with its offset);
//! amounts in the currency's major unit; RFC 4180 quoting, and text that a spreadsheet would take
//! for a formula (`=`, `+`, `-`, `@`) prefixed with `'`.

use std::future::Future;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use sqlx::PgPool;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::settlement_of;
use crate::auth::{need, Can};
use crate::checkout::pricing::Totals;
use crate::error::{ApiError, Result};
use crate::models::event::find_event;
use crate::state::AppState;
use shared_types::money::decimal;

/// Rows per query.
pub(crate) const PAGE: i64 = 2000;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(export))
}

/// A text field: quoted when it must be, and never read as a formula by a spreadsheet.
pub fn text(s: &str) -> String {
    let guarded =
        if s.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{s}") } else { s.to_owned() };
    if guarded.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", guarded.replace('"', "\"\""))
    } else {
        guarded
    }
}

/// A time in the organization's zone.
fn local(at: DateTime<Utc>, tz: Tz) -> String {
    at.with_timezone(&tz).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn local_opt(at: Option<DateTime<Utc>>, tz: Tz) -> String {
    at.map(|t| local(t, tz)).unwrap_or_default()
}

/// Where a page ends: the last row's (created_at, id).
type Cursor = Option<(DateTime<Utc>, Uuid)>;

/// Streams `header` then the pages `page` answers, until one comes back short.
fn stream<F, Fut>(header: &'static str, page: F) -> Body
where
    F: Fn(Cursor) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(Vec<String>, Cursor), sqlx::Error>> + Send + 'static,
{
    stream_lines(Some(header), "\r\n", page)
}

/// Streams `header` (when there is one) then the lines of the pages `page` answers, each line
/// ended by `eol`, until a page comes back short ([`PAGE`] rows a page). `page` takes where the last
/// page ended (`None`: the beginning) and answers its lines and where it ended.
pub(crate) fn stream_lines<C, F, Fut>(header: Option<&'static str>, eol: &'static str, page: F) -> Body
where
    C: Send + 'static,
    F: Fn(Option<C>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(Vec<String>, Option<C>), sqlx::Error>> + Send + 'static,
{
    let first = futures_util::stream::iter(
        header.map(|h| Ok::<Bytes, sqlx::Error>(Bytes::from(format!("{h}{eol}")))),
    );
    let rest = futures_util::stream::unfold(Some(None), move |cursor: Option<Option<C>>| {
        let next = cursor.map(&page);
        async move {
            let (lines, last) = match next?.await {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(error = %e, "an export stopped: the database failed");
                    return Some((Err(e), None));
                }
            };
            let done = (lines.len() as i64) < PAGE;
            let mut chunk = String::with_capacity(lines.len() * 160);
            for l in &lines {
                chunk.push_str(l);
                chunk.push_str(eol);
            }
            Some((Ok(Bytes::from(chunk)), (!done).then_some(last)))
        }
    });
    Body::from_stream(futures_util::StreamExt::chain(first, rest))
}

/// A row of an export: where it stands in `(created_at, id)` order, and its CSV line.
trait CsvRow: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin {
    fn cursor(&self) -> (DateTime<Utc>, Uuid);
    fn line(&self, tz: Tz) -> String;
}

/// One page of `select` (which ends `WHERE <its scope> = $1 AND …` with `$2`, `$3` the cursor
/// and `$4` the page size, ordered by `(created_at, id)`): its CSV lines and the last row's cursor.
async fn page<R: CsvRow>(
    db: PgPool,
    select: &'static str,
    event: Uuid,
    tz: Tz,
    after: Cursor,
) -> Result<(Vec<String>, Cursor), sqlx::Error> {
    let rows: Vec<R> = sqlx::query_as(select)
        .bind(event)
        .bind(after.map(|a| a.0))
        .bind(after.map(|a| a.1))
        .bind(PAGE)
        .fetch_all(&db)
        .await?;
    Ok((rows.iter().map(|r| r.line(tz)).collect(), rows.last().map(R::cursor)))
}

const ORDERS_HEADER: &str = "order_id,created_at,state,outcome,email,currency,subtotal,discount,fee,tax,tax_included,total,refunded,promo_code,tickets";

#[derive(sqlx::FromRow)]
struct OrderRow {
    id: Uuid,
    created_at: DateTime<Utc>,
    state: String,
    outcome: Option<String>,
    email: String,
    currency: String,
    #[sqlx(flatten)]
    totals: Totals,
    refund_minor: i64,
    code: Option<String>,
    tickets: i64,
}

const ORDERS_SELECT: &str = "SELECT o.id, o.created_at, o.state, o.outcome, o.email, o.currency, o.subtotal_minor, o.discount_minor, o.fee_minor,
                o.tax_minor, o.tax_included, o.total_minor, o.refund_minor, pc.code,
                (SELECT count(*) FROM order_lines l WHERE l.order_id = o.id) AS tickets
         FROM orders o LEFT JOIN promo_codes pc ON pc.id = o.promo_code_id
         WHERE o.event_id = $1 AND ($2::timestamptz IS NULL OR (o.created_at, o.id) > ($2, $3::uuid))
         ORDER BY o.created_at, o.id LIMIT $4";

impl CsvRow for OrderRow {
    fn cursor(&self) -> (DateTime<Utc>, Uuid) {
        (self.created_at, self.id)
    }

    fn line(&self, tz: Tz) -> String {
        let m = |v: i64| decimal(v, &self.currency);
        format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            self.id,
            local(self.created_at, tz),
            self.state,
            text(self.outcome.as_deref().unwrap_or_default()),
            text(&self.email),
            self.currency,
            m(self.totals.subtotal_minor),
            m(self.totals.discount_minor),
            m(self.totals.fee_minor),
            m(self.totals.tax_minor),
            self.totals.tax_included,
            m(self.totals.total_minor),
            m(self.refund_minor),
            text(self.code.as_deref().unwrap_or_default()),
            self.tickets
        )
    }
}

const TICKETS_HEADER: &str =
    "ticket_id,order_id,created_at,tier,seat,holder_email,state,version,used_at,used_gate";

#[derive(sqlx::FromRow)]
struct TicketRow {
    id: Uuid,
    order_id: Uuid,
    created_at: DateTime<Utc>,
    tier: String,
    seat_id: Option<String>,
    holder_email: String,
    state: String,
    version: i32,
    used_at: Option<DateTime<Utc>>,
    used_gate: Option<String>,
}

const TICKETS_SELECT: &str = "SELECT t.id, t.order_id, t.created_at, tt.name AS tier, t.seat_id, t.holder_email, t.state, t.version, t.used_at, t.used_gate
         FROM tickets t JOIN ticket_tiers tt ON tt.id = t.tier_id
         WHERE t.event_id = $1 AND ($2::timestamptz IS NULL OR (t.created_at, t.id) > ($2, $3::uuid))
         ORDER BY t.created_at, t.id LIMIT $4";

impl CsvRow for TicketRow {
    fn cursor(&self) -> (DateTime<Utc>, Uuid) {
        (self.created_at, self.id)
    }

    fn line(&self, tz: Tz) -> String {
        format!(
            "{},{},{},{},{},{},{},{},{},{}",
            self.id,
            self.order_id,
            local(self.created_at, tz),
            text(&self.tier),
            text(self.seat_id.as_deref().unwrap_or_default()),
            text(&self.holder_email),
            self.state,
            self.version,
            local_opt(self.used_at, tz),
            text(self.used_gate.as_deref().unwrap_or_default())
        )
    }
}

const REFUNDS_HEADER: &str =
    "refund_id,order_id,created_at,updated_at,state,amount,currency,reason,provider_ref";

#[derive(sqlx::FromRow)]
struct RefundRow {
    id: Uuid,
    order_id: Uuid,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    state: String,
    amount_minor: i64,
    currency: String,
    reason: String,
    provider_ref: Option<String>,
}

const REFUNDS_SELECT: &str = "SELECT r.id, r.order_id, r.created_at, r.updated_at, r.state, r.amount_minor, o.currency, r.reason, r.provider_ref
         FROM refunds r JOIN orders o ON o.id = r.order_id
         WHERE o.event_id = $1 AND ($2::timestamptz IS NULL OR (r.created_at, r.id) > ($2, $3::uuid))
         ORDER BY r.created_at, r.id LIMIT $4";

impl CsvRow for RefundRow {
    fn cursor(&self) -> (DateTime<Utc>, Uuid) {
        (self.created_at, self.id)
    }

    fn line(&self, tz: Tz) -> String {
        format!(
            "{},{},{},{},{},{},{},{},{}",
            self.id,
            self.order_id,
            local(self.created_at, tz),
            local(self.updated_at, tz),
            self.state,
            decimal(self.amount_minor, &self.currency),
            self.currency,
            text(&self.reason),
            text(self.provider_ref.as_deref().unwrap_or_default())
        )
    }
}

const SETTLEMENT_HEADER: &str = "event_id,currency,tickets_sold,tickets_refunded,gross,refunded,platform_fees,tax,ticket_revenue,commission_bps,commission,payout_due,generated_at";

/// `GET /api/v1/events/{id}/exports/{file}`: `orders.csv`, `tickets.csv`, `refunds.csv` or
/// `settlement.csv`, streamed.
#[utoipa::path(get, path = "/api/v1/events/{id}/exports/{file}", tag = "reporting", security(("api_key" = [])),
    params(("id" = String, Path, description = "the event id"), ("file" = String, Path, description = "orders.csv, tickets.csv, refunds.csv or settlement.csv")),
    responses((status = 200, description = "text/csv, streamed"), crate::api::Problems))]
async fn export(
    State(state): State<AppState>,
    Can(caller, _): Can<need::Read>,
    Path((id, file)): Path<(String, String)>,
) -> Result<Response> {
    let event = find_event(&state.read_db, &caller, &id).await?;
    let zone: String = sqlx::query_scalar("SELECT time_zone FROM organizations WHERE id = $1")
        .bind(event.organization_id)
        .fetch_one(&state.read_db)
        .await?;
    let tz: Tz = zone.parse().unwrap_or(Tz::UTC);
    let (db, ev) = (state.read_db.clone(), event.id);
    let body = match file.as_str() {
        "orders.csv" => {
            stream(ORDERS_HEADER, move |after| page::<OrderRow>(db.clone(), ORDERS_SELECT, ev, tz, after))
        }
        "tickets.csv" => {
            stream(TICKETS_HEADER, move |after| page::<TicketRow>(db.clone(), TICKETS_SELECT, ev, tz, after))
        }
        "refunds.csv" => {
            stream(REFUNDS_HEADER, move |after| page::<RefundRow>(db.clone(), REFUNDS_SELECT, ev, tz, after))
        }
        "settlement.csv" => {
            let s = settlement_of(&state.read_db, ev, state.commission_bps).await?;
            let mut out = format!("{SETTLEMENT_HEADER}\r\n");
            for l in &s.lines {
                let m = |v: i64| decimal(v, &l.currency);
                out.push_str(&format!(
                    "{},{},{},{},{},{},{},{},{},{},{},{},{}\r\n",
                    ev,
                    l.currency,
                    l.tickets_sold,
                    l.tickets_refunded,
                    m(l.gross_minor),
                    m(l.refunded_minor),
                    m(l.platform_fees_minor),
                    m(l.tax_minor),
                    m(l.ticket_revenue_minor),
                    s.commission_bps,
                    m(l.commission_minor),
                    m(l.payout_minor),
                    local(s.generated_at, tz)
                ));
            }
            Body::from(out)
        }
        _ => return Err(ApiError::NotFound),
    };
    let name = format!("attachment; filename=\"{}-{}\"", event.id, file);
    Ok((
        [(header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()), (header::CONTENT_DISPOSITION, name)],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::text;

    #[test]
    fn text_is_quoted_and_never_a_formula() {
        assert_eq!(text("plain"), "plain");
        assert_eq!(text("a,b"), "\"a,b\"");
        assert_eq!(text("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(text("two\nlines"), "\"two\nlines\"");
        assert_eq!(text("=SUM(A1)"), "'=SUM(A1)");
        assert_eq!(text("+1,2"), "\"'+1,2\"");
    }
}
