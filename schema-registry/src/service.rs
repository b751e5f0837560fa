//! The registry's operations: reads from [`State`], writes through the `_schemas` topic.
//!
//! A write is: take this instance's write lock, catch up with the topic (other instances may
//! have written), decide from the state, append, wait until the tailer has applied our record,
//! and confirm the state now holds it. If another instance's record for the same id or version
//! got in first, ours was rejected on apply: repair the key (so compaction keeps the winner)
//! and try again from the new state.

use std::sync::{Arc, PoisonError, RwLock};

use crate::compatibility::CompatibilityLevel;
use crate::log::SchemaLog;
use crate::record::{ConfigValue, RecordKey, SchemaValue};
use crate::state::{ParsedSchema, Registration, State, VersionSpec};
use crate::RegistryError;

/// How often a registration is retried after losing a race with another instance.
const REGISTER_ATTEMPTS_MAX: usize = 8;

/// The registry behind the HTTP API.
pub(crate) struct Core {
    state: Arc<RwLock<State>>,
    log: SchemaLog,
    /// Serializes this instance's writes; other instances are handled by the log (see module doc).
    write_lock: tokio::sync::Mutex<()>,
}

impl Core {
    pub(crate) fn new(state: Arc<RwLock<State>>, log: SchemaLog) -> Core {
        Core { state, log, write_lock: tokio::sync::Mutex::new(()) }
    }

