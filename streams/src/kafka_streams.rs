//! [`KafkaStreams`] (Kafka Streams' name): runs a topology against a Kafka broker with the
//! guarantee of docs/guarantees.md, in `num_stream_threads` [`StreamThread`]s, and serves its
//! stores to interactive queries.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureProducer;

use crate::changelog_reader::{ChangelogContext, KafkaChangelogConsumer};
use crate::error::StreamsError;
use crate::interactive::{InteractiveQueries, LocalStores};
use crate::record_collector::KafkaRecordCollector;
use crate::registry::ProcessorRegistry;
use crate::serde::TopicSerdes;
use crate::standby::GroupView;
use crate::stream_thread::{StreamContext, StreamThread, ThreadClients, LAG_INTERVAL};
use crate::task_manager::{ErrorPolicy, TaskManager, TaskManagerConfig};
use crate::topology::Topology;

/// Kafka Streams `processing.guarantee` (docs/guarantees.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessingGuarantee {
    /// Outputs, changelog records, the state and the input offsets are committed one after
    /// the other; after a crash, the work since the last commit is redone (outputs may
    /// repeat; event ids deduplicate the state).
    AtLeastOnce,
    /// Outputs, changelog records and input offsets are committed in one Kafka transaction
    /// per stream thread and commit interval; readers with `read_committed` see each
    /// input's effects once.
    ExactlyOnceV2,
}

/// Runtime settings (Kafka Streams names, snake_case).
#[derive(Debug, Clone)]
pub struct StreamsConfig {
    /// `application.id`: consumer group and internal topic prefix.
    pub application_id: String,
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
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
    /// Kafka Streams `max.task.idle.ms` (docs/architecture.md, timestamp synchronization).
    pub max_task_idle_ms: i64,
    /// Kafka Streams `task.timeout.ms`: how long a task may fail to start (its committed
    /// offsets unreadable) before the stream thread stops with [`StreamsError::TaskTimeout`].
    pub task_timeout_ms: u64,
    /// `retry.backoff.ms`: the first wait after a retriable failure.
    pub retry_backoff_ms: i64,
    /// `retry.backoff.max.ms`: the longest wait between retries.
    pub retry_backoff_max_ms: i64,
    /// `processing.guarantee`.
    pub processing_guarantee: ProcessingGuarantee,
    /// `num.standby.replicas`: warm copies of each stateful task's stores kept on other
    /// members (see [`crate::standby`]).
    pub num_standby_replicas: usize,
    /// The application's internal key: signs and verifies the records of `signed` topics
    /// and the discovery entries (see [`crate::signing`]). Required when the topology has a
    /// signed topic; `None`: nothing is signed, discovery entries are taken as they are.
    pub internal_keys: Option<std::sync::Arc<crate::signing::InternalKeys>>,
}

impl StreamsConfig {
    /// A configuration with Kafka Streams' defaults for what is not given.
    pub fn new(application_id: &str, bootstrap_servers: &str, state_dir: PathBuf) -> StreamsConfig {
        StreamsConfig {
            application_id: application_id.to_string(),
            bootstrap_servers: bootstrap_servers.to_string(),
            state_dir,
            instance_id: application_id.to_string(),
            static_membership: false,
            commit_interval_ms: 100,
            deserialization_error_policy: ErrorPolicy::Dlq,
            processing_error_policy: ErrorPolicy::Dlq,
            num_stream_threads: 1,
            application_server: None,
            max_task_idle_ms: 0,
            task_timeout_ms: 300_000,
            retry_backoff_ms: 100,
            retry_backoff_max_ms: 1000,
            processing_guarantee: ProcessingGuarantee::AtLeastOnce,
            num_standby_replicas: 0,
            internal_keys: None,
        }
    }
}

/// `transaction.timeout.ms` under `exactly_once_v2` (Kafka Streams' value): how long the
/// transaction of an instance that died stays open, holding back `read_committed` readers of
/// its outputs and changelogs, before the coordinator aborts it.
pub const TRANSACTION_TIMEOUT_MS: u64 = 10_000;

/// Why the runtime stopped.
pub type RuntimeError = StreamsError;

/// A running [`KafkaStreams`] seen from another thread (an operator's console): pause and
/// resume it ([`KafkaStreams::pause`]), and what its stream threads run.
#[derive(Debug, Clone)]
pub struct StreamsHandle {
    paused: Arc<AtomicBool>,
    threads: LocalThreads,
}

/// What each stream thread of this instance runs, as it last said (by thread name).
pub(crate) type LocalThreads = Arc<Mutex<std::collections::BTreeMap<String, crate::interactive::InstanceInfo>>>;

impl StreamsHandle {
    /// Pauses (`true`) or resumes (`false`) processing.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }

    /// Whether processing is paused.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Kafka Streams' `metadataForLocalThreads`: each stream thread's active, standby and
    /// restoring tasks, refreshed at every discovery heartbeat and task change (whether or
    /// not `application_server` is set).
    pub fn local_threads(&self) -> Vec<crate::interactive::InstanceInfo> {
        self.threads.lock().expect("threads lock").values().cloned().collect()
    }
}

