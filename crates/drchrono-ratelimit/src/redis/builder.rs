//! [`RedisBackendBuilder`]: the options of a [`RedisRateLimitBackend`].

use std::sync::Mutex;
use std::time::Duration;

use drchrono_core::redis::{RedisConnect, RedisConnection};

use super::backend::{Fallback, redis_error};
use super::journal::Journal;
use super::script::LimiterScript;
use crate::{BackendError, RateLimitConfig, RedisClock, RedisRateLimitBackend};

/// Default prefix of the limiter's Redis keys: `"drchrono:ratelimit"`.
pub const DEFAULT_REDIS_KEY_PREFIX: &str = "drchrono:ratelimit";

/// Default timeout of one Redis command, and of one connection attempt: 1 s.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_secs(1);

/// Default time during which an unreachable Redis is not asked again: 1 s.
pub const DEFAULT_REDIS_RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// Default hold of every decision after a failover lost charges, so that the other
/// processes re-assert theirs before anyone is admitted: 1 s.
pub const DEFAULT_FAILOVER_HOLD: Duration = Duration::from_secs(1);

/// Builds a [`RedisRateLimitBackend`]; see [`RedisRateLimitBackend::builder`]. Every option
/// states its default.
///
/// ```no_run
/// use std::time::Duration;
/// use drchrono_ratelimit::{RateLimitConfig, RedisRateLimitBackend};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let config = RateLimitConfig::builder().application("my-drchrono-app").build()?;
/// // Three workers: while Redis is down each may use a third of the budget (the percents
/// // of all workers must sum to at most 100).
/// let backend = RedisRateLimitBackend::builder(&config)
///     .fallback_percent(33)
///     .timeout(Duration::from_millis(500))
///     .connect("redis://127.0.0.1:6379/")
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct RedisBackendBuilder {
    config: RateLimitConfig,
    prefix: String,
    clock: RedisClock,
    fallback_percent: u8,
    timeout: Duration,
    retry_interval: Duration,
    journal: bool,
    failover_hold: Duration,
}

impl RedisBackendBuilder {
    pub(crate) fn new(config: &RateLimitConfig) -> Self {
        Self {
            config: config.clone(),
            prefix: DEFAULT_REDIS_KEY_PREFIX.to_owned(),
            clock: RedisClock::Server,
            fallback_percent: 0,
            timeout: DEFAULT_REDIS_TIMEOUT,
            retry_interval: DEFAULT_REDIS_RETRY_INTERVAL,
            journal: true,
            failover_hold: DEFAULT_FAILOVER_HOLD,
        }
    }

    /// Whether this process keeps a journal of its own charges and re-asserts them to a
    /// server that lost them. Default `true`.
    ///
    /// Redis replicates asynchronously: a replica promoted after a failover lacks the last
    /// decisions of the old primary, and every process would then believe the window and
    /// the hour hold fewer requests than DrChrono counted. With the journal, each decision
    /// carries the number of charges this process was told of; a server that holds fewer
    /// answers so, and the process re-asserts the instants of the missing ones (those still
    /// within the longest rule; idempotently) before it decides again, while every process's
    /// decisions are held for [`failover_hold`](Self::failover_hold) so that the others
    /// re-assert theirs first. What remains possible: the charges of a process that sends
    /// nothing during the hold (idle, or dead) are missing until it next decides (or for
    /// good), at most what it charged in the replication lag. `false` only to measure what
    /// the journal prevents.
    pub fn failover_journal(mut self, journal: bool) -> Self {
        self.journal = journal;
        self
    }

    /// How long every decision is held after a process found charges lost, so that the
    /// other processes, each asking again every 50 ms at most meanwhile, re-assert theirs
    /// first. Default [`DEFAULT_FAILOVER_HOLD`] (1 s).
    pub fn failover_hold(mut self, hold: Duration) -> Self {
        self.failover_hold = hold;
        self
    }

    /// The prefix of every key. Default [`DEFAULT_REDIS_KEY_PREFIX`]; the application key
    /// follows it as a Redis Cluster hash tag (`<prefix>:{<application>}:…`).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Which clock decides. Default [`RedisClock::Server`] (Redis's `TIME`).
    pub fn clock(mut self, clock: RedisClock) -> Self {
        self.clock = clock;
        self
    }

