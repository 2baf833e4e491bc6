//! The waiting room's contract: an event's settings (pushed by the core), the view of the line the
//! edge caches and answers polls from, the claims of queue tickets, admission tokens and
//! proof-of-work challenges, and the pure functions both sides must agree on:
//!
//! - [`shard_of_visitor`]: which queue shard a visitor's place lives in (always the same one, so
//!   that a returning visitor finds their place and single-use checks need no coordination);
//! - [`prequeue_rank`] / [`prequeue_seq`]: the seeded shuffle of the pre-queue. Everyone who joined
//!   shard `s` before the on-sale time holds a join number `1..=count`; their place in that shard's
//!   line is a keyed pseudo-random permutation of it (a Feistel network over SHA-256, walked onto
//!   `1..=count`). The seed is committed to (its SHA-256 is published) before the sale and revealed
//!   after the shuffle, so anyone can recompute every place afterwards;
//! - [`DrawRng`]: the seeded draw that interleaves the shards' shuffled pre-queues into one line;
//! - [`pow_valid`] / [`pow_solve`]: the proof-of-work puzzle.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ids::EventId;
use crate::inventory::FieldError;

/// Most queue shards an event may have.
pub const MAX_QUEUE_SHARDS: u16 = 64;
/// The shard number a stalling ticket carries: a line that never moves, for refused bots.
pub const STALL_SHARD: u16 = u16::MAX;
/// The shard number of an admission that a waiting list's offer gave (no line issued it: it is
/// good while its token is, until the offer's end; `seq` is the entry's number).
pub const WAITLIST_SHARD: u16 = u16::MAX - 1;
/// How long a queue ticket stays valid, in seconds.
pub const QUEUE_TICKET_SECS: i64 = 24 * 3600;
/// How long a proof-of-work challenge may be solved and used, in seconds.
pub const CHALLENGE_SECS: i64 = 120;
/// Hardest proof of work a policy may ask (leading zero bits of SHA-256).
pub const MAX_POW_DIFFICULTY: u8 = 28;
/// Longest proof-of-work solution accepted (characters).
pub const MAX_POW_SOLUTION_LEN: usize = 32;

/// How the line is ordered.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueMode {
    /// First come, first served (those who came before the on-sale time first, in arrival order).
    Fifo,
    /// Everyone who arrived before the on-sale time in a uniformly random order, then first come
    /// first served.
    ShuffleThenFifo,
    /// No line: everyone is admitted at once (small events, or after the rush).
    Passthrough,
    /// Nobody may join.
    Closed,
}

/// The check a visitor must pass before joining.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BotCheck {
    Off,
    /// A SHA-256 puzzle of `difficulty` leading zero bits, raised automatically under attack.
    ProofOfWork {
        difficulty: u8,
    },
    /// Cloudflare Turnstile: the widget's site key; the secret is the edge's `TURNSTILE_SECRET`.
    Turnstile {
        site_key: String,
    },
}

/// What happens to a visitor who fails a check.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BotFailure {
    /// Refused with a `bot-check-failed` problem.
    Refuse,
    /// Given a queue ticket for a line that never moves (the bot learns nothing).
    Stall,
}

/// The anti-bot policy of an event.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BotPolicy {
    pub check: BotCheck,
    pub on_failure: BotFailure,
    /// Joins per minute above which the proof of work gets harder (one bit per doubling).
    pub raise_above_joins_per_minute: u32,
    /// The most the difficulty is raised, in bits, above the policy's own.
    pub max_raise: u8,
}

impl Default for BotPolicy {
    fn default() -> Self {
        Self {
            check: BotCheck::ProofOfWork { difficulty: 14 },
            on_failure: BotFailure::Refuse,
            raise_above_joins_per_minute: 30_000,
            max_raise: 6,
        }
    }
}

