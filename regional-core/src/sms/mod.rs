//! SMS (docs/sms.md): order confirmations, event reminders and transfer offers by text message when
//! the buyer (or the giver, for the recipient of a transfer) gives a phone number, through a
//! provider speaking Twilio's Messages API.
//!
//! - [`queue`] writes a message to `sms_messages` once per purpose (`dedup_key`), in the
//!   transaction of what it tells; an opted-out number gets nothing.
//! - [`sender`] sends due messages with a lease, retries with backoff, caps messages per number
//!   and day, and never texts a number that opted out since.
//! - [`routes`] takes the provider's signed delivery reports and incoming messages (`STOP` opts a
//!   number out, `START` back in), and shows operators the messages and their delivery status.
//! - [`twilio`] is the provider's client and its request signatures.

pub mod routes;
pub mod sender;
pub mod twilio;

use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::templates;

/// What a message may be about (each has a template `templates/sms/<kind>.txt`).
pub const KINDS: [&str; 3] = ["order_confirmation", "event_reminder", "transfer_offer"];

/// Three concatenated GSM-7 segments (153 characters each): what a text with the longest title,
/// venue and giver and a link of about 300 characters stays within (a title with characters
/// outside GSM-7 makes the text UCS-2: 67 characters a segment).
pub const MAX_BODY_CHARS: usize = 459;

/// SMS as the core is configured for it (`AppState::sms`; `None` when it is off).
#[derive(Debug, Clone)]
pub struct Sms {
    pub provider: twilio::TwilioSettings,
    pub reach: Reach,
}

/// What a shop's SMS needs besides the provider: which numbers it texts.
#[derive(Debug, Clone, Default)]
pub struct Reach {
    /// Country calling codes (with `+`) that numbers must start with; empty for any.
    pub allowed_prefixes: Vec<String>,
}

