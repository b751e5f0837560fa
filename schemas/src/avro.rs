//! The bridge between Rust types and Avro: every wire type implements [`AvroType`], which
//! derives its Avro schema (compared against `avro/*.avsc` in tests) and converts to and from
//! `apache_avro::types::Value`.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use apache_avro::types::Value;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::SchemaError;

/// Scale of every money amount on the wire (pence).
pub const MONEY_SCALE: u32 = 2;
/// Precision of every money amount on the wire: 18 digits, so at most 9,999,999,999,999,999.99.
pub const MONEY_PRECISION: u32 = 18;

/// A Rust type with an Avro schema and a lossless mapping to Avro values.
pub trait AvroType: Sized {
    /// The Avro schema of this type as JSON. Named types already in `named` are written as a
    /// reference to their full name, as the Avro specification requires.
    fn schema_json(named: &mut BTreeSet<String>) -> serde_json::Value;
    /// The field default written in a record schema (`null` for optional fields).
    fn field_default() -> Option<serde_json::Value> {
        None
    }
    /// Converts to an Avro value of this type's schema.
    fn to_avro(&self) -> Result<Value, SchemaError>;
    /// Converts from an Avro value already resolved against this type's schema.
    fn from_avro(value: Value) -> Result<Self, SchemaError>;
}

/// Pseudo-field the codec adds to decoded records with the writer's full record name, so a
/// union is matched to its Rust variant by name (Avro's resolution rule), even when two
/// branches have the same fields.
pub const RECORD_NAME_FIELD: &str = "\0name";

/// An Avro named type (record or enum) with its full name.
pub trait AvroNamed {
    /// Full name, e.g. `io.sluice.payments.Deposit`.
    const AVRO_NAME: &'static str;
}

/// Conversion out of [`crate::types::AnyRecord`] for one top-level record type.
pub trait FromAny: Sized {
    /// The record, or the input back if it is of another type.
    fn from_any(record: crate::types::AnyRecord) -> Result<Self, Box<crate::types::AnyRecord>>;
    /// A reference to the record, if it is of this type.
    fn ref_from_any(record: &crate::types::AnyRecord) -> Option<&Self>;
}

/// A named Avro record that is the top-level value of a topic.
pub trait AvroRecord: AvroType {
    /// Full name, e.g. `io.sluice.auth.AuthCommand`.
    const FULL_NAME: &'static str;
    /// Stem of the `.avsc` file under `schemas/avro/` that defines it.
    const SCHEMA_FILE: &'static str;
}

pub(crate) fn mismatch(expected: &str, found: &Value) -> SchemaError {
    SchemaError::ValueMismatch {
        expected: expected.to_string(),
        found: format!("{found:?}"),
    }
}

/// Removes a field by name from a decoded record and converts it; a field the writer did not
/// have takes the reader's default (`null` for optional fields), as Avro resolution does.
#[doc(hidden)]
pub fn take_field<T: AvroType>(fields: &mut Vec<(String, Value)>, name: &str) -> Result<T, SchemaError> {
    match fields.iter().position(|(field, _)| field == name) {
        Some(position) => T::from_avro(fields.swap_remove(position).1),
        None if T::field_default().is_some() => T::from_avro(Value::Null),
        None => Err(SchemaError::MissingField(name.to_string())),
    }
}

impl AvroType for String {
    fn schema_json(_: &mut BTreeSet<String>) -> serde_json::Value {
        json!("string")
    }
    fn to_avro(&self) -> Result<Value, SchemaError> {
        Ok(Value::String(self.clone()))
    }
    fn from_avro(value: Value) -> Result<Self, SchemaError> {
        match value {
            Value::String(s) => Ok(s),
            other => Err(mismatch("string", &other)),
        }
    }
}

impl AvroType for bool {
    fn schema_json(_: &mut BTreeSet<String>) -> serde_json::Value {
        json!("boolean")
    }
    fn to_avro(&self) -> Result<Value, SchemaError> {
        Ok(Value::Boolean(*self))
    }
    fn from_avro(value: Value) -> Result<Self, SchemaError> {
        match value {
            Value::Boolean(b) => Ok(b),
            other => Err(mismatch("boolean", &other)),
        }
    }
}

