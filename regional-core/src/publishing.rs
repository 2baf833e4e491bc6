//! Publishing events to the edge. The event's state and catalog live here; the edge enforces them:
//! an event that is published (or on sale, sold out, cancelled) is pushed to the edge's internal
//! routes — its inventory (seat map with zone prices, GA tiers, hold settings) and its
//! waiting-room settings — signed with the core's key.
//!
//! Every change that the edge must know bumps `events.version` and marks the event's `edge_sync`
//! row pending ([`enqueue`], in the same transaction as the change). A background task
//! ([`run`]) takes due rows, pushes the current definition (versioned by `events.version`, so a
//! retry or a late push is harmless: the edge accepts a newer or the same version only), and
//! records the outcome: `synced` with the version the edge acknowledged, or `failing` with the error
//! and the next attempt, backing off exponentially up to five minutes. Live holds are never
//! disturbed: the inventory objects refuse an update that would drop a held or sold seat.
//!
//! The edge can lose what it was sent (its storage reset locally, the Worker moved to another
//! account): every `EDGE_CHECK_SECS` the publisher asks the edge what it holds of each synced event
//! ([`check_edge`]). An event it no longer holds (or holds at an older version) is pushed again
//! when it has no orders; one with orders is marked `lost` and never pushed again by itself: the
//! definition carries no sales, so a fresh object given it would put sold seats and places back on
//! sale (docs/runbook.md says what an operator does). [`force`] queues a push of an event without
//! orders whatever its row says (`POST /api/v1/events/{id}/sync`, `regional-core republish`).

use std::time::Duration;

use serde_json::{json, Value};
use shared_types::ids::{EventId, TierId};
use shared_types::internal_api::{InternalRoute, LayoutAnswer};
use shared_types::inventory::{
    Currency, GaTier, HoldSettings, Inventory, Money, PriceZone, Row, Seat, SeatMap, SeatedTier, Section,
    Sharding, ZonePrice,
};
use shared_types::waiting_room::{QueueMode, WaitingRoomSettings};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::edge_client::{EdgeClient, EdgeError};
use crate::error::Result;
use crate::models::event::EventState;
use crate::models::venue::{load_sections, GaArea, ZoneIn};

/// Events above this many seats are sharded by section at the edge (one object per section).
pub const SHARD_ABOVE_SEATS: usize = 20_000;
/// Longest wait between two attempts.
const MAX_BACKOFF_SECS: i64 = 300;
/// How long a push may hold its claim on a row before another publisher may take it.
const LEASE_SECS: i64 = 60;

/// Marks `event` to be pushed (at version `version`), in the caller's transaction. A `lost` row
/// stays lost: a change of the event never pushes a definition without its sales afresh.
pub async fn enqueue(
    conn: &mut PgConnection,
    event: Uuid,
    organization: Uuid,
    version: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO edge_sync (event_id, organization_id, wanted_version, state)
         VALUES ($1, $2, $3, 'pending')
         ON CONFLICT (event_id) DO UPDATE SET wanted_version = GREATEST(edge_sync.wanted_version, excluded.wanted_version),
             state = CASE WHEN edge_sync.state = 'lost' OR edge_sync.synced_version >= excluded.wanted_version
                          THEN edge_sync.state ELSE 'pending' END,
             attempts = 0, next_attempt_at = now(), updated_at = now()",
    )
    .bind(event)
    .bind(organization)
    .bind(version)
    .execute(conn)
    .await?;
    Ok(())
}

/// The event states the edge knows about, in SQL (as [`visible_at_edge`]).
const VISIBLE_SQL: &str = "'published', 'on_sale', 'sold_out', 'cancelled'";

/// Whether an event has orders: then the edge holds sales the definition does not carry.
const HAS_ORDERS_SQL: &str = "EXISTS (SELECT FROM orders o WHERE o.event_id = events.id)";

