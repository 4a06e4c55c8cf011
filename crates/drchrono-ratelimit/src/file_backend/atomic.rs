//! The state file's writing, as the token store writes its file: a temporary file with a
//! random name beside the target, created exclusively with mode `0600`, written (and
//! `fsync`ed when asked), renamed over the target; stale temporary files of crashed writes
//! removed.

use std::collections::hash_map::RandomState;
use std::fs::{self, File, OpenOptions};
use std::hash::BuildHasher;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::FileStateError;

/// How old a temporary file left by a crashed write must be before it is removed: 60 s (a
/// write takes milliseconds; a younger one may be another process's write in progress).
pub(crate) const STALE_TEMP_AGE: Duration = Duration::from_secs(60);

/// Distinguishes the temporary names one process draws (the random keys already differ).
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The number of hex digits of the random part of a temporary file's name.
const TEMP_RANDOM_DIGITS: usize = 32;

/// The directory and file name of the target.
pub(crate) fn dir_and_name(path: &Path) -> (PathBuf, String) {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().map_or_else(
        || "ratelimit".to_owned(),
        |name| name.to_string_lossy().into_owned(),
    );
    (dir, name)
}

/// A fresh temporary name for `name`: `.<name>.<32 hex digits>.tmp`.
///
/// The 128 bits come from std's `RandomState`, whose SipHash keys are drawn from the
/// operating system's randomness, hashing the wall-clock time, the process id, a counter and
/// the thread: unique across processes, hosts and containers (where every first process is
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

/// Whether `file_name` is a temporary file of `name`'s writes: exactly
/// `.<name>.<32 hex digits>.tmp`. Nothing else is ever removed.
fn is_temp_of(file_name: &str, name: &str) -> bool {
    file_name
        .strip_prefix('.')
        .and_then(|rest| rest.strip_prefix(name))
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(|rest| rest.strip_suffix(".tmp"))
        .is_some_and(|middle| {
            middle.len() == TEMP_RANDOM_DIGITS
                && middle
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

/// Replaces `path` with `bytes`: written to a fresh temporary file beside it, `fsync`ed when
/// `sync` is set, renamed over it (and the directory `fsync`ed when `sync` is set). A
/// failure leaves the previous file as it was and removes the temporary file it created.
pub(crate) fn replace(path: &Path, bytes: &[u8], sync: bool) -> Result<(), FileStateError> {
    let (dir, name) = dir_and_name(path);
    let temp = dir.join(temp_name(&name));
    let mut created = false;
    let result = write_temp(&temp, bytes, sync, &mut created)
        .and_then(|()| fs::rename(&temp, path).map_err(|e| FileStateError::io("rename", &temp, e)));
    if let Err(error) = result {
        // Only ours: a name that already existed belongs to another writer.
        if created {
            let _ = fs::remove_file(&temp);
        }
        return Err(error);
    }
    if sync {
        sync_dir(&dir)?;
    }
    Ok(())
}

/// Creates `temp` exclusively and writes `bytes` to it; `created` tells whether this call
/// created the file.
fn write_temp(
    temp: &Path,
    bytes: &[u8],
    sync: bool,
    created: &mut bool,
) -> Result<(), FileStateError> {
    let mut file = private_options()
        .create_new(true)
        .open(temp)
        .map_err(|e| FileStateError::io("create temporary file", temp, e))?;
    *created = true;
    file.write_all(bytes)
        .map_err(|e| FileStateError::io("write temporary file", temp, e))?;
    if sync {
        file.sync_all()
            .map_err(|e| FileStateError::io("fsync temporary file", temp, e))?;
    }
    Ok(())
}

/// Opens (creating it if needed, mode `0600`) the lock file at `path`.
pub(crate) fn open_lock_file(path: &Path) -> Result<File, FileStateError> {
    private_options()
        .read(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| FileStateError::io("open lock file", path, e))
}

/// Writable, created with mode `0600` on Unix.
fn private_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

/// Makes the rename durable: on Unix a directory's entries are persisted by `fsync` on the
/// directory itself.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<(), FileStateError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|e| FileStateError::io("fsync directory", dir, e))
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<(), FileStateError> {
    Ok(())
}

/// Removes the temporary files of `path`'s writes that crashed processes left beside it,
/// once older than [`STALE_TEMP_AGE`]: regular files named exactly as [`is_temp_of`] says,
/// nothing else, symbolic links never. Best effort: what cannot be removed now is tried
/// again later.
pub(crate) fn remove_stale_temps(path: &Path) {
    let (dir, name) = dir_and_name(path);
    let Ok(entries) = fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        if !is_temp_of(file_name, &name) {
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
                "removed a rate-limit state file left by a crashed write"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_random_and_recognised() {
        let a = temp_name("ratelimit.json");
        let b = temp_name("ratelimit.json");
        assert_ne!(a, b);
        assert!(is_temp_of(&a, "ratelimit.json"));
        assert!(!is_temp_of(&a, "ratelimit"));
        assert!(!is_temp_of(".ratelimit.json.1234.tmp", "ratelimit.json"));
        assert!(!is_temp_of("ratelimit.json", "ratelimit.json"));
        assert!(!is_temp_of(
            ".ratelimit.json.0123456789abcdef0123456789ABCDEF.tmp",
            "ratelimit.json"
        ));
    }

    #[test]
    fn a_replacement_is_whole_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        replace(&path, b"first", true).unwrap();
        replace(&path, b"second", false).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Nothing left beside it.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        // A missing directory fails, typed, and leaves nothing.
        let missing = dir.path().join("missing").join("state.json");
        let error = replace(&missing, b"x", false).unwrap_err();
        assert!(matches!(error, FileStateError::Io { .. }), "{error:?}");
    }
}
