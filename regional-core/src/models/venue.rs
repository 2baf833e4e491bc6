//! Venues and their seats: what an organizer sends, how it is checked, how it is read back.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use shared_types::ids::{SeatId, SectionId, TierId, ZoneId};
use shared_types::inventory::{Accessibility, FieldError, MAX_GA_CAPACITY, MAX_SEATS_PER_INVENTORY};
use sqlx::PgPool;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{ApiError, Result};
use crate::validate::valid_time_zone;

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeatIn {
    #[schema(value_type = String, pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub id: SeatId,
    #[schema(min_length = 1, max_length = 20)]
    pub label: String,
    pub x: f32,
    pub y: f32,
    #[schema(value_type = String, pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub zone: ZoneId,
    #[serde(default)]
    #[schema(value_type = Vec<AccessibilityFlag>)]
    pub accessibility: Vec<Accessibility>,
    #[serde(default)]
    pub aisle_after: bool,
}

/// A seat's accessibility flags as the document names them ([`Accessibility`], which the shared
/// types define without the document's derive).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum AccessibilityFlag {
    Wheelchair,
    Companion,
    EasyAccess,
    HearingLoop,
    LimitedView,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RowIn {
    #[schema(min_length = 1, max_length = 20)]
    pub label: String,
    pub seats: Vec<SeatIn>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SectionIn {
    #[schema(value_type = String, pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub id: SectionId,
    pub name: String,
    #[serde(default)]
    pub rows: Vec<RowIn>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ZoneIn {
    #[schema(value_type = String, pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub id: ZoneId,
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GaArea {
    #[schema(value_type = String, pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub id: TierId,
    pub name: String,
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub capacity: u32,
}

/// A venue as imported and as answered.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VenueIn {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    #[serde(default)]
    #[schema(max_length = 100)]
    pub city: String,
    #[serde(default)]
    #[schema(max_length = 500)]
    pub address: String,
    /// An IANA time zone name such as `Europe/Berlin`.
    pub time_zone: String,
    #[serde(default)]
    pub zones: Vec<ZoneIn>,
    #[serde(default)]
    pub ga_areas: Vec<GaArea>,
    #[serde(default)]
    pub sections: Vec<SectionIn>,
}

/// A venue row (without its seats).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Venue {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub name: String,
    pub city: String,
    pub address: String,
    pub time_zone: String,
    #[schema(value_type = Vec<ZoneIn>)]
    pub zones: Value,
    #[schema(value_type = Vec<GaArea>)]
    pub ga_areas: Value,
    pub seat_count: i32,
    pub created_at: DateTime<Utc>,
}

pub(crate) const VENUE_COLUMNS: &str =
    "id, organization_id, name, city, address, time_zone, zones, ga_areas, seat_count, created_at";

fn text(errors: &mut Vec<FieldError>, field: &str, value: &str, min: usize, max: usize) {
    let n = value.chars().count();
    if n < min || n > max {
        errors.push(FieldError::new(field, format!("must be {min} to {max} characters")));
    }
}

/// Every rule of a venue's layout, each failure naming its field.
pub fn validate(v: &VenueIn) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    text(&mut errors, "name", &v.name, 1, 200);
    text(&mut errors, "city", &v.city, 0, 100);
    text(&mut errors, "address", &v.address, 0, 500);
    if !valid_time_zone(&v.time_zone) {
        errors.push(FieldError::new("time_zone", "must be an IANA time zone name such as Europe/Berlin"));
    }
    let mut zones = HashSet::new();
    for (i, z) in v.zones.iter().enumerate() {
        if !zones.insert(z.id.as_str()) {
            errors.push(FieldError::new(format!("zones[{i}].id"), "is used twice"));
        }
        text(&mut errors, &format!("zones[{i}].name"), &z.name, 1, 100);
    }
    let mut areas = HashSet::new();
    for (i, a) in v.ga_areas.iter().enumerate() {
        if !areas.insert(a.id.as_str()) {
            errors.push(FieldError::new(format!("ga_areas[{i}].id"), "is used twice"));
        }
        if a.capacity == 0 || a.capacity > MAX_GA_CAPACITY {
            errors.push(FieldError::new(format!("ga_areas[{i}].capacity"), "must be 1 to 1000000"));
        }
    }
    let (mut sections, mut seats, mut places) = (HashSet::new(), HashSet::new(), HashSet::new());
    let mut count = 0usize;
    for (s, section) in v.sections.iter().enumerate() {
        if !sections.insert(section.id.as_str()) {
            errors.push(FieldError::new(format!("sections[{s}].id"), "is used twice"));
        }
        for (r, row) in section.rows.iter().enumerate() {
            text(&mut errors, &format!("sections[{s}].rows[{r}].label"), &row.label, 1, 20);
            for (n, seat) in row.seats.iter().enumerate() {
                count += 1;
                let at = format!("sections[{s}].rows[{r}].seats[{n}]");
                if !seats.insert(seat.id.as_str()) {
                    errors.push(FieldError::new(format!("{at}.id"), "is used twice in this venue"));
                }
                if !places.insert((section.id.as_str(), row.label.as_str(), seat.label.as_str())) {
                    errors.push(FieldError::new(format!("{at}.label"), "is used twice in this row"));
                }
                text(&mut errors, &format!("{at}.label"), &seat.label, 1, 20);
                if !zones.contains(seat.zone.as_str()) {
                    errors.push(FieldError::new(format!("{at}.zone"), "is not one of the venue's zones"));
                }
                if !seat.x.is_finite() || !seat.y.is_finite() {
                    errors.push(FieldError::new(format!("{at}.x"), "coordinates must be finite numbers"));
                }
                if errors.len() > 100 {
                    return Err(errors);
                }
            }
        }
    }
    if count > MAX_SEATS_PER_INVENTORY {
        errors.push(FieldError::new("sections", "a venue has at most 100000 seats"));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// A venue of the caller's organization (404 otherwise).
pub async fn find_venue(db: &PgPool, caller: &Caller, id: &str) -> Result<Venue> {
    let id: Uuid = id.parse().map_err(|_| ApiError::NotFound)?;
    let row: Option<Venue> = sqlx::query_as(&format!("SELECT {VENUE_COLUMNS} FROM venues WHERE id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await?;
    row.filter(|v| v.organization_id == caller.organization_id).ok_or(ApiError::NotFound)
}

/// The seat map of a venue, sections in their stored order and seats in import order.
pub async fn load_sections(db: &PgPool, venue: Uuid) -> Result<Vec<SectionIn>> {
    let names: Value =
        sqlx::query_scalar("SELECT sections FROM venues WHERE id = $1").bind(venue).fetch_one(db).await?;
    let seats: Vec<SeatRow> = sqlx::query_as(
        "SELECT seat_id, section_id, row_label, label, x, y, zone_id, accessibility, aisle_after
         FROM venue_seats WHERE venue_id = $1 ORDER BY position",
    )
    .bind(venue)
    .fetch_all(db)
    .await?;
    let mut by_section: BTreeMap<String, Vec<RowIn>> = BTreeMap::new();
    for s in seats {
        let rows = by_section.entry(s.section_id.clone()).or_default();
        if rows.last().is_none_or(|r| r.label != s.row_label) {
            rows.push(RowIn { label: s.row_label.clone(), seats: Vec::new() });
        }
        let accessibility =
            s.accessibility.iter().filter_map(|a| serde_json::from_value(json!(a)).ok()).collect();
        let (Ok(id), Ok(zone)) = (SeatId::parse(&s.seat_id), ZoneId::parse(&s.zone_id)) else { continue };
        if let Some(row) = rows.last_mut() {
            row.seats.push(SeatIn {
                id,
                label: s.label,
                x: s.x,
                y: s.y,
                zone,
                accessibility,
                aisle_after: s.aisle_after,
            });
        }
    }
    let mut out = Vec::new();
    for s in names.as_array().into_iter().flatten() {
        let Some(id) = s["id"].as_str().and_then(|i| SectionId::parse(i).ok()) else { continue };
        let rows = by_section.remove(id.as_str()).unwrap_or_default();
        out.push(SectionIn { id, name: s["name"].as_str().unwrap_or_default().to_owned(), rows });
    }
    Ok(out)
}

#[derive(sqlx::FromRow)]
struct SeatRow {
    seat_id: String,
    section_id: String,
    row_label: String,
    label: String,
    x: f32,
    y: f32,
    zone_id: String,
    accessibility: Vec<String>,
    aisle_after: bool,
}
