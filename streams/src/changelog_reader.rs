//! [`StoreChangelogReader`] (Kafka Streams' name): restores tasks' stores from their changelog
//! topics in bounded steps, interleaved with processing (docs/guarantees.md, restore).
//!
//! A task assigned to this thread is registered with the reader: its state is opened and,
//! for each logged store, the changelog partition is read from the local checkpoint (from
//! the log start after a wipe) to the end offset the broker reported at registration. Each
//! [`StoreChangelogReader::restore`] call reads at most `max_records` records across the
//! restoring partitions and writes them to sled in one batch per task, checkpointing the
//! changelog offsets with it; a task whose partitions all reached their end is handed back,
//! ready to process. Memory is bounded by one step, whatever the store's size; a step never
//! blocks the thread for long, so the consumer keeps its place in the group.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use sluice_state::{ChangelogRecord, RestoreStats, SourceOffset, TaskState};

use crate::error::StreamsError;
use crate::stream_task::TaskId;
use crate::topology::changelog_topic;

/// One changelog partition being restored.
#[derive(Debug, Clone)]
pub struct ChangelogPartition {
    /// The changelog topic.
    pub topic: String,
    /// Its partition (the task's).
    pub partition: i32,
    /// The store it restores.
    pub store: Arc<str>,
    /// The next offset to read.
    pub next: i64,
    /// The end offset reported when the restore started.
    pub end: i64,
}

/// Reads changelog partitions: a restore consumer (no group) on the broker, the in-memory
/// topics in the test driver.
pub trait ChangelogConsumer {
    /// The (log start, end) offsets of a partition; `None` when the topic does not exist.
    fn watermarks(&mut self, topic: &str, partition: i32) -> Result<Option<(i64, i64)>, String>;
    /// Up to `max` records from `partitions`, each read from its `next` offset, in offset
    /// order per partition, as `(index in partitions, offset, record)`. `changed` says the
    /// set of partitions differs from the previous call's; an empty set releases the reader.
    fn read(&mut self, partitions: &[ChangelogPartition], changed: bool, max: usize) -> Result<Vec<(usize, i64, ChangelogRecord)>, String>;
    /// True when the reader is past `partition.end` although it delivered no record there (a
    /// compacted or transactional tail).
    fn reached_end(&mut self, partition: &ChangelogPartition) -> bool;
}

struct RestoringTask {
    state: TaskState,
    resume: BTreeMap<(String, i32), i64>,
    partitions: Vec<ChangelogPartition>,
    stats: RestoreStats,
    started: Instant,
    remaining: metrics::Gauge,
    last_log: Instant,
}

/// See the module docs.
#[derive(Default)]
pub struct StoreChangelogReader {
    restoring: BTreeMap<TaskId, RestoringTask>,
    changed: bool,
}

/// How often a long restore logs its progress.
const PROGRESS_LOG_INTERVAL: Duration = Duration::from_secs(10);

impl StoreChangelogReader {
    /// Registers a task for restore: `state` freshly opened, `committed` the group's
    /// committed offsets of its inputs, `stores` its stores as (name, logged).
    pub fn register(
        &mut self,
        id: TaskId,
        state: TaskState,
        committed: &BTreeMap<(String, i32), i64>,
        stores: &[(String, bool)],
        application_id: &str,
        consumer: &mut dyn ChangelogConsumer,
    ) -> Result<(), StreamsError> {
        let resume = state.resume_positions(committed);
        let mut partitions = Vec::new();
        for (store, logged) in stores {
            if !logged {
                continue;
            }
            let topic = changelog_topic(application_id, store);
            let checkpoint = state.checkpoint().changelog_offsets.get(store).copied();
            let (low, end) = consumer
                .watermarks(&topic, id.partition)
                .map_err(|reason| StreamsError::Restore { task: id, topic: topic.clone(), partition: id.partition, offset: checkpoint.unwrap_or(0), reason })?
                .ok_or_else(|| StreamsError::MissingChangelog { task: id, store: store.clone(), topic: topic.clone() })?;
            if checkpoint.is_some_and(|c| c > end) {
                tracing::warn!(task = %id, %topic, checkpoint = checkpoint.unwrap_or(0), end, "the changelog ends before the local checkpoint (was it deleted and recreated?); keeping the local state");
            }
            let next = checkpoint.unwrap_or(0).max(low);
            if next < end {
                partitions.push(ChangelogPartition { topic, partition: id.partition, store: Arc::from(store.as_str()), next, end });
            }
        }
        let total: i64 = partitions.iter().map(|p| p.end - p.next).sum();
        let remaining = metrics::gauge!(crate::metrics::RESTORE_RECORDS_REMAINING, "task" => id.to_string());
        remaining.set(total as f64);
        tracing::debug!(task = %id, local = ?state.checkpoint(), ?committed, records = total, "restoring");
        let now = Instant::now();
        self.restoring.insert(id, RestoringTask { state, resume, partitions, stats: RestoreStats::default(), started: now, remaining, last_log: now });
        self.changed = true;
        Ok(())
    }