impl AvroType for i32 {
    fn schema_json(_: &mut BTreeSet<String>) -> serde_json::Value {
        json!("int")
    }
    fn to_avro(&self) -> Result<Value, SchemaError> {
        Ok(Value::Int(*self))
    }
    fn from_avro(value: Value) -> Result<Self, SchemaError> {
        match value {
            Value::Int(i) => Ok(i),
            other => Err(mismatch("int", &other)),
        }
    }
}

impl AvroType for i64 {
    fn schema_json(_: &mut BTreeSet<String>) -> serde_json::Value {
        json!("long")
    }
    fn to_avro(&self) -> Result<Value, SchemaError> {
        Ok(Value::Long(*self))
    }
    fn from_avro(value: Value) -> Result<Self, SchemaError> {
        match value {
            Value::Long(i) => Ok(i),
            Value::Int(i) => Ok(i64::from(i)),
            other => Err(mismatch("long", &other)),
        }
    }
}

/// Raw bytes (Avro `bytes`), e.g. the original payload of a dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Blob(pub Vec<u8>);

impl AvroType for Blob {
    fn schema_json(_: &mut BTreeSet<String>) -> serde_json::Value {
        json!("bytes")
    }
    fn to_avro(&self) -> Result<Value, SchemaError> {
        Ok(Value::Bytes(self.0.clone()))
    }
    fn from_avro(value: Value) -> Result<Self, SchemaError> {
        match value {
            Value::Bytes(b) => Ok(Blob(b)),
            other => Err(mismatch("bytes", &other)),
        }
    }
}

impl<T: AvroType> AvroType for Option<T> {
    fn schema_json(named: &mut BTreeSet<String>) -> serde_json::Value {
        json!(["null", T::schema_json(named)])
    }
    fn field_default() -> Option<serde_json::Value> {
        Some(serde_json::Value::Null)
    }
    fn to_avro(&self) -> Result<Value, SchemaError> {
        Ok(match self {
            None => Value::Union(0, Box::new(Value::Null)),
            Some(inner) => Value::Union(1, Box::new(inner.to_avro()?)),
        })
    }
    fn from_avro(value: Value) -> Result<Self, SchemaError> {
        match value {
            Value::Null => Ok(None),
            Value::Union(_, inner) if *inner == Value::Null => Ok(None),
            Value::Union(_, inner) => T::from_avro(*inner).map(Some),
            other => T::from_avro(other).map(Some),
        }
    }
}

/// Avro `array` of the item type: strings (roles, identifiers), longs (sequence numbers).
impl<T: AvroType> AvroType for Vec<T> {
    fn schema_json(named: &mut BTreeSet<String>) -> serde_json::Value {
        json!({"type": "array", "items": T::schema_json(named)})
    }
    fn to_avro(&self) -> Result<Value, SchemaError> {
        Ok(Value::Array(self.iter().map(T::to_avro).collect::<Result<_, _>>()?))
    }
    fn from_avro(value: Value) -> Result<Self, SchemaError> {
        match value {
            Value::Array(items) => items.into_iter().map(T::from_avro).collect(),
            other => Err(mismatch("array", &other)),
        }
    }
}

