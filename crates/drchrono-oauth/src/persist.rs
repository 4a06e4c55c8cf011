//! Persisting and installing pairs (a rotated refresh token alone included), latching, and
//! `set_tokens`.

use std::hash::BuildHasher;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, PoisonError, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime};

use drchrono_core::{DrChronoError, ErrorContext};
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;
use tracing::Instrument;

use crate::active::Active;
use crate::error::{store_failure, surface};
use crate::manager::{Freshness, Health, Latch, Shared, SlowState, Snapshot};
use crate::refresh::{context, later};
use crate::response::Rotated;
use crate::status::ReauthorizationReason;
use crate::{AuthStatus, ReauthorizationEvent, StoreError, TokenSet};

/// The snapshot under its write lock ([`Shared::write`]); publishes its freshness when
/// dropped, before the lock is released.
pub(crate) struct SnapshotWriter<'a> {
    snapshot: RwLockWriteGuard<'a, Snapshot>,
    freshness: &'a Freshness,
}

impl Deref for SnapshotWriter<'_> {
    type Target = Snapshot;

    fn deref(&self) -> &Snapshot {
        &self.snapshot
    }
}

impl DerefMut for SnapshotWriter<'_> {
    fn deref_mut(&mut self) -> &mut Snapshot {
        &mut self.snapshot
    }
}

impl Drop for SnapshotWriter<'_> {
    fn drop(&mut self) {
        self.freshness.publish(&self.snapshot);
    }
}

/// Compare-and-swap rounds before a save gives up on a store that keeps changing.
const MAX_SAVE_ROUNDS: usize = 4;

/// How a save ended.
pub(crate) enum Saved {
    /// Our pair is stored.
    Ours,
    /// Another writer stored a newer pair first; it is returned for adoption.
    Theirs(TokenSet),
}

impl Shared {
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Snapshot> {
        self.snapshot.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The snapshot, to change: its freshness is copied for the fast path when the writer
    /// is dropped, before the lock is released.
    pub(crate) fn write(&self) -> SnapshotWriter<'_> {
        SnapshotWriter {
            snapshot: self
                .snapshot
                .write()
                .unwrap_or_else(PoisonError::into_inner),
            freshness: &self.freshness,
        }
    }

    pub(crate) fn current(&self) -> Option<Arc<Active>> {
        self.read().active.clone()
    }

    /// Saves the pair that is installed but not yet persisted. One from `set_tokens` keeps
    /// its overwrite (renumbered above the stored pair, as `set_tokens` does); one from a
    /// refresh adopts a newer stored pair ([`SlowState::pending_overwrite`]).
    pub(crate) async fn retry_pending(&self, slow: &mut SlowState) -> Result<(), DrChronoError> {
        let Some(active) = self.current() else {
            return Ok(());
        };
        let mut tokens = active.tokens.clone();
        let overwrite = slow.pending_overwrite == Some(active.generation());
        if overwrite {
            // An earlier attempt may have met a newer stored generation before it failed.
            tokens.generation = tokens.generation.max(slow.persisted_generation + 1);
        }
        let saved = self.save(slow, &mut tokens, !overwrite).await;
        if saved.is_ok() {
            slow.pending_overwrite = None;
        }
        match saved {
            Ok(Saved::Ours) if tokens.generation == active.generation() => {
                tracing::info!(
                    generation = tokens.generation,
                    "persisted the pending token pair"
                );
                self.write().health = Health::Ready;
                self.status.send_replace(AuthStatus::Active {
                    generation: tokens.generation,
                });
            }
            Ok(Saved::Ours) => {
                tracing::info!(
                    old_generation = active.generation(),
                    generation = tokens.generation,
                    "persisted the pending token pair as a newer generation"
                );
                self.install(tokens, None, Health::Ready);
            }
            Ok(Saved::Theirs(theirs)) => {
                self.install(theirs, None, Health::Ready);
            }
            Err(error) => {
                tracing::warn!(
                    generation = tokens.generation,
                    error = %error,
                    "the token pair is still not persisted"
                );
                return Err(store_failure(error, context()));
            }
        }
        Ok(())
    }

