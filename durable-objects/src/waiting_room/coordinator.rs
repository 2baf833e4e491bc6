//! The coordinator of one event's line: pure rules, no I/O (the `QueueCoordinator` object drives
//! it from its alarm and persists it).
//!
//! Each queue shard numbers its joiners in two runs: the pre-queue (joined before the on-sale time,
//! shuffled) and everyone after (first come, first served). A place in shard `s` has a *rank*:
//! `1..=P` for the pre-queue (the seeded shuffle of its join number), `P + n` for the `n`-th to
//! join after. The coordinator decides, per shard, the rank up to which people are admitted.
//!
//! On every tick it
//! 1. earns admission credit at the configured rate (carrying fractions, so the rate is exact over
//!    time) and spends it only while the active-buyer cap has room;
//! 2. admits the pre-queue first, drawing each next person's shard at random in proportion to the
//!    shard's remaining pre-queue (so the line across shards is one uniformly random order, and the
//!    draw replays from the revealed seed);
//! 3. then admits those who came after, by the second they joined, across shards (ties within one
//!    second are split in proportion: the only unfairness sharding brings), and only seconds that
//!    every shard has fully reported;
//! 4. learns from the shards' reports how many sessions ended (bought, left, timed out, or never
//!    claimed), which frees room under the cap: admission is closed-loop.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use shared_types::ids::EventId;
use shared_types::waiting_room::{
    hex32, seed_commitment, BotCheck, ChangeRefusal, DrawRng, Phase, QueueMode, RoomView, ShardCursor,
    WaitingRoomSettings, MAX_POW_DIFFICULTY,
};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// How often the coordinator ticks while anyone waits or shops.
pub const TICK_MS: Millis = 1_000;
/// Most admission credit saved up, in seconds of the configured rate.
const CREDIT_BURST_SECS: f64 = 5.0;
/// The window over which the admission rate and the join rate are measured.
const RATE_WINDOW_MS: Millis = 60_000;

/// Why a settings push was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum SettingsError {
    #[error("settings version {pushed} is older than the version {held} already held")]
    Stale { pushed: u64, held: u64 },
    #[error("settings version {version} was already pushed with different values")]
    VersionConflict { version: u64 },
    #[error("the number of queue shards cannot change once people have joined")]
    ShardsFixed,
    #[error("the on-sale time and the queueing mode cannot change once the sale has started")]
    SaleStarted,
}

/// What one shard reported at its last sync.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardReport {
    /// The shard's clock when it answered.
    pub now_ms: Millis,
    /// Joined the pre-queue so far (final once `prequeue_final`).
    pub pre_joined: u64,
    /// True once the on-sale time has passed at the shard: nobody more joins its pre-queue.
    pub prequeue_final: bool,
    /// Joined after (or, first come first served, at any time) so far.
    pub post_joined: u64,
    /// Post-sale joiners by second: `(second, last join number in it)`, for join numbers after the
    /// `known_post` the coordinator sent.
    pub post_buckets: Vec<(i64, u64)>,
    /// Admitted through this rank, as the shard has recorded it.
    pub admitted_through: u64,
    /// Sessions ended so far (admitted people who bought, left, timed out or never came back).
    pub ended: u64,
}

/// What the coordinator sends a shard at each sync.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncRequest {
    pub shard: u16,
    pub event: EventId,
    pub settings: WaitingRoomSettings,
    pub phase: Phase,
    /// Admit through this rank.
    pub admitted_through: u64,
    /// The pre-queue size the coordinator counts with (once final).
    pub prequeue: Option<u64>,
    /// The shuffle seed, once revealed (hex).
    pub seed: Option<String>,
    /// Post-sale join numbers the coordinator already knows.
    pub known_post: u64,
    /// The coordinator ticks again before this time; a shard that takes a join later wakes it.
    pub awake_until_ms: Millis,
}