/// A running Sluice application (Kafka Streams' `KafkaStreams`).
pub struct KafkaStreams {
    pub(crate) topology: Arc<Topology>,
    pub(crate) registry: Arc<ProcessorRegistry>,
    pub(crate) config: StreamsConfig,
    pub(crate) local_stores: LocalStores,
    paused: Arc<AtomicBool>,
    pub(crate) threads: LocalThreads,
}

impl KafkaStreams {
    /// A runtime for `topology` whose processor kinds and serdes are in `registry`.
    pub fn new(topology: Topology, registry: ProcessorRegistry, config: StreamsConfig) -> Result<KafkaStreams, StreamsError> {
        registry.check(&topology).map_err(StreamsError::Registry)?;
        if config.internal_keys.is_none() {
            let signed: Vec<&str> = topology.topics.iter().chain(&topology.repartitions).filter(|t| t.signed).map(|t| t.name.as_str()).collect();
            if !signed.is_empty() {
                return Err(StreamsError::Config(format!("topics {} are signed, and no internal key is configured to verify them", signed.join(", "))));
            }
        }
        Ok(KafkaStreams { topology: Arc::new(topology), registry: Arc::new(registry), config, local_stores: LocalStores::default(), paused: Arc::default(), threads: LocalThreads::default() })
    }

    /// Interactive queries over this instance's stores (and, once
    /// [`InteractiveQueries::discover`] runs, routing to the other instances').
    pub fn interactive_queries(&self) -> InteractiveQueries {
        InteractiveQueries::new(Arc::clone(&self.topology), self.local_stores.clone(), &self.config.instance_id, self.config.internal_keys.clone())
    }

