//! Engine features against a real broker (Apache Kafka, started per test binary).

use std::collections::BTreeMap;
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

// ---------------------------------------------------------------- the engine, with the test driver

use sluice_streams::builtin::{register_builtins, EVENT_ID_HEADER};
use sluice_streams::test_driver::{RestartMode, DLQ_TOPIC};
use sluice_streams::ErrorPolicy;
use sluice_streams::{
    FnProcessor, ProcessError, Processor, ProcessorContext, ProcessorRegistry, Punctuation, PunctuationType, Record, TestDriverConfig,
    TopologyTestDriver, Value,
};

const BANKS: &str = r#"
[[topic]]
name = "deposits"
partitions = 2

[[topic]]
name = "totals"
partitions = 2

[[topic]]
name = "bank.totals"
partitions = 3

[[topic]]
name = "ticks"
partitions = 1

[[repartition]]
name = "by-bank"
partitions = 3

[[store]]
name = "counts"

[[store]]
name = "balances"

[[store]]
name = "seen"
kind = "dedupe"
retention_ms = 60000

[[store]]
name = "bank-totals"

[[store]]
name = "raw-balances"

[[source]]
name = "deposits-source"
topics = ["deposits"]

[[processor]]
name = "count"
kind = "count"
parents = ["deposits-source"]
stores = ["counts"]

[[processor]]
name = "sum"
kind = "keyed-sum"
parents = ["deposits-source"]
stores = ["balances", "seen"]
config = { dedupe = "seen" }

[[processor]]
name = "rekey"
kind = "rekey"
parents = ["deposits-source"]

# The same sum without dedupe: only the restore's skip rule keeps it exact after a crash.
[[processor]]
name = "raw-sum"
kind = "keyed-sum"
parents = ["deposits-source"]
stores = ["raw-balances"]

[[sink]]
name = "totals-sink"
topic = "totals"
parents = ["sum"]

[[sink]]
name = "by-bank-sink"
repartition = "by-bank"
parents = ["rekey"]

[[source]]
name = "by-bank-source"
repartition = "by-bank"

[[processor]]
name = "bank-sum"
kind = "keyed-sum"
parents = ["by-bank-source"]
stores = ["bank-totals"]

[[sink]]
name = "bank-totals-sink"
topic = "bank.totals"
parents = ["bank-sum"]
"#;

const TICKER: &str = r#"
[[topic]]
name = "events"
partitions = 1

[[topic]]
name = "ticks"
partitions = 1

[[source]]
name = "events-source"
topics = ["events"]

[[processor]]
name = "ticker"
kind = "ticker"
parents = ["events-source"]

[[sink]]
name = "ticks-sink"
topic = "ticks"
parents = ["ticker"]
"#;

/// Emits one record per punctuation: `stream:<time>` every 10 ms of stream time and
/// `wall:<time>` every second of wall-clock time.
struct Ticker;

impl Processor for Ticker {
    fn init(&mut self, ctx: &mut ProcessorContext<'_>) -> Result<(), ProcessError> {
        ctx.schedule(10, PunctuationType::StreamTime)?;
        ctx.schedule(1000, PunctuationType::WallClockTime)?;
        Ok(())
    }

    fn process(&mut self, _record: Record, _ctx: &mut ProcessorContext<'_>) -> Result<(), ProcessError> {
        Ok(())
    }

    fn punctuate(&mut self, punctuation: Punctuation, ctx: &mut ProcessorContext<'_>) -> Result<(), ProcessError> {
        let kind = match punctuation.kind {
            PunctuationType::StreamTime => "stream",
            PunctuationType::WallClockTime => "wall",
        };
        ctx.forward(Record::new("tick", format!("{kind}:{}", punctuation.timestamp).as_str(), punctuation.timestamp))
    }
}

fn registry() -> ProcessorRegistry {
    let mut registry = ProcessorRegistry::new();
    register_builtins(&mut registry);
    registry.register("count", |_| {
        Ok(Box::new(FnProcessor(|record: Record, ctx: &mut ProcessorContext<'_>| {
            let key = record.key.clone().unwrap_or_default();
            let store = ctx.store("counts")?;
            let count = store.get(key.as_bytes())?.map_or(0, |v| u64::from_be_bytes(v.try_into().unwrap_or_default()));
            store.put(key.as_bytes(), &(count + 1).to_be_bytes())?;
            Ok(())
        })))
    });
    registry.register("rekey", |_| {
        Ok(Box::new(FnProcessor(|record: Record, ctx: &mut ProcessorContext<'_>| {
            let bank = format!("bank-{}", record.key.as_deref().and_then(|k| k.chars().next()).unwrap_or('?'));
            ctx.forward(Record { key: Some(bank), ..record })
        })))
    });
    registry.register("ticker", |_| Ok(Box::new(Ticker)));
    registry
}

