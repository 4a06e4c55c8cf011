//! The slow path: loading and refreshing, one task at a time per token family.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use drchrono_core::{DrChronoError, ErrorContext};
use futures::FutureExt;
use tokio::time::Instant;
use tracing::Instrument;

use crate::active::{Active, Need};
use crate::client::Refreshed;
use crate::error::{GrantWithinSkew, store_failure, surface};
use crate::manager::{Health, Latch, Shared, SlowState};
use crate::response::TokenGrant;
use crate::status::ReauthorizationReason;
use crate::{StoreError, TokenSet};

/// Refresh rounds after which an `invalid_grant` latches without another look at the store
/// (each round adopted a newer stored pair whose refresh token was rejected too).
const MAX_REFRESH_ROUNDS: usize = 4;

/// How long a refresh waits before it reads an unreadable token store once more: 100 ms.
const STORE_REREAD_DELAY: Duration = Duration::from_millis(100);

/// What a request needs once the family is loaded and healthy.
pub(crate) enum Prepared {
    /// The installed pair serves it.
    Usable(Arc<Active>),
    /// A refresh is needed for this (resolved) need.
    Refresh(Need),
}

impl Shared {
    /// A pair that satisfies `need`, refreshing (single-flight) if there is none.
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        need: Need,
    ) -> Result<Arc<Active>, DrChronoError> {
        let seen = self.attempts.load(Ordering::SeqCst);
        let mut slow = Arc::clone(&self.slow).lock_owned().await;
        let shared = Arc::clone(self);
        // The work runs in its own task: a cancelled caller must never abandon a rotation
        // between the server's answer and the save.
        let work = async move { shared.acquire_locked(&mut slow, need, seen).await };
        tokio::spawn(work.instrument(tracing::Span::current()))
            .await
            .unwrap_or_else(|join| Err(crate::error::join_failure(join)))
    }

    async fn acquire_locked(
        &self,
        slow: &mut SlowState,
        need: Need,
        seen: u64,
    ) -> Result<Arc<Active>, DrChronoError> {
        match self.prepare(slow, need, seen).await? {
            Prepared::Usable(active) => Ok(active),
            Prepared::Refresh(need) => self.refresh_leased(slow, need).await,
        }
    }

    /// Loads the family, resolves `need`, recovers a latched family from the store when it
    /// may re-read it, retries a pending save, and says whether a refresh is needed.
    pub(crate) async fn prepare(
        &self,
        slow: &mut SlowState,
        need: Need,
        seen: u64,
    ) -> Result<Prepared, DrChronoError> {
        self.ensure_loaded(slow).await?;
        let need = match need {
            Need::Rotate => Need::Newer(self.current().map_or(0, |active| active.generation())),
            need => need,
        };
        let health = self.read().health.clone();
        match health {
            Health::Latched(latch) => {
                if !self.recheck_latched(slow, &latch).await {
                    return Err(latch.error());
                }
            }
            Health::PersistPending => self.retry_pending(slow).await?,
            Health::Ready | Health::Unloaded => {}
        }
        self.recheck_held(slow).await;
        let now = Instant::now();
        let current = self.current();
        if let Some(active) = &current
            && active.usable(need, now)
        {
            return Ok(Prepared::Usable(Arc::clone(active)));
        }
        let held = slow.held_until.is_some_and(|until| now < until);
        if (held || self.attempts.load(Ordering::SeqCst) != seen)
            && let Some(failure) = &slow.last_failure
        {
            // The refresh this caller waited for failed, or refreshes are held back after a
            // grant within the expiry skew: share its outcome rather than hammer the token
            // endpoint once per waiter.
            return match current {
                Some(active) if need == Need::Fresh && still_valid(&active, now) => {
                    Ok(Prepared::Usable(active))
                }
                _ => Err(surface(failure)),
            };
        }
        Ok(Prepared::Refresh(need))
    }

    /// A latched family re-reads the store, at most once per
    /// [`RefreshTiming::store_recheck_interval`](crate::RefreshTiming), and adopts a newer
    /// pair another process saved (a re-authorisation done elsewhere). Returns whether it
    /// did, and so is healthy again.
    async fn recheck_latched(&self, slow: &mut SlowState, latch: &Latch) -> bool {
        let now = Instant::now();
        if now < latch.recheck_at {
            return false;
        }
        if let Some(active) = self.adopt_stored(slow).await {
            tracing::info!(
                generation = active.generation(),
                reason = latch.reason.as_str(),
                "a newer token pair in the store ends the re-authorisation requirement"
            );
            return true;
        }
        let recheck_at = later(now, self.timing.recheck_interval());
        self.write().health = Health::Latched(Arc::new(latch.rechecked(recheck_at)));
        false
    }

    /// While refreshes are held back (a grant within the expiry skew), re-reads the store at
    /// most once per [`RefreshTiming::store_recheck_interval`](crate::RefreshTiming): a newer
    /// pair another process stored meanwhile is adopted, which ends the hold.
    async fn recheck_held(&self, slow: &mut SlowState) {
        let now = Instant::now();
        let held = slow.held_until.is_some_and(|until| now < until);
        if !held || slow.held_recheck_at.is_some_and(|at| now < at) {
            return;
        }
        slow.held_recheck_at = Some(later(now, self.timing.recheck_interval()));
        if let Some(active) = self.adopt_stored(slow).await {
            tracing::info!(
                generation = active.generation(),
                "a newer token pair in the store ends the hold on refreshes"
            );
        }
    }

    /// A refresh with the lease held.
    pub(crate) async fn refresh_leased(
        &self,
        slow: &mut SlowState,
        need: Need,
    ) -> Result<Arc<Active>, DrChronoError> {
        if let Err(error) = self.lease.acquire().await {
            tracing::warn!(error = %error, "could not acquire the refresh lease");
            return Err(store_failure(error, context()));
        }
        self.holding_lease(self.refresh(slow, need)).await
    }

    /// Runs `work` with the lease, just acquired, held, and releases it whatever happens
    /// inside, a panic included (a user's hook, store or transport): a lease left held, and
    /// renewed, would stop every process's refresh. The panic then goes on: it fails the
    /// task `work` runs on, whose caller gets an unsent `Transport` error (`join_failure`).
    pub(crate) async fn holding_lease<T>(&self, work: impl Future<Output = T>) -> T {
        let result = AssertUnwindSafe(work).catch_unwind().await;
        self.lease.release().await;
        result.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    async fn ensure_loaded(&self, slow: &mut SlowState) -> Result<(), DrChronoError> {
        if !matches!(self.read().health, Health::Unloaded) {
            return Ok(());
        }
        match self.store.load().await {
            Err(error) => {
                tracing::warn!(error = %error, "could not load tokens from the store");
                Err(store_failure(error, context()))
            }
            Ok(Some(tokens)) => {
                tracing::debug!(
                    generation = tokens.generation,
                    "loaded tokens from the store"
                );
                slow.persisted_generation = tokens.generation;
                slow.initial = None;
                self.install(tokens, None, Health::Ready);
                Ok(())
            }
            Ok(None) => match slow.initial.take() {
                Some(tokens) => {
                    let tokens = tokens.with_generation(slow.persisted_generation + 1);
                    self.persist_new(slow, tokens, None).await.map(drop)
                }
                None => {
                    let reason = ReauthorizationReason::NoTokens;
                    Err(self.latch(slow, reason, None, context(), 0, None))
                }
            },
        }
    }

    /// One refresh (more if `invalid_grant` turns out to be a rotation by another process,
    /// whose pair is adopted), with the lease held.
    async fn refresh(
        &self,
        slow: &mut SlowState,
        need: Need,
    ) -> Result<Arc<Active>, DrChronoError> {
        // The store must be read before the refresh token is spent: a process that could not
        // read it may hold a refresh token another process already rotated (the store is
        // shared; after a Redis failover its connection breaks for a moment).
        match self.adopt_stored_or_fail(slow).await {
            Ok(Some(active)) if active.usable(need, Instant::now()) => return Ok(active),
            Ok(_) => {}
            Err(error) => return Err(store_failure(error, context())),
        }
        let mut rounds = 0;
        loop {
            rounds += 1;
            let Some(current) = self.current() else {
                let reason = ReauthorizationReason::NoTokens;
                return Err(self.latch(slow, reason, None, context(), 0, None));
            };
            let from = current.generation();
            tracing::info!(generation = from, "token refresh started");
            // One span per call of the token endpoint (OpenTelemetry-shaped traces: the
            // request that waited for a token shows what it waited for).
            // Signed, so that `tracing-opentelemetry` exports an int, not a string.
            let generation = i64::try_from(from).unwrap_or(i64::MAX);
            let span = tracing::info_span!("oauth.refresh", drchrono.token.generation = generation);
            let result = self
                .client
                .exchange(&current.tokens.refresh_token)
                .instrument(span)
                .await;
            self.attempts.fetch_add(1, Ordering::SeqCst);
            match result {
                Refreshed::Granted(grant) => {
                    slow.last_failure = None;
                    slow.held_until = None;
                    let next = from.max(slow.persisted_generation) + 1;
                    let (tokens, lifetime) = next_pair(&current.tokens, grant, next, self);
                    tracing::info!(
                        old_generation = from,
                        generation = tokens.generation,
                        expires_in_secs = lifetime.as_secs(),
                        "token refresh succeeded"
                    );
                    let active = match self.persist_new(slow, tokens, Some(lifetime)).await {
                        Ok(active) => active,
                        Err(error) => {
                            // Installed all the same, as pending: a grant within the skew
                            // holds refreshes back whether or not it was saved, or the next
                            // request, once it saved the pair, would rotate it again at once.
                            // The caller gets the store's error; later ones the hold's.
                            if let Some(pending) = self.current()
                                && !still_valid(&pending, Instant::now())
                            {
                                let _held = self.hold_after_short_grant(slow, &pending, lifetime);
                            }
                            return Err(error);
                        }
                    };
                    if still_valid(&active, Instant::now()) {
                        return Ok(active);
                    }
                    return Err(self.hold_after_short_grant(slow, &active, lifetime));
                }
                Refreshed::Rotated { rotated, error } => {
                    return self.keep_rotated(slow, &current, rotated, error).await;
                }
                Refreshed::Failed(DrChronoError::ReauthorizationRequired {
                    description,
                    context,
                }) => {
                    // Another process may have spent the refresh token a moment ago and
                    // stored the new pair: adopt it instead of giving up. Only a store that
                    // holds nothing newer makes this a re-authorisation (and fires the hook);
                    // a store that cannot be read (twice, 100 ms apart) fails the request
                    // unsent instead, so that a failover's broken connection is not taken
                    // for a revoked grant.
                    if rounds < MAX_REFRESH_ROUNDS {
                        match self.adopt_stored_or_fail(slow).await {
                            Ok(Some(active)) => {
                                if active.usable(need, Instant::now()) {
                                    return Ok(active);
                                }
                                continue;
                            }
                            Ok(None) => {}
                            Err(error) => return Err(store_failure(error, *context)),
                        }
                    }
                    tracing::warn!(generation = from, "token refresh failed: invalid_grant");
                    let reason = ReauthorizationReason::InvalidGrant;
                    let rejected = Some(&current.tokens.refresh_token);
                    return Err(self.latch(slow, reason, description, *context, from, rejected));
                }
                Refreshed::Failed(DrChronoError::InvalidClient {
                    description,
                    context,
                }) => {
                    tracing::warn!(generation = from, "token refresh failed: invalid_client");
                    let reason = ReauthorizationReason::InvalidClient;
                    let rejected = Some(&current.tokens.refresh_token);
                    return Err(self.latch(slow, reason, description, *context, from, rejected));
                }
                Refreshed::Failed(error) => {
                    tracing::warn!(
                        generation = from,
                        kind = error.kind_name(),
                        status = error.status().map(|status| status.as_u16()),
                        "token refresh failed"
                    );
                    let now = Instant::now();
                    if need == Need::Fresh && still_valid(&current, now) {
                        // Keep using the valid token; try again a little later.
                        let retry_at = later(now, self.timing.retry_after_failure());
                        let postponed = Arc::new(current.postponed(retry_at));
                        self.write().active = Some(Arc::clone(&postponed));
                        return Ok(postponed);
                    }
                    let error = Arc::new(error);
                    slow.last_failure = Some(Arc::clone(&error));
                    return Err(surface(&error));
                }
            }
        }
    }

    /// A grant whose token lives no longer than the expiry skew (so `Active::new` made it
    /// expire at once) was installed, persisted or pending: it rotated the pair, and its
    /// refresh token is the only live one. Its token is never sent: the callers waiting on
    /// it fail, and so does every caller, with no refresh, for the retry interval. Each
    /// refresh rotates the pair at DrChrono; one per request would be a refresh storm.
    /// Logged once per grant, at `error`: the server or the configured skew needs a look.
    fn hold_after_short_grant(
        &self,
        slow: &mut SlowState,
        active: &Active,
        lifetime: Duration,
    ) -> DrChronoError {
        let short = GrantWithinSkew {
            lifetime,
            skew: self.timing.skew(),
            hold: self.timing.retry_after_failure(),
        };
        tracing::error!(
            generation = active.generation(),
            expires_in = ?short.lifetime,
            expiry_skew = ?short.skew,
            held_for = ?short.hold,
            "the token endpoint granted an access token that lives no longer than the expiry \
             skew: the pair is kept, the token is never sent, refreshes are held back"
        );
        let error = Arc::new(DrChronoError::Transport {
            not_sent: false,
            source: Box::new(short),
            context: Box::new(context()),
        });
        slow.last_failure = Some(Arc::clone(&error));
        let now = Instant::now();
        slow.held_until = Some(later(now, short.hold));
        slow.held_recheck_at = Some(later(now, self.timing.recheck_interval()));
        surface(&error)
    }

    /// [`adopt_stored`](Self::adopt_stored) before a refresh: a store that cannot be read
    /// is asked once more after [`STORE_REREAD_DELAY`], then the refresh is given up (the
    /// request fails unsent, and is retried): spending a refresh token without knowing
    /// whether another process rotated it would get `invalid_grant`.
    async fn adopt_stored_or_fail(
        &self,
        slow: &mut SlowState,
    ) -> Result<Option<Arc<Active>>, StoreError> {
        let loaded = match self.store.load().await {
            Err(error) => {
                tracing::warn!(error = %error, "could not read the token store before a refresh");
                tokio::time::sleep(STORE_REREAD_DELAY).await;
                self.store.load().await
            }
            loaded => loaded,
        };
        match loaded {
            Ok(stored) => Ok(self.adopt(slow, stored)),
            Err(error) => {
                tracing::warn!(error = %error, "could not read the token store before a refresh");
                Err(error)
            }
        }
    }

    /// Installs `stored` if it is a newer generation than this process has.
    fn adopt(&self, slow: &mut SlowState, stored: Option<TokenSet>) -> Option<Arc<Active>> {
        let current = self.current().map_or(0, |active| active.generation());
        match stored {
            Some(stored) if stored.generation > current.max(slow.persisted_generation) => {
                tracing::info!(
                    old_generation = current,
                    generation = stored.generation,
                    "adopted a newer token pair from the store"
                );
                slow.persisted_generation = stored.generation;
                // What held or failed the replaced pair's refresh is not the new pair's.
                slow.last_failure = None;
                slow.held_until = None;
                Some(self.install(stored, None, Health::Ready))
            }
            _ => None,
        }
    }

    /// Installs the stored pair if another writer stored a newer generation.
    pub(crate) async fn adopt_stored(&self, slow: &mut SlowState) -> Option<Arc<Active>> {
        match self.store.load().await {
            Ok(stored) => self.adopt(slow, stored),
            Err(error) => {
                tracing::warn!(error = %error, "could not reload the token store");
                None
            }
        }
    }
}

