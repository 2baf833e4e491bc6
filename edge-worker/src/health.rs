//! `GET /healthz`: one request through every tier. The Worker writes and reads back a row in a
//! Durable Object's SQLite storage and asks the core for its own health (which covers PostgreSQL),
//! concurrently, each under a timeout, and answers one [`HealthReport`]: 200 when every tier is ok,
//! 503 naming the tiers that are not. It must never hang, whatever a tier does.

use std::future::Future;
use std::time::Duration;

use durable_objects::{http, ProbeReadBack, ProbeWrite};
use futures_util::future::{select, Either};
use shared_types::{CoreHealth, HealthReport, Tier, TierReport};
use wasm_bindgen::JsValue;
use worker::{AbortController, Date, Delay, Env, Fetch, Method, Request, RequestInit, Response, Result};

use crate::settings::{CORE_URL, HEALTH_TIMEOUT_MS};

/// The time a tier gets to answer when `HEALTH_TIMEOUT_MS` is not a number.
const DEFAULT_TIMEOUT_MS: u64 = 2_000;
/// The one probe object all edge health checks write to.
const PROBE_OBJECT_NAME: &str = "healthz";

pub async fn healthz(env: &Env) -> Result<Response> {
    let started = durable_objects::now_ms() as f64;
    let timeout_ms =
        HEALTH_TIMEOUT_MS.read_or_default(env).and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_TIMEOUT_MS);
    let core_url = CORE_URL.read(env);

    let (object, core) = futures_util::join!(
        check_durable_object(env, timeout_ms),
        check_core(core_url.as_deref(), timeout_ms)
    );

    let mut tiers = vec![object];
    tiers.extend(core);
    tiers.push(TierReport::ok(Tier::Edge, (durable_objects::now_ms() as f64) - started));
    let report = HealthReport::from_tiers(tiers);
    let mut resp = http::json(report.http_status(), &report)?;
    resp.headers_mut().set("cache-control", "no-store")?;
    Ok(resp)
}

async fn check_durable_object(env: &Env, timeout_ms: u64) -> TierReport {
    let started = durable_objects::now_ms() as f64;
    let write = ProbeWrite { nonce: nonce(), at_ms: durable_objects::now_ms() };
    let outcome = with_timeout(timeout_ms, probe_object(env, &write)).await;
    let latency = (durable_objects::now_ms() as f64) - started;
    match outcome {
        None => TierReport::down(Tier::DurableObject, latency, format!("no answer within {timeout_ms} ms")),
        Some(Err(e)) => TierReport::down(Tier::DurableObject, latency, e.to_string()),
        Some(Ok(read)) => judge_probe(&write, &read, latency),
    }
}

async fn probe_object(env: &Env, write: &ProbeWrite) -> Result<ProbeReadBack> {
    let stub = env.durable_object("HEALTH_PROBE")?.id_from_name(PROBE_OBJECT_NAME)?.get_stub()?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_body(Some(JsValue::from_str(&serde_json::to_string(write)?)));
    let req = Request::new_with_init("https://health-probe/probe", &init)?;
    let mut resp = stub.fetch_with_request(req).await?;
    if resp.status_code() != 200 {
        let body = durable_objects::http::answer_text(&mut resp).await.unwrap_or_default();
        return Err(worker::Error::RustError(format!("probe answered {}: {body}", resp.status_code())));
    }
    durable_objects::http::answer_json(&mut resp).await
}

/// The object is ok only if storage gave back exactly what was written.
fn judge_probe(write: &ProbeWrite, read: &ProbeReadBack, latency_ms: f64) -> TierReport {
    if read.nonce == write.nonce {
        TierReport {
            detail: Some(format!("row {} written and read back", read.id)),
            ..TierReport::ok(Tier::DurableObject, latency_ms)
        }
    } else {
        TierReport::down(
            Tier::DurableObject,
            latency_ms,
            "storage returned a different value than was written",
        )
    }
}

/// The core's tier and, through it, the database's.
async fn check_core(core_url: Option<&str>, timeout_ms: u64) -> Vec<TierReport> {
    let Some(core_url) = core_url.filter(|u| !u.is_empty()) else {
        return unreachable_core(TierReport::down(Tier::Core, 0.0, "CORE_URL is not configured"));
    };
    let started = durable_objects::now_ms() as f64;
    let url = format!("{}/healthz", core_url.trim_end_matches('/'));
    let controller = AbortController::default();
    let signal = controller.signal();
    let answer = with_timeout(timeout_ms, async {
        // A trace of its own, like every call to the core (the core does not export its probes).
        let headers = worker::Headers::new();
        if let Ok(trace) = crate::web::trace_onward() {
            headers.set("traceparent", &trace.to_string())?;
        }
        let mut init = RequestInit::new();
        init.with_method(Method::Get).with_headers(headers);
        let mut resp = Fetch::Request(Request::new_with_init(&url, &init)?).send_with_signal(&signal).await?;
        let status = resp.status_code();
        let body = durable_objects::http::answer_text(&mut resp).await?;
        Ok::<_, worker::Error>((status, body))
    })
    .await;
    let latency = (durable_objects::now_ms() as f64) - started;
    match answer {
        None => {
            controller.abort();
            unreachable_core(TierReport::down(
                Tier::Core,
                latency,
                format!("no answer within {timeout_ms} ms"),
            ))
        }
        Some(Err(e)) => unreachable_core(TierReport::down(Tier::Core, latency, format!("unreachable: {e}"))),
        Some(Ok((status, body))) => judge_core_answer(status, &body, latency),
    }
}