fn driver(toml: &str, name: &str, configure: impl FnOnce(&mut TestDriverConfig)) -> TopologyTestDriver {
    let topology = Topology::parse(toml, "test.toml").unwrap();
    let mut config = TestDriverConfig::new(name);
    configure(&mut config);
    TopologyTestDriver::new(topology, registry(), config).unwrap()
}

fn deposit(key: &str, amount: i64, timestamp: i64) -> Record {
    Record::new(key, amount.to_string().as_str(), timestamp)
}

fn text(record: &Record) -> (String, String) {
    (record.key.clone().unwrap_or_default(), String::from_utf8_lossy(record.value.as_bytes().unwrap_or_default()).into_owned())
}

fn total(driver: &TopologyTestDriver, store: &str, key: &str) -> Option<i64> {
    driver.store_get(store, key).unwrap().map(|v| i64::from_be_bytes(v.try_into().unwrap()))
}

#[test]
fn records_are_forwarded_to_every_child_with_their_own_stores() {
    let mut driver = driver(BANKS, "forward", |_| {});
    for (key, amount) in [("alice", 5), ("alice", -2), ("bob", 7)] {
        driver.pipe_input("deposits", deposit(key, amount, 1)).unwrap();
    }
    let totals: Vec<(String, String)> = driver.read_output("totals").iter().map(text).collect();
    assert_eq!(totals.len(), 3);
    assert!(totals.contains(&("alice".into(), "3".into())) && totals.contains(&("bob".into(), "7".into())), "{totals:?}");
    assert_eq!(total(&driver, "balances", "alice"), Some(3));
    assert_eq!(driver.store_get("counts", "alice").unwrap(), Some(2u64.to_be_bytes().to_vec()));
    assert_eq!(driver.store_get("counts", "bob").unwrap(), Some(1u64.to_be_bytes().to_vec()));
}

#[test]
fn repartition_topics_loop_back_into_the_topology() {
    let mut driver = driver(BANKS, "repartition", |_| {});
    for (key, amount) in [("alice", 5), ("amy", 10), ("bob", 7), ("adam", 1)] {
        driver.pipe_input("deposits", deposit(key, amount, 1)).unwrap();
    }
    assert_eq!(driver.records("test-by-bank-repartition").len(), 4, "every record crossed the repartition topic");
    assert_eq!(total(&driver, "bank-totals", "bank-a"), Some(16));
    assert_eq!(total(&driver, "bank-totals", "bank-b"), Some(7));
    let bank_totals: Vec<(String, String)> = driver.read_output("bank.totals").iter().map(text).collect();
    assert!(bank_totals.contains(&("bank-a".into(), "16".into())), "{bank_totals:?}");
}

#[test]
fn punctuations_fire_on_stream_time_and_wall_clock() {
    let mut driver = driver(TICKER, "punctuate", |_| {});
    for timestamp in [0, 5, 12, 35] {
        driver.pipe_input("events", Record::new("e", "x", timestamp)).unwrap();
    }
    let ticks: Vec<String> = driver.read_output("ticks").iter().map(|r| text(r).1).collect();
    // First due one interval after the first record (10); missed intervals are skipped.
    assert_eq!(ticks, ["stream:12", "stream:35"]);
    driver.advance_wall_clock(999).unwrap();
    assert!(driver.read_output("ticks").is_empty());
    driver.advance_wall_clock(1).unwrap();
    let ticks: Vec<String> = driver.read_output("ticks").iter().map(|r| text(r).1).collect();
    assert_eq!(ticks, ["wall:1000"]);
}

#[test]
fn a_replayed_event_id_has_its_effect_once() {
    let mut driver = driver(BANKS, "dedupe", |_| {});
    let mut record = deposit("alice", 5, 100);
    record.headers.push((EVENT_ID_HEADER.to_string(), b"payment-1".to_vec()));
    driver.pipe_input("deposits", record.clone()).unwrap();
    driver.pipe_input("deposits", record).unwrap();
    assert_eq!(total(&driver, "balances", "alice"), Some(5));
    assert_eq!(driver.read_output("totals").len(), 1, "the duplicate forwards nothing");
}

