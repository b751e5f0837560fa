//! Kafka as a boundary (docs/security.md, the broker): a broker with SASL/SCRAM and the
//! StandardAuthorizer, the ACLs `sluice acls --apply` derives from topology.toml, and each
//! process as its own principal. The pipeline works end to end; a kcat user can do what kcat
//! users do and nothing else; a principal without ACLs can do nothing.

use super::replica::call;
use super::*;

use rdkafka::producer::{FutureProducer, FutureRecord};

const USERS: [(&str, &str); 6] = [
    ("admin", "admin-password-1"),
    ("sluice-processors", "processors-password-1"),
    ("sluice-ingest", "ingest-password-1"),
    ("sluice-registry", "registry-password-1"),
    ("kcat", "kcat-password-1"),
    ("mallory", "mallory-password-1"),
];

/// A client of `broker` authenticated as `user`.
fn client(broker: &sluice_testkit::Broker, user: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", broker.bootstrap_servers()).set("log_level", "3");
    for (key, value) in broker.client_properties(user) {
        config.set(key, value);
    }
    config
}

/// The broker's answer to `user` producing one record to `topic`.
fn produce_as(broker: &sluice_testkit::Broker, user: &str, topic: &str, key: &str, value: &[u8], headers: Option<OwnedHeaders>) -> Result<(), String> {
    let producer: FutureProducer = client(broker, user).set("message.timeout.ms", "10000").set("partitioner", "murmur2_random").create().unwrap();
    let io = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut record = FutureRecord::to(topic).key(key).payload(value);
    if let Some(headers) = headers {
        record = record.headers(headers);
    }
    io.block_on(producer.send(record, Duration::from_secs(10))).map(|_| ()).map_err(|(e, _)| e.to_string())
}

/// The first answer to `user` reading `topic` from the beginning: Ok(number of records seen
/// within a few seconds) or the error (the topic's metadata error when it may not see it).
fn read_as(broker: &sluice_testkit::Broker, user: &str, topic: &str) -> Result<usize, String> {
    let consumer: BaseConsumer = client(broker, user).set("group.id", format!("{user}-reader")).set("enable.auto.commit", "false").create().unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).map_err(|e| e.to_string())?;
    if let Some(error) = metadata.topics().first().and_then(|t| t.error()) {
        return Err(format!("{topic}: {error:?}"));
    }
    let mut list = TopicPartitionList::new();
    for partition in 0..4 {
        list.add_partition_offset(topic, partition, Offset::Beginning).unwrap();
    }
    consumer.assign(&list).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = 0;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(_)) => seen += 1,
            Some(Err(error)) => return Err(error.to_string()),
            None => {}
        }
    }
    Ok(seen)
}

