//! The contiguous watermark of delivered offsets, per partition.
//!
//! Every received record is registered; its ack marks it done. The offset that may be stored
//! (and so committed) is one past the longest run of done records from the oldest in flight:
//! never past a record still in flight, whatever order acks arrive in.

use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Default)]
struct Partition {
    generation: u64,
    /// offset → done
    in_flight: BTreeMap<i64, bool>,
}

/// Watermarks of every assigned partition.
#[derive(Debug, Default)]
pub struct Offsets {
    parts: HashMap<(String, i32), Partition>,
    next_generation: u64,
}

impl Offsets {
    /// Register a received record; returns the partition's generation to hand back on done.
    pub fn received(&mut self, topic: &str, partition: i32, offset: i64) -> u64 {
        let next = &mut self.next_generation;
        let p = self
            .parts
            .entry((topic.to_string(), partition))
            .or_insert_with(|| {
                *next += 1;
                Partition {
                    generation: *next,
                    in_flight: BTreeMap::new(),
                }
            });
        p.in_flight.insert(offset, false);
        p.generation
    }

    /// Mark a record done. Returns the last offset of the contiguous run of done records when
    /// the watermark moved: the offset to hand to `store_offset`, which commits it + 1 (the
    /// next to consume). Records of an older generation (the partition was revoked meanwhile)
    /// are ignored.
    pub fn done(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        generation: u64,
    ) -> Option<i64> {
        let p = self.parts.get_mut(&(topic.to_string(), partition))?;
        if p.generation != generation {
            return None;
        }
        if let Some(d) = p.in_flight.get_mut(&offset) {
            *d = true;
        }
        let mut last = None;
        while let Some((&o, &true)) = p.in_flight.first_key_value() {
            p.in_flight.remove(&o);
            last = Some(o);
        }
        last
    }

    /// Forget a revoked partition: acks of its records in flight will be ignored.
    pub fn revoke(&mut self, topic: &str, partition: i32) {
        self.parts.remove(&(topic.to_string(), partition));
    }

    /// Records registered and not yet done, over all partitions.
    pub fn in_flight(&self) -> usize {
        self.parts
            .values()
            .map(|p| p.in_flight.values().filter(|d| !**d).count())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_never_passes_an_offset_in_flight() {
        let mut o = Offsets::default();
        let g = o.received("t", 0, 10);
        o.received("t", 0, 11);
        o.received("t", 0, 12);
        assert_eq!(o.done("t", 0, 12, g), None, "10 and 11 still in flight");
        assert_eq!(o.done("t", 0, 11, g), None, "10 still in flight");
        assert_eq!(
            o.done("t", 0, 10, g),
            Some(12),
            "all three done: store 12, commit 13"
        );
        assert_eq!(o.in_flight(), 0);
    }

    #[test]
    fn partitions_are_independent_and_revocation_drops_late_acks() {
        let mut o = Offsets::default();
        let g0 = o.received("t", 0, 5);
        let g1 = o.received("t", 1, 7);
        assert_eq!(o.done("t", 1, 7, g1), Some(7));
        o.revoke("t", 0);
        assert_eq!(o.done("t", 0, 5, g0), None, "revoked");
        let g0b = o.received("t", 0, 5);
        assert_ne!(g0, g0b);
        assert_eq!(
            o.done("t", 0, 5, g0),
            None,
            "an ack from before the revocation"
        );
        assert_eq!(o.done("t", 0, 5, g0b), Some(5));
    }
}
