//! [`RateLimiter`]: one application's shared budget, with waiting in first-come
//! first-served order.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::clock::{StepCache, far_future};
use crate::fair::{FairQueue, Held};
use crate::time::{Reading, ceil_ms_time, from_nanos, to_nanos};
use crate::{
    Backend, BackendError, Clock, FairShares, LocalLimiter, NotUntil, Now, Priority,
    RateLimitConfig, RuleKind, Status, Tenant, TenantStatus, TokioClock,
};

/// One application's budget: a [`Backend`] holding the state, a [`Clock`], and the queue of
/// waiters. Cheap to clone; every clone (and every thread) shares the one budget.
///
/// [`RateLimiter::acquire`] waits for a permit: waiters are served first-come first-served
/// through a fair `tokio::sync::Mutex` "turn". The head waiter holds the turn while it
/// sleeps until its earliest instant, then decides and charges atomically in the backend
/// (whose state sits behind a `std::sync::Mutex`). A waiter dropped at any point charges
/// nothing and passes the turn on. [`Priority::Background`] waiters queue on a second
/// turn and take the shared one only to decide, never to sleep, so interactive work
/// overtakes them. [`DrChronoRateLimit`](crate::DrChronoRateLimit) decides a request that
/// finds nobody waiting ahead of it at once, without queueing, when the backend can decide
/// synchronously ([`Backend::try_acquire_now`]): nobody is overtaken.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use drchrono_ratelimit::{Priority, RateLimitConfig, RateLimiter};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_609_420);
/// let config = RateLimitConfig::builder().safety_margin(Duration::ZERO).build()?;
/// let limiter = RateLimiter::builder(config).start_at(start).build();
/// for _ in 0..9 {
///     assert_eq!(limiter.acquire(Priority::Interactive).await?, start);
/// }
/// // The tenth waits until the first leaves the rolling second.
/// assert_eq!(limiter.acquire(Priority::Interactive).await?, start + Duration::from_secs(1));
/// assert_eq!(limiter.status().await?.rules[2].remaining, 490);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    /// Where [`LimiterId::upgrade`] finds this limiter.
    id: LimiterId,
    config: RateLimitConfig,
    store: Store,
    clocks: Clocks,
    /// The waiters: one turn, given in fair order among tenants, interactive first and
    /// first-come first-served within each.
    queue: FairQueue,
}

/// Where the budget is kept.
enum Store {
    /// In this process (the default): decided synchronously, on both clocks' readings
    /// ([`Now`]), in integer nanoseconds. In its own allocation: the lock and the cached
    /// refusals stay off the cache lines of the limiter's reference count, which every
    /// request's clone writes (inline, they shared them: -24 % in `limiter_throughput`).
    Memory(Arc<LocalLimiter>),
    /// A [`Backend`] chosen with [`RateLimiterBuilder::backend`] (Redis, a file, your own),
    /// on the wall clock's reading.
    Backend(Arc<dyn Backend>),
}

/// The clocks a limiter decides on.
enum Clocks {
    /// A [`TokioClock`] (the default, or [`RateLimiterBuilder::start_at`]): it reads both,
    /// the system clock's steps at most once a millisecond.
    Tokio(TokioClock, StepCache),
    /// A [`Clock`] chosen with [`RateLimiterBuilder::clock`] for the wall clock, beside
    /// tokio's monotonic clock (anchored at that clock's time when built).
    Custom {
        wall: Arc<dyn Clock>,
        monotonic: TokioClock,
    },
}

impl Clocks {
    fn tokio(clock: TokioClock) -> Self {
        Self::Tokio(clock, StepCache::default())
    }

    /// The tokio instant at which the wall clock reads `wall` at `reading`'s offset between
    /// the two clocks: where the monotonic line reaches `reading.mono_at(wall)`.
    fn instant_at(&self, reading: Reading, wall: SystemTime) -> Instant {
        let monotonic = match self {
            Self::Tokio(clock, _) => clock,
            Self::Custom { monotonic, .. } => monotonic,
        };
        let target = reading.mono_at(to_nanos(wall));
        let now = Instant::now();
        let wait = target.saturating_sub(monotonic.monotonic_nanos_at(now));
        now.checked_add(Duration::from_nanos(wait))
            .unwrap_or_else(far_future)
    }

