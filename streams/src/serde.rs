//! [`TopicSerde`]: how the runtime turns a topic's bytes into a [`Value`] and back: Avro
//! through the Schema Registry (Confluent wire format) for topics with a schema in
//! topology.toml, opaque bytes for the others.

use std::collections::HashMap;

use sluice_schemas::Codec;

use crate::error::StreamsError;
use crate::processor::ProcessError;
use crate::record::Value;
use crate::record_collector::SendError;
use crate::topology::Topology;

/// Per-topic serialization; see the module docs. One per stream thread (it owns the
/// thread's I/O runtime for registry lookups).
pub struct TopicSerde {
    codec: Option<Codec>,
    io: tokio::runtime::Runtime,
    /// Schema per topic (external topics by name, repartition topics by their full name);
    /// `None`: raw bytes.
    schemas: HashMap<String, Option<String>>,
}

impl TopicSerde {
    /// The serde of `topology`'s topics for application `application_id`, with the registry
    /// at `registry_url` (required when a topic has a schema).
    pub fn new(topology: &Topology, application_id: &str, registry_url: Option<&str>) -> Result<TopicSerde, StreamsError> {
        let io = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| StreamsError::Config(e.to_string()))?;
        let codec = registry_url.map(Codec::new).transpose().map_err(|e| StreamsError::Config(e.to_string()))?;
        let schemas = topology
            .topics
            .iter()
            .map(|t| (t.name.clone(), t.schema.clone()))
            .chain(topology.repartitions.iter().map(|r| (crate::topology::repartition_topic(application_id, &r.name), r.schema.clone())))
            .collect();
        Ok(TopicSerde { codec, io, schemas })
    }

    /// Runs a future to completion on this thread's I/O runtime.
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.io.block_on(future)
    }

    /// Decodes a record value read from `topic`. A registry that cannot be reached is
    /// [`ProcessError::Retriable`]; bytes that are not what the topic's schema says are poison.
    pub fn decode_value(&self, topic: &str, bytes: Option<&[u8]>) -> Result<Value, ProcessError> {
        let schema = self.schemas.get(topic).and_then(|s| s.as_deref());
        match (bytes, schema, &self.codec) {
            (None, _, _) => Ok(Value::Null),
            (Some(bytes), None, _) => Ok(Value::Bytes(bytes.to_vec())),
            (Some(bytes), Some(stem), Some(codec)) => match self.io.block_on(codec.decode_any(stem, bytes)) {
                Ok(record) => Ok(Value::Record(record)),
                Err(error) if error.is_poison() => Err(ProcessError::poison("deserialization", error)),
                Err(error) => Err(ProcessError::Retriable(error.to_string())),
            },
            (Some(_), Some(_), None) => Err(ProcessError::Fatal("no schema registry configured".to_string())),
        }
    }

    /// Encodes a value for `topic` (`None` for a tombstone).
    pub fn encode_value(&self, topic: &str, value: &Value) -> Result<Option<Vec<u8>>, SendError> {
        match value {
            Value::Null => Ok(None),
            Value::Bytes(bytes) => Ok(Some(bytes.clone())),
            Value::Record(any) => {
                let codec = self.codec.as_ref().ok_or_else(|| SendError::Fatal(StreamsError::Config("no schema registry configured".to_string())))?;
                match self.io.block_on(codec.encode_any(topic, any)) {
                    Ok(bytes) => Ok(Some(bytes)),
                    Err(error) if error.is_poison() => Err(SendError::Fatal(StreamsError::Send { topic: topic.to_string(), reason: format!("encoding: {error}") })),
                    Err(error) => Err(SendError::Retriable(format!("encoding for {topic}: {error}"))),
                }
            }
        }
    }

    /// True when dead letters can be encoded as Avro records.
    pub fn has_registry(&self) -> bool {
        self.codec.is_some()
    }
}
