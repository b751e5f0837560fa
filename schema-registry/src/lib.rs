//! `sluice-registry`: an embedded, Confluent-compatible Schema Registry (Avro only).
//!
//! It serves the Confluent REST API (same paths, payloads, status codes and `error_code`s), so
//! unmodified clients work: schema_registry_converter, confluent-kafka's `SchemaRegistryClient`,
//! AKHQ, Kafdrop. State lives in a compacted `_schemas` topic on the Kafka broker, written in
//! the shape Confluent's registry uses; an instance rebuilds its state by reading that topic
//! from the beginning, so a restarted instance, or a second one on the same broker, serves the
//! same ids.
//!
//! ```no_run
//! # async fn run() -> Result<(), sluice_registry::RegistryError> {
//! use sluice_registry::{Registry, RegistryConfig, WriteCredentials};
//! let config = RegistryConfig {
//!     bootstrap_servers: "127.0.0.1:9092".to_string(),
//!     listen: "127.0.0.1:8081".parse().expect("address"),
//!     topic: "_schemas".to_string(),
//!     write_credentials: Some(WriteCredentials::parse("sluice:a-long-random-password").expect("user:password")),
//!     client_properties: Vec::new(),
//! };
//! let registry = Registry::start(config).await?;
//! println!("schema registry at {}", registry.url());
//! registry.shutdown().await;
//! # Ok(()) }
//! ```

mod api;
mod compatibility;
mod error;
mod log;
mod record;
mod service;
mod state;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use compatibility::CompatibilityLevel;
pub use error::RegistryError;

use service::Core;

/// The topic Confluent's registry (and this one, by default) keeps its state in.
pub const DEFAULT_TOPIC: &str = "_schemas";

/// How long [`Registry::shutdown`] waits for in-flight requests before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Where the registry keeps its state and where it listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    /// Kafka `bootstrap.servers` of the broker holding the topic.
    pub bootstrap_servers: String,
    /// Address to serve HTTP on; port 0 picks a free port (see [`Registry::url`]).
    pub listen: SocketAddr,
    /// The compacted topic holding the registry's state, normally [`DEFAULT_TOPIC`].
    pub topic: String,
    /// The account that may write (register, delete, configure), with HTTP basic auth as
    /// Confluent's registry does; reads stay open. `None`: writes are open too (embedded use
    /// on a trusted loopback only; `sluice registry` never runs so).
    pub write_credentials: Option<WriteCredentials>,
    /// librdkafka properties of the registry's Kafka clients besides `bootstrap.servers`
    /// (`security.protocol`, SASL credentials, TLS trust); empty for a plaintext broker.
    pub client_properties: Vec<(String, String)>,
}

/// The user and password of HTTP basic auth (Confluent's `basic.auth.user.info`,
/// `user:password`). `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct WriteCredentials {
    user: String,
    password: String,
}

impl std::fmt::Debug for WriteCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteCredentials").field("user", &self.user).field("password", &"<redacted>").finish()
    }
}

impl WriteCredentials {
    /// Parses `user:password`; the password must be at least 16 characters.
    pub fn parse(user_info: &str) -> Result<WriteCredentials, String> {
        let (user, password) = user_info.split_once(':').ok_or("schema registry credentials are written `user:password`")?;
        if user.is_empty() || password.len() < 16 {
            return Err("schema registry credentials need a user and a password of at least 16 characters".to_string());
        }
        Ok(WriteCredentials { user: user.to_string(), password: password.to_string() })
    }

    /// Whether an `Authorization` header value carries these credentials (basic auth).
    pub fn admit(&self, authorization: Option<&str>) -> bool {
        use base64::Engine;
        use sha2::{Digest, Sha256};
        let presented = authorization
            .and_then(|value| value.strip_prefix("Basic "))
            .and_then(|encoded| base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok())
            .unwrap_or_default();
        // Compared as digests: the time taken says nothing about how much of the secret matched.
        Sha256::digest(&presented) == Sha256::digest(format!("{}:{}", self.user, self.password).as_bytes())
    }
}

impl Default for RegistryConfig {
    /// A local broker on 9092, Confluent's port 8081 on loopback, topic `_schemas`.
    fn default() -> Self {
        RegistryConfig {
            bootstrap_servers: "127.0.0.1:9092".to_string(),
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8081)),
            topic: DEFAULT_TOPIC.to_string(),
            write_credentials: None,
            client_properties: Vec::new(),
        }
    }
}

/// A running registry: its state caught up with the topic and its HTTP server serving in a
/// tokio task. Dropping it stops the server too, without waiting; prefer [`Registry::shutdown`].
pub struct Registry {
    local_addr: SocketAddr,
    core: Arc<Core>,
    stop: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
}

impl Registry {
    /// Creates the topic if missing, replays it, binds the listener and starts serving.
    ///
    /// Fails with [`RegistryError::Kafka`] or [`RegistryError::StoreTimeout`] when the broker
    /// cannot be reached or the topic cannot be created or read, and with
    /// [`RegistryError::Bind`] when the address is taken.
    pub async fn start(config: RegistryConfig) -> Result<Registry, RegistryError> {
        let state = Arc::new(RwLock::new(state::State::default()));
        let log = log::SchemaLog::open(&config, state.clone()).await?;
        let core = Arc::new(Core::new(state, log));
        let listener = match tokio::net::TcpListener::bind(config.listen).await {
            Ok(listener) => listener,
            Err(source) => {
                core.close().await;
                return Err(RegistryError::Bind { addr: config.listen, source });
            }
        };
        let local_addr = listener.local_addr().map_err(|source| RegistryError::Bind { addr: config.listen, source })?;
        let (stop, mut stop_rx) = watch::channel(false);
        let app = api::router(core.clone(), config.write_credentials.clone());
        let server = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop_rx.wait_for(|stop| *stop).await;
            };
            if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                tracing::error!(%error, "schema registry server stopped");
            }
        });
        tracing::info!(%local_addr, topic = %config.topic, "schema registry serving");
        Ok(Registry { local_addr, core, stop, server: Some(server) })
    }

    /// The base URL clients use, e.g. `http://127.0.0.1:8081`, with the port actually bound. An
    /// unspecified listen address (`0.0.0.0`) is reported as `127.0.0.1`.
    pub fn url(&self) -> String {
        let mut addr = self.local_addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{addr}")
    }

    /// Stops accepting connections, lets in-flight requests finish (up to a bound), and stops
    /// reading the topic.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        if let Some(mut server) = self.server.take() {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await.is_err() {
                server.abort();
            }
        }
        self.core.close().await;
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}
