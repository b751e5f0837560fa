//! [`StoreReader`]: a read-only view of one store's committed entries, for interactive
//! queries from other threads while the task keeps processing (Kafka Streams'
//! `ReadOnlyKeyValueStore`). Writes of the commit in progress are not visible.

use crate::store::store_prefix;
use crate::StateError;

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// Read-only, thread-safe view of a store's committed state.
#[derive(Clone)]
pub struct StoreReader {
    prefix: Vec<u8>,
    tree: sled::Tree,
}

impl std::fmt::Debug for StoreReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreReader").field("prefix", &String::from_utf8_lossy(&self.prefix)).finish_non_exhaustive()
    }
}

impl StoreReader {
    pub(crate) fn new(name: &str, tree: sled::Tree) -> StoreReader {
        StoreReader { prefix: store_prefix(name), tree }
    }

    /// The committed value of `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        let mut full = self.prefix.clone();
        full.extend_from_slice(key);
        Ok(self.tree.get(full)?.map(|v| v.to_vec()))
    }

    /// Committed entries whose key starts with `prefix`, in key order, after skipping `skip`,
    /// at most `limit` of them.
    pub fn prefix_scan(&self, prefix: &[u8], skip: usize, limit: usize) -> Result<Vec<Entry>, StateError> {
        let mut full = self.prefix.clone();
        full.extend_from_slice(prefix);
        let mut out = Vec::new();
        for entry in self.tree.scan_prefix(full).skip(skip).take(limit) {
            let (key, value) = entry?;
            out.push((key[self.prefix.len()..].to_vec(), value.to_vec()));
        }
        Ok(out)
    }
}
