//! The Redis connection of the crates' Redis backends (feature `redis`): one server, plain
//! or TLS, or a Redis Cluster, with an ACL user; see [`RedisConnect`].
//!
//! The rate limiter's state, the token store and the refresh lease each open one with
//! [`RedisConnect::connect`] (or take one the application opened: [`RedisConnection`]).

use std::fmt;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{
    Client, Cmd, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisFuture, RedisResult,
    TlsCertificates, Value,
};

/// How long one connection attempt may take, by default: 1 s.
pub const DEFAULT_CONNECTION_TIMEOUT: Duration = Duration::from_secs(1);

/// How long one command may take before it fails, by default: 2 s.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where and how to connect to Redis: one server or a cluster, TLS trusted through the
/// system's roots or a private CA, and the timeouts. Credentials go in the URL (an ACL user:
/// `rediss://user:password@host:6380/0`), and are never printed: [`server`](Self::server)
/// names the host, port and database only.
///
/// ```no_run
/// use drchrono_core::redis::RedisConnect;
///
/// # async fn run() -> Result<(), redis::RedisError> {
/// // TLS (in-transit encryption of a managed Redis), an ACL user, a private CA.
/// let ca = std::fs::read("/etc/my-app/redis-ca.pem")?;
/// let tls = RedisConnect::url("rediss://drchrono:s3cret@redis.internal:6380/0")
///     .root_ca_pem(ca)
///     .connect()
///     .await?;
/// // A Redis Cluster: any of its nodes; the others are discovered.
/// let cluster = RedisConnect::cluster(["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"])
///     .connect()
///     .await?;
/// # let _ = (tls, cluster);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
#[must_use]
pub struct RedisConnect {
    nodes: Vec<String>,
    cluster: bool,
    root_ca: Option<Vec<u8>>,
    connection_timeout: Duration,
    response_timeout: Duration,
    reconnect_retries: usize,
}

impl RedisConnect {
    /// One server: `redis://[user[:password]@]host:port[/db]`, `rediss://…` for TLS (the
    /// system's root certificates, or [`root_ca_pem`](Self::root_ca_pem)), `unix://…`.
    pub fn url(url: impl Into<String>) -> Self {
        Self {
            nodes: vec![url.into()],
            cluster: false,
            root_ca: None,
            connection_timeout: DEFAULT_CONNECTION_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            reconnect_retries: 2,
        }
    }

    /// A Redis Cluster, from one or more of its nodes' URLs (`redis://` or `rediss://`, the
    /// same user and password on each): the client discovers the others and follows `MOVED`
    /// and `ASK` redirections. The crates keep each application's keys in one hash slot.
    pub fn cluster<I>(urls: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        Self {
            nodes: urls.into_iter().map(Into::into).collect(),
            cluster: true,
            ..Self::url(String::new())
        }
    }

    /// Trusts the CA certificate `pem` (PEM) for `rediss://` instead of the system's roots:
    /// a private CA, as a self-hosted Redis with TLS has.
    pub fn root_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_ca = Some(pem.into());
        self
    }

    /// How long one connection attempt may take (default
    /// [`DEFAULT_CONNECTION_TIMEOUT`], 1 s).
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// How long one command may take before it fails (default [`DEFAULT_RESPONSE_TIMEOUT`],
    /// 2 s).
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Reconnection attempts after a single server's connection breaks, before commands fail
    /// (the next command starts a new round). Default: 2.
    pub fn reconnect_retries(mut self, retries: usize) -> Self {
        self.reconnect_retries = retries;
        self
    }

    /// Whether this names a cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// `host:port/db` of the (first) server, `+` the number of other seed nodes for a
    /// cluster: safe to print (no user, no password); `(invalid URL)` if it cannot be parsed.
    pub fn server(&self) -> String {
        let first = self
            .nodes
            .first()
            .and_then(|url| url.as_str().into_connection_info().ok());
        let Some(info) = first else {
            return "(invalid URL)".to_owned();
        };
        let name = server_name(&info);
        match self.nodes.len() {
            n if self.cluster && n > 1 => format!("cluster {name} +{}", n - 1),
            _ if self.cluster => format!("cluster {name}"),
            _ => name,
        }
    }

    fn certificates(&self) -> Option<TlsCertificates> {
        self.root_ca.clone().map(|root| TlsCertificates {
            client_tls: None,
            root_cert: Some(root),
        })
    }

    /// Connects: a reconnecting, multiplexed `ConnectionManager` for one server, a
    /// `ClusterConnection` for a cluster.
    ///
    /// # Errors
    /// The URL is invalid, or no server could be reached, or TLS or authentication failed.
    pub async fn connect(&self) -> RedisResult<RedisConnection> {
        ensure_crypto_provider();
        if self.cluster {
            let mut builder = ClusterClientBuilder::new(self.nodes.clone())
                .connection_timeout(self.connection_timeout)
                .response_timeout(self.response_timeout);
            if let Some(certs) = self.certificates() {
                builder = builder.certs(certs);
            }
            let client = builder.build()?;
            return Ok(RedisConnection::Cluster(
                client.get_async_connection().await?,
            ));
        }
        let url = self.nodes.first().map_or("", String::as_str);
        let client = match self.certificates() {
            Some(certs) => Client::build_with_tls(url, certs)?,
            None => Client::open(url)?,
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connection_timeout))
            .set_response_timeout(Some(self.response_timeout))
            .set_number_of_retries(self.reconnect_retries);
        Ok(RedisConnection::Single(
            ConnectionManager::new_with_config(client, config).await?,
        ))
    }
}

