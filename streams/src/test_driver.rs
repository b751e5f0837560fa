//! [`TopologyTestDriver`]: runs a topology in-process, without a broker or threads, in the
//! spirit of Kafka Streams' (KIP-470). Topics are in-memory logs (partitioned with Kafka's
//! murmur2 partitioner); repartition topics loop back into the topology as on a broker;
//! changelog topics receive every store write at commit; the wall clock is the driver's.
//! [`TopologyTestDriver::crash`] simulates `kill -9` and a restart that restores tasks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use sluice_state::{ChangelogRecord, KeyValueStore, SourceOffset, TaskState};

use crate::partitioner::partition_for_key;
use crate::processor::{ErrorAction, ProcessError};
use crate::record::{OutputRecord, Record, RecordMetadata, Value};
use crate::registry::ProcessorRegistry;
use crate::task::{Task, TaskError, TaskId};
use crate::topology::{changelog_topic, StoreKind, Topology};

/// A store entry: key and value bytes.
pub type Entry = (Vec<u8>, Vec<u8>);

pub use crate::DLQ_TOPIC;

/// What the driver does with a record whose processing fails with a poison pill (Kafka
/// Streams' `processing.exception.handler`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessingErrorPolicy {
    /// Write a DeadLetter to `sluice.dlq` and continue.
    Dlq,
    /// Skip the record and continue.
    LogAndContinue,
    /// Return the error.
    Fail,
}

