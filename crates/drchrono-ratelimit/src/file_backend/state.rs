//! The state file under its lock: reading it, deciding on it, writing it back.

use std::fs::{self, File};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use tokio::time::Instant;

use super::unwritten::{Pause, UnwrittenPause};
use super::{FileStateError, atomic, file_error, format};
use crate::algorithm::snapshot::{InvalidSnapshot, Snapshot};
use crate::algorithm::{Charge, Policy, Refusal, State};
use crate::time::{Reading, duration_nanos, to_nanos};
use crate::{BackendError, NotUntil, Priority, RateLimitConfig, Status};

/// One backend's hold on the state file: its paths, its rules, and what it keeps between
/// decisions.
pub(super) struct Inner {
    pub(super) path: PathBuf,
    lock_path: PathBuf,
    pub(super) application: String,
    policy: Policy,
    pub(super) fsync: AtomicBool,
    /// The lock file, held open; the mutex serialises this backend's users, since the lock
    /// belongs to the open file and so would not exclude them from each other.
    lock: Mutex<File>,
    /// Whether the latest call failed (to log transitions only).
    failing: AtomicBool,
    /// When stale temporary files were last looked for.
    swept: Mutex<std::time::Instant>,
    /// A server's pause the file could not take, applied to every state read until written.
    unwritten: UnwrittenPause,
}

/// A state read for a decision at some instant.
struct Loaded {
    state: State,
    /// The readings to decide on ([`Imported::reading`](crate::algorithm::snapshot::Imported::reading)):
    /// the instant on both clocks, or after a step back the state's latest instant on the
    /// monotonic line.
    reading: Reading,
    /// Rebased on a clock stepped far back: to be written even if nothing is charged (the
    /// rebase counts charges as made now, so that done again at a later reading it would
    /// hold them longer each time).
    rebased: bool,
    /// The pause held in memory that was applied to it: to be written.
    unwritten: Option<Pause>,
}

/// A decision at `now` (the caller's clock) that asked at `started` (tokio's clock) is made
/// at `now` plus the time since: the instant in nanoseconds.
fn decided_at(now: SystemTime, started: Instant) -> u64 {
    to_nanos(now).saturating_add(duration_nanos(started.elapsed()))
}

/// The lock file, locked; unlocked when dropped.
struct Held<'a>(MutexGuard<'a, File>);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        // Closing the file would release it too; it stays open for the next decision.
        let _ = self.0.unlock();
    }
}

impl Inner {
    /// The state file at `path` with its lock file `<path>.lock` (created if needed, mode
    /// `0600`), for `config`'s rules and application; the state file is checked now.
    pub(super) fn open(path: PathBuf, config: &RateLimitConfig) -> Result<Self, FileStateError> {
        let mut lock_path = path.clone().into_os_string();
        lock_path.push(".lock");
        let lock_path = PathBuf::from(lock_path);
        let lock = atomic::open_lock_file(&lock_path)?;
        let inner = Self {
            policy: Policy::new(config),
            application: config.application().to_owned(),
            fsync: AtomicBool::new(true),
            lock: Mutex::new(lock),
            failing: AtomicBool::new(false),
            swept: Mutex::new(std::time::Instant::now()),
            unwritten: UnwrittenPause::default(),
            path,
            lock_path,
        };
        if let Some(snapshot) = inner.read()? {
            inner
                .policy
                .import(&snapshot, snapshot.last_now)
                .map_err(|invalid| inner.invalid(invalid))?;
        }
        atomic::remove_stale_temps(&inner.path);
        Ok(inner)
    }

