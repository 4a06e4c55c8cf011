//! `FileRateLimitBackend`: a restarted process resumes from what earlier ones charged, and
//! processes of one host running at once share one budget.
//!
//! A "process" is a `RateLimiter` on a backend of its own (its own open lock file, its own
//! queue), all on one state file in a temporary directory; dropping it is the process
//! exiting. Time is tokio's paused clock, which the wall clock (`TokioClock::starting_at`)
//! follows: an hour takes milliseconds. One test runs real OS processes (this test binary
//! again, as workers), on the real clock.

mod support;

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use drchrono_core::DrChronoError;
use drchrono_ratelimit::{
    Backend, BackendError, Clock, DrChronoRateLimitLayer, FileRateLimitBackend, FileStateError,
    NotUntil, Priority, RateLimitConfig, RateLimiter, Rule, TokioClock,
};
use futures::FutureExt;
use http::{Request, Response};
use serde_json::Value;
use support::start;
use tower::{Layer, ServiceExt, service_fn};

/// 2026-01-05T11:00:00Z: the end of [`start`]'s hour.
fn top_of_the_hour() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_767_610_800)
}

/// DrChrono's rules with no safety margin: the rules exactly.
fn no_margin() -> RateLimitConfig {
    RateLimitConfig::builder()
        .safety_margin(Duration::ZERO)
        .build()
        .unwrap()
}

/// A backend on the state file at `path` (no `fsync`: a test's temporary directory).
fn open(path: &Path, config: &RateLimitConfig) -> FileRateLimitBackend {
    FileRateLimitBackend::open(path, config)
        .unwrap()
        .fsync(false)
}

/// `count` interactive requests decided at `at`, each admitted.
async fn admit(backend: &FileRateLimitBackend, at: SystemTime, count: usize) {
    for _ in 0..count {
        backend
            .try_acquire(at, Priority::Interactive)
            .await
            .unwrap()
            .unwrap();
    }
}

/// A "process": a limiter on its own backend on the state file at `path`.
/// The refusal of one interactive request at `at`.
async fn refusal(backend: &FileRateLimitBackend, at: SystemTime) -> NotUntil {
    backend
        .try_acquire(at, Priority::Interactive)
        .await
        .unwrap()
        .unwrap_err()
}

fn process(path: &Path, config: &RateLimitConfig, clock: TokioClock) -> RateLimiter {
    let backend = open(path, config);
    RateLimiter::builder(config.clone())
        .backend(backend)
        .clock(clock)
        .build()
}

/// `count` permits, one after the other: the instants they were released at.
async fn send(limiter: &RateLimiter, count: usize) -> Vec<SystemTime> {
    let mut released = Vec::with_capacity(count);
    for _ in 0..count {
        released.push(limiter.acquire(Priority::Interactive).await.unwrap());
    }
    released
}

/// `count` permits asked for at once: the instants they were released at.
async fn burst(limiter: &RateLimiter, count: usize) -> Vec<SystemTime> {
    let tasks: Vec<_> = (0..count)
        .map(|_| {
            let limiter = limiter.clone();
            tokio::spawn(async move { limiter.acquire(Priority::Interactive).await.unwrap() })
        })
        .collect();
    let mut released = Vec::with_capacity(count);
    for task in tasks {
        released.push(task.await.unwrap());
    }
    released
}

/// The most instants in any rolling `window` (brute force: every window ending at one).
fn most_in_any(window: Duration, instants: &[SystemTime]) -> usize {
    instants
        .iter()
        .map(|&end| {
            instants
                .iter()
                .filter(|&&t| t <= end && t + window > end)
                .count()
        })
        .max()
        .unwrap_or(0)
}

fn offsets(instants: &[SystemTime]) -> Vec<Duration> {
    instants
        .iter()
        .map(|t| t.duration_since(start()).unwrap())
        .collect()
}

