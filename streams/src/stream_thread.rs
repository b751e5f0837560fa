//! [`StreamThread`] (Kafka Streams' name): one consumer in the group `application.id` and its
//! loop: poll records into the tasks' queues, restore a step, process, punctuate, maybe
//! commit. Everything done to tasks is the [`TaskManager`]'s; this file is the Kafka side
//! (docs/architecture.md, the stream thread).
//!
//! Fetching is bounded: a partition whose queue holds [`BUFFERED_RECORDS_PER_PARTITION`]
//! records is paused until its task has worked half of them off. A task is created when all
//! its input partitions are assigned (range assignor, so co-partitioned partitions land
//! together); the consumer then seeks to the task's resume position (the later of its local
//! checkpoint and the group's committed offset), and records fetched for a partition before
//! its seek is accepted are dropped and refetched.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::changelog_reader::KafkaChangelogConsumer;
use crate::error::StreamsError;
use crate::interactive::{instances_topic, InstanceInfo, HEARTBEAT};
use crate::kafka_streams::{KafkaStreams, ProcessingGuarantee, StreamsConfig};
use crate::now_ms;
use crate::partition_group::FetchState;
use crate::record_collector::KafkaRecordCollector;
use crate::serde::TopicSerdes;
use crate::standby::{assigned_tasks, standby_tasks, GroupView, SubtopologyInputs};
use crate::stream_task::TaskId;
use crate::task_manager::TaskManager;

/// How often librdkafka reports statistics, which refresh the records-lag gauges.
pub(crate) const LAG_INTERVAL: Duration = Duration::from_secs(5);

/// How often the stream thread advances its tasks' wall clocks: the resolution of wall-clock
/// punctuation.
const WALL_CLOCK_TICK: Duration = Duration::from_millis(10);

/// Kafka Streams `buffered.records.per.partition`: fetched records a partition's queue holds
/// before the partition is paused.
pub const BUFFERED_RECORDS_PER_PARTITION: usize = 1000;

/// Most records taken from the consumer per loop (Kafka's `max.poll.records`).
const MAX_POLL_RECORDS: usize = 500;

/// Most records a task processes per loop before the thread polls again.
const MAX_RECORDS_PER_TASK: usize = 1000;

/// Most changelog records one restore step reads (one sled batch per task).
const RESTORE_RECORDS_PER_STEP: usize = 20_000;

/// How long a cached high watermark is trusted while a partition looks behind.
const WATERMARK_REFRESH: Duration = Duration::from_millis(500);

/// Longest a task waits on a partition that looks behind but delivers nothing (a tail of
/// transaction markers or compacted offsets has no records to deliver).
const LAG_WAIT_LIMIT: Duration = Duration::from_secs(2);

/// How long after a failed attempt the thread tries again to create assigned tasks.
const CREATE_RETRY: Duration = Duration::from_secs(1);
/// The longest wait for one answer about a task's committed offsets.
const OFFSET_FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Most changelog records one standby step applies.
const STANDBY_RECORDS_PER_STEP: usize = 5_000;

/// Under `at_least_once`, how often standbys learn the group's committed offsets (the bound
/// of what they apply).
const STANDBY_COMMITTED_REFRESH: Duration = Duration::from_secs(1);

/// Rebalance events, recorded by the consumer context and handled by the stream thread.
#[derive(Default)]
pub(crate) struct StreamContext {
    assignment_changed: AtomicBool,
    revoked: Mutex<Vec<(String, i32)>>,
}

