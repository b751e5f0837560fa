//! Failures the stream thread waits out instead of exiting or dead-lettering good records
//! (docs/architecture.md, errors and retries): the Schema Registry away while records flow,
//! and the broker away for longer than the producer's 30 s delivery timeout.

use super::*;

/// The Prometheus text of the metrics endpoint at `metrics` (empty while it does not answer).
pub(crate) fn metrics_text(metrics: &str) -> String {
    let Ok(mut stream) = TcpStream::connect(metrics) else { return String::new() };
    let _ = stream.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {metrics}\r\nConnection: close\r\n\r\n").as_bytes());
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body);
    body
}

/// `sluice_task_retries_total` summed over its labels.
fn retries(metrics: &str) -> f64 {
    metrics_text(metrics).lines().filter(|l| l.starts_with("sluice_task_retries_total")).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

fn start_registry(address: &str, servers: &str, log: &Path) -> Running {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let child = Running(sluice().args(["registry", "--listen", address, "--bootstrap-servers", servers]).env("RUST_LOG", "info").stdout(Stdio::null()).stderr(log).spawn().unwrap());
    wait_until("the registry answers", 60, || TcpStream::connect(address).is_ok());
    child
}

pub(crate) fn stop(child: &mut Running) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();
}

#[test]
fn a_registry_outage_is_waited_out_and_no_good_record_is_dead_lettered() {
    let broker = sluice_testkit::Broker::start();
    let servers = broker.bootstrap_servers();
    let dir = temp_dir("registry-outage");
    let registry = format!("127.0.0.1:{}", sluice_testkit::free_port());
    let metrics = format!("127.0.0.1:{}", sluice_testkit::free_port());
    let env = [
        ("SLUICE__APPLICATION_ID", "outage".to_string()),
        ("SLUICE__BOOTSTRAP_SERVERS", servers.clone()),
        ("SLUICE__SCHEMA_REGISTRY_URL", format!("http://{registry}")),
        ("SLUICE__METRICS_LISTEN", metrics.clone()),
        ("SLUICE__STATE_DIR", dir.join("state").display().to_string()),
        ("SLUICE__JWT_SECRET", E2E_SECRET.to_string()),
    ];
    let output = sluice().args(["topics", "create"]).envs(env.clone()).output().unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let mut registry_process = start_registry(&registry, &servers, &dir.join("registry.log"));
    let log = std::fs::File::create(dir.join("run.log")).unwrap();
    let mut processors = Running(sluice().args(["run"]).envs(env.clone()).env("RUST_LOG", "info").stdout(Stdio::null()).stderr(log).spawn().unwrap());
    wait_until("every task runs", 90, || metrics_text(&metrics).lines().any(|l| l == "sluice_active_tasks 12"));

    // The registry goes away before the processors have looked up a single schema.
    stop(&mut registry_process);
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", &servers).set("partitioner", "murmur2_random").create().unwrap();
    let users: Vec<(String, String)> = (0..20).map(|i| (format!("reg-{i}"), format!("user{i}@example.com"))).collect();
    for (id, email) in &users {
        let json = format!(r#"{{"event_id": "{id}", "payload": {{"type": "RegisterUser", "email": "{email}", "password_hash": "{HASH}"}}}}"#);
        let key = model::user_id_for_email(email);
        producer.send(BaseRecord::to("auth.commands.json").key(&key).payload(&json)).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    wait_until("the processors retry", 60, || retries(&metrics) >= 2.0);
    assert!(processors.try_wait().unwrap().is_none(), "the processors exited during the outage; see {}", dir.join("run.log").display());

    let _registry_process = start_registry(&registry, &servers, &dir.join("registry.log"));
    let codec = Codec::new(&format!("http://{registry}"), Some(E2E_REGISTRY_USER_INFO)).unwrap();
    let io = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut outcomes: Vec<ActivityLog> = Vec::new();
    wait_until("every registration has its outcome", 90, || {
        outcomes = io.block_on(decode_values(&codec, consume_raw(&servers, "system.logs.activity")));
        users.iter().all(|(id, _)| outcomes.iter().any(|o| &o.command_id == id))
    });
    for (id, _) in &users {
        // Processed once: a registration processed twice would be refused the second time.
        let mine: Vec<&ActivityLog> = outcomes.iter().filter(|o| &o.command_id == id).collect();
        assert!(mine.iter().all(|o| o.outcome == "settled"), "{id}: {mine:?}");
    }
    assert!(consume_raw(&servers, "sluice.dlq").is_empty(), "no good record is dead-lettered");
    stop(&mut processors);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Records the `sum` processor processed (`sluice_process_records_total{processor="sum"}`).
fn processed(metrics: &str) -> f64 {
    metrics_text(metrics).lines().filter(|l| l.starts_with(r#"sluice_process_records_total{processor="sum"}"#)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

#[test]
fn a_broker_outage_longer_than_the_delivery_timeout_is_waited_out() {
    broker_outage("broker-outage", "at_least_once");
}

#[test]
fn a_broker_outage_mid_transaction_is_waited_out_under_exactly_once_v2() {
    broker_outage("broker-outage-eos", "exactly_once_v2");
}

fn broker_outage(name: &str, guarantee: &str) {
    let broker = sluice_testkit::Broker::start();
    let servers = broker.bootstrap_servers();
    let dir = temp_dir(name);
    let metrics = format!("127.0.0.1:{}", sluice_testkit::free_port());
    let config = write_config(&dir, "outage", &servers, CRASH_TOPOLOGY, &format!("metrics_listen = \"{metrics}\"\ncommit_interval_ms = 5000\nprocessing_guarantee = \"{guarantee}\"\n"));
    assert!(run(&["topics", "create", "--config", config.to_str().unwrap()]).status.success());
    let log = std::fs::File::create(dir.join("run.log")).unwrap();
    let mut processors = Running(sluice().args(["run", "--config", config.to_str().unwrap()]).env("RUST_LOG", "info").stdout(Stdio::null()).stderr(log).spawn().unwrap());
    let before = increments(0, 500);
    produce(&servers, "increments", &before);
    wait_until("the first records are committed", 90, || committed_total(&servers, "outage", "increments", 4) == 500);

    // A commit just happened; the next is due 5 s later. A record processed now has its
    // output sent at once (at_least_once: delivered; exactly_once_v2: in the open
    // transaction), but its changelog records wait for that commit, which comes with the
    // broker gone: they cannot be delivered within message.timeout.ms, which used to stop the
    // thread. Now the thread discards the work since the last commit (aborting the
    // transaction once the broker is back), backs off, and redoes it.
    let last = increments(500, 1);
    produce(&servers, "increments", &last);
    if guarantee == "at_least_once" {
        let so_far = reference(&before.iter().chain(&last).cloned().collect::<Vec<_>>());
        wait_until("the last record's output arrives", 30, || last_totals(&servers) == so_far);
    } else {
        wait_until("the last record is processed", 30, || processed(&metrics) >= 501.0);
    }
    broker.stop();
    let stopped = Instant::now();
    while stopped.elapsed() < Duration::from_secs(40) {
        assert!(processors.try_wait().unwrap().is_none(), "the processors exited during the outage; see {}", dir.join("run.log").display());
        std::thread::sleep(Duration::from_millis(500));
    }
    broker.restart().unwrap();
    let after = increments(501, 500);
    produce(&servers, "increments", &after);
    wait_until("every record is committed", 120, || committed_total(&servers, "outage", "increments", 4) == 1001);
    let all: Vec<_> = before.into_iter().chain(last).chain(after).collect();
    let expected = reference(&all);
    wait_until("the totals are exact", 60, || last_totals(&servers) == expected);
    assert!(processors.try_wait().unwrap().is_none(), "the processors are still running");
    assert!(retries(&metrics) >= 1.0, "the failed delivery was retried, not fatal");
    stop(&mut processors);
    std::fs::remove_dir_all(&dir).unwrap();
}
