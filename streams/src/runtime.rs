//! [`KafkaStreams`]: runs a topology against a Kafka broker with the guarantee of docs/guarantees.md
//! (deduplicated effects without broker transactions).
//!
//! One stream thread: a consumer in the group `application.id` (range assignor, so
//! co-partitioned partitions land together), tasks created on assignment and dropped on
//! revocation (their state stays on disk for a fast resume), and the commit protocol every
//! `commit.interval.ms`: deliver outputs and changelog records and await every delivery; write
//! the sled batch (state + input positions + changelog offsets); commit the consumer offsets.
//! A failed delivery discards the batch, and the tasks are rebuilt from their last commit.
//!
//! Before a task processes, it restores: the changelog is replayed from the local checkpoint
//! (from the start after a wipe), skipping records stamped at or past the resume position, the
//! later of the local checkpoint and the group's committed offset. Records below a task's
//! position are skipped, so the consumer may start at the committed offset safely.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sluice_schemas::Codec;

use crate::interactive::{instances_topic, InstanceInfo, InteractiveQueries, LocalStores, HEARTBEAT};
use sluice_state::{ChangelogRecord, SourceOffset, TaskState};

use crate::processor::{ErrorAction, ProcessError};
use crate::record::{Record, RecordMetadata, Value};
use crate::registry::ProcessorRegistry;
use crate::task::{Task, TaskId};
use crate::topology::{changelog_topic, Topology};

pub use crate::DLQ_TOPIC;

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

/// Runtime settings (Kafka Streams names, snake_case).
#[derive(Debug, Clone)]
pub struct StreamsConfig {
    /// `application.id`: consumer group and internal topic prefix.
    pub application_id: String,
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// Schema Registry URL; needed when a topic of the topology has a schema.
    pub schema_registry_url: Option<String>,
    /// `state.dir`.
    pub state_dir: PathBuf,
    /// This instance's name, unique in the application and stable across its restarts: the key
    /// of its interactive-query discovery entry, and its `group.instance.id` with
    /// [`StreamsConfig::static_membership`].
    pub instance_id: String,
    /// Static group membership (KIP-345, `group.instance.id` = the instance id): an instance
    /// restarted within `session.timeout.ms` takes its partitions back without a rebalance.
    /// Off by default, as in Kafka Streams: members join dynamically.
    pub static_membership: bool,
    /// `commit.interval.ms`.
    pub commit_interval_ms: u64,
    /// `deserialization.exception.handler`.
    pub deserialization_error_policy: ErrorPolicy,
    /// `processing.exception.handler`.
    pub processing_error_policy: ErrorPolicy,
    /// Kafka Streams `num.stream.threads`: stream threads (consumers) in this instance; tasks
    /// are spread over them by the group's assignment. Thread `i` of an instance with several
    /// is named `<instance_id>-<i>`.
    pub num_stream_threads: usize,
    /// Kafka Streams `application.server`: the base URL this instance serves store queries
    /// at, published for interactive-query routing. `None`: not published.
    pub application_server: Option<String>,
}

