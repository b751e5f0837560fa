//! [`TopologyTestDriver`]: runs a topology in-process, without a broker or threads, in the
//! spirit of Kafka Streams' (KIP-470). It drives the same [`TaskManager`] as the runtime's
//! stream thread (task creation and restore, the partition groups' timestamp order, error
//! handling, punctuation, the commit protocol); only the I/O is in memory: topics are logs
//! (partitioned with Kafka's murmur2 partitioner), repartition topics loop back into the
//! topology as on a broker, changelog topics receive each key's last write at commit, and the
//! wall clock is the driver's. [`TopologyTestDriver::crash`] simulates `kill -9` and a restart
//! that restores tasks.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use sluice_state::{ChangelogRecord, KeyValueStore, SourceOffset};

use crate::changelog_reader::{ChangelogConsumer, ChangelogPartition};
use crate::error::StreamsError;
use crate::interactive::LocalStores;
use crate::partition_group::{FetchState, StampedRecord};
use crate::partitioner::partition_for_key;
use crate::processor::ProcessError;
use crate::record::{Record, RecordMetadata, Value};
use crate::record_collector::{ChangelogOffsets, RecordCollector, SendError};
use crate::record_deserializer::{dead_letter_record, RecordDeserializer};
use crate::registry::ProcessorRegistry;
use crate::serde::{DeadLetter, Serdes};
use crate::stream_task::TaskId;
use crate::task_manager::{ErrorPolicy, TaskManager, TaskManagerConfig};
use crate::topology::{changelog_topic, StoreKind, Topology};

/// A store entry: key and value bytes.
pub type Entry = (Vec<u8>, Vec<u8>);

pub use crate::DLQ_TOPIC;

/// Errors of the driver: the engine's.
pub type DriverError = StreamsError;

/// Driver settings.
#[derive(Debug, Clone)]
pub struct TestDriverConfig {
    /// Kafka Streams `application.id` (prefix of internal topics).
    pub application_id: String,
    /// Where task state lives; each driver should have its own.
    pub state_dir: PathBuf,
    /// Commit after this many piped records (1 = after every record, as Kafka's driver does).
    pub commit_every_records: usize,
    /// Kafka Streams `processing.exception.handler` (poison pills).
    pub processing_error_policy: ErrorPolicy,
    /// Kafka Streams `max.task.idle.ms`, judged by the driver's wall clock.
    pub max_task_idle_ms: i64,
    /// Initial wall clock, milliseconds.
    pub wall_clock_start_ms: i64,
}

impl TestDriverConfig {
    /// Defaults with state under a fresh directory named after `name` in the system temp dir.
    pub fn new(name: &str) -> TestDriverConfig {
        let state_dir = std::env::temp_dir().join(format!("sluice-driver-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state_dir);
        TestDriverConfig {
            application_id: "test".to_string(),
            state_dir,
            commit_every_records: 1,
            processing_error_policy: ErrorPolicy::Fail,
            max_task_idle_ms: 0,
            wall_clock_start_ms: 0,
        }
    }
}

/// A record in an in-memory topic partition.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    /// The record.
    pub record: Record,
    /// For changelog topics: the store write it carries.
    pub changelog: Option<ChangelogRecord>,
}

impl LogRecord {
    /// The record as a consumer would see it (changelog records with their key, value or
    /// tombstone, and `sluice.source.*` headers).
    pub fn to_record(&self) -> Record {
        match &self.changelog {
            None => self.record.clone(),
            Some(change) => Record {
                key: Some(String::from_utf8_lossy(&change.key).into_owned()),
                value: change.value.clone().map_or(Value::Null, Value::Bytes),
                timestamp: self.record.timestamp,
                headers: change.source.headers().into_iter().map(|(k, v)| (k.to_string(), v.into_bytes())).collect(),
            },
        }
    }
}

/// How [`TopologyTestDriver::crash`] restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartMode {
    /// Keep the state directories: resume from the local checkpoint.
    KeepState,
    /// Delete the state directories: restore every store from its changelog.
    WipeState,
}

/// topic -> partitions -> records (offset = index).
type Logs = BTreeMap<String, Vec<Vec<LogRecord>>>;

/// A record fetched from an in-memory topic: where it is, and what the partition group and
/// the partition check need (the record itself is read from the log when it is processed).
#[derive(Debug, Clone)]
pub struct FetchedRecord {
    offset: i64,
    timestamp: i64,
    key: Option<String>,
}

