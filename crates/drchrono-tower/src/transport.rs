//! The default transport: hyper-util's pooled client over rustls (HTTPS to DrChrono), with a
//! bounded connection set-up.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use drchrono_core::{BoxError, is_connect_error};
use http::Uri;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::Service;

use crate::attempt::{TimedOut, TimeoutPhase, after_response_head};

/// How long a new connection (TCP and TLS) may take by default: 10 s.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// hyper-util's client with rustls (ring) and the webpki roots, speaking HTTP/1.1 and
/// HTTP/2, each new connection bounded by a connect timeout.
pub type HttpsClient = Client<ConnectTimeout<HttpsConnector<HttpConnector>>, Full<Bytes>>;

/// The default transport, with a 10 s connect timeout (TCP and TLS handshake). `http://`
/// URLs are served too, for a local `drchrono-sim`.
///
/// # Errors
/// When rustls refuses its safe default protocol versions with the ring provider (it does
/// not with this crate's features).
pub fn https_client() -> Result<HttpsClient, BoxError> {
    https_client_with_connect_timeout(DEFAULT_CONNECT_TIMEOUT)
}

/// [`https_client`] with another connect timeout. A connection that is not set up (TCP and
/// TLS) within `timeout` fails the attempt with a [`TimedOut`] error of phase
/// [`TimeoutPhase::Connect`]: the request provably never left, so [`not_sent`] says so.
///
/// # Errors
/// As [`https_client`].
pub fn https_client_with_connect_timeout(timeout: Duration) -> Result<HttpsClient, BoxError> {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(ConnectTimeout::new(connector, timeout)))
}

/// A connector (a `Service<Uri>`, as hyper-util's client takes) whose connections must be
/// established within a timeout, else they fail with [`TimedOut`] ([`TimeoutPhase::Connect`]).
///
/// [`https_client`] wraps its connector in it.
#[derive(Clone, Debug)]
pub struct ConnectTimeout<C> {
    inner: C,
    timeout: Duration,
}

impl<C> ConnectTimeout<C> {
    pub(crate) fn new(inner: C, timeout: Duration) -> Self {
        Self { inner, timeout }
    }
}

type ConnectFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

impl<C> Service<Uri> for ConnectTimeout<C>
where
    C: Service<Uri>,
    C::Error: Into<BoxError>,
    C::Future: Send + 'static,
{
    type Response = C::Response;
    type Error = BoxError;
    // Boxed once per new connection (hyper-util needs an `Unpin` future); pooled
    // connections never come here.
    type Future = ConnectFuture<C::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, destination: Uri) -> Self::Future {
        let timeout = self.timeout;
        let connecting = self.inner.call(destination);
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(connected) => connected.map_err(Into::into),
                Err(_) => Err(Box::new(TimedOut::new(TimeoutPhase::Connect, timeout)) as BoxError),
            }
        })
    }
}

