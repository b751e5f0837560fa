//! `sluice acls`: the Kafka ACLs an application needs, derived from topology.toml
//! (docs/security.md, the broker), printed as `kafka-acls.sh` commands and applied with
//! Kafka's CreateAcls when asked. One principal per role:
//!
//! | principal | may |
//! |---|---|
//! | processors (`sluice run`) | read its source topics, write its sink topics and the DLQ, everything on its internal topics (`<application_id>-` prefix: repartition, changelog, discovery), its consumer groups and transactional ids |
//! | ingest (`sluice ingest`) | write the signed command topics and the access log; read the users changelog, the discovery and revocations topics and `notifications` (the live stream) |
//! | registry (`sluice registry`) | its `_schemas` topic and its group |
//! | kcat users | write the `*.json` command topics; read the output topics |
//! | console (the operator console in `sluice ingest`/`sluice dev`, `console_sasl_*`) | describe every topic, its configs and every consumer group's offsets; read every topic of the application but the users changelog; write the topics a dead letter can be replayed to, `sluice.dlq.actions` and the activity log |
//!
//! The DLQ keeps each original record's headers (a bridge command's bearer token among them),
//! so only the processors, the console and an administrator read it.
//!
//! With `allow.everyone.if.no.acl.found=false` on the broker, nothing else is allowed: a kcat
//! user cannot write an Avro command topic, read a changelog or delete a topic.

use std::collections::BTreeSet;

use sluice_streams::acl::{AclBinding, AclResource as Resource};
use sluice_streams::topology::{NodeKind, TopicRef};
use sluice_streams::Topology;

use crate::config::SluiceConfig;

/// Flags of `sluice acls`.
#[derive(clap::Args)]
pub(crate) struct AclsArgs {
    /// Principal of the stream processors (`sluice run`).
    #[arg(long, default_value = "User:sluice-processors")]
    processors: String,
    /// Principal of the HTTP API (`sluice ingest`).
    #[arg(long, default_value = "User:sluice-ingest")]
    ingest: String,
    /// Principal of the Schema Registry (`sluice registry`).
    #[arg(long, default_value = "User:sluice-registry")]
    registry: String,
    /// Principal of kcat users (repeatable).
    #[arg(long = "kcat", default_value = "User:kcat")]
    kcat: Vec<String>,
    /// Principal of the operator console's Kafka clients (`console_sasl_username`).
    #[arg(long, default_value = "User:sluice-console")]
    console: String,
    /// Create them on the broker (Kafka's CreateAcls), authenticating with the configured
    /// security_protocol and sasl_* settings: an administrator's.
    #[arg(long)]
    apply: bool,
    /// Client properties of an administrator (`security.protocol`, `sasl.mechanism`,
    /// `sasl.jaas.config`), named in the printed kafka-acls.sh commands.
    #[arg(long)]
    command_config: Option<std::path::PathBuf>,
}

impl AclsArgs {
    /// The default principals (what `sluice dev` grants on its own broker).
    pub(crate) fn default_principals() -> AclsArgs {
        AclsArgs {
            processors: "User:sluice-processors".to_string(),
            ingest: "User:sluice-ingest".to_string(),
            registry: "User:sluice-registry".to_string(),
            kcat: vec!["User:kcat".to_string()],
            console: "User:sluice-console".to_string(),
            apply: true,
            command_config: None,
        }
    }
}

/// The kafka-acls.sh flag, the name (none for the cluster) and the pattern type of a resource.
fn parts(resource: &Resource) -> (&'static str, Option<&str>, &'static str) {
    match resource {
        Resource::Topic(name) => ("--topic", Some(name), "literal"),
        Resource::TopicPrefix(name) => ("--topic", Some(name), "prefixed"),
        Resource::Group(name) => ("--group", Some(name), "literal"),
        Resource::GroupPrefix(name) => ("--group", Some(name), "prefixed"),
        Resource::TransactionalIdPrefix(name) => ("--transactional-id", Some(name), "prefixed"),
        Resource::Cluster => ("--cluster", None, "literal"),
    }
}

/// One `kafka-acls.sh --add`: a principal allowed some operations on some resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Grant {
    principal: String,
    operations: Vec<&'static str>,
    resources: Vec<Resource>,
}

