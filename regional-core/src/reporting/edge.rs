//! What only the edge knows of a sale: seats held and available, the holds' counters (placed,
//! released, expired, sold, how late expiries ran) and the waiting room (people waiting, admitted
//! per minute, average wait, refusals by reason).
//!
//! Read through the edge's signed internal routes (`GET /internal/v1/events/{id}/stats` and
//! `…/waiting-room`, signed with the core's key like every core → edge call). A scraper reads every
//! event on sale each `EDGE_SCRAPE_SECS` and keeps the last answer, which `/metrics` shows; reports
//! and the dashboard use an answer younger than [`FRESH`] or ask again (bounded by [`ASK_TIMEOUT`]).
//! An edge that cannot be reached makes these figures "unavailable", never a failed report.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::edge_client::EdgeClient;
use shared_types::internal_api::InternalRoute;

/// An answer this young is used as is.
pub const FRESH: Duration = Duration::from_secs(5);
/// How long a report waits for the edge.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(3);
/// Events scraped at once.
const SCRAPE_CONCURRENCY: usize = 8;
/// Most events scraped per round (the soonest first).
const SCRAPE_MAX_EVENTS: i64 = 500;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SeatCounts {
    pub capacity: u64,
    pub available: u64,
    pub held: u64,
    pub sold: u64,
}

impl SeatCounts {
    fn add(&mut self, v: &Value) {
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        self.capacity += n("capacity");
        self.available += n("available");
        self.held += n("held");
        self.sold += n("sold");
    }
}

/// The holds' counters since the event was published at the edge.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HoldCounters {
    pub placed: u64,
    pub released: u64,
    pub expired: u64,
    pub sold: u64,
    pub live: u64,
    /// How late the latest-running expiry was, and on average (after the hold's expiry time).
    pub expiry_lateness_max_ms: u64,
    pub expiry_lateness_avg_ms: f64,
}

/// The waiting room.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueFigures {
    /// `open`, `pre_queue`, `paused`, `sold_out`, … (docs/waiting-room in api.md).
    pub phase: String,
    /// People in the line, not yet admitted.
    pub waiting: u64,
    /// Admitted and still shopping.
    pub active: u64,
    pub admitted_total: u64,
    /// Over the last minute.
    pub admitted_per_minute: f64,
    /// Of everyone admitted so far: from the on-sale time for the pre-queue, from joining after.
    pub average_wait_seconds: f64,
    /// Refusals by reason (bot checks, bad tokens, limits), as the edge's isolates reported them.
    pub refusals: BTreeMap<String, u64>,
}

/// One event as the edge sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EdgePicture {
    pub fetched_at: DateTime<Utc>,
    /// Every seat and place of the event.
    pub totals: SeatCounts,
    /// Seats of the seat map (the seated tier's).
    pub seats: SeatCounts,
    /// General-admission tiers, by tier id.
    pub ga_tiers: BTreeMap<Uuid, SeatCounts>,
    /// Seated tiers, by tier id: the seats held and sold under each, and how many more it may
    /// sell. Empty for an inventory from before seated tiers had counts of their own.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub seated_tiers: BTreeMap<Uuid, SeatCounts>,
    pub holds: HoldCounters,
    pub queue: QueueFigures,
    /// The event's waiting list, when it keeps one (or kept one: it has entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waitlist: Option<WaitlistFigures>,
}

/// An event's waiting list as the edge keeps it (docs/waiting-list.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WaitlistFigures {
    pub enabled: bool,
    pub closed: bool,
    /// People waiting for an offer.
    pub waiting: u64,
    /// Offers standing (places held for someone on the list).
    pub offers_out: u64,
    /// Offers made, claimed (bought), lapsed, declined and withdrawn, since the list began.
    pub offers: BTreeMap<String, u64>,
    /// Entries per what they asked for (`any`, `seats`, a GA tier's id), by state.
    pub by_pool: BTreeMap<String, BTreeMap<String, u64>>,
}