/// Request-rate limits of an event at the edge. The per-address limit is not here: it is the
/// platform's, the Workers Rate Limiting binding `IP_LIMIT` (wrangler.toml, per environment),
/// counted across every isolate and every event.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimits {
    /// Joins per visitor per minute.
    pub joins_per_visitor_per_minute: u32,
    /// Retired: read and ignored (settings stored, or sent by a core, before the binding carried
    /// it), never written. The core's admin API refuses it in an organizer's change.
    #[serde(skip_serializing)]
    pub per_ip_per_minute: Option<u32>,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self { joins_per_visitor_per_minute: 6, per_ip_per_minute: None }
    }
}

/// An event's waiting-room settings. Every field has a default that works, so an event published
/// without any is protected all the same.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WaitingRoomSettings {
    /// Set by the core; a push with a lower version than the one held is refused, the same version
    /// is accepted again (retries).
    pub version: u64,
    /// The event's name on the buyer's pages (set by the core from the event's title).
    pub display_name: String,
    /// When joining opens (Unix ms); `None`: as soon as the event is published.
    pub pre_queue_opens_at_ms: Option<i64>,
    /// When admission starts (Unix ms); `None`: at once (no pre-queue).
    pub on_sale_at_ms: Option<i64>,
    /// New buyers admitted per minute.
    pub admit_per_minute: u32,
    /// Most buyers admitted and not yet finished at once.
    pub max_active: u32,
    /// How long an admitted buyer may shop, from the moment they enter.
    pub session_seconds: u32,
    /// How long a buyer whose turn came may take to come back and enter.
    pub return_grace_seconds: u32,
    pub mode: QueueMode,
    pub bot: BotPolicy,
    /// Most tickets one buyer may buy (carried in the admission token).
    pub max_tickets_per_buyer: u32,
    /// Emergency stop: joining continues, admission does not.
    pub paused: bool,
    /// How many queue shards take the joins (fixed once anyone has joined).
    pub queue_shards: u16,
    pub rate_limits: RateLimits,
    /// The event's waiting list, for when it sells out (docs/waiting-list.md).
    pub waitlist: WaitlistSettings,
}

/// An event's waiting list: whether it keeps one, how long an offer stands for its buyer to pay,
/// and how many offers may stand at once. The most tickets one entry may ask for is
/// `max_tickets_per_buyer`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WaitlistSettings {
    pub enabled: bool,
    pub claim_seconds: u32,
    pub max_offers_out: u32,
}

impl Default for WaitlistSettings {
    fn default() -> Self {
        Self { enabled: false, claim_seconds: 15 * 60, max_offers_out: 50 }
    }
}

impl Default for WaitingRoomSettings {
    fn default() -> Self {
        Self {
            version: 0,
            display_name: String::new(),
            pre_queue_opens_at_ms: None,
            on_sale_at_ms: None,
            admit_per_minute: 600,
            max_active: 1_000,
            session_seconds: 600,
            return_grace_seconds: 300,
            mode: QueueMode::ShuffleThenFifo,
            bot: BotPolicy::default(),
            max_tickets_per_buyer: 6,
            paused: false,
            queue_shards: 4,
            rate_limits: RateLimits::default(),
            waitlist: WaitlistSettings::default(),
        }
    }
}

impl WaitingRoomSettings {
    /// These settings with an organizer's change applied as a JSON merge patch (RFC 7396, what
    /// `PUT /api/v1/events/{id}/waiting-room` takes): members of `patch` replace these, objects
    /// merge member by member, `null` removes one (its default applies). Not validated: the caller
    /// validates what it gets.
    pub fn patched(&self, patch: &serde_json::Value) -> Result<WaitingRoomSettings, serde_json::Error> {
        let mut merged = serde_json::to_value(self)?;
        crate::json::merge_patch(&mut merged, patch);
        serde_json::from_value(merged)
    }

