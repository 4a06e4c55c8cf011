//! The slow path: loading and refreshing, one task at a time per token family.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use drchrono_classify::{DrChronoError, ErrorContext};
use tokio::time::Instant;
use tracing::Instrument;

use crate::TokenSet;
use crate::active::{Active, Need};
use crate::error::{store_failure, surface};
use crate::manager::{Health, Shared, SlowState};
use crate::response::TokenGrant;
use crate::status::ReauthorizationReason;

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
        self.ensure_loaded(slow).await?;
        let need = match need {
            Need::Rotate => Need::Newer(self.current().map_or(0, |active| active.generation())),
            need => need,
        };
        let health = self.read().health.clone();
        match health {
            Health::Latched(latch) => return Err(latch.error()),
            Health::PersistPending => self.retry_pending(slow).await?,
            Health::Ready | Health::Unloaded => {}
        }
        let now = Instant::now();
        let current = self.current();
        if let Some(active) = &current
            && active.usable(need, now)
        {
            return Ok(Arc::clone(active));
        }
        if self.attempts.load(Ordering::SeqCst) != seen
            && let Some(failure) = &slow.last_failure
        {
            // The refresh this caller waited for failed: share its outcome rather than
            // hammer the token endpoint once per waiter.
            return match current {
                Some(active) if need == Need::Fresh && still_valid(&active, now) => Ok(active),
                _ => Err(surface(failure)),
            };
        }
        if let Err(error) = self.lease.acquire().await {
            tracing::warn!(error = %error, "could not acquire the refresh lease");
            return Err(store_failure(error, context()));
        }
        let result = self.refresh(slow, need).await;
        self.lease.release().await;
        result
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
                None => Err(self.latch(ReauthorizationReason::NoTokens, None, context(), 0)),
            },
        }
    }

    /// One refresh (two if `invalid_grant` turns out to be a rotation by another process),
    /// with the lease held.
    async fn refresh(
        &self,
        slow: &mut SlowState,
        need: Need,
    ) -> Result<Arc<Active>, DrChronoError> {
        if let Some(active) = self.adopt_stored(slow).await
            && active.usable(need, Instant::now())
        {
            return Ok(active);
        }
        let mut adopted_after_invalid_grant = false;
        loop {
            let Some(current) = self.current() else {
                return Err(self.latch(ReauthorizationReason::NoTokens, None, context(), 0));
            };
            let from = current.generation();
            tracing::info!(generation = from, "token refresh started");
            let result = self.client.refresh(&current.tokens.refresh_token).await;
            self.attempts.fetch_add(1, Ordering::SeqCst);
            match result {
                Ok(grant) => {
                    slow.last_failure = None;
                    let next = from.max(slow.persisted_generation) + 1;
                    let (tokens, lifetime) = next_pair(&current.tokens, grant, next, self);
                    tracing::info!(
                        old_generation = from,
                        generation = tokens.generation,
                        expires_in_secs = lifetime.as_secs(),
                        "token refresh succeeded"
                    );
                    return self.persist_new(slow, tokens, Some(lifetime)).await;
                }
                Err(DrChronoError::ReauthorizationRequired {
                    description,
                    context,
                }) => {
                    // Another process may have spent the refresh token a moment ago and
                    // stored the new pair: adopt it instead of giving up.
                    if !adopted_after_invalid_grant
                        && let Some(active) = self.adopt_stored(slow).await
                    {
                        adopted_after_invalid_grant = true;
                        if active.usable(need, Instant::now()) {
                            return Ok(active);
                        }
                        continue;
                    }
                    tracing::warn!(generation = from, "token refresh failed: invalid_grant");
                    let reason = ReauthorizationReason::InvalidGrant;
                    return Err(self.latch(reason, description, *context, from));
                }
                Err(DrChronoError::InvalidClient {
                    description,
                    context,
                }) => {
                    tracing::warn!(generation = from, "token refresh failed: invalid_client");
                    let reason = ReauthorizationReason::InvalidClient;
                    return Err(self.latch(reason, description, *context, from));
                }
                Err(error) => {
                    tracing::warn!(
                        generation = from,
                        kind = error.kind_name(),
                        status = error.status().map(|status| status.as_u16()),
                        "token refresh failed"
                    );
                    let now = Instant::now();
                    if need == Need::Fresh && still_valid(&current, now) {
                        // Keep using the valid token; try again a little later.
                        let retry_at = now + self.timing.retry_after_failure();
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

    /// Installs the stored pair if another writer stored a newer generation.
    async fn adopt_stored(&self, slow: &mut SlowState) -> Option<Arc<Active>> {
        let current = self.current().map_or(0, |active| active.generation());
        match self.store.load().await {
            Ok(Some(stored)) if stored.generation > current.max(slow.persisted_generation) => {
                tracing::info!(
                    old_generation = current,
                    generation = stored.generation,
                    "adopted a newer token pair from the store"
                );
                slow.persisted_generation = stored.generation;
                Some(self.install(stored, None, Health::Ready))
            }
            Ok(_) => None,
            Err(error) => {
                tracing::warn!(error = %error, "could not reload the token store");
                None
            }
        }
    }
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
    let lifetime = grant
        .expires_in
        .unwrap_or_else(|| shared.timing.lifetime_when_unknown());
    let now = SystemTime::now();
    let tokens = TokenSet {
        access_token: grant.access_token,
        refresh_token: grant
            .refresh_token
            .unwrap_or_else(|| current.refresh_token.clone()),
        expires_at: now + lifetime,
        issued_at: Some(now),
        scope: grant.scope.or_else(|| current.scope.clone()),
        generation,
    };
    (tokens, lifetime)
}
