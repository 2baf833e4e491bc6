//! Personal data (docs/privacy.md): access requests answer everything kept about an address within
//! the caller's reach; erasure requests make it anonymous while the money's records stay (tickets
//! of events still to come kept valid until the event is over, or voided); the retention job ages
//! addresses, mails and messages out; a buyer gets their orders again with a sign-in link, and
//! nobody learns from it who bought.

use crate::common;

use std::sync::Arc;

use common::{paid_tickets, two_tenants, with_checkout, Api};
use regional_core::notifications::MailSettings;
use regional_core::privacy::retention::{self, Retention};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use shared_types::token::TokenSigner;
use sqlx::PgPool;
use uuid::Uuid;

const BUYER: &str = "Buyer@Example.test";

fn signer() -> TokenSigner {
    TokenSigner::from_seed("core-test", [4; 32]).unwrap()
}

async fn start(db: &PgPool) -> Api {
    let mut state = with_checkout(db, &signer());
    state.mail = Some(Arc::new(MailSettings { buyer_url: "http://shop.test/".into(), signer: signer() }));
    Api::start_with(state).await
}

/// Moves `event` into the past: it ended `days` days ago.
async fn ended(db: &PgPool, event: &str, days: i64) {
    sqlx::query(
        "UPDATE events SET starts_at = now() - make_interval(days => $2) - interval '3 hours',
                           ends_at = now() - make_interval(days => $2) WHERE id = $1::uuid",
    )
    .bind(event)
    .bind(days as i32)
    .execute(db)
    .await
    .unwrap();
}

/// Something of each kind the core keeps about the buyer of `order`: a sent mail, a published
/// domain event, an offer of one of their tickets to a friend, an action of theirs in the audit
/// log, and a partner delivery naming them.
async fn traces(db: &PgPool, org: &str, event: &str, order: Uuid, ticket: Uuid) {
    let event: Uuid = event.parse().unwrap();
    let org: Uuid = org.parse().unwrap();
    sqlx::query(
        "INSERT INTO notifications (id, dedup_key, kind, recipient, subject, text_body, html_body, order_id, event_id, state, sent_at)
         VALUES (gen_random_uuid(), $1, 'order_confirmation', $2, 'Your tickets', 'link', 'link', $3, $4, 'sent', now())",
    )
    .bind(format!("paid:{order}"))
    .bind(BUYER)
    .bind(order)
    .bind(event)
    .execute(db)
    .await
    .unwrap();
    sqlx::query("INSERT INTO outbox (topic, key, payload, sent_at) VALUES ('orders', $1, $2, now())")
        .bind(event.to_string())
        .bind(json!({ "type": "order.paid", "schema_version": 1, "order_id": order, "event_id": event, "organization_id": org, "email": BUYER }))
        .execute(db)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO ticket_transfers (id, ticket_id, order_id, event_id, from_email, to_email, expires_at)
         VALUES (gen_random_uuid(), $1, $2, $3, $4, 'friend@example.test', now() + interval '1 day')",
    )
    .bind(ticket)
    .bind(order)
    .bind(event)
    .bind(BUYER)
    .execute(db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO audit_log (organization_id, actor, action, subject, ip, user_agent)
         VALUES ($1, $2, 'order.cancel', $3, '192.0.2.7', 'phone/2')",
    )
    .bind(org)
    .bind(format!("buyer:order:{order}"))
    .bind(format!("order:{order}"))
    .execute(db)
    .await
    .unwrap();
    // The buyer's number, a text confirming the order and one offering the ticket to the friend's.
    sqlx::query("UPDATE orders SET phone = '+447700900123' WHERE id = $1")
        .bind(order)
        .execute(db)
        .await
        .unwrap();
    sqlx::query("UPDATE ticket_transfers SET to_phone = '+447700900456' WHERE order_id = $1")
        .bind(order)
        .execute(db)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO sms_messages (id, dedup_key, kind, recipient, body, order_id, event_id, state, sent_at)
         VALUES (gen_random_uuid(), 'order_confirmation:' || $1, 'order_confirmation', '+447700900123', 'Your tickets', $1, $2, 'delivered', now())",
    )
    .bind(order)
    .bind(event)
    .execute(db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO sms_messages (id, dedup_key, kind, recipient, body, order_id, event_id)
         SELECT gen_random_uuid(), 'transfer_offer:' || id, 'transfer_offer', to_phone, 'An offer', order_id, event_id
         FROM ticket_transfers WHERE order_id = $1",
    )
    .bind(order)
    .execute(db)
    .await
    .unwrap();
    let endpoint = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO webhook_endpoints (id, organization_id, url, event_types, secret_key_id, secret_sealed)
         VALUES ($1, $2, 'https://crm.example/in', '{order.paid}', 'k1', '\\x00')",
    )
    .bind(endpoint)
    .bind(org)
    .execute(db)
    .await
    .unwrap();
    let body = json!({ "type": "order.paid", "data": { "event_id": event, "email": BUYER } }).to_string();
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, endpoint_id, organization_id, event_type, body, state)
         VALUES (gen_random_uuid(), $1, $2, 'order.paid', $3, 'succeeded')",
    )
    .bind(endpoint)
    .bind(org)
    .bind(body)
    .execute(db)
    .await
    .unwrap();
}

