//! The sale's plan: who arrives when and what each buyer will do (seeded, so a run can be
//! replayed), the steps a buyer goes through, and their summaries and chart. Shared with the
//! baseline, which replays the same plan against the reference design.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use crate::summary::{percentile, summarize, Sample, Summary};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Arrival {
    /// Everyone in the on-sale second.
    Burst,
    /// Evenly over `--spread-seconds` from the on-sale time.
    Spread,
}

#[derive(Debug, Clone, Args)]
pub struct SaleArgs {
    #[arg(long, default_value = "http://127.0.0.1:8787")]
    pub edge: String,
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub core: String,
    /// Buyers (people), at most 100,000.
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub buyers: u64,
    /// Seats on sale (rows of 50), at most 20,000: above that the core sells an event by section
    /// (`SHARD_ABOVE_SEATS`), and the sale's buyers hold seats without naming one.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(2..=20_000))]
    pub seats: u64,
    /// The "best" seats (the first rows) that `--hot-share` of the buyers go for.
    #[arg(long, default_value_t = 50)]
    pub hot_seats: u64,
    #[arg(long, default_value_t = 0.5)]
    pub hot_share: f64,
    /// Most seats a buyer wants (each wants 1 to this many).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=8))]
    pub max_tickets: u64,
    #[arg(long, value_enum, default_value_t = Arrival::Burst)]
    pub arrival: Arrival,
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub spread_seconds: u64,
    /// Seconds from the set-up to the on-sale time (who comes before is in the shuffled pre-queue).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub on_sale_in: u64,
    /// The line's admission rate and cap of people shopping at once.
    #[arg(long, default_value_t = 6_000)]
    pub admit_per_minute: u32,
    #[arg(long, default_value_t = 500)]
    pub max_active: u32,
    /// How long an admitted buyer may shop: a buyer who vanished (abandoned) holds a place under
    /// `--max-active` until then (at least 60).
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u32).range(60..=86_400))]
    pub session_seconds: u32,
    /// Proof-of-work difficulty of the challenge (0: no bot check).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(0..=20))]
    pub difficulty: u8,
    /// Share of arrivals that are bots (join without solving the challenge).
    #[arg(long, default_value_t = 0.02)]
    pub bot_share: f64,
    /// Shares of buyers with a hold who decline at the provider, or never pay.
    #[arg(long, default_value_t = 0.05)]
    pub decline_share: f64,
    #[arg(long, default_value_t = 0.05)]
    pub abandon_share: f64,
    /// Think time before choosing seats and before paying, uniform in [min, max] ms.
    #[arg(long, default_value_t = 200)]
    pub think_min_ms: u64,
    #[arg(long, default_value_t = 1_500)]
    pub think_max_ms: u64,
    /// How long a hold lasts (abandoned holds must expire within the run).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(5..=3600))]
    pub hold_seconds: u32,
    /// How long checkout extends a hold for the payment (an abandoned payment keeps its seats held
    /// that long, and the line pauses while every seat left is held).
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub payment_seconds: u32,
    /// Requests in flight at once, over all buyers (at most 4096).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub concurrency: u64,
    /// Hard stop of the buyers' phase, in seconds (then the settling and the audit).
    #[arg(long, default_value_t = 900, value_parser = clap::value_parser!(u64).range(10..=3600))]
    pub max_seconds: u64,
    /// Seed of the buyers' plan (arrivals, choices, fates): the same seed, the same sale.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// People who join the event's waiting list once it is sold out (0: no waiting-list phase).
    /// Seats that come back are offered to them in order, by mail; each follows the mail's link
    /// and pays, declines (`--decline-share`) or lets the offer lapse (`--abandon-share`). The
    /// audit then replays the list's records (`crate::audit::waitlist`).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub waitlist: u64,
    /// How long a waiting-list offer stands (the list's claim window: 60 s at least).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(60..=3600))]
    pub waitlist_claim_seconds: u32,
    /// Paid orders the organizer refunds once people wait on the list (their seats come back to
    /// it, as the abandoned and declined ones do).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub waitlist_refunds: u64,
    /// How long a buyer goes on retrying a request that got no answer or a 5xx (every half second,
    /// the same request: checkout with the same `Idempotency-Key`, as the buyer's page does), before
    /// giving up. 0: never retry (the benchmarks' setting). The fault campaign sets it, so that a
    /// buyer rides out a restart as a patient person would (docs/reliability.md).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=600))]
    pub retry_seconds: u64,
    /// Memory and backlog sampled while the buyers buy (the soak's figures).
    #[command(flatten)]
    pub sample: crate::sample::SampleArgs,
    /// Then play the same buyers' plans against the baseline (a Redis lock per seat and an
    /// optimistic-version update in PostgreSQL; `crate::baseline`) and compare.
    #[arg(long)]
    pub baseline: bool,
    /// The Redis the baseline locks seats in (`host:port`).
    #[arg(long, env = "BASELINE_REDIS", default_value = "127.0.0.1:6379")]
    pub redis: String,
    /// Where the results go (`sale-<event>.json`, `sale-<event>.svg`).
    #[arg(long, default_value = ".local/loadtest")]
    pub out: PathBuf,
    /// A platform admin's API key (`regional-core create-admin`).
    #[arg(long, env = "PLATFORM_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: String,
    /// The core's database (the audit reads it).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// The core's signing key (the audit reads the edge's statistics through its signed route).
    #[arg(long, env = "CORE_SIGNING_KEY", hide_env_values = true)]
    pub core_signing_key: String,
}