/// One shard as the coordinator sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// Pre-queue size, once final.
    pub prequeue: Option<u64>,
    pub pre_joined: u64,
    pub post_joined: u64,
    /// Post-sale joiners not yet admitted, by second: `(second, last join number)`.
    pub buckets: VecDeque<(i64, u64)>,
    /// Admit through this rank (decided).
    pub target: u64,
    /// Admitted through this rank (recorded by the shard).
    pub acked: u64,
    pub ended: u64,
    /// The shard's clock at its last report.
    pub synced_ms: Millis,
}

impl Line {
    fn pre_remaining(&self) -> u64 {
        self.prequeue.map_or(0, |p| p.saturating_sub(self.target))
    }

    /// People with a place in this shard (everyone, admitted or not).
    fn joined(&self) -> u64 {
        self.prequeue.unwrap_or(self.pre_joined) + self.post_joined
    }
}

/// Seats left, as last read from the inventory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stock {
    pub capacity: u64,
    pub available: u64,
    pub held: u64,
    /// Of those held, the places the event's waiting list keeps (parked, or offered): they never
    /// go back on public sale while anyone waits, so they do not reopen the line.
    #[serde(default)]
    pub waitlist_held: u64,
}

/// The coordinator's whole state (small: it is stored as one value).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Coordinator {
    pub event: EventId,
    pub settings: WaitingRoomSettings,
    /// True once the core pushed settings (until then the defaults apply).
    pub configured: bool,
    seed: String,
    lines: Vec<Line>,
    /// True once every shard's pre-queue is final and the draw may start (the seed is revealed).
    drawn: bool,
    draw: DrawRng,
    credit: f64,
    last_tick_ms: Option<Millis>,
    /// Recent admissions `(tick time, count)`, for the rate shown to buyers.
    admissions: VecDeque<(Millis, u64)>,
    /// Recent joins `(tick time, count)`, for raising the proof of work under attack.
    joins: VecDeque<(Millis, u64)>,
    pub refusals: BTreeMap<String, u64>,
    pub stock: Option<Stock>,
    /// Sum of the waits of everyone admitted so far, and how many (for the average wait). A
    /// pre-queue place waits from the on-sale time, a later one from the second it joined.
    #[serde(default)]
    waited_ms: u64,
    #[serde(default)]
    waited: u64,
}

impl Coordinator {
    /// A new line with the default settings (or those given) and a fresh seed.
    pub fn new(event: EventId, settings: WaitingRoomSettings, configured: bool, seed: [u8; 32]) -> Self {
        let lines = vec![Line::default(); usize::from(settings.queue_shards)];
        Self {
            event,
            settings,
            configured,
            seed: hex::encode(seed),
            lines,
            drawn: false,
            draw: DrawRng::new(&seed),
            credit: 0.0,
            last_tick_ms: None,
            admissions: VecDeque::new(),
            joins: VecDeque::new(),
            refusals: BTreeMap::new(),
            stock: None,
            waited_ms: 0,
            waited: 0,
        }
    }

    pub fn lines(&self) -> &[Line] {
        &self.lines
    }

    /// True once anyone has joined any shard's line.
    pub fn anyone_joined(&self) -> bool {
        self.lines.iter().any(|l| l.pre_joined + l.post_joined > 0)
    }

    /// Takes new settings from the core.
    pub fn apply_settings(&mut self, next: WaitingRoomSettings, now: Millis) -> Result<bool, SettingsError> {
        let held = self.settings.version;
        if self.configured && next.version < held {
            return Err(SettingsError::Stale { pushed: next.version, held });
        }
        if self.configured && next.version == held {
            return if next == self.settings {
                Ok(false)
            } else {
                Err(SettingsError::VersionConflict { version: held })
            };
        }
        self.settings.check_change(&next, now, self.drawn, self.anyone_joined()).map_err(|r| match r {
            ChangeRefusal::ShardsFixed => SettingsError::ShardsFixed,
            ChangeRefusal::SaleStarted => SettingsError::SaleStarted,
        })?;
        if next.queue_shards != self.settings.queue_shards {
            self.lines = vec![Line::default(); usize::from(next.queue_shards)];
        }
        self.settings = next;
        self.configured = true;
        Ok(true)
    }

