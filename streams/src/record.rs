//! Records as processors see them.

use std::any::Any;
use std::fmt::Debug;
use std::sync::Arc;

/// An application's typed value (Kafka Streams' `V` of a `Serde<V>`): any `'static` type with
/// `Debug` and `PartialEq` that can cross threads. The application's [`crate::serde::Serdes`]
/// makes these from bytes and back; processors get them back with [`Value::as_record`].
pub trait Data: Any + Debug + Send + Sync {
    /// The value as `Any`, for downcasting.
    fn as_any(&self) -> &dyn Any;
    /// Equality with another typed value (false across types).
    fn dyn_eq(&self, other: &dyn Data) -> bool;
    /// The Rust type's name, for error messages.
    fn type_name(&self) -> &'static str;
}

impl<T: Any + Debug + PartialEq + Send + Sync> Data for T {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn dyn_eq(&self, other: &dyn Data) -> bool {
        other.as_any().downcast_ref::<T>() == Some(self)
    }

    fn type_name(&self) -> &'static str {
        std::any::type_name::<T>()
    }
}

/// The value of a record.
#[derive(Debug, Clone)]
pub enum Value {
    /// No value (a tombstone).
    Null,
    /// Opaque bytes: topics without a schema in topology.toml.
    Bytes(Vec<u8>),
    /// A typed value, made by the application's serdes for topics with a schema (shared: a
    /// value forwarded to several children is not copied).
    Record(Arc<dyn Data>),
}

// By hand: `dyn Data` has no `PartialEq` of its own, so that `Arc<dyn Data>` is not itself a
// `Data` (method calls on it would otherwise resolve to the `Arc`).
impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Bytes(a), Value::Bytes(b)) => a == b,
            (Value::Record(a), Value::Record(b)) => a.dyn_eq(b.as_ref()),
            _ => false,
        }
    }
}

impl Value {
    /// A typed value.
    pub fn record<T: Data>(record: T) -> Value {
        Value::Record(Arc::new(record))
    }

    /// The typed value, if this value is one of type `T`.
    pub fn as_record<T: Data>(&self) -> Option<&T> {
        match self {
            Value::Record(record) => record.as_any().downcast_ref::<T>(),
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