fn count(doc: &Value, section: &str) -> usize {
    doc[section].as_array().unwrap_or_else(|| panic!("{section} in {doc}")).len()
}

async fn access(api: &Api, key: &str, email: &str) -> (StatusCode, Value) {
    api.call(key, Method::POST, "/api/v1/privacy/access-requests", Some(json!({ "email": email }))).await
}

async fn erase(api: &Api, key: &str, body: Value) -> (StatusCode, Value) {
    api.call(key, Method::POST, "/api/v1/privacy/erasure-requests", Some(body)).await
}

/// Every address the database still holds for the buyer, table by table (none after an erasure).
async fn still_holding(db: &PgPool, org: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (table, query) in [
        ("orders", "SELECT count(*) FROM orders WHERE lower(email) = 'buyer@example.test' AND organization_id = $1::uuid"),
        ("tickets", "SELECT count(*) FROM tickets WHERE lower(holder_email) = 'buyer@example.test' AND organization_id = $1::uuid"),
        ("transfers", "SELECT count(*) FROM ticket_transfers x JOIN events e ON e.id = x.event_id
                       WHERE 'buyer@example.test' IN (lower(x.from_email), lower(x.to_email))
                         AND e.organization_id = $1::uuid"),
        ("mails", "SELECT count(*) FROM notifications n JOIN events e ON e.id = n.event_id
                   WHERE lower(n.recipient) = 'buyer@example.test' AND e.organization_id = $1::uuid"),
        ("outbox", "SELECT count(*) FROM outbox WHERE lower(payload::text) LIKE '%buyer@example.test%'
                    AND payload->>'organization_id' = $1"),
        ("deliveries", "SELECT count(*) FROM webhook_deliveries WHERE lower(body) LIKE '%\"buyer@example.test\"%'
                        AND organization_id = $1::uuid"),
    ] {
        let n: i64 = sqlx::query_scalar(query).bind(org).fetch_one(db).await.unwrap();
        if n > 0 {
            found.push(format!("{table}: {n}"));
        }
    }
    found
}

#[sqlx::test]
async fn an_access_request_answers_everything_kept_about_an_address_within_the_callers_reach(db: PgPool) {
    let api = start(&db).await;
    let (root, [(acme, acme_key), (globex, globex_key)]) = two_tenants(&api).await;
    let (event, order, tickets) = paid_tickets(&api, &acme_key, &acme, &["A-1", "A-2"]).await;
    traces(&db, &acme, &event, order, tickets[0]).await;
    let (other_event, other_order, other_tickets) = paid_tickets(&api, &globex_key, &globex, &["B-1"]).await;
    traces(&db, &globex, &other_event, other_order, other_tickets[0]).await;

    // Whatever the case and spaces the address is given in.
    let (s, doc) = access(&api, &acme_key, "  buyer@EXAMPLE.test ").await;
    assert_eq!(s, StatusCode::OK, "{doc}");
    assert_eq!(doc["email"], "buyer@example.test");
    assert_eq!(doc["organization_id"], json!(acme));
    for (section, n) in [
        ("orders", 1),
        ("tickets", 2),
        ("transfers", 1),
        ("mails", 1),
        ("texts", 2),
        ("audit_log", 1),
        ("domain_events", 1),
        ("webhook_deliveries", 1),
        ("user_accounts", 0),
        ("sign_in_requests", 0),
        ("waitlist_entries", 0),
    ] {
        assert_eq!(count(&doc, section), n, "{section}: {doc:#}");
    }
    assert_eq!(doc["orders"][0]["id"], json!(order));
    assert_eq!(doc["orders"][0]["phone"], "+447700900123");
    assert_eq!(doc["transfers"][0]["to_phone"], "+447700900456");
    assert!(doc["texts"][0].get("body").is_none(), "a text's link is not in the answer");
    assert_eq!(doc["orders"][0]["payment"], Value::Null, "no payment row in this order");
    assert_eq!(doc["orders"][0]["lines"], Value::Null);
    assert_eq!(doc["audit_log"][0]["ip"], "192.0.2.7");
    assert_eq!(doc["truncated"], json!([]));
    assert!(count(&doc, "elsewhere") > 0, "it says where else the address went");
    assert!(
        !doc.to_string().contains(&other_order.to_string()),
        "another organization's order is not in an organizer's answer"
    );
    // No mail body (its links open the order) is in the answer.
    assert!(doc["mails"][0].get("text_body").is_none());

    // The operator reaches every organization.
    let (s, all) = access(&api, &root, BUYER).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!((count(&all, "orders"), count(&all, "tickets")), (2, 3));
    assert_eq!(all["organization_id"], Value::Null);

    // An address nobody used: empty sections, not an error.
    let (s, none) = access(&api, &acme_key, "nobody@example.test").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(count(&none, "orders"), 0);

    // Bad input and roles.
    let (s, p) = access(&api, &acme_key, "not an address").await;
    assert_eq!(
        (s, p["type"].as_str().unwrap().ends_with("validation-failed")),
        (StatusCode::UNPROCESSABLE_ENTITY, true),
        "{p}"
    );
    let (s, _) = api
        .call(
            &acme_key,
            Method::POST,
            "/api/v1/privacy/access-requests",
            Some(json!({ "email": BUYER, "x": 1 })),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, staff) =
        api.add_user(&acme_key, json!({ "email": "staff@acme.test", "role": "organizer_staff" })).await;
    let (_, staff_key) = api.add_key(&acme_key, &staff).await;
    let (s, _) = access(&api, staff_key["key"].as_str().unwrap(), BUYER).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "staff do not answer privacy requests");
    let (s, _) = access(&api, "", BUYER).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Each answered request is in the organization's log, by the address's hash and counts only.
    let rows: Vec<(String, String, Value)> = sqlx::query_as(
        "SELECT action, subject, details FROM audit_log WHERE action = 'privacy.access' AND organization_id = $1::uuid ORDER BY id",
    )
    .bind(&acme)
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0].1, format!("person:{}", regional_core::tokens::holder_of(BUYER)));
    assert_eq!(rows[0].2["orders"], 1);
    assert!(!rows.iter().any(|r| r.2.to_string().to_lowercase().contains("example.test")));
}

#[sqlx::test]
async fn an_erasure_keeps_tickets_still_to_be_used_valid_until_their_event_is_over(db: PgPool) {
    let api = start(&db).await;
    let (_, [(acme, key), (globex, globex_key)]) = two_tenants(&api).await;
    // One event over (its traces erased now), one still to come (its tickets kept valid).
    let (past, past_order, past_tickets) = paid_tickets(&api, &key, &acme, &["A-1"]).await;
    traces(&db, &acme, &past, past_order, past_tickets[0]).await;
    ended(&db, &past, 3).await;
    let (coming, coming_order, coming_tickets) = paid_tickets(&api, &key, &acme, &["A-1", "A-2"]).await;
    let (theirs, theirs_order, theirs_tickets) = paid_tickets(&api, &globex_key, &globex, &["A-1"]).await;
    traces(&db, &globex, &theirs, theirs_order, theirs_tickets[0]).await;
    // An open offer of a ticket to come (withdrawn, its address erased now, the mail that offered
    // it to the friend deleted: it names the buyer), and a partner delivery naming another person
    // whose address contains the buyer's (not theirs to erase).
    let offered = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO notifications (id, dedup_key, kind, recipient, subject, text_body, html_body, event_id, state)
         VALUES (gen_random_uuid(), $1, 'transfer_offer', 'friend@example.test', 'A ticket', $2, $2, $3::uuid, 'sent')",
    )
    .bind(format!("transfer_offer:{offered}"))
    .bind(format!("{BUYER} wants to give you a ticket"))
    .bind(&coming)
    .execute(&db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO ticket_transfers (id, ticket_id, order_id, event_id, from_email, to_email, expires_at)
         VALUES ($5, $1, $2, $3::uuid, $4, 'friend@example.test', now() + interval '1 day')",
    )
    .bind(coming_tickets[1])
    .bind(coming_order)
    .bind(&coming)
    .bind(BUYER)
    .bind(offered)
    .execute(&db)
    .await
    .unwrap();
    let endpoint: Uuid =
        sqlx::query_scalar("SELECT endpoint_id FROM webhook_deliveries WHERE organization_id = $1::uuid")
            .bind(&acme)
            .fetch_one(&db)
            .await
            .unwrap();
    let other = json!({ "type": "order.paid", "data": { "email": "xbuyer@example.test" } }).to_string();
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, endpoint_id, organization_id, event_type, body)
         VALUES (gen_random_uuid(), $1, $2::uuid, 'order.paid', $3)",
    )
    .bind(endpoint)
    .bind(&acme)
    .bind(other)
    .execute(&db)
    .await
    .unwrap();

    let (s, erased) = erase(&api, &key, json!({ "email": "BUYER@example.test" })).await;
    assert_eq!(s, StatusCode::OK, "{erased}");
    assert_eq!((erased["orders"].as_u64(), erased["tickets"].as_u64()), (Some(1), Some(1)), "{erased}");
    assert_eq!(erased["tickets_voided"], 0);
    assert_eq!(erased["transfers"], 2, "both offers, the past event's and the one to come");
    assert_eq!(erased["transfers_withdrawn"], 2);
    assert_eq!(erased["mails"], 2, "the buyer's confirmation and the offer's mail to the friend");
    assert_eq!(erased["outbox_messages"], 1);
    assert_eq!(erased["webhook_deliveries"], 1, "only the buyer's own");
    assert_eq!(api.count("webhook_deliveries").await, 2, "the other person's and globex's stay");
    assert_eq!(
        erased["deferred"],
        json!([{ "event_id": coming, "ends_at": erased["deferred"][0]["ends_at"], "orders": 1, "tickets": 2 }])
    );

    // The past order keeps its money and loses its person.
    let (email, visitor, total, state): (String, String, i64, String) =
        sqlx::query_as("SELECT email, visitor_id, total_minor, state FROM orders WHERE id = $1")
            .bind(past_order)
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(email, format!("erased-{past_order}@erased.invalid"));
    assert_eq!((visitor, total, state.as_str()), (format!("erased:{past_order}"), 4000, "paid"));
    // The tickets to come still admit, under the buyer's address, marked for later.
    let kept: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT state, holder_email, erase_requested_at IS NOT NULL FROM tickets WHERE order_id = $1 ORDER BY seat_id",
    )
    .bind(coming_order)
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(kept, vec![("valid".into(), BUYER.into(), true); 2]);
    // Another organization's buyer with the same address is not this organizer's to erase.
    let globex_left = still_holding(&db, &globex).await;
    assert_eq!(globex_left.len(), 6, "{globex_left:?}");
    // Nothing of the past event holds the address any more; the event to come holds its order
    // and tickets only.
    assert_eq!(still_holding(&db, &acme).await, vec!["orders: 1", "tickets: 2"]);

    // An erased address is never mailed again.
    let mut conn = db.acquire().await.unwrap();
    let mail = regional_core::notifications::Mail { subject: "s".into(), text: "t".into(), html: "h".into() };
    let queued = regional_core::notifications::queue(
        &mut conn,
        "x",
        "order_refunded",
        &email,
        &mail,
        &[],
        Some(past_order),
        None,
    )
    .await
    .unwrap();
    assert!(!queued);
    drop(conn);

    // Asking again changes nothing more (and says what is still kept).
    let (s, again) = erase(&api, &key, json!({ "email": BUYER })).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!((again["orders"].as_u64(), again["tickets"].as_u64()), (Some(0), Some(0)));
    assert_eq!(again["deferred"][0]["tickets"], 2);

    // The buyer gives a kept ticket away: its new holder is not the one who asked to be erased.
    let token = common::order_token(&signer(), coming_order, &coming);
    let path = format!("/api/v1/orders/{coming_order}/tickets/{}/transfer", coming_tickets[0]);
    let (s, offer) =
        api.call(&token, Method::POST, &path, Some(json!({ "to_email": "Friend2@example.test" }))).await;
    assert_eq!(s, StatusCode::CREATED, "{offer}");
    let gift: Uuid = offer["id"].as_str().unwrap().parse().unwrap();
    let (expires, ends): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
        "SELECT x.expires_at, e.ends_at FROM ticket_transfers x JOIN events e ON e.id = x.event_id WHERE x.id = $1",
    )
    .bind(gift)
    .fetch_one(&db)
    .await
    .unwrap();
    let coming_id: Uuid = coming.parse().unwrap();
    let friend = regional_core::tokens::transfer_token(
        &signer(),
        gift,
        coming_id,
        "Friend2@example.test",
        expires,
        ends,
    );
    let (s, accepted) =
        api.call(&friend, Method::POST, &format!("/api/v1/transfers/{gift}/accept"), None).await;
    assert_eq!(s, StatusCode::OK, "{accepted}");

    // Once the event is over, the retention job erases what waited for it.
    let settings = Retention { after_event_days: 730 };
    let nothing = retention::run(&db, settings).await.unwrap();
    assert_eq!(nothing.deferred_erasures, 0, "the event is not over yet");
    ended(&db, &coming, 0).await;
    let run = retention::run(&db, settings).await.unwrap();
    assert_eq!(run.deferred_erasures, 1, "{run:?}");
    assert_eq!(still_holding(&db, &acme).await, Vec::<String>::new());
    let states: Vec<String> = sqlx::query_scalar("SELECT state FROM tickets WHERE order_id = $1")
        .bind(coming_order)
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(states, vec!["valid"; 2], "used or not, a ticket's record stays");
    let holder: String = sqlx::query_scalar("SELECT holder_email FROM tickets WHERE id = $1")
        .bind(coming_tickets[0])
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(holder, "Friend2@example.test", "the friend's address is theirs, kept");
    let again = retention::run(&db, settings).await.unwrap();
    assert_eq!(again.deferred_erasures, 0, "done once");
    assert_eq!(still_holding(&db, &globex).await.len(), 6);

    // The erasure is in the log: counts, the choice, the person's hash.
    let details: Value = sqlx::query_scalar(
        "SELECT details FROM audit_log WHERE action = 'privacy.erasure' AND organization_id = $1::uuid ORDER BY id LIMIT 1",
    )
    .bind(&acme)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!((details["orders"].as_u64(), details["upcoming"].as_str()), (Some(1), Some("keep")));
    assert!(!details.to_string().to_lowercase().contains("buyer@"));
}

