//! [`SimConfig`]: the simulated server's limits, token lifetime, timing, faults, data and
//! the shape of its lists ([`ListShape`]).

use std::time::{Duration, SystemTime};

/// How the simulator behaves. [`SimConfig::default`] is DrChrono as documented.
///
/// ```
/// use std::time::Duration;
/// use drchrono_sim::{ListShape, SimConfig};
///
/// let config = SimConfig::default()
///     .max_per_second(9)
///     .window(Duration::from_secs(60))
///     .token_lifetime(Duration::from_secs(5))
///     .fault_rate(0.1)
///     .seed(7)
///     .token_delay(Duration::from_millis(300))
///     .latency(Duration::from_millis(40))
///     .list_shape(ListShape::Data);
/// assert_eq!(config.get_max_per_second(), 9);
/// assert_eq!(config.get_token_delay(), Duration::from_millis(300));
/// ```
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub(crate) max_per_second: u32,
    pub(crate) max_per_window: u32,
    pub(crate) window: Duration,
    pub(crate) max_per_hour: u32,
    pub(crate) hour: Duration,
    pub(crate) token_lifetime: Duration,
    pub(crate) fault_rate: f64,
    pub(crate) seed: u64,
    pub(crate) allow_overlaps: bool,
    pub(crate) start_at: Option<SystemTime>,
    pub(crate) patients: u64,
    pub(crate) max_body_bytes: usize,
    pub(crate) token_delay: Duration,
    pub(crate) latency: Duration,
    pub(crate) list_shape: ListShape,
}

/// The name of the list field in a paginated answer, beside `next` and `previous`.
///
/// DrChrono's API description names it `data` in its schema and `results` in its prose (and
/// Django REST Framework's paginators write `results`); a client that reads only one of them
/// breaks on the other, so the simulator answers either.
///
/// ```
/// use drchrono_sim::{ListShape, SimConfig};
///
/// assert_eq!(SimConfig::default().get_list_shape(), ListShape::Results);
/// let config = SimConfig::default().list_shape(ListShape::Data);
/// assert_eq!(config.get_list_shape(), ListShape::Data);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ListShape {
    /// `{"next", "previous", "results"}`, as DrChrono's prose and DRF write it (the
    /// default).
    #[default]
    Results,
    /// `{"next", "previous", "data"}`, as DrChrono's schema names it.
    Data,
}

impl ListShape {
    /// The list field's name.
    pub(crate) fn field(self) -> &'static str {
        match self {
            Self::Results => "results",
            Self::Data => "data",
        }
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            max_per_second: 9,
            max_per_window: 290,
            window: Duration::from_secs(600),
            max_per_hour: 500,
            hour: Duration::from_secs(3600),
            token_lifetime: Duration::from_secs(172_800),
            fault_rate: 0.0,
            seed: 1,
            allow_overlaps: false,
            start_at: None,
            patients: 100_000,
            max_body_bytes: 1024 * 1024,
            token_delay: Duration::ZERO,
            latency: Duration::ZERO,
            list_shape: ListShape::Results,
        }
    }
}

macro_rules! option {
    ($(#[$doc:meta])* $name:ident, $get:ident: $ty:ty) => {
        $(#[$doc])*
        #[must_use]
        pub fn $name(mut self, value: $ty) -> Self {
            self.$name = value;
            self
        }

        #[doc = concat!("The configured `", stringify!($name), "`.")]
        pub fn $get(&self) -> $ty {
            self.$name
        }
    };
}

impl SimConfig {
    option!(
        /// Accepted requests allowed in any rolling second before 429 (default 9: DrChrono
        /// throttles the 10th call in a second).
        max_per_second, get_max_per_second: u32
    );
    option!(
        /// Accepted requests allowed in any rolling [`SimConfig::window`] (default 290).
        max_per_window, get_max_per_window: u32
    );
    option!(
        /// The rolling window of the second rule (default 600 s).
        window, get_window: Duration
    );
    option!(
        /// Accepted requests allowed per aligned [`SimConfig::hour`] period (default 500).
        max_per_hour, get_max_per_hour: u32
    );
    option!(
        /// The aligned period of the hourly rule, counted from the Unix epoch (default
        /// 3600 s: resets at the UTC top of the hour).
        hour, get_hour: Duration
    );
    option!(
        /// Lifetime of access tokens (default 172 800 s, DrChrono's 48 hours).
        token_lifetime, get_token_lifetime: Duration
    );
    option!(
        /// Share of `/api/*` requests, in `[0, 1]`, answered with 500/502/503/504
        /// (default 0.0). Values outside the range are clamped.
        fault_rate, get_fault_rate: f64
    );
    option!(
        /// Seed of the fault and token generators (default 1): runs with the same seed and
        /// the same request order see the same faults.
        seed, get_seed: u64
    );
    option!(
        /// Allow appointments to overlap in one exam room, as DrChrono's "Allow Exam Room
        /// Overlaps" setting does (default `false`).
        allow_overlaps, get_allow_overlaps: bool
    );
    option!(
        /// Synthetic patients with ids `1..=n` (default 100 000), generated from their id.
        patients, get_patients: u64
    );
    option!(
        /// Largest request body read, in bytes; larger bodies get 413 (default 1 MiB).
        max_body_bytes, get_max_body_bytes: usize
    );
    option!(
        /// How long `POST /o/token/` and `POST /sim/reauthorize` take to answer, counted
        /// from the whole request's arrival (default zero: no wait). django-oauth-toolkit
        /// hashes client secrets, so real grants take a noticeable time. The grant (or
        /// refusal) happens when the answer is sent, not when the request arrives: until
        /// then the old access token still works and the old refresh token is still the
        /// current one, so of two refreshes with one refresh token that overlap, the first
        /// to finish rotates and the other gets `invalid_grant`. Every answer of those
        /// endpoints waits, errors and injected faults included. [`Simulator::reauthorize`]
        /// and [`Simulator::authorize_user`] stay immediate. The wait follows tokio's clock.
        ///
        /// [`Simulator::reauthorize`]: crate::Simulator::reauthorize
        /// [`Simulator::authorize_user`]: crate::Simulator::authorize_user
        token_delay, get_token_delay: Duration
    );
    option!(
        /// How long after counting an `/api/*` request its response is sent (default zero:
        /// no wait). Authentication, permissions, throttling and the view run when the
        /// request arrives; only the answer is held back, so a burst is throttled by its
        /// arrival times however late its answers come. Every `/api/*` answer waits (401,
        /// 403, 404, 429 and faults included). The wait follows tokio's clock.
        latency, get_latency: Duration
    );
    option!(
        /// The name of the list field of every paginated answer (`GET /api/patients`):
        /// [`ListShape::Results`] (the default) or [`ListShape::Data`]. `next` and
        /// `previous` are the same in both.
        list_shape, get_list_shape: ListShape
    );

    /// Anchor the simulator's wall clock: when the simulator is created, its wall clock
    /// reads `start`, and from then on it advances with tokio's clock, so under
    /// `tokio::time::pause()` a test can start at 10:59:58 UTC and cross the top of the hour
    /// ([`Simulator::set_wall_clock`](crate::Simulator::set_wall_clock) steps it later).
    /// Default: the real time at creation.
    #[must_use]
    pub fn start_at(mut self, start: SystemTime) -> Self {
        self.start_at = Some(start);
        self
    }

    /// The configured wall-clock anchor, if any.
    pub fn get_start_at(&self) -> Option<SystemTime> {
        self.start_at
    }
}
