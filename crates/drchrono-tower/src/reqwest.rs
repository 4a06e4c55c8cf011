//! [`ReqwestTransport`]: a `reqwest::Client` as the transport under the stack (feature
//! `reqwest`).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use drchrono_core::{BoxError, ConnectError};
use http::{Request, Response};
use http_body::Body;
use tower::Service;

/// A [`reqwest::Client`](::reqwest::Client) as a `tower::Service` on `http` types: the
/// transport that [`build_with_reqwest`](crate::DrChronoClientBuilder::build_with_reqwest)
/// puts under the stack and the token client, so that the client's TLS, proxy, pool,
/// DNS and timeout settings apply to every call to DrChrono.
///
/// Requests are converted with `reqwest::Request::try_from` (the body is streamed through
/// [`reqwest::Body::wrap`](::reqwest::Body::wrap), its length kept); responses with
/// `http::Response::<reqwest::Body>::from` (the body streams as reqwest reads it).
///
/// Errors keep their meaning for the layers above, by type:
/// - a failure to connect ([`reqwest::Error::is_connect`](::reqwest::Error::is_connect): a
///   refused connection, a failed DNS lookup, reqwest's `connect_timeout`, a failed TLS
///   handshake) is wrapped in a [`ConnectError`]: the request was provably not sent, so the
///   classifier reports `DrChronoError::Transport { not_sent: true, .. }` and the retry
///   policy may retry even a `POST`;
/// - any other error (reqwest's own `timeout` or `read_timeout` among them) is the
///   [`reqwest::Error`](::reqwest::Error) itself, boxed: the request may have been sent, and
///   `is_timeout()` still answers on it in the error's `source()` chain.
///
/// Build the client with `redirect(reqwest::redirect::Policy::none())`: redirects are then
/// [`DrChronoClient`](crate::DrChronoClient)'s, followed on the API origin only, each one
/// rate limited like any request. reqwest's default policy would follow up to 10 itself,
/// out of the limiter's sight and to any host: a response that reqwest reached by following
/// a redirect is refused, as [`RedirectFollowed`] (naming the origin it came from), never
/// returned as DrChrono's.
///
/// # Example
/// ```
/// use drchrono_tower::ReqwestTransport;
/// use tower::ServiceExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// # let sim = drchrono_sim::spawn(drchrono_sim::SimConfig::default()).await?;
/// let client = reqwest::Client::builder()
///     .redirect(reqwest::redirect::Policy::none())
///     .build()?;
/// let transport = ReqwestTransport::new(client);
/// let request = http::Request::get(format!("{}/api/users/current", sim.base_url()))
///     .body(http_body_util::Empty::<bytes::Bytes>::new())?;
/// let response = transport.oneshot(request).await?;
/// assert_eq!(response.status(), http::StatusCode::UNAUTHORIZED); // no token attached
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ReqwestTransport {
    client: ::reqwest::Client,
}

impl ReqwestTransport {
    /// A transport sending through `client` (cheap: a `reqwest::Client` is a handle to its
    /// connection pool, shared by clones).
    pub fn new(client: ::reqwest::Client) -> Self {
        Self { client }
    }
}

impl From<::reqwest::Client> for ReqwestTransport {
    fn from(client: ::reqwest::Client) -> Self {
        Self::new(client)
    }
}

impl fmt::Debug for ReqwestTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReqwestTransport").finish_non_exhaustive()
    }
}

// reqwest's own future (`Pending`) cannot be named outside reqwest: boxed once per request,
// next to the round trip (the client boxes its stack's future anyway).
type ReqwestFuture =
    Pin<Box<dyn Future<Output = Result<Response<::reqwest::Body>, BoxError>> + Send>>;

impl<B> Service<Request<B>> for ReqwestTransport
where
    B: Body + Send + Sync + 'static,
    B::Data: Into<Bytes>,
    B::Error: Into<BoxError>,
{
    type Response = Response<::reqwest::Body>;
    type Error = BoxError;
    type Future = ReqwestFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // reqwest waits for a connection inside the request's future; it is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let request = match ::reqwest::Request::try_from(request.map(::reqwest::Body::wrap)) {
            Ok(request) => request,
            Err(error) => return Box::pin(std::future::ready(Err(transport_error(error)))),
        };
        let sent = request.url().clone();
        let sending = self.client.execute(request);
        Box::pin(async move {
            let response = sending.await.map_err(transport_error)?;
            if *response.url() != sent {
                return Err(Box::new(RedirectFollowed {
                    origin: response.url().origin().ascii_serialization(),
                }) as BoxError);
            }
            Ok(Response::from(response))
        })
    }
}

/// The `reqwest::Client` under [`ReqwestTransport`] followed a redirect itself (its redirect
/// policy is not `Policy::none()`): the response came from `origin` (scheme, host and port;
/// never a path or query), outside the stack's origin pinning and rate limit, and is not
/// returned. The request did reach the server. Build the client with
/// `redirect(reqwest::redirect::Policy::none())`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedirectFollowed {
    /// Where the redirects led.
    pub origin: String,
}

impl fmt::Display for RedirectFollowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the reqwest::Client followed a redirect to {} itself; build it with \
             `redirect(reqwest::redirect::Policy::none())`",
            self.origin
        )
    }
}

impl std::error::Error for RedirectFollowed {}

