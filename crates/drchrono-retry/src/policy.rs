//! [`RetryPolicy`]: the `tower::retry::Policy` that follows DrChrono's retry guidance.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use drchrono_core::{LayerError, PermitWait, ResendCount, parse};
use http::{Method, Request, Response};
use rand::rngs::StdRng;
use tokio::time::Instant;
use tower::retry::budget::Budget;
use tower::retry::{Policy, RetryLayer};

use crate::stats::Counters;
use crate::trigger::Trigger;
use crate::{
    Backoff, Idempotent, Replay, ReplayBody, RetryBudget, RetryFuture, RetryOverride, RetryStats,
};

/// The settings a policy was built with, shared by its clones.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) max_retries: u32,
    pub(crate) backoff: Backoff,
    pub(crate) retry_non_idempotent: bool,
    pub(crate) retry_unclassified: bool,
    pub(crate) max_throttled_retries: u32,
    pub(crate) max_throttle_wait: Duration,
    pub(crate) default_throttle_wait: Duration,
    pub(crate) deadline: Option<Duration>,
    pub(crate) replay_unauthorized: bool,
    pub(crate) wall_clock: fn() -> SystemTime,
}

/// A [`tower::retry::Policy`] for DrChrono API calls: 5xx retried 3 times after 25-30 s,
/// doubling, with jitter; 429s waited out until the instant the server named; a curable 401
/// replayed once; non-idempotent requests left alone; a retry budget and a deadline against
/// retry storms. See the [crate documentation](crate) for the rules and defaults.
///
/// Clones share the configuration, the jitter RNG, the budget and the [`RetryStats`] (one
/// `Arc`); the per-request state (attempts, the 401 replay, the first attempt's instant)
/// lives in the clone that tower's `Retry` makes for each request.
#[derive(Clone)]
pub struct RetryPolicy {
    pub(crate) shared: Arc<Shared>,
    pub(crate) state: RequestState,
}

/// What every clone of a policy shares.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) budget: PolicyBudget,
    pub(crate) rng: Mutex<StdRng>,
    pub(crate) counters: Counters,
}

/// The retry budget: the crate's own, kept inline so that a deposit shares the instant the
/// policy already read, or any other [`Budget`].
pub(crate) enum PolicyBudget {
    Own(RetryBudget),
    Other(Arc<dyn Budget + Send + Sync>),
}

impl PolicyBudget {
    /// A request's deposit; the request is counted too (by the crate's own budget, under
    /// the lock its deposit takes anyway; otherwise in `requests`).
    #[inline]
    fn deposit(&self, now: Instant, requests: &AtomicU64) {
        match self {
            Self::Own(budget) => budget.deposit_at(now),
            Self::Other(budget) => {
                budget.deposit();
                Counters::bump(requests);
            }
        }
    }

    /// Requests counted by [`deposit`](Self::deposit).
    fn requests(&self, requests: &AtomicU64) -> u64 {
        match self {
            Self::Own(budget) => budget.deposited(),
            Self::Other(_) => requests.load(Ordering::Relaxed),
        }
    }

    fn withdraw(&self) -> bool {
        match self {
            Self::Own(budget) => budget.withdraw(),
            Self::Other(budget) => budget.withdraw(),
        }
    }
}

/// What one request has used so far.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RequestState {
    started: Option<Instant>,
    /// The attempts' waits for the rate limiter's permit so far: left out of the deadline.
    permit_waits: Duration,
    retries: u32,
    throttled: u32,
    replayed: bool,
}

impl RequestState {
    fn is_first_attempt(&self) -> bool {
        self.retries == 0 && self.throttled == 0 && !self.replayed
    }

    fn attempts(&self) -> u32 {
        1u32.saturating_add(self.retries)
            .saturating_add(self.throttled)
            .saturating_add(u32::from(self.replayed))
    }
}

/// The settings for one request: the policy's, with its [`RetryOverride`] applied.
#[derive(Debug, Clone, Copy)]
struct Settings {
    max_retries: u32,
    retry_non_idempotent: bool,
    max_throttled_retries: u32,
    max_throttle_wait: Duration,
    deadline: Option<Duration>,
    replay_unauthorized: bool,
}