impl ClientContext for StreamContext {
    /// librdkafka's statistics (every `statistics.interval.ms`, delivered inside `poll` with no
    /// broker round trip) feed `sluice_records_lag`: high watermark minus the consumer's
    /// position, per input partition.
    fn stats(&self, statistics: rdkafka::Statistics) {
        for (topic, stats) in &statistics.topics {
            for (partition, p) in &stats.partitions {
                if *partition < 0 {
                    continue; // librdkafka's internal unassigned partition
                }
                // librdkafka's `consumer_lag` counts from the consumer's own offset commits;
                // under exactly_once_v2 offsets are committed in transactions, which it does
                // not see: then the end of the partition (the last stable offset when reading
                // committed) minus the position the thread reached.
                let position = if p.app_offset >= 0 { p.app_offset } else { p.next_offset };
                let lag = if p.consumer_lag >= 0 {
                    Some(p.consumer_lag)
                } else {
                    let end = if p.ls_offset >= 0 { p.ls_offset } else { p.hi_offset };
                    (end >= 0 && position >= 0).then(|| (end - position).max(0))
                };
                if let Some(lag) = lag {
                    metrics::gauge!(crate::metrics::RECORDS_LAG, "topic" => topic.clone(), "partition" => partition.to_string()).set(lag as f64);
                }
            }
        }
    }
}

impl ConsumerContext for StreamContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let mut revoked = self.revoked.lock().expect("revoked lock");
            revoked.extend(list.elements().iter().map(|e| (e.topic().to_string(), e.partition())));
            tracing::info!(partitions = list.count(), "partitions revoked");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            tracing::info!(partitions = list.count(), "partitions assigned");
            metrics::counter!(crate::metrics::REBALANCES_TOTAL).increment(1);
        }
        self.assignment_changed.store(true, Ordering::SeqCst);
    }
}

/// Logs transient consumer errors (a broker away answers every poll with one) once per kind
/// and then at most every 10 s.
#[derive(Default)]
struct ErrorLog {
    last: Option<(String, Instant)>,
    suppressed: u64,
}

impl ErrorLog {
    fn report(&mut self, what: &str, error: &dyn std::fmt::Display) {
        let text = error.to_string();
        match &self.last {
            Some((last, at)) if *last == text && at.elapsed() < Duration::from_secs(10) => self.suppressed += 1,
            _ => {
                tracing::warn!(%error, repeated = self.suppressed, "{what}");
                self.last = Some((text, Instant::now()));
                self.suppressed = 0;
            }
        }
    }
}

/// The last known end of an input partition.
struct Watermark {
    partition: i32,
    high: i64,
    checked: Instant,
    /// Since when, and at which position, the task has waited on this partition.
    waiting: Option<(Instant, i64)>,
}

/// See the module docs.
pub(crate) struct StreamThread<'a> {
    streams: &'a KafkaStreams,
    /// This thread's name (its `group.instance.id` with static membership).
    instance: String,
    consumer: BaseConsumer<StreamContext>,
    /// Asks the broker for high watermarks: a client that does not fetch, so that its
    /// ListOffsets requests do not queue behind the main consumer's long-polling fetches.
    watermark_client: BaseConsumer,
    collector: KafkaRecordCollector,
    /// Publishes discovery heartbeats (outside any transaction).
    discovery: FutureProducer,
    serde: TopicSerdes,
    changelogs: KafkaChangelogConsumer,
    tasks: TaskManager<OwnedMessage>,
    /// Seeks not yet accepted by the consumer; records fetched meanwhile are dropped.
    pending_seeks: HashMap<(String, i32), i64>,
    paused: HashSet<(String, i32)>,
    /// High watermarks by topic.
    watermarks: HashMap<String, Vec<Watermark>>,
    /// The input offsets this thread last committed to the group.
    committed: HashMap<(String, i32), i64>,
    /// Tasks assigned but not created yet (the broker could not be asked about them).
    unstarted: BTreeSet<TaskId>,
    last_create_failure: Option<Instant>,
    /// Since when each unstarted task has failed to start (its `task.timeout.ms` runs from
    /// there).
    failing_since: BTreeMap<TaskId, Instant>,
    consumer_errors: ErrorLog,
    last_commit: Instant,
    last_wall_clock_punctuation: Instant,
    last_heartbeat: Instant,
    /// Whether the last loop processed anything (then the next poll does not wait).
    progressed: bool,
    /// Whether the last loop saw processing paused (a change is published at once).
    was_paused: bool,
    /// Where the loop spent its time: (polling, processing, committing).
    spent: (Duration, Duration, Duration),
    /// Standby placement (with `num_standby_replicas` > 0): the group as last described, the
    /// version of it the standbys follow (`None`: place them again), and each sub-topology's
    /// inputs.
    group: Option<Arc<Mutex<GroupView>>>,
    placed: Option<u64>,
    subtopologies: Vec<SubtopologyInputs>,
    last_standby_committed: Instant,
}