impl Reach {
    /// The number as E.164 (`+` and 7 to 15 digits, no leading zero), spaces, dots, dashes and
    /// brackets removed; or why it is not one this shop texts.
    pub fn phone(&self, raw: &str) -> Result<String, String> {
        let raw = raw.trim();
        if raw.len() > 32 {
            return Err("must be a phone number in international form, such as +447700900123".into());
        }
        let number: String = raw.chars().filter(|c| !matches!(c, ' ' | '.' | '-' | '(' | ')')).collect();
        let digits = number.strip_prefix('+').unwrap_or("");
        let well_formed = (7..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        if !well_formed {
            return Err("must be a phone number in international form, such as +447700900123".into());
        }
        if !self.allowed_prefixes.is_empty() && !self.allowed_prefixes.iter().any(|p| number.starts_with(p)) {
            return Err(format!(
                "text messages go only to numbers starting with {}",
                self.allowed_prefixes.join(", ")
            ));
        }
        Ok(number)
    }
}

/// Renders the text `kind` with `context` (the mails' context: event, order, tickets, transfer) as
/// one line. The event's title and venue and the giver's address are cut short first, so a text
/// stays within about three segments whatever an organizer named things; the link is never cut.
pub fn render(kind: &str, context: &Value) -> Result<String, minijinja::Error> {
    let mut short = context.clone();
    for (part, field, most) in [("event", "title", 60), ("event", "venue", 40), ("transfer", "from", 60)] {
        if let Some(text) = context[part][field].as_str() {
            if text.chars().count() > most {
                let cut: String = text.chars().take(most - 3).collect();
                short[part][field] = Value::from(format!("{}...", cut.trim_end()));
            }
        }
    }
    let text = templates::render(&format!("sms/{kind}.txt"), &short)?;
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    // The provider's limit (1,600 characters), which only a link of absurd length could reach:
    // cut rather than fail the transaction that queues the mail too.
    Ok(text.chars().take(MAX_PROVIDER_CHARS).collect())
}

/// The longest body the Messages API takes.
pub const MAX_PROVIDER_CHARS: usize = 1600;

/// Transfer offers texted from one order in 24 hours: an offer withdrawn and made again to another
/// number texts each time, and a ticket is no licence to text numbers without end (the mail still
/// goes).
pub const OFFER_TEXTS_PER_ORDER_PER_DAY: i64 = 3;

/// Queues a text once per `dedup_key` (a second one with the same key changes nothing). A number
/// that opted out gets nothing: answers `false`.
pub async fn queue(
    conn: &mut PgConnection,
    dedup_key: &str,
    kind: &str,
    recipient: &str,
    body: &str,
    order: Option<Uuid>,
    event: Option<Uuid>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO sms_messages (id, dedup_key, kind, recipient, body, order_id, event_id)
         SELECT gen_random_uuid(), $1, $2, $3, $4, $5, $6
         WHERE NOT EXISTS (SELECT 1 FROM sms_opt_outs WHERE phone = $3)
         ON CONFLICT (dedup_key) DO NOTHING",
    )
    .bind(dedup_key)
    .bind(kind)
    .bind(recipient)
    .bind(body)
    .bind(order)
    .bind(event)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Opts `phone` out (`source`: `keyword`, a STOP the person sent, or `provider`, the provider's
/// refusal to text an unsubscribed number): nothing more is queued or sent, and what is waiting is
/// suppressed.
pub async fn opt_out(conn: &mut PgConnection, phone: &str, source: &str) -> Result<(), sqlx::Error> {
    // The lock the sender's last check takes: a STOP and that check never interleave.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('sms:' || $1, 0))")
        .bind(phone)
        .execute(&mut *conn)
        .await?;
    sqlx::query("INSERT INTO sms_opt_outs (phone, source) VALUES ($1, $2) ON CONFLICT (phone) DO NOTHING")
        .bind(phone)
        .bind(source)
        .execute(&mut *conn)
        .await?;
    // Texts a sender holds are left to it: it checks again under the number's lock before it sends
    // (one being handed over now went before the STOP was read).
    sqlx::query(
        "UPDATE sms_messages SET state = 'suppressed', last_error = 'the number opted out', status_at = now()
         WHERE recipient = $1 AND state = 'pending' AND (lease_until IS NULL OR lease_until < now())",
    )
    .bind(phone)
    .execute(conn)
    .await?;
    Ok(())
}

/// Opts `phone` back in (a START the person sent): later messages go out again.
pub async fn opt_in(conn: &mut PgConnection, phone: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM sms_opt_outs WHERE phone = $1").bind(phone).execute(conn).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_are_taken_in_international_form_only() {
        let any = Reach::default();
        assert_eq!(any.phone(" +44 7700 900-123 ").unwrap(), "+447700900123");
        assert_eq!(any.phone("+1 (415) 555.0100").unwrap(), "+14155550100");
        for bad in
            ["07700900123", "+0447700900123", "+12", "+1234567890123456", "+44 77OO", "", "++447700900123"]
        {
            assert!(any.phone(bad).is_err(), "{bad}");
        }
        let uk = Reach { allowed_prefixes: vec!["+44".into(), "+353".into()] };
        assert!(uk.phone("+447700900123").is_ok());
        assert!(uk.phone("+35312345678").is_ok());
        assert!(uk.phone("+14155550100").unwrap_err().contains("+44, +353"));
    }

    #[test]
    fn every_kind_renders_one_short_line_with_its_link() {
        let context = json!({
            "event": { "title": "Rock & Roll ".repeat(60), "venue": "Hall", "starts": "Friday 1 January 2027, 20:00 (CET)", "link": "http://x/events/e" },
            "order": { "id": "o-1", "total": "12.50 EUR", "refund": "0", "link": "http://x/orders/o-1#t" },
            "tickets": [{ "seat": "A-1", "tier": "Floor" }, { "seat": null, "tier": "GA" }],
            "transfer": { "from": "a@example.com", "link": "http://x/transfers/t#tok", "expires": "Sunday" },
        });
        for kind in KINDS {
            let text = render(kind, &context).unwrap();
            assert!(text.chars().count() <= MAX_BODY_CHARS, "{kind}: {text}");
            assert!(!text.contains('\n'), "{kind}");
            let link =
                if kind == "transfer_offer" { "http://x/transfers/t#tok" } else { "http://x/orders/o-1#t" };
            assert!(text.contains(link), "{kind}: {text}");
            assert!(text.contains("STOP"), "{kind}: every text says how to stop them: {text}");
        }
    }
}
