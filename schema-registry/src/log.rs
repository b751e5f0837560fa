//! The `_schemas` topic: creating it, tailing it into [`State`], appending to it.
//!
//! One consumer, manually assigned to partition 0 from the beginning (no consumer group: every
//! instance reads everything), applies records in offset order and publishes how far it got.
//! "Caught up" means that position has reached the partition's high watermark.

use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::record::RecordKey;
use crate::state::{Applied, State};
use crate::{RegistryConfig, RegistryError};

/// The only partition of `_schemas` (Confluent's registry also requires exactly one).
const PARTITION: i32 = 0;
/// Bound on admin operations and metadata requests.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on waiting for the tailer to reach a given offset.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on a produce, including librdkafka's retries (`message.timeout.ms`).
const PRODUCE_TIMEOUT_MS: u64 = 15_000;
/// Pause after a consumer error before polling again, so a broker outage does not spin a core.
const CONSUMER_ERROR_BACKOFF: Duration = Duration::from_millis(200);

/// The `_schemas` topic, seen from one registry instance.
pub(crate) struct SchemaLog {
    topic: String,
    producer: FutureProducer,
    consumer: Arc<StreamConsumer>,
    /// Offset of the next record the tailer will apply.
    applied: watch::Receiver<i64>,
    stop: watch::Sender<bool>,
    tailer: Mutex<Option<JoinHandle<()>>>,
}

impl SchemaLog {
    /// Creates the topic if missing, starts tailing it into `state`, and returns once everything
    /// written before the call has been applied.
    pub(crate) async fn open(config: &RegistryConfig, state: Arc<RwLock<State>>) -> Result<SchemaLog, RegistryError> {
        create_topic(config).await?;
        let producer: FutureProducer = client_config(config)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", PRODUCE_TIMEOUT_MS.to_string())
            .set("linger.ms", "0")
            .create()
            .map_err(|source| kafka("creating the producer", source))?;
        let consumer: StreamConsumer = client_config(config)
            // librdkafka wants a group id even for manual assignment; the group is never
            // joined and no offsets are committed (every instance reads from the beginning).
            .set("group.id", format!("sluice-registry-{}", config.topic))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            // A write waits for the tailer to read it back; keep the fetch long-poll short.
            .set("fetch.wait.max.ms", "50")
            .create()
            .map_err(|source| kafka("creating the consumer", source))?;
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(&config.topic, PARTITION, Offset::Beginning)
            .map_err(|source| kafka("assigning the topic", source))?;
        consumer.assign(&assignment).map_err(|source| kafka("assigning the topic", source))?;
        let consumer = Arc::new(consumer);
        let (applied_tx, applied) = watch::channel(0);
        let (stop, stop_rx) = watch::channel(false);
        let tailer = tokio::spawn(tail(consumer.clone(), state, applied_tx, stop_rx));
        let log = SchemaLog {
            topic: config.topic.clone(),
            producer,
            consumer,
            applied,
            stop,
            tailer: Mutex::new(Some(tailer)),
        };
        log.catch_up().await?;
        Ok(log)
    }