/// Offers `ticket` (held through `path`'s token) to `to`, who accepts: answers the new transfer.
async fn give(api: &Api, token: &str, path: &str, to: &str, event: &str) -> (Uuid, String) {
    let (s, offer) = api.call(token, Method::POST, path, Some(json!({ "to_email": to }))).await;
    assert_eq!(s, StatusCode::CREATED, "{offer}");
    let id: Uuid = offer["id"].as_str().unwrap().parse().unwrap();
    let (expires, ends): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
        "SELECT x.expires_at, e.ends_at FROM ticket_transfers x JOIN events e ON e.id = x.event_id WHERE x.id = $1",
    )
    .bind(id)
    .fetch_one(&api.db)
    .await
    .unwrap();
    let theirs =
        regional_core::tokens::transfer_token(&signer(), id, event.parse().unwrap(), to, expires, ends);
    let (s, accepted) =
        api.call(&theirs, Method::POST, &format!("/api/v1/transfers/{id}/accept"), None).await;
    assert_eq!(s, StatusCode::OK, "{accepted}");
    (id, theirs)
}

#[sqlx::test]
async fn an_erasure_of_someone_given_a_ticket_follows_the_ticket_they_pass_on(db: PgPool) {
    let api = start(&db).await;
    let (_, [(acme, key), _]) = two_tenants(&api).await;
    let (event, order, tickets) = paid_tickets(&api, &key, &acme, &["A-1"]).await;
    let token = common::order_token(&signer(), order, &event);
    let path = format!("/api/v1/orders/{order}/tickets/{}/transfer", tickets[0]);
    let (gift, friend_token) = give(&api, &token, &path, "friend@example.test", &event).await;

    // The friend asks to be erased: the ticket they hold is kept, and so is the transfer that gave
    // it to them (their link reads it), both marked.
    let (s, erased) = erase(&api, &key, json!({ "email": "friend@example.test" })).await;
    assert_eq!(s, StatusCode::OK, "{erased}");
    assert_eq!(
        (erased["transfers"].as_u64(), erased["deferred"][0]["tickets"].as_u64()),
        (Some(0), Some(1)),
        "{erased}"
    );
    // They pass it on; the new holder did not ask.
    let onward = format!("/api/v1/transfers/{gift}/transfer");
    give(&api, &friend_token, &onward, "third@example.test", &event).await;

    ended(&db, &event, 0).await;
    let run = retention::run(&db, Retention { after_event_days: 730 }).await.unwrap();
    assert_eq!(run.deferred_erasures, 1, "{run:?}");
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ticket_transfers WHERE 'friend@example.test' IN (lower(from_email), lower(to_email))",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(left, 0, "neither the transfer to them nor the one from them keeps their address");
    let holder: String = sqlx::query_scalar("SELECT holder_email FROM tickets WHERE id = $1")
        .bind(tickets[0])
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(holder, "third@example.test");
    let buyer: String = sqlx::query_scalar("SELECT email FROM orders WHERE id = $1")
        .bind(order)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(buyer, BUYER, "the buyer did not ask");
}