impl WaitlistFigures {
    /// From the list's counts (`GET …/waitlist`); `None` for a list that is off and was never used.
    pub fn parse(summary: &Value) -> Option<Self> {
        let figures = WaitlistFigures {
            enabled: summary["settings"]["enabled"].as_bool().unwrap_or(false),
            closed: summary["closed"].as_bool().unwrap_or(false),
            waiting: summary["waiting"].as_u64().unwrap_or(0),
            offers_out: summary["offers_out"].as_u64().unwrap_or(0),
            offers: serde_json::from_value(summary["offers"].clone()).unwrap_or_default(),
            by_pool: serde_json::from_value(summary["by_pool"].clone()).unwrap_or_default(),
        };
        (figures.enabled || !figures.by_pool.is_empty()).then_some(figures)
    }
}

impl EdgePicture {
    /// The counts of one of the event's tiers.
    pub fn tier(&self, tier: Uuid, kind: &str) -> Option<SeatCounts> {
        if kind == "seated" {
            // Its own counts; the seat map's when the edge has none per tier (a report then
            // shows every seated tier the whole map).
            Some(self.seated_tiers.get(&tier).copied().unwrap_or(self.seats))
        } else {
            self.ga_tiers.get(&tier).copied()
        }
    }

    /// From the answers of the edge's two routes.
    pub fn parse(stats: &Value, room: &Value) -> Result<Self, String> {
        let shards = stats["shards"].as_array().ok_or("the edge's stats name no shards")?;
        let mut picture = EdgePicture { fetched_at: Utc::now(), ..Default::default() };
        for shard in shards {
            let shard = &shard["stats"];
            for pair in shard["sections"].as_array().into_iter().flatten() {
                picture.seats.add(&pair[1]);
            }
            for pair in shard["tiers"].as_array().into_iter().flatten() {
                let id = pair[0].as_str().and_then(|s| s.parse().ok()).ok_or("a tier id is not a uuid")?;
                picture.ga_tiers.entry(id).or_default().add(&pair[1]);
            }
            // Each section's shard sells its share of every seated tier: added up.
            for pair in shard["seated_tiers"].as_array().into_iter().flatten() {
                let id = pair[0].as_str().and_then(|s| s.parse().ok()).ok_or("a tier id is not a uuid")?;
                picture.seated_tiers.entry(id).or_default().add(&pair[1]);
            }
        }
        picture.totals = picture.seats;
        for counts in picture.ga_tiers.values() {
            picture.totals.capacity += counts.capacity;
            picture.totals.available += counts.available;
            picture.totals.held += counts.held;
            picture.totals.sold += counts.sold;
        }
        let s = &stats["stats"];
        let n = |k: &str| s[k].as_u64().unwrap_or(0);
        let finished = n("holds_expired");
        picture.holds = HoldCounters {
            placed: n("holds_placed"),
            released: n("holds_released"),
            expired: finished,
            sold: n("holds_sold"),
            live: n("live_holds"),
            expiry_lateness_max_ms: n("expiry_lateness_max_ms"),
            expiry_lateness_avg_ms: if finished > 0 {
                n("expiry_lateness_total_ms") as f64 / finished as f64
            } else {
                0.0
            },
        };
        let view = &room["view"];
        picture.queue = QueueFigures {
            phase: view["phase"].as_str().unwrap_or("unknown").to_owned(),
            waiting: view["waiting"].as_u64().unwrap_or(0),
            active: view["active"].as_u64().unwrap_or(0),
            admitted_total: view["admitted_total"].as_u64().unwrap_or(0),
            admitted_per_minute: view["admit_rate_per_minute"].as_f64().unwrap_or(0.0),
            average_wait_seconds: room["average_wait_ms"].as_f64().unwrap_or(0.0) / 1000.0,
            refusals: serde_json::from_value(room["refusals"].clone()).unwrap_or_default(),
        };
        Ok(picture)
    }
}

/// The last answer for an event.
#[derive(Debug, Clone)]
struct Scraped {
    at: Instant,
    picture: Result<EdgePicture, String>,
}

