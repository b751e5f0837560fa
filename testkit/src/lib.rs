//! `sluice-testkit`: broker support for tests (and [`tansu_binary`] for `sluice dev`). [`broker()`] starts one private tansu broker per test
//! binary on a free loopback port (in-memory storage) and stops it when the binary exits;
//! [`Broker::start`] gives a test its own broker that stops on drop.
//!
//! tansu must be installed (`scripts/install-tansu.sh`); `$TANSU` overrides where it is.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// How long a broker may take to accept Kafka requests after it was spawned.
const BROKER_START_TIMEOUT: Duration = Duration::from_secs(30);

/// A tansu broker on 127.0.0.1, stopped when dropped (or, for [`broker()`], when the test
/// process exits: its supervisor shell kills tansu once our end of its stdin closes).
pub struct Broker {
    port: u16,
    supervisor: Mutex<Option<(Child, ChildStdin)>>,
}

impl Broker {
    /// Starts a broker with in-memory storage on a free port and waits until it answers a
    /// metadata request.
    pub fn start() -> Broker {
        Broker::start_with_storage("memory://tansu/")
    }

    /// Starts a broker with the given tansu `--storage-engine` URL (e.g. `sqlite://PATH`).
    pub fn start_with_storage(storage_engine: &str) -> Broker {
        let port = free_port();
        let tansu = tansu_binary();
        let listener = format!("tcp://127.0.0.1:{port}");
        // The shell starts tansu, then blocks reading stdin; EOF (our process ended or the
        // Broker was dropped) makes it kill tansu. This needs no signal handling in tests.
        let script = r#"tansu="$1"; shift; "$tansu" broker "$@" >&2 & pid=$!; echo started; read _ignored; kill $pid 2>/dev/null; wait $pid 2>/dev/null; exit 0"#;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .arg(&tansu)
            .args(["--listener-url", &listener, "--advertised-listener-url", &listener, "--storage-engine", storage_engine])
            .env("RUST_LOG", std::env::var("TANSU_LOG").unwrap_or_else(|_| "warn".to_string()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn tansu ({}): {e}; run scripts/install-tansu.sh", tansu.display()));
        let stdin = child.stdin.take().expect("piped stdin");
        let mut started = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut started)
            .expect("supervisor shell reports start");
        let broker = Broker { port, supervisor: Mutex::new(Some((child, stdin))) };
        broker.wait_ready();
        broker
    }

    /// `127.0.0.1:<port>`, for `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates a topic (delete policy, 1 day retention); an existing topic is left as it is.
    pub fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap_servers())
            .create()
            .expect("admin client");
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

    /// Stops the broker now.
    pub fn stop(&self) {
        if let Some((mut child, stdin)) = self.supervisor.lock().expect("supervisor lock").take() {
            drop(stdin);
            let _ = child.wait();
        }
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + BROKER_START_TIMEOUT;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {addr} within {BROKER_START_TIMEOUT:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap_servers())
            .create()
            .expect("metadata client");
        loop {
            match consumer.fetch_metadata(None, Duration::from_secs(2)) {
                Ok(metadata) if !metadata.brokers().is_empty() => return,
                Ok(_) | Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
                Ok(_) => panic!("tansu on {addr} reports no brokers"),
                Err(e) => panic!("tansu on {addr} does not answer metadata requests: {e}"),
            }
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The broker shared by every test of this test binary, started on first use.
pub fn broker() -> &'static Broker {
    static BROKER: OnceLock<Broker> = OnceLock::new();
    BROKER.get_or_init(Broker::start)
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("bind 127.0.0.1:0")
}

/// Where the tansu binary is: `$TANSU`, else `tansu` on PATH, else `~/.cargo/bin/tansu`.
pub fn tansu_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TANSU") {
        return PathBuf::from(path);
    }
    if let Some(path) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).map(|dir| dir.join("tansu")).find(|candidate| candidate.is_file())
    }) {
        return path;
    }
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .unwrap_or_default();
    home.join("bin").join("tansu")
}
