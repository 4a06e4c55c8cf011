//! [`TokenManager`]: one token family's current pair, refreshed single-flight.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock, Weak};

use drchrono_core::{DrChronoError, ErrorContext};
use http::HeaderValue;
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;

use crate::active::{Active, Need};
use crate::error::reauthorization_required;
use crate::status::{ReauthorizationHook, ReauthorizationReason};
use crate::unauthorized::UnauthorizedRefresh;
use crate::{
    AuthStatus, LocalLease, MemoryTokenStore, ReauthorizationEvent, RefreshLease, RefreshTiming,
    StoreError, TokenClient, TokenSet, TokenStore,
};

/// The current pair of one token family (one DrChrono user of one application), shared by
/// every clone and every [`OAuthRefresh`](crate::OAuthRefresh) service built from it.
///
/// - Loads the pair from its [`TokenStore`] on first use (the configured initial tokens
///   only when the store is empty).
/// - Refreshes proactively (see [`RefreshTiming`]) and after a 401 on the current token,
///   with exactly one refresh in flight: every concurrent caller waits for it and shares
///   its outcome. The refresh runs in its own task, so a cancelled caller never abandons
///   a rotation half-way. A 401 causes at most one refresh per token generation, and none
///   within [`RefreshTiming::unauthorized_refresh_interval`] (60 s) of the last one.
/// - Persists the rotated pair before any request uses it.
/// - On `invalid_grant` (once the store was re-read and held nothing newer) or
///   `invalid_client` stops refreshing, tells the application once per rejected refresh
///   token (hook and [`status`](TokenManager::status)), and fails every request with a
///   typed error until [`set_tokens`](TokenManager::set_tokens) installs a new pair or
///   another process saves a newer one in the shared store (re-read at most once per
///   [`RefreshTiming::store_recheck_interval`], 5 s).
/// - Never sends a token within [`RefreshTiming::expiry_skew`] of its expiry. A grant that
///   lives no longer than the skew (a misbehaving token endpoint, or a skew set too large)
///   is installed and persisted all the same (its refresh token is the only live one), but
///   the requests waiting on it fail (`Transport`, `not_sent: true`, with a
///   [`RefreshFailed`](crate::RefreshFailed) source naming the lifetime and the skew), and
///   so does every request, with no refresh, for [`RefreshTiming::retry_interval`] (30 s):
///   one rotation per interval, not one per request. Meanwhile the store is re-read at most
///   once per [`RefreshTiming::store_recheck_interval`]: a newer pair another process saved
///   is adopted, and ends the hold.
///
/// Cheap to clone; `Debug` prints no token.
#[derive(Clone)]
pub struct TokenManager {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    /// Where [`ManagerId::upgrade`] finds this manager.
    id: ManagerId,
    pub(crate) client: TokenClient,
    pub(crate) store: Arc<dyn TokenStore>,
    pub(crate) lease: Arc<dyn RefreshLease>,
    pub(crate) timing: RefreshTiming,
    pub(crate) hook: Option<ReauthorizationHook>,
    pub(crate) status: watch::Sender<AuthStatus>,
    pub(crate) snapshot: RwLock<Snapshot>,
    /// The snapshot's freshness, for `poll_ready` to read without the lock.
    pub(crate) freshness: Freshness,
    /// Held by the one task that loads, refreshes or persists.
    pub(crate) slow: Arc<Mutex<SlowState>>,
    /// Refresh attempts completed, so that waiters can tell one finished while they waited.
    pub(crate) attempts: AtomicU64,
    /// Keys the fingerprints of rejected refresh tokens (never stored themselves).
    pub(crate) fingerprints: RandomState,
}

/// What requests read on the fast path.
#[derive(Clone)]
pub(crate) struct Snapshot {
    pub(crate) active: Option<Arc<Active>>,
    pub(crate) health: Health,
}

#[derive(Clone)]
pub(crate) enum Health {
    Unloaded,
    Ready,
    PersistPending,
    Latched(Arc<Latch>),
}

/// Why refreshing stopped, kept to give every later caller the same typed error.
pub(crate) struct Latch {
    pub(crate) reason: ReauthorizationReason,
    pub(crate) description: Option<String>,
    pub(crate) context: ErrorContext,
    /// When a request may next re-read the store for a newer pair
    /// ([`RefreshTiming::store_recheck_interval`]).
    pub(crate) recheck_at: Instant,
}

