//! Sets and maps of context values (individual targets, segment members, `in`
//! clauses), looked up by a borrowed `&str` on every evaluation.
//!
//! A few values are compared one by one, length first (most clauses name two or
//! three values, and comparing is cheaper than hashing); more are hashed with a
//! multiply-rotate hasher in the style of rustc's FxHash, several times faster than
//! SipHash on short keys. Flooding is not a concern: the tables are built from
//! configuration, and a request can only look keys up, never insert.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Up to this many entries are scanned instead of hashed.
const SCAN_LIMIT: usize = 8;

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

/// Equality of short strings without a call into the C library: up to 16 bytes
/// are compared as two overlapping words.
#[inline]
pub fn same(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&s[at..at + 8]);
        u64::from_le_bytes(w)
    };
    let half = |s: &[u8], at: usize| {
        let mut w = [0u8; 4];
        w.copy_from_slice(&s[at..at + 4]);
        u32::from_le_bytes(w)
    };
    match n {
        0 => true,
        // Bytes 0, n/2 and n-1 are every byte of a string this short.
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..=7 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        _ => a == b,
    }
}

/// Context value → what it maps to (a variant index, in or out of a segment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMap<V> {
    Few(Box<[(Box<str>, V)]>),
    Many(HashMap<Box<str>, V, BuildHasherDefault<KeyHasher>>),
}

impl<V> Default for KeyMap<V> {
    fn default() -> Self {
        KeyMap::Few(Box::new([]))
    }
}

impl<V> KeyMap<V> {
    #[inline]
    pub fn get(&self, key: &str) -> Option<&V> {
        match self {
            KeyMap::Few(entries) => entries
                .iter()
                .find(|(k, _)| same(k.as_bytes(), key.as_bytes()))
                .map(|(_, v)| v),
            KeyMap::Many(map) => map.get(key),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            KeyMap::Few(entries) => entries.len(),
            KeyMap::Many(map) => map.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries, in no particular order.
    pub fn iter(&self) -> Box<dyn Iterator<Item = (&str, &V)> + '_> {
        match self {
            KeyMap::Few(entries) => Box::new(entries.iter().map(|(k, v)| (&**k, v))),
            KeyMap::Many(map) => Box::new(map.iter().map(|(k, v)| (&**k, v))),
        }
    }
}

impl<K: AsRef<str>, V> FromIterator<(K, V)> for KeyMap<V> {
    /// Later entries of a key replace earlier ones.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let map: HashMap<Box<str>, V, BuildHasherDefault<KeyHasher>> = iter
            .into_iter()
            .map(|(k, v)| (Box::from(k.as_ref()), v))
            .collect();
        if map.len() <= SCAN_LIMIT {
            KeyMap::Few(map.into_iter().collect())
        } else {
            KeyMap::Many(map)
        }
    }
}

/// A set of context values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySet(KeyMap<()>);

impl KeySet {
    #[inline]
    pub fn contains(&self, key: &str) -> bool {
        self.0.get(key).is_some()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The members in a stable (sorted) order, for export and fingerprints.
    pub fn sorted(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self.0.iter().map(|(k, _)| k).collect();
        keys.sort_unstable();
        keys
    }
}

impl<S: AsRef<str>> FromIterator<S> for KeySet {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        Self(iter.into_iter().map(|k| (k, ())).collect())
    }
}

/// `text.starts_with(prefix)`, with [`same`].
#[inline]
pub fn starts_with(text: &str, prefix: &str) -> bool {
    text.len() >= prefix.len() && same(&text.as_bytes()[..prefix.len()], prefix.as_bytes())
}

/// `text.ends_with(suffix)`, with [`same`].
#[inline]
pub fn ends_with(text: &str, suffix: &str) -> bool {
    text.len() >= suffix.len()
        && same(
            &text.as_bytes()[text.len() - suffix.len()..],
            suffix.as_bytes(),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_exactly_its_members_few_or_many() {
        for n in [0, 1, 3, SCAN_LIMIT, SCAN_LIMIT + 1, 1000] {
            let set: KeySet = (0..n).map(|i| format!("user-{i}")).collect();
            assert_eq!(set.len(), n);
            assert!((0..n).all(|i| set.contains(&format!("user-{i}"))));
            assert!(
                !set.contains(&format!("user-{n}")) && !set.contains("") && !set.contains("user-")
            );
        }
        let long = "x".repeat(40);
        let set: KeySet = [long.as_str()].into_iter().collect();
        assert!(set.contains(&long) && !set.contains(&long[1..]));
    }

    #[test]
    fn short_strings_compare_byte_for_byte() {
        let texts = [
            "",
            "a",
            "ab",
            "abc",
            "abcd",
            "abcdefg",
            "abcdefgh",
            "abcdefghijklmnop",
            "abcdefghijklmnopq",
        ];
        for x in texts {
            for y in texts {
                assert_eq!(same(x.as_bytes(), y.as_bytes()), x == y, "{x:?} {y:?}");
            }
            // Every position matters.
            for i in 0..x.len() {
                let mut changed = x.as_bytes().to_vec();
                changed[i] ^= 1;
                assert!(!same(x.as_bytes(), &changed), "{x:?} at {i}");
            }
        }
        assert!(starts_with("user@gmail.com", "user@") && !starts_with("us", "user"));
        assert!(
            ends_with("user@gmail.com", "@gmail.com") && !ends_with("user@gmail.co", "@gmail.com")
        );
    }

    #[test]
    fn maps_keep_the_last_value_of_a_key() {
        let map: KeyMap<u8> = [("a", 1), ("b", 2), ("a", 3)].into_iter().collect();
        assert_eq!(
            (map.get("a"), map.get("b"), map.get("c")),
            (Some(&3), Some(&2), None)
        );
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