    fn wall(&self) -> &dyn Clock {
        match self {
            Self::Tokio(clock, _) => clock,
            Self::Custom { wall, .. } => &**wall,
        }
    }
}

impl Inner {
    /// Both clocks now.
    #[inline]
    fn reading(&self) -> Reading {
        match &self.clocks {
            Clocks::Tokio(clock, steps) => clock.reading_cached(steps),
            Clocks::Custom { wall, monotonic } => Reading {
                mono: monotonic.monotonic_nanos(),
                wall: to_nanos(wall.now()),
            },
        }
    }

    /// Both clocks, tokio's being at `now` (a reading the caller has just taken): a custom
    /// wall clock is read.
    #[inline]
    fn reading_at(&self, now: Instant) -> Reading {
        match &self.clocks {
            Clocks::Tokio(clock, steps) => clock.reading_cached_at(steps, now),
            Clocks::Custom { wall, monotonic } => Reading {
                mono: monotonic.monotonic_nanos_at(now),
                wall: to_nanos(wall.now()),
            },
        }
    }

    fn now(&self) -> Now {
        Now::from_reading(self.reading())
    }
}

type Registry = Mutex<HashMap<String, Weak<Inner>>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

/// The limiters alive in this process, by [`LimiterId`].
fn live() -> &'static Mutex<HashMap<u64, Weak<Inner>>> {
    static LIVE: OnceLock<Mutex<HashMap<u64, Weak<Inner>>>> = OnceLock::new();
    LIVE.get_or_init(Mutex::default)
}

/// A limiter's identity: finds the limiter again while it lives, without holding a
/// reference to it.
///
/// A request admitted at once holds its limiter's id, not a clone of the limiter, for the
/// rare 429 it must report: a clone writes the limiter's reference count, one cache line
/// every request on every core would then write twice more (-20 % in
/// `limiter_throughput`, where the rest of an admission writes two lines). A 429 finds the
/// limiter under a process-wide lock, taken otherwise only when a limiter is built or
/// dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct LimiterId(u64);

impl LimiterId {
    /// The limiter, if it is still alive (some handle of it is).
    pub(crate) fn upgrade(self) -> Option<RateLimiter> {
        let live = live().lock().unwrap_or_else(PoisonError::into_inner);
        let inner = live.get(&self.0)?.upgrade()?;
        Some(RateLimiter { inner })
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        live()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id.0);
    }
}

impl RateLimiter {
    /// A fresh budget for `config`, kept in memory ([`LocalLimiter`]), on the
    /// [`TokioClock`]. Only its clones share it; see [`RateLimiter::shared`].
    pub fn new(config: RateLimitConfig) -> Self {
        Self::builder(config).build()
    }

