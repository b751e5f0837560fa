//! `sluice`: one binary for the Sluice stack. `sluice dev` runs everything locally on a real
//! broker; the other commands run or inspect one part.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use config::SluiceConfig;

mod config;
mod demo;
mod dev;
mod dlq;
mod hmrc;
mod ingest;
mod load;
mod acls;
mod run;
mod topics;

/// Sluice: a Kafka Streams-style stream processor and a fintech command pipeline.
#[derive(Parser)]
#[command(name = "sluice", version, about)]
struct Cli {
    /// Settings file; every key can also be set by a SLUICE__<KEY> environment variable.
    #[arg(long, global = true, default_value = "sluice.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole stack locally: an Apache Kafka broker (unless --bootstrap-servers is given),
    /// every topic, and the Schema Registry with every schema registered.
    Dev(dev::DevArgs),
    /// Run the stream processors of the topology against a broker (one stream thread; run
    /// several instances with the same application_id to scale out).
    Run(run::RunArgs),
    /// Run the HTTP ingest API (commands in, store queries out) against a broker, a Schema
    /// Registry and `sluice run` instances started with --application-server.
    Ingest(ingest::IngestArgs),
    /// Run the embedded Confluent-compatible Schema Registry.
    Registry {
        /// Kafka bootstrap servers (host:port).
        #[arg(long)]
        bootstrap_servers: Option<String>,
        /// Address to listen on.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Inspect the pipeline definition.
    Topology {
        #[command(subcommand)]
        action: TopologyAction,
    },
    /// Manage the topics of the pipeline.
    Topics {
        #[command(subcommand)]
        action: TopicsAction,
    },
    /// Print a signed access token, e.g. for kcat's `-H authorization=Bearer <token>`. Signs
    /// with the jwt_* settings, or with the secret `sluice dev` generated.
    Token {
        /// The token subject: a user id (`u_...`), or a service account's name.
        #[arg(long)]
        subject: String,
        /// Roles to grant: user, operator, hmrc (repeatable).
        #[arg(long = "role", default_value = "user")]
        roles: Vec<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl_s: u64,
        /// The dev stack's state dir, to find its generated secret (default: the state_dir setting).
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// HMRC's death notification feed, simulated (`sluice hmrc simulate --nin AB123456C`).
    Hmrc {
        #[command(subcommand)]
        action: hmrc::HmrcCommand,
    },
    /// Revoke every token of a subject issued until now (a service account's: an operator's,
    /// HMRC's; or a user's): the API and the kcat bridge refuse them (`token-revoked`) from
    /// the moment they read the revocation. Tokens issued afterwards work.
    Revoke {
        /// The token subject (`sub`).
        #[arg(long)]
        subject: String,
        /// Why (kept with the revocation).
        #[arg(long)]
        reason: Option<String>,
        /// The dev stack's state dir, to find its generated internal key (default: the
        /// state_dir setting).
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Ask a `sluice run` instance's interactive-query server, e.g.
    /// `sluice query /v1/stores/accounts/keys/u_...`: the request carries a service token made
    /// with the internal key (the server refuses any other), the answer is printed.
    Query {
        /// Path and query string, starting with `/v1/stores/`.
        path: String,
        /// The instance's base URL (default: the application_server setting).
        #[arg(long)]
        server: Option<String>,
    },
    /// Print the Kafka ACLs the application needs (from topology.toml) as kafka-acls.sh
    /// commands, one principal per role; --apply creates them (docs/security.md, the broker).
    Acls(acls::AclsArgs),
    /// Load harness: relay vs. the balance aggregation on one broker, then end-to-end latency
    /// at a fixed rate.
    Load(load::LoadArgs),
    /// The raw relay of `scripts/bench-peers`: consume -> produce (key, value, headers,
    /// timestamp), committing every commit interval (at_least_once), until SIGTERM.
    Relay(load::RelayArgs),
    /// The dead-letter queue: list, show, replay to the original topic, or discard (each
    /// decision audited on system.logs.activity; the operator console does the same).
    Dlq {
        #[command(subcommand)]
        action: dlq::DlqAction,
    },
    /// Print the user id Sluice derives from an email (the key of that user's commands).
    UserId {
        /// The email address.
        email: String,
    },
}

#[derive(Subcommand)]
enum TopologyAction {
    /// Print sub-topologies, sources, processors, stores and sinks, like Kafka Streams'
    /// Topology#describe().
    Describe {
        /// Topology file (default: the `topology` setting, ./topology.toml).
        file: Option<PathBuf>,
    },
    /// Check the file; exits non-zero with file:line:column diagnostics if it is invalid.
    Validate {
        /// Topology file (default: the `topology` setting, ./topology.toml).
        file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TopicsAction {
    /// Create every topic of the topology (inputs, outputs, changelogs, repartition topics,
    /// _schemas, sluice.dlq) with explicit configs. Idempotent.
    Create {
        /// Kafka bootstrap servers (host:port).
        #[arg(long)]
        bootstrap_servers: Option<String>,
        /// Topology file.
        #[arg(long)]
        topology: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rdkafka=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let explicit_config = std::env::args().any(|a| a == "--config" || a.starts_with("--config="));
    let config = match SluiceConfig::load(&cli.config, explicit_config, std::env::vars()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = sluice_streams::kafka_client::set_connection(&config.connection()) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    if let Some(Err(e)) = config.console_connection().map(|c| sluice_streams::kafka_client::set_role_connection(sluice_streams::kafka_client::Role::Console, &c)) {
        eprintln!("error: console_sasl_*: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli.command, config));
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, mut config: SluiceConfig) -> Result<ExitCode, String> {
    match command {
        Command::Dev(args) => dev::run(args, config).await.map(|()| ExitCode::SUCCESS),
        Command::Run(args) => run::run(args, config).await.map(|()| ExitCode::SUCCESS),
        Command::Ingest(args) => ingest::run(args, config).await.map(|()| ExitCode::SUCCESS),
        Command::Registry { bootstrap_servers, listen } => {
            if let Some(servers) = bootstrap_servers {
                config.bootstrap_servers = servers;
            }
            if let Some(listen) = listen {
                config.registry_listen = listen;
            }
            let registry = dev::start_registry(&config, sluice_streams::kafka_client::connection_properties()).await?;
            println!("Schema Registry listening on {}", registry.url());
            dev::wait_for_shutdown().await;
            registry.shutdown().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Topology { action } => {
            let (file, describe) = match action {
                TopologyAction::Describe { file } => (file, true),
                TopologyAction::Validate { file } => (file, false),
            };
            let path = file.unwrap_or(config.topology);
            match sluice_streams::Topology::from_file(&path) {
                Ok(topology) if describe => {
                    print!("{}", topology.describe(&config.application_id));
                    Ok(ExitCode::SUCCESS)
                }
                Ok(topology) => {
                    // The pipeline's serdes judge the schema names (the engine does not know them).
                    let serdes = sluice_processors::avro::AvroSerdes::new(&config.schema_registry_url, None)?;
                    let problems: Vec<String> = topology
                        .topics
                        .iter()
                        .chain(&topology.repartitions)
                        .filter_map(|t| sluice_streams::Serdes::check_schema(&serdes, &t.name, t.schema.as_deref()?).err())
                        .collect();
                    if !problems.is_empty() {
                        eprintln!("{}: {}", path.display(), problems.join("; "));
                        return Ok(ExitCode::from(1));
                    }
                    println!(
                        "{}: valid ({} sub-topologies, {} nodes, {} stores)",
                        path.display(),
                        topology.subtopologies.len(),
                        topology.nodes.len(),
                        topology.stores.len()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(error) => {
                    eprintln!("{error}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Token { subject, roles, ttl_s, state_dir } => {
            if let Some(dir) = state_dir {
                config.state_dir = dir;
            }
            for role in &roles {
                if !sluice_processors::JwtKeys::known_roles().contains(&role.as_str()) {
                    return Err(format!("unknown role `{role}` (user, operator or hmrc)"));
                }
            }
            dev::use_dev_secret(&mut config)?;
            let keys = run::jwt_keys(&config)?.ok_or("no JWT keys configured")?;
            let now_ms = sluice_streams::now_ms();
            let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
            let jti = format!("cli-{now_ms}-{}", std::process::id());
            let token = keys.issue(&subject, &roles, sluice_processors::jwt::TokenUse::Access, now_ms, ttl_s, &jti)?;
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Hmrc { action: hmrc::HmrcCommand::Simulate(args) } => {
            if let Some(dir) = &args.state_dir {
                config.state_dir = dir.clone();
            }
            dev::use_dev_secret(&mut config)?;
            let outcome = hmrc::simulate(args, &config).await?;
            Ok(if outcome["status"] == "settled" { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Revoke { subject, reason, state_dir } => {
            if let Some(dir) = state_dir {
                config.state_dir = dir;
            }
            dev::use_dev_internal_key(&mut config)?;
            let keys = run::internal_keys(&config)?.ok_or(run::INTERNAL_KEY_MISSING)?;
            let revocation = sluice_processors::revocations::Revocation { subject: subject.clone(), revoked_before_ms: sluice_streams::now_ms(), reason };
            sluice_processors::revocations::publish(&config.bootstrap_servers, &config.application_id, &keys, &revocation)?;
            println!("tokens of `{subject}` issued before {} are revoked", revocation.revoked_before_ms);
            Ok(ExitCode::SUCCESS)
        }
        Command::Query { path, server } => {
            let server = server.or_else(|| config.application_server.clone()).ok_or("no server: pass --server http://host:port or set application_server")?;
            if !path.starts_with("/v1/stores/") {
                return Err(format!("`{path}` is not a store query: paths start with /v1/stores/"));
            }
            let keys = run::internal_keys(&config)?.ok_or(run::INTERNAL_KEY_MISSING)?;
            let url = format!("{}{path}", server.trim_end_matches('/'));
            let url = reqwest::Url::parse(&url).map_err(|e| format!("{url}: {e}"))?;
            let authorization = sluice_ingest::queries::service_authorization(&keys, &sluice_ingest::queries::path_and_query(&url));
            let response = reqwest::Client::new().get(url.clone()).header("authorization", authorization).send().await.map_err(|e| format!("{url}: {e}"))?;
            let status = response.status();
            let body = response.text().await.map_err(|e| format!("{url}: {e}"))?;
            if status.is_success() {
                println!("{body}");
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("{status}: {body}");
                Ok(ExitCode::FAILURE)
            }
        }
        Command::Dlq { action } => dlq::run(action, &config).await.map(|()| ExitCode::SUCCESS),
        Command::Acls(args) => acls::run(args, &config).map(|()| ExitCode::SUCCESS),
        Command::Load(args) => load::run(args).await.map(|()| ExitCode::SUCCESS),
        Command::Relay(args) => load::run_relay(args).await.map(|()| ExitCode::SUCCESS),
        Command::UserId { email } => {
            println!("{}", sluice_processors::model::user_id_for_email(&email));
            Ok(ExitCode::SUCCESS)
        }
        Command::Topics { action: TopicsAction::Create { bootstrap_servers, topology } } => {
            if let Some(servers) = bootstrap_servers {
                config.bootstrap_servers = servers;
            }
            if let Some(topology) = topology {
                config.topology = topology;
            }
            topics::create_all(&config, true).await.map(|_| ExitCode::SUCCESS)
        }
    }
}
