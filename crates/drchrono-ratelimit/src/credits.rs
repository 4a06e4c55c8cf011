//! [`Credits`]: admissions granted in advance, under [`LocalLimiter`](crate::LocalLimiter)'s
//! lock, and taken without it while the budget is far from every limit.
//!
//! A decision under the lock knows how many more requests every rule admits at any later
//! instant (at the same offset between the clocks): the headroom
//! ([`Policy::headroom`](crate::algorithm::Policy::headroom)). It grants that many credits
//! (at most [`SLOTS`] per shard), spread over [`SHARDS`] shards, each a grant on its own
//! cache line with its own slots. A request takes one from its thread's shard (by the
//! address of its stack: threads tend to find different shards, so that the cores do not
//! pass one line back and forth), or from another if that one is empty: a compare-and-swap,
//! and its instant written into the credit's slot. It never waits and takes no lock.
//!
//! The instants taken are charged under the lock, in order, at two moments:
//! - before every decision under the lock (and every other operation on the state), which
//!   first revokes what is left, so that it decides on the exact state: the state it would
//!   be had every credited request been charged under the lock at its instant;
//! - when a taker finds the credits running low and the lock free ([`Take::Low`]): it
//!   charges those taken so far and extends the grant by the headroom that leaves, without
//!   revoking anything, so that the other takers never find the credits empty while the
//!   budget is far from its limits.
//!
//! Each credit is an admission the lock would have made, so the core's exactness is
//! untouched.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::time::Reading;

/// The most credits of one shard outstanding at once: granted and not yet charged under
/// the lock.
pub(crate) const SLOTS: u32 = 128;

/// The shards the credits are spread over: more than the cores that usually take them at
/// once, so that two threads seldom share one.
pub(crate) const SHARDS: usize = 4;

/// The word the credits are taken from: a generation (32 bits), then the credits granted
/// and the credits taken since the generation began, each counted modulo 2^16. A taker
/// adds one to the credits taken (never past those granted); the lock's holder extends the
/// grant, or revokes it by starting a new generation with none.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Word(u64);

impl Word {
    fn new(generation: u32, granted: u32, taken: u32) -> Self {
        Self(
            u64::from(generation) << 32
                | u64::from(granted & 0xffff) << 16
                | u64::from(taken & 0xffff),
        )
    }

    fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }

    fn granted(self) -> u32 {
        (self.0 >> 16) as u32 & 0xffff
    }

    fn taken(self) -> u32 {
        self.0 as u32 & 0xffff
    }

    /// Credits granted and not yet taken.
    fn left(self) -> u32 {
        self.granted().wrapping_sub(self.taken()) & 0xffff
    }
}

/// The grant, on its own cache line: the line every credit's compare-and-swap writes.
#[repr(align(128))]
struct Grant {
    word: AtomicU64,
    /// The granting reading's offset between the clocks ([`Reading::offset`]): a credit is
    /// for readings at that offset only (a step of the wall clock decides under the lock).
    offset: AtomicU64,
    /// The granting reading's monotonic instant: no credit is charged earlier.
    floor: AtomicU64,
}

/// What taking a credit gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Take {
    /// None left (at this offset): decide under the lock.
    Empty,
    /// Taken.
    Taken,
    /// Taken, and it left half the slots' worth of credits: the taker should
    /// [`extend`](Credits::extend) the grant if the lock is free.
    Low,
}

/// One shard of the credits: a grant and its slots.
struct Shard {
    grant: Grant,
    /// By the order credits were taken, modulo their number (a power of two): the monotonic
    /// instant charged, plus one (0: not yet written, or charged).
    slots: Box<[AtomicU64]>,
}

/// The lock's holder's side of a shard: whether its grant is live (granted, and not
/// revoked since), and how many of its credits taken were charged (modulo 2^16).
#[derive(Debug, Default)]
struct ShardCharged {
    live: bool,
    count: u32,
}

