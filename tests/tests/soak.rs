//! The soak (docs/reliability.md, "Soak"): a sale at a steady 3 buyers a second for 30 minutes
//! through the whole stack as a deployment runs it (`e2e::stack`: two core replicas behind a
//! balancer, the edge and its objects in workerd, PostgreSQL, the broker, an SMTP server), with
//! enough seats that it never sells out. Every 10 s the load generator samples each replica's
//! memory and its consumers' lag (their `/metrics`), workerd's memory (where the objects live) and
//! the database's backlog; its report has the latency percentiles minute by minute.
//!
//! Afterwards: the sale's audit is clean, every backlog drained, and what must stay flat did, over
//! the time buyers arrive (not the wind-down after it), split by time into thirds, the first taken
//! as the warm-up ([`verdict`]): every figure sampled in most samples (both replicas' and workerd's
//! memory among them); neither replica's memory, nor the objects' own ([`OBJECTS`]: the V8 heap
//! the isolate they run in uses, read through workerd's inspector, and their WebAssembly memory),
//! nor workerd's outside its V8 heaps ([`WORKERD_NATIVE`]) grew by more than [`MEMORY_GROWTH`]
//! from the middle third to the last, nor on a trend of more than [`MEMORY_TREND`] an hour, and
//! the last levelled off ([`LEVELS_OFF`]); no backlog's mean in
//! the last third above twice the middle third's plus [`BACKLOG_SLACK`] (messages or rows;
//! [`LAG_SLACK_S`] for a lag in seconds), nor its trend over both thirds rising more than the slack
//! at a pace above its own size (or the slack) an hour; no latency percentile's last third above
//! twice its middle third plus [`LATENCY_SLACK_MS`] (loose on purpose: the machine's other work
//! moves latency, a degradation over the run is what it catches). The figures go to
//! `$CARGO_TARGET_DIR/soak/` (JSON, and the chart as SVG); `scripts/soak.sh` runs the soak and
//! prints them.
//!
//! The test command runs `soak_smoke`: the same harness for 45 s, checking that every figure is
//! sampled and charted, so that the soak cannot rot between runs.

use e2e::stack::{drained, Stack, UNCONFIRMED_5S};
use e2e::{create_admin, run_sale};
use serde_json::{json, Value};
use sqlx::PgPool;

/// Buyers arriving per second (`SOAK_RATE` to change it, 1 to 10): 5,400 in 30 minutes, wanting
/// 1.5 seats each on average, so that the event's seats never sell out. A soak looks for what
/// grows at a load the machine carries, so this is well under the stack's capacity on these
/// machines: at 6 a second a slower 2-core machine fell behind (docs/reliability.md, "Soak").
const RATE: u64 = 3;

fn rate() -> u64 {
    let rate = std::env::var("SOAK_RATE").ok().map_or(RATE, |r| r.parse().expect("SOAK_RATE: a number"));
    assert!((1..=10).contains(&rate), "SOAK_RATE: 1 to 10 buyers a second");
    rate
}
/// The most buyers a soak may have: wanting 1.5 seats on average, 12,000 want 18,000 of one
/// event's 20,000 seats at most (the load generator's buyers shop one unsharded event), so the
/// sale never sells out; a longer or heavier soak is refused rather than run into a sell-out.
const MAX_BUYERS: u64 = 12_000;
/// Memory may grow this much (a fraction) from the run's middle third to its last, and at least
/// [`MEMORY_SLACK_MIB`] (a small figure's noise: the objects' WebAssembly memory grows by 64 KiB
/// pages, a heap of a few MiB moves with each collection).
const MEMORY_GROWTH: f64 = 0.10;
const MEMORY_SLACK_MIB: f64 = 1.0;
/// The objects' own memory, judged as a process's is: (figure, the sample's `memory_detail_mib`
/// entry). The V8 heap of the isolate the Worker and every object of the event run in
/// (`core-user`, through workerd's inspector; miniflare's own isolates are shown, not judged) and
/// the WebAssembly memory the objects report.
const OBJECTS: [(&str, &str); 2] =
    [("objects_mib.heap", "heap.core-user"), ("objects_mib.wasm", "objects.wasm")];