#[test]
fn expired_dedupe_entries_are_purged_and_the_purge_is_changelogged() {
    let mut driver = driver(BANKS, "dedupe-purge", |_| {});
    let pay = |driver: &mut TopologyTestDriver, id: &str, timestamp: i64| {
        let mut record = deposit("alice", 1, timestamp);
        record.headers.push((EVENT_ID_HEADER.to_string(), id.as_bytes().to_vec()));
        driver.pipe_input("deposits", record).unwrap();
    };
    let ids = |driver: &TopologyTestDriver| -> Vec<String> {
        driver.store_entries("seen").unwrap().iter().filter_map(|(key, _)| key.strip_prefix(b"e").map(|id| String::from_utf8_lossy(id).into_owned())).collect()
    };
    // `seen` keeps ids for 60 s of record time; purges run every 60 s of stream time.
    pay(&mut driver, "payment-1", 100);
    pay(&mut driver, "payment-2", 30_000);
    assert_eq!(ids(&driver), ["payment-1", "payment-2"]);
    pay(&mut driver, "payment-3", 120_200);
    assert_eq!(ids(&driver), ["payment-3"], "payment-1 and -2 are older than 60 s at stream time 120.2 s");
    assert_eq!(driver.store_entries("seen").unwrap().len(), 2, "an id and its time-index entry, nothing else");
    driver.commit().unwrap();
    let tombstones: Vec<String> = driver
        .records("test-seen-changelog")
        .iter()
        .filter(|r| r.value == Value::Null)
        .filter_map(|r| r.key.clone())
        .filter(|key| key.starts_with('e'))
        .collect();
    assert_eq!(tombstones, ["epayment-1", "epayment-2"], "the purge reaches the changelog");
    assert_eq!(total(&driver, "balances", "alice"), Some(3));
}

#[test]
fn a_poison_pill_is_dead_lettered_and_leaves_no_partial_effect() {
    let mut driver = driver(BANKS, "poison", |c| c.processing_error_policy = ErrorPolicy::Dlq);
    driver.pipe_input("deposits", deposit("alice", 5, 1)).unwrap();
    driver.pipe_input("deposits", Record::new("alice", "five", 2)).unwrap();
    driver.pipe_input("deposits", deposit("alice", 1, 3)).unwrap();
    let dead = driver.read_output(DLQ_TOPIC);
    assert_eq!(dead.len(), 1);
    let header = |name: &str| String::from_utf8_lossy(dead[0].header(name).unwrap()).into_owned();
    assert_eq!(header("sluice.error.topic"), "deposits");
    assert_eq!(header("sluice.error.class"), "invalid_record");
    assert_eq!(header("sluice.error.offset"), "1");
    assert_eq!(dead[0].value, Value::from("five"), "without serdes, a dead letter is the original value");
    assert_eq!(total(&driver, "balances", "alice"), Some(6), "processing continued");
    // `count` ran before `sum` failed on the poison pill; its write was rolled back.
    assert_eq!(driver.store_get("counts", "alice").unwrap(), Some(2u64.to_be_bytes().to_vec()));
    assert!(driver.records("test-by-bank-repartition").len() == 2, "the poison pill's forward to rekey was undone");

    let mut strict = self::driver(BANKS, "poison-fail", |_| {});
    let error = strict.pipe_input("deposits", Record::new("bob", "NaN", 1)).unwrap_err();
    assert!(error.to_string().contains("deposits-"), "{error}");
}

/// Deterministic pseudo-random deposits (64-bit LCG), so runs are reproducible.
fn deposits(count: usize, seed: u64) -> Vec<Record> {
    let mut state = seed;
    (0..count)
        .map(|i| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let key = format!("acct-{}", (state >> 33) % 17);
            let amount = ((state >> 40) % 1000) as i64 - 300;
            let mut record = deposit(&key, amount, i as i64);
            record.headers.push((EVENT_ID_HEADER.to_string(), format!("ev-{i}").into_bytes()));
            record
        })
        .collect()
}

fn reference_totals(records: &[Record]) -> BTreeMap<String, i64> {
    let mut totals = BTreeMap::new();
    for record in records {
        let (key, amount) = text(record);
        *totals.entry(key).or_insert(0) += amount.parse::<i64>().unwrap();
    }
    totals
}

