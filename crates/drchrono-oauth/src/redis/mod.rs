//! Redis (feature `redis`): the token store and the refresh lease that the processes and
//! hosts of one application share, each on the connection `conn` opens.

mod conn;
mod lease;
mod store;

pub use self::lease::RedisRefreshLease;
pub use self::store::RedisTokenStore;
