//! [`RedisBackendBuilder`]: the options of a [`RedisRateLimitBackend`].

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use redis::Client;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::redis_backend::{Fallback, redis_error};
use crate::redis_script::LimiterScript;
use crate::{
    BackendError, LocalLimiter, RateLimitConfig, RedisClock, RedisRateLimitBackend, Rule, RuleKind,
};

/// Default prefix of the limiter's Redis keys: `"drchrono:ratelimit"`.
pub const DEFAULT_REDIS_KEY_PREFIX: &str = "drchrono:ratelimit";

/// Default timeout of one Redis command, and of one connection attempt: 1 s.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_secs(1);

/// Default time during which an unreachable Redis is not asked again: 1 s.
pub const DEFAULT_REDIS_RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// Builds a [`RedisRateLimitBackend`]; see [`RedisRateLimitBackend::builder`]. Every option
/// states its default.
///
/// ```no_run
/// use std::time::Duration;
/// use drchrono_ratelimit::{RateLimitConfig, RedisRateLimitBackend};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let config = RateLimitConfig::builder().application("my-drchrono-app").build()?;
/// // Three workers: while Redis is down each may use a third of the budget.
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
        }
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
    /// rule's maximum (rounded down, at least one request; values above 100 count as 100).
    /// Default 0: no fallback, fail closed with a [`BackendError`].
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

    /// Connects to the Redis server at `url` (`redis://[:password@]host:port[/db]`,
    /// `rediss://…`, `unix://…`) with a reconnecting, multiplexed `ConnectionManager`.
    ///
    /// # Errors
    /// [`BackendError`] when the URL is invalid or the server cannot be reached.
    pub async fn connect(self, url: &str) -> Result<RedisRateLimitBackend, BackendError> {
        let client = Client::open(url).map_err(redis_error)?;
        let info = client.get_connection_info();
        let server = format!("{}/{}", info.addr(), info.redis_settings().db());
        let settings = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1);
        let connection = ConnectionManager::new_with_config(client, settings)
            .await
            .map_err(redis_error)?;
        self.build(connection, server)
    }

    /// The backend over a connection the application already has (its timeouts apply).
    ///
    /// # Errors
    /// Never in practice: [`BackendError`] if the fallback's configuration could not be
    /// derived from the limiter's.
    pub fn with_connection(
        self,
        connection: ConnectionManager,
    ) -> Result<RedisRateLimitBackend, BackendError> {
        self.build(connection, "(shared connection)".to_owned())
    }

    fn build(
        self,
        connection: ConnectionManager,
        server: String,
    ) -> Result<RedisRateLimitBackend, BackendError> {
        let fallback = match self.fallback_percent {
            0 => None,
            percent => Some(Fallback {
                percent,
                limiter: LocalLimiter::new(&share(&self.config, percent)?),
                unsynced: AtomicU64::new(0),
            }),
        };
        Ok(RedisRateLimitBackend {
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

/// `config` with every rule's maximum cut to `percent` % (at least 1).
fn share(config: &RateLimitConfig, percent: u8) -> Result<RateLimitConfig, BackendError> {
    let rules = config.rules().iter().map(|rule| {
        let max = u32::try_from(u64::from(rule.max()) * u64::from(percent) / 100)
            .unwrap_or(u32::MAX)
            .max(1);
        match rule.kind() {
            RuleKind::Aligned => Rule::aligned(max, rule.period()),
            _ => Rule::sliding(max, rule.period()),
        }
    });
    RateLimitConfig::builder()
        .rules(rules.collect::<Result<Vec<_>, _>>().map_err(invalid)?)
        .safety_margin(config.safety_margin())
        .background_reserve_percent(config.background_reserve_percent())
        .smooth_pacing(config.smooth_pacing())
        .application(config.application())
        .build()
        .map_err(invalid)
}

fn invalid(error: crate::ConfigError) -> BackendError {
    BackendError::new("redis", error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fallback_holds_a_share_of_every_rule() {
        let config = RateLimitConfig::builder()
            .safety_margin(Duration::from_millis(7))
            .build()
            .unwrap();
        let third = share(&config, 33).unwrap();
        let maxima: Vec<_> = third.rules().iter().map(|rule| rule.max()).collect();
        assert_eq!(maxima, [2, 95, 165]);
        assert_eq!(third.rules()[2].kind(), RuleKind::Aligned);
        assert_eq!(third.safety_margin(), Duration::from_millis(7));
        let tiny = share(&config, 1).unwrap();
        assert_eq!(tiny.rules()[0].max(), 1);
        let builder = RedisBackendBuilder::new(&config).fallback_percent(250);
        assert_eq!(builder.fallback_percent, 100);
    }
}
