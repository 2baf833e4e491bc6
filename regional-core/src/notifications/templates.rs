//! The mail (`regional-core/templates/mail/`, rendered by [`crate::templates`]): per kind, a
//! plain-text `<kind>.txt` whose first line is the subject, and an HTML `<kind>.html` that extends
//! `mail/base.html`. HTML is escaped automatically; the text bodies are not (they are not HTML).

use serde_json::Value;

use super::Mail;
use crate::templates;

/// The kinds of mail (each has both templates).
pub const KINDS: [&str; 10] = [
    "order_confirmation",
    "order_cancelled",
    "order_refunded",
    "hold_lost",
    "transfer_offer",
    "event_reminder",
    "ticket_reissued",
    "waitlist_offer",
    "webhook_disabled",
    "sign_in_link",
];

/// Renders the mail `kind` with `context`.
pub fn render(kind: &str, context: &Value) -> Result<Mail, minijinja::Error> {
    let text = templates::render(&format!("mail/{kind}.txt"), context)?;
    let html = templates::render(&format!("mail/{kind}.html"), context)?;
    let (subject, body) = text.split_once('\n').unwrap_or((text.as_str(), ""));
    Ok(Mail {
        // A subject is one line, whatever the data.
        subject: subject.trim().chars().filter(|c| !c.is_control()).collect(),
        text: body.trim_start_matches('\n').to_owned(),
        html,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn context() -> Value {
        json!({
            "event": { "title": "Rock <& Roll>", "venue": "Hall", "starts": "Friday", "link": "http://x/events/e" },
            "order": { "id": "o-1", "total": "12.50 EUR", "refund": "10.00 EUR", "link": "http://x/orders/o-1#t", "at_counter": false },
            "tickets": [{ "seat": "A-1", "tier": "Floor" }, { "seat": null, "tier": "GA" }],
            "outcome": "you cancelled it",
            "transfer": { "from": "a@example.com", "link": "http://x/accept", "expires": "Sunday" },
            "sign_in": { "link": "http://x/my-tickets?a=<1>&b=2#t", "minutes": 30 },
            "offer": { "quantity": 2, "until": "Sunday, 20:15", "link": "http://x/events/e/offer#t" },
            "endpoint": {
                "id": "w-1", "url": "https://hooks.example/in", "description": "CRM", "organization": "Rock <& Roll>",
                "failing_since": "Monday", "failing_since_rfc3339": "2026-12-01T00:00:00Z", "disabled_at": "Saturday",
                "last_error": "HTTP 500", "retention_days": 30,
            },
        })
    }

    #[test]
    fn every_kind_renders_a_subject_and_both_bodies() {
        for kind in KINDS {
            let mail = render(kind, &context()).unwrap_or_else(|e| panic!("{kind}: {e:#}"));
            assert!(!mail.subject.is_empty() && !mail.subject.contains('\n'), "{kind}");
            assert!(!mail.text.trim().is_empty(), "{kind}");
            // What each kind shows of the data, escaped: the event's title, the webhook's
            // organization, the sign-in link.
            let escaped =
                if kind == "sign_in_link" { "a=&lt;1&gt;&amp;b=2" } else { "Rock &lt;&amp; Roll&gt;" };
            assert!(mail.html.contains("<html") && mail.html.contains(escaped), "{kind}: html escapes");
        }
        let confirmation = render("order_confirmation", &context()).unwrap();
        assert_eq!(confirmation.subject, "Your tickets for Rock <& Roll>");
        assert!(confirmation.text.contains("- Floor, seat A-1") && confirmation.text.contains("- GA\n"));
        assert!(confirmation.html.contains("o-1#t"), "the link is in the HTML body");
    }

    #[test]
    fn a_refund_of_a_box_office_sale_is_collected_there() {
        let mut c = context();
        let online = render("order_refunded", &c).unwrap();
        assert!(online.text.contains("depending on your bank") && !online.text.contains("box office"));
        c["order"]["at_counter"] = json!(true);
        for kind in ["order_refunded", "hold_lost"] {
            let mail = render(kind, &c).unwrap();
            assert!(
                mail.text.contains("at the box office") && mail.html.contains("at the box office"),
                "{kind}"
            );
            assert!(
                !mail.text.contains("depending on your bank") && !mail.text.contains("Your payment"),
                "{kind}"
            );
        }
    }

    #[test]
    fn a_missing_value_is_an_error_not_an_empty_mail() {
        let mut c = context();
        c["order"] = json!({});
        assert!(render("order_confirmation", &c).is_err());
    }
}
