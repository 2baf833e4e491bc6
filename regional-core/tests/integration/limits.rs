//! Every request is bounded: bodies by their route's limit (refused before they are read when
//! their length is declared, and as they pass the limit when it is not), time by the request
//! timeout, the webhook signature header by its own bounds; `/metrics` is only on the operators'
//! listener; and a core refuses to start with the test payment provider unless development mode
//! is asked for.

use crate::common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{checkout, state_with, two_tenants, Api};
use serde_json::Value;
use shared_types::token::TokenSigner;
use sqlx::PgPool;

/// A testpay webhook with this signature header and body.
async fn webhook(http: &reqwest::Client, api: &Api, signature: String, body: Vec<u8>) -> reqwest::Response {
    let url = format!("{}/api/v1/webhooks/testpay", api.base);
    http.post(url).header("testpay-signature", signature).body(body).send().await.unwrap()
}

async fn problem(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    assert_eq!(resp.headers()["content-type"], "application/problem+json", "{status}");
    (status, resp.json().await.unwrap())
}

#[sqlx::test]
async fn oversized_bodies_and_slow_requests_are_refused_with_problem_json(db: PgPool) {
    let core = TokenSigner::from_seed("core-test", [4; 32]).unwrap();
    let api = Api::start_with(state_with(checkout(&db, &core))).await;
    let http = reqwest::Client::new();

    // A 2 MB webhook: refused from its declared length, before any signature work.
    let resp = webhook(&http, &api, format!("t=1{}", ",v1=".repeat(1000)), vec![b'x'; 2 << 20]).await;
    let (s, p) = problem(resp).await;
    assert_eq!((s, p["type"].as_str()), (413, Some("https://errors.ticketing.dev/payload-too-large")), "{p}");
    assert_eq!(p["limit_bytes"], 256 << 10);
    // Within the size limit, 10,000 empty signature entries are malformed, not 10,000 MACs.
    let resp = webhook(
        &http,
        &api,
        format!("t={}{}", chrono::Utc::now().timestamp(), ",v1=".repeat(10_000)),
        vec![b'x'; 200 << 10],
    )
    .await;
    let (s, p) = problem(resp).await;
    assert_eq!((s, p["reason"].as_str()), (401, Some("malformed-signature")), "{p}");

    // A body of unknown length (chunked) is cut off as it passes the limit.
    let head = chunked_post(&api.base, "/api/v1/checkout", 64, 16 << 10).await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(head.to_lowercase().contains("content-type: application/problem+json"), "{head}");
    assert_eq!(api.count("orders").await, 0);

    // Seat maps may be large.
    let (_, [(_, key), _]) = two_tenants(&api).await;
    let resp = http
        .put(format!("{}/api/v1/venues/00000000-0000-0000-0000-000000000001/seats", api.base))
        .bearer_auth(&key)
        .header("content-type", "text/csv")
        .body(vec![b'a'; 1 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404, "a 1 MB CSV reaches its route");

    // /metrics is not on the public listener; the operators' listener serves it.
    let resp = http.get(format!("{}/metrics", api.base)).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let resp = http.get(format!("{}/metrics", api.metrics_base)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

/// Sends `chunks` chunks of `size` bytes with `Transfer-Encoding: chunked` (no declared length),
/// as long as the server reads them; the answer's head.
async fn chunked_post(base: &str, path: &str, chunks: usize, size: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(base.trim_start_matches("http://")).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: core\r\ncontent-type: application/json\r\nidempotency-key: big\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let chunk = [format!("{size:x}\r\n").into_bytes(), vec![b' '; size], b"\r\n".to_vec()].concat();
    for _ in 0..chunks {
        if conn.write_all(&chunk).await.is_err() {
            break;
        }
    }
    let _ = conn.write_all(b"0\r\n\r\n").await;
    let mut answer = vec![0u8; 4096];
    let n = conn.read(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer[..n]).into_owned()
}

#[sqlx::test]
async fn a_request_over_the_time_limit_is_answered_503(db: PgPool) {
    let mut state = state_with(checkout(&db, &TokenSigner::from_seed("core-test", [4; 32]).unwrap()));
    state.request_timeout = Duration::from_nanos(1);
    let api = Api::start_with(state).await;
    let root =
        regional_core::accounts::create_platform_admin(&db, "root@platform.test", "Root").await.unwrap();
    let resp = api
        .http
        .get(format!("{}/api/v1/organizations", api.base))
        .bearer_auth(&root.key)
        .send()
        .await
        .unwrap();
    let (s, p) = problem(resp).await;
    assert_eq!(
        (s, p["type"].as_str()),
        (503, Some("https://errors.ticketing.dev/dependency-unavailable")),
        "{p}"
    );
}

/// Starts the core binary with `env` (no database needed: its pool connects lazily) and returns
/// its exit status when it stopped within 10 s, or `None` (and the port) while it runs.
fn start(env: &[(&str, &str)]) -> (Option<std::process::ExitStatus>, String, std::process::Child) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let ops = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let grpc = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_regional-core"));
    cmd.args(["serve", "--migrate", "false", "--listen", &format!("127.0.0.1:{port}")])
        .env_clear()
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none")
        .env("CORE_METRICS_LISTEN", format!("127.0.0.1:{ops}"))
        .env("CORE_GRPC_LISTEN", format!("127.0.0.1:{grpc}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return (Some(status), base, child);
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return (None, base, child);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the core neither started nor stopped");
}

/// What a stopped core logged (its log goes to standard output).
fn log_of(mut child: std::process::Child) -> String {
    let mut text = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut text).unwrap();
    text
}

#[tokio::test]
async fn the_test_provider_exists_only_in_development_mode() {
    let core = TokenSigner::from_seed("core-test", [4; 32]).unwrap().secret_config();
    let edge = TokenSigner::from_seed("edge-test", [3; 32]).unwrap().public_config();
    let keys = [("CORE_SIGNING_KEY", core.as_str()), ("EDGE_VERIFYING_KEYS", edge.as_str())];

    // Checkout configured, no provider named: it was the test provider; now the core refuses.
    let (status, _, child) = start(&keys);
    let status = status.expect("the core must not start");
    assert!(!status.success());
    assert!(log_of(child).contains("PAYMENT_PROVIDER"));
    // Named, without development mode: refused too.
    let (status, _, child) = start(&[keys[0], keys[1], ("PAYMENT_PROVIDER", "testpay")]);
    assert!(!status.expect("the core must not start").success());
    assert!(log_of(child).contains("CORE_DEV_MODE"));

    // Without checkout and without development mode, the test provider's pages do not exist.
    let (status, base, mut child) = start(&[]);
    assert!(status.is_none(), "the core starts");
    // (A route that exists answers 405 to a method it does not take; one that does not, 404.)
    let resp = reqwest::Client::new().delete(format!("{base}/testpay/pay/x/approve")).send().await.unwrap();
    let (s, _) = problem(resp).await;
    assert_eq!(s, 404);
    let _ = child.kill();
    let _ = child.wait();

    // Asked for explicitly: they do.
    let (status, base, mut child) = start(&[keys[0], keys[1], ("CORE_DEV_MODE", "true")]);
    assert!(status.is_none(), "the core starts in development mode");
    let resp = reqwest::Client::new().delete(format!("{base}/testpay/pay/x/approve")).send().await.unwrap();
    assert_eq!(resp.status(), 405, "the test provider's pages are mounted");
    let _ = child.kill();
    let _ = child.wait();
}
