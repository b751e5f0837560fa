//! `sluice.toml`: one file of settings named after their Kafka Streams counterparts
//! (`application.id` is `application_id`, ...). Each key has a default and can be overridden
//! by an environment variable `SLUICE__<KEY>` (e.g. `SLUICE__BOOTSTRAP_SERVERS`), then by a
//! command-line flag. Unknown keys, in the file or the environment, are refused.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Prefix of environment overrides.
pub(crate) const ENV_PREFIX: &str = "SLUICE__";

/// Sluice settings. Every field is documented with its default.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct SluiceConfig {
    /// Kafka Streams `application.id`: the consumer group and the prefix of internal topics
    /// (`<application_id>-<store>-changelog`, `<application_id>-<name>-repartition`).
    /// Default `sluice`.
    pub(crate) application_id: String,
    /// Kafka `bootstrap.servers`. Default `127.0.0.1:9092`.
    pub(crate) bootstrap_servers: String,
    /// Kafka `security.protocol` of every client: `PLAINTEXT` (default), `SASL_PLAINTEXT`,
    /// `SASL_SSL` or `SSL` (docs/security.md, the broker).
    pub(crate) security_protocol: Option<String>,
    /// Kafka `sasl.mechanism`. Default `SCRAM-SHA-512`.
    pub(crate) sasl_mechanism: Option<String>,
    /// SASL user: this process's principal (`User:<name>`). No default.
    pub(crate) sasl_username: Option<String>,
    /// SASL password. No default; never logged.
    pub(crate) sasl_password: Option<Secret>,
    /// CA certificate file trusted for TLS (`ssl.ca.location`). No default.
    pub(crate) ssl_ca_location: Option<String>,
    /// SASL user of the operator console's Kafka clients (topic browser, consumer-group lag,
    /// dead-letter replays: `sluice acls --console`), with the same protocol and mechanism.
    /// Default: the process's own principal.
    pub(crate) console_sasl_username: Option<String>,
    /// Its password. Never logged.
    pub(crate) console_sasl_password: Option<Secret>,
    /// Schema Registry base URL. Default `http://127.0.0.1:8081`.
    pub(crate) schema_registry_url: String,
    /// Kafka Streams `state.dir`: where local state lives. Default `.sluice/state`.
    pub(crate) state_dir: PathBuf,
    /// The pipeline definition. Default `topology.toml`.
    pub(crate) topology: PathBuf,
    /// Address of the embedded Schema Registry (`sluice registry`, `sluice dev`). Default
    /// `127.0.0.1:8081`.
    pub(crate) registry_listen: String,
    /// Address `sluice run` serves Prometheus metrics on (`GET /metrics`). Default
    /// `127.0.0.1:9464`.
    pub(crate) metrics_listen: String,
    /// Kafka Streams `application.server`: `http://host:port` where `sluice run` serves
    /// interactive queries over its stores (and answers queries routed from other instances).
    /// No default: not served.
    pub(crate) application_server: Option<String>,
    /// Kafka `group.instance.id`: set it (stable across restarts of one instance, unique per
    /// instance) for static membership (KIP-345). Default: none, members join dynamically as
    /// in Kafka Streams; the instance is then named `<application_id>-<hash of the state_dir
    /// path>` in interactive-query discovery.
    pub(crate) group_instance_id: Option<String>,
    /// Kafka Streams `num.stream.threads`: stream threads per instance. Default 1.
    pub(crate) num_stream_threads: usize,
    /// Kafka Streams `commit.interval.ms`: how often tasks commit. Default 100.
    pub(crate) commit_interval_ms: u64,
    /// Kafka Streams `deserialization.exception.handler`: `dlq`, `log_and_continue` or `fail`.
    /// Default `dlq`.
    pub(crate) deserialization_exception_handler: sluice_streams::ErrorPolicy,
    /// Kafka Streams `processing.exception.handler` for poison pills: `dlq`,
    /// `log_and_continue` or `fail`. Default `dlq`.
    pub(crate) processing_exception_handler: sluice_streams::ErrorPolicy,
    /// Kafka Streams `max.task.idle.ms`: how long a task with records on some inputs waits
    /// for an empty input that is caught up, so that records are processed in timestamp order
    /// across topics (docs/architecture.md, timestamp synchronization). A task always waits
    /// for records already on the broker; -1 does not even wait for those. Default 0.
    pub(crate) max_task_idle_ms: i64,
    /// Kafka Streams `task.timeout.ms`: how long a task may fail to start (its committed
    /// offsets unreadable) before the instance stops with an error. Default 300000.
    pub(crate) task_timeout_ms: u64,
    /// Kafka Streams `processing.guarantee`: `at_least_once` or `exactly_once_v2`
    /// (docs/guarantees.md). Default `exactly_once_v2`.
    pub(crate) processing_guarantee: sluice_streams::ProcessingGuarantee,
    /// Kafka Streams `num.standby.replicas`: warm copies of each stateful task's stores kept
    /// on other instances, promoted on failover (docs/guarantees.md). Default 0.
    pub(crate) num_standby_replicas: usize,
    /// Kafka `retry.backoff.ms`: the first wait after a retriable failure (registry or broker
    /// unavailable) before the record is retried. Default 100.
    pub(crate) retry_backoff_ms: i64,
    /// Kafka `retry.backoff.max.ms`: waits double up to this. Default 1000.
    pub(crate) retry_backoff_max_ms: i64,
    /// JWT `iss` the ingest API issues and every checker requires. Default `sluice`.
    pub(crate) jwt_issuer: String,
    /// JWT `aud` the ingest API issues and every checker requires. Default `sluice-api`.
    pub(crate) jwt_audience: String,
    /// JWT signing algorithm: `HS256`, `RS256` or `EdDSA`. Default `HS256`.
    pub(crate) jwt_algorithm: String,
    /// `kid` of the current signing key. Default `k1`.
    pub(crate) jwt_kid: String,
    /// HS256 shared secret, at least 32 characters. No default (`sluice dev` generates one
    /// and keeps it in `<state_dir>/../jwt-secret`); never logged.
    pub(crate) jwt_secret: Option<Secret>,
    /// RS256/EdDSA private key (PEM) for issuing tokens. No default.
    pub(crate) jwt_private_key_file: Option<PathBuf>,
    /// RS256/EdDSA public key (PEM) for checking tokens. No default.
    pub(crate) jwt_public_key_file: Option<PathBuf>,
    /// Retired keys still accepted after a rotation, comma-separated `kid=secret` (HS256) or
    /// `kid=/path/public.pem`. Default empty.
    pub(crate) jwt_retired_keys: Secret,
    /// The application's internal key, shared by every `sluice run` and `sluice ingest` of the
    /// application and nobody else: signs commands and internal records, discovery entries
    /// and internal query requests (docs/security.md, signed records). At least 32
    /// characters. No default (`sluice dev` generates one in `<state_dir>/../internal-key`);
    /// never logged.
    pub(crate) internal_key: Option<Secret>,
    /// Id of the current internal key (rotation). Default `i1`.
    pub(crate) internal_key_id: String,
    /// Retired internal keys that still verify, comma-separated `id=secret`. Default empty.
    pub(crate) internal_retired_keys: Secret,
    /// HTTP basic auth of the Schema Registry, `user:password` (Confluent's
    /// `basic.auth.user.info`): the account `sluice registry` lets register, delete and
    /// configure (reads stay open), and the one every Sluice client registers schemas with.
    /// No default (`sluice dev` generates one in `<state_dir>/../registry-user-info`); never
    /// logged.
    pub(crate) schema_registry_user_info: Option<Secret>,
    /// Lifetime of the access tokens the ingest API issues, in seconds. Default 900.
    pub(crate) jwt_access_ttl_s: u64,
    /// Lifetime of the refresh tokens the ingest API issues, in seconds. Default 1209600 (14 days).
    pub(crate) jwt_refresh_ttl_s: u64,
    /// Address the ingest API listens on (`sluice ingest`, `sluice dev`). Default `127.0.0.1:8080`.
    pub(crate) http_listen: String,
    /// Largest request body the ingest API reads, in bytes (413 beyond). Default 65536.
    pub(crate) http_body_limit_bytes: usize,
    /// Longest the ingest API works on one request before answering 503, in ms. Default 10000.
    pub(crate) http_request_timeout_ms: u64,
    /// Requests per second each principal (token subject, or client address when anonymous)
    /// may make on average; 429 with Retry-After beyond. Default 50.
    pub(crate) http_rate_limit_per_s: u32,
    /// Requests a principal may make in a burst above the average rate. Default 100.
    pub(crate) http_rate_limit_burst: u32,
    /// Directory the ingest API writes password reset messages to, one RFC 5322 file each, for
    /// a mail relay to send (`sluice dev`: `.sluice/outbox`). Without it, password reset
    /// answers 503 `reset-unavailable`. Default none.
    pub(crate) password_reset_outbox: Option<PathBuf>,
    /// Lifetime of a password reset token, in seconds. Default 1800.
    pub(crate) password_reset_ttl_s: u64,
}

