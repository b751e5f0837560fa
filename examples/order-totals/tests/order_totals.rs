//! The example pipeline on a real Kafka broker: JSON in, re-keyed through a repartition topic,
//! summed, JSON out; bad orders become the application's own dead letters.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use order_totals::{CustomerTotal, Order};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use sluice_streams::KafkaStreams;

/// A record read back: key, value, headers.
type Read = (String, String, BTreeMap<String, String>);

/// Every record of `topic` (all `partitions`) so far, from the beginning.
fn read_all(servers: &str, topic: &str, partitions: i32) -> Vec<Read> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", format!("{topic}-reader"))
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition_offset(topic, partition, Offset::Beginning).unwrap();
    }
    consumer.assign(&list).unwrap();
    let (mut records, mut at_end) = (Vec::new(), 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while at_end < partitions && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                let text = |bytes: Option<&[u8]>| String::from_utf8_lossy(bytes.unwrap_or_default()).into_owned();
                let headers = message.headers().map(|h| h.iter().map(|h| (h.key.to_string(), text(h.value))).collect()).unwrap_or_default();
                records.push((text(message.key()), text(message.payload()), headers));
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => at_end += 1,
            _ => {}
        }
    }
    records
}

#[test]
fn orders_are_summed_per_customer_through_the_applications_serdes_and_dead_letters() {
    let broker = sluice_testkit::broker();
    let servers = broker.bootstrap_servers();
    let topology = order_totals::topology();
    let state_dir = std::env::temp_dir().join(format!("order-totals-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state_dir);
    let config = order_totals::config(&servers, state_dir.clone());
    let io = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    io.block_on(sluice_streams::admin::create_topics(&servers, &topology.topics_to_create(&config.application_id))).unwrap();

    let order = |id: &str, customer: &str, cents: i64| serde_json::to_string(&Order { order_id: id.into(), customer: customer.into(), amount_cents: cents }).unwrap();
    let inputs = [
        ("o-1", order("o-1", "ann", 1250)),
        ("o-2", order("o-2", "bob", 999)),
        ("o-3", "{not json".to_string()),
        ("o-4", order("o-4", "ann", -5)),
        ("o-5", r#"{"order_id":"o-5","customer":"ann","amount_cents":1,"coupon":"x"}"#.to_string()),
        ("o-6", order("o-6", "ann", 300)),
    ];
    // Kafka's partitioner (librdkafka's default is CRC32): the engine checks it.
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", &servers).set("partitioner", "murmur2_random").create().unwrap();
    for (key, value) in &inputs {
        producer.send(BaseRecord::to("orders").key(*key).payload(value)).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    let streams = KafkaStreams::new(topology, order_totals::registry(), config).unwrap();
    let shutdown = AtomicBool::new(false);
    let (totals, dead) = std::thread::scope(|scope| {
        let running = scope.spawn(|| streams.run(&shutdown));
        let deadline = Instant::now() + Duration::from_secs(90);
        // Until every output is there, the pipeline stops or time runs out (then the
        // assertions below say what was missing).
        let outputs = loop {
            let totals = read_all(&servers, "customer-totals", 2);
            let dead = read_all(&servers, "sluice.dlq", 1);
            if (totals.len() >= 3 && dead.len() >= 3) || running.is_finished() || Instant::now() > deadline {
                break (totals, dead);
            }
        };
        shutdown.store(true, Ordering::SeqCst);
        running.join().unwrap().unwrap();
        outputs
    });

    // Totals: JSON made by the application's serdes, keyed by customer; ann's two good orders
    // may land in either order, so compare the last total per customer.
    let mut last = BTreeMap::new();
    for (key, value, _) in &totals {
        let total: CustomerTotal = serde_json::from_str(value).unwrap_or_else(|e| panic!("{value}: {e}"));
        assert_eq!(&total.customer, key);
        last.insert(key.clone(), total);
    }
    assert_eq!(last["ann"], CustomerTotal { customer: "ann".into(), orders: 2, total_cents: 1550 });
    assert_eq!(last["bob"], CustomerTotal { customer: "bob".into(), orders: 1, total_cents: 999 });
    assert_eq!(totals.len(), 3, "one total per good order: {totals:?}");

    // The repartition topic carries orders re-keyed by customer, written by the same serdes.
    let repartitioned = read_all(&servers, "order-totals-orders-by-customer-repartition", 2);
    assert_eq!(repartitioned.len(), 3, "{repartitioned:?}");
    assert!(repartitioned.iter().all(|(key, value, _)| serde_json::from_str::<Order>(value).is_ok_and(|o| &o.customer == key)), "{repartitioned:?}");

    // Dead letters: the application's JSON document, with the engine's locating headers.
    let mut classes: Vec<(String, String)> = dead
        .iter()
        .map(|(key, value, headers)| {
            let letter: serde_json::Value = serde_json::from_str(value).unwrap_or_else(|e| panic!("{value}: {e}"));
            assert_eq!(letter["topic"], "orders");
            assert_eq!(headers["sluice.error.topic"], "orders");
            assert_eq!(headers["sluice.error.offset"], letter["offset"].to_string());
            assert!(letter["value"].as_str().is_some_and(|v| v.contains(key.as_str()) || v == "{not json"), "{letter}");
            (key.clone(), letter["error_class"].as_str().unwrap().to_string())
        })
        .collect();
    classes.sort();
    assert_eq!(
        classes,
        [("o-3".to_string(), "deserialization".to_string()), ("o-4".to_string(), "invalid_order".to_string()), ("o-5".to_string(), "deserialization".to_string())]
    );
    let _ = std::fs::remove_dir_all(&state_dir);
}