/// A stream thread's Kafka clients.
pub(crate) struct ThreadClients {
    /// The consumer in the group.
    pub(crate) consumer: BaseConsumer<StreamContext>,
    /// Asks for high watermarks (it never fetches).
    pub(crate) watermark_client: BaseConsumer,
    /// Sends through the thread's producer.
    pub(crate) collector: KafkaRecordCollector,
    /// A plain producer for discovery heartbeats.
    pub(crate) discovery: FutureProducer,
    /// Reads changelogs through the restore consumer.
    pub(crate) changelogs: KafkaChangelogConsumer,
    /// The group as described for standby placement (`None` without standbys).
    pub(crate) group: Option<Arc<Mutex<GroupView>>>,
}

impl<'a> StreamThread<'a> {
    pub(crate) fn new(streams: &'a KafkaStreams, instance: &str, clients: ThreadClients, serde: TopicSerdes, tasks: TaskManager<OwnedMessage>) -> StreamThread<'a> {
        let ThreadClients { consumer, watermark_client, collector, discovery, changelogs, group } = clients;
        let subtopologies = streams
            .topology
            .subtopologies
            .iter()
            .filter_map(|sub| Some(SubtopologyInputs { id: sub.id, topic: tasks.input_topics(sub.id).into_iter().next()?, partitions: sub.partitions }))
            .collect();
        StreamThread {
            streams,
            instance: instance.to_string(),
            consumer,
            watermark_client,
            collector,
            discovery,
            serde,
            changelogs,
            tasks,
            pending_seeks: HashMap::new(),
            paused: HashSet::new(),
            watermarks: HashMap::new(),
            committed: HashMap::new(),
            unstarted: BTreeSet::new(),
            last_create_failure: None,
            failing_since: BTreeMap::new(),
            consumer_errors: ErrorLog::default(),
            last_commit: Instant::now(),
            last_wall_clock_punctuation: Instant::now(),
            last_heartbeat: Instant::now(),
            progressed: false,
            was_paused: false,
            spent: (Duration::ZERO, Duration::ZERO, Duration::ZERO),
            group,
            placed: None,
            subtopologies,
            last_standby_committed: Instant::now(),
        }
    }

    fn config(&self) -> &StreamsConfig {
        &self.streams.config
    }

    /// Kafka Streams' `runOnce`, until `shutdown` (or another thread failed).
    pub(crate) fn run_loop(&mut self, shutdown: &AtomicBool, failed: &AtomicBool) -> Result<(), StreamsError> {
        let commit_interval = Duration::from_millis(self.config().commit_interval_ms);
        while !shutdown.load(Ordering::SeqCst) && !failed.load(Ordering::SeqCst) {
            self.apply_pending_seeks();
            let t0 = Instant::now();
            self.poll_records()?;
            self.spent.0 += t0.elapsed();
            self.create_tasks()?;
            if self.tasks.is_restoring() {
                match self.tasks.restore(now_ms(), &mut self.changelogs, RESTORE_RECORDS_PER_STEP) {
                    Ok(started) if !started.is_empty() => self.publish_instance(),
                    Ok(_) => {}
                    // A read the broker could not serve (it went away): the next step retries
                    // from the last record applied.
                    Err(error @ StreamsError::Restore { .. }) => self.consumer_errors.report("a restore step failed; retrying", &error),
                    Err(error) => return Err(error),
                }
            }
            if self.group.is_some() {
                self.maintain_standbys()?;
            }
            // Paused (KafkaStreams#pause): fetched records wait in the queues, which fill and
            // pause their partitions; nothing is processed or punctuated, and the commits
            // below move no offset, so the group's lag grows until resume.
            let paused = self.streams.is_paused();
            if paused != self.was_paused {
                self.was_paused = paused;
                self.publish_instance();
            }
            if paused {
                self.progressed = false;
            } else {
                let t1 = Instant::now();
                self.process()?;
                self.spent.1 += t1.elapsed();
            }
            if !paused && self.last_wall_clock_punctuation.elapsed() >= WALL_CLOCK_TICK {
                self.last_wall_clock_punctuation = Instant::now();
                self.tasks.punctuate(now_ms(), &mut self.collector)?;
                self.take_rewind_seeks();
            }
            if self.last_heartbeat.elapsed() >= HEARTBEAT {
                self.publish_instance();
            }
            if self.last_commit.elapsed() >= commit_interval {
                let started = Instant::now();
                self.commit()?;
                metrics::histogram!(crate::metrics::COMMIT_LATENCY_SECONDS).record(started.elapsed().as_secs_f64());
                self.spent.2 += started.elapsed();
            }
        }
        Ok(())
    }

    /// Takes up to [`MAX_POLL_RECORDS`] records from the consumer into the tasks' queues,
    /// handling rebalances as they happen.
    fn poll_records(&mut self) -> Result<(), StreamsError> {
        let timeout = if self.progressed || self.tasks.is_restoring() {
            Duration::ZERO
        } else if self.tasks.has_buffered() && !self.was_paused {
            Duration::from_millis(5)
        } else {
            Duration::from_millis(50)
        };
        for i in 0..MAX_POLL_RECORDS {
            let polled = Instant::now();
            // Detached: the message outlives the consumer borrow in the task's queue.
            let message = self.consumer.poll(if i == 0 { timeout } else { Duration::ZERO }).map(|m| m.map(|m| m.detach()));
            if i == 0 {
                metrics::histogram!(crate::metrics::POLL_LATENCY_SECONDS).record(polled.elapsed().as_secs_f64());
            }
            self.handle_rebalance()?;
            match message {
                None => break,
                Some(Ok(message)) => self.add(message),
                Some(Err(error)) => {
                    if let Some((_, reason)) = self.consumer.client().fatal_error() {
                        return Err(StreamsError::ConsumerFailed(reason));
                    }
                    self.consumer_errors.report("consumer error", &error);
                    break;
                }
            }
        }
        Ok(())
    }

    /// Buffers a fetched record in its task's queue, pausing the partition when it is full.
    fn add(&mut self, message: OwnedMessage) {
        let partition = message.partition();
        if !self.pending_seeks.is_empty() && self.pending_seeks.contains_key(&(message.topic().to_string(), partition)) {
            return; // fetched before a seek: refetched from the seek position
        }
        let Some(topic) = self.tasks.input_topic(message.topic()) else {
            tracing::trace!(topic = message.topic(), partition, "record of a topic no task here reads; dropped");
            return;
        };
        match self.tasks.add_record(&topic, partition, message) {
            Some(len) if len >= BUFFERED_RECORDS_PER_PARTITION => {
                let mut list = TopicPartitionList::new();
                list.add_partition(&topic, partition);
                if self.consumer.pause(&list).is_ok() {
                    self.paused.insert((topic.to_string(), partition));
                }
            }
            Some(_) => {}
            // No task yet: its creation seeks here, and the record is fetched again.
            None => tracing::trace!(%topic, partition, "record for a partition without a task; dropped until its task seeks"),
        }
    }

    /// Resumes paused partitions whose queues have drained to half.
    fn resume_drained(&mut self) {
        if self.paused.is_empty() {
            return;
        }
        let drained: Vec<(String, i32)> = self.paused.iter().filter(|(t, p)| self.tasks.buffered(t, *p) <= BUFFERED_RECORDS_PER_PARTITION / 2).cloned().collect();
        for (topic, partition) in drained {
            self.resume(&topic, partition);
        }
    }

    fn resume(&mut self, topic: &str, partition: i32) {
        if self.paused.remove(&(topic.to_string(), partition)) {
            let mut list = TopicPartitionList::new();
            list.add_partition(topic, partition);
            if let Err(error) = self.consumer.resume(&list) {
                tracing::warn!(%topic, partition, %error, "cannot resume a partition; retrying");
                self.paused.insert((topic.to_string(), partition));
            }
        }
    }

    /// Processes what the tasks' queues hold.
    fn process(&mut self) -> Result<(), StreamsError> {
        let (consumer, watermarks) = (&self.watermark_client, &mut self.watermarks);
        let mut fetch_state = |topic: &str, partition: i32, next: i64| lag_state(consumer, watermarks, topic, partition, next);
        let processed = self.tasks.process(now_ms(), MAX_RECORDS_PER_TASK, &self.serde, &mut self.collector, &mut fetch_state)?;
        self.progressed = processed > 0;
        self.take_rewind_seeks();
        self.resume_drained();
        Ok(())
    }

    /// Queues the seeks a rewind asked for.
    fn take_rewind_seeks(&mut self) {
        for (topic, partition, offset) in self.tasks.take_seeks() {
            self.pending_seeks.insert((topic.to_string(), partition), offset);
        }
    }

    /// Seeks partitions to their tasks' positions; keeps the ones the consumer cannot seek yet
    /// (a partition starts accepting seeks once its fetcher is set up). A partition seeks
    /// with its queue emptied, and is resumed if it was paused.
    fn apply_pending_seeks(&mut self) {
        if self.pending_seeks.is_empty() {
            return;
        }
        let pending: Vec<((String, i32), i64)> = self.pending_seeks.iter().map(|(k, v)| (k.clone(), *v)).collect();
        for ((topic, partition), position) in pending {
            match self.consumer.seek(&topic, partition, Offset::Offset(position), Duration::from_millis(100)) {
                Ok(()) => {
                    self.pending_seeks.remove(&(topic.clone(), partition));
                    self.resume(&topic, partition);
                }
                Err(error) => tracing::debug!(%topic, partition, position, %error, "seek not accepted yet; retrying"),
            }
        }
    }

    /// Closes revoked tasks (uncommitted work is redone by the next owner) and queues the
    /// creation of tasks whose partitions are all assigned.
    fn handle_rebalance(&mut self) -> Result<(), StreamsError> {
        let revoked: Vec<(String, i32)> = std::mem::take(&mut *self.consumer.context().revoked.lock().expect("revoked lock"));
        if !revoked.is_empty() {
            if self.config().processing_guarantee == ProcessingGuarantee::ExactlyOnceV2 {
                // The open transaction holds work of the revoked tasks, whose offsets this
                // thread can no longer commit: abort it, and redo the kept tasks' share.
                self.collector.forget_committed();
                self.tasks.abort_and_rewind(now_ms(), &mut self.collector)?;
                self.take_rewind_seeks();
            }
            self.committed.retain(|partition, _| !revoked.contains(partition));
            self.paused.retain(|partition| !revoked.contains(partition));
            self.pending_seeks.retain(|partition, _| !revoked.contains(partition));
            for id in self.tasks.owned_ids() {
                if self.tasks.input_topics(id.subtopology).iter().any(|t| revoked.iter().any(|(rt, rp)| rt == t && *rp == id.partition)) {
                    self.tasks.close_dirty(id);
                }
            }
            self.publish_instance();
        }
        if !self.consumer.context().assignment_changed.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        self.placed = None;
        let assignment = self.consumer.assignment()?;
        let assigned: HashSet<(String, i32)> = assignment.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
        self.unstarted.clear();
        for id in self.tasks.all_task_ids() {
            let complete = self.tasks.input_topics(id.subtopology).into_iter().all(|t| assigned.contains(&(t, id.partition)));
            if complete && !self.tasks.owns(id) {
                self.unstarted.insert(id);
            }
        }
        self.last_create_failure = None;
        self.failing_since.retain(|id, _| self.unstarted.contains(id));
        self.create_tasks()
    }

    /// Creates the assigned tasks not created yet: asks the group for their committed offsets,
    /// registers them for restore and seeks their inputs. A broker that cannot answer is
    /// asked again a second later, for up to `task.timeout.ms` from the task's first failure;
    /// a missing changelog stops the thread.
    fn create_tasks(&mut self) -> Result<(), StreamsError> {
        if self.unstarted.is_empty() || self.last_create_failure.is_some_and(|at| at.elapsed() < CREATE_RETRY) {
            return Ok(());
        }
        let task_timeout = Duration::from_millis(self.config().task_timeout_ms);
        for id in self.unstarted.clone() {
            let mut list = TopicPartitionList::new();
            let inputs = self.tasks.input_topics(id.subtopology);
            for topic in &inputs {
                list.add_partition(topic, id.partition);
            }
            let committed = match committed_offsets(&self.consumer, list, task_timeout.min(OFFSET_FETCH_TIMEOUT)) {
                Ok(committed) => committed,
                Err(error) => {
                    self.consumer_errors.report("cannot read the committed offsets of an assigned task; retrying", &error);
                    let now = Instant::now();
                    let since = *self.failing_since.entry(id).or_insert(now);
                    if now.duration_since(since) >= task_timeout {
                        return Err(StreamsError::TaskTimeout { task: id, partitions: inputs.iter().map(|t| format!("{t}-{}", id.partition)).collect::<Vec<_>>().join(", "), error: error.to_string() });
                    }
                    self.last_create_failure = Some(now);
                    return Ok(());
                }
            };
            self.failing_since.remove(&id);
            match self.tasks.create(id, &committed, &mut self.changelogs) {
                Ok(seeks) => {
                    for (topic, partition, offset) in seeks {
                        self.pending_seeks.insert((topic.to_string(), partition), offset);
                    }
                    self.unstarted.remove(&id);
                }
                Err(error @ StreamsError::Restore { .. }) => {
                    self.consumer_errors.report("cannot start restoring an assigned task; retrying", &error);
                    self.last_create_failure = Some(Instant::now());
                    return Ok(());
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Places this thread's standby tasks again when the group changed (see
    /// [`crate::standby`]), refreshes their bound under `at_least_once`, and applies one step
    /// of their changelogs.
    fn maintain_standbys(&mut self) -> Result<(), StreamsError> {
        let Some(group) = self.group.clone() else { return Ok(()) };
        let exactly_once = self.config().processing_guarantee == ProcessingGuarantee::ExactlyOnceV2;
        let wanted = {
            let view = group.lock().expect("group view lock");
            let changed = self.placed != Some(view.version);
            self.placed = Some(view.version);
            changed.then(|| {
                let wanted = standby_tasks(&self.instance, &view.members, self.config().static_membership, &self.subtopologies, self.config().num_standby_replicas);
                (wanted, assigned_tasks(&self.instance, &view.members, &self.subtopologies))
            })
        };
        let consumer = &self.consumer;
        let committed_of = |id: TaskId, inputs: &[String]| -> Option<BTreeMap<(String, i32), i64>> {
            let mut list = TopicPartitionList::new();
            for topic in inputs {
                list.add_partition(topic, id.partition);
            }
            // Unknown yet: nothing is applied until the next refresh.
            Some(committed_offsets(consumer, list, Duration::from_secs(1)).unwrap_or_default())
        };
        if let Some((wanted, promoting)) = wanted {
            self.tasks.set_standbys(&wanted, &promoting, |id, inputs| if exactly_once { None } else { committed_of(id, inputs) })?;
        }
        if !exactly_once && self.last_standby_committed.elapsed() >= STANDBY_COMMITTED_REFRESH {
            self.last_standby_committed = Instant::now();
            for id in self.tasks.standby_ids() {
                if let Some(committed) = committed_of(id, &self.tasks.input_topics(id.subtopology)) {
                    self.tasks.set_standby_committed(id, committed);
                }
            }
        }
        match self.tasks.update_standbys(&mut self.changelogs, STANDBY_RECORDS_PER_STEP) {
            Ok(_) => Ok(()),
            Err(error @ StreamsError::Restore { .. }) => {
                self.consumer_errors.report("a standby update failed; retrying", &error);
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// Publishes this instance's running tasks on the discovery topic (with
    /// `application_server` set). A failure is logged, not fatal: queries are routed by the
    /// next heartbeat.
    fn publish_instance(&mut self) {
        self.last_heartbeat = Instant::now();
        let info = InstanceInfo {
            instance: self.instance.clone(),
            application_server: self.config().application_server.clone().unwrap_or_default(),
            tasks: self.tasks.tasks().map(|(id, _)| id.to_string()).collect(),
            updated_at_ms: now_ms(),
            standby_tasks: self.tasks.standby_ids().iter().map(ToString::to_string).collect(),
            restoring: self.tasks.restore_progress().into_iter().map(|(id, remaining)| (id.to_string(), remaining)).collect(),
            paused: self.streams.is_paused(),
        };
        self.streams.threads.lock().expect("threads lock").insert(info.instance.clone(), info.clone());
        if self.config().application_server.is_none() {
            return;
        }
        let payload = serde_json::to_vec(&info).expect("instance info serialises");
        let topic = instances_topic(&self.config().application_id);
        let headers = signature_headers(self.config().internal_keys.as_deref(), &topic, &info.instance, Some(&payload));
        let record = FutureRecord::to(&topic).key(&info.instance).payload(&payload).headers(headers);
        if let Err((error, _)) = self.discovery.send_result(record) {
            tracing::warn!(%error, "cannot publish this instance's tasks for interactive queries");
        }
    }

    /// Commits the tasks (docs/guarantees.md, the commit protocol), then the consumer offsets
    /// that moved (an idle thread sends no commits).
    fn commit(&mut self) -> Result<(), StreamsError> {
        self.last_commit = Instant::now();
        let exactly_once = self.config().processing_guarantee == ProcessingGuarantee::ExactlyOnceV2;
        if exactly_once {
            self.collector.set_group_metadata(self.consumer.group_metadata());
        }
        let Some(positions) = self.tasks.commit(now_ms(), &mut self.collector)? else {
            self.take_rewind_seeks();
            return Ok(());
        };
        if exactly_once {
            return Ok(()); // the offsets were committed in the transaction
        }
        let mut offsets = TopicPartitionList::new();
        for (topic, partition, position) in positions {
            if self.committed.get(&(topic.to_string(), partition)) != Some(&position) {
                offsets.add_partition_offset(&topic, partition, Offset::Offset(position))?;
            }
        }
        if offsets.count() > 0 {
            match self.consumer.commit(&offsets, CommitMode::Sync) {
                Ok(()) => {
                    for e in offsets.elements() {
                        if let Offset::Offset(position) = e.offset() {
                            self.committed.insert((e.topic().to_string(), e.partition()), position);
                        }
                    }
                }
                // State is durable; the next commit (or a restore) catches the offsets up.
                Err(error) => self.consumer_errors.report("consumer offset commit failed", &error),
            }
        }
        Ok(())
    }

    /// Closes every task without committing (a fenced thread: its transaction is void) and
    /// leaves the group.
    pub(crate) fn close_dirty(&mut self) {
        for id in self.tasks.owned_ids() {
            self.tasks.close_dirty(id);
        }
        self.consumer.unsubscribe();
    }

    /// Commits and closes every task, then leaves the group.
    pub(crate) fn close(&mut self) -> Result<(), StreamsError> {
        tracing::debug!(poll_ms = self.spent.0.as_millis() as u64, process_ms = self.spent.1.as_millis() as u64, commit_ms = self.spent.2.as_millis() as u64, "stream thread time");
        let result = self.commit();
        let closed = self.tasks.close_clean();
        if self.config().application_server.is_some() {
            // Gone: queries stop being routed here at once.
            let topic = instances_topic(&self.config().application_id);
            let key = self.instance.clone();
            let headers = signature_headers(self.config().internal_keys.as_deref(), &topic, &key, None);
            let _ = self.discovery.send_result(FutureRecord::<String, [u8]>::to(&topic).key(&key).headers(headers));
        }
        use rdkafka::producer::Producer;
        self.collector.producer().flush(Duration::from_secs(10))?;
        self.discovery.flush(Duration::from_secs(10))?;
        self.consumer.unsubscribe();
        result.and(closed)
    }
}

/// The headers of a discovery record: its signature, if the application signs.
fn signature_headers(keys: Option<&crate::signing::InternalKeys>, topic: &str, key: &str, value: Option<&[u8]>) -> rdkafka::message::OwnedHeaders {
    let headers = rdkafka::message::OwnedHeaders::new();
    match keys {
        Some(keys) => keys.sign_into(headers, topic, Some(key.as_bytes()), value),
        None => headers,
    }
}

/// The group's committed offsets of `list` (partitions with none are left out).
fn committed_offsets<C: ConsumerContext>(consumer: &BaseConsumer<C>, list: TopicPartitionList, timeout: Duration) -> rdkafka::error::KafkaResult<BTreeMap<(String, i32), i64>> {
    Ok(consumer
        .committed_offsets(list, timeout)?
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
            _ => None,
        })
        .collect())
}

/// Whether `topic`'s `partition` has records on the broker beyond `next` (see
/// [`crate::partition_group`]): judged from the cached high watermark, refreshed from the
/// broker while it says the partition is behind.
fn lag_state(consumer: &BaseConsumer, watermarks: &mut HashMap<String, Vec<Watermark>>, topic: &str, partition: i32, next: i64) -> FetchState {
    if !watermarks.contains_key(topic) {
        watermarks.insert(topic.to_string(), Vec::new());
    }
    let entries = watermarks.get_mut(topic).expect("inserted above");
    let index = match entries.iter().position(|w| w.partition == partition) {
        Some(index) => index,
        None => {
            let high = consumer.fetch_watermarks(topic, partition, Duration::from_secs(1)).map_or(-1, |(_, high)| high);
            entries.push(Watermark { partition, high, checked: Instant::now(), waiting: None });
            entries.len() - 1
        }
    };
    let w = &mut entries[index];
    if next >= w.high {
        w.waiting = None;
        return FetchState::CaughtUp;
    }
    if w.checked.elapsed() >= WATERMARK_REFRESH {
        w.checked = Instant::now();
        match consumer.fetch_watermarks(topic, partition, Duration::from_secs(1)) {
            Ok((_, high)) => w.high = high,
            Err(error) => {
                tracing::debug!(%topic, partition, %error, "cannot read the high watermark; not waiting");
                return FetchState::CaughtUp;
            }
        }
        if next >= w.high {
            w.waiting = None;
            return FetchState::CaughtUp;
        }
    }
    match w.waiting {
        Some((_, at)) if at != next => w.waiting = Some((Instant::now(), next)),
        Some((since, _)) if since.elapsed() >= LAG_WAIT_LIMIT => {
            tracing::debug!(%topic, partition, next, high = w.high, "nothing arrives below the high watermark; not waiting for it");
            return FetchState::CaughtUp;
        }
        Some(_) => {}
        None => w.waiting = Some((Instant::now(), next)),
    }
    FetchState::Lagging
}
