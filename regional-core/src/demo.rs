//! The demo the run command seeds (`regional-core seed-demo`), idempotently: an organization
//! ("demo"), its organizer admin, a venue with 400 reserved seats and a 300-place GA floor, and an
//! event on sale whose waiting room opens at once and starts selling a minute after it was first
//! seeded. Each run issues a fresh organizer key (the previous demo keys are revoked: a key is shown
//! only once) and queues the event for the edge.

use chrono::{Duration, Utc};
use serde::Serialize;
use serde_json::json;
use shared_types::waiting_room::{BotCheck, BotPolicy, QueueMode, WaitingRoomSettings};
use sqlx::PgPool;
use uuid::Uuid;

use crate::publishing;

/// What the run command prints.
#[derive(Debug, Serialize)]
pub struct Demo {
    pub organization: Uuid,
    pub event: Uuid,
    pub organizer_key: String,
    pub on_sale_at: chrono::DateTime<Utc>,
    pub created: bool,
}

const DEMO_EMAIL: &str = "organizer@demo.ticketing.local";

/// Seeds (or finds) the demo and returns how to reach it.
pub async fn seed(db: &PgPool) -> Result<Demo, sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('seed-demo', 0))").execute(&mut *tx).await?;
    // Each row is found, or made when it is not there (under the lock above).
    let org: Uuid = sqlx::query_scalar(
        "WITH found AS (SELECT id FROM organizations WHERE slug = 'demo'),
              made AS (INSERT INTO organizations (id, name, slug, time_zone)
                       SELECT $1, 'Demo Promotions', 'demo', 'Europe/Berlin' WHERE NOT EXISTS (SELECT FROM found)
                       RETURNING id)
         SELECT id FROM found UNION ALL SELECT id FROM made",
    )
    .bind(Uuid::new_v4())
    .fetch_one(&mut *tx)
    .await?;
    let user: Uuid = sqlx::query_scalar(
        "WITH found AS (SELECT id FROM users WHERE lower(email) = $3),
              made AS (INSERT INTO users (id, organization_id, email, name, role)
                       SELECT $1, $2, $3, 'Demo Organizer', 'organizer_admin' WHERE NOT EXISTS (SELECT FROM found)
                       RETURNING id)
         SELECT id FROM found UNION ALL SELECT id FROM made",
    )
    .bind(Uuid::new_v4())
    .bind(org)
    .bind(DEMO_EMAIL)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE api_keys SET revoked_at = now() WHERE user_id = $1 AND name = 'demo' AND revoked_at IS NULL",
    )
    .bind(user)
    .execute(&mut *tx)
    .await?;
    let key = crate::auth::new_key();
    sqlx::query("INSERT INTO api_keys (id, user_id, organization_id, name, secret_sha256) VALUES ($1, $2, $3, 'demo', $4)")
        .bind(&key.id)
        .bind(user)
        .bind(org)
        .bind(&key.secret_sha256)
        .execute(&mut *tx)
        .await?;

    let existing: Option<(Uuid, serde_json::Value)> = sqlx::query_as(
        "SELECT id, waiting_room FROM events WHERE organization_id = $1 AND title = 'Demo Night'",
    )
    .bind(org)
    .fetch_optional(&mut *tx)
    .await?;
    let (event, on_sale_at, created) = match existing {
        Some((id, room)) => {
            let ms = room["on_sale_at_ms"].as_i64().unwrap_or_default();
            (id, chrono::DateTime::from_timestamp_millis(ms).unwrap_or_else(Utc::now), false)
        }
        None => {
            let on_sale_at = Utc::now() + Duration::seconds(60);
            let id = create_event(&mut tx, org, on_sale_at).await?;
            (id, on_sale_at, true)
        }
    };
    let version: i64 = sqlx::query_scalar("SELECT version FROM events WHERE id = $1")
        .bind(event)
        .fetch_one(&mut *tx)
        .await?;
    publishing::enqueue(&mut tx, event, org, version).await?;
    tx.commit().await?;
    Ok(Demo { organization: org, event, organizer_key: key.token, on_sale_at, created })
}