impl Shard {
    /// Room for as many credits outstanding as the power of two at or above `tightest`
    /// (the tightest rule's maximum; more are never granted), at most [`SLOTS`].
    fn new(tightest: u32) -> Self {
        let slots = tightest.clamp(1, SLOTS).next_power_of_two();
        Self {
            grant: Grant {
                word: AtomicU64::new(0),
                offset: AtomicU64::new(0),
                floor: AtomicU64::new(0),
            },
            slots: (0..slots).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn slot(&self, index: u32) -> &AtomicU64 {
        // A power of two divides 2^16: the index follows the counters through their wrap.
        &self.slots[index as usize & (self.slots.len() - 1)]
    }

    /// Takes a credit for a request at `now`, if one is left at `now`'s offset; records
    /// the instant charged: `now`, or the grant's own if `now` is earlier.
    #[inline]
    fn take(&self, now: Reading) -> Take {
        let grant = &self.grant;
        // An instant past the year 2554 cannot be stored plus one: the lock decides it.
        if now.mono == u64::MAX {
            return Take::Empty;
        }
        let mut word = Word(grant.word.load(Ordering::Acquire));
        loop {
            let left = word.left();
            if left == 0 {
                return Take::Empty;
            }
            // Both were written before the word that granted them (release) and are read
            // after it (acquire). A newer grant's, read here (both loads must stay
            // acquire), was written after a revocation that changed the word's generation:
            // the swap below then fails. The generation is what makes a pair of them from
            // two grants harmless.
            let offset = grant.offset.load(Ordering::Acquire);
            let floor = grant.floor.load(Ordering::Acquire);
            if offset != now.offset() {
                return Take::Empty;
            }
            let instant = now.mono.max(floor).saturating_add(1);
            let taken = word.taken();
            let next = Word::new(word.generation(), word.granted(), taken.wrapping_add(1));
            match grant.word.compare_exchange_weak(
                word.0,
                next.0,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    // The lock's holder waits for this store: nothing stands between the two.
                    self.slot(taken).store(instant, Ordering::Release);
                    // Only the taker that crosses the mark extends: one at a time.
                    return if left - 1 == self.low_mark() {
                        Take::Low
                    } else {
                        Take::Taken
                    };
                }
                Err(current) => word = Word(current),
            }
        }
    }

    /// Credits granted and not yet charged (taken or not).
    fn outstanding(&self, charged: &ShardCharged) -> u32 {
        if !charged.live {
            return 0;
        }
        let word = Word(self.grant.word.load(Ordering::Relaxed));
        word.granted().wrapping_sub(charged.count) & 0xffff
    }

    /// At how many credits left the taker that leaves them extends the grant.
    fn low_mark(&self) -> u32 {
        self.slots.len() as u32 / 2
    }

    /// Appends to `instants` those of the credits taken and not yet charged, in the order
    /// taken, and returns their offset between the clocks; with `revoke`, first revokes the
    /// credits left. Called with the lock held (the only writer of the grant, with the
    /// takers).
    fn collect(&self, charged: &mut ShardCharged, revoke: bool, instants: &mut Vec<u64>) -> u64 {
        if !charged.live {
            // Nothing granted since the last revocation, so nothing can be taken.
            return 0;
        }
        let grant = &self.grant;
        let mut word = Word(grant.word.load(Ordering::Acquire));
        if revoke {
            let next = Word::new(word.generation().wrapping_add(1), 0, 0);
            word = Word(grant.word.swap(next.0, Ordering::AcqRel));
            charged.live = false;
        }
        let mut index = charged.count;
        while index & 0xffff != word.taken() {
            instants.push(wait_written(self.slot(index)) - 1);
            index = index.wrapping_add(1);
        }
        charged.count = if revoke { 0 } else { index & 0xffff };
        grant.offset.load(Ordering::Relaxed)
    }

    /// Grants `headroom` credits (at most the slots) for readings at `now`'s offset, from
    /// `now` on, unless a grant is live. Called with the lock held, after a revoking
    /// [`collect`](Self::collect) and with its instants charged.
    fn grant(&self, charged: &mut ShardCharged, headroom: u32, now: Reading) {
        let room = headroom.min(self.slots.len() as u32);
        // An instant past the year 2554 cannot be stored plus one.
        if charged.live || now.mono == u64::MAX {
            return;
        }
        let grant = &self.grant;
        let word = Word(grant.word.load(Ordering::Relaxed));
        grant.offset.store(now.offset(), Ordering::Release);
        grant.floor.store(now.mono, Ordering::Release);
        let fresh = Word::new(word.generation(), room, 0);
        grant.word.store(fresh.0, Ordering::Release);
        *charged = ShardCharged {
            live: true,
            count: 0,
        };
    }

    /// Extends the live grant, when `now` is at its offset, so that its credits not yet
    /// charged come to `headroom` (at most the slots). Called with the lock held, after
    /// a [`collect`](Self::collect) and with its instants charged.
    fn extend(&self, charged: &ShardCharged, headroom: u32, now: Reading) {
        let room = headroom.min(self.slots.len() as u32);
        let grant = &self.grant;
        if !charged.live || grant.offset.load(Ordering::Relaxed) != now.offset() {
            return;
        }
        let granted = charged.count.wrapping_add(room);
        let mut word = Word(grant.word.load(Ordering::Acquire));
        loop {
            // Those not yet charged are at most the headroom at the last grant less what
            // was charged since, which is at most the headroom now: an extension never
            // shrinks the grant.
            let outstanding = word.granted().wrapping_sub(charged.count) & 0xffff;
            if room <= outstanding {
                return;
            }
            let next = Word::new(word.generation(), granted, word.taken());
            match grant.word.compare_exchange_weak(
                word.0,
                next.0,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(current) => word = Word(current),
            }
        }
    }
}

/// Credits granted under the lock and taken without it, over [`SHARDS`] shards.
pub(crate) struct Credits {
    shards: [Shard; SHARDS],
}

/// The lock's holder's side of the credits, per shard.
#[derive(Debug, Default)]
pub(crate) struct Charged {
    shards: [ShardCharged; SHARDS],
}

/// The shard a thread tries first: by where its stack lies. Threads' stacks lie megabytes
/// apart (tokio's workers' 2 MiB each), and one thread's moves by far less. A heuristic
/// only: any thread may take from any shard.
#[inline]
fn home_shard() -> usize {
    let marker = 0_u8;
    // The megabytes, mixed (Fibonacci hashing): stacks 2, 8 or 64 MiB apart spread alike.
    let megabytes = (std::ptr::addr_of!(marker).addr() >> 20) as u64;
    (megabytes.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - SHARDS.trailing_zeros())) as usize
}

