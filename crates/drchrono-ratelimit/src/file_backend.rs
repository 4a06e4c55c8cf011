//! [`FileRateLimitBackend`]: one application's budget in a small file, shared by the
//! processes of one host and kept across their restarts.

mod atomic;
mod error;
mod format;
mod state;
mod unwritten;

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::SystemTime;

use tokio::task::{JoinError, JoinHandle};
use tokio::time::Instant;

use crate::algorithm::Charge;

use crate::backend::{Backend, BackendFuture};
use crate::{BackendError, NotUntil, Priority, RateLimitConfig, Status};

pub use error::FileStateError;
use state::Inner;

/// The name a [`BackendError`] of this backend carries.
const BACKEND: &str = "file";

/// A [`Backend`] in a file: one application's budget, shared by every process of one host
/// that opens the same path, and kept across restarts. A process restarted within the hour
/// (a deploy, a crash loop, a cron job) resumes from what the earlier ones charged, and two
/// processes running at once share the one budget.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use drchrono_ratelimit::{
///     FileRateLimitBackend, Priority, RateLimitConfig, RateLimiter, TokioClock,
/// };
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// let path = dir.path().join("drchrono-ratelimit.json");
/// let config = RateLimitConfig::default();
/// // 2026-01-05T10:37:00Z, paused here; in production leave the default clock.
/// let clock = TokioClock::starting_at(SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_609_420));
///
/// // A first process sends 9 requests, then exits.
/// let first = RateLimiter::builder(config.clone())
///     .backend(FileRateLimitBackend::open(&path, &config)?)
///     .clock(clock)
///     .build();
/// for _ in 0..9 {
///     first.acquire(Priority::Interactive).await?;
/// }
/// drop(first);
///
/// // The next one, started at once, resumes from the same budget.
/// let next = RateLimiter::builder(config.clone())
///     .backend(FileRateLimitBackend::open(&path, &config)?)
///     .clock(clock)
///     .build();
/// let status = next.status().await?;
/// assert_eq!(status.rules[0].remaining, 0); // of 9 per rolling second
/// assert_eq!(status.rules[2].remaining, 491); // of 500 this clock hour
/// # Ok(())
/// # }
/// ```
///
/// # A decision
/// Each decision takes an exclusive lock on the lock file beside the state, `<path>.lock`
/// ([`File::lock`](std::fs::File::lock): `flock` on Unix; the operating system releases it
/// when a process dies), reads the state, decides with the same exact core as
/// [`LocalLimiter`](crate::LocalLimiter) and, when it charged, writes the new state, then
/// unlocks. The state file is never edited in place: each write goes to a temporary file
/// beside it (`.<name>.<32 random hex digits>.tmp`, created exclusively with mode `0600`),
/// which is renamed over it. So a reader sees the previous state or the new one, never a
/// torn one, and the file keeps mode `0600`. (That is why the lock is a separate file: a
/// lock on the state file would stay on the inode the rename replaced.) A refusal and
/// [`status`](Backend::status) write nothing (but for a clock stepped far back, below, and
/// a pause held in memory). Temporary files that crashed processes left are removed once a
/// minute old.
///
/// Decisions are made on the wall clock the backend is given
/// ([`Clock::now`](crate::Clock::now)), for the rolling windows and the aligned hour alike
/// (but for a clock stepped back, below): every process of a host reads the same one. The
/// instant charged is that reading plus the time the decision waited for the lock (on
/// tokio's clock), so a process that waited behind another is charged when it decides, not
/// when it asked.
///
/// A decision runs on tokio's blocking pool. If its caller goes away meanwhile (a timeout
/// above the limiter while the decision waits for the lock), it still finishes and, if it
/// admitted the request that will now never be sent, takes its charge back under the lock
/// again: the rolling windows' entry and the aligned periods' counts (not the pacing's last
/// charge, which only delays the next request). A charge that cannot be taken back (the
/// file became unusable meanwhile) stays, and is logged at `warn`.
///
/// # What the file holds
/// Compacted at every write to what a later decision can still see: per rolling rule the
/// charged instants still inside its window plus the margin (at most its maximum), per
/// aligned rule the counts of the period it last charged in and of the one before its
/// latest move (for a clock stepped back), the end of a server 429's pause, the latest
/// decision and charge. For DrChrono's rules that is at most 9 + 290 instants, a few
/// kilobytes. The format is versioned JSON (version 1).
///
/// # Durability
/// By default each write is `fsync`ed (the temporary file before the rename, the directory
/// after it): the state survives a process's exit, crash or `kill -9`, and a power loss,
/// and an admitted request is on disk before it is sent. That costs two `fsync`s per
/// admitted request, at most 9 a second under DrChrono's rules. With
/// [`fsync(false)`](Self::fsync) the state still survives every exit and crash of a process
/// (the kernel holds the new file once the rename returns), but a power loss or a kernel
/// crash may lose the latest writes, or leave an empty or torn file on some filesystems,
/// which then fails closed, as below.
///
/// # When the file is unusable: fail closed
/// A file that cannot be read, locked or written, a file that is not a state this crate
/// wrote (truncated, edited, not JSON, a field missing or unknown, inconsistent: instants
/// out of order or apart from the latest charge, counts that moved backwards, …), an
/// unknown format version, or another [application](RateLimitConfig::application)'s
/// state: [`open`](Self::open) and every decision return a [`BackendError`] named
/// `"file"` whose source is the [`FileStateError`] saying which, and nothing is sent (the
/// layer returns `DrChronoError::Transport { not_sent: true }`). A broken file is never
/// taken for an empty budget. Removing it starts again from a full budget: DrChrono may still count the last
/// 10 minutes and the current hour, and a 429 then pauses every caller.
///
/// A server 429's pause that cannot be written ([`pause_until`](Backend::pause_until)
/// returns the error, which the limiter logs) is not lost: the backend holds it in memory
/// (the one that ends latest) and applies it to every state it reads, so this process sends
/// nothing during it, even from a file usable again or removed, and its next decision writes
/// it, for the other processes. It is dropped once written, or once over.
///
/// # Configuration
/// Build every process's backend and limiter from the same [`RateLimitConfig`]. A changed
/// configuration carries the state over: rules are matched by kind and window or period,
/// so a raised hourly maximum or another margin keeps what was charged (several rules of
/// one kind and period are read together: the longest log, the highest counts); a rule
/// the file holds nothing for counts as spent by everything up to the latest charge (until
/// one window after it, or the end of its period); a rule removed is forgotten.
///
/// # A wall clock stepped back
/// A reading up to a second behind the state's latest decision is taken as that instant
/// (processes read the clock before they take the lock). Further behind, the clock stepped
/// back: the state is kept as it is, and the rolling windows are decided at the latest
/// decision's instant, while the aligned hour follows the clock as it reads (it counts the
/// earlier hour's requests plus everything since, as in memory). So what was charged
/// before the step, and what is charged during it, leaves each rolling window only once
/// the clock gets back to where it was, as on a server whose clock was not stepped, and a
/// 429's pause ends where it was asked to; should NTP undo the step, no window frees early.
/// The cost: until the clock gets back (at most the longest rule), each rolling window
/// admits at most its maximum, less what it held, and a refusal may name an instant at
/// which the caller is refused again (the earliest were the clock right now). More than
/// the longest rule behind (a clock that was far ahead, then corrected), the state is
/// rebased on the reading and written: every charged instant after it counts as made at
/// it, a pause keeps what remained of it, and the counts of the hours ahead are added into
/// the current one, so the budget is not held until the clock gets there again.
///
/// # When to use Redis instead
/// The file is shared by the processes of one host (a lock on a network filesystem is not
/// to be relied on). Processes on several hosts share a budget through Redis (the `redis`
/// feature's `RedisRateLimitBackend`), which also decides on one clock for all of them.
///
/// # Blocking I/O
/// Every call does a little blocking file I/O (a few kilobytes, and the `fsync`s), which
/// runs on tokio's blocking pool (`spawn_blocking`; inline outside a tokio runtime).
/// [`Backend::try_acquire_now`] returns `None`: requests go through the limiter's queue,
/// not the in-memory fast path. A decision whose future is dropped once it started may
/// still charge its request: conservative, never a release the file does not know of.
pub struct FileRateLimitBackend {
    inner: Arc<Inner>,
}