#[sqlx::test]
async fn an_erasure_that_voids_tickets_still_to_come_erases_everything_now(db: PgPool) {
    let api = start(&db).await;
    let (_, [(acme, key), _]) = two_tenants(&api).await;
    let (event, order, tickets) = paid_tickets(&api, &key, &acme, &["A-1", "A-2"]).await;
    traces(&db, &acme, &event, order, tickets[0]).await;
    let (s, body) = erase(&api, &key, json!({ "email": BUYER, "upcoming": "later" })).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "an unknown choice: {body}");

    let (s, erased) = erase(&api, &key, json!({ "email": BUYER, "upcoming": "void" })).await;
    assert_eq!(s, StatusCode::OK, "{erased}");
    assert_eq!(erased["tickets_voided"], 2);
    assert_eq!((erased["orders"].as_u64(), erased["tickets"].as_u64()), (Some(1), Some(2)));
    assert_eq!(erased["transfers_withdrawn"], 1, "the open offer to a friend");
    assert_eq!(erased["deferred"], json!([]));
    // Texts: both deleted (the offer's names the buyer as giver); the buyer's number gone from
    // the order, the friend's kept on the offer (theirs, not the buyer's).
    assert_eq!(erased["texts"], 2, "{erased}");
    assert_eq!(api.count("sms_messages").await, 0);
    let numbers: (Option<String>, Option<String>) = sqlx::query_as(
        "SELECT o.phone, x.to_phone FROM orders o JOIN ticket_transfers x ON x.order_id = o.id WHERE o.id = $1",
    )
    .bind(order)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(numbers, (None, Some("+447700900456".to_owned())));
    let states: Vec<String> = sqlx::query_scalar("SELECT state FROM tickets WHERE order_id = $1")
        .bind(order)
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(states, vec!["void"; 2]);
    let offer: String = sqlx::query_scalar("SELECT state FROM ticket_transfers WHERE order_id = $1")
        .bind(order)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(offer, "cancelled");
    assert_eq!(still_holding(&db, &acme).await, Vec::<String>::new());
    // Consumers learn the tickets are void (and not who held them).
    let voided: Value = sqlx::query_scalar(
        "SELECT payload FROM outbox WHERE payload->>'type' = 'ticket.voided' AND sent_at IS NULL",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(voided["ticket_ids"].as_array().unwrap().len(), 2);
    assert_eq!(
        (voided["order_id"].as_str(), voided["email"].as_str()),
        (Some(order.to_string().as_str()), Some("erased@erased.invalid"))
    );
    regional_core::bus::schema::check(&voided).expect("the documented schema");
}

