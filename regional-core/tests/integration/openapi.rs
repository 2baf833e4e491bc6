//! The OpenAPI document: served at `/api/v1/openapi.json`, OpenAPI 3.1, parsed by an independent
//! 3.1 model (`oas3`), listing every route — and every route it lists exists (answers something
//! other than "no such route").

use crate::common;

use common::Api;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use sqlx::PgPool;

#[sqlx::test]
async fn the_openapi_document_is_3_1_and_lists_every_route(db: PgPool) {
    let api = Api::start(db).await;
    let resp = api.http.get(format!("{}/api/v1/openapi.json", api.base)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let parsed = oas3::from_json(&text).expect("a valid OpenAPI 3.1 document");
    assert!(parsed.info.title.contains("Ticketing"));
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());

    let expected = [
        ("get", "/healthz"),
        ("get", "/livez"),
        ("get", "/readyz"),
        ("post", "/api/v1/organizations"),
        ("get", "/api/v1/organizations"),
        ("get", "/api/v1/organizations/{id}"),
        ("post", "/api/v1/users"),
        ("get", "/api/v1/users"),
        ("get", "/api/v1/users/{id}"),
        ("post", "/api/v1/users/{id}/api-keys"),
        ("get", "/api/v1/api-keys"),
        ("delete", "/api/v1/api-keys/{id}"),
        ("post", "/api/v1/venues"),
        ("get", "/api/v1/venues"),
        ("get", "/api/v1/venues/{id}"),
        ("put", "/api/v1/venues/{id}/seats"),
        ("post", "/api/v1/events"),
        ("get", "/api/v1/events"),
        ("get", "/api/v1/events/{id}"),
        ("patch", "/api/v1/events/{id}"),
        ("post", "/api/v1/events/{id}/state"),
        ("post", "/api/v1/events/{id}/tiers"),
        ("get", "/api/v1/events/{id}/tiers"),
        ("patch", "/api/v1/events/{id}/tiers/{tier}"),
        ("put", "/api/v1/events/{id}/waiting-room"),
        ("put", "/api/v1/events/{id}/seats-off-sale"),
        ("get", "/api/v1/events/{id}/sync"),
        ("post", "/api/v1/events/{id}/sync"),
        ("post", "/api/v1/events/{id}/promo-codes"),
        ("get", "/api/v1/events/{id}/promo-codes"),
        ("delete", "/api/v1/events/{id}/promo-codes/{code}"),
        ("put", "/api/v1/events/{id}/refund-policy"),
        ("get", "/api/v1/catalog/events"),
        ("get", "/api/v1/catalog/events/{id}"),
        ("get", "/api/v1/catalog/series/{id}"),
        ("post", "/api/v1/series"),
        ("get", "/api/v1/series"),
        ("get", "/api/v1/series/{id}"),
        ("patch", "/api/v1/series/{id}"),
        ("get", "/api/v1/series/{id}/dates"),
        ("post", "/api/v1/series/{id}/dates"),
        ("post", "/api/v1/series/{id}/state"),
        ("get", "/api/v1/series/{id}/report"),
        ("post", "/api/v1/checkout"),
        ("post", "/api/v1/checkout/quote"),
        ("get", "/api/v1/orders/{id}"),
        ("post", "/api/v1/orders/{id}/cancel"),
        ("post", "/api/v1/orders/{id}/refund"),
        ("post", "/api/v1/webhooks/{provider}"),
        ("put", "/api/v1/events/{id}/sale-settings"),
        ("get", "/api/v1/events/{id}/orders"),
        ("get", "/api/v1/keys"),
        ("get", "/api/v1/orders/{id}/tickets"),
        ("get", "/api/v1/orders/{id}/tickets/{ticket}/{file}"),
        ("post", "/api/v1/orders/{id}/tickets/{ticket}/reissue"),
        ("post", "/api/v1/orders/{id}/tickets/{ticket}/transfer"),
        ("post", "/api/v1/orders/{id}/tickets/{ticket}/transfer/cancel"),
        ("get", "/api/v1/transfers/{id}"),
        ("get", "/api/v1/transfers/{id}/{file}"),
        ("post", "/api/v1/transfers/{id}/accept"),
        ("post", "/api/v1/transfers/{id}/decline"),
        ("post", "/api/v1/transfers/{id}/transfer"),
        ("post", "/api/v1/transfers/{id}/transfer/cancel"),
        ("get", "/api/v1/ops/notifications"),
        ("get", "/api/v1/events/{id}/report"),
        ("get", "/api/v1/events/{id}/report/sales"),
        ("get", "/api/v1/events/{id}/settlement"),
        ("get", "/api/v1/events/{id}/exports/{file}"),
        ("post", "/api/v1/ops/notifications/{id}/retry"),
        ("get", "/api/v1/events/{id}/waitlist"),
        ("get", "/api/v1/events/{id}/waitlist/export"),
        ("get", "/api/v1/events/{id}/waitlist/history"),
        ("post", "/api/v1/events/{id}/waitlist/close"),
        ("get", "/api/v1/audit-log"),
        ("get", "/api/v1/audit-log/export"),
        ("post", "/api/v1/webhook-endpoints"),
        ("get", "/api/v1/webhook-endpoints"),
        ("get", "/api/v1/webhook-endpoints/{id}"),
        ("patch", "/api/v1/webhook-endpoints/{id}"),
        ("delete", "/api/v1/webhook-endpoints/{id}"),
        ("post", "/api/v1/webhook-endpoints/{id}/rotate-secret"),
        ("post", "/api/v1/webhook-endpoints/{id}/test"),
        ("post", "/api/v1/webhook-endpoints/{id}/replay"),
        ("get", "/api/v1/webhook-endpoints/{id}/deliveries"),
        ("get", "/api/v1/webhook-deliveries/{id}"),
        ("post", "/api/v1/webhook-deliveries/{id}/replay"),
        ("post", "/api/v1/privacy/access-requests"),
        ("post", "/api/v1/privacy/erasure-requests"),
        ("post", "/api/v1/buyer/sign-in"),
        ("get", "/api/v1/buyer/orders"),
        ("post", "/api/v1/sms/status"),
        ("post", "/api/v1/sms/incoming"),
        ("get", "/api/v1/ops/sms"),
        ("post", "/api/v1/events/{id}/box-office/holds"),
        ("delete", "/api/v1/events/{id}/box-office/holds/{hold}"),
        ("post", "/api/v1/events/{id}/box-office/sales"),
        ("get", "/api/v1/events/{id}/box-office/orders/{order}/tickets"),
        ("get", "/api/v1/events/{id}/box-office/orders/{order}/tickets.pdf"),
        ("post", "/api/v1/events/{id}/box-office/tickets/{ticket}/reissue"),
        ("post", "/api/v1/events/{id}/box-office/orders/{order}/paid-back"),
        ("get", "/api/v1/events/{id}/box-office/refunds"),
    ];
    let mut listed = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            listed.push((method.clone(), path.clone()));
        }
    }
    listed.sort();
    let mut want: Vec<(String, String)> =
        expected.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    want.sort();
    assert_eq!(listed, want, "the document lists exactly the API's routes");
    // Each operation has an id of its own (the fuzzing's settings name operations by it).
    let mut ids = std::collections::BTreeMap::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap_or_default().to_owned();
            if let Some(other) = ids.insert(id.clone(), format!("{method} {path}")) {
                panic!("operationId {id:?} names both {other} and {method} {path}");
            }
        }
    }

    // Two types of one name would share a component (the last one registered wins, and answers of
    // the other are checked against it): the health report's tier and the catalog's, the health
    // check's tier report and the sales report's, each have their own.
    let schemas = &doc["components"]["schemas"];
    assert!(schemas["Tier"]["enum"].is_array(), "the health report's tier: {}", schemas["Tier"]);
    assert!(schemas["TicketTier"]["properties"]["price_minor"].is_object(), "{}", schemas["TicketTier"]);
    assert!(schemas["TierReport"]["properties"]["latency_ms"].is_object(), "{}", schemas["TierReport"]);
    assert!(schemas["TierSales"].to_string().contains("\"capacity\""), "{}", schemas["TierSales"]);

    // Every route but the health probes documents its failures as problem+json of the one schema.
    assert!(doc["components"]["schemas"]["Problem"].is_object(), "the problem schema is a component");
    for (method, path) in listed.iter().filter(|(_, p)| p.starts_with("/api/")) {
        let problem = &doc["paths"][path][method]["responses"]["4XX"];
        assert_eq!(problem["description"], "a problem (RFC 9457)", "{method} {path}");
        assert_eq!(
            problem["content"]["application/problem+json"]["schema"]["$ref"], "#/components/schemas/Problem",
            "{method} {path}"
        );
    }

    // Every listed route exists: called without a key (or with dummy ids) it answers anything but
    // "no such route" or "method not allowed".
    for (method, path) in &listed {
        let concrete = path
            .replace("{id}", "00000000-0000-0000-0000-000000000000")
            .replace("{tier}", "x")
            .replace("{code}", "x")
            .replace("{provider}", "testpay")
            .replace("{file}", "qr.svg");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let resp = api.http.request(method.clone(), format!("{}{concrete}", api.base)).send().await.unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(
            status != StatusCode::METHOD_NOT_ALLOWED && body["detail"] != "no such route",
            "{method} {path}: {status} {body}"
        );
    }
}
