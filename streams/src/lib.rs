//! `sluice-streams`: the Sluice stream-processing engine, named after Kafka Streams
//! (docs/architecture.md): the [`topology::Topology`] read from `topology.toml`;
//! [`KafkaStreams`] and its [`stream_thread`]s; the [`task_manager::TaskManager`] that both the
//! runtime and the [`TopologyTestDriver`] drive; [`StreamTask`]s with their
//! [`partition_group::PartitionGroup`]s; the [`record_collector`] and the
//! [`changelog_reader`]. An application brings its processors and its [`Serdes`] in a
//! [`ProcessorRegistry`]; the engine knows no application's types (`examples/order-totals`
//! is one built on this crate alone).

pub mod acl;
pub mod admin;
pub mod builtin;
pub mod changelog_reader;
pub mod error;
pub mod interactive;
pub mod kafka_client;
pub mod kafka_streams;
pub mod metrics;
pub mod partition_group;
pub mod partitioner;
pub mod processor;
pub mod record;
pub mod record_collector;
pub mod record_deserializer;
pub mod registry;
pub mod serde;
pub mod signing;
pub mod standby;
pub mod stream_task;
pub mod stream_thread;
pub mod task_manager;
pub mod test_driver;
pub mod topology;

pub use error::StreamsError;
pub use kafka_streams::{KafkaStreams, ProcessingGuarantee, RuntimeError, StreamsConfig, StreamsHandle};
pub use processor::{ErrorAction, FnProcessor, ProcessError, Processor, Punctuation, PunctuationType};
pub use record::{Headers, OutputRecord, Record, RecordMetadata, Value};
pub use record::Data;
pub use record_collector::SendError;
pub use registry::{ProcessorConfig, ProcessorRegistry};
pub use serde::{DeadLetter, Serdes};
pub use stream_task::{ProcessorContext, StreamTask, TaskError, TaskId};
pub use task_manager::ErrorPolicy;
pub use test_driver::{TestDriverConfig, TopologyTestDriver};
pub use topology::{Topology, TopologyError};

/// Milliseconds since the Unix epoch, by the wall clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Topic dead letters go to.
pub const DLQ_TOPIC: &str = "sluice.dlq";

/// The most bytes of the original key a dead letter keeps (its record key and its copy).
pub const DEAD_LETTER_KEY_LIMIT: usize = 4 * 1024;
/// The most bytes of the original value a dead letter keeps: with the key and the headers it
/// stays far below the broker's message limit, whatever the original's size. The
/// `sluice.error.{topic,partition,offset}` headers locate the whole original.
pub const DEAD_LETTER_VALUE_LIMIT: usize = 64 * 1024;

/// The most bytes of an error message a dead letter keeps (a message may quote the record).
pub const DEAD_LETTER_MESSAGE_LIMIT: usize = 1024;

/// The error's message, cut to [`DEAD_LETTER_MESSAGE_LIMIT`] bytes at a character boundary.
pub(crate) fn bounded_message(error: &ProcessError) -> String {
    let mut message = error.to_string();
    if message.len() > DEAD_LETTER_MESSAGE_LIMIT {
        let mut end = DEAD_LETTER_MESSAGE_LIMIT;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str("...");
    }
    message
}

/// The first `limit` bytes of `bytes`.
pub fn bounded(bytes: &[u8], limit: usize) -> &[u8] {
    &bytes[..bytes.len().min(limit)]
}

/// Prefix of the headers that say why a record was dead-lettered.
pub const DLQ_HEADER_PREFIX: &str = "sluice.error.";

/// Where a dead letter keeps the original record's `sluice.signature` (a record written with
/// that header is signed anew by the collector; a replay puts it back).
pub const DLQ_SIGNATURE_HEADER: &str = "sluice.dlq.signature";

/// The headers of a dead letter (docs/architecture.md, topics and keys): the original record's
/// headers as they were (as Kafka Connect's dead-letter queues keep them; its signature as
/// [`DLQ_SIGNATURE_HEADER`], so that a replay is verified again), then the `sluice.error.*` headers;
/// `sluice.error.truncated` says what [`serde::DeadLetter`] cut from the original key and value.
/// The `sluice.error.*` headers of an earlier failure (a replay that failed again) are replaced.
pub fn dlq_headers(original: &[(String, Vec<u8>)], metadata: &RecordMetadata, error: &ProcessError, key: Option<&[u8]>, value: Option<&[u8]>) -> Vec<(String, Vec<u8>)> {
    let mut headers: Vec<(String, Vec<u8>)> = original
        .iter()
        .filter(|(name, _)| !name.starts_with(DLQ_HEADER_PREFIX) && name != DLQ_SIGNATURE_HEADER)
        .map(|(name, value)| (if name == signing::SIGNATURE_HEADER { DLQ_SIGNATURE_HEADER.to_string() } else { name.clone() }, value.clone()))
        .collect();
    let mut error_headers = vec![
        ("sluice.error.topic".to_string(), metadata.topic.to_string()),
        ("sluice.error.partition".to_string(), metadata.partition.to_string()),
        ("sluice.error.offset".to_string(), metadata.offset.to_string()),
        ("sluice.error.class".to_string(), error.class().to_string()),
        ("sluice.error.message".to_string(), bounded_message(error)),
    ];
    let cut: Vec<String> = [("key", key, DEAD_LETTER_KEY_LIMIT), ("value", value, DEAD_LETTER_VALUE_LIMIT)]
        .into_iter()
        .filter_map(|(part, bytes, limit)| bytes.filter(|b| b.len() > limit).map(|b| format!("{part}: first {limit} of {} bytes", b.len())))
        .collect();
    if !cut.is_empty() {
        error_headers.push(("sluice.error.truncated".to_string(), cut.join(", ")));
    }
    headers.extend(error_headers.into_iter().map(|(k, v)| (k, v.into_bytes())));
    headers
}