    /// Persists a new pair, then installs it. On failure the pair is installed as pending.
    pub(crate) async fn persist_new(
        &self,
        slow: &mut SlowState,
        mut tokens: TokenSet,
        lifetime: Option<Duration>,
    ) -> Result<Arc<Active>, DrChronoError> {
        match self.save(slow, &mut tokens, true).await {
            Ok(Saved::Ours) => Ok(self.install(tokens, lifetime, Health::Ready)),
            Ok(Saved::Theirs(theirs)) => Ok(self.install(theirs, None, Health::Ready)),
            Err(error) => {
                tracing::warn!(
                    generation = tokens.generation,
                    error = %error,
                    "could not persist the new token pair; keeping it in memory"
                );
                self.install(tokens, lifetime, Health::PersistPending);
                Err(store_failure(error, context()))
            }
        }
    }

    /// A 2xx answer whose access token cannot be used has still rotated the pair: the
    /// refresh token `current` holds is dead, and so is its access token (DrChrono revokes
    /// it on refresh), even one not yet expired. The rotated one is persisted, as the next
    /// generation, in a pair without an access token (what
    /// [`TokenSet::from_refresh_token`] makes: the next request refreshes with it), and the
    /// refresh fails with `error` (a [`MalformedTokenResponse`](crate::MalformedTokenResponse)),
    /// shared by the callers waiting on it. A pair that cannot be persisted stays in memory
    /// as pending, and the next request saves it before refreshing with it.
    pub(crate) async fn keep_rotated(
        &self,
        slow: &mut SlowState,
        current: &Active,
        rotated: Rotated,
        error: DrChronoError,
    ) -> Result<Arc<Active>, DrChronoError> {
        let from = current.generation();
        let tokens = TokenSet {
            scope: rotated.scope.or_else(|| current.tokens.scope.clone()),
            generation: from.max(slow.persisted_generation) + 1,
            ..TokenSet::from_refresh_token(rotated.refresh_token)
        };
        tracing::warn!(
            old_generation = from,
            generation = tokens.generation,
            reason = rotated.reason.name(),
            "token refresh failed: the token endpoint rotated the refresh token but sent no \
             usable access token; keeping the rotated refresh token for the next refresh"
        );
        // A save that fails is logged by `persist_new`, which keeps the pair as pending: the
        // next request saves it before refreshing with it.
        let _pending = self.persist_new(slow, tokens, None).await;
        let error = Arc::new(error);
        slow.last_failure = Some(Arc::clone(&error));
        Err(surface(&error))
    }

    /// Compare-and-swap with conflict handling: a newer pair from another writer is
    /// adopted when `adopt_newer`; otherwise (or when the store went backwards) ours is
    /// renumbered above the stored one and written again.
    pub(crate) async fn save(
        &self,
        slow: &mut SlowState,
        tokens: &mut TokenSet,
        adopt_newer: bool,
    ) -> Result<Saved, StoreError> {
        let mut last = None;
        for _ in 0..MAX_SAVE_ROUNDS {
            match self.store.save(slow.persisted_generation, tokens).await {
                Ok(()) => {
                    slow.persisted_generation = tokens.generation;
                    return Ok(Saved::Ours);
                }
                Err(StoreError::Conflict { expected, current }) => {
                    let stored = current.as_ref().map_or(0, |theirs| theirs.generation);
                    if let Some(theirs) = current
                        && adopt_newer
                        && stored > slow.persisted_generation
                    {
                        tracing::warn!(
                            generation = tokens.generation,
                            stored_generation = stored,
                            "another writer stored a newer token pair first; adopting it"
                        );
                        slow.persisted_generation = stored;
                        return Ok(Saved::Theirs(*theirs));
                    }
                    slow.persisted_generation = stored;
                    tokens.generation = tokens.generation.max(stored + 1);
                    last = Some(StoreError::Conflict {
                        expected,
                        current: None,
                    });
                }
                Err(error) => return Err(error),
            }
        }
        Err(last.unwrap_or(StoreError::Conflict {
            expected: slow.persisted_generation,
            current: None,
        }))
    }

