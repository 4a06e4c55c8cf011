//! The default transport: hyper-util's pooled client over rustls (HTTPS to DrChrono).

use bytes::Bytes;
use drchrono_classify::{BoxError, is_connect_error};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// hyper-util's client with rustls (ring) and the webpki roots, speaking HTTP/1.1 and
/// HTTP/2.
pub type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The default transport. `http://` URLs are served too, for a local `drchrono-sim`.
///
/// # Errors
/// When rustls refuses its safe default protocol versions with the ring provider (it does
/// not with this crate's features).
pub fn https_client() -> Result<HttpsClient, BoxError> {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// Whether a transport error proves the request never left: hyper-util's connect errors,
/// and whatever [`is_connect_error`] recognises (refused connections and the like).
///
/// The facade plugs this into [`ErrorClassifyLayer::not_sent`](drchrono_classify::ErrorClassifyLayer::not_sent),
/// so that the retry policy may retry even a POST that never reached DrChrono.
pub fn not_sent(error: &BoxError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&**error);
    while let Some(e) = source {
        if let Some(hyper) = e.downcast_ref::<hyper_util::client::legacy::Error>()
            && hyper.is_connect()
        {
            return true;
        }
        source = e.source();
    }
    is_connect_error(error)
}