    /// Pauses processing (Kafka Streams' `KafkaStreams#pause`): the stream threads stay in
    /// the group and keep their tasks, standbys keep following their changelogs, and no record
    /// is processed until [`KafkaStreams::resume`]. The instance's discovery entry says so.
    pub fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }

    /// Resumes processing after [`KafkaStreams::pause`].
    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }

    /// Whether processing is paused (`KafkaStreams#isPaused`).
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// A handle that pauses and resumes this instance from elsewhere and sees its threads'
    /// tasks (an operator's console).
    pub fn handle(&self) -> StreamsHandle {
        StreamsHandle { paused: Arc::clone(&self.paused), threads: Arc::clone(&self.threads) }
    }

    /// Runs `num_stream_threads` stream threads until `shutdown` becomes true (or one fails,
    /// which stops the others), then commits and closes cleanly.
    pub fn run(&self, shutdown: &AtomicBool) -> Result<(), StreamsError> {
        let watcher = if self.config.num_standby_replicas > 0 {
            let stop = Arc::new(AtomicBool::new(false));
            let (view, handle) = crate::standby::watch_group(&self.config.bootstrap_servers, &self.config.application_id, Arc::clone(&stop))?;
            Some((view, handle, stop))
        } else {
            None
        };
        let group = watcher.as_ref().map(|(view, _, _)| view);
        let result = self.run_threads(shutdown, group);
        if let Some((_, handle, stop)) = watcher {
            stop.store(true, Ordering::SeqCst);
            let _ = handle.join();
        }
        result
    }

    fn run_threads(&self, shutdown: &AtomicBool, group: Option<&Arc<Mutex<GroupView>>>) -> Result<(), StreamsError> {
        let threads = self.config.num_stream_threads.max(1);
        let failed = AtomicBool::new(false);
        if threads == 1 {
            return self.run_thread(&self.config.instance_id, shutdown, &failed, group);
        }
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|i| {
                    let (failed, instance) = (&failed, format!("{}-{i}", self.config.instance_id));
                    std::thread::Builder::new()
                        .name(format!("sluice-stream-{i}"))
                        .spawn_scoped(scope, move || {
                            let result = self.run_thread(&instance, shutdown, failed, group);
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
                let result = handle.join().unwrap_or_else(|_| Err(StreamsError::Config("a stream thread panicked".to_string())));
                if outcome.is_ok() {
                    outcome = result;
                }
            }
            outcome
        })
    }

    /// One stream thread (named `instance`); a thread whose producer was fenced is replaced
    /// by a new one (new clients, its tasks restored), as Kafka Streams replaces it.
    fn run_thread(&self, instance: &str, shutdown: &AtomicBool, failed: &AtomicBool, group: Option<&Arc<Mutex<GroupView>>>) -> Result<(), StreamsError> {
        loop {
            match self.run_thread_once(instance, shutdown, failed, group) {
                Err(StreamsError::Fenced(reason)) if !shutdown.load(Ordering::SeqCst) => {
                    tracing::error!(thread = instance, %reason, "this stream thread's producer was fenced (another instance took its tasks, or a newer incarnation started); its uncommitted work is discarded and the thread restarts");
                    metrics::counter!(crate::metrics::THREAD_RESTARTS_TOTAL, "reason" => "fenced").increment(1);
                    // Two live instances configured with one instance id would fence each other
                    // in turn: pace the restarts.
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
                other => return other,
            }
        }
    }

    /// One run of a stream thread: its own consumer, producer and restore consumer.
    fn run_thread_once(&self, instance: &str, shutdown: &AtomicBool, failed: &AtomicBool, group: Option<&Arc<Mutex<GroupView>>>) -> Result<(), StreamsError> {
        let config = &self.config;
        let exactly_once = config.processing_guarantee == ProcessingGuarantee::ExactlyOnceV2;
        let isolation = if exactly_once { "read_committed" } else { "read_uncommitted" };
        let serde = TopicSerdes::new(&self.topology, &config.application_id, std::sync::Arc::clone(self.registry.serdes()), config.internal_keys.clone());
        let mut consumer_config = crate::kafka_client::client_config(&config.bootstrap_servers);
        consumer_config
            .set("group.id", &config.application_id)
            // Standby placement finds this thread in the group by its client id.
            .set("client.id", instance)
            .set("partition.assignment.strategy", "range")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .set("max.poll.interval.ms", "15000")
            .set("isolation.level", isolation)
            // librdkafka prefetches up to 100,000 records per partition by default, and backs
            // off a full second once that is reached: most of the thread's memory, and idle
            // gaps. Two task queues' worth, topped up every 10 ms, measured faster and a quarter
            // smaller; one queue's worth starved the pipeline (docs/performance.md, the prefetch).
            .set("queued.min.messages", (2 * crate::stream_thread::BUFFERED_RECORDS_PER_PARTITION).to_string())
            .set("fetch.queue.backoff.ms", "10")
            .set("statistics.interval.ms", LAG_INTERVAL.as_millis().to_string());
        if config.static_membership {
            consumer_config.set("group.instance.id", instance);
        }
        let consumer: BaseConsumer<StreamContext> = consumer_config.create_with_context(StreamContext::default())?;
        let mut producer_config = crate::kafka_client::client_config(&config.bootstrap_servers);
        producer_config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000");
        // Discovery heartbeats are not part of any transaction: a producer of their own.
        let discovery: FutureProducer = producer_config.create()?;
        if exactly_once {
            // Stable per thread, so that a restarted instance fences its previous incarnation
            // and aborts its open transaction at once; the coordinator aborts the transaction
            // of an instance that died for good after `transaction.timeout.ms`.
            // A delivery may not outlive its transaction: `message.timeout.ms` is cut to match.
            producer_config
                .set("transactional.id", format!("{}-{instance}", config.application_id))
                .set("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS.to_string())
                .set("message.timeout.ms", TRANSACTION_TIMEOUT_MS.to_string());
        }
        let producer: crate::record_collector::CollectorProducer = producer_config.create_with_context(crate::record_collector::CollectorContext::default())?;
        // Kafka Streams' restore consumer: no group, assigned the restoring changelogs.
        let restore_consumer: BaseConsumer<ChangelogContext> = crate::kafka_client::client_config(&config.bootstrap_servers)
            .set("group.id", format!("{}-restore", config.application_id))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", isolation)
            .set("statistics.interval.ms", LAG_INTERVAL.as_millis().to_string())
            .create_with_context(ChangelogContext::default())?;
        let watermark_client: BaseConsumer = crate::kafka_client::client_config(&config.bootstrap_servers).set("group.id", format!("{}-watermarks", config.application_id)).create()?;
        let sources: Vec<String> = self.topology.subtopologies.iter().flat_map(|s| self.topology.input_topics(s.id, &config.application_id)).collect();
        let source_refs: Vec<&str> = sources.iter().map(String::as_str).collect();
        consumer.subscribe(&source_refs)?;
        tracing::info!(application_id = %config.application_id, topics = sources.len(), "stream thread started");
        let tasks = TaskManager::new(
            Arc::clone(&self.topology),
            Arc::clone(&self.registry),
            TaskManagerConfig {
                application_id: config.application_id.clone(),
                state_dir: config.state_dir.clone(),
                deserialization_error_policy: config.deserialization_error_policy,
                processing_error_policy: config.processing_error_policy,
                max_task_idle_ms: config.max_task_idle_ms,
                retry_backoff_ms: config.retry_backoff_ms,
                retry_backoff_max_ms: config.retry_backoff_max_ms,
            },
            self.local_stores.clone(),
        );
        let collector = KafkaRecordCollector::new(producer, serde.clone(), exactly_once)?;
        let mut thread = StreamThread::new(
            self,
            instance,
            ThreadClients { consumer, watermark_client, collector, discovery, changelogs: KafkaChangelogConsumer::new(restore_consumer), group: group.cloned() },
            serde,
            tasks,
        );
        let result = thread.run_loop(shutdown, failed);
        if let Err(error @ StreamsError::Fenced(_)) = result {
            // Nothing of the thread's may be committed any more: close without a commit.
            thread.close_dirty();
            return Err(error);
        }
        let closed = thread.close();
        result.and(closed)
    }
}
