//! [`RedisTokenStore`]: one token family in a Redis hash, replaced by compare-and-swap in a
//! Lua script.

use std::fmt;
use std::sync::{Arc, LazyLock};

use drchrono_core::redis::{RedisConnect, RedisConnection};
use futures::future::BoxFuture;
use redis::Script;
use secrecy::zeroize::Zeroize;

use super::conn::{backend, connect};
use crate::{StoreError, TokenSet, TokenStore};

/// The layout version written in the hash's `version` field.
const FORMAT_VERSION: u64 = 1;

/// Compare-and-swap on the generation: `ARGV` = expected generation, version, new
/// generation, tokens (JSON). Replies `{1, nil}` when saved, `{0, stored tokens or nil}`
/// when the stored generation (0 when absent) is not the expected one.
static SAVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local stored = redis.call('HGET', KEYS[1], 'generation')
if (stored or '0') ~= ARGV[1] then
  return {0, redis.call('HGET', KEYS[1], 'tokens')}
end
redis.call('HSET', KEYS[1], 'version', ARGV[2], 'generation', ARGV[3], 'tokens', ARGV[4])
return {1, false}
",
    )
});

/// A [`TokenStore`] in Redis, shared by every process (and host) that uses one token family.
///
/// The pair lives in one hash at the key given to [`connect`](RedisTokenStore::connect),
/// with no expiry: `version` (`1`), `generation` and `tokens` (the JSON of [`TokenSet`]:
/// access and refresh token in clear text, expiry, scope, generation). A save is one Lua script that compares
/// the stored generation with the expected one and writes only if they match, so two
/// processes can never overwrite each other's rotation: the loser gets
/// [`StoreError::Conflict`] with the winner's pair and adopts it.
///
/// Pair it with a [`RedisRefreshLease`](crate::RedisRefreshLease) on the same server so that
/// only one process refreshes at a time; the manager re-reads this store under the lease
/// and adopts a newer generation instead of spending a refresh token another process
/// already used.
///
/// # The store is the source of truth
/// The refresh token rotates on every refresh: the copy in Redis is the only one that stays
/// valid. A save resolves once Redis has applied it; it is as durable as Redis is
/// configured to be. Run Redis with persistence (`appendonly yes`, ideally `appendfsync
/// always`) and a replica: if Redis loses the key (a restart without persistence, a flush,
/// eviction under `maxmemory` with an `allkeys-*` policy), processes that are running keep
/// their pair in memory and write it back at their next save (the compare-and-swap sees an
/// empty store and they renumber above it), but a process that starts meanwhile finds the
/// store empty and falls back to its configured initial refresh token, which is revoked
/// after the first rotation: it gets `ReauthorizationRequired`. If Redis goes back to an
/// older snapshot, the stored refresh token is already revoked in the same way.
///
/// Redis unreachable: [`load`](TokenStore::load) and [`save`](TokenStore::save) fail with
/// [`StoreError::Backend`]. The manager keeps using a valid token it holds; a rotated pair
/// it could not save stays in memory and every request retries the save before using it.
///
/// Anyone who can read the key can use the tokens: protect Redis like any secret store
/// (`requirepass` / ACLs, TLS with `rediss://`, no public exposure). `Debug` prints the key
/// and the server's address, never a token or the URL's password; nothing is logged.
///
/// ```no_run
/// use drchrono_oauth::{RedisTokenStore, TokenStore};
///
/// # async fn run() -> Result<(), drchrono_oauth::StoreError> {
/// let store = RedisTokenStore::connect("redis://127.0.0.1:6379/", "drchrono:tokens:my-app").await?;
/// let stored = store.load().await?; // None until the first save
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisTokenStore {
    connection: RedisConnection,
    key: Arc<str>,
    server: Arc<str>,
}

