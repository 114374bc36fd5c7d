//! The index logic of the AF_XDP rings, pure and unit-tested: one side of a
//! single-producer single-consumer ring of `size` entries (a power of two)
//! whose free-running `u32` producer and consumer indices live in memory
//! shared with the other side (the kernel).
//!
//! Each side keeps cached copies of both indices and reads the other
//! side's shared index only when its cache says the ring is full (producer)
//! or empty (consumer), as libxdp does. Indices wrap at `u32::MAX`; an
//! entry's slot is `index & (size - 1)`, and every distance between indices
//! is a wrapping subtraction, so the wrap is invisible as long as at most
//! `size` entries are outstanding (the producer never reserves past the
//! consumer's index plus `size`).
//!
//! The shared words are passed in as [`AtomicU32`]s: the producer
//! publishes with `Release` after writing the entries and reads the
//! consumer's index with `Acquire` (the consumer no longer reads the slots
//! it released); the consumer reads the producer's index with `Acquire`
//! before reading entries and publishes its own with `Release`.

use std::sync::atomic::{AtomicU32, Ordering};

/// The producer's side of a ring (the fill and TX rings in user space).
#[derive(Debug, Clone)]
pub struct ProducerIndex {
    size: u32,
    /// The next index to reserve (published or not).
    cached_prod: u32,
    /// The consumer's index plus `size`: reservations may go up to it.
    cached_limit: u32,
    /// The index last published.
    published: u32,
}

impl ProducerIndex {
    /// A producer starting at the shared indices' current values.
    pub fn new(size: u32, producer: &AtomicU32, consumer: &AtomicU32) -> Self {
        debug_assert!(size.is_power_of_two());
        let prod = producer.load(Ordering::Relaxed);
        Self {
            size,
            cached_prod: prod,
            cached_limit: consumer.load(Ordering::Acquire).wrapping_add(size),
            published: prod,
        }
    }

    /// Entries that can be reserved now without reading the consumer.
    fn cached_free(&self) -> u32 {
        self.cached_limit.wrapping_sub(self.cached_prod)
    }

    /// Free entries, reading the consumer's index when the cache shows
    /// fewer than `wanted`.
    pub fn free(&mut self, wanted: u32, consumer: &AtomicU32) -> u32 {
        let free = self.cached_free();
        if free >= wanted {
            return free;
        }
        self.cached_limit = consumer.load(Ordering::Acquire).wrapping_add(self.size);
        self.cached_free()
    }

    /// Reserves up to `wanted` entries; returns the first reserved index and
    /// how many were reserved (0 when the ring is full). The entries must
    /// be written before [`ProducerIndex::submit`] publishes them.
    pub fn reserve(&mut self, wanted: u32, consumer: &AtomicU32) -> (u32, u32) {
        let n = self.free(wanted, consumer).min(wanted);
        let start = self.cached_prod;
        self.cached_prod = self.cached_prod.wrapping_add(n);
        (start, n)
    }

    /// Publishes every reserved entry.
    pub fn submit(&mut self, producer: &AtomicU32) {
        if self.published != self.cached_prod {
            self.published = self.cached_prod;
            producer.store(self.published, Ordering::Release);
        }
    }

    /// The slot of `index`.
    pub fn slot(&self, index: u32) -> usize {
        (index & (self.size - 1)) as usize
    }
}

/// The consumer's side of a ring (the RX and completion rings in user
/// space).
#[derive(Debug, Clone)]
pub struct ConsumerIndex {
    size: u32,
    /// The producer's index last read.
    cached_prod: u32,
    /// The next index to peek.
    cached_cons: u32,
    /// The index last published (entries before it are released).
    released: u32,
}

impl ConsumerIndex {
    /// A consumer starting at the shared indices' current values.
    pub fn new(size: u32, producer: &AtomicU32, consumer: &AtomicU32) -> Self {
        debug_assert!(size.is_power_of_two());
        let cons = consumer.load(Ordering::Relaxed);
        Self {
            size,
            cached_prod: producer.load(Ordering::Acquire),
            cached_cons: cons,
            released: cons,
        }
    }

    /// Entries available to peek, reading the producer's index when the
    /// cache shows fewer than `wanted`.
    pub fn available(&mut self, wanted: u32, producer: &AtomicU32) -> u32 {
        let avail = self.cached_prod.wrapping_sub(self.cached_cons);
        if avail >= wanted {
            return avail;
        }
        self.cached_prod = producer.load(Ordering::Acquire);
        self.cached_prod.wrapping_sub(self.cached_cons)
    }

    /// Takes up to `wanted` entries; returns the first index and how many
    /// (0 when the ring is empty). The entries stay the consumer's until
    /// [`ConsumerIndex::release`].
    pub fn peek(&mut self, wanted: u32, producer: &AtomicU32) -> (u32, u32) {
        let n = self.available(wanted, producer).min(wanted);
        let start = self.cached_cons;
        self.cached_cons = self.cached_cons.wrapping_add(n);
        (start, n)
    }

    /// Entries peeked and not released yet.
    pub fn outstanding(&self) -> u32 {
        self.cached_cons.wrapping_sub(self.released)
    }

    /// Gives the oldest `n` peeked entries back to the producer (at most
    /// [`ConsumerIndex::outstanding`]; more is clamped).
    pub fn release(&mut self, n: u32, consumer: &AtomicU32) {
        let n = n.min(self.outstanding());
        if n > 0 {
            self.released = self.released.wrapping_add(n);
            consumer.store(self.released, Ordering::Release);
        }
    }

