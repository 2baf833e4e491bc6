//! Notifications: e-mail to buyers (docs/notifications.md).
//!
//! - [`Notifier`] is an outbox consumer: it turns domain events into rendered mails in the
//!   `notifications` table, one per purpose (`dedup_key`), in the same transaction that records the
//!   message as consumed.
//! - [`reminders`] queues a reminder for every ticket holder when an event is near.
//! - [`sender`] sends due mails over SMTP with retries and backoff, parks a mail after repeated
//!   failure (visible to the operator: [`ops`] routes and `/metrics`), and caps mails per recipient
//!   per hour.

pub mod ops;
pub mod reminders;
pub mod sender;
pub mod templates;
pub mod waitlist;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use shared_types::token::TokenSigner;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::bus::{Consumer, ConsumerError, HandleFuture, Message};
use crate::models::event::Schedule;
use crate::tokens::{order_token, transfer_token};
use shared_types::money::money;

/// What every mail's links and sender need.
#[derive(Clone)]
pub struct MailSettings {
    /// Where buyers open their pages (the edge's public URL): links in mails.
    pub buyer_url: String,
    /// Signs the order tokens in the links.
    pub signer: TokenSigner,
}

/// The outbox consumer that queues mails.
pub struct Notifier {
    settings: Arc<MailSettings>,
}

impl Notifier {
    pub fn new(settings: Arc<MailSettings>) -> Self {
        Self { settings }
    }
}

