//! The waiting room's coordinator, driven tick by tick against model shards on a simulated clock:
//! fairness (first come first served, the pre-queue shuffle), rate control, the active-buyer cap,
//! closed-loop admission, and nobody admitted twice or skipped.

use std::collections::HashMap;

use durable_objects::waiting_room::coordinator::{Coordinator, Millis, ShardReport, Stock, TICK_MS};
use durable_objects::waiting_room::SettingsError;
use shared_types::ids::EventId;
use shared_types::waiting_room::{
    hex32, prequeue_seq, shard_of_visitor, BotCheck, BotPolicy, Phase, QueueMode, WaitingRoomSettings,
};

/// One buyer of the simulation.
#[derive(Debug, Clone)]
struct Buyer {
    name: String,
    joins_at: Millis,
    /// How long the buyer shops once admitted (then the session ends).
    shops_for: Millis,
}

/// A queue shard reduced to what the coordinator sees: join numbers, admissions, ended sessions.
#[derive(Default)]
struct ModelShard {
    pre: Vec<usize>,
    post: Vec<(usize, Millis)>,
    prequeue_final: bool,
    admitted_through: u64,
    /// Buyer index → when admitted.
    admitted_at: HashMap<usize, Millis>,
    ended: u64,
}

struct Sim {
    c: Coordinator,
    shards: Vec<ModelShard>,
    buyers: Vec<Buyer>,
    next_join: usize,
    /// Buyer index in admission order, with the tick that admitted them.
    admitted: Vec<(usize, Millis)>,
    /// Most buyers admitted and not ended at any moment (model truth).
    max_active_seen: u64,
    now: Millis,
}

const T0: Millis = 1_800_000_000_000;

impl Sim {
    fn new(settings: WaitingRoomSettings, mut buyers: Vec<Buyer>, seed: [u8; 32]) -> Self {
        buyers.sort_by_key(|b| b.joins_at);
        let shards = (0..settings.queue_shards).map(|_| ModelShard::default()).collect();
        let c = Coordinator::new(EventId::parse("evt").unwrap(), settings, true, seed);
        Self { c, shards, buyers, next_join: 0, admitted: Vec::new(), max_active_seen: 0, now: T0 }
    }

    fn settings(&self) -> &WaitingRoomSettings {
        &self.c.settings
    }

    /// Advances the clock by one tick: joins, then the coordinator's tick and sync of every shard.
    fn step(&mut self) {
        self.now += TICK_MS;
        let now = self.now;
        let settings = self.settings().clone();
        while self.next_join < self.buyers.len() && self.buyers[self.next_join].joins_at <= now {
            let i = self.next_join;
            let s = shard_of_visitor(&self.buyers[i].name, settings.queue_shards) as usize;
            let shard = &mut self.shards[s];
            let joined_at = self.buyers[i].joins_at;
            if settings.is_prequeue(joined_at) && !shard.prequeue_final {
                shard.pre.push(i);
            } else {
                shard.post.push((i, joined_at));
            }
            self.next_join += 1;
        }
        self.c.tick(now);
        for s in 0..self.shards.len() {
            let req = self.c.sync_request(s as u16, now);
            let report = self.sync_shard(s, &req, now);
            self.c.apply_report(s as u16, &report);
        }
        let active = self.model_active(now);
        self.max_active_seen = self.max_active_seen.max(active);
    }

    fn sync_shard(
        &mut self,
        s: usize,
        req: &durable_objects::waiting_room::SyncRequest,
        now: Millis,
    ) -> ShardReport {
        let settings = self.settings().clone();
        let shard = &mut self.shards[s];
        if !settings.is_prequeue(now) {
            shard.prequeue_final = true;
        }
        for rank in shard.admitted_through + 1..=req.admitted_through {
            let p = req.prequeue.expect("admission before the pre-queue is final");
            let buyer = if rank <= p {
                let seed = hex32(req.seed.as_deref().expect("seed revealed")).unwrap();
                shard.pre[(prequeue_seq(&seed, s as u16, rank, p) - 1) as usize]
            } else {
                shard.post[(rank - p - 1) as usize].0
            };
            assert!(shard.admitted_at.insert(buyer, now).is_none(), "buyer {buyer} admitted twice");
            self.admitted.push((buyer, now));
        }
        shard.admitted_through = req.admitted_through;
        shard.ended =
            shard.admitted_at.iter().filter(|(&b, &at)| at + self.buyers[b].shops_for <= now).count() as u64;
        let mut buckets: Vec<(i64, u64)> = Vec::new();
        for (n, &(_, at)) in shard.post.iter().enumerate().skip(req.known_post as usize) {
            let second = at.div_euclid(1000);
            match buckets.last_mut() {
                Some((s, last)) if *s == second => *last = n as u64 + 1,
                _ => buckets.push((second, n as u64 + 1)),
            }
        }
        ShardReport {
            now_ms: now,
            pre_joined: shard.pre.len() as u64,
            prequeue_final: shard.prequeue_final,
            post_joined: shard.post.len() as u64,
            post_buckets: buckets,
            admitted_through: shard.admitted_through,
            ended: shard.ended,
        }
    }

