//! [`RedisRefreshLease`]: "only one job runs the refresh", across processes and hosts.

use std::collections::hash_map::RandomState;
use std::error::Error as StdError;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use drchrono_core::redis::{RedisConnect, RedisConnection};
use futures::future::BoxFuture;
use redis::Script;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::conn::{backend, connect};
use crate::{RefreshLease, StoreError};

/// Default interval between two attempts to take a lease another process holds: 20 ms.
const DEFAULT_LEASE_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Default longest wait for a lease another process holds: 60 s.
const DEFAULT_LEASE_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(60);

/// Shortest lease time-to-live: 100 ms (shorter ones are raised to it).
const MIN_LEASE_TTL: Duration = Duration::from_millis(100);

/// `PEXPIRE` the lease if this process still owns it. `ARGV` = owner, ttl (ms).
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
",
    )
});

/// Delete the lease if this process still owns it. `ARGV` = owner.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
",
    )
});

/// A [`RefreshLease`] in Redis: exactly one process of all those sharing a token family
/// calls the token endpoint at a time.
///
/// - **Acquire**: `SET key <owner> NX PX <ttl>`, where the owner value is unique to this
///   acquisition (process id, a random 64-bit value, a counter): the fencing token. While
///   another process holds the lease, retry every
///   [`poll_interval`](RedisRefreshLease::poll_interval) (default 20 ms), for at most
///   [`acquire_timeout`](RedisRefreshLease::acquire_timeout) (default 60 s).
/// - **Hold**: a background task renews the expiry every third of the TTL, only while the
///   key still holds our owner value (Lua), so a refresh slower than the TTL keeps its lease.
/// - **Release**: delete the key only if it still holds our owner value (Lua): a process
///   whose lease expired never deletes the lease of the process that took over.
/// - **Holder dies**: nothing renews the key; it expires after the TTL and a waiting
///   process takes over. A refresh token the dead process had sent but not yet saved the
///   answer of is lost with it (DrChrono rotated it): the next holder gets `invalid_grant`
///   and the family needs re-authorisation. That window is one token-endpoint round trip.
///
/// With the lease held, [`TokenManager`](crate::TokenManager) re-reads its
/// [`TokenStore`](crate::TokenStore) (use [`RedisTokenStore`](crate::RedisTokenStore) on
/// the same server) and adopts a pair another process saved while it waited, so the
/// waiting processes never send a refresh token that was already used. If a holder stalls
/// for longer than the TTL (a frozen VM) another process may refresh meanwhile; the stalled
/// one then gets `invalid_grant`, re-reads the store, and adopts the new pair.
///
/// Redis unreachable: acquiring fails with [`StoreError::Backend`], so a refresh is never
/// attempted without the lease (requests that still hold a valid token keep going).
///
/// ```no_run
/// use std::sync::Arc;
/// use std::time::Duration;
/// use drchrono_oauth::RedisRefreshLease;
///
/// # async fn run() -> Result<(), drchrono_oauth::StoreError> {
/// let lease = RedisRefreshLease::connect(
///     "redis://127.0.0.1:6379/",
///     "drchrono:lease:my-app",
///     Duration::from_secs(10),
/// )
/// .await?;
/// // TokenManager::builder(client).lease(Arc::new(lease)) …
/// # let _ = Arc::new(lease);
/// # Ok(()) }
/// ```
pub struct RedisRefreshLease {
    connection: RedisConnection,
    key: String,
    server: String,
    ttl: Duration,
    poll_interval: Duration,
    acquire_timeout: Duration,
    held: Mutex<Option<Held>>,
}

/// The lease this process holds.
struct Held {
    owner: String,
    renewal: JoinHandle<()>,
}

impl RedisRefreshLease {
    /// Connects to the Redis server at `url` and uses the lease at `key`, which expires
    /// `ttl` after its holder stops renewing it (raised to at least 100 ms).
    ///
    /// Choose `ttl` as how long the other processes may wait after a holder dies: a few
    /// seconds. The connection settings are those of
    /// [`RedisTokenStore::connect`](crate::RedisTokenStore::connect).
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the URL is invalid or the server cannot be reached.
    pub async fn connect(
        url: &str,
        key: impl Into<String>,
        ttl: Duration,
    ) -> Result<Self, StoreError> {
        Self::connect_with(&RedisConnect::url(url), key, ttl).await
    }

    /// [`connect`](Self::connect) as `target` says: TLS with a private CA, an ACL user, a
    /// Redis Cluster (the lease is one key: any hash slot).
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the URL is invalid or the server cannot be reached.
    pub async fn connect_with(
        target: &RedisConnect,
        key: impl Into<String>,
        ttl: Duration,
    ) -> Result<Self, StoreError> {
        let connected = connect(target).await?;
        let mut lease = Self::with_connection(connected.connection, key, ttl);
        lease.server = connected.server;
        Ok(lease)
    }

