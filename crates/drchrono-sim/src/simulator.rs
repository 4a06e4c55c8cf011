//! [`Simulator`]: the shared state behind the router, and what tests read from it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::http::StatusCode;
use rand::SeedableRng;
use rand::distr::{Alphanumeric, SampleString};
use rand::rngs::StdRng;
use serde::Serialize;

use crate::clock::SimClock;
use crate::config::SimConfig;
use crate::data::Practice;
use crate::throttle::{Peaks, Throttles};
use crate::tokens::{DEFAULT_SCOPE, DEFAULT_USER, TokenResponse, Tokens};

/// The application's OAuth credentials, and the refresh token the simulator starts with.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct Credentials {
    /// The application's client id.
    pub client_id: String,
    /// The application's client secret.
    pub client_secret: String,
    /// A refresh token granted to the API user, valid until first used or revoked.
    pub refresh_token: String,
    /// Space-separated scopes of that grant.
    pub scope: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("refresh_token", &"[redacted]")
            .field("scope", &self.scope)
            .finish()
    }
}

/// Requests refused by each throttling rule. A request refused by two rules counts in both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Throttled {
    /// Refused by the per-second rule.
    pub second: u64,
    /// Refused by the rolling-window rule.
    pub window: u64,
    /// Refused by the aligned hourly rule.
    pub hour: u64,
}

impl Throttled {
    /// The refusals of all three rules added up (a request refused by two rules counts
    /// twice): zero exactly when nothing was throttled.
    ///
    /// ```
    /// let throttled = drchrono_sim::Throttled { second: 2, window: 1, hour: 0 };
    /// assert_eq!(throttled.total(), 3);
    /// ```
    pub fn total(&self) -> u64 {
        self.second + self.window + self.hour
    }
}

/// What the simulator has seen, as `GET /sim/stats` reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// Every `/api/*` request received.
    pub requests: u64,
    /// Requests that passed authentication, permissions and every throttling rule (including
    /// those then answered with an injected fault).
    pub accepted: u64,
    /// Requests refused with 429, per rule.
    pub throttled: Throttled,
    /// `/api/*` requests refused with 401.
    pub unauthorized: u64,
    /// Successful refresh grants.
    pub token_refreshes: u64,
    /// Token requests refused with `invalid_grant`.
    pub invalid_grant: u64,
    /// Token or re-authorisation requests refused with `invalid_client`.
    pub invalid_client: u64,
    /// Injected 5xx answers (`/api/*` and token endpoint).
    pub faults: u64,
    /// Most accepted requests in any rolling second.
    pub peak_second: u64,
    /// Most accepted requests in any rolling window.
    pub peak_window: u64,
    /// Most accepted requests in any aligned hour.
    pub peak_hour: u64,
    /// Requests refused with 403.
    pub forbidden: u64,
}

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) tokens: Tokens,
    pub(crate) throttles: Throttles,
    pub(crate) peaks: Peaks,
    pub(crate) stats: Stats,
    pub(crate) practice: Practice,
    pub(crate) fault_rng: StdRng,
    pub(crate) token_rng: StdRng,
    pub(crate) forced_api: VecDeque<StatusCode>,
    pub(crate) forced_token: VecDeque<StatusCode>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: SimConfig,
    pub(crate) clock: SimClock,
    pub(crate) credentials: Credentials,
    state: Mutex<State>,
}

