//! Accounts and access against real PostgreSQL (a fresh database per test), over HTTP on loopback:
//! API keys, roles, tenant scoping (another organization's resources answer 404), validation,
//! idempotency and pagination.

use crate::common;

use common::{two_tenants, Api};
use regional_core::accounts::create_platform_admin;
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::PgPool;

#[sqlx::test]
async fn every_admin_route_needs_a_valid_key(db: PgPool) {
    let api = Api::start(db).await;
    let (_, [(_, acme), _]) = two_tenants(&api).await;
    for (key, reason) in [
        ("", "missing"),
        ("nonsense", "malformed"),
        ("tk_0123456789abcdef_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "unknown-key"),
    ] {
        let (s, p) = api.get(key, "/api/v1/users").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert_eq!(p["type"], "https://errors.ticketing.dev/unauthorized");
        assert_eq!(p["reason"], reason, "{key}");
    }
    // A right id with a wrong secret is an unknown key too.
    let forged = format!("{}{}", &acme[..acme.len() - 4], "AAAA");
    assert_eq!(api.get(&forged, "/api/v1/users").await.1["reason"], "unknown-key");
    let (s, _) = api.get(&acme, "/api/v1/users").await;
    assert_eq!(s, StatusCode::OK);
    // Last use is recorded.
    let used: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT last_used_at FROM api_keys WHERE id = $1")
            .bind(&acme[3..19])
            .fetch_one(&api.db)
            .await
            .unwrap();
    assert!(used.is_some());
}

#[sqlx::test]
async fn another_tenants_resources_answer_404(db: PgPool) {
    let api = Api::start(db).await;
    let (_, [(acme_org, acme), (globex_org, globex)]) = two_tenants(&api).await;
    let (_, globex_users) = api.get(&globex, "/api/v1/users").await;
    let globex_admin = globex_users["items"][0]["id"].as_str().unwrap().to_owned();
    let (_, globex_keys) = api.get(&globex, "/api/v1/api-keys").await;
    let globex_key = globex_keys["items"][0]["id"].as_str().unwrap().to_owned();
    for (method, path, body) in [
        (Method::GET, format!("/api/v1/organizations/{globex_org}"), None),
        (Method::GET, format!("/api/v1/users/{globex_admin}"), None),
        (Method::POST, format!("/api/v1/users/{globex_admin}/api-keys"), None),
        (Method::DELETE, format!("/api/v1/api-keys/{globex_key}"), None),
        (
            Method::POST,
            "/api/v1/users".into(),
            Some(json!({ "email": "x@y.test", "role": "scanner", "organization_id": globex_org })),
        ),
    ] {
        let (s, p) = api.call(&acme, method.clone(), &path, body).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{method} {path}: {p}");
        assert_eq!(p["type"], "https://errors.ticketing.dev/not-found");
    }
    // Listings show only one's own organization.
    let (_, orgs) = api.get(&acme, "/api/v1/organizations").await;
    assert_eq!(orgs["items"].as_array().unwrap().len(), 1);
    assert_eq!(orgs["items"][0]["id"], acme_org);
    let (_, users) = api.get(&acme, "/api/v1/users").await;
    assert!(users["items"].as_array().unwrap().iter().all(|u| u["organization_id"] == acme_org));
    // Globex's key still works: nothing was revoked.
    assert_eq!(api.get(&globex, "/api/v1/users").await.0, StatusCode::OK);
}

#[sqlx::test]
async fn roles_limit_what_a_key_may_do(db: PgPool) {
    let api = Api::start(db).await;
    let (_, [(_, acme), _]) = two_tenants(&api).await;
    let mut keys = std::collections::HashMap::new();
    for role in ["organizer_staff", "box_office", "scanner"] {
        let (s, user) =
            api.add_user(&acme, json!({ "email": format!("{role}@acme.test"), "role": role })).await;
        assert_eq!(s, StatusCode::CREATED, "{user}");
        let (_, key) = api.add_key(&acme, &user).await;
        keys.insert(role, key["key"].as_str().unwrap().to_owned());
    }
    // Only organizer admins (and the platform) make users; nobody but the platform makes organizations.
    for role in ["organizer_staff", "box_office", "scanner"] {
        let (s, p) = api.add_user(&keys[role], json!({ "email": "new@acme.test", "role": "scanner" })).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{role}: {p}");
    }
    let (s, _) = api
        .call(&acme, Method::POST, "/api/v1/organizations", Some(json!({ "name": "x", "slug": "x" })))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // A scanner cannot read the organization's users either; it may see itself.
    assert_eq!(api.get(&keys["scanner"], "/api/v1/users").await.0, StatusCode::FORBIDDEN);
    // Nobody makes a platform admin through the API.
    let (s, p) = api.add_user(&acme, json!({ "email": "boss@acme.test", "role": "platform_admin" })).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(p["errors"][0]["field"], "role");
    // A revoked key stops working at once.
    let key_id = &keys["scanner"][3..19];
    assert_eq!(
        api.call(&acme, Method::DELETE, &format!("/api/v1/api-keys/{key_id}"), None).await.0,
        StatusCode::OK
    );
    assert_eq!(api.get(&keys["scanner"], "/api/v1/api-keys").await.1["reason"], "revoked");
}

#[sqlx::test]
async fn bad_bodies_answer_problem_json_and_change_nothing(db: PgPool) {
    let api = Api::start(db).await;
    let (root, [(_, acme), _]) = two_tenants(&api).await;
    let users = api.count("users").await;
    let orgs = api.count("organizations").await;
    let (s, p) = api
        .add_user(&acme, json!({ "email": "not-an-email", "role": "scanner", "name": "x".repeat(300) }))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> =
        p["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["email", "name"]);
    let (s, p) = api.add_user(&acme, json!({ "email": "a@acme.test", "role": "king" })).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{p}");
    assert_eq!(p["type"], "https://errors.ticketing.dev/malformed-request");
    let (s, _) = api.add_user(&acme, json!({ "email": "a@acme.test", "role": "scanner", "extra": 1 })).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, p) = api
        .call(
            &root,
            Method::POST,
            "/api/v1/organizations",
            Some(json!({ "name": "", "slug": "Bad Slug", "time_zone": "Mars//Base" })),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(p["errors"].as_array().unwrap().len(), 3);
    let (s, p) = api
        .call(&root, Method::POST, "/api/v1/organizations", Some(json!({ "name": "Again", "slug": "acme" })))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(p["reason"], "slug_taken");
    assert_eq!(api.count("users").await, users);
    assert_eq!(api.count("organizations").await, orgs);
}

#[sqlx::test]
async fn creating_routes_are_idempotent_per_key(db: PgPool) {
    let api = Api::start(db).await;
    let (_, [(_, acme), _]) = two_tenants(&api).await;
    let body = json!({ "email": "once@acme.test", "role": "box_office" });
    let key = [("idempotency-key", "create-once-1")];
    let (s1, first) = api.call_with(&acme, Method::POST, "/api/v1/users", Some(body.clone()), &key).await;
    let (s2, again) = api.call_with(&acme, Method::POST, "/api/v1/users", Some(body), &key).await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::CREATED));
    assert_eq!(first, again, "the retry gets the first answer");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE email = 'once@acme.test'")
        .fetch_one(&api.db)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let (s, p) = api
        .call_with(
            &acme,
            Method::POST,
            "/api/v1/users",
            Some(json!({ "email": "other@acme.test", "role": "box_office" })),
            &key,
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(p["reason"], "idempotency_conflict");
    // Concurrent retries of a new key make one user.
    let body = json!({ "email": "race@acme.test", "role": "scanner" });
    let calls = (0..8).map(|_| {
        api.call_with(
            &acme,
            Method::POST,
            "/api/v1/users",
            Some(body.clone()),
            &[("idempotency-key", "race-1")],
        )
    });
    let answers = futures_util::future::join_all(calls).await;
    assert!(answers.iter().all(|(s, _)| *s == StatusCode::CREATED), "{answers:?}");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE email = 'race@acme.test'")
        .fetch_one(&api.db)
        .await
        .unwrap();
    assert_eq!(n, 1);
}

/// One rule for every Idempotency-Key (the edge's holds, checkout, the admin API): 1 to 128
/// visible ASCII characters; a key past it is refused as checkout refuses it, and changes nothing.
#[sqlx::test]
async fn the_admin_api_takes_the_one_idempotency_key_rule(db: PgPool) {
    let api = Api::start(db).await;
    let (_, [(_, acme), _]) = two_tenants(&api).await;
    let users = api.count("users").await;
    for bad in ["k".repeat(129), "has space".to_owned()] {
        let body = json!({ "email": "long@acme.test", "role": "box_office" });
        let (s, p) = api
            .call_with(&acme, Method::POST, "/api/v1/users", Some(body), &[("idempotency-key", &bad)])
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {p}");
        assert_eq!(p["type"], "https://errors.ticketing.dev/validation-failed");
        assert_eq!(p["errors"][0]["field"], "Idempotency-Key");
    }
    assert_eq!(api.count("users").await, users, "a refused request changes nothing");
    let longest = "k".repeat(128);
    let body = json!({ "email": "long@acme.test", "role": "box_office" });
    let (s, _) = api
        .call_with(&acme, Method::POST, "/api/v1/users", Some(body), &[("idempotency-key", &longest)])
        .await;
    assert_eq!(s, StatusCode::CREATED);
}

#[sqlx::test]
async fn listings_page_with_a_cursor_and_filter(db: PgPool) {
    let api = Api::start(db).await;
    let (_, [(_, acme), _]) = two_tenants(&api).await;
    for i in 0..5 {
        let role = if i % 2 == 0 { "scanner" } else { "box_office" };
        api.add_user(&acme, json!({ "email": format!("u{i}@acme.test"), "role": role })).await;
    }
    let mut seen = Vec::new();
    let mut path = "/api/v1/users?limit=2".to_owned();
    loop {
        let (s, page) = api.get(&acme, &path).await;
        assert_eq!(s, StatusCode::OK);
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|u| u["email"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/api/v1/users?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 6, "the admin and five users, each once: {seen:?}");
    let (_, scanners) = api.get(&acme, "/api/v1/users?role=scanner").await;
    assert_eq!(scanners["items"].as_array().unwrap().len(), 3);
    let (s, p) = api.get(&acme, "/api/v1/users?limit=0").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(p["errors"][0]["field"], "limit");
    let (s, _) = api.get(&acme, "/api/v1/users?cursor=garbage").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
}

#[sqlx::test]
async fn create_admin_makes_one_platform_and_refuses_a_taken_email(db: PgPool) {
    let first = create_platform_admin(&db, "ops@platform.test", "Ops").await.unwrap();
    let second = create_platform_admin(&db, "sre@platform.test", "SRE").await.unwrap();
    assert_eq!(first.organization, second.organization, "one platform organization");
    assert!(create_platform_admin(&db, "OPS@platform.test", "again").await.is_err());
    let api = Api::start(db).await;
    let (s, _) = api
        .call(
            &first.key,
            Method::POST,
            "/api/v1/organizations",
            Some(json!({ "name": "Initech", "slug": "initech" })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, orgs) = api.get(&first.key, "/api/v1/organizations").await;
    assert_eq!(
        orgs["items"].as_array().unwrap().len(),
        1,
        "the platform organization is not listed as a tenant"
    );
}

#[sqlx::test]
async fn nobody_but_platform_admins_is_in_the_platform_organization_or_manages_their_keys(db: PgPool) {
    let api = Api::start(db).await;
    let (root_key, [(_, acme), _]) = two_tenants(&api).await;
    let (root_user, root_org): (uuid::Uuid, uuid::Uuid) =
        sqlx::query_as("SELECT id, organization_id FROM users WHERE email = 'root@platform.test'")
            .fetch_one(&api.db)
            .await
            .unwrap();
    let root = regional_core::accounts::Bootstrap { organization: root_org, user: root_user, key: root_key };
    // A second-tier admin inside the platform organization: refused by the API and by the database.
    let platform = root.organization.to_string();
    for role in ["organizer_admin", "organizer_staff", "box_office", "scanner"] {
        let (s, p) = api.add_user(&root.key, json!({ "email": format!("{role}@platform.test"), "role": role, "organization_id": platform }))
            .await;
        assert_eq!(
            (s, p["errors"][0]["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("organization_id"))
        );
    }
    let planted = sqlx::query(
        "INSERT INTO users (id, organization_id, email, name, role) VALUES (gen_random_uuid(), $1, 'x@platform.test', '', 'organizer_admin')",
    )
    .bind(root.organization)
    .execute(&api.db)
    .await;
    assert!(planted.is_err(), "the database refuses it too");
    let moved = sqlx::query("UPDATE users SET role = 'organizer_admin' WHERE id = $1")
        .bind(root.user)
        .execute(&api.db)
        .await;
    assert!(moved.is_err(), "a platform admin cannot be demoted in place");
    assert_eq!(
        api.count("users WHERE organization_id = (SELECT id FROM organizations WHERE is_platform)").await,
        1
    );
    // An organizer admin cannot make or revoke a platform admin's keys (it does not even see them).
    let path = format!("/api/v1/users/{}/api-keys", root.user);
    let (s, _) = api.call(&acme, Method::POST, &path, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let key_id = root.key.split('_').nth(1).unwrap();
    let (s, _) = api.call(&acme, Method::DELETE, &format!("/api/v1/api-keys/{key_id}"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = api.get(&root.key, "/api/v1/organizations").await;
    assert_eq!(s, StatusCode::OK, "the platform admin's key still works");
}

#[sqlx::test]
async fn a_new_keys_secret_is_never_stored_and_idempotent_answers_expire(db: PgPool) {
    let api = Api::start(db).await;
    let (_, [(_, acme), _]) = two_tenants(&api).await;
    let (_, me) = api.get(&acme, "/api/v1/api-keys").await;
    let user = me["items"][0]["user_id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/users/{user}/api-keys");
    let once = [("idempotency-key", "new-key-1")];
    let (s, first) = api.call_with(&acme, Method::POST, &path, Some(json!({ "name": "ci" })), &once).await;
    assert_eq!(s, StatusCode::CREATED);
    let secret = first["key"].as_str().unwrap().to_owned();
    // Nothing stored holds the secret, nor its random part.
    let stored: String =
        sqlx::query_scalar("SELECT coalesce(string_agg(body::text, ' '), '') FROM idempotency_keys")
            .fetch_one(&api.db)
            .await
            .unwrap();
    let random_part = secret.rsplit('_').next().unwrap();
    assert!(!stored.contains(random_part), "{stored}");
    // The replay names the key it made, withholds the secret, and makes nothing new.
    let (s, again) = api.call_with(&acme, Method::POST, &path, Some(json!({ "name": "ci" })), &once).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!((again["id"].clone(), again["secret_withheld"].as_str()), (first["id"].clone(), Some("key")));
    assert!(again.get("key").is_none(), "{again}");
    assert_eq!(api.count("api_keys WHERE name = 'ci'").await, 1);
    // A day later the key is free again, and the pruner removes expired answers.
    sqlx::query("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
        .execute(&api.db)
        .await
        .unwrap();
    let (s, later) = api.call_with(&acme, Method::POST, &path, Some(json!({ "name": "ci" })), &once).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_ne!(later["id"], first["id"]);
    assert!(later["key"].is_string());
    sqlx::query("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
        .execute(&api.db)
        .await
        .unwrap();
    assert_eq!(regional_core::api::prune(&api.db).await.unwrap(), 1);
    assert_eq!(api.count("idempotency_keys").await, 0);
}
