//! [`RefreshLease`]: "only one job runs the refresh", across processes.

use std::fmt;

use futures::future::{self, BoxFuture};

use crate::StoreError;

/// Exclusive permission to refresh one token family, shared by every process that uses it.
///
/// Within a process, [`TokenManager`](crate::TokenManager) already lets exactly one refresh
/// run at a time. Processes that share a token family (one [`TokenStore`](crate::TokenStore)
/// seen by several processes) also need a lease, or two of them could spend the same
/// refresh token and one would get `invalid_grant`. While it holds the lease, the manager
/// reloads the store (adopting any pair another process saved), refreshes only if still
/// needed, saves, then releases.
///
/// The manager calls [`acquire`](RefreshLease::acquire) and
/// [`release`](RefreshLease::release) in pairs, and never acquires twice at once: an
/// implementation may keep its lock token in `self`. With the `redis` feature,
/// `RedisRefreshLease` is one in Redis (`SET NX PX` with a unique owner value, renewed while
/// held, released by compare-and-delete).
pub trait RefreshLease: fmt::Debug + Send + Sync + 'static {
    /// Waits until this process holds the lease.
    fn acquire(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Gives the lease back. Must not fail: an implementation that cannot release lets the
    /// lease expire.
    fn release(&self) -> BoxFuture<'_, ()>;
}

/// The default lease: the process is the only user of its token family, so the manager's
/// own single-flight lock is all the exclusion needed.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalLease;

impl RefreshLease for LocalLease {
    fn acquire(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(future::ready(Ok(())))
    }

    fn release(&self) -> BoxFuture<'_, ()> {
        Box::pin(future::ready(()))
    }
}