    pub(crate) fn install(
        &self,
        tokens: TokenSet,
        lifetime: Option<Duration>,
        health: Health,
    ) -> Arc<Active> {
        let generation = tokens.generation;
        let active = Arc::new(Active::new(tokens, &self.timing, lifetime));
        let status = match health {
            Health::PersistPending => AuthStatus::PersistPending { generation },
            _ => AuthStatus::Active { generation },
        };
        {
            let mut snapshot = self.write();
            snapshot.active = Some(Arc::clone(&active));
            snapshot.health = health;
        }
        self.status.send_replace(status);
        active
    }

    /// Stops refreshing until `set_tokens` or a newer pair in the store, tells the
    /// application (once per rejected refresh token: `rejected`, `None` when there was
    /// none), and returns the error for the caller.
    pub(crate) fn latch(
        &self,
        slow: &mut SlowState,
        reason: ReauthorizationReason,
        description: Option<String>,
        context: ErrorContext,
        generation: u64,
        rejected: Option<&SecretString>,
    ) -> DrChronoError {
        let latch = Arc::new(Latch {
            reason,
            description: description.clone(),
            context,
            recheck_at: later(Instant::now(), self.timing.recheck_interval()),
        });
        let error = latch.error();
        self.write().health = Health::Latched(latch);
        self.status
            .send_replace(AuthStatus::ReauthorizationRequired {
                reason,
                description: description.clone(),
            });
        tracing::error!(
            generation,
            reason = reason.as_str(),
            "token refresh stopped: re-authorisation required"
        );
        let fire = match rejected {
            Some(token) => {
                let fingerprint = self.fingerprints.hash_one(token.expose_secret());
                slow.hooked.replace(fingerprint) != Some(fingerprint)
            }
            None => true,
        };
        if fire && let Some(hook) = &self.hook {
            hook(&ReauthorizationEvent {
                reason,
                generation,
                description,
                at: SystemTime::now(),
            });
        }
        error
    }

    /// `set_tokens`: install and persist a pair from a new OAuth authorisation.
    pub(crate) async fn install_new(self: &Arc<Self>, tokens: TokenSet) -> Result<u64, StoreError> {
        let mut slow = Arc::clone(&self.slow).lock_owned().await;
        let shared = Arc::clone(self);
        let task = async move {
            let current = shared.current().map_or(0, |active| active.generation());
            let mut tokens = tokens.with_generation(current.max(slow.persisted_generation) + 1);
            slow.initial = None;
            slow.last_failure = None;
            slow.held_until = None;
            slow.after_unauthorized = None;
            match shared.save(&mut slow, &mut tokens, false).await {
                Ok(_) => {
                    let generation = tokens.generation;
                    tracing::info!(generation, "installed new tokens");
                    slow.pending_overwrite = None;
                    shared.install(tokens, None, Health::Ready);
                    Ok(generation)
                }
                Err(error) => {
                    tracing::warn!(
                        generation = tokens.generation,
                        error = %error,
                        "could not persist the new tokens; keeping them in memory"
                    );
                    // Saved later by `retry_pending`, which must overwrite the store then
                    // too, not adopt the pair it holds.
                    slow.pending_overwrite = Some(tokens.generation);
                    shared.install(tokens, None, Health::PersistPending);
                    Err(error)
                }
            }
        };
        tokio::spawn(task.instrument(tracing::Span::current()))
            .await
            .unwrap_or_else(|join| {
                Err(StoreError::Backend {
                    source: Box::new(join),
                })
            })
    }
}