impl StampedRecord for FetchedRecord {
    fn offset(&self) -> i64 {
        self.offset
    }

    fn timestamp(&self) -> i64 {
        self.timestamp
    }

    fn key(&self) -> Option<&[u8]> {
        self.key.as_deref().map(str::as_bytes)
    }
}

/// Reads records from the in-memory topics (they are typed already); dead letters are the
/// application's, as in production.
struct InMemorySerde<'a> {
    logs: &'a RefCell<Logs>,
    serdes: &'a dyn Serdes,
}

impl InMemorySerde<'_> {
    fn record(&self, metadata: &RecordMetadata) -> Option<Record> {
        let logs = self.logs.borrow();
        let entry = logs.get(&*metadata.topic)?.get(metadata.partition as usize)?.get(metadata.offset as usize)?;
        Some(entry.to_record())
    }
}

impl RecordDeserializer<FetchedRecord> for InMemorySerde<'_> {
    fn deserialize(&self, metadata: &RecordMetadata, _raw: &FetchedRecord) -> Result<Record, ProcessError> {
        self.record(metadata).ok_or_else(|| ProcessError::Fatal(format!("no record at {}-{}@{}", metadata.topic, metadata.partition, metadata.offset)))
    }

    fn dead_letter(&self, metadata: &RecordMetadata, raw: &FetchedRecord, error: &ProcessError) -> Record {
        let record = self.record(metadata).unwrap_or_else(|| Record { key: raw.key.clone(), value: Value::Null, timestamp: raw.timestamp, headers: Vec::new() });
        let (key, value) = (record.key.as_deref().map(str::as_bytes), record.value.as_bytes());
        let letter = DeadLetter::new(metadata, record.timestamp, error, key, value);
        dead_letter_record(&letter, self.serdes.dead_letter(&letter), &record.headers, key, value)
    }
}

/// Appends to the in-memory topics.
struct InMemoryCollector<'a> {
    logs: &'a RefCell<Logs>,
    wall_clock: i64,
    offsets: ChangelogOffsets,
}

impl RecordCollector for InMemoryCollector<'_> {
    fn send(&mut self, topic: &str, record: &Record) -> Result<(), SendError> {
        let mut logs = self.logs.borrow_mut();
        let parts = logs.get_mut(topic).ok_or_else(|| SendError::Fatal(StreamsError::UnknownTopic(topic.to_string())))?;
        let partition = record.key.as_deref().map_or(0, |key| partition_for_key(key.as_bytes(), parts.len() as i32));
        parts[partition as usize].push(LogRecord { record: record.clone(), changelog: None });
        Ok(())
    }

    fn send_changelog(&mut self, task: TaskId, topic: &str, change: ChangelogRecord) -> Result<(), SendError> {
        let mut logs = self.logs.borrow_mut();
        let log = logs.get_mut(topic).and_then(|parts| parts.get_mut(task.partition as usize)).ok_or_else(|| SendError::Fatal(StreamsError::UnknownTopic(topic.to_string())))?;
        let store = Arc::clone(&change.store);
        // The Record form is built when read (see `LogRecord::to_record`).
        log.push(LogRecord { record: Record { key: None, value: Value::Null, timestamp: self.wall_clock, headers: Vec::new() }, changelog: Some(change) });
        self.offsets.insert((task, store), log.len() as i64);
        Ok(())
    }

    fn flush(&mut self) -> Result<ChangelogOffsets, SendError> {
        Ok(std::mem::take(&mut self.offsets))
    }
}

/// Reads the in-memory changelog topics.
struct InMemoryChangelog<'a> {
    logs: &'a RefCell<Logs>,
}