/// A setting that must never be printed: `Debug` shows `<redacted>`.
#[derive(Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(transparent)]
pub(crate) struct Secret(pub(crate) String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "<empty>" } else { "<redacted>" })
    }
}

impl Default for SluiceConfig {
    fn default() -> Self {
        SluiceConfig {
            application_id: "sluice".to_string(),
            bootstrap_servers: "127.0.0.1:9092".to_string(),
            security_protocol: None,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            ssl_ca_location: None,
            console_sasl_username: None,
            console_sasl_password: None,
            schema_registry_url: "http://127.0.0.1:8081".to_string(),
            state_dir: PathBuf::from(".sluice/state"),
            topology: PathBuf::from("topology.toml"),
            registry_listen: "127.0.0.1:8081".to_string(),
            metrics_listen: "127.0.0.1:9464".to_string(),
            application_server: None,
            group_instance_id: None,
            num_stream_threads: 1,
            commit_interval_ms: 100,
            deserialization_exception_handler: sluice_streams::ErrorPolicy::Dlq,
            processing_exception_handler: sluice_streams::ErrorPolicy::Dlq,
            max_task_idle_ms: 0,
            task_timeout_ms: 300_000,
            retry_backoff_ms: 100,
            processing_guarantee: sluice_streams::ProcessingGuarantee::ExactlyOnceV2,
            num_standby_replicas: 0,
            retry_backoff_max_ms: 1000,
            jwt_issuer: "sluice".to_string(),
            jwt_audience: "sluice-api".to_string(),
            jwt_algorithm: "HS256".to_string(),
            jwt_kid: "k1".to_string(),
            jwt_secret: None,
            jwt_private_key_file: None,
            jwt_public_key_file: None,
            jwt_retired_keys: Secret::default(),
            internal_key: None,
            schema_registry_user_info: None,
            internal_key_id: "i1".to_string(),
            internal_retired_keys: Secret::default(),
            jwt_access_ttl_s: 900,
            jwt_refresh_ttl_s: 1_209_600,
            http_listen: "127.0.0.1:8080".to_string(),
            http_body_limit_bytes: 65_536,
            http_request_timeout_ms: 10_000,
            http_rate_limit_per_s: 50,
            http_rate_limit_burst: 100,
            password_reset_outbox: None,
            password_reset_ttl_s: 1800,
        }
    }
}

