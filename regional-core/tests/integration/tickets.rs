//! Ticket codes: a paid order's ticket renders as a QR code (PNG and SVG) that an independent
//! decoder (rqrr) reads back to a code that verifies offline with the core's published key, naming
//! the event, the ticket, its seat, its holder and its version; only the order's own token sees it.

use crate::common;

use common::{decode_png, order_token, paid_tickets, two_tenants, with_checkout, Api};
use regional_core::tokens::holder_of;
use serde_json::Value;
use shared_types::token::{verify, Claims, Expectation, KeyRing, TicketGrant, TokenKind, TokenSigner};
use sqlx::PgPool;
use uuid::Uuid;

#[sqlx::test]
async fn a_tickets_qr_code_decodes_to_a_code_that_verifies_offline(db: PgPool) {
    let signer = TokenSigner::from_seed("core-test", [4; 32]).unwrap();
    let api = Api::start_with(with_checkout(&db, &signer)).await;
    let (_, [(org, key), _]) = two_tenants(&api).await;
    let (event_id, order, tickets) = paid_tickets(&api, &key, &org, &["A-1"]).await;
    let ticket = tickets[0];
    let token = order_token(&signer, order, &event_id);
    let get = |path: String, bearer: Option<String>| {
        let http = api.http.clone();
        let url = format!("{}{path}", api.base);
        async move {
            let mut req = http.get(url);
            if let Some(b) = bearer {
                req = req.bearer_auth(b);
            }
            req.send().await.unwrap()
        }
    };
    let png = get(format!("/api/v1/orders/{order}/tickets/{ticket}/qr.png"), Some(token.clone())).await;
    assert_eq!(png.status(), 200);
    assert_eq!(png.headers()["content-type"], "image/png");
    let code = decode_png(&png.bytes().await.unwrap());

    // Verified offline with the published key only.
    let keys: Value = get("/api/v1/keys".into(), None).await.json().await.unwrap();
    let ring = KeyRing::parse(&format!(
        "{}:{}",
        keys["keys"][0]["kid"].as_str().unwrap(),
        keys["keys"][0]["public_key"].as_str().unwrap()
    ))
    .unwrap();
    let expect = Expectation {
        kind: TokenKind::Ticket,
        issuer: "core",
        audience: &event_id,
        subject: Some(&ticket.to_string()),
        now: chrono::Utc::now().timestamp(),
    };
    let claims: Claims<TicketGrant> = verify(&code, &ring, &expect).unwrap();
    assert_eq!(claims.extra.seat.as_deref(), Some("A-1"));
    assert_eq!(claims.extra.version, 1);
    assert_eq!(claims.extra.holder, holder_of("buyer@example.test"));
    assert_eq!(claims.jti, format!("{ticket}.1"));
    // Another event's scanner refuses it.
    let other = Expectation { audience: "00000000-0000-0000-0000-000000000000", ..expect.clone() };
    assert!(verify::<TicketGrant>(&code, &ring, &other).is_err());

    // The same code in the order's ticket list; an SVG too.
    let list: Value =
        get(format!("/api/v1/orders/{order}/tickets"), Some(token.clone())).await.json().await.unwrap();
    assert_eq!(list[0]["code"], code.as_str());
    let svg = get(format!("/api/v1/orders/{order}/tickets/{ticket}/qr.svg"), Some(token.clone())).await;
    assert_eq!(svg.headers()["content-type"], "image/svg+xml");
    assert!(svg.text().await.unwrap().contains("<svg"));

    // A re-issue (the buyer lost the code) gives a new version and a new code.
    let reissue = format!("{}/api/v1/orders/{order}/tickets/{ticket}/reissue", api.base);
    let reissued: Value =
        api.http.post(&reissue).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    let newer: Claims<TicketGrant> = verify(reissued["code"].as_str().unwrap(), &ring, &expect).unwrap();
    assert_eq!((newer.extra.version, reissued["version"].as_i64()), (2, Some(2)));
    assert_ne!(reissued["code"], code.as_str());
    let list: Value =
        get(format!("/api/v1/orders/{order}/tickets"), Some(token.clone())).await.json().await.unwrap();
    assert_eq!(list[0]["code"], reissued["code"]);
    let outbox: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE payload->>'type' = 'ticket.reissued'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(outbox, 1);
    // A used ticket cannot be re-issued.
    sqlx::query("UPDATE tickets SET state = 'used' WHERE id = $1").bind(ticket).execute(&db).await.unwrap();
    assert_eq!(api.http.post(&reissue).bearer_auth(&token).send().await.unwrap().status(), 409);

    // Only the order's own token.
    assert_eq!(get(format!("/api/v1/orders/{order}/tickets"), None).await.status(), 401);
    let stranger = order_token(&signer, Uuid::new_v4(), &event_id);
    assert_eq!(
        get(format!("/api/v1/orders/{order}/tickets/{ticket}/qr.png"), Some(stranger)).await.status(),
        404
    );
}
