//! Records as processors see them.

use std::sync::Arc;

use sluice_schemas::{AnyRecord, FromAny};

/// The value of a record.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// No value (a tombstone).
    Null,
    /// Opaque bytes: topics without an Avro schema (the `*.json` twins, plain test topics).
    Bytes(Vec<u8>),
    /// A typed Avro record (topics with a schema in topology.toml).
    Record(AnyRecord),
}

impl Value {
    /// The typed record, if this value is one of type `T`.
    pub fn as_record<T: FromAny>(&self) -> Option<&T> {
        match self {
            Value::Record(record) => T::ref_from_any(record),
            _ => None,
        }
    }

    /// The bytes, if this value is opaque bytes.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(bytes) => Some(bytes),
            _ => None,
        }
    }
}

impl Value {
    /// A typed record value.
    pub fn record(record: impl Into<AnyRecord>) -> Value {
        Value::Record(record.into())
    }
}

impl From<AnyRecord> for Value {
    fn from(record: AnyRecord) -> Value {
        Value::Record(record)
    }
}

impl From<&str> for Value {
    fn from(text: &str) -> Value {
        Value::Bytes(text.as_bytes().to_vec())
    }
}

/// Record headers, in order (Kafka allows repeated names).
pub type Headers = Vec<(String, Vec<u8>)>;

/// A key-value record with a timestamp and headers. Keys are UTF-8 strings (docs/architecture.md, topics and keys).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The key; `None` for records without one.
    pub key: Option<String>,
    /// The value.
    pub value: Value,
    /// Event time, milliseconds since the epoch.
    pub timestamp: i64,
    /// Headers.
    pub headers: Headers,
}

impl Record {
    /// A record with no headers.
    pub fn new(key: impl Into<String>, value: impl Into<Value>, timestamp: i64) -> Record {
        Record { key: Some(key.into()), value: value.into(), timestamp, headers: Vec::new() }
    }

    /// The first header named `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
    }

    /// The same record with another value.
    pub fn with_value(&self, value: impl Into<Value>) -> Record {
        Record { key: self.key.clone(), value: value.into(), timestamp: self.timestamp, headers: self.headers.clone() }
    }
}

impl From<Vec<u8>> for Value {
    fn from(bytes: Vec<u8>) -> Value {
        Value::Bytes(bytes)
    }
}

/// Where a record was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    /// Topic (shared: no allocation per record).
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// A record a sink wrote, waiting to be produced.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputRecord {
    /// Topic on the broker (repartition topics with their full names).
    pub topic: Arc<str>,
    /// The sink node that wrote it.
    pub sink: Arc<str>,
    /// The record.
    pub record: Record,
}
