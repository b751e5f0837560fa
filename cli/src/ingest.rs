//! `sluice ingest`: the HTTP API on its own, in front of `sluice run` instances; and the
//! wiring `sluice dev` shares with it.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use sluice_ingest::queries::StoreQueries;
use sluice_ingest::{ApiSettings, AppState, SharedState};
use crate::config::SluiceConfig;
use sluice_streams::interactive::{InteractiveQueries, LocalStores};
use sluice_streams::Topology;

/// Flags of `sluice ingest`.
#[derive(clap::Args)]
pub(crate) struct IngestArgs {
    /// Address to listen on (http_listen).
    #[arg(long)]
    http_listen: Option<String>,
    /// Kafka bootstrap servers (host:port).
    #[arg(long)]
    bootstrap_servers: Option<String>,
    /// Schema Registry URL.
    #[arg(long)]
    schema_registry_url: Option<String>,
}

/// Serves the API until SIGTERM or Ctrl-C; queries go to the `sluice run` instances that
/// publish their tasks (run them with `--application-server`).
pub(crate) async fn run(args: IngestArgs, mut config: SluiceConfig) -> Result<(), String> {
    if let Some(listen) = args.http_listen {
        config.http_listen = listen;
    }
    if let Some(servers) = args.bootstrap_servers {
        config.bootstrap_servers = servers;
    }
    if let Some(url) = args.schema_registry_url {
        config.schema_registry_url = url;
    }
    let topology = Arc::new(Topology::from_file(&config.topology).map_err(|e| e.to_string())?);
    let instance = format!("{}-ingest-{}", config.application_id, std::process::id());
    let internal_keys = crate::run::internal_keys(&config)?.ok_or_else(|| format!("the API signs the commands it publishes, and {}", crate::run::INTERNAL_KEY_MISSING))?;
    let iq = InteractiveQueries::new(Arc::clone(&topology), LocalStores::default(), &instance, Some(internal_keys));
    let stop = Arc::new(AtomicBool::new(false));
    iq.discover(&config.bootstrap_servers, &config.application_id, Arc::clone(&stop)).map_err(|e| format!("interactive-query discovery: {e}"))?;
    let metrics = crate::run::install_metrics()?;
    let queries = StoreQueries::new(iq, &instance);
    let state = api_state(&config, &topology, queries, Some(metrics), None)?;
    let listener = tokio::net::TcpListener::bind(&config.http_listen).await.map_err(|e| format!("cannot listen on {}: {e}", config.http_listen))?;
    println!("sluice ingest: API at http://{} (OpenAPI at /openapi.json), publishing to {}", config.http_listen, config.bootstrap_servers);
    let served = sluice_ingest::serve(listener, state, crate::dev::wait_for_shutdown()).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    served.map_err(|e| format!("API server: {e}"))
}

/// The API's state from the settings.
pub(crate) fn api_state(config: &SluiceConfig, topology: &Topology, queries: StoreQueries, metrics: Option<PrometheusHandle>, local: Option<sluice_streams::StreamsHandle>) -> Result<SharedState, String> {
    let keys = crate::run::checking_keys(config)?.ok_or("the API signs tokens and no JWT key is configured: set jwt_secret (SLUICE__JWT_SECRET, 32 or more random characters), or jwt_algorithm with jwt_private_key_file and jwt_public_key_file (the secret `sluice dev` generates is for the dev stack only and is not used here)")?;
    if !keys.can_issue() {
        return Err("the API signs tokens: set jwt_private_key_file".to_string());
    }
    let settings = ApiSettings {
        access_ttl_s: config.jwt_access_ttl_s,
        refresh_ttl_s: config.jwt_refresh_ttl_s,
        body_limit_bytes: config.http_body_limit_bytes,
        request_timeout: Duration::from_millis(config.http_request_timeout_ms),
        pipeline: sluice_ingest::pipeline_settings(topology)?,
        reset_ttl_s: config.password_reset_ttl_s,
        reset_outbox: config.password_reset_outbox.clone().map(sluice_ingest::reset::Outbox::new),
    };
    let internal_keys = crate::run::internal_keys(config)?.ok_or_else(|| format!("the API signs the commands it publishes, and {}", crate::run::INTERNAL_KEY_MISSING))?;
    let publisher = sluice_ingest::publish::Publisher::new(&config.bootstrap_servers, (&config.schema_registry_url, config.registry_user_info()), internal_keys)?;
    let console = sluice_ingest::operator::Console::new(
        &config.bootstrap_servers,
        &config.application_id,
        Arc::new(topology.clone()),
        (&config.schema_registry_url, config.registry_user_info()),
        local,
    )?;
    if let Some(handle) = &metrics {
        console.sampler.start(handle.clone(), sluice_ingest::operator::runtime::source_nodes(topology));
    }
    Ok(Arc::new(AppState {
        keys,
        queries,
        publisher,
        idempotency: Default::default(),
        limiter: sluice_ingest::ops::RateLimiter::new(config.http_rate_limit_per_s, config.http_rate_limit_burst),
        lookup_limiter: sluice_ingest::users::limiter(),
        // One argon2 computation per core at most (each takes 19 MiB and tens of milliseconds).
        login_guard: sluice_ingest::login_guard::LoginGuard::new(std::thread::available_parallelism().map_or(2, |n| n.get()), sluice_ingest::login_guard::SLOT_WAIT),
        settings,
        metrics,
        users: Some(sluice_ingest::users_view::UsersView::start(&config.bootstrap_servers, &sluice_streams::topology::changelog_topic(&config.application_id, sluice_processors::model::stores::USERS))?),
        reset_limiter: sluice_ingest::reset::limiter(),
        notifications: Some(sluice_ingest::notifications::Feed::start(
            &config.bootstrap_servers,
            sluice_ingest::notifications::NOTIFICATIONS_TOPIC,
            &sluice_ingest::notifications::feed_group(&config.application_id),
        )?),
        console: Some(Arc::new(console)),
    }))
}