impl ChangelogConsumer for InMemoryChangelog<'_> {
    fn watermarks(&mut self, topic: &str, partition: i32) -> Result<Option<(i64, i64)>, String> {
        Ok(self.logs.borrow().get(topic).and_then(|parts| parts.get(partition as usize)).map(|log| (0, log.len() as i64)))
    }

    fn read(&mut self, partitions: &[ChangelogPartition], _changed: bool, max: usize, _wait: std::time::Duration) -> Result<Vec<(usize, i64, ChangelogRecord)>, String> {
        let logs = self.logs.borrow();
        let mut records = Vec::new();
        for (index, p) in partitions.iter().enumerate() {
            let Some(log) = logs.get(&p.topic).and_then(|parts| parts.get(p.partition as usize)) else { continue };
            for offset in p.next..p.end.min(log.len() as i64) {
                if records.len() >= max {
                    return Ok(records);
                }
                if let Some(change) = &log[offset as usize].changelog {
                    records.push((index, offset, change.clone()));
                }
            }
        }
        Ok(records)
    }

    fn lag(&mut self, partition: &ChangelogPartition) -> Option<i64> {
        self.logs.borrow().get(&partition.topic).and_then(|parts| parts.get(partition.partition as usize)).map(|log| log.len() as i64 - partition.next)
    }

    fn reached_end(&mut self, partition: &ChangelogPartition) -> bool {
        partition.next >= partition.end
    }
}

/// In-process test driver. See the module docs.
pub struct TopologyTestDriver {
    topology: Arc<Topology>,
    config: TestDriverConfig,
    tasks: TaskManager<FetchedRecord>,
    serdes: Arc<dyn Serdes>,
    logs: RefCell<Logs>,
    /// The driver's consumer position (next offset to fetch) per input topic-partition.
    fetched: BTreeMap<(String, i32), i64>,
    /// Committed consumer offsets (next offset), per input topic-partition.
    committed: BTreeMap<(String, i32), i64>,
    /// Read cursors of `read_output`, per topic-partition.
    cursors: BTreeMap<(String, i32), usize>,
    wall_clock: i64,
    uncommitted_records: usize,
}

impl TopologyTestDriver {
    /// Creates every task of `topology` (one per sub-topology partition).
    pub fn new(topology: Topology, registry: ProcessorRegistry, config: TestDriverConfig) -> Result<TopologyTestDriver, DriverError> {
        registry.check(&topology).map_err(DriverError::Registry)?;
        let mut logs = BTreeMap::new();
        for topic in topology.topics_to_create(&config.application_id) {
            logs.insert(topic.name.clone(), vec![Vec::new(); usize::try_from(topic.partitions).unwrap_or(1)]);
        }
        logs.entry(DLQ_TOPIC.to_string()).or_insert_with(|| vec![Vec::new()]);
        let topology = Arc::new(topology);
        let manager_config = TaskManagerConfig {
            application_id: config.application_id.clone(),
            state_dir: config.state_dir.clone(),
            deserialization_error_policy: ErrorPolicy::Fail,
            processing_error_policy: config.processing_error_policy,
            max_task_idle_ms: config.max_task_idle_ms,
            retry_backoff_ms: 100,
            retry_backoff_max_ms: 1000,
        };
        let serdes = Arc::clone(registry.serdes());
        let tasks = TaskManager::new(Arc::clone(&topology), Arc::new(registry), manager_config, LocalStores::default());
        let wall_clock = config.wall_clock_start_ms;
        let mut driver = TopologyTestDriver {
            topology,
            config,
            tasks,
            serdes,
            logs: RefCell::new(logs),
            fetched: BTreeMap::new(),
            committed: BTreeMap::new(),
            cursors: BTreeMap::new(),
            wall_clock,
            uncommitted_records: 0,
        };
        driver.start_tasks()?;
        Ok(driver)
    }

    /// Creates every task and restores it (from the local checkpoint, all of the changelog
    /// after a wipe); the driver's consumer resumes at the tasks' resume positions.
    fn start_tasks(&mut self) -> Result<(), DriverError> {
        for id in self.tasks.all_task_ids() {
            let inputs = self.tasks.input_topics(id.subtopology);
            let committed: BTreeMap<(String, i32), i64> =
                self.committed.iter().filter(|((topic, p), _)| *p == id.partition && inputs.contains(topic)).map(|(k, v)| (k.clone(), *v)).collect();
            let seeks = self.tasks.create(id, &committed, &mut InMemoryChangelog { logs: &self.logs })?;
            for (topic, partition, offset) in seeks {
                self.fetched.insert((topic.to_string(), partition), offset);
            }
        }
        while self.tasks.is_restoring() {
            self.tasks.restore(self.wall_clock, &mut InMemoryChangelog { logs: &self.logs }, usize::MAX)?;
        }
        Ok(())
    }

