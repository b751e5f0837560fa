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

/// Two `sluice run` instances of application `failover` (exactly_once_v2), each with its own
/// state directory and metrics endpoint, over `CRASH_TOPOLOGY` with its topics created.
struct Pair {
    broker: sluice_testkit::Broker,
    servers: String,
    root: PathBuf,
    /// (directory, config file) per instance.
    instances: Vec<(PathBuf, PathBuf)>,
    /// Each instance's metrics address, as its last start printed it (it binds port 0, so no
    /// other process can hold the port first).
    metrics: std::sync::Mutex<Vec<String>>,
}

impl Pair {
    fn new(name: &str) -> Pair {
        Pair::with(name, "")
    }

    /// A pair whose configurations add `settings` (TOML lines).
    fn with(name: &str, settings: &str) -> Pair {
        let broker = sluice_testkit::Broker::start();
        let servers = broker.bootstrap_servers();
        let root = temp_dir(name);
        let instances: Vec<(PathBuf, PathBuf)> = ["a", "b"]
            .iter()
            .map(|name| {
                let dir = root.join(name);
                std::fs::create_dir_all(&dir).unwrap();
                let extra = format!("metrics_listen = \"127.0.0.1:0\"\ncommit_interval_ms = 300\nprocessing_guarantee = \"exactly_once_v2\"\n{settings}");
                let config = write_config(&dir, "failover", &servers, CRASH_TOPOLOGY, &extra);
                (dir, config)
            })
            .collect();
        let created = run(&["topics", "create", "--config", instances[0].1.to_str().unwrap()]);
        assert!(created.status.success(), "{}", text(&created.stderr));
        Pair { broker, servers, root, instances, metrics: std::sync::Mutex::new(vec![String::new(); 2]) }
    }

    /// Starts instance `i` and reads the metrics address it prints once it serves them.
    fn spawn(&self, i: usize) -> Running {
        let log = std::fs::File::create(self.instances[i].0.join("run.log")).unwrap();
        let mut child = Running(sluice().args(["run", "--config", self.instances[i].1.to_str().unwrap()]).env("RUST_LOG", "info").stdout(Stdio::piped()).stderr(log).spawn().unwrap());
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let started = lines.by_ref().map_while(Result::ok).find(|l| l.contains("metrics at http://")).unwrap_or_else(|| panic!("instance {i} did not start: {}", self.log(i)));
        let address = started.split("metrics at http://").nth(1).and_then(|rest| rest.split('/').next()).unwrap().to_string();
        self.metrics.lock().unwrap()[i] = address;
        std::thread::spawn(move || lines.for_each(drop));
        child
    }

    /// Instance `i`'s metrics address.
    fn metrics(&self, i: usize) -> String {
        self.metrics.lock().unwrap()[i].clone()
    }

    fn tasks(&self, i: usize) -> Option<f64> {
        gauge(&self.metrics(i), "sluice_active_tasks")
    }

    fn standbys(&self, i: usize) -> Option<f64> {
        gauge(&self.metrics(i), "sluice_standby_tasks")
    }

    fn committed(&self) -> i64 {
        committed_total(&self.servers, "failover", "increments", 4)
    }

    /// Starts both instances on a first batch, then sends a second and returns once part of
    /// it is committed (the instances are mid-stream).
    fn start_mid_stream(&self, inputs: &[(String, i64, String)]) -> (Running, Running) {
        produce(&self.servers, "increments", &inputs[..2_000]);
        let (a, b) = (self.spawn(0), self.spawn(1));
        wait_until("each instance runs two of the four tasks", 90, || self.tasks(0) == Some(2.0) && self.tasks(1) == Some(2.0));
        wait_until("the first batch is committed", 90, || self.committed() >= 2_000);
        produce(&self.servers, "increments", &inputs[2_000..]);
        wait_until("part of the second batch is committed", 90, || self.committed() >= 4_000);
        (a, b)
    }

    /// Every input committed, and read committed the outputs are each input's running total
    /// exactly once per key.
    fn check_exactly_once(&self, inputs: &[(String, i64, String)]) {
        wait_until("every input is committed", 180, || self.committed() == inputs.len() as i64);
        let mut expected: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for (key, amount, _) in inputs {
            let sums = expected.entry(key.clone()).or_default();
            sums.push(sums.last().copied().unwrap_or(0) + amount);
        }
        let mut outputs: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        wait_until("every output is readable", 60, || {
            outputs = BTreeMap::new();
            for (key, value, _) in consume_all(&self.servers, "totals") {
                outputs.entry(key).or_default().push(value.parse().unwrap());
            }
            outputs.values().map(Vec::len).sum::<usize>() >= inputs.len()
        });
        let wrong: Vec<(&String, usize, usize)> = expected.iter().filter(|(k, v)| outputs.get(*k) != Some(v)).map(|(k, v)| (k, v.len(), outputs.get(k).map_or(0, Vec::len))).collect();
        assert!(wrong.is_empty(), "keys whose committed outputs are not the running totals (key, inputs, outputs): {wrong:?}");
    }

