//! The registry's state as a pure function of the `_schemas` records read so far: subjects and
//! their versions, schemas by id, compatibility levels. No I/O here; `log.rs` feeds records in
//! and the API reads.
//!
//! When two registry instances race, the log decides: records apply in offset order and the
//! first one to bind an id or a (subject, version) wins; a later record that contradicts it is
//! rejected, identically on every instance and on every replay.

use std::collections::{BTreeMap, HashMap};

use apache_avro::Schema;

use crate::compatibility::{self, CompatibilityLevel};
use crate::record::{ConfigValue, RecordKey, SchemaValue};
use crate::RegistryError;

/// A schema from a request, parsed and reduced to the identity used to deduplicate it.
pub(crate) struct ParsedSchema {
    /// The text as sent.
    pub(crate) text: String,
    /// Identity: two schemas with the same identity get the same id. This is the full JSON form
    /// of the parsed schema (whitespace and attribute order normalized away), not the Avro
    /// "parsing canonical form", which drops defaults and logical types: with it, adding a
    /// default or a `timestamp-millis` would silently return the old schema's id.
    pub(crate) identity: String,
    /// The parsed schema, for compatibility checks.
    pub(crate) schema: Schema,
}

impl ParsedSchema {
    /// Parses Avro schema text; a parse failure is Confluent's 42201.
    pub(crate) fn parse(text: &str) -> Result<ParsedSchema, RegistryError> {
        if text.trim().is_empty() {
            return Err(RegistryError::InvalidSchema("empty schema".to_string()));
        }
        let schema = Schema::parse_str(text)
            .map_err(|error| RegistryError::InvalidSchema(format!("{text}: {error}")))?;
        let identity = serde_json::to_string(&schema)
            .map_err(|error| RegistryError::InvalidSchema(format!("{text}: {error}")))?;
        Ok(ParsedSchema { text: text.to_string(), identity, schema })
    }
}

/// A version path segment: a number, or `latest` (also spelled `-1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VersionSpec {
    /// The highest version (among the visible ones).
    Latest,
    /// A specific version.
    Number(u32),
}

impl VersionSpec {
    /// Parses a version segment; anything else is Confluent's 42202.
    pub(crate) fn parse(text: &str) -> Result<VersionSpec, RegistryError> {
        if text == "latest" || text == "-1" {
            return Ok(VersionSpec::Latest);
        }
        match text.parse::<u32>() {
            Ok(version) if version >= 1 && version <= i32::MAX as u32 => Ok(VersionSpec::Number(version)),
            _ => Err(RegistryError::InvalidVersion(text.to_string())),
        }
    }
}

/// One version of one subject, as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SubjectVersion {
    pub(crate) subject: String,
    pub(crate) version: u32,
    pub(crate) id: u32,
    pub(crate) schema: String,
}

/// What registering a schema under a subject amounts to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Registration {
    /// The subject already has this schema as a live version: answer with its id, write nothing.
    Existing(u32),
    /// Write this record.
    New(SchemaValue),
}

/// The outcome of applying one record.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Applied {
    /// The record changed (or confirmed) the state.
    Accepted,
    /// The record contradicts an earlier one (a lost race between instances) and is ignored.
    Rejected(String),
    /// Not a record this registry acts on, or not readable.
    Ignored(String),
}

#[derive(Debug, Clone, Copy)]
struct VersionEntry {
    id: u32,
    deleted: bool,
}

struct StoredSchema {
    text: String,
    identity: String,
    schema: Schema,
}

/// Subjects, schemas and levels, rebuilt from `_schemas`.
#[derive(Default)]
pub(crate) struct State {
    subjects: BTreeMap<String, BTreeMap<u32, VersionEntry>>,
    schemas: BTreeMap<u32, StoredSchema>,
    ids_by_identity: HashMap<String, u32>,
    /// The highest id ever accepted, so a new id never reuses one, even one since deleted.
    max_id: u32,
    global_level: Option<CompatibilityLevel>,
    subject_levels: BTreeMap<String, CompatibilityLevel>,
}