impl Settings {
    fn resolve(config: &Config, extensions: &http::Extensions) -> Self {
        let o = extensions
            .get::<RetryOverride>()
            .copied()
            .unwrap_or_default();
        let marked = extensions.get::<Idempotent>().is_some();
        Self {
            max_retries: o.max_retries.unwrap_or(config.max_retries),
            retry_non_idempotent: marked
                || o.retry_non_idempotent
                    .unwrap_or(config.retry_non_idempotent),
            max_throttled_retries: o
                .max_throttled_retries
                .unwrap_or(config.max_throttled_retries),
            max_throttle_wait: o.max_throttle_wait.unwrap_or(config.max_throttle_wait),
            deadline: o.deadline.unwrap_or(config.deadline),
            replay_unauthorized: o.replay_unauthorized.unwrap_or(config.replay_unauthorized),
        }
    }
}

/// Why a retryable failure is returned to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GiveUp {
    NotIdempotent,
    OutOfRetries,
    WaitTooLong,
    Deadline,
    Budget,
    ReplayUsed,
}

impl fmt::Display for GiveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotIdempotent => "method is not idempotent",
            Self::OutOfRetries => "out of retries",
            Self::WaitTooLong => "server's wait exceeds the maximum",
            Self::Deadline => "next attempt would pass the deadline",
            Self::Budget => "retry budget exhausted",
            Self::ReplayUsed => "401 replay already used or disabled",
        })
    }
}

impl RetryPolicy {
    /// Default retries after 5xx and transport errors: 3.
    pub const DEFAULT_MAX_RETRIES: u32 = 3;
    /// Default retries after 429s: 5.
    pub const DEFAULT_MAX_THROTTLED_RETRIES: u32 = 5;
    /// Default longest 429 wait: 15 minutes.
    pub const DEFAULT_MAX_THROTTLE_WAIT: Duration = Duration::from_secs(15 * 60);
    /// Default wait after a 429 without a hint: 60 s.
    pub const DEFAULT_THROTTLE_WAIT: Duration = Duration::from_secs(60);
    /// Default deadline per request: 30 minutes.
    pub const DEFAULT_DEADLINE: Option<Duration> = Some(Duration::from_secs(30 * 60));

    /// A [`RetryLayer`] applying this policy.
    pub fn layer(self) -> RetryLayer<Self> {
        RetryLayer::new(self)
    }

    /// The 5xx delay schedule.
    pub fn backoff(&self) -> &Backoff {
        &self.shared.config.backoff
    }

    /// What this policy and its clones have done so far.
    pub fn stats(&self) -> RetryStats {
        let mut stats = self.shared.counters.snapshot();
        stats.requests = self.shared.budget.requests(&self.shared.counters.requests);
        stats
    }

    /// [`Policy::clone_request`] for a request of a retry loop of your own, whose state is
    /// `retries` ([`RequestRetries::default`] before its first attempt): what tower's `Retry`
    /// calls on a clone of the policy made for the request, without the clone.
    ///
    /// `now` is tokio's clock, read as the attempt starts: the first attempt's starts the
    /// request's deadline ([`RetryPolicyBuilder::deadline`](crate::RetryPolicyBuilder::deadline))
    /// and dates its deposit in the budget. (tower's `Retry` reads the clock itself.) A loop
    /// that passes the same reading to the stack it calls
    /// ([`CallAt`](drchrono_core::CallAt)) reads the clock once per attempt.
    ///
    /// ```
    /// use drchrono_retry::{RequestRetries, RetryPolicy};
    /// use http_body_util::Full;
    /// use tokio::time::Instant;
    ///
    /// let policy = RetryPolicy::default();
    /// let request = http::Request::get("https://app.drchrono.com/api/patients")
    ///     .body(Full::new(bytes::Bytes::new()))
    ///     .unwrap();
    /// let mut retries = RequestRetries::default();
    /// let replay = policy.clone_request_for(&mut retries, &request, Instant::now());
    /// assert!(replay.is_some());
    /// assert_eq!(policy.stats().requests, 1);
    /// ```
    #[inline]
    pub fn clone_request_for<B: ReplayBody>(
        &self,
        retries: &mut RequestRetries,
        request: &Request<B>,
        now: Instant,
    ) -> Option<Replay<B>> {
        self.shared.start(&mut retries.0, Some(now));
        let body = request.body().try_clone()?;
        Some(Replay::of(request, body))
    }

    /// [`Policy::retry`] for a request of a retry loop of your own, whose state is
    /// `retries` (see [`clone_request_for`](Self::clone_request_for)).
    #[inline]
    pub fn retry_for<B, Res, E: LayerError>(
        &self,
        retries: &mut RequestRetries,
        replay: &mut Replay<B>,
        result: &mut Result<Response<Res>, E>,
    ) -> Option<RetryFuture> {
        self.shared.retry(&mut retries.0, replay, result)
    }
}

