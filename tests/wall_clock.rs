//! The system clock steps mid-run (an NTP step, a resume after suspend): the whole stack
//! against the simulator's router, under paused time.
//!
//! The simulator (DrChrono's server) and the limiter read one system clock, which starts a
//! little before the top of an hour and advances with tokio's clock. Mid-run it is stepped
//! 60 s ahead or 60 s back, both readers at once. The hourly maximum is small, so the hour
//! is the binding rule. The limiter's aligned hour follows the system clock at its next
//! decision, its rolling windows stay on tokio's monotonic clock, and the server's hour
//! never sees more than its maximum: nothing is throttled.

mod support;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use drchrono_sim::{SimConfig, Simulator};
use drchrono_tower::ratelimit::{Clock, RateLimitConfig, RateLimiter};
use tokio::time::{Instant, sleep};

use support::{client_builder, seeded_policy, simulator, steady_traffic, utc};

/// The hourly maximum of the simulator and of the limiter.
const MAX_PER_HOUR: u32 = 10;

/// 2026-01-05T10:00:00Z.
const TEN_UTC: u64 = 1_767_607_200;

/// The host's system clock as the limiter reads it: it reads a given time now, advances
/// with tokio's clock, and can be stepped, as NTP steps it.
#[derive(Debug, Clone)]
struct SystemClock(Arc<Mutex<(Instant, SystemTime)>>);

impl SystemClock {
    fn starting_at(start: SystemTime) -> Self {
        Self(Arc::new(Mutex::new((Instant::now(), start))))
    }

    /// The clock reads `now` from this instant on.
    fn set(&self, now: SystemTime) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = (Instant::now(), now);
    }
}

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        let (at, wall) = *self.0.lock().unwrap_or_else(PoisonError::into_inner);
        wall + Instant::now().saturating_duration_since(at)
    }
}

/// Runs steady traffic (2 workers, a request each every 15 s, 12 rounds) from `start`, and
/// after `before_step` sets the one system clock of the server and of the limiter by
/// `step`. Returns the simulator once every request has been answered.
async fn traffic_across_a_step(
    start: SystemTime,
    before_step: Duration,
    step: fn(SystemTime) -> SystemTime,
) -> Simulator {
    let sim = simulator(SimConfig::default().max_per_hour(MAX_PER_HOUR), start);
    let system = SystemClock::starting_at(start);
    let limits = RateLimitConfig::builder()
        .max_per_hour(MAX_PER_HOUR)
        .build()
        .unwrap();
    let limiter = RateLimiter::builder(limits).clock(system.clone()).build();
    let client = client_builder(&sim, limiter)
        .retry(seeded_policy())
        .build_with_transport(sim.router())
        .unwrap();

    let traffic = tokio::spawn(async move {
        steady_traffic(&client, 2, 12, Duration::from_secs(15)).await;
    });
    sleep(before_step).await;
    let stepped = step(sim.now());
    assert_eq!(system.now(), sim.now());
    sim.set_wall_clock(stepped);
    system.set(stepped);
    let finished = traffic.await;

    let stats = sim.stats();
    assert_eq!(stats.throttled.total(), 0, "{stats:?}");
    assert_eq!(stats.peak_hour, u64::from(MAX_PER_HOUR), "{stats:?}");
    finished.expect("every request succeeded");
    assert_eq!(stats.accepted, 24, "{stats:?}");
    sim
}

#[tokio::test(start_paused = true)]
async fn a_step_of_60_s_ahead_opens_the_next_hour_at_once() {
    // From 10:58:30, six requests in the hour of 10:00, which has four left, when the clock
    // steps from 10:59:10 to 11:00:10. The server is in the hour of 11:00 at once, and so
    // is the limiter: a limiter still on the old clock would send the four into the
    // server's hour of 11:00, then its own ten once its clock reached 11:00.
    let start = utc(TEN_UTC + 58 * 60 + 30);
    let t0 = Instant::now();
    let sim = traffic_across_a_step(start, Duration::from_secs(40), |now| {
        now + Duration::from_secs(60)
    })
    .await;
    // The hour of 11:00 took ten, the hour of 12:00 the other eight: the run ended after
    // 12:00 (on the stepped clock), 60 s sooner on tokio's clock than without the step.
    assert!(sim.now() > utc(TEN_UTC + 2 * 3600));
    assert!(t0.elapsed() < Duration::from_secs(3600 + 30 * 60));
}

#[tokio::test(start_paused = true)]
async fn a_step_of_60_s_back_never_refills_the_hour_it_returns_to() {
    // From 10:58:50, ten requests spend the hour of 10:00, six go in the hour of 11:00, and
    // at 11:00:40 the clock steps back to 10:59:40, into the spent hour. The limiter sends
    // nothing until 11:00:00 (plus its margin) comes again, then the four left of the hour
    // of 11:00. A limiter still on the old clock would send into the server's spent hour of
    // 10:00 at once.
    let start = utc(TEN_UTC + 58 * 60 + 50);
    let sim = traffic_across_a_step(start, Duration::from_secs(110), |now| {
        now - Duration::from_secs(60)
    })
    .await;
    assert!(sim.now() > utc(TEN_UTC + 2 * 3600));
}
