//! `sluice-streams`: the Sluice stream-processing engine, named after Kafka Streams: the
//! [`topology::Topology`] read from `topology.toml`, and (as it grows) tasks, the runtime,
//! the commit protocol and the test driver.

pub mod admin;
pub mod builtin;
pub mod config;
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

/// The `sluice.error.*` headers of a dead letter (DESIGN §3).
pub fn dlq_headers(metadata: &RecordMetadata, error: &ProcessError) -> Vec<(String, String)> {
    vec![
        ("sluice.error.topic".to_string(), metadata.topic.to_string()),
        ("sluice.error.partition".to_string(), metadata.partition.to_string()),
        ("sluice.error.offset".to_string(), metadata.offset.to_string()),
        ("sluice.error.class".to_string(), error.class().to_string()),
        ("sluice.error.message".to_string(), error.to_string()),
    ]
}
