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
    /// order per partition, as `(index in partitions, offset, record)`, waiting at most
    /// `wait` for the first. `changed` says the partitions or their `next` offsets differ
    /// from the previous call's; an empty set releases the reader.
    fn read(&mut self, partitions: &[ChangelogPartition], changed: bool, max: usize, wait: Duration) -> Result<Vec<(usize, i64, ChangelogRecord)>, String>;
    /// Records between the reader's position in `partition` (at least `partition.next`) and
    /// the partition's last known end (its last stable offset when reading committed), without
    /// asking the broker; `None` when not known yet.
    fn lag(&mut self, partition: &ChangelogPartition) -> Option<i64>;
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

/// A standby task: a warm copy of another member's task, kept current from its changelogs
/// (see [`crate::standby`]).
struct StandbyTask {
    state: TaskState,
    /// Its changelog partitions; `end` is unused (a standby never finishes).
    partitions: Vec<ChangelogPartition>,
    /// What a changelog record's input must be below to be applied: under `at_least_once`, the
    /// group's committed offsets (a record of an uncommitted input may be redone differently
    /// by the active task); under `exactly_once_v2`, every input partition at `i64::MAX`
    /// (read committed, every record read is committed).
    applicable: BTreeMap<(String, i32), i64>,
    /// Under `at_least_once`: the task reached records of uncommitted inputs and waits for
    /// newer committed offsets ([`StoreChangelogReader::set_standby_committed`]).
    blocked: bool,
    lag: Vec<metrics::Gauge>,
}

/// See the module docs.
#[derive(Default)]
pub struct StoreChangelogReader {
    restoring: BTreeMap<TaskId, RestoringTask>,
    standbys: BTreeMap<TaskId, StandbyTask>,
    /// The partitions the consumer was last given, and whether their offsets must be given
    /// again (a task registered or removed, a standby cut short).
    assigned: Vec<(String, i32)>,
    changed: bool,
    /// When the standby lag gauges were last set.
    last_lag: Option<Instant>,
}