/// The acceptance test of issue 12: one process charges 480 of the hour and exits; the next,
/// started in the same hour, sends at most 20 before the top of the hour, then the full
/// hour after it.
#[tokio::test(start_paused = true)]
async fn a_restarted_process_resumes_from_what_the_first_one_charged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ratelimit.json");
    // DrChrono's rules and margin.
    let config = RateLimitConfig::default();
    let clock = TokioClock::starting_at(start());

    let first = process(&path, &config, clock);
    let charged = send(&first, 480).await;
    drop(first);
    assert!(charged.iter().all(|&t| t < top_of_the_hour()));

    let second = process(&path, &config, clock);
    let restarted_at = clock.now();
    let released = send(&second, 520).await;
    let before = released.iter().filter(|&&t| t < top_of_the_hour()).count();
    assert_eq!(before, 20, "the hour had 20 left");
    // The rest waited for the top of the hour (plus the margin), then had the whole hour.
    let next_hour = top_of_the_hour() + Duration::from_secs(3600);
    assert!(
        released[20..]
            .iter()
            .all(|&t| t >= top_of_the_hour() && t < next_hour)
    );
    assert_eq!(
        released[20],
        top_of_the_hour() + config.safety_margin(),
        "the first of the new hour"
    );
    let status = second.status().await.unwrap();
    assert_eq!(status.rules[2].remaining, 0);
    assert!(status.next_available >= next_hour);
    // Together, the two processes kept to DrChrono's rules.
    let mut all = charged.clone();
    all.extend(&released);
    support::assert_drchrono_rules(&offsets(&all));

    // Control: the second process as it was before this backend (in memory) would have
    // sent its burst into the hour the first one had all but spent.
    let forgetful = RateLimiter::builder(config.clone())
        .start_at(restarted_at)
        .build();
    let released = send(&forgetful, 30).await;
    assert!(
        released.iter().filter(|&&t| t < top_of_the_hour()).count() > 20,
        "an in-memory budget starts full"
    );
}

/// Two processes started 100 ms apart, each sending a burst: together never more than 9 in
/// any rolling second.
#[tokio::test(start_paused = true)]
async fn two_processes_started_100_ms_apart_never_exceed_9_in_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ratelimit.json");
    // No margin: the rule exactly.
    let config = no_margin();
    let clock = TokioClock::starting_at(start());

    let run = |first: RateLimiter, second: Box<dyn FnOnce() -> RateLimiter>| async move {
        let first_burst = tokio::spawn(async move { burst(&first, 30).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let second = second();
        let mut released = burst(&second, 30).await;
        released.extend(first_burst.await.unwrap());
        released.sort();
        released
    };

    let first = process(&path, &config, clock);
    let second_path = path.clone();
    let second_config = config.clone();
    let released = run(
        first,
        Box::new(move || process(&second_path, &second_config, clock)),
    )
    .await;
    assert_eq!(released.len(), 60);
    assert_eq!(most_in_any(Duration::from_secs(1), &released), 9);
    // Every second is used to the full: 9 at 0 s, 9 at 1 s, …, 6 at 6 s.
    assert_eq!(
        released.last(),
        Some(&(start() + Duration::from_secs(6))),
        "{:?}",
        offsets(&released)
    );

    // Control: two in-memory budgets send 18 in the first second.
    let local =
        |config: &RateLimitConfig| RateLimiter::builder(config.clone()).clock(clock).build();
    let second_config = config.clone();
    let released = run(local(&config), Box::new(move || local(&second_config))).await;
    assert_eq!(most_in_any(Duration::from_secs(1), &released), 18);
}

/// A server 429 recorded by one process pauses the others, through the file; `status`
/// reads the file too.
#[tokio::test(start_paused = true)]
async fn a_pause_and_the_status_are_shared_through_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ratelimit.json");
    let config = no_margin();
    let one = FileRateLimitBackend::open(&path, &config).unwrap();
    let other = FileRateLimitBackend::open(&path, &config).unwrap();
    let now = start();
    admit(&one, now, 3).await;
    let status = other.status(now).await.unwrap();
    assert_eq!(status.rules[0].remaining, 6);
    assert_eq!(status.rules[2].remaining, 497);

    let until = now + Duration::from_secs(30);
    one.pause_until(now, until).await.unwrap();
    let refused = refusal(&other, now + Duration::from_secs(1)).await;
    assert_eq!(refused.earliest(), until);
    // The pause, not a rule, held it.
    assert_eq!(refused.rule(), None);
    assert_eq!(other.status(now).await.unwrap().paused_until, Some(until));
    admit(&other, until, 1).await;
    assert_eq!(one.status(until).await.unwrap().rules[2].remaining, 496);
    // Eight more fill the rolling second: the refusal names that rule.
    admit(&one, until, 8).await;
    let refused = refusal(&other, until).await;
    assert_eq!(refused.earliest(), until + Duration::from_secs(1));
    assert_eq!(refused.rule(), Some(config.rules()[0]));
}