impl State {
    /// Applies one `_schemas` record (`value` `None` = tombstone).
    pub(crate) fn apply(&mut self, key: &[u8], value: Option<&[u8]>) -> Applied {
        match RecordKey::parse(key) {
            RecordKey::Schema { subject, version } => match value {
                None => self.remove_version(&subject, version),
                Some(bytes) => match serde_json::from_slice::<SchemaValue>(bytes) {
                    Ok(value) if value.subject == subject && value.version == version => self.put_version(value),
                    Ok(_) => Applied::Ignored("value does not match its key".to_string()),
                    Err(error) => Applied::Ignored(format!("unreadable SCHEMA value: {error}")),
                },
            },
            RecordKey::Config { subject } => {
                let level = match value {
                    None => None,
                    Some(bytes) => {
                        let parsed = serde_json::from_slice::<ConfigValue>(bytes)
                            .map_err(|error| error.to_string())
                            .and_then(|config| config.compatibility_level.parse().map_err(|error: RegistryError| error.to_string()));
                        match parsed {
                            Ok(level) => Some(level),
                            Err(error) => return Applied::Ignored(format!("unreadable CONFIG value: {error}")),
                        }
                    }
                };
                match (subject, level) {
                    (None, level) => self.global_level = level,
                    (Some(subject), Some(level)) => {
                        self.subject_levels.insert(subject, level);
                    }
                    (Some(subject), None) => {
                        self.subject_levels.remove(&subject);
                    }
                }
                Applied::Accepted
            }
            RecordKey::Other => Applied::Ignored("key type not used by this registry".to_string()),
        }
    }

    fn put_version(&mut self, value: SchemaValue) -> Applied {
        if value.schema_type.as_deref().is_some_and(|kind| kind != "AVRO") {
            return Applied::Ignored(format!("schema type {:?} is not supported", value.schema_type));
        }
        let parsed = match ParsedSchema::parse(&value.schema) {
            Ok(parsed) => parsed,
            Err(error) => return Applied::Ignored(error.to_string()),
        };
        if let Some(stored) = self.schemas.get(&value.id) {
            if stored.identity != parsed.identity {
                return Applied::Rejected(format!("id {} is already bound to another schema", value.id));
            }
        }
        let versions = self.subjects.entry(value.subject.clone()).or_default();
        if let Some(existing) = versions.get(&value.version) {
            if existing.id != value.id {
                return Applied::Rejected(format!(
                    "version {} of subject '{}' already has id {}",
                    value.version, value.subject, existing.id
                ));
            }
        }
        versions.insert(value.version, VersionEntry { id: value.id, deleted: value.deleted });
        self.ids_by_identity.entry(parsed.identity.clone()).or_insert(value.id);
        self.schemas
            .entry(value.id)
            .or_insert(StoredSchema { text: parsed.text, identity: parsed.identity, schema: parsed.schema });
        self.max_id = self.max_id.max(value.id);
        Applied::Accepted
    }

    fn remove_version(&mut self, subject: &str, version: u32) -> Applied {
        let Some(versions) = self.subjects.get_mut(subject) else {
            return Applied::Accepted;
        };
        let Some(removed) = versions.remove(&version) else {
            return Applied::Accepted;
        };
        if versions.is_empty() {
            self.subjects.remove(subject);
        }
        let still_used = self.subjects.values().flat_map(|versions| versions.values()).any(|entry| entry.id == removed.id);
        if !still_used {
            if let Some(stored) = self.schemas.remove(&removed.id) {
                if self.ids_by_identity.get(&stored.identity) == Some(&removed.id) {
                    self.ids_by_identity.remove(&stored.identity);
                }
            }
        }
        Applied::Accepted
    }

    /// Subject names, sorted; soft-deleted subjects only with `include_deleted`.
    pub(crate) fn subjects(&self, include_deleted: bool) -> Vec<String> {
        self.subjects
            .iter()
            .filter(|(_, versions)| include_deleted || versions.values().any(|entry| !entry.deleted))
            .map(|(subject, _)| subject.clone())
            .collect()
    }

    /// A subject's versions, ascending; 40401 when there are none to show.
    pub(crate) fn versions(&self, subject: &str, include_deleted: bool) -> Result<Vec<u32>, RegistryError> {
        let versions: Vec<u32> = self
            .subjects
            .get(subject)
            .into_iter()
            .flat_map(|versions| versions.iter())
            .filter(|(_, entry)| include_deleted || !entry.deleted)
            .map(|(version, _)| *version)
            .collect();
        if versions.is_empty() {
            return Err(RegistryError::SubjectNotFound(subject.to_string()));
        }
        Ok(versions)
    }

