//! The limiter against its peers, in the same run: one decision, and requests per second
//! through the layer.
//!
//! `limiter_decision` — `drchrono_local`: [`LocalLimiter::try_acquire`] on DrChrono's three
//! rules (two sliding logs and a clock-aligned hour) at a frozen reading of both clocks (a
//! [`Now`], read once, as governor's fake clock is). `drchrono_local_systemtime`: the same at a
//! frozen `SystemTime`, converted to a reading at every call (what a caller holding
//! `SystemTime`s pays). `governor_direct`: governor's direct (un-keyed) limiter `check()` with
//! one quota of 9 per second on its fake clock. Both decide "no" after the first burst, the
//! steady state of a saturated client. The `_2threads` variants run the same decision on two
//! threads sharing one limiter.
//!
//! `limiter_throughput` — admitted requests per second from 64 tasks on a 2-worker
//! multi-thread runtime, 20,000 requests an iteration, with rules too wide to make anyone
//! wait (the cost of admission itself, shared by every task): `drchrono_layer` sends them
//! through [`DrChronoRateLimitLayer`] over a no-op service (three exact rules: two sliding
//! logs and a clock-aligned hour; each decision reads tokio's clock and the system clock);
//! `bare_service` sends them to the no-op service alone (the harness: a `Request`, a
//! `Response` and `oneshot`, with no limiter: the most any layer could reach);
//! `tower_rate_limit_buffered` through tower's `RateLimit` (one fixed window) behind a
//! `Buffer`, the way it is shared between tasks; `governor_until_ready` awaits governor's
//! direct limiter (one GCRA quota) on its default clock, with no request or service;
//! `governor_layer` awaits the same inside a `service_fn` in `bare_service`'s harness (the
//! like-for-like peer of `drchrono_layer`).

use std::convert::Infallible;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use drchrono_ratelimit::{
    DrChronoRateLimitLayer, LocalLimiter, Now, RateLimitConfig, RateLimiter as DrChronoLimiter,
    Rule,
};
use governor::clock::FakeRelativeClock;
use governor::{Quota, RateLimiter};
use http::{Request, Response};
use tower::{Service, ServiceBuilder, ServiceExt};

/// 2026-01-05T10:37:00Z.
fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_609_420)
}

fn governor_limiter() -> RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    FakeRelativeClock,
    governor::middleware::NoOpMiddleware<<FakeRelativeClock as governor::clock::Clock>::Instant>,
> {
    let quota = Quota::per_second(NonZeroU32::new(9).expect("9 is not zero"));
    RateLimiter::direct_with_clock(quota, FakeRelativeClock::default())
}

/// Runs `op` `iters` times on each of two threads at once; returns the slower thread's time.
fn two_threads(iters: u64, op: &(dyn Fn() + Sync)) -> Duration {
    let barrier = Barrier::new(2);
    std::thread::scope(|scope| {
        let run = || {
            barrier.wait();
            let start = Instant::now();
            for _ in 0..iters {
                op();
            }
            start.elapsed()
        };
        let a = scope.spawn(run);
        let b = scope.spawn(run);
        let a = a.join().expect("bench thread");
        let b = b.join().expect("bench thread");
        a.max(b)
    })
}

fn limiter_decision(c: &mut Criterion) {
    let mut group = c.benchmark_group("limiter_decision");

    let drchrono = LocalLimiter::new(&RateLimitConfig::default());
    let at = Now::from(now());
    group.bench_function("drchrono_local", |b| {
        b.iter(|| black_box(drchrono.try_acquire(black_box(at))))
    });

    let drchrono = LocalLimiter::new(&RateLimitConfig::default());
    let system_time = now();
    group.bench_function("drchrono_local_systemtime", |b| {
        b.iter(|| black_box(drchrono.try_acquire(black_box(system_time))))
    });

    let governor = governor_limiter();
    group.bench_function("governor_direct", |b| {
        b.iter(|| black_box(governor.check()))
    });

    let drchrono = LocalLimiter::new(&RateLimitConfig::default());
    group.bench_function("drchrono_local_2threads", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &|| {
                black_box(drchrono.try_acquire(black_box(at)).is_ok());
            })
        })
    });

    let governor = governor_limiter();
    group.bench_function("governor_direct_2threads", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &|| {
                black_box(governor.check().is_ok());
            })
        })
    });

    group.finish();
}