    /// The process-wide budget of `config`'s [application key](RateLimitConfig::application):
    /// every call with the same key, while one of its limiters is alive, returns the same
    /// budget (the first caller's configuration wins).
    ///
    /// Keep one alive (in your service, or a static) for as long as requests may be in
    /// flight: a request admitted at once does not hold its limiter, so once every handle is
    /// dropped a 429 it meets pauses nobody (it is logged), and the next call builds a fresh
    /// budget that knows nothing of what was charged.
    pub fn shared(config: RateLimitConfig) -> Self {
        let mut map = registry().lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, weak| weak.strong_count() > 0);
        if let Some(inner) = map.get(config.application()).and_then(Weak::upgrade) {
            return Self { inner };
        }
        let key = config.application().to_owned();
        let limiter = Self::new(config);
        map.insert(key, Arc::downgrade(&limiter.inner));
        limiter
    }

    /// A builder to choose the [`Clock`] or the [`Backend`].
    pub fn builder(config: RateLimitConfig) -> RateLimiterBuilder {
        RateLimiterBuilder {
            config,
            clock: None,
            backend: None,
            fair_shares: FairShares::new(),
        }
    }

    /// This limiter's identity, to find it again without holding it.
    pub(crate) fn id(&self) -> LimiterId {
        self.inner.id
    }

    /// The configuration.
    pub fn config(&self) -> &RateLimitConfig {
        &self.inner.config
    }

    /// The clock the limiter decides on.
    pub fn clock(&self) -> &dyn Clock {
        self.inner.clocks.wall()
    }

    /// Waits for a permit and charges every rule; returns the instant (wall clock) at which
    /// the request was released: the earliest that breaks no rule, rounded up to tokio's
    /// 1 ms timer grid.
    ///
    /// Cancel-safe: dropping the future frees the turn and charges nothing. On a
    /// [`FileRateLimitBackend`], a decision in flight when the future is dropped finishes,
    /// and takes back its charge if it admitted. One exception: on the `RedisRateLimitBackend`,
    /// a future dropped while its script is in flight (one round trip) may leave that
    /// decision's charge, a permit spent by no request. It errs on the safe side: the rules
    /// are never exceeded.
    ///
    /// [`FileRateLimitBackend`]: crate::FileRateLimitBackend
    ///
    /// # Errors
    /// [`BackendError`] when the backend could not be consulted (a shared store is
    /// unreachable and has no local fallback): no permit was granted. A [`LocalLimiter`]
    /// never fails.
    pub async fn acquire(&self, priority: Priority) -> Result<SystemTime, BackendError> {
        match self
            .acquire_when_ready(priority, None, AlwaysReady, |_| ())
            .await
        {
            Ok(released) => Ok(released),
            Err(Refused::Backend(error)) => Err(error),
            Err(Refused::NotReady(never)) => match never {},
        }
    }

    /// [`acquire`](Self::acquire) for `tenant`'s request: waiters are served fairly among
    /// tenants ([`FairShares`]).
    ///
    /// # Errors
    /// As [`acquire`](Self::acquire).
    pub async fn acquire_as(
        &self,
        tenant: &Tenant,
        priority: Priority,
    ) -> Result<SystemTime, BackendError> {
        self.inner.queue.tenant_seen();
        match self
            .acquire_when_ready(priority, Some(tenant), AlwaysReady, |_| ())
            .await
        {
            Ok(released) => Ok(released),
            Err(Refused::Backend(error)) => Err(error),
            Err(Refused::NotReady(never)) => match never {},
        }
    }

    /// Like [`acquire`](Self::acquire), for a request that is charged only once it can be
    /// sent: at the head of the queue, `ready` is polled to completion (the inner service's
    /// `poll_ready`: a token refresh, a connection) before each decision, so that the
    /// instant a permit is charged is the instant the request can leave. The turn is held
    /// meanwhile against the waiters of its own tenant: nobody of its tenant is charged
    /// ahead of it while it gets ready; other tenants' waiters go meanwhile.
    ///
    /// `refused` is told of every refusal before the waiter sleeps until it (the layer's
    /// `rate_limit.wait` span records the rule it names).
    pub(crate) async fn acquire_when_ready<R: Readiness>(
        &self,
        priority: Priority,
        tenant: Option<&Tenant>,
        mut ready: R,
        mut refused: impl FnMut(&NotUntil),
    ) -> Result<SystemTime, Refused<R::Error>> {
        let inner = &*self.inner;
        let mut ticket = inner.queue.join(tenant, priority, inner.reading().mono);
        loop {
            if !ticket.holds_turn() {
                // Queued behind others, it holds nothing that getting ready reserved (the
                // service was polled ready before it was called): whoever goes first may
                // need it to get ready.
                ready.release();
            }
            poll_fn(|cx| ticket.poll_turn(cx)).await;
            // Get ready at the head of the queue; a waiter that takes the turn meanwhile
            // (fairer, or interactive before background) goes first. While this one cannot
            // get ready, it steps aside: other tenants go, nobody of its own overtakes it.
            let got_ready = poll_fn(|cx| {
                if let Poll::Ready(ready) = ready.poll_ready(cx) {
                    return Poll::Ready(Some(ready));
                }
                if ticket.stepped_aside() {
                    return Poll::Pending;
                }
                if ticket.poll_preempted(cx).is_ready() {
                    return Poll::Ready(None);
                }
                ticket.step_aside();
                Poll::Pending
            })
            .await;
            ticket.step_back();
            match got_ready {
                None => continue,
                Some(ready) => ready.map_err(Refused::NotReady)?,
            }
            if !ticket.holds_turn() {
                // Got ready after stepping aside, behind a fairer waiter: queue again.
                continue;
            }
            let now = inner.now();
            let held = match &inner.store {
                Store::Memory(local) => ticket.decide_local(local, now.reading()),
                Store::Backend(backend) => match backend.try_acquire(now.wall(), priority).await? {
                    Ok(()) => {
                        ticket.charged_elsewhere(now.reading());
                        Ok(())
                    }
                    // A backend cannot tell whether only the background reserve refuses:
                    // a background waiter stands back until its instant (or until someone
                    // joins), so that other tenants' interactive work is not held behind it.
                    Err(not_until) if priority == Priority::Background => {
                        refused(&not_until);
                        let wall = to_nanos(not_until.earliest());
                        Err(Held::Reserved(now.reading().mono_at(wall)))
                    }
                    Err(not_until) => Err(Held::Refused(not_until)),
                },
            };
            match held {
                Ok(()) => return Ok(now.wall()),
                Err(Held::Passed) => {}
                Err(Held::Refused(not_until)) => {
                    refused(&not_until);
                    // Asleep, it holds nothing another waiter may need to get ready (a
                    // concurrency permit, a connection): it gets ready again at its turn.
                    ready.release();
                    let sleep = self.sleep(now, not_until);
                    let mut sleep = pin!(sleep);
                    // Until the instant, unless another waiter takes the turn meanwhile.
                    poll_fn(|cx| {
                        if sleep.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(());
                        }
                        ticket.poll_preempted(cx)
                    })
                    .await;
                }
                Err(Held::Reserved(recheck)) => {
                    // Only other tenants' protected shares, or the background reserve, hold
                    // it (on a backend: any background refusal): the turn goes to whoever
                    // else waits, until a share may have shrunk or the instant has come.
                    ticket.park();
                    ready.release();
                    let until = from_nanos(now.reading().wall_at(recheck));
                    let sleep = tokio::time::sleep_until(
                        inner.clocks.wall().instant_at(ceil_ms_time(until)),
                    );
                    let mut sleep = pin!(sleep);
                    poll_fn(|cx| {
                        if sleep.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(());
                        }
                        ticket.poll_unparked(cx)
                    })
                    .await;
                    ticket.unpark();
                }
            }
        }
    }

    /// [`try_acquire_at`](Self::try_acquire_at) now.
    #[cfg(test)]
    pub(crate) fn try_acquire_now(&self, priority: Priority, names_tenant: bool) -> bool {
        self.try_acquire_at(priority, names_tenant, Instant::now())
    }

    /// Admits and charges a request at `now` (tokio's clock, a reading the caller has just
    /// taken), if nobody waits ahead of it and the backend decides synchronously and admits
    /// it. `false`: nothing was charged; the request must [`acquire`](Self::acquire) its
    /// permit in the queue. A request naming a [`Tenant`] (with [`FairShares`] on) always
    /// queues, and so does every request after it.
    pub(crate) fn try_acquire_at(
        &self,
        priority: Priority,
        names_tenant: bool,
        now: Instant,
    ) -> bool {
        let inner = &*self.inner;
        if !inner.queue.may_skip(priority, names_tenant) {
            return false;
        }
        match &inner.store {
            Store::Memory(local) => local
                .try_acquire_reading(inner.reading_at(now), priority)
                .is_ok(),
            Store::Backend(backend) => {
                let now = inner.clocks.wall().now();
                matches!(backend.try_acquire_now(now, priority), Some(Ok(Ok(()))))
            }
        }
    }

    /// Per [`Tenant`] that waited for a permit within the longest rule's period (or
    /// [`FairShares::idle_after`], if longer; the unnamed tenant is `None`): its
    /// weight, its requests waiting now, whether it is active, and the permits it was given
    /// (this hour, and in all).
    ///
    /// ```
    /// use drchrono_ratelimit::{Priority, RateLimitConfig, RateLimiter, Tenant};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let limiter = RateLimiter::new(RateLimitConfig::default());
    /// limiter.acquire_as(&Tenant::new("practice-17"), Priority::Interactive).await?;
    /// let tenants = limiter.tenants();
    /// assert_eq!(tenants[0].tenant, Some(Tenant::new("practice-17")));
    /// assert_eq!((tenants[0].served_this_hour, tenants[0].waiting), (1, 0));
    /// # Ok(())
    /// # }
    /// ```
    pub fn tenants(&self) -> Vec<TenantStatus> {
        self.inner.queue.tenants(self.inner.reading())
    }

    /// The queue's record of joins and grants, for a test's model.
    #[cfg(test)]
    pub(crate) fn queue_log(&self) -> Vec<crate::fair::Event> {
        self.inner.queue.log()
    }

    /// Sleeps until the instant a refusal decided at `now` named.
    ///
    /// A rolling window (and, in this process, a server 429's pause) is measured on tokio's
    /// clock: its instant is converted at the decision's own reading, so a step of the wall
    /// clock after the decision moves nothing. A wait for an aligned boundary (or a
    /// backend's, which does not say which rule held) follows the wall clock as it reads now.
    async fn sleep(&self, now: Now, not_until: NotUntil) {
        let inner = &*self.inner;
        let until = ceil_ms_time(not_until.earliest());
        tracing::trace!(
            application = inner.config.application(),
            wait_ms = not_until.wait_time_from(now.wall()).as_millis() as u64,
            "rate limit: waiting"
        );
        let on_monotonic_line = match not_until.rule() {
            Some(rule) => rule.kind() == RuleKind::Sliding,
            None => matches!(inner.store, Store::Memory(_)),
        };
        let instant = if on_monotonic_line {
            inner.clocks.instant_at(now.reading(), until)
        } else {
            inner.clocks.wall().instant_at(until)
        };
        tokio::time::sleep_until(instant).await;
    }

    /// Holds every caller of this application until `until`, as a server 429 asks. When
    /// `until` reaches the next top of an aligned period (the hour), that period is marked
    /// spent, so it reopens at the boundary plus the safety margin.
    ///
    /// # Errors
    /// [`BackendError`] when the backend could not record the pause (it is logged too).
    pub async fn pause_until(&self, until: SystemTime) -> Result<(), BackendError> {
        let inner = &*self.inner;
        let now = inner.now();
        let wait = until.duration_since(now.wall()).unwrap_or(Duration::ZERO);
        tracing::warn!(
            application = self.inner.config.application(),
            wait_secs = wait.as_secs_f64(),
            "DrChrono throttled a request: pausing every caller of this application"
        );
        let paused = match &inner.store {
            Store::Memory(local) => {
                local.pause_until(now, until);
                Ok(())
            }
            Store::Backend(backend) => backend.pause_until(now.wall(), until).await,
        };
        if let Err(error) = &paused {
            tracing::warn!(
                application = self.inner.config.application(),
                backend = error.backend(),
                "could not share the pause: the rate-limit backend is unavailable"
            );
        }
        paused
    }

    /// Remaining budget per rule, next reset and the earliest instants the next request
    /// may go, now.
    ///
    /// # Errors
    /// [`BackendError`] when the backend could not be read. A [`LocalLimiter`] never fails.
    pub async fn status(&self) -> Result<Status, BackendError> {
        let inner = &*self.inner;
        match &inner.store {
            Store::Memory(local) => Ok(local.status(inner.now())),
            Store::Backend(backend) => backend.status(inner.clocks.wall().now()).await,
        }
    }
}