    /// One version of a subject (40401 / 40402 when missing or soft-deleted without `include_deleted`).
    pub(crate) fn subject_version(
        &self,
        subject: &str,
        spec: VersionSpec,
        include_deleted: bool,
    ) -> Result<SubjectVersion, RegistryError> {
        let versions = self.versions(subject, include_deleted)?;
        let version = match spec {
            VersionSpec::Latest => versions.last().copied(),
            VersionSpec::Number(number) => versions.contains(&number).then_some(number),
        }
        .ok_or_else(|| RegistryError::VersionNotFound {
            subject: subject.to_string(),
            version: match spec {
                VersionSpec::Latest => "latest".to_string(),
                VersionSpec::Number(number) => number.to_string(),
            },
        })?;
        self.describe(subject, version)
            .ok_or_else(|| RegistryError::SchemaNotFound(format!("subject '{subject}' version {version}")))
    }

    fn describe(&self, subject: &str, version: u32) -> Option<SubjectVersion> {
        let entry = self.subjects.get(subject)?.get(&version)?;
        let stored = self.schemas.get(&entry.id)?;
        Some(SubjectVersion { subject: subject.to_string(), version, id: entry.id, schema: stored.text.clone() })
    }

    /// Whether the version exists and is soft-deleted (`Some(true)`), live (`Some(false)`) or absent.
    pub(crate) fn version_deleted(&self, subject: &str, version: u32) -> Option<bool> {
        self.subjects.get(subject)?.get(&version).map(|entry| entry.deleted)
    }

    /// Whether the subject has any version at all, soft-deleted or not.
    pub(crate) fn subject_known(&self, subject: &str) -> bool {
        self.subjects.contains_key(subject)
    }

    /// The record that states this version as it is now.
    pub(crate) fn schema_value(&self, subject: &str, version: u32) -> Option<SchemaValue> {
        let entry = self.subjects.get(subject)?.get(&version)?;
        let stored = self.schemas.get(&entry.id)?;
        Some(SchemaValue {
            subject: subject.to_string(),
            version,
            id: entry.id,
            schema: stored.text.clone(),
            deleted: entry.deleted,
            schema_type: None,
        })
    }

    /// Whether the state holds exactly what `value` says (used to confirm our own writes won).
    pub(crate) fn holds(&self, value: &SchemaValue) -> bool {
        let Some(entry) = self.subjects.get(&value.subject).and_then(|versions| versions.get(&value.version)) else {
            return false;
        };
        let same_schema = match (self.schemas.get(&value.id), ParsedSchema::parse(&value.schema)) {
            (Some(stored), Ok(parsed)) => stored.identity == parsed.identity,
            _ => false,
        };
        entry.id == value.id && entry.deleted == value.deleted && same_schema
    }

    /// The text of a schema by id (soft-deleted versions still resolve, so old data stays readable).
    pub(crate) fn schema_text(&self, id: u32) -> Option<&str> {
        self.schemas.get(&id).map(|stored| stored.text.as_str())
    }

    /// (subject, version) pairs that use an id, sorted.
    pub(crate) fn id_versions(&self, id: u32, include_deleted: bool) -> Vec<(String, u32)> {
        self.subjects
            .iter()
            .flat_map(|(subject, versions)| {
                versions
                    .iter()
                    .filter(move |(_, entry)| entry.id == id && (include_deleted || !entry.deleted))
                    .map(move |(version, _)| (subject.clone(), *version))
            })
            .collect()
    }

    /// The version of `subject` that holds this schema (`POST /subjects/{s}`): 40401 for an
    /// unknown subject, 40403 when the subject does not have this schema.
    pub(crate) fn lookup(
        &self,
        subject: &str,
        parsed: &ParsedSchema,
        include_deleted: bool,
    ) -> Result<SubjectVersion, RegistryError> {
        let versions = self.versions(subject, include_deleted)?;
        versions
            .iter()
            .rev()
            .filter_map(|version| {
                let entry = self.subjects.get(subject)?.get(version)?;
                let stored = self.schemas.get(&entry.id)?;
                (stored.identity == parsed.identity).then(|| self.describe(subject, *version)).flatten()
            })
            .next()
            .ok_or_else(|| RegistryError::SchemaNotFound(format!("the schema is not registered under subject '{subject}'")))
    }

