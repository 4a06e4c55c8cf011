//! What a 401 on the current token calls for: one refresh, at most one per token
//! generation and none within [`RefreshTiming::unauthorized_refresh_interval`] of the last
//! one, so that a 401 a new token does not cure never becomes a refresh loop.
//!
//! [`RefreshTiming::unauthorized_refresh_interval`]: crate::RefreshTiming::unauthorized_refresh_interval

use std::sync::Arc;
use std::sync::atomic::Ordering;

use drchrono_core::DrChronoError;
use tokio::time::Instant;
use tracing::Instrument;

use crate::active::{Active, Need};
use crate::manager::{Shared, SlowState};
use crate::refresh::Prepared;

/// A refresh caused by a 401 on the current token.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UnauthorizedRefresh {
    /// When it completed.
    pub(crate) at: Instant,
    /// The generation it installed.
    pub(crate) generation: u64,
}

impl Shared {
    /// After a 401 on a request that carried `generation`: the pair to replay it with, or
    /// `None` when the 401 stands (a refresh caused by a 401 completed less than
    /// [`RefreshTiming::unauthorized_refresh_interval`](crate::RefreshTiming::unauthorized_refresh_interval) ago, and the
    /// store holds nothing newer).
    pub(crate) async fn after_unauthorized(
        self: &Arc<Self>,
        generation: u64,
    ) -> Result<Option<Arc<Active>>, DrChronoError> {
        let seen = self.attempts.load(Ordering::SeqCst);
        let mut slow = Arc::clone(&self.slow).lock_owned().await;
        let shared = Arc::clone(self);
        let work = async move {
            shared
                .after_unauthorized_locked(&mut slow, generation, seen)
                .await
        };
        tokio::spawn(work.instrument(tracing::Span::current()))
            .await
            .unwrap_or_else(|join| Err(crate::error::join_failure(join)))
    }

    async fn after_unauthorized_locked(
        &self,
        slow: &mut SlowState,
        generation: u64,
        seen: u64,
    ) -> Result<Option<Arc<Active>>, DrChronoError> {
        let need = match self.prepare(slow, Need::Newer(generation), seen).await? {
            Prepared::Usable(active) => return Ok(Some(active)),
            Prepared::Refresh(need) => need,
        };
        let interval = self.timing.min_unauthorized_refresh_interval();
        if let Some(last) = slow.after_unauthorized
            && Instant::now().saturating_duration_since(last.at) < interval
        {
            // No new token would cure it: a refresh caused by a 401 happened a moment ago.
            // Another process may have rotated the pair meanwhile, though: re-read the store.
            if let Some(active) = self.adopt_stored_leased(slow).await
                && active.usable(need, Instant::now())
            {
                return Ok(Some(active));
            }
            tracing::warn!(
                generation,
                refreshed_generation = last.generation,
                persisted_after_refresh = generation == last.generation,
                min_interval_secs = interval.as_secs(),
                "401 on the current token soon after a refresh caused by a 401: not refreshing"
            );
            return Ok(None);
        }
        let calls = self.attempts.load(Ordering::SeqCst);
        let active = self.refresh_leased(slow, need).await?;
        if self.attempts.load(Ordering::SeqCst) != calls {
            slow.after_unauthorized = Some(UnauthorizedRefresh {
                at: Instant::now(),
                generation: active.generation(),
            });
        }
        Ok(Some(active))
    }

    /// Re-reads the store with the lease held when it can be had, so that a rotation
    /// another process has under way is saved before we look. The lease is released
    /// whatever happens, a panicking store included ([`Shared::holding_lease`]).
    async fn adopt_stored_leased(&self, slow: &mut SlowState) -> Option<Arc<Active>> {
        match self.lease.acquire().await {
            Ok(()) => self.holding_lease(self.adopt_stored(slow)).await,
            Err(error) => {
                tracing::warn!(error = %error, "could not acquire the refresh lease");
                self.adopt_stored(slow).await
            }
        }
    }
}
