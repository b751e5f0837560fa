//! `sluice run`: the stream processors, on a broker that already has the topology's topics.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::config::SluiceConfig;
use sluice_processors::avro::AvroSerdes;
use sluice_processors::{JwtKeys, JwtSettings};
use sluice_streams::builtin::register_builtins;
use sluice_streams::{KafkaStreams, StreamsConfig};
use sluice_streams::signing::InternalKeys;
use sluice_streams::{ProcessorRegistry, Topology};

/// Flags of `sluice run`.
#[derive(clap::Args)]
pub(crate) struct RunArgs {
    /// Kafka bootstrap servers (host:port).
    #[arg(long)]
    bootstrap_servers: Option<String>,
    /// Schema Registry URL (needed when the topology has Avro topics).
    #[arg(long)]
    schema_registry_url: Option<String>,
    /// Where task state lives.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Topology file.
    #[arg(long)]
    topology: Option<PathBuf>,
    /// Serve interactive queries at this base URL, e.g. http://127.0.0.1:8090 (Kafka Streams
    /// `application.server`); other instances route queries for this instance's keys here.
    #[arg(long)]
    application_server: Option<String>,
}

/// The processor kinds `sluice run` knows, the built-ins and the fintech pipeline, and the
/// pipeline's Avro serdes over the configured Schema Registry.
pub(crate) fn processor_registry(config: &SluiceConfig) -> Result<ProcessorRegistry, String> {
    let mut registry = ProcessorRegistry::new();
    register_builtins(&mut registry);
    sluice_processors::register(&mut registry, checking_keys(config)?);
    registry.set_serdes(AvroSerdes::new(&config.schema_registry_url, config.registry_user_info())?);
    Ok(registry)
}

/// The JWT keys that check tokens (the API's, the kcat bridge's): [`jwt_keys`], refusing the
/// tokens revoked on `<application_id>-revocations` (followed once per process) when an
/// internal key is configured to verify those revocations.
pub(crate) fn checking_keys(config: &SluiceConfig) -> Result<Option<Arc<JwtKeys>>, String> {
    static REVOCATIONS: std::sync::OnceLock<sluice_processors::revocations::Revocations> = std::sync::OnceLock::new();
    let keys = jwt_keys(config)?;
    let (Some(keys), Some(internal)) = (keys.clone(), internal_keys(config)?) else { return Ok(keys) };
    let revocations = match REVOCATIONS.get() {
        Some(revocations) => revocations.clone(),
        None => {
            // Lives as long as the process.
            let stop = Arc::new(AtomicBool::new(false));
            let followed = sluice_processors::revocations::Revocations::follow(&config.bootstrap_servers, &config.application_id, internal, stop)?;
            REVOCATIONS.get_or_init(|| followed).clone()
        }
    };
    Ok(Some(Arc::new(Arc::unwrap_or_clone(keys).with_revocations(revocations))))
}

/// The JWT keys the settings describe; `None` when no key is configured (HS256 without a
/// secret), in which case only topologies without the JSON bridge can run.
pub(crate) fn jwt_keys(config: &SluiceConfig) -> Result<Option<Arc<JwtKeys>>, String> {
    if config.jwt_algorithm == "HS256" && config.jwt_secret.is_none() {
        return Ok(None);
    }
    let settings = JwtSettings {
        issuer: config.jwt_issuer.clone(),
        audience: config.jwt_audience.clone(),
        algorithm: config.jwt_algorithm.clone(),
        kid: config.jwt_kid.clone(),
        secret: config.jwt_secret.as_ref().map(|s| s.0.clone()),
        private_key_file: config.jwt_private_key_file.clone(),
        public_key_file: config.jwt_public_key_file.clone(),
        retired_keys: config.jwt_retired_keys.0.clone(),
    };
    JwtKeys::from_settings(&settings).map(|keys| Some(Arc::new(keys)))
}

/// What to do when no internal key is configured.
pub(crate) const INTERNAL_KEY_MISSING: &str = "no internal key is configured: set internal_key (SLUICE__INTERNAL_KEY, 32 or more random characters), the same for every `sluice run` and `sluice ingest` of the application (the key `sluice dev` generates is for the dev stack only and is not used here)";

/// The application's internal key, if configured (docs/security.md, signed records).
pub(crate) fn internal_keys(config: &SluiceConfig) -> Result<Option<Arc<InternalKeys>>, String> {
    let Some(secret) = &config.internal_key else { return Ok(None) };
    InternalKeys::new(&config.internal_key_id, &secret.0, &config.internal_retired_keys.0).map(|keys| Some(Arc::new(keys)))
}