/// A server 429's pause that could not be written is held in memory: once the file is
/// usable again (or removed), this process still sends nothing during the pause, and its next
/// decision writes the pause for the other processes.
#[tokio::test(start_paused = true)]
async fn a_pause_that_could_not_be_written_is_held_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    fs::create_dir(&state_dir).unwrap();
    let path = state_dir.join("ratelimit.json");
    let config = no_margin();
    let backend = open(&path, &config);
    let now = start();
    admit(&backend, now, 3).await;

    // The state's directory is gone when the 429 comes (unmounted, moved by an operator):
    // the write fails for real, whoever runs the test (a read-only directory does not stop
    // root), and the pause call says so.
    let away = dir.path().join("away");
    fs::rename(&state_dir, &away).unwrap();
    let until = now + Duration::from_secs(30);
    let error = backend.pause_until(now, until).await.unwrap_err();
    assert!(
        matches!(file_state_error(&error), FileStateError::Io { .. }),
        "{error:?}"
    );
    // Usable again, with the state from before the pause: this process holds to it all the
    // same.
    fs::rename(&away, &state_dir).unwrap();
    let during = now + Duration::from_secs(1);
    let refused = refusal(&backend, during).await;
    assert_eq!(refused.earliest(), until);
    assert_eq!(refused.rule(), None);
    let status = backend.status(during).await.unwrap();
    assert_eq!(status.paused_until, Some(until));
    assert_eq!(status.rules[2].remaining, 497, "the charges were kept");
    // That decision wrote the pause: another process holds to it too.
    let other = FileRateLimitBackend::open(&path, &config).unwrap();
    let refused = refusal(&other, during).await;
    assert_eq!(refused.earliest(), until);
    // At its end, requests go again.
    admit(&backend, until, 1).await;

    // A 429 while the file is broken (not a state this crate wrote): the pause cannot be
    // written either, and survives the operator's removal of the file.
    let now = until + Duration::from_secs(5);
    fs::write(&path, b"{\"version\":1,\"rules\":[").unwrap();
    let until = now + Duration::from_secs(20);
    let error = backend.pause_until(now, until).await.unwrap_err();
    assert!(
        matches!(file_state_error(&error), FileStateError::Corrupt { .. }),
        "{error:?}"
    );
    fs::remove_file(&path).unwrap();
    let during = now + Duration::from_secs(1);
    let refused = refusal(&backend, during).await;
    assert_eq!(refused.earliest(), until);
    admit(&backend, until, 1).await;
}

fn file_state_error(error: &BackendError) -> &FileStateError {
    assert_eq!(error.backend(), "file");
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<FileStateError>())
        .expect("a FileStateError source")
}