    /// Waits until every record written to the topic before this call has been applied.
    pub(crate) async fn catch_up(&self) -> Result<(), RegistryError> {
        let consumer = self.consumer.clone();
        let topic = self.topic.clone();
        // fetch_watermarks blocks on a broker round trip. A partition just created (or moving
        // leader) answers NotLeaderForPartition for a moment: ask again until the deadline.
        let (_, high) = tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + ADMIN_TIMEOUT;
            loop {
                match consumer.fetch_watermarks(&topic, PARTITION, ADMIN_TIMEOUT) {
                    Err(_) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                    answer => return answer,
                }
            }
        })
        .await
            .map_err(|error| RegistryError::StoreTimeout(format!("watermark lookup did not finish: {error}")))?
            .map_err(|source| kafka("reading the end offset of the schemas topic", source))?;
        self.wait_applied(high).await
    }

    /// Waits until the tailer has applied every record below `next_offset`.
    pub(crate) async fn wait_applied(&self, next_offset: i64) -> Result<(), RegistryError> {
        let mut applied = self.applied.clone();
        let reached = tokio::time::timeout(CATCH_UP_TIMEOUT, async {
            applied.wait_for(|applied| *applied >= next_offset).await.is_ok()
        })
        .await;
        match reached {
            Ok(true) => Ok(()),
            Ok(false) => Err(RegistryError::StoreTimeout("the schemas topic reader has stopped".to_string())),
            Err(_) => Err(RegistryError::StoreTimeout(format!(
                "did not read the schemas topic up to offset {next_offset} within {CATCH_UP_TIMEOUT:?} (at {})",
                *self.applied.borrow()
            ))),
        }
    }

    /// Appends a record (value `None` = tombstone) and returns its offset once the broker has
    /// acknowledged it on all in-sync replicas.
    pub(crate) async fn append(&self, key: &RecordKey, value: Option<&[u8]>) -> Result<i64, RegistryError> {
        let key = key.to_bytes();
        let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic).partition(PARTITION).key(&key[..]);
        if let Some(value) = value {
            record = record.payload(value);
        }
        match self.producer.send(record, Duration::from_millis(PRODUCE_TIMEOUT_MS)).await {
            Ok(delivery) => Ok(delivery.offset),
            Err((source, _)) => Err(kafka("writing to the schemas topic", source)),
        }
    }

    /// Stops the tailer and waits for it.
    pub(crate) async fn close(&self) {
        self.stop.send_replace(true);
        let tailer = self.tailer.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(tailer) = tailer {
            let _ = tailer.await;
        }
    }
}

impl Drop for SchemaLog {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

/// Settings shared by the producer, consumer and admin client.
fn client_config(config: &RegistryConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    for (key, value) in &config.client_properties {
        client.set(key, value);
    }
    client
        .set("bootstrap.servers", &config.bootstrap_servers)
        .set("client.id", "sluice-registry")
        .set("socket.timeout.ms", ADMIN_TIMEOUT.as_millis().to_string());
    client
}

/// Creates the compacted, never-expiring topic; an existing topic is fine.
async fn create_topic(config: &RegistryConfig) -> Result<(), RegistryError> {
    let admin: AdminClient<DefaultClientContext> =
        client_config(config).create().map_err(|source| kafka("creating the admin client", source))?;
    // Replication 1: the embedded broker has one node. Against a cluster, create the topic
    // beforehand with the replication you want; an existing topic is left as it is.
    let topic = NewTopic::new(&config.topic, 1, TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact")
        .set("retention.ms", "-1");
    let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT)).request_timeout(Some(ADMIN_TIMEOUT));
    let results = admin
        .create_topics([&topic], &options)
        .await
        .map_err(|source| kafka("creating the schemas topic", source))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(kafka(&format!("creating topic {name}"), KafkaError::AdminOp(code)));
            }
        }
    }
    Ok(())
}

/// Applies records to `state` in offset order until told to stop.
async fn tail(
    consumer: Arc<StreamConsumer>,
    state: Arc<RwLock<State>>,
    applied: watch::Sender<i64>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let received = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            received = consumer.recv() => received,
        };
        match received {
            Ok(message) => {
                let outcome = match message.key() {
                    Some(key) => state.write().unwrap_or_else(PoisonError::into_inner).apply(key, message.payload()),
                    None => Applied::Ignored("record without key".to_string()),
                };
                match outcome {
                    Applied::Accepted => {}
                    Applied::Rejected(reason) => {
                        tracing::debug!(offset = message.offset(), %reason, "schemas record lost a race, ignored");
                    }
                    Applied::Ignored(reason) => {
                        tracing::debug!(offset = message.offset(), %reason, "schemas record ignored");
                    }
                }
                applied.send_replace(message.offset() + 1);
            }
            Err(error) => {
                tracing::warn!(%error, "reading the schemas topic");
                tokio::select! {
                    _ = stop.wait_for(|stop| *stop) => return,
                    _ = tokio::time::sleep(CONSUMER_ERROR_BACKOFF) => {}
                }
            }
        }
    }
}

fn kafka(context: &str, source: KafkaError) -> RegistryError {
    RegistryError::Kafka { context: context.to_string(), source }
}
