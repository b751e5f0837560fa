//! The `sluice` binary as a user runs it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// A child process that is killed when dropped, so a failing test leaves nothing running.
struct Running(std::process::Child);

impl std::ops::Deref for Running {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn sluice() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    command.env_remove("RUST_LOG");
    // Every process of a test's application shares one internal key (`sluice dev` makes its
    // own) and one registry account.
    command.env("SLUICE__INTERNAL_KEY", E2E_INTERNAL_KEY);
    command.env("SLUICE__SCHEMA_REGISTRY_USER_INFO", E2E_REGISTRY_USER_INFO);
    command
}

fn run(args: &[&str]) -> Output {
    sluice().args(args).output().expect("sluice runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `dir/topology.toml` and `dir/sluice.toml` for application `app` on `servers`, with
/// state in `dir/state` and `extra` settings (TOML lines); returns the settings file.
fn write_config(dir: &Path, app: &str, servers: &str, topology: &str, extra: &str) -> PathBuf {
    std::fs::write(dir.join("topology.toml"), topology).unwrap();
    let config = dir.join("sluice.toml");
    let settings = format!(
        "application_id = \"{app}\"\nbootstrap_servers = \"{servers}\"\nstate_dir = \"{}\"\ntopology = \"{}\"\n{extra}",
        dir.join("state").display(),
        dir.join("topology.toml").display()
    );
    std::fs::write(&config, settings).unwrap();
    config
}

fn topics_on(bootstrap: &str) -> Vec<String> {
    topics_seen(ClientConfig::new().set("bootstrap.servers", bootstrap))
}

/// The topics `config`'s principal may describe.
fn topics_seen(config: &ClientConfig) -> Vec<String> {
    let consumer: BaseConsumer = config.create().unwrap();
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(10)).unwrap();
    metadata.topics().iter().map(|t| t.name().to_string()).collect()
}

#[test]
fn topology_describe_prints_both_subtopologies() {
    let output = run(&["topology", "describe"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(stdout.starts_with("Topologies:\n   Sub-topology: 0\n"), "{stdout}");
    assert!(stdout.contains("    Processor: balance-check (stores: [accounts, ledger, payments, command-status, user-dedupe, notifications])"), "{stdout}");
    assert!(stdout.contains("   Sub-topology: 1\n    Source: identity-claims-source (topics: [sluice-identity-claim-repartition])"), "{stdout}");
    assert!(stdout.contains("    Processor: hmrc-death-notification (stores: [identity-claims, identifier-dedupe, notification-status])"), "{stdout}");
}

#[test]
fn topology_validate_fails_naming_the_line() {
    let dir = temp_dir("validate");
    let original = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../topology.toml")).unwrap();
    let ok = run(&["topology", "validate"]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));

    let unknown_store = original.replace(r#"stores = ["accounts", "ledger", "payments", "users", "user-dedupe", "notifications"]"#, r#"stores = ["accounts", "ledgr", "payments", "users", "user-dedupe", "notifications"]"#);
    let line = unknown_store.lines().position(|l| l.contains("\"ledgr\"")).unwrap() + 1;
    let file = dir.join("unknown-store.toml");
    std::fs::write(&file, unknown_store).unwrap();
    let output = run(&["topology", "validate", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.contains(&format!("unknown-store.toml:{line}:")) && stderr.contains("unknown store `ledgr`"), "{stderr}");

    let skewed = original.replacen("name = \"hmrc.death.notification\"\n", "name = \"hmrc.death.notification\"\npartitions = 8\n", 1);
    let file = dir.join("skewed.toml");
    std::fs::write(&file, skewed).unwrap();
    let output = run(&["topology", "validate", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("not co-partitioned") && stderr.contains("hmrc.death.notification (8)"), "{stderr}");

    // Schema names are the pipeline's serdes' to judge: Avro files under schemas/avro/.
    let unknown_schema = original.replacen("schema = \"payment_command\"", "schema = \"payment_comand\"", 1);
    assert_ne!(unknown_schema, original);
    let file = dir.join("unknown-schema.toml");
    std::fs::write(&file, unknown_schema).unwrap();
    let output = run(&["topology", "validate", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("unknown schema `payment_comand` (no schemas/avro/payment_comand.avsc)"), "{stderr}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// `sluice ingest` signs tokens: with no key configured it refuses to start, even beside the
/// secret `sluice dev` generated (a development secret is never picked up silently).
#[test]
fn ingest_refuses_to_start_without_a_configured_jwt_key() {
    let dir = temp_dir("no-secret");
    std::fs::write(dir.join("jwt-secret"), "d".repeat(64)).unwrap(); // where `sluice dev` keeps it
    let output = sluice()
        .args(["ingest", "--http-listen", "127.0.0.1:0", "--bootstrap-servers", "127.0.0.1:1"])
        .env("SLUICE__STATE_DIR", dir.join("state"))
        .env("SLUICE__METRICS_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("no JWT key is configured: set jwt_secret"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn topics_create_is_idempotent_and_reports_unreachable_brokers() {
    let broker = sluice_testkit::Broker::start();
    let servers = broker.bootstrap_servers();
    let first = run(&["topics", "create", "--bootstrap-servers", &servers]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(text(&first.stdout).contains("created  sluice-users-changelog  partitions=4 cleanup.policy=compact"), "{}", text(&first.stdout));
    let second = run(&["topics", "create", "--bootstrap-servers", &servers]);
    assert!(second.status.success(), "{}", text(&second.stderr));
    assert!(text(&second.stdout).contains(" 0 created"), "{}", text(&second.stdout));
    let topics = topics_on(&servers);
    for expected in ["auth.commands", "payments.settled", "sluice.dlq", "_schemas", "sluice-credit-repartition", "sluice-ledger-changelog"] {
        assert!(topics.iter().any(|t| t == expected), "{expected} not in {topics:?}");
    }

    let nowhere = format!("127.0.0.1:{}", sluice_testkit::free_port());
    let output = run(&["topics", "create", "--bootstrap-servers", &nowhere]);
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains(&format!("cannot reach the Kafka broker at {nowhere}")), "{}", text(&output.stderr));
}

/// Reads `sluice dev`'s stdout up to the end of its banner; returns the banner and the rest.
fn read_banner(child: &mut std::process::Child) -> (String, std::io::Lines<BufReader<std::process::ChildStdout>>) {
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        banner.push_str(&line);
        banner.push('\n');
        if line.contains("Ctrl-C stops everything") {
            break;
        }
    }
    (banner, lines)
}

/// An HTTP/1.1 GET: status, headers (lower-case names) and body bytes.
fn http_request(address: &str, path: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut stream = TcpStream::connect(address).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    parse_response(&response)
}

fn parse_response(response: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete HTTP response");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())).collect();
    (status, headers, response[split + 4..].to_vec())
}

/// An interactive query to the instance at `address`, with a service token made with the
/// tests' internal key (`Authorization: Sluice-Service ...`).
fn iq_request(address: &str, path: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let keys = sluice_streams::signing::InternalKeys::new("i1", E2E_INTERNAL_KEY, "").unwrap();
    let authorization = sluice_ingest::queries::service_authorization(&keys, path);
    let mut stream = TcpStream::connect(address).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: {authorization}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    parse_response(&response)
}

fn http_get(address: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn dev_brings_up_broker_topics_and_registry_and_stops_cleanly() {
    let dir = temp_dir("dev");
    let broker_port = sluice_testkit::free_port();
    let registry = format!("127.0.0.1:{}", sluice_testkit::free_port());
    let mut child = Running(
        sluice()
            .args(["dev", "--demo", "--broker-port", &broker_port.to_string(), "--registry-listen", &registry])
            // HMRC's feed, simulated: a notification for a NIN nobody holds, a second after start.
            .args(["--hmrc-death", "CE 10 20 30 A", "--hmrc-after", "1"])
            .args(["--metrics-listen", &format!("127.0.0.1:{}", sluice_testkit::free_port())])
            .args(["--http-listen", &format!("127.0.0.1:{}", sluice_testkit::free_port())])
            .arg("--state-dir")
            .arg(dir.join("state"))
            // `sluice dev` makes its own internal key and registry account.
            .env_remove("SLUICE__INTERNAL_KEY")
            .env_remove("SLUICE__SCHEMA_REGISTRY_USER_INFO")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let (banner, mut lines) = read_banner(&mut child);
    assert!(banner.contains("Sluice dev stack is up"), "{banner}");
    let kcat_conf = dir.join("kcat.conf");
    assert!(banner.contains(&format!("scripts/kcat -F {} -L -b 127.0.0.1:{broker_port}", kcat_conf.display())), "{banner}");
    assert!(banner.contains("SASL_PLAINTEXT, SCRAM-SHA-512, ACLs"), "{banner}");
    for url in ["Web console      http://", "HTTP API         http://", "Metrics          http://", "Schema Registry  http://"] {
        assert!(banner.contains(url), "{url} missing from {banner}");
    }
    // --demo seeds users, deposits and transfers through the API once it is ready.
    let (mut demo, mut hmrc) = (None, None);
    for line in lines.by_ref().map_while(Result::ok) {
        if line.starts_with("demo data") {
            demo = Some(line);
        } else if line.starts_with("HMRC simulator: ") && !line.contains("a death notification for") && !line.starts_with("HMRC simulator: sent") {
            // The outcome, or why there is none.
            hmrc = Some(line);
        }
        if demo.is_some() && hmrc.is_some() {
            break;
        }
    }
    let demo = demo.expect("a line about the demo data");
    assert!(demo.starts_with("demo data ready: alice@demo.sluice"), "{demo}");
    let hmrc = hmrc.expect("the HMRC simulator's outcome");
    assert!(hmrc.contains(r#""command_type":"DeathNotification""#) && hmrc.contains(r#""status":"settled""#), "{hmrc}");

    // The broker takes SCRAM users only: the administrator sees every topic, the kcat
    // principal what its ACLs allow (no changelog, no Avro command topic), nobody connects
    // without a password.
    let servers = format!("127.0.0.1:{broker_port}");
    let as_principal = |file: &str| {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &servers);
        for line in std::fs::read_to_string(dir.join(file)).unwrap().lines() {
            let (key, value) = line.split_once('=').unwrap();
            config.set(key, value);
        }
        config
    };
    let topics = topics_seen(&as_principal("kafka-admin.conf"));
    for expected in ["auth.commands", "payments.commands.json", "notifications", "_schemas", "sluice-users-changelog"] {
        assert!(topics.iter().any(|t| t == expected), "{expected} not in {topics:?}");
    }
    let kcat_topics = topics_seen(&as_principal("kcat.conf"));
    assert!(kcat_topics.iter().any(|t| t == "payments.commands.json") && kcat_topics.iter().any(|t| t == "payments.settled"), "{kcat_topics:?}");
    assert!(!kcat_topics.iter().any(|t| t == "sluice-users-changelog" || t == "payments.commands" || t == "_schemas"), "{kcat_topics:?}");
    let anonymous: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &servers).set("log_level", "0").create().unwrap();
    assert!(anonymous.fetch_metadata(None, Duration::from_secs(3)).is_err(), "a client without SASL gets no answer");
    // The administrator's config file works for Sluice's own commands.
    let revoked = sluice().arg("--config").arg(dir.join("admin.toml")).args(["revoke", "--subject", "ops-laptop", "--state-dir"]).arg(dir.join("state")).env_remove("SLUICE__INTERNAL_KEY").output().unwrap();
    assert!(revoked.status.success(), "{}", text(&revoked.stderr));
    let subjects = http_get(&registry, "/subjects");
    assert!(subjects.starts_with("HTTP/1.1 200"), "{subjects}");
    for subject in ["auth.commands-value", "payments.settled-value", "sluice.dlq-value", "sluice-credit-repartition-value"] {
        assert!(subjects.contains(&format!("\"{subject}\"")), "{subject} not registered: {subjects}");
    }
    assert!(dir.join("broker/data/meta.properties").exists(), "the dev broker keeps its formatted KRaft data");
    // Reads are open, writes need the registry's credentials (generated beside the state dir).
    let mut stream = TcpStream::connect(&registry).unwrap();
    write!(stream, "DELETE /subjects/sluice-credit-repartition-value HTTP/1.1\r\nHost: {registry}\r\nConnection: close\r\n\r\n").unwrap();
    let mut refused = String::new();
    stream.read_to_string(&mut refused).unwrap();
    assert!(refused.starts_with("HTTP/1.1 401") && refused.contains("40101"), "an unauthenticated delete: {refused}");
    assert!(http_get(&registry, "/subjects").contains("\"sluice-credit-repartition-value\""), "still there");
    for generated in ["internal-key", "registry-password", "jwt-secret", "kafka-users", "kcat.conf", "kafka-admin.conf", "admin.toml"] {
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(dir.join(generated)).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600, "{generated} is readable by its owner only");
    }

    // SIGTERM (as Ctrl-C would) stops the registry and the broker, and sluice exits 0.
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}: {rest:?}");
    assert!(rest.iter().any(|l| l.contains("broker stopped")), "{rest:?}");
    assert!(TcpStream::connect(&servers).is_err(), "broker port closed after shutdown");
    std::fs::remove_dir_all(dir).unwrap();
}

// ---------------------------------------------------------------- sluice run on a real broker

use std::collections::BTreeMap;
use std::time::Instant;

use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

const CRASH_TOPOLOGY: &str = r#"
[[topic]]
name = "increments"
partitions = 4

[[topic]]
name = "totals"
partitions = 4

[[store]]
name = "balances"

[[store]]
name = "seen"
kind = "dedupe"
retention_ms = 86400000

[[source]]
name = "increments-source"
topics = ["increments"]

[[processor]]
name = "sum"
kind = "keyed-sum"
parents = ["increments-source"]
stores = ["balances", "seen"]
config = { dedupe = "seen" }

[[sink]]
name = "totals-sink"
topic = "totals"
parents = ["sum"]
"#;

/// Keyed increments with event ids, from a seeded generator.
fn increments(from: usize, count: usize) -> Vec<(String, i64, String)> {
    (from..from + count)
        .map(|i| {
            let mixed = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
            (format!("acct-{}", mixed % 23), (mixed % 997) as i64 - 400, format!("ev-{i}"))
        })
        .collect()
}

fn produce(servers: &str, topic: &str, records: &[(String, i64, String)]) {
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", servers).set("partitioner", "murmur2_random").create().unwrap();
    for (key, amount, event_id) in records {
        let value = amount.to_string();
        let headers = OwnedHeaders::new().insert(Header { key: "event_id", value: Some(event_id.as_bytes()) });
        let mut record = BaseRecord::to(topic).key(key.as_str()).payload(value.as_str()).headers(headers);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, returned)) => {
                    producer.poll(Duration::from_millis(10));
                    record = returned;
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// Produces `crc-0` .. `crc-15` (value 1) with librdkafka's default partitioner, as kcat or a
/// client left on its defaults would; returns, sorted, the keys that landed on another partition
/// than Kafka's murmur2 gives them.
fn produce_with_librdkafka_default_partitioner(servers: &str, topic: &str, partitions: i32) -> Vec<String> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", servers).create().unwrap();
    let io = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut misrouted = Vec::new();
    for i in 0..16 {
        let key = format!("crc-{i}");
        let headers = OwnedHeaders::new().insert(Header { key: "event_id", value: Some(key.as_bytes()) });
        let record = FutureRecord::to(topic).key(&key).payload("1").headers(headers);
        let delivered = io.block_on(producer.send(record, Duration::from_secs(10))).map_err(|(e, _)| e).unwrap();
        if delivered.partition != sluice_streams::partitioner::partition_for_key(key.as_bytes(), partitions) {
            misrouted.push(key);
        }
    }
    misrouted.sort();
    misrouted
}

/// A consumed record: key, value and headers, as text.
type Consumed = (String, String, Vec<(String, String)>);

/// A consumed record with its value as bytes.
type RawRecord = (String, Vec<u8>, Vec<(String, String)>);

/// Every record of `topic` (per partition in offset order), values as text.
fn consume_all(servers: &str, topic: &str) -> Vec<Consumed> {
    consume_raw(servers, topic).into_iter().map(|(key, value, headers)| (key, String::from_utf8_lossy(&value).into_owned(), headers)).collect()
}

/// Every record of `topic` (per partition in offset order), values as bytes.
fn consume_raw(servers: &str, topic: &str) -> Vec<RawRecord> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", "test-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let partitions = metadata.topics()[0].partitions().len();
    let mut list = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        list.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&list).unwrap();
    let mut out = Vec::new();
    let mut at_end = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while at_end.len() < partitions {
        assert!(Instant::now() < deadline, "reading {topic} did not reach the end of every partition");
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                let headers = message
                    .headers()
                    .map(|h| h.iter().map(|h| (h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())).collect())
                    .unwrap_or_default();
                out.push((String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(), message.payload().unwrap_or_default().to_vec(), headers));
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            _ => {}
        }
    }
    out
}

fn committed_total(servers: &str, group: &str, topic: &str, partitions: i32) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", servers).set("group.id", group).create().unwrap();
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    // A fresh broker answers NotCoordinator / CoordinatorNotAvailable while it loads the
    // offsets topic: ask again until it knows.
    let deadline = Instant::now() + Duration::from_secs(30);
    let committed = loop {
        match consumer.committed_offsets(list.clone(), Duration::from_secs(10)) {
            Ok(committed) => break committed,
            Err(error) => assert!(Instant::now() < deadline, "committed offsets of {group}: {error}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    committed.elements().iter().map(|e| if let Offset::Offset(o) = e.offset() { o } else { 0 }).sum()
}

fn wait_until(what: &str, deadline_secs: u64, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(deadline_secs);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn last_totals(servers: &str) -> BTreeMap<String, i64> {
    consume_all(servers, "totals").into_iter().map(|(k, v, _)| (k, v.parse().unwrap())).collect()
}

fn reference(records: &[(String, i64, String)]) -> BTreeMap<String, i64> {
    let mut totals = BTreeMap::new();
    for (key, amount, _) in records {
        *totals.entry(key.clone()).or_insert(0) += amount;
    }
    totals
}

fn crash_scenario(name: &str, wipe_state: bool, num_stream_threads: usize, guarantee: &str) {
    let broker = sluice_testkit::Broker::start();
    let servers = broker.bootstrap_servers();
    let dir = temp_dir(name);
    let extra = format!("metrics_listen = \"127.0.0.1:0\"\ncommit_interval_ms = 300\nnum_stream_threads = {num_stream_threads}\nprocessing_guarantee = \"{guarantee}\"\n");
    let config = write_config(&dir, "crash", &servers, CRASH_TOPOLOGY, &extra);
    let cfg = config.to_str().unwrap();
    let created = run(&["topics", "create", "--config", cfg]);
    assert!(created.status.success(), "{}", text(&created.stderr));

    let first = increments(0, 1_500);
    let second = increments(1_500, 30_000);
    produce(&servers, "increments", &first);
    let spawn = |log: &str| {
        let log = std::fs::File::create(dir.join(log)).unwrap();
        Running(sluice().args(["run", "--config", cfg]).env("RUST_LOG", "info").stdout(Stdio::null()).stderr(log).spawn().unwrap())
    };
    let mut child = spawn("run1.log");
    wait_until("the first batch is processed and committed", 90, || committed_total(&servers, "crash", "increments", 4) >= 1_500);
    produce(&servers, "increments", &second);
    wait_until("part of the second batch is processed", 90, || committed_total(&servers, "crash", "increments", 4) >= 3_000);
    child.kill().unwrap(); // SIGKILL mid-stream: no commit, no flush
    child.wait().unwrap();
    let at_kill = committed_total(&servers, "crash", "increments", 4);
    assert!(at_kill < 31_500, "killed mid-stream (committed {at_kill})");
    if wipe_state {
        std::fs::remove_dir_all(dir.join("state")).unwrap();
    }

    let mut child = spawn("run2.log");
    let all: Vec<_> = first.iter().chain(&second).cloned().collect();
    let expected = reference(&all);
    wait_until("every input is committed", 180, || committed_total(&servers, "crash", "increments", 4) == 31_500);
    let mut last = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        last = last_totals(&servers);
        if last == expected {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let diff: Vec<_> = expected.iter().filter(|(k, v)| last.get(*k) != Some(v)).map(|(k, v)| (k, v, last.get(k), v - last.get(k).copied().unwrap_or(0))).collect();
    assert!(diff.is_empty(), "{name}: last totals differ from the reference (key, expected, last, expected - last): {diff:?}");
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    assert!(child.wait().unwrap().success(), "sluice run stops cleanly on SIGTERM");
    let log = std::fs::read_to_string(dir.join("run2.log")).unwrap();
    let restored: Vec<&str> = log.lines().filter(|l| l.contains("task restored")).collect();
    assert_eq!(restored.len(), 4, "{log}");
    if wipe_state {
        assert!(restored.iter().all(|l| !l.contains(" applied=0 ")), "every task restored from the changelog: {restored:?}");
    }

    // Every input had its effect exactly once on the stores.
    let mut balances = BTreeMap::new();
    for partition in 0..4 {
        let task_dir = dir.join("state").join("crash").join(format!("0_{partition}"));
        let state = sluice_state::TaskState::open(&task_dir, &[("balances", true), ("seen", true)]).unwrap();
        use sluice_state::KeyValueStore;
        for entry in state.store("balances").unwrap().prefix_scan(b"") {
            let (key, value) = entry.unwrap();
            balances.insert(String::from_utf8(key).unwrap(), i64::from_be_bytes(value.try_into().unwrap()));
        }
    }
    assert_eq!(balances, expected, "{name}: store values after the crash equal the reference");
    if guarantee == "exactly_once_v2" {
        // Read committed, the outputs are each input's effect exactly once, in input order
        // per key: the running totals, none repeated by the replay after the kill.
        let mut outputs: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for (key, value, _) in consume_all(&servers, "totals") {
            outputs.entry(key).or_default().push(value.parse().unwrap());
        }
        let mut sums: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for (key, amount, _) in &all {
            let list = sums.entry(key.clone()).or_default();
            list.push(list.last().copied().unwrap_or(0) + amount);
        }
        let wrong: Vec<(&String, usize, usize)> = sums.iter().filter(|(k, v)| outputs.get(*k) != Some(v)).map(|(k, v)| (k, v.len(), outputs.get(k).map_or(0, Vec::len))).collect();
        assert!(wrong.is_empty(), "{name}: keys whose committed outputs are not the running totals (key, inputs, outputs): {wrong:?}");
    }
    // Changelog records carry the input position that caused them.
    let changelog = consume_all(&servers, "crash-balances-changelog");
    assert!(!changelog.is_empty());
    assert!(changelog.iter().all(|(_, _, headers)| headers.iter().any(|(k, _)| k == "sluice.source.offset")));
    let log = std::fs::read_to_string(dir.join("run2.log")).unwrap();
    assert_eq!(log.matches("stream thread started").count(), num_stream_threads, "{log}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn run_survives_kill_9_with_exactly_once_effects() {
    // Two stream threads: the exactly-once guarantee holds per task, whichever thread runs it.
    crash_scenario("crash-keep", false, 2, "at_least_once");
}

#[test]
fn run_survives_kill_9_with_exactly_once_v2_and_no_repeated_output() {
    crash_scenario("crash-eos", false, 2, "exactly_once_v2");
}

#[test]
fn run_restores_from_the_changelog_after_kill_9_and_a_deleted_state_dir() {
    crash_scenario("crash-wipe", true, 1, "at_least_once");
}

const DLQ_TOPOLOGY: &str = r#"
[defaults]
partitions = 2

[[topic]]
name = "amounts"

[[topic]]
name = "payments.commands"
schema = "payment_command"

[[topic]]
name = "totals"

[[topic]]
name = "sluice.dlq"
schema = "dead_letter"

[[store]]
name = "balances"

[[source]]
name = "amounts-source"
topics = ["amounts", "payments.commands"]

[[processor]]
name = "sum"
kind = "keyed-sum"
parents = ["amounts-source"]
stores = ["balances"]

[[sink]]
name = "totals-sink"
topic = "totals"
parents = ["sum"]
"#;

/// A changelog topic deleted under an application that has committed is not recreated empty
/// at start-up: `sluice run` refuses, naming the topic and the way out.
#[test]
fn run_refuses_to_start_when_a_changelog_topic_is_missing() {
    let broker = sluice_testkit::Broker::start();
    let servers = broker.bootstrap_servers();
    let dir = temp_dir("missing-changelog");
    let config = write_config(&dir, "gone", &servers, CRASH_TOPOLOGY, "metrics_listen = \"127.0.0.1:0\"\n");
    let config = config.to_str().unwrap();
    assert!(run(&["topics", "create", "--config", config]).status.success());
    produce(&servers, "increments", &increments(0, 100));
    let mut processors = Running(sluice().args(["run", "--config", config]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
    wait_until("the records are committed", 90, || committed_total(&servers, "gone", "increments", 4) == 100);
    Command::new("kill").arg("-TERM").arg(processors.id().to_string()).status().unwrap();
    processors.wait().unwrap();

    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", &servers).create().unwrap();
    let io = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    io.block_on(admin.delete_topics(&["gone-balances-changelog"], &rdkafka::admin::AdminOptions::new())).unwrap();
    wait_until("the topic is gone", 30, || !topics_on(&servers).contains(&"gone-balances-changelog".to_string()));

    let refused = run(&["run", "--config", config]);
    let stderr = text(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("`gone-balances-changelog` (store `balances`)") && stderr.contains("sluice topics create"), "{stderr}");
    assert!(!topics_on(&servers).contains(&"gone-balances-changelog".to_string()), "not recreated");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A metrics port held by another process stops `sluice run` before it processes anything,
/// instead of leaving an instance running with no metrics.
#[test]
fn run_refuses_to_start_when_its_metrics_port_is_taken() {
    let broker = sluice_testkit::Broker::start();
    let servers = broker.bootstrap_servers();
    let dir = temp_dir("metrics-taken");
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap();
    let config = write_config(&dir, "taken", &servers, CRASH_TOPOLOGY, &format!("metrics_listen = \"{taken}\"\n"));
    let config = config.to_str().unwrap();
    assert!(run(&["topics", "create", "--config", config]).status.success());
    produce(&servers, "increments", &increments(0, 10));
    let refused = sluice().args(["run", "--config", config]).env("RUST_LOG", "info").output().unwrap();
    let stderr = text(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains(&format!("cannot serve metrics on {taken}")), "{stderr}");
    assert!(!stderr.contains("stream thread started"), "nothing was started: {stderr}");
    assert_eq!(committed_total(&servers, "taken", "increments", 4), 0, "nothing was processed");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn poison_pills_and_garbage_go_to_the_dlq_and_processing_continues() {
    let broker = sluice_testkit::Broker::start();
    let servers = broker.bootstrap_servers();
    let dir = temp_dir("dlq");
    let registry = format!("127.0.0.1:{}", sluice_testkit::free_port());
    let metrics = format!("127.0.0.1:{}", sluice_testkit::free_port());
    let config = write_config(&dir, "dlq", &servers, DLQ_TOPOLOGY, &format!("schema_registry_url = \"http://{registry}\"\nmetrics_listen = \"{metrics}\"\n"));
    let cfg = config.to_str().unwrap();
    assert!(run(&["topics", "create", "--config", cfg]).status.success());
    let mut registry_process = Running(sluice().args(["registry", "--config", cfg, "--listen", &registry]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
    wait_until("the registry answers", 60, || TcpStream::connect(&registry).is_ok());
    let mut processor = Running(sluice().args(["run", "--config", cfg]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());

    produce(&servers, "amounts", &[("alice".into(), 5, "e1".into())]);
    // A poison pill: not an integer (the record itself is fine).
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", &servers).set("partitioner", "murmur2_random").create().unwrap();
    producer.send(BaseRecord::to("amounts").key("alice").payload("five")).unwrap();
    // Garbage on an Avro topic: not Confluent-framed Avro.
    producer.send(BaseRecord::to("payments.commands").key("alice").payload("{\"not\": \"avro\"}")).unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    produce(&servers, "amounts", &[("alice".into(), 2, "e2".into())]);
    // A librdkafka producer on its default partitioner (CRC32, not Kafka's murmur2): the records
    // that land on another partition than their key hashes to are dead-lettered, the others
    // are processed.
    let misrouted = produce_with_librdkafka_default_partitioner(&servers, "amounts", 2);
    // A poison pill near the message limit, with a large key: its dead letter (the key twice, the
    // value, the headers) would exceed the limit whole, so it keeps a bounded part of each.
    let (big_key, big_value) = ("k".repeat(100_000), "y".repeat(850_000));
    producer.send(BaseRecord::to("amounts").key(big_key.as_str()).payload(big_value.as_str())).unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    assert!(!misrouted.is_empty() && misrouted.len() < 16, "CRC32 and murmur2 disagree on some of the keys: {misrouted:?}");

    wait_until("processing continued past both bad records", 90, || last_totals(&servers).get("alice") == Some(&7));
    wait_until("the bad and the misrouted records are dead-lettered", 60, || consume_all(&servers, "sluice.dlq").len() == 3 + misrouted.len());
    let totals = last_totals(&servers);
    for i in 0..16 {
        let key = format!("crc-{i}");
        let expected = if misrouted.contains(&key) { None } else { Some(&1) };
        assert_eq!(totals.get(&key), expected, "{key}: processed only where it arrived on its murmur2 partition");
    }
    let dead = consume_all(&servers, "sluice.dlq");
    let header = |record: &Consumed, name: &str| record.2.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
    let (big, dead): (Vec<Consumed>, Vec<Consumed>) = dead.into_iter().partition(|r| r.0.len() > 1000);
    assert_eq!(big.len(), 1);
    assert_eq!(header(&big[0], "sluice.error.truncated"), "key: first 4096 of 100000 bytes, value: first 65536 of 850000 bytes");
    assert_eq!(header(&big[0], "sluice.error.class"), "invalid_record");
    assert_eq!(big[0].0.len(), 4096, "the record key is bounded too");
    let letter_bytes: Vec<usize> = consume_raw(&servers, "sluice.dlq").iter().filter(|r| r.0.len() > 1000).map(|r| r.1.len()).collect();
    assert!(letter_bytes.len() == 1 && letter_bytes[0] < 80_000, "the dead letter's value is bounded: {letter_bytes:?} bytes");
    let (wrong_partition, dead): (Vec<Consumed>, Vec<Consumed>) = dead.into_iter().partition(|r| header(r, "sluice.error.class") == "wrong_partition");
    let mut refused: Vec<String> = wrong_partition.iter().map(|r| r.0.clone()).collect();
    refused.sort();
    assert_eq!(refused, misrouted);
    for record in &wrong_partition {
        let message = header(record, "sluice.error.message");
        assert!(message.contains("murmur2") && message.contains("set partitioner=murmur2_random"), "{message}");
    }
    let mut classes: Vec<(String, String)> = dead.iter().map(|r| (header(r, "sluice.error.topic"), header(r, "sluice.error.class"))).collect();
    classes.sort();
    assert_eq!(classes, [("amounts".to_string(), "invalid_record".to_string()), ("payments.commands".to_string(), "deserialization".to_string())]);
    for record in &dead {
        assert_eq!(record.0, "alice", "dead letters keep the original key");
        assert!(!header(record, "sluice.error.partition").is_empty() && !header(record, "sluice.error.offset").is_empty());
        assert!(!header(record, "sluice.error.message").is_empty());
        assert!(record.1.as_bytes().first() == Some(&0), "the DeadLetter value is Confluent-framed Avro");
    }
    // Prometheus metrics of the run (the lag gauges are refreshed every few seconds).
    wait_until("the lag gauges are published", 30, || http_get(&metrics, "/metrics").contains("sluice_records_lag{"));
    let scrape = http_get(&metrics, "/metrics");
    for expected in [
        &format!("sluice_process_records_total{{processor=\"sum\"}} {}", 4 + 16 - misrouted.len()),
        "sluice_dlq_records_total{reason=\"invalid_record\"} 2",
        "sluice_dlq_records_total{reason=\"deserialization\"} 1",
        &format!("sluice_dlq_records_total{{reason=\"wrong_partition\"}} {}", misrouted.len()),
        "sluice_active_tasks 2",
        "sluice_rebalances_total 1",
        "# TYPE sluice_commit_latency_seconds histogram",
        "sluice_commit_phase_seconds_count{phase=\"flush\"}",
        "sluice_commit_phase_seconds_count{phase=\"state\"}",
        "sluice_process_latency_seconds_bucket{processor=\"sum\",le=\"0.001\"}",
        "sluice_store_keys{store=\"balances\",task=\"0_",
        "sluice_records_lag{topic=\"amounts\",partition=\"",
    ] {
        assert!(scrape.contains(expected), "{expected} missing from /metrics:\n{scrape}");
    }
    for child in [&mut processor, &mut registry_process] {
        Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
        child.wait().unwrap();
    }
    std::fs::remove_dir_all(dir).unwrap();
}

// ---------------------------------------------------------------- the fintech pipeline end to end

use sluice_processors::jwt::TokenUse;
use sluice_processors::model::{self, Account};
use sluice_processors::JwtKeys;
use sluice_schemas::types::{AccountEvent, AccountEventPayload, ActivityLog, IdentityVerificationResult, PaymentRejected, PaymentSettled, VerificationOutcome};
use sluice_schemas::Codec;

const E2E_SECRET: &str = "end-to-end-secret-end-to-end-secret";
const E2E_INTERNAL_KEY: &str = "end-to-end-internal-key-end-to-end-internal-key";
const E2E_REGISTRY_USER_INFO: &str = "sluice:end-to-end-registry-password";
const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";

/// `sluice dev` on its own broker, with a known JWT secret, and a way to send kcat-style JSON
/// commands and read Avro outcomes.
struct Pipeline {
    child: Running,
    servers: String,
    codec: Codec,
    io: tokio::runtime::Runtime,
    keys: JwtKeys,
    producer: BaseProducer,
    dir: PathBuf,
    /// Base URL of the HTTP API.
    api: String,
    /// `sluice dev`'s arguments and application id (for a restart).
    dev_args: Vec<String>,
    application_id: String,
    /// The test's broker (none when `sluice dev` runs its own).
    broker: Option<sluice_testkit::Broker>,
}

impl Pipeline {
    fn start(name: &str) -> Pipeline {
        Pipeline::start_as(name, "e2e")
    }

    /// `sluice dev` with `application_id` on a broker of the test's.
    fn start_as(name: &str, application_id: &str) -> Pipeline {
        Pipeline::launch(name, application_id, Some(sluice_testkit::Broker::start()))
    }

    /// `sluice dev` with `application_id` on the broker it starts itself (SASL and ACLs, its
    /// settings for kcat in the test's folder). Only its HTTP API and kcat reach it.
    fn start_on_own_broker(name: &str, application_id: &str) -> Pipeline {
        Pipeline::launch(name, application_id, None)
    }

    fn launch(name: &str, application_id: &str, broker: Option<sluice_testkit::Broker>) -> Pipeline {
        let dir = temp_dir(name);
        let registry = format!("127.0.0.1:{}", sluice_testkit::free_port());
        let metrics = format!("127.0.0.1:{}", sluice_testkit::free_port());
        let http = format!("127.0.0.1:{}", sluice_testkit::free_port());
        let (servers, broker_flag) = match &broker {
            Some(broker) => (broker.bootstrap_servers(), ["--bootstrap-servers".to_string(), broker.bootstrap_servers()]),
            None => {
                let port = sluice_testkit::free_port();
                (format!("127.0.0.1:{port}"), ["--broker-port".to_string(), port.to_string()])
            }
        };
        let mut dev_args: Vec<String> = vec!["dev".to_string()];
        dev_args.extend(broker_flag);
        dev_args.extend(["--registry-listen", &registry, "--metrics-listen", &metrics, "--http-listen", &http, "--state-dir"].map(String::from));
        dev_args.push(dir.join("state").display().to_string());
        let child = spawn_dev(&dev_args, application_id, &dir, &http);
        let io = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let codec = Codec::new(&format!("http://{registry}"), Some(E2E_REGISTRY_USER_INFO)).unwrap();
        let keys = JwtKeys::hs256("sluice", "sluice-api", "k1", E2E_SECRET).unwrap();
        let producer = ClientConfig::new().set("bootstrap.servers", &servers).set("partitioner", "murmur2_random").create().unwrap();
        Pipeline { child, servers, codec, io, keys, producer, dir, api: format!("http://{http}"), dev_args, application_id: application_id.to_string(), broker }
    }

    /// Stops `sluice dev` (Ctrl-C) and waits for it to exit; the broker keeps running.
    fn stop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }

    /// Starts `sluice dev` again after [`Pipeline::stop`], with the same state.
    fn restart(&mut self) {
        let http = self.api.trim_start_matches("http://").to_string();
        self.child = spawn_dev(&self.dev_args, &self.application_id, &self.dir, &http);
    }

    fn token(&self, subject: &str, role: &str) -> String {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        self.keys.issue(subject, &[role], TokenUse::Access, now, 600, "t").unwrap()
    }

    /// Produces a JSON command as kcat would: optional key, `authorization` header.
    fn send(&self, topic: &str, key: Option<&str>, token: Option<&str>, json: &str) {
        self.send_at(topic, key, token, json, None);
    }

    /// [`Pipeline::send`] with the record's CreateTime set by the producer.
    fn send_at(&self, topic: &str, key: Option<&str>, token: Option<&str>, json: &str, timestamp_ms: Option<i64>) {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let headers = OwnedHeaders::new();
        let headers = match &bearer {
            Some(value) => headers.insert(Header { key: "authorization", value: Some(value.as_bytes()) }),
            None => headers,
        };
        let mut record = BaseRecord::to(topic).payload(json).headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(timestamp) = timestamp_ms {
            record = record.timestamp(timestamp);
        }
        self.producer.send(record).map_err(|(e, _)| e).unwrap();
        self.producer.flush(Duration::from_secs(10)).unwrap();
    }

    fn decode_all<T: sluice_schemas::AvroRecord>(&self, topic: &str) -> Vec<T> {
        let records = consume_raw(&self.servers, topic);
        self.io.block_on(async { decode_values(&self.codec, records).await })
    }

    /// The audit records so far: command id -> (outcome, reason).
    fn outcomes(&self) -> BTreeMap<String, (String, Option<String>)> {
        self.decode_all::<ActivityLog>("system.logs.activity").into_iter().map(|a| (a.command_id, (a.outcome, a.reason))).collect()
    }

    /// Waits until every command in `ids` has its outcome, and checks them.
    fn expect(&self, step: &str, expected: &[(&str, &str, Option<&str>)]) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let outcomes = self.outcomes();
            if expected.iter().all(|(id, _, _)| outcomes.contains_key(*id)) {
                for (id, outcome, reason) in expected {
                    let (got, why) = &outcomes[*id];
                    assert_eq!((got.as_str(), why.as_deref()), (*outcome, *reason), "{step}: command {id}");
                }
                return;
            }
            assert!(Instant::now() < deadline, "{step}: outcomes so far {outcomes:?}; see {}", self.dir.join("dev.log").display());
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

async fn decode_values<T: sluice_schemas::AvroRecord>(codec: &Codec, records: Vec<RawRecord>) -> Vec<T> {
    let mut out = Vec::new();
    for (_, value, _) in records {
        out.push(codec.decode::<T>(&value).await.unwrap());
    }
    out
}

/// Starts `sluice dev` with `args`, its log appended to `dir/dev.log`, and reads its banner.
fn spawn_dev(args: &[String], application_id: &str, dir: &Path, http: &str) -> Running {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("dev.log")).unwrap();
    let mut child = Running(
        sluice()
            .args(args)
            .env("SLUICE__APPLICATION_ID", application_id)
            .env("SLUICE__JWT_SECRET", E2E_SECRET)
            // `sluice dev` generates its internal key (beside the state directory).
            .env_remove("SLUICE__INTERNAL_KEY")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let (banner, lines) = read_banner(&mut child);
    assert!(banner.contains("Processors       topology.toml (3 sub-topologies)"), "{banner}");
    assert!(banner.contains(&format!("HTTP API         http://{http}")), "{banner}");
    std::thread::spawn(move || lines.for_each(drop));
    child
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.stop();
        // A failed test keeps its folder: the assertion names dev.log in it.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[test]
fn the_pipeline_end_to_end_registrations_verification_transfers_death_and_refunds() {
    let p = Pipeline::start("e2e");
    let [alice, bob, carol, dave] = ["alice", "bob", "carol", "dave"].map(|n| model::user_id_for_email(&format!("{n}@example.com")));
    let register = |id: &str, name: &str| {
        let json = format!(r#"{{"event_id": "{id}", "payload": {{"type": "RegisterUser", "email": "{name}@example.com", "password_hash": "{HASH}"}}}}"#);
        p.send("auth.commands.json", None, None, &json);
    };
    for (id, name) in [("reg-alice", "alice"), ("reg-bob", "bob"), ("reg-carol", "carol")] {
        register(id, name);
    }
    p.expect("registrations", &[("reg-alice", "settled", None), ("reg-bob", "settled", None), ("reg-carol", "settled", None)]);

    register("reg-alice-again", "Alice");
    for (id, user) in [("profile-alice", &alice), ("profile-bob", &bob), ("profile-carol", &carol)] {
        let json = format!(r#"{{"event_id": "{id}", "payload": {{"type": "UpdateProfile", "full_name": "Someone", "date_of_birth": "1990-05-01"}}}}"#);
        p.send("auth.commands.json", Some(user), Some(&p.token(user, "user")), &json);
    }
    p.expect("profiles", &[("reg-alice-again", "rejected", Some("email_taken")), ("profile-alice", "settled", None), ("profile-bob", "settled", None), ("profile-carol", "settled", None)]);

    let operator = p.token("back-office", "operator");
    let deposit = |id: &str, user: &str, amount: &str| {
        let json = format!(r#"{{"event_id": "{id}", "payload": {{"type": "Deposit", "amount": "{amount}", "currency": "GBP"}}}}"#);
        p.send("payments.commands.json", Some(user), Some(&operator), &json);
    };
    deposit("dep-alice", &alice, "2000.00");
    deposit("dep-bob", &bob, "100.00");
    let verify = |id: &str, user: &str, kind: &str, value: &str| {
        let json = format!(r#"{{"event_id": "{id}", "payload": {{"type": "VerifyIdentity", "identifier_type": "{kind}", "value": "{value}", "full_name": "Someone", "date_of_birth": "1990-05-01"}}}}"#);
        p.send("identity.verification.request.json", Some(user), Some(&p.token(user, "user")), &json);
    };
    verify("nin-alice", &alice, "NIN", "ab 12 34 56 c");
    verify("nhs-carol", &carol, "NHS", "943 476 5919");
    p.expect("deposits and verifications", &[("dep-alice", "settled", None), ("dep-bob", "settled", None), ("nin-alice", "settled", None), ("nhs-carol", "settled", None)]);

    let transfer = |id: &str, from: &str, to: &str, amount: &str| {
        let json = format!(r#"{{"event_id": "{id}", "payload": {{"type": "Transfer", "payee_user_id": "{to}", "amount": "{amount}", "currency": "GBP"}}}}"#);
        p.send("payments.commands.json", None, Some(&p.token(from, "user")), &json);
    };
    verify("nin-bob", &bob, "NIN", "AB123456C");
    transfer("t-alice-bob", &alice, &bob, "1500.00");
    transfer("t-carol-bob", &carol, &bob, "5.00");
    transfer("t-bob-dave", &bob, &dave, "10.00");
    p.expect(
        "transfers",
        &[
            ("nin-bob", "rejected", Some("already_claimed")),
            ("t-alice-bob", "settled", None),
            ("t-carol-bob", "rejected", Some("insufficient_funds")),
            ("t-bob-dave", "rejected", Some("payee_unknown")),
        ],
    );

    let refund = |id: &str, amount: &str| {
        let json = format!(r#"{{"event_id": "{id}", "payload": {{"type": "Refund", "payment_id": "t-alice-bob", "amount": "{amount}", "currency": "GBP"}}}}"#);
        p.send("payments.commands.json", Some(&bob), Some(&p.token(&bob, "user")), &json);
    };
    refund("refund-1", "200.00");
    p.expect("refund", &[("refund-1", "settled", None)]);

    let hmrc = p.token("hmrc-gateway", "hmrc");
    let notice = r#"{"event_id": "death-1", "payload": {"type": "DeathNotification", "nin": "AB123456C", "date_of_death": "2026-11-20", "reference": "HMRC-42"}}"#;
    p.send("hmrc.death.notification.json", None, Some(&hmrc), notice);
    p.expect("death notification", &[("death-1", "settled", None)]);

    refund("refund-2", "100.00");
    transfer("t-alice-after", &alice, &bob, "10.00");
    p.expect("after the death", &[("refund-2", "rejected", Some("account_frozen")), ("t-alice-after", "rejected", Some("account_frozen"))]);

    // Final balances, from the accounts store's changelog (last value per key).
    let balances: BTreeMap<String, Account> = consume_raw(&p.servers, "e2e-accounts-changelog")
        .into_iter()
        .filter(|(_, value, _)| !value.is_empty())
        .map(|(key, value, _)| (key, serde_json::from_slice(&value).unwrap()))
        .collect();
    let balance = |user: &str| balances.get(user).map(|a| a.balance.to_string());
    assert_eq!(balance(&alice).as_deref(), Some("700.00"), "2000 - 1500 + 200");
    assert_eq!(balance(&bob).as_deref(), Some("1400.00"), "100 + 1500 - 200; the 10 to dave and the second refund came back");
    assert_eq!(balance(&carol).as_deref(), Some("0.00"), "carol's account opened on her first (refused) transfer");
    assert_eq!(balance(&dave), None);
    assert_eq!(balances[&alice].status, model::AccountStatus::Frozen);

    let mut settled: Vec<String> = p.decode_all::<PaymentSettled>("payments.settled").into_iter().map(|s| s.command_id).collect();
    settled.sort();
    assert_eq!(settled, ["dep-alice", "dep-bob", "refund-1", "t-alice-bob"]);
    let mut rejected: Vec<(String, String)> = p.decode_all::<PaymentRejected>("payments.rejected").into_iter().map(|r| (r.command_id, r.reason)).collect();
    rejected.sort();
    let expected_rejected = [("refund-2", "account_frozen"), ("t-alice-after", "account_frozen"), ("t-bob-dave", "payee_unknown"), ("t-carol-bob", "insufficient_funds")];
    assert_eq!(rejected, expected_rejected.map(|(a, b)| (a.to_string(), b.to_string())));
    let mut results: Vec<(String, VerificationOutcome)> = p.decode_all::<IdentityVerificationResult>("identity.verification.result").into_iter().map(|r| (r.command_id, r.outcome)).collect();
    results.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(results, [("nhs-carol".to_string(), VerificationOutcome::Verified), ("nin-alice".into(), VerificationOutcome::Verified), ("nin-bob".into(), VerificationOutcome::Rejected)]);
    let frozen = p.decode_all::<AccountEvent>("accounts.events").into_iter().filter(|e| matches!(e.payload, AccountEventPayload::AccountFrozen(_))).count();
    assert_eq!(frozen, 1);
}

// ---------------------------------------------------------------- interactive queries across instances

/// Timestamp synchronization (docs/architecture.md): commands sent to three topics while the
/// processors are down are taken, when they come back, in the order they were sent, so the
/// deposit and the transfer are not judged before the registrations they depend on.
#[test]
fn a_backlog_on_several_topics_is_processed_in_timestamp_order_after_a_restart() {
    let mut p = Pipeline::start("backlog");
    assert!(api::wait_ready(&p), "sluice dev did not become ready; see {}", p.dir.join("dev.log").display());
    p.stop();
    let [alice, bob] = ["alice", "bob"].map(|n| model::user_id_for_email(&format!("{n}@example.com")));
    for (id, name, user) in [("reg-bob", "bob", &bob), ("reg-alice", "alice", &alice)] {
        let json = format!(r#"{{"event_id": "{id}", "payload": {{"type": "RegisterUser", "email": "{name}@example.com", "password_hash": "{HASH}"}}}}"#);
        p.send("auth.commands.json", Some(user), None, &json);
    }
    for (id, user) in [("profile-bob", &bob), ("profile-alice", &alice)] {
        let json = format!(r#"{{"event_id": "{id}", "payload": {{"type": "UpdateProfile", "full_name": "Someone", "date_of_birth": "1990-05-01"}}}}"#);
        p.send("auth.commands.json", Some(user), Some(&p.token(user, "user")), &json);
    }
    let nin = r#"{"event_id": "nin-alice", "payload": {"type": "VerifyIdentity", "identifier_type": "NIN", "value": "AB123456C", "full_name": "Someone", "date_of_birth": "1990-05-01"}}"#;
    p.send("identity.verification.request.json", Some(&alice), Some(&p.token(&alice, "user")), nin);
    let deposit = r#"{"event_id": "dep-alice", "payload": {"type": "Deposit", "amount": "100.00", "currency": "GBP"}}"#;
    p.send("payments.commands.json", Some(&alice), Some(&p.token("back-office", "operator")), deposit);
    let transfer = format!(r#"{{"event_id": "t-backlog", "payload": {{"type": "Transfer", "payee_user_id": "{bob}", "amount": "40.00", "currency": "GBP"}}}}"#);
    p.send("payments.commands.json", Some(&alice), Some(&p.token(&alice, "user")), &transfer);
    p.restart();
    p.expect(
        "the backlog",
        &[
            ("reg-bob", "settled", None),
            ("reg-alice", "settled", None),
            ("profile-bob", "settled", None),
            ("profile-alice", "settled", None),
            ("nin-alice", "settled", None),
            ("dep-alice", "settled", None),
            ("t-backlog", "settled", None),
        ],
    );
}

#[test]
fn interactive_queries_are_answered_by_the_instance_that_owns_the_key() {
    let broker = sluice_testkit::Broker::start();
    let servers = broker.bootstrap_servers();
    let dir = temp_dir("iq");
    std::fs::write(dir.join("topology.toml"), CRASH_TOPOLOGY).unwrap();
    let servers_of: Vec<String> = (0..2).map(|_| format!("127.0.0.1:{}", sluice_testkit::free_port())).collect();
    let configs: Vec<PathBuf> = (0..2)
        .map(|i| {
            let config = dir.join(format!("sluice-{i}.toml"));
            std::fs::write(
                &config,
                format!(
                    "application_id = \"iq\"\nbootstrap_servers = \"{servers}\"\nmetrics_listen = \"127.0.0.1:0\"\nstate_dir = \"{}\"\ntopology = \"{}\"\napplication_server = \"http://{}\"\n",
                    dir.join(format!("state-{i}")).display(),
                    dir.join("topology.toml").display(),
                    servers_of[i]
                ),
            )
            .unwrap();
            config
        })
        .collect();
    assert!(run(&["topics", "create", "--config", configs[0].to_str().unwrap()]).status.success());
    let records = increments(0, 2_000);
    produce(&servers, "increments", &records);
    let expected = reference(&records);
    let mut instances: Vec<Running> = configs
        .iter()
        .enumerate()
        .map(|(i, config)| {
            let log = std::fs::File::create(dir.join(format!("run-{i}.log"))).unwrap();
            Running(sluice().args(["run", "--config", config.to_str().unwrap()]).env("RUST_LOG", "info").stdout(Stdio::null()).stderr(log).spawn().unwrap())
        })
        .collect();
    wait_until("every input is committed", 120, || committed_total(&servers, "iq", "increments", 4) == 2_000);

    // Ask instance 0 for every key: it answers its own keys and forwards the others.
    let mut served_by = std::collections::BTreeSet::new();
    wait_until("instance 0 answers every key, some through instance 1", 90, || {
        served_by.clear();
        expected.iter().all(|(key, total)| {
            let (status, headers, body) = iq_request(&servers_of[0], &format!("/v1/stores/balances/keys/{key}"));
            if status != 200 {
                return false;
            }
            served_by.extend(headers.iter().filter(|(k, _)| k == "x-sluice-served-by").map(|(_, v)| v.clone()));
            assert_eq!(i64::from_be_bytes(body.as_slice().try_into().unwrap()), *total, "{key}");
            true
        }) && served_by.len() == 2
    });

    // A prefix query over the task owning `acct-1`, asked of instance 1.
    let partition = sluice_streams::partitioner::partition_for_key(b"acct-1", 4);
    let mut want: Vec<String> = expected
        .keys()
        .filter(|k| k.starts_with("acct-1") && sluice_streams::partitioner::partition_for_key(k.as_bytes(), 4) == partition)
        .cloned()
        .collect();
    want.sort();
    // Instance 1 may not have heard instance 0's tasks yet: 503 + Retry-After until it has.
    let mut answer = (0, Vec::new(), Vec::new());
    wait_until("instance 1 answers the prefix query", 60, || {
        answer = iq_request(&servers_of[1], "/v1/stores/balances/prefix/acct-1?prefix=acct-1&limit=50");
        assert!(answer.0 == 200 || (answer.0 == 503 && answer.1.iter().any(|(k, _)| k == "retry-after")), "{}", text(&answer.2));
        answer.0 == 200
    });
    let body = answer.2;
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let got: Vec<String> = body["entries"].as_array().unwrap().iter().map(|e| e["key"].as_str().unwrap().to_string()).collect();
    assert_eq!(got, want);

    // Without a service token, or with one made for another path, or with another key: 401.
    let (status, headers, body) = http_request(&servers_of[1], "/v1/stores/balances/prefix/acct-1?prefix=acct&limit=1000");
    assert_eq!(status, 401, "an unauthenticated store dump: {}", text(&body));
    assert!(text(&body).contains("invalid-service-token") && headers.iter().any(|(k, v)| k == "www-authenticate" && v == "Sluice-Service"), "{headers:?}");
    let keys = sluice_streams::signing::InternalKeys::new("i1", E2E_INTERNAL_KEY, "").unwrap();
    let other_path = sluice_ingest::queries::service_authorization(&keys, "/v1/stores/balances/keys/acct-1");
    let guessed = sluice_ingest::queries::service_authorization(&sluice_streams::signing::InternalKeys::new("i1", "a-guessed-internal-key-of-32-chars!!", "").unwrap(), "/v1/stores/balances/keys/acct-2");
    for authorization in [other_path, guessed] {
        let mut stream = TcpStream::connect(&servers_of[0]).unwrap();
        write!(stream, "GET /v1/stores/balances/keys/acct-2 HTTP/1.1\r\nHost: x\r\nAuthorization: {authorization}\r\nConnection: close\r\n\r\n").unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        assert_eq!(parse_response(&response).0, 401, "{authorization}");
    }
    // A discovery entry pointing elsewhere: written straight to the topic by a broker client,
    // claiming every task of a real instance from an attacker's server, dated far ahead. The
    // instances refuse it (unsigned) and queries stay with the real owners.
    let real = consume_all(&servers, "iq-instances").into_iter().map(|(key, _, _)| key).next().expect("a discovery entry");
    let forged = format!(r#"{{"instance": "{real}", "application_server": "http://127.0.0.1:9", "tasks": ["0_0", "0_1", "0_2", "0_3"], "updated_at_ms": 9999999999999}}"#);
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", &servers).create().unwrap();
    producer.send(BaseRecord::to("iq-instances").key(&real).payload(&forged)).unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    wait_until("both instances refuse the forged entry", 30, || {
        (0..2).all(|i| std::fs::read_to_string(dir.join(format!("run-{i}.log"))).unwrap_or_default().contains("discovery entry refused"))
    });
    for (key, total) in &expected {
        let (status, _, body) = iq_request(&servers_of[0], &format!("/v1/stores/balances/keys/{key}"));
        assert_eq!(status, 200, "{key} after the forged entry: {}", text(&body));
        assert_eq!(i64::from_be_bytes(body.as_slice().try_into().unwrap()), *total, "{key}");
    }

    let (status, headers, body) = iq_request(&servers_of[1], "/v1/stores/nope/keys/acct-1");
    assert_eq!(status, 404);
    assert!(headers.iter().any(|(k, v)| k == "content-type" && v == "application/problem+json"), "{headers:?}");
    assert!(text(&body).contains("unknown-store"), "{}", text(&body));
    for child in &mut instances {
        Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
        child.wait().unwrap();
    }
    std::fs::remove_dir_all(dir).unwrap();
}

// ---------------------------------------------------------------- the HTTP API on sluice dev

#[path = "cli/api.rs"]
mod api;

#[path = "cli/acls.rs"]
mod acls;
#[path = "cli/attacks.rs"]
mod attacks;
#[path = "cli/lifecycle.rs"]
mod lifecycle;
#[path = "cli/kcat.rs"]
mod kcat;
#[path = "cli/operator.rs"]
mod operator;
#[path = "cli/outage.rs"]
mod outage;
#[path = "cli/failover.rs"]
mod failover;
#[path = "cli/replica.rs"]
mod replica;
#[path = "cli/seeds.rs"]
mod seeds;
#[path = "cli/chaos.rs"]
mod chaos;