/// workerd's memory outside every V8 heap (its resident memory less the heaps its isolates hold,
/// `heap.held`): the runtime, its allocator, the objects' WebAssembly memory and SQLite, judged as
/// a process's memory is ([`MEMORY_GROWTH`], [`MEMORY_TREND`]) and also on levelling off
/// ([`LEVELS_OFF`]). Its V8 heaps are judged where they are ours ([`OBJECTS`]: the heap the
/// Worker's isolate uses); what V8 holds beyond what is used (the space it keeps committed,
/// sized to the allocation rate, and returns under pressure) and miniflare's own isolates (not in
/// a deployment) are shown, not judged. So is workerd's whole resident memory, which must still be
/// sampled: in the sixth run it rose 450 → 470 MiB from the middle third to the last, of which
/// the heaps held rose 80 → 92 and the rest 370 → 378 (docs/reliability.md, "Soak").
const WORKERD_NATIVE: &str = "workerd_mib.native";
/// Judged on levelling off (besides the growth and trend every process's memory is judged on):
/// its trend over the last third alone may not rise by more than half of [`MEMORY_GROWTH`] at
/// more than [`MEMORY_TREND`] an hour. workerd's memory rises with the first some 60,000 requests
/// the process serves, whatever they touch, then nearly stops (docs/reliability.md, "Soak", the
/// fifth run): the soak warms it past that rise ([`WARM_UP_REQUESTS`]). A leak keeps rising to the
/// end, and fails here.
const LEVELS_OFF: [&str; 1] = [WORKERD_NATIVE];
/// Sampled (in most samples) but not judged on growth: what [`WORKERD_NATIVE`] is taken from.
const SHOWN: [&str; 1] = ["rss_mib.workerd"];
/// Nor may its trend over both thirds run above this fraction of its size an hour (when it rose
/// more than half of [`MEMORY_GROWTH`] over them: a short run's noise is not a trend). A leak too
/// slow for the thirds' comparison over 30 minutes shows here.
const MEMORY_TREND: f64 = 0.25;
/// Milliseconds a latency percentile's last third may have above twice its middle third's.
const LATENCY_SLACK_MS: f64 = 250.0;
/// Backlog (messages or rows) the last third may have above twice the middle third's.
const BACKLOG_SLACK: f64 = 50.0;
/// The same for a lag in seconds.
const LAG_SLACK_S: f64 = 10.0;
/// The longest soak `SOAK_SECONDS` may ask for: the sale's `--max-seconds` (it adds 300) stays
/// within the load generator's bound, and the run (start, sale, settling, drains of up to three
/// minutes each) within nextest's 60 minutes (`.config/nextest.toml`).
const MAX_SOAK_SECONDS: u64 = 2_400;

/// How long the objects remember ended holds during a soak (the edge's
/// `HOLD_RECORDS_RETENTION_SECONDS`, at least 300; an hour by default), and their answers to
/// idempotency keys (the same, or as long as a hold may live if longer): what they remember grows
/// for that long, then stays level, by design. A soak's first third (its warm-up) must hold it and
/// a hold's life after it ([`MIN_SOAK_SECONDS`]), so that the thirds compared see the objects'
/// steady state, and a leak still shows as growth after it.
const RETENTION_SECONDS: u64 = 300;
/// The soak's holds and payments last this long (seconds).
const HOLD_SECONDS: u64 = 60;
/// The shortest soak `SOAK_SECONDS` may ask for: its first third holds the retention, a hold and
/// its payment.
const MIN_SOAK_SECONDS: u64 = 3 * (RETENTION_SECONDS + 2 * HOLD_SECONDS);
/// Requests sent to the edge before the sale (untimed, not sampled), each on a new connection, to
/// a path that touches no object: workerd's memory rises with the first some 60,000 requests it
/// serves, whatever they touch, then nearly stops (docs/reliability.md, "Soak"). A soak compares
/// the process after that rise; the objects' own memory is judged apart ([`OBJECTS`]). workerd's
/// memory before and after it is in the figures (`warm_up`).
const WARM_UP_REQUESTS: u64 = 60_000;

