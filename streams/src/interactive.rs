//! Interactive queries (Kafka Streams' `KafkaStreams#store` and `queryMetadataForKey`): the
//! stores of running tasks are readable from other threads, and a query for a key whose
//! partition another instance owns is pointed at that instance.
//!
//! Discovery works on any broker: every instance with an `application_server` publishes its
//! tasks to the compacted topic `<application.id>-instances` after each rebalance and every
//! [`HEARTBEAT`]; a background reader keeps the latest entry per instance. Entries older than
//! [`STALE_AFTER`] are ignored: an instance killed without a clean shutdown leaves its last
//! claim on the topic, and the group may already have given its tasks to another.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use sluice_state::{StoreReader, TaskState};

use crate::partitioner::partition_for_key;
use crate::signing::InternalKeys;
use crate::stream_task::TaskId;
use crate::topology::Topology;

/// How often an instance re-publishes its tasks.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// An instance not heard from for this long is taken for dead.
pub const STALE_AFTER: Duration = Duration::from_secs(35);

/// The discovery topic of an application.
pub fn instances_topic(application_id: &str) -> String {
    format!("{application_id}-instances")
}

/// What one instance owns, as published on the discovery topic (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// The instance's `group.instance.id`.
    pub instance: String,
    /// Base URL its store queries are served at (Kafka Streams `application.server`).
    pub application_server: String,
    /// Its active tasks, written `0_3`.
    pub tasks: Vec<String>,
    /// When it published this (ms since the epoch).
    pub updated_at_ms: i64,
    /// Its standby tasks (`num.standby.replicas`).
    #[serde(default)]
    pub standby_tasks: Vec<String>,
    /// Its tasks still restoring, with the changelog records each has left to read.
    #[serde(default)]
    pub restoring: std::collections::BTreeMap<String, i64>,
    /// Whether its processing is paused ([`crate::KafkaStreams::pause`]).
    #[serde(default)]
    pub paused: bool,
}

/// How far ahead of this clock a discovery entry may be dated (clock skew between hosts); an
/// entry dated further would win every comparison for as long as it stays ahead.
pub const MAX_CLOCK_AHEAD_MS: i64 = 60_000;

/// Checks a discovery record's signature when the application has an internal key.
fn check_entry(keys: Option<&InternalKeys>, topic: &str, message: &rdkafka::message::BorrowedMessage<'_>) -> Result<(), String> {
    let Some(keys) = keys else { return Ok(()) };
    keys.verify_message(topic, message).map_err(|e| e.to_string())
}

/// A task's stores by name.
type TaskStores = Vec<(String, StoreReader)>;

/// The stores of this instance's running tasks, shared with the stream threads.
#[derive(Clone, Default)]
pub struct LocalStores {
    tasks: Arc<RwLock<BTreeMap<TaskId, TaskStores>>>,
}

impl LocalStores {
    /// Makes a task's stores readable.
    pub fn add(&self, id: TaskId, state: &TaskState) {
        let readers = state.store_names().filter_map(|name| state.reader(name).ok().map(|r| (name.to_string(), r))).collect();
        self.tasks.write().expect("local stores lock").insert(id, readers);
    }

    /// A task was suspended or closed.
    pub fn remove(&self, id: TaskId) {
        self.tasks.write().expect("local stores lock").remove(&id);
    }

    /// How many tasks run here.
    pub fn len(&self) -> usize {
        self.tasks.read().expect("local stores lock").len()
    }

    /// True when no task runs here.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The running tasks.
    pub fn task_ids(&self) -> Vec<TaskId> {
        self.tasks.read().expect("local stores lock").keys().copied().collect()
    }

    /// The reader of `store` in task `id`, if that task runs here.
    pub fn reader(&self, id: TaskId, store: &str) -> Option<StoreReader> {
        let tasks = self.tasks.read().expect("local stores lock");
        tasks.get(&id)?.iter().find(|(name, _)| name == store).map(|(_, reader)| reader.clone())
    }
}

/// Where a key's store lives.
#[derive(Debug, Clone)]
pub enum Location {
    /// In this process.
    Local(StoreReader),
    /// On another instance, at this base URL.
    Remote(String),
}

/// Why a store cannot be queried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// No store of that name in the topology.
    #[error("no store named `{0}`")]
    UnknownStore(String),
    /// Nobody serves the key's task right now (rebalancing, restoring, or its owner is down).
    #[error("task {0} of store `{1}` is not available on any instance right now")]
    NotAvailable(String, String),
}

/// Interactive queries over the application's stores.
#[derive(Clone)]
pub struct InteractiveQueries {
    topology: Arc<Topology>,
    local: LocalStores,
    instances: Arc<RwLock<BTreeMap<String, InstanceInfo>>>,
    self_instance: String,
    /// Verify discovery entries (and sign internal query requests) when set.
    keys: Option<Arc<InternalKeys>>,
}

impl InteractiveQueries {
    /// Queries over `local`, with remote instances learnt by [`InteractiveQueries::discover`].
    /// With `keys`, only discovery entries signed with them are believed.
    pub fn new(topology: Arc<Topology>, local: LocalStores, self_instance: &str, keys: Option<Arc<InternalKeys>>) -> InteractiveQueries {
        InteractiveQueries { topology, local, instances: Arc::default(), self_instance: self_instance.to_string(), keys }
    }

