//! The operator console's API and `sluice dlq` on the API test's stack (docs/operations.md),
//! once the attack suite has filled the DLQ: a forged record replayed is verified again and
//! dead-lettered again; a command that arrived on the wrong partition is replayed and settles;
//! a dead letter is discarded; each decision is kept and audited; the topic browser decodes
//! Avro and hides credentials; pausing the processors makes their group's lag grow, and
//! resuming drains it.

use super::*;

use rust_decimal::Decimal;
use serde_json::{json, Value};
use sluice_streams::partitioner::partition_for_key;

/// `sluice dlq ...` against the stack.
fn dlq(p: &Pipeline, args: &[&str]) -> Output {
    let registry = p.dev_args.iter().skip_while(|a| *a != "--registry-listen").nth(1).expect("the stack's registry address").clone();
    sluice()
        .arg("dlq")
        .args(args)
        .env("SLUICE__BOOTSTRAP_SERVERS", &p.servers)
        .env("SLUICE__SCHEMA_REGISTRY_URL", format!("http://{registry}"))
        .env("SLUICE__APPLICATION_ID", &p.application_id)
        .output()
        .unwrap()
}

fn letters(api: &api::Api<'_>, operator: &str) -> Vec<Value> {
    let list = api.get("/v1/ops/dlq?status=all&limit=500", Some(operator));
    assert_eq!(list.status, 200, "{}", list.body);
    list.body["dead_letters"].as_array().unwrap().clone()
}

fn lag_of(api: &api::Api<'_>, operator: &str, group: &str, topic: &str) -> i64 {
    let groups = api.get("/v1/ops/groups", Some(operator));
    assert_eq!(groups.status, 200, "{}", groups.body);
    let group = groups.body["groups"].as_array().unwrap().iter().find(|g| g["group"] == group).cloned().unwrap_or(Value::Null);
    group["partitions"].as_array().map_or(0, |parts| parts.iter().filter(|p| p["topic"] == topic).map(|p| p["lag"].as_i64().unwrap()).sum())
}