    fn model_active(&self, now: Millis) -> u64 {
        self.shards
            .iter()
            .flat_map(|s| s.admitted_at.iter())
            .filter(|(&b, &at)| at + self.buyers[b].shops_for > now)
            .count() as u64
    }

    fn run_until_all_admitted(&mut self, max_ticks: u32) {
        for _ in 0..max_ticks {
            self.step();
            if self.admitted.len() == self.buyers.len() {
                return;
            }
        }
        panic!("only {} of {} admitted", self.admitted.len(), self.buyers.len());
    }
}

fn open_settings(shards: u16, per_minute: u32) -> WaitingRoomSettings {
    WaitingRoomSettings {
        version: 1,
        admit_per_minute: per_minute,
        max_active: 1_000_000,
        queue_shards: shards,
        mode: QueueMode::ShuffleThenFifo,
        bot: BotPolicy { check: BotCheck::Off, ..BotPolicy::default() },
        ..WaitingRoomSettings::default()
    }
}

fn buyers(count: usize, first_at: Millis, every_ms: Millis, shops_for: Millis) -> Vec<Buyer> {
    (0..count)
        .map(|i| Buyer { name: format!("buyer-{i}"), joins_at: first_at + i as Millis * every_ms, shops_for })
        .collect()
}

#[test]
fn after_the_sale_starts_buyers_are_admitted_in_the_order_they_came() {
    // 3,000 buyers, one every 7 ms over 8 shards, admitted at 1,200 a minute: the line builds up.
    let mut sim = Sim::new(open_settings(8, 1_200), buyers(3_000, T0 + 500, 7, 60_000), [1; 32]);
    sim.run_until_all_admitted(400);
    let admitted_at: HashMap<usize, Millis> = sim.admitted.iter().copied().collect();
    assert_eq!(admitted_at.len(), 3_000, "nobody twice, nobody skipped");
    // Whoever joined in an earlier second is never admitted after someone of a later second; within
    // one second, sharding may reorder (that is the only deviation).
    let mut out_of_order = 0;
    for (a, buyer_a) in sim.buyers.iter().enumerate() {
        for (b, buyer_b) in sim.buyers.iter().enumerate().skip(a + 1) {
            let (sa, sb) = (buyer_a.joins_at / 1000, buyer_b.joins_at / 1000);
            if sa < sb && admitted_at[&a] > admitted_at[&b] {
                out_of_order += 1;
            }
            if sb > sa + 1 {
                break;
            }
        }
    }
    assert_eq!(out_of_order, 0);
    // And within each shard, strictly in join order.
    for shard in &sim.shards {
        let times: Vec<Millis> = shard.post.iter().map(|(b, _)| admitted_at[b]).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
    }
}

#[test]
fn admissions_per_minute_follow_the_setting_over_ten_minutes() {
    // 20,000 waiting, 600 a minute, sessions long enough that the cap never binds.
    let mut sim = Sim::new(open_settings(4, 600), buyers(20_000, T0 - 10_000, 0, 3_600_000), [2; 32]);
    for _ in 0..600 {
        sim.step();
    }
    let start = T0;
    let mut per_minute = [0u64; 10];
    for &(_, at) in &sim.admitted {
        let minute = ((at - start - 1) / 60_000) as usize;
        if minute < 10 {
            per_minute[minute] += 1;
        }
    }
    for (m, &n) in per_minute.iter().enumerate() {
        assert!((582..=618).contains(&n), "minute {m}: {n} admitted (setting 600)");
    }
    let total: u64 = per_minute.iter().sum();
    assert!((5_940..=6_060).contains(&total), "{total} in ten minutes");
}

#[test]
fn the_active_cap_is_never_exceeded_and_admission_resumes_as_sessions_end() {
    let settings = WaitingRoomSettings { max_active: 100, ..open_settings(4, 6_000) };
    // Each buyer shops for 30 s; 1,000 waiting.
    let mut sim = Sim::new(settings, buyers(1_000, T0 - 5_000, 0, 30_000), [3; 32]);
    for _ in 0..400 {
        sim.step();
        assert!(sim.max_active_seen <= 100, "active {} over the cap", sim.max_active_seen);
        assert!(sim.c.active() <= 100);
    }
    assert_eq!(sim.max_active_seen, 100, "the cap is used in full");
    assert_eq!(sim.admitted.len(), 1_000, "admission resumed as sessions ended");
    // Closed loop: the 101st buyer got in only after the first sessions ended (30 s after the start).
    let first = sim.admitted[0].1;
    assert!(sim.admitted[100].1 >= first + 30_000);
}

