//! The HTTP API keeps answering while no processor instance runs: `sluice ingest` keeps its own
//! replica of the `users` store (from its changelog), so logins and commands go on, and the
//! commands accepted meanwhile are decided when `sluice run` is back.

use super::outage::stop;
use super::*;

/// One HTTP/1.1 request (`Connection: close`) with an optional bearer token and JSON body;
/// the status and the body as JSON (a string when it is not JSON).
pub(super) fn call(address: &str, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, serde_json::Value) {
    let Ok(mut stream) = TcpStream::connect(address) else { return (0, serde_json::Value::Null) };
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let body = body.unwrap_or("");
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let Some(split) = response.windows(4).position(|w| w == b"\r\n\r\n") else { return (0, serde_json::Value::Null) };
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head.lines().next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let raw = &response[split + 4..];
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    let bytes = if chunked { dechunk(raw) } else { raw.to_vec() };
    (status, serde_json::from_slice(&bytes).unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())))
}

/// The payload of a chunked HTTP body.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&raw[..end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&raw[end + 2..end + 2 + size]);
        raw = &raw[end + 2 + size + 2..];
    }
    out
}

#[test]
fn logins_and_commands_are_accepted_while_no_processor_runs() {
    let broker = sluice_testkit::Broker::start();
    let servers = broker.bootstrap_servers();
    let dir = temp_dir("replica");
    let [registry, http, iq] = [0; 3].map(|_| format!("127.0.0.1:{}", sluice_testkit::free_port()));
    let topology = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../topology.toml")).unwrap();
    let extra = format!(
        "schema_registry_url = \"http://{registry}\"\njwt_secret = \"{E2E_SECRET}\"\nhttp_listen = \"{http}\"\napplication_server = \"http://{iq}\"\nmetrics_listen = \"127.0.0.1:0\"\n"
    );
    let config = write_config(&dir, "replica", &servers, &topology, &extra);
    let cfg = config.to_str().unwrap();
    let created = run(&["topics", "create", "--config", cfg]);
    assert!(created.status.success(), "{}", text(&created.stderr));
    let spawn = |what: &[&str], log: &str| {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join(log)).unwrap();
        Running(sluice().args(what).args(["--config", cfg]).env("RUST_LOG", "info").stdout(Stdio::null()).stderr(log).spawn().unwrap())
    };
    let mut registry_process = spawn(&["registry", "--listen", &registry], "registry.log");
    wait_until("the registry answers", 60, || TcpStream::connect(&registry).is_ok());
    let mut processors = spawn(&["run"], "run.log");
    let mut api = spawn(&["ingest"], "ingest.log");
    wait_until("the API answers", 60, || TcpStream::connect(&http).is_ok());

    // 503 with Retry-After until the API can tell whether the email is taken (its replica has
    // caught up, or the processors answer).
    wait_until("the registration is accepted", 60, || {
        let (status, body) = call(&http, "POST", "/v1/auth/register", None, Some(r#"{"email": "ada@example.com", "password": "correct horse battery"}"#));
        assert!(status == 202 || status == 503, "{status} {body}");
        status == 202
    });
    let login = r#"{"email": "ada@example.com", "password": "correct horse battery"}"#;
    wait_until("the registration is processed and ada can log in", 90, || call(&http, "POST", "/v1/auth/login", None, Some(login)).0 == 200);

    // No processor instance: the processors' stores cannot answer.
    processors.kill().unwrap();
    processors.wait().unwrap();
    let (status, body) = call(&http, "POST", "/v1/auth/login", None, Some(login));
    assert_eq!(status, 200, "login from the API's replica: {body}");
    let token = body["access_token"].as_str().unwrap().to_string();
    let (status, body) = call(&http, "GET", "/v1/auth/me", Some(&token), None);
    assert_eq!((status, body["email"].as_str()), (200, Some("ada@example.com")), "{body}");
    let (status, body) = call(&http, "PATCH", "/v1/auth/me", Some(&token), Some(r#"{"full_name": "Ada Lovelace", "date_of_birth": "1990-12-10"}"#));
    assert_eq!(status, 202, "a command accepted with no processor running: {body}");
    let status_url = body["status_url"].as_str().unwrap().to_string();
    let metrics = call(&http, "GET", "/metrics", None, None).1;
    assert!(metrics.as_str().is_some_and(|m| m.contains("sluice_api_users_replica_reads_total")), "{metrics}");

    // The processors come back and decide the command accepted meanwhile.
    let mut processors = spawn(&["run"], "run.log");
    wait_until("the profile update is settled", 120, || {
        let (status, body) = call(&http, "GET", &status_url, Some(&token), None);
        status == 200 && body["status"] == "settled"
    });
    let (_, body) = call(&http, "GET", "/v1/auth/me", Some(&token), None);
    assert_eq!(body["full_name"], "Ada Lovelace", "{body}");
    for child in [&mut api, &mut processors, &mut registry_process] {
        stop(child);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
