//! `sluice load`: the load harness of the streams runtime. On one broker, in one run:
//!
//! 1. **relay**: a plain rdkafka consume-produce loop (no state), flushing the producer and
//!    committing offsets every `commit_interval_ms`: the ceiling of any processor.
//! 2. **aggregation**: the balance aggregation (`keyed-sum` with a changelogged store and a
//!    dedupe store) run by the Sluice runtime with the commit protocol of docs/guarantees.md.
//! 3. **latency**: the aggregation at a moderate, fixed rate; end-to-end latency from the
//!    input record's timestamp (set when produced) to the output's arrival at a consumer.
//!
//! Throughput is measured from the moment every partition is assigned (and, for the
//! runtime, every task restored) to the moment every input is committed, with the whole input
//! produced beforehand, so the producer never limits it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use sluice_streams::builtin::register_builtins;
use sluice_streams::{now_ms, ErrorPolicy, KafkaStreams, ProcessingGuarantee, StreamsConfig};
use sluice_streams::topology::TopicSpec;
use sluice_streams::{ProcessorRegistry, Topology};

/// Flags of `sluice load`.
#[derive(clap::Args)]
pub(crate) struct LoadArgs {
    /// Use this broker (host:port); default: start a private Apache Kafka broker.
    #[arg(long)]
    bootstrap_servers: Option<String>,
    /// Records per throughput phase.
    #[arg(long, default_value_t = 50_000)]
    records: usize,
    /// Distinct keys (accounts).
    #[arg(long, default_value_t = 1_000)]
    keys: usize,
    /// Records per second in the latency phase.
    #[arg(long, default_value_t = 1_000)]
    rate: u64,
    /// Length of the latency phase in seconds.
    #[arg(long, default_value_t = 15)]
    duration_s: u64,
    /// `commit.interval.ms` of the runtime (and the relay's flush-and-commit period).
    #[arg(long, default_value_t = 100)]
    commit_interval_ms: u64,
    /// `processing.guarantee` of the aggregation: `at_least_once` or `exactly_once_v2`.
    #[arg(long, default_value = "at_least_once", value_parser = parse_guarantee)]
    processing_guarantee: ProcessingGuarantee,
}

fn parse_guarantee(text: &str) -> Result<ProcessingGuarantee, String> {
    match text {
        "at_least_once" => Ok(ProcessingGuarantee::AtLeastOnce),
        "exactly_once_v2" => Ok(ProcessingGuarantee::ExactlyOnceV2),
        other => Err(format!("`{other}`: at_least_once or exactly_once_v2")),
    }
}

const PARTITIONS: i32 = 4;
/// `application.id` of the aggregation.
const APP: &str = "load";
const AGGREGATION: &str = r#"
[[topic]]
name = "load.amounts"
partitions = 4

[[topic]]
name = "load.totals"
partitions = 4

[[store]]
name = "balances"

[[store]]
name = "seen"
kind = "dedupe"
retention_ms = 86400000

[[source]]
name = "amounts"
topics = ["load.amounts"]

[[processor]]
name = "sum"
kind = "keyed-sum"
parents = ["amounts"]
stores = ["balances", "seen"]
config = { dedupe = "seen" }

[[sink]]
name = "totals"
topic = "load.totals"
parents = ["sum"]
"#;

