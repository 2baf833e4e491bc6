//! Partner webhooks (docs/webhooks.md): an organization's HTTPS endpoints hear of its domain
//! events (an order paid, a ticket transferred, checked in, …), signed by the Standard Webhooks
//! scheme, retried with backoff, every attempt recorded with its answer, replayable, and disabled
//! after a long failure with a mail to the organization's admins.
//!
//! - [`Fanout`], an outbox consumer, writes one delivery per domain event and endpoint that asked
//!   for its type, in the transaction that records the message as consumed (once, whatever the
//!   redeliveries).
//! - [`dispatch`] sends due deliveries, records each attempt, schedules the retry or gives up, and
//!   disables an endpoint that failed for too long.
//! - [`routes`]: the endpoints' API, the deliveries' history and replays.
//! - [`signing`], [`target`] (SSRF guards) and [`settings`] (sealing keys, schedule).

pub mod dispatch;
pub mod routes;
pub mod settings;
pub mod signing;
pub mod target;

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::{PgConnection, PgPool};

use crate::bus::{Consumer, HandleFuture, Message, TOPICS};

/// The domain events an endpoint may ask for (docs/schemas/events.v1.json defines each `data`).
pub const EVENT_TYPES: [&str; 15] = [
    "order.created",
    "order.paid",
    "order.cancelled",
    "order.refunded",
    "order.hold_lost",
    "payment.succeeded",
    "payment.failed",
    "payment.cancelled",
    "payment.refunded",
    "ticket.issued",
    "ticket.voided",
    "ticket.reissued",
    "ticket.transfer_offered",
    "ticket.transferred",
    "ticket.checked_in",
];

/// The type of the test ping an organizer sends to an endpoint (`POST …/test`).
pub const TEST_TYPE: &str = "webhook.test";

/// What the routes and the consumer share: the settings, and which event types any enabled
/// endpoint asks for.
#[derive(Debug)]
pub struct Webhooks {
    pub settings: settings::Settings,
    /// The event types enabled endpoints ask for, and when they were read.
    subscribed: RwLock<Option<(Instant, HashSet<String>)>>,
}

impl Webhooks {
    pub fn new(settings: settings::Settings) -> Arc<Self> {
        Arc::new(Self { settings, subscribed: RwLock::new(None) })
    }

    /// Reads again which event types enabled endpoints ask for. The dispatcher does it every
    /// poll, and a route that changes an endpoint does it at once (other replicas within a poll).
    pub async fn refresh(&self, db: &PgPool) -> Result<(), sqlx::Error> {
        let types: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT unnest(event_types) FROM webhook_endpoints WHERE enabled")
                .fetch_all(db)
                .await?;
        let read = (Instant::now(), types.into_iter().collect());
        *self.subscribed.write().unwrap_or_else(|e| e.into_inner()) = Some(read);
        Ok(())
    }

    /// How old the set may be before it is not believed (three polls, at least 3 s).
    fn stale_after(&self) -> Duration {
        (self.settings.poll * 3).max(Duration::from_secs(3))
    }

    /// Whether some enabled endpoint may want `kind`: true when the set is unknown or too old (the
    /// database away, the dispatcher stuck): a message refused here is never offered again, so
    /// when in doubt it is taken, and the fan-out's query decides.
    fn wanted(&self, kind: &str) -> bool {
        match &*self.subscribed.read().unwrap_or_else(|e| e.into_inner()) {
            Some((at, types)) if at.elapsed() <= self.stale_after() => types.contains(kind),
            _ => true,
        }
    }
}

/// The outbox consumer that writes deliveries. A message no enabled endpoint asks for costs
/// nothing (no transaction, no record): the hot path's events pay only when a partner listens.
pub struct Fanout {
    hooks: Arc<Webhooks>,
}

impl Fanout {
    pub fn new(hooks: Arc<Webhooks>) -> Self {
        Self { hooks }
    }
}

impl Consumer for Fanout {
    fn name(&self) -> &'static str {
        "webhooks"
    }

    fn topics(&self) -> &'static [&'static str] {
        &TOPICS
    }

    fn wants(&self, m: &Message) -> bool {
        EVENT_TYPES.contains(&m.kind()) && self.hooks.wanted(m.kind())
    }

    fn handle<'a>(&'a self, tx: &'a mut PgConnection, message: &'a Message) -> HandleFuture<'a> {
        Box::pin(async move {
            let Some(event) = message.payload["event_id"].as_str().and_then(|s| s.parse::<uuid::Uuid>().ok())
            else {
                tracing::warn!(message = message.id, "webhooks: a message without its event; skipped");
                return Ok(());
            };
            fan_out(tx, message, event).await?;
            Ok(())
        })
    }
}

/// The body every endpoint receives: Standard Webhooks' `{type, timestamp, data}`, `data` being
/// the domain event as docs/schemas/events.v1.json defines it (with its `message_id`).
pub fn body(message: &Message) -> String {
    let data: serde_json::Value =
        serde_json::from_slice(&message.to_wire()).unwrap_or_else(|_| message.payload.clone());
    json!({ "type": message.kind(), "timestamp": message.payload["at"], "data": data }).to_string()
}

/// One delivery of `message` for each enabled endpoint of the event's organization that asks for
/// its type (none twice: a message offered again changes nothing).
async fn fan_out(tx: &mut PgConnection, message: &Message, event: uuid::Uuid) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO webhook_deliveries (id, endpoint_id, organization_id, outbox_id, event_type, body)
         SELECT gen_random_uuid(), w.id, w.organization_id, $3, $2, $4
         FROM webhook_endpoints w JOIN events e ON e.organization_id = w.organization_id
         WHERE e.id = $1 AND w.enabled AND $2 = ANY (w.event_types)
         -- Waits for an endpoint being disabled and reads it again: none lands after its
         -- pending deliveries were failed.
         FOR SHARE OF w
         ON CONFLICT (endpoint_id, outbox_id) DO NOTHING",
    )
    .bind(event)
    .bind(message.kind())
    .bind(message.id)
    .bind(body(message))
    .execute(tx)
    .await?;
    Ok(done.rows_affected())
}
