//! The queue of a [`RateLimiter`](crate::RateLimiter)'s waiters: one turn, given to the
//! waiter that fair queueing among [`Tenant`]s picks, and the protected shares of the
//! active tenants (see [`FairShares`]).
//!
//! Every waiter holds a [`Ticket`]. The queue names one *head*: the front waiter of the
//! tenant with the smallest start tag (ties to the earlier waiter), its interactive work
//! before its background work, first-come first-served in each. Only the head gets its request ready and
//! decides; when the head changes (a tenant with a smaller tag starts waiting, interactive
//! work arrives behind background work) the old head is woken to find it was preempted.
//!
//! Tags follow start-time fair queueing: a tenant that starts waiting takes the start tag
//! `max(virtual time, its last finish tag)`; a permit given to it sets the virtual time to
//! its start tag and its next start tag to `start + SCALE / weight`. A tenant's tag is thus
//! its weighted service, counted from when it last started waiting.
//!
//! A head that others could pass is *parked*: refused by nothing but the protected shares of
//! the other active tenants, or a background head refused by the background
//! reserve alone while interactive work may go. Its tenant leaves the choice of head until
//! a share may have shrunk (a tenant idled, the hour moved on, a window slid), its refusal
//! ends, or someone joins the queue, so that a permit any rule allows goes to someone else
//! who waits: the queue is work-conserving.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::local::LocalLimiter;
use crate::time::{Reading, duration_nanos, to_nanos};
use crate::{FairShares, NotUntil, Priority, RateLimitConfig, RuleKind, Status, Tenant};

/// One permit's tag length at weight 1.
const SCALE: u64 = 1 << 32;

/// Rules at least this long are protected; shorter ones refill within their period, and fair
/// queueing alone bounds a tenant's wait there by that period.
const PROTECTED_FROM: Duration = Duration::from_secs(60);

/// The queue; see the module's documentation.
pub(crate) struct FairQueue {
    shares: FairShares,
    /// Per rule of the configuration: `Some((max, period in ns, aligned))` for a protected
    /// rule.
    protected: Vec<Option<Protected>>,
    /// The index of the first aligned rule (the hour), for [`TenantStatus`].
    hour_rule: Option<usize>,
    /// How long an idle tenant is remembered (ns): the longest rule's period or
    /// `idle_after`, whichever is longer. After that nothing it did counts any more.
    forget_after: u64,
    state: Mutex<State>,
    /// Waiters of any priority.
    waiting: AtomicUsize,
    /// Interactive waiters.
    interactive_waiting: AtomicUsize,
    /// Set once a request names a tenant: from then on every request queues, so that none
    /// skips the fair order.
    tenants_seen: AtomicBool,
}

#[derive(Debug, Clone, Copy)]
struct Protected {
    max: u32,
    period: u64,
    aligned: bool,
}

#[derive(Default)]
struct State {
    next_id: u64,
    vtime: u64,
    head: Option<Head>,
    tenants: HashMap<Option<Tenant>, TenantState>,
    /// Decisions for a test's model of the queue.
    #[cfg(test)]
    log: Vec<Event>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Head {
    id: u64,
    tenant: Option<Tenant>,
}

struct TenantState {
    weight: u32,
    start: u64,
    finish: u64,
    /// Interactive, background.
    lanes: [VecDeque<Entry>; 2],
    parked: bool,
    /// Its head could not get ready (a token refresh, a connection): the other tenants go
    /// meanwhile, and it keeps its place.
    unready: bool,
    /// The monotonic instant of the last request that joined or was charged.
    last_active: u64,
    served: u64,
    /// Per rule: the charges that count against its protected share.
    usage: Vec<Usage>,
}

struct Entry {
    id: u64,
    waker: Option<Waker>,
}

#[derive(Debug, Clone, Default)]
enum Usage {
    #[default]
    None,
    /// Monotonic instants of the charges within the window.
    Sliding(VecDeque<u64>),
    /// The period (wall time over its length) and the charges within it.
    Aligned { period: u64, count: u32 },
}

/// A test's record of what the queue did.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    Join(Option<Tenant>, Priority),
    Grant(Option<Tenant>, Priority),
}

/// What a tenant sees of the queue: [`RateLimiter::tenants`](crate::RateLimiter::tenants).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TenantStatus {
    /// The tenant; `None` for requests that name none.
    pub tenant: Option<Tenant>,
    /// Its weight.
    pub weight: u32,
    /// Its requests waiting for a permit now.
    pub waiting: usize,
    /// Whether it is active: waiting, or charged within
    /// [`FairShares::idle_after`](crate::FairShares::idle_after).
    pub active: bool,
    /// Permits it was given in the current period of the first aligned rule (this hour).
    pub served_this_hour: u32,
    /// Permits it was given since the limiter last saw it after an idle spell longer than
    /// the longest rule's period (and `idle_after`): a tenant idle that long is forgotten.
    pub served: u64,
}