    /// Stops restoring a task (revoked); its state is dropped as restored so far (the
    /// checkpoint says how far).
    pub fn remove(&mut self, id: TaskId) -> Option<TaskState> {
        let task = self.restoring.remove(&id)?;
        self.changed = true;
        task.remaining.set(0.0);
        Some(task.state)
    }

    /// True while a task is restoring.
    pub fn is_restoring(&self) -> bool {
        !self.restoring.is_empty()
    }

    /// Ids of the restoring tasks.
    pub fn restoring(&self) -> impl Iterator<Item = TaskId> + '_ {
        self.restoring.keys().copied()
    }

    /// One restore step (see the module docs); returns the tasks whose restore completed,
    /// with their state.
    pub fn restore(&mut self, consumer: &mut dyn ChangelogConsumer, max_records: usize) -> Result<Vec<(TaskId, TaskState)>, StreamsError> {
        let owners: Vec<(TaskId, usize)> = self.restoring.iter().flat_map(|(id, t)| (0..t.partitions.len()).map(move |i| (*id, i))).collect();
        if !owners.is_empty() {
            let partitions: Vec<ChangelogPartition> = owners.iter().map(|(id, i)| self.restoring[id].partitions[*i].clone()).collect();
            let changed = std::mem::take(&mut self.changed);
            let records = consumer.read(&partitions, changed, max_records).map_err(|reason| {
                let first = &partitions[0];
                StreamsError::Restore { task: owners[0].0, topic: first.topic.clone(), partition: first.partition, offset: first.next, reason }
            })?;
            let mut by_task: BTreeMap<TaskId, Vec<(i64, ChangelogRecord)>> = BTreeMap::new();
            for (index, offset, record) in records {
                let (id, i) = owners[index];
                let task = self.restoring.get_mut(&id).expect("owner exists");
                task.partitions[i].next = offset + 1;
                by_task.entry(id).or_default().push((offset, record));
            }
            for (id, records) in by_task {
                let task = self.restoring.get_mut(&id).expect("owner exists");
                let stats = task.state.restore_batch(records, &task.resume)?;
                metrics::counter!(crate::metrics::RESTORE_RECORDS_TOTAL, "task" => id.to_string()).increment(stats.applied);
                task.stats.add(stats);
            }
        }
        let mut done = Vec::new();
        for (id, task) in &mut self.restoring {
            let before = task.partitions.len();
            task.partitions.retain(|p| p.next < p.end && !consumer.reached_end(p));
            self.changed |= task.partitions.len() != before;
            let remaining: i64 = task.partitions.iter().map(|p| p.end - p.next).sum();
            task.remaining.set(remaining as f64);
            if task.partitions.is_empty() {
                done.push(*id);
            } else if task.last_log.elapsed() >= PROGRESS_LOG_INTERVAL {
                task.last_log = Instant::now();
                tracing::info!(task = %id, restored = task.stats.applied + task.stats.skipped, remaining, elapsed_s = task.started.elapsed().as_secs(), "restoring");
            }
        }
        let mut completed = Vec::new();
        for id in done {
            let mut task = self.restoring.remove(&id).expect("listed above");
            task.state.finish_restore(task.resume)?;
            let elapsed = task.started.elapsed();
            let read = task.stats.applied + task.stats.skipped;
            tracing::info!(
                task = %id,
                records = read,
                applied = task.stats.applied,
                skipped = task.stats.skipped,
                elapsed_ms = elapsed.as_millis() as u64,
                records_per_s = (read as f64 / elapsed.as_secs_f64().max(1e-3)) as u64,
                "task restored"
            );
            tracing::debug!(task = %id, resume = ?task.state.checkpoint().input_offsets, "resuming");
            completed.push((id, task.state));
        }
        if self.restoring.is_empty() && std::mem::take(&mut self.changed) {
            // Nothing left to restore: stop reading (a restore consumer left assigned would
            // keep fetching every changelog record the tasks write).
            consumer.read(&[], true, 0).map_err(|reason| StreamsError::Config(format!("releasing the restore consumer: {reason}")))?;
        }
        Ok(completed)
    }
}

