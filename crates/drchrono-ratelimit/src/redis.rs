//! Redis (feature `redis`): one application's budget shared by every process and host.
//!
//! `backend` is the [`Backend`](crate::Backend) (with its local fallback while Redis is
//! unreachable), `builder` its options, `script` the limiter core as one Lua script,
//! `status` the reading of that script's replies, and `journal` a process's own charges,
//! re-asserted to a server that lost them in a failover.

mod backend;
mod builder;
mod journal;
mod script;
mod status;

pub use self::backend::RedisRateLimitBackend;
pub use self::builder::{
    DEFAULT_FAILOVER_HOLD, DEFAULT_REDIS_KEY_PREFIX, DEFAULT_REDIS_RETRY_INTERVAL,
    DEFAULT_REDIS_TIMEOUT, RedisBackendBuilder,
};
pub use self::script::RedisClock;
pub use drchrono_core::redis::{RedisConnect, RedisConnection};