/// A file that is not a state this crate wrote fails closed, typed: never an empty budget.
#[tokio::test(start_paused = true)]
async fn a_corrupt_file_fails_closed_and_nothing_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ratelimit.json");
    let config = RateLimitConfig::default();

    // At start-up.
    fs::write(&path, b"{\"version\":1,\"rules\":[").unwrap();
    let error = FileRateLimitBackend::open(&path, &config).unwrap_err();
    assert!(
        matches!(file_state_error(&error), FileStateError::Corrupt { .. }),
        "{error:?}"
    );
    fs::write(&path, b"{\"version\":2}").unwrap();
    let error = FileRateLimitBackend::open(&path, &config).unwrap_err();
    assert!(matches!(
        file_state_error(&error),
        FileStateError::UnsupportedVersion { found: 2, .. }
    ));
    fs::remove_file(&path).unwrap();
    let other_app = RateLimitConfig::builder()
        .application("other")
        .build()
        .unwrap();
    let backend = FileRateLimitBackend::open(&path, &other_app).unwrap();
    admit(&backend, start(), 1).await;
    let error = FileRateLimitBackend::open(&path, &config).unwrap_err();
    assert!(matches!(
        file_state_error(&error),
        FileStateError::OtherApplication { found, .. } if found == "other"
    ));
    fs::remove_file(&path).unwrap();

    // While running: the layer sends nothing and says why.
    let limiter = process(&path, &config, TokioClock::starting_at(start()));
    let sent = Arc::new(AtomicUsize::new(0));
    let inner = service_fn({
        let sent = Arc::clone(&sent);
        move |_: Request<()>| {
            sent.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, DrChronoError>(Response::new(())) }
        }
    });
    let service = DrChronoRateLimitLayer::new(limiter.clone()).layer(inner);
    service.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(sent.load(Ordering::SeqCst), 1);

    // Truncated, as a power loss without fsync may leave it on some filesystems.
    fs::write(&path, b"").unwrap();
    for _ in 0..3 {
        let error = service.clone().oneshot(Request::new(())).await.unwrap_err();
        assert!(error.is_not_sent());
        let DrChronoError::Transport { source, .. } = &error else {
            panic!("not a transport error: {error:?}");
        };
        let backend = source.downcast_ref::<BackendError>().unwrap();
        assert!(matches!(
            file_state_error(backend),
            FileStateError::Corrupt { .. }
        ));
    }
    assert_eq!(
        sent.load(Ordering::SeqCst),
        1,
        "nothing sent without a permit"
    );
    assert!(limiter.status().await.is_err());
    // Charged instants out of order: inconsistent, corrupt too.
    fs::write(
        &path,
        br#"{"version":1,"application":"default","now_ns":1767609420000000000,"paused_until_ns":null,"last_charge_ns":null,"rules":[{"kind":"sliding","max":9,"window_ns":1000000000,"charged_ns":[1767609420000000000,1767609419000000000]}]}"#,
    )
    .unwrap();
    assert!(limiter.acquire(Priority::Interactive).await.is_err());

    // Removed by an operator: a full budget again.
    fs::remove_file(&path).unwrap();
    service.oneshot(Request::new(())).await.unwrap();
    assert_eq!(sent.load(Ordering::SeqCst), 2);
}