#[test]
fn before_the_sale_nobody_is_admitted_and_the_prequeue_goes_first() {
    let on_sale = T0 + 60_000;
    let settings = WaitingRoomSettings { on_sale_at_ms: Some(on_sale), ..open_settings(4, 6_000) };
    let mut all = buyers(400, T0 + 1_000, 100, 600_000); // all before the sale
    all.extend(
        buyers(200, on_sale + 1_000, 100, 600_000)
            .into_iter()
            .map(|b| Buyer { name: format!("late-{}", b.name), ..b }),
    );
    let mut sim = Sim::new(settings, all, [4; 32]);
    for _ in 0..59 {
        sim.step();
        assert_eq!(sim.c.phase(sim.now), Phase::PreQueue);
    }
    assert!(sim.admitted.is_empty());
    assert!(sim.c.view(sim.now).seed.is_none(), "the seed stays secret until the draw");
    sim.run_until_all_admitted(200);
    let positions: HashMap<usize, usize> =
        sim.admitted.iter().enumerate().map(|(pos, &(b, _))| (b, pos)).collect();
    let last_early = (0..400).map(|b| positions[&b]).max().unwrap();
    let first_late = (400..600).map(|b| positions[&b]).min().unwrap();
    assert!(last_early < first_late, "every pre-queue buyer before anyone who came after the sale");
    // The pre-queue is not in arrival order.
    let early_order: Vec<usize> = sim.admitted.iter().map(|a| a.0).filter(|&b| b < 400).collect();
    assert_ne!(early_order, (0..400).collect::<Vec<_>>());
}

/// Uniformity of the whole line: 6 pre-queue buyers spread over 3 shards, 3,000 draws with
/// different seeds; each buyer's place in the line must be uniform over the 6 places (chi-square
/// per buyer at the 0.1% level).
#[test]
fn the_prequeue_shuffle_is_uniform_across_shards() {
    let on_sale = T0 + 2_000;
    let n = 6usize;
    let trials = 3_000u32;
    let mut counts = vec![vec![0u32; n]; n];
    for t in 0..trials {
        let settings = WaitingRoomSettings { on_sale_at_ms: Some(on_sale), ..open_settings(3, 60) };
        let mut seed = [0u8; 32];
        seed[..4].copy_from_slice(&t.to_be_bytes());
        let mut sim = Sim::new(settings, buyers(n, T0 + 100, 10, 600_000), seed);
        sim.run_until_all_admitted(40);
        for (pos, &(b, _)) in sim.admitted.iter().enumerate() {
            counts[b][pos] += 1;
        }
    }
    let expected = f64::from(trials) / n as f64;
    for (b, row) in counts.iter().enumerate() {
        let chi2: f64 = row.iter().map(|&c| (f64::from(c) - expected).powi(2) / expected).sum();
        // 5 degrees of freedom: the 99.9% quantile is 20.52.
        assert!(chi2 < 20.52, "buyer {b}: chi-square {chi2}, places {row:?}");
    }
}

