//! The Confluent wire format through a Schema Registry: magic byte `0`, a 4-byte big-endian
//! schema id, then the Avro binary datum. Writers register their schema under the topic's
//! TopicNameStrategy subject (`<topic>-value`); readers fetch the writer's schema by id and
//! resolve it against their own (schema evolution).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema::{NamesRef, ResolvedSchema};
use apache_avro::types::Value;
use apache_avro::Schema;
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{
    RawError, SchemaType, SubjectNameStrategy, SuppliedSchema,
};

use crate::avro::AvroRecord;
use crate::SchemaError;

/// The first byte of every Confluent-framed payload.
pub const MAGIC_BYTE: u8 = 0;
/// Magic byte plus schema id.
pub const HEADER_LEN: usize = 5;
/// Confluent error code for "schema not found".
const SCHEMA_NOT_FOUND: u32 = 40403;

/// Why a payload could not be encoded or decoded. The runtime dead-letters the decode errors
/// that are the record's fault and retries the ones that are the registry's.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Fewer bytes than the 5-byte header.
    #[error("payload is {len} bytes, shorter than the 5-byte Confluent header")]
    TooShort {
        /// Payload length.
        len: usize,
    },
    /// The first byte is not the Confluent magic byte 0.
    #[error("wrong magic byte {found:#04x}: not a Confluent-framed Avro payload")]
    WrongMagicByte {
        /// The byte found.
        found: u8,
    },
    /// The registry has no schema with this id.
    #[error("schema id {id} is unknown to the schema registry")]
    UnknownSchemaId {
        /// The id from the header.
        id: u32,
    },
    /// The datum does not decode with the writer's schema, or does not resolve to the reader's.
    #[error("datum does not match schema {schema}: {reason}")]
    DatumMismatch {
        /// The schema the datum was read with.
        schema: String,
        /// What went wrong.
        reason: String,
    },
    /// The value does not fit the Avro schema (e.g. an over-precise amount).
    #[error(transparent)]
    Value(#[from] SchemaError),
    /// The registry could not be reached or answered 5xx; retrying may help.
    #[error("schema registry unavailable: {0}")]
    RegistryUnavailable(String),
    /// The registry refused the request (e.g. an incompatible schema).
    #[error("schema registry refused the request: {0}")]
    Registry(String),
    /// The registry settings are unusable.
    #[error("invalid schema registry settings: {0}")]
    Settings(String),
}

impl CodecError {
    /// True when the record itself is at fault (dead-letter it); false when retrying may help.
    pub fn is_poison(&self) -> bool {
        !matches!(self, CodecError::RegistryUnavailable(_))
    }
}

/// Encodes and decodes Sluice records in the Confluent wire format.
pub struct Codec {
    encoder: AvroEncoder,
    decoder: AvroDecoder,
    /// Schema id and parsed schema of each record type (by full name) already registered for a
    /// topic: later encodes frame the datum directly instead of going through the converter's
    /// cache, whose key is the whole schema text. Looked up by `&str`, so the hot path
    /// allocates no key.
    writers: RwLock<HashMap<&'static str, HashMap<String, Writer>>>,
}

/// The registered id and the parsed schema a record type is written with.
type Writer = (u32, Arc<Schema>);

impl Codec {
    /// A codec talking to the Schema Registry at `registry_url` (e.g. `http://127.0.0.1:8081`),
    /// with HTTP basic auth `user_info` (`user:password`, Confluent's `basic.auth.user.info`)
    /// when given: registering a schema needs it.
    pub fn new(registry_url: &str, user_info: Option<&str>) -> Result<Codec, CodecError> {
        let settings = || registry_settings(registry_url, user_info);
        Ok(Codec { encoder: AvroEncoder::new(settings()?), decoder: AvroDecoder::new(settings()?), writers: RwLock::default() })
    }