/// What a waiter must obtain before its permit is charged: the inner service's readiness
/// ([`RateLimiter::acquire_when_ready`]).
pub(crate) trait Readiness {
    /// Why it could not get ready.
    type Error;

    /// Gets ready (the inner service's `poll_ready`).
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>>;

    /// Gives up what getting ready reserved, before the waiter sleeps or queues again: a
    /// service polled ready may hold a resource (a `ConcurrencyLimit` permit, a pooled
    /// connection) that another waiter needs to get ready, and a waiter that kept it while
    /// the turn passed to that one would wait on it for ever.
    fn release(&mut self);
}

/// Nothing to get ready for: [`RateLimiter::acquire`].
struct AlwaysReady;

impl Readiness for AlwaysReady {
    type Error = Infallible;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn release(&mut self) {}
}

/// Why [`RateLimiter::acquire_when_ready`] gave no permit.
#[derive(Debug)]
pub(crate) enum Refused<E> {
    /// The backend could not be consulted.
    Backend(BackendError),
    /// The request could not get ready to be sent.
    NotReady(E),
}

impl<E> From<BackendError> for Refused<E> {
    fn from(error: BackendError) -> Self {
        Self::Backend(error)
    }
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut f = f.debug_struct("RateLimiter");
        f.field("config", &self.inner.config);
        match &self.inner.store {
            Store::Memory(local) => f.field("backend", local),
            Store::Backend(backend) => f.field("backend", backend),
        };
        f.field("clock", &self.inner.clocks.wall()).finish()
    }
}

