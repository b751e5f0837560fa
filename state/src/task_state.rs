//! [`TaskState`]: one task's stores in one sled tree, committed atomically with its checkpoint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::changelog::{ChangelogRecord, SourceOffset};
use crate::store::{KeyValueStore, SledStore};
use crate::StateError;

/// Changelog records per restore batch. Writes to the same key within a batch are coalesced
/// (last write wins) and written to sled in key order, one insert each (several times faster
/// than a sled batch of the same size, measured), then flushed; only then are the batch's
/// changelog offsets written. A restore cut short resumes from the previous offsets and
/// re-applies the same records, which is idempotent.
pub const RESTORE_BATCH_SIZE: usize = 50_000;

/// The on-disk layout version; a directory with another version is wiped and restored.
const FORMAT_VERSION: &[u8] = b"sluice-state-v1";
const META_VERSION: &[u8] = b"m\0version";
const META_INPUT: &[u8] = b"m\0input\0";
const META_CHANGELOG: &[u8] = b"m\0changelog\0";

/// What a task has durably processed: the next input offset per input topic-partition and
/// the next changelog offset per store, stored in the same batch as the state they describe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// Next offset to consume, by (topic, partition).
    pub input_offsets: BTreeMap<(String, i32), i64>,
    /// Next changelog offset to read, by store.
    pub changelog_offsets: BTreeMap<String, i64>,
}

/// What a restore did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreStats {
    /// Records written into the stores.
    pub applied: u64,
    /// Records skipped because their input offset was not committed (it will be reprocessed).
    pub skipped: u64,
    /// sled batches written.
    pub batches: u64,
}

impl RestoreStats {
    /// Adds another batch's figures.
    pub fn add(&mut self, other: RestoreStats) {
        self.applied += other.applied;
        self.skipped += other.skipped;
        self.batches += other.batches;
    }
}

/// The state of one task: its stores, buffered writes, and checkpoint.
pub struct TaskState {
    dir: PathBuf,
    tree: sled::Db,
    stores: Vec<SledStore>,
    checkpoint: Checkpoint,
    needs_restore: bool,
}

impl TaskState {
    /// Opens (or creates) the task state in `dir` with the given stores, as
    /// `(name, changelog enabled)`. A directory that fails to open or has another format
    /// version is wiped; [`TaskState::needs_restore`] then says so.
    pub fn open(dir: &Path, stores: &[(&str, bool)]) -> Result<TaskState, StateError> {
        for (name, _) in stores {
            if name.is_empty() || name.contains('\0') {
                return Err(StateError::InvalidStoreName((*name).to_string()));
            }
        }
        std::fs::create_dir_all(dir).map_err(|source| StateError::Dir { path: dir.to_path_buf(), source })?;
        let (tree, needs_restore) = match open_current(dir) {
            Ok(opened) => opened,
            Err(OpenError::Locked) => return Err(StateError::Locked(dir.to_path_buf())),
            Err(OpenError::Unusable(reason)) => {
                tracing::warn!(dir = %dir.display(), %reason, "state directory unusable; wiping it and restoring from the changelog");
                std::fs::remove_dir_all(dir).map_err(|source| StateError::Dir { path: dir.to_path_buf(), source })?;
                let db = open_sled(dir)?;
                db.insert(META_VERSION, FORMAT_VERSION)?;
                (db, true)
            }
        };
        let checkpoint = read_checkpoint(&tree)?;
        let stores = stores.iter().map(|(name, logging)| SledStore::new(name, (*tree).clone(), *logging, None)).collect();
        Ok(TaskState { dir: dir.to_path_buf(), tree, stores, checkpoint, needs_restore })
    }

    /// True when the directory was created or wiped at open: the stores are empty and must be
    /// restored from their changelogs before processing.
    pub fn needs_restore(&self) -> bool {
        self.needs_restore
    }

