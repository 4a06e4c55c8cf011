//! [`RetryBudget`]: retries may be at most a share of recent first attempts.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use tower::retry::budget::Budget;

use crate::ConfigError;

/// Number of slots the window is divided into; deposits and withdrawals expire a slot at a
/// time.
const SLOTS: u32 = 10;

/// A retry budget sized for DrChrono's traffic: over a sliding window, retries may be at
/// most `min_retries + ratio × first attempts`.
///
/// [`RetryPolicy`](crate::RetryPolicy) deposits once for every request it sees (at its first
/// attempt) and withdraws once for every retry it schedules after a 5xx or a transport
/// error; when the budget is exhausted, the request fails with its last error instead of
/// being retried. Retries after a 429 and the 401 replay neither deposit nor withdraw: the
/// server refused those attempts before doing any work, and a 429 names the instant it
/// serves again (the crate docs say why they are outside the budget).
///
/// Why not tower's `TpsBudget`? Its window is at most 60 s and its reserve is at least one
/// retry per second: DrChrono allows 500 requests an hour (≈ 0.14 per second), so that
/// reserve alone would let every failing request retry, and DrChrono's 5xx delays (25 s to
/// 2 min) outlast its window. This budget counts over minutes and its reserve is a count
/// per window. Any [`Budget`] (including `TpsBudget`) can still be given to
/// [`RetryPolicyBuilder::budget`](crate::RetryPolicyBuilder::budget).
///
/// Time is tokio's clock, so paused-time tests drive it. Clones of a policy share one
/// budget through an `Arc`.
///
/// ```
/// use std::time::Duration;
/// use drchrono_retry::RetryBudget;
/// use tower::retry::budget::Budget;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// // 10 % of first attempts, plus 1 retry per minute.
/// let budget = RetryBudget::new(Duration::from_secs(60), 0.1, 1).unwrap();
/// for _ in 0..20 {
///     budget.deposit();
/// }
/// assert_eq!(budget.available(), 3);
/// assert!(budget.withdraw() && budget.withdraw() && budget.withdraw());
/// assert!(!budget.withdraw());
/// # }
/// ```
pub struct RetryBudget {
    window: Duration,
    slot: Duration,
    ratio: f64,
    min_retries: u32,
    state: Mutex<Ledger>,
}

#[derive(Debug, Default)]
struct Ledger {
    origin: Option<Instant>,
    /// Slots still inside the window, oldest first.
    slots: VecDeque<Slot>,
    /// When the last slot stops being the current one: until then, nothing expires.
    current_until: Option<Instant>,
    /// Deposits ever made: the requests of the one policy that owns this budget, counted
    /// under the lock the deposit takes anyway.
    deposited: u64,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    index: u64,
    deposits: u64,
    withdrawals: u64,
}

impl RetryBudget {
    /// Default window: 10 minutes, DrChrono's rolling throttling window.
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(600);
    /// Default share of first attempts that may be retried: 20 %.
    pub const DEFAULT_RATIO: f64 = 0.2;
    /// Default retries allowed per window whatever the traffic: 10 (so that a lone request
    /// after a quiet spell still gets DrChrono's 2-3 retries).
    pub const DEFAULT_MIN_RETRIES: u32 = 10;

    /// A budget allowing, within any `window` (counted in ten slots), `min_retries` retries
    /// plus `ratio` retries per first attempt.
    ///
    /// # Errors
    /// [`ConfigError::BudgetWindow`] when `window` is shorter than 10 ns;
    /// [`ConfigError::BudgetRatio`] when `ratio` is negative or not finite.
    pub fn new(window: Duration, ratio: f64, min_retries: u32) -> Result<Self, ConfigError> {
        let slot = window / SLOTS;
        if slot.is_zero() {
            return Err(ConfigError::BudgetWindow(window));
        }
        if !ratio.is_finite() || ratio < 0.0 {
            return Err(ConfigError::BudgetRatio(ratio));
        }
        Ok(Self {
            window,
            slot,
            ratio,
            min_retries,
            state: Mutex::new(Ledger::default()),
        })
    }