impl Credits {
    /// Room in each shard for as many credits outstanding as the power of two at or above
    /// `tightest` (the tightest rule's maximum; more are never granted), at most
    /// [`SLOTS`].
    pub(crate) fn new(tightest: u32) -> Self {
        Self {
            shards: std::array::from_fn(|_| Shard::new(tightest)),
        }
    }

    /// Takes a credit for a request at `now` from this thread's shard, or from another,
    /// if one is left at `now`'s offset (see [`Shard::take`]).
    #[inline]
    pub(crate) fn take(&self, now: Reading) -> Take {
        let home = home_shard();
        for i in 0..SHARDS {
            match self.shards[(home + i) % SHARDS].take(now) {
                Take::Empty => {}
                took => return took,
            }
        }
        Take::Empty
    }

    /// Appends to `instants` those of the credits taken and not yet charged, sorted, and
    /// returns their offset between the clocks; with `revoke`, first revokes the credits
    /// left. Called with the lock held.
    pub(crate) fn collect(
        &self,
        charged: &mut Charged,
        revoke: bool,
        instants: &mut Vec<u64>,
    ) -> u64 {
        let start = instants.len();
        let mut offset = 0;
        for (shard, charged) in self.shards.iter().zip(&mut charged.shards) {
            if charged.live {
                // Every live shard was granted at one offset.
                offset = shard.collect(charged, revoke, instants);
            }
        }
        instants[start..].sort_unstable();
        offset
    }

    /// Grants `headroom` credits for readings at `now`'s offset, from `now` on, spread
    /// evenly over the shards, unless a grant is live. Called with the lock held, after a
    /// revoking [`collect`](Self::collect) and with its instants charged.
    pub(crate) fn grant(&self, charged: &mut Charged, headroom: u32, now: Reading) {
        if headroom == 0 || charged.shards.iter().any(|shard| shard.live) {
            return;
        }
        for (i, (shard, charged)) in self.shards.iter().zip(&mut charged.shards).enumerate() {
            shard.grant(charged, share(headroom, i), now);
        }
    }

    /// Tops the live grant up, when `now` is at its offset, so that the credits not yet
    /// charged come to `headroom`, spread over the shards that have room. Called with the
    /// lock held, after a [`collect`](Self::collect) and with its instants charged.
    pub(crate) fn extend(&self, charged: &Charged, headroom: u32, now: Reading) {
        let outstanding: u32 = self
            .shards
            .iter()
            .zip(&charged.shards)
            .map(|(shard, charged)| shard.outstanding(charged))
            .sum();
        let Some(more) = headroom.checked_sub(outstanding).filter(|&more| more > 0) else {
            return;
        };
        for (i, (shard, charged)) in self.shards.iter().zip(&charged.shards).enumerate() {
            let target = shard.outstanding(charged) + share(more, i);
            shard.extend(charged, target, now);
        }
    }
}

