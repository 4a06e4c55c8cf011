//! One application, three practices, one budget: the `tenants` example's engine.
//!
//! Under paused time, with the simulator's router as the transport (no socket: two simulated
//! hours run in seconds), one [`DrChronoApp`] serves three practices that each authorised
//! the application:
//!
//! - practice **A** queues 1,000 background requests (`GET /api/patients/{i}`) at the top of
//!   an hour: a backfill;
//! - practices **B** and **C** each send one interactive request (`GET /api/users/current`)
//!   every 30 s for that hour: people clicking.
//!
//! With fair shares (the default), B and C are served as if A were not there, and A gets
//! everything they leave: its last request goes when the optimum for all 1,240 requests
//! does. With [`FairShares::off`] (first-come first-served), A's backlog spends the hour in
//! its first ten minutes and B and C wait for the next one.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use drchrono_sim::{SimConfig, Simulator, TokenResponse};
use drchrono_tower::DrChronoApp;
use drchrono_tower::oauth::TokenSet;
use drchrono_tower::ratelimit::{FairShares, Priority, RateLimitConfig, RateLimiter, RuleKind};
use http::Request;
use http_body_util::Full;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::Error;

/// 2026-01-05T11:00:00Z, the top of an hour.
pub const START_UNIX_SECS: u64 = 1_767_610_800;
/// Practice A's backlog.
pub const BACKFILL: usize = 1_000;
/// How often B and C send.
pub const INTERACTIVE_EVERY: Duration = Duration::from_secs(30);
/// For how long B and C send.
pub const INTERACTIVE_FOR: Duration = Duration::from_secs(3_600);

/// The API base the client is given; the router ignores the host.
const BASE_URL: &str = "https://drchrono.sim";

/// What the scenario measured: the last line of `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Per practice.
    pub tenants: BTreeMap<String, TenantOutcome>,
    /// What the simulator counted.
    pub server: Server,
    /// From the top of the hour to the last response.
    pub makespan_s: f64,
}

/// One practice's requests.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TenantOutcome {
    /// Requests sent.
    pub requests: usize,
    /// Requests answered with a success.
    pub succeeded: usize,
    /// Median wait, from asking to the answer (the transport answers at once: the wait is
    /// the limiter's).
    pub p50_wait_s: f64,
    /// 99th percentile wait.
    pub p99_wait_s: f64,
    /// Longest wait.
    pub max_wait_s: f64,
    /// When its last answer came, after the top of the hour. Not printed.
    #[serde(skip)]
    pub last_answer_s: f64,
}

/// What the simulator counted.
#[derive(Debug, Clone, Serialize)]
pub struct Server {
    /// Requests refused with 429 (per rule, added up).
    pub throttled: u64,
    /// Most requests accepted in any rolling second.
    pub peak_second: u64,
    /// Most in any rolling 10 minutes.
    pub peak_window: u64,
    /// Most in any clock hour.
    pub peak_hour: u64,
}

/// The top of the hour the scenario starts at.
pub fn start() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(START_UNIX_SECS)
}

/// Runs the scenario on a runtime of its own with paused time.
///
/// # Errors
/// A request that could not be sent or the runtime that could not be built.
pub fn run(fair: bool) -> Result<Outcome, Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()?;
    runtime.block_on(scenario(fair))
}

/// DrChrono's rules, without the background reserve: the practices' protected shares keep
/// room for their interactive work, so background work may use the whole budget (with the
/// default 10 % reserve, the backfill would leave 50 permits of every hour unused).
///
/// # Errors
/// None with these values; the builder's error otherwise.
pub fn config() -> Result<RateLimitConfig, drchrono_tower::ratelimit::ConfigError> {
    RateLimitConfig::builder()
        .background_reserve_percent(0)
        .build()
}

/// The token pair a practice got when it authorised the application, as the client keeps it.
fn tokens(granted: TokenResponse) -> TokenSet {
    // The OAuth layer measures lifetimes on the system clock.
    let now = SystemTime::now();
    TokenSet::new(
        granted.access_token,
        granted.refresh_token,
        now + Duration::from_secs(granted.expires_in),
    )
    .with_issued_at(now)
    .with_scope(granted.scope)
}

