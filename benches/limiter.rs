//! The limiter's non-blocking decision against governor's, in the same run.
//!
//! `drchrono_local`: [`LocalLimiter::try_acquire`] on DrChrono's three rules (two sliding
//! logs and a clock-aligned hour) at a frozen `now`. `governor_direct`: governor's direct
//! (un-keyed) limiter `check()` with one quota of 9 per second on its fake clock. Both
//! decide "no" after the first burst, the steady state of a saturated client. The
//! `_2threads` variants run the same decision on two threads sharing one limiter.

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Barrier;
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use drchrono_ratelimit::{LocalLimiter, RateLimitConfig};
use governor::clock::FakeRelativeClock;
use governor::{Quota, RateLimiter};

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
    let at = now();
    group.bench_function("drchrono_local", |b| {
        b.iter(|| black_box(drchrono.try_acquire(black_box(at))))
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

criterion_group!(benches, limiter_decision);
criterion_main!(benches);