/// Creates the internal topics, then runs the stream thread until SIGTERM or Ctrl-C.
pub(crate) async fn run(args: RunArgs, mut config: SluiceConfig) -> Result<(), String> {
    if let Some(servers) = args.bootstrap_servers {
        config.bootstrap_servers = servers;
    }
    if let Some(url) = args.schema_registry_url {
        config.schema_registry_url = url;
    }
    if let Some(dir) = args.state_dir {
        config.state_dir = dir;
    }
    if let Some(topology) = args.topology {
        config.topology = topology;
    }
    if let Some(server) = args.application_server {
        config.application_server = Some(server);
    }
    if config.application_server.is_some() && config.internal_key.is_none() {
        return Err(format!("the interactive-query server (application_server) answers only requests made with the internal key, and {INTERNAL_KEY_MISSING}"));
    }
    // Every listener is bound before the stream threads start: a port in use stops the start
    // here, rather than leave an instance processing with no metrics or queries.
    let metrics_url = serve_metrics(&config.metrics_listen, install_metrics()?).await?;
    let query_listener = match &config.application_server {
        Some(server) => {
            let listen = listen_address(server)?;
            Some(tokio::net::TcpListener::bind(&listen).await.map_err(|e| format!("cannot serve queries on {listen}: {e}"))?)
        }
        None => None,
    };
    let mut streams = StreamThread::start(&config).await?;
    if let (Some(server), Some(listener)) = (&config.application_server, query_listener) {
        let queries = streams.queries.clone();
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, sluice_ingest::queries::router(queries)).await {
                tracing::error!(%error, "query server stopped");
            }
        });
        println!("interactive queries at {server}/v1/stores/<store>/keys/<key>");
    }
    println!(
        "sluice run: application {} on {} (state in {}, metrics at {metrics_url})",
        config.application_id,
        config.bootstrap_servers,
        config.state_dir.display()
    );
    tokio::select! {
        () = crate::dev::wait_for_shutdown() => {}
        finished = streams.finished() => return finished,
    }
    streams.stop().await
}

/// The stream processors of `config.topology`, running on a blocking thread.
pub(crate) struct StreamThread {
    /// Interactive queries over this instance's stores, routed to the others'.
    pub(crate) queries: sluice_ingest::queries::StoreQueries,
    /// Pauses and resumes its processing and shows its tasks (the operator console, in `sluice dev`).
    pub(crate) handle: sluice_streams::StreamsHandle,
    shutdown: Arc<AtomicBool>,
    /// `None` once [`StreamThread::finished`] saw it end.
    worker: Option<tokio::task::JoinHandle<Result<(), sluice_streams::RuntimeError>>>,
}

impl StreamThread {
    /// Loads the topology, creates its internal topics and starts processing.
    pub(crate) async fn start(config: &SluiceConfig) -> Result<StreamThread, String> {
        let topology = Topology::from_file(&config.topology).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(&config.state_dir).map_err(|e| format!("cannot create {}: {e}", config.state_dir.display()))?;
        let internal_keys = internal_keys(config)?;
        if internal_keys.is_none() && topology.topics.iter().chain(&topology.repartitions).any(|t| t.signed) {
            return Err(format!("{} signs its topics, and {INTERNAL_KEY_MISSING}", config.topology.display()));
        }
        ensure_topics(&topology, config).await?;
        let streams_config = StreamsConfig {
            application_id: config.application_id.clone(),
            bootstrap_servers: config.bootstrap_servers.clone(),
            state_dir: config.state_dir.clone(),
            instance_id: config.group_instance_id.clone().unwrap_or_else(|| default_instance_id(config)),
            static_membership: config.group_instance_id.is_some(),
            commit_interval_ms: config.commit_interval_ms,
            deserialization_error_policy: config.deserialization_exception_handler,
            processing_error_policy: config.processing_exception_handler,
            application_server: config.application_server.clone(),
            num_stream_threads: config.num_stream_threads,
            max_task_idle_ms: config.max_task_idle_ms,
            task_timeout_ms: config.task_timeout_ms,
            retry_backoff_ms: config.retry_backoff_ms,
            processing_guarantee: config.processing_guarantee,
            num_standby_replicas: config.num_standby_replicas,
            internal_keys,
            retry_backoff_max_ms: config.retry_backoff_max_ms,
        };
        let instance = streams_config.instance_id.clone();
        let streams = KafkaStreams::new(topology, processor_registry(config)?, streams_config).map_err(|e| e.to_string())?;
        let shutdown = Arc::new(AtomicBool::new(false));
        let iq = streams.interactive_queries();
        iq.discover(&config.bootstrap_servers, &config.application_id, Arc::clone(&shutdown)).map_err(|e| format!("interactive-query discovery: {e}"))?;
        // The query server never shows a password hash or a reset token's hash.
        let users = sluice_processors::model::stores::USERS;
        let queries = sluice_ingest::queries::StoreQueries::new(iq, &instance)
            .redacting(users, "password_hash")
            .redacting(users, "password_reset")
            .redacting(users, "used_reset_sha256");
        let flag = Arc::clone(&shutdown);
        let handle = streams.handle();
        let worker = tokio::task::spawn_blocking(move || streams.run(&flag));
        Ok(StreamThread { queries, handle, shutdown, worker: Some(worker) })
    }