    /// Appends a record to `topic` (partitioned by key, like a producer) and runs the
    /// topology until every task has caught up; commits per `commit_every_records`.
    pub fn pipe_input(&mut self, topic: &str, record: Record) -> Result<(), DriverError> {
        self.append(topic, record)?;
        self.run()?;
        self.uncommitted_records += 1;
        if self.uncommitted_records >= self.config.commit_every_records {
            self.commit()?;
        }
        Ok(())
    }

    /// Appends a record to a topic without processing (as a producer would).
    pub fn append(&mut self, topic: &str, record: Record) -> Result<(i32, i64), DriverError> {
        let mut logs = self.logs.borrow_mut();
        let parts = logs.get_mut(topic).ok_or_else(|| DriverError::UnknownTopic(topic.to_string()))?;
        let partition = record.key.as_deref().map_or(0, |key| partition_for_key(key.as_bytes(), parts.len() as i32));
        let log = &mut parts[partition as usize];
        log.push(LogRecord { record, changelog: None });
        Ok((partition, log.len() as i64 - 1))
    }

    /// Fetches every appended input record into its task's queue (the driver's consumer).
    fn fetch(&mut self) {
        for (topic, partition, offset) in self.tasks.take_seeks() {
            self.fetched.insert((topic.to_string(), partition), offset);
        }
        let logs = self.logs.borrow();
        for ((topic, partition), next) in &mut self.fetched {
            let Some(log) = logs.get(topic).and_then(|parts| parts.get(*partition as usize)) else { continue };
            while (*next as usize) < log.len() {
                let entry = &log[*next as usize];
                let record = FetchedRecord { offset: *next, timestamp: entry.record.timestamp, key: entry.record.key.clone() };
                self.tasks.add_record(topic, *partition, record);
                *next += 1;
            }
        }
    }

    /// Processes every appended record not yet processed, repartition round trips included.
    pub fn run(&mut self) -> Result<(), DriverError> {
        loop {
            self.fetch();
            let logs = &self.logs;
            let mut fetch_state = |topic: &str, partition: i32, next: i64| {
                let behind = logs.borrow().get(topic).and_then(|parts| parts.get(partition as usize)).is_some_and(|log| log.len() as i64 > next);
                if behind {
                    FetchState::Lagging
                } else {
                    FetchState::CaughtUp
                }
            };
            let mut collector = InMemoryCollector { logs, wall_clock: self.wall_clock, offsets: ChangelogOffsets::new() };
            let processed = self.tasks.process(self.wall_clock, usize::MAX, &InMemorySerde { logs, serdes: &*self.serdes }, &mut collector, &mut fetch_state)?;
            if processed == 0 && !self.has_unfetched() {
                return Ok(());
            }
        }
    }

    /// True when an input partition has records the driver's consumer has not fetched.
    fn has_unfetched(&self) -> bool {
        let logs = self.logs.borrow();
        self.fetched.iter().any(|((topic, partition), next)| logs.get(topic).and_then(|parts| parts.get(*partition as usize)).is_some_and(|log| log.len() as i64 > *next))
    }

    /// The commit protocol (docs/guarantees.md): deliver changelog records, then commit task state
    /// with input positions, then the consumer offsets.
    pub fn commit(&mut self) -> Result<(), DriverError> {
        let mut collector = InMemoryCollector { logs: &self.logs, wall_clock: self.wall_clock, offsets: ChangelogOffsets::new() };
        if let Some(positions) = self.tasks.commit(self.wall_clock, &mut collector)? {
            for (topic, partition, position) in positions {
                self.committed.insert((topic.to_string(), partition), position);
            }
        }
        self.uncommitted_records = 0;
        Ok(())
    }

    /// Simulates `kill -9` of the application and a restart: uncommitted store writes are
    /// lost (their changelog records too, unless `changelog_delivered`: the crash came after
    /// the producer flush but before the state commit); outputs already appended stay on
    /// their topics (at-least-once on the wire). Tasks then restore (from the local
    /// checkpoint, or from the changelog after a wipe) and resume from the committed offsets.
    pub fn crash(&mut self, mode: RestartMode, changelog_delivered: bool) -> Result<(), DriverError> {
        if changelog_delivered {
            let mut collector = InMemoryCollector { logs: &self.logs, wall_clock: self.wall_clock, offsets: ChangelogOffsets::new() };
            self.tasks.deliver_changelog(&mut collector)?;
        }
        for id in self.tasks.owned_ids() {
            self.tasks.close_dirty(id);
            if mode == RestartMode::WipeState {
                let dir = id.state_dir(&self.config.state_dir, &self.config.application_id);
                std::fs::remove_dir_all(&dir).map_err(|source| sluice_state::StateError::Dir { path: dir, source })?;
            }
        }
        self.uncommitted_records = 0;
        self.fetched.clear();
        self.start_tasks()?;
        self.run()
    }

