//! Decisions per second of the limiter's Redis backend against a loopback Redis.
//!
//! `tasks_1`: one task deciding in a loop (one round trip at a time: the latency bound).
//! `tasks_8`: eight tasks sharing one backend (one multiplexed connection), the throughput
//! of a busy process. Each decision is `RedisRateLimitBackend::try_acquire` on DrChrono's
//! three rules, on Redis's clock: one `EVALSHA` round trip, which the bench checks with
//! `INFO commandstats` before measuring. Redis: `DRCHRONO_TEST_REDIS_URL` when set, else a
//! private `redis-server` (from `DRCHRONO_TEST_REDIS_SERVER`, else `PATH`) on a free port.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use drchrono_ratelimit::{Backend, Priority, RateLimitConfig, RedisRateLimitBackend};

/// The Redis the bench talks to; a private server is killed on drop.
struct Redis {
    address: SocketAddr,
    child: Option<Child>,
    dir: Option<std::path::PathBuf>,
}

impl Redis {
    fn start() -> Self {
        if let Ok(url) = std::env::var("DRCHRONO_TEST_REDIS_URL")
            && !url.is_empty()
        {
            let address = url
                .trim_start_matches("redis://")
                .trim_end_matches('/')
                .parse()
                .expect("DRCHRONO_TEST_REDIS_URL is redis://127.0.0.1:PORT/");
            return Self {
                address,
                child: None,
                dir: None,
            };
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!("drchrono-bench-redis-{port}"));
        std::fs::create_dir_all(&dir).expect("redis-server directory");
        let binary = std::env::var("DRCHRONO_TEST_REDIS_SERVER")
            .ok()
            .filter(|path| !path.is_empty())
            .unwrap_or_else(|| "redis-server".to_owned());
        let child = Command::new(&binary)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {binary}: {error}"));
        let redis = Self {
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            child: Some(child),
            dir: Some(dir),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis.command(&["PING"]).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    fn url(&self) -> String {
        format!("redis://{}/", self.address)
    }

    /// One command over plain RESP; the raw reply.
    fn command(&self, args: &[&str]) -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&self.address, Duration::from_millis(200))?;
        stream.set_read_timeout(Some(Duration::from_millis(500)))?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes())?;
        let mut reply = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer) {
                Ok(0) => break,
                Ok(read) => reply.extend_from_slice(&buffer[..read]),
                Err(error) if reply.is_empty() => return Err(error),
                Err(_) => break,
            }
        }
        Ok(String::from_utf8_lossy(&reply).into_owned())
    }

    /// Calls of `command` in `INFO commandstats`.
    fn calls(&self, command: &str) -> u64 {
        let info = self.command(&["INFO", "commandstats"]).expect("INFO");
        info.lines()
            .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |calls| calls.parse().expect("a count"))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

async fn decide(backend: &RedisRateLimitBackend) {
    backend
        .try_acquire(SystemTime::now(), Priority::Interactive)
        .await
        .expect("Redis answers")
        .ok();
}

/// Runs `iters` decisions spread over `tasks` tasks sharing `backend`; the wall time.
async fn run(backend: &Arc<RedisRateLimitBackend>, tasks: u64, iters: u64) -> Duration {
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let backend = Arc::clone(backend);
            let share = iters / tasks + u64::from(task < iters % tasks);
            tokio::spawn(async move {
                for _ in 0..share {
                    decide(&backend).await;
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.expect("bench task");
    }
    start.elapsed()
}

fn redis_decision(c: &mut Criterion) {
    let redis = Redis::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let application = format!("bench-{}", std::process::id());
    let config = RateLimitConfig::builder()
        .application(application.as_str())
        .build()
        .expect("DrChrono's rules");
    let backend = Arc::new(
        runtime
            .block_on(RedisRateLimitBackend::connect(&redis.url(), &config))
            .expect("connect to Redis"),
    );

    // One round trip per decision: after the script is loaded, N decisions are N EVALSHA.
    runtime.block_on(decide(&backend));
    let before = redis.calls("evalsha");
    let (loads, evals) = (redis.calls("script|load"), redis.calls("eval"));
    const CHECKED: u64 = 200;
    runtime.block_on(run(&backend, 8, CHECKED));
    let round_trips = redis.calls("evalsha") - before;
    assert_eq!(round_trips, CHECKED, "one EVALSHA per decision");
    assert_eq!(redis.calls("script|load"), loads, "no script reload");
    assert_eq!(redis.calls("eval"), evals, "no EVAL");
    println!("redis_decision: {CHECKED} decisions, {round_trips} round trips (EVALSHA)");

    let mut group = c.benchmark_group("redis_decision");
    group.throughput(Throughput::Elements(1));
    for tasks in [1, 8] {
        group.bench_function(format!("tasks_{tasks}"), |b| {
            b.iter_custom(|iters| runtime.block_on(run(&backend, tasks, iters)));
        });
    }
    group.finish();
}

criterion_group!(benches, redis_decision);
criterion_main!(benches);
