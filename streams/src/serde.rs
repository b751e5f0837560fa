//! [`Serdes`] (Kafka Streams' name): how record values become the application's types and
//! back. The engine knows bytes only; a topic that names a `schema` in topology.toml is read
//! and written through the serdes the application registers
//! ([`crate::ProcessorRegistry::set_serdes`]), which also chooses what a dead letter looks like
//! (docs/architecture.md, serdes). [`TopicSerdes`] is the runtime's per-topic view of them.

use std::collections::HashMap;
use std::sync::Arc;

use crate::processor::ProcessError;
use crate::record::{Data, RecordMetadata, Value};
use crate::record_collector::SendError;
use crate::signing::{InternalKeys, FORGED_COMMAND, FORGED_RECORD};
use crate::topology::{repartition_topic, Topology};
use crate::StreamsError;

/// The application's value serialization, shared by every stream thread. `schema` is the
/// name a topic gives in topology.toml; what it means (an Avro schema, a JSON type, ...) is
/// the application's business. Tombstones and topics without a schema never reach it: they
/// are [`Value::Null`] and [`Value::Bytes`].
pub trait Serdes: Send + Sync {
    /// Whether `schema`, named by `topic` in topology.toml, is one this application knows;
    /// checked with the processors, before anything runs.
    fn check_schema(&self, topic: &str, schema: &str) -> Result<(), String>;

    /// The value of a record read from `topic`. A failure that may pass (a registry that
    /// cannot be reached) is [`ProcessError::Retriable`]; bytes that are not what the schema
    /// says are [`ProcessError::Poison`] with class `deserialization`.
    fn deserialize(&self, topic: &str, schema: &str, bytes: &[u8]) -> Result<Value, ProcessError>;

    /// The bytes of a typed value written to `topic` (`schema`: what the topic declares).
    fn serialize(&self, topic: &str, schema: Option<&str>, value: &dyn Data) -> Result<Vec<u8>, SendError>;

    /// The value of the dead letter sent to the DLQ for a record that failed. The engine adds
    /// the `sluice.error.*` headers and keys it by the original key. Default: the original
    /// value's bytes (cut to [`crate::DEAD_LETTER_VALUE_LIMIT`]).
    fn dead_letter(&self, letter: &DeadLetter<'_>) -> Value {
        letter.value.map_or(Value::Null, |v| Value::Bytes(v.to_vec()))
    }
}

/// A record that failed, as the engine hands it to [`Serdes::dead_letter`].
#[derive(Debug, Clone, Copy)]
pub struct DeadLetter<'a> {
    /// Where the record was read.
    pub source: &'a RecordMetadata,
    /// Its timestamp.
    pub timestamp: i64,
    /// Why it failed.
    pub error: &'a ProcessError,
    /// Its key bytes, cut to [`crate::DEAD_LETTER_KEY_LIMIT`].
    pub key: Option<&'a [u8]>,
    /// Its value bytes, cut to [`crate::DEAD_LETTER_VALUE_LIMIT`] (`None` for a tombstone, or
    /// in the test driver, whose records are typed already).
    pub value: Option<&'a [u8]>,
}

impl<'a> DeadLetter<'a> {
    /// A dead letter for the record at `source`; `key` and `value` are cut to their limits.
    pub fn new(source: &'a RecordMetadata, timestamp: i64, error: &'a ProcessError, key: Option<&'a [u8]>, value: Option<&'a [u8]>) -> DeadLetter<'a> {
        DeadLetter {
            source,
            timestamp,
            error,
            key: key.map(|k| crate::bounded(k, crate::DEAD_LETTER_KEY_LIMIT)),
            value: value.map(|v| crate::bounded(v, crate::DEAD_LETTER_VALUE_LIMIT)),
        }
    }

    /// A stable id: the source position, so a record dead-lettered twice has one id.
    pub fn event_id(&self) -> String {
        format!("{}-{}-{}", self.source.topic, self.source.partition, self.source.offset)
    }

    /// The error's message, cut to [`crate::DEAD_LETTER_MESSAGE_LIMIT`] bytes.
    pub fn message(&self) -> String {
        crate::bounded_message(self.error)
    }
}

/// No serdes: a topology whose topics name no schema needs none; one that does is refused
/// when checked.
pub struct BytesOnly;

impl Serdes for BytesOnly {
    fn check_schema(&self, topic: &str, schema: &str) -> Result<(), String> {
        Err(format!("topic `{topic}` names schema `{schema}`, but the application registered no serdes"))
    }

