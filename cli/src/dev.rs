//! `sluice dev`: the whole stack in one process, on a real broker.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Instant;

use sluice_registry::{Registry, RegistryConfig};
use crate::config::SluiceConfig;
use sluice_streams::{kafka_client, Topology};

use crate::run::StreamThread;
use crate::topics;

/// Flags of `sluice dev`.
#[derive(clap::Args)]
pub(crate) struct DevArgs {
    /// Use this broker instead of starting one (host:port).
    #[arg(long)]
    bootstrap_servers: Option<String>,
    /// Port of the broker `sluice dev` starts on 127.0.0.1.
    #[arg(long, default_value_t = 9092)]
    broker_port: u16,
    /// Address of the Schema Registry.
    #[arg(long)]
    registry_listen: Option<String>,
    /// Where local state lives (processor stores); the dev broker keeps its data beside it
    /// in `<state-dir>/../broker`.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Wipe local state (broker data and stores) before starting.
    #[arg(long)]
    reset: bool,
    /// Address the processors' Prometheus metrics are served on.
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Address the HTTP API (and the web console) listens on.
    #[arg(long)]
    http_listen: Option<String>,
    /// Seed a few users, deposits and transfers through the API once it is up, so the console
    /// is not empty (demo users' password: demo-password-1).
    #[arg(long)]
    demo: bool,
    /// Simulate HMRC's feed: a death notification for this NIN or NHS number (ten digits)
    /// `--hmrc-after` seconds after the stack is up (`sluice hmrc simulate` on its own).
    #[arg(long)]
    hmrc_death: Option<String>,
    /// Seconds after start-up for `--hmrc-death`.
    #[arg(long, default_value_t = 30)]
    hmrc_after: u64,
}

/// Runs the dev stack until Ctrl-C or SIGTERM.
pub(crate) async fn run(args: DevArgs, mut config: SluiceConfig) -> Result<(), String> {
    if let Some(dir) = args.state_dir {
        config.state_dir = dir;
    }
    if let Some(listen) = args.registry_listen {
        config.registry_listen = listen;
    }
    if let Some(listen) = args.metrics_listen {
        config.metrics_listen = listen;
    }
    if let Some(listen) = args.http_listen {
        config.http_listen = listen;
    }
    // Fail on a bad topology before starting anything.
    Topology::from_file(&config.topology).map_err(|e| e.to_string())?;
    let broker_dir = config.state_dir.parent().unwrap_or(Path::new(".")).join("broker");
    if args.reset {
        // The default outbox too (its reset tokens name users the reset removes).
        let outbox = dev_dir(&config).join("outbox");
        let outbox = config.password_reset_outbox.is_none().then_some(&outbox);
        for dir in [Some(&config.state_dir), Some(&broker_dir), outbox].into_iter().flatten() {
            match std::fs::remove_dir_all(dir) {
                Ok(()) => println!("reset: removed {}", dir.display()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("cannot remove {}: {e}", dir.display())),
            }
        }
    }
    std::fs::create_dir_all(&config.state_dir).map_err(|e| format!("cannot create {}: {e}", config.state_dir.display()))?;

    let (broker, principals) = match args.bootstrap_servers {
        Some(servers) => {
            config.bootstrap_servers = servers;
            (None, None)
        }
        None => {
            let principals = DevPrincipals::load_or_create(&dev_dir(&config), &broker_dir)?;
            let broker = DevBroker::start(args.broker_port, &broker_dir, &principals.0).await?;
            config.bootstrap_servers = broker.bootstrap_servers();
            (Some(broker), Some(principals))
        }
    };
    let hmrc = args.hmrc_death.map(|identifier| {
        let nhs = identifier.chars().filter(|c| !c.is_whitespace()).all(|c| c.is_ascii_digit());
        crate::hmrc::SimulateArgs {
            nin: (!nhs).then(|| identifier.clone()),
            nhs_number: nhs.then_some(identifier),
            after_s: args.hmrc_after,
            date_of_death: None,
            reference: None,
            api: None,
            state_dir: None,
        }
    });
    let result = serve(&config, args.demo, principals.as_ref(), hmrc).await;
    if let Some(broker) = broker {
        broker.stop().await;
    }
    result
}

