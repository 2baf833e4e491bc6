//! Waiting-list offers by mail (docs/waiting-list.md). The edge's list makes the offers; this task
//! reads the new ones of each event that keeps a list (a signed `GET …/waitlist/offers?after=`,
//! from the position it read last) and queues one mail per offer in the transaction that moves its
//! position forward: an offer read is mailed, once (the dedup key is the event, the entry and the
//! offer's end), whatever the number of cores and however often one restarts.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use shared_types::internal_api::{InternalRoute, WaitlistOffers};
use sqlx::PgPool;
use uuid::Uuid;

use super::{queue, templates, MailSettings};
use crate::edge_client::EdgeClient;
use crate::models::event::local_time;

/// An event whose list may have offers to mail, and where its mail stopped reading.
#[derive(sqlx::FromRow)]
struct Listed {
    id: Uuid,
    title: String,
    venue: String,
    starts_at: DateTime<Utc>,
    time_zone: String,
    seq: Option<i64>,
}

/// Reads and queues the new offers of every event that keeps a waiting list; answers how many
/// mails it queued.
pub async fn mail_new_offers(
    db: &PgPool,
    edge: &EdgeClient,
    settings: &MailSettings,
) -> Result<usize, String> {
    let events: Vec<Listed> = sqlx::query_as(
        "SELECT e.id, e.title, v.name AS venue, e.starts_at, e.time_zone, c.seq
         FROM events e JOIN venues v ON v.id = e.venue_id LEFT JOIN waitlist_cursors c ON c.event_id = e.id
         WHERE e.state IN ('published', 'on_sale', 'sold_out') AND e.ends_at > now()
           AND e.waiting_room -> 'waitlist' ->> 'enabled' = 'true'",
    )
    .fetch_all(db)
    .await
    .map_err(|e| e.to_string())?;
    let mut queued = 0;
    for event in events {
        match mail_event(db, edge, settings, &event).await {
            Ok(n) => queued += n,
            Err(e) => {
                tracing::warn!(event = %event.id, error = %e, "waiting-list offers: not read; will retry")
            }
        }
    }
    Ok(queued)
}

async fn mail_event(
    db: &PgPool,
    edge: &EdgeClient,
    settings: &MailSettings,
    event: &Listed,
) -> Result<usize, String> {
    let after = event.seq.unwrap_or(-1);
    let path = format!("{}?after={after}", InternalRoute::WaitlistOffers.path(&event.id.to_string()));
    let answer = edge.get(&path).await.map_err(|e| e.to_string())?;
    let read: WaitlistOffers =
        serde_json::from_value(answer).map_err(|e| format!("not a list of offers: {e}"))?;
    // Offers after one not held yet come with the position before it (read again next time):
    // mailed now all the same, once each (the dedup key).
    if read.next <= after && read.offers.is_empty() {
        return Ok(0);
    }
    let base = settings.buyer_url.trim_end_matches('/');
    let mut tx = db.begin().await.map_err(|e| e.to_string())?;
    let mut queued = 0;
    for offer in &read.offers {
        if !crate::validate::valid_email(&offer.email) {
            tracing::warn!(event = %event.id, entry = offer.entry, "waiting-list offer without a usable address; not mailed");
            continue;
        }
        let until = DateTime::<Utc>::from_timestamp_millis(offer.until).unwrap_or_else(Utc::now);
        let local = |at| local_time(at, &event.time_zone, "%A %-d %B %Y, %H:%M (%Z)");
        let context = json!({
            "event": {
                "title": event.title,
                "venue": event.venue,
                "starts": local(event.starts_at),
                "link": format!("{base}/events/{}", event.id),
            },
            "offer": {
                "quantity": offer.quantity,
                "until": local(until),
                "link": format!("{base}/events/{}/offer#{}", event.id, offer.token),
            },
        });
        let mail = templates::render("waitlist_offer", &context).map_err(|e| e.to_string())?;
        // One mail per offer: an entry offered again (after a withdrawn offer) gets another.
        let key = format!("waitlist_offer:{}:{}:{}", event.id, offer.entry, offer.until);
        if queue(&mut tx, &key, "waitlist_offer", &offer.email, &mail, &[], None, Some(event.id))
            .await
            .map_err(|e| e.to_string())?
        {
            queued += 1;
        }
    }
    sqlx::query(
        "INSERT INTO waitlist_cursors (event_id, seq) VALUES ($1, $2)
         ON CONFLICT (event_id) DO UPDATE SET seq = GREATEST(waitlist_cursors.seq, excluded.seq), updated_at = now()",
    )
    .bind(event.id)
    .bind(read.next)
    .execute(&mut *tx)
    .await
    .map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())?;
    Ok(queued)
}

/// Mails new offers every `every` until asked to stop.
pub async fn run(
    db: PgPool,
    edge: EdgeClient,
    settings: Arc<MailSettings>,
    every: Duration,
    stop: crate::shutdown::Stop,
) {
    while !stop.requested() {
        match mail_new_offers(&db, &edge, &settings).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(mails = n, "waiting-list offers queued"),
            Err(e) => tracing::warn!(error = %e, "waiting-list offers: failed; will retry"),
        }
        if !stop.pause(every).await {
            break;
        }
    }
}
