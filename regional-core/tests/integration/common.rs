//! What the core's HTTP tests share: the core served on a loopback port against the test's fresh
//! database, a client that checks every error is problem+json, and two tenants to test scoping.

use std::time::Duration;

use regional_core::accounts::create_platform_admin;
use regional_core::{router, AppState};
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;

pub struct Api {
    pub base: String,
    /// The operators' listener (`/metrics`), apart from the API's.
    pub metrics_base: String,
    pub http: Client,
    pub db: PgPool,
}

impl Api {
    pub async fn start(db: PgPool) -> Self {
        Self::start_with(AppState::new(db.clone(), Duration::from_millis(1000))).await
    }

    /// The core with this state (e.g. with checkout configured).
    pub async fn start_with(state: AppState) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, state).await
    }

    /// The core with this state on `listener` (bound first when the state must name its own URL).
    pub async fn start_on(listener: tokio::net::TcpListener, state: AppState) -> Self {
        let db = state.db.clone();
        let ops = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ops_addr = ops.local_addr().unwrap();
        let metrics = regional_core::metrics_router(state.clone());
        tokio::spawn(async move { axum::serve(ops, metrics).await.unwrap() });
        let addr = listener.local_addr().unwrap();
        // With the peer's address, as `serve` does (the audit log's client address).
        let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            base: format!("http://{addr}"),
            metrics_base: format!("http://{ops_addr}"),
            http: Client::new(),
            db,
        }
    }

    pub async fn call(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_with(key, method, path, body, &[]).await
    }

    /// `GET path`.
    pub async fn get(&self, key: &str, path: &str) -> (StatusCode, Value) {
        self.call(key, Method::GET, path, None).await
    }

    /// `POST /api/v1/users` with `body`.
    pub async fn add_user(&self, key: &str, body: Value) -> (StatusCode, Value) {
        self.call(key, Method::POST, "/api/v1/users", Some(body)).await
    }

    /// A new API key for `user` (as the API answered it).
    pub async fn add_key(&self, key: &str, user: &Value) -> (StatusCode, Value) {
        let path = format!("/api/v1/users/{}/api-keys", user["id"].as_str().unwrap());
        self.call(key, Method::POST, &path, None).await
    }

    pub async fn call_with(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(key);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        if status.is_client_error() || status.is_server_error() {
            assert_eq!(resp.headers()["content-type"], "application/problem+json");
        }
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {table}")).fetch_one(&self.db).await.unwrap()
    }
}

