//! The DrChrono client stack: retry, an exact rate limit, OAuth refresh and typed errors, as
//! tower layers composed in the order DrChrono's guidance calls for.
//!
//! [`DrChronoClient`] gives an application one client that does everything right;
//! [`DrChronoApp`] gives an application that serves many practices one client per practice,
//! each with its own tokens, all on the application's one rate limit; [`DrChronoLayer`]
//! gives the same stack as one `tower::Layer` for any transport; and each layer crate is
//! re-exported for those who compose or replace the parts themselves.
//!
//! | layer (outermost first) | crate | does |
//! |---|---|---|
//! | [`RetryPolicy`](retry::RetryPolicy), in [`DrChronoService`]'s retry loop | [`retry`] | 5xx: 3 retries from 25–30 s, doubling, jittered; 429: waits the server's hint; 401: one replay with the current token |
//! | [`DrChronoRateLimitLayer`](ratelimit::DrChronoRateLimitLayer) | [`ratelimit`] | releases each attempt at the earliest instant that breaks none of 9 / s, 290 / 600 s, 500 per clock hour |
//! | [`OAuthRefreshLayer`](oauth::OAuthRefreshLayer) | [`oauth`] | attaches the token, refreshes once before expiry, persists the rotated refresh token first |
//! | [`ErrorClassifyLayer`](classify::ErrorClassifyLayer) | [`classify`] | error responses become typed [`DrChronoError`]s |
//!
//! [`DrChronoClient`] also keeps the access token on the API origin ([`DrChronoError::ForeignOrigin`]; plain
//! `http` only to loopback or when [allowed](DrChronoClientBuilder::allow_insecure_http)),
//! follows same-origin redirects only, and bounds every attempt: 10 s to connect, 60 s to the
//! response head, 60 s and 32 MiB for a success body ([`TimedOut`], [`BodyTooLarge`]), all
//! configurable on [`DrChronoClientBuilder`].
//!
//! # Features
//! - `redis`: the limiter's state, the tokens and the refresh lease in Redis.
//! - `metrics`: counters and gauges through the `metrics` crate.
//! - `reqwest`: `DrChronoClientBuilder::build_with_reqwest` and `ReqwestTransport`: the
//!   stack and the token endpoint on the application's own `reqwest::Client` (0.13), with
//!   its TLS, proxy and pool settings.
//!
//! # Example
//! ```
//! use drchrono_tower::{DrChronoClient, DrChronoError};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let sim = drchrono_sim::spawn(drchrono_sim::SimConfig::default()).await?;
//! # let c = sim.credentials();
//! let client = DrChronoClient::builder()
//!     .credentials(c.client_id, c.client_secret)
//!     .refresh_token(c.refresh_token)
//! #   .base_url(sim.base_url()).token_url(sim.token_url())
//!     .build()?;
//! let appointment = serde_json::json!({
//!     "doctor": 101, "patient": 7, "office": 1, "exam_room": 1,
//!     "scheduled_time": "2026-01-05T10:00:00", "duration": 30,
//! });
//! client.post("/api/appointments", &appointment).await?;
//! match client.post("/api/appointments", &appointment).await {
//!     Err(DrChronoError::AppointmentConflict { overlapping_id, .. }) => {
//!         println!("overlaps appointment {overlapping_id:?}");
//!     }
//!     other => panic!("expected a conflict, got {other:?}"),
//! }
//! # Ok(())
//! # }
//! ```

mod app;
mod attempt;
mod builder;
mod client;
mod layer;
#[cfg(feature = "metrics")]
mod metrics;
mod origin;
mod paging;
mod redirect;
mod request;
#[cfg(feature = "reqwest")]
mod reqwest;
mod span;
mod transport;

#[cfg(feature = "reqwest")]
pub use self::reqwest::{RedirectFollowed, ReqwestTransport};
pub use app::{DrChronoApp, DrChronoAppBuilder, UserClientBuilder};
pub use attempt::{BodyTooLarge, TimedOut, TimeoutPhase};
pub use builder::{BuildError, DRCHRONO_API_URL, DrChronoClientBuilder};
pub use client::DrChronoClient;
pub use drchrono_core::{DrChronoError, SupportReport};
pub use layer::{DrChronoLayer, DrChronoService, DrChronoStack, ServiceBuilderExt};
#[cfg(feature = "metrics")]
pub use metrics::MetricsSnapshot;
pub use paging::{RepeatedPage, with_page_size};
pub use request::RequestFuture;
pub use transport::{
    ConnectTimeout, HttpsClient, https_client, https_client_with_connect_timeout, not_sent,
};

pub use drchrono_classify as classify;
pub use drchrono_core as core;
pub use drchrono_oauth as oauth;
pub use drchrono_ratelimit as ratelimit;
pub use drchrono_retry as retry;