    /// The global level, defaulting to BACKWARD.
    pub(crate) fn global_level(&self) -> CompatibilityLevel {
        self.global_level.unwrap_or_default()
    }

    /// The subject's own level, if it has one.
    pub(crate) fn subject_level(&self, subject: &str) -> Option<CompatibilityLevel> {
        self.subject_levels.get(subject).copied()
    }

    /// The level that applies to a subject: its own, else the global one.
    pub(crate) fn effective_level(&self, subject: &str) -> CompatibilityLevel {
        self.subject_level(subject).unwrap_or_else(|| self.global_level())
    }

    /// Checks a schema against a subject's live versions under `level`: the latest one, or all of
    /// them for a transitive level. Returns the failures; empty means compatible.
    pub(crate) fn check_against_subject(&self, subject: &str, level: CompatibilityLevel, parsed: &ParsedSchema) -> Vec<String> {
        let live: Vec<(u32, &Schema)> = self
            .subjects
            .get(subject)
            .into_iter()
            .flat_map(|versions| versions.iter())
            .filter(|(_, entry)| !entry.deleted)
            .filter_map(|(version, entry)| self.schemas.get(&entry.id).map(|stored| (*version, &stored.schema)))
            .collect();
        let against = if level.transitive() { &live[..] } else { &live[live.len().saturating_sub(1)..] };
        compatibility::check(level, &parsed.schema, against)
    }

    /// Checks a schema against one version under the direction(s) of `level`.
    pub(crate) fn check_against_version(
        &self,
        subject: &str,
        spec: VersionSpec,
        level: CompatibilityLevel,
        parsed: &ParsedSchema,
    ) -> Result<Vec<String>, RegistryError> {
        let target = self.subject_version(subject, spec, false)?;
        let stored = self
            .schemas
            .get(&target.id)
            .ok_or_else(|| RegistryError::SchemaNotFound(target.id.to_string()))?;
        Ok(compatibility::check(level, &parsed.schema, &[(target.version, &stored.schema)]))
    }

    /// Decides what registering `parsed` under `subject` means: the existing id if the subject
    /// has it live, a 409 if it breaks the subject's level, else the record to write (reusing the
    /// schema's id from any subject, or the next free one).
    pub(crate) fn plan_registration(&self, subject: &str, parsed: &ParsedSchema) -> Result<Registration, RegistryError> {
        if let Ok(existing) = self.lookup(subject, parsed, false) {
            return Ok(Registration::Existing(existing.id));
        }
        let messages = self.check_against_subject(subject, self.effective_level(subject), parsed);
        if !messages.is_empty() {
            return Err(RegistryError::Incompatible { subject: subject.to_string(), messages });
        }
        let id = match self.ids_by_identity.get(&parsed.identity) {
            Some(id) => *id,
            None => self.max_id.checked_add(1).ok_or_else(|| RegistryError::InvalidSchema("schema ids exhausted".to_string()))?,
        };
        let version = self
            .subjects
            .get(subject)
            .and_then(|versions| versions.keys().next_back().copied())
            .unwrap_or(0)
            + 1;
        Ok(Registration::New(SchemaValue {
            subject: subject.to_string(),
            version,
            id,
            schema: parsed.text.clone(),
            deleted: false,
            schema_type: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}"#;
    const V2: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"b","type":"string","default":""}]}"#;

    fn put(state: &mut State, value: &SchemaValue) -> Applied {
        let key = RecordKey::Schema { subject: value.subject.clone(), version: value.version };
        state.apply(&key.to_bytes(), Some(&serde_json::to_vec(value).unwrap()))
    }

    fn register(state: &mut State, subject: &str, text: &str) -> u32 {
        match state.plan_registration(subject, &ParsedSchema::parse(text).unwrap()).unwrap() {
            Registration::Existing(id) => id,
            Registration::New(value) => {
                assert_eq!(put(state, &value), Applied::Accepted);
                value.id
            }
        }
    }

