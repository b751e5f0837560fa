//! [`RecordDeserializer`] (Kafka Streams' name): turns a fetched record into the [`Record`] a
//! task processes, and a record that failed into the dead letter the DLQ receives. The
//! runtime's implementation reads Kafka messages through [`TopicSerde`]; the test driver's
//! reads its in-memory topics.

use rdkafka::message::{Headers, Message, OwnedMessage};

use crate::partition_group::StampedRecord;
use crate::processor::ProcessError;
use crate::record::{Record, RecordMetadata, Value};
use crate::serde::TopicSerde;

/// See the module docs.
pub trait RecordDeserializer<R> {
    /// The record a task processes.
    fn deserialize(&self, metadata: &RecordMetadata, raw: &R) -> Result<Record, ProcessError>;
    /// The record to send to [`crate::DLQ_TOPIC`] for `raw`, which failed with `error`.
    fn dead_letter(&self, metadata: &RecordMetadata, raw: &R, error: &ProcessError) -> Record;
}

impl StampedRecord for OwnedMessage {
    fn offset(&self) -> i64 {
        Message::offset(self)
    }

    fn timestamp(&self) -> i64 {
        Message::timestamp(self).to_millis().unwrap_or(0)
    }

    fn key(&self) -> Option<&[u8]> {
        Message::key(self)
    }
}

impl RecordDeserializer<OwnedMessage> for TopicSerde {
    fn deserialize(&self, metadata: &RecordMetadata, message: &OwnedMessage) -> Result<Record, ProcessError> {
        let key = match Message::key(message) {
            Some(bytes) => Some(String::from_utf8(bytes.to_vec()).map_err(|_| ProcessError::poison("deserialization", "key is not UTF-8"))?),
            None => None,
        };
        let mut headers = Vec::new();
        if let Some(list) = message.headers() {
            for header in list.iter() {
                headers.push((header.key.to_string(), header.value.unwrap_or_default().to_vec()));
            }
        }
        let value = self.decode_value(&metadata.topic, message.payload())?;
        Ok(Record { key, value, timestamp: StampedRecord::timestamp(message), headers })
    }

    fn dead_letter(&self, metadata: &RecordMetadata, message: &OwnedMessage, error: &ProcessError) -> Record {
        let value = if self.has_registry() {
            Value::record(crate::dead_letter(metadata, StampedRecord::timestamp(message), error, Message::key(message), message.payload()))
        } else {
            // Without a registry the DLQ keeps the original bytes; the headers say why.
            message.payload().map_or(Value::Null, |v| Value::Bytes(crate::bounded(v, crate::DEAD_LETTER_VALUE_LIMIT).to_vec()))
        };
        dead_letter_record(metadata, Message::key(message), message.payload(), StampedRecord::timestamp(message), value, error)
    }
}

/// A dead letter with the `sluice.error.*` headers, keyed by (at most
/// [`crate::DEAD_LETTER_KEY_LIMIT`] bytes of) the original key.
pub fn dead_letter_record(metadata: &RecordMetadata, key: Option<&[u8]>, value: Option<&[u8]>, timestamp: i64, letter: Value, error: &ProcessError) -> Record {
    Record {
        key: key.map(|k| String::from_utf8_lossy(crate::bounded(k, crate::DEAD_LETTER_KEY_LIMIT)).into_owned()),
        value: letter,
        timestamp,
        headers: crate::dlq_headers(metadata, error, key, value).into_iter().map(|(k, v)| (k, v.into_bytes())).collect(),
    }
}
