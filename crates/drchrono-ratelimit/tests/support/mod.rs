//! Helpers shared by the paused-time tests.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use drchrono_ratelimit::{DrChronoRateLimitLayer, RateLimitConfig, RateLimiter};
use http::{Request, Response};
use tower::util::BoxCloneService;
use tower::{Layer, service_fn};

/// 2026-01-05T10:37:00Z.
pub const START: u64 = 1_767_609_420;

pub fn start() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(START)
}

pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// DrChrono's rules with the given margin (ms), on a clock reading [`start`] now.
pub fn limiter(margin_ms: u64) -> RateLimiter {
    limiter_with(RateLimitConfig::builder().safety_margin(Duration::from_millis(margin_ms)))
}

pub fn limiter_with(builder: drchrono_ratelimit::RateLimitConfigBuilder) -> RateLimiter {
    RateLimiter::builder(builder.build().unwrap())
        .start_at(start())
        .build()
}

/// Release times, as offsets from the start, of every request the inner service saw.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<(usize, Duration)>>>);

impl Log {
    pub fn sorted_offsets(&self) -> Vec<Duration> {
        let mut v: Vec<_> = self.0.lock().unwrap().iter().map(|&(_, d)| d).collect();
        v.sort();
        v
    }

    pub fn by_index(&self) -> Vec<(usize, Duration)> {
        let mut v = self.0.lock().unwrap().clone();
        v.sort();
        v
    }
}

pub type Svc = BoxCloneService<Request<usize>, Response<()>, Infallible>;

/// A no-op inner service behind the layer, recording when each request (body = its index)
/// reached it.
pub fn recorded(limiter: &RateLimiter, log: &Log) -> Svc {
    let log = log.clone();
    let origin = tokio::time::Instant::now();
    let inner = service_fn(move |request: Request<usize>| {
        let log = log.clone();
        async move {
            log.0
                .lock()
                .unwrap()
                .push((*request.body(), origin.elapsed()));
            Ok::<_, Infallible>(Response::new(()))
        }
    });
    BoxCloneService::new(DrChronoRateLimitLayer::new(limiter.clone()).layer(inner))
}

/// Asserts DrChrono's rules (9 per rolling 1 s, 290 per rolling 600 s, 500 per clock hour)
/// hold for these release offsets from [`start`].
pub fn assert_drchrono_rules(offsets: &[Duration]) {
    let mut sorted = offsets.to_vec();
    sorted.sort();
    for (i, &t) in sorted.iter().enumerate() {
        let in_window = |w: Duration| sorted[..=i].iter().filter(|&&x| x + w > t).count();
        assert!(
            in_window(secs(1.0)) <= 9,
            "more than 9 in the second ending at {t:?}"
        );
        assert!(
            in_window(secs(600.0)) <= 290,
            "more than 290 in 600 s ending at {t:?}"
        );
    }
    let hour_of = |d: &Duration| (START + d.as_secs()) / 3600;
    for t in &sorted {
        let n = sorted.iter().filter(|x| hour_of(x) == hour_of(t)).count();
        assert!(n <= 500, "more than 500 in the clock hour of {t:?}");
    }
}
