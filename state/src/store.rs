//! The [`KeyValueStore`] trait and its sled implementation, with per-commit write buffering.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::iter::Peekable;
use std::ops::Bound;
use std::sync::Arc;

use crate::changelog::{ChangelogRecord, SourceOffset};
use crate::StateError;

/// Iterator over `(key, value)` pairs in key order.
pub type KvIter<'a> = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>), StateError>> + 'a>;

/// A key-value state store, as processors see it (Kafka Streams' `KeyValueStore`). Writes are
/// visible to later reads at once and become durable when the task commits.
pub trait KeyValueStore {
    /// The store's name.
    fn name(&self) -> &str;
    /// The value of `key`, if any.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError>;
    /// Sets `key` to `value`.
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StateError>;
    /// Removes `key`.
    fn delete(&mut self, key: &[u8]) -> Result<(), StateError>;
    /// Entries with `from <= key < to`, in key order.
    fn range(&self, from: &[u8], to: &[u8]) -> KvIter<'_>;
    /// Entries whose key starts with `prefix`, in key order.
    fn prefix_scan(&self, prefix: &[u8]) -> KvIter<'_>;
    /// Number of entries as of the last commit (exact for sled; "approximate" as in Kafka
    /// Streams because uncommitted writes are not counted).
    fn approximate_num_entries(&self) -> u64;
}

/// A buffered write: the new value (`None`: delete) and, when known, whether the key existed
/// in the committed state (so commits keep the entry count without reading sled again).
#[derive(Debug, Clone)]
pub(crate) struct Buffered {
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) existed: Option<bool>,
}

/// A key and what the buffer held for it before a write (`None`: nothing buffered).
type UndoEntry = (Vec<u8>, Option<Buffered>);

/// A store kept in the task's sled tree under the key prefix `s<name>\0`.
pub struct SledStore {
    name: Arc<str>,
    prefix: Vec<u8>,
    tree: sled::Tree,
    /// Writes since the last commit: `None` is a delete.
    pub(crate) buffer: BTreeMap<Vec<u8>, Buffered>,
    /// The last key read from sled and whether it was there (a get before a put is the
    /// common case; this saves the commit a read).
    last_read: RefCell<(Vec<u8>, bool)>,
    /// Whether `last_read` still describes the committed state (reset by every commit).
    last_read_valid: Cell<bool>,
    pub(crate) changelog: Vec<ChangelogRecord>,
    /// Previous buffer entries of the writes since the last savepoint, for rollback.
    undo: Vec<UndoEntry>,
    changelog_at_savepoint: usize,
    logging: bool,
    source: SourceOffset,
    /// Committed entry count, `None` until counted (e.g. after a restore).
    pub(crate) count: Cell<Option<u64>>,
}

impl SledStore {
    pub(crate) fn new(name: &str, tree: sled::Tree, logging: bool, count: Option<u64>) -> SledStore {
        SledStore {
            name: Arc::from(name),
            prefix: store_prefix(name),
            tree,
            buffer: BTreeMap::new(),
            last_read: RefCell::new((Vec::new(), false)),
            last_read_valid: Cell::new(false),
            changelog: Vec::new(),
            undo: Vec::new(),
            changelog_at_savepoint: 0,
            logging,
            source: SourceOffset::none(),
            count: Cell::new(count),
        }
    }

