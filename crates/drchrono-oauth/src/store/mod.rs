//! [`TokenStore`]: where a token family's current pair lives between requests and processes.
//!
//! A store holds at most one [`TokenSet`] and replaces it only by compare-and-swap on the
//! generation number, so two writers (two refreshes, two processes, a refresh racing a
//! re-authorisation) can never silently overwrite each other: the loser gets
//! [`StoreError::Conflict`] with the winner's pair and adopts it.

mod file;
mod memory;

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::path::PathBuf;

use drchrono_core::BoxError;
use futures::future::BoxFuture;

pub use self::file::{FileTokenStore, STALE_TEMP_AGE};
pub use self::memory::MemoryTokenStore;
use crate::TokenSet;

/// Durable storage for one token family.
///
/// Object safe: the layer holds it as `Arc<dyn TokenStore>`. Implement it for a database or
/// a secrets manager; the crate ships [`MemoryTokenStore`], [`FileTokenStore`] and, with the
/// `redis` feature, `RedisTokenStore` (shared by several processes and hosts).
///
/// # Contract
/// - An empty store has generation `0`.
/// - [`save`](TokenStore::save) succeeds only if the stored generation equals
///   `expected_generation` (0 when empty); otherwise it returns
///   [`StoreError::Conflict`] carrying the stored pair, and changes nothing.
/// - A successful save is durable when the future resolves: the rotated refresh token is
///   persisted before the layer uses the new access token.
pub trait TokenStore: fmt::Debug + Send + Sync + 'static {
    /// The stored pair, or `None` when the store is empty.
    fn load(&self) -> BoxFuture<'_, Result<Option<TokenSet>, StoreError>>;

    /// Replaces the stored pair with `tokens` if the stored generation is
    /// `expected_generation`.
    fn save<'a>(
        &'a self,
        expected_generation: u64,
        tokens: &'a TokenSet,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
}

/// Why a [`TokenStore`] operation failed. Never contains a token.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// Another writer saved first: the stored generation was not the expected one.
    Conflict {
        /// The expected generation.
        expected: u64,
        /// The pair stored now (`None` when the store is empty): adopt it.
        current: Option<Box<TokenSet>>,
    },
    /// A file-system operation failed.
    Io {
        /// What was being done (`"create temporary file"`, `"rename"`, …).
        operation: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The stored data could not be decoded (or encoded). Carries only the position and
    /// category of the problem, never the data.
    Format {
        /// What was wrong.
        reason: String,
    },
    /// The stored data has a format version this crate does not read.
    UnsupportedVersion {
        /// The version found.
        found: u64,
    },
    /// A backend (database, Redis, …) failed.
    Backend {
        /// The backend's error.
        source: BoxError,
    },
}

impl StoreError {
    /// The stored generation reported by a [`StoreError::Conflict`] (0 for an empty store).
    pub fn conflict_generation(&self) -> Option<u64> {
        match self {
            StoreError::Conflict { current, .. } => {
                Some(current.as_ref().map_or(0, |tokens| tokens.generation))
            }
            _ => None,
        }
    }

    pub(crate) fn io(operation: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        StoreError::Io {
            operation,
            path: path.into(),
            source,
        }
    }

    /// A decoding error described by category and position only: serde_json's messages
    /// can quote the offending value, which may be a token.
    pub(crate) fn json(error: &serde_json::Error) -> Self {
        StoreError::Format {
            reason: format!(
                "invalid token file ({:?} error at line {} column {})",
                error.classify(),
                error.line(),
                error.column()
            ),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Conflict { expected, current } => write!(
                f,
                "token store conflict: expected generation {expected}, found {}",
                current.as_ref().map_or(0, |tokens| tokens.generation)
            ),
            StoreError::Io {
                operation, path, ..
            } => write!(f, "token store: {operation} failed for {}", path.display()),
            StoreError::Format { reason } => write!(f, "token store: {reason}"),
            StoreError::UnsupportedVersion { found } => {
                write!(f, "token store: unsupported format version {found}")
            }
            StoreError::Backend { .. } => f.write_str("token store backend failed"),
        }
    }
}

impl StdError for StoreError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            StoreError::Io { source, .. } => Some(source),
            StoreError::Backend { source } => Some(source.as_ref()),
            _ => None,
        }
    }
}

/// Compare-and-swap on an in-memory slot: the shared rule of the bundled stores.
pub(crate) fn check_generation(stored: Option<&TokenSet>, expected: u64) -> Result<(), StoreError> {
    let found = stored.map_or(0, |tokens| tokens.generation);
    if found == expected {
        Ok(())
    } else {
        Err(StoreError::Conflict {
            expected,
            current: stored.map(|tokens| Box::new(tokens.clone())),
        })
    }
}
