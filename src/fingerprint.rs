//! Stable content hashes (FNV-1a, 64-bit): the same across processes, builds and
//! restarts, which `std`'s hasher does not promise. Used for fingerprints that are
//! persisted or sent to clients (rollout targets, generations, ETags).

/// FNV-1a over `bytes`.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= byte as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// FNV-1a over `bytes`, as 16 hex digits.
pub fn fnv1a_hex(bytes: &[u8]) -> String {
    format!("{:016x}", fnv1a(bytes))
}