async fn serve(config: &SluiceConfig, demo: bool, principals: Option<&DevPrincipals>, hmrc: Option<crate::hmrc::SimulateArgs>) -> Result<(), String> {
    let topology = sluice_streams::Topology::from_file(&config.topology).map_err(|e| e.to_string())?;
    // On its own broker: the administrator creates the topics and the ACLs, then each part
    // authenticates as its own principal.
    if let Some(principals) = principals {
        kafka_client::set_connection(&principals.connection(ADMIN))?;
    }
    crate::run::refuse_missing_changelogs(&topology, config)?;
    let topology = topics::create_all(config, false).await?;
    let mut registry_properties = kafka_client::connection_properties();
    if let Some(principals) = principals {
        let grants = crate::acls::grants(&topology, &config.application_id, &crate::acls::AclsArgs::default_principals());
        let servers = config.bootstrap_servers.clone();
        let count = tokio::task::spawn_blocking(move || crate::acls::apply(&grants, &servers)).await.map_err(|e| e.to_string())??;
        tracing::info!(bindings = count, "ACLs of the dev broker applied");
        principals.write_client_files(&dev_dir(config), &config.bootstrap_servers)?;
        kafka_client::set_connection(&principals.connection("sluice-processors"))?;
        kafka_client::set_role_connection(kafka_client::Role::Ingest, &principals.connection("sluice-ingest"))?;
        if principals.0.iter().any(|(user, _)| user == CONSOLE) {
            kafka_client::set_role_connection(kafka_client::Role::Console, &principals.connection(CONSOLE))?;
        } else {
            println!("note: {} predates the operator console's principal; the console reads Kafka as the API (no topic browser, lag or replays) until `sluice dev --reset`", dev_dir(config).join("kafka-users").display());
        }
        registry_properties = principals.connection("sluice-registry").properties()?;
    }
    let mut config = config.clone();
    let secret_file = ensure_dev_secrets(&mut config)?;
    // Password reset tokens go where a developer reads them.
    if config.password_reset_outbox.is_none() {
        config.password_reset_outbox = Some(dev_dir(&config).join("outbox"));
    }
    let registry = start_registry(&config, registry_properties).await?;
    let result = serve_with_registry(&config, &topology, &registry, (demo, hmrc), secret_file, principals.is_some()).await;
    registry.shutdown().await;
    result
}

async fn serve_with_registry(
    config: &SluiceConfig,
    topology: &Topology,
    registry: &Registry,
    (demo, hmrc): (bool, Option<crate::hmrc::SimulateArgs>),
    secret_file: Option<PathBuf>,
    secured: bool,
) -> Result<(), String> {
    let registered = register_schemas(topology, &config.application_id, &registry.url(), config.registry_user_info()).await?;
    let mut config = config.clone();
    config.schema_registry_url = registry.url();
    // The listeners first: a port in use stops the start before anything runs.
    let metrics = crate::run::install_metrics()?;
    let metrics_url = crate::run::serve_metrics(&config.metrics_listen, metrics.clone()).await?;
    let api_listener = tokio::net::TcpListener::bind(&config.http_listen).await.map_err(|e| format!("cannot listen on {} for the API: {e}", config.http_listen))?;
    let api_url = format!("http://{}", api_listener.local_addr().map_err(|e| e.to_string())?);
    let mut streams = StreamThread::start(&config).await?;
    let state = match crate::ingest::api_state(&config, topology, streams.queries.clone(), Some(metrics), Some(streams.handle.clone())) {
        Ok(state) => state,
        Err(error) => {
            // The stream threads are stopped, or the process would wait for them.
            let _ = streams.stop().await;
            return Err(error);
        }
    };
    let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let api = tokio::spawn(sluice_ingest::serve(api_listener, state, async move {
        let _ = api_stopped.await;
    }));
    println!();
    println!("  Sluice dev stack is up");
    println!("  Web console      {api_url}/");
    println!("  HTTP API         {api_url}/v1   (Swagger UI: {api_url}/docs, OpenAPI: {api_url}/openapi.json)");
    println!("  Metrics          {api_url}/metrics   (processors also at {metrics_url})");
    println!("  Schema Registry  {}   ({registered} subjects registered)", registry.url());
    if secured {
        println!("  Kafka broker     {}   (SASL_PLAINTEXT, SCRAM-SHA-512, ACLs; kcat settings in {})", config.bootstrap_servers, dev_dir(&config).join(KCAT_CONF).display());
    } else {
        println!("  Kafka broker     {}", config.bootstrap_servers);
    }
    println!("  Processors       {} ({} sub-topologies)", config.topology.display(), topology.subtopologies.len());
    println!("  State dir        {}", config.state_dir.display());
    if let Some(outbox) = &config.password_reset_outbox {
        println!("  Mail outbox      {}   (password reset tokens, one .eml file each)", outbox.display());
    }
    match &secret_file {
        Some(file) => println!("  JWT secret       {} (HS256; `sluice token` signs with it)", file.display()),
        None => println!("  JWT keys         from the jwt_* settings"),
    }
    println!();
    println!("  Try:  open {api_url}/ in a browser, or curl {api_url}/ready");
    if secured {
        println!("        scripts/kcat -F {} -L -b {}", dev_dir(&config).join(KCAT_CONF).display(), config.bootstrap_servers);
    } else {
        println!("        scripts/kcat -L -b {}", config.bootstrap_servers);
    }
    println!("        curl {}/subjects", registry.url());
    println!("  Ctrl-C stops everything.");
    println!();
    if demo {
        let keys = crate::run::jwt_keys(&config)?.ok_or("--demo needs JWT keys")?;
        let operator = keys.issue("demo-operator", &["operator"], sluice_processors::jwt::TokenUse::Access, sluice_streams::now_ms(), 600, "demo")?;
        let api = api_url.clone();
        tokio::spawn(async move {
            match crate::demo::seed(&api, &operator).await {
                Ok(()) => println!("demo data ready: alice@demo.sluice, bob@demo.sluice and carol@demo.sluice (password {}) with deposits and transfers", crate::demo::DEMO_PASSWORD),
                Err(error) => println!("demo data not seeded: {error}"),
            }
        });
    }
    if let Some(mut simulate) = hmrc {
        simulate.api = Some(api_url.clone());
        let config = config.clone();
        tokio::spawn(async move {
            if let Err(error) = crate::hmrc::simulate(simulate, &config).await {
                println!("HMRC simulator: {error}");
            }
        });
    }
    let outcome = tokio::select! {
        () = wait_for_shutdown() => Ok(()),
        finished = streams.finished() => finished,
    };
    println!("shutting down");
    let _ = stop_api.send(());
    if let Ok(Err(error)) = api.await {
        tracing::warn!(%error, "API server stopped with an error");
    }
    let stopped = streams.stop().await;
    outcome.and(stopped)
}

