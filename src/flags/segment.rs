//! A compiled segment: a reusable set of users that rules refer to with
//! `segmentMatch`. Membership, as LaunchDarkly decides it: an excluded targeting key
//! is out, an included one is in, anyone else is in when any rule matches.

use super::attribute::{Attribute, Env, Found};
use super::clause::Clause;
use super::keys::KeyMap;

/// A segment ready to match.
#[derive(Debug, Clone)]
pub struct Segment {
    /// `namespace/name`.
    pub name: String,
    /// Targeting key → included (true) or excluded (false): one lookup for both.
    pub members: KeyMap<bool>,
    /// Each rule's clauses, ANDed.
    pub rules: Vec<Vec<Clause>>,
    /// Hash of the segment's source, so flags using it change version with it.
    pub fingerprint: u64,
}

impl Segment {
    /// Whether the context is in the segment.
    #[inline]
    pub fn contains(&self, env: &Env<'_>) -> bool {
        if !self.members.is_empty()
            && let Some(key) = Attribute::targeting_key_in(env).and_then(Found::as_str)
            && let Some(&included) = self.members.get(key)
        {
            return included;
        }
        self.rules
            .iter()
            .any(|clauses| clauses.iter().all(|c| c.matches(env)))
    }

    /// The included (`true`) or excluded (`false`) targeting keys, sorted.
    pub fn listed(&self, included: bool) -> Vec<&str> {
        let mut keys: Vec<&str> = self
            .members
            .iter()
            .filter(|(_, i)| **i == included)
            .map(|(k, _)| k)
            .collect();
        keys.sort_unstable();
        keys
    }
}

impl Attribute {
    /// The context's `targetingKey`, read without a compiled path.
    #[inline]
    pub fn targeting_key_in<'a>(env: &Env<'a>) -> Option<Found<'a>> {
        env.get(super::attribute::TARGETING_KEY)
            .filter(|v| !v.is_null())
            .map(Found::Value)
    }
}