/// Why the head was not admitted.
pub(crate) enum Held {
    /// A rule (or a server's pause) refuses until then.
    Refused(NotUntil),
    /// Others may go though it may not: only the protected shares of others hold it, or
    /// only the background reserve (interactive work may go now). Its tenant stands back
    /// until this monotonic instant, or until someone joins the queue.
    Reserved(u64),
    /// Another waiter took the turn between the check and the decision (it joined
    /// meanwhile, fairer or interactive): nothing was decided; it queues again.
    Passed,
}

fn lane(priority: Priority) -> usize {
    match priority {
        Priority::Interactive => 0,
        Priority::Background => 1,
    }
}

impl FairQueue {
    pub(crate) fn new(config: &RateLimitConfig, shares: FairShares) -> Self {
        let protected = config
            .rules()
            .iter()
            .map(|rule| {
                let aligned = rule.kind() == RuleKind::Aligned;
                (aligned || rule.period() >= PROTECTED_FROM).then(|| Protected {
                    max: rule.max(),
                    period: duration_nanos(rule.period()),
                    aligned,
                })
            })
            .collect();
        let hour_rule = config
            .rules()
            .iter()
            .position(|rule| rule.kind() == RuleKind::Aligned);
        let longest = config.rules().iter().map(|r| r.period()).max();
        let forget_after = duration_nanos(longest.unwrap_or_default().max(shares.idle_after));
        Self {
            shares,
            protected,
            hour_rule,
            forget_after,
            state: Mutex::default(),
            waiting: AtomicUsize::new(0),
            interactive_waiting: AtomicUsize::new(0),
            tenants_seen: AtomicBool::new(false),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every mutation leaves the state consistent: a panic elsewhere changes nothing.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a request of `priority` may be decided at once, outside the queue: nobody it
    /// must not overtake is waiting. A request naming a tenant (with fairness on) marks the
    /// limiter as shared among tenants, and from then on every request queues.
    #[inline]
    pub(crate) fn may_skip(&self, priority: Priority, names_tenant: bool) -> bool {
        if self.shares.enabled {
            if names_tenant {
                self.tenant_seen();
                return false;
            }
            if self.tenants_seen.load(Ordering::Relaxed) {
                return false;
            }
        }
        let ahead = match priority {
            Priority::Interactive => &self.interactive_waiting,
            Priority::Background => &self.waiting,
        };
        ahead.load(Ordering::Acquire) == 0
    }

    /// A request named a tenant: from now on every request queues (with fairness on).
    pub(crate) fn tenant_seen(&self) {
        if self.shares.enabled {
            self.tenants_seen.store(true, Ordering::Relaxed);
        }
    }

    /// The key a request's tenant is queued under: with fairness off, everyone's the same.
    fn key(&self, tenant: Option<&Tenant>) -> Option<Tenant> {
        if self.shares.enabled {
            tenant.cloned()
        } else {
            None
        }
    }

    /// Joins the queue; the ticket leaves it when dropped.
    pub(crate) fn join(&self, tenant: Option<&Tenant>, priority: Priority, now: u64) -> Ticket<'_> {
        let key = self.key(tenant);
        let mut st = self.state();
        let id = st.next_id;
        st.next_id += 1;
        let vtime = st.vtime;
        let rules = self.protected.len();
        let weight = self.shares.weight_of(key.as_ref());
        let ts = st
            .tenants
            .entry(key.clone())
            .or_insert_with(|| TenantState {
                weight,
                start: 0,
                finish: 0,
                lanes: Default::default(),
                parked: false,
                unready: false,
                last_active: now,
                served: 0,
                usage: vec![Usage::None; rules],
            });
        if ts.lanes.iter().all(VecDeque::is_empty) {
            ts.start = vtime.max(ts.finish);
        }
        ts.last_active = ts.last_active.max(now);
        ts.lanes[lane(priority)].push_back(Entry { id, waker: None });
        self.waiting.fetch_add(1, Ordering::AcqRel);
        if priority == Priority::Interactive {
            self.interactive_waiting.fetch_add(1, Ordering::AcqRel);
        }
        #[cfg(test)]
        st.log.push(Event::Join(key.clone(), priority));
        if id.is_multiple_of(64) {
            // Forget the tenants idle for longer than any rule remembers, now and then.
            let forget_after = self.forget_after;
            st.tenants.retain(|_, ts| {
                ts.lanes.iter().any(|l| !l.is_empty())
                    || ts.parked
                    || ts.unready
                    || ts.last_active.saturating_add(forget_after) > now
            });
        }
        {
            // A parked tenant stood back for a share that may now be waiting (and so
            // unreserved), or for interactive work that may now be its own: it decides again.
            for ts in st.tenants.values_mut() {
                if ts.parked {
                    ts.parked = false;
                    wake_front(ts);
                }
            }
        }
        self.elect(&mut st);
        Ticket {
            queue: self,
            id,
            key,
            priority,
            stepped_aside: false,
        }
    }

    /// Names the head anew; wakes the old one (if it lost the turn) and the new one.
    fn elect(&self, st: &mut State) {
        // (start tag, waiter): the least served tenant, its interactive work first.
        let mut best: Option<(u64, u64, &Option<Tenant>)> = None;
        for (key, ts) in &st.tenants {
            if ts.parked || ts.unready {
                continue;
            }
            let Some(front) = ts.lanes.iter().find_map(VecDeque::front) else {
                continue;
            };
            if best.is_none_or(|(start, id, _)| (ts.start, front.id) < (start, id)) {
                best = Some((ts.start, front.id, key));
            }
        }
        let head = best.map(|(_, id, key)| Head {
            id,
            tenant: key.clone(),
        });
        if head == st.head {
            return;
        }
        let old = std::mem::replace(&mut st.head, head.clone());
        for head in [old, head].into_iter().flatten() {
            if let Some(entry) = st
                .tenants
                .get_mut(&head.tenant)
                .and_then(|ts| ts.lanes.iter_mut().flatten().find(|e| e.id == head.id))
                && let Some(waker) = entry.waker.take()
            {
                waker.wake();
            }
        }
    }

    /// Per tenant, what it waits for and was given.
    pub(crate) fn tenants(&self, now: Reading) -> Vec<TenantStatus> {
        let st = self.state();
        let idle_after = duration_nanos(self.shares.idle_after);
        let mut all: Vec<TenantStatus> = st
            .tenants
            .iter()
            .map(|(key, ts)| {
                let waiting = ts.lanes.iter().map(VecDeque::len).sum();
                let served_this_hour = self
                    .hour_rule
                    .and_then(|i| Some((&ts.usage[i], self.protected[i]?)))
                    .map_or(0, |(usage, p)| used(usage, p, now) as u32);
                TenantStatus {
                    tenant: key.clone(),
                    weight: ts.weight,
                    waiting,
                    active: waiting > 0 || ts.last_active.saturating_add(idle_after) > now.mono,
                    served_this_hour,
                    served: ts.served,
                }
            })
            .collect();
        all.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        all
    }

    #[cfg(test)]
    pub(crate) fn log(&self) -> Vec<Event> {
        self.state().log.clone()
    }
}

fn wake_front(ts: &mut TenantState) {
    if let Some(waker) = ts
        .lanes
        .iter_mut()
        .find_map(|l| l.front_mut())
        .and_then(|e| e.waker.take())
    {
        waker.wake();
    }
}

/// One waiter's place in the [`FairQueue`]. Dropping it leaves the queue (cancel-safe).
pub(crate) struct Ticket<'q> {
    queue: &'q FairQueue,
    id: u64,
    key: Option<Tenant>,
    priority: Priority,
    /// Whether this waiter stepped aside (see [`step_aside`](Self::step_aside)).
    stepped_aside: bool,
}

