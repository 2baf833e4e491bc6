//! Venues and their seat maps.
//!
//! - `POST /api/v1/venues`              a venue from its JSON (docs/api.md has the format)
//! - `GET  /api/v1/venues`              the organization's venues (paged)
//! - `GET  /api/v1/venues/{id}`         one venue with its whole seat map
//! - `PUT  /api/v1/venues/{id}/seats`   replace the seats from CSV (`text/csv`; columns
//!   `section,row,seat,label,x,y,zone,accessibility,aisle_after`), while no published event uses it
//!
//! Seats are rows of `venue_seats`, so PostgreSQL itself keeps seat ids unique in a venue and no two
//! seats at one place (section, row, label).

use std::collections::{HashMap, HashSet};

use crate::api::Query;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde_json::{json, Value};
use shared_types::ids::{SeatId, SectionId, ZoneId};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::api::resource_routes;
use crate::api::{Creating, Listing, PageQuery};
use crate::auth::{need, Can};
use crate::error::{ApiError, Result};
use crate::models::venue::{
    find_venue, load_sections, validate, RowIn, SeatIn, SectionIn, Venue, VenueIn, VENUE_COLUMNS,
};
use crate::state::AppState;
use utoipa_axum::router::OpenApiRouter;

pub fn routes() -> OpenApiRouter<AppState> {
    resource_routes! { [create_venue, list_venues], [get_venue], [replace_seats] }
}

/// Writes the seats of `v` for venue `id` (one bulk insert per 5,000 seats).
async fn insert_seats(conn: &mut PgConnection, id: Uuid, sections: &[SectionIn]) -> Result<()> {
    let all: Vec<(&SectionIn, &RowIn, &SeatIn)> = sections
        .iter()
        .flat_map(|s| s.rows.iter().flat_map(move |r| r.seats.iter().map(move |x| (s, r, x))))
        .collect();
    for (chunk_no, chunk) in all.chunks(5_000).enumerate() {
        let base = chunk_no * 5_000;
        let mut seat_ids = Vec::with_capacity(chunk.len());
        let (mut sec, mut rows, mut labels, mut pos, mut xs, mut ys, mut zones, mut acc, mut aisle) =
            (vec![], vec![], vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
        for (i, (s, r, seat)) in chunk.iter().enumerate() {
            seat_ids.push(seat.id.to_string());
            sec.push(s.id.to_string());
            rows.push(r.label.clone());
            labels.push(seat.label.clone());
            pos.push((base + i) as i32);
            xs.push(seat.x);
            ys.push(seat.y);
            zones.push(seat.zone.to_string());
            // Postgres has no array of arrays of differing lengths: accessibility travels as JSON.
            acc.push(serde_json::to_string(&seat.accessibility).unwrap_or_else(|_| "[]".into()));
            aisle.push(seat.aisle_after);
        }
        sqlx::query(
            "INSERT INTO venue_seats (venue_id, seat_id, section_id, row_label, label, position, x, y, zone_id,
                                      accessibility, aisle_after)
             SELECT $1, s, sec, r, l, p, x, y, z, ARRAY(SELECT jsonb_array_elements_text(a::jsonb)), aisle
             FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::real[], $8::real[],
                         $9::text[], $10::text[], $11::bool[]) AS t(s, sec, r, l, p, x, y, z, a, aisle)",
        )
        .bind(id)
        .bind(&seat_ids)
        .bind(&sec)
        .bind(&rows)
        .bind(&labels)
        .bind(&pos)
        .bind(&xs)
        .bind(&ys)
        .bind(&zones)
        .bind(&acc)
        .bind(&aisle)
        .execute(&mut *conn)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                ApiError::field("sections", "two seats share an id or a place")
            }
            _ => ApiError::Database(e),
        })?;
    }
    Ok(())
}

fn section_summaries(sections: &[SectionIn]) -> Value {
    Value::Array(
        sections
            .iter()
            .map(|s| json!({ "id": s.id, "name": s.name, "rows": s.rows.iter().map(|r| r.label.clone()).collect::<Vec<_>>() }))
            .collect(),
    )
}