    /// Every field that is not acceptable, by name.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut check = |ok: bool, field: &str, message: &str| {
            if !ok {
                errors.push(FieldError::new(field, message));
            }
        };
        check((1..=1_000_000).contains(&self.admit_per_minute), "admit_per_minute", "must be 1 to 1000000");
        check(self.display_name.chars().count() <= 200, "display_name", "must be at most 200 characters");
        check((1..=10_000_000).contains(&self.max_active), "max_active", "must be 1 to 10000000");
        check((60..=86_400).contains(&self.session_seconds), "session_seconds", "must be 60 to 86400");
        check(
            (10..=86_400).contains(&self.return_grace_seconds),
            "return_grace_seconds",
            "must be 10 to 86400",
        );
        check(
            (1..=1_000).contains(&self.max_tickets_per_buyer),
            "max_tickets_per_buyer",
            "must be 1 to 1000",
        );
        check((1..=MAX_QUEUE_SHARDS).contains(&self.queue_shards), "queue_shards", "must be 1 to 64");
        if let (Some(opens), Some(sale)) = (self.pre_queue_opens_at_ms, self.on_sale_at_ms) {
            check(opens <= sale, "pre_queue_opens_at_ms", "must not be after on_sale_at_ms");
        }
        for (field, at) in
            [("pre_queue_opens_at_ms", self.pre_queue_opens_at_ms), ("on_sale_at_ms", self.on_sale_at_ms)]
        {
            check(
                at.is_none_or(|t| (0..=4_102_444_800_000).contains(&t)),
                field,
                "must be Unix milliseconds",
            );
        }
        match &self.bot.check {
            BotCheck::ProofOfWork { difficulty } => check(
                (1..=MAX_POW_DIFFICULTY).contains(difficulty),
                "bot.check.difficulty",
                "must be 1 to 28",
            ),
            BotCheck::Turnstile { site_key } => check(
                !site_key.is_empty() && site_key.len() <= 128,
                "bot.check.site_key",
                "must be 1 to 128 characters",
            ),
            BotCheck::Off => {}
        }
        check(
            (60..=172_800).contains(&self.waitlist.claim_seconds),
            "waitlist.claim_seconds",
            "must be 60 to 172800 (one minute to two days)",
        );
        check(
            (1..=10_000).contains(&self.waitlist.max_offers_out),
            "waitlist.max_offers_out",
            "must be 1 to 10000",
        );
        check(self.bot.max_raise <= 12, "bot.max_raise", "must be 0 to 12");
        check(
            self.bot.raise_above_joins_per_minute >= 1,
            "bot.raise_above_joins_per_minute",
            "must be at least 1",
        );
        check(
            self.rate_limits.joins_per_visitor_per_minute >= 1,
            "rate_limits.joins_per_visitor_per_minute",
            "must be at least 1",
        );
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Whether `next` may replace these settings at `now_ms` once people use the line: the number of
    /// queue shards is fixed once anyone has joined, and the on-sale time and the queueing mode once
    /// the sale has started (`drawn`: the pre-queue was drawn) and anyone has joined; closing the
    /// line or letting everyone through is always allowed. The coordinator applies this rule to
    /// every push, and the core checks it before it answers an organizer (one rule, both sides).
    pub fn check_change(
        &self,
        next: &Self,
        now_ms: i64,
        drawn: bool,
        anyone_joined: bool,
    ) -> Result<(), ChangeRefusal> {
        if next.queue_shards != self.queue_shards && anyone_joined {
            return Err(ChangeRefusal::ShardsFixed);
        }
        let started = drawn || self.on_sale_at_ms.is_none_or(|t| t <= now_ms);
        if started
            && anyone_joined
            && (next.on_sale_at_ms != self.on_sale_at_ms || next.mode != self.mode)
            && !matches!(next.mode, QueueMode::Closed | QueueMode::Passthrough)
        {
            return Err(ChangeRefusal::SaleStarted);
        }
        Ok(())
    }

    /// True when those who join at `now_ms` are in the pre-queue (shuffled at the on-sale time).
    pub fn is_prequeue(&self, now_ms: i64) -> bool {
        self.mode == QueueMode::ShuffleThenFifo && self.on_sale_at_ms.is_some_and(|sale| now_ms < sale)
    }
}

/// Why a change of waiting-room settings is refused ([`WaitingRoomSettings::check_change`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeRefusal {
    /// The number of queue shards cannot change once people have joined.
    ShardsFixed,
    /// The on-sale time and the queueing mode cannot change once the sale has started.
    SaleStarted,
}