/// Money: Avro `decimal` (bytes, precision 18, scale 2). Amounts with more than two decimal
/// places or more than 18 digits are refused, never rounded.
impl AvroType for Decimal {
    fn schema_json(_: &mut BTreeSet<String>) -> serde_json::Value {
        json!({"type": "bytes", "logicalType": "decimal", "precision": MONEY_PRECISION, "scale": MONEY_SCALE})
    }
    fn to_avro(&self) -> Result<Value, SchemaError> {
        let mantissa = money_mantissa(*self)?;
        Ok(Value::Decimal(apache_avro::Decimal::from(sign_extend(&mantissa_bytes(mantissa), MONEY_MIN_BYTES))))
    }
    fn from_avro(value: Value) -> Result<Self, SchemaError> {
        let bytes = match value {
            Value::Decimal(d) => Vec::<u8>::try_from(&d).map_err(|e| SchemaError::InvalidMoney(e.to_string()))?,
            Value::Bytes(b) => b,
            other => return Err(mismatch("decimal(18,2)", &other)),
        };
        if bytes.is_empty() || bytes.len() > 16 {
            return Err(SchemaError::InvalidMoney(format!("{} bytes cannot hold a decimal(18,2)", bytes.len())));
        }
        let mut buf = if bytes[0] & 0x80 != 0 { [0xFF; 16] } else { [0; 16] };
        buf[16 - bytes.len()..].copy_from_slice(&bytes);
        let mantissa = i128::from_be_bytes(buf);
        if mantissa.unsigned_abs() >= 10u128.pow(MONEY_PRECISION) {
            return Err(SchemaError::InvalidMoney(format!("{mantissa} exceeds 18 digits")));
        }
        Decimal::try_from_i128_with_scale(mantissa, MONEY_SCALE).map_err(|e| SchemaError::InvalidMoney(e.to_string()))
    }
}

/// The unscaled value of `amount` at scale 2, refusing more decimal places or digits.
pub fn money_mantissa(amount: Decimal) -> Result<i128, SchemaError> {
    let normalized = amount.normalize();
    if normalized.scale() > MONEY_SCALE {
        return Err(SchemaError::InvalidMoney(format!("{amount} has more than {MONEY_SCALE} decimal places")));
    }
    let mut scaled = normalized;
    scaled.rescale(MONEY_SCALE);
    let mantissa = scaled.mantissa();
    if mantissa.unsigned_abs() >= 10u128.pow(MONEY_PRECISION) {
        return Err(SchemaError::InvalidMoney(format!("{amount} has more than {MONEY_PRECISION} digits")));
    }
    Ok(mantissa)
}

/// Width money is written with. Any width is valid Avro, but apache-avro refuses to resolve a
/// bytes decimal shorter than its precision needs (8 bytes for 18 digits), so Sluice writes 8
/// for the sake of apache-avro-based readers.
pub const MONEY_MIN_BYTES: usize = 8;

/// `bytes` (big-endian two's complement) sign-extended to at least `width` bytes.
pub fn sign_extend(bytes: &[u8], width: usize) -> Vec<u8> {
    if bytes.len() >= width {
        return bytes.to_vec();
    }
    let fill = if bytes.first().is_some_and(|b| b & 0x80 != 0) { 0xFF } else { 0x00 };
    let mut out = vec![fill; width - bytes.len()];
    out.extend_from_slice(bytes);
    out
}

/// Minimal big-endian two's-complement bytes of `value`, as the Avro decimal encoding requires.
fn mantissa_bytes(value: i128) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let sign = if value < 0 { 0xFF } else { 0x00 };
    let mut start = 0;
    // Drop redundant sign bytes while the next byte still carries the sign bit.
    while start < 15 && bytes[start] == sign && (bytes[start + 1] & 0x80) == (sign & 0x80) {
        start += 1;
    }
    bytes[start..].to_vec()
}

/// Milliseconds since the Unix epoch, UTC (Avro `timestamp-millis`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TimestampMillis(pub i64);

impl AvroType for TimestampMillis {
    fn schema_json(_: &mut BTreeSet<String>) -> serde_json::Value {
        json!({"type": "long", "logicalType": "timestamp-millis"})
    }
    fn to_avro(&self) -> Result<Value, SchemaError> {
        Ok(Value::TimestampMillis(self.0))
    }
    fn from_avro(value: Value) -> Result<Self, SchemaError> {
        match value {
            Value::TimestampMillis(ms) | Value::Long(ms) => Ok(TimestampMillis(ms)),
            other => Err(mismatch("timestamp-millis", &other)),
        }
    }
}

/// A calendar date (Avro `date`: days since 1970-01-01), written `YYYY-MM-DD` in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date(pub i32);

