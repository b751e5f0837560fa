//! The pipeline's [`Serdes`] (docs/architecture.md, serdes): topic values are the Avro
//! records of `schemas/avro/` in the Confluent wire format, through the Schema Registry; a
//! topic's `schema` in topology.toml is the schema file stem. Values are [`AnyRecord`]s;
//! [`record`] makes one, [`AvroValue`] reads one back. Dead letters are the Avro `DeadLetter`.

use sluice_schemas::types::DeadLetter as AvroDeadLetter;
use sluice_schemas::{AnyRecord, Blob, Codec, FromAny, TimestampMillis};
use sluice_streams::record_collector::SendError;
use sluice_streams::{Data, DeadLetter, ProcessError, Serdes, StreamsError, Value};

/// See the module docs. One per process, shared by every stream thread.
pub struct AvroSerdes {
    codec: Codec,
    /// Drives the registry client; `None` only while dropping.
    io: Option<tokio::runtime::Runtime>,
}

impl AvroSerdes {
    /// Serdes over the Schema Registry at `registry_url`, registering schemas with basic auth
    /// `user_info` (`user:password`) if given (nothing is fetched before the first record).
    pub fn new(registry_url: &str, user_info: Option<&str>) -> Result<AvroSerdes, String> {
        let codec = Codec::new(registry_url, user_info).map_err(|e| e.to_string())?;
        let io = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sluice-registry-client")
            .enable_all()
            .build()
            .map_err(|e| format!("starting the registry client: {e}"))?;
        Ok(AvroSerdes { codec, io: Some(io) })
    }

    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.io.as_ref().expect("the runtime lives until drop").block_on(future)
    }
}

impl Drop for AvroSerdes {
    /// Without waiting: the serdes may be dropped inside an async context.
    fn drop(&mut self) {
        if let Some(io) = self.io.take() {
            io.shutdown_background();
        }
    }
}

impl Serdes for AvroSerdes {
    fn check_schema(&self, topic: &str, schema: &str) -> Result<(), String> {
        sluice_schemas::schema_text(schema).map(|_| ()).map_err(|_| format!("topic `{topic}`: unknown schema `{schema}` (no schemas/avro/{schema}.avsc)"))
    }

    fn deserialize(&self, _topic: &str, schema: &str, bytes: &[u8]) -> Result<Value, ProcessError> {
        match self.block_on(self.codec.decode_any(schema, bytes)) {
            Ok(record) => Ok(Value::record(record)),
            Err(error) if error.is_poison() => Err(ProcessError::poison("deserialization", error)),
            Err(error) => Err(ProcessError::Retriable(error.to_string())),
        }
    }

    fn serialize(&self, topic: &str, _schema: Option<&str>, value: &dyn Data) -> Result<Vec<u8>, SendError> {
        let fatal = |reason: String| SendError::Fatal(StreamsError::Send { topic: topic.to_string(), reason });
        let record = value.as_any().downcast_ref::<AnyRecord>().ok_or_else(|| fatal(format!("a {} is not an Avro record of the pipeline", value.type_name())))?;
        match self.block_on(self.codec.encode_any(topic, record)) {
            Ok(bytes) => Ok(bytes),
            Err(error) if error.is_poison() => Err(fatal(format!("encoding: {error}"))),
            Err(error) => Err(SendError::Retriable(format!("encoding for {topic}: {error}"))),
        }
    }

    fn dead_letter(&self, letter: &DeadLetter<'_>) -> Value {
        record(dead_letter(letter))
    }
}

/// The Avro `DeadLetter` for `letter` (its key and value already cut by the engine).
pub fn dead_letter(letter: &DeadLetter<'_>) -> AvroDeadLetter {
    AvroDeadLetter {
        event_id: letter.event_id(),
        occurred_at: TimestampMillis(letter.timestamp),
        source_topic: letter.source.topic.to_string(),
        source_partition: letter.source.partition,
        source_offset: letter.source.offset,
        error_class: letter.error.class().to_string(),
        error_message: letter.message(),
        key: letter.key.map(|k| Blob(k.to_vec())),
        value: letter.value.map(|v| Blob(v.to_vec())),
    }
}

/// A record value holding an Avro record of the pipeline.
pub fn record(value: impl Into<AnyRecord>) -> Value {
    Value::record(value.into())
}

/// Reading the pipeline's records out of a [`Value`].
pub trait AvroValue {
    /// The Avro record, if the value is one.
    fn avro(&self) -> Option<&AnyRecord>;
    /// The Avro record of type `T`, if the value is one.
    fn avro_as<T: FromAny>(&self) -> Option<&T> {
        self.avro().and_then(T::ref_from_any)
    }
}

impl AvroValue for Value {
    fn avro(&self) -> Option<&AnyRecord> {
        self.as_record::<AnyRecord>()
    }
}