/// A reqwest error as the layers above read it: a connect error wrapped in a
/// [`ConnectError`] (not sent), anything else as it is.
fn transport_error(error: ::reqwest::Error) -> BoxError {
    // A reqwest error names the request's URL in its `Display` and `Debug`, query included:
    // a patient's name or date of birth in a search. The query (and any user information)
    // is dropped before the error goes anywhere; the origin and path stay.
    let mut error = error;
    if let Some(url) = error.url_mut() {
        url.set_query(None);
        url.set_fragment(None);
        let _ = url.set_password(None);
        let _ = url.set_username("");
    }
    if error.is_connect() {
        Box::new(ConnectError::new(error))
    } else {
        Box::new(error)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use drchrono_core::is_connect_error;
    use http_body_util::{BodyExt, Full};
    use tokio::net::TcpListener;
    use tower::ServiceExt;

    use super::*;
    use crate::not_sent;

    /// A loopback address nothing listens on.
    async fn closed_port() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        format!("http://{address}/")
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let transport = ReqwestTransport::new(::reqwest::Client::new());
        let request = Request::get(format!(
            "{}api/patients?last_name=Lovelace",
            closed_port().await
        ))
        .body(Full::new(Bytes::new()))
        .unwrap();
        let error = transport.oneshot(request).await.unwrap_err();
        assert!(error.is::<ConnectError>(), "{error:?}");
        assert!(is_connect_error(&error) && not_sent(&error), "{error:?}");
        // reqwest's errors name the URL: the query (a patient's name) is dropped.
        let mut printed = format!("{error} {error:?}");
        let mut source = error.source();
        while let Some(cause) = source {
            printed.push_str(&format!(" {cause} {cause:?}"));
            source = cause.source();
        }
        assert!(!printed.contains("Lovelace"), "{printed}");
    }

    /// Serves one raw HTTP/1.1 `answer` per connection on loopback; returns its base URL.
    async fn raw_server(answer: String) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n")
                        && socket.read(&mut byte).await.unwrap_or(0) == 1
                    {
                        head.push(byte[0]);
                    }
                    let _ = socket.write_all(answer.as_bytes()).await;
                });
            }
        });
        format!("http://{address}")
    }

    #[tokio::test]
    async fn a_redirect_reqwest_followed_is_refused() {
        let elsewhere = raw_server(
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}".to_owned(),
        )
        .await;
        let api = raw_server(format!(
            "HTTP/1.1 302 Found\r\nlocation: {elsewhere}/x?token=1\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        ))
        .await;
        // reqwest's default policy follows redirects.
        let transport = ReqwestTransport::new(::reqwest::Client::new());
        let request = Request::get(format!("{api}/api/patients"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let error = transport.oneshot(request).await.unwrap_err();
        let followed = error
            .downcast_ref::<RedirectFollowed>()
            .expect("refused as followed");
        assert_eq!(followed.origin, elsewhere);
        assert!(!not_sent(&error), "the request reached the server");

        // Without following, the 302 is the response, for DrChronoClient to judge.
        let client = ::reqwest::Client::builder()
            .redirect(::reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let request = Request::get(format!("{api}/api/patients"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = ReqwestTransport::new(client)
            .oneshot(request)
            .await
            .unwrap();
        assert_eq!(response.status(), http::StatusCode::FOUND);
    }

    #[tokio::test]
    async fn other_errors_pass_as_they_are() {
        // A URI reqwest cannot send (no host): refused before anything leaves, but not a
        // connect error, so nothing claims it is safe to replay.
        let transport = ReqwestTransport::new(::reqwest::Client::new());
        let request = Request::get("/relative")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let error = transport.oneshot(request).await.unwrap_err();
        let reqwest = error
            .downcast_ref::<::reqwest::Error>()
            .expect("a reqwest error");
        assert!(!reqwest.is_connect());
        assert!(!is_connect_error(&error) && !not_sent(&error), "{error:?}");
    }

    #[tokio::test]
    async fn a_timeout_keeps_its_meaning() {
        // A server that accepts and never answers, and a client with a 50 ms timeout.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let _server = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let client = ::reqwest::Client::builder()
            .timeout(std::time::Duration::from_millis(50))
            .build()
            .unwrap();
        let request = Request::post(format!("http://{address}/api/appointments"))
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        let error = ReqwestTransport::new(client)
            .oneshot(request)
            .await
            .unwrap_err();
        let reqwest = error
            .downcast_ref::<::reqwest::Error>()
            .expect("a reqwest error");
        assert!(reqwest.is_timeout() && !reqwest.is_connect(), "{error:?}");
        assert!(
            !not_sent(&error),
            "the request may have been sent: {error:?}"
        );
    }

    #[tokio::test]
    async fn bodies_and_heads_cross_both_ways() {
        let sim = drchrono_sim::spawn(drchrono_sim::SimConfig::default())
            .await
            .unwrap();
        let token = sim.simulator().reauthorize(None).access_token;
        let transport = ReqwestTransport::new(::reqwest::Client::new());
        let request = Request::post(format!("{}/api/appointments", sim.base_url()))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(b"{\"doctor\": 101}")))
            .unwrap();
        let response = transport.oneshot(request).await.unwrap();
        // The JSON body arrived whole: the server names the fields still missing.
        assert_eq!(response.status(), http::StatusCode::BAD_REQUEST);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(
            body.get("patient").is_some() && body.get("doctor").is_none(),
            "{body}"
        );
        sim.shutdown().await.unwrap();
    }
}