/// Builds a [`RateLimiter`]; see [`RateLimiter::builder`].
#[must_use]
pub struct RateLimiterBuilder {
    config: RateLimitConfig,
    clock: Option<Clocks>,
    backend: Option<Arc<dyn Backend>>,
    fair_shares: FairShares,
}

impl RateLimiterBuilder {
    /// How the budget is divided among [`Tenant`]s. Default:
    /// [`FairShares::new`] (fair queueing and protected shares, equal weights);
    /// [`FairShares::off`] for one first-come first-served queue.
    pub fn fair_shares(mut self, fair_shares: FairShares) -> Self {
        self.fair_shares = fair_shares;
        self
    }

    /// The wall clock, which the aligned rules follow (the monotonic clock, for the sliding
    /// rules and every wait, is tokio's). Default: [`TokioClock::new`], the system clock.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        let wall: Arc<dyn Clock> = Arc::new(clock);
        let monotonic = TokioClock::starting_at(wall.now());
        self.clock = Some(Clocks::Custom { wall, monotonic });
        self
    }

    /// Both clocks start at `start` now and advance with tokio's clock alone
    /// ([`TokioClock::starting_at`]): for planning and for tests under paused time.
    pub fn start_at(mut self, start: SystemTime) -> Self {
        self.clock = Some(Clocks::tokio(TokioClock::starting_at(start)));
        self
    }

    /// Where the state lives. Default: a fresh [`LocalLimiter`] for the configuration,
    /// kept in this process. A backend must enforce the same configuration's rules (build
    /// it from the same [`RateLimitConfig`], e.g. `RedisRateLimitBackend::connect(url,
    /// &config)` with the `redis` feature).
    pub fn backend(mut self, backend: impl Backend) -> Self {
        self.backend = Some(Arc::new(backend));
        self
    }

    /// The limiter.
    pub fn build(self) -> RateLimiter {
        let store = match self.backend {
            Some(backend) => Store::Backend(backend),
            None => Store::Memory(Arc::new(LocalLimiter::new(&self.config))),
        };
        let clocks = self
            .clock
            .unwrap_or_else(|| Clocks::tokio(TokioClock::new()));
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let id = LimiterId(NEXT_ID.fetch_add(1, Ordering::Relaxed));
        let inner = Arc::new(Inner {
            id,
            store,
            clocks,
            queue: FairQueue::new(&self.config, self.fair_shares),
            config: self.config,
        });
        live()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.0, Arc::downgrade(&inner));
        RateLimiter { inner }
    }
}

