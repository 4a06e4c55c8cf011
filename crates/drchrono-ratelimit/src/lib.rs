//! An exact, shared rate limiter for DrChrono's three throttling rules, as a tower layer.
//!
//! DrChrono throttles an application on three rules at once: 10 calls in any second, more
//! than 290 in any rolling 10 minutes, and more than 500 per clock hour (reset at the top of
//! the hour, raisable on request). [`DrChronoRateLimitLayer`] releases every request at the
//! earliest instant that breaks none of them (never later, never earlier), shares one budget
//! among every clone and thread, and pauses every caller when the server answers 429 anyway.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::{Duration, SystemTime};
//!
//! use drchrono_ratelimit::{DrChronoRateLimitLayer, RateLimitConfig, RateLimiter};
//! use http::{Request, Response};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // 2026-01-05T10:37:00Z, on tokio's clock (paused here, so this runs instantly).
//! let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_609_420);
//! let config = RateLimitConfig::builder()
//!     .max_per_hour(500)                 // DrChrono's default; raise it if they raised yours
//!     .safety_margin(Duration::ZERO)     // default 100 ms
//!     .build()?;
//! let limiter = RateLimiter::builder(config).start_at(start).build();
//! let client = ServiceBuilder::new()
//!     .layer(DrChronoRateLimitLayer::new(limiter.clone()))
//!     .service_fn(|_request: Request<()>| async { Ok::<_, Infallible>(Response::new(())) });
//!
//! // 20 requests at once: 9 go now, 9 a second later, 2 a second after that.
//! let calls = (0..20).map(|_| client.clone().oneshot(Request::new(())));
//! futures::future::try_join_all(calls).await?;
//! assert_eq!(limiter.clock().now(), start + Duration::from_secs(2));
//! let status = limiter.status().await?;
//! assert_eq!(status.rules[1].remaining, 270); // of 290 per rolling 10 minutes
//! assert_eq!(status.rules[2].remaining, 480); // of 500 this clock hour
//! # Ok(())
//! # }
//! ```
//!
//! # The rules and what they mean exactly
//!
//! A [`Rule`] is either [`Rule::sliding`]`(M, W)` or [`Rule::aligned`]`(M, P)`:
//!
//! * **sliding** (Django REST Framework's `SimpleRateThrottle`, which DrChrono runs): a
//!   request at `t` is admitted iff fewer than `M` charged instants lie in `(t - W, t]`.
//!   The earliest instant a refused request may go is therefore the oldest entry that still
//!   matters (the `M`-th most recent) plus `W`: at that instant it has left the window.
//! * **aligned**: a request at `t` is admitted iff fewer than `M` were charged in
//!   `[floor(t / P) * P, next boundary)`, periods counted from the Unix epoch (so 3600 s is
//!   the UTC hour) on the wall clock. When the period is full, the earliest instant is the
//!   next boundary.
//!
//! DrChrono's defaults ([`RateLimitConfig::default`]) are sliding(9, 1 s), sliding(290,
//! 600 s) and aligned(500, 3600 s), the hourly maximum configurable. A safety margin
//! ([`DEFAULT_SAFETY_MARGIN`], 100 ms, configurable down to zero) is added to each sliding
//! window, and around each aligned boundary: a request released within the margin of a
//! boundary may fall in either period on DrChrono's clock, so it is counted in both, and a
//! full period keeps refusing until `boundary + margin`. This absorbs network jitter and clock
//! skew between us and DrChrono in both directions; with a zero margin the rules are the
//! exact ones.
//!
//! # Why the release instants are exact
//!
//! For each rule, `earliest_r(t)`, the first instant `>= t` that rule admits, depends only
//! on the charged instants (all `<= now <= t`): it is `max(t, oldest + W)` for a sliding
//! rule and `t` or the next boundary for an aligned one. Each is monotone (`t <= t'` implies
//! `earliest_r(t) <= earliest_r(t')`), idempotent, and admits nothing in
//! `[t, earliest_r(t))`. So the set of instants every rule admits, from `now` on, begins at
//! the least fixed point of `t -> earliest_n(... earliest_1(t))`. Iterating from `now`
//! reaches it after at most one pass per rule plus a confirming pass (a rule, once
//! satisfied, stays satisfied as `t` grows, because later instants only see fewer entries in
//! the window or a fresh period): no instant before it is admissible (some rule refuses
//! each), and it is admissible (every rule returns it unchanged). The decision
//! is made with integer nanoseconds: no floating point, no approximation of the sliding
//! window (we keep the log of the last `M` instants, which is all the rule depends on), and
//! every rule is checked and charged under one lock.
//!
//! A property test checks this against an independent brute-force oracle (scanning every
//! candidate instant and counting), for random rule sets and arrival sequences.
//!
//! ## Two clocks: when the system clock steps
//!
//! Each decision reads two clocks at once (a [`Now`]). Sliding windows, pauses and waits
//! are measured on the monotonic clock (tokio's), which no step of the system clock moves.
//! Aligned rules place a request in the period of the wall clock ([`Clock::now`]; with
//! [`TokioClock::new`], the system clock as it is now), read afresh at every decision, so
//! an NTP step or a resume after suspend is seen at the next one. Within a decision the
//! offset between the two clocks is fixed: the argument above holds on the monotonic time
//! line, each aligned boundary mapped onto it at that offset, and every instant returned is
//! mapped back to the wall clock. When the two clocks agree, that is the one-clock decision.
//!
//! A wall clock that steps ahead into a new period opens it at once. One that steps back
//! into an earlier period is conservative: a request then counts against what that period
//! held plus everything charged since, and a period the limiter no longer knows (it keeps
//! the latest periods and the ones before the latest move) counts as full, so nothing goes
//! until the wall clock is back in one it knows, which takes at most the step's length. No
//! period sees more than its maximum on a server whose clock steps with ours, nor, after a
//! step back, on one whose clock ours was ahead of. A sleep towards an aligned boundary
//! ends early or late when the wall clock steps meanwhile: the waiter then reads both
//! clocks again and decides anew, so an early wake-up costs a second decision and a late
//! one breaks no rule. A property test checks every rule across random steps both ways.
//!
//! ## Timer resolution
//!
//! Tokio's timer has a 1 ms resolution. A waiter sleeps until the earliest instant rounded
//! up to a whole millisecond since the Unix epoch, and [`TokioClock`] anchors the wall clock
//! on a whole millisecond (and follows the system clock's steps to the millisecond), so
//! that when the inputs are on the millisecond grid (whole-ms windows, margin and arrival
//! times, as under paused time) the release instants are exact to the nanosecond;
//! otherwise a release is at most 1 ms late, never early.
//!
//! # Sharing, fairness, cancellation
//!
//! A [`RateLimiter`] is one application's budget; every clone and thread shares it
//! ([`RateLimiter::shared`] also shares it by application key across independently built
//! stacks). Waiters are served first-come first-served by a fair `tokio::sync::Mutex`
//! "turn" held by the head waiter while it sleeps; the state itself sits in the
//! [`Backend`]: [`LocalLimiter`] in memory, behind a `std::sync::Mutex`;
//! [`FileRateLimitBackend`] in a file, shared by the processes of one host and kept across
//! restarts; with the `redis` feature, `RedisRateLimitBackend` in Redis, shared by every
//! process of every host. A dropped waiter charges nothing and passes the turn on (on the
//! file backend, a decision in flight finishes and takes back its charge; on the Redis
//! backend, one dropped while its script is in flight may leave that decision's charge: a
//! permit spent by no request, never one over a rule). Every
//! released attempt is charged and never refunded: DrChrono counts a throttled request in
//! the rules that allowed it.
//!
//! A request that finds nobody waiting is decided when the service is called, if the
//! backend can decide synchronously ([`Backend::try_acquire_now`]; [`LocalLimiter`] can):
//! admitted, it is charged and sent at once, and its response future holds only the inner
//! one, with no allocation. Otherwise it queues as above, inside a `rate_limit.wait`
//! `tracing` span that names the rule that held it (see [`DrChronoRateLimit`]).
//!
//! # One host, restarts: the file backend
//!
//! An in-memory budget dies with its process: a process restarted within the hour (a
//! deploy, a crash loop, a cron job) would start from a full budget that DrChrono does not
//! give it, and a second process would spend the budget again. [`FileRateLimitBackend`]
//! keeps it in a small file instead, so a new process resumes from what earlier ones
//! charged and the processes of one host share one budget:
//!
//! ```no_run
//! # fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use drchrono_ratelimit::{
//!     DrChronoRateLimitLayer, FileRateLimitBackend, RateLimitConfig, RateLimiter,
//! };
//!
//! let config = RateLimitConfig::builder().application("my-drchrono-app").build()?;
//! let backend = FileRateLimitBackend::open("/var/lib/my-app/drchrono-ratelimit.json", &config)?;
//! let limiter = RateLimiter::builder(config).backend(backend).build();
//! let layer = DrChronoRateLimitLayer::new(limiter.clone());
//! // Or, with the facade (drchrono-tower): `DrChronoClient::builder().rate_limiter(limiter)`.
//! # Ok(())
//! # }
//! ```
//!
//! - Each decision locks `<path>.lock`, reads the state, decides with the same exact core,
//!   and writes the state back, compacted to the last window and hour, atomically (a
//!   temporary file with mode `0600`, renamed over the state), `fsync`ed by default so that
//!   it survives a power loss too; without `fsync` it still survives every exit and crash
//!   of a process. Decisions use the host's wall clock, which every process shares.
//! - A file that cannot be used (unreadable, corrupt, another format version, another
//!   application's) fails closed with a [`BackendError`] whose source is a
//!   [`FileStateError`]: nothing is sent, and it is never taken for an empty budget.
//! - Several hosts need Redis: a lock on a network filesystem is not to be relied on.
//!
//! # Several processes and hosts: the `redis` feature
//!
//! DrChrono's limits are per application. Two workers, or a web tier and a sync job, each
//! with its own in-memory limiter, spend the budget twice. With the `redis` feature,
//! `RedisRateLimitBackend::connect(url, &config)` keeps the budget in Redis:
//!
//! ```no_run
//! # #[cfg(feature = "redis")]
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use drchrono_ratelimit::{
//!     DrChronoRateLimitLayer, RateLimitConfig, RateLimiter, RedisRateLimitBackend,
//! };
//!
//! let config = RateLimitConfig::builder().application("my-drchrono-app").build()?;
//! let backend = RedisRateLimitBackend::connect("redis://127.0.0.1:6379/", &config).await?;
//! let layer = DrChronoRateLimitLayer::new(RateLimiter::builder(config).backend(backend).build());
//! # Ok(())
//! # }
//! ```
//!
//! - The same exact rules are checked and charged atomically by one Lua script per decision
//!   (one round trip), on Redis's own `TIME`, so every host shares one clock; the script
//!   answers with a wait, which each process adds to its own clock to sleep. (A backend is
//!   given the wall clock only; [`LocalLimiter`] alone is given both readings.)
//! - Keys are per application (`drchrono:ratelimit:{app}:…`) and expire once their windows
//!   have passed. A server 429's cool-down is stored there too: one process's 429 pauses all.
//! - Every process must use the same configuration (rules, margin, application key).
//! - **Redis unreachable**: fail closed. No request is sent without a permit: the layer
//!   returns [`DrChronoError::Transport`](drchrono_core::DrChronoError::Transport) with
//!   `not_sent: true` and a [`BackendError`] source (when the inner error type is
//!   `DrChronoError` or `BoxError`; any other error type waits for Redis instead).
//!   Optionally (`RedisBackendBuilder::fallback_percent`) each process decides locally on a
//!   share of the budget until Redis answers again, then charges Redis for what it sent.
//! - **Redis restarted without persistence**: the windows are gone and the budget starts
//!   full again, while DrChrono still counts the last 10 minutes and the current hour; the
//!   429s that may follow pause every process. Run Redis with `appendonly yes`.
//!
//! # Server 429s, priority, pacing
//!
//! [`DrChronoRateLimit`] inspects each outcome. A 429 (a typed
//! [`drchrono_core::DrChronoError::Throttled`], boxed or not, or a raw response with
//! `Retry-After`) pauses every caller of the application until the advertised instant, and
//! when that reaches the next top of the hour the hour is marked spent (so it reopens at
//! the boundary plus the margin). A [`Priority`] request extension marks background work,
//! which cannot take the last share of an aligned budget (10 % by default) and yields to
//! interactive work. Optional smooth pacing
//! ([`RateLimitConfigBuilder::smooth_pacing`]) spreads what remains of each aligned
//! period's budget evenly over the rest of the period. [`RateLimiter::status`] reports the
//! remaining budget per rule, the next reset and the earliest next release.

mod algorithm;
mod backend;
mod clock;
mod config;
mod credits;
mod error;
mod failure;
mod fair;
mod file_backend;
mod future;
mod layer;
mod local;
mod observe;
mod priority;
mod rate_limiter;
#[cfg(feature = "redis")]
mod redis;
mod rule;
mod service;
mod status;
mod tenant;
mod time;

pub use backend::{Backend, BackendFuture};
pub use clock::{Clock, Now, TokioClock};
pub use config::{
    DEFAULT_APPLICATION, DEFAULT_BACKGROUND_RESERVE_PERCENT, DEFAULT_SAFETY_MARGIN,
    RateLimitConfig, RateLimitConfigBuilder,
};
pub use error::{BackendError, ConfigError, NotUntil};
pub use fair::TenantStatus;
pub use file_backend::{FileRateLimitBackend, FileStateError};
pub use future::ResponseFuture;
pub use layer::DrChronoRateLimitLayer;
pub use local::LocalLimiter;
pub use priority::Priority;
pub use rate_limiter::{RateLimiter, RateLimiterBuilder};
#[cfg(feature = "redis")]
pub use redis::{
    DEFAULT_FAILOVER_HOLD, DEFAULT_REDIS_KEY_PREFIX, DEFAULT_REDIS_RETRY_INTERVAL,
    DEFAULT_REDIS_TIMEOUT, RedisBackendBuilder, RedisClock, RedisConnect, RedisConnection,
    RedisRateLimitBackend,
};
pub use rule::{MAX_PERIOD, Rule, RuleKind};
pub use service::DrChronoRateLimit;
pub use status::{RuleStatus, Status};
pub use tenant::{FairShares, Tenant};