    /// Where the line stands at `now`.
    pub fn phase(&self, now: Millis) -> Phase {
        let s = &self.settings;
        if s.mode == QueueMode::Closed {
            return Phase::Closed;
        }
        if let Some(stock) = self.stock {
            if stock.capacity > 0 && stock.available == 0 && stock.held == stock.waitlist_held {
                return Phase::SoldOut;
            }
        }
        if s.pre_queue_opens_at_ms.is_some_and(|t| now < t) {
            return Phase::BeforeOpening;
        }
        if s.on_sale_at_ms.is_some_and(|t| now < t) {
            return Phase::PreQueue;
        }
        if s.paused {
            return Phase::Paused;
        }
        if self.stock.is_some_and(|st| st.available == 0 && st.held > 0) {
            return Phase::AllHeld;
        }
        Phase::Open
    }

    /// Admitted and not yet ended, counting admissions the shards have not recorded yet.
    pub fn active(&self) -> u64 {
        self.lines.iter().map(|l| l.target.saturating_sub(l.ended)).sum()
    }

    pub fn admitted_total(&self) -> u64 {
        self.lines.iter().map(|l| l.target).sum()
    }

    /// People with a place who have not been admitted.
    pub fn waiting(&self) -> u64 {
        self.lines.iter().map(|l| l.joined().saturating_sub(l.target)).sum()
    }

    /// The request to send shard `shard` at a sync.
    pub fn sync_request(&self, shard: u16, now: Millis) -> SyncRequest {
        let line = &self.lines[usize::from(shard)];
        SyncRequest {
            shard,
            event: self.event.clone(),
            settings: self.settings.clone(),
            phase: self.phase(now),
            admitted_through: line.target,
            prequeue: line.prequeue,
            seed: self.drawn.then(|| self.seed.clone()),
            known_post: line.post_joined,
            awake_until_ms: if self.needs_ticks(now) { now + 3 * TICK_MS } else { 0 },
        }
    }

    /// Takes a shard's report.
    pub fn apply_report(&mut self, shard: u16, report: &ShardReport) {
        let Some(line) = self.lines.get_mut(usize::from(shard)) else { return };
        let new_joins =
            (report.pre_joined + report.post_joined).saturating_sub(line.pre_joined + line.post_joined);
        if new_joins > 0 {
            self.joins.push_back((report.now_ms, new_joins));
        }
        line.pre_joined = line.pre_joined.max(report.pre_joined);
        if report.prequeue_final && line.prequeue.is_none() {
            line.prequeue = Some(report.pre_joined);
        }
        for &(second, last) in &report.post_buckets {
            if last <= line.post_joined {
                continue;
            }
            match line.buckets.back_mut() {
                Some((s, l)) if *s == second => *l = last,
                _ => line.buckets.push_back((second, last)),
            }
            line.post_joined = last;
        }
        line.acked = report.admitted_through;
        line.ended = line.ended.max(report.ended);
        line.synced_ms = line.synced_ms.max(report.now_ms);
    }

    /// Counts refusals reported by the edge.
    pub fn add_refusals(&mut self, counts: &BTreeMap<String, u64>) {
        for (reason, n) in counts {
            *self.refusals.entry(reason.clone()).or_default() += n;
        }
    }

    /// True while the line needs the coordinator's ticks (people waiting or shopping, or the
    /// sale about to start).
    pub fn needs_ticks(&self, now: Millis) -> bool {
        let phase = self.phase(now);
        matches!(phase, Phase::Open | Phase::Paused | Phase::AllHeld)
            && (self.waiting() > 0 || self.active() > 0)
            || (phase == Phase::Open && !self.drawn && self.anyone_joined())
    }