impl Latch {
    /// The same latch, next re-reading the store at `recheck_at`.
    pub(crate) fn rechecked(&self, recheck_at: Instant) -> Self {
        Self {
            reason: self.reason,
            description: self.description.clone(),
            context: self.context.clone(),
            recheck_at,
        }
    }

    pub(crate) fn error(&self) -> DrChronoError {
        match self.reason {
            ReauthorizationReason::InvalidClient => DrChronoError::InvalidClient {
                description: self.description.clone(),
                context: Box::new(self.context.clone()),
            },
            _ => reauthorization_required(self.description.clone(), self.context.clone()),
        }
    }
}

/// Guarded by the single-flight lock.
pub(crate) struct SlowState {
    /// The generation the store holds, as far as this process knows.
    pub(crate) persisted_generation: u64,
    /// The configured initial pair, used once if the store is empty.
    pub(crate) initial: Option<TokenSet>,
    /// The error of the last refresh attempt, if it failed.
    pub(crate) last_failure: Option<Arc<DrChronoError>>,
    /// No refresh before this instant: the last grant's token lived no longer than the
    /// expiry skew, so it is never sent, and every caller gets `last_failure` until then
    /// ([`RefreshTiming::retry_interval`]) rather than rotating the pair once per request.
    pub(crate) held_until: Option<Instant>,
    /// During a hold, when the store may next be re-read for a newer pair another process
    /// stored ([`RefreshTiming::store_recheck_interval`]): adopting one ends the hold.
    pub(crate) held_recheck_at: Option<Instant>,
    /// The last refresh a 401 caused, if any (reset by `set_tokens`).
    pub(crate) after_unauthorized: Option<UnauthorizedRefresh>,
    /// The generation of the pair `set_tokens` installed but could not persist, while it
    /// is pending. Its save overwrites whatever the store holds, as `set_tokens` promises
    /// and as its own save would have: the stored pair is typically the family the
    /// re-authorisation revoked, and adopting it would drop the only live one. A pending
    /// pair from a refresh adopts a newer stored pair instead (a re-authorisation elsewhere
    /// has revoked it).
    pub(crate) pending_overwrite: Option<u64>,
    /// A fingerprint of the refresh token the re-authorisation hook last fired for: the
    /// hook fires once per rejected refresh token.
    pub(crate) hooked: Option<u64>,
}

/// What the 401 triage decided.
pub(crate) enum Triage {
    /// The request carried an older generation: replay it with the current token.
    Replay,
    /// The request carried the current generation (or the family needs re-authorisation
    /// and may re-read the store now): the slow path decides (`Shared::after_unauthorized`).
    SlowPath,
    /// Refreshing is stopped: fail with this.
    Fail(DrChronoError),
}

impl TokenManager {
    /// A builder for a manager that refreshes through `client`.
    pub fn builder(client: TokenClient) -> TokenManagerBuilder {
        TokenManagerBuilder {
            client,
            store: Arc::new(MemoryTokenStore::new()),
            lease: Arc::new(LocalLease),
            timing: RefreshTiming::default(),
            hook: None,
            initial: None,
        }
    }

    /// The `Authorization` header for a request now (refreshing first if due), with its
    /// generation. For callers outside tower; the layer uses the same path.
    pub async fn bearer(&self) -> Result<Bearer, DrChronoError> {
        if let Some((header, generation)) = self.fast_bearer() {
            return Ok(Bearer { header, generation });
        }
        if let Some(error) = self.latched_error() {
            return Err(error);
        }
        let active = self.shared.acquire(Need::Fresh).await?;
        bearer_of(&active)
    }

    /// Refreshes now (loading the pair first if needed), unless a refresh beyond the
    /// generation current at the call already happened meanwhile (single-flight: concurrent
    /// calls share one refresh). Returns the generation installed.
    pub async fn refresh_now(&self) -> Result<u64, DrChronoError> {
        let need = self.generation().map_or(Need::Rotate, Need::Newer);
        let active = self.shared.acquire(need).await?;
        Ok(active.generation())
    }