/// A platform admin, two organizations, each with an organizer admin (keys returned).
pub async fn two_tenants(api: &Api) -> (String, [(String, String); 2]) {
    let root = create_platform_admin(&api.db, "root@platform.test", "Root").await.unwrap().key;
    let mut tenants = Vec::new();
    for slug in ["acme", "globex"] {
        let (s, org) = api
            .call(
                &root,
                Method::POST,
                "/api/v1/organizations",
                Some(json!({ "name": slug, "slug": slug, "time_zone": "Europe/Berlin" })),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{org}");
        let org_id = org["id"].as_str().unwrap().to_owned();
        let (s, user) = api.add_user(&root, json!({ "email": format!("admin@{slug}.test"), "role": "organizer_admin", "organization_id": org_id }))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{user}");
        let (s, key) = api.add_key(&root, &user).await;
        assert_eq!(s, StatusCode::CREATED, "{key}");
        tenants.push((org_id, key["key"].as_str().unwrap().to_owned()));
    }
    (root, [tenants[0].clone(), tenants[1].clone()])
}

/// Checkout signing with `signer`, its edge and test provider unreachable (tests that need them
/// run end to end); a test changes what it needs with `Checkout { field, ..checkout(..) }`.
pub fn checkout(db: &PgPool, signer: &shared_types::token::TokenSigner) -> regional_core::checkout::Checkout {
    use regional_core::payments::{provider::Provider, testpay::TestPay};
    regional_core::checkout::Checkout {
        db: db.clone(),
        edge: regional_core::edge_client::EdgeClient::new("http://127.0.0.1:9", signer.clone()),
        provider: Provider::Test(TestPay::new(db.clone(), "http://127.0.0.1:9", "whsec_test".into())),
        edge_keys: shared_types::token::KeyRing::default(),
        signer: signer.clone(),
        previous_keys: shared_types::token::KeyRing::default(),
        fault: None,
        grace: chrono::Duration::seconds(30),
    }
}

/// The core's state with this checkout.
pub fn state_with(checkout: regional_core::checkout::Checkout) -> AppState {
    let mut state = AppState::new(checkout.db.clone(), Duration::from_secs(1));
    state.checkout = Some(std::sync::Arc::new(checkout));
    state
}

/// The core's state with the default test [`checkout`].
pub fn with_checkout(db: &PgPool, signer: &shared_types::token::TokenSigner) -> AppState {
    state_with(checkout(db, signer))
}

/// A venue with `seats` in one row, an event there with a seated tier, and a paid order holding a
/// ticket for each seat, as checkout leaves it: (event id, order id, ticket ids).
pub async fn paid_tickets(
    api: &Api,
    key: &str,
    org: &str,
    seats: &[&str],
) -> (String, uuid::Uuid, Vec<uuid::Uuid>) {
    let seat_list: Vec<Value> = seats
        .iter()
        .enumerate()
        .map(|(i, s)| json!({ "id": s, "label": (i + 1).to_string(), "x": i, "y": 0, "zone": "std" }))
        .collect();
    let (s, venue) = api
        .call(
            key,
            Method::POST,
            "/api/v1/venues",
            Some(json!({
            "name": "Hall", "time_zone": "UTC", "zones": [{ "id": "std", "name": "Standard" }],
            "sections": [{ "id": "A", "name": "A", "rows": [{ "label": "1", "seats": seat_list }] }] })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{venue}");
    let (_, event) = api
        .call(
            key,
            Method::POST,
            "/api/v1/events",
            Some(json!({ "venue_id": venue["id"], "title": "Gig",
            "starts_at": "2027-01-01T20:00:00Z", "ends_at": "2027-01-01T23:00:00Z" })),
        )
        .await;
    let event_id = event["id"].as_str().unwrap().to_owned();
    let (_, tier) = api
        .call(key, Method::POST, &format!("/api/v1/events/{event_id}/tiers"), Some(json!({
            "name": "Seats", "kind": "seated", "currency": "EUR", "price_minor": 4000, "quantity": seats.len() })))
        .await;
    let order = uuid::Uuid::new_v4();
    let org: uuid::Uuid = org.parse().unwrap();
    let event: uuid::Uuid = event_id.parse().unwrap();
    sqlx::query(
        "INSERT INTO orders (id, organization_id, event_id, visitor_id, hold_id, idempotency_key, request_hash, email, state,
             currency, subtotal_minor, discount_minor, fee_minor, tax_minor, total_minor, hold_expires_at)
         VALUES ($1, $2, $3, 'v0123456789abcdef', $4, $4, 'x', 'Buyer@Example.test', 'paid', 'EUR', 4000, 0, 0, 0, 4000, now())",
    )
    .bind(order)
    .bind(org)
    .bind(event)
    .bind(format!("h0-{}", order.simple()))
    .execute(&api.db)
    .await
    .unwrap();
    let mut tickets = Vec::new();
    for seat in seats {
        let ticket = uuid::Uuid::new_v4();
        sqlx::query(
            "INSERT INTO tickets (id, order_id, organization_id, event_id, tier_id, seat_id, holder_email)
             VALUES ($1, $2, $3, $4, $5::uuid, $6, 'Buyer@Example.test')",
        )
        .bind(ticket)
        .bind(order)
        .bind(org)
        .bind(event)
        .bind(tier["id"].as_str().unwrap())
        .bind(seat)
        .execute(&api.db)
        .await
        .unwrap();
        tickets.push(ticket);
    }
    (event_id, order, tickets)
}

/// Reads a QR code out of an 8-bit greyscale (or grey RGB) PNG with an independent decoder.
pub fn decode_png(bytes: &[u8]) -> String {
    let decoder = png::Decoder::new(bytes);
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).unwrap();
    let channels = match info.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::Rgb => 3,
        other => panic!("a {other:?} PNG"),
    };
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let (w, h) = (info.width as usize, info.height as usize);
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| pixels[(y * w + x) * channels]);
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the image");
    grids[0].decode().unwrap().1
}

/// The order token checkout gives the buyer of `order` (the visitor of [`paid_tickets`]).
pub fn order_token(signer: &shared_types::token::TokenSigner, order: uuid::Uuid, event: &str) -> String {
    order_token_as(signer, order, event, "v0123456789abcdef")
}

/// The order token checkout gives the buyer of `order`, the visitor `visitor`.
pub fn order_token_as(
    signer: &shared_types::token::TokenSigner,
    order: uuid::Uuid,
    event: &str,
    visitor: &str,
) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = shared_types::token::Claims {
        iss: "core".into(),
        aud: event.into(),
        sub: visitor.into(),
        iat: now,
        exp: now + 3600,
        jti: order.to_string(),
        extra: serde_json::json!({}),
    };
    signer.sign(shared_types::token::TokenKind::Order, &claims)
}

/// A private CA and a certificate for localhost in `dir` (`scripts/test-pki.sh`: `ca.pem`, `ca.key`,
/// `cert.pem`, `key.pem`; for the name `localhost` only), for TLS tests.
pub fn test_pki(dir: &std::path::Path) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/test-pki.sh");
    let made = std::process::Command::new("sh").arg(script).arg(dir).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
}

/// Partner webhooks' settings for a test: a fixed sealing key, `retries` (seconds), endpoints
/// on loopback allowed when `local` (development mode's `CORE_WEBHOOK_ALLOW_PRIVATE`).
pub fn webhook_settings(
    local: bool,
    retries: &str,
    disable_after: Duration,
) -> regional_core::webhooks::settings::Settings {
    regional_core::webhooks::settings::Settings {
        keys: "test-1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8".parse().unwrap(),
        allow_private: local,
        retries: retries.parse().unwrap(),
        disable_after,
        timeout: Duration::from_secs(5),
        poll: Duration::from_secs(1),
    }
}