    fn deserialize(&self, topic: &str, schema: &str, _bytes: &[u8]) -> Result<Value, ProcessError> {
        Err(ProcessError::Fatal(format!("no serdes for schema `{schema}` of topic {topic}")))
    }

    fn serialize(&self, topic: &str, _schema: Option<&str>, value: &dyn Data) -> Result<Vec<u8>, SendError> {
        Err(SendError::Fatal(StreamsError::Send { topic: topic.to_string(), reason: format!("a typed value ({}) but no serdes", value.type_name()) }))
    }
}

/// The runtime's serdes: the application's, with each topic's schema looked up (external
/// topics by name, repartition topics by their full name); and the record signatures of
/// `signed` topics ([`crate::signing`]).
#[derive(Clone)]
pub struct TopicSerdes {
    serdes: Arc<dyn Serdes>,
    schemas: Arc<HashMap<String, Option<String>>>,
    /// Signed topics, with the dead-letter class of a record that fails its check.
    signed: Arc<HashMap<String, &'static str>>,
    keys: Option<Arc<InternalKeys>>,
}

impl TopicSerdes {
    /// The serdes of `topology`'s topics for application `application_id`; `keys` sign and
    /// verify its signed topics.
    pub fn new(topology: &Topology, application_id: &str, serdes: Arc<dyn Serdes>, keys: Option<Arc<InternalKeys>>) -> TopicSerdes {
        let schemas = topology
            .topics
            .iter()
            .map(|t| (t.name.clone(), t.schema.clone()))
            .chain(topology.repartitions.iter().map(|r| (repartition_topic(application_id, &r.name), r.schema.clone())))
            .collect();
        let signed = topology
            .topics
            .iter()
            .filter(|t| t.signed)
            .map(|t| (t.name.clone(), FORGED_COMMAND))
            .chain(topology.repartitions.iter().filter(|r| r.signed).map(|r| (repartition_topic(application_id, &r.name), FORGED_RECORD)))
            .collect();
        TopicSerdes { serdes, schemas: Arc::new(schemas), signed: Arc::new(signed), keys }
    }

    /// Checks the signature of a record read from `topic`, if the topic is signed: a record
    /// that fails is poison of class `forged_command` (external topics) or `forged_record`
    /// (repartition topics).
    pub fn verify(&self, topic: &str, key: Option<&[u8]>, value: Option<&[u8]>, signature: Option<&[u8]>) -> Result<(), ProcessError> {
        let Some(class) = self.signed.get(topic) else { return Ok(()) };
        let keys = self.keys.as_ref().ok_or_else(|| ProcessError::Fatal(format!("topic {topic} is signed and no internal key is configured")))?;
        keys.verify_record(topic, key, value, signature).map_err(|error| ProcessError::poison(*class, error))
    }

    /// The signature header for a record written to `topic`, if the topic is signed.
    pub fn sign(&self, topic: &str, key: Option<&[u8]>, value: Option<&[u8]>) -> Option<Vec<u8>> {
        self.signed.contains_key(topic).then(|| self.keys.as_ref().map(|keys| keys.sign_record(topic, key, value))).flatten()
    }

    fn schema(&self, topic: &str) -> Option<&str> {
        self.schemas.get(topic).and_then(|s| s.as_deref())
    }

    /// Decodes a record value read from `topic`.
    pub fn decode_value(&self, topic: &str, bytes: Option<&[u8]>) -> Result<Value, ProcessError> {
        match (bytes, self.schema(topic)) {
            (None, _) => Ok(Value::Null),
            (Some(bytes), None) => Ok(Value::Bytes(bytes.to_vec())),
            (Some(bytes), Some(schema)) => self.serdes.deserialize(topic, schema, bytes),
        }
    }

    /// Encodes a value for `topic` (`None` for a tombstone).
    pub fn encode_value(&self, topic: &str, value: &Value) -> Result<Option<Vec<u8>>, SendError> {
        match value {
            Value::Null => Ok(None),
            Value::Bytes(bytes) => Ok(Some(bytes.clone())),
            Value::Record(data) => self.serdes.serialize(topic, self.schema(topic), data.as_ref()).map(Some),
        }
    }

    /// The application's dead letter value.
    pub fn dead_letter(&self, letter: &DeadLetter<'_>) -> Value {
        self.serdes.dead_letter(letter)
    }
}
