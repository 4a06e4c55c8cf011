//! The Redis connection shared by [`RedisTokenStore`](crate::RedisTokenStore) and
//! [`RedisRefreshLease`](crate::RedisRefreshLease): a [`RedisConnection`] (one server, plain
//! or TLS, or a Cluster) opened by a [`RedisConnect`], and a server name that is safe to
//! print (never the URL, which may carry a password).

use drchrono_core::redis::{RedisConnect, RedisConnection};
use redis::RedisError;

use crate::StoreError;

/// A connection and the server's printable name.
pub(crate) struct Connected {
    pub(crate) connection: RedisConnection,
    pub(crate) server: String,
}

/// Connects as `target` says.
pub(crate) async fn connect(target: &RedisConnect) -> Result<Connected, StoreError> {
    let connection = target.connect().await.map_err(backend)?;
    Ok(Connected {
        connection,
        server: target.server(),
    })
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

    #[tokio::test]
    async fn a_bad_url_is_a_backend_error() {
        let error = connect(&RedisConnect::url("not a url"))
            .await
            .err()
            .unwrap();
        assert!(matches!(error, StoreError::Backend { .. }), "{error:?}");
    }
}