fn seat_total(sections: &[SectionIn]) -> i32 {
    sections.iter().flat_map(|s| &s.rows).map(|r| r.seats.len()).sum::<usize>() as i32
}

#[utoipa::path(post, path = "/api/v1/venues", tag = "catalog", security(("api_key" = [])), request_body = VenueIn, responses((status = 201, body = Venue), crate::api::Problems))]
async fn create_venue(
    Can(caller, _): Can<need::ManageCatalog>,
    creating: Creating,
) -> Result<axum::response::Response> {
    let venue: VenueIn = creating.json()?;
    validate(&venue).map_err(ApiError::Validation)?;
    let (org, c) = (caller.organization_id, caller.clone());
    creating.run(&caller, "/api/v1/venues", move |conn| {
        Box::pin(async move {
            let id = Uuid::new_v4();
            let row: Venue = sqlx::query_as(&format!(
                "INSERT INTO venues (id, organization_id, name, city, address, time_zone, sections, zones, ga_areas, seat_count)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {VENUE_COLUMNS}"
            ))
            .bind(id)
            .bind(org)
            .bind(venue.name.trim())
            .bind(&venue.city)
            .bind(&venue.address)
            .bind(&venue.time_zone)
            .bind(section_summaries(&venue.sections))
            .bind(serde_json::to_value(&venue.zones).unwrap_or_default())
            .bind(serde_json::to_value(&venue.ga_areas).unwrap_or_default())
            .bind(seat_total(&venue.sections))
            .fetch_one(&mut *conn)
            .await?;
            insert_seats(conn, id, &venue.sections).await?;
            let details = json!({ "name": row.name, "seat_count": row.seat_count });
            crate::audit::by(conn, &c, org, "venue.create", format!("venue:{id}"), details).await?;
            Ok((StatusCode::CREATED, serde_json::to_value(&row).unwrap_or_default()))
        })
    })
    .await
}

#[utoipa::path(get, path = "/api/v1/venues", tag = "catalog", security(("api_key" = [])), params(PageQuery), responses((status = 200, body = Listing<Venue>), crate::api::Problems))]
async fn list_venues(
    State(state): State<AppState>,
    Can(caller, _): Can<need::Read>,
    Query(q): Query<PageQuery>,
) -> Result<Json<Listing<Venue>>> {
    let sql = format!(
        "SELECT {VENUE_COLUMNS} FROM venues WHERE organization_id = $1 AND (created_at, id) > ($2, $3)
         ORDER BY created_at, id LIMIT $4"
    );
    let query = sqlx::query_as(&sql).bind(caller.organization_id);
    Ok(Json(q.fetch(query, &state.db, |v: &Venue| (v.created_at, v.id)).await?))
}

#[utoipa::path(get, path = "/api/v1/venues/{id}", tag = "catalog", security(("api_key" = [])), params(("id" = String, Path, description = "the resource id")), responses((status = 200, description = "the venue with its sections, rows and seats", body = VenueDetail), crate::api::Problems))]
async fn get_venue(
    State(state): State<AppState>,
    Can(caller, _): Can<need::Read>,
    Path(id): Path<String>,
) -> Result<Json<VenueDetail>> {
    let venue = find_venue(&state.db, &caller, &id).await?;
    let sections = load_sections(&state.db, venue.id).await?;
    Ok(Json(VenueDetail { venue, sections }))
}

/// A venue with its seat map (`GET /api/v1/venues/{id}`).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct VenueDetail {
    #[serde(flatten)]
    pub venue: Venue,
    pub sections: Vec<SectionIn>,
}

/// Splits one CSV line (RFC 4180 quoting).
pub fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => fields.push(std::mem::take(&mut field)),
            (_, c) => field.push(c),
        }
    }
    if quoted {
        return Err("an unclosed quote".into());
    }
    fields.push(field);
    Ok(fields)
}

