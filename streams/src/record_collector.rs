//! [`RecordCollector`] (Kafka Streams' name): sends what tasks produce (sink outputs, dead
//! letters, changelog records) and, at commit, flushes: awaits every send and reports the next
//! offset of each changelog written. [`KafkaRecordCollector`] produces to the broker; the test
//! driver appends to its in-memory topics.
//!
//! Under `exactly_once_v2` the Kafka collector's producer is transactional: the first send
//! after a commit begins a transaction, and [`RecordCollector::commit_transaction`] adds the
//! input offsets to it (`send_offsets_to_transaction` with the consumer group's metadata) and
//! commits it; [`RecordCollector::abort_transaction`] discards it (docs/guarantees.md,
//! exactly_once_v2).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use sluice_state::ChangelogRecord;

use crate::error::StreamsError;
use crate::record::Record;
use crate::serde::TopicSerdes;
use crate::signing::SIGNATURE_HEADER;
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
    /// Commits what was sent since the last commit together with the input `positions`
    /// (next offset per input partition), atomically, when the collector is transactional;
    /// nothing otherwise. Called after [`RecordCollector::flush`], before the state commit.
    fn commit_transaction(&mut self, _positions: &[(Arc<str>, i32, i64)]) -> Result<(), SendError> {
        Ok(())
    }
    /// Discards what was sent since the last commit, when the collector is transactional
    /// (before a rewind redoes that work). An abort that cannot reach the broker is retried
    /// before the next transaction begins.
    fn abort_transaction(&mut self) -> Result<(), SendError> {
        Ok(())
    }
}

/// Where a transactional collector's transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transaction {
    /// None open: the next send begins one.
    Idle,
    /// Begun; sends go into it.
    Open,
    /// Must be aborted before the next one begins (an abort that failed for now).
    Aborting,
}

/// How long one transactional call may wait for the broker.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a commit whose outcome the broker has not confirmed is retried before the
/// thread gives up (the transaction coordinator aborts it after `transaction.timeout.ms`).
const COMMIT_RETRY_LIMIT: Duration = Duration::from_secs(120);

/// How long a flush waits for delivery reports beyond `message.timeout.ms` (every send is
/// reported by then, delivered or failed).
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// The collector's producer: its delivery reports are counted by [`CollectorContext`] on
/// the producer's polling thread.
pub type CollectorProducer = ThreadedProducer<CollectorContext>;

/// Counts the collector's deliveries as their reports arrive: no future, channel or
/// allocation per record (the hot path of every task). A record's opaque is 0, or for a
/// changelog record 1 + the index of its (task, store) in the collector.
#[derive(Default)]
pub struct CollectorContext {
    deliveries: Mutex<Deliveries>,
    settled: Condvar,
}

/// What the delivery reports since the last flush said.
#[derive(Default)]
struct Deliveries {
    /// Sent and not reported yet.
    outstanding: usize,
    /// The next offset per changelog index.
    changelog: HashMap<usize, i64>,
    /// The first failure (a fatal one replaces a retriable one): topic and error.
    failure: Option<(String, KafkaError)>,
}

impl rdkafka::ClientContext for CollectorContext {}

impl ProducerContext for CollectorContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, changelog: usize) {
        let mut deliveries = self.deliveries.lock().expect("deliveries lock");
        deliveries.outstanding = deliveries.outstanding.saturating_sub(1);
        match result {
            Ok(message) if changelog > 0 => {
                let next = deliveries.changelog.entry(changelog).or_insert(0);
                *next = (*next).max(message.offset() + 1);
            }
            Ok(_) => {}
            Err((error, message)) => {
                let replace = match &deliveries.failure {
                    None => true,
                    Some((topic, kept)) => !matches!(classify(topic, kept), SendError::Fatal(_)) && matches!(classify(message.topic(), error), SendError::Fatal(_)),
                };
                if replace {
                    deliveries.failure = Some((message.topic().to_string(), error.clone()));
                }
            }
        }
        if deliveries.outstanding == 0 {
            self.settled.notify_all();
        }
    }
}

impl CollectorContext {
    /// Waits until every send is reported (up to `timeout`), then takes what the reports
    /// said; `Err` with the number still outstanding.
    fn settle(&self, timeout: Duration) -> Result<Deliveries, usize> {
        let deadline = Instant::now() + timeout;
        let mut deliveries = self.deliveries.lock().expect("deliveries lock");
        while deliveries.outstanding > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(deliveries.outstanding);
            }
            deliveries = self.settled.wait_timeout(deliveries, left).expect("deliveries lock").0;
        }
        Ok(std::mem::take(&mut *deliveries))
    }
}

