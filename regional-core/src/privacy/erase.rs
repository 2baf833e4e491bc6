//! Erasure: a person's address (and the visitor id their orders carry) removed or made anonymous
//! wherever the core keeps it, in one transaction, while the financial records stay (orders' and
//! payments' amounts, refunds, the state audit). docs/privacy.md, "Erasure", says what happens to
//! each kind of row and why.
//!
//! An address becomes `erased-<row id>@erased.invalid` (the SQL function `erased_address`): unique
//! per row (nothing links two erased rows), never deliverable, never mailed ([`super::undeliverable`]).
//!
//! Tickets still to be used: with [`Upcoming::Keep`] (the default) a valid ticket of an event still
//! to come stays valid, and its address with it, until the event is over: the row is marked
//! (`erase_requested_at`) and the retention job erases it then ([`super::retention`]). With
//! [`Upcoming::Void`] those tickets are voided (refused at the gate) and everything is erased now.
//! An order still being paid for is always left to the retention job, once it has ended.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Scope, Subject};

/// What becomes of the valid tickets of events still to come.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Upcoming {
    /// They stay valid; their address is erased once the event is over.
    #[default]
    Keep,
    /// They are voided now (refused at the gate, no refund), and everything is erased now.
    Void,
}

/// What an erasure changed.
#[derive(Debug, Default, Clone, Serialize, utoipa::ToSchema)]
pub struct Erased {
    /// Orders whose address and visitor id were made anonymous (amounts and states stay).
    pub orders: u64,
    /// Tickets whose holder's address was made anonymous.
    pub tickets: u64,
    /// Valid tickets of events still to come, voided (`upcoming: void`).
    pub tickets_voided: u64,
    /// Transfer offers whose giver's or recipient's address was made anonymous.
    pub transfers: u64,
    /// Open transfer offers from or to the address, withdrawn.
    pub transfers_withdrawn: u64,
    /// Mails to the address deleted (their bodies carry it).
    pub mails: u64,
    /// Text messages of the address's orders and transfers deleted (their bodies carry links and
    /// names; the numbers are removed from the orders and offers with them).
    pub texts: u64,
    /// Domain events whose copy here no longer carries the address (published or not).
    pub outbox_messages: u64,
    /// Partner webhook deliveries that carried the address, deleted.
    pub webhook_deliveries: u64,
    /// Disabled staff accounts with the address, made anonymous.
    pub user_accounts: u64,
    /// Staff accounts with the address still enabled: kept (disable the account first).
    pub user_accounts_kept: u64,
    /// Live waiting-list entries with the address, removed at the edge.
    pub waitlist_entries: u64,
    /// What is kept until its event is over, then erased by the retention job.
    pub deferred: Vec<Deferred>,
}

/// Rows of one event kept until it is over (their address is needed to deliver it).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Deferred {
    pub event_id: Uuid,
    pub ends_at: DateTime<Utc>,
    pub orders: i64,
    pub tickets: i64,
}

/// The states of an order still being paid for or paid back: left alone until it ends.
const UNFINISHED: &str = "('created', 'awaiting_payment', 'confirming', 'releasing', 'refunding')";

/// What a statement of [`erase`] binds: `$1` the address, `$2` the organization (none: all), `$3`
/// the event (none: all), and `$4` whether everything goes now (`upcoming: void`) when given.
struct Reach<'a> {
    who: &'a str,
    org: Option<Uuid>,
    event: Option<Uuid>,
}

impl Reach<'_> {
    /// Runs `statement`; answers how many rows it changed.
    async fn change(
        &self,
        conn: &mut PgConnection,
        statement: &str,
        void: Option<bool>,
    ) -> Result<u64, sqlx::Error> {
        let mut query = sqlx::query(statement).bind(self.who).bind(self.org).bind(self.event);
        if let Some(void) = void {
            query = query.bind(void);
        }
        Ok(query.execute(conn).await?.rows_affected())
    }
}

