//! Ticket codes: a paid order's ticket renders as a QR code (PNG and SVG) that an independent
//! decoder (rqrr) reads back to a code that verifies offline with the core's published key, naming
//! the event, the ticket, its seat, its holder and its version; only the order's own token sees it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{two_tenants, Api};
use regional_core::checkout::Checkout;
use regional_core::fulfillment::tickets::holder_of;
use regional_core::payments::testpay::TestPay;
use regional_core::payments::Provider;
use regional_core::publishing::EdgeClient;
use regional_core::AppState;
use reqwest::Method;
use serde_json::{json, Value};
use shared_types::token::{verify, Claims, Expectation, KeyRing, TicketGrant, TokenKind, TokenSigner};
use sqlx::PgPool;
use uuid::Uuid;

fn order_token(signer: &TokenSigner, order: Uuid, event: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        iss: "core".into(),
        aud: event.into(),
        sub: "v0123456789abcdef".into(),
        iat: now,
        exp: now + 3600,
        jti: order.to_string(),
        extra: json!({}),
    };
    signer.sign(TokenKind::Order, &claims)
}

/// Reads a QR code out of a greyscale PNG with an independent decoder.
fn decode_png(bytes: &[u8]) -> String {
    let decoder = png::Decoder::new(bytes);
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert_eq!(info.color_type, png::ColorType::Grayscale);
    let (w, h) = (info.width as usize, info.height as usize);
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| pixels[y * w + x]);
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the image");
    grids[0].decode().unwrap().1
}

#[sqlx::test]
async fn a_tickets_qr_code_decodes_to_a_code_that_verifies_offline(db: PgPool) {
    let signer = TokenSigner::from_seed("core-test", [4; 32]).unwrap();
    let mut state = AppState::new(db.clone(), Duration::from_secs(1));
    state.checkout = Some(Arc::new(Checkout {
        db: db.clone(),
        edge: EdgeClient::new("http://127.0.0.1:9", signer.clone()),
        provider: Provider::Test(TestPay::new(db.clone(), "http://127.0.0.1:9", "whsec_test".into())),
        edge_keys: KeyRing::default(),
        signer: signer.clone(),
        fault: None,
        grace: chrono::Duration::seconds(30),
    }));
    let api = Api::start_with(state).await;
    let (_, [(org, key), _]) = two_tenants(&api).await;
    let (_, venue) = api
        .call(&key, Method::POST, "/api/v1/venues", Some(json!({
            "name": "Hall", "time_zone": "UTC", "zones": [{ "id": "std", "name": "Standard" }],
            "sections": [{ "id": "A", "name": "A", "rows": [{ "label": "1", "seats": [{ "id": "A-1", "label": "1", "x": 0, "y": 0, "zone": "std" }] }] }] })))
        .await;
    let (_, event) = api
        .call(
            &key,
            Method::POST,
            "/api/v1/events",
            Some(json!({ "venue_id": venue["id"], "title": "Gig",
            "starts_at": "2027-01-01T20:00:00Z", "ends_at": "2027-01-01T23:00:00Z" })),
        )
        .await;
    let event_id = event["id"].as_str().unwrap().to_owned();
    let (_, tier) = api
        .call(
            &key,
            Method::POST,
            &format!("/api/v1/events/{event_id}/tiers"),
            Some(json!({
            "name": "Seats", "kind": "seated", "currency": "EUR", "price_minor": 4000, "quantity": 1 })),
        )
        .await;
    // A paid order with one ticket, as checkout leaves it.
    let (order, ticket) = (Uuid::new_v4(), Uuid::new_v4());
    let org: Uuid = org.parse().unwrap();
    let event: Uuid = event_id.parse().unwrap();
    sqlx::query(
        "INSERT INTO orders (id, organization_id, event_id, visitor_id, hold_id, idempotency_key, request_hash, email, state,
             currency, subtotal_minor, discount_minor, fee_minor, tax_minor, total_minor, hold_expires_at)
         VALUES ($1, $2, $3, 'v0123456789abcdef', 'h0-01', 'k', 'x', 'Buyer@Example.test', 'paid', 'EUR', 4000, 0, 0, 0, 4000, now())",
    )
    .bind(order)
    .bind(org)
    .bind(event)
    .execute(&db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO tickets (id, order_id, organization_id, event_id, tier_id, seat_id, holder_email)
         VALUES ($1, $2, $3, $4, $5::uuid, 'A-1', 'Buyer@Example.test')",
    )
    .bind(ticket)
    .bind(order)
    .bind(org)
    .bind(event)
    .bind(tier["id"].as_str().unwrap())
    .execute(&db)
    .await
    .unwrap();

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

    // A re-issue (a new version) gives a new code; the old one names the old version.
    sqlx::query("UPDATE tickets SET version = 2 WHERE id = $1").bind(ticket).execute(&db).await.unwrap();
    let list: Value =
        get(format!("/api/v1/orders/{order}/tickets"), Some(token.clone())).await.json().await.unwrap();
    let newer: Claims<TicketGrant> = verify(list[0]["code"].as_str().unwrap(), &ring, &expect).unwrap();
    assert_eq!(newer.extra.version, 2);
    assert_ne!(list[0]["code"], code.as_str());

    // Only the order's own token.
    assert_eq!(get(format!("/api/v1/orders/{order}/tickets"), None).await.status(), 401);
    let stranger = order_token(&signer, Uuid::new_v4(), &event_id);
    assert_eq!(
        get(format!("/api/v1/orders/{order}/tickets/{ticket}/qr.png"), Some(stranger)).await.status(),
        404
    );
}