/// Why the runtime stopped.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Kafka client failure.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A task could not be built or restored.
    #[error(transparent)]
    Task(#[from] crate::task::TaskError),
    /// State failure.
    #[error(transparent)]
    State(#[from] sluice_state::StateError),
    /// Processing failed under the `fail` policy, or with a fatal error.
    #[error("processing {topic}-{partition}@{offset}: {error}")]
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
    /// Configuration problem.
    #[error("{0}")]
    Config(String),
    /// A wall-clock punctuation failed (it has no input record to dead-letter or skip).
    #[error("punctuating task {task}: {error}")]
    Punctuation {
        /// The task.
        task: String,
        /// The error.
        error: ProcessError,
    },
    /// The consumer hit a fatal error (e.g. fenced by another member with its
    /// `group.instance.id`); this stream thread cannot go on.
    #[error("the consumer failed: {0}")]
    ConsumerFailed(String),
}

/// Rebalance events, recorded by the consumer context and handled by the stream thread.
#[derive(Default)]
struct StreamContext {
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
                if p.consumer_lag >= 0 {
                    metrics::gauge!(crate::metrics::RECORDS_LAG, "topic" => topic.clone(), "partition" => partition.to_string()).set(p.consumer_lag as f64);
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

/// A running Sluice application (Kafka Streams' `KafkaStreams`).
pub struct KafkaStreams {
    topology: Arc<Topology>,
    registry: Arc<ProcessorRegistry>,
    config: StreamsConfig,
    local_stores: LocalStores,
}

/// A pending delivery: outputs are only awaited at commit.
struct Pending {
    future: rdkafka::producer::DeliveryFuture,
    /// For changelog records: (task, store).
    changelog: Option<(TaskId, String)>,
}

impl KafkaStreams {
    /// A runtime for `topology` whose processor kinds are in `registry`.
    pub fn new(topology: Topology, registry: ProcessorRegistry, config: StreamsConfig) -> Result<KafkaStreams, RuntimeError> {
        registry.check(&topology).map_err(|missing| RuntimeError::Config(missing.join("\n")))?;
        if topology.topics.iter().any(|t| t.schema.is_some()) && config.schema_registry_url.is_none() {
            return Err(RuntimeError::Config("the topology has Avro topics: set schema_registry_url".to_string()));
        }
        Ok(KafkaStreams { topology: Arc::new(topology), registry: Arc::new(registry), config, local_stores: LocalStores::default() })
    }

    /// Interactive queries over this instance's stores (and, once
    /// [`InteractiveQueries::discover`] runs, routing to the other instances').
    pub fn interactive_queries(&self) -> InteractiveQueries {
        InteractiveQueries::new(Arc::clone(&self.topology), self.local_stores.clone(), &self.config.instance_id)
    }

    /// Runs `num_stream_threads` stream threads until `shutdown` becomes true (or one fails,
    /// which stops the others), then commits and closes cleanly.
    pub fn run(&self, shutdown: &AtomicBool) -> Result<(), RuntimeError> {
        let threads = self.config.num_stream_threads.max(1);
        let failed = AtomicBool::new(false);
        if threads == 1 {
            return self.run_thread(&self.config.instance_id, shutdown, &failed);
        }
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|i| {
                    let (failed, instance) = (&failed, format!("{}-{i}", self.config.instance_id));
                    std::thread::Builder::new()
                        .name(format!("sluice-stream-{i}"))
                        .spawn_scoped(scope, move || {
                            let result = self.run_thread(&instance, shutdown, failed);
                            if result.is_err() {
                                failed.store(true, Ordering::SeqCst);
                            }
                            result
                        })
                        .expect("spawning a stream thread")
                })
                .collect();
            let mut outcome = Ok(());
            for handle in handles {
                let result = handle.join().unwrap_or_else(|_| Err(RuntimeError::Config("a stream thread panicked".to_string())));
                if outcome.is_ok() {
                    outcome = result;
                }
            }
            outcome
        })
    }

    /// One stream thread (named `instance`): its own consumer, producer and restore consumer.
    fn run_thread(&self, instance: &str, shutdown: &AtomicBool, failed: &AtomicBool) -> Result<(), RuntimeError> {
        let io = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| RuntimeError::Config(e.to_string()))?;
        let codec = match &self.config.schema_registry_url {
            Some(url) => Some(Codec::new(url).map_err(|e| RuntimeError::Config(e.to_string()))?),
            None => None,
        };
        let mut consumer_config = ClientConfig::new();
        consumer_config
            .set("bootstrap.servers", &self.config.bootstrap_servers)
            .set("group.id", &self.config.application_id)
            .set("partition.assignment.strategy", "range")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .set("max.poll.interval.ms", "15000")
            .set("statistics.interval.ms", LAG_INTERVAL.as_millis().to_string());
        if self.config.static_membership {
            consumer_config.set("group.instance.id", instance);
        }
        let consumer: BaseConsumer<StreamContext> = consumer_config.create_with_context(StreamContext::default())?;
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &self.config.bootstrap_servers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000")
            .create()?;
        // Kafka Streams' restore consumer: no group, assigned one changelog partition at a time.
        let restore_consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.config.bootstrap_servers)
            .set("group.id", format!("{}-restore", self.config.application_id))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create()?;
        let sources: Vec<String> = self
            .topology
            .subtopologies
            .iter()
            .flat_map(|s| self.topology.input_topics(s.id, &self.config.application_id))
            .collect();
        let source_refs: Vec<&str> = sources.iter().map(String::as_str).collect();
        consumer.subscribe(&source_refs)?;
        tracing::info!(application_id = %self.config.application_id, topics = sources.len(), "stream thread started");

        let mut thread = StreamThread {
            streams: self,
            instance: instance.to_string(),
            consumer,
            producer,
            restore_consumer,
            codec,
            io,
            tasks: BTreeMap::new(),
            pending: Vec::new(),
            // External topics by name, repartition topics by their full internal name.
            schemas: self
                .topology
                .topics
                .iter()
                .map(|t| (t.name.clone(), t.schema.clone()))
                .chain(self.topology.repartitions.iter().map(|r| (crate::topology::repartition_topic(&self.config.application_id, &r.name), r.schema.clone())))
                .collect(),
            last_commit: Instant::now(),
            pending_seeks: Vec::new(),
            consumer_errors: ErrorLog::default(),
            committed: HashMap::new(),
            last_wall_clock_punctuation: Instant::now(),
            last_heartbeat: Instant::now(),
        };
        let result = thread.run_loop(shutdown, failed);
        let closed = thread.close();
        result.and(closed)
    }
}