impl ChangeRefusal {
    /// The stable reason slug (`reason` in problem+json, the same at the edge and in the core).
    pub fn reason(self) -> &'static str {
        match self {
            Self::ShardsFixed => "shards_fixed",
            Self::SaleStarted => "sale_started",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Self::ShardsFixed => "the number of queue shards cannot change once people have joined",
            Self::SaleStarted => {
                "the on-sale time and the queueing mode cannot change once the sale has started"
            }
        }
    }
}

/// Where the line of an event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Joining has not opened yet.
    BeforeOpening,
    /// Joining is open; admission starts at the on-sale time.
    PreQueue,
    /// Admitting.
    Open,
    /// Emergency pause: people may join, nobody is admitted.
    Paused,
    /// Every seat is held right now; admission waits for seats to come back.
    AllHeld,
    /// Sold out: the line is closed and everyone waiting is told.
    SoldOut,
    /// Closed by the organizer.
    Closed,
}

impl Phase {
    /// True when new people may join.
    pub fn accepts_joins(self) -> bool {
        matches!(self, Self::PreQueue | Self::Open | Self::Paused | Self::AllHeld)
    }
}

/// One shard's line, as the edge needs it to answer a poll.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardCursor {
    /// How many joined this shard before the on-sale time (shuffled); `None` until known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prequeue: Option<u64>,
    /// Everyone of this shard with a place up to here has been admitted.
    pub admitted_through: u64,
    /// Highest join number the coordinator knows of in this shard.
    pub joined: u64,
}

/// The line of one event as the coordinator publishes it; the edge caches it for about a second
/// and answers every poll from it and the poller's ticket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomView {
    pub event: EventId,
    pub settings: WaitingRoomSettings,
    pub phase: Phase,
    pub shards: Vec<ShardCursor>,
    /// SHA-256 of the shuffle seed, hex, published from the start.
    pub seed_commitment: String,
    /// The shuffle seed, hex, revealed once the pre-queue has been shuffled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<String>,
    /// Proof-of-work difficulty for challenges issued now (the policy's plus any raise).
    pub difficulty: u8,
    pub admitted_total: u64,
    pub active: u64,
    pub waiting: u64,
    /// Admissions per minute lately (what the wait estimate uses).
    pub admit_rate_per_minute: f64,
    pub generated_at_ms: i64,
}

impl RoomView {
    /// The revealed seed, decoded.
    pub fn seed_bytes(&self) -> Option<[u8; 32]> {
        self.seed.as_deref().and_then(hex32)
    }
}

/// The place a queue ticket carries (beyond the common claims; `sub` is the visitor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuePlace {
    /// The queue shard (or [`STALL_SHARD`]).
    pub shard: u16,
    /// The join number within the shard, from 1.
    pub seq: u64,
    /// Joined before the on-sale time (place drawn by the shuffle).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pre: bool,
}

/// What an admission token grants beyond the common claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmissionGrant {
    pub shard: u16,
    pub seq: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pre: bool,
    pub max_tickets: u32,
}

/// What a proof-of-work challenge asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeGrant {
    pub difficulty: u8,
}

/// A poller's standing, computed at the edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueStatus {
    pub state: StatusState,
    /// Place in the whole line, 1 = next (an estimate when the line is sharded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_wait_seconds: Option<u64>,
    /// 0 to 1: how much of the line ahead of this place has gone in.
    pub progress: f64,
    /// When to ask again.
    pub poll_after_seconds: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_sale_at_ms: Option<i64>,
}

/// What a poller should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusState {
    /// Before the on-sale time; the place will be drawn then (shuffle) or is kept (first come).
    PreQueue,
    Waiting,
    Paused,
    /// Their turn has come: exchange the ticket for an admission token.
    Admitted,
    SoldOut,
    Closed,
}