impl FileRateLimitBackend {
    /// The budget of `config`'s rules and application in the file at `path`, with
    /// `fsync` on. The file need not exist (a missing file is a full budget); its directory
    /// must. Creates the lock file `<path>.lock` if needed (mode `0600`), and checks the
    /// state file now rather than at the first request. Blocking: call it at start-up.
    ///
    /// # Errors
    /// [`BackendError`] named `"file"`, with a [`FileStateError`] source: the lock file
    /// cannot be created or the state file read, or it is not a usable state of this
    /// application.
    pub fn open(path: impl Into<PathBuf>, config: &RateLimitConfig) -> Result<Self, BackendError> {
        let inner = Inner::open(path.into(), config).map_err(file_error)?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Whether each write is `fsync`ed, so that the state survives a power loss, not only
    /// a process's exit or crash (see [Durability](FileRateLimitBackend#durability)). Default: `true`.
    #[must_use]
    pub fn fsync(self, on: bool) -> Self {
        self.inner.fsync.store(on, Ordering::Relaxed);
        self
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `work` on tokio's blocking pool (inline outside a tokio runtime); logs when the
    /// file becomes unusable and usable again.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner) -> Result<T, FileStateError> + Send + 'static,
    ) -> Result<T, BackendError> {
        let result = match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                let inner = Arc::clone(&self.inner);
                handle
                    .spawn_blocking(move || work(&inner))
                    .await
                    .map_err(|join| BackendError::new(BACKEND, join))?
            }
            Err(_) => work(&self.inner),
        };
        self.inner.outcome(result)
    }
}