fn crash_case(mode: RestartMode, changelog_delivered: bool, name: &str) {
    let inputs = deposits(600, 42);
    let mut driver = driver(BANKS, name, |c| c.commit_every_records = 7);
    for (i, record) in inputs.iter().enumerate() {
        driver.pipe_input("deposits", record.clone()).unwrap();
        if i == 250 || i == 431 {
            let before: Vec<_> = driver.store_entries("balances").unwrap();
            driver.crash(mode, changelog_delivered).unwrap();
            // The restart re-processed the uncommitted inputs: the state is what it was.
            assert!(driver.store_entries("balances").unwrap() == before, "{name}: state after restore equals state before the crash");
        }
    }
    driver.commit().unwrap();
    let expected = reference_totals(&inputs);
    for (key, amount) in &expected {
        assert_eq!(total(&driver, "balances", key), Some(*amount), "{name}: {key}");
        assert_eq!(total(&driver, "raw-balances", key), Some(*amount), "{name}: {key} without dedupe");
    }
    // Outputs are at-least-once on the wire: the last total per key is exact.
    let mut last = BTreeMap::new();
    for record in driver.read_output("totals") {
        let (key, value) = text(&record);
        last.insert(key, value.parse::<i64>().unwrap());
    }
    assert_eq!(last, expected, "{name}: final outputs");
}

#[test]
fn crash_and_restore_from_local_state() {
    crash_case(RestartMode::KeepState, false, "crash-keep");
    crash_case(RestartMode::KeepState, true, "crash-keep-flushed");
}

#[test]
fn crash_and_restore_from_the_changelog_after_wiping_state() {
    crash_case(RestartMode::WipeState, false, "crash-wipe");
    crash_case(RestartMode::WipeState, true, "crash-wipe-flushed");
}

#[test]
fn changelog_records_carry_their_input_position() {
    let mut driver = driver(BANKS, "stamps", |_| {});
    driver.pipe_input("deposits", deposit("alice", 5, 1)).unwrap();
    let sources = driver.changelog_sources("balances");
    assert_eq!(sources.len(), 1);
    assert_eq!(&*sources[0].topic, "deposits");
    assert_eq!(sources[0].offset, 0);
}

#[test]
fn unknown_processor_kinds_are_refused() {
    let topology = Topology::parse(&BANKS.replace("kind = \"rekey\"", "kind = \"rekey-v2\""), "t.toml").unwrap();
    let error = TopologyTestDriver::new(topology, registry(), TestDriverConfig::new("unknown")).err().unwrap();
    assert!(error.to_string().contains("processor `rekey` has unknown kind `rekey-v2`"), "{error}");
}

const TYPED: &str = r#"
[[topic]]
name = "payments"
partitions = 2
schema = "payment"

[[topic]]
name = "settled"
partitions = 2
schema = "settled"

[[store]]
name = "balances"

[[source]]
name = "commands"
topics = ["payments"]

[[processor]]
name = "settle"
kind = "settle"
parents = ["commands"]
stores = ["balances"]

[[sink]]
name = "out"
topic = "settled"
parents = ["settle"]
"#;

/// The test application's own value types.
#[derive(Debug, Clone, PartialEq)]
struct Payment {
    payer: String,
    cents: i64,
}

#[derive(Debug, Clone, PartialEq)]
struct Settled {
    payer: String,
    balance_cents: i64,
}

/// The test application's dead letter.
#[derive(Debug, Clone, PartialEq)]
struct Letter {
    id: String,
    reason: String,
}

/// The test application's serdes: `payer:cents` text; it knows two schemas.
struct TextSerdes;

impl sluice_streams::Serdes for TextSerdes {
    fn check_schema(&self, topic: &str, schema: &str) -> Result<(), String> {
        match schema {
            "payment" | "settled" => Ok(()),
            other => Err(format!("{topic}: no schema {other}")),
        }
    }

    fn deserialize(&self, _topic: &str, _schema: &str, bytes: &[u8]) -> Result<Value, ProcessError> {
        let text = std::str::from_utf8(bytes).map_err(|e| ProcessError::poison("deserialization", e))?;
        let (payer, cents) = text.split_once(':').ok_or_else(|| ProcessError::poison("deserialization", "no `:`"))?;
        Ok(Value::record(Payment { payer: payer.to_string(), cents: cents.parse().map_err(|e| ProcessError::poison("deserialization", e))? }))
    }

    fn serialize(&self, topic: &str, _schema: Option<&str>, value: &dyn sluice_streams::Data) -> Result<Vec<u8>, sluice_streams::SendError> {
        let settled = value.as_any().downcast_ref::<Settled>().ok_or_else(|| sluice_streams::SendError::Fatal(sluice_streams::StreamsError::Send { topic: topic.to_string(), reason: "not Settled".to_string() }))?;
        Ok(format!("{}={}", settled.payer, settled.balance_cents).into_bytes())
    }

