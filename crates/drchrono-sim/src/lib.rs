//! A faithful simulator of the DrChrono EHR API server, for testing clients the way
//! LocalStack tests AWS clients.
//!
//! It reproduces what DrChrono's article on API errors describes, and what its Django REST
//! Framework + django-oauth-toolkit stack does beyond it:
//!
//! - **OAuth**: `POST /o/token/` with the refresh grant rotates tokens: the used refresh
//!   token and every earlier access token are revoked; reusing a rotated refresh token is
//!   401 `invalid_grant`, a wrong client 401 `invalid_client`, another grant type 400
//!   `unsupported_grant_type`. Access tokens expire after the configured lifetime (48 h by
//!   default). `POST /sim/reauthorize` acts out the user going through OAuth again.
//! - **Resources**: `GET /api/users/current`, `GET`/`POST /api/patients` (pages of 250 at
//!   most, 50 with `verbose=true`, the list under `results` or `data`: [`ListShape`]),
//!   `GET /api/patients/{id}`, `POST /api/appointments` (409
//!   `Appointment overlaps with <id>` in the same exam room), `GET /api/appointments/{id}`;
//!   405 `Method "PATCH" not allowed.` with `Allow` (DRF sends `Allow` on every answer of a
//!   view; `HEAD` and `OPTIONS` answer as DRF's), 404 `Not found.` for a missing object
//!   (Django's HTML 404 page for a path no route matches), 400 field errors, 403 without the
//!   endpoint's scopes.
//! - **Throttling**, per application, checked after authentication and permissions as in
//!   DRF: at most 9 accepted requests in any rolling second, 290 in any rolling 600 s, 500
//!   per hour aligned to the Unix epoch (the UTC top of the hour); 429 with
//!   `Request was throttled. Expected available in N seconds.` and `Retry-After: N`. Each
//!   rule keeps a log of the requests it recorded: the most obviously-correct way, not the
//!   fastest, since the simulator is the test oracle of the client's limiter.
//! - **Faults**: a seeded share of `/api/*` requests answers 500/502/503/504 (502 and 504
//!   with the gateway's HTML page).
//! - **Timing**: [`SimConfig::token_delay`] (`--token-delay-ms`) makes `POST /o/token/` and
//!   `POST /sim/reauthorize` answer late, the grant taking effect when they answer (until
//!   then the old tokens stand; of two overlapping refreshes with one refresh token, the
//!   first to finish rotates and the other gets `invalid_grant`); [`SimConfig::latency`]
//!   (`--latency-ms`) sends each `/api/*` answer late, the request having been counted on
//!   arrival. Both default to zero.
//! - **Time** follows tokio's clock: under `tokio::time::pause()` a test can start at
//!   10:59:58 UTC ([`SimConfig::start_at`]), cross the top of the hour, or run 24 hours in
//!   a second, using [`Simulator::router`] as the transport with no socket.
//!
//! # Example
//! ```
//! use drchrono_sim::{SimConfig, spawn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let sim = spawn(SimConfig::default().token_lifetime(std::time::Duration::from_secs(60))).await?;
//! let credentials = sim.credentials();
//! println!("serving {} with client {}", sim.base_url(), credentials.client_id);
//! // … point the client under test at sim.base_url() and sim.token_url() …
//! assert_eq!(sim.stats().requests, 0);
//! sim.shutdown().await
//! # }
//! ```

mod clock;
mod config;
mod data;
mod django;
mod pages;
mod routes;
mod server;
mod simulator;
mod throttle;
mod tokens;

pub use config::{ListShape, SimConfig};
pub use data::{DOCTOR_ID, FIRST_APPOINTMENT_ID};
pub use server::{RunningSimulator, spawn};
pub use simulator::{Credentials, Simulator, Stats, Throttled};
pub use tokens::{DEFAULT_SCOPE, DEFAULT_USER, TokenResponse};
