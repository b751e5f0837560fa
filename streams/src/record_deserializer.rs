//! [`RecordDeserializer`] (Kafka Streams' name): turns a fetched record into the [`Record`] a
//! task processes, and a record that failed into the dead letter the DLQ receives. The
//! runtime's implementation reads Kafka messages through [`TopicSerdes`]; the test driver's
//! reads its in-memory topics.

use rdkafka::message::{Headers, Message, OwnedMessage};

use crate::partition_group::StampedRecord;
use crate::processor::ProcessError;
use crate::record::{Record, RecordMetadata, Value};
use crate::serde::{DeadLetter, TopicSerdes};
use crate::signing::SIGNATURE_HEADER;

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

impl RecordDeserializer<OwnedMessage> for TopicSerdes {
    fn deserialize(&self, metadata: &RecordMetadata, message: &OwnedMessage) -> Result<Record, ProcessError> {
        let key = match Message::key(message) {
            Some(bytes) => Some(String::from_utf8(bytes.to_vec()).map_err(|_| ProcessError::poison("deserialization", "key is not UTF-8"))?),
            None => None,
        };
        let headers = message_headers(message);
        let signature = headers.iter().find(|(name, _)| name == SIGNATURE_HEADER).map(|(_, value)| value.as_slice());
        self.verify(&metadata.topic, Message::key(message), message.payload(), signature)?;
        let value = self.decode_value(&metadata.topic, message.payload())?;
        Ok(Record { key, value, timestamp: StampedRecord::timestamp(message), headers })
    }

    fn dead_letter(&self, metadata: &RecordMetadata, message: &OwnedMessage, error: &ProcessError) -> Record {
        let letter = DeadLetter::new(metadata, StampedRecord::timestamp(message), error, Message::key(message), message.payload());
        dead_letter_record(&letter, self.dead_letter(&letter), &message_headers(message), Message::key(message), message.payload())
    }
}

/// A Kafka message's headers, in order.
fn message_headers(message: &OwnedMessage) -> Vec<(String, Vec<u8>)> {
    message.headers().map(|list| list.iter().map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec())).collect()).unwrap_or_default()
}

/// The record sent to the DLQ: the application's `value` for `letter`, keyed by (at most
/// [`crate::DEAD_LETTER_KEY_LIMIT`] bytes of) the original key, with the original record's
/// headers and the `sluice.error.*` ones (which measure the uncut `key` and `value`).
pub fn dead_letter_record(letter: &DeadLetter<'_>, value: Value, original_headers: &[(String, Vec<u8>)], key: Option<&[u8]>, original_value: Option<&[u8]>) -> Record {
    Record {
        key: letter.key.map(|k| String::from_utf8_lossy(k).into_owned()),
        value,
        timestamp: letter.timestamp,
        headers: crate::dlq_headers(original_headers, letter.source, letter.error, key, original_value),
    }
}