    /// Installs a new pair after the application ran DrChrono's OAuth flow again, and
    /// resumes refreshing. The pair gets the next generation (its own `generation` is
    /// ignored) and overwrites whatever the store holds. Returns that generation.
    ///
    /// If persisting fails the pair is still installed, in memory, and each request retries
    /// the save before using it, still overwriting whatever the store holds then; the error
    /// is returned.
    pub async fn set_tokens(&self, tokens: TokenSet) -> Result<u64, StoreError> {
        self.shared.install_new(tokens).await
    }

    /// The family's status; changes are published as they happen.
    pub fn status(&self) -> watch::Receiver<AuthStatus> {
        self.shared.status.subscribe()
    }

    /// The generation of the installed pair (`None` before the first load).
    pub fn generation(&self) -> Option<u64> {
        self.shared
            .read()
            .active
            .as_ref()
            .map(|active| active.generation())
    }

    /// Whether a token is installed, persisted and not due for refresh: a request can be
    /// sent with no token work first.
    #[inline]
    pub(crate) fn is_fresh(&self) -> bool {
        let now = Instant::now();
        self.shared.freshness.holds(now) || self.is_fresh_locked(now)
    }

    /// [`is_fresh`](Self::is_fresh) under the snapshot's lock: where the lock-free copy
    /// cannot tell (a token due before the manager was built, or a write under way).
    #[cold]
    fn is_fresh_locked(&self, now: Instant) -> bool {
        let snapshot = self.shared.read();
        matches!(snapshot.health, Health::Ready)
            && snapshot
                .active
                .as_ref()
                .is_some_and(|active| active.usable(Need::Fresh, now))
    }

    /// The bearer header on the fast path: installed, persisted, not due for refresh.
    #[inline]
    pub(crate) fn fast_bearer(&self) -> Option<(HeaderValue, u64)> {
        let snapshot = self.shared.read();
        if !matches!(snapshot.health, Health::Ready) {
            return None;
        }
        let active = snapshot.active.as_ref()?;
        if !active.usable(Need::Fresh, tokio::time::Instant::now()) {
            return None;
        }
        Some((active.header.clone()?, active.generation()))
    }

    /// The bearer a request may carry until it expires (less the skew): installed and
    /// persisted, even if a proactive refresh is due (the next `poll_ready` starts it), with
    /// the snapshot's version it was read at. `None`: no request may carry one now.
    pub(crate) fn sendable_bearer(&self) -> Option<SendableBearer> {
        let snapshot = self.shared.read();
        if !matches!(snapshot.health, Health::Ready) {
            return None;
        }
        let active = snapshot.active.as_ref()?;
        Some(SendableBearer {
            header: active.header.clone()?,
            generation: active.generation(),
            expires_at: active.expires_at,
            // Read under the lock: no write publishes while it is held.
            version: self.shared.freshness.version(),
        })
    }

    /// The typed error of a family that needs re-authorisation and may not re-read the
    /// store yet: the caller fails at once, with no store read and no lock.
    pub(crate) fn latched_error(&self) -> Option<DrChronoError> {
        match &self.shared.read().health {
            Health::Latched(latch) if Instant::now() < latch.recheck_at => Some(latch.error()),
            _ => None,
        }
    }

    /// Decides what a 401 on a request that carried `generation` calls for.
    pub(crate) fn triage(&self, generation: u64) -> Triage {
        let snapshot = self.shared.read();
        match &snapshot.health {
            Health::Latched(latch) if Instant::now() < latch.recheck_at => {
                Triage::Fail(latch.error())
            }
            Health::Latched(_) => Triage::SlowPath,
            _ => match &snapshot.active {
                Some(active) if active.generation() > generation => Triage::Replay,
                _ => Triage::SlowPath,
            },
        }
    }
}

pub(crate) fn bearer_of(active: &Active) -> Result<Bearer, DrChronoError> {
    match &active.header {
        Some(header) => Ok(Bearer {
            header: header.clone(),
            generation: active.generation(),
        }),
        // `acquire` only returns usable pairs, which have a header.
        None => Err(reauthorization_required(None, ErrorContext::new())),
    }
}

impl fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenManager")
            .field("generation", &self.generation())
            .field("status", &*self.shared.status.borrow())
            .field("client", &self.shared.client)
            .field("store", &self.shared.store)
            .field("lease", &self.shared.lease)
            .field("timing", &self.shared.timing)
            .finish_non_exhaustive()
    }
}

