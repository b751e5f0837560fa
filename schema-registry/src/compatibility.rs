//! Compatibility levels and the checks behind them, on top of apache-avro's schema resolution
//! rules (`SchemaCompatibility::can_read(writer, reader)`).

use std::fmt;
use std::str::FromStr;

use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
use apache_avro::Schema;

use crate::RegistryError;

/// A subject's (or the global) compatibility level, named as in Confluent's API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CompatibilityLevel {
    /// No checks.
    None,
    /// The new schema can read data written with the latest version.
    #[default]
    Backward,
    /// The new schema can read data written with every version.
    BackwardTransitive,
    /// The latest version can read data written with the new schema.
    Forward,
    /// Every version can read data written with the new schema.
    ForwardTransitive,
    /// Backward and forward against the latest version.
    Full,
    /// Backward and forward against every version.
    FullTransitive,
}

impl CompatibilityLevel {
    /// Every level, for tests and error messages.
    pub const ALL: [CompatibilityLevel; 7] = [
        CompatibilityLevel::None,
        CompatibilityLevel::Backward,
        CompatibilityLevel::BackwardTransitive,
        CompatibilityLevel::Forward,
        CompatibilityLevel::ForwardTransitive,
        CompatibilityLevel::Full,
        CompatibilityLevel::FullTransitive,
    ];

    /// The Confluent name, e.g. `BACKWARD_TRANSITIVE`.
    pub fn as_str(self) -> &'static str {
        match self {
            CompatibilityLevel::None => "NONE",
            CompatibilityLevel::Backward => "BACKWARD",
            CompatibilityLevel::BackwardTransitive => "BACKWARD_TRANSITIVE",
            CompatibilityLevel::Forward => "FORWARD",
            CompatibilityLevel::ForwardTransitive => "FORWARD_TRANSITIVE",
            CompatibilityLevel::Full => "FULL",
            CompatibilityLevel::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    /// Whether the new schema must read data written with older schemas.
    fn backward(self) -> bool {
        matches!(
            self,
            CompatibilityLevel::Backward
                | CompatibilityLevel::BackwardTransitive
                | CompatibilityLevel::Full
                | CompatibilityLevel::FullTransitive
        )
    }

    /// Whether older schemas must read data written with the new schema.
    fn forward(self) -> bool {
        matches!(
            self,
            CompatibilityLevel::Forward
                | CompatibilityLevel::ForwardTransitive
                | CompatibilityLevel::Full
                | CompatibilityLevel::FullTransitive
        )
    }

    /// Whether the new schema is checked against all versions rather than the latest.
    pub fn transitive(self) -> bool {
        matches!(
            self,
            CompatibilityLevel::BackwardTransitive
                | CompatibilityLevel::ForwardTransitive
                | CompatibilityLevel::FullTransitive
        )
    }
}

impl fmt::Display for CompatibilityLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CompatibilityLevel {
    type Err = RegistryError;

    /// Parses a level name, case-insensitively (Confluent accepts `full` as well as `FULL`).
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        CompatibilityLevel::ALL
            .into_iter()
            .find(|level| level.as_str().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| RegistryError::InvalidCompatibilityLevel(name.to_string()))
    }
}

/// Checks `new` against the given existing versions (already chosen by the caller: the latest
/// one, or all for a transitive level) in the level's direction(s). Returns one message per
/// failed check; empty means compatible.
pub(crate) fn check(level: CompatibilityLevel, new: &Schema, existing: &[(u32, &Schema)]) -> Vec<String> {
    let mut messages = Vec::new();
    for (version, old) in existing {
        if level.backward() {
            if let Some(reason) = incompatibility(old, new) {
                messages.push(format!(
                    "{level}: the new schema cannot read data written with version {version}: {reason}"
                ));
            }
        }
        if level.forward() {
            if let Some(reason) = incompatibility(new, old) {
                messages.push(format!(
                    "{level}: version {version} cannot read data written with the new schema: {reason}"
                ));
            }
        }
    }
    messages
}

/// Why `reader` cannot read every datum written with `writer`, or `None` if it can.
///
/// A partial match (an enum symbol or union branch of the writer the reader lacks) fails some
/// data at read time, so it counts as incompatible, as it does in Confluent's checker.
fn incompatibility(writer: &Schema, reader: &Schema) -> Option<String> {
    match SchemaCompatibility::can_read(writer, reader) {
        Ok(Compatibility::Full) => None,
        Ok(Compatibility::Partial) => Some(
            "only partially compatible: some values (enum symbols or union branches) cannot be read".to_string(),
        ),
        Err(error) => Some(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(fields: &str) -> Schema {
        Schema::parse_str(&format!(r#"{{"type":"record","name":"R","fields":[{fields}]}}"#)).unwrap()
    }

    #[test]
    fn level_names_round_trip_case_insensitively() {
        for level in CompatibilityLevel::ALL {
            assert_eq!(level.as_str().parse::<CompatibilityLevel>().unwrap(), level);
            assert_eq!(level.as_str().to_lowercase().parse::<CompatibilityLevel>().unwrap(), level);
        }
        assert!(matches!("SIDEWAYS".parse::<CompatibilityLevel>(), Err(RegistryError::InvalidCompatibilityLevel(_))));
    }

    #[test]
    fn directions_follow_the_level() {
        let v1 = schema(r#"{"name":"a","type":"int"}"#);
        // Adding a field without default: old data lacks it (backward fails), old readers ignore it (forward ok).
        let v2 = schema(r#"{"name":"a","type":"int"},{"name":"b","type":"string"}"#);
        assert!(!check(CompatibilityLevel::Backward, &v2, &[(1, &v1)]).is_empty());
        assert!(check(CompatibilityLevel::Forward, &v2, &[(1, &v1)]).is_empty());
        assert!(!check(CompatibilityLevel::Full, &v2, &[(1, &v1)]).is_empty());
        assert!(check(CompatibilityLevel::None, &v2, &[(1, &v1)]).is_empty());
    }

    #[test]
    fn missing_enum_symbol_is_incompatible() {
        let wide = Schema::parse_str(r#"{"type":"enum","name":"E","symbols":["A","B","C"]}"#).unwrap();
        let narrow = Schema::parse_str(r#"{"type":"enum","name":"E","symbols":["A","B"]}"#).unwrap();
        assert!(incompatibility(&wide, &narrow).is_some());
        assert!(incompatibility(&narrow, &wide).is_none());
    }
}
