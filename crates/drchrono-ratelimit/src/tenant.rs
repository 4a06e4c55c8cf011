//! [`Tenant`]: a request extension naming whose share of the application's budget a request
//! draws on, and [`FairShares`]: how a [`RateLimiter`](crate::RateLimiter) divides it.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Whose request this is: one practice (one DrChrono user who authorised the application)
/// among the several an application serves. Put it in the request's extensions; the
/// [`RateLimiter`](crate::RateLimiter) then serves waiting tenants fairly and protects the
/// share of an active tenant (see [`FairShares`]). A request without one belongs to the
/// unnamed tenant, so a limiter that never sees one behaves as a single first-come
/// first-served queue.
///
/// A tenant is a key, not a secret: use a stable identifier (the practice's or user's id),
/// never a token. Cheap to clone.
///
/// ```
/// use drchrono_ratelimit::Tenant;
///
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(Tenant::new("practice-17"));
/// assert_eq!(Tenant::of(&request).map(Tenant::as_str), Some("practice-17"));
/// assert_eq!(Tenant::of(&http::Request::new(())), None);
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tenant(Arc<str>);

impl Tenant {
    /// The tenant named `key`.
    pub fn new(key: impl AsRef<str>) -> Self {
        Self(Arc::from(key.as_ref()))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The tenant a request carries in its extensions, if any.
    pub fn of<B>(request: &http::Request<B>) -> Option<&Self> {
        request.extensions().get::<Self>()
    }
}

impl fmt::Debug for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Tenant").field(&&*self.0).finish()
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Tenant {
    fn from(key: &str) -> Self {
        Self::new(key)
    }
}

impl From<String> for Tenant {
    fn from(key: String) -> Self {
        Self(Arc::from(key))
    }
}

/// How a [`RateLimiter`](crate::RateLimiter) divides one application's budget among its
/// [`Tenant`]s. Default: on, equal weights, a tenant active for
/// [`DEFAULT_IDLE_AFTER`](Self::DEFAULT_IDLE_AFTER) after its last request.
///
/// Two mechanisms, both within one process:
///
/// - **Fair queueing.** When requests wait, each permit goes to the waiting tenant with the
///   least weighted service (start-time fair queueing: a tenant's service is the number of
///   permits it was given, divided by its weight; a tenant that starts waiting again starts
///   from the service of the last permit given, not from what it did not use while idle). A
///   light tenant never waits behind a heavy tenant's backlog; within a tenant, interactive
///   work goes before background work and each goes first-come first-served. Fair queueing
///   is work-conserving: a permit is never left unused while someone waits whom no rule
///   refuses (a less served tenant's background work that the background reserve refuses
///   is passed by others' interactive work), so for work of one priority the total
///   makespan is the single queue's. A waiter that cannot get ready (its token is being
///   refreshed) lets other tenants go meanwhile and keeps its place.
/// - **Protected shares.** A tenant that is active (it is waiting, or sent a request within
///   `idle_after`) keeps its share of each rule of a minute or more (the 10-minute window
///   and the hour: the rule's maximum times its weight over the active tenants' total) free
///   of other tenants: they may not take what it has not used of its share, so its next
///   request goes at once instead of behind a backlog that filled the 10-minute window or
///   the hour. (The per-second rule refills within a second, and fair queueing alone bounds
///   a tenant's wait there.) A tenant below its share always fits beside the others'
///   shares, so shares never deadlock the queue. The share of an aligned rule
///   (the hour) shrinks with the time left in the period, so what an active tenant will not
///   use by the top of the hour goes to the others before it ends (max-min fairness). This
///   holds back permits that a backlog could have taken now; it never breaks a rule. It
///   needs the in-memory budget; with a shared [`Backend`](crate::Backend) the limiter
///   queues fairly and the backend enforces the totals.
///
/// ```
/// use std::time::Duration;
/// use drchrono_ratelimit::{FairShares, RateLimitConfig, RateLimiter};
///
/// let shares = FairShares::new()
///     .weight("practice-17", 2) // twice the share of any other practice
///     .idle_after(Duration::from_secs(120));
/// let limiter = RateLimiter::builder(RateLimitConfig::default()).fair_shares(shares).build();
/// # let _ = limiter;
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct FairShares {
    pub(crate) enabled: bool,
    pub(crate) weights: HashMap<Tenant, u32>,
    pub(crate) idle_after: Duration,
}

impl FairShares {
    /// How long a tenant stays active after its last request: 60 s, a minute between an
    /// interactive user's clicks.
    pub const DEFAULT_IDLE_AFTER: Duration = Duration::from_secs(60);

    /// Fairness on, equal weights, [`DEFAULT_IDLE_AFTER`](Self::DEFAULT_IDLE_AFTER).
    pub fn new() -> Self {
        Self {
            enabled: true,
            weights: HashMap::new(),
            idle_after: Self::DEFAULT_IDLE_AFTER,
        }
    }

    /// No fairness: one first-come first-served queue for every tenant, no protected
    /// shares (the limiter's behaviour before tenants existed).
    pub fn off() -> Self {
        Self {
            enabled: false,
            ..Self::new()
        }
    }

    /// `tenant`'s weight (default 1; 0 is taken as 1): its share of the queue and of each
    /// rule is proportional to it.
    pub fn weight(mut self, tenant: impl Into<Tenant>, weight: u32) -> Self {
        self.weights.insert(tenant.into(), weight.max(1));
        self
    }

    /// How long a tenant that stopped sending keeps its protected share. Zero: no share is
    /// protected, nothing is held back (fair queueing alone).
    pub fn idle_after(mut self, idle_after: Duration) -> Self {
        self.idle_after = idle_after;
        self
    }

    /// Whether fairness is on.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    pub(crate) fn weight_of(&self, tenant: Option<&Tenant>) -> u32 {
        tenant
            .and_then(|t| self.weights.get(t).copied())
            .unwrap_or(1)
    }
}

impl Default for FairShares {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for FairShares {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut weights: Vec<_> = self.weights.iter().collect();
        weights.sort();
        f.debug_struct("FairShares")
            .field("enabled", &self.enabled)
            .field("weights", &weights)
            .field("idle_after", &self.idle_after)
            .finish()
    }
}