impl Grant {
    fn new(principal: &str, operations: &[&'static str], resources: Vec<Resource>) -> Grant {
        Grant { principal: principal.to_string(), operations: operations.to_vec(), resources }
    }

    /// kafka-acls.sh arguments after `--bootstrap-server ... [--command-config ...]`: one
    /// command per kind of resource and pattern type (the tool takes one pattern type per
    /// call, and any number of resources of it).
    fn commands(&self) -> Vec<Vec<String>> {
        let mut kinds: Vec<(&'static str, &'static str)> = self.resources.iter().map(|r| (parts(r).0, parts(r).2)).collect();
        kinds.dedup();
        kinds
            .into_iter()
            .map(|(flag, pattern)| {
                let mut args = vec!["--add".to_string(), "--allow-principal".to_string(), self.principal.clone()];
                for operation in &self.operations {
                    args.push("--operation".to_string());
                    args.push((*operation).to_string());
                }
                for resource in self.resources.iter().filter(|r| parts(r).0 == flag && parts(r).2 == pattern) {
                    args.push(flag.to_string());
                    args.extend(parts(resource).1.map(str::to_string));
                }
                if flag != "--cluster" {
                    args.push("--resource-pattern-type".to_string());
                    args.push(pattern.to_string());
                }
                args
            })
            .collect()
    }

    /// One binding per operation and resource.
    fn bindings(&self) -> impl Iterator<Item = AclBinding> + '_ {
        self.operations.iter().flat_map(move |operation| {
            self.resources.iter().map(move |resource| AclBinding { principal: self.principal.clone(), operation: (*operation).to_string(), resource: resource.clone() })
        })
    }
}

/// The grants of `topology` for application `application_id`.
pub(crate) fn grants(topology: &Topology, application_id: &str, args: &AclsArgs) -> Vec<Grant> {
    let mut sources = BTreeSet::new();
    let mut sinks = BTreeSet::new();
    for node in &topology.nodes {
        match &node.kind {
            NodeKind::Source { topics } => sources.extend(topics.iter().filter_map(external)),
            NodeKind::Sink { topic } => sinks.extend(external(topic)),
            NodeKind::Processor { .. } => {}
        }
    }
    sinks.insert(sluice_streams::DLQ_TOPIC.to_string());
    let internal = format!("{application_id}-");
    let topics = |names: &BTreeSet<String>| names.iter().cloned().map(Resource::Topic).collect::<Vec<_>>();
    let signed: BTreeSet<String> = topology.topics.iter().filter(|t| t.signed).map(|t| t.name.clone()).collect();
    let json: BTreeSet<String> = topology.topics.iter().filter(|t| t.name.ends_with(".json")).map(|t| t.name.clone()).collect();
    let outputs: BTreeSet<String> = sinks.iter().filter(|t| !signed.contains(*t) && !t.starts_with("system.") && *t != sluice_streams::DLQ_TOPIC).cloned().collect();
    let mut api_writes = signed.clone();
    api_writes.insert(sluice_ingest::ops::ACCESS_TOPIC.to_string());
    let revocations = sluice_processors::revocations::revocations_topic(application_id);
    let api_reads: BTreeSet<String> = [
        sluice_streams::topology::changelog_topic(application_id, sluice_processors::model::stores::USERS),
        sluice_streams::interactive::instances_topic(application_id),
        revocations.clone(),
        sluice_ingest::notifications::NOTIFICATIONS_TOPIC.to_string(),
    ]
    .into();
    let mut grants = vec![
        // `sluice run` checks that every topic of the topology exists.
        Grant::new(&args.processors, &["Describe"], topology.topics.iter().map(|t| Resource::Topic(t.name.clone())).collect()),
        Grant::new(&args.processors, &["Read", "Describe"], topics(&sources)),
        Grant::new(&args.processors, &["Write", "Describe"], topics(&sinks)),
        Grant::new(&args.processors, &["Read", "Write", "Create", "Describe", "DescribeConfigs"], vec![Resource::TopicPrefix(internal.clone())]),
        Grant::new(&args.processors, &["Read", "Describe"], vec![Resource::GroupPrefix(application_id.to_string())]),
        Grant::new(&args.processors, &["Write", "Describe"], vec![Resource::TransactionalIdPrefix(internal)]),
        Grant::new(&args.processors, &["IdempotentWrite", "Describe"], vec![Resource::Cluster]),
        Grant::new(&args.ingest, &["Write", "Describe"], topics(&api_writes)),
        Grant::new(&args.ingest, &["Read", "Describe"], topics(&api_reads)),
        Grant::new(
            &args.ingest,
            &["Read"],
            vec![
                Resource::Group(format!("{}-api-view", sluice_streams::topology::changelog_topic(application_id, sluice_processors::model::stores::USERS))),
                Resource::Group(format!("{application_id}-discovery")),
                Resource::Group(format!("{revocations}-reader")),
                Resource::Group(sluice_ingest::notifications::feed_group(application_id)),
            ],
        ),
        Grant::new(&args.ingest, &["IdempotentWrite"], vec![Resource::Cluster]),
        Grant::new(&args.registry, &["Read", "Write", "Create", "Describe", "DescribeConfigs"], vec![Resource::Topic(crate::topics::SCHEMAS_TOPIC.to_string())]),
        // Its group; Confluent's registry (docker-compose) uses `schema-registry*` groups.
        Grant::new(&args.registry, &["Read"], vec![Resource::Group(format!("sluice-registry-{}", crate::topics::SCHEMAS_TOPIC)), Resource::GroupPrefix("schema-registry".to_string())]),
        Grant::new(&args.registry, &["IdempotentWrite"], vec![Resource::Cluster]),
    ];
    // The console reads everything but the password hashes, and writes where a replay goes
    // (any source topic: the command topics, their JSON twins, the repartition topics) and
    // its decisions.
    let users_changelog = sluice_streams::topology::changelog_topic(application_id, sluice_processors::model::stores::USERS);
    let readable: BTreeSet<String> = topology.topics_to_create(application_id).into_iter().map(|t| t.name).filter(|t| *t != users_changelog).collect();
    let mut replay_targets = sources.clone();
    replay_targets.extend(topology.repartitions.iter().map(|r| sluice_streams::topology::repartition_topic(application_id, &r.name)));
    replay_targets.insert(sluice_ingest::operator::dlq::ACTIONS_TOPIC.to_string());
    replay_targets.insert(sluice_ingest::operator::dlq::ACTIVITY_TOPIC.to_string());
    grants.push(Grant::new(&args.console, &["Describe", "DescribeConfigs"], vec![Resource::Topic("*".to_string())]));
    grants.push(Grant::new(&args.console, &["Read"], topics(&readable)));
    grants.push(Grant::new(&args.console, &["Write"], topics(&replay_targets)));
    grants.push(Grant::new(&args.console, &["Describe"], vec![Resource::Group("*".to_string()), Resource::Cluster]));
    grants.push(Grant::new(&args.console, &["Read"], vec![Resource::Group(sluice_ingest::operator::kafka::reader_group(application_id))]));
    grants.push(Grant::new(&args.console, &["IdempotentWrite"], vec![Resource::Cluster]));
    for kcat in &args.kcat {
        grants.push(Grant::new(kcat, &["Write", "Describe"], topics(&json)));
        grants.push(Grant::new(kcat, &["Read", "Describe"], topics(&outputs)));
        // kcat -G <group>: consumer groups named kcat-...
        grants.push(Grant::new(kcat, &["Read"], vec![Resource::GroupPrefix("kcat".to_string())]));
    }
    grants
}