/// The steps a buyer's requests belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Step {
    Challenge,
    Join,
    Poll,
    Availability,
    Hold,
    Checkout,
    Pay,
    Order,
    Leave,
    Bot,
    /// Joining the waiting list.
    Waitlist,
    /// Taking an offer's link.
    Offer,
    /// Saying no to an offer.
    Decline,
    /// The organizer refunding an order.
    Refund,
}

const STEPS: [Step; 14] = [
    Step::Challenge,
    Step::Join,
    Step::Poll,
    Step::Availability,
    Step::Hold,
    Step::Checkout,
    Step::Pay,
    Step::Order,
    Step::Leave,
    Step::Bot,
    Step::Waitlist,
    Step::Offer,
    Step::Decline,
    Step::Refund,
];

/// One timed request: step, status (`None`: transport error), when it ended (ms since the start),
/// how long it took.
pub(crate) type Rec = (Step, Option<u16>, u32, Duration);

/// One buyer's plan, drawn from the seed before the sale (the baseline replays the same plans).
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub arrive_after: Duration,
    pub bot: bool,
    pub hot: bool,
    pub tickets: usize,
    pub fate: Fate,
    pub think: [Duration; 2],
    pub rng: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    Pay,
    Decline,
    Abandon,
}

/// splitmix64: small, seeded, good enough for plans.
pub(crate) fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn unit(state: &mut u64) -> f64 {
    (next(state) >> 11) as f64 / (1u64 << 53) as f64
}

/// Declines and abandons in the shares asked for; the rest pay.
fn fate(rng: &mut u64, args: &SaleArgs) -> Fate {
    match unit(rng) {
        u if u < args.decline_share => Fate::Decline,
        u if u < args.decline_share + args.abandon_share => Fate::Abandon,
        _ => Fate::Pay,
    }
}

pub(crate) fn plans(args: &SaleArgs) -> Vec<Plan> {
    let mut rng = args.seed;
    (0..args.buyers)
        .map(|i| {
            let arrive_after = match args.arrival {
                Arrival::Burst => Duration::from_millis(next(&mut rng) % 1_000),
                Arrival::Spread => {
                    Duration::from_secs_f64(args.spread_seconds as f64 * i as f64 / args.buyers as f64)
                }
            };
            let fate = fate(&mut rng, args);
            let span = args.think_max_ms.saturating_sub(args.think_min_ms) + 1;
            Plan {
                arrive_after,
                bot: unit(&mut rng) < args.bot_share,
                hot: unit(&mut rng) < args.hot_share,
                tickets: 1 + (next(&mut rng) % args.max_tickets) as usize,
                fate,
                think: [0, 1].map(|_| Duration::from_millis(args.think_min_ms + next(&mut rng) % span)),
                rng: next(&mut rng),
            }
        })
        .collect()
}

/// One waiting-list member's plan (`--waitlist`), drawn from the seed like the buyers'.
#[derive(Debug, Clone)]
pub(crate) struct ListPlan {
    /// From the moment the sale is seen sold out.
    pub arrive_after: Duration,
    pub tickets: u32,
    /// Pay for the offer, decline it, or let it lapse (`Abandon`).
    pub fate: Fate,
    pub think: Duration,
}