    /// Reads the current state.
    pub(crate) fn read<T>(&self, read: impl FnOnce(&State) -> T) -> T {
        read(&self.state.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Reads the state; if the answer is "not found", catches up with the topic (another instance
    /// may just have written it) and reads again. If the broker cannot be reached to catch up,
    /// the first answer stands: reads keep working while the broker is down.
    pub(crate) async fn read_fresh<T>(&self, read: impl Fn(&State) -> Result<T, RegistryError>) -> Result<T, RegistryError> {
        match self.read(&read) {
            Err(error) if error.is_not_found() => match self.log.catch_up().await {
                Ok(()) => self.read(&read),
                Err(catch_up) => {
                    tracing::warn!(error = %catch_up, "could not catch up with the schemas topic before answering");
                    Err(error)
                }
            },
            answer => answer,
        }
    }

    /// Registers a schema under a subject and returns its id.
    pub(crate) async fn register(&self, subject: &str, parsed: &ParsedSchema) -> Result<u32, RegistryError> {
        let _write = self.write_lock.lock().await;
        for _ in 0..REGISTER_ATTEMPTS_MAX {
            self.log.catch_up().await?;
            let value = match self.read(|state| state.plan_registration(subject, parsed))? {
                Registration::Existing(id) => return Ok(id),
                Registration::New(value) => value,
            };
            let offset = self.append_schema(&value).await?;
            self.log.wait_applied(offset + 1).await?;
            if self.read(|state| state.holds(&value)) {
                return Ok(value.id);
            }
            tracing::info!(subject, version = value.version, id = value.id, "lost a registration race with another registry instance, retrying");
            self.repair(subject, value.version).await?;
        }
        Err(RegistryError::StoreTimeout(format!(
            "could not register under '{subject}' after {REGISTER_ATTEMPTS_MAX} attempts: other registry instances kept writing first"
        )))
    }

    /// Our record for (subject, version) was rejected, but compaction keeps the last value per
    /// key: restate the winning value, or remove the key if nothing won it.
    async fn repair(&self, subject: &str, version: u32) -> Result<(), RegistryError> {
        let key = RecordKey::Schema { subject: subject.to_string(), version };
        let offset = match self.read(|state| state.schema_value(subject, version)) {
            Some(winner) => self.append_schema(&winner).await?,
            None => self.log.append(&key, None).await?,
        };
        self.log.wait_applied(offset + 1).await
    }

    /// Soft-deletes every live version of a subject, or with `permanent` removes a subject whose
    /// versions are all soft-deleted. Returns the versions deleted.
    pub(crate) async fn delete_subject(&self, subject: &str, permanent: bool) -> Result<Vec<u32>, RegistryError> {
        let _write = self.write_lock.lock().await;
        self.log.catch_up().await?;
        let (all, live) = self.read(|state| (state.versions(subject, true), state.versions(subject, false)));
        let all = all?;
        let mut last_offset = None;
        let deleted = if permanent {
            if live.is_ok() {
                return Err(RegistryError::SubjectNotSoftDeleted(subject.to_string()));
            }
            for version in &all {
                let key = RecordKey::Schema { subject: subject.to_string(), version: *version };
                last_offset = Some(self.log.append(&key, None).await?);
            }
            if self.read(|state| state.subject_level(subject)).is_some() {
                let key = RecordKey::Config { subject: Some(subject.to_string()) };
                last_offset = Some(self.log.append(&key, None).await?);
            }
            all
        } else {
            let live = live.map_err(|_| RegistryError::SubjectSoftDeleted(subject.to_string()))?;
            for version in &live {
                last_offset = Some(self.soft_delete(subject, *version).await?);
            }
            live
        };
        if let Some(offset) = last_offset {
            self.log.wait_applied(offset + 1).await?;
        }
        Ok(deleted)
    }

    /// Soft-deletes one live version, or with `permanent` removes a soft-deleted one. Returns the version.
    pub(crate) async fn delete_version(&self, subject: &str, spec: VersionSpec, permanent: bool) -> Result<u32, RegistryError> {
        let _write = self.write_lock.lock().await;
        self.log.catch_up().await?;
        // A permanent delete addresses soft-deleted versions, so `latest` then includes them; a
        // numbered version is found either way, to answer "already soft-deleted" precisely.
        let include_deleted = permanent || matches!(spec, VersionSpec::Number(_));
        let version = self.read(|state| state.subject_version(subject, spec, include_deleted))?.version;
        if !permanent && self.read(|state| state.version_deleted(subject, version)) == Some(true) {
            return Err(RegistryError::VersionSoftDeleted { subject: subject.to_string(), version });
        }
        let offset = if permanent {
            if self.read(|state| state.version_deleted(subject, version)) != Some(true) {
                return Err(RegistryError::VersionNotSoftDeleted { subject: subject.to_string(), version });
            }
            self.log.append(&RecordKey::Schema { subject: subject.to_string(), version }, None).await?
        } else {
            self.soft_delete(subject, version).await?
        };
        self.log.wait_applied(offset + 1).await?;
        Ok(version)
    }

    async fn soft_delete(&self, subject: &str, version: u32) -> Result<i64, RegistryError> {
        let value = self
            .read(|state| state.schema_value(subject, version))
            .ok_or_else(|| RegistryError::VersionNotFound { subject: subject.to_string(), version: version.to_string() })?;
        self.append_schema(&SchemaValue { deleted: true, ..value }).await
    }

    /// Sets the global level (`subject` `None`) or a subject's level.
    pub(crate) async fn set_level(&self, subject: Option<&str>, level: CompatibilityLevel) -> Result<(), RegistryError> {
        let _write = self.write_lock.lock().await;
        let key = RecordKey::Config { subject: subject.map(str::to_string) };
        let value = ConfigValue { compatibility_level: level.as_str().to_string() };
        let bytes = serde_json::to_vec(&value).map_err(|error| RegistryError::StoreTimeout(error.to_string()))?;
        let offset = self.log.append(&key, Some(&bytes)).await?;
        self.log.wait_applied(offset + 1).await
    }

    /// Removes the global level (back to BACKWARD) or a subject's level; returns the level removed.
    pub(crate) async fn delete_level(&self, subject: Option<&str>) -> Result<CompatibilityLevel, RegistryError> {
        let _write = self.write_lock.lock().await;
        self.log.catch_up().await?;
        let previous = match subject {
            None => self.read(|state| state.global_level()),
            Some(subject) => self.read(|state| match state.subject_level(subject) {
                Some(level) => Ok(level),
                None if !state.subject_known(subject) => Err(RegistryError::SubjectNotFound(subject.to_string())),
                None => Err(RegistryError::SubjectConfigNotFound(subject.to_string())),
            })?,
        };
        let offset = self.log.append(&RecordKey::Config { subject: subject.map(str::to_string) }, None).await?;
        self.log.wait_applied(offset + 1).await?;
        Ok(previous)
    }

    /// Catches up with the topic (used before answering reads that must see other instances' writes).
    pub(crate) async fn catch_up(&self) -> Result<(), RegistryError> {
        self.log.catch_up().await
    }

    /// Stops reading the topic.
    pub(crate) async fn close(&self) {
        self.log.close().await;
    }

    async fn append_schema(&self, value: &SchemaValue) -> Result<i64, RegistryError> {
        let key = RecordKey::Schema { subject: value.subject.clone(), version: value.version };
        let bytes = serde_json::to_vec(value).map_err(|error| RegistryError::StoreTimeout(error.to_string()))?;
        self.log.append(&key, Some(&bytes)).await
    }
}