    /// The slot of `index`.
    pub fn slot(&self, index: u32) -> usize {
        (index & (self.size - 1)) as usize
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use proptest::prelude::*;

    use super::*;

    /// A ring in plain memory, both sides driven by the code under test.
    struct TestRing {
        producer: AtomicU32,
        consumer: AtomicU32,
        slots: Vec<u64>,
        prod: ProducerIndex,
        cons: ConsumerIndex,
    }

    impl TestRing {
        fn new(size: u32, start: u32) -> Self {
            let (producer, consumer) = (AtomicU32::new(start), AtomicU32::new(start));
            let prod = ProducerIndex::new(size, &producer, &consumer);
            let cons = ConsumerIndex::new(size, &producer, &consumer);
            Self {
                producer,
                consumer,
                slots: vec![u64::MAX; size as usize],
                prod,
                cons,
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Reserve up to n, write, and (when the flag says so) submit.
        Produce(u32, bool),
        Submit,
        Peek(u32),
        Release(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u32..20, any::<bool>()).prop_map(|(n, s)| Op::Produce(n, s)),
            Just(Op::Submit),
            (0u32..20).prop_map(Op::Peek),
            (0u32..20).prop_map(Op::Release),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Random produce/submit/peek/release sequences against a model:
        /// values come out in order, exactly once; the producer never
        /// overwrites an entry not released; wrap-around at u32::MAX (the
        /// start index is drawn close to it) changes nothing.
        #[test]
        fn ring_matches_a_fifo_model(
            size_log in 0u32..5,
            start in prop_oneof![Just(0u32), Just(u32::MAX), (u32::MAX - 40)..=u32::MAX, any::<u32>()],
            ops in proptest::collection::vec(op(), 0..200),
        ) {
            let size = 1u32 << size_log;
            let mut ring = TestRing::new(size, start);
            // Reserved, not yet submitted; submitted, not yet peeked;
            // peeked, not yet released.
            let mut reserved: VecDeque<u64> = VecDeque::new();
            let mut published: VecDeque<u64> = VecDeque::new();
            let mut peeked: VecDeque<u64> = VecDeque::new();
            let mut next = 0u64;
            for op in ops {
                match op {
                    Op::Produce(n, submit) => {
                        let in_use = (reserved.len() + published.len() + peeked.len()) as u32;
                        let (first, got) = ring.prod.reserve(n, &ring.consumer);
                        prop_assert_eq!(got, n.min(size - in_use), "reserve {} with {} in use", n, in_use);
                        for i in 0..got {
                            let slot = ring.prod.slot(first.wrapping_add(i));
                            ring.slots[slot] = next;
                            reserved.push_back(next);
                            next += 1;
                        }
                        if submit {
                            ring.prod.submit(&ring.producer);
                            published.extend(reserved.drain(..));
                        }
                    }
                    Op::Submit => {
                        ring.prod.submit(&ring.producer);
                        published.extend(reserved.drain(..));
                    }
                    Op::Peek(n) => {
                        let (first, got) = ring.cons.peek(n, &ring.producer);
                        prop_assert_eq!(got, n.min(published.len() as u32));
                        for i in 0..got {
                            let slot = ring.cons.slot(first.wrapping_add(i));
                            let want = published.pop_front().unwrap();
                            prop_assert_eq!(ring.slots[slot], want);
                            peeked.push_back(want);
                        }
                    }
                    Op::Release(n) => {
                        prop_assert_eq!(ring.cons.outstanding(), peeked.len() as u32);
                        ring.cons.release(n, &ring.consumer);
                        for _ in 0..n.min(peeked.len() as u32) {
                            peeked.pop_front();
                        }
                    }
                }
                // The shared words tell the other side exactly the model's
                // state.
                let published_idx = ring.producer.load(Ordering::Relaxed);
                let released_idx = ring.consumer.load(Ordering::Relaxed);
                prop_assert_eq!(
                    published_idx.wrapping_sub(released_idx),
                    (published.len() + peeked.len()) as u32
                );
                prop_assert!(published_idx.wrapping_sub(released_idx) <= size);
            }
        }
    }

    #[test]
    fn indices_wrap_at_u32_max() {
        let mut ring = TestRing::new(4, u32::MAX - 1);
        let (first, n) = ring.prod.reserve(4, &ring.consumer);
        assert_eq!((first, n), (u32::MAX - 1, 4));
        assert_eq!(ring.prod.slot(first), 2);
        assert_eq!(ring.prod.slot(first.wrapping_add(2)), 0);
        ring.prod.submit(&ring.producer);
        assert_eq!(ring.producer.load(Ordering::Relaxed), 2);
        // Full: nothing more until the consumer releases.
        assert_eq!(ring.prod.reserve(1, &ring.consumer).1, 0);
        assert_eq!(ring.cons.peek(10, &ring.producer), (u32::MAX - 1, 4));
        assert_eq!(
            ring.prod.reserve(1, &ring.consumer).1,
            0,
            "peeked is not released"
        );
        ring.cons.release(3, &ring.consumer);
        assert_eq!(ring.consumer.load(Ordering::Relaxed), 1);
        assert_eq!(ring.prod.reserve(5, &ring.consumer), (2, 3));
    }
}