/// The standing of `place` in `view` at `now_ms`.
pub fn status_of(view: &RoomView, place: &QueuePlace, now_ms: i64) -> QueueStatus {
    let on_sale = view.settings.on_sale_at_ms;
    let mut status = QueueStatus {
        state: StatusState::Waiting,
        position: None,
        estimated_wait_seconds: None,
        progress: 0.0,
        poll_after_seconds: 20,
        on_sale_at_ms: on_sale,
    };
    match view.phase {
        Phase::SoldOut => {
            status.state = StatusState::SoldOut;
            status.poll_after_seconds = 300;
            return status;
        }
        Phase::Closed => {
            status.state = StatusState::Closed;
            status.poll_after_seconds = 300;
            return status;
        }
        _ => {}
    }
    if view.settings.mode == QueueMode::Passthrough && place.shard != STALL_SHARD {
        status.state = StatusState::Admitted;
        status.progress = 1.0;
        status.poll_after_seconds = 1;
        return status;
    }
    let until_sale = on_sale.map(|s| (s - now_ms).max(0)).unwrap_or(0);
    let cursor = view.shards.get(place.shard as usize);
    let rank = cursor.and_then(|c| rank_of(view, place, c));
    let (Some(cursor), Some(rank)) = (cursor, rank) else {
        // Before the shuffle (or a stalled ticket): the place is not known yet.
        status.state = if until_sale > 0 { StatusState::PreQueue } else { StatusState::Waiting };
        status.poll_after_seconds = poll_before(until_sale);
        return status;
    };
    if rank <= cursor.admitted_through {
        status.state = StatusState::Admitted;
        status.progress = 1.0;
        status.position = Some(0);
        status.estimated_wait_seconds = Some(0);
        status.poll_after_seconds = 1;
        return status;
    }
    // Ahead in this shard, scaled by this shard's share of everyone waiting.
    let ahead_here = rank - cursor.admitted_through - 1;
    let waiting_here = cursor.joined.saturating_sub(cursor.admitted_through).max(1);
    let waiting_all: u64 = view.shards.iter().map(|c| c.joined.saturating_sub(c.admitted_through)).sum();
    let ahead =
        (ahead_here as f64 * waiting_all.max(waiting_here) as f64 / waiting_here as f64).round() as u64;
    let rate = if view.admit_rate_per_minute > 0.5 {
        view.admit_rate_per_minute
    } else {
        f64::from(view.settings.admit_per_minute)
    };
    let wait = ((ahead + 1) as f64 * 60.0 / rate).ceil() as u64 + until_sale as u64 / 1000;
    status.position = Some(ahead + 1);
    status.estimated_wait_seconds = Some(wait);
    status.progress = (cursor.admitted_through as f64 / rank as f64).clamp(0.0, 1.0);
    status.state = match view.phase {
        Phase::Paused | Phase::AllHeld => StatusState::Paused,
        _ if until_sale > 0 => StatusState::PreQueue,
        _ => StatusState::Waiting,
    };
    status.poll_after_seconds = match wait {
        _ if until_sale > 0 => poll_before(until_sale),
        0..=10 => 2,
        11..=120 => 5,
        _ => 20,
    };
    status
}

/// How long to wait before polling again when the sale starts in `until_sale_ms`.
fn poll_before(until_sale_ms: i64) -> u32 {
    if until_sale_ms <= 0 {
        20
    } else {
        (until_sale_ms / 1000 + 1).clamp(1, 30) as u32
    }
}

/// The place in its shard's line of the holder of `place`, once it is known.
pub fn rank_of(view: &RoomView, place: &QueuePlace, cursor: &ShardCursor) -> Option<u64> {
    if place.shard == STALL_SHARD {
        return None;
    }
    if !place.pre {
        return Some(place.seq);
    }
    let count = cursor.prequeue?;
    let seed = view.seed_bytes()?;
    (place.seq <= count).then(|| prequeue_rank(&seed, place.shard, place.seq, count))
}

/// The queue shard of a visitor's place.
pub fn shard_of_visitor(visitor: &str, shards: u16) -> u16 {
    let digest = Sha256::digest(visitor.as_bytes());
    let n = u64::from_be_bytes(digest[..8].try_into().unwrap_or_default());
    (n % u64::from(shards.max(1))) as u16
}

