//! Access: everything the core keeps about an address, as one JSON document (docs/privacy.md,
//! "Access"), read in one snapshot (a repeatable-read transaction). Each section is at most
//! [`SECTION_MAX`] rows, oldest first; `truncated` names the sections that had more.
//!
//! What the document leaves out on purpose: secrets that open something (order and transfer
//! tokens, mails' bodies with their links); the sections say where those live. What the edge
//! keeps (live waiting-list entries) is added by the route.

use serde_json::{json, Value};
use sqlx::PgConnection;

use super::{Scope, Subject};

/// Most rows of one section.
pub const SECTION_MAX: i64 = 1_000;

/// The sections, each a query of `$1` the address, `$2` the organization (none: every one),
/// `$3` the most rows: what the core keeps about the address.
const SECTIONS: [(&str, &str); 10] = [
    (
        "orders",
        "SELECT o.id, o.organization_id, o.event_id, e.title AS event_title, e.starts_at AS event_starts_at,
                o.email, o.phone, o.visitor_id, o.state, o.outcome, o.currency, o.subtotal_minor, o.discount_minor,
                o.fee_minor, o.tax_minor, o.total_minor, o.refund_minor, o.created_at, o.updated_at,
                o.erase_requested_at,
                (SELECT jsonb_agg(jsonb_build_object('tier_id', l.tier_id, 'seat_id', l.seat_id,
                        'price_minor', l.price_minor) ORDER BY l.line) FROM order_lines l WHERE l.order_id = o.id) AS lines,
                (SELECT jsonb_build_object('provider', p.provider, 'provider_ref', p.provider_ref, 'state', p.state,
                        'amount_minor', p.amount_minor, 'refunded_minor', p.refunded_minor, 'created_at', p.created_at)
                   FROM payments p WHERE p.order_id = o.id) AS payment
         FROM orders o JOIN events e ON e.id = o.event_id
         WHERE lower(o.email) = $1 AND ($2::uuid IS NULL OR o.organization_id = $2)
         ORDER BY o.created_at, o.id LIMIT $3",
    ),
    (
        "tickets",
        "SELECT t.id, t.order_id, t.event_id, t.tier_id, t.seat_id, t.holder_email, t.state, t.version,
                t.created_at, t.updated_at, t.erase_requested_at,
                (SELECT jsonb_agg(jsonb_build_object('at', c.at, 'gate', c.gate, 'result', c.result) ORDER BY c.at)
                   FROM check_ins c WHERE c.event_id = t.event_id AND c.ticket_id = t.id) AS check_ins
         FROM tickets t
         WHERE lower(t.holder_email) = $1 AND ($2::uuid IS NULL OR t.organization_id = $2)
         ORDER BY t.created_at, t.id LIMIT $3",
    ),
    (
        "transfers",
        "SELECT x.id, x.ticket_id, x.event_id, x.from_email, x.to_email, x.to_phone, x.state, x.expires_at, x.created_at,
                x.decided_at
         FROM ticket_transfers x JOIN events e ON e.id = x.event_id
         WHERE (lower(x.from_email) = $1 OR lower(x.to_email) = $1)
           AND ($2::uuid IS NULL OR e.organization_id = $2)
         ORDER BY x.created_at, x.id LIMIT $3",
    ),
    (
        "mails",
        "SELECT n.id, n.kind, n.recipient, n.subject, n.state, n.order_id, n.event_id, n.attempts,
                n.created_at, n.sent_at
         FROM notifications n
         WHERE lower(n.recipient) = $1
           AND CASE WHEN n.event_id IS NULL THEN $2::uuid IS NULL
                    ELSE $2::uuid IS NULL OR n.event_id IN (SELECT id FROM events WHERE organization_id = $2) END
         ORDER BY n.created_at, n.id LIMIT $3",
    ),
    (
        "texts",
        "SELECT s.id, s.kind, s.recipient, s.state, s.provider_status, s.order_id, s.event_id, s.attempts,
                s.created_at, s.sent_at, s.status_at,
                EXISTS (SELECT 1 FROM sms_opt_outs z WHERE z.phone = s.recipient) AS opted_out
         FROM sms_messages s
         WHERE s.id IN (SELECT s2.id FROM sms_messages s2 JOIN orders o ON o.id = s2.order_id
                        WHERE lower(o.email) = $1 AND s2.kind <> 'transfer_offer'
                          AND ($2::uuid IS NULL OR o.organization_id = $2)
                        UNION ALL
                        SELECT s3.id FROM sms_messages s3 JOIN ticket_transfers x ON s3.dedup_key = 'transfer_offer:' || x.id
                          JOIN events e ON e.id = x.event_id
                        WHERE (lower(x.to_email) = $1 OR lower(x.from_email) = $1)
                          AND ($2::uuid IS NULL OR e.organization_id = $2))
         ORDER BY s.created_at, s.id LIMIT $3",
    ),
    (
        "audit_log",
        "SELECT a.id, a.at, a.actor, a.action, a.subject, a.details, host(a.ip) AS ip, a.user_agent
         FROM audit_log a
         WHERE a.actor IN (SELECT 'buyer:order:' || o.id FROM orders o
                           WHERE lower(o.email) = $1 AND ($2::uuid IS NULL OR o.organization_id = $2)
                           UNION ALL
                           SELECT 'recipient:transfer:' || x.id FROM ticket_transfers x JOIN events e ON e.id = x.event_id
                           WHERE lower(x.to_email) = $1 AND ($2::uuid IS NULL OR e.organization_id = $2))
         ORDER BY a.at, a.id LIMIT $3",
    ),
    (
        "domain_events",
        "SELECT m.id, m.topic, m.payload->>'type' AS type, m.created_at, m.sent_at
         FROM outbox m
         WHERE (lower(m.payload->>'email') = $1 OR lower(m.payload->>'from_email') = $1
                OR lower(m.payload->>'to_email') = $1)
           AND ($2::uuid IS NULL OR m.payload->>'organization_id' = $2::text
                OR m.payload->>'event_id' IN (SELECT id::text FROM events WHERE organization_id = $2))
         ORDER BY m.id LIMIT $3",
    ),
    (
        "webhook_deliveries",
        "SELECT d.id, d.endpoint_id, w.url AS endpoint_url, d.event_type, d.state, d.created_at, d.updated_at
         FROM webhook_deliveries d JOIN webhook_endpoints w ON w.id = d.endpoint_id
         WHERE strpos(lower(d.body), '\"' || $1 || '\"') > 0 AND ($2::uuid IS NULL OR w.organization_id = $2)
         ORDER BY d.created_at, d.id LIMIT $3",
    ),
    (
        "user_accounts",
        "SELECT u.id, u.organization_id, u.email, u.name, u.role, u.disabled, u.created_at
         FROM users u WHERE lower(u.email) = $1 AND ($2::uuid IS NULL OR u.organization_id = $2)
         ORDER BY u.created_at, u.id LIMIT $3",
    ),
    (
        "sign_in_requests",
        "SELECT r.at FROM sign_in_requests r WHERE r.address_key = encode(sha256(convert_to($1, 'UTF8')), 'hex')
           AND $2::uuid IS NULL
         ORDER BY r.at, r.id LIMIT $3",
    ),
];