/// Produces to Kafka with an idempotent producer (`acks=all`); see the module docs.
pub struct KafkaRecordCollector {
    producer: CollectorProducer,
    serde: TopicSerdes,
    /// The (task, store) of each changelog index (see [`CollectorContext`]).
    changelogs: Vec<(TaskId, Arc<str>)>,
    changelog_index: HashMap<(TaskId, Arc<str>), usize>,
    /// `Some` when the producer is transactional (`exactly_once_v2`).
    transaction: Option<Transaction>,
    /// The consumer group's metadata for `send_offsets_to_transaction`, refreshed by the
    /// stream thread before each commit.
    group_metadata: Option<rdkafka::consumer::ConsumerGroupMetadata>,
    /// The input offsets last committed in a transaction.
    committed: std::collections::HashMap<(Arc<str>, i32), i64>,
}

impl KafkaRecordCollector {
    /// A collector over `producer`, encoding typed values with `serde`.
    /// With `transactional`, the producer has a `transactional.id`; its transactions are
    /// initialised here (fencing an earlier incarnation with the same id).
    pub fn new(producer: CollectorProducer, serde: TopicSerdes, transactional: bool) -> Result<KafkaRecordCollector, StreamsError> {
        if transactional {
            producer.init_transactions(Duration::from_secs(30))?;
        }
        Ok(KafkaRecordCollector {
            producer,
            serde,
            changelogs: Vec::new(),
            changelog_index: HashMap::new(),
            transaction: transactional.then_some(Transaction::Idle),
            group_metadata: None,
            committed: std::collections::HashMap::new(),
        })
    }

    /// Sets the consumer group's metadata the next commit sends its offsets with.
    pub fn set_group_metadata(&mut self, metadata: Option<rdkafka::consumer::ConsumerGroupMetadata>) {
        self.group_metadata = metadata;
    }

    /// Forgets the offsets committed for partitions this thread no longer owns.
    pub fn forget_committed(&mut self) {
        self.committed.clear();
    }

    /// Begins a transaction if the producer is transactional and none is open (finishing an
    /// abort that failed earlier first).
    fn ensure_transaction(&mut self) -> Result<(), SendError> {
        match self.transaction {
            None | Some(Transaction::Open) => Ok(()),
            Some(Transaction::Aborting) => {
                self.abort_transaction()?;
                self.ensure_transaction()
            }
            Some(Transaction::Idle) => {
                self.producer.begin_transaction().map_err(|e| transaction_error("beginning a transaction", &e))?;
                self.transaction = Some(Transaction::Open);
                Ok(())
            }
        }
    }

    /// The producer (to flush at close).
    pub fn producer(&self) -> &CollectorProducer {
        &self.producer
    }

    /// The changelog index of (task, store), 1-based (see [`CollectorContext`]).
    fn changelog_index(&mut self, task: TaskId, store: &Arc<str>) -> usize {
        if let Some(index) = self.changelog_index.get(&(task, Arc::clone(store))) {
            return *index;
        }
        self.changelogs.push((task, Arc::clone(store)));
        let index = self.changelogs.len();
        self.changelog_index.insert((task, Arc::clone(store)), index);
        index
    }

    fn produce(&mut self, mut record: BaseRecord<'_, [u8], [u8], usize>) -> Result<(), SendError> {
        self.producer.context().deliveries.lock().expect("deliveries lock").outstanding += 1;
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                // The local queue is full: let deliveries drain, then try again.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((error, back)) => {
                    self.producer.context().deliveries.lock().expect("deliveries lock").outstanding -= 1;
                    return Err(classify(back.topic, &error));
                }
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

/// A transactional call's error: fatal ones (a fenced producer) stop the thread; the others
/// abort the transaction and redo the work.
fn transaction_error(what: &str, error: &KafkaError) -> SendError {
    match error {
        KafkaError::Transaction(e) if e.is_fatal() => SendError::Fatal(StreamsError::Fenced(format!("{what}: {error}"))),
        _ => SendError::Retriable(format!("{what}: {error}")),
    }
}

impl RecordCollector for KafkaRecordCollector {
    fn send(&mut self, topic: &str, record: &Record) -> Result<(), SendError> {
        self.ensure_transaction()?;
        let payload = self.serde.encode_value(topic, &record.value)?;
        // A signature read with an input is never passed on: a signed topic gets its own.
        let signature = self.serde.sign(topic, record.key.as_ref().map(String::as_bytes), payload.as_deref());
        let kept = record.headers.iter().filter(|(k, _)| k != SIGNATURE_HEADER).map(|(k, v)| (k.as_str(), v.as_slice()));
        let headers = headers_of(kept.chain(signature.as_deref().map(|s| (SIGNATURE_HEADER, s))));
        let mut out: BaseRecord<'_, [u8], [u8], usize> = BaseRecord::with_opaque_to(topic, 0).headers(headers).timestamp(record.timestamp);
        if let Some(key) = &record.key {
            out = out.key(key.as_bytes());
        }
        if let Some(payload) = &payload {
            out = out.payload(payload.as_slice());
        }
        self.produce(out)
    }

