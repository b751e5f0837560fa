//! [`RecordCollector`] (Kafka Streams' name): sends what tasks produce (sink outputs, dead
//! letters, changelog records) and, at commit, flushes: awaits every send and reports the next
//! offset of each changelog written. [`KafkaRecordCollector`] produces to the broker; the test
//! driver appends to its in-memory topics.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sluice_state::ChangelogRecord;

use crate::error::StreamsError;
use crate::record::Record;
use crate::serde::TopicSerdes;
use crate::stream_task::TaskId;

/// Why a send or a flush failed.
#[derive(Debug)]
pub enum SendError {
    /// It may work later (broker or registry away, delivery timed out): discard the work since
    /// the last commit and redo it after a backoff.
    Retriable(String),
    /// Redoing cannot help (a record the broker refuses, a topic that does not exist).
    Fatal(StreamsError),
}

impl From<SendError> for StreamsError {
    fn from(error: SendError) -> StreamsError {
        match error {
            SendError::Fatal(error) => error,
            SendError::Retriable(reason) => StreamsError::Send { topic: String::new(), reason },
        }
    }
}

/// The next changelog offset per (task, store) written since the last flush.
pub type ChangelogOffsets = BTreeMap<(TaskId, Arc<str>), i64>;

/// Sends records; see the module docs.
pub trait RecordCollector {
    /// Sends `record` to `topic` (partitioned by its key with murmur2, like Kafka's default
    /// partitioner).
    fn send(&mut self, topic: &str, record: &Record) -> Result<(), SendError>;
    /// Sends a store write of task `task` to its changelog `topic` (partition = the task's).
    fn send_changelog(&mut self, task: TaskId, topic: &str, change: ChangelogRecord) -> Result<(), SendError>;
    /// Awaits every send since the last flush.
    fn flush(&mut self) -> Result<ChangelogOffsets, SendError>;
}

/// A send awaiting its delivery report.
struct Pending {
    future: rdkafka::producer::DeliveryFuture,
    topic: Arc<str>,
    /// For changelog records: (task, store).
    changelog: Option<(TaskId, Arc<str>)>,
}

/// Produces to Kafka with an idempotent producer (`acks=all`); see the module docs.
pub struct KafkaRecordCollector {
    producer: FutureProducer,
    serde: TopicSerdes,
    /// Waits for deliveries.
    io: tokio::runtime::Runtime,
    pending: Vec<Pending>,
}

impl KafkaRecordCollector {
    /// A collector over `producer`, encoding typed values with `serde`.
    pub fn new(producer: FutureProducer, serde: TopicSerdes) -> Result<KafkaRecordCollector, StreamsError> {
        let io = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| StreamsError::Config(e.to_string()))?;
        Ok(KafkaRecordCollector { producer, serde, io, pending: Vec::new() })
    }

    /// The producer (for records outside the commit protocol, e.g. discovery heartbeats).
    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    fn produce(&mut self, topic: &str, mut record: FutureRecord<'_, [u8], Vec<u8>>, changelog: Option<(TaskId, Arc<str>)>) -> Result<(), SendError> {
        loop {
            match self.producer.send_result(record) {
                Ok(future) => {
                    self.pending.push(Pending { future, topic: Arc::from(topic), changelog });
                    return Ok(());
                }
                // The local queue is full: let deliveries drain, then try again.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((error, back)) => return Err(classify(back.topic, &error)),
            }
        }
    }
}

/// Sorts a producer error into retriable (the broker may come back) and fatal.
fn classify(topic: &str, error: &KafkaError) -> SendError {
    let permanent = matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::InvalidRecord
        )
    );
    if permanent {
        SendError::Fatal(StreamsError::Send { topic: topic.to_string(), reason: error.to_string() })
    } else {
        SendError::Retriable(format!("producing to {topic}: {error}"))
    }
}

fn headers_of<'a>(headers: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> OwnedHeaders {
    let mut owned = OwnedHeaders::new();
    for (key, value) in headers {
        owned = owned.insert(Header { key, value: Some(value) });
    }
    owned
}

impl RecordCollector for KafkaRecordCollector {
    fn send(&mut self, topic: &str, record: &Record) -> Result<(), SendError> {
        let payload = self.serde.encode_value(topic, &record.value)?;
        let headers = headers_of(record.headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
        let mut out: FutureRecord<'_, [u8], Vec<u8>> = FutureRecord::to(topic).headers(headers).timestamp(record.timestamp);
        if let Some(key) = &record.key {
            out = out.key(key.as_bytes());
        }
        if let Some(payload) = &payload {
            out = out.payload(payload);
        }
        self.produce(topic, out, None)
    }

    fn send_changelog(&mut self, task: TaskId, topic: &str, change: ChangelogRecord) -> Result<(), SendError> {
        let stamp = change.source.headers();
        let headers = headers_of(stamp.iter().map(|(k, v)| (*k, v.as_bytes())));
        let mut out: FutureRecord<'_, [u8], Vec<u8>> = FutureRecord::to(topic).partition(task.partition).key(change.key.as_slice()).headers(headers);
        if let Some(value) = &change.value {
            out = out.payload(value);
        }
        self.produce(topic, out, Some((task, Arc::clone(&change.store))))
    }

    fn flush(&mut self) -> Result<ChangelogOffsets, SendError> {
        let mut offsets = ChangelogOffsets::new();
        let mut failure = None;
        for Pending { future, topic, changelog } in std::mem::take(&mut self.pending) {
            let delivered: Result<OwnedDeliveryResult, _> = self.io.block_on(future);
            match delivered {
                Ok(Ok(delivery)) => {
                    if let Some(key) = changelog {
                        let next = offsets.entry(key).or_insert(0);
                        *next = (*next).max(delivery.offset + 1);
                    }
                }
                // Keep the first fatal error, else the first retriable one.
                Ok(Err((error, _))) => {
                    let error = classify(&topic, &error);
                    if !matches!(failure, Some(SendError::Fatal(_))) {
                        failure = Some(error);
                    }
                }
                Err(_) => failure = failure.or(Some(SendError::Retriable("a delivery was cancelled".to_string()))),
            }
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(offsets),
        }
    }
}