async fn create_event(
    tx: &mut sqlx::PgConnection,
    org: Uuid,
    on_sale_at: chrono::DateTime<Utc>,
) -> Result<Uuid, sqlx::Error> {
    let venue = Uuid::new_v4();
    let sections: Vec<_> = ["A", "B"]
        .iter()
        .map(|s| json!({ "id": s, "name": format!("Block {s}"), "rows": (1..=10).map(|r| r.to_string()).collect::<Vec<_>>() }))
        .collect();
    sqlx::query(
        "INSERT INTO venues (id, organization_id, name, city, address, time_zone, sections, zones, ga_areas, seat_count)
         VALUES ($1, $2, 'Demo Arena', 'Berlin', 'Demoweg 1', 'Europe/Berlin', $3, $4, $5, 400)",
    )
    .bind(venue)
    .bind(org)
    .bind(json!(sections))
    .bind(json!([{ "id": "front", "name": "Front rows" }, { "id": "std", "name": "Standard" }]))
    .bind(json!([{ "id": "floor", "name": "Standing floor", "capacity": 300 }]))
    .execute(&mut *tx)
    .await?;
    // 2 blocks x 10 rows x 20 seats; rows 1-3 are the front zone; the first two seats of row 10 are
    // wheelchair places.
    sqlx::query(
        "INSERT INTO venue_seats (venue_id, seat_id, section_id, row_label, label, position, x, y, zone_id, accessibility)
         SELECT $1, s || '-' || r || '-' || n, s, r::text, n::text,
                ((CASE s WHEN 'A' THEN 0 ELSE 1 END) * 200 + (r - 1) * 20 + (n - 1)),
                (CASE s WHEN 'A' THEN 0 ELSE 24 END) + n, r,
                CASE WHEN r <= 3 THEN 'front' ELSE 'std' END,
                CASE WHEN r = 10 AND n <= 2 THEN ARRAY['wheelchair'] ELSE ARRAY[]::text[] END
         FROM unnest(ARRAY['A', 'B']) AS s, generate_series(1, 10) AS r, generate_series(1, 20) AS n",
    )
    .bind(venue)
    .execute(&mut *tx)
    .await?;
    let room = WaitingRoomSettings {
        on_sale_at_ms: Some(on_sale_at.timestamp_millis()),
        admit_per_minute: 120,
        max_active: 200,
        mode: QueueMode::ShuffleThenFifo,
        bot: BotPolicy { check: BotCheck::ProofOfWork { difficulty: 12 }, ..BotPolicy::default() },
        ..WaitingRoomSettings::default()
    };
    let event = Uuid::new_v4();
    let starts = Utc::now() + Duration::days(30);
    sqlx::query(
        "INSERT INTO events (id, organization_id, venue_id, title, description, genre, starts_at, ends_at, time_zone,
                             state, waiting_room)
         VALUES ($1, $2, $3, 'Demo Night', 'The demo sale: join the line, watch the countdown, buy a seat.',
                 'concert', $4, $5, 'Europe/Berlin', 'on_sale', $6)",
    )
    .bind(event)
    .bind(org)
    .bind(venue)
    .bind(starts)
    .bind(starts + Duration::hours(3))
    .bind(serde_json::to_value(&room).unwrap_or_default())
    .execute(&mut *tx)
    .await?;
    for (name, kind, area, price, zones, quantity) in [
        ("Reserved seat", "seated", None, 4500i64, json!({ "front": 7500 }), 400),
        ("Standing", "ga", Some("floor"), 3000, json!({}), 300),
    ] {
        sqlx::query(
            "INSERT INTO ticket_tiers (id, event_id, organization_id, name, kind, ga_area, currency, price_minor,
                                       zone_prices, quantity, per_order_limit)
             VALUES ($1, $2, $3, $4, $5, $6, 'EUR', $7, $8, $9, 6)",
        )
        .bind(Uuid::new_v4())
        .bind(event)
        .bind(org)
        .bind(name)
        .bind(kind)
        .bind(area)
        .bind(price)
        .bind(zones)
        .bind(quantity)
        .execute(&mut *tx)
        .await?;
    }
    Ok(event)
}
