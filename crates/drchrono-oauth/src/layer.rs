//! [`OAuthRefreshLayer`].

use tower::Layer;

use crate::{OAuthRefresh, TokenManager};

/// Applies [`OAuthRefresh`] to a service: every request gets the family's current bearer
/// token, refreshed single-flight, and 401s are triaged for replay.
///
/// All services built from one layer (and from clones of its [`TokenManager`]) share one
/// token family.
#[derive(Clone, Debug)]
pub struct OAuthRefreshLayer {
    manager: TokenManager,
}

impl OAuthRefreshLayer {
    /// A layer over `manager`'s token family.
    pub fn new(manager: TokenManager) -> Self {
        Self { manager }
    }

    /// The token manager (for `set_tokens`, `status`, …).
    pub fn manager(&self) -> &TokenManager {
        &self.manager
    }
}

impl<S> Layer<S> for OAuthRefreshLayer {
    type Service = OAuthRefresh<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OAuthRefresh::new(inner, self.manager.clone())
    }
}