/// The longest access-token lifetime taken from a grant: a year (DrChrono's is 48 hours).
const MAX_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// `now + interval`, or a date decades away when that overflows.
pub(crate) fn later(now: Instant, interval: Duration) -> Instant {
    now.checked_add(interval)
        .unwrap_or_else(|| now + Duration::from_secs(u64::from(u32::MAX)))
}

fn still_valid(active: &Active, now: Instant) -> bool {
    active.header.is_some() && now < active.expires_at
}

/// The context of errors that arise in the layer itself (no response).
pub(crate) fn context() -> ErrorContext {
    let mut context = ErrorContext::new();
    context.occurred_at = Some(SystemTime::now());
    context
}

/// The pair a grant makes, and its lifetime.
fn next_pair(
    current: &TokenSet,
    grant: TokenGrant,
    generation: u64,
    shared: &Shared,
) -> (TokenSet, Duration) {
    // A lifetime past any a server means (`"expires_in": 18446744073709551615`) is taken as
    // a year: the grant has rotated the pair, and it must be kept, not lost to an overflow.
    let lifetime = grant
        .expires_in
        .unwrap_or_else(|| shared.timing.lifetime_when_unknown())
        .min(MAX_LIFETIME);
    let now = SystemTime::now();
    let tokens = TokenSet {
        access_token: grant.access_token,
        refresh_token: grant
            .refresh_token
            .unwrap_or_else(|| current.refresh_token.clone()),
        expires_at: now.checked_add(lifetime).unwrap_or(now),
        issued_at: Some(now),
        scope: grant.scope.or_else(|| current.scope.clone()),
        generation,
    };
    (tokens, lifetime)
}