/// Runs the three phases and prints a report.
pub(crate) async fn run(args: LoadArgs) -> Result<(), String> {
    let broker = match &args.bootstrap_servers {
        Some(_) => None,
        None => {
            println!("starting a private Apache Kafka broker...");
            Some(tokio::task::spawn_blocking(sluice_testkit::Broker::start).await.map_err(|e| e.to_string())?)
        }
    };
    let servers = args.bootstrap_servers.clone().unwrap_or_else(|| broker.as_ref().map(|b| b.bootstrap_servers()).unwrap_or_default());
    let topology = Topology::parse(AGGREGATION, "load-aggregation.toml").map_err(|e| e.to_string())?;
    let mut specs = topology.topics_to_create(APP);
    for name in ["load.relay.in", "load.relay.out"] {
        specs.push(TopicSpec { name: name.to_string(), ..specs[0].clone() });
    }
    if broker.is_none() {
        // A reused broker must not hold an earlier run's records or offsets.
        let existing = sluice_streams::admin::partition_counts_of(&servers).map_err(|e| e.to_string())?;
        if let Some((name, _)) = existing.iter().find(|(name, _)| specs.iter().any(|s| &s.name == name)) {
            return Err(format!("topic `{name}` exists on {servers}: sluice load needs a broker without load.* topics (omit --bootstrap-servers to use a private one)"));
        }
    }
    sluice_streams::admin::create_topics(&servers, &specs).await.map_err(|e| e.to_string())?;
    let report = tokio::task::spawn_blocking(move || measure(&args, &servers, topology)).await.map_err(|e| e.to_string())??;
    println!("{report}");
    Ok(())
}

fn measure(args: &LoadArgs, servers: &str, topology: Topology) -> Result<String, String> {
    let commit_interval = Duration::from_millis(args.commit_interval_ms);
    println!("producing {} records to load.relay.in and load.amounts...", args.records);
    produce(servers, "load.relay.in", 0, args.records, args.keys)?;
    produce(servers, "load.amounts", 0, args.records, args.keys)?;

    println!("phase 1: relay");
    let (relayed, relay_s) = relay(servers, args.records, commit_interval)?;
    if relayed < args.records {
        println!("note: the broker served {relayed} of the {} records produced to load.relay.in", args.records);
    }
    let relay_rate = relayed as f64 / relay_s;
    println!("phase 2: aggregation (sluice runtime, changelog + dedupe)");
    let state_dir = std::env::temp_dir().join(format!("sluice-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state_dir);
    let config = StreamsConfig {
        instance_id: format!("load-{}", std::process::id()),
        commit_interval_ms: args.commit_interval_ms,
        deserialization_error_policy: ErrorPolicy::Dlq,
        processing_error_policy: ErrorPolicy::Dlq,
        processing_guarantee: args.processing_guarantee,
        ..StreamsConfig::new(APP, servers, state_dir.clone())
    };
    let mut registry = ProcessorRegistry::new();
    register_builtins(&mut registry);
    let streams = KafkaStreams::new(topology, registry, config).map_err(|e| e.to_string())?;
    let iq = streams.interactive_queries();
    let shutdown = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&shutdown);
    let worker = std::thread::spawn(move || streams.run(&flag));
    let outcome = (|| {
        wait_for("every task to be running", Duration::from_secs(120), || iq.local_task_count() == PARTITIONS as usize)?;
        let started = Instant::now();
        // One probe consumer for the whole wait: a new client per check would steal the CPU
        // being measured.
        let probe: BaseConsumer = sluice_streams::kafka_client::client_config(servers).set("group.id", APP).create().map_err(|e| e.to_string())?;
        wait_for("every input to be committed", Duration::from_secs(600), || committed(&probe, "load.amounts") >= args.records as i64)?;
        let aggregation_s = started.elapsed().as_secs_f64();
        println!("phase 3: latency at {} records/s for {} s", args.rate, args.duration_s);
        let latencies = latency(servers, args)?;
        Ok::<_, String>((aggregation_s, latencies))
    })();
    shutdown.store(true, Ordering::SeqCst);
    let stopped = worker.join().map_err(|_| "the stream thread panicked".to_string())?;
    let _ = std::fs::remove_dir_all(&state_dir);
    let (aggregation_s, (mut latencies, mut broker)) = outcome?;
    stopped.map_err(|e| e.to_string())?;
    let aggregation_rate = args.records as f64 / aggregation_s;
    latencies.sort_unstable_by(f64::total_cmp);
    broker.sort_unstable_by(f64::total_cmp);
    let percentile = |v: &[f64], p: f64| v.get(((v.len() as f64 * p).ceil() as usize).saturating_sub(1)).copied().unwrap_or(0.0);
    let pct = |p: f64| percentile(&latencies, p);
    let budget = args.commit_interval_ms as f64 + 100.0;
    let ratio = aggregation_rate / relay_rate;
    Ok(format!(
        "\nsluice load: {} records, {} keys, 4 partitions, commit.interval.ms={}, {:?}\n\
         (a) relay (rdkafka consume -> produce, no state)      {relay_rate:>10.0} records/s  ({relay_s:.2} s)\n\
         (b) aggregation (runtime, changelog + dedupe)         {aggregation_rate:>10.0} records/s  ({aggregation_s:.2} s)\n\
         (b)/(a)                                               {:>10.1} %   (target >= 60 %: {})\n\
         end-to-end latency at {} records/s, {} records: p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms\n\
         p99 target < commit.interval.ms + 100 = {budget:.0} ms: {}\n\
         broker alone (produce -> consume of the inputs, same run): p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        args.records,
        args.keys,
        args.commit_interval_ms,
        args.processing_guarantee,
        ratio * 100.0,
        if ratio >= 0.6 { "met" } else { "MISSED" },
        args.rate,
        latencies.len(),
        pct(0.50),
        pct(0.95),
        pct(0.99),
        latencies.last().copied().unwrap_or(0.0),
        if pct(0.99) < budget { "met" } else { "MISSED" },
        percentile(&broker, 0.50),
        percentile(&broker, 0.95),
        percentile(&broker, 0.99),
        broker.last().copied().unwrap_or(0.0),
    ))
}

fn producer(servers: &str) -> Result<BaseProducer<DeliveryCounter>, String> {
    sluice_streams::kafka_client::client_config(servers)
        .set("partitioner", "murmur2_random")
        .set("enable.idempotence", "true")
        .set("max.in.flight.requests.per.connection", "1")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create_with_context(DeliveryCounter::default())
        .map_err(|e| e.to_string())
}

/// Counts failed deliveries (a load run with lost input would measure nothing).
#[derive(Default)]
struct DeliveryCounter {
    failed: std::sync::atomic::AtomicUsize,
    last_error: std::sync::Mutex<Option<String>>,
}

impl rdkafka::ClientContext for DeliveryCounter {}

impl rdkafka::producer::ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            *self.last_error.lock().expect("error lock") = Some(error.to_string());
        }
    }
}