    /// Encodes `record` for `topic`, registering its schema under `<topic>-value` if needed.
    pub async fn encode<T: AvroRecord>(&self, topic: &str, record: &T) -> Result<Vec<u8>, CodecError> {
        let value = record.to_avro()?;
        let writer = self.writers.read().expect("writers lock").get(T::FULL_NAME).and_then(|topics| topics.get(topic)).cloned();
        if let Some((id, schema)) = writer {
            let mut framed = Vec::with_capacity(64);
            framed.push(MAGIC_BYTE);
            framed.extend_from_slice(&id.to_be_bytes());
            apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
                .build()
                .and_then(|writer| writer.write_value(&mut framed, value))
                .map_err(|e| CodecError::DatumMismatch { schema: format!("id {id} ({})", T::FULL_NAME), reason: e.to_string() })?;
            return Ok(framed);
        }
        let text = crate::schema_text(T::SCHEMA_FILE)?;
        let supplied = SuppliedSchema::new(Some(T::FULL_NAME.to_string()), SchemaType::Avro, text.to_string());
        let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema(topic.to_string(), false, supplied);
        let framed = self.encoder.encode_value(value, &strategy).await.map_err(|e| classify(e, None))?;
        let (id, _) = split_header(&framed)?;
        if let Ok(schema) = Schema::parse_str(text) {
            self.writers.write().expect("writers lock").entry(T::FULL_NAME).or_default().insert(topic.to_string(), (id, Arc::new(schema)));
        }
        Ok(framed)
    }

    /// Decodes a Confluent-framed payload into `T`, resolving the writer's schema to `T`'s.
    pub async fn decode<T: AvroRecord>(&self, payload: &[u8]) -> Result<T, CodecError> {
        let (id, mut datum) = split_header(payload)?;
        let writer = self.decoder.get_schema(id).await.map_err(|e| classify(e, Some(id)))?;
        let mismatch = |reason: String| CodecError::DatumMismatch { schema: format!("id {id} read as {}", T::FULL_NAME), reason };
        let written = GenericDatumReader::builder(&writer.parsed)
            .build()
            .and_then(|datum_reader| datum_reader.read_value(&mut datum))
            .map_err(|e| mismatch(e.to_string()))?;
        if !datum.is_empty() {
            return Err(mismatch(format!("{} bytes left over after the datum", datum.len())));
        }
        // Resolution to the reader's type is by name: records by field name (missing optional
        // fields default to null), unions by record name, enums by symbol.
        let names = ResolvedSchema::try_from(&writer.parsed).map_err(|e| mismatch(e.to_string()))?;
        T::from_avro(name_records(written, &writer.parsed, names.get_names())).map_err(|e| mismatch(e.to_string()))
    }
}

/// A Confluent-framed Avro payload decoded with its writer's schema, as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedJson {
    /// The writer's schema id.
    pub schema_id: u32,
    /// The writer's record name, when the schema is a record.
    pub record_name: Option<String>,
    /// The datum: records as objects, a union's record branch as `{"<full name>": {...}}` (an
    /// optional value as the value), enums as their symbol,
    /// decimals as decimal strings (`"12.50"`), bytes as hex, timestamps as numbers.
    pub value: serde_json::Value,
}

impl Codec {
    /// Decodes a Confluent-framed payload with whatever schema wrote it (a topic browser's
    /// read, where no Rust type is expected).
    pub async fn decode_json(&self, payload: &[u8]) -> Result<DecodedJson, CodecError> {
        let (id, mut datum) = split_header(payload)?;
        let writer = self.decoder.get_schema(id).await.map_err(|e| classify(e, Some(id)))?;
        let mismatch = |reason: String| CodecError::DatumMismatch { schema: format!("id {id}"), reason };
        let written = GenericDatumReader::builder(&writer.parsed)
            .build()
            .and_then(|datum_reader| datum_reader.read_value(&mut datum))
            .map_err(|e| mismatch(e.to_string()))?;
        let names = ResolvedSchema::try_from(&writer.parsed).map_err(|e| mismatch(e.to_string()))?;
        let record_name = match &writer.parsed {
            Schema::Record(record) => Some(record.name.fullname(None)),
            _ => None,
        };
        Ok(DecodedJson { schema_id: id, record_name, value: avro_to_json(written, &writer.parsed, names.get_names()) })
    }
}

