//! Driving bounded concurrent load, and summarizing its latency samples as JSON.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

/// One request's outcome: its HTTP status (or `None` for a transport error) and latency.
pub type Sample = (Option<u16>, Duration);

#[derive(Debug, Serialize)]
pub struct Summary {
    pub requests: u64,
    pub ok: u64,
    pub errors: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub seconds: f64,
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Runs `request(i)` for i in `0..total` from `concurrency` clients until done or `deadline`, and
/// summarizes the outcomes. A request answers its HTTP status, or `None` on a transport error.
pub async fn drive<F, Fut>(concurrency: u64, total: usize, deadline: Instant, request: F) -> Summary
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Option<u16>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (next, request) = (next.clone(), request.clone());
        workers.push(tokio::spawn(async move {
            let mut samples: Vec<Sample> = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total || Instant::now() > deadline {
                    break;
                }
                let t = Instant::now();
                let status = request(i).await;
                samples.push((status, t.elapsed()));
            }
            samples
        }));
    }
    let mut samples = Vec::new();
    for w in workers {
        samples.extend(w.await.unwrap_or_default());
    }
    summarize(&samples, started.elapsed().as_secs_f64())
}

/// The status of a response, after reading its body (so the timing covers the whole answer).
pub async fn status_of(answer: Result<reqwest::Response, reqwest::Error>) -> Option<u16> {
    let resp = answer.ok()?;
    let status = resp.status().as_u16();
    let _ = resp.bytes().await;
    Some(status)
}

pub fn summarize(samples: &[Sample], seconds: f64) -> Summary {
    let mut statuses = BTreeMap::new();
    let mut latencies: Vec<f64> = Vec::with_capacity(samples.len());
    let mut errors = 0;
    for (status, latency) in samples {
        match status {
            Some(s) => *statuses.entry(*s).or_insert(0) += 1,
            None => errors += 1,
        }
        latencies.push(latency.as_secs_f64() * 1000.0);
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| percentile(&latencies, p).unwrap_or(0.0);
    let ok = statuses.iter().filter(|(s, _)| (200..300).contains(*s)).map(|(_, n)| n).sum();
    Summary {
        requests: samples.len() as u64,
        ok,
        errors,
        statuses,
        seconds,
        requests_per_second: if seconds > 0.0 { samples.len() as f64 / seconds } else { 0.0 },
        p50_ms: pct(0.50),
        p90_ms: pct(0.90),
        p99_ms: pct(0.99),
        max_ms: latencies.last().copied().unwrap_or(0.0),
    }
}

/// The `p` quantile of sorted values (nearest rank), `None` when there are none.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    sorted.get(((sorted.len() as f64 - 1.0) * p).round().max(0.0) as usize).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_sorted_samples() {
        let samples: Vec<_> = (1..=100).rev().map(|ms| (Some(200), Duration::from_millis(ms))).collect();
        let s = summarize(&samples, 1.0);
        assert_eq!(s.ok, 100);
        assert!((s.p50_ms - 51.0).abs() < 1.01, "{}", s.p50_ms);
        assert!((s.p99_ms - 99.0).abs() < 1.01, "{}", s.p99_ms);
        assert_eq!(s.max_ms, 100.0);
    }

    #[test]
    fn errors_and_non_2xx_are_not_ok() {
        let samples = vec![(Some(200), Duration::ZERO), (Some(503), Duration::ZERO), (None, Duration::ZERO)];
        let s = summarize(&samples, 1.0);
        assert_eq!((s.ok, s.errors, s.statuses[&503]), (1, 1, 1));
    }
}