/// Keyed integer amounts with unique `event_id` headers, as the aggregation expects.
fn produce(servers: &str, topic: &str, from: usize, count: usize, keys: usize) -> Result<(), String> {
    let producer = producer(servers)?;
    for i in from..from + count {
        let key = format!("acct-{}", i % keys);
        let value = ((i % 97) as i64 - 40).to_string();
        let event_id = format!("{topic}-{i}");
        let headers = OwnedHeaders::new().insert(Header { key: "event_id", value: Some(event_id.as_bytes()) });
        let mut record = BaseRecord::to(topic).key(&key).payload(&value).headers(headers);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, returned)) => {
                    producer.poll(Duration::from_millis(5));
                    record = returned;
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60)).map_err(|e| e.to_string())?;
    let failed = producer.context().failed.load(Ordering::Relaxed);
    if failed > 0 {
        return Err(format!("{topic}: {failed} of {count} records were not delivered ({:?})", producer.context().last_error.lock().expect("error lock")));
    }
    Ok(())
}

/// The relay; returns how many records it relayed (all of them: it stops at the end of every
/// partition) and the seconds from the start of consumption to everything committed.
fn relay(servers: &str, records: usize, commit_interval: Duration) -> Result<(usize, f64), String> {
    let mut relay = Relay::new(servers, "load-relay", "load.relay.out", commit_interval)?;
    let mut list = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        list.add_partition_offset("load.relay.in", partition, Offset::Beginning).map_err(|e| e.to_string())?;
    }
    relay.consumer.assign(&list).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut at_end = [false; PARTITIONS as usize];
    while relay.relayed < records && !(relay.relayed > 0 && at_end.iter().all(|e| *e)) {
        if Instant::now() > deadline {
            return Err(format!("relay: {} of {records} records after 600 s", relay.relayed));
        }
        match relay.step()? {
            Step::Relayed(partition) => at_end[partition as usize] = false,
            Step::End(partition) => at_end[partition as usize] = true,
            Step::Idle => {}
        }
        let finished = relay.relayed == records || at_end.iter().all(|e| *e);
        relay.maybe_commit(finished)?;
    }
    Ok((relay.relayed, started.elapsed().as_secs_f64()))
}