/// Reads the seats CSV into sections (in first-seen order; section names from the venue, else the id).
pub fn parse_seats_csv(text: &str, known: &Value) -> Result<Vec<SectionIn>> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().ok_or_else(|| ApiError::Malformed("the CSV is empty".into()))?;
    let header = csv_fields(header).map_err(|e| ApiError::Malformed(format!("line 1: {e}")))?;
    let want = ["section", "row", "seat", "label", "x", "y", "zone", "accessibility", "aisle_after"];
    if header.iter().map(|h| h.trim()).ne(want.iter().copied()) {
        return Err(ApiError::Malformed(format!("the CSV header must be: {}", want.join(","))));
    }
    let name_of = |id: &str| {
        known
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["id"] == id)
            .and_then(|s| s["name"].as_str())
            .unwrap_or(id)
            .to_owned()
    };
    let mut sections: Vec<SectionIn> = Vec::new();
    // Where each section and each (section, row) is in `sections`: one lookup per line, so an
    // import is linear in its lines (it was lines × sections).
    let mut section_at: HashMap<String, usize> = HashMap::new();
    let mut row_at: HashMap<(usize, String), usize> = HashMap::new();
    for (i, line) in lines.enumerate() {
        let n = i + 2;
        let bad = |what: &str| ApiError::field(&format!("line {n}"), what);
        let f = csv_fields(line).map_err(|e| ApiError::Malformed(format!("line {n}: {e}")))?;
        if f.len() != want.len() {
            return Err(bad("has the wrong number of columns"));
        }
        let section = SectionId::parse(f[0].trim()).map_err(|_| bad("section is not a valid id"))?;
        let seat = SeatIn {
            id: SeatId::parse(f[2].trim()).map_err(|_| bad("seat is not a valid id"))?,
            label: f[3].trim().to_owned(),
            x: f[4].trim().parse().map_err(|_| bad("x is not a number"))?,
            y: f[5].trim().parse().map_err(|_| bad("y is not a number"))?,
            zone: ZoneId::parse(f[6].trim()).map_err(|_| bad("zone is not a valid id"))?,
            accessibility: f[7]
                .split(';')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(|a| {
                    serde_json::from_value(json!(a)).map_err(|_| bad("accessibility has an unknown flag"))
                })
                .collect::<Result<_, _>>()?,
            aisle_after: matches!(f[8].trim(), "true" | "1" | "yes"),
        };
        let row_label = f[1].trim().to_owned();
        let idx = *section_at.entry(section.as_str().to_owned()).or_insert_with(|| {
            sections.push(SectionIn { name: name_of(section.as_str()), id: section, rows: Vec::new() });
            sections.len() - 1
        });
        let rows = &mut sections[idx].rows;
        let r = *row_at.entry((idx, row_label)).or_insert_with_key(|(_, label)| {
            rows.push(RowIn { label: label.clone(), seats: Vec::new() });
            rows.len() - 1
        });
        rows[r].seats.push(seat);
    }
    Ok(sections)
}