pub(crate) fn waitlist_plans(args: &SaleArgs) -> Vec<ListPlan> {
    // A stream of its own, so that the buyers' plans stay those of the same seed without a list.
    let mut rng = args.seed ^ 0x5741_4954_4c49_5354;
    let span = args.think_max_ms.saturating_sub(args.think_min_ms) + 1;
    (0..args.waitlist)
        .map(|_| ListPlan {
            arrive_after: Duration::from_millis(next(&mut rng) % 3_000),
            tickets: 1 + (next(&mut rng) % args.max_tickets) as u32,
            fate: fate(&mut rng, args),
            think: Duration::from_millis(args.think_min_ms + next(&mut rng) % span),
        })
        .collect()
}

/// The seat ids of a venue the load generator made, in seat-map order (rows of 50).
pub fn seat_ids(seats: u64) -> Vec<String> {
    (0..seats).map(|i| format!("R{}-{}", i / 50, i % 50)).collect()
}

/// Throughput and latency percentiles of each step that has requests, by its name.
pub(crate) fn step_summaries(records: &[Rec], seconds: f64) -> BTreeMap<String, Summary> {
    let mut steps = BTreeMap::new();
    for step in STEPS {
        let samples: Vec<Sample> = records.iter().filter(|r| r.0 == step).map(|r| (r.1, r.3)).collect();
        if !samples.is_empty() {
            steps.insert(format!("{step:?}").to_lowercase(), summarize(&samples, seconds));
        }
    }
    steps
}

/// Most points a chart's time axis has: a long run is drawn in steps of several seconds.
const CHART_POINTS: usize = 450;

/// Requests per second, p50/p99 latency, tickets sold (paid orders seen) over time; with
/// `samples` (`--sample-seconds`), the processes' memory and the backlog too. A run longer than
/// [`CHART_POINTS`] seconds is drawn in steps of several seconds (rates stay per second).
pub(crate) fn chart(
    records: &[Rec],
    sales: &[(u32, u64)],
    seconds: f64,
    title: &str,
    samples: &[crate::sample::Sample],
) -> String {
    let step = (seconds.ceil() as usize).div_ceil(CHART_POINTS).max(1);
    let n = (seconds.ceil().max(1.0) as usize).div_ceil(step) + 1;
    let point = |at_ms: u32| (at_ms as usize / 1000 / step).min(n - 1);
    let mut latencies: Vec<Vec<f64>> = vec![Vec::new(); n];
    for &(_, _, at, latency) in records {
        latencies[point(at)].push(latency.as_secs_f64() * 1000.0);
    }
    latencies.iter_mut().for_each(|v| v.sort_by(|a, b| a.total_cmp(b)));
    let rps: Vec<Option<f64>> = latencies.iter().map(|v| Some(v.len() as f64 / step as f64)).collect();
    let pct = |p: f64| -> Vec<Option<f64>> { latencies.iter().map(|v| percentile(v, p)).collect() };
    let (p50, p99) = (pct(0.5), pct(0.99));
    // Counts per point of `(ms since the start, count)` pairs.
    let bucketed = |items: &mut dyn Iterator<Item = (u32, u64)>| {
        let mut c = vec![0u64; n];
        for (at, k) in items {
            c[point(at)] += k;
        }
        c
    };
    let holds: Vec<Option<f64>> =
        bucketed(&mut records.iter().filter(|r| r.0 == Step::Hold && r.1 == Some(201)).map(|r| (r.2, 1)))
            .into_iter()
            .map(|x| Some(x as f64 / step as f64))
            .collect();
    let sold: Vec<Option<f64>> = bucketed(&mut sales.iter().copied())
        .into_iter()
        .scan(0u64, |total, x| {
            *total += x;
            Some(Some(*total as f64))
        })
        .collect();
    // A sampled figure holds from its sample to the next (samples are seconds apart).
    let sampled = |f: &dyn Fn(&crate::sample::Sample) -> Option<f64>| -> Vec<Option<f64>> {
        let mut out = vec![None; n];
        for (i, s) in samples.iter().enumerate() {
            let from = (s.at_s as usize / step).min(n - 1);
            let to =
                samples.get(i + 1).map_or(n, |next| (next.at_s as usize / step).min(n - 1).max(from + 1));
            out[from..to].fill(f(s));
        }
        out
    };
    let processes: Vec<String> = samples
        .iter()
        .flat_map(|s| s.rss_mib.keys().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let memory: Vec<Vec<Option<f64>>> =
        processes.iter().map(|p| sampled(&|s: &crate::sample::Sample| s.rss_mib.get(p).copied())).collect();
    let outbox = sampled(&|s: &crate::sample::Sample| s.outbox_unsent.map(|n| n as f64));
    let consumers = sampled(&|s: &crate::sample::Sample| s.consumer_lag_messages);
    let unconfirmed = sampled(&|s: &crate::sample::Sample| s.unconfirmed_paid.map(|n| n as f64));
    use crate::chart::{svg, Panel, Series};
    let line = |name, colour, values| Series { name, colour, values };
    let (blue, amber, red, green) = ("#2f6fdf", "#f0a020", "#b3261e", "#1a7f37");
    let mut panels = vec![
        ("Requests per second", "", vec![line("all steps", blue, &rps), line("holds placed", amber, &holds)]),
        ("Latency", "ms", vec![line("p50", blue, &p50), line("p99", red, &p99)]),
        (
            "Tickets sold (cumulative, as buyers saw their orders paid)",
            "",
            vec![line("tickets", green, &sold)],
        ),
    ];
    if !samples.is_empty() {
        const COLOURS: [&str; 6] = ["#2f6fdf", "#7b3fbf", "#f0a020", "#1a7f37", "#b3261e", "#555555"];
        let series = processes
            .iter()
            .zip(&memory)
            .enumerate()
            .map(|(i, (name, values))| line(name.as_str(), COLOURS[i % COLOURS.len()], values))
            .collect();
        panels.push(("Resident memory", "MiB", series));
        panels.push((
            "Backlog",
            "",
            vec![
                line("outbox not relayed", blue, &outbox),
                line("consumer lag (messages)", amber, &consumers),
                line("paid > 5 s, unconfirmed", red, &unconfirmed),
            ],
        ));
    }
    let panels: Vec<Panel<'_>> =
        panels.into_iter().map(|(title, unit, series)| Panel { title, unit, series }).collect();
    svg(title, n - 1, step, &panels)
}

/// How long a timeline window lasts.
pub(crate) const WINDOW_SECONDS: u32 = 60;

/// One minute of the run: its requests and their latency percentiles (all steps, and the hold and
/// checkout alone), so that a long run shows whether latency stays flat.
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    pub from_s: u32,
    pub requests: u64,
    /// Transport errors and 5xx answers.
    pub failed: u64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub hold_p99_ms: Option<f64>,
    pub checkout_p99_ms: Option<f64>,
}