impl RedisTokenStore {
    /// Connects to the Redis server at `url` (`redis://[user[:password]@]host:port[/db]`,
    /// `rediss://…` for TLS with the system's roots, `unix://…`) and stores the pair at
    /// `key`. For a private CA or a Cluster, see [`connect_with`](Self::connect_with).
    ///
    /// The connection reconnects by itself; each connection attempt times out after 1 s
    /// and each command after 2 s.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the URL is invalid or the server cannot be reached.
    pub async fn connect(url: &str, key: impl Into<String>) -> Result<Self, StoreError> {
        Self::connect_with(&RedisConnect::url(url), key).await
    }

    /// Connects as `target` says (TLS with a private CA, an ACL user, a Redis Cluster) and
    /// stores the pair at `key` (one key: any hash slot).
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the URL is invalid or the server cannot be reached.
    pub async fn connect_with(
        target: &RedisConnect,
        key: impl Into<String>,
    ) -> Result<Self, StoreError> {
        let connected = connect(target).await?;
        Ok(Self {
            connection: connected.connection,
            key: key.into().into(),
            server: connected.server.into(),
        })
    }

    /// A store at `key` over a connection the application already has (a
    /// `ConnectionManager`, a `ClusterConnection` or a [`RedisConnection`]).
    pub fn with_connection(connection: impl Into<RedisConnection>, key: impl Into<String>) -> Self {
        Self {
            connection: connection.into(),
            key: key.into().into(),
            server: "(shared connection)".into(),
        }
    }
}

impl fmt::Debug for RedisTokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTokenStore")
            .field("server", &self.server)
            .field("key", &self.key)
            .finish()
    }
}

impl TokenStore for RedisTokenStore {
    fn load(&self) -> BoxFuture<'_, Result<Option<TokenSet>, StoreError>> {
        let mut connection = self.connection.clone();
        Box::pin(async move {
            let (version, generation, tokens): (Option<u64>, Option<u64>, Option<String>) =
                redis::cmd("HMGET")
                    .arg(&*self.key)
                    .arg("version")
                    .arg("generation")
                    .arg("tokens")
                    .query_async(&mut connection)
                    .await
                    .map_err(backend)?;
            match (version, tokens) {
                (None, None) if generation.is_none() => Ok(None),
                (Some(FORMAT_VERSION), Some(tokens)) => decode(tokens, generation).map(Some),
                (Some(found), _) if found != FORMAT_VERSION => {
                    Err(StoreError::UnsupportedVersion { found })
                }
                _ => Err(StoreError::Format {
                    reason: "incomplete token hash in Redis".to_owned(),
                }),
            }
        })
    }

    fn save<'a>(
        &'a self,
        expected_generation: u64,
        tokens: &'a TokenSet,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let mut connection = self.connection.clone();
        Box::pin(async move {
            let mut json = serde_json::to_string(tokens).map_err(|e| StoreError::json(&e))?;
            let reply: Result<(u8, Option<String>), _> = SAVE
                .key(&*self.key)
                .arg(expected_generation)
                .arg(FORMAT_VERSION)
                .arg(tokens.generation)
                .arg(json.as_str())
                .invoke_async(&mut connection)
                .await;
            json.zeroize();
            match reply.map_err(backend)? {
                (1, _) => Ok(()),
                (_, stored) => Err(StoreError::Conflict {
                    expected: expected_generation,
                    current: match stored {
                        Some(stored) => Some(Box::new(decode(stored, None)?)),
                        None => None,
                    },
                }),
            }
        })
    }
}

/// The stored JSON as a pair, checked against the hash's `generation` field when known.
fn decode(mut json: String, generation: Option<u64>) -> Result<TokenSet, StoreError> {
    let decoded = serde_json::from_str::<TokenSet>(&json).map_err(|e| StoreError::json(&e));
    json.zeroize();
    let tokens = decoded?;
    match generation {
        Some(generation) if generation != tokens.generation => Err(StoreError::Format {
            reason: format!(
                "token hash in Redis says generation {generation}, its tokens {}",
                tokens.generation
            ),
        }),
        _ => Ok(tokens),
    }
}