    /// The sled key of a store key.
    pub(crate) fn full_key(&self, key: &[u8]) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.prefix.len() + key.len());
        full.extend_from_slice(&self.prefix);
        full.extend_from_slice(key);
        full
    }

    pub(crate) fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// Sets the input position stamped on the changelog records of the following writes.
    pub(crate) fn set_source(&mut self, source: &SourceOffset) {
        self.source.clone_from(source);
    }

    fn write(&mut self, key: &[u8], value: Option<&[u8]>) {
        if self.logging {
            self.changelog.push(ChangelogRecord {
                store: Arc::clone(&self.name),
                key: key.to_vec(),
                value: value.map(<[u8]>::to_vec),
                source: self.source.clone(),
            });
        }
        let existed = match self.buffer.get(key) {
            Some(buffered) => buffered.existed,
            None => {
                let last = self.last_read.borrow();
                (self.last_read_valid.get() && last.0 == key).then_some(last.1)
            }
        };
        let previous = self.buffer.insert(key.to_vec(), Buffered { value: value.map(<[u8]>::to_vec), existed });
        self.undo.push((key.to_vec(), previous));
    }

    /// Forgets what the last read saw: the committed state is about to change.
    pub(crate) fn forget_last_read(&self) {
        self.last_read_valid.set(false);
    }

    /// Marks the current buffer as the point [`SledStore::rollback`] returns to.
    pub(crate) fn savepoint(&mut self) {
        self.undo.clear();
        self.changelog_at_savepoint = self.changelog.len();
    }

    /// Undoes the writes since the last savepoint (a record whose processing failed).
    pub(crate) fn rollback(&mut self) {
        while let Some((key, previous)) = self.undo.pop() {
            match previous {
                Some(value) => self.buffer.insert(key, value),
                None => self.buffer.remove(&key),
            };
        }
        self.changelog.truncate(self.changelog_at_savepoint);
    }

    /// Forgets the savepoint bookkeeping (after a commit or a drain).
    pub(crate) fn reset_savepoint(&mut self) {
        self.undo.clear();
        self.changelog_at_savepoint = self.changelog.len();
    }

    fn merged(&self, from: Bound<Vec<u8>>, to: Bound<Vec<u8>>) -> KvIter<'_> {
        let full = |bound: &Bound<Vec<u8>>| match bound {
            Bound::Included(k) => Bound::Included(self.full_key(k)),
            Bound::Excluded(k) => Bound::Excluded(self.full_key(k)),
            Bound::Unbounded => Bound::Unbounded,
        };
        // An unbounded end still stops at the end of this store's prefix.
        let sled_to = match &to {
            Bound::Unbounded => prefix_end(&self.prefix).map_or(Bound::Unbounded, Bound::Excluded),
            other => full(other),
        };
        let sled_from = match &from {
            Bound::Unbounded => Bound::Included(self.prefix.clone()),
            other => full(other),
        };
        let strip = self.prefix.len();
        let committed = self
            .tree
            .range::<Vec<u8>, _>((sled_from, sled_to))
            .map(move |entry| entry.map(|(k, v)| (k[strip..].to_vec(), v.to_vec())).map_err(StateError::from));
        let buffered = self.buffer.range((from, to)).map(|(k, v)| (k.clone(), v.value.clone()));
        Box::new(Merge { committed: committed.peekable(), buffered: buffered.peekable() })
    }
}

impl KeyValueStore for SledStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        if let Some(buffered) = self.buffer.get(key) {
            return Ok(buffered.value.clone());
        }
        // Short keys are built on the stack: a get allocates only its result.
        let len = self.prefix.len() + key.len();
        let value = if len <= 128 {
            let mut full = [0u8; 128];
            full[..self.prefix.len()].copy_from_slice(&self.prefix);
            full[self.prefix.len()..len].copy_from_slice(key);
            self.tree.get(&full[..len])?
        } else {
            self.tree.get(self.full_key(key))?
        };
        let mut last = self.last_read.borrow_mut();
        last.0.clear();
        last.0.extend_from_slice(key);
        last.1 = value.is_some();
        self.last_read_valid.set(true);
        Ok(value.map(|v| v.to_vec()))
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        self.write(key, Some(value));
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), StateError> {
        self.write(key, None);
        Ok(())
    }

    fn range(&self, from: &[u8], to: &[u8]) -> KvIter<'_> {
        if from >= to {
            return Box::new(std::iter::empty());
        }
        self.merged(Bound::Included(from.to_vec()), Bound::Excluded(to.to_vec()))
    }

    fn prefix_scan(&self, prefix: &[u8]) -> KvIter<'_> {
        let end = prefix_end(prefix).map_or(Bound::Unbounded, Bound::Excluded);
        self.merged(Bound::Included(prefix.to_vec()), end)
    }

    fn approximate_num_entries(&self) -> u64 {
        if let Some(count) = self.count.get() {
            return count;
        }
        let count = self.tree.scan_prefix(&self.prefix).count() as u64;
        self.count.set(Some(count));
        count
    }
}

/// `s<name>\0`: the key prefix of a store.
pub(crate) fn store_prefix(name: &str) -> Vec<u8> {
    let mut prefix = Vec::with_capacity(name.len() + 2);
    prefix.push(b's');
    prefix.extend_from_slice(name.as_bytes());
    prefix.push(0);
    prefix
}

/// The smallest key greater than every key starting with `prefix` (None if there is none).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Merges committed entries with buffered writes; the buffer wins, tombstones hide.
struct Merge<C: Iterator, B: Iterator> {
    committed: Peekable<C>,
    buffered: Peekable<B>,
}

impl<C, B> Iterator for Merge<C, B>
where
    C: Iterator<Item = Result<(Vec<u8>, Vec<u8>), StateError>>,
    B: Iterator<Item = (Vec<u8>, Option<Vec<u8>>)>,
{
    type Item = Result<(Vec<u8>, Vec<u8>), StateError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let take_buffered = match (self.committed.peek(), self.buffered.peek()) {
                (None, None) => return None,
                (Some(Err(_)), _) => return self.committed.next(),
                (None, Some(_)) => true,
                (Some(_), None) => false,
                (Some(Ok((c, _))), Some((b, _))) => {
                    if c == b {
                        self.committed.next();
                        true
                    } else {
                        b < c
                    }
                }
            };
            if !take_buffered {
                return self.committed.next();
            }
            if let Some((key, Some(value))) = self.buffered.next() {
                return Some(Ok((key, value)));
            }
        }
    }
}