    #[test]
    fn ids_are_shared_across_subjects_and_stable() {
        let mut state = State::default();
        let id = register(&mut state, "a", V1);
        // Same schema, different whitespace and attribute order.
        let respelled = r#"{ "name":"R", "type":"record", "fields":[{"type":"int","name":"a"}] }"#;
        assert_eq!(register(&mut state, "a", respelled), id);
        assert_eq!(register(&mut state, "b", V1), id);
        let id2 = register(&mut state, "a", V2);
        assert_ne!(id2, id);
        assert_eq!(state.versions("a", false).unwrap(), vec![1, 2]);
        assert_eq!(state.id_versions(id, false), vec![("a".to_string(), 1), ("b".to_string(), 1)]);
    }

    #[test]
    fn defaults_and_logical_types_are_part_of_identity() {
        let plain = ParsedSchema::parse(r#"{"type":"long"}"#).unwrap();
        let timestamp = ParsedSchema::parse(r#"{"type":"long","logicalType":"timestamp-millis"}"#).unwrap();
        assert_ne!(plain.identity, timestamp.identity);
    }

    #[test]
    fn the_first_record_to_bind_an_id_or_version_wins() {
        let mut state = State::default();
        let first = SchemaValue { subject: "s".into(), version: 1, id: 1, schema: V1.into(), deleted: false, schema_type: None };
        assert_eq!(put(&mut state, &first), Applied::Accepted);
        // Another instance handed out the same id for a different schema under another subject.
        let same_id = SchemaValue { subject: "t".into(), id: 1, schema: V2.into(), ..first.clone() };
        assert!(matches!(put(&mut state, &same_id), Applied::Rejected(_)));
        assert!(!state.holds(&same_id));
        // ... or the same version of the same subject with another id.
        let same_version = SchemaValue { id: 2, schema: V2.into(), ..first.clone() };
        assert!(matches!(put(&mut state, &same_version), Applied::Rejected(_)));
        assert!(state.holds(&first));
        // A soft delete of the winner is fine.
        let deleted = SchemaValue { deleted: true, ..first.clone() };
        assert_eq!(put(&mut state, &deleted), Applied::Accepted);
        assert!(state.holds(&deleted));
    }

    #[test]
    fn tombstones_free_the_schema_but_never_reuse_its_id() {
        let mut state = State::default();
        let id = register(&mut state, "s", V1);
        let key = RecordKey::Schema { subject: "s".into(), version: 1 };
        assert_eq!(state.apply(&key.to_bytes(), None), Applied::Accepted);
        assert!(state.schema_text(id).is_none());
        assert!(!state.subject_known("s"));
        assert_eq!(register(&mut state, "s", V1), id + 1);
    }

    #[test]
    fn versions_parse_like_confluent() {
        assert_eq!(VersionSpec::parse("latest").unwrap(), VersionSpec::Latest);
        assert_eq!(VersionSpec::parse("-1").unwrap(), VersionSpec::Latest);
        assert_eq!(VersionSpec::parse("3").unwrap(), VersionSpec::Number(3));
        for bad in ["abc", "0", "-2", "2147483648", ""] {
            assert!(matches!(VersionSpec::parse(bad), Err(RegistryError::InvalidVersion(_))), "{bad}");
        }
    }

    #[test]
    fn config_records_set_and_clear_levels() {
        let mut state = State::default();
        let global = RecordKey::Config { subject: None }.to_bytes();
        let subject = RecordKey::Config { subject: Some("s".into()) }.to_bytes();
        state.apply(&global, Some(br#"{"compatibilityLevel":"FULL"}"#));
        state.apply(&subject, Some(br#"{"compatibilityLevel":"NONE"}"#));
        assert_eq!(state.effective_level("s"), CompatibilityLevel::None);
        assert_eq!(state.effective_level("other"), CompatibilityLevel::Full);
        state.apply(&subject, None);
        state.apply(&global, None);
        assert_eq!(state.effective_level("s"), CompatibilityLevel::Backward);
        assert!(matches!(state.apply(&global, Some(b"{}")), Applied::Ignored(_)));
    }
}