/// Where `sluice dev` keeps what it generates: the state directory's parent (`.sluice`).
fn dev_dir(config: &SluiceConfig) -> PathBuf {
    config.state_dir.parent().unwrap_or(Path::new(".")).to_path_buf()
}

/// Where `sluice dev` keeps its generated HS256 secret: beside the state directory.
pub(crate) fn dev_secret_file(config: &SluiceConfig) -> PathBuf {
    dev_dir(config).join("jwt-secret")
}

/// Where `sluice dev` keeps the internal key it generates: beside the state directory.
pub(crate) fn dev_internal_key_file(config: &SluiceConfig) -> PathBuf {
    dev_dir(config).join("internal-key")
}

/// 32 random bytes in hex.
fn random_hex() -> Result<String, String> {
    use std::io::Read;
    let mut random = [0u8; 32];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut random)).map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    Ok(random.iter().map(|b| format!("{b:02x}")).collect())
}

/// Creates `file` with `text`, mode 0600 (readable by its owner only); fails if it exists.
fn create_private(file: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .map_err(|e| format!("cannot create {}: {e}", file.display()))?;
    std::io::Write::write_all(&mut out, text.as_bytes()).map_err(|e| format!("cannot write {}: {e}", file.display()))
}

/// Creates `file` with 32 random bytes in hex, mode 0600, unless it exists.
fn create_dev_secret(file: &Path) -> Result<(), String> {
    if file.exists() {
        return Ok(());
    }
    create_private(file, &random_hex()?)
}

/// The dev broker's super user.
const ADMIN: &str = "admin";
/// The principals of the dev broker: the administrator, then one per role (`sluice acls`).
const DEV_USERS: [&str; 5] = [ADMIN, "sluice-processors", "sluice-ingest", "sluice-registry", "kcat"];
/// The operator console's principal (optional: dev brokers formatted before it lack it).
const CONSOLE: &str = "sluice-console";
/// kcat's settings for the dev broker, as the `kcat` principal (`kcat -F`).
const KCAT_CONF: &str = "kcat.conf";
/// kcat's settings for the dev broker, as its administrator.
const ADMIN_CONF: &str = "kafka-admin.conf";
/// Sluice's settings for the dev broker, as its administrator (`sluice --config`).
const ADMIN_TOML: &str = "admin.toml";

/// The SCRAM users of the dev broker with their passwords, kept in `.sluice/kafka-users`
/// (mode 0600) and created with the broker's storage.
struct DevPrincipals(Vec<(String, String)>);