struct StreamThread<'a> {
    streams: &'a KafkaStreams,
    /// This thread's `group.instance.id`.
    instance: String,
    consumer: BaseConsumer<StreamContext>,
    producer: FutureProducer,
    restore_consumer: BaseConsumer,
    codec: Option<Codec>,
    io: tokio::runtime::Runtime,
    tasks: BTreeMap<TaskId, Task>,
    pending: Vec<Pending>,
    /// Schema file per external topic (None: raw bytes).
    schemas: HashMap<String, Option<String>>,
    last_commit: Instant,
    /// Seeks to task positions not yet accepted by the consumer (retried every loop).
    pending_seeks: Vec<(String, i32, i64)>,
    consumer_errors: ErrorLog,
    /// The input offsets this thread last committed to the group.
    committed: HashMap<(String, i32), i64>,
    last_wall_clock_punctuation: Instant,
    last_heartbeat: Instant,
}

/// How often the stream thread advances its tasks' wall clocks: the resolution of wall-clock
/// punctuation.
const WALL_CLOCK_TICK: Duration = Duration::from_millis(10);

/// Logs transient consumer errors (a broker away answers every poll with one) once per kind
/// and then at most every 10 s.
#[derive(Default)]
struct ErrorLog {
    last: Option<(String, Instant)>,
    suppressed: u64,
}

impl ErrorLog {
    fn report(&mut self, error: &rdkafka::error::KafkaError) {
        let text = error.to_string();
        match &self.last {
            Some((last, at)) if *last == text && at.elapsed() < Duration::from_secs(10) => self.suppressed += 1,
            _ => {
                tracing::warn!(%error, repeated = self.suppressed, "consumer error");
                self.last = Some((text, Instant::now()));
                self.suppressed = 0;
            }
        }
    }
}

/// How often librdkafka reports statistics, which refresh the records-lag gauges.
const LAG_INTERVAL: Duration = Duration::from_secs(5);