    /// How many retries the budget would allow right now.
    pub fn available(&self) -> u64 {
        let mut ledger = self.ledger();
        let (deposits, withdrawals) = self.totals(&mut ledger);
        self.allowance(deposits).saturating_sub(withdrawals)
    }

    /// The window over which deposits and withdrawals count.
    pub fn window(&self) -> Duration {
        self.window
    }

    fn allowance(&self, deposits: u64) -> u64 {
        // The epsilon keeps 0.29 × 100 at 29, not 28.999….
        let share = (self.ratio * deposits as f64 + 1e-9).floor();
        u64::from(self.min_retries).saturating_add(share as u64)
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        // The ledger holds plain counters; a panic elsewhere cannot leave it inconsistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops expired slots and sums deposits and withdrawals still in the window.
    fn totals(&self, ledger: &mut Ledger) -> (u64, u64) {
        self.advance(ledger, Instant::now());
        ledger.slots.iter().fold((0, 0), |(d, w), s| {
            (
                d.saturating_add(s.deposits),
                w.saturating_add(s.withdrawals),
            )
        })
    }

    /// Drops slots that left the window at `now` and makes sure the last slot is the current
    /// one.
    fn advance(&self, ledger: &mut Ledger, now: Instant) {
        if ledger.current_until.is_some_and(|until| now < until) {
            return;
        }
        let origin = *ledger.origin.get_or_insert(now);
        let elapsed = now.saturating_duration_since(origin);
        // In 64 bits (584 years of nanoseconds): a 128-bit division costs more than the rest.
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let index = nanos(elapsed) / nanos(self.slot);
        while ledger
            .slots
            .front()
            .is_some_and(|s| s.index.saturating_add(u64::from(SLOTS)) <= index)
        {
            ledger.slots.pop_front();
        }
        if ledger.slots.back().is_none_or(|s| s.index != index) {
            ledger.slots.push_back(Slot {
                index,
                deposits: 0,
                withdrawals: 0,
            });
        }
        ledger.current_until = u32::try_from(index.saturating_add(1))
            .ok()
            .and_then(|next| self.slot.checked_mul(next))
            .and_then(|end| origin.checked_add(end));
    }

    fn current<'a>(&self, ledger: &'a mut Ledger, now: Instant) -> Option<&'a mut Slot> {
        self.advance(ledger, now);
        ledger.slots.back_mut()
    }

    /// [`Budget::deposit`] at `now` (tokio's clock), an instant the caller already read.
    #[inline]
    pub(crate) fn deposit_at(&self, now: Instant) {
        let mut ledger = self.ledger();
        ledger.deposited = ledger.deposited.saturating_add(1);
        if let Some(slot) = self.current(&mut ledger, now) {
            slot.deposits = slot.deposits.saturating_add(1);
        }
    }
}

impl RetryBudget {
    /// Deposits ever made (expired ones included).
    pub(crate) fn deposited(&self) -> u64 {
        self.ledger().deposited
    }
}

impl Budget for RetryBudget {
    fn deposit(&self) {
        self.deposit_at(Instant::now());
    }

    fn withdraw(&self) -> bool {
        let mut ledger = self.ledger();
        let (deposits, withdrawals) = self.totals(&mut ledger);
        if withdrawals >= self.allowance(deposits) {
            return false;
        }
        match ledger.slots.back_mut() {
            Some(slot) => {
                slot.withdrawals = slot.withdrawals.saturating_add(1);
                true
            }
            None => false,
        }
    }
}