#[test]
fn the_draw_replays_from_the_revealed_seed() {
    let on_sale = T0 + 5_000;
    let settings = WaitingRoomSettings { on_sale_at_ms: Some(on_sale), ..open_settings(4, 120) };
    let run = || {
        let mut sim = Sim::new(settings.clone(), buyers(50, T0 + 100, 20, 600_000), [9; 32]);
        sim.run_until_all_admitted(100);
        sim.admitted.iter().map(|a| a.0).collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}

#[test]
fn pausing_stops_admission_and_resuming_continues_it() {
    let mut sim = Sim::new(open_settings(2, 600), buyers(100, T0 - 1_000, 0, 600_000), [5; 32]);
    for _ in 0..10 {
        sim.step();
    }
    let before = sim.admitted.len();
    assert!(before > 0);
    let mut paused = sim.settings().clone();
    paused.version = 2;
    paused.paused = true;
    sim.c.apply_settings(paused.clone(), sim.now).unwrap();
    for _ in 0..30 {
        sim.step();
    }
    assert_eq!(sim.admitted.len(), before);
    assert_eq!(sim.c.phase(sim.now), Phase::Paused);
    let resumed = WaitingRoomSettings { version: 3, paused: false, ..paused };
    sim.c.apply_settings(resumed, sim.now).unwrap();
    sim.run_until_all_admitted(300);
}

#[test]
fn sold_out_closes_the_line_and_all_held_holds_admission() {
    let mut sim = Sim::new(open_settings(2, 600), buyers(100, T0 - 1_000, 0, 600_000), [6; 32]);
    sim.c.stock = Some(Stock { capacity: 10, available: 0, held: 4, waitlist_held: 0 });
    for _ in 0..20 {
        sim.step();
    }
    assert_eq!(sim.c.phase(sim.now), Phase::AllHeld);
    assert!(sim.admitted.is_empty());
    // Held only by the waiting list (parked, or offered to its entries): sold out, the line stays
    // closed.
    sim.c.stock = Some(Stock { capacity: 10, available: 0, held: 4, waitlist_held: 4 });
    assert_eq!(sim.c.phase(sim.now), Phase::SoldOut);
    sim.c.stock = Some(Stock { capacity: 10, available: 0, held: 0, waitlist_held: 0 });
    assert_eq!(sim.c.phase(sim.now), Phase::SoldOut);
    assert!(!sim.c.phase(sim.now).accepts_joins());
    sim.c.stock = Some(Stock { capacity: 10, available: 3, held: 0, waitlist_held: 0 });
    sim.step();
    sim.step();
    assert!(!sim.admitted.is_empty());
}

#[test]
fn settings_pushes_are_versioned_and_guarded() {
    let mut sim = Sim::new(open_settings(2, 600), buyers(10, T0 - 1_000, 0, 600_000), [7; 32]);
    let s1 = sim.settings().clone();
    assert_eq!(sim.c.apply_settings(s1.clone(), sim.now), Ok(false), "same version again is a no-op");
    let other = WaitingRoomSettings { admit_per_minute: 5, ..s1.clone() };
    assert_eq!(sim.c.apply_settings(other, sim.now), Err(SettingsError::VersionConflict { version: 1 }));
    let stale = WaitingRoomSettings { version: 0, ..s1.clone() };
    assert_eq!(sim.c.apply_settings(stale, sim.now), Err(SettingsError::Stale { pushed: 0, held: 1 }));
    sim.step();
    let reshard = WaitingRoomSettings { version: 2, queue_shards: 3, ..s1.clone() };
    assert_eq!(sim.c.apply_settings(reshard, sim.now), Err(SettingsError::ShardsFixed));
    let later_sale = WaitingRoomSettings { version: 2, on_sale_at_ms: Some(sim.now + 60_000), ..s1.clone() };
    assert_eq!(sim.c.apply_settings(later_sale, sim.now), Err(SettingsError::SaleStarted));
    let faster = WaitingRoomSettings { version: 2, admit_per_minute: 1_200, ..s1 };
    assert_eq!(sim.c.apply_settings(faster, sim.now), Ok(true));
}

#[test]
fn the_proof_of_work_gets_harder_under_a_flood_of_joins() {
    let settings = WaitingRoomSettings {
        bot: BotPolicy {
            check: BotCheck::ProofOfWork { difficulty: 12 },
            raise_above_joins_per_minute: 1_000,
            max_raise: 4,
            ..BotPolicy::default()
        },
        ..open_settings(2, 600)
    };
    let mut sim = Sim::new(settings, buyers(500, T0, 10, 600_000), [8; 32]);
    for _ in 0..10 {
        sim.step();
    }
    assert_eq!(sim.c.difficulty(), 12, "500 joins a minute is normal");
    let mut flood = Sim::new(sim.settings().clone(), buyers(9_000, T0, 1, 600_000), [8; 32]);
    for _ in 0..10 {
        flood.step();
    }
    // 9,000 joins in the last minute: over 8x the threshold, 4 bits more (the cap).
    assert_eq!(flood.c.difficulty(), 16);
}

/// The average wait the operator sees: a pre-queue place waits from the on-sale time, a later one
/// from when it joined (counted to the second, so at most a second more than the truth).
#[test]
fn the_average_wait_is_what_buyers_waited() {
    let on_sale = T0 + 10_000;
    let settings = WaitingRoomSettings { on_sale_at_ms: Some(on_sale), ..open_settings(3, 600) };
    let mut all = buyers(150, T0 + 1_000, 50, 600_000);
    all.extend(
        buyers(150, on_sale + 2_000, 300, 600_000)
            .into_iter()
            .map(|b| Buyer { name: format!("late-{}", b.name), ..b }),
    );
    let mut sim = Sim::new(settings, all, [11; 32]);
    assert_eq!(sim.c.average_wait_ms(), 0);
    sim.run_until_all_admitted(400);
    let truth: Vec<Millis> =
        sim.admitted.iter().map(|&(b, at)| at - sim.buyers[b].joins_at.max(on_sale)).collect();
    let mean = truth.iter().sum::<Millis>() as f64 / truth.len() as f64;
    let seen = sim.c.average_wait_ms() as f64;
    assert!(mean > 5_000.0, "the line made people wait ({mean} ms)");
    assert!(seen >= mean - 1.0 && seen <= mean + 1_000.0, "average wait {seen} ms, truth {mean} ms");
}
