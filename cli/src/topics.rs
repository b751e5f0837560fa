//! `sluice topics create`: every topic of the topology plus the ones Sluice itself needs.

use sluice_streams::admin::{self, TopicOutcome};
use crate::config::SluiceConfig;
use sluice_streams::topology::TopicSpec;
use sluice_streams::Topology;

/// The Schema Registry's own topic.
pub(crate) const SCHEMAS_TOPIC: &str = "_schemas";

/// Every topic Sluice needs: the topology's (external, repartition, changelog) and `_schemas`.
pub(crate) fn all_topics(topology: &Topology, application_id: &str) -> Vec<TopicSpec> {
    let mut topics = topology.topics_to_create(application_id);
    let replication_factor = topics.first().map_or(1, |t| t.replication_factor);
    topics.push(TopicSpec::compacted(SCHEMAS_TOPIC.to_string(), 1, replication_factor));
    topics.push(revocations_topic(application_id, replication_factor));
    topics
}

/// The compacted topic of token revocations (`sluice revoke`).
pub(crate) fn revocations_topic(application_id: &str, replication_factor: i16) -> TopicSpec {
    TopicSpec::compacted(sluice_processors::revocations::revocations_topic(application_id), 1, replication_factor)
}

/// Creates every topic; prints one line per topic when `verbose`.
pub(crate) async fn create_all(config: &SluiceConfig, verbose: bool) -> Result<Topology, String> {
    let topology = Topology::from_file(&config.topology).map_err(|e| e.to_string())?;
    let specs = all_topics(&topology, &config.application_id);
    let outcomes = admin::create_topics(&config.bootstrap_servers, &specs).await.map_err(|e| e.to_string())?;
    let created = outcomes.iter().filter(|(_, o)| *o == TopicOutcome::Created).count();
    if verbose {
        for ((name, outcome), spec) in outcomes.iter().zip(&specs) {
            let status = match outcome {
                TopicOutcome::Created => "created",
                TopicOutcome::AlreadyExists => "exists ",
            };
            println!(
                "{status}  {name}  partitions={} cleanup.policy={} retention.ms={}",
                spec.partitions, spec.config["cleanup.policy"], spec.config["retention.ms"]
            );
        }
    }
    println!("{} topics on {}: {created} created, {} already existed", outcomes.len(), config.bootstrap_servers, outcomes.len() - created);
    Ok(topology)
}