impl Default for RetryBudget {
    /// 10-minute window, 20 % of first attempts, at least 10 retries per window.
    fn default() -> Self {
        Self {
            window: Self::DEFAULT_WINDOW,
            slot: Self::DEFAULT_WINDOW / SLOTS,
            ratio: Self::DEFAULT_RATIO,
            min_retries: Self::DEFAULT_MIN_RETRIES,
            state: Mutex::new(Ledger::default()),
        }
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("window", &self.window)
            .field("ratio", &self.ratio)
            .field("min_retries", &self.min_retries)
            .field("available", &self.available())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn reserve_allows_min_retries_without_traffic() {
        let b = RetryBudget::new(Duration::from_secs(60), 0.2, 3).unwrap();
        assert_eq!(b.available(), 3);
        assert!(b.withdraw() && b.withdraw() && b.withdraw());
        assert!(!b.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn share_of_first_attempts() {
        let b = RetryBudget::new(Duration::from_secs(60), 0.29, 0).unwrap();
        for _ in 0..100 {
            b.deposit();
        }
        assert_eq!(b.available(), 29);
        let granted = (0..100).filter(|_| b.withdraw()).count();
        assert_eq!(granted, 29);
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_and_withdrawals_expire_with_the_window() {
        let b = RetryBudget::new(Duration::from_secs(100), 0.5, 0).unwrap();
        for _ in 0..10 {
            b.deposit();
        }
        assert!(b.withdraw());
        assert_eq!(b.available(), 4);
        tokio::time::advance(Duration::from_secs(50)).await;
        for _ in 0..4 {
            b.deposit();
        }
        assert_eq!(b.available(), 6);
        // The first ten deposits (and the withdrawal) leave the window; the four stay.
        tokio::time::advance(Duration::from_secs(55)).await;
        assert_eq!(b.available(), 2);
        tokio::time::advance(Duration::from_secs(100)).await;
        assert_eq!(b.available(), 0);
        assert!(!b.withdraw());
    }

    #[test]
    fn invalid_settings_are_typed_errors() {
        assert!(matches!(
            RetryBudget::new(Duration::from_nanos(5), 0.1, 1),
            Err(ConfigError::BudgetWindow(_))
        ));
        assert!(matches!(
            RetryBudget::new(Duration::from_secs(1), -0.1, 1),
            Err(ConfigError::BudgetRatio(_))
        ));
        assert!(matches!(
            RetryBudget::new(Duration::from_secs(1), f64::NAN, 1),
            Err(ConfigError::BudgetRatio(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn default_is_documented_values() {
        let b = RetryBudget::default();
        assert_eq!(b.window(), Duration::from_secs(600));
        assert_eq!(b.available(), 10);
        for _ in 0..10 {
            b.deposit();
        }
        assert_eq!(b.available(), 12);
        assert!(format!("{b:?}").contains("available: 12"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_policy_deposits_in_its_own_and_in_shared_budgets() {
        use std::sync::Arc;

        use drchrono_core::DrChronoError;
        use tower::retry::Policy;

        let request = http::Request::get("https://app.drchrono.com/api/patients")
            .body(String::new())
            .unwrap();
        let shared = Arc::new(RetryBudget::new(Duration::from_secs(60), 0.5, 0).unwrap());
        let mut policies = [
            crate::RetryPolicy::builder()
                .budget(RetryBudget::new(Duration::from_secs(60), 0.5, 0).unwrap())
                .build()
                .unwrap(),
            crate::RetryPolicy::builder()
                .shared_budget(shared.clone())
                .build()
                .unwrap(),
        ];
        for policy in &mut policies {
            for _ in 0..4 {
                Policy::<_, http::Response<()>, DrChronoError>::clone_request(policy, &request)
                    .unwrap();
            }
            assert_eq!(policy.stats().requests, 4);
        }
        // Four first attempts at 50 %: two retries, in the shared budget as in the policy's.
        assert_eq!(shared.available(), 2);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(shared.available(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deposit_at_a_slot_boundary_lands_in_the_new_slot() {
        let b = RetryBudget::new(Duration::from_secs(100), 1.0, 0).unwrap();
        b.deposit();
        tokio::time::advance(Duration::from_secs(10)).await;
        // The first slot ends now: this deposit is the next slot's, and outlives the first.
        b.deposit();
        assert_eq!(b.available(), 2);
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(b.available(), 1);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.available(), 0);
    }
}
