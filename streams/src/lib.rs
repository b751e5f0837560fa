//! `sluice-streams`: the Sluice stream-processing engine, named after Kafka Streams: the
//! [`topology::Topology`] read from `topology.toml`, and (as it grows) tasks, the runtime,
//! the commit protocol and the test driver.

pub mod admin;
pub mod builtin;
pub mod config;
pub mod interactive;
pub mod metrics;
pub mod partitioner;
pub mod processor;
pub mod record;
pub mod runtime;
pub mod registry;
pub mod task;
pub mod test_driver;
pub mod topology;

pub use processor::{ErrorAction, FnProcessor, ProcessError, Processor, Punctuation, PunctuationType};
pub use record::{Headers, OutputRecord, Record, RecordMetadata, Value};
pub use registry::{ProcessorConfig, ProcessorRegistry};
pub use task::{ProcessorContext, Task, TaskError, TaskId};
pub use test_driver::{TestDriverConfig, TopologyTestDriver};
pub use topology::{Topology, TopologyError};

/// Topic dead letters go to.
pub const DLQ_TOPIC: &str = "sluice.dlq";

/// The `DeadLetter` record for a record that failed with `error`; its event id is the
/// source position, so a re-dead-lettered record keeps its id.
pub fn dead_letter(
    metadata: &RecordMetadata,
    timestamp: i64,
    error: &ProcessError,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> sluice_schemas::types::DeadLetter {
    use sluice_schemas::{Blob, TimestampMillis};
    sluice_schemas::types::DeadLetter {
        event_id: format!("{}-{}-{}", metadata.topic, metadata.partition, metadata.offset),
        occurred_at: TimestampMillis(timestamp),
        source_topic: metadata.topic.to_string(),
        source_partition: metadata.partition,
        source_offset: metadata.offset,
        error_class: error.class().to_string(),
        error_message: error.to_string(),
        key: key.map(|k| Blob(k.to_vec())),
        value: value.map(|v| Blob(v.to_vec())),
    }
}

/// The `sluice.error.*` headers of a dead letter (docs/architecture.md, topics and keys).
pub fn dlq_headers(metadata: &RecordMetadata, error: &ProcessError) -> Vec<(String, String)> {
    vec![
        ("sluice.error.topic".to_string(), metadata.topic.to_string()),
        ("sluice.error.partition".to_string(), metadata.partition.to_string()),
        ("sluice.error.offset".to_string(), metadata.offset.to_string()),
        ("sluice.error.class".to_string(), error.class().to_string()),
        ("sluice.error.message".to_string(), error.to_string()),
    ]
}