/// What one [`Relay::step`] did.
enum Step {
    /// Relayed a record of this partition.
    Relayed(i32),
    /// Reached the end of this partition.
    End(i32),
    /// Nothing fetched.
    Idle,
}

/// The raw relay: a plain rdkafka consume-produce loop (key, value, headers and timestamp
/// copied; no state), flushing the producer and committing what it relayed every
/// `commit_interval` (`at_least_once`): the ceiling of any processor on the same broker.
struct Relay {
    consumer: BaseConsumer,
    producer: BaseProducer<DeliveryCounter>,
    output: String,
    /// Next offset to commit, per (topic, partition).
    positions: std::collections::BTreeMap<(String, i32), i64>,
    relayed: usize,
    commit_interval: Duration,
    last_commit: Instant,
}

impl Relay {
    fn new(servers: &str, group: &str, output: &str, commit_interval: Duration) -> Result<Relay, String> {
        let consumer: BaseConsumer = sluice_streams::kafka_client::client_config(servers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "true")
            .create()
            .map_err(|e| e.to_string())?;
        let producer = producer(servers)?;
        Ok(Relay { consumer, producer, output: output.to_string(), positions: Default::default(), relayed: 0, commit_interval, last_commit: Instant::now() })
    }

    /// Relays the next fetched record, if any.
    fn step(&mut self) -> Result<Step, String> {
        let step = match self.consumer.poll(Duration::from_millis(10)) {
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(partition))) => Step::End(partition),
            Some(Ok(message)) => {
                let mut record = BaseRecord::to(&self.output).payload(message.payload().unwrap_or_default());
                if let Some(key) = message.key() {
                    record = record.key(key);
                }
                if let Some(timestamp) = message.timestamp().to_millis() {
                    record = record.timestamp(timestamp);
                }
                if let Some(headers) = message.headers() {
                    record = record.headers(headers.detach());
                }
                while let Err((_, returned)) = self.producer.send(record) {
                    self.producer.poll(Duration::from_millis(5));
                    record = returned;
                }
                self.positions.insert((message.topic().to_string(), message.partition()), message.offset() + 1);
                self.relayed += 1;
                Step::Relayed(message.partition())
            }
            // librdkafka reports and retries what is transient (a coordinator loading after
            // a broker start, a leader moving); the caller's deadline bounds a relay that
            // never progresses.
            Some(Err(error)) => {
                tracing::warn!(%error, "relay: consumer error");
                Step::Idle
            }
            None => Step::Idle,
        };
        self.producer.poll(Duration::ZERO);
        Ok(step)
    }

    /// Every commit interval (or `now`): waits for the records in flight, then commits.
    fn maybe_commit(&mut self, now: bool) -> Result<(), String> {
        if !now && self.last_commit.elapsed() < self.commit_interval {
            return Ok(());
        }
        await_deliveries(&self.producer, Duration::from_secs(30))?;
        if self.producer.context().failed.load(Ordering::Relaxed) > 0 {
            return Err(format!("relay: deliveries failed: {:?}", self.producer.context().last_error.lock().expect("error lock")));
        }
        self.last_commit = Instant::now();
        if self.positions.is_empty() {
            return Ok(());
        }
        let mut list = TopicPartitionList::new();
        for ((topic, partition), offset) in &self.positions {
            list.add_partition_offset(topic, *partition, Offset::Offset(*offset)).map_err(|e| e.to_string())?;
        }
        self.consumer.commit(&list, CommitMode::Sync).map_err(|e| e.to_string())?;
        // The interval runs from the end of a commit, as `commit.interval.ms` does in Kafka
        // Streams: a slow commit must not make every next step a commit.
        self.last_commit = Instant::now();
        Ok(())
    }
}

