//! What a long run watches besides its own requests (`sale --sample-seconds N`): every N seconds
//! while the buyers buy, each core replica's memory and its consumers' lag (from its operators'
//! `/metrics`), the memory of other processes by pid (the edge's workerd, where the objects live),
//! and the backlog the database holds (outbox rows not relayed, paid orders still without their
//! confirmation, mails not sent). The soak (docs/reliability.md) charts them and checks they stay
//! flat; the sale's chart gets a panel for each.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::Notify;

#[derive(Debug, Clone, Args)]
pub struct SampleArgs {
    /// Seconds between samples of memory and backlog while the buyers buy (0: none).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=600))]
    pub sample_seconds: u64,
    /// A core replica's operators' `/metrics` URL to sample (repeat for each replica, up to 8).
    #[arg(long = "sample-metrics", value_name = "URL", value_parser = metrics_url)]
    pub metrics: Vec<String>,
    /// A local process whose resident memory to sample, as NAME=PID (Linux `/proc`; up to 8).
    #[arg(long = "sample-pid", value_name = "NAME=PID", value_parser = named_pid)]
    pub pids: Vec<(String, u32)>,
    /// A local workerd's inspector (`http://127.0.0.1:PORT`) whose isolates' heaps to sample
    /// (`heap.NAME` and `heap.held` in `memory_detail_mib`).
    #[arg(long = "sample-inspector", value_name = "URL", value_parser = inspector_url)]
    pub inspector: Option<String>,
}

impl SampleArgs {
    pub fn check(&self) -> Result<(), String> {
        if self.metrics.len() > 8 || self.pids.len() > 8 {
            return Err("at most 8 --sample-metrics and 8 --sample-pid".into());
        }
        Ok(())
    }
}

fn metrics_url(s: &str) -> Result<String, String> {
    if (s.starts_with("http://") || s.starts_with("https://")) && s.len() <= 256 {
        Ok(s.to_owned())
    } else {
        Err("an http:// or https:// URL of at most 256 characters".into())
    }
}

fn inspector_url(s: &str) -> Result<String, String> {
    let port = s.strip_prefix("http://127.0.0.1:").ok_or("http://127.0.0.1:PORT (loopback only)")?;
    port.trim_end_matches('/').parse::<u16>().map_err(|e| format!("{port}: {e}"))?;
    Ok(s.to_owned())
}

fn named_pid(s: &str) -> Result<(String, u32), String> {
    let (name, pid) = s.split_once('=').ok_or("NAME=PID")?;
    let pid: u32 = pid.parse().ok().filter(|&p| p > 0).ok_or_else(|| format!("{pid}: not a pid"))?;
    if name.is_empty() || name.len() > 32 || name.starts_with("core-") {
        // `core-N` names the replicas sampled through --sample-metrics.
        return Err("a name of 1 to 32 characters, not starting with core-".into());
    }
    Ok((name.to_owned(), pid))
}

/// One sample. A figure that could not be read is left out (`None`), never guessed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    /// Seconds since the buyers began.
    pub at_s: f64,
    /// Resident memory by process (MiB): `core-1`, `core-2`… (in `--sample-metrics` order), then
    /// each `--sample-pid` by its name.
    pub rss_mib: BTreeMap<String, f64>,
    /// Outbox rows not yet relayed, and the age of the oldest (s).
    pub outbox_unsent: Option<i64>,
    pub outbox_lag_s: Option<f64>,
    /// Relayed messages the consumers have not applied (summed over the consumers; each replica
    /// reports its groups' whole lag, so the largest replica's), and the largest consumer lag in
    /// time (s), as the replicas' `/metrics` say.
    pub consumer_lag_messages: Option<f64>,
    pub consumer_lag_s: Option<f64>,
    /// Orders paid more than 5 s ago still without their confirmation mail queued: the consumers'
    /// lag as the database sees it (independent of what the consumers report).
    pub unconfirmed_paid: Option<i64>,
    /// Mails queued and not sent yet.
    pub mails_waiting: Option<i64>,
    /// Where memory is (MiB), for the post-mortem of a figure that grew rather than judged: each
    /// `--sample-pid`'s anonymous and file-backed resident memory (`NAME.anon`, `NAME.file`: a
    /// heap, or pages of files such as the objects' SQLite databases, which the kernel may take
    /// back), and from the edge's statistics of the event the WebAssembly memory of the isolate
    /// the objects run in (`objects.wasm`: it only grows) and the inventory's storage
    /// (`inventory.storage`), and with `--sample-inspector` what each isolate's V8 heap uses
    /// (`heap.NAME`: `heap.core-user` is the Worker's and its objects') and what V8 holds for all
    /// of them (`heap.held`).
    pub memory_detail_mib: BTreeMap<String, f64>,
}

/// The event whose edge statistics a sample reads: the edge, the event, the core's signer.
#[derive(Clone)]
pub struct EdgeEvent {
    pub signer: shared_types::token::TokenSigner,
    pub edge: String,
    pub event: String,
}

