//! [`FileStateError`]: why a [`FileRateLimitBackend`]'s state could not be used.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use super::format;
#[cfg(doc)]
use crate::{BackendError, FileRateLimitBackend, RateLimitConfig};

/// Why a [`FileRateLimitBackend`]'s state could not be used: the source of the
/// [`BackendError`] (named `"file"`) that [`FileRateLimitBackend::open`] and every decision
/// return meanwhile. Nothing is sent while the file is unusable.
#[derive(Debug)]
#[non_exhaustive]
pub enum FileStateError {
    /// Creating, locking, reading, writing, `fsync`ing or renaming a file failed.
    Io {
        /// What was being done (`"read"`, `"lock"`, `"rename"`, …).
        operation: &'static str,
        /// The file (or directory) it was done to.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// The state file is not a state this crate writes: truncated, edited, not JSON, a
    /// field missing or unknown, or inconsistent (charged instants out of order, after the
    /// latest decision or apart from the latest charge, aligned counts that moved
    /// backwards, …). It is never taken for an empty budget; remove it to start again from
    /// a full one.
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The state file has a format version this release does not read (it reads version
    /// 1): written by another release of this crate.
    UnsupportedVersion {
        /// The state file.
        path: PathBuf,
        /// Its version.
        found: u64,
    },
    /// The state file holds another application's budget (its
    /// [`RateLimitConfig::application`] key): two applications pointed at one file.
    OtherApplication {
        /// The state file.
        path: PathBuf,
        /// The application key it holds.
        found: String,
    },
}

impl FileStateError {
    pub(crate) fn io(operation: &'static str, path: &Path, source: io::Error) -> Self {
        Self::Io {
            operation,
            path: path.to_path_buf(),
            source,
        }
    }
}

impl fmt::Display for FileStateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io {
                operation, path, ..
            } => write!(
                f,
                "rate-limit state file: {operation} of {} failed",
                path.display()
            ),
            Self::Corrupt { path, detail } => write!(
                f,
                "rate-limit state file {} is not a state this crate wrote ({detail})",
                path.display()
            ),
            Self::UnsupportedVersion { path, found } => write!(
                f,
                "rate-limit state file {} has format version {found}; this release reads \
                 version {}",
                path.display(),
                format::VERSION
            ),
            Self::OtherApplication { path, found } => write!(
                f,
                "rate-limit state file {} holds the budget of application {found:?}",
                path.display()
            ),
        }
    }
}

impl StdError for FileStateError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