#[test]
fn on_a_secured_broker_each_principal_does_its_part_and_nothing_else() {
    let broker = sluice_testkit::Broker::start_secured(&USERS);
    let servers = broker.bootstrap_servers();
    let dir = temp_dir("acls");
    let [registry, http, iq] = [0; 3].map(|_| format!("127.0.0.1:{}", sluice_testkit::free_port()));
    let password = |user: &str| USERS.iter().find(|(name, _)| *name == user).unwrap().1;
    let as_user = |user: &str| {
        let mut command = sluice();
        command
            .env("SLUICE__BOOTSTRAP_SERVERS", &servers)
            .env("SLUICE__SCHEMA_REGISTRY_URL", format!("http://{registry}"))
            .env("SLUICE__JWT_SECRET", E2E_SECRET)
            .env("SLUICE__STATE_DIR", dir.join("state"))
            .env("SLUICE__METRICS_LISTEN", "127.0.0.1:0")
            .env("SLUICE__HTTP_LISTEN", &http)
            .env("SLUICE__APPLICATION_SERVER", format!("http://{iq}"))
            .env("SLUICE__SECURITY_PROTOCOL", "SASL_PLAINTEXT")
            .env("SLUICE__SASL_USERNAME", user)
            .env("SLUICE__SASL_PASSWORD", password(user));
        command
    };

    // The administrator creates the topics and the ACLs; the printed commands say what they are.
    let created = as_user("admin").args(["topics", "create"]).output().unwrap();
    assert!(created.status.success(), "{}", text(&created.stderr));
    let printed = text(&as_user("admin").args(["acls"]).output().unwrap().stdout);
    assert!(printed.contains("--allow-principal User:kcat --operation Write --operation Describe --topic auth.commands.json"), "{printed}");
    assert!(printed.contains("--allow-principal User:sluice-ingest --operation Write --operation Describe --topic auth.commands --topic hmrc.death.notification"), "{printed}");
    assert!(!printed.lines().any(|l| l.contains("User:kcat") && l.contains("--topic payments.commands ")), "kcat never writes an Avro command topic: {printed}");
    let applied = as_user("admin").args(["acls", "--apply"]).output().unwrap();
    assert!(applied.status.success() && text(&applied.stdout).contains("ACL bindings applied"), "{}{}", text(&applied.stdout), text(&applied.stderr));
    // Applying again changes nothing and does not fail; a principal that is not an
    // administrator cannot grant itself anything.
    assert!(as_user("admin").args(["acls", "--apply"]).output().unwrap().status.success());
    let usurper = as_user("kcat").args(["acls", "--apply", "--kcat", "User:kcat"]).output().unwrap();
    assert!(!usurper.status.success() && text(&usurper.stderr).contains("needs ALTER permission"), "{}", text(&usurper.stderr));

    // Each process as its own principal.
    let spawn = |user: &str, what: &[&str], log: &str| {
        let log = std::fs::File::create(dir.join(log)).unwrap();
        Running(as_user(user).args(what).env("RUST_LOG", "info").stdout(Stdio::null()).stderr(log).spawn().unwrap())
    };
    let mut registry_process = spawn("sluice-registry", &["registry", "--listen", &registry], "registry.log");
    wait_until("the registry answers", 60, || TcpStream::connect(&registry).is_ok());
    let mut processors = spawn("sluice-processors", &["run"], "run.log");
    let mut api = spawn("sluice-ingest", &["ingest"], "ingest.log");
    wait_until("the API answers", 60, || TcpStream::connect(&http).is_ok());

    // The pipeline works: a sign-up through the API (the ingest principal writes the command
    // topic, the processors read it and write the users store), then a login.
    wait_until("the registration is accepted", 90, || call(&http, "POST", "/v1/auth/register", None, Some(r#"{"email": "ada@example.com", "password": "correct horse battery"}"#)).0 == 202);
    let login = r#"{"email": "ada@example.com", "password": "correct horse battery"}"#;
    wait_until("ada can log in", 120, || call(&http, "POST", "/v1/auth/login", None, Some(login)).0 == 200);
    // The API checked Ada's password against its replica of the users changelog; no query
    // answer carries a hash: not a key read (whatever it asks for), not a scan, not `sluice query`.
    let ada = model::user_id_for_email("ada@example.com");
    let (status, _, body) = iq_request(&iq, &format!("/v1/stores/users/keys/{ada}"));
    let profile: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((status, profile["email"].as_str()), (200, Some("ada@example.com")), "{profile}");
    assert!(profile.get("password_hash").is_none() && !text(&body).contains("argon2"), "a query answer without the hash: {profile}");
    let (_, _, scan) = iq_request(&iq, &format!("/v1/stores/users/prefix/{ada}"));
    assert!(!text(&scan).contains("argon2"), "a scan without hashes: {}", text(&scan));
    let (_, _, credentials) = iq_request(&iq, &format!("/v1/stores/users/keys/{ada}?purpose=credentials"));
    assert!(!text(&credentials).contains("argon2"), "no credential read either: {}", text(&credentials));
    let asked = as_user("admin").args(["query", "--server", &format!("http://{iq}"), &format!("/v1/stores/users/keys/{ada}")]).output().unwrap();
    assert!(asked.status.success() && text(&asked.stdout).contains("ada@example.com") && !text(&asked.stdout).contains("argon2"), "{}", text(&asked.stdout));
    // A password change is seen by the first login after its status says so (the API waits for
    // its replica to read the changelog up to the broker's end), and the old password is refused.
    let (status, tokens) = call(&http, "POST", "/v1/auth/login", None, Some(login));
    assert_eq!(status, 200, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let change = r#"{"current_password": "correct horse battery", "new_password": "another horse battery"}"#;
    let (status, accepted) = call(&http, "POST", "/v1/auth/change-password", Some(&access), Some(change));
    assert_eq!(status, 202, "{accepted}");
    let status_url = accepted["status_url"].as_str().unwrap().to_string();
    // Applied: the processors' store says so, and the token of before is revoked with it.
    wait_until("the password change is applied", 60, || {
        let (status, answer) = call(&http, "GET", &status_url, Some(&access), None);
        status == 401 && answer["type"].as_str().is_some_and(|t| t.ends_with("/token-revoked"))
    });
    let renewed = r#"{"email": "ada@example.com", "password": "another horse battery"}"#;
    assert_eq!(call(&http, "POST", "/v1/auth/login", None, Some(renewed)).0, 200, "the new password, at once");
    assert_eq!(call(&http, "POST", "/v1/auth/login", None, Some(login)).0, 401, "the old password");

    // A kcat user: may write the JSON twins (the bridge forwards the command) and read outputs.
    let bob = model::user_id_for_email("bob@example.com");
    let json = format!(r#"{{"payload": {{"type": "RegisterUser", "email": "bob@example.com", "password_hash": "{HASH}"}}}}"#);
    produce_as(&broker, "kcat", "auth.commands.json", &bob, json.as_bytes(), None).expect("kcat writes a JSON command");
    wait_until("bob's registration reaches auth.events", 90, || read_as(&broker, "kcat", "auth.events").is_ok_and(|n| n >= 2));
    // ... and nothing else: not an Avro command topic, not a changelog, not another's topic.
    let refused = produce_as(&broker, "kcat", "payments.commands", &bob, b"\0\0\0\0\x01forged", None).unwrap_err();
    assert!(refused.to_lowercase().contains("authoriz"), "kcat writing payments.commands: {refused}");
    let refused = read_as(&broker, "kcat", "sluice-users-changelog").unwrap_err();
    assert!(refused.to_lowercase().contains("authoriz"), "kcat reading the users changelog (password hashes): {refused}");
    let refused = produce_as(&broker, "kcat", "sluice-credit-repartition", &bob, b"leg", None).unwrap_err();
    assert!(refused.to_lowercase().contains("authoriz"), "kcat writing a repartition topic: {refused}");
    // A principal without ACLs can do nothing at all.
    let refused = produce_as(&broker, "mallory", "auth.commands.json", &bob, json.as_bytes(), None).unwrap_err();
    assert!(refused.to_lowercase().contains("authoriz"), "mallory writing a JSON command: {refused}");
    let refused = read_as(&broker, "mallory", "auth.events").unwrap_err();
    assert!(refused.to_lowercase().contains("authoriz"), "mallory reading outputs: {refused}");

    for child in [&mut api, &mut processors, &mut registry_process] {
        super::outage::stop(child);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