/// A running sampler; [`Sampler::finish`] stops it and answers its samples.
pub struct Sampler {
    stop: Arc<Notify>,
    task: tokio::task::JoinHandle<Vec<Sample>>,
}

impl Sampler {
    /// Starts sampling every `args.sample_seconds` from `started` (none when 0), with the edge's
    /// statistics of `event`.
    pub fn start(
        args: &SampleArgs,
        http: reqwest::Client,
        db: PgPool,
        event: EdgeEvent,
        started: Instant,
    ) -> Self {
        let stop = Arc::new(Notify::new());
        let (args, stopped) = (args.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            if args.sample_seconds == 0 {
                return samples;
            }
            let every = Duration::from_secs(args.sample_seconds);
            loop {
                samples.push(sample(&args, &http, &db, &event, started).await);
                let next = started + every * samples.len() as u32;
                tokio::select! {
                    _ = stopped.notified() => break,
                    _ = tokio::time::sleep_until(next.into()) => {}
                }
            }
            samples.push(sample(&args, &http, &db, &event, started).await);
            samples
        });
        Sampler { stop, task }
    }

    pub async fn finish(self) -> Vec<Sample> {
        self.stop.notify_one();
        self.task.await.unwrap_or_default()
    }
}

async fn sample(
    args: &SampleArgs,
    http: &reqwest::Client,
    db: &PgPool,
    event: &EdgeEvent,
    started: Instant,
) -> Sample {
    let mut s = Sample { at_s: started.elapsed().as_secs_f64(), ..Sample::default() };
    let (mut lag_messages, mut lag_s) = (None::<f64>, None::<f64>);
    for (i, url) in args.metrics.iter().enumerate() {
        let Some(scrape) = scrape(http, url).await else { continue };
        if let Some(rss) = total(&scrape, "process_resident_memory_bytes") {
            s.rss_mib.insert(format!("core-{}", i + 1), rss / MIB);
        }
        // Each replica reports its consumer groups' whole lag: the replicas agree, take the largest.
        if let Some(n) = total(&scrape, "ticketing_consumer_lag_messages") {
            lag_messages = Some(lag_messages.map_or(n, |l| l.max(n)));
        }
        if let Some(secs) = largest(&scrape, "ticketing_consumer_lag_seconds") {
            lag_s = Some(lag_s.map_or(secs, |l| l.max(secs)));
        }
    }
    (s.consumer_lag_messages, s.consumer_lag_s) = (lag_messages, lag_s);
    for (name, pid) in &args.pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        for (field, key) in [
            ("VmRSS", name.clone()),
            ("RssAnon", format!("{name}.anon")),
            ("RssFile", format!("{name}.file")),
        ] {
            if let Some(kib) = status_kib(&status, field) {
                let into = if field == "VmRSS" { &mut s.rss_mib } else { &mut s.memory_detail_mib };
                into.insert(key, kib as f64 / 1024.0);
            }
        }
    }
    let stats = tokio::time::timeout(
        Duration::from_secs(5),
        crate::holds::object_stats(http, &event.signer, &event.edge, &event.event),
    )
    .await;
    if let Ok(Ok(shards)) = stats {
        // Each shard's object reports the memory of the WebAssembly instance it runs in (objects
        // sharing an isolate share one: the largest is kept) and its own storage (summed).
        let wasm = shards.iter().filter_map(|s| s["wasm_memory_bytes"].as_f64()).reduce(f64::max);
        let storage = shards.iter().filter_map(|s| s["storage_bytes"].as_f64()).reduce(|a, b| a + b);
        for (key, bytes) in [("objects.wasm", wasm), ("inventory.storage", storage)] {
            if let Some(bytes) = bytes {
                s.memory_detail_mib.insert(key.to_owned(), bytes / MIB);
            }
        }
    }
    if let Some(inspector) = &args.inspector {
        match crate::inspector::heaps(http, inspector, Duration::from_secs(5)).await {
            Ok(heaps) => {
                let held: f64 = heaps.iter().map(|h| h.total).sum();
                for h in heaps {
                    s.memory_detail_mib.insert(format!("heap.{}", h.name), h.used / MIB);
                }
                s.memory_detail_mib.insert("heap.held".to_owned(), held / MIB);
            }
            Err(e) => eprintln!("sample: the isolates' heaps not read: {e}"),
        }
    }
    // Paid orders without their confirmation 5 s on are the e2e harness's `UNCONFIRMED_5S`
    // (tests/src/stack.rs): keep the two equal. A database too busy to answer within 5 s leaves the
    // sample without these figures rather than holding up the next one (the server stops the query
    // too: the pool is the audit's as well, so the limit is this transaction's alone).
    let backlog: Option<Result<(i64, f64, i64, i64), sqlx::Error>> =
        tokio::time::timeout(Duration::from_secs(5), backlog(db)).await.ok();
    if let Some(Ok((unsent, lag, unconfirmed, mails))) = backlog {
        s.outbox_unsent = Some(unsent);
        s.outbox_lag_s = Some(lag);
        s.unconfirmed_paid = Some(unconfirmed);
        s.mails_waiting = Some(mails);
    }
    s
}