/// A decision running on tokio's blocking pool. Dropped before it answers (its caller went
/// away: a timeout above the limiter, a dropped request), it lets the decision finish and
/// takes back the charge if it admitted: a request that is never sent is never charged.
struct InFlight {
    decision: Option<JoinHandle<Result<Result<Charge, NotUntil>, FileStateError>>>,
    inner: Arc<Inner>,
    runtime: tokio::runtime::Handle,
    now: SystemTime,
    started: Instant,
}

impl Future for InFlight {
    type Output = Result<Result<Result<Charge, NotUntil>, FileStateError>, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(decision) = self.decision.as_mut() else {
            return Poll::Pending;
        };
        let answer = ready!(Pin::new(decision).poll(cx));
        self.decision = None;
        Poll::Ready(answer)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let Some(decision) = self.decision.take() else {
            return;
        };
        let (inner, now, started) = (Arc::clone(&self.inner), self.now, self.started);
        self.runtime.spawn(async move {
            let Ok(Ok(Ok(charge))) = decision.await else {
                return;
            };
            let refunded = tokio::task::spawn_blocking({
                let inner = Arc::clone(&inner);
                move || inner.refund(&charge, now, started)
            })
            .await;
            match refunded {
                Ok(Ok(())) => tracing::debug!(
                    path = %inner.path.display(),
                    "rate limit: took back the charge of a request whose caller went away"
                ),
                Ok(Err(error)) => tracing::warn!(
                    path = %inner.path.display(),
                    error = %error,
                    "rate limit: could not take back the charge of a request whose caller \
                     went away: it stays charged"
                ),
                Err(join) => tracing::warn!(
                    error = %join,
                    "rate limit: could not take back the charge of a request whose caller \
                     went away: it stays charged"
                ),
            }
        });
    }
}

fn file_error(error: FileStateError) -> BackendError {
    BackendError::new(BACKEND, error)
}

/// Decides in the file, on tokio's blocking pool.
impl Backend for FileRateLimitBackend {
    fn try_acquire(
        &self,
        now: SystemTime,
        priority: Priority,
    ) -> BackendFuture<'_, Result<Result<(), NotUntil>, BackendError>> {
        let started = Instant::now();
        Box::pin(async move {
            let decided = match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    let inner = Arc::clone(&self.inner);
                    let decision =
                        runtime.spawn_blocking(move || inner.decide(now, started, priority));
                    InFlight {
                        decision: Some(decision),
                        inner: Arc::clone(&self.inner),
                        runtime,
                        now,
                        started,
                    }
                    .await
                    .map_err(|join| BackendError::new(BACKEND, join))?
                }
                Err(_) => self.inner.decide(now, started, priority),
            };
            // Admitted: the charge is the request's from here on (the limiter calls the
            // service in this very poll).
            Ok(self.inner.outcome(decided)?.map(drop))
        })
    }

    /// `None`: deciding means blocking file I/O, which runs on tokio's blocking pool from
    /// [`try_acquire`](Backend::try_acquire).
    fn try_acquire_now(
        &self,
        _now: SystemTime,
        _priority: Priority,
    ) -> Option<Result<Result<(), NotUntil>, BackendError>> {
        None
    }

    fn pause_until(
        &self,
        now: SystemTime,
        until: SystemTime,
    ) -> BackendFuture<'_, Result<(), BackendError>> {
        let started = Instant::now();
        Box::pin(self.blocking(move |inner| inner.pause(now, started, until)))
    }

    fn status(&self, now: SystemTime) -> BackendFuture<'_, Result<Status, BackendError>> {
        let started = Instant::now();
        Box::pin(self.blocking(move |inner| inner.status(now, started)))
    }
}

impl fmt::Debug for FileRateLimitBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileRateLimitBackend")
            .field("path", &self.inner.path)
            .field("application", &self.inner.application)
            .field("fsync", &self.inner.fsync.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}