    /// The checkpoint written by the last commit or restore.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// The task's state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Store names, in the order given at open.
    pub fn store_names(&self) -> impl Iterator<Item = &str> {
        self.stores.iter().map(|s| s.name())
    }

    /// A read-only view of a store's committed entries that other threads can use
    /// (interactive queries).
    pub fn reader(&self, name: &str) -> Result<crate::StoreReader, StateError> {
        self.store(name)?;
        Ok(crate::StoreReader::new(name, (*self.tree).clone()))
    }

    /// A store, for reading.
    pub fn store(&self, name: &str) -> Result<&SledStore, StateError> {
        self.stores.iter().find(|s| s.name() == name).ok_or_else(|| StateError::UnknownStore(name.to_string()))
    }

    /// A store, for reading and writing.
    pub fn store_mut(&mut self, name: &str) -> Result<&mut SledStore, StateError> {
        self.stores.iter_mut().find(|s| s.name() == name).ok_or_else(|| StateError::UnknownStore(name.to_string()))
    }

    /// Sets the input position stamped on the changelog records of the following writes.
    pub fn set_source(&mut self, source: &SourceOffset) {
        for store in &mut self.stores {
            store.set_source(source);
        }
    }

    /// Takes the changelog records of the writes since the last call, in write order per store.
    pub fn drain_changelog(&mut self) -> Vec<ChangelogRecord> {
        let mut records = Vec::new();
        for store in &mut self.stores {
            let mut changes = std::mem::take(&mut store.changelog);
            coalesce(&mut changes);
            records.append(&mut changes);
            store.reset_savepoint();
        }
        records
    }

    /// Marks the point [`TaskState::rollback`] returns to: call before processing a record.
    pub fn savepoint(&mut self) {
        for store in &mut self.stores {
            store.savepoint();
        }
    }

    /// Undoes every write (and its changelog record) since the last savepoint, so a record
    /// whose processing failed leaves no partial effect.
    pub fn rollback(&mut self) {
        for store in &mut self.stores {
            store.rollback();
        }
    }

    /// True when writes are buffered that the next commit will apply.
    pub fn has_pending_writes(&self) -> bool {
        self.stores.iter().any(|s| !s.buffer.is_empty())
    }