/// Driver settings.
#[derive(Debug, Clone)]
pub struct TestDriverConfig {
    /// Kafka Streams `application.id` (prefix of internal topics).
    pub application_id: String,
    /// Where task state lives; each driver should have its own.
    pub state_dir: PathBuf,
    /// Commit after this many piped records (1 = after every record, as Kafka's driver does).
    pub commit_every_records: usize,
    /// Poison-pill policy.
    pub processing_error_policy: ProcessingErrorPolicy,
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
            processing_error_policy: ProcessingErrorPolicy::Fail,
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

/// In-process test driver. See the module docs.
pub struct TopologyTestDriver {
    topology: Topology,
    registry: ProcessorRegistry,
    config: TestDriverConfig,
    tasks: BTreeMap<TaskId, Task>,
    /// topic -> partitions -> records (offset = index).
    logs: BTreeMap<String, Vec<Vec<LogRecord>>>,
    /// Committed consumer offsets (next offset), per input topic-partition.
    committed: BTreeMap<(String, i32), i64>,
    /// Read cursors of `read_output`, per topic-partition.
    cursors: BTreeMap<(String, i32), usize>,
    wall_clock: i64,
    uncommitted_records: usize,
    /// Task ids, in order (the keys of `tasks`).
    task_ids: Vec<TaskId>,
}

/// Errors of the driver.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// A task could not be built.
    #[error(transparent)]
    Task(#[from] TaskError),
    /// Processing failed (policy `Fail`, or a retriable/fatal error).
    #[error("processing {topic}-{partition}@{offset} failed: {error}")]
    Process {
        /// Input topic.
        topic: String,
        /// Input partition.
        partition: i32,
        /// Input offset.
        offset: i64,
        /// The error.
        error: ProcessError,
    },
    /// Unknown processor kinds.
    #[error("{}", .0.join("\n"))]
    Registry(Vec<String>),
    /// A topic the topology does not know.
    #[error("unknown topic `{0}`")]
    UnknownTopic(String),
    /// State failure.
    #[error(transparent)]
    State(#[from] sluice_state::StateError),
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
        let wall_clock = config.wall_clock_start_ms;
        let mut driver = TopologyTestDriver {
            topology,
            registry,
            config,
            tasks: BTreeMap::new(),
            logs,
            committed: BTreeMap::new(),
            cursors: BTreeMap::new(),
            wall_clock,
            uncommitted_records: 0,
            task_ids: Vec::new(),
        };
        driver.start_tasks()?;
        Ok(driver)
    }

    fn task_dir(&self, id: TaskId) -> PathBuf {
        id.state_dir(&self.config.state_dir, &self.config.application_id)
    }

    /// Opens every task's state, restores what needs restoring, and builds the tasks.
    fn start_tasks(&mut self) -> Result<(), DriverError> {
        let ids: Vec<TaskId> = self
            .topology
            .subtopologies
            .iter()
            .flat_map(|sub| (0..sub.partitions).map(move |partition| TaskId { subtopology: sub.id, partition }))
            .collect();
        for id in ids {
            let stores = self.topology.task_stores(id.subtopology);
            let store_refs: Vec<(&str, bool)> = stores.iter().map(|(n, l)| (n.as_str(), *l)).collect();
            let mut state = TaskState::open(&self.task_dir(id), &store_refs)?;
            // Replay each changelog from the local checkpoint (all of it after a wipe).
            let mut records = Vec::new();
            for (store, logged) in &stores {
                if !logged {
                    continue;
                }
                let from = state.checkpoint().changelog_offsets.get(store).copied().unwrap_or(0);
                let log = &self.logs[&changelog_topic(&self.config.application_id, store)][usize::try_from(id.partition).unwrap_or(0)];
                for (offset, entry) in log.iter().enumerate().skip(usize::try_from(from).unwrap_or(0)) {
                    if let Some(change) = &entry.changelog {
                        records.push((offset as i64, change.clone()));
                    }
                }
            }
            // Always: the resume positions come out of it (see TaskState::restore).
            let inputs = self.topology.input_topics(id.subtopology, &self.config.application_id);
            let committed: BTreeMap<(String, i32), i64> = self
                .committed
                .iter()
                .filter(|((topic, p), _)| *p == id.partition && inputs.contains(topic))
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            state.restore(records, &committed)?;
            let task = Task::new(id, &self.topology, &self.registry, &self.config.application_id, state, self.wall_clock)?;
            self.tasks.insert(id, task);
        }
        self.task_ids = self.tasks.keys().copied().collect();
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
        let partitions = self.logs.get(topic).ok_or_else(|| DriverError::UnknownTopic(topic.to_string()))?.len() as i32;
        let partition = match &record.key {
            Some(key) => partition_for_key(key.as_bytes(), partitions),
            None => 0,
        };
        let log = &mut self.logs.get_mut(topic).expect("checked")[partition as usize];
        log.push(LogRecord { record, changelog: None });
        Ok((partition, log.len() as i64 - 1))
    }

    /// Processes every appended record not yet processed, repartition round trips included.
    pub fn run(&mut self) -> Result<(), DriverError> {
        loop {
            let mut progressed = false;
            for t in 0..self.task_ids.len() {
                let id = self.task_ids[t];
                while let Some((topic, offset)) = self.next_input(id) {
                    progressed = true;
                    let record = self.logs[&*topic][id.partition as usize][offset as usize].record.clone();
                    let metadata = RecordMetadata { topic, partition: id.partition, offset };
                    let task = self.tasks.get_mut(&id).expect("task exists");
                    if let Err(error) = task.process(metadata.clone(), record) {
                        let record = self.logs[&*metadata.topic][id.partition as usize][offset as usize].record.clone();
                        self.handle_error(id, &metadata, &record, error)?;
                    }
                    self.deliver_outputs(id);
                }
            }
            if !progressed {
                return Ok(());
            }
        }
    }

    /// The input with the smallest timestamp among a task's partitions with pending records.
    fn next_input(&self, id: TaskId) -> Option<(Arc<str>, i64)> {
        let task = &self.tasks[&id];
        let mut best: Option<(i64, &Arc<str>, i64)> = None;
        for (topic, position) in task.inputs() {
            let Some(log) = self.logs.get(&**topic).and_then(|l| l.get(id.partition as usize)) else { continue };
            if let Some(entry) = log.get(position as usize) {
                let candidate = (entry.record.timestamp, topic, position);
                if best.is_none_or(|b| (candidate.0, &**candidate.1) < (b.0, &**b.1)) {
                    best = Some(candidate);
                }
            }
        }
        best.map(|(_, topic, offset)| (Arc::clone(topic), offset))
    }

    fn handle_error(&mut self, id: TaskId, metadata: &RecordMetadata, record: &Record, error: ProcessError) -> Result<(), DriverError> {
        let fail = |error| DriverError::Process { topic: metadata.topic.to_string(), partition: metadata.partition, offset: metadata.offset, error };
        if error.action() != ErrorAction::DeadLetter {
            return Err(fail(error));
        }
        match self.config.processing_error_policy {
            ProcessingErrorPolicy::Fail => return Err(fail(error)),
            ProcessingErrorPolicy::LogAndContinue => {}
            ProcessingErrorPolicy::Dlq => {
                let letter = crate::dead_letter(metadata, record.timestamp, &error, record.key.as_deref().map(str::as_bytes), record.value.as_bytes());
                let mut dead = Record { key: record.key.clone(), value: Value::record(letter), timestamp: record.timestamp, headers: Vec::new() };
                for (name, value) in crate::dlq_headers(metadata, &error, record.key.as_deref().map(str::as_bytes), record.value.as_bytes()) {
                    dead.headers.push((name, value.into_bytes()));
                }
                self.append(DLQ_TOPIC, dead)?;
            }
        }
        self.tasks.get_mut(&id).expect("task exists").skip(metadata);
        Ok(())
    }

    fn deliver_outputs(&mut self, id: TaskId) {
        let outputs = self.tasks.get_mut(&id).expect("task exists").take_outputs();
        for OutputRecord { topic, record, .. } in outputs {
            // Sinks only name topics the topology declares.
            let _ = self.append(&topic, record);
        }
    }

    /// The commit protocol (docs/guarantees.md): deliver changelog records, then commit task state
    /// with input positions, then the consumer offsets.
    pub fn commit(&mut self) -> Result<(), DriverError> {
        let ids: Vec<TaskId> = self.tasks.keys().copied().collect();
        for id in ids {
            let offsets = self.deliver_changelog(id);
            let offsets: Vec<(&str, i64)> = offsets.iter().map(|(s, o)| (s.as_str(), *o)).collect();
            let task = self.tasks.get_mut(&id).expect("task exists");
            task.commit(&offsets)?;
            let positions = task.positions();
            self.committed.extend(positions);
        }
        self.uncommitted_records = 0;
        Ok(())
    }

    /// Appends a task's pending changelog records to their changelog topics; returns the
    /// next changelog offset per store written.
    fn deliver_changelog(&mut self, id: TaskId) -> Vec<(String, i64)> {
        let records = self.tasks.get_mut(&id).expect("task exists").drain_changelog();
        let mut next: BTreeMap<String, i64> = BTreeMap::new();
        let mut current: Option<(std::sync::Arc<str>, String)> = None;
        for change in records {
            if current.as_ref().is_none_or(|(store, _)| *store != change.store) {
                current = Some((change.store.clone(), changelog_topic(&self.config.application_id, &change.store)));
            }
            let topic = &current.as_ref().expect("set above").1;
            let log = &mut self.logs.get_mut(topic).expect("changelog topic exists")[id.partition as usize];
            // The Record form is built when read (see `changelog_record`).
            let record = Record { key: None, value: Value::Null, timestamp: self.wall_clock, headers: Vec::new() };
            let store = change.store.to_string();
            log.push(LogRecord { record, changelog: Some(change) });
            if next.get(&store).is_none_or(|n| *n < log.len() as i64) {
                next.insert(store, log.len() as i64);
            }
        }
        next.into_iter().collect()
    }

    /// Simulates `kill -9` of the application and a restart: uncommitted store writes are
    /// lost (their changelog records too, unless `changelog_delivered`: the crash came after
    /// the producer flush but before the state commit); outputs already appended stay on
    /// their topics (at-least-once on the wire). Tasks then restore (from the local
    /// checkpoint, or from the changelog after a wipe) and resume from the committed offsets.
    pub fn crash(&mut self, mode: RestartMode, changelog_delivered: bool) -> Result<(), DriverError> {
        let ids: Vec<TaskId> = self.tasks.keys().copied().collect();
        if changelog_delivered {
            for &id in &ids {
                self.deliver_changelog(id);
            }
        }
        for id in ids {
            let task = self.tasks.remove(&id).expect("task exists");
            let mut state = task.close();
            state.abort();
            drop(state);
            if mode == RestartMode::WipeState {
                let dir = self.task_dir(id);
                std::fs::remove_dir_all(&dir).map_err(|source| sluice_state::StateError::Dir { path: dir, source })?;
            }
        }
        self.uncommitted_records = 0;
        self.start_tasks()?;
        self.run()
    }

    /// Advances the wall clock, fires due wall-clock punctuations, and runs.
    pub fn advance_wall_clock(&mut self, by_ms: i64) -> Result<(), DriverError> {
        self.wall_clock += by_ms;
        let ids: Vec<TaskId> = self.tasks.keys().copied().collect();
        for id in ids {
            let now = self.wall_clock;
            self.tasks.get_mut(&id).expect("task exists").advance_wall_clock(now).map_err(|error| DriverError::Process {
                topic: String::new(),
                partition: id.partition,
                offset: -1,
                error,
            })?;
            self.deliver_outputs(id);
        }
        self.run()?;
        self.commit()
    }

    /// Every record on `topic` (all partitions, in partition then offset order).
    pub fn records(&self, topic: &str) -> Vec<Record> {
        self.logs.get(topic).map(|parts| parts.iter().flatten().map(LogRecord::to_record).collect()).unwrap_or_default()
    }

    /// Records on `topic` not read by a previous call (like a consumer reading outputs).
    pub fn read_output(&mut self, topic: &str) -> Vec<Record> {
        let Some(parts) = self.logs.get(topic) else { return Vec::new() };
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
        let task = &self.tasks[&TaskId { subtopology: sub.id, partition }];
        Ok(task.state().store(store)?.get(key.as_bytes())?)
    }

    /// Every entry of `store` across all tasks, sorted by key.
    pub fn store_entries(&self, store: &str) -> Result<Vec<Entry>, DriverError> {
        let mut entries = Vec::new();
        for task in self.tasks.values() {
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
            .get(&changelog_topic(&self.config.application_id, store))
            .map(|parts| parts.iter().flatten().filter_map(|e| e.changelog.as_ref().map(|c| c.source.clone())).collect())
            .unwrap_or_default()
    }
}

impl Drop for TopologyTestDriver {
    fn drop(&mut self) {
        self.tasks.clear();
        let _ = std::fs::remove_dir_all(&self.config.state_dir);
    }
}