/// Where else the address may be, outside the core's database (docs/privacy.md).
const ELSEWHERE: [&str; 7] = [
    "the payment provider: the address given at payment (Stripe's own records; erase it there)",
    "the message bus: domain events already published stay in their topics until the topics' retention (7 days)",
    "partners' systems: what their webhook endpoints received",
    "mail providers and mailboxes: mails already sent",
    "the SMS provider and phones: texts already sent (the provider's message logs; erase them there)",
    "database backups: until they age out under the operator's backup retention",
    "CSV exports the organizer downloaded (orders, tickets, waiting list)",
];

/// Everything the core keeps about `subject` within `scope`.
pub async fn report(conn: &mut PgConnection, scope: Scope, subject: &Subject) -> Result<Value, sqlx::Error> {
    let mut doc = serde_json::Map::new();
    let mut truncated = Vec::new();
    for (name, query) in SECTIONS {
        let rows: Value = sqlx::query_scalar(&format!(
            "SELECT coalesce(jsonb_agg(to_jsonb(r)), '[]'::jsonb) FROM ({query}) r"
        ))
        .bind(subject.as_str())
        .bind(scope.organization())
        .bind(SECTION_MAX + 1)
        .fetch_one(&mut *conn)
        .await?;
        let mut rows = match rows {
            Value::Array(rows) => rows,
            _ => Vec::new(),
        };
        if rows.len() as i64 > SECTION_MAX {
            rows.truncate(SECTION_MAX as usize);
            truncated.push(name);
        }
        doc.insert(name.to_owned(), Value::Array(rows));
    }
    doc.insert("truncated".to_owned(), json!(truncated));
    doc.insert("elsewhere".to_owned(), json!(ELSEWHERE));
    Ok(Value::Object(doc))
}

/// How many rows each section holds (for the audit row: counts, never the data).
pub fn counts(doc: &Value) -> Value {
    let counts: serde_json::Map<String, Value> = SECTIONS
        .iter()
        .map(|(name, _)| (name.to_string(), json!(doc[name].as_array().map_or(0, Vec::len))))
        .collect();
    Value::Object(counts)
}