/// The run minute by minute (by when each request ended).
pub(crate) fn timeline(records: &[Rec]) -> Vec<Window> {
    let windows = records.iter().map(|r| r.2 / 1000 / WINDOW_SECONDS + 1).max().unwrap_or(0) as usize;
    let mut all: Vec<Vec<f64>> = vec![Vec::new(); windows];
    let mut holds: Vec<Vec<f64>> = vec![Vec::new(); windows];
    let mut checkouts: Vec<Vec<f64>> = vec![Vec::new(); windows];
    let mut failed = vec![0u64; windows];
    for &(step, status, at, latency) in records {
        let w = (at / 1000 / WINDOW_SECONDS) as usize;
        let ms = latency.as_secs_f64() * 1000.0;
        all[w].push(ms);
        match step {
            Step::Hold => holds[w].push(ms),
            Step::Checkout => checkouts[w].push(ms),
            _ => {}
        }
        if status.is_none_or(|s| s >= 500) {
            failed[w] += 1;
        }
    }
    for v in all.iter_mut().chain(holds.iter_mut()).chain(checkouts.iter_mut()) {
        v.sort_by(|a, b| a.total_cmp(b));
    }
    (0..windows)
        .map(|w| Window {
            from_s: w as u32 * WINDOW_SECONDS,
            requests: all[w].len() as u64,
            failed: failed[w],
            p50_ms: percentile(&all[w], 0.5),
            p95_ms: percentile(&all[w], 0.95),
            p99_ms: percentile(&all[w], 0.99),
            hold_p99_ms: percentile(&holds[w], 0.99),
            checkout_p99_ms: percentile(&checkouts[w], 0.99),
        })
        .collect()
}
