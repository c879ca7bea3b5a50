//! What publishers and subscribers remember of seqs: [`SeqBits`], a growable set of them, and
//! [`Deliveries`], one subscriber's count of what it received (new, duplicate or corrupt),
//! from which what it lost is worked out at the end.
//!
//! Invariant: per subscriber and publisher, a seq is delivered at most once; a second delivery
//! of it counts as a duplicate, never as delivered.

use crate::pubsub::publication::{Message, decode_publication};

/// Largest seq a subscriber accepts: a corrupt seq must not grow a [`SeqBits`] without bound.
const MAX_SEQ: u64 = 1 << 40;

/// A growable set of sequence numbers, one bit each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqBits(Vec<u64>);

impl SeqBits {
    /// Adds `seq`; whether it was new.
    pub fn insert(&mut self, seq: u64) -> bool {
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if word >= self.0.len() {
            // Doubling keeps the growth amortised: a publisher's seqs arrive in order.
            let len = (word + 1).max(self.0.len() * 2);
            self.0.resize(len, 0);
        }
        let new = self.0[word] & bit == 0;
        self.0[word] |= bit;
        new
    }

    /// Whether `seq` is in the set.
    pub fn contains(&self, seq: u64) -> bool {
        self.0
            .get((seq / 64) as usize)
            .is_some_and(|w| w & (1 << (seq % 64)) != 0)
    }

    /// Seqs in the set.
    pub fn len(&self) -> u64 {
        self.0.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }

    /// Seqs in `self` that are not in `other`.
    pub fn count_missing_from(&self, other: &SeqBits) -> u64 {
        self.0
            .iter()
            .enumerate()
            .map(|(i, w)| u64::from((w & !other.0.get(i).copied().unwrap_or(0)).count_ones()))
            .sum()
    }

    /// Adds every seq of `other`.
    pub fn union_with(&mut self, other: &SeqBits) {
        if other.0.len() > self.0.len() {
            self.0.resize(other.0.len(), 0);
        }
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= b;
        }
    }
}

/// `into[i] |= from[i]` for every publisher `i`.
pub(crate) fn merge_seq_sets(into: &mut Vec<SeqBits>, from: Vec<SeqBits>) {
    if from.len() > into.len() {
        into.resize_with(from.len(), SeqBits::default);
    }
    for (a, b) in into.iter_mut().zip(&from) {
        a.union_with(b);
    }
}

/// One subscriber's bookkeeping of what it received.
#[derive(Debug, Clone)]
pub struct Deliveries {
    /// Per publisher: the seqs delivered.
    seen: Vec<SeqBits>,
    payload_len: usize,
    /// Unique valid deliveries of measured publishes.
    pub delivered: u64,
    /// Deliveries of a publisher+seq already delivered.
    pub duplicates: u64,
    /// Deliveries whose bytes are not what was published.
    pub corrupt: u64,
    /// The first duplicate or corrupt delivery, described.
    pub first_problem: Option<String>,
}

/// What [`Deliveries::record`] made of one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// New and intact; its header.
    New(Message),
    /// Already delivered.
    Duplicate,
    /// Not what was published.
    Corrupt,
}

impl Deliveries {
    /// Bookkeeping for publications from `publishers` connections with `payload_len` bytes.
    pub fn new(publishers: usize, payload_len: usize) -> Deliveries {
        Deliveries {
            seen: vec![SeqBits::default(); publishers],
            payload_len,
            delivered: 0,
            duplicates: 0,
            corrupt: 0,
            first_problem: None,
        }
    }

    /// Checks and counts the data of one delivery.
    pub fn record(&mut self, data: &[u8]) -> Delivery {
        let msg = match decode_publication(data, self.payload_len) {
            Ok(msg) => msg,
            Err(why) => return self.corrupt(why),
        };
        let Some(seen) = self.seen.get_mut(msg.publisher as usize) else {
            return self.corrupt(format!("unknown publisher {}", msg.publisher));
        };
        if msg.seq > MAX_SEQ {
            return self.corrupt(format!("seq {} out of range", msg.seq));
        }
        if !seen.insert(msg.seq) {
            self.duplicates += 1;
            self.first_problem.get_or_insert_with(|| {
                format!(
                    "publisher {} seq {} delivered twice",
                    msg.publisher, msg.seq
                )
            });
            return Delivery::Duplicate;
        }
        if msg.measured {
            self.delivered += 1;
        }
        Delivery::New(msg)
    }