impl fmt::Debug for RateLimiterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiterBuilder")
            .field("config", &self.config)
            .field("clock", &self.clock.as_ref().map(Clocks::wall))
            .field("backend", &self.backend)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_per_second() -> RateLimiter {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_609_420);
        let config = RateLimitConfig::builder()
            .max_per_second(1)
            .safety_margin(Duration::ZERO)
            .build()
            .unwrap();
        RateLimiter::builder(config).start_at(start).build()
    }

    /// On a backend, a background head refused (here by the background reserve) stands
    /// back: another tenant's interactive request is not held behind it until the hour.
    #[tokio::test(start_paused = true)]
    async fn a_refused_background_head_on_a_backend_holds_no_other_tenant() {
        // 100 s before the top of an hour.
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_610_800 - 100);
        let config = RateLimitConfig::builder()
            .rules([crate::Rule::aligned(10, Duration::from_secs(3600)).unwrap()])
            .background_reserve_percent(50)
            .safety_margin(Duration::ZERO)
            .build()
            .unwrap();
        let limiter = RateLimiter::builder(config.clone())
            .start_at(start)
            .backend(LocalLimiter::new(&config))
            .build();
        let (a, b) = (Tenant::new("a"), Tenant::new("b"));
        // A's backfill: 5 background requests fit (the reserve keeps 5), the rest wait
        // for the next hour.
        let backfill: Vec<_> = (0..8)
            .map(|_| {
                let (limiter, a) = (limiter.clone(), a.clone());
                tokio::spawn(async move { limiter.acquire_as(&a, Priority::Background).await })
            })
            .collect();
        // B clicks every second: each is served at once, whatever A's tags.
        for second in 1..=4 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let released = limiter.acquire_as(&b, Priority::Interactive).await.unwrap();
            assert_eq!(
                released,
                start + Duration::from_secs(second),
                "B's click {second}"
            );
        }
        let mut released = Vec::new();
        for task in backfill {
            released.push(task.await.unwrap().unwrap());
        }
        let next_hour = start + Duration::from_secs(100);
        assert_eq!(released.iter().filter(|t| **t < next_hour).count(), 5);
        assert_eq!(released.iter().filter(|t| **t == next_hour).count(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn memory_on_tokios_clock_decides_as_any_backend_on_any_clock() {
        let start = SystemTime::UNIX_EPOCH + Duration::new(1_767_609_420, 250_000_000);
        let config = RateLimitConfig::builder()
            .max_per_second(3)
            .max_per_window(7)
            .window(Duration::from_secs(10))
            .max_per_hour(20)
            .safety_margin(Duration::from_millis(50))
            .build()
            .unwrap();
        // In memory on a `TokioClock`, against any backend on any clock.
        let typed = RateLimiter::builder(config.clone()).start_at(start).build();
        let general = RateLimiter::builder(config.clone())
            .clock(TokioClock::starting_at(start))
            .backend(LocalLimiter::new(&config))
            .build();
        assert!(matches!(
            (&typed.inner.store, &typed.inner.clocks),
            (Store::Memory(_), Clocks::Tokio(..))
        ));
        assert!(matches!(
            (&general.inner.store, &general.inner.clocks),
            (Store::Backend(_), Clocks::Custom { .. })
        ));
        let mut admitted = 0;
        for step in 0..400u32 {
            let priority = if step % 3 == 0 {
                Priority::Background
            } else {
                Priority::Interactive
            };
            let decision = typed.try_acquire_now(priority, false);
            assert_eq!(
                decision,
                general.try_acquire_now(priority, false),
                "step {step}"
            );
            admitted += u32::from(decision);
            tokio::time::advance(Duration::from_millis(u64::from(97 + step % 211))).await;
        }
        // Both refused and admitted along the way.
        assert!((20..400).contains(&admitted), "{admitted}");
        assert_eq!(
            typed.status().await.unwrap(),
            general.status().await.unwrap()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_decided_at_once_never_overtakes_a_waiter() {
        let limiter = one_per_second();
        assert!(limiter.try_acquire_now(Priority::Interactive, false));
        // The budget is spent: refused, and nothing charged.
        assert!(!limiter.try_acquire_now(Priority::Interactive, false));
        let waiter = tokio::spawn({
            let limiter = limiter.clone();
            async move { limiter.acquire(Priority::Interactive).await }
        });
        tokio::task::yield_now().await;
        tokio::time::advance(Duration::from_secs(1)).await;
        // The second has passed, but the waiter is ahead: no skipping the queue.
        assert!(!limiter.try_acquire_now(Priority::Interactive, false));
        let released = waiter.await.unwrap().unwrap();
        assert_eq!(released, limiter.clock().now());
        assert!(!limiter.try_acquire_now(Priority::Interactive, false));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(limiter.try_acquire_now(Priority::Interactive, false));
        assert_eq!(limiter.status().await.unwrap().rules[2].remaining, 497);
    }

    #[tokio::test(start_paused = true)]
    async fn interactive_work_overtakes_waiting_background_work_only() {
        let limiter = one_per_second();
        assert!(limiter.try_acquire_now(Priority::Background, false));
        let background = tokio::spawn({
            let limiter = limiter.clone();
            async move { limiter.acquire(Priority::Background).await }
        });
        tokio::task::yield_now().await;
        tokio::time::advance(Duration::from_secs(1)).await;
        // The background waiter sleeps holding only its own turn.
        assert!(!limiter.try_acquire_now(Priority::Background, false));
        assert!(limiter.try_acquire_now(Priority::Interactive, false));
        background.await.unwrap().unwrap();
        assert_eq!(limiter.status().await.unwrap().rules[2].remaining, 497);
    }

    #[test]
    fn an_id_finds_its_limiter_while_it_lives_and_is_forgotten_with_it() {
        let limiter = RateLimiter::new(RateLimitConfig::default());
        let other = RateLimiter::new(RateLimitConfig::default());
        let id = limiter.id();
        assert_ne!(id, other.id());
        let found = id.upgrade().expect("alive");
        assert!(Arc::ptr_eq(&found.inner, &limiter.inner));
        drop((found, limiter));
        assert!(id.upgrade().is_none());
        let live = live().lock().unwrap();
        assert!(
            !live.contains_key(&id.0),
            "a dropped limiter leaves no entry"
        );
        assert!(live.contains_key(&other.id().0));
    }
}