/// The place (1-based) in shard `shard`'s line of the pre-queue joiner with join number `seq`
/// (1-based, at most `count`): a keyed permutation of `1..=count`.
pub fn prequeue_rank(seed: &[u8; 32], shard: u16, seq: u64, count: u64) -> u64 {
    let feistel = Feistel::new(seed, shard, count);
    let mut x = seq - 1;
    loop {
        x = feistel.encrypt(x);
        if x < count {
            return x + 1;
        }
    }
}

/// The inverse of [`prequeue_rank`]: the join number holding place `rank`.
pub fn prequeue_seq(seed: &[u8; 32], shard: u16, rank: u64, count: u64) -> u64 {
    let feistel = Feistel::new(seed, shard, count);
    let mut x = rank - 1;
    loop {
        x = feistel.decrypt(x);
        if x < count {
            return x + 1;
        }
    }
}

/// A balanced Feistel network on `2 * half_bits` bits, with a SHA-256 round function keyed by the
/// seed and the shard. Cycle-walking it (repeat until the value falls below `count`) gives a
/// permutation of `0..count`; the domain is at most four times `count`, so few steps are needed.
struct Feistel<'a> {
    seed: &'a [u8; 32],
    shard: u16,
    half_bits: u32,
}

const FEISTEL_ROUNDS: u8 = 6;

impl<'a> Feistel<'a> {
    fn new(seed: &'a [u8; 32], shard: u16, count: u64) -> Self {
        let bits = 64 - count.max(4).saturating_sub(1).leading_zeros();
        Self { seed, shard, half_bits: bits.div_ceil(2) }
    }

    fn mask(&self) -> u64 {
        (1u64 << self.half_bits) - 1
    }

    fn round(&self, round: u8, x: u64) -> u64 {
        let mut h = Sha256::new();
        h.update(b"ticketing/prequeue/v1");
        h.update(self.seed);
        h.update(self.shard.to_be_bytes());
        h.update([round]);
        h.update(x.to_be_bytes());
        let d = h.finalize();
        u64::from_be_bytes(d[..8].try_into().unwrap_or_default()) & self.mask()
    }

    fn encrypt(&self, x: u64) -> u64 {
        let (mut left, mut right) = (x >> self.half_bits, x & self.mask());
        for r in 0..FEISTEL_ROUNDS {
            (left, right) = (right, left ^ self.round(r, right));
        }
        (left << self.half_bits) | right
    }

    fn decrypt(&self, x: u64) -> u64 {
        let (mut left, mut right) = (x >> self.half_bits, x & self.mask());
        for r in (0..FEISTEL_ROUNDS).rev() {
            (left, right) = (right ^ self.round(r, left), left);
        }
        (left << self.half_bits) | right
    }
}

/// A deterministic random stream (SHA-256 in counter mode) for the pre-queue interleave, so that
/// the whole draw can be replayed from the revealed seed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrawRng {
    seed: String,
    counter: u64,
}

impl DrawRng {
    pub fn new(seed: &[u8; 32]) -> Self {
        Self { seed: hex::encode(seed), counter: 0 }
    }

    fn next_u64(&mut self) -> u64 {
        let mut h = Sha256::new();
        h.update(b"ticketing/interleave/v1");
        h.update(self.seed.as_bytes());
        h.update(self.counter.to_be_bytes());
        self.counter += 1;
        u64::from_be_bytes(h.finalize()[..8].try_into().unwrap_or_default())
    }

    /// A uniform number in `0..n` (`n > 0`), without modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }
}

/// The SHA-256 of a seed, hex: the commitment published before the draw.
pub fn seed_commitment(seed: &[u8; 32]) -> String {
    hex::encode(Sha256::digest(seed))
}

/// 32 bytes from 64 hex digits.
pub fn hex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// Leading zero bits of SHA-256(`challenge` `.` `solution`).
fn pow_bits(challenge: &str, solution: &str) -> u32 {
    let digest =
        Sha256::new().chain_update(challenge.as_bytes()).chain_update(b".").chain_update(solution).finalize();
    let mut bits = 0;
    for byte in digest {
        if byte == 0 {
            bits += 8;
        } else {
            bits += byte.leading_zeros();
            break;
        }
    }
    bits
}