/// Whether a transport error proves the request never left: a [`TimedOut`] of phase
/// [`TimeoutPhase::Connect`], hyper-util's connect errors, and whatever [`is_connect_error`]
/// recognises (refused connections and the like). A [`TimedOut`] of any other phase (no
/// response head in time, a body that stalled) and a success body that broke off say the
/// request may have been sent.
///
/// The facade plugs this into [`ErrorClassifyLayer::not_sent`](drchrono_classify::ErrorClassifyLayer::not_sent),
/// so that the retry policy may retry even a POST that never reached DrChrono.
pub fn not_sent(error: &BoxError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&**error);
    while let Some(e) = source {
        if let Some(timed_out) = e.downcast_ref::<TimedOut>() {
            return !timed_out.may_have_been_sent();
        }
        if after_response_head(e) {
            return false;
        }
        if let Some(hyper) = e.downcast_ref::<hyper_util::client::legacy::Error>()
            && hyper.is_connect()
        {
            return true;
        }
        source = e.source();
    }
    is_connect_error(error)
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::SystemTime;

    use drchrono_classify::ErrorClassifyLayer;
    use drchrono_core::DrChronoError;
    use drchrono_oauth::TokenSet;
    use drchrono_retry::RetryPolicy;
    use hyper_util::rt::TokioIo;
    use serde_json::json;
    use tokio::net::TcpStream;
    use tokio::time::Instant;

    use super::*;
    use crate::DrChronoClient;

    type Hanging = fn(Uri) -> std::future::Pending<Result<TokioIo<TcpStream>, Infallible>>;

    /// hyper-util's client over a connector whose connections never complete (a SYN into
    /// the void), bounded by a 10 s connect timeout.
    fn never_connects() -> Client<ConnectTimeout<tower::util::ServiceFn<Hanging>>, Full<Bytes>> {
        let hanging: Hanging = |_| std::future::pending();
        let connector = ConnectTimeout::new(tower::service_fn(hanging), Duration::from_secs(10));
        Client::builder(TokioExecutor::new()).build(connector)
    }

    /// A client builder with credentials and a token valid for 48 hours.
    fn with_a_valid_token() -> crate::DrChronoClientBuilder {
        let expires = SystemTime::now() + Duration::from_secs(48 * 3600);
        DrChronoClient::builder()
            .credentials("id", "secret".to_owned())
            .tokens(TokenSet::new(
                "access".to_owned(),
                "refresh".to_owned(),
                expires,
            ))
    }

    /// A POST (only a request that provably never left may be retried after a failure)
    /// over a transport that never connects: the error it ends with.
    async fn post_over_never_connects(builder: crate::DrChronoClientBuilder) -> DrChronoError {
        let client = builder.build_with_transport(never_connects()).unwrap();
        bounded(client.post("/api/appointments", &json!({"patient": 7})))
            .await
            .unwrap_err()
    }

    #[tokio::test(start_paused = true)]
    async fn a_connect_timeout_is_typed_and_not_sent() {
        let builder = with_a_valid_token()
            .base_url("https://app.drchrono.com")
            .retry(RetryPolicy::builder().max_retries(0).build().unwrap());
        let start = Instant::now();
        let error = post_over_never_connects(builder).await;
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        let DrChronoError::Transport {
            not_sent, source, ..
        } = &error
        else {
            panic!("{error:?}");
        };
        assert!(*not_sent, "{error:?}");
        let timed_out = find::<TimedOut>(source).expect("a TimedOut in the chain");
        assert_eq!(timed_out.phase(), TimeoutPhase::Connect);
        assert!(!timed_out.may_have_been_sent());
    }

    #[tokio::test(start_paused = true)]
    async fn connect_timeouts_are_retried_for_any_method() {
        let policy = RetryPolicy::builder().seed(1).build().unwrap();
        let error = post_over_never_connects(with_a_valid_token().retry(policy.clone())).await;
        assert!(error.is_not_sent(), "{error:?}");
        assert_eq!(policy.stats().transport_retries, 3);
    }

    /// The classifier's options a user sets (a body limit) keep the client's not-sent
    /// predicate: a connect timeout is still `not_sent: true`, and a POST is retried. A
    /// predicate the user sets wins.
    #[tokio::test(start_paused = true)]
    async fn a_custom_classifier_keeps_the_clients_not_sent_predicate() {
        fn never(_: &BoxError) -> bool {
            false
        }
        for (classify, retried) in [
            (ErrorClassifyLayer::new().body_limit(16 * 1024), true),
            (ErrorClassifyLayer::new().not_sent(never), false),
        ] {
            let policy = RetryPolicy::builder().seed(1).build().unwrap();
            let builder = with_a_valid_token()
                .retry(policy.clone())
                .classify(classify);
            let error = post_over_never_connects(builder).await;
            assert_eq!(error.is_not_sent(), retried, "{error:?}");
            let retries = if retried { 3 } else { 0 };
            assert_eq!(policy.stats().transport_retries, retries);
        }
    }

    /// `call`, failing the test if it is still pending after 7 simulated days.
    async fn bounded<T>(call: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(7 * 24 * 3600), call)
            .await
            .expect("the call hung for 7 simulated days")
    }

    fn find<E: std::error::Error + 'static>(error: &BoxError) -> Option<&E> {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&**error);
        while let Some(e) = source {
            if let Some(found) = e.downcast_ref::<E>() {
                return Some(found);
            }
            source = e.source();
        }
        None
    }

    #[test]
    fn not_sent_reads_the_timeout_phase() {
        let connect: BoxError = Box::new(TimedOut::new(TimeoutPhase::Connect, Duration::ZERO));
        let head: BoxError = Box::new(TimedOut::new(TimeoutPhase::ResponseHead, Duration::ZERO));
        let body: BoxError = Box::new(TimedOut::new(TimeoutPhase::Body, Duration::ZERO));
        assert!(not_sent(&connect));
        assert!(!not_sent(&head));
        assert!(!not_sent(&body));
        let refused: BoxError =
            Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(not_sent(&refused));
    }
}
