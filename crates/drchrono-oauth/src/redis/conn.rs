//! The Redis connection shared by [`RedisTokenStore`](crate::RedisTokenStore) and
//! [`RedisRefreshLease`](crate::RedisRefreshLease): one reconnecting, multiplexed
//! `ConnectionManager`, and a server name that is safe to print (never the URL, which may
//! carry a password).

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError};

use crate::StoreError;

/// How long one connection attempt may take: 1 s.
pub(crate) const CONNECTION_TIMEOUT: Duration = Duration::from_secs(1);

/// How long one command may take before it fails: 2 s.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Reconnection attempts after a connection breaks, before commands fail (the next command
/// starts a new round): 2.
const RECONNECT_RETRIES: usize = 2;

/// A connection and the server's printable name.
pub(crate) struct Connected {
    pub(crate) manager: ConnectionManager,
    pub(crate) server: String,
}

/// Connects to `url` (`redis://[:password@]host:port[/db]`, `rediss://…`, `unix://…`).
pub(crate) async fn connect(url: &str) -> Result<Connected, StoreError> {
    let client = Client::open(url).map_err(backend)?;
    let server = server_name(&client);
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECTION_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(RECONNECT_RETRIES);
    let manager = ConnectionManager::new_with_config(client, config)
        .await
        .map_err(backend)?;
    Ok(Connected { manager, server })
}

/// `host:port/db`: no user name, no password.
fn server_name(client: &Client) -> String {
    let info = client.get_connection_info();
    format!("{}/{}", info.addr(), info.redis_settings().db())
}

/// A Redis failure as a store error. Redis errors carry the server's message and the
/// command's name, never our arguments (tokens).
pub(crate) fn backend(error: RedisError) -> StoreError {
    StoreError::Backend {
        source: Box::new(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_name_never_shows_the_password() {
        let client = Client::open("redis://user:hunter2-SECRET@10.0.0.7:6380/3").unwrap();
        let name = server_name(&client);
        assert_eq!(name, "10.0.0.7:6380/3");
    }

    #[tokio::test]
    async fn a_bad_url_is_a_backend_error() {
        let error = connect("not a url").await.err().unwrap();
        assert!(matches!(error, StoreError::Backend { .. }), "{error:?}");
    }
}
