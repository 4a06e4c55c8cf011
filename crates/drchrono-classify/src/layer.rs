//! [`ErrorClassifyLayer`]: configuration and the tower `Layer`.

use std::time::Duration;

use tower::Layer;

use crate::ErrorClassify;
use drchrono_core::{NotSentPredicate, is_connect_error};

/// The default limit on the bytes of an error body that are read: 64 KiB.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// How long reading an error body may take by default: 30 s. A server that sends an error's
/// head and then stalls never holds the caller longer than this.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// What the layer and its service share.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    pub(crate) body_limit: usize,
    pub(crate) body_timeout: Duration,
    /// `None`: none was set; [`is_connect_error`] decides.
    pub(crate) not_sent: Option<NotSentPredicate>,
}

impl Config {
    /// The not-sent predicate in effect.
    pub(crate) fn not_sent(&self) -> NotSentPredicate {
        self.not_sent.unwrap_or(is_connect_error)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            body_limit: DEFAULT_BODY_LIMIT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            not_sent: None,
        }
    }
}

/// Turns DrChrono error responses (status >= 400) and transport failures into
/// [`DrChronoError`](drchrono_core::DrChronoError)s; see [`ErrorClassify`].
///
/// Place it directly above the transport, below the OAuth, rate-limit and retry layers, which
/// consume its typed errors.
///
/// ```
/// use drchrono_classify::ErrorClassifyLayer;
///
/// let layer = ErrorClassifyLayer::new()
///     .body_limit(16 * 1024)
///     .not_sent(drchrono_core::is_connect_error);
/// # let _ = layer;
/// ```
#[derive(Clone, Debug, Default)]
pub struct ErrorClassifyLayer {
    config: Config,
}

impl ErrorClassifyLayer {
    /// A layer with the defaults: a 64 KiB body limit ([`DEFAULT_BODY_LIMIT`]), a 30 s body
    /// read timeout ([`DEFAULT_BODY_TIMEOUT`]) and [`is_connect_error`] as the not-sent
    /// predicate.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many bytes of an error body are read at most (default [`DEFAULT_BODY_LIMIT`],
    /// 64 KiB). Reading stops there: the rest of the body is dropped unread, never buffered.
    #[must_use]
    pub fn body_limit(mut self, limit: usize) -> Self {
        self.config.body_limit = limit;
        self
    }

    /// How long reading an error body may take (default [`DEFAULT_BODY_TIMEOUT`], 30 s).
    /// When it runs out, the error is classified from what arrived (the status decides),
    /// as for a body that broke off, and the rest is dropped unread.
    ///
    /// The timer is tokio's, started only when a body makes the reader wait: a body that
    /// stalls must be read inside a tokio runtime with its time driver enabled (as
    /// `#[tokio::main]` builds it); tokio panics otherwise.
    #[must_use]
    pub fn body_timeout(mut self, timeout: Duration) -> Self {
        self.config.body_timeout = timeout;
        self
    }

    /// Decides `not_sent` of [`DrChronoError::Transport`](drchrono_core::DrChronoError::Transport) for an inner service's error:
    /// `true` when the request provably never reached the server. Default:
    /// [`is_connect_error`]. A facade over hyper-util can combine it with
    /// `hyper_util::client::legacy::Error::is_connect`.
    #[must_use]
    pub fn not_sent(mut self, predicate: NotSentPredicate) -> Self {
        self.config.not_sent = Some(predicate);
        self
    }

    /// [`not_sent`](Self::not_sent), unless a predicate was set already: for a facade that
    /// knows its transport's errors, given a layer its user configured (a body limit, say),
    /// so that the user's options stay and so does the facade's knowledge, while a
    /// predicate the user chose wins.
    ///
    /// ```
    /// use drchrono_classify::ErrorClassifyLayer;
    /// # fn transports_predicate(_: &drchrono_core::BoxError) -> bool { false }
    ///
    /// // The user's options, completed by the facade.
    /// let layer = ErrorClassifyLayer::new()
    ///     .body_limit(16 * 1024)
    ///     .default_not_sent(transports_predicate);
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn default_not_sent(mut self, predicate: NotSentPredicate) -> Self {
        self.config.not_sent.get_or_insert(predicate);
        self
    }
}

impl<S> Layer<S> for ErrorClassifyLayer {
    type Service = ErrorClassify<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ErrorClassify::with_config(inner, self.config)
    }
}