impl Consumer for Notifier {
    fn name(&self) -> &'static str {
        "notifications"
    }

    fn topics(&self) -> &'static [&'static str] {
        &["orders", "tickets"]
    }

    fn wants(&self, m: &Message) -> bool {
        matches!(
            m.kind(),
            "order.paid"
                | "order.cancelled"
                | "order.refunded"
                | "order.hold_lost"
                | "ticket.reissued"
                | "ticket.transfer_offered"
        )
    }

    fn handle<'a>(&'a self, tx: &'a mut PgConnection, message: &'a Message) -> HandleFuture<'a> {
        Box::pin(async move {
            let p = &message.payload;
            let order = p["order_id"].as_str().and_then(|s| s.parse::<Uuid>().ok());
            let o = order.map(|o| o.to_string()).unwrap_or_default();
            let (kind, dedup, tickets) = match message.kind() {
                "order.paid" => {
                    ("order_confirmation", format!("order_confirmation:{o}"), ticket_ids(&p["tickets"]))
                }
                "order.cancelled" => ("order_cancelled", format!("order_cancelled:{o}"), vec![]),
                // A lost hold was told by its own mail (which promised the full refund).
                "order.refunded" if p["outcome"] == "hold_lost" => return Ok(()),
                "order.refunded" => ("order_refunded", format!("order_refunded:{o}"), vec![]),
                "order.hold_lost" => ("hold_lost", format!("hold_lost:{o}"), vec![]),
                "ticket.reissued" => {
                    let ticket = p["ticket_id"].as_str().and_then(|s| s.parse().ok());
                    let Some(ticket) = ticket else { return Ok(()) };
                    ("ticket_reissued", format!("ticket_reissued:{ticket}:{}", p["version"]), vec![ticket])
                }
                "ticket.transfer_offered" => {
                    let Some(transfer) = p["transfer_id"].as_str() else { return Ok(()) };
                    ("transfer_offer", format!("transfer_offer:{transfer}"), ticket_ids(&p["tickets"]))
                }
                _ => return Ok(()),
            };
            let Some(order) = order else {
                tracing::warn!(message = message.id, "notifications: a message without its order; skipped");
                return Ok(());
            };
            let Some(facts) = order_facts(tx, order).await? else {
                tracing::warn!(message = message.id, %order, "notifications: no such order; skipped");
                return Ok(());
            };
            let mut context = facts.context(&self.settings, &tickets, tx).await?;
            let recipient = match kind {
                "transfer_offer" => {
                    let to = p["to_email"].as_str().unwrap_or_default().to_owned();
                    let transfer: Uuid =
                        p["transfer_id"].as_str().and_then(|s| s.parse().ok()).unwrap_or_default();
                    let expires: DateTime<Utc> =
                        p["expires_at"].as_str().and_then(|s| s.parse().ok()).unwrap_or_else(Utc::now);
                    let token = transfer_token(
                        &self.settings.signer,
                        transfer,
                        facts.event_id,
                        &to,
                        expires,
                        facts.schedule.ends_at,
                    );
                    context["transfer"] = json!({
                        // The giver: the buyer, or a recipient passing the ticket on.
                        "from": p["from_email"].as_str().unwrap_or(&facts.email),
                        "link": format!("{}/transfers/{transfer}#{token}", self.settings.buyer_url.trim_end_matches('/')),
                        "expires": facts.local(expires),
                    });
                    to
                }
                "ticket_reissued" => p["holder_email"].as_str().unwrap_or(&facts.email).to_owned(),
                _ => facts.email.clone(),
            };
            context["outcome"] = Value::from(outcome_text(p["outcome"].as_str().unwrap_or_default()));
            // The amount the message reports (the order's row may have moved on since).
            if let Some(refund) = p["refund_minor"].as_i64() {
                context["order"]["refund"] = Value::from(money(refund, &facts.currency));
            }
            let mail = templates::render(kind, &context).map_err(|e| ConsumerError::from(e.to_string()))?;
            // Confirmations and reminders carry QR codes; the others only a link.
            let attach =
                if matches!(kind, "order_confirmation" | "ticket_reissued") { tickets } else { vec![] };
            queue(tx, &dedup, kind, &recipient, &mail, &attach, Some(order), Some(facts.event_id)).await?;
            // The same news by text, where a number was given for it (docs/sms.md).
            let phone = match kind {
                "order_confirmation" => facts.phone.clone(),
                "transfer_offer" => {
                    let transfer = p["transfer_id"].as_str().and_then(|s| s.parse::<Uuid>().ok());
                    sqlx::query_scalar("SELECT to_phone FROM ticket_transfers WHERE id = $1")
                        .bind(transfer)
                        .fetch_optional(&mut *tx)
                        .await?
                        .flatten()
                }
                _ => None,
            };
            let phone = match (phone, kind) {
                (Some(phone), "transfer_offer") => {
                    // Counted under a lock on the order: two offers at once cannot both be the third.
                    sqlx::query(
                        "SELECT pg_advisory_xact_lock(hashtextextended('sms-offers:' || $1::text, 0))",
                    )
                    .bind(order)
                    .execute(&mut *tx)
                    .await?;
                    let texted: i64 = sqlx::query_scalar(
                        "SELECT count(*) FROM sms_messages WHERE order_id = $1 AND kind = 'transfer_offer'
                           AND created_at > now() - interval '24 hours'",
                    )
                    .bind(order)
                    .fetch_one(&mut *tx)
                    .await?;
                    (texted < crate::sms::OFFER_TEXTS_PER_ORDER_PER_DAY).then_some(phone)
                }
                (phone, _) => phone,
            };
            if let Some(phone) = phone {
                let text =
                    crate::sms::render(kind, &context).map_err(|e| ConsumerError::from(e.to_string()))?;
                crate::sms::queue(tx, &dedup, kind, &phone, &text, Some(order), Some(facts.event_id)).await?;
            }
            Ok(())
        })
    }
}

fn ticket_ids(v: &Value) -> Vec<Uuid> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["ticket_id"].as_str().or(t.as_str()).and_then(|s| s.parse().ok()))
        .collect()
}