#[sqlx::test]
async fn the_retention_job_ages_out_addresses_mails_and_messages(db: PgPool) {
    let api = start(&db).await;
    let (_, [(acme, key), _]) = two_tenants(&api).await;
    let (old, old_order, old_tickets) = paid_tickets(&api, &key, &acme, &["A-1"]).await;
    traces(&db, &acme, &old, old_order, old_tickets[0]).await;
    ended(&db, &old, 731).await;
    let (recent, recent_order, _) = paid_tickets(&api, &key, &acme, &["A-1"]).await;
    ended(&db, &recent, 10).await;
    // An order never paid, cancelled long ago, and one cancelled yesterday.
    let (_, cancelled, _) = paid_tickets(&api, &key, &acme, &["A-1"]).await;
    let (_, fresh_cancel, _) = paid_tickets(&api, &key, &acme, &["A-1"]).await;
    for (order, days) in [(cancelled, 31), (fresh_cancel, 1)] {
        sqlx::query("UPDATE orders SET state = 'cancelled', updated_at = now() - make_interval(days => $2) WHERE id = $1")
            .bind(order)
            .bind(days)
            .execute(&db)
            .await
            .unwrap();
    }
    // Mails, messages and sign-in requests of several ages.
    sqlx::query(
        "INSERT INTO notifications (id, dedup_key, kind, recipient, subject, text_body, html_body, state, created_at)
         VALUES (gen_random_uuid(), 'old', 'order_cancelled', 'a@example.test', 's', 't', 'h', 'sent', now() - interval '31 days'),
                (gen_random_uuid(), 'new', 'order_cancelled', 'a@example.test', 's', 't', 'h', 'sent', now() - interval '1 day'),
                (gen_random_uuid(), 'link', 'sign_in_link', 'a@example.test', 's', 't', 'h', 'sent', now() - interval '25 hours')",
    )
    .execute(&db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO outbox (topic, key, payload, created_at, sent_at) VALUES
           ('orders', 'k', '{\"type\": \"order.paid\", \"schema_version\": 1, \"email\": \"a@example.test\"}', now() - interval '9 days', now() - interval '8 days'),
           ('orders', 'k', '{\"type\": \"order.paid\", \"schema_version\": 1, \"email\": \"a@example.test\"}', now() - interval '2 days', now() - interval '2 days'),
           ('orders', 'k', '{\"type\": \"order.paid\", \"schema_version\": 1, \"email\": \"a@example.test\"}', now() - interval '9 days', NULL)",
    )
    .execute(&db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO sign_in_requests (address_key, client, at) VALUES ('k', 'c', now() - interval '2 days'), ('k', 'c', now())",
    )
    .execute(&db)
    .await
    .unwrap();
    // Texts a month old and a day old (of no event), besides the old event's two.
    sqlx::query(
        "INSERT INTO sms_messages (id, dedup_key, kind, recipient, body, state, created_at)
         VALUES (gen_random_uuid(), 'old-text', 'event_reminder', '+447700900999', 'b', 'delivered', now() - interval '31 days'),
                (gen_random_uuid(), 'new-text', 'event_reminder', '+447700900999', 'b', 'delivered', now() - interval '1 day')",
    )
    .execute(&db)
    .await
    .unwrap();
    let outbox_before = api.count("outbox").await;

    let run = retention::run(&db, Retention { after_event_days: 730 }).await.unwrap();
    assert_eq!(run.events_done, 1, "{run:?}");
    assert_eq!((run.orders, run.tickets, run.transfers), (1, 1, 1), "{run:?}");
    assert_eq!(run.cancelled_orders, 1, "{run:?}");
    assert_eq!(run.outbox_messages, 1, "only the message published more than a week ago: {run:?}");
    assert_eq!(run.sign_in_requests, 1, "{run:?}");
    // The old event's mail, the month-old mail and the day-old sign-in link.
    assert_eq!(run.mails, 3, "{run:?}");
    assert_eq!(run.texts, 3, "the old event's two and the month-old one: {run:?}");
    let kept: Vec<String> =
        sqlx::query_scalar("SELECT dedup_key FROM sms_messages").fetch_all(&db).await.unwrap();
    assert_eq!(kept, ["new-text"]);
    let (phone, to_phone): (Option<String>, Option<String>) = sqlx::query_as(
        "SELECT o.phone, x.to_phone FROM orders o JOIN ticket_transfers x ON x.order_id = o.id WHERE o.id = $1",
    )
    .bind(old_order)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!((phone, to_phone), (None, None), "numbers go with the addresses");
    assert_eq!(api.count("outbox").await, outbox_before - 1, "a message not yet published stays");

    let erased = |order: Uuid| {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, bool>("SELECT email LIKE '%@erased.invalid' FROM orders WHERE id = $1")
                .bind(order)
                .fetch_one(&db)
                .await
                .unwrap()
        }
    };
    assert!(erased(old_order).await && erased(cancelled).await);
    assert!(!erased(recent_order).await, "an event over ten days ago keeps its buyers' addresses");
    assert!(!erased(fresh_cancel).await);
    let done: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT personal_data_erased_at FROM events WHERE id = $1::uuid")
            .bind(&old)
            .fetch_one(&db)
            .await
            .unwrap();
    assert!(done.is_some());
    let again = retention::run(&db, Retention { after_event_days: 730 }).await.unwrap();
    assert_eq!(again.total(), 0, "nothing twice: {again:?}");
}

