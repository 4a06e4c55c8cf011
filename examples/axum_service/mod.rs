//! An axum service whose handlers share one [`DrChronoClient`]: the library side of the
//! `axum` example (`examples/axum.rs` is a thin `main` around it).
//!
//! Every connection axum accepts, and every handler, calls DrChrono through clones of the
//! same client, so they draw on one rate-limit budget (9 / s, 290 / 600 s, 500 per clock
//! hour), one token family (one refresh at a time) and one retry budget. A handler waits
//! at most [`Options::max_wait`] for DrChrono; past that, or when DrChrono throttles for
//! longer, it answers 503 with `Retry-After`. DrChrono errors become HTTP answers that
//! never carry DrChrono's body, a token or a patient's data ([`error_response`]).
//!
//! ```no_run
//! # async fn run() -> Result<(), examples::Error> {
//! use examples::axum_service::{Options, start};
//!
//! let demo = start(Options::demo()).await?;          // embedded drchrono-sim
//! println!("listening on {}", demo.url());
//! let report = examples::axum_service::self_test(&demo).await?;
//! assert!(report.passed(), "{report}");
//! demo.shutdown().await?;
//! # Ok(())
//! # }
//! ```

mod app;
mod errors;
mod self_test;

use std::net::SocketAddr;
use std::time::Duration;

use drchrono_sim::{RunningSimulator, SimConfig};
use drchrono_tower::DrChronoClient;
use drchrono_tower::ratelimit::RateLimitConfig;
use drchrono_tower::retry::RetryPolicy;
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use app::{AppState, router};
pub use errors::{error_response, unavailable, whole_seconds};
pub use self_test::self_test;

use crate::Error;

/// Where the service's DrChrono is.
#[derive(Debug)]
#[non_exhaustive]
pub enum Upstream {
    /// An embedded `drchrono-sim` on `127.0.0.1:0`: runs with no credentials.
    Demo(SimConfig),
    /// The real DrChrono (or any server speaking its API).
    Live(LiveCredentials),
}

/// The application's credentials for [`Upstream::Live`]. `Debug` never prints the secrets.
#[derive(Debug)]
pub struct LiveCredentials {
    /// API base URL (default `https://app.drchrono.com`).
    pub base_url: String,
    /// Token endpoint (default `https://drchrono.com/o/token/`).
    pub token_url: String,
    /// OAuth client id.
    pub client_id: String,
    /// OAuth client secret.
    pub client_secret: SecretString,
    /// The refresh token the application was authorised with.
    pub refresh_token: SecretString,
}

impl LiveCredentials {
    /// From `DRCHRONO_CLIENT_ID`, `DRCHRONO_CLIENT_SECRET`, `DRCHRONO_REFRESH_TOKEN` and,
    /// optionally, `DRCHRONO_BASE_URL` and `DRCHRONO_TOKEN_URL`.
    ///
    /// # Errors
    /// When a required variable is missing.
    pub fn from_env() -> Result<Self, Error> {
        let var =
            |name: &str| std::env::var(name).map_err(|_| Error::from(format!("{name} is not set")));
        Ok(Self {
            base_url: var("DRCHRONO_BASE_URL")
                .unwrap_or_else(|_| drchrono_tower::DRCHRONO_API_URL.to_owned()),
            token_url: var("DRCHRONO_TOKEN_URL")
                .unwrap_or_else(|_| "https://drchrono.com/o/token/".to_owned()),
            client_id: var("DRCHRONO_CLIENT_ID")?,
            client_secret: var("DRCHRONO_CLIENT_SECRET")?.into(),
            refresh_token: var("DRCHRONO_REFRESH_TOKEN")?.into(),
        })
    }
}