    fn send_changelog(&mut self, task: TaskId, topic: &str, change: ChangelogRecord) -> Result<(), SendError> {
        self.ensure_transaction()?;
        let stamp = change.source.headers();
        let headers = headers_of(stamp.iter().map(|(k, v)| (*k, v.as_bytes())));
        let index = self.changelog_index(task, &change.store);
        let mut out: BaseRecord<'_, [u8], [u8], usize> = BaseRecord::with_opaque_to(topic, index).partition(task.partition).key(change.key.as_slice()).headers(headers);
        if let Some(value) = &change.value {
            out = out.payload(value.as_slice());
        }
        self.produce(out)
    }

    fn flush(&mut self) -> Result<ChangelogOffsets, SendError> {
        let deliveries = self.producer.context().settle(FLUSH_TIMEOUT).map_err(|outstanding| SendError::Retriable(format!("{outstanding} records not reported within {FLUSH_TIMEOUT:?}")))?;
        if let Some((topic, error)) = deliveries.failure {
            return Err(classify(&topic, &error));
        }
        Ok(deliveries.changelog.into_iter().map(|(index, next)| (self.changelogs[index - 1].clone(), next)).collect())
    }

    fn commit_transaction(&mut self, positions: &[(Arc<str>, i32, i64)]) -> Result<(), SendError> {
        if self.transaction.is_none() {
            return Ok(());
        }
        let mut offsets = rdkafka::TopicPartitionList::new();
        for (topic, partition, position) in positions {
            if self.committed.get(&(Arc::clone(topic), *partition)) != Some(position) {
                offsets.add_partition_offset(topic, *partition, rdkafka::Offset::Offset(*position)).map_err(|e| SendError::Retriable(e.to_string()))?;
            }
        }
        if offsets.count() == 0 && self.transaction != Some(Transaction::Open) {
            return Ok(()); // nothing sent, nothing consumed
        }
        let result = (|| {
            self.ensure_transaction()?;
            if offsets.count() > 0 {
                let metadata = self.group_metadata.as_ref().ok_or_else(|| SendError::Retriable("no consumer group metadata yet".to_string()))?;
                let phase = std::time::Instant::now();
                self.producer.send_offsets_to_transaction(&offsets, metadata, TRANSACTION_TIMEOUT).map_err(|e| transaction_error("adding the input offsets to the transaction", &e))?;
                crate::metrics::record_commit_phase("send_offsets", phase);
            }
            // A commit the broker has not confirmed may still complete: retrying it is safe,
            // aborting is not (its outputs may be committed already).
            let started = std::time::Instant::now();
            loop {
                match self.producer.commit_transaction(TRANSACTION_TIMEOUT) {
                    Ok(()) => {
                        crate::metrics::record_commit_phase("commit_transaction", started);
                        return Ok(());
                    }
                    Err(KafkaError::Transaction(e)) if e.is_retriable() && started.elapsed() < COMMIT_RETRY_LIMIT => {
                        tracing::warn!(error = %e, "committing the transaction: not confirmed yet; retrying");
                    }
                    Err(error) => return Err(transaction_error("committing the transaction", &error)),
                }
            }
        })();
        match result {
            Ok(()) => {
                self.transaction = Some(Transaction::Idle);
                for e in offsets.elements() {
                    if let rdkafka::Offset::Offset(position) = e.offset() {
                        self.committed.insert((Arc::from(e.topic()), e.partition()), position);
                    }
                }
                Ok(())
            }
            Err(SendError::Retriable(reason)) => {
                self.transaction = Some(Transaction::Aborting);
                Err(SendError::Retriable(reason))
            }
            Err(fatal) => Err(fatal),
        }
    }

    fn abort_transaction(&mut self) -> Result<(), SendError> {
        if !matches!(self.transaction, Some(Transaction::Open | Transaction::Aborting)) {
            return Ok(());
        }
        let aborted = self.producer.abort_transaction(TRANSACTION_TIMEOUT);
        // The purged sends are reported as failed: they belong to the discarded work.
        if let Err(outstanding) = self.producer.context().settle(FLUSH_TIMEOUT) {
            tracing::warn!(outstanding, "sends of an aborted transaction were not reported within the flush timeout");
        }
        match aborted {
            Ok(()) => {
                self.transaction = Some(Transaction::Idle);
                Ok(())
            }
            Err(error) => {
                self.transaction = Some(Transaction::Aborting);
                Err(transaction_error("aborting the transaction", &error))
            }
        }
    }
}
