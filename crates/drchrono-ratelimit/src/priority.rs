//! [`Priority`]: a request extension that marks interactive and background work.

/// How urgent a request is; put it in the request's extensions (absent = interactive).
///
/// Background work may not take the last share of an aligned (hourly) budget, set by
/// [`RateLimitConfigBuilder::background_reserve_percent`](crate::RateLimitConfigBuilder::background_reserve_percent)
/// (10 % by default), so interactive requests still go when a batch job has used the rest.
/// Background waiters also yield to interactive ones: they queue first-come first-served
/// among themselves and take the shared turn only to decide, never to sleep.
///
/// ```
/// use drchrono_ratelimit::Priority;
///
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(Priority::Background);
/// assert_eq!(Priority::of(&request), Priority::Background);
/// assert_eq!(Priority::of(&http::Request::new(())), Priority::Interactive);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Priority {
    /// A user is waiting: may use the whole budget. The default.
    #[default]
    Interactive,
    /// Batch or sync work: leaves the reserve of each aligned budget to interactive work.
    Background,
}

impl Priority {
    /// The value of the `drchrono.rate_limit.priority` span field: `interactive` or
    /// `background`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Interactive => "interactive",
            Self::Background => "background",
        }
    }

    /// The priority a request carries in its extensions, [`Priority::Interactive`] if none.
    pub fn of<B>(request: &http::Request<B>) -> Self {
        request
            .extensions()
            .get::<Self>()
            .copied()
            .unwrap_or_default()
    }
}