    /// While Redis is unreachable, decide locally on a budget holding `percent` % of each
    /// rule's maximum, rounded down (values above 100 count as 100). Default 0: no fallback,
    /// fail closed with a [`BackendError`].
    ///
    /// **The percents of all processes sharing the application must sum to at most 100**
    /// (each of `N` processes at most `100 / N` %): then, during an outage, together they
    /// never exceed any rule, whatever was spent before it. For the window and the period
    /// in progress when Redis failed, a process allows itself only `percent` % of what
    /// provably remained of them (what its latest Redis decision saw, less what the other
    /// processes may have charged since, less its own releases Redis was not charged for);
    /// its plain share applies once that window (plus margin) has passed and that period
    /// has ended. A process that never heard from Redis releases nothing before then. See
    /// [`RedisRateLimitBackend`]'s "When Redis is unreachable".
    ///
    /// A rule whose share rounds down to 0 refuses every request in the fallback, which
    /// then only holds requests until Redis answers again (a warning is logged when the
    /// backend is built): with DrChrono's 9 per second, use at least 12 % (`9 × 12 % =
    /// 1.08`), so at most 8 processes can have a fallback that admits anything.
    pub fn fallback_percent(mut self, percent: u8) -> Self {
        self.fallback_percent = percent.min(100);
        self
    }

    /// Timeout of one Redis command and of one connection attempt. Default
    /// [`DEFAULT_REDIS_TIMEOUT`] (1 s). Applies to [`connect`](Self::connect) only.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// After a failure, how long Redis is not asked again (requests fail fast, or use the
    /// fallback, meanwhile). Default [`DEFAULT_REDIS_RETRY_INTERVAL`] (1 s).
    pub fn retry_interval(mut self, interval: Duration) -> Self {
        self.retry_interval = interval;
        self
    }

    /// Connects to the Redis server at `url` (`redis://[user[:password]@]host:port[/db]`,
    /// `rediss://…` for TLS with the system's roots, `unix://…`) with a reconnecting,
    /// multiplexed `ConnectionManager`. For a private CA or a Redis Cluster, see
    /// [`connect_with`](Self::connect_with).
    ///
    /// # Errors
    /// [`BackendError`] when the URL is invalid or the server cannot be reached.
    pub async fn connect(self, url: &str) -> Result<RedisRateLimitBackend, BackendError> {
        let target = RedisConnect::url(url)
            .connection_timeout(self.timeout)
            .response_timeout(self.timeout)
            .reconnect_retries(1);
        self.connect_with(&target).await
    }

    /// Connects as `target` says: TLS with a private CA, an ACL user, or a Redis Cluster
    /// (the application's keys share one hash slot, so each decision is one script on one
    /// node). `target`'s timeouts apply, not [`timeout`](Self::timeout).
    ///
    /// # Errors
    /// [`BackendError`] when a URL is invalid or no server can be reached.
    pub async fn connect_with(
        self,
        target: &RedisConnect,
    ) -> Result<RedisRateLimitBackend, BackendError> {
        let connection = target.connect().await.map_err(redis_error)?;
        self.build(connection, target.server())
    }

    /// The backend over a connection the application already has (its timeouts apply): a
    /// `ConnectionManager`, a `ClusterConnection` or a [`RedisConnection`].
    ///
    /// # Errors
    /// Never in practice: [`BackendError`] if the fallback's configuration could not be
    /// derived from the limiter's.
    pub fn with_connection(
        self,
        connection: impl Into<RedisConnection>,
    ) -> Result<RedisRateLimitBackend, BackendError> {
        self.build(connection.into(), "(shared connection)".to_owned())
    }

    fn build(
        self,
        connection: RedisConnection,
        server: String,
    ) -> Result<RedisRateLimitBackend, BackendError> {
        let fallback = match self.fallback_percent {
            0 => None,
            percent => Some(Fallback::new(&self.config, percent).map_err(invalid)?),
        };
        let horizon = self
            .config
            .rules()
            .iter()
            .map(|rule| rule.period())
            .max()
            .unwrap_or_default()
            + self.config.safety_margin();
        Ok(RedisRateLimitBackend {
            journal: self.journal.then(|| Journal::new(horizon)),
            failover_hold: self.failover_hold,
            connection,
            server,
            application: self.config.application().to_owned(),
            rules: self.config.rules().to_vec(),
            script: LimiterScript::new(&self.config, &self.prefix, self.clock),
            fallback,
            retry_interval: self.retry_interval,
            down_until: Mutex::new(None),
        })
    }
}

fn invalid(error: crate::ConfigError) -> BackendError {
    BackendError::new("redis", error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fallback_percent_is_at_most_100() {
        let config = RateLimitConfig::default();
        let builder = RedisBackendBuilder::new(&config).fallback_percent(250);
        assert_eq!(builder.fallback_percent, 100);
    }
}