/// A state file no limiter can have written, whatever the JSON shape, fails closed as
/// corrupt, at start-up and while running: never read some way that takes spent budget for
/// unspent.
#[tokio::test(start_paused = true)]
async fn an_inconsistent_file_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ratelimit.json");
    let config = RateLimitConfig::default();
    // 9 charged at the start: a second, 10 minutes and an hour that hold 9.
    let t = support::START * 1_000_000_000;
    let state = |pause: &str, charge: &str, rules: &str| {
        format!(
            r#"{{"version":1,"application":"default","now_ns":{t},"paused_until_ns":{pause},"last_charge_ns":{charge},"rules":[{rules}]}}"#
        )
    };
    let log = |max: u32, window: u64, n: usize| {
        let charged = vec![t.to_string(); n].join(",");
        format!(r#"{{"kind":"sliding","max":{max},"window_ns":{window},"charged_ns":[{charged}]}}"#)
    };
    let hour = |latest: (u64, u32, u32), before: (u64, u32, u32)| {
        format!(
            r#"{{"kind":"aligned","max":500,"period_ns":3600000000000,"latest":{{"index":{},"count":{},"next":{}}},"before":{{"index":{},"count":{},"next":{}}}}}"#,
            latest.0, latest.1, latest.2, before.0, before.1, before.2
        )
    };
    let k = t / 3_600_000_000_000;
    let second = log(9, 1_000_000_000, 9);
    let window = log(290, 600_000_000_000, 9);
    let counted = hour((k, 9, 0), (k - 1, 0, 0));
    let rules = format!("{second},{window},{counted}");
    let good = state("null", &t.to_string(), &rules);
    let shapes = [
        ("no rules", state("null", "null", "")),
        (
            "instants without a latest charge",
            state("null", "null", &rules),
        ),
        (
            "the newest instant is not the latest charge",
            state("null", &(t + 1).to_string(), &rules),
        ),
        (
            "more instants than the maximum",
            state(
                "null",
                &t.to_string(),
                &format!("{},{window},{counted}", log(5, 1_000_000_000, 9)),
            ),
        ),
        (
            "two logs of the rolling second that disagree",
            state(
                "null",
                &t.to_string(),
                &format!(
                    r#"{{"kind":"sliding","max":9,"window_ns":1000000000,"charged_ns":[{},{t}]}},{rules}"#,
                    t - 1
                ),
            ),
        ),
        (
            "aligned counts that moved backwards",
            state(
                "null",
                &t.to_string(),
                &format!("{second},{window},{}", hour((k, 9, 0), (k - 1, 0, 500))),
            ),
        ),
        (
            "a rule of period 0",
            state("null", &t.to_string(), &format!("{rules},{}", log(9, 0, 0))),
        ),
        (
            "a pause over before the latest decision",
            state(&(t - 1).to_string(), &t.to_string(), &rules),
        ),
        (
            "a missing field (the pause)",
            good.replace(r#""paused_until_ns":null,"#, ""),
        ),
        (
            "a misspelled field",
            good.replace("paused_until_ns", "paused_until"),
        ),
        (
            "an unknown field in a rule",
            good.replace(r#""kind":"sliding","#, r#""kind":"sliding","spare":1,"#),
        ),
    ];
    // The good one decides: the rolling second is spent.
    fs::write(&path, &good).unwrap();
    let backend = FileRateLimitBackend::open(&path, &config).unwrap();
    let now = UNIX_EPOCH + Duration::from_nanos(t);
    let status = backend.status(now).await.unwrap();
    assert_eq!(status.rules[0].remaining, 0);
    assert_eq!(status.rules[2].remaining, 491);
    for (shape, bytes) in &shapes {
        fs::write(&path, bytes).unwrap();
        let error = FileRateLimitBackend::open(&path, &config).unwrap_err();
        assert!(
            matches!(file_state_error(&error), FileStateError::Corrupt { .. }),
            "{shape}: {error:?}"
        );
        let error = backend
            .try_acquire(now, Priority::Interactive)
            .await
            .unwrap_err();
        assert!(
            matches!(file_state_error(&error), FileStateError::Corrupt { .. }),
            "{shape}: {error:?}"
        );
    }
    // The rolling second listed twice, an empty log first (a configuration that had two
    // rules of it): read as the longer log, not as a second with nothing in it.
    let twice = state(
        "null",
        &t.to_string(),
        &format!("{},{rules}", log(9, 1_000_000_000, 0)),
    );
    fs::write(&path, twice).unwrap();
    let refused = refusal(&backend, now).await;
    assert_eq!(refused.rule(), Some(config.rules()[0]));
}

/// The state file and the lock file are private (`0600`), the file holds no more than the
/// rules can still see however long the limiter runs, and no temporary file stays behind.
#[tokio::test(start_paused = true)]
async fn the_file_is_private_and_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ratelimit.json");
    let config = RateLimitConfig::default();
    let limiter = process(&path, &config, TokioClock::starting_at(start()));
    let mut largest = 0;
    // 1,100 requests: into a third clock hour, many times the 10-minute window.
    for _ in 0..11 {
        send(&limiter, 100).await;
        largest = largest.max(fs::metadata(&path).unwrap().len());
    }
    assert!(limiter.clock().now() > top_of_the_hour() + Duration::from_secs(3600));
    let state: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    let now = state["now_ns"].as_u64().unwrap();
    let charged = |rule: usize| -> Vec<u64> {
        state["rules"][rule]["charged_ns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap())
            .collect()
    };
    let (second, window) = (charged(0), charged(1));
    assert!(second.len() <= 9 && window.len() <= 290);
    let margin = 100_000_000;
    assert!(second.iter().all(|&t| t + 1_000_000_000 + margin > now));
    assert!(window.iter().all(|&t| t + 600_000_000_000 + margin > now));
    // 299 instants of 19 digits and the rest: a few kilobytes, whatever ran before.
    assert!(largest < 8 * 1024, "{largest} bytes");

    let mut names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["ratelimit.json", "ratelimit.json.lock"]);
    #[cfg(unix)]
    for name in names {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.path().join(&name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
}

/// Temporary files that crashed writes left are removed once a minute old; nothing else.
#[test]
fn stale_temporary_files_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ratelimit.json");
    let stale = dir
        .path()
        .join(".ratelimit.json.00112233445566778899aabbccddeeff.tmp");
    let fresh = dir
        .path()
        .join(".ratelimit.json.ffeeddccbbaa99887766554433221100.tmp");
    let foreign = dir.path().join(".ratelimit.json.backup.tmp");
    for file in [&stale, &fresh, &foreign] {
        fs::write(file, b"{}").unwrap();
    }
    let old = SystemTime::now() - Duration::from_secs(120);
    for file in [&stale, &foreign] {
        fs::File::options()
            .write(true)
            .open(file)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    FileRateLimitBackend::open(&path, &RateLimitConfig::default()).unwrap();
    assert!(!stale.exists());
    assert!(fresh.exists() && foreign.exists());
}

/// The environment variable that turns this test binary into a worker process.
const WORKER_ENV: &str = "DRCHRONO_FILE_BACKEND_WORKER";

/// The line a worker prints its admitted instants on.
const RESULT_PREFIX: &str = "FILE_WORKER_RESULT ";

/// Rules short enough for real time: 5 per rolling 200 ms, 25 per clock hour, a 50 ms margin
/// (far more than a decision takes, so the instants a worker asked at, which it reports,
/// keep to the rules as the instants charged do).
fn worker_config() -> RateLimitConfig {
    RateLimitConfig::builder()
        .rules([
            Rule::sliding(5, Duration::from_millis(200)).unwrap(),
            Rule::aligned(25, Duration::from_secs(3600)).unwrap(),
        ])
        .safety_margin(Duration::from_millis(50))
        .build()
        .unwrap()
}

/// Not a test of its own: the entry point of the worker processes the next test spawns.
/// Without `DRCHRONO_FILE_BACKEND_WORKER` (the state file's path) it returns at once.
#[test]
fn file_worker_entry_point() {
    let Ok(path) = std::env::var(WORKER_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let admitted: Vec<u128> = runtime.block_on(async {
        let backend = FileRateLimitBackend::open(&path, &worker_config())
            .unwrap()
            .fsync(false);
        let mut admitted = Vec::new();
        // Up to 20 each: more than the hour holds for both.
        while admitted.len() < 20 {
            let now = SystemTime::now();
            match backend
                .try_acquire(now, Priority::Interactive)
                .await
                .unwrap()
            {
                Ok(()) => admitted.push(now.duration_since(UNIX_EPOCH).unwrap().as_nanos()),
                // The hour is spent (by this worker and the other).
                Err(refused) if refused.wait_time_from(now) > Duration::from_secs(5) => break,
                Err(refused) => tokio::time::sleep(refused.wait_time_from(now)).await,
            }
        }
        admitted
    });
    println!("\n{RESULT_PREFIX}{}", serde_json::json!(admitted));
}

/// Two OS processes on one state file, each taking what it can: together they keep to
/// every rule, and spend the hour between them.
#[test]
fn two_os_processes_share_one_budget() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ratelimit.json");
    let workers: Vec<_> = (0..2)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "file_worker_entry_point",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(WORKER_ENV, &path)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut admitted = Vec::new();
    for worker in workers {
        let output = worker.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "worker failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let line = stdout
            .lines()
            .find_map(|line| line.strip_prefix(RESULT_PREFIX))
            .unwrap_or_else(|| panic!("no worker result:\n{stdout}"));
        let instants: Vec<u64> = serde_json::from_str(line).unwrap();
        admitted.extend(
            instants
                .into_iter()
                .map(|nanos| UNIX_EPOCH + Duration::from_nanos(nanos)),
        );
    }
    admitted.sort();
    assert!(
        most_in_any(Duration::from_millis(200), &admitted) <= 5,
        "{admitted:?}"
    );
    let mut per_hour = HashMap::<u64, usize>::new();
    for t in &admitted {
        *per_hour
            .entry(t.duration_since(UNIX_EPOCH).unwrap().as_secs() / 3600)
            .or_default() += 1;
    }
    assert!(per_hour.values().all(|&n| n <= 25), "{per_hour:?}");
    // Both stopped only when the hour was spent (or, across a top of the hour, when each
    // had its 20).
    assert!(admitted.len() >= 25, "{}", admitted.len());
}

/// A clock stepped far back (wrong at boot, then corrected) does not hold the budget until
/// it gets back to where it was: the requests it charged count in the current hour and in
/// the rolling windows from now.
#[tokio::test(start_paused = true)]
async fn a_state_from_a_clock_far_ahead_does_not_hold_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ratelimit.json");
    let config = no_margin();
    let ahead = start() + Duration::from_secs(30 * 24 * 3600);
    let wrong = process(&path, &config, TokioClock::starting_at(ahead));
    send(&wrong, 9).await;
    drop(wrong);
    let corrected = process(&path, &config, TokioClock::starting_at(start()));
    let released = send(&corrected, 10).await;
    // The 9 count as charged now: the next goes a second later.
    assert_eq!(released[0], start() + Duration::from_secs(1));
    let status = corrected.status().await.unwrap();
    assert_eq!(status.rules[2].remaining, 500 - 9 - 10);
}

/// A wall clock stepped back a little, then forward again (NTP undoing a wrong step, a
/// virtual machine resumed behind and then corrected): what was charged before the step
/// holds each rolling window until it leaves it on the clock as it reads again, as on
/// DrChrono's server, whose windows still hold those requests.
#[tokio::test(start_paused = true)]
async fn a_clock_stepped_back_then_forward_again_keeps_the_windows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ratelimit.json");
    let config = no_margin();
    let backend = open(&path, &config);
    let second = Some(config.rules()[0]);
    let acquire = |at: SystemTime| {
        let backend = &backend;
        async move {
            backend
                .try_acquire(at, Priority::Interactive)
                .await
                .unwrap()
        }
    };
    let now = start();
    // 9 at `now`: the rolling second is full until `now + 1 s`, here and on the server.
    for _ in 0..9 {
        acquire(now).await.unwrap();
    }
    // 100 ms later the clock steps 30 s back: the second is still full.
    let back = now + Duration::from_millis(100) - Duration::from_secs(30);
    let refused_back = acquire(back).await.unwrap_err();
    assert_eq!(refused_back.rule(), second);
    // The step is undone: 500 ms after the 9 went, the server's second still holds them.
    let again = now + Duration::from_millis(500);
    let refused = acquire(again).await.unwrap_err();
    assert_eq!(refused.rule(), second);
    assert_eq!(refused.earliest(), now + Duration::from_secs(1));
    // They leave it at `now + 1 s`: 9 more go, not 10.
    let freed = now + Duration::from_secs(1);
    for _ in 0..9 {
        acquire(freed).await.unwrap();
    }
    assert_eq!(acquire(freed).await.unwrap_err().rule(), second);
    let status = backend.status(freed).await.unwrap();
    assert_eq!(status.rules[2].remaining, 500 - 18);
    // Refused after the step back, the instant named was the earliest the second may free
    // were the new reading right (a second after the 9, at its offset): a lower bound,
    // since the 9 stayed where they were, and the windows wait for the clock to get back.
    assert_eq!(refused_back.earliest(), back + Duration::from_secs(1));
}

/// A step back of more than the longest rule (the hour: a clock that was far ahead, then
/// corrected) rebases the state on the reading, as documented: the charges count as made at
/// it, in the rolling windows and in the current hour, and the refusal writes that.
#[tokio::test(start_paused = true)]
async fn a_step_back_beyond_the_longest_rule_rebases_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ratelimit.json");
    let config = no_margin();
    let backend = open(&path, &config);
    let now = start();
    admit(&backend, now, 9).await;
    // An hour and a second back, into the hour before.
    let back = now - Duration::from_secs(3_601);
    let refused = refusal(&backend, back).await;
    assert_eq!(refused.earliest(), back + Duration::from_secs(1));
    let state: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    let back_ns = u64::try_from(back.duration_since(UNIX_EPOCH).unwrap().as_nanos()).unwrap();
    assert_eq!(state["now_ns"].as_u64(), Some(back_ns), "written at once");
    // A second later the 9 have left the rolling second: not held until the clock gets
    // back to `now`. The hour it reads counts them.
    let later = back + Duration::from_secs(1);
    admit(&backend, later, 9).await;
    let status = backend.status(later).await.unwrap();
    assert_eq!(status.rules[0].remaining, 0);
    assert_eq!(status.rules[2].remaining, 500 - 18);
}

