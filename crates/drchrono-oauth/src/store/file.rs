//! [`FileTokenStore`]: a JSON file, replaced atomically on every save.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::hash::BuildHasher;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use secrecy::zeroize::Zeroize;
use serde::{Deserialize, Serialize};

use super::{StoreError, TokenStore, check_generation};
use crate::TokenSet;

/// The file format version this crate writes and reads.
const FILE_FORMAT_VERSION: u64 = 1;

/// How old a temporary file left by a crashed save must be before a later save removes it:
/// 60 s.
pub const STALE_TEMP_AGE: std::time::Duration = std::time::Duration::from_secs(60);

/// A [`TokenStore`] in one JSON file, safe against crashes at any instant.
///
/// Format: `{"version":1,"tokens":{"access_token":…,"refresh_token":…,"expires_at":<unix s>,
/// "issued_at":<unix s>,"scope":…,"generation":…}}`.
///
/// Each save writes a new temporary file beside the target (created with mode `0600`),
/// `fsync`s it, renames it over the target and `fsync`s the directory. A crash at any
/// point leaves either the old or the new pair in the file, never a torn one.
///
/// The temporary file is `.<name>.<32 hex digits>.tmp`: 128 random bits (keyed by the
/// operating system's randomness, mixed with the time, the process id and a counter), so
/// that writers on different hosts, or in containers sharing a volume where every
/// process is PID 1, never pick the same name. A save creates it exclusively
/// (`O_EXCL`) and, when the save fails, removes only the file it created itself.
///
/// A crash may leave such a file beside the target, holding a token pair: it is never
/// read, and the next successful save removes those older than [`STALE_TEMP_AGE`] (a save
/// takes milliseconds; a younger one may be another writer's save in progress). Only
/// regular files whose name is exactly this store's pattern (or the
/// `.<name>.<pid>.<n>.tmp` of earlier versions) are ever removed.
///
/// Compare-and-swap is exact between users of one `FileTokenStore` (and its clones); two
/// processes sharing a file must also share a [`RefreshLease`](crate::RefreshLease) so that
/// only one of them refreshes at a time.
#[derive(Clone)]
pub struct FileTokenStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// Serialises load-compare-write within the process.
    lock: tokio::sync::Mutex<()>,
    /// Where the next saves stop, as if the process were killed (tests only).
    #[cfg(test)]
    crash_at: std::sync::Mutex<Option<CrashPoint>>,
}

impl FileTokenStore {
    /// A store in the file at `path`. The file need not exist; its directory must.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            inner: Arc::new(Inner {
                path: path.into(),
                lock: tokio::sync::Mutex::new(()),
                #[cfg(test)]
                crash_at: std::sync::Mutex::new(None),
            }),
        }
    }

    #[cfg(test)]
    fn crash_at(&self, point: Option<CrashPoint>) {
        *self.inner.crash_at.lock().unwrap() = point;
    }
}

impl fmt::Debug for FileTokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileTokenStore")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl TokenStore for FileTokenStore {
    fn load(&self) -> BoxFuture<'_, Result<Option<TokenSet>, StoreError>> {
        Box::pin(async move {
            let _guard = self.inner.lock.lock().await;
            let inner = Arc::clone(&self.inner);
            blocking(move || read_file(&inner.path)).await
        })
    }

    fn save<'a>(
        &'a self,
        expected_generation: u64,
        tokens: &'a TokenSet,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let tokens = tokens.clone();
        Box::pin(async move {
            let _guard = self.inner.lock.lock().await;
            let inner = Arc::clone(&self.inner);
            blocking(move || {
                let stored = read_file(&inner.path)?;
                check_generation(stored.as_ref(), expected_generation)?;
                #[cfg(test)]
                let crash = *inner
                    .crash_at
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                write_file(
                    &inner.path,
                    &tokens,
                    #[cfg(test)]
                    crash,
                )
            })
            .await
        })
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|join| {
            Err(StoreError::Backend {
                source: Box::new(join),
            })
        })
}