    fn dead_letter(&self, letter: &sluice_streams::DeadLetter<'_>) -> Value {
        Value::record(Letter { id: letter.event_id(), reason: letter.message() })
    }
}

fn typed_registry() -> ProcessorRegistry {
    let mut registry = registry();
    registry.set_serdes(TextSerdes);
    registry.register("settle", |_| {
        Ok(Box::new(FnProcessor(|record: Record, ctx: &mut ProcessorContext<'_>| {
            let payment = record.value.as_record::<Payment>().ok_or_else(|| ProcessError::poison("invalid_record", "not a Payment"))?;
            let store = ctx.store("balances")?;
            let balance = store.get(payment.payer.as_bytes())?.map_or(0, |b| i64::from_be_bytes(b.try_into().unwrap_or_default()));
            store.put(payment.payer.as_bytes(), &(balance + payment.cents).to_be_bytes())?;
            let settled = Settled { payer: payment.payer.clone(), balance_cents: balance + payment.cents };
            ctx.forward(Record::new(payment.payer.clone(), Value::record(settled), record.timestamp))
        })))
    });
    registry
}

#[test]
fn typed_values_of_the_application_flow_through_processors_and_its_dead_letters() {
    let config = |name: &str| {
        let mut config = TestDriverConfig::new(name);
        config.processing_error_policy = ErrorPolicy::Dlq;
        config
    };
    let mut driver = TopologyTestDriver::new(Topology::parse(TYPED, "typed.toml").unwrap(), typed_registry(), config("typed")).unwrap();
    let pay = |cents| Value::record(Payment { payer: "ann".to_string(), cents });
    driver.pipe_input("payments", Record::new("ann", pay(1250), 5)).unwrap();
    driver.pipe_input("payments", Record::new("ann", Value::record(Settled { payer: "ann".to_string(), balance_cents: 1 }), 6)).unwrap();
    driver.pipe_input("payments", Record::new("ann", pay(-250), 7)).unwrap();
    let settled: Vec<Settled> = driver.read_output("settled").iter().filter_map(|r| r.value.as_record::<Settled>().cloned()).collect();
    assert_eq!(settled, [Settled { payer: "ann".to_string(), balance_cents: 1250 }, Settled { payer: "ann".to_string(), balance_cents: 1000 }]);
    let dead = driver.read_output(DLQ_TOPIC);
    assert_eq!(dead.len(), 1);
    let letter = dead[0].value.as_record::<Letter>().expect("the application's dead letter");
    assert!(letter.id.starts_with("payments-") && letter.id.ends_with("-1"), "{letter:?}");
    assert!(letter.reason.contains("not a Payment"), "{letter:?}");
    assert_eq!(dead[0].header("sluice.error.class"), Some(&b"invalid_record"[..]), "the engine's headers locate it");

    // A schema the application's serdes do not know is refused before anything runs, and so
    // is any schema without serdes.
    let unknown = TYPED.replace("schema = \"settled\"", "schema = \"ledger\"");
    let error = TopologyTestDriver::new(Topology::parse(&unknown, "typed.toml").unwrap(), typed_registry(), config("typed-unknown")).err().unwrap();
    assert!(error.to_string().contains("settled: no schema ledger"), "{error}");
    let error = TopologyTestDriver::new(Topology::parse(TYPED, "typed.toml").unwrap(), registry(), config("typed-none")).err().unwrap();
    assert!(error.to_string().contains("the application registered no serdes"), "{error}");
}

// ---------------------------------------------------------------- the runtime, on the broker

/// Every record of `topic` so far (values as text), read from the beginning.
fn values_of(servers: &str, topic: &str) -> Vec<String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::{Offset, TopicPartitionList};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", format!("{topic}-reader"))
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, 0, Offset::Beginning).unwrap();
    consumer.assign(&list).unwrap();
    let mut values = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => values.push(String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned()),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
            _ => {}
        }
    }
    values
}