/// Sends `requests` to the edge on loopback port `port`, each on a new connection
/// (`loadtest/requests.mjs`), for a path no route has: every one must be answered 404 (bar 1 %
/// refused connections). Answers what the sender said.
async fn warm(port: u16, requests: u64) -> Value {
    let out = tokio::process::Command::new("node")
        .current_dir(e2e::repo_root())
        .args(["loadtest/requests.mjs", &port.to_string(), &requests.to_string(), "new", "/warm-up"])
        .kill_on_drop(true)
        .output()
        .await
        .expect("node runs");
    let said: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("the warm-up failed: {}", String::from_utf8_lossy(&out.stderr)));
    let errors = said["errors"].as_u64().unwrap_or(u64::MAX);
    let not_found = said["statuses"]["404"].as_u64().unwrap_or(0);
    let statuses = said["statuses"].as_object().map_or(0, |m| m.len());
    assert!(
        said["sent"] == requests
            && errors * 100 <= requests
            && not_found + errors == requests
            && statuses <= 1,
        "the warm-up: {said}"
    );
    said
}

/// A process's resident memory in MiB (`/proc/<pid>/status`).
fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 =
        status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Where the figures go: `$CARGO_TARGET_DIR/soak/`.
fn out_dir() -> std::path::PathBuf {
    std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| e2e::repo_root().join("target"))
        .join("soak")
}

/// Plays a steady sale of `seconds`, sampling every `every` seconds, holds and payments lasting
/// `hold` seconds; answers the figures written to `<out_dir>/<name>.json` (and the chart to
/// `<name>.svg`).
async fn soak(name: &str, seconds: u64, every: u64, hold: u64, warm_up: u64) -> Value {
    let buyers = rate() * seconds;
    assert!(buyers <= MAX_BUYERS, "SOAK_RATE × SOAK_SECONDS: at most {MAX_BUYERS} buyers (would sell out)");
    let retention = (RETENTION_SECONDS.to_string(), "HOLD_RECORDS_RETENTION_SECONDS");
    let stack = Stack::start_with(name, vec![(retention.1, retention.0)]).await;
    let edge = stack.edge.as_ref().expect("the edge");
    let workerd = edge.descendant("workerd").expect("workerd runs under the edge's node process");
    let before = rss_mib(workerd);
    let mut warm_up = warm(stack.edge_port, warm_up).await;
    warm_up["workerd_rss_mib"] = json!({ "before": before, "after": rss_mib(workerd) });
    let db = PgPool::connect(&stack.pg.url()).await.unwrap();
    let admin = create_admin(&stack.pg.url(), "root@soak.test");
    // At most two tickets each: 1.5 on average, so 2 seats a buyer never sell out (20,000 at most:
    // one event unsharded, as the load generator's buyers need).
    let seats = (buyers * 2).clamp(1_000, 20_000);
    // Admission at once (a cap above who shops at a time).
    let plan = format!(
        "--buyers {buyers} --seats {seats} --hot-seats 200 --hot-share 0.2 --max-tickets 2 --arrival spread \
         --spread-seconds {seconds} --on-sale-in 3 --difficulty 2 --bot-share 0.02 --decline-share 0.05 \
         --abandon-share 0.05 --think-min-ms 200 --think-max-ms 1500 --hold-seconds {hold} --payment-seconds {hold} \
         --admit-per-minute 6000 --max-active 3000 --session-seconds 180 --concurrency 128 \
         --max-seconds {} --retry-seconds 30 --sample-seconds {every} \
         --sample-metrics http://127.0.0.1:{}/metrics --sample-metrics http://127.0.0.1:{}/metrics \
         --sample-pid workerd={workerd} --sample-inspector http://127.0.0.1:{}",
        seconds + 300,
        stack.metrics_ports[0],
        stack.metrics_ports[1],
        stack.inspector_port,
    );
    let results = stack.dir.join("results");
    let run = run_sale(
        &stack.edge_url(),
        &stack.balancer.url(),
        &stack.pg.url(),
        &stack.keys,
        &admin,
        &results,
        &plan,
    )
    .await;
    let stdout = String::from_utf8_lossy(&run.stdout);
    let failed = || {
        format!(
            "{name}: the sale or its audit failed:\n{stdout}\n{}\n--- edge ---\n{}",
            String::from_utf8_lossy(&run.stderr),
            edge.log_tail()
        )
    };
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("{}", failed()));
    // The figures are written first: a run that fails below (its audit included) keeps them for the
    // post-mortem.
    let samples = report["samples"].as_array().cloned().unwrap_or_default();
    let figures = json!({
        "name": name,
        "seconds": report["seconds"],
        "buyers": buyers,
        "seats": seats,
        "paid": report["counts"]["paid"],
        "tickets_sold": report["tickets_sold"],
        "requests": report["requests"],
        "warm_up": warm_up,
        "flat": flatness(&samples, &report["timeline"], seconds as f64),
        "timeline": report["timeline"],
        "samples": samples,
    });
    let out = out_dir();
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join(format!("{name}.json")), serde_json::to_vec_pretty(&figures).unwrap()).unwrap();
    let chart = report["chart"].as_str().expect("the chart's path");
    std::fs::copy(chart, out.join(format!("{name}.svg"))).expect("the chart");
    println!("SOAK {}", figures["flat"]);
    assert!(run.status.success(), "{}", failed());
    assert_eq!(report["audit"]["clean"], true, "{name}: {}", report["audit"]);
    // The load was a sale: most people bought (2 % are bots, 5 % decline, 5 % abandon).
    let paid = report["counts"]["paid"].as_u64().unwrap_or(0);
    assert!(paid * 10 >= buyers * 7, "{name}: {paid} of {buyers} buyers paid: {}", report["outcomes"]);
    drained(&db, "SELECT count(*) FROM outbox WHERE sent_at IS NULL").await;
    drained(&db, UNCONFIRMED_5S).await;
    drained(&db, "SELECT count(*) FROM notifications WHERE state <> 'sent'").await;
    db.close().await;
    figures
}

