//! [`TaskManager`] (Kafka Streams' name): the tasks of one stream thread, and everything done
//! to them: created when their partitions are assigned (restoring first, through the
//! [`StoreChangelogReader`]), closed when revoked, fed fetched records, processed in the order
//! their [`PartitionGroup`] chooses, punctuated, committed (docs/guarantees.md, the commit
//! protocol), and rewound to their last commit when a retriable failure says to redo the
//! work. The runtime's stream thread and the [`crate::TopologyTestDriver`] both drive this
//! same code; only the I/O behind [`RecordDeserializer`], [`RecordCollector`] and
//! [`ChangelogConsumer`] differs.
//!
//! Errors are acted on by kind ([`ProcessError::action`]):
//! - data errors (poison pills, undecodable or mis-partitioned records) go to the dead-letter
//!   queue, are logged and skipped, or stop the thread, per the configured handler;
//! - retriable errors (registry or broker unavailable) back off (`retry.backoff.ms`, doubling
//!   up to `retry.backoff.max.ms`) and retry the same record: it is never dead-lettered, and
//!   the thread never exits for it. A send that fails retriably discards every task's work
//!   since the last commit and redoes it from there;
//! - bugs (fatal errors) stop the thread loudly.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use sluice_state::TaskState;

use crate::changelog_reader::{ChangelogConsumer, StoreChangelogReader};
use crate::error::StreamsError;
use crate::interactive::LocalStores;
use crate::partition_group::{FetchState, PartitionGroup, StampedRecord};
use crate::processor::{ErrorAction, ProcessError};
use crate::record::RecordMetadata;
use crate::record_collector::{ChangelogOffsets, RecordCollector, SendError};
use crate::record_deserializer::RecordDeserializer;
use crate::registry::ProcessorRegistry;
use crate::stream_task::{StreamTask, TaskId};
use crate::topology::{changelog_topic, Topology};
use crate::DLQ_TOPIC;

/// What to do with a record that cannot be deserialized or processed (Kafka Streams'
/// `deserialization.exception.handler` / `processing.exception.handler`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorPolicy {
    /// Send it to `sluice.dlq` with `sluice.error.*` headers and continue.
    Dlq,
    /// Log it and continue.
    LogAndContinue,
    /// Stop the application.
    Fail,
}

/// The task manager's settings (Kafka Streams names).
#[derive(Debug, Clone)]
pub struct TaskManagerConfig {
    /// `application.id`.
    pub application_id: String,
    /// `state.dir`.
    pub state_dir: PathBuf,
    /// `deserialization.exception.handler`.
    pub deserialization_error_policy: ErrorPolicy,
    /// `processing.exception.handler`.
    pub processing_error_policy: ErrorPolicy,
    /// `max.task.idle.ms` (see [`crate::partition_group`]).
    pub max_task_idle_ms: i64,
    /// `retry.backoff.ms`: the first wait after a retriable failure.
    pub retry_backoff_ms: i64,
    /// `retry.backoff.max.ms`: the longest wait between retries.
    pub retry_backoff_max_ms: i64,
}

/// Consumer positions: `(topic, partition, next offset)`.
pub type Positions = Vec<(Arc<str>, i32, i64)>;

/// Waits after retriable failures, doubling up to a bound; reset by a success.
#[derive(Debug)]
struct Backoff {
    until: Option<i64>,
    next_ms: i64,
    base_ms: i64,
    max_ms: i64,
}

impl Backoff {
    fn active(&self, now: i64) -> bool {
        self.until.is_some_and(|until| now < until)
    }

    fn fail(&mut self, now: i64) -> i64 {
        let wait = self.next_ms;
        self.until = Some(now + wait);
        self.next_ms = (self.next_ms * 2).min(self.max_ms);
        wait
    }

    fn succeed(&mut self) {
        if self.until.is_some() {
            self.until = None;
            self.next_ms = self.base_ms;
        }
    }
}

/// The outcome of one record.
enum Step {
    Done,
    /// A retriable failure of this record: retry it when the backoff ends.
    Retry,
    /// A retriable send failure rewound every task: the consumer refetches.
    Rewound,
}