/// One request's retries under a [`RetryPolicy`] (its attempts so far, whether its 401
/// replay was used, its first attempt's instant), for a retry loop of your own: kept per
/// request beside a shared policy, instead of the clone of the policy that tower's `Retry`
/// makes for each request (see [`RetryPolicy::clone_request_for`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestRetries(RequestState);

impl Shared {
    fn decide(
        &self,
        state: &mut RequestState,
        trigger: Trigger,
        method: &Method,
        settings: &Settings,
        now: Instant,
    ) -> Result<Instant, GiveUp> {
        let started = *state.started.get_or_insert(now);
        // `from_budget`: whether the retry draws from the budget. 5xx and transport retries
        // do; a 429 wait and the 401 replay do not (crate docs: "Why are 429s outside the
        // budget?").
        let (until, from_budget) = match trigger {
            Trigger::Unauthorized => {
                if state.replayed || !settings.replay_unauthorized {
                    return Err(GiveUp::ReplayUsed);
                }
                // Immediate and outside the budget (the 401 was refused before any work),
                // but not past the deadline: an attempt that answered after it ends there.
                (now, false)
            }
            Trigger::Throttled {
                available_at,
                retry_after,
            } => {
                if state.throttled >= settings.max_throttled_retries {
                    return Err(GiveUp::OutOfRetries);
                }
                // A wait at the parser's bound was longer still (`Retry-After: 99999999999`,
                // an HTTP-date in year 9999): no configured maximum makes it worth holding the
                // request for; it fails now, typed, with the wait and the instant.
                if retry_after.is_some_and(|wait| wait >= parse::MAX_RETRY_AFTER) {
                    return Err(GiveUp::WaitTooLong);
                }
                let until = match (available_at, retry_after) {
                    (Some(at), _) => Some(at.max(now)),
                    (None, Some(wait)) => now.checked_add(wait),
                    (None, None) => now.checked_add(self.config.default_throttle_wait),
                };
                // The server named the instant it serves again, and the limiter holds every
                // caller until then: bounded by the 429 count, the longest wait and the
                // deadline, not by the budget.
                match until {
                    Some(until) if until - now <= settings.max_throttle_wait => (until, false),
                    _ => return Err(GiveUp::WaitTooLong),
                }
            }
            Trigger::Server(_) | Trigger::Transport { .. } | Trigger::Unclassified => {
                let provably_unsent = matches!(trigger, Trigger::Transport { not_sent: true });
                if !provably_unsent && !is_idempotent(method) && !settings.retry_non_idempotent {
                    return Err(GiveUp::NotIdempotent);
                }
                if state.retries >= settings.max_retries {
                    return Err(GiveUp::OutOfRetries);
                }
                let delay = {
                    let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
                    self.config
                        .backoff
                        .delay(state.retries.saturating_add(1), &mut *rng)
                };
                (now.checked_add(delay).ok_or(GiveUp::Deadline)?, true)
            }
        };
        // Time spent queued for the rate limiter's permit is the budget's, not a sign that the
        // request is stuck: the deadline is moved by it.
        if let Some(limit) = settings
            .deadline
            .and_then(|d| started.checked_add(d.saturating_add(state.permit_waits)))
            && until > limit
        {
            return Err(GiveUp::Deadline);
        }
        if from_budget && !self.budget.withdraw() {
            Counters::bump(&self.counters.budget_exhausted);
            return Err(GiveUp::Budget);
        }
        Ok(until)
    }

    fn record(&self, state: &mut RequestState, trigger: Trigger) {
        let c = &self.counters;
        match trigger {
            Trigger::Unauthorized => {
                state.replayed = true;
                Counters::bump(&c.unauthorized_replays);
            }
            Trigger::Throttled { .. } => {
                state.throttled = state.throttled.saturating_add(1);
                Counters::bump(&c.throttled_retries);
            }
            Trigger::Server(_) => {
                state.retries = state.retries.saturating_add(1);
                Counters::bump(&c.server_error_retries);
            }
            Trigger::Transport { .. } | Trigger::Unclassified => {
                state.retries = state.retries.saturating_add(1);
                Counters::bump(&c.transport_retries);
            }
        }
    }
}