/// How to run the service.
#[derive(Debug)]
#[non_exhaustive]
pub struct Options {
    /// Where to listen. Default `127.0.0.1:0` (a free port).
    pub addr: SocketAddr,
    /// Where DrChrono is. Default: the embedded simulator with DrChrono's values.
    pub upstream: Upstream,
    /// The longest a handler waits for DrChrono (permits, 429 waits, retries). Default 10 s.
    pub max_wait: Duration,
    /// The first 5xx retry's delay range. Default DrChrono's 25-30 s (a handler then answers
    /// 503 rather than wait; lower it for the self-test).
    pub retry_first_delay: (Duration, Duration),
    /// The limiter's rules. Default DrChrono's: 9 / s, 290 / 600 s, 500 per clock hour.
    pub rate_limit: RateLimitConfig,
}

impl Options {
    /// The defaults, against the embedded simulator.
    pub fn demo() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            upstream: Upstream::Demo(SimConfig::default()),
            max_wait: Duration::from_secs(10),
            retry_first_delay: (Duration::from_secs(25), Duration::from_secs(30)),
            rate_limit: RateLimitConfig::default(),
        }
    }

    /// The defaults against the embedded simulator, with 5xx retries after 50-100 ms so that
    /// [`self_test`] runs in seconds.
    pub fn self_test() -> Self {
        Self {
            retry_first_delay: (Duration::from_millis(50), Duration::from_millis(100)),
            ..Self::demo()
        }
    }
}

/// The service, listening; dropping it stops the server (and the simulator).
#[derive(Debug)]
pub struct RunningDemo {
    addr: SocketAddr,
    client: DrChronoClient,
    simulator: Option<RunningSimulator>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl RunningDemo {
    /// The address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The client every handler shares.
    pub fn client(&self) -> &DrChronoClient {
        &self.client
    }

    /// The embedded simulator ([`Upstream::Demo`] only).
    pub fn simulator(&self) -> Option<&RunningSimulator> {
        self.simulator.as_ref()
    }

    /// Stops accepting, lets open requests finish, stops the simulator.
    ///
    /// # Errors
    /// When the server failed while running.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        if let Some(signal) = self.shutdown.take() {
            let _ = signal.send(());
        }
        if let Some(task) = self.task.take() {
            task.await??;
        }
        if let Some(simulator) = self.simulator.take() {
            simulator.shutdown().await?;
        }
        Ok(())
    }
}

impl Drop for RunningDemo {
    fn drop(&mut self) {
        if let Some(signal) = self.shutdown.take() {
            let _ = signal.send(());
        }
    }
}

/// Starts the simulator (for [`Upstream::Demo`]), builds the one shared client, and serves
/// [`router`] on `options.addr`.
///
/// # Errors
/// When a socket cannot be bound or the client cannot be built.
pub async fn start(options: Options) -> Result<RunningDemo, Error> {
    let (simulator, credentials) = match options.upstream {
        Upstream::Demo(config) => {
            let sim = drchrono_sim::spawn(config).await?;
            let c = sim.credentials();
            let credentials = LiveCredentials {
                base_url: sim.base_url(),
                token_url: sim.token_url(),
                client_id: c.client_id,
                client_secret: c.client_secret.into(),
                refresh_token: c.refresh_token.into(),
            };
            (Some(sim), credentials)
        }
        Upstream::Live(credentials) => (None, credentials),
    };
    let (min, max) = options.retry_first_delay;
    let policy = RetryPolicy::builder().first_delay(min, max).build()?;
    let client = DrChronoClient::builder()
        .credentials(credentials.client_id, credentials.client_secret)
        .refresh_token(credentials.refresh_token)
        .base_url(credentials.base_url)
        .token_url(credentials.token_url)
        .rate_limit(options.rate_limit)
        .retry(policy)
        .build()?;

    let listener = TcpListener::bind(options.addr).await?;
    let addr = listener.local_addr()?;
    let app = router(AppState::new(client.clone(), options.max_wait));
    let (shutdown, signal) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = signal.await;
            })
            .await
    });
    Ok(RunningDemo {
        addr,
        client,
        simulator,
        shutdown: Some(shutdown),
        task: Some(task),
    })
}