    /// When the coordinator should tick next (`None`: only when woken).
    pub fn next_tick(&self, now: Millis) -> Option<Millis> {
        if self.needs_ticks(now) {
            return Some(now + TICK_MS);
        }
        match self.phase(now) {
            Phase::BeforeOpening => self.settings.pre_queue_opens_at_ms,
            // During the pre-queue: keep the counts fresh (every 5 s) and wake at the on-sale time.
            Phase::PreQueue => {
                let sale = self.settings.on_sale_at_ms.unwrap_or(now);
                Some(if self.anyone_joined() { sale.min(now + 5 * TICK_MS) } else { sale })
            }
            // Seats may come back (refunds, released holds): look again now and then.
            Phase::SoldOut => Some(now + 60 * TICK_MS),
            _ => None,
        }
    }

    /// Decides this tick's admissions. Returns how many were admitted.
    pub fn tick(&mut self, now: Millis) -> u64 {
        let elapsed = self.last_tick_ms.map_or(0, |t| (now - t).max(0));
        self.last_tick_ms = Some(now);
        self.trim_windows(now);
        if self.phase(now) != Phase::Open {
            return 0;
        }
        if !self.drawn {
            // The draw starts once every shard has reported its final pre-queue.
            if self.lines.iter().all(|l| l.prequeue.is_some()) {
                self.drawn = true;
            } else {
                return 0;
            }
        }
        let rate_per_ms = f64::from(self.settings.admit_per_minute) / 60_000.0;
        let burst = (rate_per_ms * 1_000.0 * CREDIT_BURST_SECS).max(1.0);
        self.credit = (self.credit + rate_per_ms * elapsed as f64).min(burst);
        let room = u64::from(self.settings.max_active).saturating_sub(self.active());
        let budget = (self.credit.floor() as u64).min(room);
        let admitted = if self.settings.mode == QueueMode::Passthrough {
            0
        } else {
            let pre = self.admit_prequeue(budget);
            let since_sale = self.settings.on_sale_at_ms.map_or(0, |t| (now - t).max(0));
            self.count_waits(pre, since_sale as u64);
            pre + self.admit_after_sale(budget - pre, now)
        };
        self.credit -= admitted as f64;
        if admitted > 0 {
            self.admissions.push_back((now, admitted));
        }
        admitted
    }

    /// Admits up to `budget` of the shuffled pre-queue.
    fn admit_prequeue(&mut self, budget: u64) -> u64 {
        let mut admitted = 0;
        let mut remaining: u64 = self.lines.iter().map(Line::pre_remaining).sum();
        while admitted < budget && remaining > 0 {
            let mut pick = self.draw.below(remaining);
            for line in &mut self.lines {
                let r = line.pre_remaining();
                if pick < r {
                    line.target += 1;
                    break;
                }
                pick -= r;
            }
            remaining -= 1;
            admitted += 1;
        }
        admitted
    }