/// What the policy reads of the copy that goes next, and marks on it: a `Request` (tower's
/// `Retry`) or a [`Replay`] (a loop of one's own).
pub(crate) trait Next {
    fn method(&self) -> &Method;
    fn extensions(&self) -> &http::Extensions;
    fn extensions_mut(&mut self) -> &mut http::Extensions;
    /// Readies [`path`](Self::path): a failed attempt's events name it.
    fn prepare(&mut self) {}
    fn path(&self) -> &str;
}

impl<B> Next for Request<B> {
    fn method(&self) -> &Method {
        self.method()
    }

    fn extensions(&self) -> &http::Extensions {
        self.extensions()
    }

    fn extensions_mut(&mut self) -> &mut http::Extensions {
        self.extensions_mut()
    }

    fn path(&self) -> &str {
        self.uri().path()
    }
}

impl Shared {
    fn retry<N: Next, Res, E: LayerError>(
        &self,
        state: &mut RequestState,
        req: &mut N,
        result: &mut Result<Response<Res>, E>,
    ) -> Option<RetryFuture> {
        // The wall clock is read only to date a raw 429's `Retry-After`.
        let config = &self.config;
        let trigger = Trigger::of(result, config.wall_clock)?;
        if trigger == Trigger::Unclassified && !config.retry_unclassified {
            return None;
        }
        let settings = Settings::resolve(config, req.extensions());
        if let Some(wait) = permit_wait(result) {
            state.permit_waits = state.permit_waits.saturating_add(wait);
        }
        let now = Instant::now();
        req.prepare();
        let (method, path) = (req.method(), req.path());
        match self.decide(state, trigger, method, &settings, now) {
            Ok(until) => {
                self.record(state, trigger);
                tracing::info!(
                    method = %method,
                    path,
                    attempt = state.attempts(),
                    reason = %trigger,
                    delay_ms = u64::try_from((until - now).as_millis()).unwrap_or(u64::MAX),
                    "retrying DrChrono request"
                );
                // The copy `req` is what goes next: it says how often it went before.
                let resends = state.attempts().saturating_sub(1);
                req.extensions_mut().insert(ResendCount(resends));
                Some(if until <= now {
                    RetryFuture::now()
                } else {
                    RetryFuture::until(until)
                })
            }
            Err(why) => {
                Counters::bump(&self.counters.gave_up);
                let attempts = state.attempts();
                if why == GiveUp::NotIdempotent {
                    tracing::debug!(method = %method, path, attempts, reason = %trigger, why = %why,
                        "not retrying DrChrono request");
                } else if matches!(trigger, Trigger::Server(_)) {
                    // DrChrono asks to hear about 5xx errors that persist (with a support
                    // report); a throttle, a transport failure or a 401 is not theirs.
                    tracing::warn!(method = %method, path, attempts, reason = %trigger, why = %why,
                        "giving up on DrChrono request; report persistent 5xx to DrChrono");
                } else {
                    tracing::warn!(method = %method, path, attempts, reason = %trigger, why = %why,
                        "giving up on DrChrono request");
                }
                None
            }
        }
    }

    /// The first attempt's start, before its copy: its instant starts the deadline and
    /// dates its deposit in the budget.
    #[inline]
    fn start(&self, state: &mut RequestState, now: Option<Instant>) {
        if state.is_first_attempt() {
            // tower's `Retry` calls this on its own policy before cloning it for the request:
            // the instant is copied into the request's clone. One clock read serves the
            // deadline and the budget.
            let now = now.unwrap_or_else(Instant::now);
            state.started = Some(now);
            self.budget.deposit(now, &self.counters.requests);
        }
    }

    #[inline]
    fn clone_request<B: ReplayBody>(
        &self,
        state: &mut RequestState,
        req: &Request<B>,
    ) -> Option<Request<B>> {
        self.start(state, None);
        let body = req.body().try_clone()?;
        let mut clone = Request::new(body);
        *clone.method_mut() = req.method().clone();
        *clone.uri_mut() = req.uri().clone();
        *clone.version_mut() = req.version();
        *clone.headers_mut() = req.headers().clone();
        *clone.extensions_mut() = req.extensions().clone();
        Some(clone)
    }
}

impl<B, Res, E> Policy<Request<B>, Response<Res>, E> for RetryPolicy
where
    B: ReplayBody,
    E: LayerError,
{
    type Future = RetryFuture;

    fn retry(
        &mut self,
        req: &mut Request<B>,
        result: &mut Result<Response<Res>, E>,
    ) -> Option<RetryFuture> {
        self.shared.retry(&mut self.state, req, result)
    }

    fn clone_request(&mut self, req: &Request<B>) -> Option<Request<B>> {
        self.shared.clone_request(&mut self.state, req)
    }
}

