//! The load generator. For now it measures one endpoint (by default the edge's `/healthz`) with a
//! bounded number of requests and concurrent clients, and prints machine-readable results (JSON).
//! The flash-sale scenario builds on this loop.

use std::time::{Duration, Instant};

use clap::Parser;
use serde::Serialize;

#[derive(Debug, Parser)]
#[command(name = "loadtest", about = "Bounded HTTP load against a loopback target")]
struct Args {
    /// URL to request (GET).
    #[arg(long, default_value = "http://127.0.0.1:8787/healthz")]
    url: String,
    /// Total requests (bounded: at most 1,000,000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    requests: u64,
    /// Concurrent clients (at most 1024).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024))]
    concurrency: u64,
    /// Hard stop, in seconds (at most 600).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=600))]
    max_seconds: u64,
}

#[derive(Debug, Serialize)]
struct Summary {
    url: String,
    requests: u64,
    concurrency: u64,
    ok: u64,
    errors: u64,
    statuses: std::collections::BTreeMap<u16, u64>,
    seconds: f64,
    requests_per_second: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("http client");
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (client, url, next, total) = (client.clone(), args.url.clone(), next.clone(), args.requests);
        workers.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total && Instant::now() < deadline
            {
                let t = Instant::now();
                let status = match client.get(&url).send().await {
                    Ok(resp) => {
                        let s = resp.status().as_u16();
                        let _ = resp.bytes().await;
                        Some(s)
                    }
                    Err(_) => None,
                };
                samples.push((status, t.elapsed()));
            }
            samples
        }));
    }
    let mut samples = Vec::new();
    for w in workers {
        samples.extend(w.await.unwrap_or_default());
    }
    let seconds = started.elapsed().as_secs_f64();
    println!("{}", serde_json::to_string_pretty(&summarize(&args, samples, seconds)).unwrap_or_default());
}

fn summarize(args: &Args, samples: Vec<(Option<u16>, Duration)>, seconds: f64) -> Summary {
    let mut statuses = std::collections::BTreeMap::new();
    let mut latencies: Vec<f64> = Vec::with_capacity(samples.len());
    let mut errors = 0;
    for (status, latency) in &samples {
        match status {
            Some(s) => *statuses.entry(*s).or_insert(0) += 1,
            None => errors += 1,
        }
        latencies.push(latency.as_secs_f64() * 1000.0);
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies[i]
    };
    let ok = statuses.iter().filter(|(s, _)| (200..300).contains(*s)).map(|(_, n)| n).sum();
    Summary {
        url: args.url.clone(),
        requests: samples.len() as u64,
        concurrency: args.concurrency,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_sorted_samples() {
        let args = Args::parse_from(["loadtest"]);
        let samples: Vec<_> = (1..=100).map(|ms| (Some(200), Duration::from_millis(ms))).collect();
        let s = summarize(&args, samples, 1.0);
        assert_eq!(s.ok, 100);
        assert!((s.p50_ms - 51.0).abs() < 1.01, "{}", s.p50_ms);
        assert!((s.p99_ms - 99.0).abs() < 1.01, "{}", s.p99_ms);
        assert_eq!(s.max_ms, 100.0);
    }

    #[test]
    fn errors_and_non_2xx_are_not_ok() {
        let args = Args::parse_from(["loadtest"]);
        let samples = vec![(Some(200), Duration::ZERO), (Some(503), Duration::ZERO), (None, Duration::ZERO)];
        let s = summarize(&args, samples, 1.0);
        assert_eq!((s.ok, s.errors, s.statuses[&503]), (1, 1, 1));
    }
}