#[derive(Deserialize)]
struct Header {
    version: u64,
}

#[derive(Serialize)]
struct FileRef<'a> {
    version: u64,
    tokens: &'a TokenSet,
}

#[derive(Deserialize)]
struct FileOwned {
    tokens: TokenSet,
}

fn read_file(path: &Path) -> Result<Option<TokenSet>, StoreError> {
    let mut bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(StoreError::io("read", path, error)),
    };
    let decoded = decode(&bytes);
    bytes.zeroize();
    decoded.map(Some)
}

fn decode(bytes: &[u8]) -> Result<TokenSet, StoreError> {
    let header: Header = serde_json::from_slice(bytes).map_err(|e| StoreError::json(&e))?;
    if header.version != FILE_FORMAT_VERSION {
        return Err(StoreError::UnsupportedVersion {
            found: header.version,
        });
    }
    let file: FileOwned = serde_json::from_slice(bytes).map_err(|e| StoreError::json(&e))?;
    Ok(file.tokens)
}

/// A point at which a test makes the write stop, as a crash (or a kill) would: nothing is
/// cleaned up. A test hook: it, and every field, parameter and check that carries it, is
/// compiled in tests only.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CrashPoint {
    AfterCreate,
    MidWrite,
    AfterWrite,
    AfterSync,
    AfterRename,
}

/// Stops here when a test asked for a crash at `here`.
#[cfg(test)]
fn crash_point(crash: Option<CrashPoint>, here: CrashPoint) -> Result<(), StoreError> {
    if crash == Some(here) {
        Err(StoreError::io(
            "simulated crash",
            PathBuf::new(),
            io::Error::other("simulated crash"),
        ))
    } else {
        Ok(())
    }
}

/// Distinguishes the temporary names one process draws (the random keys already differ).
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The number of hex digits of the random part of a temporary file's name.
const TEMP_RANDOM_DIGITS: usize = 32;

/// The directory and file name of the target.
fn dir_and_name(path: &Path) -> (PathBuf, String) {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().map_or_else(
        || "tokens".to_owned(),
        |name| name.to_string_lossy().into_owned(),
    );
    (dir, name)
}

/// A fresh temporary name for `name`: `.<name>.<32 hex digits>.tmp`.
///
/// The 128 bits come from std's `RandomState`, whose SipHash keys are drawn from the
/// operating system's randomness (once per thread, then stepped per instance), hashing
/// the wall-clock time, the process id and a per-process counter: unique across hosts
/// and containers (where the process id is no help: every container's first process is
/// PID 1) without a further dependency.
fn temp_name(name: &str) -> String {
    let state = RandomState::new();
    let seed = (
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos()),
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed),
        std::thread::current().id(),
    );
    let high = state.hash_one((&seed, 0_u8));
    let low = state.hash_one((&seed, 1_u8));
    format!(".{name}.{high:016x}{low:016x}.tmp")
}

/// Whether `file_name` is a temporary file of `name`'s saves: `.<name>.<32 hex>.tmp`, or
/// `.<name>.<pid>.<n>.tmp` as earlier versions named them. Nothing else is ever removed.
fn is_temp_of(file_name: &str, name: &str) -> bool {
    let Some(middle) = file_name
        .strip_prefix('.')
        .and_then(|rest| rest.strip_prefix(name))
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(|rest| rest.strip_suffix(".tmp"))
    else {
        return false;
    };
    let random = middle.len() == TEMP_RANDOM_DIGITS
        && middle
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    let legacy = middle
        .split_once('.')
        .is_some_and(|(pid, n)| digits(pid) && digits(n));
    random || legacy
}

fn write_file(
    path: &Path,
    tokens: &TokenSet,
    #[cfg(test)] crash: Option<CrashPoint>,
) -> Result<(), StoreError> {
    let (dir, name) = dir_and_name(path);
    let temp = dir.join(temp_name(&name));
    write_via(
        path,
        &temp,
        tokens,
        #[cfg(test)]
        crash,
    )
}