#[test]
fn both_punctuation_clocks_fire_in_production() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use sluice_streams::{now_ms, KafkaStreams, StreamsConfig};
    use std::sync::atomic::{AtomicBool, Ordering};

    let broker = sluice_testkit::broker();
    let servers = broker.bootstrap_servers();
    let topology = Topology::parse(TICKER, "ticker.toml").unwrap();
    let app = "ticker-runtime";
    let io = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    io.block_on(create_topics(&servers, &topology.topics_to_create(app))).unwrap();
    let state_dir = std::env::temp_dir().join(format!("sluice-ticker-{}", std::process::id()));
    let config = StreamsConfig {
        instance_id: "ticker-0".to_string(),
        deserialization_error_policy: ErrorPolicy::Fail,
        processing_error_policy: ErrorPolicy::Fail,
        ..StreamsConfig::new(app, &servers, state_dir.clone())
    };
    let streams = KafkaStreams::new(topology, registry(), config).unwrap();
    let shutdown = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let running = scope.spawn(|| streams.run(&shutdown));
        // Stream time: records 0, 5, 12 and 35 ms past a base fire the 10 ms schedule at 12 and 35
        // past it; wall-clock time fires every second with no input at all.
        let base = now_ms();
        let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", &servers).create().unwrap();
        for offset in [0, 5, 12, 35] {
            producer.send(BaseRecord::to("events").key("e").payload("x").timestamp(base + offset)).unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let ticks = loop {
            let ticks = values_of(&servers, "ticks");
            if ticks.iter().filter(|t| t.starts_with("wall:")).count() >= 2 && ticks.iter().filter(|t| t.starts_with("stream:")).count() >= 2 {
                break ticks;
            }
            assert!(std::time::Instant::now() < deadline, "ticks so far: {ticks:?}");
            std::thread::sleep(Duration::from_millis(200));
        };
        shutdown.store(true, Ordering::SeqCst);
        running.join().unwrap().unwrap();
        let stream: Vec<&String> = ticks.iter().filter(|t| t.starts_with("stream:")).collect();
        assert_eq!(stream, [&format!("stream:{}", base + 12), &format!("stream:{}", base + 35)]);
        let wall: Vec<i64> = ticks.iter().filter_map(|t| t.strip_prefix("wall:")).map(|t| t.parse().unwrap()).collect();
        // Each tick carries the wall clock when it fired (at most one per due second; the
        // exact grid is the driver test's business).
        assert!(wall.windows(2).all(|pair| pair[1] > pair[0]), "ticks in wall-clock order: {wall:?}");
        assert!(wall[0] >= base - 60_000 && wall[0] <= now_ms(), "wall-clock ticks carry the wall clock: {wall:?}");
    });
    std::fs::remove_dir_all(state_dir).unwrap();
}

// ---------------------------------------------------------------- one scenario, driver and broker

const LEDGER: &str = r#"
[[topic]]
name = "ledger.opens"
partitions = 2

[[topic]]
name = "ledger.payments"
partitions = 2

[[topic]]
name = "ledger.results"
partitions = 2

[[store]]
name = "accounts"

[[source]]
name = "ledger-source"
topics = ["ledger.opens", "ledger.payments"]

[[processor]]
name = "ledger"
kind = "ledger"
parents = ["ledger-source"]
stores = ["accounts"]

[[sink]]
name = "results-sink"
topic = "ledger.results"
parents = ["ledger"]
"#;

/// Opens an account (`ledger.opens`) or applies a payment to it (`ledger.payments`): a payment
/// judged before its account's opening is rejected, so the outcome depends on the order in
/// which the two topics are read.
fn ledger_registry() -> ProcessorRegistry {
    let mut registry = registry();
    registry.register("ledger", |_| {
        Ok(Box::new(FnProcessor(|record: Record, ctx: &mut ProcessorContext<'_>| {
            let key = record.key.clone().unwrap_or_default();
            let opening = ctx.record_metadata().is_some_and(|m| &*m.topic == "ledger.opens");
            let store = ctx.store("accounts")?;
            let outcome = if opening {
                store.put(key.as_bytes(), b"0")?;
                "opened".to_string()
            } else {
                let amount: i64 = String::from_utf8_lossy(record.value.as_bytes().unwrap_or_default()).parse().unwrap_or(0);
                match store.get(key.as_bytes())? {
                    None => "rejected:unknown".to_string(),
                    Some(balance) => {
                        let balance = String::from_utf8_lossy(&balance).parse::<i64>().unwrap_or(0) + amount;
                        store.put(key.as_bytes(), balance.to_string().as_bytes())?;
                        format!("ok:{balance}")
                    }
                }
            };
            ctx.forward(Record::new(key, outcome.as_str(), record.timestamp))
        })))
    });
    registry
}