    /// Applies every buffered write and the new checkpoint in one atomic sled batch (docs/guarantees.md, the
    /// commit protocol, step 2). `input_offsets` are the next offsets to consume; `changelog_offsets` the
    /// next changelog offset per store after the records just delivered.
    pub fn commit(&mut self, input_offsets: &[(&str, i32, i64)], changelog_offsets: &[(&str, i64)]) -> Result<(), StateError> {
        let mut batch = sled::Batch::default();
        for store in &mut self.stores {
            assert!(store.changelog.is_empty(), "store `{}`: drain and deliver the changelog before committing (docs/guarantees.md, the commit protocol)", store.name());
            store.forget_last_read();
            let mut count = store.count.get();
            for (key, buffered) in std::mem::take(&mut store.buffer) {
                let full = store.full_key(&key);
                if let Some(n) = count.as_mut() {
                    let existed = match buffered.existed {
                        Some(existed) => existed,
                        None => self.tree.contains_key(&full)?,
                    };
                    match (&buffered.value, existed) {
                        (Some(_), false) => *n += 1,
                        (None, true) => *n -= 1,
                        _ => {}
                    }
                }
                match buffered.value {
                    Some(value) => batch.insert(full, value),
                    None => batch.remove(full),
                }
            }
            store.count.set(count);
        }
        for (topic, partition, offset) in input_offsets {
            batch.insert(input_key(topic, *partition), &offset.to_be_bytes());
            self.checkpoint.input_offsets.insert(((*topic).to_string(), *partition), *offset);
        }
        for (store, offset) in changelog_offsets {
            batch.insert(changelog_key(store), &offset.to_be_bytes());
            self.checkpoint.changelog_offsets.insert((*store).to_string(), *offset);
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Discards every buffered write and pending changelog record (a failed flush: the batch
    /// will be reprocessed from the last committed position).
    pub fn abort(&mut self) {
        for store in &mut self.stores {
            store.buffer.clear();
            store.changelog.clear();
            store.reset_savepoint();
        }
    }

    /// Forces committed state to disk.
    pub fn flush(&self) -> Result<(), StateError> {
        self.tree.flush()?;
        Ok(())
    }

    /// Brings the stores up to date from changelog records `(changelog offset, record)` read
    /// in offset order from the checkpointed changelog offsets (everything after a wipe), in
    /// batches of [`RESTORE_BATCH_SIZE`] (docs/guarantees.md, Restore): [`TaskState::resume_positions`],
    /// then [`TaskState::restore_batch`] per batch, then [`TaskState::finish_restore`].
    ///
    /// The state is made to reflect exactly the inputs before the *resume position* of each
    /// input partition: the later of the local checkpoint and `committed` (the consumer
    /// group's committed offsets; an absent partition has nothing committed). A record
    /// stamped at or beyond it is skipped, since that input will be processed again; writes
    /// not caused by an input (stamped with an empty topic) are always applied. The resume
    /// positions become the checkpoint's input offsets: process from there. Call it on every
    /// start, even with no records, so a local checkpoint that lost its last commits (sled
    /// flushes in the background) resumes from the committed offsets.
    pub fn restore(
        &mut self,
        records: impl IntoIterator<Item = (i64, ChangelogRecord)>,
        committed: &BTreeMap<(String, i32), i64>,
    ) -> Result<RestoreStats, StateError> {
        let resume = self.resume_positions(committed);
        let mut stats = RestoreStats::default();
        let mut batch = Vec::with_capacity(RESTORE_BATCH_SIZE.min(4096));
        for record in records {
            batch.push(record);
            if batch.len() == RESTORE_BATCH_SIZE {
                stats.add(self.restore_batch(std::mem::take(&mut batch), &resume)?);
            }
        }
        if !batch.is_empty() {
            stats.add(self.restore_batch(batch, &resume)?);
        }
        self.finish_restore(resume)?;
        Ok(stats)
    }

    /// Where processing resumes after a restore: per input partition, the later of the local
    /// checkpoint and `committed`.
    pub fn resume_positions(&self, committed: &BTreeMap<(String, i32), i64>) -> BTreeMap<(String, i32), i64> {
        let mut resume = self.checkpoint.input_offsets.clone();
        for (partition, offset) in committed {
            let entry = resume.entry(partition.clone()).or_insert(*offset);
            *entry = (*entry).max(*offset);
        }
        resume
    }

    /// Applies one batch of changelog records (in offset order per store; any number, though
    /// [`RESTORE_BATCH_SIZE`] bounds what a restore holds in memory) against the resume
    /// positions, coalescing writes to the same key, and checkpoints the next changelog offset
    /// of each store the batch touched. A restore cut short resumes from there.
    pub fn restore_batch(
        &mut self,
        records: impl IntoIterator<Item = (i64, ChangelogRecord)>,
        resume: &BTreeMap<(String, i32), i64>,
    ) -> Result<RestoreStats, StateError> {
        // Lookups without allocating per record: few input partitions, few stores.
        let thresholds: Vec<(&str, i32, i64)> = resume.iter().map(|((t, p), o)| (t.as_str(), *p, *o)).collect();
        let prefixes: Vec<(String, Vec<u8>)> = self.stores.iter().map(|s| (s.name().to_string(), s.prefix().to_vec())).collect();
        let mut next_offsets: Vec<Option<i64>> = vec![None; prefixes.len()];
        let mut stats = RestoreStats::default();
        let mut pending: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        let mut full = Vec::new();
        let mut last_store = 0;
        for (offset, record) in records {
            if prefixes.get(last_store).is_none_or(|(name, _)| name.as_str() != &*record.store) {
                last_store = prefixes.iter().position(|(name, _)| name.as_str() == &*record.store).ok_or_else(|| StateError::UnknownStore(record.store.to_string()))?;
            }
            next_offsets[last_store] = Some(offset + 1);
            let source = &record.source;
            let uncommitted = !source.topic.is_empty()
                && source.offset
                    >= thresholds.iter().find(|(t, p, _)| *t == &*source.topic && *p == source.partition).map_or(0, |(_, _, o)| *o);
            if uncommitted {
                stats.skipped += 1;
                continue;
            }
            full.clear();
            full.extend_from_slice(&prefixes[last_store].1);
            full.extend_from_slice(&record.key);
            match pending.get_mut(full.as_slice()) {
                Some(slot) => *slot = record.value,
                None => {
                    pending.insert(full.clone(), record.value);
                }
            }
            stats.applied += 1;
        }
        if next_offsets.iter().all(Option::is_none) {
            return Ok(stats);
        }
        let batch = self.apply_chunks(&mut pending)?;
        self.apply_restore_batch(batch, &prefixes, &next_offsets)?;
        stats.batches = 1;
        Ok(stats)
    }

    /// Drops the input offsets of the checkpoint (a standby's copy: the state it will hold is
    /// the active task's, not what this copy processed); a later restore resumes from the
    /// group's committed offsets.
    pub fn forget_input_offsets(&mut self) -> Result<(), StateError> {
        let mut batch = sled::Batch::default();
        for (topic, partition) in self.checkpoint.input_offsets.keys() {
            batch.remove(input_key(topic, *partition));
        }
        self.tree.apply_batch(batch)?;
        self.checkpoint.input_offsets.clear();
        Ok(())
    }

    /// Ends a restore: the resume positions become the checkpoint's input offsets.
    pub fn finish_restore(&mut self, resume: BTreeMap<(String, i32), i64>) -> Result<(), StateError> {
        let mut batch = sled::Batch::default();
        for ((topic, partition), offset) in &resume {
            batch.insert(input_key(topic, *partition), &offset.to_be_bytes());
        }
        self.tree.apply_batch(batch)?;
        self.checkpoint.input_offsets = resume;
        for store in &mut self.stores {
            store.count.set(None);
            store.forget_last_read();
        }
        self.needs_restore = false;
        Ok(())
    }

    /// Writes coalesced writes in key order and flushes them; returns an empty batch for the
    /// caller's offsets.
    fn apply_chunks(&mut self, pending: &mut BTreeMap<Vec<u8>, Option<Vec<u8>>>) -> Result<sled::Batch, StateError> {
        for (key, value) in std::mem::take(pending) {
            match value {
                Some(value) => self.tree.insert(key, value)?,
                None => self.tree.remove(key)?,
            };
        }
        self.tree.flush()?;
        Ok(sled::Batch::default())
    }

    fn apply_restore_batch(&mut self, mut batch: sled::Batch, stores: &[(String, Vec<u8>)], next_offsets: &[Option<i64>]) -> Result<(), StateError> {
        for ((store, _), offset) in stores.iter().zip(next_offsets) {
            if let Some(offset) = offset {
                batch.insert(changelog_key(store), &offset.to_be_bytes());
                self.checkpoint.changelog_offsets.insert(store.clone(), *offset);
            }
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }
}


enum OpenError {
    /// Another process holds the directory: never wipe it.
    Locked,
    /// Corrupt or of another format: wipe and restore.
    Unusable(String),
}

/// Opens the directory: `(db, true)` if it is new (empty), `(db, false)` if it holds state
/// of the current format, an error if it cannot be used.
fn open_current(dir: &Path) -> Result<(sled::Db, bool), OpenError> {
    let unusable = |e: &dyn std::fmt::Display| OpenError::Unusable(e.to_string());
    let db = match open_sled(dir) {
        Ok(db) => db,
        Err(StateError::Locked(_)) => return Err(OpenError::Locked),
        Err(e) => return Err(unusable(&e)),
    };
    match db.get(META_VERSION).map_err(|e| unusable(&e))? {
        Some(version) if version == FORMAT_VERSION => Ok((db, false)),
        Some(other) => Err(OpenError::Unusable(format!(
            "format version {:?}, expected {:?}",
            String::from_utf8_lossy(&other),
            String::from_utf8_lossy(FORMAT_VERSION)
        ))),
        None if db.is_empty() => {
            db.insert(META_VERSION, FORMAT_VERSION).map_err(|e| unusable(&e))?;
            Ok((db, true))
        }
        None => Err(OpenError::Unusable("entries without a format version".to_string())),
    }
}

/// Opens sled, waiting (up to 5 s) for the file lock a just-dropped handle of the same
/// directory may still hold: sled releases it from a background thread. A lock held longer
/// belongs to another process: [`StateError::Locked`].
fn open_sled(dir: &Path) -> Result<sled::Db, StateError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match sled_config(dir).open() {
            // sled reports a held lock only as an I/O error whose text says so.
            Err(sled::Error::Io(e)) if e.kind() == std::io::ErrorKind::Other && e.to_string().contains("lock") => {
                if std::time::Instant::now() >= deadline {
                    return Err(StateError::Locked(dir.to_path_buf()));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return Ok(other?),
        }
    }
}

fn input_key(topic: &str, partition: i32) -> Vec<u8> {
    let mut key = META_INPUT.to_vec();
    key.extend_from_slice(topic.as_bytes());
    key.push(0);
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

fn changelog_key(store: &str) -> Vec<u8> {
    let mut key = META_CHANGELOG.to_vec();
    key.extend_from_slice(store.as_bytes());
    key
}

fn be_i64(bytes: &[u8]) -> Result<i64, StateError> {
    bytes.try_into().map(i64::from_be_bytes).map_err(|_| StateError::Corrupt(format!("offset of {} bytes", bytes.len())))
}

fn read_checkpoint(tree: &sled::Db) -> Result<Checkpoint, StateError> {
    let mut checkpoint = Checkpoint::default();
    for entry in tree.scan_prefix(META_INPUT) {
        let (key, value) = entry?;
        let rest = &key[META_INPUT.len()..];
        let split = rest.len().checked_sub(5).filter(|&i| rest[i] == 0).ok_or_else(|| StateError::Corrupt("input offset key".into()))?;
        let topic = String::from_utf8_lossy(&rest[..split]).into_owned();
        let partition = i32::from_be_bytes(rest[split + 1..].try_into().map_err(|_| StateError::Corrupt("partition".into()))?);
        checkpoint.input_offsets.insert((topic, partition), be_i64(&value)?);
    }
    for entry in tree.scan_prefix(META_CHANGELOG) {
        let (key, value) = entry?;
        let store = String::from_utf8_lossy(&key[META_CHANGELOG.len()..]).into_owned();
        checkpoint.changelog_offsets.insert(store, be_i64(&value)?);
    }
    Ok(checkpoint)
}


/// Keeps only the last write of each key among one store's writes since the last commit, in
/// the order of those last writes: a changelog record per key and commit instead of one per
/// write (Kafka Streams' record cache does the same for its changelogs). A restore ends with
/// the same store: it applies a key's records in order, so only the last counts, and the last
/// carries the latest input position, which a restore compares with the committed ones the
/// same way (docs/guarantees.md, the commit protocol).
fn coalesce(changes: &mut Vec<ChangelogRecord>) {
    if changes.len() < 2 {
        return;
    }
    let mut seen = std::collections::HashSet::with_capacity(changes.len());
    let keep: Vec<bool> = changes.iter().rev().map(|change| seen.insert(change.key.as_slice())).collect();
    drop(seen);
    let mut last_writes = keep.into_iter().rev();
    changes.retain(|_| last_writes.next().unwrap_or(true));
}

/// sled settings for task state (sled's defaults measured best here).
fn sled_config(dir: &Path) -> sled::Config {
    sled::Config::new().path(dir)
}
