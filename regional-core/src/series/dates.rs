//! Adding dates to a series: `POST /api/v1/series/{id}/dates`, from a list of starts or from an
//! RFC 5545 recurrence rule (the `rrule` crate expands it, in the series' time zone: a daily 10:00
//! slot stays at 10:00 across a change of daylight-saving time).
//!
//! Each new date is a draft event copied from the series' template: its venue, title, description,
//! genre, time zone, images, colour, tiers (names, kinds, prices per zone, quantities, per-order
//! limits), the line's settings (not a pause), the holds' settings, fees, seats off sale and refund
//! policy. Sale windows move with the date or stay (the series' `sale_windows`). Promo codes are
//! not copied: a code's uses are counted per event. Each date then lives on its own: changing one
//! changes no other.
//!
//! Bounds: at most [`MAX_A_CALL`] dates a call and [`super::MAX_DATES`] a series; every date in
//! the future. Idempotent: a series has one date at each start (a unique index), so a start that
//! has its date already is answered under `existing`, never made twice; with an
//! `Idempotency-Key`, a replay gets the first answer.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use shared_types::inventory::FieldError;
use uuid::Uuid;

use super::model::{find_series, SaleWindows, MAX_DATES};
use crate::api::Creating;
use crate::auth::{need, Can};
use crate::error::{ApiError, Result};
use crate::models::event::{Event, EventState};
use crate::state::AppState;

/// The most dates one call adds (a year of daily dates).
pub const MAX_A_CALL: usize = 366;
/// The longest recurrence rule taken.
const MAX_RULE: usize = 500;
/// The longest a date lasts when the call says (`minutes`, or a listed date's end): thirty days.
const MAX_MINUTES: u32 = 43_200;
/// How far ahead a date may start: five years.
const HORIZON_DAYS: i64 = 5 * 366;
/// The CPU time a rule's expansion may take: a rule whose dates are rare among the times it
/// steps through (`FREQ=HOURLY;BYMONTH=2;BYMONTHDAY=29`) costs the crate up to 100,000 steps
/// a date; past this budget the rule is refused rather than left to run.
const EXPANSION_BUDGET: std::time::Duration = std::time::Duration::from_millis(250);

/// A date's start and end.
pub type Span = (DateTime<Utc>, DateTime<Utc>);

/// Rule expansions running at once in this core (each on a blocking thread).
static EXPANSIONS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// One date given by its start (and end).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDate {
    pub starts_at: DateTime<Utc>,
    /// Default: `starts_at` and `minutes`, or as long as the template.
    #[serde(default)]
    pub ends_at: Option<DateTime<Utc>>,
}

/// Dates to add: either `dates`, or `rule` with `first`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDates {
    /// Dates one by one (at most 366).
    #[serde(default)]
    pub dates: Vec<NewDate>,
    /// An RFC 5545 `RRULE` value: `FREQ=WEEKLY;BYDAY=FR,SA;COUNT=20`, or
    /// `FREQ=DAILY;BYHOUR=10,12,14;UNTIL=20270630T220000Z`. It must end (`COUNT` or `UNTIL`) within
    /// 366 dates.
    #[serde(default)]
    #[schema(max_length = 500)]
    pub rule: Option<String>,
    /// The rule's first date, in the series' time zone, without an offset: `2027-03-05T20:00:00`
    /// (or `2027-03-05T20:00`).
    #[serde(default)]
    #[schema(example = "2027-03-05T20:00:00", max_length = 19)]
    pub first: Option<String>,
    /// Days (`2027-12-25`, in the series' time zone) the rule skips: holidays, closures (at most 366).
    #[serde(default)]
    #[schema(example = json!(["2027-12-25"]))]
    pub skip_days: Vec<String>,
    /// How long each date lasts, in minutes (at most 43200); default: as long as the template.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 43200)]
    pub minutes: Option<u32>,
}