/// The sign-in link's token out of the mail queued for `to`.
async fn link_of(db: &PgPool, to: &str) -> Option<String> {
    let body: Option<String> = sqlx::query_scalar(
        "SELECT text_body FROM notifications WHERE kind = 'sign_in_link' AND recipient = $1 ORDER BY created_at DESC LIMIT 1",
    )
    .bind(to)
    .fetch_optional(db)
    .await
    .unwrap();
    let body = body?;
    let link = body.split_whitespace().find(|w| w.starts_with("http://shop.test/my-tickets#"))?;
    Some(link.split_once('#').unwrap().1.to_owned())
}

#[sqlx::test]
async fn a_buyer_gets_their_orders_again_by_a_sign_in_link_and_nobody_learns_who_bought(db: PgPool) {
    let api = start(&db).await;
    let (_, [(acme, key), (globex, globex_key)]) = two_tenants(&api).await;
    let (event, order, tickets) = paid_tickets(&api, &key, &acme, &["A-1"]).await;
    let (_, other_order, _) = paid_tickets(&api, &globex_key, &globex, &["A-1"]).await;
    // A ticket someone else gave them.
    let gift = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO ticket_transfers (id, ticket_id, order_id, event_id, from_email, to_email, state, expires_at)
         VALUES ($1, $2, $3, $4::uuid, 'friend@example.test', 'buyer@example.test', 'offered', now() + interval '1 day')",
    )
    .bind(gift)
    .bind(tickets[0])
    .bind(order)
    .bind(&event)
    .execute(&db)
    .await
    .unwrap();

    let api = &api;
    let sign_in = |email: &str| {
        let body = json!({ "email": email });
        async move { api.call("", Method::POST, "/api/v1/buyer/sign-in", Some(body)).await }
    };
    let (s, known) = sign_in(" Buyer@Example.test").await;
    assert_eq!(s, StatusCode::ACCEPTED, "{known}");
    let (s, unknown) = sign_in("stranger@example.test").await;
    assert_eq!((s, &unknown), (StatusCode::ACCEPTED, &known), "the same answer whoever asks");
    assert_eq!(link_of(&db, "stranger@example.test").await, None, "no mail to an address with nothing");
    let token = link_of(&db, "Buyer@Example.test").await.expect("a link to the buyer");

    let http = reqwest::Client::new();
    let mine = |token: String| {
        let req = http.get(format!("{}/api/v1/buyer/orders", api.base)).bearer_auth(token);
        async move {
            let resp = req.send().await.unwrap();
            (resp.status(), resp.json::<Value>().await.unwrap())
        }
    };
    let (s, list) = mine(token.clone()).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert_eq!(list["email"], "buyer@example.test");
    let ids: Vec<&str> =
        list["orders"].as_array().unwrap().iter().map(|o| o["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2, "both organizations' orders: they are the buyer's own");
    assert!(ids.contains(&order.to_string().as_str()) && ids.contains(&other_order.to_string().as_str()));
    assert!(list["orders"][0].get("visitor_id").is_none());
    // Each link opens its order, and the gift's opens the transfer.
    for o in list["orders"].as_array().unwrap() {
        let link = o["link"].as_str().unwrap();
        let (path, order_token) = link.split_once('#').unwrap();
        assert_eq!(path, format!("/orders/{}", o["id"].as_str().unwrap()));
        let resp =
            http.get(format!("{}/api/v1{path}", api.base)).bearer_auth(order_token).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{link}");
    }
    assert_eq!(list["transfers"].as_array().unwrap().len(), 1);
    let (path, transfer_token) = list["transfers"][0]["link"].as_str().unwrap().split_once('#').unwrap();
    assert_eq!(path, format!("/transfers/{gift}"));
    let resp =
        http.get(format!("{}/api/v1{path}", api.base)).bearer_auth(transfer_token).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // Other tokens are not sign-in tokens.
    let order_token = common::order_token(&signer(), order, &event);
    let (s, p) = mine(order_token).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{p}");
    let (s, _) = mine("junk".into()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let stranger = TokenSigner::from_seed("core-test", [9; 32]).unwrap();
    let (s, _) = mine(regional_core::tokens::sign_in_token(&stranger, "buyer@example.test")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "signed by another key");

    // Bounds: three requests an address an hour, then 429 with Retry-After; bad input 422.
    sign_in(BUYER).await;
    sign_in(BUYER).await;
    let resp = http
        .post(format!("{}/api/v1/buyer/sign-in", api.base))
        .json(&json!({ "email": BUYER }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "3600");
    let (s, _) = sign_in("nope").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let mails: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications WHERE kind = 'sign_in_link'")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(mails, 3, "one mail per accepted request for the known address");
    // What is kept of the requests: a hash of the address, never the address.
    let keys: Vec<String> =
        sqlx::query_scalar("SELECT address_key FROM sign_in_requests").fetch_all(&db).await.unwrap();
    assert!(keys.iter().all(|k| k.len() == 64 && !k.contains('@')));
}

#[sqlx::test]
async fn an_address_the_rules_no_longer_take_is_still_erased_row_by_row_when_its_event_ends(db: PgPool) {
    let api = start(&db).await;
    let (_, [(acme, key), _]) = two_tenants(&api).await;
    let (event, order, tickets) = paid_tickets(&api, &key, &acme, &["A-1"]).await;
    // An address stored before the rules refused it (no dot in its domain), its erasure asked for
    // while the event was to come, with a number, a text, and a ticket given to it with its own.
    let old = "old@localhost";
    sqlx::query(
        "UPDATE orders SET email = $2, phone = '+447700900123', erase_requested_at = now() WHERE id = $1",
    )
    .bind(order)
    .bind(old)
    .execute(&db)
    .await
    .unwrap();
    sqlx::query("UPDATE tickets SET holder_email = $2, erase_requested_at = now() WHERE id = $1")
        .bind(tickets[0])
        .bind(old)
        .execute(&db)
        .await
        .unwrap();
    let transfer = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO ticket_transfers (id, ticket_id, order_id, event_id, from_email, to_email, to_phone, state, expires_at, erase_requested_at)
         VALUES ($1, $2, $3, $4::uuid, 'giver@example.test', $5, '+447700900456', 'accepted', now(), now())",
    )
    .bind(transfer)
    .bind(tickets[0])
    .bind(order)
    .bind(&event)
    .bind(old)
    .execute(&db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO sms_messages (id, dedup_key, kind, recipient, body, order_id, state)
         VALUES (gen_random_uuid(), 'order_confirmation:' || $1, 'order_confirmation', '+447700900123', 'b', $1, 'delivered'),
                (gen_random_uuid(), 'transfer_offer:' || $2, 'transfer_offer', '+447700900456', 'b', $1, 'delivered')",
    )
    .bind(order)
    .bind(transfer)
    .execute(&db)
    .await
    .unwrap();
    ended(&db, &event, 1).await;

    let run = retention::run(&db, Retention { after_event_days: 730 }).await.unwrap();
    assert_eq!(run.deferred_erasures, 1, "{run:?}");
    let (email, phone): (String, Option<String>) =
        sqlx::query_as("SELECT email, phone FROM orders WHERE id = $1")
            .bind(order)
            .fetch_one(&db)
            .await
            .unwrap();
    assert!(email.ends_with("@erased.invalid") && phone.is_none(), "{email} {phone:?}");
    let holder: String = sqlx::query_scalar("SELECT holder_email FROM tickets WHERE id = $1")
        .bind(tickets[0])
        .fetch_one(&db)
        .await
        .unwrap();
    assert!(holder.ends_with("@erased.invalid"), "{holder}");
    let (to, to_phone): (String, Option<String>) =
        sqlx::query_as("SELECT to_email, to_phone FROM ticket_transfers WHERE id = $1")
            .bind(transfer)
            .fetch_one(&db)
            .await
            .unwrap();
    assert!(to.ends_with("@erased.invalid") && to_phone.is_none(), "{to} {to_phone:?}");
    assert_eq!(api.count("sms_messages").await, 0, "the texts go with the rows");
    // Done: a second run finds nothing more.
    assert_eq!(retention::run(&db, Retention { after_event_days: 730 }).await.unwrap().deferred_erasures, 0);
}