/// The scenario: per account, a payment stamped before its opening, the opening, and two
/// payments after it; every payment (in timestamp order, as producers stamp them) is produced
/// before every opening.
fn ledger_inputs(base: i64) -> Vec<(&'static str, String, String, i64)> {
    let mut payments = Vec::new();
    let mut opens = Vec::new();
    for i in 0..10i64 {
        let key = format!("acct-{i}");
        payments.push(("ledger.payments", key.clone(), "5".to_string(), base + 10 * i + 2));
        opens.push(("ledger.opens", key.clone(), String::new(), base + 10 * i + 5));
        payments.push(("ledger.payments", key.clone(), (i + 1).to_string(), base + 10 * i + 7));
        payments.push(("ledger.payments", key, "100".to_string(), base + 500 + i));
    }
    payments.sort_by_key(|p| p.3);
    payments.into_iter().chain(opens).collect()
}

/// Outputs by key, in order.
type Outcomes = BTreeMap<String, Vec<String>>;

#[test]
fn one_scenario_gives_the_same_outputs_and_stores_in_the_driver_and_on_the_broker() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use sluice_streams::{KafkaStreams, StreamsConfig};
    use std::sync::atomic::{AtomicBool, Ordering};

    let base = 1_700_000_000_000;
    let inputs = ledger_inputs(base);

    // The driver: the records appended in production order, then run.
    let mut driver = TopologyTestDriver::new(Topology::parse(LEDGER, "ledger.toml").unwrap(), ledger_registry(), TestDriverConfig::new("ledger")).unwrap();
    for (topic, key, value, timestamp) in &inputs {
        driver.append(topic, Record::new(key.as_str(), value.as_str(), *timestamp)).unwrap();
    }
    driver.run().unwrap();
    driver.commit().unwrap();
    let mut driver_outcomes = Outcomes::new();
    for record in driver.records("ledger.results") {
        let (key, value) = text(&record);
        driver_outcomes.entry(key).or_default().push(value);
    }
    let driver_store: BTreeMap<Vec<u8>, Vec<u8>> = driver.store_entries("accounts").unwrap().into_iter().collect();
    // Read in timestamp order, the early payment finds no account and the others do.
    assert_eq!(driver_outcomes["acct-3"], ["rejected:unknown", "opened", "ok:4", "ok:104"]);

    // The broker: the same records produced before the application starts.
    let broker = sluice_testkit::broker();
    let servers = broker.bootstrap_servers();
    let topology = Topology::parse(LEDGER, "ledger.toml").unwrap();
    let app = "ledger-runtime";
    let io = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    io.block_on(create_topics(&servers, &topology.topics_to_create(app))).unwrap();
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", &servers).set("partitioner", "murmur2_random").create().unwrap();
    for (topic, key, value, timestamp) in &inputs {
        producer.send(BaseRecord::to(topic).key(key).payload(value).timestamp(*timestamp)).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let state_dir = std::env::temp_dir().join(format!("sluice-ledger-{}", std::process::id()));
    let config = StreamsConfig { deserialization_error_policy: ErrorPolicy::Fail, processing_error_policy: ErrorPolicy::Fail, ..StreamsConfig::new(app, &servers, state_dir.clone()) };
    let streams = KafkaStreams::new(topology, ledger_registry(), config).unwrap();
    let shutdown = AtomicBool::new(false);
    // Every record of a topic, by key in offset order, and the last value per key.
    let read_all = |topic: &str| -> Vec<(Vec<u8>, Vec<u8>)> {
        let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &servers).set("group.id", format!("{topic}-check")).set("enable.partition.eof", "true").create().unwrap();
        let mut list = rdkafka::TopicPartitionList::new();
        for partition in 0..2 {
            list.add_partition_offset(topic, partition, rdkafka::Offset::Beginning).unwrap();
        }
        consumer.assign(&list).unwrap();
        let (mut records, mut ended) = (Vec::new(), 0);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while ended < 2 && std::time::Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => records.push((m.key().unwrap_or_default().to_vec(), m.payload().unwrap_or_default().to_vec())),
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => ended += 1,
                _ => {}
            }
        }
        records
    };
    std::thread::scope(|scope| {
        let running = scope.spawn(|| streams.run(&shutdown));
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        while read_all("ledger.results").len() < inputs.len() {
            assert!(std::time::Instant::now() < deadline, "outputs so far: {}", read_all("ledger.results").len());
            std::thread::sleep(Duration::from_millis(200));
        }
        shutdown.store(true, Ordering::SeqCst);
        running.join().unwrap().unwrap();
    });
    let mut broker_outcomes = Outcomes::new();
    for (key, value) in read_all("ledger.results") {
        broker_outcomes.entry(String::from_utf8(key).unwrap()).or_default().push(String::from_utf8(value).unwrap());
    }
    let broker_store: BTreeMap<Vec<u8>, Vec<u8>> = read_all(&format!("{app}-accounts-changelog")).into_iter().collect();
    assert_eq!(broker_outcomes, driver_outcomes, "the same outputs, in the same order per key");
    assert_eq!(broker_store, driver_store, "the same store contents");
    std::fs::remove_dir_all(state_dir).unwrap();
}