/// Reads the core's `/healthz` answer: the core is up if it answered its health document (200 or
/// 503); the database's report is the core's own view of it.
fn judge_core_answer(status: u16, body: &str, latency_ms: f64) -> Vec<TierReport> {
    match serde_json::from_str::<CoreHealth>(body) {
        Ok(health) if status == health.http_status() => {
            let core = TierReport {
                detail: Some(format!("version {}", health.version)),
                ..TierReport::ok(Tier::Core, latency_ms)
            };
            vec![core, TierReport { tier: Tier::Database, ..health.database }]
        }
        _ => unreachable_core(TierReport::down(
            Tier::Core,
            latency_ms,
            format!("answered status {status} without a valid health document"),
        )),
    }
}

fn unreachable_core(core: TierReport) -> Vec<TierReport> {
    vec![core, TierReport::unknown(Tier::Database, "not checked: the core did not answer")]
}

/// Runs `fut` for at most `ms` milliseconds; `None` if the time ran out first.
pub(crate) async fn with_timeout<F: Future>(ms: u64, fut: F) -> Option<F::Output> {
    let fut = std::pin::pin!(fut);
    let delay = std::pin::pin!(Delay::from(Duration::from_millis(ms)));
    match select(fut, delay).await {
        Either::Left((value, _)) => Some(value),
        Either::Right(_) => None,
    }
}

/// 128 random bits as hex; the read-back must return exactly these.
fn nonce() -> String {
    let mut bytes = [0u8; 16];
    // getrandom uses crypto.getRandomValues in workerd; should it fail, the time still varies.
    if getrandom::getrandom(&mut bytes).is_err() {
        bytes[..8].copy_from_slice(&Date::now().as_millis().to_le_bytes());
    }
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_types::HealthStatus;

    #[test]
    fn probe_is_ok_only_when_the_read_back_matches() {
        let write = ProbeWrite { nonce: "abc".into(), at_ms: 1 };
        let same = ProbeReadBack { id: 7, nonce: "abc".into(), rows: 1 };
        assert_eq!(judge_probe(&write, &same, 1.0).status, HealthStatus::Ok);
        let other = ProbeReadBack { nonce: "abd".into(), ..same };
        assert_eq!(judge_probe(&write, &other, 1.0).status, HealthStatus::Down);
    }

    #[test]
    fn a_core_with_its_database_up_gives_two_ok_tiers() {
        let body = serde_json::to_string(&CoreHealth::new(
            "0.1.0",
            TierReport { migration_version: Some(20260101), ..TierReport::ok(Tier::Database, 1.5) },
        ))
        .unwrap();
        let tiers = judge_core_answer(200, &body, 4.0);
        assert_eq!(tiers[0].status, HealthStatus::Ok);
        assert_eq!(tiers[1].tier, Tier::Database);
        assert_eq!(tiers[1].migration_version, Some(20260101));
    }

    #[test]
    fn a_core_whose_database_is_down_is_up_itself() {
        let body = serde_json::to_string(&CoreHealth::new(
            "0.1.0",
            TierReport::down(Tier::Database, 1000.0, "connection refused"),
        ))
        .unwrap();
        let tiers = judge_core_answer(503, &body, 4.0);
        assert_eq!(tiers[0].status, HealthStatus::Ok);
        assert_eq!(tiers[1].status, HealthStatus::Down);
    }

    #[test]
    fn something_else_on_the_core_port_is_a_down_core() {
        for (status, body) in [(200, "hello"), (502, "<html>bad gateway</html>"), (200, "{}")] {
            let tiers = judge_core_answer(status, body, 1.0);
            assert_eq!(tiers[0].status, HealthStatus::Down, "{body}");
            assert_eq!(tiers[1].status, HealthStatus::Unknown);
        }
    }

    #[test]
    fn a_status_that_contradicts_the_document_is_a_down_core() {
        let body = serde_json::to_string(&CoreHealth::new("1", TierReport::ok(Tier::Database, 1.0))).unwrap();
        assert_eq!(judge_core_answer(500, &body, 1.0)[0].status, HealthStatus::Down);
    }
}