    /// The internal key (for the service tokens of query requests between instances).
    pub fn internal_keys(&self) -> Option<&Arc<InternalKeys>> {
        self.keys.as_ref()
    }

    /// The task holding `key` of `store` (Kafka Streams' `KeyQueryMetadata`).
    pub fn task_for(&self, store: &str, key: &str) -> Result<TaskId, QueryError> {
        let sub = self.topology.subtopologies.iter().find(|s| s.stores.iter().any(|n| n == store)).ok_or_else(|| QueryError::UnknownStore(store.to_string()))?;
        Ok(TaskId { subtopology: sub.id, partition: partition_for_key(key.as_bytes(), sub.partitions) })
    }

    /// Where to read `store` for records keyed (partitioned) by `key`.
    pub fn locate(&self, store: &str, key: &str, now_ms: i64) -> Result<Location, QueryError> {
        let id = self.task_for(store, key)?;
        if let Some(reader) = self.local.reader(id, store) {
            return Ok(Location::Local(reader));
        }
        let task = id.to_string();
        let instances = self.instances.read().expect("instances lock");
        instances
            .values()
            .filter(|i| self.serves_elsewhere(i, &task, now_ms))
            .max_by_key(|i| i.updated_at_ms)
            .map(|i| Location::Remote(i.application_server.clone()))
            .ok_or_else(|| QueryError::NotAvailable(task, store.to_string()))
    }

    /// Tasks with stores that no live instance (this one included) serves right now, e.g.
    /// while the group rebalances or tasks restore: readiness fails until this is empty.
    pub fn unavailable_tasks(&self, now_ms: i64) -> Vec<String> {
        let local = self.local.task_ids();
        let instances = self.instances.read().expect("instances lock");
        let mut missing = Vec::new();
        for sub in self.topology.subtopologies.iter().filter(|s| !s.stores.is_empty()) {
            for partition in 0..sub.partitions {
                let id = TaskId { subtopology: sub.id, partition };
                let task = id.to_string();
                let remote = instances.values().any(|i| self.serves_elsewhere(i, &task, now_ms));
                if !local.contains(&id) && !remote {
                    missing.push(task);
                }
            }
        }
        missing
    }

    /// True if `info` is another instance, heard from within [`STALE_AFTER`], that runs `task`.
    fn serves_elsewhere(&self, info: &InstanceInfo, task: &str, now_ms: i64) -> bool {
        info.instance != self.self_instance && info.tasks.iter().any(|t| t == task) && now_ms - info.updated_at_ms < STALE_AFTER.as_millis() as i64
    }

    /// How many tasks run in this instance (all restored and processing).
    pub fn local_task_count(&self) -> usize {
        self.local.len()
    }

    /// The instances known from the discovery topic (for diagnostics).
    pub fn instances(&self) -> Vec<InstanceInfo> {
        self.instances.read().expect("instances lock").values().cloned().collect()
    }

    /// Starts a thread that follows `<application.id>-instances` until `stop` is set.
    pub fn discover(&self, bootstrap_servers: &str, application_id: &str, stop: Arc<AtomicBool>) -> Result<std::thread::JoinHandle<()>, rdkafka::error::KafkaError> {
        let consumer: BaseConsumer = crate::kafka_client::client_config(bootstrap_servers)
            .set("group.id", format!("{application_id}-discovery"))
            .set("enable.auto.commit", "false")
            .create()?;
        let topic = instances_topic(application_id);
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&topic, 0, Offset::Beginning)?;
        consumer.assign(&list)?;
        let instances = Arc::clone(&self.instances);
        let keys = self.keys.clone();
        Ok(std::thread::Builder::new()
            .name("sluice-discovery".to_string())
            .spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let Some(Ok(message)) = consumer.poll(Duration::from_millis(250)) else { continue };
                    let Some(key) = message.key().map(|k| String::from_utf8_lossy(k).into_owned()) else { continue };
                    if let Err(error) = check_entry(keys.as_deref(), &topic, &message) {
                        tracing::warn!(%key, %error, offset = message.offset(), "discovery entry refused");
                        metrics::counter!(crate::metrics::DISCOVERY_ENTRIES_REFUSED_TOTAL).increment(1);
                        continue;
                    }
                    let mut map = instances.write().expect("instances lock");
                    match message.payload().map(serde_json::from_slice::<InstanceInfo>) {
                        Some(Ok(info)) if info.instance != key => tracing::warn!(%key, instance = %info.instance, "discovery entry for another instance than its key; ignored"),
                        Some(Ok(info)) if info.updated_at_ms > crate::now_ms() + MAX_CLOCK_AHEAD_MS => {
                            tracing::warn!(%key, updated_at_ms = info.updated_at_ms, "discovery entry dated in the future; ignored");
                        }
                        Some(Ok(info)) => {
                            map.insert(key, info);
                        }
                        None => {
                            map.remove(&key);
                        }
                        Some(Err(error)) => tracing::warn!(%key, %error, "unreadable entry on the discovery topic; ignored"),
                    }
                }
            })
            .expect("spawning the discovery thread"))
    }
}