/// A rendered mail.
pub struct Mail {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Queues a mail once per `dedup_key` (a second one with the same key changes nothing). An address
/// nothing can reach ([`crate::privacy::undeliverable`]: erased, a walk-up buyer's) is never mailed: answers `false`.
#[allow(clippy::too_many_arguments)]
pub async fn queue(
    conn: &mut PgConnection,
    dedup_key: &str,
    kind: &str,
    recipient: &str,
    mail: &Mail,
    tickets: &[Uuid],
    order: Option<Uuid>,
    event: Option<Uuid>,
) -> Result<bool, sqlx::Error> {
    if crate::privacy::undeliverable(recipient) {
        return Ok(false);
    }
    let done = sqlx::query(
        "INSERT INTO notifications (id, dedup_key, kind, recipient, subject, text_body, html_body, ticket_ids, order_id, event_id)
         VALUES (gen_random_uuid(), $1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (dedup_key) DO NOTHING",
    )
    .bind(dedup_key)
    .bind(kind)
    .bind(recipient)
    .bind(&mail.subject)
    .bind(&mail.text)
    .bind(&mail.html)
    .bind(tickets)
    .bind(order)
    .bind(event)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// What a mail says of an order's outcome.
fn outcome_text(outcome: &str) -> &'static str {
    match outcome {
        "payment_failed" => "the payment did not go through",
        "abandoned" => "it was not paid in time",
        "buyer_cancelled" => "you cancelled it",
        "event_cancelled" => "the event was cancelled",
        "organizer_refunded" => "refunded by the organizer",
        "hold_expired" => "your seats' hold expired before the payment",
        "hold_lost" => "your seats' hold expired before the payment arrived",
        _ => "",
    }
}

/// An order and its event, as mails show them.
#[derive(sqlx::FromRow)]
pub(crate) struct OrderFacts {
    pub order_id: Uuid,
    pub event_id: Uuid,
    pub visitor_id: String,
    pub email: String,
    /// The buyer's mobile number, for texts (docs/sms.md).
    pub phone: Option<String>,
    pub currency: String,
    pub total_minor: i64,
    pub refund_minor: i64,
    pub title: String,
    pub venue: String,
    /// Paid at the box office: its refund is collected there (docs/box-office.md).
    pub at_counter: bool,
    #[sqlx(flatten)]
    pub schedule: Schedule,
}

pub(crate) async fn order_facts(
    conn: &mut PgConnection,
    order: Uuid,
) -> Result<Option<OrderFacts>, sqlx::Error> {
    sqlx::query_as(
        "SELECT o.id AS order_id, o.event_id, o.visitor_id, o.email, o.phone, o.currency, o.total_minor, o.refund_minor,
                e.title, v.name AS venue, e.starts_at, e.ends_at, e.time_zone,
                EXISTS (SELECT 1 FROM payments p WHERE p.order_id = o.id AND p.provider = $2) AS at_counter
         FROM orders o JOIN events e ON e.id = o.event_id JOIN venues v ON v.id = e.venue_id WHERE o.id = $1",
    )
    .bind(order)
    .bind(crate::payments::BOX_OFFICE)
    .fetch_optional(conn)
    .await
}

impl OrderFacts {
    /// A time as the event's audience reads it: in the event's time zone.
    pub fn local(&self, at: DateTime<Utc>) -> String {
        match self.schedule.time_zone.parse::<chrono_tz::Tz>() {
            Ok(_) => self.schedule.local(at, "%A %-d %B %Y, %H:%M (%Z)"),
            // A zone name that is well-formed but unknown: say plainly that the time is UTC.
            Err(_) => at.format("%A %-d %B %Y, %H:%M UTC").to_string(),
        }
    }

    /// The templates' context: event, order (with a link that opens it) and tickets.
    async fn context(
        &self,
        settings: &MailSettings,
        tickets: &[Uuid],
        conn: &mut PgConnection,
    ) -> Result<Value, sqlx::Error> {
        let token = order_token(&settings.signer, self.order_id, self.event_id, &self.visitor_id);
        let rows: Vec<(Option<String>, String)> = sqlx::query_as(
            "SELECT t.seat_id, tt.name FROM tickets t JOIN ticket_tiers tt ON tt.id = t.tier_id
             WHERE t.id = ANY($1) ORDER BY t.seat_id, t.id",
        )
        .bind(tickets)
        .fetch_all(conn)
        .await?;
        let base = settings.buyer_url.trim_end_matches('/');
        Ok(json!({
            "event": {
                "title": self.title,
                "venue": self.venue,
                "starts": self.local(self.schedule.starts_at),
                "link": format!("{base}/events/{}", self.event_id),
            },
            "order": {
                "id": self.order_id,
                "total": money(self.total_minor, &self.currency),
                "refund": money(self.refund_minor, &self.currency),
                "at_counter": self.at_counter,
                "link": format!("{base}/orders/{}#{token}", self.order_id),
            },
            "tickets": rows.iter().map(|(seat, tier)| json!({ "seat": seat, "tier": tier })).collect::<Vec<_>>(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticket_lists_read_both_shapes() {
        let id = Uuid::new_v4();
        assert_eq!(ticket_ids(&json!([{ "ticket_id": id }])), vec![id]);
        assert_eq!(ticket_ids(&json!([id])), vec![id]);
        assert!(ticket_ids(&json!(null)).is_empty());
    }
}