    /// A lease at `key` over a connection the application already has (a
    /// `ConnectionManager`, a `ClusterConnection` or a [`RedisConnection`]).
    pub fn with_connection(
        connection: impl Into<RedisConnection>,
        key: impl Into<String>,
        ttl: Duration,
    ) -> Self {
        Self {
            connection: connection.into(),
            key: key.into(),
            server: "(shared connection)".to_owned(),
            ttl: ttl.max(MIN_LEASE_TTL),
            poll_interval: DEFAULT_LEASE_POLL_INTERVAL,
            acquire_timeout: DEFAULT_LEASE_ACQUIRE_TIMEOUT,
            held: Mutex::new(None),
        }
    }

    /// Interval between two attempts to take a lease another process holds. Default: 20 ms;
    /// a lease is taken about once per token lifetime, so polling costs nothing the rest of
    /// the time.
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Longest wait for a lease another process holds; then acquiring fails with
    /// [`StoreError::Backend`] (the caller's request fails as not sent). Default: 60 s.
    #[must_use]
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    fn held(&self) -> MutexGuard<'_, Option<Held>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX)
    }
}

impl RefreshLease for RedisRefreshLease {
    fn acquire(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let owner = unique_owner();
            let started = Instant::now();
            let mut connection = self.connection.clone();
            loop {
                let taken: Option<String> = redis::cmd("SET")
                    .arg(&self.key)
                    .arg(&owner)
                    .arg("NX")
                    .arg("PX")
                    .arg(self.ttl_ms())
                    .query_async(&mut connection)
                    .await
                    .map_err(backend)?;
                if taken.is_some() {
                    tracing::debug!(
                        key = %self.key,
                        waited_ms = started.elapsed().as_millis() as u64,
                        "refresh lease acquired"
                    );
                    let renewal = tokio::spawn(renew(
                        self.connection.clone(),
                        self.key.clone(),
                        owner.clone(),
                        self.ttl,
                    ));
                    if let Some(stale) = self.held().replace(Held { owner, renewal }) {
                        stale.renewal.abort();
                    }
                    return Ok(());
                }
                if started.elapsed() >= self.acquire_timeout {
                    tracing::warn!(key = %self.key, "refresh lease still held elsewhere: giving up");
                    return Err(StoreError::Backend {
                        source: Box::new(LeaseTimeout {
                            waited: started.elapsed(),
                        }),
                    });
                }
                tokio::time::sleep(self.poll_interval).await;
            }
        })
    }

    fn release(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let Some(held) = self.held().take() else {
                return;
            };
            held.renewal.abort();
            let mut connection = self.connection.clone();
            let released: Result<i64, _> = RELEASE
                .key(&self.key)
                .arg(&held.owner)
                .invoke_async(&mut connection)
                .await;
            match released {
                Ok(1) => tracing::debug!(key = %self.key, "refresh lease released"),
                Ok(_) => tracing::warn!(
                    key = %self.key,
                    "refresh lease had expired before release (another process may hold it)"
                ),
                Err(error) => tracing::warn!(
                    key = %self.key,
                    error = %error,
                    "could not release the refresh lease; it will expire"
                ),
            }
        })
    }
}

/// Renews the lease every third of its TTL while we still own it.
async fn renew(mut connection: RedisConnection, key: String, owner: String, ttl: Duration) {
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    loop {
        tokio::time::sleep(ttl / 3).await;
        let renewed: Result<i64, _> = RENEW
            .key(&key)
            .arg(&owner)
            .arg(ttl_ms)
            .invoke_async(&mut connection)
            .await;
        match renewed {
            Ok(1) => {}
            Ok(_) => {
                tracing::warn!(%key, "refresh lease lost while held (it expired)");
                return;
            }
            Err(error) => {
                tracing::warn!(%key, error = %error, "could not renew the refresh lease");
            }
        }
    }
}

impl Drop for RedisRefreshLease {
    fn drop(&mut self) {
        if let Some(held) = self.held().take() {
            // Dropped while held: stop renewing; the lease expires after its TTL.
            held.renewal.abort();
        }
    }
}

impl fmt::Debug for RedisRefreshLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRefreshLease")
            .field("server", &self.server)
            .field("key", &self.key)
            .field("ttl", &self.ttl)
            .field("poll_interval", &self.poll_interval)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("held", &self.held().is_some())
            .finish()
    }
}

/// A value no other acquisition, in this process or another, will use.
fn unique_owner() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(count);
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos()),
    );
    format!("{}:{:016x}:{count}", std::process::id(), hasher.finish())
}

/// Another process held the lease for longer than the acquire timeout.
#[derive(Debug)]
struct LeaseTimeout {
    waited: Duration,
}

impl fmt::Display for LeaseTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the refresh lease was still held by another process after {:.1} s",
            self.waited.as_secs_f64()
        )
    }
}

impl StdError for LeaseTimeout {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_unique() {
        let owners: std::collections::HashSet<_> = (0..1000).map(|_| unique_owner()).collect();
        assert_eq!(owners.len(), 1000);
        assert!(unique_owner().starts_with(&format!("{}:", std::process::id())));
    }

    #[test]
    fn lease_timeout_says_how_long() {
        let shown = LeaseTimeout {
            waited: Duration::from_millis(2500),
        }
        .to_string();
        assert!(shown.contains("2.5 s"), "{shown}");
    }
}
