//! What the core's HTTP tests share: the core served on a loopback port against the test's fresh
//! database, a client that checks every error is problem+json, and two tenants to test scoping.
#![allow(dead_code)]

use std::time::Duration;

use regional_core::accounts::create_platform_admin;
use regional_core::{router, AppState};
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;

pub struct Api {
    pub base: String,
    pub http: Client,
    pub db: PgPool,
}

impl Api {
    pub async fn start(db: PgPool) -> Self {
        Self::start_with(AppState::new(db.clone(), Duration::from_millis(1000))).await
    }

    /// The core with this state (e.g. with checkout configured).
    pub async fn start_with(state: AppState) -> Self {
        let db = state.db.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router(state)).await.unwrap() });
        Self { base: format!("http://{addr}"), http: Client::new(), db }
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
        let (s, user) = api
            .call(
                &root,
                Method::POST,
                "/api/v1/users",
                Some(json!({ "email": format!("admin@{slug}.test"), "role": "organizer_admin", "organization_id": org_id })),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{user}");
        let (s, key) = api
            .call(
                &root,
                Method::POST,
                &format!("/api/v1/users/{}/api-keys", user["id"].as_str().unwrap()),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{key}");
        tenants.push((org_id, key["key"].as_str().unwrap().to_owned()));
    }
    (root, [tenants[0].clone(), tenants[1].clone()])
}