/// `list` at the group's committed offsets (the beginning where there is none), asked until
/// the group coordinator answers. An assignment at `Offset::Stored` asks once: librdkafka
/// does not ask again when a freshly started broker's coordinator is still loading
/// (NOT_COORDINATOR), and the relay would then wait for ever.
fn committed_or_beginning(consumer: &BaseConsumer, list: TopicPartitionList) -> Result<TopicPartitionList, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let committed = loop {
        match consumer.committed_offsets(list.clone(), Duration::from_secs(10)) {
            Ok(committed) => break committed,
            Err(error) if Instant::now() < deadline => {
                tracing::warn!(%error, "relay: the group's committed offsets are not available yet; asking again");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(error) => return Err(format!("the group's committed offsets: {error}")),
        }
    };
    let mut assigned = TopicPartitionList::new();
    for e in committed.elements() {
        let offset = match e.offset() {
            Offset::Offset(offset) => Offset::Offset(offset),
            _ => Offset::Beginning,
        };
        assigned.add_partition_offset(e.topic(), e.partition(), offset).map_err(|e| e.to_string())?;
    }
    Ok(assigned)
}

/// Waits until every record sent is delivered (or failed). rdkafka's `flush` polls in 100 ms
/// slices whenever anything is in flight (0.39: `BaseProducer::poll` runs to its deadline), so
/// a relay flushing every 100 ms would idle half its time: this polls in 1 ms slices instead.
fn await_deliveries<C: rdkafka::producer::ProducerContext>(producer: &BaseProducer<C>, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while producer.in_flight_count() > 0 {
        if Instant::now() > deadline {
            return Err(format!("{} records not delivered after {timeout:?}", producer.in_flight_count()));
        }
        producer.poll(Duration::from_millis(1));
    }
    Ok(())
}

/// Flags of `sluice relay`.
#[derive(clap::Args)]
pub(crate) struct RelayArgs {
    /// Kafka bootstrap servers (host:port).
    #[arg(long)]
    bootstrap_servers: String,
    /// Topic to read (every partition, from the group's committed offsets).
    #[arg(long)]
    input: String,
    /// Topic to write.
    #[arg(long)]
    output: String,
    /// Consumer group.
    #[arg(long)]
    group: String,
    /// Flush-and-commit period.
    #[arg(long, default_value_t = 100)]
    commit_interval_ms: u64,
}

/// `sluice relay`: the raw relay until SIGTERM or Ctrl-C (scripts/bench-peers' ceiling).
pub(crate) async fn run_relay(args: RelayArgs) -> Result<(), String> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let mut worker = tokio::task::spawn_blocking(move || {
        let mut relay = Relay::new(&args.bootstrap_servers, &args.group, &args.output, Duration::from_millis(args.commit_interval_ms))?;
        // Every partition, from the group's committed offsets (the beginning without one).
        let metadata = relay.consumer.fetch_metadata(Some(&args.input), Duration::from_secs(10)).map_err(|e| e.to_string())?;
        let mut list = TopicPartitionList::new();
        for partition in metadata.topics().iter().filter(|t| t.name() == args.input).flat_map(|t| t.partitions()) {
            list.add_partition(&args.input, partition.id());
        }
        if list.count() == 0 {
            return Err(format!("topic `{}` has no partitions", args.input));
        }
        let list = committed_or_beginning(&relay.consumer, list)?;
        relay.consumer.assign(&list).map_err(|e| e.to_string())?;
        while !flag.load(Ordering::SeqCst) {
            relay.step()?;
            relay.maybe_commit(false)?;
        }
        relay.maybe_commit(true)
    });
    tokio::select! {
        () = crate::dev::wait_for_shutdown() => {
            stop.store(true, Ordering::SeqCst);
            worker.await.map_err(|e| e.to_string())?
        }
        finished = &mut worker => finished.map_err(|e| e.to_string())?,
    }
}

