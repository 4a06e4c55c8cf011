//! The journal of one process's own charges in Redis, so that a failover that lost them
//! (asynchronous replication: the promoted replica lacks the primary's last writes) cannot
//! make the application's processes admit too many.
//!
//! Each backend has a random id and counts the charges the script confirmed; the script
//! keeps, per id, the count it holds (`<prefix>:{<app>}:p:<id>`, in the application's hash
//! slot). When a decision finds the server holding fewer than the process was told of, the
//! server lost some: the process re-asserts the instants of the missing ones still within
//! the longest rule (idempotent: the count moves up to what it was told of), every decision
//! is held briefly so that the other processes re-assert theirs first, and it decides again.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::script::micros_ceil;

/// One process's charges; see the module's documentation.
#[derive(Debug)]
pub(crate) struct Journal {
    id: String,
    /// How long a charge can matter to a rule, µs.
    horizon: u64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Charges the script confirmed (the last one's sequence number).
    told: u64,
    /// `(sequence, instant in µs)` of the charges within the horizon of the newest.
    entries: VecDeque<(u64, u64)>,
}

impl Journal {
    /// A journal with a fresh id, keeping charges for `horizon`.
    pub(crate) fn new(horizon: Duration) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        // Random bits too: containers often all run as pid 1, and two processes sharing an
        // id would share one count (and neither would see the other's losses).
        let random = {
            let mut hasher = RandomState::new().build_hasher();
            hasher.write_u128(nanos);
            hasher.finish()
        };
        let id = format!(
            "{:x}-{:x}-{:x}-{random:016x}",
            std::process::id(),
            nanos,
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        Self {
            id,
            horizon: micros_ceil(horizon),
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The charges the script confirmed.
    pub(crate) fn told(&self) -> u64 {
        self.state().told
    }

    /// `count` charges confirmed at `instant` (µs since the epoch, the script's clock), after
    /// which the server holds `held` of this process's charges.
    ///
    /// `held` may exceed what the process was told of: a decision whose reply was lost (a
    /// timeout, a cut connection, a cancelled caller) charged on the server, and its request
    /// was never sent. The journal takes the server's count, numbering the new charges up
    /// to it, so that the next failover's loss is still seen as one (a server ahead by such
    /// phantoms would otherwise hide as many lost charges).
    pub(crate) fn record(&self, count: u64, instant: i64, held: u64) {
        let instant = u64::try_from(instant).unwrap_or(0);
        let mut state = self.state();
        let told = state.told.saturating_add(count).max(held);
        for sequence in told - count + 1..=told {
            state.entries.push_back((sequence, instant));
        }
        state.told = told;
        if count == 0 {
            return;
        }
        let oldest = instant.saturating_sub(self.horizon);
        while state.entries.front().is_some_and(|&(_, at)| at < oldest) {
            state.entries.pop_front();
        }
    }

    /// What the process was told of, and the instants of its charges after the first `held`
    /// (those a server holding only `held` lost), oldest first.
    pub(crate) fn since(&self, held: u64) -> (u64, Vec<u64>) {
        let state = self.state();
        let instants = state
            .entries
            .iter()
            .filter(|&&(sequence, _)| sequence > held)
            .map(|&(_, at)| at)
            .collect();
        (state.told, instants)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_charges_within_the_horizon_and_answers_what_a_server_lost() {
        let journal = Journal::new(Duration::from_secs(10));
        journal.record(2, 1_000_000, 2);
        journal.record(0, 2_000_000, 2);
        journal.record(1, 5_000_000, 3);
        assert_eq!(journal.told(), 3);
        assert_eq!(journal.since(1), (3, vec![1_000_000, 5_000_000]));
        // 12 s later the first two are beyond the horizon: forgotten, still counted.
        journal.record(1, 13_000_000, 4);
        assert_eq!(journal.told(), 4);
        assert_eq!(journal.since(0), (4, vec![5_000_000, 13_000_000]));
        assert_eq!(journal.since(4), (4, vec![]));
        assert_ne!(journal.id(), Journal::new(Duration::ZERO).id());
    }

    #[test]
    fn takes_the_servers_count_when_a_lost_reply_charged_there() {
        let journal = Journal::new(Duration::from_secs(10));
        journal.record(1, 1_000_000, 1);
        // A decision charged on the server and its reply was lost: the next one finds the
        // server one ahead.
        journal.record(1, 2_000_000, 3);
        assert_eq!(journal.told(), 3);
        // A server that then loses the last charge (held 2) is seen to have lost it.
        assert_eq!(journal.since(2), (3, vec![2_000_000]));
        // A refusal reports the count too.
        journal.record(0, 3_000_000, 4);
        assert_eq!(journal.since(3), (4, vec![]));
    }
}