impl Inner {
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated in a way that
        // matters to a simulator; keep serving.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A simulated DrChrono server: its state, and an axum [`Router`](axum::Router) serving it.
///
/// Cloning is cheap and shares the state. Create it inside a tokio runtime: its clocks
/// follow tokio's, so it runs under `tokio::time::pause()` too.
#[derive(Debug, Clone)]
pub struct Simulator {
    pub(crate) inner: Arc<Inner>,
}

impl Simulator {
    /// Creates a simulator with fresh credentials drawn from the configured seed.
    pub fn new(config: SimConfig) -> Self {
        let mut token_rng = StdRng::seed_from_u64(config.seed ^ 0x5eed_70c3_a5e5_0001);
        let fault_rng = StdRng::seed_from_u64(config.seed);
        let mut tokens = Tokens::new(config.token_lifetime);
        let client_id = format!("sim-{}", Alphanumeric.sample_string(&mut token_rng, 16));
        let client_secret = Alphanumeric.sample_string(&mut token_rng, 40);
        let refresh_token = tokens.seed_refresh(&mut token_rng, DEFAULT_SCOPE);
        let credentials = Credentials {
            client_id,
            client_secret,
            refresh_token,
            scope: DEFAULT_SCOPE.to_owned(),
        };
        let state = State {
            tokens,
            throttles: Throttles::new(
                config.max_per_second,
                config.max_per_window,
                config.window,
                config.max_per_hour,
                config.hour,
            ),
            peaks: Peaks::new(config.window, config.hour),
            stats: Stats::default(),
            practice: Practice::new(config.patients, config.allow_overlaps),
            fault_rng,
            token_rng,
            forced_api: VecDeque::new(),
            forced_token: VecDeque::new(),
        };
        Self {
            inner: Arc::new(Inner {
                clock: SimClock::new(config.start_at),
                config,
                credentials,
                state: Mutex::new(state),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.inner.config
    }

    /// The application's credentials and the starting refresh token.
    pub fn credentials(&self) -> Credentials {
        self.inner.credentials.clone()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let state = self.inner.state();
        let mut stats = state.stats;
        stats.peak_second = state.peaks.second;
        stats.peak_window = state.peaks.rolling;
        stats.peak_hour = state.peaks.aligned;
        stats
    }

    /// The simulator's wall clock now.
    pub fn now(&self) -> std::time::SystemTime {
        self.inner.clock.wall_at(self.inner.clock.now())
    }

    /// Sets the simulator's wall clock, as NTP steps a host's clock: it reads `now` from
    /// this instant on and advances with tokio's clock from there. Only the hourly rule
    /// follows the wall clock (its periods, and the peak hour, count per hour of the wall
    /// clock, so a clock set back into an earlier hour finds what that hour holds); rolling
    /// windows, token lifetimes and delays follow tokio's clock, which no setting moves.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use drchrono_sim::{SimConfig, Simulator};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_610_770); // 10:59:30 UTC
    /// let sim = Simulator::new(SimConfig::default().start_at(start));
    /// sim.set_wall_clock(sim.now() + Duration::from_secs(60)); // now 11:00:30
    /// tokio::time::advance(Duration::from_secs(5)).await;
    /// assert_eq!(sim.now(), start + Duration::from_secs(65));
    /// # }
    /// ```
    pub fn set_wall_clock(&self, now: std::time::SystemTime) {
        self.inner.clock.set_wall(now);
    }

    /// As if the API user (the practice's doctor, [`DEFAULT_USER`]) went through DrChrono's
    /// OAuth flow again: a fresh token pair with `scope` (default: every scope the simulator
    /// serves); every earlier token of that user is revoked.
    pub fn reauthorize(&self, scope: Option<&str>) -> TokenResponse {
        self.authorize_user(DEFAULT_USER, scope)
    }

    /// As if `username` (another staff member of the practice) authorised the application:
    /// a token pair of that user's own family, with `scope` (default: every scope). Tokens
    /// are per application and user: this revokes the earlier tokens of `username` only.
    /// Throttling is per application, so every user's requests share one budget.
    pub fn authorize_user(&self, username: &str, scope: Option<&str>) -> TokenResponse {
        let now = self.inner.clock.now();
        let mut state = self.inner.state();
        let state = &mut *state;
        state.tokens.reauthorize(
            &mut state.token_rng,
            now,
            username,
            scope.unwrap_or(DEFAULT_SCOPE),
        )
    }

    /// Successful refresh grants of `username`'s tokens (its share of
    /// [`Stats::token_refreshes`]): a refresh counts for the user whose refresh token it
    /// spent, so a client that refreshed with another user's token shows here.
    ///
    /// ```
    /// use drchrono_sim::{SimConfig, Simulator};
    /// use tower::ServiceExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let sim = Simulator::new(SimConfig::default());
    /// let nurse = sim.authorize_user("nurse", None);
    /// let c = sim.credentials();
    /// let form = format!(
    ///     "grant_type=refresh_token&refresh_token={}&client_id={}&client_secret={}",
    ///     nurse.refresh_token, c.client_id, c.client_secret,
    /// );
    /// let refresh = http::Request::post("/o/token/")
    ///     .header("content-type", "application/x-www-form-urlencoded")
    ///     .body(axum::body::Body::from(form))
    ///     .unwrap();
    /// let answer = sim.router().oneshot(refresh).await.unwrap();
    /// assert_eq!(answer.status(), http::StatusCode::OK);
    /// assert_eq!(sim.token_refreshes_of("nurse"), 1);
    /// assert_eq!(sim.token_refreshes_of(drchrono_sim::DEFAULT_USER), 0);
    /// # }
    /// ```
    pub fn token_refreshes_of(&self, username: &str) -> u64 {
        self.inner.state().tokens.refreshes_of(username)
    }

    /// The next `/api/*` requests that pass throttling are answered with these statuses, in
    /// order, before any random fault is drawn.
    pub fn fail_next_api(&self, statuses: impl IntoIterator<Item = StatusCode>) {
        self.inner.state().forced_api.extend(statuses);
    }

    /// The next `POST /o/token/` requests are answered with these statuses, in order.
    pub fn fail_next_token(&self, statuses: impl IntoIterator<Item = StatusCode>) {
        self.inner.state().forced_token.extend(statuses);
    }
}