/// An Avro value as JSON, following `schema` for the scale of decimals.
fn avro_to_json(value: Value, schema: &Schema, names: &NamesRef<'_>) -> serde_json::Value {
    use serde_json::Value as Json;
    let schema = match schema {
        Schema::Ref { name } => names.get(name).copied().unwrap_or(schema),
        other => other,
    };
    let hex = |bytes: &[u8]| Json::String(bytes.iter().map(|b| format!("{b:02x}")).collect());
    match (value, schema) {
        (Value::Null, _) => Json::Null,
        (Value::Boolean(b), _) => Json::Bool(b),
        (Value::Int(i) | Value::Date(i) | Value::TimeMillis(i), _) => Json::from(i),
        (Value::Long(i) | Value::TimestampMillis(i) | Value::TimestampMicros(i) | Value::TimeMicros(i) | Value::LocalTimestampMillis(i) | Value::LocalTimestampMicros(i), _) => Json::from(i),
        (Value::Float(f), _) => Json::from(f),
        (Value::Double(f), _) => Json::from(f),
        (Value::String(s) | Value::Enum(_, s), _) => Json::String(s),
        (Value::Uuid(u), _) => Json::String(u.to_string()),
        (Value::Decimal(d), Schema::Decimal(decimal)) => match Vec::<u8>::try_from(&d) {
            Ok(bytes) if !bytes.is_empty() && bytes.len() <= 16 => {
                let mut buf = if bytes[0] & 0x80 != 0 { [0xFF; 16] } else { [0; 16] };
                buf[16 - bytes.len()..].copy_from_slice(&bytes);
                let scale = u32::try_from(decimal.scale).unwrap_or(0);
                match rust_decimal::Decimal::try_from_i128_with_scale(i128::from_be_bytes(buf), scale) {
                    Ok(amount) => Json::String(amount.to_string()),
                    Err(_) => hex(&bytes),
                }
            }
            Ok(bytes) => hex(&bytes),
            Err(_) => Json::Null,
        },
        (Value::Decimal(d), _) => Vec::<u8>::try_from(&d).map(|b| hex(&b)).unwrap_or(Json::Null),
        (Value::Bytes(b) | Value::Fixed(_, b), _) => hex(&b),
        // A record branch of a union is wrapped in its full name, as Avro's JSON encoding (and
        // Confluent's console consumer) write it; optional primitives are shown bare.
        (Value::Union(branch, inner), Schema::Union(union)) => match union.variants().get(branch as usize) {
            Some(variant) => {
                let resolved = match variant {
                    Schema::Ref { name } => names.get(name).copied().unwrap_or(variant),
                    other => other,
                };
                let json = avro_to_json(*inner, variant, names);
                match resolved {
                    Schema::Record(record) if union.variants().len() > 2 || !union.is_nullable() => {
                        serde_json::json!({ record.name.fullname(None): json })
                    }
                    _ => json,
                }
            }
            None => avro_to_json(*inner, &Schema::Null, names),
        },
        (Value::Union(_, inner), _) => avro_to_json(*inner, &Schema::Null, names),
        (Value::Array(items), Schema::Array(array)) => Json::Array(items.into_iter().map(|item| avro_to_json(item, &array.items, names)).collect()),
        (Value::Array(items), _) => Json::Array(items.into_iter().map(|item| avro_to_json(item, &Schema::Null, names)).collect()),
        (Value::Map(entries), Schema::Map(map)) => Json::Object(entries.into_iter().map(|(k, v)| (k, avro_to_json(v, &map.types, names))).collect()),
        (Value::Map(entries), _) => Json::Object(entries.into_iter().map(|(k, v)| (k, avro_to_json(v, &Schema::Null, names))).collect()),
        (Value::Record(fields), Schema::Record(record)) => Json::Object(
            fields
                .into_iter()
                .map(|(name, value)| {
                    let field_schema = record.fields.iter().find(|f| f.name == name).map_or(&Schema::Null, |f| &f.schema);
                    let json = avro_to_json(value, field_schema, names);
                    (name, json)
                })
                .collect(),
        ),
        (Value::Record(fields), _) => Json::Object(fields.into_iter().map(|(name, value)| (name, avro_to_json(value, &Schema::Null, names))).collect()),
        (other, _) => Json::String(format!("{other:?}")),
    }
}