/// Writes `tokens` to `temp`, which must not exist yet, then renames it over `path`.
fn write_via(
    path: &Path,
    temp: &Path,
    tokens: &TokenSet,
    #[cfg(test)] crash: Option<CrashPoint>,
) -> Result<(), StoreError> {
    let (dir, name) = dir_and_name(path);
    let mut bytes = serde_json::to_vec(&FileRef {
        version: FILE_FORMAT_VERSION,
        tokens,
    })
    .map_err(|e| StoreError::json(&e))?;
    let mut created = false;
    let result = write_temp(
        temp,
        &bytes,
        #[cfg(test)]
        crash,
        &mut created,
    )
    .and_then(|()| {
        #[cfg(test)]
        crash_point(crash, CrashPoint::AfterSync)?;
        fs::rename(temp, path).map_err(|e| StoreError::io("rename", temp, e))
    });
    bytes.zeroize();
    if let Err(error) = result {
        // A simulated crash leaves its temporary file behind, as a real one would.
        #[cfg(test)]
        let created = created && crash.is_none();
        // Best effort: the temporary file holds secrets and is of no use now. Only ours:
        // a name that already existed belongs to another writer.
        if created {
            let _ = fs::remove_file(temp);
        }
        return Err(error);
    }
    #[cfg(test)]
    crash_point(crash, CrashPoint::AfterRename)?;
    sync_dir(&dir)?;
    remove_stale_temps(&dir, &name);
    Ok(())
}

/// Removes the temporary files of `name` that crashed saves left in `dir`, once they are
/// older than [`STALE_TEMP_AGE`]: regular files named exactly as [`is_temp_of`] says,
/// nothing else. Best effort: the save has succeeded already, and a file that cannot be
/// read or removed now is tried again at the next save.
fn remove_stale_temps(dir: &Path, name: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        if !is_temp_of(file_name, name) {
            continue;
        }
        // `DirEntry::metadata` does not follow symbolic links: a link is left alone.
        let stale = entry
            .metadata()
            .ok()
            .filter(fs::Metadata::is_file)
            .and_then(|metadata| metadata.modified().ok())
            .and_then(|modified| modified.elapsed().ok())
            .is_some_and(|age| age >= STALE_TEMP_AGE);
        if stale && fs::remove_file(entry.path()).is_ok() {
            tracing::info!(
                file = file_name,
                "removed a token file left by a crashed save"
            );
        }
    }
}

/// Creates `temp` (exclusively: it must not exist) and writes `bytes` to it durably;
/// `created` tells whether this call created the file.
fn write_temp(
    temp: &Path,
    bytes: &[u8],
    #[cfg(test)] crash: Option<CrashPoint>,
    created: &mut bool,
) -> Result<(), StoreError> {
    let mut file =
        create_private(temp).map_err(|e| StoreError::io("create temporary file", temp, e))?;
    *created = true;
    #[cfg(test)]
    crash_point(crash, CrashPoint::AfterCreate)?;
    #[cfg(test)]
    if crash == Some(CrashPoint::MidWrite) {
        let _ = file.write_all(&bytes[..bytes.len() / 2]);
        return crash_point(crash, CrashPoint::MidWrite);
    }
    file.write_all(bytes)
        .map_err(|e| StoreError::io("write temporary file", temp, e))?;
    #[cfg(test)]
    crash_point(crash, CrashPoint::AfterWrite)?;
    file.sync_all()
        .map_err(|e| StoreError::io("fsync temporary file", temp, e))
}

#[cfg(unix)]
fn create_private(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn create_private(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).open(path)
}

/// Makes the rename durable: on Unix a directory's entries are persisted by `fsync` on
/// the directory itself.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|e| StoreError::io("fsync directory", dir, e))
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<(), StoreError> {
    Ok(())
}

#[cfg(test)]
mod tests;