/// Shard `i`'s share of `total` spread evenly over the shards.
fn share(total: u32, i: usize) -> u32 {
    let shards = SHARDS as u32;
    total / shards + u32::from((i as u32) < total % shards)
}

/// The slot's value once its taker wrote it (the instruction after its swap), and the slot
/// cleared for a later credit.
fn wait_written(slot: &AtomicU64) -> u64 {
    let mut spins = 0_u32;
    loop {
        let value = slot.swap(0, Ordering::Acquire);
        if value != 0 {
            return value;
        }
        // The taker was preempted between its swap and its store.
        spins += 1;
        if spins < 64 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(mono: u64) -> Reading {
        Reading { mono, wall: mono }
    }

    /// Revokes, and returns the instants charged.
    fn revoke(credits: &Credits, charged: &mut Charged) -> Vec<u64> {
        let mut instants = Vec::new();
        credits.collect(charged, true, &mut instants);
        instants
    }

    /// Revokes one shard, and returns the instants charged, sorted.
    fn revoke_shard(shard: &Shard, charged: &mut ShardCharged) -> Vec<u64> {
        let mut instants = Vec::new();
        shard.collect(charged, true, &mut instants);
        instants.sort_unstable();
        instants
    }

    #[test]
    fn credits_are_taken_up_to_the_grant_and_revoked_in_order() {
        let credits = Shard::new(8);
        let mut charged = ShardCharged::default();
        assert_eq!(credits.take(at(10)), Take::Empty, "nothing granted yet");
        credits.grant(&mut charged, 3, at(100));
        assert_eq!(credits.take(at(120)), Take::Taken);
        // Read before the grant: charged at the grant's instant.
        assert_eq!(credits.take(at(90)), Take::Taken);
        assert_eq!(credits.take(at(110)), Take::Taken);
        assert_eq!(
            credits.take(at(130)),
            Take::Empty,
            "three granted, three taken"
        );
        assert_eq!(revoke_shard(&credits, &mut charged), [100, 110, 120]);
        // Revoked: nothing left, and nothing to revoke twice.
        assert_eq!(credits.take(at(140)), Take::Empty);
        assert!(revoke_shard(&credits, &mut charged).is_empty());
    }

    #[test]
    fn a_grant_is_bounded_by_its_slots_and_holds_for_its_offset_only() {
        let credits = Shard::new(2);
        let mut charged = ShardCharged::default();
        let stepped = Reading {
            mono: 100,
            wall: 5_100,
        };
        credits.grant(&mut charged, 1_000, stepped);
        assert_eq!(
            credits.take(at(100)),
            Take::Empty,
            "another offset: the lock"
        );
        let later = Reading {
            mono: 200,
            wall: 5_200,
        };
        // The taker that leaves half the slots' worth extends, and only that one.
        assert_eq!(credits.take(later), Take::Low);
        assert_eq!(credits.take(stepped), Take::Taken);
        assert_eq!(credits.take(stepped), Take::Empty, "two slots");
        let mut instants = Vec::new();
        assert_eq!(credits.collect(&mut charged, true, &mut instants), 5_000);
        // In the order taken: the sharded credits sort them all.
        assert_eq!(instants, [200, 100]);
    }

    #[test]
    fn an_extension_charges_those_taken_and_tops_up_the_rest() {
        let credits = Shard::new(8);
        let mut charged = ShardCharged::default();
        credits.grant(&mut charged, 8, at(100));
        for t in 0..3 {
            assert_eq!(credits.take(at(100 + t)), Take::Taken);
        }
        assert_eq!(credits.take(at(103)), Take::Low, "four of eight left");
        let mut instants = Vec::new();
        credits.collect(&mut charged, false, &mut instants);
        assert_eq!(instants, [100, 101, 102, 103]);
        // Four still granted and not yet charged: a headroom of six tops them up by two.
        credits.extend(&charged, 6, at(104));
        for t in 0..6 {
            assert_ne!(credits.take(at(104 + t)), Take::Empty);
        }
        assert_eq!(credits.take(at(110)), Take::Empty);
        // A headroom below what is outstanding takes nothing back.
        credits.extend(&charged, 1, at(110));
        assert_eq!(credits.take(at(110)), Take::Empty);
        assert_eq!(
            revoke_shard(&credits, &mut charged),
            [104, 105, 106, 107, 108, 109]
        );
    }

    #[test]
    fn the_counters_wrap_without_losing_a_credit() {
        let credits = Shard::new(4);
        let mut charged = ShardCharged::default();
        credits.grant(&mut charged, 4, at(1));
        let mut instants = Vec::new();
        for t in 0..70_000_u64 {
            assert_ne!(credits.take(at(t + 1)), Take::Empty, "at {t}");
            if t % 3 == 2 {
                instants.clear();
                credits.collect(&mut charged, false, &mut instants);
                assert_eq!(instants, [t - 1, t, t + 1]);
                credits.extend(&charged, 4, at(t + 1));
            }
        }
    }

    #[test]
    fn a_grant_is_spread_over_the_shards_and_any_taker_may_empty_them_all() {
        let credits = Credits::new(64);
        let mut charged = Charged::default();
        credits.grant(&mut charged, 10, at(100));
        let shares: Vec<u32> = (0..SHARDS).map(|i| share(10, i)).collect();
        assert_eq!(shares, [3, 3, 2, 2]);
        // One thread takes every credit of every shard, then none.
        for t in 0..10 {
            assert_ne!(credits.take(at(100 + t)), Take::Empty, "credit {t}");
        }
        assert_eq!(credits.take(at(110)), Take::Empty);
        assert_eq!(
            revoke(&credits, &mut charged),
            (100..110).collect::<Vec<_>>()
        );
    }

    #[test]
    fn an_extension_tops_the_shards_up_to_the_headroom() {
        let credits = Credits::new(64);
        let mut charged = Charged::default();
        credits.grant(&mut charged, 8, at(100));
        for t in 0..5 {
            assert_ne!(credits.take(at(100 + t)), Take::Empty);
        }
        let mut instants = Vec::new();
        credits.collect(&mut charged, false, &mut instants);
        assert_eq!(instants, [100, 101, 102, 103, 104]);
        // Three left outstanding; a headroom of 20 adds 17 over the shards.
        credits.extend(&charged, 20, at(105));
        let mut taken = 0;
        while credits.take(at(105)) != Take::Empty {
            taken += 1;
        }
        assert_eq!(taken, 20);
    }

    #[test]
    fn many_takers_take_each_credit_once() {
        let credits = Credits::new(SLOTS);
        let mut charged = Charged::default();
        let mut total = 0;
        for round in 0..50_u64 {
            credits.grant(&mut charged, SLOTS, at(round * 1_000));
            let won: usize = std::thread::scope(|scope| {
                let takers: Vec<_> = (0..4)
                    .map(|i| {
                        let credits = &credits;
                        scope.spawn(move || {
                            (0..100)
                                .filter(|j| {
                                    credits.take(at(round * 1_000 + i * 100 + j)) != Take::Empty
                                })
                                .count()
                        })
                    })
                    .collect();
                takers.into_iter().map(|t| t.join().unwrap()).sum()
            });
            let taken = revoke(&credits, &mut charged);
            assert_eq!(won, SLOTS as usize);
            assert_eq!(taken.len(), won);
            assert!(taken.windows(2).all(|w| w[0] <= w[1]));
            total += won;
        }
        assert_eq!(total, 50 * SLOTS as usize);
    }

    #[test]
    fn extensions_and_revocations_racing_takers_lose_no_credit_and_count_none_twice() {
        let credits = Credits::new(16);
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let takers: Vec<_> = (0..3)
                .map(|_| {
                    let (credits, stop) = (&credits, &stop);
                    scope.spawn(move || {
                        let mut won = 0_usize;
                        while !stop.load(Ordering::Relaxed) {
                            won += usize::from(credits.take(at(7)) != Take::Empty);
                        }
                        won
                    })
                })
                .collect();
            let mut charged = Charged::default();
            let mut instants = Vec::new();
            let mut round = 0_u64;
            // Until the takers took plenty (they start after the first rounds).
            while instants.len() < 100_000 {
                // Mostly extensions, as a taker finding the credits low does; sometimes a
                // revocation, as a decision under the lock does.
                round += 1;
                let revoking = round.is_multiple_of(5);
                credits.collect(&mut charged, revoking, &mut instants);
                credits.grant(&mut charged, 16, at(7));
                credits.extend(&charged, 16, at(7));
            }
            stop.store(true, Ordering::Relaxed);
            let won: usize = takers.into_iter().map(|t| t.join().unwrap()).sum();
            credits.collect(&mut charged, true, &mut instants);
            assert_eq!(won, instants.len());
        });
    }
}