    /// Kills the first instance (`a`) with SIGKILL mid-stream (its open transaction is left to
    /// the coordinator), waits until the other runs every task and checks the outputs are
    /// exactly once; returns the time from the kill to every task running.
    fn kill_first_and_fail_over(&self, mut a: Running, inputs: &[(String, i64, String)]) -> Duration {
        a.kill().unwrap();
        a.wait().unwrap();
        let killed = Instant::now();
        assert!(self.committed() < inputs.len() as i64, "killed mid-stream");
        wait_until("the survivor runs every task", 90, || self.tasks(1) == Some(4.0));
        let failover = killed.elapsed();
        self.check_exactly_once(inputs);
        failover
    }

    fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.instances[i].0.join("run.log")).unwrap()
    }

    fn finish(self, mut running: Vec<Running>) {
        for child in &mut running {
            stop(child);
        }
        drop(self.broker);
        std::fs::remove_dir_all(&self.root).unwrap();
    }
}

#[test]
fn a_killed_instance_is_replaced_and_nothing_is_lost_or_repeated() {
    let pair = Pair::new("failover");
    let inputs = increments(0, 32_000);
    let (a, b) = pair.start_mid_stream(&inputs);
    let failover = pair.kill_first_and_fail_over(a, &inputs);
    assert!(pair.log(1).matches("task restored").count() >= 4, "the survivor restored the tasks it took over: {}", pair.log(1));
    eprintln!("failover: {:.1} s from kill -9 to every task running on the survivor", failover.as_secs_f64());
    pair.finish(vec![b]);
}

/// A zombie: an instance paused (SIGSTOP) past the session timeout is replaced; when it wakes
/// it cannot commit the work it did for tasks it lost (its transaction is aborted, or its
/// producer fenced), and it rejoins the group.
#[test]
fn a_paused_instance_cannot_commit_when_it_wakes_and_rejoins() {
    let pair = Pair::new("zombie");
    let inputs = increments(0, 32_000);
    let (a, b) = pair.start_mid_stream(&inputs);
    assert!(Command::new("kill").arg("-STOP").arg(a.id().to_string()).status().unwrap().success());
    wait_until("the other instance runs every task", 90, || pair.tasks(1) == Some(4.0));
    assert!(Command::new("kill").arg("-CONT").arg(a.id().to_string()).status().unwrap().success());
    wait_until("the woken instance rejoins and the tasks are shared again", 90, || pair.tasks(0) == Some(2.0) && pair.tasks(1) == Some(2.0));
    pair.check_exactly_once(&inputs);
    let log = pair.log(0);
    assert!(log.matches("partitions assigned").count() >= 2, "the woken instance rejoined: {log}");
    for line in log.lines().filter(|l| l.contains("fenced") || l.contains("discarding") || l.contains("revoked") || l.contains("transaction")) {
        eprintln!("zombie: {line}");
    }
    pair.finish(vec![a, b]);
}

/// With `num_standby_replicas = 1` each instance keeps a warm copy of the other's tasks; when
/// one is killed, the survivor promotes its standbys and restores only the changelog tail
/// they had not applied, and the outputs stay exactly once.
#[test]
fn a_standby_is_promoted_on_failover_and_restores_only_the_tail() {
    let pair = Pair::with("standby", "num_standby_replicas = 1\n");
    let inputs = increments(0, 48_000);
    let (a, b) = pair.start_mid_stream(&inputs[..16_000]);
    wait_until("each instance keeps standbys of the other's two tasks", 90, || pair.standbys(0) == Some(2.0) && pair.standbys(1) == Some(2.0));
    wait_until("standby lag is served per task and store", 30, || {
        metrics_text(&pair.metrics(1)).lines().any(|l| l.starts_with("sluice_standby_records_lag{") && l.contains("store=\"balances\""))
    });
    // The last batch only once the standbys run, so that the kill lands mid-stream however long
    // they took to start.
    wait_until("the first batches are committed", 90, || pair.committed() >= 16_000);
    produce(&pair.servers, "increments", &inputs[16_000..]);
    wait_until("part of the last batch is committed", 90, || pair.committed() >= 20_000);
    let failover = pair.kill_first_and_fail_over(a, &inputs);
    let log = pair.log(1);
    let promoted = log.find("standby task promoted to active").unwrap_or_else(|| panic!("the survivor promoted its standbys: {log}"));
    assert_eq!(log.matches("standby task promoted to active").count(), 2, "{log}");
    // Restored after the promotion: only what the standbys had not applied when the other
    // instance died, a fraction of the ~24,000 changelog records of its two tasks.
    let restored: u64 = log[promoted..]
        .lines()
        .filter(|l| l.contains("task restored"))
        .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("records=")).and_then(|n| n.parse::<u64>().ok()))
        .sum();
    assert!(restored < 4_000, "the promoted tasks restored {restored} changelog records: {log}");
    eprintln!("standby failover: {:.1} s from kill -9 to every task running; {restored} changelog records restored after promotion", failover.as_secs_f64());
    pair.finish(vec![b]);
}
