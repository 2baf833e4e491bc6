//! Every template the core renders (`regional-core/templates/`), compiled into the binary and kept
//! in one minijinja environment: the mail (`mail/`), the text messages (`sms/`), the organizers' dashboard (`dashboard/`) and
//! the test payment provider's pages (`testpay/`).
//!
//! One escaper per output kind: a template whose name ends in `.html` has every value escaped for
//! HTML (minijinja's auto-escape, the core's only HTML escaper); `.txt` templates are plain text and
//! escape nothing. A value a template names that the context lacks is an error, never an empty
//! string (a mail without its order link must not be sent).

use std::sync::OnceLock;

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

/// Every template, by name (its path below `templates/`).
const TEMPLATES: &[(&str, &str)] = &[
    ("mail/base.html", include_str!("../templates/mail/base.html")),
    ("mail/order_confirmation.txt", include_str!("../templates/mail/order_confirmation.txt")),
    ("mail/order_confirmation.html", include_str!("../templates/mail/order_confirmation.html")),
    ("mail/order_cancelled.txt", include_str!("../templates/mail/order_cancelled.txt")),
    ("mail/order_cancelled.html", include_str!("../templates/mail/order_cancelled.html")),
    ("mail/order_refunded.txt", include_str!("../templates/mail/order_refunded.txt")),
    ("mail/order_refunded.html", include_str!("../templates/mail/order_refunded.html")),
    ("mail/hold_lost.txt", include_str!("../templates/mail/hold_lost.txt")),
    ("mail/hold_lost.html", include_str!("../templates/mail/hold_lost.html")),
    ("mail/transfer_offer.txt", include_str!("../templates/mail/transfer_offer.txt")),
    ("mail/transfer_offer.html", include_str!("../templates/mail/transfer_offer.html")),
    ("mail/event_reminder.txt", include_str!("../templates/mail/event_reminder.txt")),
    ("mail/event_reminder.html", include_str!("../templates/mail/event_reminder.html")),
    ("mail/ticket_reissued.txt", include_str!("../templates/mail/ticket_reissued.txt")),
    ("mail/ticket_reissued.html", include_str!("../templates/mail/ticket_reissued.html")),
    ("mail/waitlist_offer.txt", include_str!("../templates/mail/waitlist_offer.txt")),
    ("mail/waitlist_offer.html", include_str!("../templates/mail/waitlist_offer.html")),
    ("mail/webhook_disabled.txt", include_str!("../templates/mail/webhook_disabled.txt")),
    ("mail/webhook_disabled.html", include_str!("../templates/mail/webhook_disabled.html")),
    ("mail/sign_in_link.txt", include_str!("../templates/mail/sign_in_link.txt")),
    ("mail/sign_in_link.html", include_str!("../templates/mail/sign_in_link.html")),
    ("sms/order_confirmation.txt", include_str!("../templates/sms/order_confirmation.txt")),
    ("sms/event_reminder.txt", include_str!("../templates/sms/event_reminder.txt")),
    ("sms/transfer_offer.txt", include_str!("../templates/sms/transfer_offer.txt")),
    ("dashboard/base.html", include_str!("../templates/dashboard/base.html")),
    ("dashboard/sign_in.html", include_str!("../templates/dashboard/sign_in.html")),
    ("dashboard/events.html", include_str!("../templates/dashboard/events.html")),
    ("dashboard/event.html", include_str!("../templates/dashboard/event.html")),
    ("dashboard/live.html", include_str!("../templates/dashboard/live.html")),
    ("dashboard/message.html", include_str!("../templates/dashboard/message.html")),
    ("testpay/base.html", include_str!("../templates/testpay/base.html")),
    ("testpay/pay.html", include_str!("../templates/testpay/pay.html")),
    ("testpay/decided.html", include_str!("../templates/testpay/decided.html")),
];

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .unwrap_or_else(|e| panic!("the template {name} does not compile: {e}"));
        }
        env
    })
}

/// Renders the template `name` with `context`.
pub fn render(name: &str, context: impl Serialize) -> Result<String, minijinja::Error> {
    env().get_template(name)?.render(context)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles() {
        for (name, _) in TEMPLATES {
            env().get_template(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn html_is_escaped_and_text_is_not() {
        let context = serde_json::json!({ "title": "<b>&'\"", "signed_in": false });
        let html = render("dashboard/message.html", &context).unwrap();
        assert!(html.contains("&lt;b&gt;&amp;&#x27;&quot;"), "{html}");
        assert!(!html.contains("<b>"));
    }
}