impl Ticket<'_> {
    fn is_head(&self, st: &State) -> bool {
        st.head.as_ref().is_some_and(|h| h.id == self.id)
    }

    /// Stores the waker of this waiter, to be woken when the head changes or it is unparked.
    fn register(&self, st: &mut State, cx: &Context<'_>) {
        if let Some(entry) = st.tenants.get_mut(&self.key).and_then(|ts| {
            ts.lanes[lane(self.priority)]
                .iter_mut()
                .find(|e| e.id == self.id)
        }) {
            match &entry.waker {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                _ => entry.waker = Some(cx.waker().clone()),
            }
        }
    }

    /// Ready once this waiter is the head.
    pub(crate) fn poll_turn(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = self.queue.state();
        if self.is_head(&st) {
            return Poll::Ready(());
        }
        self.register(&mut st, cx);
        Poll::Pending
    }

    /// Ready once this waiter is no longer the head.
    pub(crate) fn poll_preempted(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = self.queue.state();
        if !self.is_head(&st) {
            return Poll::Ready(());
        }
        self.register(&mut st, cx);
        Poll::Pending
    }

    /// Ready once this waiter's tenant is no longer parked.
    pub(crate) fn poll_unparked(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = self.queue.state();
        if !st.tenants.get(&self.key).is_some_and(|ts| ts.parked) {
            return Poll::Ready(());
        }
        self.register(&mut st, cx);
        Poll::Pending
    }

    /// Whether this waiter holds the turn.
    pub(crate) fn holds_turn(&self) -> bool {
        self.is_head(&self.queue.state())
    }

    /// This (head) waiter could not get ready: its tenant leaves the choice of head, keeping
    /// its place, so that other tenants' waiters go meanwhile (one practice's token refresh
    /// holds no other practice). Within a tenant nobody overtakes it.
    pub(crate) fn step_aside(&mut self) {
        let mut st = self.queue.state();
        if let Some(ts) = st.tenants.get_mut(&self.key) {
            ts.unready = true;
            self.stepped_aside = true;
        }
        self.queue.elect(&mut st);
    }

    /// Whether this waiter stepped aside and has not stepped back.
    pub(crate) fn stepped_aside(&self) -> bool {
        self.stepped_aside
    }

    /// This waiter got ready after stepping aside: its tenant is back in the choice of head.
    pub(crate) fn step_back(&mut self) {
        if !self.stepped_aside {
            return;
        }
        self.stepped_aside = false;
        let mut st = self.queue.state();
        if let Some(ts) = st.tenants.get_mut(&self.key) {
            ts.unready = false;
        }
        self.queue.elect(&mut st);
    }

    /// Takes this waiter's tenant out of the choice of head (see [`Held::Reserved`]).
    pub(crate) fn park(&self) {
        let mut st = self.queue.state();
        if let Some(ts) = st.tenants.get_mut(&self.key) {
            ts.parked = true;
        }
        self.queue.elect(&mut st);
    }

    /// Puts this waiter's tenant back in the choice of head.
    pub(crate) fn unpark(&self) {
        let mut st = self.queue.state();
        if let Some(ts) = st.tenants.get_mut(&self.key)
            && ts.parked
        {
            ts.parked = false;
            self.queue.elect(&mut st);
        }
    }

    /// Decides this (head) waiter on the in-memory budget, holding back the protected shares
    /// of the other active tenants; charges and leaves the queue when
    /// admitted.
    pub(crate) fn decide_local(&mut self, local: &LocalLimiter, now: Reading) -> Result<(), Held> {
        let queue = self.queue;
        let mut st = queue.state();
        if !self.is_head(&st) {
            return Err(Held::Passed);
        }
        let reserve = |status: &dyn Fn() -> Status| queue.reserve(&st, &self.key, now, status);
        local.try_acquire_keeping(now, self.priority, reserve)?;
        self.charged(&mut st, now);
        Ok(())
    }

    /// Records the charge of this (head) waiter, decided by a backend: leaves the queue.
    pub(crate) fn charged_elsewhere(&mut self, now: Reading) {
        let queue = self.queue;
        let mut st = queue.state();
        self.charged(&mut st, now);
    }

    fn charged(&mut self, st: &mut State, now: Reading) {
        let queue = self.queue;
        let vtime = st.vtime;
        let Some(ts) = st.tenants.get_mut(&self.key) else {
            return;
        };
        let start = ts.start;
        ts.finish = start.saturating_add(SCALE / u64::from(ts.weight));
        ts.served += 1;
        ts.last_active = ts.last_active.max(now.mono);
        for (usage, protected) in ts.usage.iter_mut().zip(&queue.protected) {
            if let Some(p) = protected {
                record(usage, *p, now);
            }
        }
        let lane = &mut ts.lanes[lane(self.priority)];
        if let Some(at) = lane.iter().position(|e| e.id == self.id) {
            lane.remove(at);
            self.queue.left(self.priority);
        }
        if ts.lanes.iter().any(|l| !l.is_empty()) {
            ts.start = ts.finish;
        }
        st.vtime = vtime.max(start);
        #[cfg(test)]
        st.log.push(Event::Grant(self.key.clone(), self.priority));
        self.id = u64::MAX;
        queue.elect(st);
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.id == u64::MAX {
            return;
        }
        let mut st = self.queue.state();
        if let Some(ts) = st.tenants.get_mut(&self.key) {
            if self.stepped_aside {
                ts.unready = false;
            }
            // The tenant's front parks it, and its timer alone would unpark it: the waiter
            // behind decides again (and parks again if it is held too).
            if ts.lanes.iter().find_map(VecDeque::front).map(|e| e.id) == Some(self.id) {
                ts.parked = false;
            }
            let lane = &mut ts.lanes[lane(self.priority)];
            if let Some(at) = lane.iter().position(|e| e.id == self.id) {
                lane.remove(at);
                self.queue.left(self.priority);
            }
        }
        self.queue.elect(&mut st);
    }
}

