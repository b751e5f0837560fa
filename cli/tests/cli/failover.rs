//! Several `sluice run` instances of one application under `exactly_once_v2`: one is killed
//! with `kill -9`; the group evicts it after `session.timeout.ms`, the survivor takes its
//! tasks, restores them from their changelogs and goes on, and readers of the outputs see
//! every input's effect exactly once (docs/guarantees.md, failover).

use super::outage::{metrics_text, stop};
use super::*;

/// The value of the unlabelled gauge `name`, if the endpoint at `metrics` serves it.
fn gauge(metrics: &str, name: &str) -> Option<f64> {
    metrics_text(metrics).lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn a_killed_instance_is_replaced_and_nothing_is_lost_or_repeated() {
    let broker = sluice_testkit::Broker::start();
    let servers = broker.bootstrap_servers();
    let root = temp_dir("failover");
    let instances: Vec<(PathBuf, PathBuf, String)> = ["a", "b"]
        .iter()
        .map(|name| {
            let dir = root.join(name);
            std::fs::create_dir_all(&dir).unwrap();
            let metrics = format!("127.0.0.1:{}", sluice_testkit::free_port());
            let extra = format!("metrics_listen = \"{metrics}\"\ncommit_interval_ms = 300\nprocessing_guarantee = \"exactly_once_v2\"\n");
            let config = write_config(&dir, "failover", &servers, CRASH_TOPOLOGY, &extra);
            (dir, config, metrics)
        })
        .collect();
    let created = run(&["topics", "create", "--config", instances[0].1.to_str().unwrap()]);
    assert!(created.status.success(), "{}", text(&created.stderr));
    let first = increments(0, 2_000);
    let second = increments(2_000, 30_000);
    produce(&servers, "increments", &first);
    let spawn = |i: usize| {
        let log = std::fs::File::create(instances[i].0.join("run.log")).unwrap();
        Running(sluice().args(["run", "--config", instances[i].1.to_str().unwrap()]).env("RUST_LOG", "info").stdout(Stdio::null()).stderr(log).spawn().unwrap())
    };
    let mut a = spawn(0);
    let mut b = spawn(1);
    let (metrics_a, metrics_b) = (&instances[0].2, &instances[1].2);
    wait_until("each instance runs two of the four tasks", 90, || gauge(metrics_a, "sluice_active_tasks") == Some(2.0) && gauge(metrics_b, "sluice_active_tasks") == Some(2.0));
    wait_until("the first batch is committed", 90, || committed_total(&servers, "failover", "increments", 4) >= 2_000);
    produce(&servers, "increments", &second);
    wait_until("part of the second batch is committed", 90, || committed_total(&servers, "failover", "increments", 4) >= 4_000);
    a.kill().unwrap(); // SIGKILL mid-stream: its open transaction is left to the coordinator
    a.wait().unwrap();
    let killed = Instant::now();
    assert!(committed_total(&servers, "failover", "increments", 4) < 32_000, "killed mid-stream");
    wait_until("the survivor runs every task", 90, || gauge(metrics_b, "sluice_active_tasks") == Some(4.0));
    let failover = killed.elapsed();
    wait_until("every input is committed", 180, || committed_total(&servers, "failover", "increments", 4) == 32_000);

    // Read committed: the outputs are each input's running total exactly once per key.
    let all: Vec<_> = first.iter().chain(&second).cloned().collect();
    let mut expected: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (key, amount, _) in &all {
        let sums = expected.entry(key.clone()).or_default();
        sums.push(sums.last().copied().unwrap_or(0) + amount);
    }
    let mut outputs: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    wait_until("every output is readable", 60, || {
        outputs = BTreeMap::new();
        for (key, value, _) in consume_all(&servers, "totals") {
            outputs.entry(key).or_default().push(value.parse().unwrap());
        }
        outputs.values().map(Vec::len).sum::<usize>() >= all.len()
    });
    let wrong: Vec<(&String, usize, usize)> = expected.iter().filter(|(k, v)| outputs.get(*k) != Some(v)).map(|(k, v)| (k, v.len(), outputs.get(k).map_or(0, Vec::len))).collect();
    assert!(wrong.is_empty(), "keys whose committed outputs are not the running totals (key, inputs, outputs): {wrong:?}");
    let log = std::fs::read_to_string(instances[1].0.join("run.log")).unwrap();
    assert!(log.matches("task restored").count() >= 4, "the survivor restored the tasks it took over: {log}");
    eprintln!("failover: {:.1} s from kill -9 to every task running on the survivor", failover.as_secs_f64());
    stop(&mut b);
    std::fs::remove_dir_all(root).unwrap();
}