/// How often the standby lag gauges are refreshed.
const LAG_REFRESH: Duration = Duration::from_secs(1);

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

    /// The restoring tasks, with the changelog records each has left to read.
    pub fn restore_progress(&self) -> Vec<(TaskId, i64)> {
        self.restoring.iter().map(|(id, task)| (*id, task.partitions.iter().map(|p| p.end - p.next).sum())).collect()
    }

    /// One restore step (see the module docs); returns the tasks whose restore completed,
    /// with their state.
    pub fn restore(&mut self, consumer: &mut dyn ChangelogConsumer, max_records: usize) -> Result<Vec<(TaskId, TaskState)>, StreamsError> {
        let owners: Vec<(TaskId, usize)> = self.restoring.iter().flat_map(|(id, t)| (0..t.partitions.len()).map(move |i| (*id, i))).collect();
        if !owners.is_empty() {
            let partitions: Vec<ChangelogPartition> = owners.iter().map(|(id, i)| self.restoring[id].partitions[*i].clone()).collect();
            let records = self.read(consumer, &partitions, max_records, READ_BUDGET).map_err(|reason| {
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
        if self.restoring.is_empty() && self.standbys.is_empty() {
            // Nothing left to read: stop reading (a restore consumer left assigned would keep
            // fetching every changelog record the tasks write).
            self.read(consumer, &[], 0, Duration::ZERO).map_err(|reason| StreamsError::Config(format!("releasing the restore consumer: {reason}")))?;
        }
        Ok(completed)
    }

    /// Reads through `consumer`, telling it when the partitions changed.
    fn read(&mut self, consumer: &mut dyn ChangelogConsumer, partitions: &[ChangelogPartition], max: usize, wait: Duration) -> Result<Vec<(usize, i64, ChangelogRecord)>, String> {
        let keys: Vec<(String, i32)> = partitions.iter().map(|p| (p.topic.clone(), p.partition)).collect();
        let changed = std::mem::take(&mut self.changed) || keys != self.assigned;
        if changed {
            self.assigned = keys;
        } else if partitions.is_empty() {
            return Ok(Vec::new());
        }
        consumer.read(partitions, changed, max, wait)
    }

    /// Registers a standby task: `state` opened on this member's copy of the task's stores,
    /// `stores` its stores as (name, logged), `inputs` its input partitions with, under
    /// `at_least_once`, the group's committed offsets (`None` under `exactly_once_v2`). The
    /// state's input checkpoint is dropped: once it applies the active task's changelog, it
    /// no longer says what this copy processed itself.
    pub fn register_standby(
        &mut self,
        id: TaskId,
        mut state: TaskState,
        stores: &[(String, bool)],
        application_id: &str,
        inputs: &[String],
        committed: Option<&BTreeMap<(String, i32), i64>>,
    ) -> Result<(), StreamsError> {
        state.forget_input_offsets()?;
        let mut partitions = Vec::new();
        let mut lag = Vec::new();
        for (store, logged) in stores {
            if !logged {
                continue;
            }
            let topic = changelog_topic(application_id, store);
            let next = state.checkpoint().changelog_offsets.get(store).copied().unwrap_or(0);
            partitions.push(ChangelogPartition { topic, partition: id.partition, store: Arc::from(store.as_str()), next, end: i64::MAX });
            lag.push(metrics::gauge!(crate::metrics::STANDBY_RECORDS_LAG, "task" => id.to_string(), "store" => store.clone()));
        }
        let applicable = match committed {
            Some(committed) => committed.clone(),
            None => inputs.iter().map(|topic| ((topic.clone(), id.partition), i64::MAX)).collect(),
        };
        tracing::info!(task = %id, from = ?state.checkpoint().changelog_offsets, "standby task created");
        self.standbys.insert(id, StandbyTask { state, partitions, applicable, blocked: false, lag });
        self.changed = true;
        metrics::gauge!(crate::metrics::STANDBY_TASKS).set(self.standbys.len() as f64);
        Ok(())
    }

    /// Stops keeping a standby; returns its state (current up to its checkpoint), to be
    /// dropped or promoted to an active task.
    pub fn remove_standby(&mut self, id: TaskId) -> Option<TaskState> {
        let task = self.standbys.remove(&id)?;
        self.changed = true;
        for gauge in &task.lag {
            gauge.set(0.0);
        }
        metrics::gauge!(crate::metrics::STANDBY_TASKS).set(self.standbys.len() as f64);
        Some(task.state)
    }

    /// Ids of the standby tasks.
    pub fn standby_ids(&self) -> Vec<TaskId> {
        self.standbys.keys().copied().collect()
    }

    /// Under `at_least_once`: the group's committed offsets of a standby's inputs moved on;
    /// a standby that waited for them reads again.
    pub fn set_standby_committed(&mut self, id: TaskId, committed: BTreeMap<(String, i32), i64>) {
        if let Some(task) = self.standbys.get_mut(&id) {
            if task.applicable != committed {
                task.applicable = committed;
                task.blocked = false;
            }
        }
    }

    /// One standby step: while no active task restores, reads at most `max_records` of the
    /// standbys' changelogs without waiting and applies them as a restore does, checkpointing
    /// each batch. Returns the records applied.
    pub fn update_standbys(&mut self, consumer: &mut dyn ChangelogConsumer, max_records: usize) -> Result<u64, StreamsError> {
        if !self.restoring.is_empty() || self.standbys.is_empty() {
            return Ok(0);
        }
        let owners: Vec<(TaskId, usize)> = self.standbys.iter().filter(|(_, t)| !t.blocked).flat_map(|(id, t)| (0..t.partitions.len()).map(move |i| (*id, i))).collect();
        let partitions: Vec<ChangelogPartition> = owners.iter().map(|(id, i)| self.standbys[id].partitions[*i].clone()).collect();
        let records = self.read(consumer, &partitions, max_records, Duration::ZERO).map_err(|reason| {
            let first = partitions.first().map_or((String::new(), 0, 0), |p| (p.topic.clone(), p.partition, p.next));
            StreamsError::Restore { task: owners.first().map_or(TaskId { subtopology: 0, partition: 0 }, |o| o.0), topic: first.0, partition: first.1, offset: first.2, reason }
        })?;
        let mut by_task: BTreeMap<TaskId, Vec<(i64, ChangelogRecord)>> = BTreeMap::new();
        let mut cut: Vec<usize> = Vec::new();
        for (index, offset, record) in records {
            if cut.contains(&index) {
                continue;
            }
            let (id, i) = owners[index];
            let task = self.standbys.get_mut(&id).expect("owner exists");
            let source = &record.source;
            let uncommitted = !source.topic.is_empty()
                && source.offset >= task.applicable.iter().find(|((t, p), _)| t.as_str() == &*source.topic && *p == source.partition).map_or(0, |(_, o)| *o);
            if uncommitted {
                // Under at_least_once only: stop this partition here until the group commits.
                task.blocked = true;
                cut.push(index);
                self.changed = true;
                continue;
            }
            task.partitions[i].next = offset + 1;
            by_task.entry(id).or_default().push((offset, record));
        }
        let mut applied = 0;
        for (id, records) in by_task {
            let task = self.standbys.get_mut(&id).expect("owner exists");
            applied += task.state.restore_batch(records, &task.applicable)?.applied;
        }
        if self.last_lag.is_none_or(|at| at.elapsed() >= LAG_REFRESH) {
            self.last_lag = Some(Instant::now());
            for task in self.standbys.values() {
                for (p, gauge) in task.partitions.iter().zip(&task.lag) {
                    if let Some(lag) = consumer.lag(p) {
                        gauge.set(lag as f64);
                    }
                }
            }
        }
        Ok(applied)
    }
}

/// The broker side of [`ChangelogConsumer`]: Kafka Streams' restore consumer, with no group,
/// assigned the restoring partitions.
pub struct KafkaChangelogConsumer {
    consumer: BaseConsumer<ChangelogContext>,
}

/// The restore consumer's context: keeps the partition ends librdkafka's statistics report
/// (standby lag, with no request to the broker).
#[derive(Default)]
pub struct ChangelogContext {
    ends: std::sync::Mutex<std::collections::HashMap<(String, i32), i64>>,
}

impl rdkafka::ClientContext for ChangelogContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let mut ends = self.ends.lock().expect("changelog ends lock");
        for (topic, stats) in statistics.topics {
            for (partition, p) in stats.partitions {
                let end = if p.ls_offset >= 0 { p.ls_offset } else { p.hi_offset };
                if partition >= 0 && end >= 0 {
                    ends.insert((topic.clone(), partition), end);
                }
            }
        }
    }
}