/// True when `solution` solves `challenge` at `difficulty`.
pub fn pow_valid(challenge: &str, solution: &str, difficulty: u8) -> bool {
    !solution.is_empty()
        && solution.len() <= MAX_POW_SOLUTION_LEN
        && solution.bytes().all(|b| b.is_ascii_alphanumeric())
        && pow_bits(challenge, solution) >= u32::from(difficulty)
}

/// Finds a solution (what the buyer's page does in JavaScript; used by tests and the load generator).
pub fn pow_solve(challenge: &str, difficulty: u8) -> String {
    (0u64..)
        .map(|n| n.to_string())
        .find(|s| pow_bits(challenge, s) >= u32::from(difficulty))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prequeue_shuffle_is_a_permutation_and_inverts() {
        let seed = [7u8; 32];
        for count in [1u64, 2, 3, 4, 5, 17, 100, 1000, 4097] {
            let mut seen = vec![false; count as usize];
            for seq in 1..=count {
                let rank = prequeue_rank(&seed, 3, seq, count);
                assert!((1..=count).contains(&rank));
                assert!(!seen[(rank - 1) as usize], "rank {rank} twice for count {count}");
                seen[(rank - 1) as usize] = true;
                assert_eq!(prequeue_seq(&seed, 3, rank, count), seq);
            }
        }
    }

    #[test]
    fn an_organizers_change_is_merged_into_the_settings() {
        let current =
            WaitingRoomSettings { admit_per_minute: 100, queue_shards: 4, ..WaitingRoomSettings::default() };
        assert_eq!(current.patched(&serde_json::json!({})).unwrap(), current);
        let next =
            current.patched(&serde_json::json!({ "admit_per_minute": 500, "queue_shards": null })).unwrap();
        assert_eq!(next.admit_per_minute, 500);
        assert_eq!(next.queue_shards, WaitingRoomSettings::default().queue_shards, "null: the default again");
        assert!(current.patched(&serde_json::json!({ "no_such_setting": 1 })).is_err());
        assert!(current.patched(&serde_json::json!({ "admit_per_minute": "many" })).is_err());
    }

    #[test]
    fn the_shuffle_depends_on_seed_and_shard() {
        let order =
            |seed: [u8; 32], shard| (1..=50).map(|s| prequeue_rank(&seed, shard, s, 50)).collect::<Vec<_>>();
        assert_ne!(order([1; 32], 0), order([2; 32], 0));
        assert_ne!(order([1; 32], 0), order([1; 32], 1));
        assert_eq!(order([1; 32], 0), order([1; 32], 0));
    }

    /// Uniformity: over many seeds, where join number 1..=n lands is uniform over the n places
    /// (a chi-square test per join number, at the 0.1% level).
    #[test]
    fn the_shuffle_is_uniform() {
        let n = 8u64;
        let trials = 8_000u64;
        let mut counts = vec![vec![0u64; n as usize]; n as usize];
        for t in 0..trials {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&t.to_be_bytes());
            for seq in 1..=n {
                counts[(seq - 1) as usize][(prequeue_rank(&seed, 0, seq, n) - 1) as usize] += 1;
            }
        }
        let expected = trials as f64 / n as f64;
        // 7 degrees of freedom: the 99.9% quantile of chi-square is 24.32.
        for row in &counts {
            let chi2: f64 = row.iter().map(|&c| (c as f64 - expected).powi(2) / expected).sum();
            assert!(chi2 < 24.32, "chi-square {chi2} for {row:?}");
        }
    }

    #[test]
    fn visitors_spread_over_shards_and_always_land_in_the_same_one() {
        let mut per_shard = [0u32; 8];
        for i in 0..8_000 {
            let v = format!("v{i}");
            let s = shard_of_visitor(&v, 8);
            assert_eq!(s, shard_of_visitor(&v, 8));
            per_shard[s as usize] += 1;
        }
        assert!(per_shard.iter().all(|&n| (850..=1150).contains(&n)), "{per_shard:?}");
    }

    #[test]
    fn proof_of_work_checks() {
        let solution = pow_solve("challenge-token", 10);
        assert!(pow_valid("challenge-token", &solution, 10));
        assert!(!pow_valid("challenge-token", "", 0));
        assert!(!pow_valid("challenge-token", "not valid!", 0));
        assert!(!pow_valid("challenge-token", &"1".repeat(33), 0));
    }

    #[test]
    fn settings_defaults_validate_and_bad_fields_are_named() {
        assert!(WaitingRoomSettings::default().validate().is_ok());
        let bad = WaitingRoomSettings {
            admit_per_minute: 0,
            queue_shards: 65,
            on_sale_at_ms: Some(1_000),
            pre_queue_opens_at_ms: Some(2_000),
            bot: BotPolicy { check: BotCheck::ProofOfWork { difficulty: 40 }, ..BotPolicy::default() },
            ..WaitingRoomSettings::default()
        };
        let fields: Vec<_> = bad.validate().unwrap_err().into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            ["admit_per_minute", "queue_shards", "pre_queue_opens_at_ms", "bot.check.difficulty"]
        );
        let json = serde_json::json!({"admit_per_minute": 100, "bot": {"check": {"kind": "off"}}});
        let s: WaitingRoomSettings = serde_json::from_value(json).unwrap();
        assert_eq!(s.bot.check, BotCheck::Off);
        assert_eq!(s.max_active, 1_000);
        assert!(serde_json::from_value::<WaitingRoomSettings>(serde_json::json!({"nope": 1})).is_err());
    }

    #[test]
    fn draws_are_uniform_and_replayable() {
        let mut a = DrawRng::new(&[9; 32]);
        let mut b = DrawRng::new(&[9; 32]);
        let mut hist = [0u32; 5];
        for _ in 0..5_000 {
            let x = a.below(5);
            assert_eq!(x, b.below(5));
            hist[x as usize] += 1;
        }
        assert!(hist.iter().all(|&n| (880..=1120).contains(&n)), "{hist:?}");
    }

    #[test]
    fn hex_round_trips() {
        let seed = [0xab; 32];
        assert_eq!(hex32(&hex::encode(seed)), Some(seed));
        assert_eq!(hex32("zz"), None);
    }

    #[test]
    fn a_started_sale_with_people_in_line_keeps_its_time_mode_and_shards() {
        let now = 1_800_000_000_000;
        let current = WaitingRoomSettings { on_sale_at_ms: Some(now - 1), ..WaitingRoomSettings::default() };
        let later = WaitingRoomSettings { on_sale_at_ms: Some(now + 60_000), ..current.clone() };
        let fifo = WaitingRoomSettings { mode: QueueMode::Fifo, ..current.clone() };
        let shards = WaitingRoomSettings { queue_shards: 8, ..current.clone() };
        let fewer_tickets = WaitingRoomSettings { max_tickets_per_buyer: 2, ..current.clone() };
        let closed = WaitingRoomSettings { mode: QueueMode::Closed, ..current.clone() };
        assert_eq!(current.check_change(&later, now, false, true), Err(ChangeRefusal::SaleStarted));
        assert_eq!(current.check_change(&fifo, now, false, true), Err(ChangeRefusal::SaleStarted));
        assert_eq!(current.check_change(&shards, now, false, true), Err(ChangeRefusal::ShardsFixed));
        assert_eq!(current.check_change(&fewer_tickets, now, false, true), Ok(()));
        assert_eq!(current.check_change(&closed, now, false, true), Ok(()), "closing is always allowed");
        // Nobody in line yet, or the sale not started: anything goes.
        assert_eq!(current.check_change(&later, now, false, false), Ok(()));
        let not_started = WaitingRoomSettings { on_sale_at_ms: Some(now + 1), ..current.clone() };
        assert_eq!(not_started.check_change(&fifo, now, false, true), Ok(()));
        assert_eq!(
            not_started.check_change(&fifo, now, true, true),
            Err(ChangeRefusal::SaleStarted),
            "drawn"
        );
        assert_eq!(ChangeRefusal::SaleStarted.reason(), "sale_started");
    }
}