/// How long the attempt behind `result` waited for the rate limiter's permit, as the layer
/// below recorded it ([`PermitWait`]).
fn permit_wait<Res, E: LayerError>(result: &Result<Response<Res>, E>) -> Option<Duration> {
    match result {
        Ok(response) => PermitWait::of_response(response),
        Err(error) => error.as_drchrono().and_then(PermitWait::of_error),
    }
}

/// RFC 9110's idempotent methods: GET, HEAD, OPTIONS, TRACE, PUT, DELETE.
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("config", &self.shared.config)
            .field("state", &self.state)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use drchrono_classify::ErrorClassifyLayer;
    use http_body_util::Full;
    use tower::{ServiceBuilder, ServiceExt};

    use super::*;

    /// Sends a GET through `policy` (over the classifier when `classify`) to a server that
    /// always answers 429 with `retry_after`; returns the outcome (its status, or the error's
    /// wait and instant), the attempts and the time it took.
    async fn always_throttled(
        policy: RetryPolicy,
        retry_after: &'static str,
        classify: bool,
    ) -> (
        Result<u16, (Option<Duration>, Option<Instant>)>,
        usize,
        Duration,
    ) {
        let attempts = Arc::new(AtomicUsize::new(0));
        let counter = attempts.clone();
        let server = tower::service_fn(move |_request: Request<Full<Bytes>>| {
            counter.fetch_add(1, Ordering::SeqCst);
            let response = Response::builder()
                .status(429)
                .header(http::header::RETRY_AFTER, retry_after)
                .body(Full::new(Bytes::new()))
                .unwrap();
            std::future::ready(Ok::<_, Infallible>(response))
        });
        let request = || {
            Request::get("https://app.drchrono.com/api/patients")
                .body(Full::new(Bytes::new()))
                .unwrap()
        };
        let start = Instant::now();
        // Ten simulated years: a policy that waited for the server's hint would time out.
        let bound = Duration::from_secs(10 * 365 * 24 * 3600);
        let outcome = if classify {
            let stack = ServiceBuilder::new()
                .layer(policy.layer())
                .layer(ErrorClassifyLayer::new())
                .service(server);
            tokio::time::timeout(bound, stack.oneshot(request()))
                .await
                .expect("the policy waited for the server's hint")
                .map(|response| response.status().as_u16())
                .map_err(|error| {
                    assert!(
                        matches!(error, drchrono_core::DrChronoError::Throttled { .. }),
                        "{error:?}"
                    );
                    (error.retry_after(), error.available_at())
                })
        } else {
            let stack = ServiceBuilder::new().layer(policy.layer()).service(server);
            let response = tokio::time::timeout(bound, stack.oneshot(request()))
                .await
                .expect("the policy waited for the server's hint")
                .unwrap();
            Ok(response.status().as_u16())
        };
        (outcome, attempts.load(Ordering::SeqCst), start.elapsed())
    }

    /// `Retry-After: 99999999999` (or a date in year 9999) fails the request at once, typed,
    /// with the (saturated) wait and its instant; even a policy told to wait out any 429.
    #[tokio::test(start_paused = true)]
    async fn a_huge_retry_after_fails_at_once_typed() {
        let patient = RetryPolicy::builder()
            .max_throttle_wait(Duration::MAX)
            .deadline(None)
            .build()
            .unwrap();
        for policy in [RetryPolicy::new(), patient] {
            for value in ["99999999999", "Fri, 31 Dec 9999 23:59:59 GMT"] {
                let start = Instant::now();
                let (outcome, attempts, took) = always_throttled(policy.clone(), value, true).await;
                let (wait, at) = outcome.expect_err("a typed error");
                assert_eq!(wait, Some(parse::MAX_RETRY_AFTER), "{value}");
                assert_eq!(at, Some(start + parse::MAX_RETRY_AFTER), "{value}");
                assert_eq!((attempts, took), (1, Duration::ZERO), "{value}");
            }
            // Without the classifier the policy returns the 429 as it came, at once.
            let (outcome, attempts, took) =
                always_throttled(policy.clone(), "99999999999", false).await;
            assert_eq!((outcome, attempts, took), (Ok(429), 1, Duration::ZERO));
        }
    }
}