/// The mean of what `pick` finds in `part` (`None` when nothing).
fn mean<'a>(part: impl IntoIterator<Item = &'a Value>, pick: &dyn Fn(&Value) -> Option<f64>) -> Option<f64> {
    let v: Vec<f64> = part.into_iter().filter_map(pick).collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// The least-squares slope of `points` (per unit of their first coordinate), `None` under three.
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 3 {
        return None;
    }
    let n = points.len() as f64;
    let (mx, my) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// Each sampled figure over the time buyers arrived (`until_s`), split by time into thirds: the
/// first is the warm-up (caches, pools, the JIT) and left out, as is what comes after `until_s`
/// (the wind-down). For each: the means of the middle and last thirds and their ratio (`growth`),
/// the largest value, the trend over both thirds (least squares) as what it added over them
/// (`rise`) and projected over an hour (`per_hour`), and the share of samples that had the figure
/// (`seen`).
fn flatness(samples: &[Value], timeline: &Value, until_s: f64) -> Value {
    let at = |s: &Value| s["at_s"].as_f64().unwrap_or(f64::NAN);
    let in_run: Vec<&Value> = samples.iter().filter(|s| at(s) <= until_s).collect();
    let (one, two) = (until_s / 3.0, 2.0 * until_s / 3.0);
    let figure = |pick: &dyn Fn(&Value) -> Option<f64>| -> Value {
        let middle = mean(in_run.iter().copied().filter(|s| at(s) >= one && at(s) < two), pick);
        let last = mean(in_run.iter().copied().filter(|s| at(s) >= two), pick);
        let trend: Vec<(f64, f64)> =
            in_run.iter().filter(|s| at(s) >= one).filter_map(|s| pick(s).map(|v| (at(s), v))).collect();
        let last_trend: Vec<(f64, f64)> = trend.iter().copied().filter(|(t, _)| *t >= two).collect();
        let max = in_run
            .iter()
            .filter_map(|s| pick(s))
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
        let seen = in_run.iter().filter(|s| pick(s).is_some()).count() as f64 / in_run.len().max(1) as f64;
        json!({ "middle": middle, "last": last, "max": max, "seen": seen,
                "per_hour": slope(&trend).map(|k| k * 3600.0),
                "rise": slope(&trend).map(|k| k * (until_s - one)),
                "last_per_hour": slope(&last_trend).map(|k| k * 3600.0),
                "last_rise": slope(&last_trend).map(|k| k * (until_s - two)),
                "growth": middle.zip(last).map(|(m, l)| if m > 0.0 { l / m - 1.0 } else { 0.0 }) })
    };
    let mut out = serde_json::Map::new();
    let processes: std::collections::BTreeSet<String> = REQUIRED_PROCESSES
        .iter()
        .map(|p| (*p).to_owned())
        .chain(in_run.iter().flat_map(|s| {
            s["rss_mib"].as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default()
        }))
        .collect();
    for p in processes {
        out.insert(
            format!("rss_mib.{p}"),
            figure(&|s: &Value| s["rss_mib"][&p].as_f64().filter(|m| *m > 1.0)),
        );
    }
    for (key, detail) in OBJECTS {
        out.insert(key.to_owned(), figure(&|s: &Value| s["memory_detail_mib"][detail].as_f64()));
    }
    out.insert(
        WORKERD_NATIVE.to_owned(),
        figure(&|s: &Value| {
            let rss = s["rss_mib"]["workerd"].as_f64().filter(|m| *m > 1.0)?;
            Some(rss - s["memory_detail_mib"]["heap.held"].as_f64()?)
        }),
    );
    for key in BACKLOGS {
        out.insert(key.to_owned(), figure(&|s: &Value| s[key].as_f64()));
    }
    // Where memory is (workerd's heap and file pages, the objects' WebAssembly memory, the
    // inventory's storage): shown beside what is judged, to explain it, not judged themselves.
    let details: std::collections::BTreeSet<String> = in_run
        .iter()
        .flat_map(|s| {
            s["memory_detail_mib"]
                .as_object()
                .map(|o| o.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
        })
        .collect();
    for d in details {
        out.insert(format!("detail.{d}"), figure(&|s: &Value| s["memory_detail_mib"][&d].as_f64()));
    }
    // Latency by minute, the same thirds of the minutes buyers arrived in (judged loosely: it
    // follows the machine's other work).
    let minutes: Vec<&Value> = timeline
        .as_array()
        .map(|m| m.iter().filter(|w| w["from_s"].as_f64().is_some_and(|t| t + 60.0 <= until_s)).collect())
        .unwrap_or_default();
    let m = minutes.len();
    for key in ["p50_ms", "p99_ms", "hold_p99_ms", "checkout_p99_ms"] {
        let pick = |w: &Value| w[key].as_f64();
        let (middle, last) = (
            mean(minutes[m / 3..2 * m / 3].iter().copied(), &pick),
            mean(minutes[2 * m / 3..].iter().copied(), &pick),
        );
        out.insert(format!("latency.{key}"), json!({ "middle": middle, "last": last }));
    }
    Value::Object(out)
}

/// The processes whose memory must have been sampled.
const REQUIRED_PROCESSES: [&str; 3] = ["core-1", "core-2", "workerd"];
/// The backlogs sampled (rows or messages, and lags in seconds: `_s`).
const BACKLOGS: [&str; 6] = [
    "outbox_unsent",
    "outbox_lag_s",
    "consumer_lag_messages",
    "consumer_lag_s",
    "unconfirmed_paid",
    "mails_waiting",
];

/// What did not stay flat, from [`flatness`]'s figures (empty: everything did). Memory: sampled in
/// most samples, grown at most [`MEMORY_GROWTH`] from the middle third to the last, and not on a
/// trend of more than [`MEMORY_TREND`] an hour. Latency: the last third at most twice the middle
/// third plus [`LATENCY_SLACK_MS`]. A backlog:
/// sampled in most samples, its last third at most twice its middle one plus a slack, and its
/// trend over both not rising more than the slack at a pace of more than its own size (or the
/// slack) an hour: a backlog that keeps growing fails however small it started.
fn verdict(flat: &Value) -> Vec<String> {
    let mut failures = Vec::new();
    for (key, f) in flat.as_object().into_iter().flatten() {
        if key.starts_with("detail.") {
            continue;
        }
        if key.starts_with("latency.") {
            if let (Some(middle), Some(last)) = (f["middle"].as_f64(), f["last"].as_f64()) {
                if last > middle * 2.0 + LATENCY_SLACK_MS {
                    failures.push(format!("{key} degraded over the last third: {f}"));
                }
            }
            continue;
        }
        let (middle, last, seen) =
            (f["middle"].as_f64(), f["last"].as_f64(), f["seen"].as_f64().unwrap_or(0.0));
        let (Some(middle), Some(last)) = (middle, last) else {
            failures.push(format!("{key} was not sampled in both thirds: {f}"));
            continue;
        };
        if seen < 0.8 {
            failures.push(format!("{key} was sampled in {:.0} % of the samples: {f}", seen * 100.0));
        }
        if LEVELS_OFF.contains(&key.as_str()) {
            let (rise, per_hour) =
                (f["last_rise"].as_f64().unwrap_or(0.0), f["last_per_hour"].as_f64().unwrap_or(0.0));
            if rise > middle * MEMORY_GROWTH / 2.0 && per_hour > middle * MEMORY_TREND {
                failures.push(format!(
                    "{key} did not level off, {per_hour:.1} MiB an hour over the last third: {f}"
                ));
            }
        }
        if SHOWN.contains(&key.as_str()) {
            continue;
        }
        if key.starts_with("rss_mib.") || key.starts_with("objects_mib.") || key.starts_with("workerd_mib.") {
            let growth = last / middle - 1.0;
            if growth > MEMORY_GROWTH && last - middle > MEMORY_SLACK_MIB {
                failures.push(format!("{key} grew {:.1} % over the last third: {f}", growth * 100.0));
            }
            let (rise, per_hour) = (f["rise"].as_f64().unwrap_or(0.0), f["per_hour"].as_f64().unwrap_or(0.0));
            let noise = (middle * MEMORY_GROWTH / 2.0).max(MEMORY_SLACK_MIB / 2.0);
            if rise > noise && per_hour > middle * MEMORY_TREND {
                failures.push(format!("{key} keeps growing, {per_hour:.1} MiB an hour: {f}"));
            }
        } else {
            let slack = if key.ends_with("_s") { LAG_SLACK_S } else { BACKLOG_SLACK };
            if last > middle * 2.0 + slack {
                failures.push(format!("{key} grew over the last third: {f}"));
            }
            // Both: a rise the run shows beyond noise (a short run's projection of noise is
            // large), at a pace that would outgrow the backlog's own size within an hour.
            let (rise, per_hour) = (f["rise"].as_f64().unwrap_or(0.0), f["per_hour"].as_f64().unwrap_or(0.0));
            if rise > slack && per_hour > middle.max(slack) {
                failures.push(format!("{key} keeps growing, {per_hour:.1} an hour: {f}"));
            }
        }
    }
    failures
}

#[test]
fn the_verdict_catches_a_backlog_that_keeps_growing_and_a_process_not_sampled() {
    // 30 minutes of samples every 10 s: flat memory, a backlog steady around 60 with noise.
    let sample = |t: u64, backlog: f64, workerd: Option<f64>| {
        let mut rss = json!({ "core-1": 60.0, "core-2": 61.0 });
        if let Some(w) = workerd {
            rss["workerd"] = json!(w);
        }
        // The objects' heap moves with collections; their WebAssembly memory stays.
        let heap = 8.0 + ((t * 31) % 5) as f64;
        let detail = json!({ "heap.core-user": heap, "objects.wasm": 2.0, "heap.held": 40.0 });
        let mut s = json!({ "at_s": t as f64, "rss_mib": rss, "memory_detail_mib": detail });
        for key in BACKLOGS {
            s[key] = json!(if key.ends_with("_s") { 0.4 } else { backlog });
        }
        s
    };
    let noise = |t: u64| ((t * 7919) % 41) as f64 - 20.0;
    let steady: Vec<Value> = (0..=180).map(|i| sample(i * 10, 60.0 + noise(i), Some(400.0))).collect();
    let flat = flatness(&steady, &json!([]), 1800.0);
    assert_eq!(verdict(&flat), Vec::<String>::new(), "{flat}");
    // A backlog growing steadily from nothing to 120 (the old rule, last ≤ 2 × middle + 50, passed it).
    let growing: Vec<Value> =
        (0..=180).map(|i| sample(i * 10, i as f64 * 120.0 / 180.0, Some(400.0))).collect();
    let failures = verdict(&flatness(&growing, &json!([]), 1800.0));
    assert!(failures.iter().any(|f| f.starts_with("outbox_unsent keeps growing")), "{failures:?}");
    // Five minutes of the same noise on a slight drift (1 every 10 s): projected over an hour it
    // is large (the old rule, trend ≤ max(size, slack) an hour, failed it), its rise is not.
    let short: Vec<Value> =
        (0..=30).map(|i| sample(i * 10, 60.0 + noise(i) + i as f64, Some(400.0))).collect();
    let flat = flatness(&short, &json!([]), 300.0);
    assert_eq!(verdict(&flat), Vec::<String>::new(), "{flat}");
    // workerd's memory missing from most samples; the objects' heap missing from all.
    let blind: Vec<Value> = (0..=180)
        .map(|i| {
            let mut s = sample(i * 10, 60.0, (i % 3 == 0).then_some(400.0));
            s["memory_detail_mib"].as_object_mut().unwrap().remove("heap.core-user");
            s
        })
        .collect();
    let failures = verdict(&flatness(&blind, &json!([]), 1800.0));
    assert!(failures.iter().any(|f| f.starts_with("rss_mib.workerd was sampled in 3")), "{failures:?}");
    assert!(failures.iter().any(|f| f.starts_with("objects_mib.heap was not sampled")), "{failures:?}");
    // A replica's memory, and the objects' heap, that grow by half over the run (13 % from the
    // middle third to the last).
    let leaking: Vec<Value> = (0..=180)
        .map(|i| {
            let grown = 1.0 + 0.5 * i as f64 / 180.0;
            let mut s = sample(i * 10, 60.0, Some(400.0));
            s["rss_mib"]["core-1"] = json!(60.0 * grown);
            s["memory_detail_mib"]["heap.core-user"] = json!(20.0 * grown);
            s
        })
        .collect();
    let failures = verdict(&flatness(&leaking, &json!([]), 1800.0));
    assert!(failures.iter().any(|f| f.starts_with("rss_mib.core-1 grew")), "{failures:?}");
    assert!(failures.iter().any(|f| f.starts_with("objects_mib.heap grew")), "{failures:?}");
    // Memory that creeps 30 % an hour: 4.7 % from the middle third to the last (the thirds' rule
    // alone passed it), its trend does not.
    let creeping: Vec<Value> = (0..=180)
        .map(|i| {
            let mut s = sample(i * 10, 60.0, Some(400.0));
            s["rss_mib"]["core-2"] = json!(400.0 * (1.0 + 0.3 * i as f64 / 360.0));
            s
        })
        .collect();
    let failures = verdict(&flatness(&creeping, &json!([]), 1800.0));
    assert!(failures.iter().any(|f| f.starts_with("rss_mib.core-2 keeps growing")), "{failures:?}");
    assert!(!failures.iter().any(|f| f.starts_with("rss_mib.core-2 grew")), "{failures:?}");
    // workerd's memory outside its V8 heaps: rising over the first 15 minutes then level passes;
    // rising to the end, however it started, does not.
    let levelled: Vec<Value> =
        (0..=180).map(|i| sample(i * 10, 60.0, Some(150.0 + 240.0 * (i.min(90) as f64 / 90.0)))).collect();
    let failures = verdict(&flatness(&levelled, &json!([]), 1800.0));
    assert!(!failures.iter().any(|f| f.contains("did not level off")), "{failures:?}");
    let rising: Vec<Value> =
        (0..=180).map(|i| sample(i * 10, 60.0, Some(150.0 + 240.0 * i as f64 / 180.0))).collect();
    let failures = verdict(&flatness(&rising, &json!([]), 1800.0));
    assert!(failures.iter().any(|f| f.starts_with("workerd_mib.native did not level off")), "{failures:?}");
    assert!(failures.iter().any(|f| f.starts_with("workerd_mib.native keeps growing")), "{failures:?}");
    // The same rise in what V8 holds, the rest level: shown, not judged (the heap the objects use
    // is judged in `objects_mib.heap`).
    let held: Vec<Value> = (0..=180)
        .map(|i| {
            let extra = 100.0 * i as f64 / 180.0;
            let mut s = sample(i * 10, 60.0, Some(400.0 + extra));
            s["memory_detail_mib"]["heap.held"] = json!(40.0 + extra);
            s
        })
        .collect();
    let flat = flatness(&held, &json!([]), 1800.0);
    assert_eq!(verdict(&flat), Vec::<String>::new(), "{flat}");
    // Without the heaps held, workerd's native memory is not known: a failure, not a pass.
    let no_heaps: Vec<Value> = (0..=180)
        .map(|i| {
            let mut s = sample(i * 10, 60.0, Some(400.0));
            s["memory_detail_mib"].as_object_mut().unwrap().remove("heap.held");
            s
        })
        .collect();
    let failures = verdict(&flatness(&no_heaps, &json!([]), 1800.0));
    assert!(failures.iter().any(|f| f.starts_with("workerd_mib.native was not sampled")), "{failures:?}");
    // Latency minute by minute: steady passes, tripled over the last third fails.
    let minute = |i: u64, p99: f64| json!({ "from_s": (i * 60) as f64, "p50_ms": 80.0, "p99_ms": p99 });
    let steady_latency: Vec<Value> = (0..30).map(|i| minute(i, 300.0 + (i % 3) as f64 * 40.0)).collect();
    let flat = flatness(&steady, &json!(steady_latency), 1800.0);
    assert_eq!(verdict(&flat), Vec::<String>::new(), "{flat}");
    let slower: Vec<Value> = (0..30).map(|i| minute(i, if i >= 20 { 1_200.0 } else { 300.0 })).collect();
    let failures = verdict(&flatness(&steady, &json!(slower), 1800.0));
    assert!(failures.iter().any(|f| f.starts_with("latency.p99_ms degraded")), "{failures:?}");
}

/// The soak itself: 30 minutes (`SOAK_SECONDS` to change it), samples every 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the 30-minute soak: scripts/soak.sh"]
async fn soak_30_minutes() {
    let seconds: u64 = std::env::var("SOAK_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1_800);
    assert!(
        (MIN_SOAK_SECONDS..=MAX_SOAK_SECONDS).contains(&seconds),
        "SOAK_SECONDS: {MIN_SOAK_SECONDS} to {MAX_SOAK_SECONDS}"
    );
    let figures = soak("soak", seconds, 10, HOLD_SECONDS, WARM_UP_REQUESTS).await;
    let failures = verdict(&figures["flat"]);
    assert!(failures.is_empty(), "not flat:\n{}", failures.join("\n"));
}

/// The soak's harness for 45 s in the test command: every figure is sampled, and charted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_smoke() {
    // The warm-up's path is exercised, briefly.
    let figures = soak("soak_smoke", 45, 3, 15, 200).await;
    let warm_up = &figures["warm_up"];
    assert_eq!(warm_up["statuses"]["404"], 200, "{warm_up}");
    assert!(warm_up["workerd_rss_mib"]["after"].as_f64().is_some_and(|m| m > 1.0), "{warm_up}");
    let samples = figures["samples"].as_array().unwrap();
    assert!(samples.len() >= 10, "{} samples", samples.len());
    // A scrape may time out on a busy machine now and then; most must not.
    for p in ["core-1", "core-2", "workerd"] {
        let seen = samples.iter().filter(|s| s["rss_mib"][p].as_f64().is_some_and(|m| m > 1.0)).count();
        assert!(seen * 10 >= samples.len() * 8, "{p}'s memory in {seen} of {} samples", samples.len());
    }
    for d in
        ["workerd.anon", "workerd.file", "objects.wasm", "inventory.storage", "heap.core-user", "heap.held"]
    {
        let seen =
            samples.iter().filter(|s| s["memory_detail_mib"][d].as_f64().is_some_and(|m| m > 0.0)).count();
        assert!(seen * 10 >= samples.len() * 8, "{d} in {seen} of {} samples", samples.len());
    }
    for s in samples {
        for key in ["outbox_unsent", "unconfirmed_paid", "mails_waiting"] {
            assert!(s[key].is_number(), "{key}: {s}");
        }
        // The consumers' lag is measured every 5 s from their start.
        if s["at_s"].as_f64().unwrap() >= 10.0 {
            assert!(s["consumer_lag_messages"].is_number() && s["consumer_lag_s"].is_number(), "{s}");
        }
    }
    let minutes = figures["timeline"].as_array().unwrap();
    assert!(minutes.iter().any(|w| w["p99_ms"].is_number() && w["hold_p99_ms"].is_number()), "{minutes:?}");
    let svg = std::fs::read_to_string(out_dir().join("soak_smoke.svg")).unwrap();
    assert!(svg.contains("Resident memory") && svg.contains("workerd") && svg.contains("Backlog"));
}