/// An `Authorization: Bearer …` header (marked sensitive) and the generation of its token.
/// `Debug` prints the generation only.
#[derive(Clone)]
pub struct Bearer {
    header: HeaderValue,
    generation: u64,
}

impl Bearer {
    /// The header value, marked sensitive.
    pub fn header(&self) -> &HeaderValue {
        &self.header
    }

    /// The token's generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

impl fmt::Debug for Bearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bearer")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// Builds a [`TokenManager`].
#[must_use]
pub struct TokenManagerBuilder {
    client: TokenClient,
    store: Arc<dyn TokenStore>,
    lease: Arc<dyn RefreshLease>,
    timing: RefreshTiming,
    hook: Option<ReauthorizationHook>,
    initial: Option<TokenSet>,
}

impl TokenManagerBuilder {
    /// Where the pair is persisted. Default: a [`MemoryTokenStore`] (nothing survives a
    /// restart; use [`FileTokenStore`](crate::FileTokenStore) or another durable store).
    pub fn store(mut self, store: impl TokenStore) -> Self {
        self.store = Arc::new(store);
        self
    }

    /// Like [`store`](Self::store), for a store shared with other code.
    pub fn shared_store(mut self, store: Arc<dyn TokenStore>) -> Self {
        self.store = store;
        self
    }

    /// The cross-process refresh lease. Default: [`LocalLease`] (this process is the only
    /// one refreshing this family).
    pub fn lease(mut self, lease: Arc<dyn RefreshLease>) -> Self {
        self.lease = lease;
        self
    }

    /// The pair used when the store is empty (e.g.
    /// [`TokenSet::from_refresh_token`] from configuration). Default: none. A store that
    /// holds a pair wins: the configured refresh token is stale after the first rotation.
    pub fn initial_tokens(mut self, tokens: TokenSet) -> Self {
        self.initial = Some(tokens);
        self
    }

    /// When to refresh proactively. Default: [`RefreshTiming::default`].
    pub fn timing(mut self, timing: RefreshTiming) -> Self {
        self.timing = timing;
        self
    }

    /// Called when refreshing stops ([`ReauthorizationEvent`]): once per rejected
    /// refresh token, and only after the store was re-read and held no newer pair (another
    /// process's rotation or re-authorisation never prompts a needless one, which would
    /// revoke everyone's tokens). Default: none. Runs on the refreshing task: keep it short
    /// and non-blocking.
    pub fn on_reauthorization(
        mut self,
        hook: impl Fn(&ReauthorizationEvent) + Send + Sync + 'static,
    ) -> Self {
        self.hook = Some(Arc::new(hook));
        self
    }

    /// The manager. Nothing is loaded until the first request (or
    /// [`TokenManager::bearer`]).
    pub fn build(self) -> TokenManager {
        let id = ManagerId(NEXT_ID.fetch_add(1, Ordering::Relaxed));
        let manager = TokenManager {
            shared: Arc::new(Shared {
                id,
                client: self.client,
                store: self.store,
                lease: self.lease,
                timing: self.timing,
                hook: self.hook,
                status: watch::Sender::new(AuthStatus::Unloaded),
                snapshot: RwLock::new(Snapshot {
                    active: None,
                    health: Health::Unloaded,
                }),
                freshness: Freshness::new(),
                slow: Arc::new(Mutex::new(SlowState {
                    persisted_generation: 0,
                    initial: self.initial,
                    last_failure: None,
                    held_until: None,
                    held_recheck_at: None,
                    after_unauthorized: None,
                    pending_overwrite: None,
                    hooked: None,
                })),
                attempts: AtomicU64::new(0),
                fingerprints: RandomState::new(),
            }),
        };
        live()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.0, Arc::downgrade(&manager.shared));
        manager
    }
}

/// The next [`ManagerId`].
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// The managers alive in this process, by [`ManagerId`].
fn live() -> &'static std::sync::Mutex<HashMap<u64, Weak<Shared>>> {
    static LIVE: OnceLock<std::sync::Mutex<HashMap<u64, Weak<Shared>>>> = OnceLock::new();
    LIVE.get_or_init(Default::default)
}