async fn scenario(fair: bool) -> Result<Outcome, Error> {
    let sim = Simulator::new(SimConfig::default().start_at(start()));
    let shares = if fair {
        FairShares::new()
    } else {
        FairShares::off()
    };
    let limiter = RateLimiter::builder(config()?)
        .start_at(start())
        .fair_shares(shares)
        .build();
    let credentials = sim.credentials();
    let app = DrChronoApp::builder()
        .credentials(credentials.client_id, credentials.client_secret)
        .base_url(BASE_URL)
        .token_url(format!("{BASE_URL}/o/token/"))
        .rate_limiter(limiter)
        .build_with_transport(sim.router())?;
    let origin = Instant::now();
    let mut requests = JoinSet::new();
    for practice in ["A", "B", "C"] {
        let client = app
            .user(practice)
            .tokens(tokens(sim.authorize_user(practice, None)))
            .build()?;
        if practice == "A" {
            for i in 1..=BACKFILL {
                let client = client.clone();
                requests.spawn(async move {
                    let mut request = Request::get(format!("/api/patients/{i}"))
                        .body(Full::new(Bytes::new()))
                        .expect("a valid request");
                    request.extensions_mut().insert(Priority::Background);
                    let asked = Instant::now();
                    let answer = client.send(request).await;
                    ("A", asked, Instant::now(), answer.is_ok())
                });
            }
        } else {
            let sends = INTERACTIVE_FOR.as_secs() / INTERACTIVE_EVERY.as_secs();
            for k in 0..sends {
                let client = client.clone();
                let at = origin + INTERACTIVE_EVERY * u32::try_from(k).unwrap_or(u32::MAX);
                requests.spawn(async move {
                    tokio::time::sleep_until(at).await;
                    let asked = Instant::now();
                    let answer = client.get("/api/users/current").await;
                    (practice, asked, Instant::now(), answer.is_ok())
                });
            }
        }
    }
    let mut waits: BTreeMap<String, (TenantOutcome, Vec<Duration>)> = BTreeMap::new();
    let mut last = origin;
    while let Some(done) = requests.join_next().await {
        let (practice, asked, answered, ok) = done?;
        let (outcome, practice_waits) = waits.entry(practice.to_owned()).or_default();
        outcome.requests += 1;
        outcome.succeeded += usize::from(ok);
        outcome.last_answer_s = outcome.last_answer_s.max((answered - origin).as_secs_f64());
        practice_waits.push(answered - asked);
        last = last.max(answered);
    }
    let tenants = waits
        .into_iter()
        .map(|(practice, (mut outcome, mut practice_waits))| {
            practice_waits.sort();
            outcome.p50_wait_s = percentile(&practice_waits, 50);
            outcome.p99_wait_s = percentile(&practice_waits, 99);
            outcome.max_wait_s = practice_waits.last().map_or(0.0, Duration::as_secs_f64);
            (practice, outcome)
        })
        .collect();
    let stats = sim.stats();
    Ok(Outcome {
        tenants,
        server: Server {
            throttled: stats.throttled.total(),
            peak_second: stats.peak_second,
            peak_window: stats.peak_window,
            peak_hour: stats.peak_hour,
        },
        makespan_s: (last - origin).as_secs_f64(),
    })
}

/// The `p`-th percentile of `sorted` (nearest rank), in seconds.
fn percentile(sorted: &[Duration], p: usize) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (sorted.len() * p).div_ceil(100).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64()
}

/// The earliest instant (seconds after the start) at which the `n`-th of `n` requests all
/// queued at the start can go under `config`'s rules on DrChrono's default limits: each
/// released greedily at the earliest instant that breaks no rule, counted from a plain log
/// of the releases (at most `max` in any `(t - span - margin, t]` for a rolling rule, `max`
/// per period `[k * period + margin, (k + 1) * period + margin)` for the hourly rule).
/// Greedy release is optimal for these rules, so no schedule of `n` requests ends sooner.
pub fn optimum_makespan_s(n: usize, config: &RateLimitConfig) -> f64 {
    let margin = config.safety_margin().as_millis() as u64;
    let start_ms = START_UNIX_SECS * 1_000;
    let rules = config.rules();
    let mut releases: Vec<u64> = Vec::with_capacity(n);
    let mut in_period: BTreeMap<(usize, u64), u32> = BTreeMap::new();
    for _ in 0..n {
        let mut t = releases.last().copied().unwrap_or(0);
        loop {
            let mut earliest = t;
            for (r, rule) in rules.iter().enumerate() {
                let max = rule.max() as usize;
                let span = rule.period().as_millis() as u64;
                if rule.kind() == RuleKind::Aligned {
                    let k = (start_ms + earliest - margin) / span;
                    if in_period.get(&(r, k)).copied().unwrap_or(0) >= rule.max() {
                        earliest = (k + 1) * span + margin - start_ms;
                    }
                } else if releases.len() >= max {
                    earliest = earliest.max(releases[releases.len() - max] + span + margin);
                }
            }
            if earliest == t {
                break;
            }
            t = earliest;
        }
        for (r, rule) in rules.iter().enumerate() {
            if rule.kind() == RuleKind::Aligned {
                let span = rule.period().as_millis() as u64;
                *in_period
                    .entry((r, (start_ms + t - margin) / span))
                    .or_default() += 1;
            }
        }
        releases.push(t);
    }
    releases.last().map_or(0.0, |&t| t as f64 / 1_000.0)
}