/// See the module docs. `R` is a fetched record as the I/O side delivers it.
pub struct TaskManager<R> {
    topology: Arc<Topology>,
    registry: Arc<ProcessorRegistry>,
    config: TaskManagerConfig,
    tasks: BTreeMap<TaskId, StreamTask>,
    /// The keys of `tasks`, in order (no allocation per processing round).
    running: Vec<TaskId>,
    /// Input queues of running and restoring tasks.
    groups: BTreeMap<TaskId, PartitionGroup<R>>,
    /// Which task reads a topic's partition.
    routes: HashMap<Arc<str>, Vec<(i32, TaskId)>>,
    reader: StoreChangelogReader,
    local_stores: LocalStores,
    /// Consumer positions to seek to: `(topic, partition, offset)`.
    seeks: Positions,
    backoff: Backoff,
    /// Changelog topic per store name.
    changelog_topics: HashMap<String, String>,
}

impl<R: StampedRecord> TaskManager<R> {
    /// A task manager with no tasks. Running tasks' stores are published in `local_stores`
    /// (interactive queries).
    pub fn new(topology: Arc<Topology>, registry: Arc<ProcessorRegistry>, config: TaskManagerConfig, local_stores: LocalStores) -> TaskManager<R> {
        let changelog_topics = topology.stores.iter().map(|s| (s.name.clone(), changelog_topic(&config.application_id, &s.name))).collect();
        let backoff = Backoff { until: None, next_ms: config.retry_backoff_ms, base_ms: config.retry_backoff_ms, max_ms: config.retry_backoff_max_ms.max(config.retry_backoff_ms) };
        TaskManager {
            topology,
            registry,
            config,
            tasks: BTreeMap::new(),
            running: Vec::new(),
            groups: BTreeMap::new(),
            routes: HashMap::new(),
            reader: StoreChangelogReader::default(),
            local_stores,
            seeks: Vec::new(),
            backoff,
            changelog_topics,
        }
    }

    /// The settings.
    pub fn config(&self) -> &TaskManagerConfig {
        &self.config
    }

    /// The input topics (broker names) of sub-topology `subtopology`.
    pub fn input_topics(&self, subtopology: usize) -> Vec<String> {
        self.topology.input_topics(subtopology, &self.config.application_id)
    }

    /// Every task of the topology (one per sub-topology partition).
    pub fn all_task_ids(&self) -> Vec<TaskId> {
        self.topology.subtopologies.iter().flat_map(|sub| (0..sub.partitions).map(move |partition| TaskId { subtopology: sub.id, partition })).collect()
    }

    /// True when task `id` is running or restoring here.
    pub fn owns(&self, id: TaskId) -> bool {
        self.groups.contains_key(&id)
    }

    /// Running tasks.
    pub fn tasks(&self) -> impl Iterator<Item = (&TaskId, &StreamTask)> {
        self.tasks.iter()
    }

    /// A running task.
    pub fn task(&self, id: TaskId) -> Option<&StreamTask> {
        self.tasks.get(&id)
    }

    /// Ids of running and restoring tasks.
    pub fn owned_ids(&self) -> Vec<TaskId> {
        self.groups.keys().copied().collect()
    }

    /// The restoring tasks, with the changelog records each has left to read.
    pub fn restore_progress(&self) -> Vec<(TaskId, i64)> {
        self.reader.restore_progress()
    }

    /// True while a task restores.
    pub fn is_restoring(&self) -> bool {
        self.reader.is_restoring()
    }

    /// True when a running task has fetched records waiting.
    pub fn has_buffered(&self) -> bool {
        self.tasks.keys().any(|id| self.groups.get(id).is_some_and(|g| !g.is_empty()))
    }

    /// Creates task `id`: opens its state and registers it for restore; it runs once restored
    /// (see [`TaskManager::restore`]). `committed` holds the group's committed offsets of its
    /// inputs. The consumer should seek its inputs to the returned resume positions.
    pub fn create(&mut self, id: TaskId, committed: &BTreeMap<(String, i32), i64>, changelogs: &mut dyn ChangelogConsumer) -> Result<Positions, StreamsError> {
        let stores = self.topology.task_stores(id.subtopology);
        let state = match self.reader.remove_standby(id) {
            Some(state) => {
                tracing::info!(task = %id, "standby task promoted to active");
                state
            }
            None => self.open_state(id, &stores)?,
        };
        let resume = state.resume_positions(committed);
        self.reader.register(id, state, committed, &stores, &self.config.application_id, changelogs)?;
        let topics: Vec<Arc<str>> = self.input_topics(id.subtopology).into_iter().map(Arc::from).collect();
        for topic in &topics {
            self.routes.entry(Arc::clone(topic)).or_default().push((id.partition, id));
        }
        self.groups.insert(id, PartitionGroup::new(&topics, id.partition, self.config.max_task_idle_ms));
        Ok(topics.iter().map(|t| (Arc::clone(t), id.partition, resume.get(&(t.to_string(), id.partition)).copied().unwrap_or(0))).collect())
    }

