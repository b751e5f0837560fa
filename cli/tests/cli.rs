//! The `sluice` binary as a user runs it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

fn sluice() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    command.env_remove("RUST_LOG");
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

fn topics_on(bootstrap: &str) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap();
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(10)).unwrap();
    metadata.topics().iter().map(|t| t.name().to_string()).collect()
}

#[test]
fn topology_describe_prints_both_subtopologies() {
    let output = run(&["topology", "describe"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(stdout.starts_with("Topologies:\n   Sub-topology: 0\n"), "{stdout}");
    assert!(stdout.contains("    Processor: balance-check (stores: [accounts, ledger, payments, command-status])"), "{stdout}");
    assert!(stdout.contains("   Sub-topology: 1\n    Source: identity-claims-source (topics: [sluice-identity-claim-repartition])"), "{stdout}");
    assert!(stdout.contains("    Processor: hmrc-death-notification (stores: [identity-claims, identifier-dedupe])"), "{stdout}");
}

#[test]
fn topology_validate_fails_naming_the_line() {
    let dir = temp_dir("validate");
    let original = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../topology.toml")).unwrap();
    let ok = run(&["topology", "validate"]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));

    let unknown_store = original.replace(r#"stores = ["accounts", "ledger", "payments"]"#, r#"stores = ["accounts", "ledgr", "payments"]"#);
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
    std::fs::remove_dir_all(dir).unwrap();
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
    let mut child = sluice()
        .args(["dev", "--broker-port", &broker_port.to_string(), "--registry-listen", &registry])
        .arg("--state-dir")
        .arg(dir.join("state"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
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
    assert!(banner.contains("Sluice dev stack is up"), "{banner}");
    assert!(banner.contains(&format!("kcat -L -b 127.0.0.1:{broker_port}")), "{banner}");

    let servers = format!("127.0.0.1:{broker_port}");
    let topics = topics_on(&servers);
    for expected in ["auth.commands", "payments.commands.json", "notifications", "_schemas", "sluice-users-changelog"] {
        assert!(topics.iter().any(|t| t == expected), "{expected} not in {topics:?}");
    }
    let subjects = http_get(&registry, "/subjects");
    assert!(subjects.starts_with("HTTP/1.1 200"), "{subjects}");
    for subject in ["auth.commands-value", "payments.settled-value", "sluice.dlq-value", "sluice-credit-repartition-value"] {
        assert!(subjects.contains(&format!("\"{subject}\"")), "{subject} not registered: {subjects}");
    }
    assert!(dir.join("broker/tansu.db").exists(), "dev broker keeps durable sqlite data");

    // SIGTERM (as Ctrl-C would) stops the registry and the broker, and sluice exits 0.
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}: {rest:?}");
    assert!(rest.iter().any(|l| l.contains("broker stopped")), "{rest:?}");
    assert!(TcpStream::connect(&servers).is_err(), "broker port closed after shutdown");
    std::fs::remove_dir_all(dir).unwrap();
}