    /// Advances the wall clock, fires due wall-clock punctuations, and runs.
    pub fn advance_wall_clock(&mut self, by_ms: i64) -> Result<(), DriverError> {
        self.wall_clock += by_ms;
        let mut collector = InMemoryCollector { logs: &self.logs, wall_clock: self.wall_clock, offsets: ChangelogOffsets::new() };
        self.tasks.punctuate(self.wall_clock, &mut collector)?;
        self.run()?;
        self.commit()
    }

    /// Every record on `topic` (all partitions, in partition then offset order).
    pub fn records(&self, topic: &str) -> Vec<Record> {
        self.logs.borrow().get(topic).map(|parts| parts.iter().flatten().map(LogRecord::to_record).collect()).unwrap_or_default()
    }

    /// Records on `topic` not read by a previous call (like a consumer reading outputs).
    pub fn read_output(&mut self, topic: &str) -> Vec<Record> {
        let logs = self.logs.borrow();
        let Some(parts) = logs.get(topic) else { return Vec::new() };
        let mut out = Vec::new();
        for (p, log) in parts.iter().enumerate() {
            let cursor = self.cursors.entry((topic.to_string(), p as i32)).or_insert(0);
            out.extend(log[*cursor..].iter().map(LogRecord::to_record));
            *cursor = log.len();
        }
        out.sort_by_key(|r| r.timestamp);
        out
    }

    /// The value of `key` in `store`, read from the task owning the key's partition.
    pub fn store_get(&self, store: &str, key: &str) -> Result<Option<Vec<u8>>, DriverError> {
        let sub = self.topology.subtopologies.iter().find(|s| s.stores.iter().any(|n| n == store)).ok_or_else(|| DriverError::UnknownTopic(store.to_string()))?;
        let partition = partition_for_key(key.as_bytes(), sub.partitions);
        let task = self.tasks.task(TaskId { subtopology: sub.id, partition }).ok_or_else(|| DriverError::UnknownTopic(store.to_string()))?;
        Ok(task.state().store(store)?.get(key.as_bytes())?)
    }

    /// Every entry of `store` across all tasks, sorted by key.
    pub fn store_entries(&self, store: &str) -> Result<Vec<Entry>, DriverError> {
        let mut entries = Vec::new();
        for (_, task) in self.tasks.tasks() {
            if let Ok(s) = task.state().store(store) {
                for entry in s.prefix_scan(b"") {
                    entries.push(entry?);
                }
            }
        }
        entries.sort();
        Ok(entries)
    }

    /// Committed consumer offsets (next offset per input topic-partition).
    pub fn committed_offsets(&self) -> &BTreeMap<(String, i32), i64> {
        &self.committed
    }

    /// The driver's wall clock.
    pub fn wall_clock(&self) -> i64 {
        self.wall_clock
    }

    /// Stores of kind dedupe (for tests that inspect them).
    pub fn dedupe_stores(&self) -> BTreeSet<String> {
        self.topology.stores.iter().filter(|s| s.kind == StoreKind::Dedupe).map(|s| s.name.clone()).collect()
    }

    /// The source position a changelog record of this driver carries, for assertions.
    pub fn changelog_sources(&self, store: &str) -> Vec<SourceOffset> {
        self.logs
            .borrow()
            .get(&changelog_topic(&self.config.application_id, store))
            .map(|parts| parts.iter().flatten().filter_map(|e| e.changelog.as_ref().map(|c| c.source.clone())).collect())
            .unwrap_or_default()
    }
}

impl Drop for TopologyTestDriver {
    fn drop(&mut self) {
        for id in self.tasks.owned_ids() {
            self.tasks.close_dirty(id);
        }
        let _ = std::fs::remove_dir_all(&self.config.state_dir);
    }
}
