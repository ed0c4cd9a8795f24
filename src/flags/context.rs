//! An evaluation context, indexed once per request: targeting reads several
//! attributes of it, for every flag of a bulk request, and reading one is then a
//! scan of a few hashes instead of a search of the JSON map comparing strings.

use serde_json::{Map, Value};

use super::keys::{KeyHasher, same};

/// Contexts with more attributes than this are searched in their map.
const INDEXED: usize = 64;

/// The attributes of an OFREP evaluation context, ready to be read by name.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    attributes: &'a Map<String, Value>,
    /// (hash of the name, name, value), when there are few enough attributes.
    index: Option<Vec<(u64, &'a str, &'a Value)>>,
}

/// The hash [`Context::get`] is given for a name.
#[inline]
pub fn name_hash(name: &str) -> u64 {
    use std::hash::Hasher;
    let mut hasher = KeyHasher::default();
    hasher.write(name.as_bytes());
    hasher.finish()
}

impl<'a> Context<'a> {
    pub fn new(attributes: &'a Map<String, Value>) -> Self {
        let index = (attributes.len() <= INDEXED).then(|| {
            attributes
                .iter()
                .map(|(name, value)| (name_hash(name), name.as_str(), value))
                .collect()
        });
        Self { attributes, index }
    }

    /// The attributes as the request gave them.
    pub fn attributes(&self) -> &'a Map<String, Value> {
        self.attributes
    }

    /// The attribute `name`, whose [`name_hash`] is `hash`.
    #[inline]
    pub fn get(&self, name: &str, hash: u64) -> Option<&'a Value> {
        match &self.index {
            Some(index) => index
                .iter()
                .find(|(h, n, _)| *h == hash && same(n.as_bytes(), name.as_bytes()))
                .map(|&(_, _, value)| value),
            None => self.attributes.get(name),
        }
    }

    /// The attribute `name`.
    #[inline]
    pub fn get_named(&self, name: &str) -> Option<&'a Value> {
        self.get(name, name_hash(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_attributes_of_small_and_large_contexts() {
        for n in [0, 1, 5, INDEXED, INDEXED + 1, 300] {
            let map: Map<String, Value> = (0..n).map(|i| (format!("attr-{i}"), json!(i))).collect();
            let context = Context::new(&map);
            for i in 0..n {
                assert_eq!(context.get_named(&format!("attr-{i}")), Some(&json!(i)));
            }
            assert_eq!(context.get_named("attr-x"), None);
            assert_eq!(context.get_named(""), None);
        }
    }
}