pub(super) fn the_operator_console_and_sluice_dlq(p: &Pipeline, api: &api::Api<'_>, (mallory, mallory_token): (&str, &str), (bob, bob_token): (&str, &str)) {
    let operator = p.token("back-office", "operator");
    let refused = api.get("/v1/ops/dlq", Some(mallory_token));
    assert_eq!((refused.status, refused.problem_type()), (403, "operator-only"), "{}", refused.body);

    // ------------------------------------------------------------ a forged record, replayed
    let all = letters(api, &operator);
    let unsigned = all
        .iter()
        .find(|l| l["source_topic"] == "payments.commands" && l["key"] == mallory && l["error_message"].as_str().unwrap().contains("no sluice.signature header"))
        .unwrap_or_else(|| panic!("the unsigned deposit's dead letter: {all:?}"))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let listed = dlq(p, &["list"]);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    assert!(text(&listed.stdout).lines().any(|l| l.starts_with(&format!("{unsigned} ")) && l.contains("forged_command") && l.contains("open")), "{}", text(&listed.stdout));
    let balance_before = api.balance(mallory_token);
    let replayed = dlq(p, &["replay", &unsigned, "--note", "the customer swears it is genuine", "--operator", "ops-cli"]);
    assert!(replayed.status.success(), "{}", text(&replayed.stderr));
    assert!(text(&replayed.stdout).contains(&format!("{unsigned} replayed to payments.commands/")), "{}", text(&replayed.stdout));
    // The runtime verified the replayed record as it verified the original: dead-lettered again.
    api.wait_for("the replayed forgery dead-lettered again", || {
        let again = letters(api, &operator)
            .into_iter()
            .filter(|l| l["source_topic"] == "payments.commands" && l["key"] == mallory && l["error_message"].as_str().unwrap().contains("no sluice.signature header"))
            .count();
        (again == 2).then_some(())
    });
    assert_eq!(api.balance(mallory_token), balance_before, "a replayed forgery moves no money");
    let twice = dlq(p, &["replay", &unsigned, "--note", "again"]);
    assert!(!twice.status.success() && text(&twice.stderr).contains("already handled"), "{}", text(&twice.stderr));
    // A letter signed with a guessed key keeps that signature: replayed, it would fail again.
    let guessed = all.iter().find(|l| l["source_topic"] == "payments.commands" && l["error_message"].as_str().unwrap().contains("does not match")).expect("a forged signature's letter");
    let shown = api.get(&format!("/v1/ops/dlq/{}", guessed["id"].as_str().unwrap()), Some(&operator));
    assert_eq!(shown.status, 200, "{}", shown.body);
    let signature = shown.body["original_headers"].as_array().unwrap().iter().find(|h| h["name"] == "sluice.signature").unwrap_or_else(|| panic!("the original signature is kept: {}", shown.body));
    assert!(signature["value"].as_str().unwrap().starts_with("i1:"), "{signature}");
    assert_eq!(shown.body["value_format"], "avro", "{}", shown.body);
    let deposit = &shown.body["value"]["payload"]["io.sluice.payments.Deposit"];
    assert!(deposit["amount"].as_str().is_some_and(|a| a.parse::<Decimal>().is_ok()) && deposit["currency"] == "GBP", "decoded through the registry: {}", shown.body);

    // ------------------------------------------------------------ the wrong partition, replayed
    let right = partition_for_key(bob.as_bytes(), 4);
    let wrong = (right + 1) % 4;
    let json_command = r#"{"event_id": "dep-misrouted", "payload": {"type": "Deposit", "amount": "5.00", "currency": "GBP", "reference": "kcat with CRC32"}}"#;
    let bearer = format!("Bearer {operator}");
    let headers = OwnedHeaders::new().insert(Header { key: "authorization", value: Some(bearer.as_bytes()) });
    p.producer.send(BaseRecord::to("payments.commands.json").partition(wrong).key(bob).payload(json_command).headers(headers)).map_err(|(e, _)| e).unwrap();
    p.producer.flush(Duration::from_secs(10)).unwrap();
    let misrouted = api.wait_for("the misrouted command in the DLQ", || {
        letters(api, &operator).into_iter().find(|l| l["source_topic"] == "payments.commands.json" && l["error_class"] == "wrong_partition" && l["key"] == bob)
    });
    let id = misrouted["id"].as_str().unwrap().to_string();
    let detail = api.get(&format!("/v1/ops/dlq/{id}"), Some(&operator));
    let authorization = detail.body["original_headers"].as_array().unwrap().iter().find(|h| h["name"] == "authorization").expect("the original headers").clone();
    assert_eq!(authorization["value"], "<redacted>", "bearer tokens are never shown: {}", detail.body);
    assert_eq!((detail.body["value_format"].as_str(), detail.body["value"]["payload"]["type"].as_str()), (Some("json"), Some("Deposit")), "{}", detail.body);
    assert!(!p.outcomes().contains_key("dep-misrouted"), "dead-lettered before the bridge");
    let bob_before: Decimal = api.balance(bob_token).parse().unwrap();
    let note = api.post(&format!("/v1/ops/dlq/{id}/replay"), Some(&operator), json!({"note": "  "}));
    assert_eq!((note.status, note.problem_type()), (422, "note-required"), "{}", note.body);
    let answer = api.post(&format!("/v1/ops/dlq/{id}/replay"), Some(&operator), json!({"note": "kcat user fixed their partitioner (murmur2_random)"}));
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!((answer.at("/status"), answer.body["handled"]["replayed_to"]["partition"].as_i64()), ("replayed", Some(i64::from(right))), "{}", answer.body);
    api.wait_for("the replayed deposit settles", || (api.balance(bob_token).parse::<Decimal>().unwrap() == bob_before + Decimal::new(500, 2)).then_some(()));
    let again = api.post(&format!("/v1/ops/dlq/{id}/replay"), Some(&operator), json!({"note": "twice"}));
    assert_eq!((again.status, again.problem_type()), (409, "dead-letter-handled"), "{}", again.body);

    // ------------------------------------------------------------ discarded
    let death = letters(api, &operator).into_iter().find(|l| l["source_topic"] == "hmrc.death.notification" && l["status"] == "open").expect("the forged death notice");
    let death_id = death["id"].as_str().unwrap().to_string();
    let discarded = api.post(&format!("/v1/ops/dlq/{death_id}/discard"), Some(&operator), json!({"note": "forgery, reported to security"}));
    assert_eq!((discarded.status, discarded.at("/status"), discarded.at("/handled/operator")), (200, "discarded", "back-office"), "{}", discarded.body);
    let open = api.get("/v1/ops/dlq", Some(&operator));
    assert!(!open.body["dead_letters"].as_array().unwrap().iter().any(|l| l["id"] == death_id.as_str()), "the open list leaves it out: {}", open.body);
    assert_eq!(api.post(&format!("/v1/ops/dlq/{death_id}/replay"), Some(&operator), json!({"note": "no"})).status, 409);

    // Each decision audited, with who made it.
    let audit: Vec<ActivityLog> = p.decode_all::<ActivityLog>("system.logs.activity").into_iter().filter(|a| a.command_id.starts_with("dlq:")).collect();
    let decided = |id: &str| audit.iter().find(|a| a.command_id == format!("dlq:{id}")).map(|a| (a.command_type.as_str(), a.outcome.as_str(), a.principal_subject.as_str()));
    assert_eq!(decided(&unsigned), Some(("DeadLetterReplay", "replayed", "ops-cli")), "{audit:?}");
    assert_eq!(decided(&id), Some(("DeadLetterReplay", "replayed", "back-office")), "{audit:?}");
    assert_eq!(decided(&death_id), Some(("DeadLetterDiscard", "discarded", "back-office")), "{audit:?}");

    // ------------------------------------------------------------ topics, decoded
    let topics = api.get("/v1/ops/topics", Some(&operator));
    assert!(topics.body["topics"].as_array().unwrap().iter().any(|t| t["name"] == "payments.settled" && t["kind"] == "external" && t["records"].as_i64() > Some(0)), "{}", topics.body);
    let settled = api.get("/v1/ops/topics/payments.settled/records?limit=5", Some(&operator));
    let record = &settled.body["records"][0];
    assert_eq!(record["value_format"], "avro", "{}", settled.body);
    assert!(record["value"]["amount"].as_str().is_some_and(|a| a.parse::<Decimal>().is_ok()), "money as a decimal string: {record}");
    let users = api.get(&format!("/v1/ops/topics/{}-users-changelog/records?limit=20", p.application_id), Some(&operator));
    assert_eq!(users.status, 200, "{}", users.body);
    assert!(!users.body.to_string().contains("$argon2"), "no password hash: {}", users.body);
    assert!(users.body["records"].as_array().unwrap().iter().any(|r| r["redacted"].as_array().unwrap().iter().any(|f| f == "password_hash")), "{}", users.body);
    let detail = api.get("/v1/ops/topics/payments.commands", Some(&operator));
    assert_eq!(detail.body["partitions"].as_array().unwrap().len(), 4, "{}", detail.body);
    assert!(detail.body["configs"].as_array().unwrap().iter().any(|c| c["name"] == "cleanup.policy" && c["value"] == "delete"), "{}", detail.body);
    let graph = api.get("/v1/ops/topology", Some(&operator));
    assert_eq!(graph.body["subtopologies"].as_array().unwrap().len(), 3, "{}", graph.body);
    assert!(graph.body["topics"].as_array().unwrap().iter().any(|t| t["kind"] == "repartition" && t["signed"] == true), "{}", graph.body);

    // ------------------------------------------------------------ lag while paused
    let instances = api.get("/v1/ops/instances", Some(&operator));
    assert!(instances.body["instances"].as_array().unwrap().iter().any(|i| !i["active_tasks"].as_array().unwrap().is_empty()), "{}", instances.body);
    let paused = api.post("/v1/ops/processing/pause", Some(&operator), json!({}));
    assert_eq!((paused.status, paused.body["paused"].as_bool()), (200, Some(true)), "{}", paused.body);
    api.wait_for("the instance to say it is paused", || {
        let listed = api.get("/v1/ops/instances", Some(&operator));
        listed.body["instances"].as_array().unwrap().iter().all(|i| i["paused"] == true).then_some(())
    });
    let group = p.application_id.as_str();
    let deposits: Vec<String> = (0..3).map(|i| api.command("/v1/deposits", &operator, json!({"user_id": bob, "amount": "1.00", "reference": format!("while paused {i}")}))).collect();
    api.wait_for("the processors' lag to grow while paused", || (lag_of(api, &operator, group, "payments.commands") >= 3).then_some(()));
    assert!(deposits.iter().all(|d| api.get(d, Some(&operator)).body["status"] != "settled"), "nothing settles while paused");
    let resumed = api.post("/v1/ops/processing/resume", Some(&operator), json!({}));
    assert_eq!(resumed.body["paused"].as_bool(), Some(false), "{}", resumed.body);
    api.wait_for("the lag to drain once resumed", || (lag_of(api, &operator, group, "payments.commands") == 0).then_some(()));
    for deposit in &deposits {
        assert_eq!(api.outcome(deposit, &operator)["status"], "settled");
    }
    api.wait_for("the sampled series to show the commands", || {
        let series = api.get("/v1/ops/metrics", Some(&operator));
        series.body["samples"].as_array().unwrap().iter().any(|s| s["commands_per_s"].as_f64() > Some(0.0) && s["p99_ms"].as_f64().is_some()).then_some(())
    });
}