/// Requests an iteration of `limiter_throughput`, and the tasks sending them.
const REQUESTS: u64 = 20_000;
const TASKS: u64 = 64;

/// Runs `REQUESTS` calls of `send` from `TASKS` tasks on `runtime`; returns the time taken.
fn from_tasks<F, Fut>(runtime: &tokio::runtime::Runtime, send: F) -> Duration
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    runtime.block_on(async move {
        let start = Instant::now();
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let send = send.clone();
                tokio::spawn(async move {
                    for _ in 0..REQUESTS / TASKS {
                        send().await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("bench task");
        }
        start.elapsed()
    })
}

/// DrChrono's three rule shapes, each too wide to make a request wait.
fn wide_rules() -> RateLimitConfig {
    let huge = 1_000_000_000;
    RateLimitConfig::builder()
        .rules([
            Rule::sliding(huge, Duration::from_secs(1)).expect("a valid rule"),
            Rule::sliding(huge, Duration::from_secs(600)).expect("a valid rule"),
            Rule::aligned(huge, Duration::from_secs(3600)).expect("a valid rule"),
        ])
        .safety_margin(Duration::ZERO)
        .build()
        .expect("wide rules are valid")
}

fn limiter_throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("limiter_throughput");
    group.throughput(Throughput::Elements(REQUESTS));
    group.sample_size(20);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let noop =
        || tower::service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new(())) });

    group.bench_function("drchrono_layer", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    // A fresh budget per iteration: the sliding logs hold every request of
                    // their window, and these windows are wide.
                    let service = ServiceBuilder::new()
                        .layer(DrChronoRateLimitLayer::new(DrChronoLimiter::new(
                            wide_rules(),
                        )))
                        .service(noop());
                    from_tasks(&runtime, move || {
                        let service = service.clone();
                        async move {
                            let response = service.oneshot(Request::new(())).await;
                            black_box(response.expect("admitted"));
                        }
                    })
                })
                .sum()
        })
    });

    group.bench_function("bare_service", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let service = noop();
                    from_tasks(&runtime, move || {
                        // A copy: the no-op service holds nothing.
                        async move {
                            let response = service.oneshot(Request::new(())).await;
                            black_box(response.expect("admitted"));
                        }
                    })
                })
                .sum()
        })
    });

    group.bench_function("tower_rate_limit_buffered", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let service = runtime.block_on(async {
                        ServiceBuilder::new()
                            .buffer(1024)
                            .rate_limit(1_000_000_000, Duration::from_secs(1))
                            .service(noop())
                    });
                    from_tasks(&runtime, move || {
                        let mut service = service.clone();
                        async move {
                            let ready = service.ready().await.expect("ready");
                            black_box(ready.call(Request::new(())).await.expect("admitted"));
                        }
                    })
                })
                .sum()
        })
    });

    group.bench_function("governor_until_ready", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let quota = governor::Quota::per_second(
                        NonZeroU32::new(1_000_000_000).expect("nonzero"),
                    );
                    let governor = Arc::new(RateLimiter::direct(quota));
                    from_tasks(&runtime, move || {
                        let governor = Arc::clone(&governor);
                        async move {
                            governor.until_ready().await;
                        }
                    })
                })
                .sum()
        })
    });

    group.bench_function("governor_layer", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let quota = governor::Quota::per_second(
                        NonZeroU32::new(1_000_000_000).expect("nonzero"),
                    );
                    let governor = Arc::new(RateLimiter::direct(quota));
                    let service = tower::service_fn(move |_: Request<()>| {
                        let governor = Arc::clone(&governor);
                        async move {
                            governor.until_ready().await;
                            Ok::<_, Infallible>(Response::new(()))
                        }
                    });
                    from_tasks(&runtime, move || {
                        let service = service.clone();
                        async move {
                            let response = service.oneshot(Request::new(())).await;
                            black_box(response.expect("admitted"));
                        }
                    })
                })
                .sum()
        })
    });

    group.finish();
}

criterion_group!(benches, limiter_decision, limiter_throughput);
criterion_main!(benches);