    fn open_state(&self, id: TaskId, stores: &[(String, bool)]) -> Result<TaskState, StreamsError> {
        let store_refs: Vec<(&str, bool)> = stores.iter().map(|(n, l)| (n.as_str(), *l)).collect();
        Ok(TaskState::open(&id.state_dir(&self.config.state_dir, &self.config.application_id), &store_refs)?)
    }

    /// Keeps standby tasks (see [`crate::standby`]) for the stateful tasks of `wanted` that do
    /// not run here: creates the missing ones, closes the others except those of `promoting`
    /// (assigned here by the group, not created yet: [`TaskManager::create`] promotes them).
    /// `committed(task, inputs)`
    /// gives the group's committed offsets of a new standby's inputs under `at_least_once`
    /// (`None` under `exactly_once_v2`).
    pub fn set_standbys(
        &mut self,
        wanted: &BTreeSet<TaskId>,
        promoting: &BTreeSet<TaskId>,
        mut committed: impl FnMut(TaskId, &[String]) -> Option<BTreeMap<(String, i32), i64>>,
    ) -> Result<(), StreamsError> {
        for id in self.reader.standby_ids() {
            if (!wanted.contains(&id) && !promoting.contains(&id)) || self.owns(id) {
                self.reader.remove_standby(id);
                tracing::info!(task = %id, "standby task closed");
            }
        }
        let kept = self.reader.standby_ids();
        for &id in wanted {
            let stores = self.topology.task_stores(id.subtopology);
            if self.owns(id) || kept.contains(&id) || !stores.iter().any(|(_, logged)| *logged) {
                continue;
            }
            let state = match self.open_state(id, &stores) {
                Ok(state) => state,
                // Still held (a task of this thread just closed, or another instance shares the
                // state directory): tried again at the next placement.
                Err(StreamsError::State(error @ sluice_state::StateError::Locked(_))) => {
                    tracing::warn!(task = %id, %error, "cannot open a standby task's state yet");
                    continue;
                }
                Err(error) => return Err(error),
            };
            let inputs = self.input_topics(id.subtopology);
            let committed = committed(id, &inputs);
            self.reader.register_standby(id, state, &stores, &self.config.application_id, &inputs, committed.as_ref())?;
        }
        Ok(())
    }

    /// Standby tasks kept here.
    pub fn standby_ids(&self) -> Vec<TaskId> {
        self.reader.standby_ids()
    }

    /// Under `at_least_once`: newer committed offsets of a standby's inputs.
    pub fn set_standby_committed(&mut self, id: TaskId, committed: BTreeMap<(String, i32), i64>) {
        self.reader.set_standby_committed(id, committed);
    }

    /// One standby step (see [`StoreChangelogReader::update_standbys`]).
    pub fn update_standbys(&mut self, changelogs: &mut dyn ChangelogConsumer, max_records: usize) -> Result<u64, StreamsError> {
        self.reader.update_standbys(changelogs, max_records)
    }

    /// One restore step (at most `max_records` changelog records); tasks whose restore
    /// completed start running. Returns the tasks that started.
    pub fn restore(&mut self, now: i64, changelogs: &mut dyn ChangelogConsumer, max_records: usize) -> Result<Vec<TaskId>, StreamsError> {
        let mut started = Vec::new();
        for (id, state) in self.reader.restore(changelogs, max_records)? {
            let task = StreamTask::new(id, &self.topology, &self.registry, &self.config.application_id, state, now)?;
            self.local_stores.add(id, task.state());
            self.tasks.insert(id, task);
            started.push(id);
        }
        self.running = self.tasks.keys().copied().collect();
        if !started.is_empty() {
            metrics::gauge!(crate::metrics::ACTIVE_TASKS).set(self.local_stores.len() as f64);
        }
        Ok(started)
    }