async fn backlog(db: &PgPool) -> Result<(i64, f64, i64, i64), sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query("SET LOCAL statement_timeout = '5s'").execute(&mut *tx).await?;
    let figures = sqlx::query_as(
        "SELECT (SELECT count(*) FROM outbox WHERE sent_at IS NULL),
                COALESCE((SELECT extract(epoch FROM now() - min(created_at))::float8 FROM outbox WHERE sent_at IS NULL), 0),
                (SELECT count(*) FROM orders o WHERE o.state = 'paid' AND o.updated_at < now() - interval '5 seconds'
                   AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.order_id = o.id AND n.kind = 'order_confirmation')),
                (SELECT count(*) FROM notifications WHERE state <> 'sent')",
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(figures)
}

const MIB: f64 = 1024.0 * 1024.0;

/// Most of a `/metrics` answer read (the core's is a few hundred KiB with many events).
const MAX_METRICS_BYTES: usize = 8 << 20;

pub async fn scrape(http: &reqwest::Client, url: &str) -> Option<prometheus_parse::Scrape> {
    let mut resp =
        http.get(url).timeout(Duration::from_secs(5)).send().await.ok()?.error_for_status().ok()?;
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.ok()? {
        if body.len() + chunk.len() > MAX_METRICS_BYTES {
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(body).ok()?;
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).ok()
}

fn values<'a>(scrape: &'a prometheus_parse::Scrape, name: &'a str) -> impl Iterator<Item = f64> + 'a {
    scrape.samples.iter().filter(move |s| s.metric == name).filter_map(|s| match s.value {
        prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Untyped(v) => Some(v),
        _ => None,
    })
}

/// The sum of a metric over its labels (`None` when absent).
pub fn total(scrape: &prometheus_parse::Scrape, name: &str) -> Option<f64> {
    values(scrape, name).fold(None, |acc, v| Some(acc.unwrap_or(0.0) + v))
}

/// A metric summed by the values of one of its labels.
pub fn by_label(scrape: &prometheus_parse::Scrape, name: &str, label: &str) -> BTreeMap<String, f64> {
    let mut sums = BTreeMap::new();
    for s in scrape.samples.iter().filter(|s| s.metric == name) {
        if let prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) = s.value {
            *sums.entry(s.labels.get(label).unwrap_or("").to_owned()).or_default() += v;
        }
    }
    sums
}

fn largest(scrape: &prometheus_parse::Scrape, name: &str) -> Option<f64> {
    values(scrape, name).fold(None, |acc, v| Some(acc.map_or(v, |a: f64| a.max(v))))
}

/// A field of a process's `/proc/<pid>/status` in KiB (`VmRSS`, `RssAnon`, `RssFile`).
fn status_kib(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.strip_prefix(field).is_some_and(|rest| rest.starts_with(':')))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_summed_over_labels_and_processes_named() {
        let text = "# TYPE ticketing_consumer_lag_messages gauge\n\
                    ticketing_consumer_lag_messages{consumer=\"mail\"} 3\n\
                    ticketing_consumer_lag_messages{consumer=\"reports\"} 4\n\
                    # TYPE process_resident_memory_bytes gauge\n\
                    process_resident_memory_bytes 1048576\n";
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
        assert_eq!(total(&scrape, "ticketing_consumer_lag_messages"), Some(7.0));
        assert_eq!(largest(&scrape, "ticketing_consumer_lag_messages"), Some(4.0));
        assert_eq!(total(&scrape, "process_resident_memory_bytes"), Some(1048576.0));
        assert_eq!(total(&scrape, "absent"), None);
        assert_eq!(named_pid("workerd=42"), Ok(("workerd".into(), 42)));
        assert!(named_pid("workerd").is_err() && named_pid("=1").is_err() && named_pid("w=x").is_err());
        assert!(named_pid("w=0").is_err() && named_pid("core-1=42").is_err());
        assert!(
            metrics_url("http://127.0.0.1:9464/metrics").is_ok()
                && metrics_url("file:///etc/passwd").is_err()
        );
        let status = std::fs::read_to_string(format!("/proc/{}/status", std::process::id())).unwrap();
        for field in ["VmRSS", "RssAnon", "RssFile"] {
            assert!(status_kib(&status, field).is_some_and(|k| k > 0), "{field}");
        }
        // `RssAnon` is not read from a longer field's line that starts alike.
        assert_eq!(status_kib("VmRSSx:\t5 kB\nVmRSS:\t7 kB\n", "VmRSS"), Some(7));
    }
}