const RELAY: &str = r#"
[[topic]]
name = "hang.in"
partitions = 1

[[topic]]
name = "hang.out"
partitions = 1

[[source]]
name = "in"
topics = ["hang.in"]

[[sink]]
name = "out"
topic = "hang.out"
parents = ["in"]
"#;

/// A transaction that never ends holds a task's committed offsets (read with `require_stable`
/// under exactly_once_v2): the thread stops with `TaskTimeout` after `task.timeout.ms` instead
/// of waiting silently; once the transaction is aborted, the same application starts the task
/// (docs/guarantees.md, a hanging transaction).
#[test]
fn a_task_held_by_a_transaction_that_never_ends_stops_the_thread_after_task_timeout() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use sluice_streams::{KafkaStreams, ProcessingGuarantee, StreamsConfig, StreamsError};
    use std::sync::atomic::{AtomicBool, Ordering};

    let broker = sluice_testkit::broker();
    let servers = broker.bootstrap_servers();
    let app = "hanging-runtime";
    let topology = || Topology::parse(RELAY, "relay.toml").unwrap();
    let io = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    io.block_on(create_topics(&servers, &topology().topics_to_create(app))).unwrap();

    // Another producer's transaction commits offsets for the application's group and stays open.
    let hanging: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &servers)
        .set("transactional.id", "hanging-elsewhere")
        .set("transaction.timeout.ms", "300000")
        .create()
        .unwrap();
    hanging.init_transactions(Duration::from_secs(30)).unwrap();
    hanging.begin_transaction().unwrap();
    hanging.send(BaseRecord::to("hang.in").key("k").payload("held")).map_err(|(e, _)| e).unwrap();
    let group: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &servers).set("group.id", app).create().unwrap();
    let mut offsets = rdkafka::TopicPartitionList::new();
    offsets.add_partition_offset("hang.in", 0, rdkafka::Offset::Offset(1)).unwrap();
    hanging.send_offsets_to_transaction(&offsets, &group.group_metadata().unwrap(), Duration::from_secs(30)).unwrap();
    hanging.flush(Duration::from_secs(10)).unwrap();

    let state_dir = std::env::temp_dir().join(format!("sluice-hanging-{}", std::process::id()));
    let config = || StreamsConfig {
        processing_guarantee: ProcessingGuarantee::ExactlyOnceV2,
        task_timeout_ms: 3_000,
        ..StreamsConfig::new(app, &servers, state_dir.clone())
    };
    let shutdown = AtomicBool::new(false);
    let started = std::time::Instant::now();
    let streams = KafkaStreams::new(topology(), registry(), config()).unwrap();
    let outcome = std::thread::scope(|scope| {
        let running = scope.spawn(|| streams.run(&shutdown));
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        while !running.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        shutdown.store(true, Ordering::SeqCst);
        running.join().unwrap()
    });
    match outcome {
        Err(StreamsError::TaskTimeout { task, partitions, .. }) => {
            assert_eq!(task.partition, 0);
            assert_eq!(partitions, "hang.in-0");
        }
        other => panic!("expected a task timeout, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_secs(3), "not before task.timeout.ms");

    // Ended (aborted), the transaction no longer holds the offsets: the task starts and relays.
    hanging.abort_transaction(Duration::from_secs(30)).unwrap();
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", &servers).create().unwrap();
    producer.send(BaseRecord::to("hang.in").key("k").payload("after")).map_err(|(e, _)| e).unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    let shutdown = AtomicBool::new(false);
    let streams = KafkaStreams::new(topology(), registry(), config()).unwrap();
    std::thread::scope(|scope| {
        let running = scope.spawn(|| streams.run(&shutdown));
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let out = loop {
            let out = values_of(&servers, "hang.out");
            if !out.is_empty() || running.is_finished() {
                break out;
            }
            assert!(std::time::Instant::now() < deadline, "nothing relayed after the abort");
            std::thread::sleep(Duration::from_millis(200));
        };
        shutdown.store(true, Ordering::SeqCst);
        running.join().unwrap().unwrap();
        assert_eq!(out, ["after"], "the aborted record is not relayed; the one after it is");
    });
    let _ = std::fs::remove_dir_all(state_dir);
}