/// Why the settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    /// The file exists but could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file or an environment override is invalid (unknown key, wrong type).
    #[error("{origin}: {message}")]
    Invalid {
        /// The file, or "environment".
        origin: String,
        /// What is wrong.
        message: String,
    },
}

impl SluiceConfig {
    /// How this process's Kafka clients connect.
    pub(crate) fn connection(&self) -> sluice_streams::kafka_client::Connection {
        sluice_streams::kafka_client::Connection {
            security_protocol: self.security_protocol.clone(),
            sasl_mechanism: self.sasl_mechanism.clone(),
            sasl_username: self.sasl_username.clone(),
            sasl_password: self.sasl_password.as_ref().map(|s| s.0.clone()),
            ssl_ca_location: self.ssl_ca_location.clone(),
        }
    }

    /// How the operator console's clients connect, when they have a principal of their own.
    pub(crate) fn console_connection(&self) -> Option<sluice_streams::kafka_client::Connection> {
        let user = self.console_sasl_username.clone()?;
        Some(sluice_streams::kafka_client::Connection {
            sasl_username: Some(user),
            sasl_password: self.console_sasl_password.as_ref().map(|s| s.0.clone()),
            ..self.connection()
        })
    }

    /// The registry's basic auth `user:password`, if configured.
    pub(crate) fn registry_user_info(&self) -> Option<&str> {
        self.schema_registry_user_info.as_ref().map(|s| s.0.as_str())
    }