/// The edge's figures, scraped and asked for.
#[derive(Default)]
pub struct EdgeStats {
    edge: Option<EdgeClient>,
    last: RwLock<HashMap<Uuid, Scraped>>,
}

impl EdgeStats {
    /// Without an edge (no `CORE_SIGNING_KEY`): every picture is unavailable.
    pub fn disabled() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn new(edge: EdgeClient) -> Arc<Self> {
        Arc::new(Self { edge: Some(edge), last: RwLock::default() })
    }

    /// True when the core has an edge to ask (and to publish to).
    pub fn configured(&self) -> bool {
        self.edge.is_some()
    }

    /// The edge's answer to a signed `GET` of `path_and_query`, asked now (bounded in time).
    pub async fn get(
        &self,
        path_and_query: &str,
    ) -> Result<serde_json::Value, crate::edge_client::EdgeError> {
        use crate::edge_client::EdgeError;
        let Some(edge) = &self.edge else {
            return Err(EdgeError::Unreachable("the core has no edge configured".into()));
        };
        tokio::time::timeout(ASK_TIMEOUT, edge.get(path_and_query)).await.unwrap_or_else(|_| {
            Err(EdgeError::Unreachable(format!("the edge did not answer within {} s", ASK_TIMEOUT.as_secs())))
        })
    }

    /// The edge's answer to `route` about `event`, asked now (bounded in time).
    pub async fn call(
        &self,
        event: Uuid,
        route: &InternalRoute,
    ) -> Result<serde_json::Value, crate::edge_client::EdgeError> {
        let body = if route.method() == "POST" { b"{}".to_vec() } else { Vec::new() };
        self.call_with(event, route, body).await
    }