/// Counts a charge at `now` against a protected rule's share.
fn record(usage: &mut Usage, p: Protected, now: Reading) {
    if p.aligned {
        let period = now.wall / p.period;
        match usage {
            Usage::Aligned { period: k, count } if *k == period => *count += 1,
            _ => *usage = Usage::Aligned { period, count: 1 },
        }
    } else {
        if !matches!(usage, Usage::Sliding(_)) {
            *usage = Usage::Sliding(VecDeque::new());
        }
        if let Usage::Sliding(log) = usage {
            trim(log, p.period, now.mono);
            log.push_back(now.mono);
        }
    }
}

/// The charges `usage` counts against a rule's share at `now`.
fn used(usage: &Usage, p: Protected, now: Reading) -> u64 {
    match usage {
        Usage::None => 0,
        Usage::Sliding(log) => log
            .iter()
            .filter(|&&t| t.saturating_add(p.period) > now.mono)
            .count() as u64,
        Usage::Aligned { period, count } if *period == now.wall / p.period => u64::from(*count),
        Usage::Aligned { .. } => 0,
    }
}

fn trim(log: &mut VecDeque<u64>, period: u64, now: u64) {
    while log
        .front()
        .is_some_and(|&t| t.saturating_add(period) <= now)
    {
        log.pop_front();
    }
}