/// Queues a push of the event's current definition even when the edge is recorded as holding it
/// (the edge accepts the same version again): only for an event the edge should know and that
/// has no orders. False otherwise (nothing changes).
pub async fn force(conn: &mut PgConnection, event: Uuid) -> Result<bool, sqlx::Error> {
    let queued = sqlx::query(&format!(
        "INSERT INTO edge_sync (event_id, organization_id, wanted_version, state)
         SELECT id, organization_id, version, 'pending' FROM events
          WHERE id = $1 AND state IN ({VISIBLE_SQL}) AND NOT {HAS_ORDERS_SQL}
         ON CONFLICT (event_id) DO UPDATE SET wanted_version = GREATEST(edge_sync.wanted_version, excluded.wanted_version),
             state = 'pending', attempts = 0, next_attempt_at = now(), updated_at = now()"
    ))
    .bind(event)
    .execute(conn)
    .await?;
    Ok(queued.rows_affected() == 1)
}

/// True when the edge should know about an event in this state.
pub fn visible_at_edge(state: EventState) -> bool {
    matches!(state, EventState::Published | EventState::OnSale | EventState::SoldOut | EventState::Cancelled)
}

#[derive(sqlx::FromRow)]
struct EventRow {
    id: Uuid,
    venue_id: Uuid,
    title: String,
    state: EventState,
    version: i64,
    waiting_room: Value,
    hold_settings: Value,
    off_sale_seats: Value,
    zones: Value,
    ga_areas: Value,
}

