//! Behaviour of task state: buffering, atomic commits, changelog stamping, restore, wipe on
//! corruption, dedupe.

use std::collections::BTreeMap;
use std::path::PathBuf;

use sluice_state::{ChangelogRecord, DedupeStore, KeyValueStore, SourceOffset, TaskState};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("sluice-state-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const STORES: &[(&str, bool)] = &[("balances", true), ("other", true)];

fn entries(state: &TaskState, store: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    state.store(store).unwrap().prefix_scan(b"").collect::<Result<_, _>>().unwrap()
}

#[test]
fn writes_are_read_back_before_commit_and_merged_in_scans() {
    let dir = TempDir::new("ryw");
    let mut state = TaskState::open(&dir.0, STORES).unwrap();
    let store = state.store_mut("balances").unwrap();
    store.put(b"a", b"1").unwrap();
    store.put(b"c", b"3").unwrap();
    assert_eq!(store.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
    state.drain_changelog();
    state.commit(&[("in", 0, 1)], &[]).unwrap();
    let store = state.store_mut("balances").unwrap();
    store.put(b"b", b"2").unwrap();
    store.delete(b"c").unwrap();
    store.put(b"a", b"10").unwrap();
    assert_eq!(store.get(b"c").unwrap(), None, "delete hides the committed value");
    let all: Vec<(Vec<u8>, Vec<u8>)> = store.prefix_scan(b"").collect::<Result<_, _>>().unwrap();
    assert_eq!(all, [(b"a".to_vec(), b"10".to_vec()), (b"b".to_vec(), b"2".to_vec())]);
    let ranged: Vec<Vec<u8>> = store.range(b"b", b"z").map(|e| e.unwrap().0).collect();
    assert_eq!(ranged, [b"b".to_vec()]);
    assert!(entries(&state, "other").is_empty(), "stores do not see each other's keys");
}

#[test]
fn commit_is_atomic_with_the_checkpoint_and_uncommitted_writes_vanish() {
    let dir = TempDir::new("commit");
    {
        let mut state = TaskState::open(&dir.0, STORES).unwrap();
        assert!(state.needs_restore(), "a new directory has to be restored");
        state.store_mut("balances").unwrap().put(b"k", b"v").unwrap();
        assert_eq!(state.drain_changelog().len(), 1);
        state.commit(&[("in", 3, 42)], &[("balances", 7)]).unwrap();
        state.store_mut("balances").unwrap().put(b"lost", b"x").unwrap();
        state.flush().unwrap();
    }
    let state = TaskState::open(&dir.0, STORES).unwrap();
    assert!(!state.needs_restore());
    assert_eq!(entries(&state, "balances"), [(b"k".to_vec(), b"v".to_vec())]);
    assert_eq!(state.checkpoint().input_offsets[&("in".to_string(), 3)], 42);
    assert_eq!(state.checkpoint().changelog_offsets["balances"], 7);
    assert_eq!(state.store("balances").unwrap().approximate_num_entries(), 1);
}

#[test]
fn each_key_written_yields_one_changelog_record_per_commit_stamped_with_its_last_input() {
    let dir = TempDir::new("stamp");
    let mut state = TaskState::open(&dir.0, STORES).unwrap();
    state.set_source(&SourceOffset::new("in", 1, 5));
    state.store_mut("balances").unwrap().put(b"k", b"v").unwrap();
    state.store_mut("balances").unwrap().put(b"j", b"w").unwrap();
    state.set_source(&SourceOffset::new("in", 1, 6));
    state.store_mut("balances").unwrap().delete(b"k").unwrap();
    let records = state.drain_changelog();
    // k's put is superseded by its delete: one record per key, in the order of last writes.
    assert_eq!(records.iter().map(|r| r.key.as_slice()).collect::<Vec<_>>(), [&b"j"[..], &b"k"[..]]);
    assert_eq!(records[0].value.as_deref(), Some(&b"w"[..]));
    assert_eq!(records[0].source, SourceOffset::new("in", 1, 5));
    assert_eq!(records[1].value, None, "a delete is a tombstone");
    assert_eq!(records[1].source.offset, 6);
    let headers = records[1].source.headers();
    let parsed = SourceOffset::from_headers(headers.iter().map(|(k, v)| (*k, v.as_bytes())));
    assert_eq!(parsed, Some(SourceOffset::new("in", 1, 6)));
    state.abort();
    assert!(!state.has_pending_writes());
    assert_eq!(state.store("balances").unwrap().get(b"k").unwrap(), None, "abort discards the batch");
}

/// Appends the drained records with per-store changelog offsets, as each store's changelog
/// topic partition would number them.
fn drain(state: &mut TaskState, changelog: &mut Vec<(i64, ChangelogRecord)>) {
    let mut next: BTreeMap<String, i64> = BTreeMap::new();
    for (_, record) in changelog.iter() {
        *next.entry(record.store.to_string()).or_default() += 1;
    }
    for record in state.drain_changelog() {
        let offset = next.entry(record.store.to_string()).or_default();
        changelog.push((*offset, record));
        *offset += 1;
    }
}

#[test]
fn restore_rebuilds_state_and_skips_uncommitted_inputs() {
    let source_dir = TempDir::new("restore-src");
    let mut state = TaskState::open(&source_dir.0, STORES).unwrap();
    let mut changelog: Vec<(i64, ChangelogRecord)> = Vec::new();
    for offset in 0..25_000i64 {
        state.set_source(&SourceOffset::new("in", 0, offset));
        let key = format!("key-{}", offset % 1000);
        state.store_mut("balances").unwrap().put(key.as_bytes(), &offset.to_be_bytes()).unwrap();
        if offset % 7 == 0 {
            state.store_mut("other").unwrap().delete(key.as_bytes()).unwrap();
        } else {
            state.store_mut("other").unwrap().put(key.as_bytes(), b"x").unwrap();
        }
        // Drained every 100 inputs (100 distinct keys: nothing coalesces), committed once.
        if offset % 100 == 99 {
            drain(&mut state, &mut changelog);
        }
        if offset == 20_000 - 1 {
            state.commit(&[("in", 0, 20_000)], &[]).unwrap();
        }
    }
    drain(&mut state, &mut changelog);
    // The reference: the state as of the committed input offset 20,000.
    state.abort();
    let committed_balances = entries(&state, "balances");
    let committed_other = entries(&state, "other");
    assert_eq!(committed_balances.len(), 1000);

    let target_dir = TempDir::new("restore-dst");
    let mut restored = TaskState::open(&target_dir.0, STORES).unwrap();
    let committed = BTreeMap::from([(("in".to_string(), 0), 20_000)]);
    let stats = restored.restore(changelog.clone(), &committed).unwrap();
    assert_eq!(stats.applied, 40_000);
    assert_eq!(stats.skipped, 10_000, "writes of inputs 20,000.. will be reprocessed");
    assert_eq!(stats.batches as usize, (stats.applied as usize).div_ceil(sluice_state::RESTORE_BATCH_SIZE), "restore is batched: {stats:?}");
    assert!(entries(&restored, "balances") == committed_balances, "restored balances equal the committed state");
    assert!(entries(&restored, "other") == committed_other, "restored deletes and puts equal the committed state");
    assert_eq!(restored.checkpoint().changelog_offsets["balances"], 25_000);
    assert_eq!(restored.checkpoint().changelog_offsets["other"], 25_000);
    assert_eq!(restored.store("balances").unwrap().approximate_num_entries(), 1000);
}

#[test]
fn an_unreadable_state_directory_is_wiped_and_marked_for_restore() {
    let dir = TempDir::new("corrupt");
    {
        let mut state = TaskState::open(&dir.0, STORES).unwrap();
        state.store_mut("balances").unwrap().put(b"k", b"v").unwrap();
        state.drain_changelog();
        state.commit(&[], &[]).unwrap();
        state.flush().unwrap();
    }
    // Overwrite every file sled wrote with garbage.
    for entry in walk(&dir.0) {
        std::fs::write(&entry, b"definitely not a sled file").unwrap();
    }
    let state = TaskState::open(&dir.0, STORES).unwrap();
    assert!(state.needs_restore());
    assert!(entries(&state, "balances").is_empty());
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn dedupe_skips_repeats_within_retention_and_forgets_after() {
    let dir = TempDir::new("dedupe");
    let mut state = TaskState::open(&dir.0, &[("dedupe", true)]).unwrap();
    let store = state.store_mut("dedupe").unwrap();
    let mut dedupe = DedupeStore::new(store, 1_000);
    assert!(!dedupe.check_and_mark("e-1", 10_000).unwrap());
    assert!(dedupe.check_and_mark("e-1", 10_500).unwrap(), "a repeat within retention is a duplicate");
    assert!(!dedupe.check_and_mark("e-2", -5).unwrap());
    assert!(!dedupe.check_and_mark("e-1", 11_000).unwrap(), "after the retention it counts as new");
    assert_eq!(dedupe.purge_expired(11_500).unwrap(), 1, "e-2 (time -5) expired; e-1 re-marked at 11,000 stays");
    assert!(!dedupe.contains("e-2", 11_500).unwrap());
    assert!(dedupe.contains("e-1", 11_500).unwrap());
    // Dedupe writes are changelogged like any store write, the purge as tombstones; one
    // record per key.
    let records = state.drain_changelog();
    assert!(records.iter().any(|r| r.value.is_none()), "the purge is changelogged");
    let keys: std::collections::HashSet<&[u8]> = records.iter().map(|r| r.key.as_slice()).collect();
    assert_eq!(keys.len(), records.len(), "coalesced per key");
    assert!(records.len() >= 2);
}

#[test]
fn rollback_undoes_the_writes_of_one_failed_record() {
    let dir = TempDir::new("rollback");
    let mut state = TaskState::open(&dir.0, STORES).unwrap();
    state.store_mut("balances").unwrap().put(b"a", b"1").unwrap();
    state.savepoint();
    let store = state.store_mut("balances").unwrap();
    store.put(b"a", b"2").unwrap();
    store.put(b"b", b"9").unwrap();
    store.delete(b"a").unwrap();
    state.rollback();
    assert_eq!(entries(&state, "balances"), [(b"a".to_vec(), b"1".to_vec())]);
    let changelog = state.drain_changelog();
    assert_eq!(changelog.len(), 1, "only the kept write is replicated");
}

#[test]
fn restore_resumes_from_the_later_of_local_checkpoint_and_committed_offsets() {
    let dir = TempDir::new("resume");
    let mut state = TaskState::open(&dir.0, STORES).unwrap();
    // Local state committed up to input offset 10 ...
    state.set_source(&SourceOffset::new("in", 0, 9));
    state.store_mut("balances").unwrap().put(b"k", b"9").unwrap();
    let mut changelog: Vec<(i64, ChangelogRecord)> = state.drain_changelog().into_iter().map(|r| (0, r)).collect();
    state.commit(&[("in", 0, 10)], &[("balances", 1)]).unwrap();
    // ... while the changelog and the consumer group went on to offset 20 (the local sled
    // batch for it was lost), and input 20 was delivered but not committed.
    for (changelog_offset, input) in [(1, 15), (2, 20)] {
        let record = ChangelogRecord { store: "balances".into(), key: b"k".to_vec(), value: Some(input.to_string().into_bytes()), source: SourceOffset::new("in", 0, input) };
        changelog.push((changelog_offset, record));
    }
    let tail: Vec<_> = changelog.into_iter().filter(|(o, _)| *o >= 1).collect();
    let stats = state.restore(tail, &BTreeMap::from([(("in".to_string(), 0), 20)])).unwrap();
    assert_eq!((stats.applied, stats.skipped), (1, 1));
    assert_eq!(state.store("balances").unwrap().get(b"k").unwrap().as_deref(), Some(&b"15"[..]));
    assert_eq!(state.checkpoint().input_offsets[&("in".to_string(), 0)], 20, "resume at the committed offset");
    assert_eq!(state.checkpoint().changelog_offsets["balances"], 3);
}

#[test]
fn entry_counts_follow_puts_and_deletes_across_commits() {
    let dir = TempDir::new("counts");
    let mut state = TaskState::open(&dir.0, STORES).unwrap();
    assert_eq!(state.store("balances").unwrap().approximate_num_entries(), 0);
    let commit = |state: &mut TaskState| {
        state.drain_changelog();
        state.commit(&[], &[]).unwrap();
    };
    let store = state.store_mut("balances").unwrap();
    assert_eq!(store.get(b"a").unwrap(), None);
    store.put(b"a", b"1").unwrap();
    store.put(b"b", b"1").unwrap();
    commit(&mut state);
    assert_eq!(state.store("balances").unwrap().approximate_num_entries(), 2);
    // A blind write to an existing key after a read of it before the commit.
    let store = state.store_mut("balances").unwrap();
    store.put(b"a", b"2").unwrap();
    store.delete(b"b").unwrap();
    store.delete(b"missing").unwrap();
    store.put(b"c", b"1").unwrap();
    commit(&mut state);
    assert_eq!(state.store("balances").unwrap().approximate_num_entries(), 2);
}
