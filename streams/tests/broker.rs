//! Engine features against a real broker (tansu, started per test binary).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use sluice_streams::admin::{create_topics, AdminError, TopicOutcome};
use sluice_streams::Topology;

fn pipeline() -> Topology {
    Topology::from_file(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../topology.toml")).unwrap()
}

#[tokio::test]
async fn creates_every_topic_with_explicit_configs_idempotently() {
    let broker = sluice_testkit::broker();
    let specs = pipeline().topics_to_create("admin-test");
    let first = create_topics(&broker.bootstrap_servers(), &specs).await.unwrap();
    assert_eq!(first.len(), specs.len());
    assert!(first.iter().all(|(_, outcome)| *outcome == TopicOutcome::Created), "{first:?}");
    let second = create_topics(&broker.bootstrap_servers(), &specs).await.unwrap();
    assert!(second.iter().all(|(_, outcome)| *outcome == TopicOutcome::AlreadyExists), "{second:?}");

    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", broker.bootstrap_servers()).create().unwrap();
    let metadata = admin.inner().fetch_metadata(None, Duration::from_secs(10)).unwrap();
    for spec in &specs {
        let topic = metadata.topics().iter().find(|t| t.name() == spec.name).unwrap_or_else(|| panic!("{} missing", spec.name));
        assert_eq!(topic.partitions().len() as i32, spec.partitions, "{}", spec.name);
    }
    // The broker reports back the configs we set explicitly.
    let changelog = "admin-test-users-changelog";
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic(changelog)], &AdminOptions::new())
        .await
        .unwrap();
    let resource = described.into_iter().next().unwrap().unwrap();
    let policy = resource.get("cleanup.policy").and_then(|entry| entry.value.clone());
    assert_eq!(policy.as_deref(), Some("compact"), "{changelog}: {:?}", resource.entries);
}

#[tokio::test]
async fn an_existing_topic_with_other_partitions_is_refused() {
    let broker = sluice_testkit::broker();
    broker.create_topic("mismatch-test", 2);
    let mut spec = pipeline().topics[0].clone();
    spec.name = "mismatch-test".to_string();
    spec.partitions = 4;
    let error = create_topics(&broker.bootstrap_servers(), &[spec]).await.unwrap_err();
    assert!(matches!(error, AdminError::PartitionMismatch { actual: 2, expected: 4, .. }), "{error}");
}

#[tokio::test]
async fn an_unreachable_broker_is_a_clear_error() {
    let address = format!("127.0.0.1:{}", sluice_testkit::free_port());
    let error = create_topics(&address, &pipeline().topics).await.unwrap_err();
    assert!(matches!(error, AdminError::Unreachable { .. }), "{error}");
    assert!(error.to_string().contains(&address), "{error}");
}