/// A request whose caller goes away while its decision runs (here held behind another
/// process's lock on the state file) is not charged: the decision finishes and, as it
/// admitted a request that will never be sent, takes its charge back. With one request an
/// hour, the next is admitted at once.
#[tokio::test]
async fn a_waiter_dropped_while_its_decision_runs_is_not_charged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("budget");
    let config = RateLimitConfig::builder()
        .rules([Rule::aligned(1, Duration::from_secs(3_600)).unwrap()])
        .build()
        .unwrap();
    let backend = open(&path, &config);
    let limiter = RateLimiter::builder(config.clone())
        .backend(open(&path, &config))
        .build();

    // Another process holds the state file's lock: the decision waits for it.
    let lock = fs::File::create(dir.path().join("budget.lock")).unwrap();
    lock.lock().unwrap();
    let mut acquire = Box::pin(limiter.acquire(Priority::Interactive));
    assert!(
        acquire.as_mut().now_or_never().is_none(),
        "waiting for the lock"
    );
    drop(acquire);
    lock.unlock().unwrap();

    // The decision admits the request (writing the state file, which nothing had written
    // yet), then takes its charge back.
    let mut polls = 0;
    loop {
        let written = path.exists();
        let status = backend.status(SystemTime::now()).await.unwrap();
        if written && status.rules[0].remaining == 1 {
            break;
        }
        polls += 1;
        assert!(
            polls < 10_000,
            "the dropped waiter's charge was not taken back"
        );
        tokio::task::yield_now().await;
    }
    assert!(
        backend
            .try_acquire(SystemTime::now(), Priority::Interactive)
            .await
            .unwrap()
            .is_ok()
    );
}