impl Date {
    /// The date of a proleptic Gregorian year, month (1-12) and day (1-31), if it exists.
    pub fn from_ymd(year: i32, month: u32, day: u32) -> Option<Date> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        // Howard Hinnant's days_from_civil.
        let y = i64::from(year) - i64::from(month <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        i32::try_from(era * 146_097 + doe - 719_468).ok().map(Date)
    }

    /// Year, month and day of this date.
    pub fn ymd(self) -> (i32, u32, u32) {
        let z = i64::from(self.0) + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
        (year, month, day)
    }
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

impl FromStr for Date {
    type Err = SchemaError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || SchemaError::InvalidDate(s.to_string());
        let mut parts = s.splitn(3, '-');
        let (Some(y), Some(m), Some(d)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(invalid());
        };
        if y.len() != 4 || m.len() != 2 || d.len() != 2 {
            return Err(invalid());
        }
        let year = y.parse().map_err(|_| invalid())?;
        let month = m.parse().map_err(|_| invalid())?;
        let day = d.parse().map_err(|_| invalid())?;
        Date::from_ymd(year, month, day).ok_or_else(invalid)
    }
}

impl Serialize for Date {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Date {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl AvroType for Date {
    fn schema_json(_: &mut BTreeSet<String>) -> serde_json::Value {
        json!({"type": "int", "logicalType": "date"})
    }
    fn to_avro(&self) -> Result<Value, SchemaError> {
        Ok(Value::Date(self.0))
    }
    fn from_avro(value: Value) -> Result<Self, SchemaError> {
        match value {
            Value::Date(days) | Value::Int(days) => Ok(Date(days)),
            other => Err(mismatch("date", &other)),
        }
    }
}

/// Writes the schema of a named type once; later uses refer to it by full name.
#[doc(hidden)]
pub fn named_schema(
    named: &mut BTreeSet<String>,
    full_name: &str,
    define: impl FnOnce(&mut BTreeSet<String>) -> serde_json::Value,
) -> serde_json::Value {
    if named.contains(full_name) {
        return json!(full_name);
    }
    named.insert(full_name.to_string());
    define(named)
}

/// Splits `io.sluice.auth.AuthCommand` into (`AuthCommand`, `io.sluice.auth`).
#[doc(hidden)]
pub fn split_name(full_name: &str) -> (&str, &str) {
    match full_name.rsplit_once('.') {
        Some((namespace, name)) => (name, namespace),
        None => (full_name, ""),
    }
}

/// Joins doc-comment lines into one Avro `doc` string.
#[doc(hidden)]
pub fn doc_text(lines: &[&str]) -> String {
    lines.iter().map(|line| line.trim()).collect::<Vec<_>>().join(" ")
}

/// Declares an Avro record: a Rust struct plus its [`AvroType`] implementation. Doc comments
/// become the schema's `doc` attributes.
#[macro_export]
macro_rules! avro_record {
    (
        $(#[doc = $doc:literal])*
        $vis:vis struct $name:ident as $full:literal {
            $(
                $(#[doc = $fdoc:literal])*
                $(#[serde($($serde:tt)*)])?
                pub $field:ident : $ty:ty
            ),* $(,)?
        }
    ) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        $vis struct $name {
            $(
                $(#[doc = $fdoc])*
                $(#[serde($($serde)*)])?
                pub $field: $ty,
            )*
        }

        impl $crate::avro::AvroNamed for $name {
            const AVRO_NAME: &'static str = $full;
        }

        impl $crate::avro::AvroType for $name {
            fn schema_json(named: &mut std::collections::BTreeSet<String>) -> serde_json::Value {
                $crate::avro::named_schema(named, $full, |named| {
                    let (name, namespace) = $crate::avro::split_name($full);
                    #[allow(unused_mut)]
                    let mut fields: Vec<serde_json::Value> = Vec::new();
                    $(
                        let mut field = serde_json::Map::new();
                        field.insert("name".into(), serde_json::json!(stringify!($field)));
                        field.insert("type".into(), <$ty as $crate::avro::AvroType>::schema_json(named));
                        if let Some(default) = <$ty as $crate::avro::AvroType>::field_default() {
                            field.insert("default".into(), default);
                        }
                        field.insert("doc".into(), serde_json::json!($crate::avro::doc_text(&[$($fdoc),*])));
                        fields.push(serde_json::Value::Object(field));
                    )*
                    serde_json::json!({
                        "type": "record",
                        "name": name,
                        "namespace": namespace,
                        "doc": $crate::avro::doc_text(&[$($doc),*]),
                        "fields": fields,
                    })
                })
            }

            fn to_avro(&self) -> Result<apache_avro::types::Value, $crate::SchemaError> {
                Ok(apache_avro::types::Value::Record(vec![
                    $((stringify!($field).to_string(), $crate::avro::AvroType::to_avro(&self.$field)?),)*
                ]))
            }

            fn from_avro(value: apache_avro::types::Value) -> Result<Self, $crate::SchemaError> {
                match value {
                    #[allow(unused_mut, unused_variables)]
                    apache_avro::types::Value::Record(mut fields) => Ok($name {
                        $($field: $crate::avro::take_field::<$ty>(&mut fields, stringify!($field))?,)*
                    }),
                    other => Err($crate::SchemaError::ValueMismatch {
                        expected: $full.to_string(),
                        found: format!("{other:?}"),
                    }),
                }
            }
        }
    };
}

/// Declares an Avro enum as a Rust enum whose variants serialize as the Avro symbols.
#[macro_export]
macro_rules! avro_enum {
    (
        $(#[doc = $doc:literal])*
        $vis:vis enum $name:ident as $full:literal {
            $( $(#[doc = $vdoc:literal])* $variant:ident = $symbol:literal ),+ $(,)?
        }
    ) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        $vis enum $name {
            $( $(#[doc = $vdoc])* #[serde(rename = $symbol)] $variant, )+
        }

        impl $name {
            /// Every symbol, in schema order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The Avro symbol of this variant.
            pub fn symbol(self) -> &'static str {
                match self { $($name::$variant => $symbol,)+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.symbol())
            }
        }

        impl $crate::avro::AvroType for $name {
            fn schema_json(named: &mut std::collections::BTreeSet<String>) -> serde_json::Value {
                $crate::avro::named_schema(named, $full, |_| {
                    let (name, namespace) = $crate::avro::split_name($full);
                    serde_json::json!({
                        "type": "enum",
                        "name": name,
                        "namespace": namespace,
                        "doc": $crate::avro::doc_text(&[$($doc),*]),
                        "symbols": [$($symbol),+],
                    })
                })
            }

            fn to_avro(&self) -> Result<apache_avro::types::Value, $crate::SchemaError> {
                let index = Self::ALL.iter().position(|v| v == self).unwrap_or_default();
                Ok(apache_avro::types::Value::Enum(index as u32, self.symbol().to_string()))
            }

            fn from_avro(value: apache_avro::types::Value) -> Result<Self, $crate::SchemaError> {
                match value {
                    apache_avro::types::Value::Enum(_, symbol) | apache_avro::types::Value::String(symbol) => {
                        match symbol.as_str() {
                            $($symbol => Ok($name::$variant),)+
                            _ => Err($crate::SchemaError::UnknownSymbol { name: $full.to_string(), symbol }),
                        }
                    }
                    other => Err($crate::SchemaError::ValueMismatch { expected: $full.to_string(), found: format!("{other:?}") }),
                }
            }
        }
    };
}

/// Declares an Avro union of records as a Rust enum with one variant per branch, in order.
#[macro_export]
macro_rules! avro_union {
    (
        $(#[doc = $doc:literal])*
        $vis:vis enum $name:ident {
            $( $(#[doc = $vdoc:literal])* $variant:ident($ty:ty) ),+ $(,)?
        }
    ) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(tag = "type")]
        $vis enum $name {
            $( $(#[doc = $vdoc])* $variant($ty), )+
        }

        impl $crate::avro::AvroType for $name {
            fn schema_json(named: &mut std::collections::BTreeSet<String>) -> serde_json::Value {
                serde_json::json!([$(<$ty as $crate::avro::AvroType>::schema_json(named)),+])
            }

            fn to_avro(&self) -> Result<apache_avro::types::Value, $crate::SchemaError> {
                let mut index: u32 = 0;
                $(
                    #[allow(irrefutable_let_patterns)]
                    if let $name::$variant(inner) = self {
                        return Ok(apache_avro::types::Value::Union(index, Box::new($crate::avro::AvroType::to_avro(inner)?)));
                    }
                    index += 1;
                )+
                unreachable!("every variant of {} is handled (index {index})", stringify!($name))
            }

            fn from_avro(value: apache_avro::types::Value) -> Result<Self, $crate::SchemaError> {
                let apache_avro::types::Value::Union(branch, inner) = value else {
                    return Err($crate::SchemaError::ValueMismatch { expected: stringify!($name).to_string(), found: format!("{value:?}") });
                };
                // The codec tags records with the writer's name: match branches by name.
                if let apache_avro::types::Value::Record(fields) = &*inner {
                    if let Some((_, apache_avro::types::Value::String(name))) =
                        fields.iter().find(|(field, _)| field == $crate::avro::RECORD_NAME_FIELD)
                    {
                        $(
                            if name == <$ty as $crate::avro::AvroNamed>::AVRO_NAME {
                                return Ok($name::$variant(<$ty as $crate::avro::AvroType>::from_avro(*inner)?));
                            }
                        )+
                        return Err($crate::SchemaError::UnknownSymbol { name: stringify!($name).to_string(), symbol: name.clone() });
                    }
                }
                let mut index: u32 = 0;
                $(
                    if branch == index {
                        return Ok($name::$variant(<$ty as $crate::avro::AvroType>::from_avro(*inner)?));
                    }
                    index += 1;
                )+
                Err($crate::SchemaError::ValueMismatch { expected: format!("{} branch < {index}", stringify!($name)), found: format!("branch {branch}") })
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_uses_minimal_twos_complement_bytes() {
        assert_eq!(mantissa_bytes(0), [0x00]);
        assert_eq!(mantissa_bytes(127), [0x7f]);
        assert_eq!(mantissa_bytes(128), [0x00, 0x80]);
        assert_eq!(mantissa_bytes(-1), [0xff]);
        assert_eq!(mantissa_bytes(-128), [0x80]);
        assert_eq!(mantissa_bytes(-129), [0xff, 0x7f]);
    }

    #[test]
    fn money_round_trips_at_scale_two_and_refuses_precision_loss() {
        for minor in [0i64, 1, -1, 99, 12_345, -12_345, 999_999_999_999_999_999, -999_999_999_999_999_999] {
            let amount = Decimal::new(minor, 2);
            let back = Decimal::from_avro(amount.to_avro().unwrap()).unwrap();
            assert_eq!(back, amount);
            assert_eq!(back.scale(), 2);
        }
        assert_eq!(Decimal::from_avro(Decimal::new(5, 0).to_avro().unwrap()).unwrap().to_string(), "5.00");
        assert!(matches!(Decimal::new(1_001, 3).to_avro(), Err(SchemaError::InvalidMoney(_))));
        assert!(Decimal::new(1_000, 3).to_avro().is_ok(), "1.000 is exactly 1.00");
        assert!(matches!(Decimal::new(1_000_000_000_000_000_000, 2).to_avro(), Err(SchemaError::InvalidMoney(_))));
    }

    #[test]
    fn dates_convert_both_ways() {
        assert_eq!(Date::from_ymd(1970, 1, 1), Some(Date(0)));
        assert_eq!(Date::from_ymd(2000, 3, 1), Some(Date(11_017)));
        assert_eq!(Date(-1).to_string(), "1969-12-31");
        assert_eq!("2024-02-29".parse::<Date>().unwrap().to_string(), "2024-02-29");
        for bad in ["2023-02-29", "2024-13-01", "24-01-01", "2024-1-1", "x"] {
            assert!(bad.parse::<Date>().is_err(), "{bad}");
        }
        for days in [-800_000, -1, 0, 1, 19_000, 2_000_000] {
            let (y, m, d) = Date(days).ymd();
            assert_eq!(Date::from_ymd(y, m, d), Some(Date(days)));
        }
    }
}
