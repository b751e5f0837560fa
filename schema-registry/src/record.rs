//! Keys and values of the `_schemas` topic, in the JSON shape Confluent's registry writes, so the
//! topic reads the same to people (and tools) who know Confluent's.
//!
//! Keys are serialized with a fixed field order: compaction keeps the last value per key *byte
//! string*, so the same logical key must always produce the same bytes.

use serde::{Deserialize, Serialize};

/// The key of a `_schemas` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RecordKey {
    /// One version of one subject: `{"keytype":"SCHEMA","subject":s,"version":n,"magic":1}`.
    Schema {
        /// The subject.
        subject: String,
        /// The version within the subject.
        version: u32,
    },
    /// A compatibility level: `{"keytype":"CONFIG","subject":null|s,"magic":0}` (null = global).
    Config {
        /// The subject, or `None` for the global level.
        subject: Option<String>,
    },
    /// A key type this registry does not act on (Confluent's NOOP, MODE, DELETE_SUBJECT, ...).
    Other,
}

/// The value of a SCHEMA record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SchemaValue {
    /// The subject.
    pub(crate) subject: String,
    /// The version within the subject.
    pub(crate) version: u32,
    /// The global schema id.
    pub(crate) id: u32,
    /// The schema text as first registered.
    pub(crate) schema: String,
    /// Soft-deleted.
    #[serde(default)]
    pub(crate) deleted: bool,
    /// Absent for Avro; anything else is skipped on replay.
    #[serde(rename = "schemaType", default, skip_serializing_if = "Option::is_none")]
    pub(crate) schema_type: Option<String>,
}

/// The value of a CONFIG record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ConfigValue {
    /// The level's Confluent name.
    #[serde(rename = "compatibilityLevel")]
    pub(crate) compatibility_level: String,
}

/// A key as found on the topic, before we know its type.
#[derive(Deserialize)]
struct RawKey {
    keytype: String,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    version: Option<u32>,
}

impl RecordKey {
    /// The key's bytes, fields in Confluent's order.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        // serde_json's `preserve_order` feature keeps `json!` fields in the written order.
        let json = match self {
            RecordKey::Schema { subject, version } => {
                serde_json::json!({ "keytype": "SCHEMA", "subject": subject, "version": version, "magic": 1 })
            }
            RecordKey::Config { subject } => {
                serde_json::json!({ "keytype": "CONFIG", "subject": subject, "magic": 0 })
            }
            RecordKey::Other => serde_json::json!({ "keytype": "NOOP", "magic": 0 }),
        };
        json.to_string().into_bytes()
    }

    /// Parses a key; a key that is not JSON or lacks the fields its type needs is `Other`.
    pub(crate) fn parse(bytes: &[u8]) -> RecordKey {
        let Ok(raw) = serde_json::from_slice::<RawKey>(bytes) else {
            return RecordKey::Other;
        };
        match (raw.keytype.as_str(), raw.subject, raw.version) {
            ("SCHEMA", Some(subject), Some(version)) => RecordKey::Schema { subject, version },
            ("CONFIG", subject, _) => RecordKey::Config { subject },
            _ => RecordKey::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_confluent_shape_and_round_trip() {
        let key = RecordKey::Schema { subject: "orders-value".into(), version: 3 };
        assert_eq!(
            String::from_utf8(key.to_bytes()).unwrap(),
            r#"{"keytype":"SCHEMA","subject":"orders-value","version":3,"magic":1}"#
        );
        assert_eq!(RecordKey::parse(&key.to_bytes()), key);
        let global = RecordKey::Config { subject: None };
        assert_eq!(String::from_utf8(global.to_bytes()).unwrap(), r#"{"keytype":"CONFIG","subject":null,"magic":0}"#);
        assert_eq!(RecordKey::parse(&global.to_bytes()), global);
        assert_eq!(RecordKey::parse(br#"{"keytype":"NOOP","magic":0}"#), RecordKey::Other);
        assert_eq!(RecordKey::parse(b"not json"), RecordKey::Other);
    }

    #[test]
    fn avro_values_omit_schema_type() {
        let value = SchemaValue {
            subject: "s".into(),
            version: 1,
            id: 7,
            schema: "\"int\"".into(),
            deleted: false,
            schema_type: None,
        };
        assert_eq!(
            serde_json::to_string(&value).unwrap(),
            r#"{"subject":"s","version":1,"id":7,"schema":"\"int\"","deleted":false}"#
        );
    }
}