/// Sum of the committed offsets of the probe's group on `topic`.
fn committed(consumer: &BaseConsumer, topic: &str) -> i64 {
    let mut list = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        list.add_partition(topic, p);
    }
    match consumer.committed_offsets(list, Duration::from_secs(5)) {
        Ok(list) => list.elements().iter().map(|e| if let Offset::Offset(o) = e.offset() { o } else { 0 }).sum(),
        Err(_) => 0,
    }
}

/// Produces at `rate` for `duration_s` while a consumer of the outputs records, per output,
/// the milliseconds since its input was produced.
fn latency(servers: &str, args: &LoadArgs) -> Result<(Vec<f64>, Vec<f64>), String> {
    let consumer: BaseConsumer = sluice_streams::kafka_client::client_config(servers)
        .set("group.id", "load-latency")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| e.to_string())?;
    // The inputs too: their latency is the broker's own produce-to-consume time, the floor
    // under the end-to-end figure.
    let mut list = TopicPartitionList::new();
    for topic in ["load.totals", "load.amounts"] {
        for p in 0..PARTITIONS {
            list.add_partition_offset(topic, p, Offset::End).map_err(|e| e.to_string())?;
        }
    }
    consumer.assign(&list).map_err(|e| e.to_string())?;
    // Let the consumer settle at the end before the first measured record.
    for _ in 0..20 {
        consumer.poll(Duration::from_millis(50));
    }
    let total = (args.rate * args.duration_s) as usize;
    let stop = Arc::new(AtomicBool::new(false));
    let (servers_owned, rate, keys, stop_flag) = (servers.to_string(), args.rate, args.keys, Arc::clone(&stop));
    let sender = std::thread::spawn(move || -> Result<(), String> {
        let producer = producer(&servers_owned)?;
        let started = Instant::now();
        for i in 0..total {
            // Paced: record i leaves at i / rate seconds.
            let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let key = format!("acct-{}", i % keys);
            let event_id = format!("latency-{i}");
            let headers = OwnedHeaders::new().insert(Header { key: "event_id", value: Some(event_id.as_bytes()) });
            let record = BaseRecord::to("load.amounts").key(&key).payload("1").headers(headers).timestamp(now_ms());
            producer.send(record).map_err(|(e, _)| e.to_string())?;
            producer.poll(Duration::ZERO);
            if stop_flag.load(Ordering::SeqCst) {
                break;
            }
        }
        producer.flush(Duration::from_secs(30)).map_err(|e| e.to_string())
    });
    let mut latencies = Vec::with_capacity(total);
    let mut broker = Vec::with_capacity(total);
    let deadline = Instant::now() + Duration::from_secs(args.duration_s + 60);
    while (latencies.len() < total || broker.len() < total) && Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(10)) {
            if let Some(sent) = message.timestamp().to_millis() {
                let target = if message.topic() == "load.totals" { &mut latencies } else { &mut broker };
                target.push((now_ms() - sent) as f64);
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    sender.join().map_err(|_| "the latency producer panicked".to_string())??;
    if latencies.len() < total {
        return Err(format!("latency: only {} of {total} outputs arrived", latencies.len()));
    }
    Ok((latencies, broker))
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
