//! Ticket transfer by e-mail: the giver offers a ticket, the recipient gets a mail with a link
//! (queued by the notifier from the outbox), accepts, and holds the ticket with a new code; the
//! giver's code and views no longer carry it. Declines, withdrawals and bad tokens change nothing.

use crate::common;

use std::sync::Arc;

use common::{paid_tickets, two_tenants, with_checkout, Api};
use regional_core::bus::relay::{Relay, Sink};
use regional_core::notifications::{MailSettings, Notifier};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use shared_types::token::{verify, Claims, Expectation, TicketGrant, TokenKind, TokenSigner};
use sqlx::PgPool;

fn signer() -> TokenSigner {
    TokenSigner::from_seed("core-test", [4; 32]).unwrap()
}

/// A call with a bearer token (order or transfer token).
async fn call(
    api: &Api,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = api.http.request(method, format!("{}{path}", api.base)).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Offers the ticket at `path` (`…/tickets/{id}`, or `/api/v1/transfers/{id}` to pass it on) to `to`.
async fn offer_ticket(api: &Api, path: &str, token: &str, to: &str) -> (StatusCode, Value) {
    call(api, Method::POST, &format!("{path}/transfer"), token, Some(json!({ "to_email": to }))).await
}

/// Delivers the outbox to the notifier (in this process) and answers the link of the offer mail
/// sent to `to`.
pub(crate) async fn offer_link(db: &PgPool, to: &str) -> String {
    let settings =
        Arc::new(MailSettings { buyer_url: "https://tickets.example.test".into(), signer: signer() });
    let notifier: Arc<dyn regional_core::bus::Consumer> = Arc::new(Notifier::new(settings));
    Relay::new(db.clone(), Sink::InProcess(vec![notifier])).relay_batch().await.unwrap();
    let text: String = sqlx::query_scalar(
        "SELECT text_body FROM notifications WHERE kind = 'transfer_offer' AND recipient = $1",
    )
    .bind(to)
    .fetch_one(db)
    .await
    .unwrap();
    let start = text.find("https://tickets.example.test/transfers/").expect("an accept link");
    text[start..].split_whitespace().next().unwrap().to_owned()
}

fn ticket_version(code: &str, event: &str) -> u32 {
    let expect = Expectation {
        kind: TokenKind::Ticket,
        issuer: "core",
        audience: event,
        subject: None,
        now: chrono::Utc::now().timestamp(),
    };
    let claims: Claims<TicketGrant> = verify(code, &signer().verifying_ring(), &expect).unwrap();
    claims.extra.version
}

#[sqlx::test]
async fn a_ticket_offered_by_mail_is_accepted_and_changes_hands(db: PgPool) {
    let api = Api::start_with(with_checkout(&db, &signer())).await;
    let (_, [(org, key), _]) = two_tenants(&api).await;
    let (event, order, tickets) = paid_tickets(&api, &key, &org, &["A-1", "A-2"]).await;
    let token = common::order_token(&signer(), order, &event);
    let base = format!("/api/v1/orders/{order}/tickets/{}", tickets[0]);

    // Bad offers change nothing.
    let (s, p) = offer_ticket(&api, &base, &token, "nope").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    let (s, _) = offer_ticket(&api, &base, &token, "buyer@example.test").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "not to its own holder");
    let (s, _) = offer_ticket(&api, &base, "junk", "f@example.test").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(api.count("ticket_transfers").await, 0);

    let (s, offer) = offer_ticket(&api, &base, &token, "Friend@Example.test").await;
    assert_eq!(s, StatusCode::CREATED, "{offer}");
    assert_eq!((offer["state"].as_str(), offer["seat_id"].as_str()), (Some("offered"), Some("A-1")));
    let (s, again) = offer_ticket(&api, &base, &token, "other@example.test").await;
    assert_eq!((s, again["reason"].as_str()), (StatusCode::CONFLICT, Some("transfer_open")));

    // The recipient's mail links to the offer with a token of its own.
    let link = offer_link(&db, "Friend@Example.test").await;
    let (path, transfer_token) =
        link.trim_start_matches("https://tickets.example.test").split_once('#').unwrap();
    let id = offer["id"].as_str().unwrap();
    assert_eq!(path, format!("/transfers/{id}"));
    let (s, seen) = call(&api, Method::GET, &format!("/api/v1/transfers/{id}"), transfer_token, None).await;
    assert_eq!((s, seen["state"].as_str()), (StatusCode::OK, Some("offered")));
    assert!(seen.get("code").is_none(), "no code before acceptance");
    // The order token is not a transfer token.
    let (s, _) = call(&api, Method::GET, &format!("/api/v1/transfers/{id}"), &token, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Accepted: the recipient holds it with a new code (version 2); accepting twice answers the same.
    let (_, before) = call(&api, Method::GET, &format!("/api/v1/orders/{order}/tickets"), &token, None).await;
    assert_eq!(before.as_array().unwrap().len(), 2);
    let (s, accepted) =
        call(&api, Method::POST, &format!("/api/v1/transfers/{id}/accept"), transfer_token, None).await;
    assert_eq!((s, accepted["state"].as_str()), (StatusCode::OK, Some("accepted")), "{accepted}");
    let new_code = accepted["code"].as_str().unwrap();
    assert_eq!(ticket_version(new_code, &event), 2);
    let (s, twice) =
        call(&api, Method::POST, &format!("/api/v1/transfers/{id}/accept"), transfer_token, None).await;
    assert_eq!((s, twice["code"].as_str()), (StatusCode::OK, Some(new_code)));
    let holder: String = sqlx::query_scalar("SELECT holder_email FROM tickets WHERE id = $1")
        .bind(tickets[0])
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(holder, "Friend@Example.test");
    let svg = api
        .http
        .get(format!("{}/api/v1/transfers/{id}/qr.svg", api.base))
        .bearer_auth(transfer_token)
        .send()
        .await
        .unwrap();
    assert_eq!(svg.status(), StatusCode::OK);

    // The giver's order no longer shows or re-issues it, and says it was given away.
    let (_, after) = call(&api, Method::GET, &format!("/api/v1/orders/{order}/tickets"), &token, None).await;
    assert_eq!(after.as_array().unwrap().len(), 1);
    assert_eq!(after[0]["seat_id"], "A-2");
    let (s, _) = call(&api, Method::GET, &format!("{base}/qr.svg"), &token, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = call(&api, Method::POST, &format!("{base}/reissue"), &token, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, view) = call(&api, Method::GET, &format!("/api/v1/orders/{order}"), &token, None).await;
    let given: Vec<bool> =
        view["tickets"].as_array().unwrap().iter().map(|t| t["transferred"].as_bool().unwrap()).collect();
    assert_eq!(given, [true, false]);
    let kinds: Vec<String> =
        sqlx::query_scalar("SELECT payload->>'type' FROM outbox WHERE topic = 'tickets' ORDER BY id")
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(kinds, ["ticket.transfer_offered", "ticket.transferred"]);
    let payloads: Vec<serde_json::Value> =
        sqlx::query_scalar("SELECT payload FROM outbox").fetch_all(&db).await.unwrap();
    for p in &payloads {
        regional_core::bus::schema::check(p).unwrap_or_else(|e| panic!("{e}: {p}"));
    }
}

#[sqlx::test]
async fn a_declined_or_withdrawn_offer_leaves_the_ticket_with_its_giver(db: PgPool) {
    let api = Api::start_with(with_checkout(&db, &signer())).await;
    let (_, [(org, key), _]) = two_tenants(&api).await;
    let (event, order, tickets) = paid_tickets(&api, &key, &org, &["A-1"]).await;
    let token = common::order_token(&signer(), order, &event);
    let base = format!("/api/v1/orders/{order}/tickets/{}", tickets[0]);
    let offer = |to: &'static str| {
        let (api, token, base) = (&api, token.clone(), base.clone());
        async move {
            let (s, o) = offer_ticket(api, &base, &token, to).await;
            assert_eq!(s, StatusCode::CREATED, "{o}");
            o["id"].as_str().unwrap().to_owned()
        }
    };

    // Declined by its recipient.
    let first = offer("one@example.test").await;
    let link = offer_link(&db, "one@example.test").await;
    let t1 = link.split_once('#').unwrap().1.to_owned();
    let (s, d) = call(&api, Method::POST, &format!("/api/v1/transfers/{first}/decline"), &t1, None).await;
    assert_eq!((s, d["state"].as_str()), (StatusCode::OK, Some("declined")));
    let (s, late) = call(&api, Method::POST, &format!("/api/v1/transfers/{first}/accept"), &t1, None).await;
    assert_eq!((s, late["reason"].as_str()), (StatusCode::CONFLICT, Some("offer_closed")));

    // Withdrawn by its giver before the recipient accepts.
    let second = offer("two@example.test").await;
    let link = offer_link(&db, "two@example.test").await;
    let t2 = link.split_once('#').unwrap().1.to_owned();
    let (s, w) = call(&api, Method::POST, &format!("{base}/transfer/cancel"), &token, None).await;
    assert_eq!((s, w["state"].as_str()), (StatusCode::OK, Some("cancelled")));
    let (s, _) = call(&api, Method::POST, &format!("/api/v1/transfers/{second}/accept"), &t2, None).await;
    assert_eq!(s, StatusCode::CONFLICT);
    // One offer's token does not open another.
    let (s, _) = call(&api, Method::GET, &format!("/api/v1/transfers/{second}"), &t1, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let (holder, version): (String, i32) =
        sqlx::query_as("SELECT holder_email, version FROM tickets WHERE id = $1")
            .bind(tickets[0])
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!((holder.as_str(), version), ("Buyer@Example.test", 1));
}

#[sqlx::test]
async fn a_recipient_passes_the_ticket_on_and_only_the_holder_can(db: PgPool) {
    let api = Api::start_with(with_checkout(&db, &signer())).await;
    let (_, [(org, key), _]) = two_tenants(&api).await;
    let (event, order, tickets) = paid_tickets(&api, &key, &org, &["A-1"]).await;
    let token = common::order_token(&signer(), order, &event);
    let base = format!("/api/v1/orders/{order}/tickets/{}", tickets[0]);
    let link_token = |link: String| link.split_once('#').unwrap().1.to_owned();

    // The buyer gives it to B, who accepts.
    let (_, to_b) = offer_ticket(&api, &base, &token, "b@example.test").await;
    let b_id = to_b["id"].as_str().unwrap().to_owned();
    let b_token = link_token(offer_link(&db, "b@example.test").await);
    // B cannot give what B does not hold yet.
    let (s, p) = offer_ticket(&api, &format!("/api/v1/transfers/{b_id}"), &b_token, "c@example.test").await;
    assert_eq!((s, p["reason"].as_str()), (StatusCode::CONFLICT, Some("not_holder")));
    let (s, _) = call(&api, Method::POST, &format!("/api/v1/transfers/{b_id}/accept"), &b_token, None).await;
    assert_eq!(s, StatusCode::OK);

    // B offers it to C: bad input and the buyer's token change nothing.
    let on = format!("/api/v1/transfers/{b_id}/transfer");
    let (s, _) = call(&api, Method::POST, &on, &b_token, Some(json!({ "to_email": "nope" }))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = call(&api, Method::POST, &on, &b_token, Some(json!({ "to_email": "B@example.test" }))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "not to its own holder");
    let (s, _) = call(&api, Method::POST, &on, &token, Some(json!({ "to_email": "c@example.test" }))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "the buyer's order token is not B's transfer token");
    let (s, to_c) =
        call(&api, Method::POST, &on, &b_token, Some(json!({ "to_email": "c@example.test" }))).await;
    assert_eq!((s, to_c["state"].as_str()), (StatusCode::CREATED, Some("offered")), "{to_c}");
    // The buyer can neither withdraw B's offer nor offer the ticket again: it is not theirs.
    let (s, _) = call(&api, Method::POST, &format!("{base}/transfer/cancel"), &token, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = offer_ticket(&api, &base, &token, "d@example.test").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // B sees the offer; B's mail to C names B as the giver.
    let (_, b_view) = call(&api, Method::GET, &format!("/api/v1/transfers/{b_id}"), &b_token, None).await;
    assert_eq!(b_view["onward"]["to_email"], "c@example.test");
    assert_eq!(b_view["onward"]["state"], "offered");
    let c_link = offer_link(&db, "c@example.test").await;
    let mail: String = sqlx::query_scalar(
        "SELECT text_body FROM notifications WHERE kind = 'transfer_offer' AND recipient = 'c@example.test'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert!(mail.starts_with("b@example.test wants to give you a ticket"), "{mail}");

    // B withdraws and offers again; C accepts: C holds version 3, B no longer has a code.
    let (s, cancelled) = call(&api, Method::POST, &format!("{on}/cancel"), &b_token, None).await;
    assert_eq!((s, cancelled["state"].as_str()), (StatusCode::OK, Some("cancelled")));
    let (s, p) = call(&api, Method::POST, &format!("{on}/cancel"), &b_token, None).await;
    assert_eq!((s, p["reason"].as_str()), (StatusCode::CONFLICT, Some("no_open_offer")));
    let (s, to_c) =
        call(&api, Method::POST, &on, &b_token, Some(json!({ "to_email": "c@example.test" }))).await;
    assert_eq!(s, StatusCode::CREATED);
    let c_id = to_c["id"].as_str().unwrap().to_owned();
    let c_token = {
        // The first link was for the withdrawn offer; the new one has its own id.
        assert!(c_link.contains(&format!("/transfers/{}", cancelled["id"].as_str().unwrap())));
        let settings =
            Arc::new(MailSettings { buyer_url: "https://tickets.example.test".into(), signer: signer() });
        let notifier: Arc<dyn regional_core::bus::Consumer> = Arc::new(Notifier::new(settings));
        Relay::new(db.clone(), Sink::InProcess(vec![notifier])).relay_batch().await.unwrap();
        let text: String = sqlx::query_scalar(
            "SELECT text_body FROM notifications WHERE kind = 'transfer_offer' AND text_body LIKE '%' || $1 || '%'",
        )
        .bind(&c_id)
        .fetch_one(&db)
        .await
        .unwrap();
        let start = text.find("https://tickets.example.test/transfers/").unwrap();
        link_token(text[start..].split_whitespace().next().unwrap().to_owned())
    };
    let (s, c_view) =
        call(&api, Method::POST, &format!("/api/v1/transfers/{c_id}/accept"), &c_token, None).await;
    assert_eq!((s, c_view["state"].as_str()), (StatusCode::OK, Some("accepted")), "{c_view}");
    assert_eq!(ticket_version(c_view["code"].as_str().unwrap(), &event), 3);
    let (_, b_view) = call(&api, Method::GET, &format!("/api/v1/transfers/{b_id}"), &b_token, None).await;
    assert!(b_view.get("code").is_none(), "B gave it away: {b_view}");
    assert_eq!(b_view["onward"]["state"], "accepted");
    let (s, _) = call(&api, Method::GET, &format!("/api/v1/transfers/{b_id}/qr.svg"), &b_token, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, p) = call(&api, Method::POST, &on, &b_token, Some(json!({ "to_email": "d@example.test" }))).await;
    assert_eq!((s, p["reason"].as_str()), (StatusCode::CONFLICT, Some("not_holder")));
    let payloads: Vec<Value> = sqlx::query_scalar("SELECT payload FROM outbox").fetch_all(&db).await.unwrap();
    for p in &payloads {
        regional_core::bus::schema::check(p).unwrap_or_else(|e| panic!("{e}: {p}"));
    }
}