impl rdkafka::consumer::ConsumerContext for ChangelogContext {}

/// Longest one restore read waits for records.
const READ_BUDGET: Duration = Duration::from_millis(100);

impl KafkaChangelogConsumer {
    /// A reader over `consumer` (`enable.auto.commit=false`, no subscription).
    pub fn new(consumer: BaseConsumer<ChangelogContext>) -> KafkaChangelogConsumer {
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

    fn read(&mut self, partitions: &[ChangelogPartition], changed: bool, max: usize, wait: Duration) -> Result<Vec<(usize, i64, ChangelogRecord)>, String> {
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
            match self.consumer.poll(wait.saturating_sub(started.elapsed())) {
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

    fn lag(&mut self, partition: &ChangelogPartition) -> Option<i64> {
        let end = self.consumer.context().ends.lock().expect("changelog ends lock").get(&(partition.topic.clone(), partition.partition)).copied()?;
        // The position is past transaction markers, which `next` (after the last record) is not.
        let position = self.consumer.position().ok().and_then(|list| {
            list.elements_for_topic(&partition.topic).iter().find(|e| e.partition() == partition.partition).and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            })
        });
        Some((end - position.unwrap_or(partition.next).max(partition.next)).max(0))
    }

    fn reached_end(&mut self, partition: &ChangelogPartition) -> bool {
        let Ok(position) = self.consumer.position() else { return false };
        position.elements_for_topic(&partition.topic).iter().any(|e| e.partition() == partition.partition && matches!(e.offset(), Offset::Offset(o) if o >= partition.end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One changelog partition in memory (`store`'s of app `app`, partition 0).
    struct Log(Vec<ChangelogRecord>);

    impl ChangelogConsumer for Log {
        fn watermarks(&mut self, _topic: &str, _partition: i32) -> Result<Option<(i64, i64)>, String> {
            Ok(Some((0, self.0.len() as i64)))
        }

        fn read(&mut self, partitions: &[ChangelogPartition], _changed: bool, max: usize, _wait: Duration) -> Result<Vec<(usize, i64, ChangelogRecord)>, String> {
            Ok(partitions
                .iter()
                .enumerate()
                .flat_map(|(i, p)| (p.next..(self.0.len() as i64).min(p.end)).map(move |o| (i, o)))
                .take(max)
                .map(|(i, o)| (i, o, self.0[o as usize].clone()))
                .collect())
        }

        fn lag(&mut self, partition: &ChangelogPartition) -> Option<i64> {
            Some(self.0.len() as i64 - partition.next)
        }

        fn reached_end(&mut self, partition: &ChangelogPartition) -> bool {
            partition.next >= partition.end
        }
    }

    fn write(key: &str, value: &str, input_offset: i64) -> ChangelogRecord {
        ChangelogRecord { store: Arc::from("s"), key: key.as_bytes().to_vec(), value: Some(value.as_bytes().to_vec()), source: SourceOffset::new("in", 0, input_offset) }
    }

    fn value(state: &TaskState, key: &str) -> Option<Vec<u8>> {
        state.reader("s").unwrap().get(key.as_bytes()).unwrap()
    }

    const TASK: TaskId = TaskId { subtopology: 0, partition: 0 };

    /// A fresh directory, removed when dropped.
    struct Dir(std::path::PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let path = std::env::temp_dir().join(format!("sluice-reader-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            Dir(path)
        }

        fn path(&self) -> &std::path::Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn an_at_least_once_standby_applies_only_committed_inputs_and_is_promoted_with_its_progress() {
        let dir = Dir::new("alos");
        let stores = [("s".to_string(), true)];
        let mut log = Log(vec![write("a", "1", 0), write("b", "1", 1), write("a", "2", 2)]);
        let mut reader = StoreChangelogReader::default();
        let state = TaskState::open(dir.path(), &[("s", true)]).unwrap();
        let committed = BTreeMap::from([(("in".to_string(), 0), 2)]);
        reader.register_standby(TASK, state, &stores, "app", &["in".to_string()], Some(&committed)).unwrap();
        // Inputs 0 and 1 are committed, input 2 is not: the standby stops before it.
        assert_eq!(reader.update_standbys(&mut log, 100).unwrap(), 2);
        assert_eq!(reader.update_standbys(&mut log, 100).unwrap(), 0, "blocked until the group commits more");
        assert_eq!(value(&reader.standbys[&TASK].state, "a"), Some(b"1".to_vec()));
        reader.set_standby_committed(TASK, BTreeMap::from([(("in".to_string(), 0), 3)]));
        assert_eq!(reader.update_standbys(&mut log, 100).unwrap(), 1);
        assert_eq!(value(&reader.standbys[&TASK].state, "a"), Some(b"2".to_vec()));
        // Promoted: the restore starts at the standby's checkpoint and reads only the tail.
        log.0.push(write("c", "1", 3));
        let state = reader.remove_standby(TASK).unwrap();
        assert_eq!(state.checkpoint().changelog_offsets.get("s"), Some(&3));
        reader.register(TASK, state, &BTreeMap::from([(("in".to_string(), 0), 4)]), &stores, "app", &mut log).unwrap();
        let restored = reader.restore(&mut log, 100).unwrap();
        assert_eq!(restored.len(), 1);
        let state = &restored[0].1;
        assert_eq!((value(state, "a"), value(state, "b"), value(state, "c")), (Some(b"2".to_vec()), Some(b"1".to_vec()), Some(b"1".to_vec())));
        assert_eq!(state.checkpoint().changelog_offsets.get("s"), Some(&4));
    }

    #[test]
    fn an_exactly_once_standby_applies_everything_it_reads_and_forgets_its_own_input_positions() {
        let dir = Dir::new("eos");
        let mut state = TaskState::open(dir.path(), &[("s", true)]).unwrap();
        state.finish_restore(BTreeMap::from([(("in".to_string(), 0), 50)])).unwrap();
        let mut log = Log((0..10).map(|i| write(&format!("k{i}"), "v", 100 + i)).collect());
        let mut reader = StoreChangelogReader::default();
        reader.register_standby(TASK, state, &[("s".to_string(), true)], "app", &["in".to_string()], None).unwrap();
        assert_eq!(reader.update_standbys(&mut log, 4).unwrap(), 4, "bounded per step");
        assert_eq!(reader.update_standbys(&mut log, 100).unwrap(), 6);
        let state = reader.remove_standby(TASK).unwrap();
        assert!(state.checkpoint().input_offsets.is_empty(), "{:?}", state.checkpoint());
        assert_eq!(state.checkpoint().changelog_offsets.get("s"), Some(&10));
        drop(state);
        let reopened = TaskState::open(dir.path(), &[("s", true)]).unwrap();
        assert!(reopened.checkpoint().input_offsets.is_empty(), "forgotten on disk too");
    }
}