/// A manager's identity: finds the manager again while it lives, without holding a
/// reference to it.
///
/// A request's future holds its manager's id, not a clone of the manager, for the rare
/// 401 it must triage: a clone writes the manager's reference count, twice a request. A
/// 401 finds the manager under a process-wide lock, taken otherwise only when a manager is
/// built or dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ManagerId(u64);

impl ManagerId {
    /// The manager, if it is still alive (some handle of it is).
    pub(crate) fn upgrade(self) -> Option<TokenManager> {
        let live = live().lock().unwrap_or_else(PoisonError::into_inner);
        let shared = live.get(&self.0)?.upgrade()?;
        Some(TokenManager { shared })
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        live()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id.0);
    }
}

impl TokenManager {
    /// This manager's identity, for a future that must find it again only on a 401.
    #[inline]
    pub(crate) fn id(&self) -> ManagerId {
        self.shared.id
    }
}

impl fmt::Debug for TokenManagerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenManagerBuilder")
            .field("client", &self.client)
            .field("store", &self.store)
            .field("timing", &self.timing)
            .field("initial", &self.initial)
            .finish_non_exhaustive()
    }
}

/// A bearer a request may carry until `expires_at`, as the snapshot held it at `version`
/// ([`TokenManager::sendable_bearer`]): a service keeps it, and attaches it with no lock
/// while the snapshot's version has not moved.
#[derive(Clone)]
pub(crate) struct SendableBearer {
    pub(crate) header: HeaderValue,
    pub(crate) generation: u64,
    pub(crate) expires_at: Instant,
    pub(crate) version: u64,
}

impl SendableBearer {
    /// Whether a request may carry it at `now`, the snapshot being at `version`.
    #[inline]
    pub(crate) fn holds(&self, version: u64, now: Instant) -> bool {
        self.version == version && now < self.expires_at
    }
}

/// The snapshot's freshness as one number, so that `poll_ready` tells whether a request may
/// go with no token work first without taking the snapshot's lock (a read lock writes its
/// cache line twice a request): until when the installed token is fresh, in nanoseconds
/// after `origin` on tokio's clock, or 0 while no token may be sent without work first
/// (none installed, not persisted, latched, or due before `origin`). Written with the
/// snapshot, under its write lock ([`SnapshotWriter`](crate::persist::SnapshotWriter)).
pub(crate) struct Freshness {
    origin: Instant,
    until: AtomicU64,
    /// How many times the snapshot was written: a copy of what it held stays true while
    /// this has not moved.
    version: AtomicU64,
}

impl Freshness {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            until: AtomicU64::new(0),
            version: AtomicU64::new(0),
        }
    }

    /// How many times the snapshot was written so far.
    #[inline]
    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Whether the token installed is fresh at `now`. Never true where the snapshot would
    /// say otherwise; false where it cannot tell.
    #[inline]
    pub(crate) fn holds(&self, now: Instant) -> bool {
        nanos(now.saturating_duration_since(self.origin)) < self.until.load(Ordering::Acquire)
    }

    /// Copies `snapshot`'s freshness.
    pub(crate) fn publish(&self, snapshot: &Snapshot) {
        let until = match (&snapshot.health, &snapshot.active) {
            (Health::Ready, Some(active)) if active.header.is_some() => {
                nanos(active.refresh_at.saturating_duration_since(self.origin))
            }
            _ => 0,
        };
        self.until.store(until, Ordering::Release);
        self.version.fetch_add(1, Ordering::Release);
    }
}

