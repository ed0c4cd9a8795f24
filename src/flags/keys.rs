//! Sets of context values (individual targets, segment members), looked up by a
//! borrowed `&str` on every evaluation.
//!
//! The hasher is a multiply-rotate one in the style of rustc's FxHash: several times
//! faster than SipHash on short keys. Flooding is not a concern: the tables are
//! built from configuration, and a request can only look keys up, never insert.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A fast, non-keyed hasher for short strings.
#[derive(Default, Clone, Copy)]
pub struct KeyHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl KeyHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for KeyHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, byte: u8) {
        self.add(byte as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Context value → what it is mapped to (a variant index, a position).
pub type KeyMap<V> = HashMap<Box<str>, V, BuildHasherDefault<KeyHasher>>;

/// A set of context values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySet(KeyMap<()>);

impl KeySet {
    pub fn contains(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The members in a stable (sorted) order, for export and fingerprints.
    pub fn sorted(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self.0.keys().map(|k| &**k).collect();
        keys.sort_unstable();
        keys
    }
}

impl<S: AsRef<str>> FromIterator<S> for KeySet {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        Self(iter.into_iter().map(|k| (k.as_ref().into(), ())).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_exactly_its_members() {
        let set: KeySet = (0..1000).map(|i| format!("user-{i}")).collect();
        assert_eq!(set.len(), 1000);
        assert!((0..1000).all(|i| set.contains(&format!("user-{i}"))));
        assert!(!set.contains("user-1000") && !set.contains("") && !set.contains("user-"));
    }

    #[test]
    fn keys_differing_past_a_word_hash_apart() {
        let mut a = KeyHasher::default();
        a.write(b"account-000000001");
        let mut b = KeyHasher::default();
        b.write(b"account-000000002");
        assert_ne!(a.finish(), b.finish());
    }
}