    /// [`Self::call`] with this body.
    pub async fn call_with(
        &self,
        event: Uuid,
        route: &InternalRoute,
        body: Vec<u8>,
    ) -> Result<serde_json::Value, crate::edge_client::EdgeError> {
        use crate::edge_client::EdgeError;
        let Some(edge) = &self.edge else {
            return Err(EdgeError::Unreachable("the core has no edge configured".into()));
        };
        match tokio::time::timeout(ASK_TIMEOUT, edge.send(&event.to_string(), route, body)).await {
            Ok(answer) => answer,
            Err(_) => Err(EdgeError::Unreachable(format!(
                "the edge did not answer within {} s",
                ASK_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Whether anyone has joined the event's line, asked now (not from the cache: a settings
    /// change is judged by it). An event the edge does not know yet has nobody in line.
    pub async fn anyone_joined(&self, event: Uuid) -> Result<bool, String> {
        let Some(edge) = &self.edge else { return Ok(false) };
        let asked = tokio::time::timeout(
            ASK_TIMEOUT,
            edge.send(&event.to_string(), &InternalRoute::WaitingRoom, Vec::new()),
        )
        .await;
        match asked {
            Ok(Ok(room)) => Ok(room["anyone_joined"].as_bool().unwrap_or(true)),
            Ok(Err(crate::edge_client::EdgeError::Refused { status: 404, .. })) => Ok(false),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("the edge did not answer within {} s", ASK_TIMEOUT.as_secs())),
        }
    }

    /// The event's picture: the last one if fresh, else asked now.
    pub async fn picture(&self, event: Uuid) -> Result<EdgePicture, String> {
        if let Some(s) = self.last.read().ok().and_then(|m| m.get(&event).cloned()) {
            if s.at.elapsed() < FRESH {
                return s.picture;
            }
        }
        self.ask(event).await
    }

    /// Asks the edge and keeps the answer.
    async fn ask(&self, event: Uuid) -> Result<EdgePicture, String> {
        let Some(edge) = &self.edge else { return Err("the core has no edge configured".into()) };
        let event_id = event.to_string();
        let both = async {
            let (stats, room, list) = tokio::join!(
                edge.send(&event_id, &InternalRoute::Stats, Vec::new()),
                edge.send(&event_id, &InternalRoute::WaitingRoom, Vec::new()),
                edge.send(&event_id, &InternalRoute::Waitlist, Vec::new())
            );
            let mut picture =
                EdgePicture::parse(&stats.map_err(|e| e.to_string())?, &room.map_err(|e| e.to_string())?)?;
            // A list the edge cannot show is left out (the rest of the picture stands).
            picture.waitlist = list.ok().as_ref().and_then(WaitlistFigures::parse);
            Ok(picture)
        };
        let picture = match tokio::time::timeout(ASK_TIMEOUT, both).await {
            Ok(p) => p,
            Err(_) => Err(format!("the edge did not answer within {} s", ASK_TIMEOUT.as_secs())),
        };
        if let Ok(mut last) = self.last.write() {
            last.insert(event, Scraped { at: Instant::now(), picture: picture.clone() });
        }
        picture
    }

    /// Scrapes the events on sale (published, on sale or sold out, not ended a day ago) until
    /// asked to stop.
    pub async fn run_scraper(self: Arc<Self>, db: PgPool, every: Duration, stop: crate::shutdown::Stop) {
        if self.edge.is_none() {
            return;
        }
        while !stop.requested() {
            match events_on_sale(&db).await {
                Ok(events) => {
                    let asks = events.iter().copied().map(|event| {
                        let this = Arc::clone(&self);
                        async move { this.ask(event).await.is_ok() }
                    });
                    let _: Vec<bool> =
                        futures_util::stream::iter(asks).buffer_unordered(SCRAPE_CONCURRENCY).collect().await;
                    if let Ok(mut last) = self.last.write() {
                        last.retain(|id, _| events.contains(id));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "edge scrape: could not list the events on sale"),
            }
            if !stop.pause(every).await {
                break;
            }
        }
    }

    /// The last answers into `s`, labelled by event.
    pub fn collect(&self, s: &mut crate::figures::Snapshot) {
        let Ok(last) = self.last.read() else { return };
        let mut events: Vec<(&Uuid, &Scraped)> = last.iter().collect();
        events.sort_by_key(|(id, _)| **id);
        for (id, scraped) in events {
            let e = || vec![("event", id.to_string())];
            let with = |k: &'static str, v: &str| vec![("event", id.to_string()), (k, v.to_owned())];
            s.gauge(
                "ticketing_edge_scrape_ok",
                "1 when the edge answered the last scrape of the event",
                e(),
                scraped.picture.is_ok(),
            );
            s.gauge(
                "ticketing_edge_scrape_age_seconds",
                "Age of the last scrape of the event",
                e(),
                scraped.at.elapsed().as_secs_f64(),
            );
            let Ok(p) = &scraped.picture else { continue };
            for (state, n) in
                [("available", p.totals.available), ("held", p.totals.held), ("sold", p.totals.sold)]
            {
                s.gauge(
                    "ticketing_edge_seats",
                    "Seats and places at the edge, by state",
                    with("state", state),
                    n,
                );
            }
            let h = &p.holds;
            for (outcome, n) in
                [("placed", h.placed), ("released", h.released), ("expired", h.expired), ("sold", h.sold)]
            {
                s.counter(
                    "ticketing_edge_holds",
                    "Holds placed, and how they ended",
                    with("outcome", outcome),
                    n,
                );
            }
            let q = &p.queue;
            s.gauge("ticketing_edge_holds_live", "Holds not yet ended", e(), h.live);
            s.gauge(
                "ticketing_edge_hold_expiry_lateness_max_seconds",
                "How late the latest expiry ran after the hold's expiry time",
                e(),
                h.expiry_lateness_max_ms as f64 / 1000.0,
            );
            s.gauge(
                "ticketing_edge_hold_expiry_lateness_avg_seconds",
                "How late expiries ran on average",
                e(),
                h.expiry_lateness_avg_ms / 1000.0,
            );
            s.gauge(
                "ticketing_edge_queue_waiting",
                "People in the waiting room not yet admitted",
                e(),
                q.waiting,
            );
            s.gauge("ticketing_edge_queue_active", "People admitted and still shopping", e(), q.active);
            s.counter(
                "ticketing_edge_queue_admitted",
                "People admitted from the waiting room",
                e(),
                q.admitted_total,
            );
            s.gauge(
                "ticketing_edge_queue_admitted_per_minute",
                "Admissions over the last minute",
                e(),
                q.admitted_per_minute,
            );
            s.gauge(
                "ticketing_edge_queue_average_wait_seconds",
                "Average wait of the people admitted so far",
                e(),
                q.average_wait_seconds,
            );
            for (reason, n) in &q.refusals {
                let reason: String =
                    reason.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_')).collect();
                s.counter(
                    "ticketing_edge_refusals",
                    "Requests the edge refused (bot checks, tokens, limits), by reason; ip-limit-unavailable counts joins let through unchecked because the rate limiter failed",
                    with("reason", &reason),
                    *n,
                );
            }
        }
    }
}

/// Events whose sale the edge runs now: published, on sale or sold out, not ended a day ago.
async fn events_on_sale(db: &PgPool) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM events WHERE state IN ('published', 'on_sale', 'sold_out')
           AND ends_at > now() - interval '1 day' ORDER BY starts_at LIMIT $1",
    )
    .bind(SCRAPE_MAX_EVENTS)
    .fetch_all(db)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_picture_sums_the_shards_and_reads_the_line() {
        let ga = Uuid::new_v4();
        let c = |cap: u64, a: u64, h: u64, s: u64| json!({ "capacity": cap, "available": a, "held": h, "sold": s });
        let (adult, child) = (Uuid::new_v4(), Uuid::new_v4());
        let stats = json!({ "shards": [
            { "stats": { "sections": [["A", c(10, 6, 3, 1)]], "tiers": [[ga.to_string(), c(100, 90, 4, 6)]],
                         "seated_tiers": [[adult.to_string(), c(7, 4, 2, 1)], [child.to_string(), c(3, 2, 1, 0)]] } },
            { "stats": { "sections": [["B", c(5, 5, 0, 0)]], "tiers": [],
                         "seated_tiers": [[adult.to_string(), c(4, 4, 0, 0)], [child.to_string(), c(1, 1, 0, 0)]] } } ],
            "stats": { "holds_placed": 9, "holds_released": 1, "holds_expired": 2, "holds_sold": 4, "live_holds": 2,
                       "expiry_lateness_max_ms": 900, "expiry_lateness_total_ms": 1000 } });
        let room = json!({ "view": { "phase": "open", "waiting": 40, "active": 7, "admitted_total": 70,
                                     "admit_rate_per_minute": 60.0 },
                           "average_wait_ms": 12500, "refusals": { "bad-headers": 3, "pow-invalid": 1 } });
        let p = EdgePicture::parse(&stats, &room).unwrap();
        assert_eq!(p.seats, SeatCounts { capacity: 15, available: 11, held: 3, sold: 1 });
        assert_eq!(p.tier(ga, "ga"), Some(SeatCounts { capacity: 100, available: 90, held: 4, sold: 6 }));
        // Each seated tier its own counts, summed over the shards: the held seats once, not per tier.
        assert_eq!(
            p.tier(adult, "seated"),
            Some(SeatCounts { capacity: 11, available: 8, held: 2, sold: 1 })
        );
        assert_eq!(p.tier(child, "seated"), Some(SeatCounts { capacity: 4, available: 3, held: 1, sold: 0 }));
        assert_eq!(p.tier(Uuid::new_v4(), "seated"), Some(p.seats), "an older edge: the seat map's");
        assert_eq!(p.totals.held, 7);
        assert_eq!(p.holds.expiry_lateness_avg_ms, 500.0);
        assert_eq!(p.queue.average_wait_seconds, 12.5);
        assert_eq!(p.queue.refusals["bad-headers"], 3);
        assert!(EdgePicture::parse(&json!({}), &room).is_err());
    }
}