/// The broker side of [`ChangelogConsumer`]: Kafka Streams' restore consumer, with no group,
/// assigned the restoring partitions.
pub struct KafkaChangelogConsumer {
    consumer: BaseConsumer,
}

/// Longest one read waits for records.
const READ_BUDGET: Duration = Duration::from_millis(100);

impl KafkaChangelogConsumer {
    /// A reader over `consumer` (`enable.auto.commit=false`, no subscription).
    pub fn new(consumer: BaseConsumer) -> KafkaChangelogConsumer {
        KafkaChangelogConsumer { consumer }
    }
}

/// Errors a consumer recovers from by itself (the broker away, a connection lost).
fn is_transient(error: &rdkafka::error::KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::Resolve | RDKafkaErrorCode::OperationTimedOut | RDKafkaErrorCode::NetworkException)
    )
}

impl ChangelogConsumer for KafkaChangelogConsumer {
    fn watermarks(&mut self, topic: &str, partition: i32) -> Result<Option<(i64, i64)>, String> {
        match self.consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)) {
            Ok(offsets) => Ok(Some(offsets)),
            Err(error) if matches!(error.rdkafka_error_code(), Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic)) => Ok(None),
            Err(error) => Err(error.to_string()),
        }
    }

    fn read(&mut self, partitions: &[ChangelogPartition], changed: bool, max: usize) -> Result<Vec<(usize, i64, ChangelogRecord)>, String> {
        if changed && partitions.is_empty() {
            self.consumer.unassign().map_err(|e| e.to_string())?;
            return Ok(Vec::new());
        }
        if changed {
            let mut list = TopicPartitionList::new();
            for p in partitions {
                list.add_partition_offset(&p.topic, p.partition, Offset::Offset(p.next)).map_err(|e| e.to_string())?;
            }
            self.consumer.assign(&list).map_err(|e| e.to_string())?;
        }
        let started = Instant::now();
        let mut records = Vec::new();
        while records.len() < max {
            let Some(left) = READ_BUDGET.checked_sub(started.elapsed()) else { break };
            match self.consumer.poll(left) {
                None => break,
                // librdkafka reports a broker that went away as consumer errors; it reconnects
                // and goes on fetching by itself (Kafka's Java consumer does not surface these).
                Some(Err(error)) if is_transient(&error) => {
                    tracing::debug!(%error, "restore consumer: transient error");
                    break;
                }
                Some(Err(error)) => return Err(error.to_string()),
                Some(Ok(message)) => {
                    let Some(index) = partitions.iter().position(|p| p.partition == message.partition() && p.topic == message.topic()) else { continue };
                    let headers = message.headers().map(|list| list.iter().map(|h| (h.key, h.value.unwrap_or_default())).collect::<Vec<_>>()).unwrap_or_default();
                    let source = SourceOffset::from_headers(headers).unwrap_or_else(SourceOffset::none);
                    let store = Arc::clone(&partitions[index].store);
                    let record = ChangelogRecord { store, key: message.key().unwrap_or_default().to_vec(), value: message.payload().map(<[u8]>::to_vec), source };
                    records.push((index, message.offset(), record));
                }
            }
        }
        Ok(records)
    }

    fn reached_end(&mut self, partition: &ChangelogPartition) -> bool {
        let Ok(position) = self.consumer.position() else { return false };
        position.elements_for_topic(&partition.topic).iter().any(|e| e.partition() == partition.partition && matches!(e.offset(), Offset::Offset(o) if o >= partition.end))
    }
}
