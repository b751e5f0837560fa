//! `sluice-testkit`: real Apache Kafka brokers on loopback, for tests, `sluice load` and
//! `sluice dev`.
//!
//! [`broker()`] starts one broker per test binary on a free port, with its data in a
//! temporary folder; [`Broker::start`] gives a test a private one; [`Broker::start_durable`]
//! keeps its data in a folder of the caller's (`sluice dev`). Every broker is a single KRaft
//! node run by `scripts/broker.sh run` (which installs Kafka from Maven Central on first use,
//! see `scripts/install-kafka.sh`) under a small supervisor shell: when this process ends, for
//! any reason (a failed test, `kill -9`), the supervisor's stdin closes and it stops the broker
//! and removes a temporary broker's folder. Nothing needs signal handling in tests.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// How long a broker may take to answer Kafka requests once its JVM was started (the install
/// of Kafka on a fresh machine happens before this clock starts).
pub const BROKER_START_TIMEOUT: Duration = Duration::from_secs(60);

/// The supervisor: starts the broker in the background, reports its pid, then waits for one
/// line on stdin. `keep` stops the broker and keeps its folder (a restart follows); anything
/// else, EOF included, stops it and, for a temporary broker, removes the folder.
const SUPERVISOR: &str = r#"script="$1" port="$2" dir="$3" temporary="$4"
"$script" run "$port" "$dir" </dev/null & pid=$!
echo "$pid"
read -r command
kill -TERM "$pid" 2>/dev/null
for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
if [ "$temporary" = yes ] && [ "$command" != keep ]; then rm -rf "$dir"; fi
exit 0"#;

/// A single-node Kafka broker on 127.0.0.1.
pub struct Broker {
    port: u16,
    dir: PathBuf,
    temporary: bool,
    running: Mutex<Option<Running>>,
    /// SCRAM users `(name, password)` of a secured broker, the super user first; empty: a
    /// plaintext broker without authorization.
    users: Vec<(String, String)>,
}

struct Running {
    supervisor: Child,
    stdin: ChildStdin,
    /// The broker's pid (the JVM's, once `broker.sh run` has exec'd it).
    pid: u32,
}