/// Erases `subject` within `scope` (and only in `event`, when given), in `conn`'s transaction.
pub async fn erase(
    conn: &mut PgConnection,
    scope: Scope,
    subject: &Subject,
    upcoming: Upcoming,
    event: Option<Uuid>,
) -> Result<Erased, sqlx::Error> {
    let (who, org) = (subject.as_str(), scope.organization());
    let reach = Reach { who, org, event };
    let void = upcoming == Upcoming::Void;
    // Which rows are in reach: `$2` the organization (none: all), `$3` the event (none: all).
    let events_in_reach = "SELECT id, ends_at FROM events WHERE ($2::uuid IS NULL OR organization_id = $2)
                             AND ($3::uuid IS NULL OR id = $3)";
    let mut out = Erased::default();

    if void {
        // Voided like a refund voids: `ticket.voided` per order, so that consumers (scanners'
        // lists, partners) learn of it; the address in it is already the erased one.
        out.tickets_voided = sqlx::query_scalar::<_, i64>(&format!(
            "WITH v AS (
                 UPDATE tickets t SET state = 'void', updated_at = now()
                 FROM ({events_in_reach}) e
                 WHERE e.id = t.event_id AND lower(t.holder_email) = $1 AND t.state = 'valid' AND e.ends_at > now()
                 RETURNING t.id, t.order_id),
             m AS (
                 INSERT INTO outbox (topic, key, payload)
                 SELECT 'tickets', o.event_id::text, jsonb_build_object('type', 'ticket.voided', 'schema_version', 1,
                        'order_id', o.id, 'event_id', o.event_id, 'organization_id', o.organization_id,
                        'email', 'erased@erased.invalid', 'currency', o.currency, 'total_minor', o.total_minor,
                        'at', now(), 'ticket_ids', jsonb_agg(v.id ORDER BY v.id))
                 FROM v JOIN orders o ON o.id = v.order_id GROUP BY o.id)
             SELECT count(*) FROM v"
        ))
        .bind(who)
        .bind(org)
        .bind(event)
        .fetch_one(&mut *conn)
        .await? as u64;
    }

    // Kept until the event is over: tickets not voided, and orders being paid for (or, keeping the
    // tickets, paid orders). Marked for the retention job.
    let keep_paid = if void { "" } else { " OR o.state = 'paid'" };
    let mut deferred: Vec<Deferred> = sqlx::query_as(&format!(
        "WITH t AS (
             UPDATE tickets t SET erase_requested_at = coalesce(t.erase_requested_at, now())
             FROM ({events_in_reach}) e
             WHERE e.id = t.event_id AND lower(t.holder_email) = $1 AND t.erased_at IS NULL
               AND t.state <> 'void' AND e.ends_at > now()
             RETURNING t.event_id),
         o AS (
             UPDATE orders o SET erase_requested_at = coalesce(o.erase_requested_at, now())
             FROM ({events_in_reach}) e
             WHERE e.id = o.event_id AND lower(o.email) = $1 AND o.erased_at IS NULL AND e.ends_at > now()
               AND (o.state IN {UNFINISHED}{keep_paid})
             RETURNING o.event_id)
         SELECT e.id AS event_id, e.ends_at,
                (SELECT count(*) FROM o WHERE o.event_id = e.id) AS orders,
                (SELECT count(*) FROM t WHERE t.event_id = e.id) AS tickets
         FROM events e WHERE e.id IN (SELECT event_id FROM t UNION SELECT event_id FROM o)
         ORDER BY e.ends_at, e.id"
    ))
    .bind(who)
    .bind(org)
    .bind(event)
    .fetch_all(&mut *conn)
    .await?;
    deferred.retain(|d| d.orders + d.tickets > 0);
    out.deferred = deferred;

    // Open offers from or to the address are withdrawn (whatever the event).
    let withdraw = format!(
        "UPDATE ticket_transfers x SET state = 'cancelled', decided_at = now()
         FROM ({events_in_reach}) e
         WHERE e.id = x.event_id AND x.state = 'offered' AND (lower(x.from_email) = $1 OR lower(x.to_email) = $1)"
    );
    out.transfers_withdrawn = reach.change(conn, &withdraw, None).await?;

    // Everything else, now: what is not kept above.
    let tickets = format!(
        "UPDATE tickets t SET holder_email = erased_address(t.id), erased_at = now()
         FROM ({events_in_reach}) e
         WHERE e.id = t.event_id AND lower(t.holder_email) = $1 AND (e.ends_at <= now() OR t.state = 'void')"
    );
    out.tickets = reach.change(conn, &tickets, None).await?;
    // Texts of the address's orders (docs/sms.md), as its mails: all but those waiting to deliver
    // tickets that are kept. (Read before the orders lose the address.)
    let texts = format!(
        "DELETE FROM sms_messages s USING orders o, ({events_in_reach}) e
         WHERE s.order_id = o.id AND e.id = o.event_id AND lower(o.email) = $1
           AND NOT (s.state = 'pending' AND s.kind IN ('order_confirmation', 'event_reminder')
                    AND e.ends_at > now() AND (o.state IN {UNFINISHED}{keep_paid}))"
    );
    out.texts = reach.change(conn, &texts, None).await?;
    let orders = format!(
        "UPDATE orders o SET email = erased_address(o.id), visitor_id = 'erased:' || o.id, phone = NULL,
                             last_error = NULL, erased_at = now()
         FROM ({events_in_reach}) e
         WHERE e.id = o.event_id AND lower(o.email) = $1
           AND NOT (e.ends_at > now() AND (o.state IN {UNFINISHED}{keep_paid}))"
    );
    out.orders = reach.change(conn, &orders, None).await?;
    // Mails offering the person's tickets to others name them as the giver: deleted, sent or not.
    let offers = format!(
        "DELETE FROM notifications n USING ticket_transfers x, ({events_in_reach}) e
         WHERE e.id = x.event_id AND lower(x.from_email) = $1
           AND n.kind = 'transfer_offer' AND n.dedup_key = 'transfer_offer:' || x.id"
    );
    out.mails += reach.change(conn, &offers, None).await?;

    // Transfers: now, but for the one that gave the address a ticket it keeps (the recipient's
    // link reads its address): marked, the retention job erases it with the ticket.
    let mark = format!(
        "UPDATE ticket_transfers x SET erase_requested_at = coalesce(x.erase_requested_at, now())
         FROM ({events_in_reach}) e
         WHERE e.id = x.event_id AND x.state = 'accepted' AND lower(x.to_email) = $1 AND EXISTS (
                   SELECT 1 FROM tickets t WHERE t.id = x.ticket_id AND lower(t.holder_email) = $1
                     AND t.erase_requested_at IS NOT NULL AND t.erased_at IS NULL)"
    );
    reach.change(conn, &mark, None).await?;
    // Text offers from or to the address (they name the giver, and reach the recipient's number).
    let offered = format!(
        "DELETE FROM sms_messages s USING ticket_transfers x, ({events_in_reach}) e
         WHERE e.id = x.event_id AND (lower(x.from_email) = $1 OR lower(x.to_email) = $1)
           AND s.kind = 'transfer_offer' AND s.dedup_key = 'transfer_offer:' || x.id"
    );
    out.texts += reach.change(conn, &offered, None).await?;
    let transfers = format!(
        "UPDATE ticket_transfers x SET
             from_email = CASE WHEN lower(x.from_email) = $1 THEN erased_address(x.id) ELSE x.from_email END,
             to_phone = CASE WHEN lower(x.to_email) = $1 THEN NULL ELSE x.to_phone END,
             to_email = CASE WHEN lower(x.to_email) = $1 THEN erased_address(x.id) ELSE x.to_email END
         FROM ({events_in_reach}) e
         WHERE e.id = x.event_id AND (lower(x.from_email) = $1 OR lower(x.to_email) = $1)
           AND NOT (x.state = 'accepted' AND lower(x.to_email) = $1 AND EXISTS (
                   SELECT 1 FROM tickets t WHERE t.id = x.ticket_id AND lower(t.holder_email) = $1
                     AND t.erase_requested_at IS NOT NULL AND t.erased_at IS NULL))"
    );
    out.transfers = reach.change(conn, &transfers, None).await?;

    // Mails: their bodies carry the address (and links). Those waiting to be sent that deliver
    // tickets kept (a confirmation, a reminder, a re-issued code) stay, unless everything goes now.
    let mails = "DELETE FROM notifications n
         WHERE lower(n.recipient) = $1
           AND ($4 OR n.state <> 'pending' OR n.kind NOT IN ('order_confirmation', 'event_reminder', 'ticket_reissued')
                OR n.event_id IN (SELECT id FROM events WHERE ends_at <= now()))
           AND CASE WHEN n.event_id IS NULL THEN $2::uuid IS NULL AND $3::uuid IS NULL
                    ELSE n.event_id IN (SELECT id FROM events WHERE ($2::uuid IS NULL OR organization_id = $2)
                                                               AND ($3::uuid IS NULL OR id = $3)) END";
    out.mails += reach.change(conn, mails, Some(void)).await?;

    // The outbox's copies of messages, published or not: nothing carries the address out any more
    // (partners' webhooks, the bus). What delivers a kept order's tickets reads the address from
    // the order's row, not from the message.
    let messages = "UPDATE outbox SET payload = payload
               || CASE WHEN lower(payload->>'email') = $1 THEN jsonb_build_object('email', 'erased@erased.invalid') ELSE '{}' END
               || CASE WHEN lower(payload->>'from_email') = $1 THEN jsonb_build_object('from_email', 'erased@erased.invalid') ELSE '{}' END
               || CASE WHEN lower(payload->>'to_email') = $1 THEN jsonb_build_object('to_email', 'erased@erased.invalid') ELSE '{}' END
         WHERE (lower(payload->>'email') = $1 OR lower(payload->>'from_email') = $1 OR lower(payload->>'to_email') = $1)
           AND payload->>'event_id' IN (SELECT id::text FROM events WHERE ($2::uuid IS NULL OR organization_id = $2)
                                                                      AND ($3::uuid IS NULL OR id = $3))";
    out.outbox_messages = reach.change(conn, messages, None).await?;

    // Partner deliveries whose body names the address (as a whole JSON string: not another
    // address that contains it), sent or not: none goes out after an erasure. (A partner that
    // received one keeps its copy: docs/privacy.md.)
    let deliveries = "DELETE FROM webhook_deliveries d
         WHERE ($2::uuid IS NULL OR d.organization_id = $2) AND strpos(lower(d.body), '\"' || $1 || '\"') > 0
           AND ($3::uuid IS NULL OR d.body::jsonb -> 'data' ->> 'event_id' = $3::text)";
    out.webhook_deliveries = reach.change(conn, deliveries, None).await?;

    if event.is_none() {
        out.user_accounts = sqlx::query(
            "UPDATE users SET email = erased_address(id), name = ''
             WHERE lower(email) = $1 AND disabled AND ($2::uuid IS NULL OR organization_id = $2)",
        )
        .bind(who)
        .bind(org)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        out.user_accounts_kept = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM users WHERE lower(email) = $1 AND ($2::uuid IS NULL OR organization_id = $2)",
        )
        .bind(who)
        .bind(org)
        .fetch_one(&mut *conn)
        .await? as u64;
    }
    Ok(out)
}