impl StreamThread<'_> {
    fn config(&self) -> &StreamsConfig {
        &self.streams.config
    }

    fn run_loop(&mut self, shutdown: &AtomicBool, failed: &AtomicBool) -> Result<(), RuntimeError> {
        let commit_interval = Duration::from_millis(self.config().commit_interval_ms);
        while !shutdown.load(Ordering::SeqCst) && !failed.load(Ordering::SeqCst) {
            self.apply_pending_seeks();
            // Detached: the message must outlive the consumer borrow while tasks change.
            let polled = Instant::now();
            let message = self.consumer.poll(Duration::from_millis(50)).map(|m| m.map(|m| m.detach()));
            metrics::histogram!(crate::metrics::POLL_LATENCY_SECONDS).record(polled.elapsed().as_secs_f64());
            self.handle_rebalance()?;
            match message {
                Some(Ok(message)) => self.process_message(&message)?,
                Some(Err(error)) => {
                    if let Some((_, reason)) = self.consumer.client().fatal_error() {
                        return Err(RuntimeError::ConsumerFailed(reason));
                    }
                    self.consumer_errors.report(&error);
                }
                None => {}
            }
            if self.last_wall_clock_punctuation.elapsed() >= WALL_CLOCK_TICK {
                self.punctuate_wall_clock()?;
            }
            if self.last_heartbeat.elapsed() >= HEARTBEAT {
                self.publish_instance();
            }
            if self.last_commit.elapsed() >= commit_interval {
                let started = Instant::now();
                self.commit()?;
                metrics::histogram!(crate::metrics::COMMIT_LATENCY_SECONDS).record(started.elapsed().as_secs_f64());
            }
        }
        Ok(())
    }

    /// Advances every task's wall clock, firing its due wall-clock punctuations
    /// (`schedule(..., WallClockTime)`), and sends what they forwarded. Stream-time
    /// punctuations fire as records are processed.
    fn punctuate_wall_clock(&mut self) -> Result<(), RuntimeError> {
        self.last_wall_clock_punctuation = Instant::now();
        let now = now_ms();
        let ids: Vec<TaskId> = self.tasks.keys().copied().collect();
        for id in ids {
            let task = self.tasks.get_mut(&id).expect("task exists");
            task.advance_wall_clock(now).map_err(|error| RuntimeError::Punctuation { task: id.to_string(), error })?;
            self.send_outputs(id)?;
        }
        Ok(())
    }

    /// Seeks assigned partitions to their tasks' positions; keeps the ones the consumer cannot
    /// seek yet (a partition starts accepting seeks once its fetcher is set up).
    fn apply_pending_seeks(&mut self) {
        let pending = std::mem::take(&mut self.pending_seeks);
        for (topic, partition, position) in pending {
            if let Err(error) = self.consumer.seek(&topic, partition, Offset::Offset(position), Duration::from_millis(100)) {
                tracing::debug!(%topic, partition, position, %error, "seek not accepted yet; retrying");
                self.pending_seeks.push((topic, partition, position));
            }
        }
    }

    /// Drops revoked tasks (uncommitted work is redone by the next owner) and creates tasks
    /// for newly assigned partitions.
    fn handle_rebalance(&mut self) -> Result<(), RuntimeError> {
        let revoked: Vec<(String, i32)> = std::mem::take(&mut *self.consumer.context().revoked.lock().expect("revoked lock"));
        if !revoked.is_empty() {
            self.committed.retain(|partition, _| !revoked.contains(partition));
            let ids: Vec<TaskId> = self.tasks.keys().copied().filter(|id| revoked.iter().any(|(_, p)| *p == id.partition)).collect();
            for id in ids {
                if let Some(task) = self.tasks.remove(&id) {
                    self.streams.local_stores.remove(id);
                    let mut state = task.close();
                    state.abort();
                    tracing::info!(task = %id, "task suspended (state kept on disk)");
                }
            }
            metrics::gauge!(crate::metrics::ACTIVE_TASKS).set(self.streams.local_stores.len() as f64);
            self.publish_instance();
        }
        if !self.consumer.context().assignment_changed.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        let assignment = self.consumer.assignment()?;
        let assigned: Vec<(String, i32)> = assignment.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
        let app = self.config().application_id.clone();
        for sub in &self.streams.topology.subtopologies {
            let inputs = self.streams.topology.input_topics(sub.id, &app);
            for partition in 0..sub.partitions {
                let id = TaskId { subtopology: sub.id, partition };
                let complete = inputs.iter().all(|t| assigned.contains(&(t.clone(), partition)));
                if complete && !self.tasks.contains_key(&id) {
                    let task = self.create_task(id, &inputs)?;
                    // Start fetching at the task's resume position: it can be ahead of the
                    // group's committed offset (state committed, offsets commit failed).
                    for (topic, position) in task.inputs() {
                        self.pending_seeks.push((topic.to_string(), partition, position));
                    }
                    self.streams.local_stores.add(id, task.state());
                    self.tasks.insert(id, task);
                }
            }
        }
        metrics::gauge!(crate::metrics::ACTIVE_TASKS).set(self.streams.local_stores.len() as f64);
        self.publish_instance();
        Ok(())
    }

    /// Publishes this instance's tasks on the discovery topic (with `application_server` set).
    /// A failure is logged, not fatal: queries are routed by the next heartbeat.
    fn publish_instance(&mut self) {
        self.last_heartbeat = Instant::now();
        let Some(server) = &self.config().application_server else { return };
        let info = InstanceInfo {
            instance: self.instance.clone(),
            application_server: server.clone(),
            tasks: self.tasks.keys().map(ToString::to_string).collect(),
            updated_at_ms: now_ms(),
        };
        let payload = serde_json::to_vec(&info).expect("instance info serialises");
        let topic = instances_topic(&self.config().application_id);
        let record = FutureRecord::to(&topic).key(&info.instance).payload(&payload);
        if let Err((error, _)) = self.producer.send_result(record) {
            tracing::warn!(%error, "cannot publish this instance's tasks for interactive queries");
        }
    }

    /// Opens a task's state, restores it from its changelogs and builds it.
    fn create_task(&self, id: TaskId, inputs: &[String]) -> Result<Task, RuntimeError> {
        let topology = &self.streams.topology;
        let app = &self.config().application_id;
        let stores = topology.task_stores(id.subtopology);
        let store_refs: Vec<(&str, bool)> = stores.iter().map(|(n, l)| (n.as_str(), *l)).collect();
        let dir = id.state_dir(&self.config().state_dir, app);
        let mut state = TaskState::open(&dir, &store_refs)?;
        // The group's committed offsets for this task's inputs.
        let mut list = TopicPartitionList::new();
        for topic in inputs {
            list.add_partition(topic, id.partition);
        }
        let committed_list = self.consumer.committed_offsets(list, Duration::from_secs(10))?;
        let committed: BTreeMap<(String, i32), i64> = committed_list
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
                _ => None,
            })
            .collect();
        tracing::debug!(task = %id, local = ?state.checkpoint(), ?committed, "restoring");
        let started = Instant::now();
        let mut records = Vec::new();
        for (store, logged) in &stores {
            if *logged {
                let from = state.checkpoint().changelog_offsets.get(store).copied().unwrap_or(0);
                records.extend(read_changelog(&self.restore_consumer, &changelog_topic(app, store), store, id.partition, from, &id.to_string())?);
            }
        }
        let total = records.len();
        let stats = state.restore(records, &committed)?;
        metrics::gauge!(crate::metrics::RESTORE_RECORDS_REMAINING, "task" => id.to_string()).set(0.0);
        metrics::counter!(crate::metrics::RESTORE_RECORDS_TOTAL, "task" => id.to_string()).increment(stats.applied);
        tracing::info!(task = %id, records = total, applied = stats.applied, skipped = stats.skipped, elapsed_ms = started.elapsed().as_millis() as u64, "task restored");
        tracing::debug!(task = %id, resume = ?state.checkpoint().input_offsets, "resuming");
        Ok(Task::new(id, topology, &self.streams.registry, app, state, now_ms())?)
    }

    fn process_message(&mut self, message: &OwnedMessage) -> Result<(), RuntimeError> {
        let partition = message.partition();
        let offset = message.offset();
        let topic = message.topic();
        let Some(id) = self.tasks.iter().find(|(id, task)| id.partition == partition && task.position(topic).is_some()).map(|(id, _)| *id) else {
            tracing::warn!(%topic, partition, offset, "record for a partition without a task; skipped (it will be redelivered to its owner)");
            return Ok(());
        };
        let position = self.tasks[&id].position(topic).unwrap_or(0);
        if offset < position {
            // Processed before the last crash and already in local state (see module docs).
            // Offsets above the position are normal: compaction, retention and transaction
            // markers leave gaps.
            return Ok(());
        }
        let metadata = RecordMetadata { topic: Arc::from(topic), partition, offset };
        let partitions = self.streams.topology.subtopologies[id.subtopology].partitions;
        if let Some(Err(reason)) = message.key().map(|key| crate::partitioner::check_partition(key, partition, partitions)) {
            let policy = self.config().deserialization_error_policy;
            return self.handle_error(id, &metadata, message, ProcessError::poison("wrong_partition", reason), policy);
        }
        let record = match self.decode(message) {
            Ok(record) => record,
            Err(error) => {
                let policy = self.config().deserialization_error_policy;
                return self.handle_error(id, &metadata, message, error, policy);
            }
        };
        let result = self.tasks.get_mut(&id).expect("task exists").process(metadata.clone(), record);
        if let Err(error) = result {
            let policy = match error.action() {
                ErrorAction::DeadLetter => self.config().processing_error_policy,
                ErrorAction::Retry | ErrorAction::Fail => ErrorPolicy::Fail,
            };
            self.handle_error(id, &metadata, message, error, policy)?;
        }
        self.send_outputs(id)
    }

    fn decode(&self, message: &OwnedMessage) -> Result<Record, ProcessError> {
        let key = match message.key() {
            Some(bytes) => Some(String::from_utf8(bytes.to_vec()).map_err(|_| ProcessError::poison("deserialization", "key is not UTF-8"))?),
            None => None,
        };
        let mut headers = Vec::new();
        if let Some(list) = message.headers() {
            for header in list.iter() {
                headers.push((header.key.to_string(), header.value.unwrap_or_default().to_vec()));
            }
        }
        let schema = self.schemas.get(message.topic()).and_then(|s| s.as_deref());
        let value = match (message.payload(), schema, &self.codec) {
            (None, _, _) => Value::Null,
            (Some(bytes), None, _) => Value::Bytes(bytes.to_vec()),
            (Some(bytes), Some(stem), Some(codec)) => {
                let decoded = self.io.block_on(codec.decode_any(stem, bytes));
                match decoded {
                    Ok(record) => Value::Record(record),
                    Err(error) if error.is_poison() => return Err(ProcessError::poison("deserialization", error)),
                    Err(error) => return Err(ProcessError::Retriable(error.to_string())),
                }
            }
            (Some(_), Some(_), None) => return Err(ProcessError::Fatal("no schema registry configured".to_string())),
        };
        let timestamp = message.timestamp().to_millis().unwrap_or(0);
        Ok(Record { key, value, timestamp, headers })
    }

    fn handle_error(&mut self, id: TaskId, metadata: &RecordMetadata, message: &OwnedMessage, error: ProcessError, policy: ErrorPolicy) -> Result<(), RuntimeError> {
        let fail = |error| RuntimeError::Process { topic: metadata.topic.to_string(), partition: metadata.partition, offset: metadata.offset, error };
        match policy {
            ErrorPolicy::Fail => return Err(fail(error)),
            ErrorPolicy::LogAndContinue => {
                tracing::warn!(topic = %metadata.topic, partition = metadata.partition, offset = metadata.offset, %error, "record skipped");
            }
            ErrorPolicy::Dlq => {
                tracing::warn!(topic = %metadata.topic, partition = metadata.partition, offset = metadata.offset, %error, "record dead-lettered");
                metrics::counter!(crate::metrics::DLQ_RECORDS_TOTAL, "reason" => error.class().to_string()).increment(1);
                let letter = crate::dead_letter(metadata, message.timestamp().to_millis().unwrap_or(0), &error, message.key(), message.payload());
                let payload = match &self.codec {
                    Some(codec) => self.io.block_on(codec.encode(DLQ_TOPIC, &letter)).map_err(|e| RuntimeError::Config(format!("encoding a dead letter: {e}")))?,
                    // Without a registry the DLQ keeps the original bytes; the headers say why.
                    None => crate::bounded(message.payload().unwrap_or_default(), crate::DEAD_LETTER_VALUE_LIMIT).to_vec(),
                };
                let mut headers = OwnedHeaders::new();
                for (name, value) in crate::dlq_headers(metadata, &error, message.key(), message.payload()) {
                    headers = headers.insert(Header { key: &name, value: Some(value.as_bytes()) });
                }
                let mut record = FutureRecord::to(DLQ_TOPIC).payload(&payload).headers(headers);
                if let Some(key) = message.key() {
                    record = record.key(crate::bounded(key, crate::DEAD_LETTER_KEY_LIMIT));
                }
                self.send(record, None)?;
            }
        }
        self.tasks.get_mut(&id).expect("task exists").skip(metadata);
        Ok(())
    }

    fn send(&mut self, record: FutureRecord<'_, [u8], Vec<u8>>, changelog: Option<(TaskId, String)>) -> Result<(), RuntimeError> {
        match self.producer.send_result(record) {
            Ok(future) => {
                self.pending.push(Pending { future, changelog });
                Ok(())
            }
            Err((error, _)) => Err(RuntimeError::Kafka(error)),
        }
    }

    /// Produces what a task's sinks wrote.
    fn send_outputs(&mut self, id: TaskId) -> Result<(), RuntimeError> {
        let outputs = self.tasks.get_mut(&id).expect("task exists").take_outputs();
        for output in outputs {
            let payload: Option<Vec<u8>> = match &output.record.value {
                Value::Null => None,
                Value::Bytes(bytes) => Some(bytes.clone()),
                Value::Record(any) => {
                    let codec = self.codec.as_ref().ok_or_else(|| RuntimeError::Config("no schema registry configured".to_string()))?;
                    Some(self.io.block_on(codec.encode_any(&output.topic, any)).map_err(|e| RuntimeError::Config(format!("encoding for {}: {e}", output.topic)))?)
                }
            };
            let mut headers = OwnedHeaders::new();
            for (name, value) in &output.record.headers {
                headers = headers.insert(Header { key: name, value: Some(value) });
            }
            let key = output.record.key.as_deref().map(str::as_bytes);
            let mut record: FutureRecord<'_, [u8], Vec<u8>> = FutureRecord::to(&output.topic).headers(headers).timestamp(output.record.timestamp);
            if let Some(key) = key {
                record = record.key(key);
            }
            if let Some(payload) = &payload {
                record = record.payload(payload);
            }
            self.send(record, None)?;
        }
        Ok(())
    }

    /// The commit protocol (docs/guarantees.md, the commit protocol).
    fn commit(&mut self) -> Result<(), RuntimeError> {
        self.last_commit = Instant::now();
        let app = self.config().application_id.clone();
        // 1. Deliver changelog records (stamped with their inputs) and await every delivery.
        let ids: Vec<TaskId> = self.tasks.keys().copied().collect();
        for id in &ids {
            let changes = self.tasks.get_mut(id).expect("task exists").drain_changelog();
            for change in changes {
                let topic = changelog_topic(&app, &change.store);
                let mut headers = OwnedHeaders::new();
                for (name, value) in change.source.headers() {
                    headers = headers.insert(Header { key: name, value: Some(value.as_bytes()) });
                }
                let mut record: FutureRecord<'_, [u8], Vec<u8>> = FutureRecord::to(&topic).partition(id.partition).key(change.key.as_slice()).headers(headers);
                if let Some(value) = &change.value {
                    record = record.payload(value);
                }
                self.send(record, Some((*id, change.store.to_string())))?;
            }
        }
        let pending = std::mem::take(&mut self.pending);
        let mut changelog_offsets: BTreeMap<TaskId, BTreeMap<String, i64>> = BTreeMap::new();
        let mut failure = None;
        for Pending { future, changelog } in pending {
            let delivered: Result<OwnedDeliveryResult, _> = self.io.block_on(future);
            match delivered {
                Ok(Ok(delivery)) => {
                    if let Some((id, store)) = changelog {
                        let next = changelog_offsets.entry(id).or_default().entry(store).or_insert(0);
                        *next = (*next).max(delivery.offset + 1);
                    }
                }
                Ok(Err((error, _))) => failure = Some(error.to_string()),
                Err(_) => failure = Some("delivery cancelled".to_string()),
            }
        }
        if let Some(reason) = failure {
            tracing::error!(%reason, "a delivery failed; discarding the batch and resuming from the last commit");
            return self.rewind();
        }
        // 2. Write each task's sled batch: state, input positions, changelog offsets.
        let mut offsets = TopicPartitionList::new();
        for (id, task) in self.tasks.iter_mut() {
            let stores = changelog_offsets.remove(id).unwrap_or_default();
            let stores: Vec<(&str, i64)> = stores.iter().map(|(s, o)| (s.as_str(), *o)).collect();
            task.commit(&stores)?;
            for store in task.state().store_names() {
                if let Ok(handle) = task.state().store(store) {
                    use sluice_state::KeyValueStore;
                    metrics::gauge!(crate::metrics::STORE_KEYS, "store" => store.to_string(), "task" => id.to_string()).set(handle.approximate_num_entries() as f64);
                }
            }
            tracing::debug!(task = %id, positions = ?task.positions(), changelog = ?stores, "task committed");
            for (partition, position) in task.positions() {
                if self.committed.get(&partition) != Some(&position) {
                    offsets.add_partition_offset(&partition.0, partition.1, Offset::Offset(position))?;
                }
            }
        }
        // 3. Commit the consumer offsets that moved (an idle thread sends no commits).
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
                Err(error) => tracing::warn!(%error, "consumer offset commit failed"),
            }
        }
        Ok(())
    }

    /// Discards uncommitted work: rebuilds every task from its last commit and seeks the
    /// consumer back to the task positions.
    fn rewind(&mut self) -> Result<(), RuntimeError> {
        let ids: Vec<TaskId> = self.tasks.keys().copied().collect();
        let app = self.config().application_id.clone();
        for id in ids {
            let task = self.tasks.remove(&id).expect("task exists");
            self.streams.local_stores.remove(id);
            let mut state = task.close();
            state.abort();
            drop(state);
            let inputs = self.streams.topology.input_topics(id.subtopology, &app);
            let task = self.create_task(id, &inputs)?;
            for (topic, position) in task.inputs() {
                self.consumer.seek(topic, id.partition, Offset::Offset(position), Duration::from_secs(10))?;
            }
            self.streams.local_stores.add(id, task.state());
            self.tasks.insert(id, task);
        }
        Ok(())
    }

    /// Commits and closes every task, then leaves the group.
    fn close(&mut self) -> Result<(), RuntimeError> {
        let result = self.commit();
        for (id, task) in std::mem::take(&mut self.tasks) {
            self.streams.local_stores.remove(id);
            let state = task.close();
            state.flush()?;
            tracing::info!(task = %id, "task closed");
        }
        if self.config().application_server.is_some() {
            // Gone: queries stop being routed here at once.
            let topic = instances_topic(&self.config().application_id);
            let key = self.instance.clone();
            let _ = self.producer.send_result(FutureRecord::<String, [u8]>::to(&topic).key(&key));
        }
        self.producer.flush(Duration::from_secs(10))?;
        self.consumer.unsubscribe();
        result
    }
}