impl Broker {
    /// Starts a broker on a free port with its data in a new temporary folder (removed when
    /// the broker is dropped or this process ends), and waits until it answers.
    pub fn start() -> Broker {
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!("sluice-kafka-{}-{}", std::process::id(), SEQUENCE.fetch_add(1, Ordering::SeqCst)));
        let broker = Broker { port: free_port(), dir, temporary: true, running: Mutex::new(None), users: Vec::new() };
        broker.launch().unwrap_or_else(|e| panic!("{e}"));
        broker
    }

    /// Like [`Broker::start`], but listening with SASL_PLAINTEXT and SCRAM-SHA-512 only and
    /// authorizing with the StandardAuthorizer (no ACL, no access): `users` are created with
    /// their passwords, and the first is the super user (scripts/broker.sh).
    pub fn start_secured(users: &[(&str, &str)]) -> Broker {
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!("sluice-kafka-sasl-{}-{}", std::process::id(), SEQUENCE.fetch_add(1, Ordering::SeqCst)));
        let users = users.iter().map(|(name, password)| (name.to_string(), password.to_string())).collect();
        let broker = Broker { port: free_port(), dir, temporary: true, running: Mutex::new(None), users };
        broker.launch().unwrap_or_else(|e| panic!("{e}"));
        broker
    }

    /// librdkafka properties for a client authenticating as `user` (with its password) on a
    /// secured broker: `security.protocol`, `sasl.mechanisms`, `sasl.username`, `sasl.password`.
    pub fn client_properties(&self, user: &str) -> Vec<(String, String)> {
        let Some((name, password)) = self.users.iter().find(|(name, _)| name == user) else { return Vec::new() };
        [("security.protocol", "SASL_PLAINTEXT"), ("sasl.mechanisms", "SCRAM-SHA-512"), ("sasl.username", name.as_str()), ("sasl.password", password.as_str())]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A client configuration for this broker, as its super user when it is secured.
    pub fn admin_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.bootstrap_servers());
        if let Some((admin, _)) = self.users.first() {
            for (key, value) in self.client_properties(admin) {
                config.set(key, value);
            }
        }
        config
    }

    /// Starts a broker on `port` whose data lives in `dir` (formatted on first use, kept
    /// across restarts), and waits until it answers. With `users`, secured as
    /// [`Broker::start_secured`] (the users are created when `dir` is formatted).
    pub fn start_durable(port: u16, dir: &Path, users: &[(String, String)]) -> Result<Broker, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let dir = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let broker = Broker { port, dir, temporary: false, running: Mutex::new(None), users: users.to_vec() };
        broker.launch()?;
        Ok(broker)
    }

    /// `127.0.0.1:<port>`, for `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The broker's log file.
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("broker.log")
    }

    /// The pid of the broker's JVM, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.running.lock().expect("broker lock").as_ref().map(|r| r.pid)
    }

    /// Creates a topic (delete policy, 1 day retention); an existing topic is left as it is.
    pub fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = self.admin_config().create().expect("admin client");
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1))
            .set("cleanup.policy", "delete")
            .set("retention.ms", "86400000");
        // rdkafka's admin futures need no async runtime of their own.
        let results = futures::executor::block_on(admin.create_topics([&topic], &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)))));
        for result in results.expect("create_topics") {
            match result {
                Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => panic!("creating {topic}: {code}"),
            }
        }
    }

    /// Stops the broker cleanly (SIGTERM; its data stays for [`Broker::restart`]).
    pub fn stop(&self) {
        self.halt("keep\n");
    }

    /// Starts the stopped broker again on the same port with the same data.
    pub fn restart(&self) -> Result<(), String> {
        self.launch()
    }

    fn halt(&self, command: &str) {
        if let Some(Running { mut supervisor, mut stdin, .. }) = self.running.lock().expect("broker lock").take() {
            let _ = stdin.write_all(command.as_bytes());
            drop(stdin);
            let _ = supervisor.wait();
        }
    }

    fn launch(&self) -> Result<(), String> {
        let mut running = self.running.lock().expect("broker lock");
        if running.is_some() {
            return Ok(());
        }
        install_kafka()?;
        let users: Vec<String> = self.users.iter().map(|(name, password)| format!("{name}={password}")).collect();
        let mut supervisor = Command::new("sh")
            .arg("-c")
            .arg(SUPERVISOR)
            .arg("sh")
            .arg(scripts_dir().join("broker.sh"))
            .arg(self.port.to_string())
            .arg(&self.dir)
            .arg(if self.temporary { "yes" } else { "no" })
            .env("SLUICE_KAFKA_SASL_USERS", users.join(","))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Its own process group: Ctrl-C in a terminal reaches `sluice dev`, which closes
            // its processors and then stops the broker, not the broker under them.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot spawn the broker's supervisor shell: {e}"))?;
        let stdin = supervisor.stdin.take().expect("piped stdin");
        let mut line = String::new();
        BufReader::new(supervisor.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .map_err(|e| format!("the broker's supervisor did not report: {e}"))?;
        let pid = line.trim().parse().map_err(|_| format!("the broker's supervisor reported {line:?}"))?;
        *running = Some(Running { supervisor, stdin, pid });
        drop(running);
        self.wait_ready().inspect_err(|_| self.halt("keep\n"))
    }

    /// Polls Metadata until the broker lists itself; fails early, with the log's tail, if
    /// the JVM exits first.
    fn wait_ready(&self) -> Result<(), String> {
        let started = Instant::now();
        let deadline = started + BROKER_START_TIMEOUT;
        let pid = self.pid().expect("broker launched");
        let consumer: BaseConsumer = self
            .admin_config()
            .set("log_level", "0")
            .create()
            .map_err(|e| format!("metadata client: {e}"))?;
        loop {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return Err(format!("Kafka on {} exited before it was ready; last lines of {}:\n{}", self.bootstrap_servers(), self.log_file().display(), self.log_tail(20)));
            }
            if let Ok(metadata) = consumer.fetch_metadata(None, Duration::from_millis(500)) {
                if !metadata.brokers().is_empty() {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(format!("Kafka did not answer on {} within {BROKER_START_TIMEOUT:?}; see {}:\n{}", self.bootstrap_servers(), self.log_file().display(), self.log_tail(20)));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.log_file()).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(lines).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.halt("done\n");
        // A broker stopped earlier (Broker::stop) left its folder for a restart.
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The broker shared by every test of this test binary, started on first use. Tests that share
/// it each use their own topic names, application ids and group ids.
pub fn broker() -> &'static Broker {
    static BROKER: OnceLock<Broker> = OnceLock::new();
    BROKER.get_or_init(Broker::start)
}

/// Ports [`free_port`] hands out: below Linux's ephemeral range (32768-60999), which the
/// kernel draws from for every outgoing connection (Kafka clients open many), so a port handed
/// out here is not taken by a client socket before the process meant for it binds it.
const FREE_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A TCP port on 127.0.0.1 that was free a moment ago, never the same twice in one process.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().expect("free port lock");
    // Start where the pid and the count point, so concurrent test processes spread out.
    let span = u32::from(FREE_PORTS.end - FREE_PORTS.start);
    let start = (std::process::id().wrapping_mul(7919) + handed_out.len() as u32 * 104_729) % span;
    for step in 0..span {
        let port = FREE_PORTS.start + u16::try_from((start + step) % span).expect("within the range");
        if !handed_out.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.push(port);
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("bind 127.0.0.1:0")
}

/// The repository's `scripts/` folder (`$SLUICE_SCRIPTS` overrides it).
pub fn scripts_dir() -> PathBuf {
    std::env::var_os("SLUICE_SCRIPTS").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts"))
}

/// Runs `scripts/install-kafka.sh` (quick once Kafka is installed); its progress goes to stderr.
pub fn install_kafka() -> Result<PathBuf, String> {
    let script = scripts_dir().join("install-kafka.sh");
    let output = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !output.status.success() {
        return Err(format!("{} failed ({}): Kafka is not installed", script.display(), output.status));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()))
}
