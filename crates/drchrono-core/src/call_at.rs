//! [`CallAt`]: one reading of tokio's clock for a stack of layers.

use tokio::time::Instant;
use tower::Service;

/// A [`Service`] that can be called with an instant its caller has just read on tokio's
/// clock, instead of reading the clock itself: the layers of one stack then read it once
/// per attempt, not once each.
///
/// `call_at(request, now)` does exactly what `call(request)` does when the service, reading
/// `tokio::time::Instant::now()` itself, gets `now`. So `now` must be such a reading, taken
/// in the same synchronous step as the call (nothing awaited in between), and `poll_ready`
/// comes first as it does for `call`. A service implementing this trait implements `call`
/// as `call_at(request, Instant::now())`.
///
/// `drchrono-tower`'s `DrChronoService` reads the clock once per attempt, for the retry
/// policy's deadline and budget, and passes the reading down its stack: the rate limiter
/// charges the attempt at that instant, and the OAuth layer checks at that instant that the
/// token it attaches has not expired. Composed by hand (`tower::ServiceBuilder`), each layer
/// is called with `call` and reads the clock itself.
///
/// # Example
/// ```
/// use std::convert::Infallible;
/// use std::future::{Ready, ready};
/// use std::task::{Context, Poll};
/// use std::time::Duration;
///
/// use drchrono_core::CallAt;
/// use tokio::time::Instant;
/// use tower::Service;
///
/// /// Answers whether the request came after `deadline`.
/// struct Late {
///     deadline: Instant,
/// }
///
/// impl Service<()> for Late {
///     type Response = bool;
///     type Error = Infallible;
///     type Future = Ready<Result<bool, Infallible>>;
///
///     fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
///         Poll::Ready(Ok(()))
///     }
///
///     fn call(&mut self, request: ()) -> Self::Future {
///         self.call_at(request, Instant::now())
///     }
/// }
///
/// impl CallAt<()> for Late {
///     fn call_at(&mut self, _request: (), now: Instant) -> Self::Future {
///         ready(Ok(now >= self.deadline))
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let now = Instant::now();
/// let mut late = Late { deadline: now + Duration::from_secs(1) };
/// assert_eq!(late.call_at((), now).await, Ok(false));
/// assert_eq!(late.call_at((), now + Duration::from_secs(1)).await, Ok(true));
/// # }
/// ```
pub trait CallAt<Request>: Service<Request> {
    /// [`Service::call`], at `now`: a reading of tokio's clock its caller has just taken.
    fn call_at(&mut self, request: Request, now: Instant) -> Self::Future;
}