#[derive(sqlx::FromRow)]
struct TierRow {
    id: Uuid,
    name: String,
    kind: String,
    ga_area: Option<String>,
    currency: String,
    price_minor: i64,
    zone_prices: Value,
    quantity: i32,
    sale_starts_at: Option<chrono::DateTime<chrono::Utc>>,
    sale_ends_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// What the edge should hold for an event now: (inventory, waiting-room settings).
pub async fn definition(db: &PgPool, event: Uuid) -> Result<(Inventory, WaitingRoomSettings), String> {
    let e: EventRow = sqlx::query_as(
        "SELECT e.id, e.venue_id, e.title, e.state, e.version, e.waiting_room, e.hold_settings, e.off_sale_seats, v.zones, v.ga_areas
         FROM events e JOIN venues v ON v.id = e.venue_id WHERE e.id = $1",
    )
    .bind(event)
    .fetch_one(db)
    .await
    .map_err(|e| e.to_string())?;
    let tiers: Vec<TierRow> = sqlx::query_as(
        "SELECT id, name, kind, ga_area, currency, price_minor, zone_prices, quantity, sale_starts_at, sale_ends_at FROM ticket_tiers
         WHERE event_id = $1 ORDER BY created_at, id",
    )
    .bind(event)
    .fetch_all(db)
    .await
    .map_err(|e| e.to_string())?;
    let currency = tiers.first().map(|t| t.currency.as_str()).unwrap_or("EUR");
    let currency = Currency::parse(currency).map_err(|e| e.to_string())?;
    let money = |amount_minor: i64| Money { amount_minor, currency };
    let zones: Vec<ZoneIn> = serde_json::from_value(e.zones).map_err(|e| e.to_string())?;
    let areas: Vec<GaArea> = serde_json::from_value(e.ga_areas).map_err(|e| e.to_string())?;
    // Seats are on sale when a seated tier prices them. Each seated tier costs its zone price in
    // a zone, or its base price; every one goes to the edge (the buyer picks one per hold), and a
    // zone's own price is the first tier's (what an older object sells at).
    let price_in = |tier: &TierRow, zone: &ZoneIn| {
        money(tier.zone_prices.get(zone.id.as_str()).and_then(Value::as_i64).unwrap_or(tier.price_minor))
    };
    let seated: Vec<&TierRow> = tiers.iter().filter(|t| t.kind == "seated").collect();
    let mut seat_map = SeatMap::default();
    if let Some(first) = seated.first() {
        seat_map.zones = zones
            .iter()
            .map(|z| PriceZone { id: z.id.clone(), name: z.name.clone(), price: price_in(first, z) })
            .collect();
        seat_map.seated_tiers = seated
            .iter()
            .filter_map(|t| {
                Some(SeatedTier {
                    id: TierId::parse(&t.id.to_string()).ok()?,
                    name: t.name.clone(),
                    prices: zones
                        .iter()
                        .map(|z| ZonePrice { zone: z.id.clone(), price: price_in(t, z) })
                        .collect(),
                    // Its quantity is a cap: the edge sells no more seats under it.
                    capacity: t.quantity.max(0) as u32,
                    sale_starts_at_ms: t.sale_starts_at.map(|at| at.timestamp_millis()),
                    sale_ends_at_ms: t.sale_ends_at.map(|at| at.timestamp_millis()),
                })
            })
            .collect();
        let sections = load_sections(db, e.venue_id).await.map_err(|e| e.to_string())?;
        let off_sale: std::collections::HashSet<String> =
            serde_json::from_value(e.off_sale_seats.clone()).unwrap_or_default();
        seat_map.sections = sections
            .into_iter()
            .map(|s| Section {
                id: s.id,
                name: s.name,
                rows: s
                    .rows
                    .into_iter()
                    .map(|r| Row {
                        label: r.label,
                        seats: r
                            .seats
                            .into_iter()
                            .map(|x| Seat {
                                off_sale: off_sale.contains(x.id.as_str()),
                                id: x.id,
                                label: x.label,
                                x: x.x,
                                y: x.y,
                                zone: x.zone,
                                accessibility: x.accessibility,
                                aisle_after: x.aisle_after,
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect();
    }
    seat_map.ga_tiers = tiers
        .iter()
        .filter(|t| t.kind == "ga")
        .filter_map(|t| {
            let area = areas.iter().find(|a| Some(a.id.as_str()) == t.ga_area.as_deref())?;
            Some(GaTier {
                id: TierId::parse(&t.id.to_string()).ok()?,
                name: format!("{} ({})", t.name, area.name),
                capacity: t.quantity.max(0) as u32,
                price: money(t.price_minor),
            })
        })
        .collect();
    let sharding =
        if seat_map.seat_count() > SHARD_ABOVE_SEATS { Sharding::BySection } else { Sharding::None };
    let settings: HoldSettings = serde_json::from_value(e.hold_settings).unwrap_or_default();
    let inventory = Inventory {
        event: EventId::parse(&e.id.to_string()).map_err(|e| e.to_string())?,
        version: e.version as u64,
        currency,
        seat_map,
        settings,
        sharding,
    };
    let mut room: WaitingRoomSettings = serde_json::from_value(e.waiting_room).map_err(|e| e.to_string())?;
    room.version = e.version as u64;
    room.display_name = e.title;
    if e.state == EventState::Cancelled {
        room.mode = QueueMode::Closed;
    }
    Ok((inventory, room))
}

/// Pushes one event's definition; the version the edge now holds.
async fn push(db: &PgPool, edge: &EdgeClient, event: Uuid) -> Result<i64, String> {
    let (inventory, room) = definition(db, event).await?;
    let version = inventory.version as i64;
    let body = serde_json::to_vec(&inventory).map_err(|e| e.to_string())?;
    edge.send(&event.to_string(), &InternalRoute::PutInventory, body).await.map_err(|e| e.to_string())?;
    let body = serde_json::to_vec(&room).map_err(|e| e.to_string())?;
    edge.send(&event.to_string(), &InternalRoute::PutWaitingRoom, body).await.map_err(|e| e.to_string())?;
    Ok(version)
}

/// Queues a push of `event`, or of every event the edge should know with `None`; answers how many
/// were queued (`regional-core republish`). Events with orders are not pushed ([`force`]).
pub async fn republish(db: &PgPool, event: Option<Uuid>) -> Result<u64, sqlx::Error> {
    let events: Vec<Uuid> = sqlx::query_scalar(&format!(
        "SELECT id FROM events WHERE ($1::uuid IS NULL OR id = $1) AND state IN ({VISIBLE_SQL}) ORDER BY id"
    ))
    .bind(event)
    .fetch_all(db)
    .await?;
    let mut conn = db.acquire().await?;
    let mut queued = 0;
    for event in events {
        queued += u64::from(force(&mut conn, event).await?);
    }
    Ok(queued)
}

/// Pushes every due event once; returns how many were attempted.
pub async fn sync_due(db: &PgPool, edge: &EdgeClient) -> Result<usize, sqlx::Error> {
    // Claim due rows with a lease, so that several core replicas never push the same event at once.
    let due: Vec<(Uuid, i64, i32)> = sqlx::query_as(
        "UPDATE edge_sync SET next_attempt_at = now() + make_interval(secs => $1), updated_at = now()
         WHERE event_id IN (SELECT event_id FROM edge_sync WHERE state IN ('pending', 'failing') AND next_attempt_at <= now()
                            ORDER BY next_attempt_at LIMIT 16 FOR UPDATE SKIP LOCKED)
         RETURNING event_id, wanted_version, attempts",
    )
    .bind(LEASE_SECS as f64)
    .fetch_all(db)
    .await?;
    for (event, wanted, attempts) in &due {
        match push(db, edge, *event).await {
            Ok(version) => {
                sqlx::query(
                    "UPDATE edge_sync SET synced_version = GREATEST(coalesce(synced_version, 0), $2), synced_at = now(),
                         attempts = 0, last_error = NULL, updated_at = now(),
                         state = CASE WHEN wanted_version <= $2 THEN 'synced' ELSE 'pending' END,
                         next_attempt_at = now()
                     WHERE event_id = $1",
                )
                .bind(event)
                .bind(version)
                .execute(db)
                .await?;
                tracing::info!(%event, version, "event synced to the edge");
            }
            Err(error) => {
                let backoff = (1i64 << (*attempts).clamp(0, 9)).min(MAX_BACKOFF_SECS);
                sqlx::query(
                    "UPDATE edge_sync SET state = 'failing', attempts = attempts + 1, last_error = $2,
                         next_attempt_at = now() + make_interval(secs => $3), updated_at = now()
                     WHERE event_id = $1",
                )
                .bind(event)
                .bind(&error)
                .bind(backoff as f64)
                .execute(db)
                .await?;
                tracing::warn!(%event, wanted, attempt = attempts + 1, %error, "edge push failed; will retry");
            }
        }
    }
    Ok(due.len())
}

/// Asks the edge what it holds of every event recorded as synced, and queues a push of each one it
/// no longer holds (404 `unpublished`) or holds at an older inventory version, unless it has orders
/// (then it is marked `lost`); answers how many were queued. The round ends at the first answer
/// that is not the edge's word (unreachable, another refusal): it changes nothing. No two rounds
/// run at once (an advisory lock: a replica that finds one running skips its own).
pub async fn check_edge(db: &PgPool, edge: &EdgeClient) -> Result<usize, sqlx::Error> {
    // A connection of its own, closed after the round: the session lock ends with it whatever
    // happens, and never goes back to the pool.
    let mut lock = db.acquire().await?.detach();
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended('edge-check', 0))")
        .fetch_one(&mut lock)
        .await?;
    if !locked {
        return Ok(0);
    }
    let checked = check_synced(db, edge).await;
    drop(lock);
    checked
}

async fn check_synced(db: &PgPool, edge: &EdgeClient) -> Result<usize, sqlx::Error> {
    let synced: Vec<(Uuid, i64)> = sqlx::query_as(&format!(
        "SELECT s.event_id, s.synced_version FROM edge_sync s JOIN events e ON e.id = s.event_id
         WHERE s.state = 'synced' AND e.state IN ({VISIBLE_SQL}) ORDER BY s.event_id"
    ))
    .fetch_all(db)
    .await?;
    let mut queued = 0;
    for (event, version) in synced {
        let held = match edge.send(&event.to_string(), &InternalRoute::Layout, Vec::new()).await {
            Ok(answer) => match serde_json::from_value::<LayoutAnswer>(answer) {
                Ok(layout) => Some(layout.inventory_version as i64),
                Err(error) => {
                    tracing::warn!(%event, %error, "edge check: an answer it cannot read; round ended");
                    break;
                }
            },
            // Only the edge's own word that it does not know the event (an edge without the route,
            // during a deploy, answers another 404).
            Err(EdgeError::Refused { status: 404, reason, .. }) if reason == "unpublished" => None,
            Err(error) => {
                tracing::warn!(%event, %error, "edge check: the edge could not say; round ended");
                break;
            }
        };
        if held.is_some_and(|held| held >= version) {
            continue;
        }
        // Pushed again when it has no orders, marked lost when it has; only if nothing changed since
        // it was read (a push in between has its own outcome).
        let why = match held {
            None => "the edge no longer held this event".to_owned(),
            Some(held) => format!("the edge held version {held} of {version}"),
        };
        let marked: Option<String> = sqlx::query_scalar(&format!(
            "UPDATE edge_sync SET attempts = 0, next_attempt_at = now(), updated_at = now(),
                 state = CASE WHEN (SELECT {HAS_ORDERS_SQL} FROM events WHERE id = $1) THEN 'lost' ELSE 'pending' END,
                 last_error = CASE WHEN (SELECT {HAS_ORDERS_SQL} FROM events WHERE id = $1)
                     THEN $3 || ', and it has orders: not pushed again (docs/runbook.md)' ELSE $3 END
             WHERE event_id = $1 AND state = 'synced' AND synced_version = $2
             RETURNING state"
        ))
        .bind(event)
        .bind(version)
        .bind(&why)
        .fetch_optional(db)
        .await?;
        match marked.as_deref() {
            Some("pending") => {
                tracing::warn!(%event, version, ?held, "the edge lost a synced event; pushing it again");
                queued += 1;
            }
            Some(_) => {
                tracing::error!(%event, version, ?held, "the edge lost an event with orders; not pushed again")
            }
            None => {}
        }
    }
    Ok(queued)
}

/// The publisher: pushes what is due until asked to stop (a push under way is finished and
/// recorded).
pub async fn run(db: PgPool, edge: EdgeClient, stop: crate::shutdown::Stop) {
    while !stop.requested() {
        match sync_due(&db, &edge).await {
            Ok(n) if n > 0 => continue,
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "publisher could not read its queue"),
        }
        if !stop.pause(Duration::from_millis(500)).await {
            break;
        }
    }
}

/// Every `check_every`, asks the edge what it still holds ([`check_edge`]), until asked to stop:
/// a task of its own, so that a slow round never delays a push.
pub async fn run_checks(db: PgPool, edge: EdgeClient, check_every: Duration, stop: crate::shutdown::Stop) {
    while !stop.requested() {
        if let Err(e) = check_edge(&db, &edge).await {
            tracing::error!(error = %e, "publisher could not check the edge");
        }
        if !stop.pause(check_every).await {
            break;
        }
    }
}

/// One event's row of the push queue.
#[derive(Debug, serde::Serialize, sqlx::FromRow)]
pub struct SyncState {
    pub state: String,
    pub wanted_version: i64,
    pub synced_version: Option<i64>,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub next_attempt_at: chrono::DateTime<chrono::Utc>,
    pub synced_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The sync state of an event, for the admin API.
pub async fn status(db: &PgPool, event: Uuid) -> Result<Value, sqlx::Error> {
    let row: Option<SyncState> = sqlx::query_as(
        "SELECT state, wanted_version, synced_version, attempts, last_error, next_attempt_at, synced_at
         FROM edge_sync WHERE event_id = $1",
    )
    .bind(event)
    .fetch_optional(db)
    .await?;
    Ok(match row {
        None => json!({ "state": "not_published" }),
        Some(row) => serde_json::to_value(row).unwrap_or_default(),
    })
}

/// A change the edge must learn: bump the event's version and, if the edge knows the event, queue
/// the push (in the same transaction as the change).
pub async fn touch(conn: &mut sqlx::PgConnection, event: Uuid) -> Result<()> {
    let (org, state, version): (Uuid, EventState, i64) = sqlx::query_as(
        "UPDATE events SET version = version + 1, updated_at = now() WHERE id = $1
         RETURNING organization_id, state, version",
    )
    .bind(event)
    .fetch_one(&mut *conn)
    .await?;
    if visible_at_edge(state) {
        enqueue(conn, event, org, version).await?;
    }
    Ok(())
}