    /// Resolves if the stream thread stops by itself (with its error).
    pub(crate) async fn finished(&mut self) -> Result<(), String> {
        match self.worker.as_mut() {
            Some(worker) => {
                let outcome = StreamThread::outcome(worker.await);
                self.worker = None;
                outcome
            }
            None => std::future::pending().await,
        }
    }

    /// Commits, closes the tasks and waits for the thread (at once if it already stopped).
    pub(crate) async fn stop(self) -> Result<(), String> {
        println!("shutting down: committing and closing tasks");
        self.shutdown.store(true, Ordering::SeqCst);
        let Some(worker) = self.worker else { return Ok(()) };
        let outcome = StreamThread::outcome(worker.await);
        if outcome.is_ok() {
            println!("stopped cleanly");
        }
        outcome
    }

    fn outcome(finished: Result<Result<(), sluice_streams::RuntimeError>, tokio::task::JoinError>) -> Result<(), String> {
        match finished {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("stream thread panicked: {e}")),
        }
    }
}

/// Installs the Prometheus recorder (once per process) with Sluice's buckets and help texts.
pub(crate) fn install_metrics() -> Result<metrics_exporter_prometheus::PrometheusHandle, String> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_string()), sluice_streams::metrics::LATENCY_BUCKETS_SECONDS)
        .map_err(|e| format!("metrics buckets: {e}"))?
        .install_recorder()
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    sluice_streams::metrics::describe();
    // Histograms and summaries are drained by upkeep.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// Serves `GET /metrics` from `handle` on `listen`; returns the URL.
pub(crate) async fn serve_metrics(listen: &str, handle: metrics_exporter_prometheus::PrometheusHandle) -> Result<String, String> {
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("cannot serve metrics on {listen}: {e}"))?;
    let url = format!("http://{}/metrics", listener.local_addr().map_err(|e| e.to_string())?);
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let body = handle.render();
            async move { ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body) }
        }),
    );
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "metrics server stopped");
        }
    });
    Ok(url)
}

/// The `host:port` to bind for an `application_server` URL such as `http://127.0.0.1:8090`.
fn listen_address(url: &str) -> Result<String, String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("application_server `{url}` must be an http:// URL"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    if !authority.contains(':') {
        return Err(format!("application_server `{url}` needs a port"));
    }
    Ok(authority.to_string())
}

/// `<application_id>-<hash of the absolute state dir>`: the same for every restart of an
/// instance, different for instances with their own state directories.
fn default_instance_id(config: &SluiceConfig) -> String {
    let dir = std::fs::canonicalize(&config.state_dir).unwrap_or_else(|_| config.state_dir.clone());
    let hash = sluice_streams::partitioner::murmur2(dir.to_string_lossy().as_bytes());
    format!("{}-{hash:08x}", config.application_id)
}

/// Refuses to start an application that has run before when a changelog topic is gone
/// (docs/guarantees.md, restore): recreating it empty would lose the store at the next restore.
pub(crate) fn refuse_missing_changelogs(topology: &Topology, config: &SluiceConfig) -> Result<(), String> {
    let missing = sluice_streams::admin::missing_changelogs(&config.bootstrap_servers, &config.application_id, topology).map_err(|e| e.to_string())?;
    if missing.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = missing.iter().map(|(store, topic)| format!("`{topic}` (store `{store}`)")).collect();
    Err(format!(
        "application `{}` has committed offsets, but the changelog topics {} do not exist: a restore from them would silently start those stores empty. Restore the topics, or accept empty stores by creating them with `sluice topics create`",
        config.application_id,
        list.join(", ")
    ))
}

/// Creates the internal (repartition and changelog) topics and checks the external ones
/// exist with the partition counts the topology needs.
async fn ensure_topics(topology: &Topology, config: &SluiceConfig) -> Result<(), String> {
    refuse_missing_changelogs(topology, config)?;
    let external: Vec<String> = topology.topics.iter().map(|t| t.name.clone()).collect();
    let mut internal: Vec<_> = topology.topics_to_create(&config.application_id).into_iter().filter(|t| !external.contains(&t.name)).collect();
    let replication_factor = topology.topics.first().map_or(1, |t| t.replication_factor);
    internal.push(crate::topics::revocations_topic(&config.application_id, replication_factor));
    sluice_streams::admin::create_topics(&config.bootstrap_servers, &internal).await.map_err(|e| e.to_string())?;
    let existing = sluice_streams::admin::partition_counts_of(&config.bootstrap_servers).map_err(|e| e.to_string())?;
    for topic in &topology.topics {
        match existing.iter().find(|(name, _)| name == &topic.name) {
            None => return Err(format!("topic `{}` does not exist on {}; create the topology's topics with `sluice topics create`", topic.name, config.bootstrap_servers)),
            Some((_, count)) if *count != topic.partitions => {
                return Err(format!("topic `{}` has {count} partitions but the topology needs {}", topic.name, topic.partitions))
            }
            Some(_) => {}
        }
    }
    Ok(())
}