impl DevPrincipals {
    /// Reads `dir/kafka-users`, or creates it with new random passwords. A broker formatted
    /// without them (before the dev broker was secured) cannot take them: that asks for
    /// `--reset`.
    fn load_or_create(dir: &Path, broker_dir: &Path) -> Result<DevPrincipals, String> {
        let file = dir.join("kafka-users");
        if !file.exists() {
            if broker_dir.join("data/meta.properties").exists() {
                return Err(format!(
                    "the dev broker's data in {} was formatted without SASL users (by an older sluice dev); start once with `sluice dev --reset` (it wipes the dev broker and state)",
                    broker_dir.display()
                ));
            }
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            let mut text = String::new();
            for user in DEV_USERS.iter().chain([&CONSOLE]) {
                text.push_str(&format!("{user}={}\n", random_hex()?));
            }
            create_private(&file, &text)?;
        }
        let text = std::fs::read_to_string(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let users: Vec<(String, String)> = text.lines().filter_map(|l| l.split_once('=')).map(|(u, p)| (u.trim().to_string(), p.trim().to_string())).collect();
        for user in DEV_USERS {
            if !users.iter().any(|(name, _)| name == user) {
                return Err(format!("{} has no password for `{user}`; remove it and start with `sluice dev --reset`", file.display()));
            }
        }
        Ok(DevPrincipals(users))
    }

    fn password(&self, user: &str) -> &str {
        self.0.iter().find(|(name, _)| name == user).map(|(_, password)| password.as_str()).expect("every dev user has a password")
    }

    /// How `user` connects.
    fn connection(&self, user: &str) -> kafka_client::Connection {
        kafka_client::Connection {
            security_protocol: Some("SASL_PLAINTEXT".to_string()),
            sasl_mechanism: Some("SCRAM-SHA-512".to_string()),
            sasl_username: Some(user.to_string()),
            sasl_password: Some(self.password(user).to_string()),
            ssl_ca_location: None,
        }
    }

    /// Writes kcat's settings (`kcat -F FILE`) for the `kcat` principal and the administrator,
    /// and a Sluice config file for the administrator (`sluice --config .sluice/admin.toml`).
    fn write_client_files(&self, dir: &Path, bootstrap_servers: &str) -> Result<(), String> {
        let admin = self.connection(ADMIN);
        let admin_toml = format!(
            "# Written by `sluice dev`: its broker's administrator, for `sluice --config {}`.\nbootstrap_servers = \"{bootstrap_servers}\"\nsecurity_protocol = \"SASL_PLAINTEXT\"\nsasl_mechanism = \"SCRAM-SHA-512\"\nsasl_username = \"{ADMIN}\"\nsasl_password = \"{}\"\n",
            dir.join(ADMIN_TOML).display(),
            admin.sasl_password.as_deref().unwrap_or_default()
        );
        let kcat = |user: &str| -> Result<String, String> { Ok(self.connection(user).properties()?.iter().map(|(k, v)| format!("{k}={v}\n")).collect()) };
        for (file, text) in [(KCAT_CONF, kcat("kcat")?), (ADMIN_CONF, kcat(ADMIN)?), (ADMIN_TOML, admin_toml)] {
            let path = dir.join(file);
            if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
                continue;
            }
            let _ = std::fs::remove_file(&path);
            create_private(&path, &text)?;
        }
        Ok(())
    }
}