    /// Closes task `id` without committing (revoked, or a simulated crash): uncommitted work
    /// is dropped and redone by the next owner; the state stays on disk.
    pub fn close_dirty(&mut self, id: TaskId) {
        if let Some(task) = self.tasks.remove(&id) {
            self.local_stores.remove(id);
            let mut state = task.close();
            state.abort();
            tracing::info!(task = %id, "task suspended (state kept on disk)");
        }
        self.running = self.tasks.keys().copied().collect();
        self.reader.remove(id);
        if self.groups.remove(&id).is_some() {
            for routes in self.routes.values_mut() {
                routes.retain(|(_, task)| *task != id);
            }
        }
        let routes = &self.routes;
        self.seeks.retain(|(topic, partition, _)| routes.get(topic).is_some_and(|r| r.iter().any(|(p, _)| p == partition)));
        metrics::gauge!(crate::metrics::ACTIVE_TASKS).set(self.local_stores.len() as f64);
    }

    /// Closes every task after a clean commit: their state is flushed to disk.
    pub fn close_clean(&mut self) -> Result<(), StreamsError> {
        for id in self.reader.standby_ids() {
            if let Some(state) = self.reader.remove_standby(id) {
                state.flush()?;
            }
        }
        for id in self.owned_ids() {
            if let Some(task) = self.tasks.remove(&id) {
                self.local_stores.remove(id);
                task.close().flush()?;
                tracing::info!(task = %id, "task closed");
            }
            self.reader.remove(id);
            self.groups.remove(&id);
        }
        self.running.clear();
        self.routes.clear();
        Ok(())
    }

    /// The shared name of an input topic a task here reads (no allocation per record).
    pub fn input_topic(&self, topic: &str) -> Option<Arc<str>> {
        self.routes.get_key_value(topic).map(|(name, _)| Arc::clone(name))
    }

    /// Buffers a fetched record for the task reading `topic`'s `partition`; returns the
    /// length of its queue, or `None` when no task here reads it.
    pub fn add_record(&mut self, topic: &str, partition: i32, record: R) -> Option<usize> {
        let id = self.routes.get(topic)?.iter().find(|(p, _)| *p == partition)?.1;
        self.groups.get_mut(&id)?.add(topic, record)
    }

    /// Records buffered for `topic`'s `partition`.
    pub fn buffered(&self, topic: &str, partition: i32) -> usize {
        let Some(id) = self.routes.get(topic).and_then(|r| r.iter().find(|(p, _)| *p == partition)) else { return 0 };
        self.groups.get(&id.1).map_or(0, |g| g.len(topic))
    }

    /// Takes the consumer seeks a rewind asked for.
    pub fn take_seeks(&mut self) -> Positions {
        std::mem::take(&mut self.seeks)
    }

    /// Processes up to `max_per_task` buffered records of each running task, in the order
    /// its partition group chooses; `fetch_state(topic, partition, next offset)` tells whether
    /// an empty input partition has more on the broker. `now` is the wall clock (ms).
    /// Returns the records processed (or skipped).
    pub fn process(
        &mut self,
        now: i64,
        max_per_task: usize,
        deserializer: &dyn RecordDeserializer<R>,
        collector: &mut dyn RecordCollector,
        fetch_state: &mut dyn FnMut(&str, i32, i64) -> FetchState,
    ) -> Result<usize, StreamsError> {
        if self.backoff.active(now) {
            return Ok(0);
        }
        let mut processed = 0;
        for t in 0..self.running.len() {
            let id = self.running[t];
            for _ in 0..max_per_task {
                let (Some(task), Some(group)) = (self.tasks.get(&id), self.groups.get_mut(&id)) else { break };
                let Some(queue) = group.next(now, |topic| fetch_state(topic, id.partition, task.position(topic).unwrap_or(0))) else { break };
                let (topic, _) = group.peek(queue).expect("the chosen queue has a head");
                let topic = Arc::clone(topic);
                let record = group.pop(queue).expect("the chosen queue has a head");
                if record.offset() < task.position(&topic).unwrap_or(0) {
                    // Processed before the last crash or rewind, already in the state.
                    continue;
                }
                let metadata = RecordMetadata { topic, partition: id.partition, offset: record.offset() };
                tracing::trace!(task = %id, topic = %metadata.topic, offset = metadata.offset, timestamp = record.timestamp(), "processing");
                match self.process_one(id, &metadata, &record, now, deserializer, collector)? {
                    Step::Done => processed += 1,
                    Step::Retry => {
                        if let Some(group) = self.groups.get_mut(&id) {
                            group.push_front(&metadata.topic, record);
                        }
                        return Ok(processed);
                    }
                    Step::Rewound => return Ok(processed),
                }
            }
        }
        Ok(processed)
    }