/// `d` in nanoseconds, saturating (584 years).
fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::{RefreshTiming, TokenSet};

    /// What `poll_ready` decided under the lock before the lock-free copy.
    fn fresh_under_lock(snapshot: &Snapshot, now: Instant) -> bool {
        matches!(snapshot.health, Health::Ready)
            && snapshot
                .active
                .as_ref()
                .is_some_and(|active| active.usable(Need::Fresh, now))
    }

    #[tokio::test(start_paused = true)]
    async fn the_lock_free_freshness_says_what_the_snapshot_says() {
        let timing = RefreshTiming::new().expiry_skew(Duration::ZERO);
        let freshness = Freshness::new();
        let origin = Instant::now();
        tokio::time::advance(Duration::from_secs(5)).await;
        let lived = |access: &str, lifetime: u64| {
            let tokens = TokenSet::new(access, "RT", SystemTime::now());
            Arc::new(Active::new(
                tokens,
                &timing,
                Some(Duration::from_secs(lifetime)),
            ))
        };
        // A 600 s token is due at 540 s, a 1 s one at 0.9 s; one with no usable access
        // token is never fresh.
        let actives = [
            None,
            Some(lived("AT", 600)),
            Some(lived("AT", 1)),
            Some(lived("", 600)),
        ];
        let latch = Arc::new(Latch {
            reason: ReauthorizationReason::InvalidGrant,
            description: None,
            context: ErrorContext::new(),
            recheck_at: origin,
        });
        let healths = [
            Health::Unloaded,
            Health::Ready,
            Health::PersistPending,
            Health::Latched(latch),
        ];
        let now = Instant::now();
        let instants = [
            origin,
            now,
            now + Duration::from_millis(539_999),
            now + Duration::from_secs(540),
            now + Duration::from_secs(3_600),
        ];
        let mut fresh = 0;
        for active in &actives {
            for health in &healths {
                let snapshot = Snapshot {
                    active: active.clone(),
                    health: health.clone(),
                };
                freshness.publish(&snapshot);
                for at in instants {
                    let expected = fresh_under_lock(&snapshot, at);
                    assert_eq!(freshness.holds(at), expected, "at {:?}", at - origin);
                    fresh += usize::from(expected);
                }
            }
        }
        // Ready: the 600 s token at the first three instants, the 1 s one at the first two.
        assert_eq!(fresh, 5);
    }

    /// A manager that starts from a 48-hour pair in `store` and never calls the token
    /// endpoint; and the pair's expiry.
    fn manager_without_token_calls(
        store: Arc<crate::MemoryTokenStore>,
    ) -> (TokenManager, SystemTime) {
        let never_called = tower::service_fn(
            |_request: http::Request<http_body_util::Full<bytes::Bytes>>| async {
                Err::<http::Response<http_body_util::Full<bytes::Bytes>>, drchrono_core::BoxError>(
                    "no token call in this test".into(),
                )
            },
        );
        let client =
            crate::TokenClient::new(never_called, crate::ClientCredentials::new("id", "secret"));
        let expires_at = SystemTime::now() + Duration::from_secs(48 * 3_600);
        let manager = TokenManager::builder(client)
            .shared_store(store)
            .initial_tokens(TokenSet::new("AT", "RT", expires_at))
            .build();
        (manager, expires_at)
    }

    #[tokio::test(start_paused = true)]
    async fn installing_a_pair_publishes_its_freshness_and_a_latch_withdraws_it() {
        let (manager, _) = manager_without_token_calls(Arc::default());
        assert!(!manager.shared.freshness.holds(Instant::now()));
        manager.bearer().await.expect("the initial pair");
        assert!(manager.shared.freshness.holds(Instant::now()));
        assert!(manager.is_fresh());
        manager.shared.write().health = Health::Latched(Arc::new(Latch {
            reason: ReauthorizationReason::InvalidGrant,
            description: None,
            context: ErrorContext::new(),
            recheck_at: Instant::now(),
        }));
        assert!(!manager.shared.freshness.holds(Instant::now()));
        assert!(!manager.is_fresh());
    }

    #[tokio::test(start_paused = true)]
    async fn adopting_a_newer_pair_forgets_what_failed_or_held_the_old_one() {
        let store = Arc::new(crate::MemoryTokenStore::new());
        let (manager, expires_at) = manager_without_token_calls(Arc::clone(&store));
        manager.bearer().await.expect("the initial pair");
        let mut slow = manager.shared.slow.lock().await;
        slow.last_failure = Some(Arc::new(DrChronoError::Transport {
            not_sent: false,
            source: "the token endpoint answered 503".into(),
            context: Box::new(ErrorContext::new()),
        }));
        slow.held_until = Some(Instant::now() + Duration::from_secs(30));
        // Another process re-authorised and stored generation 2.
        let newer = TokenSet::new("AT2", "RT2", expires_at).with_generation(2);
        crate::TokenStore::save(&*store, 1, &newer).await.unwrap();
        let adopted = manager
            .shared
            .adopt_stored(&mut slow)
            .await
            .expect("adopted");
        assert_eq!(adopted.generation(), 2);
        assert!(slow.last_failure.is_none());
        assert!(slow.held_until.is_none());
    }
}
