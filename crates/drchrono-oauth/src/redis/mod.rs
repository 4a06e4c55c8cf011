//! Redis (feature `redis`): the token store and the refresh lease that the processes and
//! hosts of one application share, each on the connection `conn` opens.

mod conn;
mod lease;
mod store;

pub use self::lease::{
    DEFAULT_LEASE_ACQUIRE_TIMEOUT, DEFAULT_LEASE_POLL_INTERVAL, MIN_LEASE_TTL, RedisRefreshLease,
};
pub use self::store::RedisTokenStore;