/// Tags every record of a value decoded with `schema` with its full name
/// ([`crate::avro::RECORD_NAME_FIELD`]).
fn name_records(value: Value, schema: &Schema, names: &NamesRef<'_>) -> Value {
    match (value, schema) {
        (value, Schema::Ref { name }) => match names.get(name) {
            Some(named) => name_records(value, named, names),
            None => value,
        },
        (Value::Record(fields), Schema::Record(record)) => {
            let mut tagged = Vec::with_capacity(fields.len() + 1);
            tagged.push((crate::avro::RECORD_NAME_FIELD.to_string(), Value::String(record.name.fullname(None))));
            for (name, value) in fields {
                let value = match record.fields.iter().find(|f| f.name == name) {
                    Some(field) => name_records(value, &field.schema, names),
                    None => value,
                };
                tagged.push((name, value));
            }
            Value::Record(tagged)
        }
        (Value::Union(branch, inner), Schema::Union(union)) => {
            let inner = match union.variants().get(branch as usize) {
                Some(variant) => name_records(*inner, variant, names),
                None => *inner,
            };
            Value::Union(branch, Box::new(inner))
        }
        (Value::Array(items), Schema::Array(array)) => {
            Value::Array(items.into_iter().map(|item| name_records(item, &array.items, names)).collect())
        }
        (value, _) => value,
    }
}

/// Splits a payload into its schema id and datum, checking length and magic byte.
pub fn split_header(payload: &[u8]) -> Result<(u32, &[u8]), CodecError> {
    if payload.len() < HEADER_LEN {
        return Err(CodecError::TooShort { len: payload.len() });
    }
    if payload[0] != MAGIC_BYTE {
        return Err(CodecError::WrongMagicByte { found: payload[0] });
    }
    let id = u32::from_be_bytes([payload[1], payload[2], payload[3], payload[4]]);
    Ok((id, &payload[HEADER_LEN..]))
}

/// Maps a schema_registry_converter error to a typed error by the registry's error code and
/// the retry hint, never by its message text.
fn classify(error: SRCError, id: Option<u32>) -> CodecError {
    let code = std::error::Error::source(&error)
        .and_then(|source| source.downcast_ref::<RawError>())
        .map(|raw| raw.error_code);
    match (code, id) {
        (Some(SCHEMA_NOT_FOUND), Some(id)) => CodecError::UnknownSchemaId { id },
        _ if error.retriable => CodecError::RegistryUnavailable(error.to_string()),
        _ => CodecError::Registry(error.to_string()),
    }
}

/// Client settings for the registry at `registry_url`, with basic auth `user:password` if given.
fn registry_settings(registry_url: &str, user_info: Option<&str>) -> Result<SrSettings, CodecError> {
    let mut builder = SrSettings::new_builder(registry_url.to_string());
    builder.no_proxy().set_timeout(Duration::from_secs(10));
    if let Some((user, password)) = user_info.and_then(|u| u.split_once(':')) {
        builder.set_basic_authorization(user, Some(password));
    }
    builder.build().map_err(|e| CodecError::Settings(e.error))
}

/// Registers the schema file `stem` under `<topic>-value` and returns its global id (the
/// existing id if it was registered before).
pub async fn register_schema(registry_url: &str, user_info: Option<&str>, topic: &str, stem: &str) -> Result<u32, CodecError> {
    let settings = registry_settings(registry_url, user_info)?;
    let text = crate::schema_text(stem)?;
    let name = Schema::parse_str(text)
        .ok()
        .and_then(|schema| schema.name().map(|n| n.fullname(None)));
    let supplied = SuppliedSchema::new(name, SchemaType::Avro, text.to_string());
    schema_registry_converter::async_impl::schema_registry::post_schema(&settings, crate::value_subject(topic), supplied)
        .await
        .map(|registered| registered.id)
        .map_err(|e| classify(e, None))
}
