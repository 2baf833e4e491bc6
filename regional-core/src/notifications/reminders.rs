//! Event reminders: when an event starts within the lead time, every holder of a valid ticket gets
//! one mail with their tickets (once per event and holder, whatever the number of cores).

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use super::{order_facts, queue, templates, MailSettings};

/// Queues the reminders of events that start within `lead` and have not had theirs; answers how
/// many mails it queued.
pub async fn queue_due(
    db: &PgPool,
    settings: &MailSettings,
    lead: chrono::Duration,
) -> Result<usize, String> {
    let mut tx = db.begin().await.map_err(|e| e.to_string())?;
    let events: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM events
         WHERE state IN ('published', 'on_sale', 'sold_out') AND reminders_queued_at IS NULL
           AND starts_at > now() AND starts_at <= now() + $1
         ORDER BY starts_at LIMIT 10 FOR UPDATE SKIP LOCKED",
    )
    .bind(lead)
    .fetch_all(&mut *tx)
    .await
    .map_err(|e| e.to_string())?;
    let mut queued = 0;
    for event in events {
        // One mail per holder (a transferred ticket reminds its new holder), with an order of theirs
        // for the link.
        let holders: Vec<(String, Vec<Uuid>, Uuid)> = sqlx::query_as(
            "SELECT holder_email, array_agg(id ORDER BY seat_id, id), (array_agg(order_id ORDER BY created_at))[1]
             FROM tickets WHERE event_id = $1 AND state = 'valid' GROUP BY holder_email",
        )
        .bind(event)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| e.to_string())?;
        for (holder, tickets, order) in holders {
            let Some(facts) = order_facts(&mut tx, order).await.map_err(|e| e.to_string())? else { continue };
            let context = facts.context(settings, &tickets, &mut tx).await.map_err(|e| e.to_string())?;
            let mail = templates::render("event_reminder", &context).map_err(|e| e.to_string())?;
            let key = format!("event_reminder:{event}:{}", holder.to_lowercase());
            if queue(&mut tx, &key, "event_reminder", &holder, &mail, &tickets, Some(order), Some(event))
                .await
                .map_err(|e| e.to_string())?
            {
                queued += 1;
            }
        }
        // By text too, to buyers who gave a number, for the tickets they still hold (docs/sms.md):
        // one per buyer and number (a number typed on two buyers' orders gets each their own).
        let texts: Vec<(String, Vec<Uuid>, Uuid)> = sqlx::query_as(
            "SELECT o.phone, array_agg(t.id ORDER BY t.seat_id, t.id), (array_agg(o.id ORDER BY o.created_at))[1]
             FROM orders o JOIN tickets t ON t.order_id = o.id
             WHERE o.event_id = $1 AND o.phone IS NOT NULL AND t.state = 'valid' AND lower(t.holder_email) = lower(o.email)
             GROUP BY o.phone, lower(o.email)",
        )
        .bind(event)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| e.to_string())?;
        for (phone, tickets, order) in texts {
            let Some(facts) = order_facts(&mut tx, order).await.map_err(|e| e.to_string())? else { continue };
            let context = facts.context(settings, &tickets, &mut tx).await.map_err(|e| e.to_string())?;
            let text = crate::sms::render("event_reminder", &context).map_err(|e| e.to_string())?;
            let key = format!("event_reminder:{event}:{phone}:{order}");
            crate::sms::queue(&mut tx, &key, "event_reminder", &phone, &text, Some(order), Some(event))
                .await
                .map_err(|e| e.to_string())?;
        }
        sqlx::query("UPDATE events SET reminders_queued_at = now() WHERE id = $1")
            .bind(event)
            .execute(&mut *tx)
            .await
            .map_err(|e| e.to_string())?;
    }
    tx.commit().await.map_err(|e| e.to_string())?;
    Ok(queued)
}

/// Queues reminders every `every` until asked to stop.
pub async fn run(
    db: PgPool,
    settings: Arc<MailSettings>,
    lead: chrono::Duration,
    every: Duration,
    stop: crate::shutdown::Stop,
) {
    while !stop.requested() {
        match queue_due(&db, &settings, lead).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(mails = n, "event reminders queued"),
            Err(e) => tracing::warn!(error = %e, "event reminders: failed; will retry"),
        }
        if !stop.pause(every).await {
            break;
        }
    }
}