impl fmt::Debug for RedisConnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConnect")
            .field("server", &self.server())
            .field("cluster", &self.cluster)
            .field("private_ca", &self.root_ca.is_some())
            .field("connection_timeout", &self.connection_timeout)
            .field("response_timeout", &self.response_timeout)
            .finish_non_exhaustive()
    }
}

/// rustls needs a process-wide crypto provider when more than one is compiled in (an
/// application may enable aws-lc-rs beside this crate's ring): installs ring's unless the
/// application installed one.
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Another thread may install one first: either way one is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// `host:port/db`: no user name, no password.
fn server_name(info: &ConnectionInfo) -> String {
    format!("{}/{}", info.addr(), info.redis_settings().db())
}

/// A connection to one Redis server or to a Redis Cluster. Cheap to clone: clones share
/// the connection (multiplexed).
#[derive(Clone)]
pub enum RedisConnection {
    /// One server (plain or TLS): reconnects by itself.
    Single(ConnectionManager),
    /// A Redis Cluster: follows `MOVED` and `ASK`, refreshes its slot map.
    Cluster(ClusterConnection),
}

impl From<ConnectionManager> for RedisConnection {
    fn from(connection: ConnectionManager) -> Self {
        Self::Single(connection)
    }
}

impl From<ClusterConnection> for RedisConnection {
    fn from(connection: ClusterConnection) -> Self {
        Self::Cluster(connection)
    }
}

impl fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Single(_) => "RedisConnection::Single",
            Self::Cluster(_) => "RedisConnection::Cluster",
        })
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(connection) => connection.req_packed_command(cmd),
            Self::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(connection) => connection.req_packed_commands(cmd, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(connection) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_name_never_shows_the_user_or_password() {
        let connect = RedisConnect::url("rediss://drchrono:hunter2-SECRET@10.0.0.7:6380/3");
        assert_eq!(connect.server(), "10.0.0.7:6380/3");
        let debug = format!("{connect:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("drchrono:"),
            "{debug}"
        );
        let cluster = RedisConnect::cluster([
            "redis://u:hunter2-SECRET@10.0.0.1:7000",
            "redis://u:hunter2-SECRET@10.0.0.2:7000",
        ]);
        assert_eq!(cluster.server(), "cluster 10.0.0.1:7000/0 +1");
        assert!(cluster.is_cluster());
    }

    #[tokio::test]
    async fn a_bad_url_is_an_error_not_a_panic() {
        assert!(RedisConnect::url("not a url").connect().await.is_err());
        assert_eq!(RedisConnect::url("not a url").server(), "(invalid URL)");
        let no_nodes = RedisConnect::cluster(Vec::<String>::new());
        assert!(no_nodes.connect().await.is_err());
    }

    #[tokio::test]
    async fn a_private_ca_that_is_not_pem_is_an_error() {
        let connect = RedisConnect::url("rediss://127.0.0.1:1/0").root_ca_pem(b"not pem".to_vec());
        assert!(connect.connect().await.is_err());
    }
}