    /// Counts a delivery that is not what was published.
    pub fn corrupt(&mut self, why: String) -> Delivery {
        self.corrupt += 1;
        self.first_problem.get_or_insert(why);
        Delivery::Corrupt
    }

    /// Publishes answered OK (`published_ok`, per publisher) this subscriber never received.
    pub fn lost(&self, published_ok: &[SeqBits]) -> u64 {
        let empty = SeqBits::default();
        published_ok
            .iter()
            .enumerate()
            .map(|(i, ok)| ok.count_missing_from(self.seen.get(i).unwrap_or(&empty)))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pubsub::publication::MESSAGE_HEADER_LEN;
    use crate::pubsub::publication::tests::{message, publication};
    use ringrpc_protocol::TopicRef;

    #[test]
    fn seq_bits_count_what_is_missing() {
        let mut ok = SeqBits::default();
        let mut seen = SeqBits::default();
        for seq in [1, 2, 3, 64, 65, 1000] {
            assert!(ok.insert(seq));
        }
        assert!(!ok.insert(3));
        assert_eq!(ok.len(), 6);
        for seq in [1, 3, 65] {
            seen.insert(seq);
        }
        assert!(seen.contains(65) && !seen.contains(64) && !seen.contains(1 << 30));
        assert_eq!(ok.count_missing_from(&seen), 3);
        assert_eq!(seen.count_missing_from(&ok), 0);
        let mut all = seen.clone();
        all.union_with(&ok);
        assert_eq!(all, ok);
        assert!(SeqBits::default().is_empty() && !ok.is_empty());
    }

    #[test]
    fn deliveries_count_duplicates_losses_and_corruption() {
        let mut d = Deliveries::new(2, 8);
        let data = |p, s| {
            let bytes = publication(&message(p, s), 8);
            TopicRef::parse(&bytes).unwrap().data.to_vec()
        };
        assert_eq!(d.record(&data(0, 1)), Delivery::New(message(0, 1)));
        assert_eq!(d.record(&data(1, 1)), Delivery::New(message(1, 1)));
        assert_eq!(d.record(&data(0, 2)), Delivery::New(message(0, 2)));
        assert_eq!(d.record(&data(0, 1)), Delivery::Duplicate);
        // Publisher 2 does not exist in a 2-publisher run.
        assert_eq!(d.record(&data(2, 1)), Delivery::Corrupt);
        let mut flipped = data(1, 2);
        flipped[MESSAGE_HEADER_LEN] ^= 0xff;
        assert_eq!(d.record(&flipped), Delivery::Corrupt);
        assert_eq!((d.delivered, d.duplicates, d.corrupt), (3, 1, 2));
        assert!(d.first_problem.as_deref().unwrap().contains("twice"));

        // Answered OK: publisher 0 seqs 1..=3, publisher 1 seqs 1..=2.
        let mut ok = vec![SeqBits::default(), SeqBits::default()];
        for s in 1..=3 {
            ok[0].insert(s);
        }
        for s in 1..=2 {
            ok[1].insert(s);
        }
        assert_eq!(d.lost(&ok), 2, "0/3 and 1/2 never arrived intact");

        // Unmeasured (warmup) deliveries are checked but not counted as delivered.
        let warm = Message {
            measured: false,
            ..message(1, 9)
        };
        let bytes = publication(&warm, 8);
        let topic = TopicRef::parse(&bytes).unwrap();
        assert_eq!(d.record(topic.data), Delivery::New(warm));
        assert_eq!(d.delivered, 3);
    }

    #[test]
    fn seq_sets_merge_per_publisher() {
        let mut into = vec![SeqBits::default()];
        into[0].insert(1);
        let mut b = SeqBits::default();
        b.insert(2);
        merge_seq_sets(&mut into, vec![SeqBits::default(), b.clone()]);
        assert_eq!(into.len(), 2);
        assert!(into[0].contains(1) && into[1] == b);
    }
}