/// The starts and ends of the dates `req` asks for, by start (one per start), in the time zone
/// `zone`, each lasting `length` unless it says; or what is wrong with it.
pub fn plan(
    req: &NewDates,
    zone: &str,
    length: Duration,
    now: DateTime<Utc>,
) -> std::result::Result<Vec<Span>, Vec<FieldError>> {
    let mut errors = Vec::new();
    if req.minutes.is_some_and(|m| m == 0 || m > MAX_MINUTES) {
        errors.push(FieldError::new("minutes", "must be 1 to 43200"));
    }
    let length = req.minutes.map_or(length, |m| Duration::minutes(m.into()));
    if req.skip_days.len() > MAX_A_CALL {
        errors.push(FieldError::new("skip_days", "at most 366 days"));
    }
    let mut skip_days = Vec::new();
    for (i, day) in req.skip_days.iter().enumerate().take(MAX_A_CALL) {
        match NaiveDate::parse_from_str(day, "%Y-%m-%d") {
            Ok(d) if day.len() == 10 => skip_days.push(d),
            _ => errors.push(FieldError::new(format!("skip_days[{i}]"), "must be a day as 2027-12-25")),
        }
    }
    let first = match req.first.as_deref().map(local_time) {
        Some(None) => {
            errors.push(FieldError::new("first", "must be a local time as 2027-03-05T20:00:00"));
            return Err(errors);
        }
        Some(Some(first)) => Some(first),
        None => None,
    };
    let mut wanted: BTreeMap<DateTime<Utc>, DateTime<Utc>> = BTreeMap::new();
    match (&req.rule, first, req.dates.is_empty()) {
        (None, None, false) => {
            if req.dates.len() > MAX_A_CALL {
                errors.push(FieldError::new("dates", "at most 366 dates a call"));
            }
            if !req.skip_days.is_empty() {
                errors.push(FieldError::new("skip_days", "goes with a rule"));
            }
            for (i, d) in req.dates.iter().enumerate().take(MAX_A_CALL) {
                let ends_at = d.ends_at.unwrap_or(d.starts_at + length);
                if ends_at <= d.starts_at || ends_at - d.starts_at > Duration::minutes(MAX_MINUTES.into()) {
                    errors.push(FieldError::new(
                        format!("dates[{i}].ends_at"),
                        "must be after starts_at, by at most 30 days",
                    ));
                }
                if d.starts_at <= now || d.starts_at > now + Duration::days(HORIZON_DAYS) {
                    errors.push(FieldError::new(
                        format!("dates[{i}].starts_at"),
                        "must be in the future, within five years",
                    ));
                }
                wanted.insert(d.starts_at, ends_at);
            }
        }
        (Some(rule), Some(first), true) => {
            match expand(rule, first, zone, now + Duration::days(HORIZON_DAYS)) {
                Ok(starts) => {
                    let tz: Option<chrono_tz::Tz> = zone.parse().ok();
                    let skipped = |at: &DateTime<Utc>| {
                        let day = tz.map_or(at.date_naive(), |tz| at.with_timezone(&tz).date_naive());
                        skip_days.contains(&day)
                    };
                    for at in starts.into_iter().filter(|at| !skipped(at)) {
                        wanted.insert(at, at + length);
                    }
                    if wanted.keys().next().is_some_and(|first| *first <= now) {
                        errors.push(FieldError::new("first", "the rule's dates must all be in the future"));
                    }
                    if wanted.is_empty() {
                        errors.push(FieldError::new("rule", "makes no date"));
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        _ => errors.push(FieldError::new(
            "dates",
            "give either dates, or a rule with its first date (rule and first), not both",
        )),
    }
    if errors.is_empty() {
        Ok(wanted.into_iter().collect())
    } else {
        Err(errors)
    }
}

/// A time without offset, `2027-03-05T20:00:00` or `2027-03-05T20:00`.
fn local_time(text: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M"))
        .ok()
}

/// The starts `rule` makes from `first` (local to `zone`), in UTC, up to `horizon`; at most
/// [`MAX_A_CALL`], within [`EXPANSION_BUDGET`].
fn expand(
    rule: &str,
    first: NaiveDateTime,
    zone: &str,
    horizon: DateTime<Utc>,
) -> std::result::Result<Vec<DateTime<Utc>>, FieldError> {
    let rule = rule.trim();
    let rule = rule.strip_prefix("RRULE:").unwrap_or(rule);
    // One rule's value: no other content line (DTSTART, RDATE, EXDATE…) smuggled in.
    if rule.is_empty() || rule.len() > MAX_RULE || !rule.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(FieldError::new("rule", "must be one RRULE value (FREQ=…), at most 500 characters"));
    }
    // Dates a second apart are nobody's series, and the costliest rules to step through; so are
    // the n-th of a set of minutes or hours (BYSETPOS steps through every candidate of a period).
    let upper = rule.to_ascii_uppercase();
    if upper.contains("FREQ=SECONDLY")
        || (upper.contains("BYSETPOS") && (upper.contains("FREQ=MINUTELY") || upper.contains("FREQ=HOURLY")))
    {
        return Err(FieldError::new(
            "rule",
            "FREQ=SECONDLY, and BYSETPOS with MINUTELY or HOURLY, are not taken: use DAILY with BYHOUR and BYMINUTE",
        ));
    }
    let tz: chrono_tz::Tz =
        zone.parse().map_err(|_| FieldError::new("first", "the series' time zone is not known"))?;
    if tz.from_local_datetime(&first).single().is_none() {
        return Err(FieldError::new(
            "first",
            "does not exist, or exists twice, in the series' time zone (a change of daylight-saving time)",
        ));
    }
    let text = format!("DTSTART;TZID={zone}:{}\nRRULE:{rule}", first.format("%Y%m%dT%H%M%S"));
    // `limit`: the crate gives up on a date after 100,000 steps (else a rule that never makes one
    // would step on to the year 9999).
    let set: rrule::RRuleSet = text
        .parse()
        .map_err(|e: rrule::RRuleError| FieldError::new("rule", format!("is not a valid rule: {e}")))?;
    let set = set.limit();
    let too_slow =
        || FieldError::new("rule", "takes too long to work out: make it simpler (fewer BY… parts)");
    let started = std::time::Instant::now();
    let mut starts = Vec::new();
    let mut past_horizon = false;
    for at in &set {
        let at = at.with_timezone(&Utc);
        if at > horizon {
            past_horizon = true;
            break;
        }
        starts.push(at);
        if starts.len() > MAX_A_CALL {
            return Err(FieldError::new(
                "rule",
                "makes more than 366 dates: end it sooner (COUNT or UNTIL), or add them in several calls",
            ));
        }
        if started.elapsed() > EXPANSION_BUDGET {
            return Err(too_slow());
        }
    }
    // The iterator also stops where the crate gave up; only `all` tells the two apart (asked for
    // one date more than found, it says `limited` only when it gave up).
    if !past_horizon && set.all(starts.len() as u16 + 1).limited {
        return Err(too_slow());
    }
    Ok(starts)
}

/// `at` moved by `shift` on the clocks of `tz` (not in elapsed time): a sale that opens at 10:00
/// seven days before a date opens at 10:00 seven days before every date, across a change of
/// daylight-saving time. A local time the clocks skip is taken an hour later, as the rule's are.
pub(crate) fn shift_local(at: DateTime<Utc>, shift: Duration, tz: chrono_tz::Tz) -> DateTime<Utc> {
    let local = at.with_timezone(&tz).naive_local() + shift;
    match tz.from_local_datetime(&local) {
        chrono::LocalResult::Single(t) => t.with_timezone(&Utc),
        chrono::LocalResult::Ambiguous(t, _) => t.with_timezone(&Utc),
        chrono::LocalResult::None => tz
            .from_local_datetime(&(local + Duration::hours(1)))
            .earliest()
            .map_or(at + shift, |t| t.with_timezone(&Utc)),
    }
}

/// A date as a bulk answer names it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct DateRef {
    pub id: Uuid,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub state: EventState,
}

impl DateRef {
    pub fn of(e: &Event) -> Self {
        Self {
            id: e.id,
            starts_at: e.details.schedule.starts_at,
            ends_at: e.details.schedule.ends_at,
            state: e.state,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DatesAdded {
    /// The dates made (drafts), by start.
    pub created: Vec<DateRef>,
    /// The starts that had their date already, by start.
    pub existing: Vec<DateRef>,
}

/// The template's line settings for a date that starts `shift` (on the clocks of `tz`) after the
/// template: on-sale times moved when the series says so, never paused.
fn line_settings(template: &Value, shift: Option<Duration>, tz: chrono_tz::Tz) -> Value {
    let mut room = template.clone();
    if let Some(fields) = room.as_object_mut() {
        if let Some(shift) = shift {
            for name in ["pre_queue_opens_at_ms", "on_sale_at_ms"] {
                let at =
                    fields.get(name).and_then(Value::as_i64).and_then(DateTime::<Utc>::from_timestamp_millis);
                if let Some(at) = at {
                    fields.insert(name.into(), json!(shift_local(at, shift, tz).timestamp_millis()));
                }
            }
        }
        if fields.contains_key("paused") {
            fields.insert("paused".into(), json!(false));
        }
    }
    room
}

/// `POST /api/v1/series/{id}/dates`: draft dates copied from the template (201 when one was made,
/// 200 when every start had its date).
#[utoipa::path(post, path = "/api/v1/series/{id}/dates", tag = "catalog", security(("api_key" = [])), params(("id" = String, Path, description = "the resource id")), request_body = NewDates, responses((status = 201, body = DatesAdded), (status = 200, body = DatesAdded, description = "every start had its date already"), crate::api::Problems))]
pub(super) async fn add_dates(
    State(state): State<AppState>,
    Can(caller, _): Can<need::ManageCatalog>,
    Path(id): Path<String>,
    creating: Creating,
) -> Result<axum::response::Response> {
    let req: NewDates = creating.json()?;
    let series = find_series(&mut *state.db.acquire().await?, &caller, &id, false).await?;
    let (zone, starts, ends, room): (String, DateTime<Utc>, DateTime<Utc>, Value) =
        sqlx::query_as("SELECT time_zone, starts_at, ends_at, waiting_room FROM events WHERE id = $1")
            .bind(series.template_event_id)
            .fetch_one(&state.db)
            .await?;
    // Worked out before any transaction, off the async workers, one at a time per core (a rule
    // may take a moment: `EXPANSION_BUDGET`).
    let planning = (zone.clone(), ends - starts);
    let permit = EXPANSIONS.acquire().await.map_err(|_| ApiError::Unavailable("shutting down".into()))?;
    let (req, wanted) = tokio::task::spawn_blocking(move || {
        let wanted = plan(&req, &planning.0, planning.1, Utc::now());
        (req, wanted)
    })
    .await
    .map_err(|e| ApiError::Unavailable(format!("the dates could not be worked out: {e}")))?;
    drop(permit);
    let tz: chrono_tz::Tz = zone.parse().unwrap_or(chrono_tz::UTC);
    let path = format!("/api/v1/series/{}/dates", series.id);
    let (c, template) = (caller.clone(), series.template_event_id);
    creating
        .run(&caller, &path, move |conn| {
            Box::pin(async move {
                // Refused here, after the key's replay was looked up: a replay gets the first
                // answer even once its dates are past.
                let wanted = wanted.map_err(ApiError::Validation)?;
                // Locked: two calls count the series' dates one after the other.
                let series = find_series(conn, &c, &series.id.to_string(), true).await?;
                if series.template_event_id != template {
                    return Err(ApiError::conflict(
                        "template_changed",
                        "the series' template changed meanwhile: send the request again",
                    ));
                }
                // A cancelled date holds neither its start nor a place among the series' dates.
                let (count,): (i64,) =
                    sqlx::query_as("SELECT count(*) FROM events WHERE series_id = $1 AND state <> 'cancelled'")
                        .bind(series.id)
                        .fetch_one(&mut *conn)
                        .await?;
                let at: Vec<DateTime<Utc>> = wanted.iter().map(|(s, _)| *s).collect();
                let had: BTreeSet<DateTime<Utc>> = sqlx::query_scalar(
                    "SELECT starts_at FROM events WHERE series_id = $1 AND starts_at = ANY($2) AND state <> 'cancelled'",
                )
                .bind(series.id)
                .bind(&at)
                .fetch_all(&mut *conn)
                .await?
                .into_iter()
                .collect();
                let new: Vec<&Span> = wanted.iter().filter(|(s, _)| !had.contains(s)).collect();
                if count + new.len() as i64 > MAX_DATES {
                    return Err(ApiError::conflict(
                        "too_many_dates",
                        format!("a series has at most {MAX_DATES} dates (cancelled ones aside); this one has {count}"),
                    ));
                }
                // A date's distance from the template on the local clocks (days and time of day).
                let shift = |s: DateTime<Utc>| {
                    (series.sale_windows == SaleWindows::Relative)
                        .then(|| s.with_timezone(&tz).naive_local() - starts.with_timezone(&tz).naive_local())
                };
                let ids: Vec<Uuid> = new.iter().map(|_| Uuid::new_v4()).collect();
                let new_starts: Vec<DateTime<Utc>> = new.iter().map(|(s, _)| *s).collect();
                let new_ends: Vec<DateTime<Utc>> = new.iter().map(|(_, e)| *e).collect();
                let rooms: Vec<Value> = new.iter().map(|(s, _)| line_settings(&room, shift(*s), tz)).collect();
                // A start taken meanwhile (the index) is skipped here and answered as existing.
                let created: Vec<DateRef> = sqlx::query_as(
                    "INSERT INTO events (id, organization_id, venue_id, title, description, genre, starts_at, ends_at,
                                         time_zone, images, color, waiting_room, hold_settings, refund_policy,
                                         off_sale_seats, pricing, series_id)
                     SELECT n.id, t.organization_id, t.venue_id, t.title, t.description, t.genre, n.starts_at, n.ends_at,
                            t.time_zone, t.images, t.color, n.room, t.hold_settings, t.refund_policy,
                            t.off_sale_seats, t.pricing, $2
                     FROM unnest($3::uuid[], $4::timestamptz[], $5::timestamptz[], $6::jsonb[]) AS n(id, starts_at, ends_at, room)
                     CROSS JOIN events t WHERE t.id = $1
                     ON CONFLICT (series_id, starts_at) WHERE series_id IS NOT NULL AND state <> 'cancelled' DO NOTHING
                     RETURNING id, starts_at, ends_at, state",
                )
                .bind(series.template_event_id)
                .bind(series.id)
                .bind(&ids)
                .bind(&new_starts)
                .bind(&new_ends)
                .bind(&rooms)
                .fetch_all(&mut *conn)
                .await?;
                // Their tiers, in the template's order, each with its own id; sale windows moved on
                // the local clocks by `shift_local` (as the line's times), per date and tier.
                type Window = (Uuid, Option<DateTime<Utc>>, Option<DateTime<Utc>>);
                let template_tiers: Vec<Window> =
                    sqlx::query_as("SELECT id, sale_starts_at, sale_ends_at FROM ticket_tiers WHERE event_id = $1")
                        .bind(series.template_event_id)
                        .fetch_all(&mut *conn)
                        .await?;
                let made_at: BTreeMap<Uuid, DateTime<Utc>> = created.iter().map(|d| (d.id, d.starts_at)).collect();
                let (mut date_ids, mut tier_ids, mut opens, mut closes) = (vec![], vec![], vec![], vec![]);
                for (date, start) in &made_at {
                    for (tier, opens_at, closes_at) in &template_tiers {
                        let moved = |at: &Option<DateTime<Utc>>| match shift(*start) {
                            Some(by) => at.map(|at| shift_local(at, by, tz)),
                            None => *at,
                        };
                        date_ids.push(*date);
                        tier_ids.push(*tier);
                        opens.push(moved(opens_at));
                        closes.push(moved(closes_at));
                    }
                }
                sqlx::query(
                    "INSERT INTO ticket_tiers (id, event_id, organization_id, name, kind, ga_area, currency, price_minor,
                                               zone_prices, quantity, per_order_limit, sale_starts_at, sale_ends_at, created_at)
                     SELECT gen_random_uuid(), n.event_id, t.organization_id, t.name, t.kind, t.ga_area, t.currency,
                            t.price_minor, t.zone_prices, t.quantity, t.per_order_limit, n.opens, n.closes,
                            now() + (t.created_at - f.at)
                     FROM unnest($2::uuid[], $3::uuid[], $4::timestamptz[], $5::timestamptz[]) AS n(event_id, tier_id, opens, closes)
                     JOIN ticket_tiers t ON t.id = n.tier_id AND t.event_id = $1
                     CROSS JOIN (SELECT min(created_at) AS at FROM ticket_tiers WHERE event_id = $1) f",
                )
                .bind(series.template_event_id)
                .bind(&date_ids)
                .bind(&tier_ids)
                .bind(&opens)
                .bind(&closes)
                .execute(&mut *conn)
                .await?;
                let made: Vec<Uuid> = created.iter().map(|d| d.id).collect();
                let existing: Vec<DateRef> = sqlx::query_as(
                    "SELECT id, starts_at, ends_at, state FROM events
                     WHERE series_id = $1 AND starts_at = ANY($2) AND state <> 'cancelled' AND NOT id = ANY($3)
                     ORDER BY starts_at",
                )
                .bind(series.id)
                .bind(&at)
                .bind(&made)
                .fetch_all(&mut *conn)
                .await?;
                let mut created = created;
                created.sort_by_key(|d| d.starts_at);
                let details = json!({
                    "created": created.len(), "existing": existing.len(),
                    "first": created.first().map(|d| d.starts_at), "last": created.last().map(|d| d.starts_at),
                    "rule": req.rule,
                });
                crate::audit::by(conn, &c, series.organization_id, "series.dates", format!("series:{}", series.id), details)
                    .await?;
                let status = if created.is_empty() { StatusCode::OK } else { StatusCode::CREATED };
                Ok((status, serde_json::to_value(DatesAdded { created, existing }).unwrap_or_default()))
            })
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn now() -> DateTime<Utc> {
        at("2027-01-01T00:00:00Z")
    }

    fn rule(rule: &str, first: &str) -> NewDates {
        NewDates { rule: Some(rule.into()), first: Some(first.into()), ..NewDates::default() }
    }

    #[test]
    fn a_rule_keeps_its_local_time_across_daylight_saving() {
        // Berlin moves its clocks on 28 March 2027: 10:00 local is 09:00 UTC before, 08:00 after.
        let dates = plan(
            &rule("FREQ=DAILY;COUNT=3", "2027-03-27T10:00:00"),
            "Europe/Berlin",
            Duration::hours(2),
            now(),
        )
        .unwrap();
        let starts: Vec<String> = dates.iter().map(|(s, _)| s.to_rfc3339()).collect();
        assert_eq!(
            starts,
            ["2027-03-27T09:00:00+00:00", "2027-03-28T08:00:00+00:00", "2027-03-29T08:00:00+00:00"]
        );
        assert!(dates.iter().all(|(s, e)| *e - *s == Duration::hours(2)));
    }

    #[test]
    fn slots_skip_days_and_take_their_own_length() {
        let mut req = rule("FREQ=DAILY;BYHOUR=10,12,14;BYMINUTE=0;BYSECOND=0;COUNT=9", "2027-12-24T10:00:00");
        req.skip_days = vec!["2027-12-25".into()];
        req.minutes = Some(90);
        let dates = plan(&req, "UTC", Duration::hours(2), now()).unwrap();
        assert_eq!(dates.len(), 6, "three slots a day on the 24th and the 26th");
        assert!(dates.iter().all(|(s, _)| s.format("%d").to_string() != "25"));
        assert!(dates.iter().all(|(s, e)| *e - *s == Duration::minutes(90)));
    }

    #[test]
    fn a_rule_must_end_within_a_year_of_dates_and_be_one_rule() {
        let endless = plan(&rule("FREQ=DAILY", "2027-02-01T10:00:00"), "UTC", Duration::hours(1), now());
        assert!(endless.unwrap_err()[0].message.contains("more than 366"));
        assert!(plan(&rule("FREQ=DAILY;COUNT=366", "2027-02-01T10:00:00"), "UTC", Duration::hours(1), now())
            .is_ok());
        for bad in ["FREQ=DAILY;COUNT=2\nRDATE:20270301T100000", "FREQ=SOMETIMES", "", "FREQ=DAILY; COUNT=2"]
        {
            let e = plan(&rule(bad, "2027-02-01T10:00:00"), "UTC", Duration::hours(1), now()).unwrap_err();
            assert_eq!(e[0].field, "rule", "{bad:?}");
        }
        // Past the five years ahead a date may start: the rule stops there.
        let far = plan(&rule("FREQ=YEARLY;COUNT=10", "2027-02-01T10:00"), "UTC", Duration::hours(1), now())
            .unwrap();
        assert_eq!(far.len(), 5, "2027 to 2031");
        let past = plan(&rule("FREQ=DAILY;COUNT=2", "2026-12-31T10:00"), "UTC", Duration::hours(1), now());
        assert_eq!(past.unwrap_err()[0].field, "first");
        // A time the clocks skip (Berlin, 28 March 2027, 02:30).
        let gap = plan(
            &rule("FREQ=DAILY;COUNT=2", "2027-03-28T02:30:00"),
            "Europe/Berlin",
            Duration::hours(1),
            now(),
        );
        assert_eq!(gap.unwrap_err()[0].field, "first");
        for bad in ["2027-02-01", "2027-02-01T10:00:00Z", "tomorrow"] {
            assert_eq!(
                plan(&rule("FREQ=DAILY;COUNT=2", bad), "UTC", Duration::hours(1), now()).unwrap_err()[0]
                    .field,
                "first"
            );
        }
        let mut req = rule("FREQ=DAILY;COUNT=2", "2027-02-01T10:00");
        req.skip_days = vec!["2027-2-1".into()];
        assert_eq!(plan(&req, "UTC", Duration::hours(1), now()).unwrap_err()[0].field, "skip_days[0]");
    }

    #[test]
    fn a_list_is_bounded_checked_and_one_date_per_start() {
        let d = |s: &str| NewDate { starts_at: at(s), ends_at: None };
        let req = NewDates {
            dates: vec![d("2027-05-01T19:00:00Z"), d("2027-05-01T19:00:00Z"), d("2027-05-02T19:00:00Z")],
            ..NewDates::default()
        };
        assert_eq!(plan(&req, "UTC", Duration::hours(3), now()).unwrap().len(), 2);
        let bad = NewDates {
            dates: vec![
                d("2026-12-01T19:00:00Z"),
                NewDate { starts_at: at("2027-05-01T19:00:00Z"), ends_at: Some(at("2027-05-01T18:00:00Z")) },
            ],
            ..NewDates::default()
        };
        let fields: Vec<String> =
            plan(&bad, "UTC", Duration::hours(3), now()).unwrap_err().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["dates[0].starts_at", "dates[1].ends_at"]);
        let many = NewDates {
            dates: (0..367).map(|i| d(&format!("2027-06-01T{:02}:{:02}:00Z", i / 60, i % 60))).collect(),
            ..NewDates::default()
        };
        assert!(plan(&many, "UTC", Duration::hours(1), now()).is_err());
        let both = NewDates {
            dates: vec![d("2027-05-01T19:00:00Z")],
            ..rule("FREQ=DAILY;COUNT=2", "2027-02-01T10:00:00")
        };
        assert_eq!(plan(&both, "UTC", Duration::hours(1), now()).unwrap_err()[0].field, "dates");
        assert!(plan(&NewDates::default(), "UTC", Duration::hours(1), now()).is_err());
    }

    #[test]
    fn a_dates_line_moves_with_it_when_relative_and_is_never_paused() {
        let room = json!({ "on_sale_at_ms": 1_000, "pre_queue_opens_at_ms": 500, "paused": true, "admit_per_minute": 60 });
        let moved = line_settings(&room, Some(Duration::seconds(10)), chrono_tz::UTC);
        assert_eq!(
            moved,
            json!({ "on_sale_at_ms": 11_000, "pre_queue_opens_at_ms": 10_500, "paused": false, "admit_per_minute": 60 })
        );
        let fixed = line_settings(&room, None, chrono_tz::UTC);
        assert_eq!(fixed["on_sale_at_ms"], 1_000);
        assert_eq!(line_settings(&json!({}), Some(Duration::seconds(1)), chrono_tz::UTC), json!({}));
        // On the local clocks: 10:00 in Berlin a week before a date stays 10:00 across the change
        // to summer time (28 March 2027), nine days later on the clocks.
        let berlin: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
        let opens = at("2027-03-20T09:00:00Z"); // 10:00 in winter
        assert_eq!(
            shift_local(opens, Duration::days(9), berlin),
            at("2027-03-29T08:00:00Z"),
            "10:00 in summer"
        );
    }
}