/// Reads a changelog partition from `from` to its end offset, as the broker reports it when
/// the restore starts (no consumer group, no commits). Offsets may have gaps (compaction).
fn read_changelog(consumer: &BaseConsumer, topic: &str, store: &str, partition: i32, from: i64, task: &str) -> Result<Vec<(i64, ChangelogRecord)>, RuntimeError> {
    let (low, end) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
    let start = from.max(low);
    let remaining = metrics::gauge!(crate::metrics::RESTORE_RECORDS_REMAINING, "task" => task.to_string());
    remaining.set((end - start).max(0) as f64);
    let mut records = Vec::new();
    if start >= end {
        return Ok(records);
    }
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, partition, Offset::Offset(start))?;
    consumer.assign(&list)?;
    let store: Arc<str> = Arc::from(store);
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut next = start;
    while next < end {
        if Instant::now() > deadline {
            return Err(RuntimeError::Config(format!("restoring {topic}-{partition}: at offset {next} of {end} after 300 s")));
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Err(error)) => return Err(error.into()),
            Some(Ok(message)) => {
                next = message.offset() + 1;
                if next % 1000 == 0 {
                    remaining.set((end - next).max(0) as f64);
                }
                let headers = message.headers().map(|list| list.iter().map(|h| (h.key, h.value.unwrap_or_default())).collect::<Vec<_>>()).unwrap_or_default();
                let source = SourceOffset::from_headers(headers).unwrap_or_else(SourceOffset::none);
                records.push((
                    message.offset(),
                    ChangelogRecord { store: Arc::clone(&store), key: message.key().unwrap_or_default().to_vec(), value: message.payload().map(<[u8]>::to_vec), source },
                ));
            }
            None => {
                // Nothing left below the end (the last records were compacted away).
                if consumer.position()?.elements_for_topic(topic).iter().any(|e| matches!(e.offset(), Offset::Offset(o) if o >= end)) {
                    break;
                }
            }
        }
    }
    consumer.unassign()?;
    Ok(records)
}

/// Milliseconds since the Unix epoch, by the wall clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