impl FairQueue {
    fn left(&self, priority: Priority) {
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        if priority == Priority::Interactive {
            self.interactive_waiting.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// What a decision for tenant `deciding` must leave of each rule: the unused protected
    /// shares of the other active tenants. `Err` with the monotonic
    /// instant to ask again when `status` leaves less than that; `Ok` when it leaves enough.
    fn reserve(
        &self,
        st: &State,
        deciding: &Option<Tenant>,
        now: Reading,
        status: &dyn Fn() -> Status,
    ) -> Result<(), u64> {
        let idle_after = duration_nanos(self.shares.idle_after);
        if !self.shares.enabled || idle_after == 0 || st.tenants.len() < 2 {
            return Ok(());
        }
        let active = |ts: &TenantState| {
            ts.lanes.iter().any(|l| !l.is_empty())
                || ts.last_active.saturating_add(idle_after) > now.mono
        };
        let total_weight: u64 = st
            .tenants
            .iter()
            .filter(|(key, ts)| *key == deciding || active(ts))
            .map(|(_, ts)| u64::from(ts.weight))
            .sum();
        // The other active tenants, waiting or not. A waiting one keeps its share too: its
        // waiting requests draw on it, and the one deciding may not take them first.
        let protected_tenants: Vec<&TenantState> = st
            .tenants
            .iter()
            .filter(|(key, ts)| *key != deciding && active(ts))
            .map(|(_, ts)| ts)
            .collect();
        if protected_tenants.is_empty() {
            return Ok(());
        }
        let mut recheck = u64::MAX;
        for ts in &protected_tenants {
            if ts.lanes.iter().all(VecDeque::is_empty) {
                recheck = recheck.min(ts.last_active.saturating_add(idle_after));
            }
        }
        let own = st.tenants.get(deciding);
        let status = status();
        let mut held = false;
        for (i, protected) in self.protected.iter().enumerate() {
            let Some(p) = protected else { continue };
            // A tenant below its own share takes what is left: the others' unused shares
            // may not all fit in what the rule has left (spent by tenants now idle, or by
            // requests naming none), and two waiting tenants each keeping the other's share
            // would both wait for the rule's next period with permits free.
            if let Some(own) = own {
                let share = u64::from(p.max) * u64::from(own.weight) / total_weight;
                if used(&own.usage[i], *p, now) < share {
                    continue;
                }
            }
            let rule = &status.rules[i];
            let mut reserve: u64 = 0;
            for ts in &protected_tenants {
                let share = u64::from(p.max) * u64::from(ts.weight) / total_weight;
                let mut keep = share.saturating_sub(used(&ts.usage[i], *p, now));
                if p.aligned {
                    // The share shrinks with the time left in the period.
                    let end = (now.wall / p.period + 1) * p.period;
                    let left = end - now.wall;
                    let cap = (u128::from(share) * u128::from(left)).div_ceil(u128::from(p.period));
                    let cap = u64::try_from(cap).unwrap_or(u64::MAX);
                    if cap <= keep {
                        keep = cap;
                        // When the cap drops by one: `share * left / period <= cap - 1`.
                        if cap > 0 && share > 0 {
                            let left_then =
                                (u128::from(cap - 1) * u128::from(p.period)) / u128::from(share);
                            let at_wall = end.saturating_sub(left_then as u64);
                            recheck = recheck.min(now.mono_at(at_wall).max(now.mono + 1));
                        }
                    }
                }
                reserve += keep;
            }
            let reserve = reserve.min(u64::from(p.max.saturating_sub(1)));
            if u64::from(rule.remaining) < reserve + 1 {
                held = true;
                if let Some(resets) = rule.resets_at {
                    recheck = recheck.min(now.mono_at(to_nanos(resets)).max(now.mono + 1));
                }
            }
        }
        if held { Err(recheck) } else { Ok(()) }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use proptest::prelude::*;

    use super::*;
    use crate::RateLimiter;

    const HOUR: u64 = 3_600;

    fn config() -> RateLimitConfig {
        RateLimitConfig::builder()
            .max_per_second(3)
            .max_per_window(12)
            .window(Duration::from_secs(10))
            .max_per_hour(40)
            .safety_margin(Duration::ZERO)
            .build()
            .unwrap()
    }

    /// 100 s before the top of an hour: runs cross it.
    fn start() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_767_600_000 / HOUR * HOUR + HOUR - 100)
    }

    #[derive(Debug, Clone)]
    struct Arrival {
        at_ms: u64,
        tenant: usize,
        priority: Priority,
    }

    fn arrivals(tenants: usize) -> impl Strategy<Value = Vec<Arrival>> {
        prop::collection::vec(
            (0..20_000u64, 0..tenants, prop::bool::weighted(0.3)).prop_map(
                |(at_ms, tenant, background)| Arrival {
                    at_ms,
                    tenant,
                    priority: if background {
                        Priority::Background
                    } else {
                        Priority::Interactive
                    },
                },
            ),
            1..60,
        )
    }

    /// Runs the arrivals on a fresh limiter under paused time; the release instant of each,
    /// in arrival order, and the limiter.
    fn run(shares: FairShares, arrivals: &[Arrival]) -> (Vec<SystemTime>, RateLimiter) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            let limiter = RateLimiter::builder(config())
                .start_at(start())
                .fair_shares(shares)
                .build();
            let tasks: Vec<_> = arrivals
                .iter()
                .map(|a| {
                    let (limiter, a) = (limiter.clone(), a.clone());
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(a.at_ms)).await;
                        limiter
                            .acquire_as(&Tenant::new(format!("t{}", a.tenant)), a.priority)
                            .await
                            .unwrap()
                    })
                })
                .collect();
            let all = async {
                let mut released = Vec::new();
                for task in tasks {
                    released.push(task.await.unwrap());
                }
                released
            };
            // Everyone is served long before: a waiter left behind fails the test.
            let released = tokio::time::timeout(Duration::from_secs(4 * HOUR), all)
                .await
                .expect("every request is served");
            (released, limiter)
        })
    }

    /// Every rule holds over the release instants, counted by brute force.
    fn assert_rules_hold(released: &[SystemTime]) {
        let secs = |t: &SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_nanos();
        let mut times: Vec<u128> = released.iter().map(secs).collect();
        times.sort_unstable();
        for (i, &t) in times.iter().enumerate() {
            let within = |span: u128| times[..=i].iter().filter(|&&e| e + span > t).count();
            assert!(within(1_000_000_000) <= 3, "9/s-style rule broken at {t}");
            assert!(within(10_000_000_000) <= 12, "window rule broken at {t}");
            let hour = u128::from(HOUR) * 1_000_000_000;
            let same_hour = times.iter().filter(|&&e| e / hour == t / hour).count();
            assert!(same_hour <= 40, "hourly rule broken at {t}");
        }
    }

    /// Replays the queue's log against a model of start-time fair queueing written apart
    /// from the queue: each permit goes to the waiting tenant with the least weighted
    /// service, its interactive work first. The one exception: a less served tenant with
    /// only background work waiting may be passed by interactive work, when the background
    /// reserve refuses it and not them.
    fn assert_fair(log: &[Event], weights: &HashMap<Option<Tenant>, u64>) {
        #[derive(Default)]
        struct Model {
            waiting: [usize; 2],
            start: u64,
            finish: u64,
        }
        let mut model: HashMap<Option<Tenant>, Model> = HashMap::new();
        let mut vtime = 0;
        for (step, event) in log.iter().enumerate() {
            match event {
                Event::Join(tenant, priority) => {
                    let m = model.entry(tenant.clone()).or_default();
                    if m.waiting == [0, 0] {
                        m.start = m.finish.max(vtime);
                    }
                    m.waiting[lane(*priority)] += 1;
                }
                Event::Grant(tenant, priority) => {
                    let lane = lane(*priority);
                    let served = &model[tenant];
                    assert!(
                        served.waiting[lane] > 0,
                        "step {step}: granted a non-waiter"
                    );
                    if lane == 1 {
                        assert_eq!(served.waiting[0], 0, "step {step}: background first");
                    }
                    for (other, m) in &model {
                        let passed_background = m.waiting[0] == 0 && lane == 0;
                        if m.waiting != [0, 0] && !passed_background {
                            assert!(
                                m.start >= served.start,
                                "step {step}: {tenant:?} (tag {}) served before {other:?} (tag {})",
                                served.start,
                                m.start
                            );
                        }
                    }
                    let m = model.get_mut(tenant).unwrap();
                    m.waiting[lane] -= 1;
                    vtime = vtime.max(m.start);
                    m.finish = m.start + SCALE / weights[tenant];
                    if m.waiting != [0, 0] {
                        m.start = m.finish;
                    }
                }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_tenant_that_cannot_get_ready_holds_only_itself() {
        use std::convert::Infallible;
        use std::future::Future;

        let limiter = RateLimiter::builder(config()).start_at(start()).build();
        let origin = tokio::time::Instant::now();
        let (a, b) = (Tenant::new("a"), Tenant::new("b"));
        // A's first request gets ready only after 3 s (a token refresh at the head).
        let first = tokio::spawn({
            let (limiter, a) = (limiter.clone(), a.clone());
            async move {
                /// Ready once the refresh (a 3-s sleep) is over.
                struct Refresh(std::pin::Pin<Box<tokio::time::Sleep>>);
                impl crate::rate_limiter::Readiness for Refresh {
                    type Error = Infallible;
                    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
                        self.0.as_mut().poll(cx).map(Ok)
                    }
                    fn release(&mut self) {}
                }
                let ready = Refresh(Box::pin(tokio::time::sleep(Duration::from_secs(3))));
                limiter
                    .acquire_when_ready(Priority::Interactive, Some(&a), ready, |_| ())
                    .await
                    .unwrap()
            }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        // A second request of A, ready at once, keeps its place behind the first.
        let second = tokio::spawn({
            let (limiter, a) = (limiter.clone(), a.clone());
            async move { limiter.acquire_as(&a, Priority::Interactive).await.unwrap() }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        // B is not held by A's refresh: it goes at once.
        let released = limiter.acquire_as(&b, Priority::Interactive).await.unwrap();
        assert_eq!(released, start() + Duration::from_secs(1));
        assert_eq!(origin.elapsed(), Duration::from_secs(1));
        assert_eq!(first.await.unwrap(), start() + Duration::from_secs(3));
        assert_eq!(second.await.unwrap(), start() + Duration::from_secs(3));
        let log = limiter.queue_log();
        let grants: Vec<_> = log
            .iter()
            .filter_map(|e| match e {
                Event::Grant(t, _) => t.as_ref().map(Tenant::as_str),
                Event::Join(..) => None,
            })
            .collect();
        assert_eq!(grants, ["b", "a", "a"]);
    }

    #[test]
    fn a_parked_front_that_is_dropped_leaves_its_tenant_electable() {
        let queue = FairQueue::new(&config(), FairShares::default());
        let (a, b) = (Tenant::new("a"), Tenant::new("b"));
        let a1 = queue.join(Some(&a), Priority::Background, 0);
        let a2 = queue.join(Some(&a), Priority::Background, 0);
        assert!(a1.holds_turn());
        // Held back (by the reserve, or another tenant's share) until a timer that the
        // waiter owns: then cancelled, timer and all, by a timeout above the limiter.
        a1.park();
        let b1 = queue.join(Some(&b), Priority::Interactive, 0);
        drop(b1);
        a1.park();
        drop(a1);
        assert!(a2.holds_turn(), "A's next waiter must decide again");
        // A waiter behind the front does not unpark its tenant when it leaves.
        let a3 = queue.join(Some(&a), Priority::Background, 0);
        a2.park();
        drop(a3);
        assert!(!a2.holds_turn());
    }

    /// Two tenants waiting while a third, now idle, has spent most of the hour: each keeps
    /// the other's share, but one below its own share takes what is left. (Each holding the
    /// other's share back, both waited for the next hour with two permits free.)
    #[tokio::test(start_paused = true)]
    async fn two_waiting_tenants_below_their_shares_do_not_hold_each_other_back() {
        let limiter = RateLimiter::builder(config())
            .start_at(start())
            .fair_shares(FairShares::new().idle_after(Duration::from_secs(1)))
            .build();
        let (a, b, c) = (Tenant::new("a"), Tenant::new("b"), Tenant::new("c"));
        // At the top of the hour, A alone spends 36 of its 40 (the last 12 from 20 to 23 s:
        // the rolling window is then full until 30 s), then stops.
        let top = start() + Duration::from_secs(100);
        tokio::time::sleep(Duration::from_secs(100)).await;
        for _ in 0..36 {
            limiter.acquire_as(&a, Priority::Interactive).await.unwrap();
        }
        // B and C each ask for one permit, and both wait for the window. At 30 s, A is idle
        // and 4 of the hour are left: each is below its share (20).
        let spawn = |tenant: &Tenant| {
            let (limiter, tenant) = (limiter.clone(), tenant.clone());
            tokio::spawn(async move { limiter.acquire_as(&tenant, Priority::Interactive).await })
        };
        let (for_b, for_c) = (spawn(&b), spawn(&c));
        let soon = top + Duration::from_secs(120);
        let (b_at, c_at) = (for_b.await.unwrap().unwrap(), for_c.await.unwrap().unwrap());
        assert!(
            b_at < soon && c_at < soon,
            "B at {b_at:?}, C at {c_at:?}: the next hour"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_tenant_idle_longer_than_any_rule_remembers_is_forgotten() {
        let limiter = RateLimiter::builder(config()).start_at(start()).build();
        let (a, b) = (Tenant::new("a"), Tenant::new("b"));
        limiter.acquire_as(&a, Priority::Interactive).await.unwrap();
        tokio::time::advance(Duration::from_secs(HOUR + 1)).await;
        for _ in 0..64 {
            limiter.acquire_as(&b, Priority::Interactive).await.unwrap();
        }
        let tenants = limiter.tenants();
        assert_eq!(tenants.len(), 1, "{tenants:?}");
        assert_eq!(
            (tenants[0].tenant.as_ref(), tenants[0].served),
            (Some(&b), 64)
        );
        assert!(tenants[0].active);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]

        #[test]
        fn fair_queueing_breaks_no_rule_keeps_the_makespan_and_serves_the_least_served(
            weights in prop::collection::vec(1..4u32, 2..5),
            arrivals in (2..5usize).prop_flat_map(arrivals),
        ) {
            let arrivals: Vec<Arrival> = arrivals
                .into_iter()
                .map(|a| Arrival { tenant: a.tenant % weights.len(), ..a })
                .collect();
            let mut shares = FairShares::new().idle_after(Duration::ZERO);
            for (i, w) in weights.iter().enumerate() {
                shares = shares.weight(format!("t{i}"), *w);
            }
            let weights: HashMap<Option<Tenant>, u64> = weights
                .iter()
                .enumerate()
                .map(|(i, w)| (Some(Tenant::new(format!("t{i}"))), u64::from(*w)))
                .collect();
            let (mixed, limiter) = run(shares.clone(), &arrivals);
            assert_rules_hold(&mixed);
            assert_fair(&limiter.queue_log(), &weights);
            // One priority: the order of the two priorities (interactive first within a
            // tenant, fairness among tenants, against interactive first everywhere) decides
            // which work meets the background reserve, and so may move the makespan.
            let interactive: Vec<Arrival> = arrivals
                .iter()
                .map(|a| Arrival { priority: Priority::Interactive, ..a.clone() })
                .collect();
            let (fair, limiter) = run(shares, &interactive);
            let (fifo, _) = run(FairShares::off(), &interactive);
            assert_rules_hold(&fair);
            assert_rules_hold(&fifo);
            // Work-conserving: the last permit goes when a single queue's does.
            prop_assert_eq!(fair.iter().max(), fifo.iter().max());
            assert_fair(&limiter.queue_log(), &weights);
        }

        #[test]
        fn protected_shares_break_no_rule_and_serve_everyone(
            idle_after in 1..30u64,
            arrivals in (2..5usize).prop_flat_map(arrivals),
        ) {
            let shares = FairShares::new().idle_after(Duration::from_secs(idle_after));
            let (released, limiter) = run(shares, &arrivals);
            assert_rules_hold(&released);
            let served: u64 = limiter.tenants().iter().map(|t| t.served).sum();
            prop_assert_eq!(served, arrivals.len() as u64);
        }
    }
}