    fn process_one(
        &mut self,
        id: TaskId,
        metadata: &RecordMetadata,
        record: &R,
        now: i64,
        deserializer: &dyn RecordDeserializer<R>,
        collector: &mut dyn RecordCollector,
    ) -> Result<Step, StreamsError> {
        let partitions = self.topology.subtopologies[id.subtopology].partitions;
        let decoded = match record.key().map(|key| crate::partitioner::check_partition(key, id.partition, partitions)) {
            Some(Err(reason)) => Err(ProcessError::poison("wrong_partition", reason)),
            _ => deserializer.deserialize(metadata, record),
        };
        let (result, policy) = match decoded {
            Err(error) => (Err(error), self.config.deserialization_error_policy),
            Ok(decoded) => (self.tasks.get_mut(&id).expect("running").process(metadata.clone(), decoded), self.config.processing_error_policy),
        };
        let fail = |error| StreamsError::Process { topic: metadata.topic.to_string(), partition: metadata.partition, offset: metadata.offset, error };
        match result {
            Ok(()) => self.backoff.succeed(),
            Err(error) => match error.action() {
                ErrorAction::Retry => {
                    let wait_ms = self.backoff.fail(now);
                    metrics::counter!(crate::metrics::TASK_RETRIES_TOTAL, "reason" => "process").increment(1);
                    tracing::warn!(topic = %metadata.topic, partition = metadata.partition, offset = metadata.offset, %error, wait_ms, "retriable failure; retrying the record after a backoff");
                    return Ok(Step::Retry);
                }
                ErrorAction::Fail => return Err(fail(error)),
                ErrorAction::DeadLetter => match policy {
                    ErrorPolicy::Fail => return Err(fail(error)),
                    ErrorPolicy::LogAndContinue => {
                        tracing::warn!(topic = %metadata.topic, partition = metadata.partition, offset = metadata.offset, %error, "record skipped");
                        self.tasks.get_mut(&id).expect("running").skip(metadata);
                    }
                    ErrorPolicy::Dlq => {
                        tracing::warn!(topic = %metadata.topic, partition = metadata.partition, offset = metadata.offset, %error, "record dead-lettered");
                        metrics::counter!(crate::metrics::DLQ_RECORDS_TOTAL, "reason" => error.class().to_string()).increment(1);
                        let letter = deserializer.dead_letter(metadata, record, &error);
                        self.tasks.get_mut(&id).expect("running").skip(metadata);
                        if let Err(error) = collector.send(DLQ_TOPIC, &letter) {
                            return self.send_failed(error, now, collector);
                        }
                    }
                },
            },
        }
        self.send_outputs(id, now, collector)
    }

    /// Sends what a task's sinks wrote.
    fn send_outputs(&mut self, id: TaskId, now: i64, collector: &mut dyn RecordCollector) -> Result<Step, StreamsError> {
        let outputs = self.tasks.get_mut(&id).expect("running").take_outputs();
        for output in outputs {
            if let Err(error) = collector.send(&output.topic, &output.record) {
                return self.send_failed(error, now, collector);
            }
        }
        Ok(Step::Done)
    }

    /// A send or flush failed: fatal errors stop the thread; retriable ones rewind every
    /// task to its last commit and back off.
    fn send_failed(&mut self, error: SendError, now: i64, collector: &mut dyn RecordCollector) -> Result<Step, StreamsError> {
        match error {
            SendError::Fatal(error) => Err(error),
            SendError::Retriable(reason) => {
                let wait_ms = self.backoff.fail(now);
                metrics::counter!(crate::metrics::TASK_RETRIES_TOTAL, "reason" => "send").increment(1);
                tracing::warn!(%reason, wait_ms, "a send failed; discarding the work since the last commit and redoing it after a backoff");
                self.abort_and_rewind(now, collector)?;
                Ok(Step::Rewound)
            }
        }
    }

    /// Aborts the collector's transaction, if any (an abort that cannot reach the broker now
    /// is finished before the next transaction begins), and rewinds every task.
    pub fn abort_and_rewind(&mut self, now: i64, collector: &mut dyn RecordCollector) -> Result<(), StreamsError> {
        match collector.abort_transaction() {
            Err(SendError::Fatal(error)) => return Err(error),
            Err(SendError::Retriable(reason)) => tracing::warn!(%reason, "the transaction could not be aborted yet; it will be before the next one begins"),
            Ok(()) => {}
        }
        self.rewind(now)
    }

