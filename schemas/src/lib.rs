//! `sluice-schemas`: the Avro schemas of every Sluice topic (`avro/*.avsc`, the source of
//! truth), the Rust types that mirror them, and the Confluent wire-format [`codec`].
//!
//! Money is `rust_decimal::Decimal` in Rust and an Avro `decimal` (bytes, precision 18,
//! scale 2) on the wire; never a float.

pub mod avro;
pub mod codec;
pub mod types;

pub use avro::{AvroRecord, AvroType, Blob, Date, FromAny, TimestampMillis};
pub use types::AnyRecord;
pub use codec::{Codec, CodecError};

/// Errors mapping between Rust values and Avro values.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SchemaError {
    /// A record lacked a field its Rust type requires.
    #[error("record has no field `{0}`")]
    MissingField(String),
    /// An Avro value had the wrong shape for the Rust type.
    #[error("expected {expected}, found {found}")]
    ValueMismatch {
        /// What the Rust type needs.
        expected: String,
        /// What was there.
        found: String,
    },
    /// An enum symbol this version does not know.
    #[error("`{symbol}` is not a symbol of {name}")]
    UnknownSymbol {
        /// Enum full name.
        name: String,
        /// The symbol found.
        symbol: String,
    },
    /// An amount that is not a valid decimal(18,2).
    #[error("invalid money amount: {0}")]
    InvalidMoney(String),
    /// A date that is not a valid `YYYY-MM-DD`.
    #[error("invalid date `{0}`: expected YYYY-MM-DD")]
    InvalidDate(String),
    /// A schema file name that Sluice does not ship.
    #[error("no schema file `{0}.avsc`")]
    UnknownSchemaFile(String),
}

/// Every schema file shipped in `avro/`, by file stem, embedded at build time.
pub const SCHEMA_FILES: &[(&str, &str)] = &[
    ("auth_command", include_str!("../avro/auth_command.avsc")),
    ("payment_command", include_str!("../avro/payment_command.avsc")),
    ("identity_command", include_str!("../avro/identity_command.avsc")),
    ("hmrc_command", include_str!("../avro/hmrc_command.avsc")),
    ("auth_event", include_str!("../avro/auth_event.avsc")),
    ("payment_settled", include_str!("../avro/payment_settled.avsc")),
    ("payment_rejected", include_str!("../avro/payment_rejected.avsc")),
    ("payment_event", include_str!("../avro/payment_event.avsc")),
    ("identity_verification_result", include_str!("../avro/identity_verification_result.avsc")),
    ("account_event", include_str!("../avro/account_event.avsc")),
    ("notification", include_str!("../avro/notification.avsc")),
    ("activity_log", include_str!("../avro/activity_log.avsc")),
    ("access_log", include_str!("../avro/access_log.avsc")),
    ("dead_letter", include_str!("../avro/dead_letter.avsc")),
    ("dead_letter_action", include_str!("../avro/dead_letter_action.avsc")),
    ("payment_leg", include_str!("../avro/payment_leg.avsc")),
    ("identity_claim", include_str!("../avro/identity_claim.avsc")),
    ("deceased_notice", include_str!("../avro/deceased_notice.avsc")),
];

/// The text of the schema file `avro/<stem>.avsc`.
pub fn schema_text(stem: &str) -> Result<&'static str, SchemaError> {
    SCHEMA_FILES
        .iter()
        .find(|(name, _)| *name == stem)
        .map(|(_, text)| *text)
        .ok_or_else(|| SchemaError::UnknownSchemaFile(stem.to_string()))
}

/// The Confluent TopicNameStrategy subject of a topic's values: `<topic>-value`.
pub fn value_subject(topic: &str) -> String {
    format!("{topic}-value")
}