    /// Admits up to `budget` of those who joined after the on-sale time, oldest second first.
    fn admit_after_sale(&mut self, mut budget: u64, now: Millis) -> u64 {
        // Only seconds that every shard has reported in full.
        let horizon = self.lines.iter().map(|l| l.synced_ms.div_euclid(1_000)).min().unwrap_or(0);
        let mut admitted = 0;
        while budget > 0 {
            let eligible = |l: &Line| l.pre_remaining() == 0 && l.prequeue.is_some();
            let Some(second) = self
                .lines
                .iter()
                .filter(|l| eligible(l))
                .filter_map(|l| l.buckets.front().map(|b| b.0))
                .min()
            else {
                break;
            };
            if second >= horizon {
                break;
            }
            // Everyone of that second, per shard.
            let mut want: Vec<(usize, u64)> = Vec::new();
            for (i, line) in self.lines.iter().enumerate() {
                if let (true, Some(&(s, last)), Some(p)) =
                    (eligible(line), line.buckets.front(), line.prequeue)
                {
                    if s == second {
                        want.push((i, (p + last).saturating_sub(line.target)));
                    }
                }
            }
            let total: u64 = want.iter().map(|w| w.1).sum();
            if total <= budget {
                for &(i, n) in &want {
                    let line = &mut self.lines[i];
                    line.target += n;
                    line.buckets.pop_front();
                }
                self.count_waits(total, (now - second * 1_000).max(0) as u64);
                budget -= total;
                admitted += total;
                continue;
            }
            // Not everyone of this second fits: share the budget in proportion (largest remainder).
            let mut shares: Vec<(usize, u64, u64)> = want
                .iter()
                .map(|&(i, n)| {
                    let exact = n as u128 * budget as u128;
                    (i, (exact / total as u128) as u64, (exact % total as u128) as u64)
                })
                .collect();
            let mut left = budget - shares.iter().map(|s| s.1).sum::<u64>();
            shares.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
            for share in &mut shares {
                if left == 0 {
                    break;
                }
                share.1 += 1;
                left -= 1;
            }
            for &(i, n, _) in &shares {
                self.lines[i].target += n;
            }
            self.count_waits(budget, (now - second * 1_000).max(0) as u64);
            admitted += budget;
            break;
        }
        admitted
    }

    fn count_waits(&mut self, people: u64, each_ms: u64) {
        self.waited += people;
        self.waited_ms = self.waited_ms.saturating_add(people.saturating_mul(each_ms));
    }

    /// The average wait of everyone admitted so far, in milliseconds (0 before anyone is).
    pub fn average_wait_ms(&self) -> u64 {
        self.waited_ms.checked_div(self.waited).unwrap_or(0)
    }

    fn trim_windows(&mut self, now: Millis) {
        while self.admissions.front().is_some_and(|&(t, _)| t <= now - RATE_WINDOW_MS) {
            self.admissions.pop_front();
        }
        while self.joins.front().is_some_and(|&(t, _)| t <= now - RATE_WINDOW_MS) {
            self.joins.pop_front();
        }
    }

    /// Admissions per minute over the last minute (what the wait estimates use).
    pub fn admit_rate_per_minute(&self) -> f64 {
        self.admissions.iter().map(|a| a.1).sum::<u64>() as f64 * 60_000.0 / RATE_WINDOW_MS as f64
    }

    /// Proof-of-work difficulty for new challenges: the policy's, plus one bit per doubling of the
    /// join rate over the policy's threshold.
    pub fn difficulty(&self) -> u8 {
        let BotCheck::ProofOfWork { difficulty } = self.settings.bot.check else { return 0 };
        let joins: u64 = self.joins.iter().map(|j| j.1).sum();
        let threshold = u64::from(self.settings.bot.raise_above_joins_per_minute.max(1));
        let mut raise = 0u8;
        while raise < self.settings.bot.max_raise && joins > threshold << raise {
            raise += 1;
        }
        difficulty.saturating_add(raise).min(MAX_POW_DIFFICULTY)
    }

    /// The view the edge answers polls from.
    pub fn view(&self, now: Millis) -> RoomView {
        let seed = hex32(&self.seed).unwrap_or_default();
        RoomView {
            event: self.event.clone(),
            settings: self.settings.clone(),
            phase: self.phase(now),
            shards: self
                .lines
                .iter()
                .map(|l| ShardCursor { prequeue: l.prequeue, admitted_through: l.acked, joined: l.joined() })
                .collect(),
            seed_commitment: seed_commitment(&seed),
            seed: self.drawn.then(|| self.seed.clone()),
            difficulty: self.difficulty(),
            admitted_total: self.admitted_total(),
            active: self.active(),
            waiting: self.waiting(),
            admit_rate_per_minute: self.admit_rate_per_minute(),
            generated_at_ms: now,
        }
    }
}