#[utoipa::path(put, path = "/api/v1/venues/{id}/seats", tag = "catalog", security(("api_key" = [])), params(("id" = String, Path, description = "the resource id")), request_body(content = String, content_type = "text/csv", description = "section,row,seat,label,x,y,zone,accessibility,aisle_after"), responses((status = 200, body = Venue), crate::api::Problems))]
async fn replace_seats(
    State(state): State<AppState>,
    Can(caller, _): Can<need::ManageCatalog>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Venue>> {
    let venue = find_venue(&state.db, &caller, &id).await?;
    let is_csv =
        headers.get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|t| t.starts_with("text/csv"));
    if !is_csv {
        return Err(ApiError::Malformed("send the seats as text/csv".into()));
    }
    let text = std::str::from_utf8(&body).map_err(|_| ApiError::Malformed("the CSV is not UTF-8".into()))?;
    if text.contains('\0') {
        return Err(ApiError::Malformed("the CSV may not contain NUL".into()));
    }
    let known: Value = sqlx::query_scalar("SELECT sections FROM venues WHERE id = $1")
        .bind(venue.id)
        .fetch_one(&state.db)
        .await?;
    let sections = parse_seats_csv(text, &known)?;
    let check = VenueIn {
        name: venue.name.clone(),
        city: venue.city.clone(),
        address: venue.address.clone(),
        time_zone: venue.time_zone.clone(),
        zones: serde_json::from_value(venue.zones.clone()).unwrap_or_default(),
        ga_areas: serde_json::from_value(venue.ga_areas.clone()).unwrap_or_default(),
        sections,
    };
    validate(&check).map_err(ApiError::Validation)?;
    let mut tx = state.db.begin().await?;
    // Events the edge knows: their venue may gain seats, never lose one (take seats off sale per
    // event instead), and each is pushed again.
    let live: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM events WHERE venue_id = $1 AND state IN ('published', 'on_sale', 'sold_out')",
    )
    .bind(venue.id)
    .fetch_all(&mut *tx)
    .await?;
    if !live.is_empty() {
        let kept: Vec<String> = sqlx::query_scalar("SELECT seat_id FROM venue_seats WHERE venue_id = $1")
            .bind(venue.id)
            .fetch_all(&mut *tx)
            .await?;
        let now: HashSet<&str> = check
            .sections
            .iter()
            .flat_map(|s| &s.rows)
            .flat_map(|r| &r.seats)
            .map(|x| x.id.as_str())
            .collect();
        if let Some(gone) = kept.iter().find(|id| !now.contains(id.as_str())) {
            return Err(ApiError::conflict(
                "venue_in_use",
                format!("published events use this venue: seats may be added, not removed (seat {gone}); take seats off sale per event instead"),
            ));
        }
    }
    sqlx::query("DELETE FROM venue_seats WHERE venue_id = $1").bind(venue.id).execute(&mut *tx).await?;
    insert_seats(&mut tx, venue.id, &check.sections).await?;
    let row: Venue = sqlx::query_as(&format!(
        "UPDATE venues SET sections = $2, seat_count = $3 WHERE id = $1 RETURNING {VENUE_COLUMNS}"
    ))
    .bind(venue.id)
    .bind(section_summaries(&check.sections))
    .bind(seat_total(&check.sections))
    .fetch_one(&mut *tx)
    .await?;
    for event in &live {
        crate::publishing::touch(&mut tx, *event).await?;
    }
    let details = json!({ "seat_count": row.seat_count, "before": venue.seat_count, "events_pushed": live });
    let subject = format!("venue:{}", venue.id);
    crate::audit::by(&mut tx, &caller, venue.organization_id, "venue.replace_seats", subject, details)
        .await?;
    tx.commit().await?;
    Ok(Json(row))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_types::inventory::Accessibility;

    #[test]
    fn csv_quoting() {
        assert_eq!(csv_fields(r#"a,"b,c","d ""e""",,"#).unwrap(), ["a", "b,c", "d \"e\"", "", ""]);
        assert!(csv_fields(r#"a,"b"#).is_err());
    }

    #[test]
    fn seats_csv_builds_sections_and_rows() {
        let csv = "section,row,seat,label,x,y,zone,accessibility,aisle_after\n\
                   A,1,A-1-1,1,0,0,std,wheelchair;companion,false\n\
                   A,1,A-1-2,2,1,0,std,,true\n\
                   B,1,B-1-1,1,0,5,cheap,,\n";
        let sections = parse_seats_csv(csv, &json!([{ "id": "A", "name": "Stalls" }])).unwrap();
        assert_eq!(sections.len(), 2);
        assert_eq!(sections[0].name, "Stalls");
        assert_eq!(sections[1].name, "B");
        assert_eq!(sections[0].rows[0].seats.len(), 2);
        assert_eq!(
            sections[0].rows[0].seats[0].accessibility,
            [Accessibility::Wheelchair, Accessibility::Companion]
        );
        assert!(sections[0].rows[0].seats[1].aisle_after);
        assert!(parse_seats_csv("nope\n", &json!([])).is_err());
        assert!(parse_seats_csv(
            "section,row,seat,label,x,y,zone,accessibility,aisle_after\nA,1,A 1,1,0,0,std,,\n",
            &json!([])
        )
        .is_err());
    }
}