/// Uses the configured JWT keys, or the dev secret file (created on first start); and the
/// configured internal key and registry credentials, or the dev ones. Returns the JWT secret
/// file when it is in use.
fn ensure_dev_secrets(config: &mut SluiceConfig) -> Result<Option<PathBuf>, String> {
    if config.schema_registry_user_info.is_none() {
        let file = dev_dir(config).join("registry-password");
        create_dev_secret(&file)?;
        let password = std::fs::read_to_string(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        config.schema_registry_user_info = Some(crate::config::Secret(format!("sluice:{}", password.trim())));
    }
    if config.internal_key.is_none() {
        let file = dev_internal_key_file(config);
        create_dev_secret(&file)?;
        let key = std::fs::read_to_string(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        config.internal_key = Some(crate::config::Secret(key.trim().to_string()));
    }
    if config.jwt_secret.is_some() || config.jwt_algorithm != "HS256" {
        return Ok(None);
    }
    create_dev_secret(&dev_secret_file(config))?;
    use_dev_secret(config)
}

/// Without a configured internal key, uses the one `sluice dev` generated (if there is one).
pub(crate) fn use_dev_internal_key(config: &mut SluiceConfig) -> Result<(), String> {
    if config.internal_key.is_some() {
        return Ok(());
    }
    let file = dev_internal_key_file(config);
    if let Ok(key) = std::fs::read_to_string(&file) {
        config.internal_key = Some(crate::config::Secret(key.trim().to_string()));
    }
    Ok(())
}

/// Without configured JWT keys, signs and checks with the secret `sluice dev` keeps in
/// [`dev_secret_file`]; returns that file when it is the one in use.
pub(crate) fn use_dev_secret(config: &mut SluiceConfig) -> Result<Option<PathBuf>, String> {
    if config.jwt_secret.is_some() || config.jwt_algorithm != "HS256" {
        return Ok(None);
    }
    let file = dev_secret_file(config);
    let secret = std::fs::read_to_string(&file)
        .map_err(|e| format!("no jwt_secret configured and no dev secret at {} ({e}); start `sluice dev` first", file.display()))?;
    config.jwt_secret = Some(crate::config::Secret(secret.trim().to_string()));
    Ok(Some(file))
}

/// Starts the embedded Schema Registry on `config.registry_listen`, its Kafka clients with
/// `client_properties` (security).
pub(crate) async fn start_registry(config: &SluiceConfig, client_properties: Vec<(String, String)>) -> Result<Registry, String> {
    let listen: SocketAddr = config
        .registry_listen
        .parse()
        .map_err(|e| format!("registry address `{}` is not host:port: {e}", config.registry_listen))?;
    let user_info = config.registry_user_info().ok_or("the Schema Registry takes writes only with its credentials: set schema_registry_user_info (SLUICE__SCHEMA_REGISTRY_USER_INFO, `user:password`, a password of 16 or more random characters), the same for every Sluice process that registers schemas")?;
    let write_credentials = sluice_registry::WriteCredentials::parse(user_info)?;
    Registry::start(RegistryConfig {
        bootstrap_servers: config.bootstrap_servers.clone(),
        listen,
        topic: topics::SCHEMAS_TOPIC.to_string(),
        write_credentials: Some(write_credentials),
        client_properties,
    })
    .await
    .map_err(|e| format!("cannot start the Schema Registry on {listen}: {e}"))
}

/// Registers every topic's schema under its TopicNameStrategy subject; returns how many.
async fn register_schemas(topology: &Topology, application_id: &str, registry_url: &str, user_info: Option<&str>) -> Result<usize, String> {
    let mut count = 0;
    let external = topology.topics.iter().map(|t| (t.name.clone(), &t.schema));
    let internal = topology
        .repartitions
        .iter()
        .map(|t| (sluice_streams::topology::repartition_topic(application_id, &t.name), &t.schema));
    for (topic, schema) in external.chain(internal) {
        if let Some(stem) = schema {
            sluice_schemas::codec::register_schema(registry_url, user_info, &topic, stem)
                .await
                .map_err(|e| format!("registering {stem}.avsc for {topic}: {e}"))?;
            count += 1;
        }
    }
    Ok(count)
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn wait_for_shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let term = async {
        match terminate.as_mut() {
            Some(signal) => {
                signal.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        () = term => {}
    }
}

/// The Apache Kafka broker `sluice dev` starts (unless `--bootstrap-servers` names one): a
/// single KRaft node with durable data in `dir`, stopped cleanly with the stack, or by its
/// supervisor if this process dies (see `sluice_testkit`).
struct DevBroker(sluice_testkit::Broker);

impl DevBroker {
    async fn start(port: u16, dir: &Path, users: &[(String, String)]) -> Result<DevBroker, String> {
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            return Err(format!(
                "port {port} on 127.0.0.1 is in use; stop what holds it, pass --broker-port, or use that broker with --bootstrap-servers 127.0.0.1:{port}"
            ));
        }
        println!("starting Apache Kafka on 127.0.0.1:{port} (data: {}, log: {})", dir.display(), dir.join("broker.log").display());
        let started = Instant::now();
        let dir = dir.to_path_buf();
        let users = users.to_vec();
        let broker = tokio::task::spawn_blocking(move || sluice_testkit::Broker::start_durable(port, &dir, &users)).await.map_err(|e| e.to_string())??;
        println!("broker ready on {} after {:.1} s", broker.bootstrap_servers(), started.elapsed().as_secs_f64());
        Ok(DevBroker(broker))
    }

    fn bootstrap_servers(&self) -> String {
        self.0.bootstrap_servers()
    }

    /// Stops the broker cleanly (its data stays for the next start).
    async fn stop(self) {
        let _ = tokio::task::spawn_blocking(move || self.0.stop()).await;
        println!("broker stopped");
    }
}