    /// Advances every running task's wall clock, firing due wall-clock punctuations, and
    /// sends what they forwarded.
    pub fn punctuate(&mut self, now: i64, collector: &mut dyn RecordCollector) -> Result<(), StreamsError> {
        if self.backoff.active(now) {
            return Ok(());
        }
        let ids: Vec<TaskId> = self.tasks.keys().copied().collect();
        for id in ids {
            let task = self.tasks.get_mut(&id).expect("running");
            task.advance_wall_clock(now).map_err(|error| StreamsError::Punctuation { task: id, error })?;
            if let Step::Rewound = self.send_outputs(id, now, collector)? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// The commit protocol (docs/guarantees.md, the commit protocol): send every task's
    /// changelog records, flush the collector, commit its transaction with the input
    /// positions (`exactly_once_v2`), then write each task's sled batch (state, input
    /// positions, changelog offsets). Returns every running task's input positions for
    /// the consumer group, or `None` when a retriable failure rewound the tasks instead.
    pub fn commit(&mut self, now: i64, collector: &mut dyn RecordCollector) -> Result<Option<Positions>, StreamsError> {
        let phase = std::time::Instant::now();
        let mut offsets = match self.deliver_changelog(collector) {
            Ok(offsets) => offsets,
            Err(error) => {
                self.send_failed(error, now, collector)?;
                return Ok(None);
            }
        };
        crate::metrics::record_commit_phase("flush", phase);
        let positions: Positions = self.tasks.iter().flat_map(|(id, task)| task.inputs().map(|(topic, position)| (Arc::clone(topic), id.partition, position))).collect();
        if let Err(error) = collector.commit_transaction(&positions) {
            self.send_failed(error, now, collector)?;
            return Ok(None);
        }
        let phase = std::time::Instant::now();
        for (id, task) in &mut self.tasks {
            let stores: Vec<(String, i64)> = task.state().store_names().filter_map(|s| offsets.remove(&(*id, Arc::from(s))).map(|o| (s.to_string(), o))).collect();
            let stores: Vec<(&str, i64)> = stores.iter().map(|(s, o)| (s.as_str(), *o)).collect();
            task.commit(&stores)?;
            for store in task.state().store_names() {
                if let Ok(handle) = task.state().store(store) {
                    use sluice_state::KeyValueStore;
                    metrics::gauge!(crate::metrics::STORE_KEYS, "store" => store.to_string(), "task" => id.to_string()).set(handle.approximate_num_entries() as f64);
                }
            }
            tracing::trace!(task = %id, changelog = ?stores, "task committed");
        }
        crate::metrics::record_commit_phase("state", phase);
        Ok(Some(positions))
    }

    /// Sends every running task's pending changelog records and flushes the collector: the
    /// first half of a commit (the test driver also uses it to simulate a crash between the
    /// flush and the state commit).
    pub fn deliver_changelog(&mut self, collector: &mut dyn RecordCollector) -> Result<ChangelogOffsets, SendError> {
        for (id, task) in &mut self.tasks {
            for change in task.drain_changelog() {
                let topic = match self.changelog_topics.get(&*change.store) {
                    Some(topic) => std::borrow::Cow::Borrowed(topic.as_str()),
                    None => std::borrow::Cow::Owned(changelog_topic(&self.config.application_id, &change.store)),
                };
                collector.send_changelog(*id, &topic, change)?;
            }
        }
        collector.flush()
    }

    /// Discards every running task's uncommitted work: each is rebuilt over its state as
    /// last committed, its queues emptied, and the consumer asked to seek back to its
    /// positions (see [`TaskManager::take_seeks`]).
    pub fn rewind(&mut self, now: i64) -> Result<(), StreamsError> {
        let ids: Vec<TaskId> = self.tasks.keys().copied().collect();
        for id in ids {
            let task = self.tasks.remove(&id).expect("running");
            self.local_stores.remove(id);
            let mut state = task.close();
            state.abort();
            let task = StreamTask::new(id, &self.topology, &self.registry, &self.config.application_id, state, now)?;
            for (topic, position) in task.inputs() {
                self.seeks.push((Arc::clone(topic), id.partition, position));
            }
            if let Some(group) = self.groups.get_mut(&id) {
                group.clear();
            }
            self.local_stores.add(id, task.state());
            self.tasks.insert(id, task);
        }
        Ok(())
    }
}