fn external(topic: &TopicRef) -> Option<String> {
    match topic {
        TopicRef::External(name) => Some(name.clone()),
        TopicRef::Repartition(_) => None,
    }
}

/// Prints the grants as kafka-acls.sh commands; with `--apply`, creates them on the broker
/// (CreateAcls, as the configured principal: an administrator).
pub(crate) fn run(args: AclsArgs, config: &SluiceConfig) -> Result<(), String> {
    let topology = Topology::from_file(&config.topology).map_err(|e| e.to_string())?;
    if args.apply {
        let count = apply(&grants(&topology, &config.application_id, &args), &config.bootstrap_servers)?;
        println!("{count} ACL bindings applied to {}", config.bootstrap_servers);
        return Ok(());
    }
    let mut base = vec!["--bootstrap-server".to_string(), config.bootstrap_servers.clone()];
    if let Some(file) = &args.command_config {
        base.push("--command-config".to_string());
        base.push(file.display().to_string());
    }
    for command in grants(&topology, &config.application_id, &args).iter().flat_map(Grant::commands) {
        println!("kafka-acls.sh {}", base.iter().chain(&command).cloned().collect::<Vec<_>>().join(" "));
    }
    Ok(())
}

/// Creates the bindings of `grants` on the broker; returns how many.
pub(crate) fn apply(grants: &[Grant], bootstrap_servers: &str) -> Result<usize, String> {
    let bindings: Vec<AclBinding> = grants.iter().flat_map(Grant::bindings).collect();
    sluice_streams::acl::create_acls(bootstrap_servers, &bindings, std::time::Duration::from_secs(30))?;
    Ok(bindings.len())
}