    fn hold(&self) -> Result<Held<'_>, FileStateError> {
        let file = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        file.lock()
            .map_err(|e| FileStateError::io("lock", &self.lock_path, e))?;
        Ok(Held(file))
    }

    /// The snapshot in the file (`None`: no file yet).
    fn read(&self) -> Result<Option<Snapshot>, FileStateError> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(FileStateError::io("read", &self.path, error)),
        };
        let (application, snapshot) = format::decode(&bytes).map_err(|error| match error {
            format::Undecodable::Version(found) => FileStateError::UnsupportedVersion {
                path: self.path.clone(),
                found,
            },
            format::Undecodable::Corrupt(detail) => FileStateError::Corrupt {
                path: self.path.clone(),
                detail,
            },
        })?;
        if application != self.application {
            return Err(FileStateError::OtherApplication {
                path: self.path.clone(),
                found: application,
            });
        }
        Ok(Some(snapshot))
    }

    fn invalid(&self, InvalidSnapshot(detail): InvalidSnapshot) -> FileStateError {
        FileStateError::Corrupt {
            path: self.path.clone(),
            detail: detail.to_owned(),
        }
    }

    /// The state as of a decision at `now`, with the pause held in memory applied.
    fn load(&self, now: u64) -> Result<Loaded, FileStateError> {
        let (mut state, reading, rebased) = self.import(now)?;
        let unwritten = self.unwritten.at(now);
        if let Some(pause) = unwritten {
            self.policy.pause(&mut state, reading, pause.until_at(now));
        }
        Ok(Loaded {
            state,
            reading,
            rebased,
            unwritten,
        })
    }

    /// The state in the file as of a decision at `now`, the readings to decide on, and
    /// whether it had to be rebased on a clock stepped far back.
    fn import(&self, now: u64) -> Result<(State, Reading, bool), FileStateError> {
        let Some(snapshot) = self.read()? else {
            let reading = Reading {
                mono: now,
                wall: now,
            };
            return Ok((self.policy.new_state(), reading, false));
        };
        let imported = self
            .policy
            .import(&snapshot, now)
            .map_err(|invalid| self.invalid(invalid))?;
        if imported.unmatched > 0 {
            tracing::warn!(
                path = %self.path.display(),
                rules = imported.unmatched,
                "the rate-limit state file holds nothing for some rules (the configuration \
                 changed): each counts as spent by everything charged so far"
            );
        }
        match imported.stepped_back {
            Some(step) if imported.rebased => tracing::warn!(
                path = %self.path.display(),
                step_secs = step as f64 / 1e9,
                "the wall clock reads far earlier than the rate-limit state's latest \
                 decision: counting what was charged since as charged now"
            ),
            // At every decision until the clock gets back: not a warning each time.
            Some(step) => tracing::debug!(
                path = %self.path.display(),
                step_secs = step as f64 / 1e9,
                "the wall clock reads earlier than the rate-limit state's latest decision: \
                 the rolling windows wait for it to get back there"
            ),
            None => {}
        }
        Ok((imported.state, imported.reading, imported.rebased))
    }

    /// Writes `state`; the pause held in memory that was applied to it (`unwritten`) is in
    /// the file then, and no longer held.
    fn store(&self, state: &State, unwritten: Option<Pause>) -> Result<(), FileStateError> {
        let bytes = format::encode(&self.application, &self.policy.export(state));
        atomic::replace(&self.path, &bytes, self.fsync.load(Ordering::Relaxed))?;
        if let Some(pause) = unwritten {
            self.unwritten.written(pause);
        }
        let sweep = {
            let mut swept = self.swept.lock().unwrap_or_else(PoisonError::into_inner);
            let due = swept.elapsed() >= atomic::STALE_TEMP_AGE;
            if due {
                *swept = std::time::Instant::now();
            }
            due
        };
        if sweep {
            atomic::remove_stale_temps(&self.path);
        }
        Ok(())
    }

    pub(super) fn decide(
        &self,
        now: SystemTime,
        started: Instant,
        priority: Priority,
    ) -> Result<Result<Charge, NotUntil>, FileStateError> {
        let _held = self.hold()?;
        let now = decided_at(now, started);
        let Loaded {
            mut state,
            reading,
            rebased,
            unwritten,
        } = self.load(now)?;
        let decision = self
            .policy
            .try_acquire_charge(&mut state, reading, priority);
        // A pause held in memory is written with the first decision that can, refused or
        // not, so that the other processes hold too.
        if decision.is_ok() || rebased || unwritten.is_some() {
            self.store(&state, unwritten)?;
        }
        // The earliest monotonic instant on the wall clock, at the reading's offset (0 but
        // after a step back: a lower bound then, see "A wall clock stepped back").
        Ok(decision.map_err(|earliest| {
            let rule = self.policy.binding(&state, reading, priority);
            Refusal {
                earliest: reading.wall_at(earliest),
                rule,
            }
            .not_until(&self.policy)
        }))
    }

    /// Takes back `charge`, made by [`decide`](Self::decide) for a request that was never
    /// sent (its caller went away while the decision was in flight), as of `now` (the
    /// caller's wall clock when the decision started) plus the time since `started`.
    pub(super) fn refund(
        &self,
        charge: &Charge,
        now: SystemTime,
        started: Instant,
    ) -> Result<(), FileStateError> {
        let _held = self.hold()?;
        let Loaded {
            mut state,
            unwritten,
            ..
        } = self.load(decided_at(now, started))?;
        self.policy.uncharge(&mut state, charge);
        self.store(&state, unwritten)
    }

    /// Writes a server's pause; one that cannot be written (whatever failed: the lock, the
    /// read, the write) is held in memory, and the error returned.
    pub(super) fn pause(
        &self,
        now: SystemTime,
        started: Instant,
        until: SystemTime,
    ) -> Result<(), FileStateError> {
        let until = to_nanos(until);
        let written = self.write_pause(now, started, until);
        if written.is_err() {
            self.unwritten.hold(decided_at(now, started), until);
        }
        written
    }

    fn write_pause(
        &self,
        now: SystemTime,
        started: Instant,
        until: u64,
    ) -> Result<(), FileStateError> {
        let _held = self.hold()?;
        let now = decided_at(now, started);
        let Loaded {
            mut state,
            reading,
            unwritten,
            ..
        } = self.load(now)?;
        self.policy.pause(&mut state, reading, until);
        self.store(&state, unwritten)
    }

    /// Without the lock: the file is replaced whole, so it always holds a whole state.
    pub(super) fn status(
        &self,
        now: SystemTime,
        started: Instant,
    ) -> Result<Status, FileStateError> {
        let Loaded { state, reading, .. } = self.load(decided_at(now, started))?;
        Ok(self.policy.status(&state, reading))
    }

    pub(super) fn outcome<T>(&self, result: Result<T, FileStateError>) -> Result<T, BackendError> {
        match result {
            Ok(value) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(path = %self.path.display(), "rate-limit state file usable again");
                }
                Ok(value)
            }
            Err(error) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::error!(
                        path = %self.path.display(),
                        error = %error,
                        "rate-limit state file unusable: no request is sent until it is \
                         repaired or removed"
                    );
                }
                Err(file_error(error))
            }
        }
    }
}