    /// Defaults, then `path` (if it exists; a missing explicit file is an error only when
    /// `required`), then `SLUICE__*` variables from `env`.
    pub(crate) fn load(
        path: &Path,
        required: bool,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<SluiceConfig, ConfigError> {
        let mut table = match std::fs::read_to_string(path) {
            Ok(text) => text.parse::<toml::Table>().map_err(|e| ConfigError::Invalid {
                origin: path.display().to_string(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => toml::Table::new(),
            Err(source) => return Err(ConfigError::Read { path: path.to_path_buf(), source }),
        };
        let file_origin = path.display().to_string();
        SluiceConfig::deserialize(toml::Value::Table(table.clone()))
            .map_err(|e| ConfigError::Invalid { origin: file_origin, message: e.to_string() })?;
        for (name, value) in env {
            let Some(key) = name.strip_prefix(ENV_PREFIX) else { continue };
            let key = key.to_ascii_lowercase();
            // Numbers and booleans keep their type; anything else is a string.
            let parsed = format!("v = {value}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .filter(|v| !v.is_str() && !v.is_table() && !v.is_array())
                .unwrap_or(toml::Value::String(value));
            table.insert(key, parsed);
        }
        SluiceConfig::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Invalid {
            origin: format!("environment ({ENV_PREFIX}* variables)"),
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_then_file_then_env() {
        let dir = std::env::temp_dir().join(format!("sluice-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("sluice.toml");
        std::fs::write(&file, "application_id = \"payments\"\nbootstrap_servers = \"10.0.0.1:9092\"\n").unwrap();
        let config = SluiceConfig::load(&file, true, vars(&[("SLUICE__BOOTSTRAP_SERVERS", "127.0.0.1:1234"), ("OTHER", "x")])).unwrap();
        assert_eq!(config.application_id, "payments");
        assert_eq!(config.bootstrap_servers, "127.0.0.1:1234");
        assert_eq!(config.schema_registry_url, SluiceConfig::default().schema_registry_url);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let missing = Path::new("/nonexistent/sluice.toml");
        let config = SluiceConfig::load(missing, false, vars(&[("SLUICE__JWT_SECRET", "s3cr3t-value-that-must-not-leak!!")])).unwrap();
        assert_eq!(config.jwt_secret.as_ref().map(|s| s.0.as_str()), Some("s3cr3t-value-that-must-not-leak!!"));
        assert!(!format!("{config:?}").contains("s3cr3t"), "{config:?}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let missing = Path::new("/nonexistent/sluice.toml");
        let error = SluiceConfig::load(missing, false, vars(&[("SLUICE__APPLICATON_ID", "typo")])).unwrap_err();
        assert!(error.to_string().contains("applicaton_id"), "{error}");
        assert!(SluiceConfig::load(missing, true, vars(&[])).is_err(), "an explicit missing file is an error");
    }
}
