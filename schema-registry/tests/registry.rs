//! The registry against a real Apache Kafka broker, over HTTP, the way clients use it. Each test
//! keeps its state in its own `_schemas-<test>` topic, so tests share the broker but not state.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use apache_avro::types::Value as Avro;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use reqwest::Method;
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::schema_registry_common::{SchemaType, SubjectNameStrategy, SuppliedSchema};
use serde_json::{json, Value};
use sluice_registry::{CompatibilityLevel, Registry, RegistryConfig, RegistryError};

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

// ---------------------------------------------------------------------------------------------
// Helpers

async fn start_on(bootstrap_servers: String, topic: &str) -> Registry {
    Registry::start(RegistryConfig {
        bootstrap_servers,
        listen: "127.0.0.1:0".parse().unwrap(),
        topic: topic.to_string(),
        write_credentials: None,
        client_properties: Vec::new(),
    })
    .await
    .expect("registry starts")
}

async fn start(topic: &str) -> Registry {
    start_on(sluice_testkit::broker().bootstrap_servers(), topic).await
}

/// A record schema named `name` with the given fields (JSON array items).
fn record_named(name: &str, fields: &str) -> String {
    format!(r#"{{"type":"record","name":"{name}","namespace":"sluice.test","fields":[{fields}]}}"#)
}

fn record(fields: &str) -> String {
    record_named("R", fields)
}

struct Reply {
    status: u16,
    content_type: String,
    text: String,
    body: Value,
}

struct Api {
    http: reqwest::Client,
    base: String,
    user_info: Option<(String, String)>,
}

impl Api {
    fn new(registry: &Registry) -> Api {
        Api::at(registry.url())
    }

    fn at(base: String) -> Api {
        Api { http: reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap(), base, user_info: None }
    }

    /// The same API, sending HTTP basic auth `user:password`.
    fn as_user(&self, user: &str, password: &str) -> Api {
        Api { http: self.http.clone(), base: self.base.clone(), user_info: Some((user.to_string(), password.to_string())) }
    }

    async fn send(&self, method: Method, path: &str, body: Option<String>, content_type: Option<&str>) -> Reply {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some((user, password)) = &self.user_info {
            request = request.basic_auth(user, Some(password));
        }
        if let Some(content_type) = content_type {
            request = request.header("Content-Type", content_type);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.expect("request reaches the registry");
        let status = response.status().as_u16();
        let content_type =
            response.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { status, content_type, text, body }
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None, None).await
    }

    async fn delete(&self, path: &str) -> Reply {
        self.send(Method::DELETE, path, None, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(Method::POST, path, Some(body.to_string()), Some(CONTENT_TYPE)).await
    }

    async fn put(&self, path: &str, body: Value) -> Reply {
        self.send(Method::PUT, path, Some(body.to_string()), Some(CONTENT_TYPE)).await
    }

    /// Registers and returns the id, asserting success.
    async fn register(&self, subject: &str, schema: &str) -> u32 {
        let reply = self.post(&format!("/subjects/{subject}/versions"), json!({ "schema": schema })).await;
        assert_eq!(reply.status, 200, "registering under {subject}: {}", reply.text);
        reply.body["id"].as_u64().expect("id") as u32
    }

    async fn set_level(&self, subject: &str, level: CompatibilityLevel) {
        let reply = self.put(&format!("/config/{subject}"), json!({ "compatibility": level.as_str() })).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.body, json!({ "compatibility": level.as_str() }));
    }
}

#[track_caller]
fn assert_error(reply: &Reply, status: u16, error_code: u64) {
    assert_eq!(reply.status, status, "{}", reply.text);
    assert_eq!(reply.body["error_code"], json!(error_code), "{}", reply.text);
    assert!(reply.body["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", reply.text);
    assert_eq!(reply.content_type, CONTENT_TYPE);
}

fn same_json(a: &str, b: &str) -> bool {
    serde_json::from_str::<Value>(a).unwrap() == serde_json::from_str::<Value>(b).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Registration, lookup, ids

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_is_idempotent_and_ids_are_global() {
    let registry = start("_schemas-ids").await;
    let api = Api::new(&registry);
    let v1 = record(r#"{"name":"a","type":"int"}"#);
    let v2 = record(r#"{"name":"a","type":"int"},{"name":"b","type":"string","default":""}"#);

    let id1 = api.register("orders-value", &v1).await;
    assert_eq!(api.register("orders-value", &v1).await, id1, "same schema again, same id");
    let respelled = r#"{ "fields": [ {"type":"int", "name":"a"} ], "namespace":"sluice.test", "name":"R", "type":"record" }"#;
    assert_eq!(api.register("orders-value", respelled).await, id1, "whitespace and key order do not matter");
    assert_eq!(api.register("audit-value", &v1).await, id1, "same schema under another subject shares the id");
    let id2 = api.register("orders-value", &v2).await;
    assert_ne!(id2, id1);

    // Confluent 7 clients send extra fields; they are accepted and ignored.
    let reply = api
        .post(
            "/subjects/orders-value/versions",
            json!({ "schema": v2, "schemaType": "AVRO", "references": [], "metadata": { "properties": {} } }),
        )
        .await;
    assert_eq!((reply.status, reply.body.clone()), (200, json!({ "id": id2 })), "{}", reply.text);
    assert_eq!(reply.content_type, CONTENT_TYPE);

    // Any request content type, or none, is accepted.
    let body = json!({ "schema": v1 }).to_string();
    for content_type in [Some("application/json"), Some("application/vnd.schemaregistry+json"), Some("text/plain"), None] {
        let reply = api.send(Method::POST, "/subjects/orders-value/versions", Some(body.clone()), content_type).await;
        assert_eq!((reply.status, reply.body.clone()), (200, json!({ "id": id1 })), "{content_type:?}: {}", reply.text);
    }

    let subjects = api.get("/subjects").await;
    assert_eq!(subjects.body, json!(["audit-value", "orders-value"]));
    assert_eq!(subjects.content_type, CONTENT_TYPE);
    assert_eq!(api.get("/subjects/orders-value/versions").await.body, json!([1, 2]));

    let latest = api.get("/subjects/orders-value/versions/latest").await;
    assert_eq!(latest.status, 200);
    assert_eq!(latest.body["subject"], "orders-value");
    assert_eq!(latest.body["version"], 2);
    assert_eq!(latest.body["id"], id2);
    assert!(same_json(latest.body["schema"].as_str().unwrap(), &v2));
    assert!(latest.body.get("schemaType").is_none(), "schemaType is omitted for AVRO");
    assert_eq!(api.get("/subjects/orders-value/versions/-1").await.body, latest.body);
    let first = api.get("/subjects/orders-value/versions/1").await;
    assert_eq!((first.body["version"].clone(), first.body["id"].clone()), (json!(1), json!(id1)));
    let raw = api.get("/subjects/orders-value/versions/1/schema").await;
    assert_eq!(raw.status, 200);
    assert!(same_json(&raw.text, &v1), "raw schema text: {}", raw.text);

    // By id.
    let by_id = api.get(&format!("/schemas/ids/{id1}")).await;
    assert_eq!(by_id.status, 200);
    assert_eq!(by_id.body.as_object().unwrap().keys().collect::<Vec<_>>(), vec!["schema"]);
    assert!(same_json(by_id.body["schema"].as_str().unwrap(), &v1));
    assert_eq!(api.get(&format!("/schemas/ids/{id1}?subject=audit-value")).await.body, by_id.body);
    assert_error(&api.get(&format!("/schemas/ids/{id2}?subject=audit-value")).await, 404, 40403);
    assert!(same_json(&api.get(&format!("/schemas/ids/{id1}/schema")).await.text, &v1));
    assert_eq!(
        api.get(&format!("/schemas/ids/{id1}/versions")).await.body,
        json!([{ "subject": "audit-value", "version": 1 }, { "subject": "orders-value", "version": 1 }])
    );
    assert_eq!(api.get(&format!("/schemas/ids/{id1}/subjects")).await.body, json!(["audit-value", "orders-value"]));

    // Lookup: which version of a subject holds a schema.
    let found = api.post("/subjects/orders-value", json!({ "schema": respelled })).await;
    assert_eq!(found.status, 200, "{}", found.text);
    assert_eq!((found.body["subject"].clone(), found.body["version"].clone()), (json!("orders-value"), json!(1)));
    assert_eq!(found.body["id"], id1);
    assert!(same_json(found.body["schema"].as_str().unwrap(), &v1));
    let unregistered = record(r#"{"name":"z","type":"long"}"#);
    assert_error(&api.post("/subjects/orders-value", json!({ "schema": unregistered })).await, 404, 40403);
    assert_error(&api.post("/subjects/nobody-value", json!({ "schema": v1 })).await, 404, 40401);

    assert_eq!(api.get("/schemas/types").await.body, json!(["AVRO"]));
    assert_eq!(api.get("/mode").await.body, json!({ "mode": "READWRITE" }));
    registry.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Compatibility

/// Base schema of the table: `c` has no default, so removing it breaks old readers.
const BASE_FIELDS: &str = r#"{"name":"a","type":"int"},{"name":"c","type":"string"}"#;

/// (change, fields after the change, backward compatible, forward compatible)
const CHANGES: [(&str, &str, bool, bool); 4] = [
    (
        "add-field-with-default",
        r#"{"name":"a","type":"int"},{"name":"c","type":"string"},{"name":"b","type":"string","default":""}"#,
        true,
        true,
    ),
    ("add-field-without-default", r#"{"name":"a","type":"int"},{"name":"c","type":"string"},{"name":"b","type":"string"}"#, false, true),
    ("remove-field", r#"{"name":"a","type":"int"}"#, true, false),
    ("change-type", r#"{"name":"a","type":"string"},{"name":"c","type":"string"}"#, false, false),
];

fn allowed(level: CompatibilityLevel, backward: bool, forward: bool) -> bool {
    use CompatibilityLevel::*;
    match level {
        None => true,
        Backward | BackwardTransitive => backward,
        Forward | ForwardTransitive => forward,
        Full | FullTransitive => backward && forward,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evolution_is_checked_under_every_level() {
    let registry = start("_schemas-compat").await;
    let api = Api::new(&registry);
    for level in CompatibilityLevel::ALL {
        for (change, fields, backward, forward) in CHANGES {
            let subject = format!("{level}-{change}");
            let expected = allowed(level, backward, forward);
            let case = format!("{level} / {change}: expected compatible = {expected}");
            api.set_level(&subject, level).await;
            api.register(&subject, &record(BASE_FIELDS)).await;
            let next = record(fields);

            let check = api
                .post(&format!("/compatibility/subjects/{subject}/versions/latest?verbose=true"), json!({ "schema": next }))
                .await;
            assert_eq!(check.status, 200, "{case}: {}", check.text);
            assert_eq!(check.body["is_compatible"], json!(expected), "{case}: {}", check.text);
            assert_eq!(check.body["messages"].as_array().unwrap().is_empty(), expected, "{case}: {}", check.text);
            let terse = api.post(&format!("/compatibility/subjects/{subject}/versions/1"), json!({ "schema": next })).await;
            assert_eq!(terse.body, json!({ "is_compatible": expected }), "{case}");
            let all = api.post(&format!("/compatibility/subjects/{subject}/versions"), json!({ "schema": next })).await;
            assert_eq!(all.body, json!({ "is_compatible": expected }), "{case}");

            let reply = api.post(&format!("/subjects/{subject}/versions"), json!({ "schema": next })).await;
            if expected {
                assert_eq!(reply.status, 200, "{case}: {}", reply.text);
                assert_eq!(api.get(&format!("/subjects/{subject}/versions")).await.body, json!([1, 2]), "{case}");
            } else {
                assert_error(&reply, 409, 409);
                assert_eq!(api.get(&format!("/subjects/{subject}/versions")).await.body, json!([1]), "{case}");
            }
        }
    }
    registry.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transitive_levels_check_every_version() {
    let registry = start("_schemas-transitive").await;
    let api = Api::new(&registry);
    // v1 -> v2 and v2 -> v3 are fully compatible, v1 -> v3 is not (a: string vs int).
    let v1 = record(r#"{"name":"a","type":"string","default":""}"#);
    let v2 = record("");
    let v3 = record(r#"{"name":"a","type":"int","default":0}"#);
    for level in CompatibilityLevel::ALL {
        let subject = format!("transitive-{level}");
        api.set_level(&subject, level).await;
        api.register(&subject, &v1).await;
        api.register(&subject, &v2).await;
        let reply = api.post(&format!("/subjects/{subject}/versions"), json!({ "schema": v3 })).await;
        if level.transitive() {
            assert_error(&reply, 409, 409);
        } else {
            assert_eq!(reply.status, 200, "{level}: {}", reply.text);
        }
    }
    registry.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_level_overrides_global_level() {
    let registry = start("_schemas-config").await;
    let api = Api::new(&registry);
    let base = record(BASE_FIELDS);
    let breaking = record(r#"{"name":"a","type":"string"},{"name":"c","type":"string"}"#);

    assert_eq!(api.get("/config").await.body, json!({ "compatibilityLevel": "BACKWARD" }));
    assert_error(&api.get("/config/loose").await, 404, 40408);
    assert_eq!(api.get("/config/loose?defaultToGlobal=true").await.body, json!({ "compatibilityLevel": "BACKWARD" }));

    let reply = api.put("/config", json!({ "compatibility": "FULL" })).await;
    assert_eq!((reply.status, reply.body), (200, json!({ "compatibility": "FULL" })));
    assert_eq!(api.get("/config").await.body, json!({ "compatibilityLevel": "FULL" }));
    assert_eq!(api.get("/config/loose?defaultToGlobal=true").await.body, json!({ "compatibilityLevel": "FULL" }));
    api.set_level("loose", CompatibilityLevel::None).await;
    assert_eq!(api.get("/config/loose").await.body, json!({ "compatibilityLevel": "NONE" }));

    api.register("loose", &base).await;
    api.register("strict", &base).await;
    api.register("loose", &breaking).await;
    assert_error(&api.post("/subjects/strict/versions", json!({ "schema": breaking })).await, 409, 409);

    // Removing the subject's level makes the global one apply again.
    assert_eq!(api.delete("/config/loose").await.body, json!({ "compatibilityLevel": "NONE" }));
    assert_error(&api.get("/config/loose").await, 404, 40408);
    let breaking_again = record(r#"{"name":"a","type":"boolean"},{"name":"c","type":"string"}"#);
    assert_error(&api.post("/subjects/loose/versions", json!({ "schema": breaking_again })).await, 409, 409);
    assert_error(&api.delete("/config/loose").await, 404, 40408);
    assert_error(&api.delete("/config/nobody").await, 404, 40401);

    assert_eq!(api.delete("/config").await.body, json!({ "compatibilityLevel": "FULL" }));
    assert_eq!(api.get("/config").await.body, json!({ "compatibilityLevel": "BACKWARD" }));

    assert_error(&api.put("/config", json!({ "compatibility": "SIDEWAYS" })).await, 422, 42203);
    assert_error(&api.put("/config/loose", json!({})).await, 422, 42203);
    let lower = api.put("/config/loose", json!({ "compatibility": "forward_transitive" })).await;
    assert_eq!(lower.body, json!({ "compatibility": "FORWARD_TRANSITIVE" }));
    registry.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Deletes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_delete_comes_before_permanent_delete() {
    let registry = start("_schemas-delete").await;
    let api = Api::new(&registry);
    let v1 = record(r#"{"name":"a","type":"int"}"#);
    let v2 = record(r#"{"name":"a","type":"int"},{"name":"b","type":"int","default":0}"#);
    let v3 = record(r#"{"name":"a","type":"int"},{"name":"b","type":"int","default":0},{"name":"c","type":"int","default":0}"#);
    let id1 = api.register("gone", &v1).await;
    let id2 = api.register("gone", &v2).await;
    let id3 = api.register("gone", &v3).await;

    // One version.
    assert_error(&api.delete("/subjects/gone/versions/1?permanent=true").await, 404, 40407);
    let reply = api.delete("/subjects/gone/versions/1").await;
    assert_eq!((reply.status, reply.body), (200, json!(1)));
    assert_eq!(api.get("/subjects/gone/versions").await.body, json!([2, 3]));
    assert_eq!(api.get("/subjects/gone/versions?deleted=true").await.body, json!([1, 2, 3]));
    assert_error(&api.get("/subjects/gone/versions/1").await, 404, 40402);
    assert_eq!(api.get("/subjects/gone/versions/1?deleted=true").await.body["id"], id1);
    assert_eq!(api.get(&format!("/schemas/ids/{id1}")).await.status, 200, "old data stays readable");
    assert_eq!(api.get(&format!("/schemas/ids/{id1}/versions")).await.body, json!([]));
    assert_error(&api.delete("/subjects/gone/versions/1").await, 404, 40406);
    assert_eq!(api.delete("/subjects/gone/versions/1?permanent=true").await.body, json!(1));
    assert_eq!(api.get("/subjects/gone/versions?deleted=true").await.body, json!([2, 3]));
    assert_error(&api.get(&format!("/schemas/ids/{id1}")).await, 404, 40403);
    assert_eq!(api.delete("/subjects/gone/versions/latest").await.body, json!(3));
    assert_eq!(api.get("/subjects/gone/versions/latest").await.body["version"], 2);

    // The whole subject.
    assert_error(&api.delete("/subjects/gone?permanent=true").await, 404, 40405);
    assert_eq!(api.delete("/subjects/gone").await.body, json!([2]));
    assert!(!api.get("/subjects").await.body.as_array().unwrap().contains(&json!("gone")));
    assert!(api.get("/subjects?deleted=true").await.body.as_array().unwrap().contains(&json!("gone")));
    assert_error(&api.get("/subjects/gone/versions").await, 404, 40401);
    assert_error(&api.delete("/subjects/gone").await, 404, 40404);
    let reply = api.delete("/subjects/gone?permanent=true").await;
    assert_eq!((reply.status, reply.body), (200, json!([2, 3])));
    assert!(!api.get("/subjects?deleted=true").await.body.as_array().unwrap().contains(&json!("gone")));
    assert_error(&api.get("/subjects/gone/versions?deleted=true").await, 404, 40401);
    assert_error(&api.get(&format!("/schemas/ids/{id2}")).await, 404, 40403);
    assert_error(&api.delete("/subjects/gone").await, 404, 40401);

    // Registering again starts the subject over, and never reuses a deleted id.
    let again = api.register("gone", &v1).await;
    assert!(again > id3, "id {again} after deleting ids up to {id3}");
    assert_eq!(api.get("/subjects/gone/versions").await.body, json!([1]));
    registry.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Bad input

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_confluent_errors() {
    let registry = start("_schemas-bad").await;
    let api = Api::new(&registry);
    let id = api.register("good", &record(r#"{"name":"a","type":"int"}"#)).await;

    let malformed = api.send(Method::POST, "/subjects/good/versions", Some("{\"schema\": ".into()), Some(CONTENT_TYPE)).await;
    assert_error(&malformed, 400, 400);
    assert_error(&api.send(Method::POST, "/subjects/good/versions", Some(String::new()), None).await, 400, 400);
    assert_error(&api.post("/subjects/good/versions", json!({ "schema": 5 })).await, 400, 400);
    assert_error(&api.put("/config", json!("FULL")).await, 400, 400);

    let unparsable = api.post("/subjects/good/versions", json!({ "schema": "{\"type\":\"recrod\",\"name\":\"X\"}" })).await;
    assert_error(&unparsable, 422, 42201);
    assert_error(&api.post("/subjects/good/versions", json!({ "schema": "not json" })).await, 422, 42201);
    assert_error(&api.post("/subjects/good/versions", json!({})).await, 422, 42201);
    assert_error(&api.post("/subjects/good", json!({ "schema": "{" })).await, 422, 42201);
    let protobuf = api
        .post("/subjects/good/versions", json!({ "schema": "syntax = \"proto3\";", "schemaType": "PROTOBUF" }))
        .await;
    assert_error(&protobuf, 422, 42201);
    assert!(protobuf.body["message"].as_str().unwrap().contains("AVRO"), "{}", protobuf.text);
    let references = json!({ "schema": "\"int\"", "references": [{ "name": "x", "subject": "y", "version": 1 }] });
    assert_error(&api.post("/subjects/good/versions", references).await, 422, 42201);

    assert_error(&api.get("/subjects/nobody/versions").await, 404, 40401);
    assert_error(&api.get("/subjects/nobody/versions/1").await, 404, 40401);
    assert_error(&api.get("/subjects/good/versions/7").await, 404, 40402);
    assert_error(&api.get("/subjects/good/versions/7/schema").await, 404, 40402);
    assert_error(&api.get(&format!("/schemas/ids/{}", id + 1000)).await, 404, 40403);
    assert_error(&api.get("/schemas/ids/abc").await, 404, 40403);
    for version in ["abc", "0", "-2", "1.5", "99999999999"] {
        assert_error(&api.get(&format!("/subjects/good/versions/{version}")).await, 422, 42202);
    }
    assert_error(&api.delete("/subjects/good/versions/abc").await, 422, 42202);
    assert_error(
        &api.post("/compatibility/subjects/good/versions/abc", json!({ "schema": "\"int\"" })).await,
        422,
        42202,
    );
    assert_error(&api.post("/compatibility/subjects/nobody/versions/latest", json!({ "schema": "\"int\"" })).await, 404, 40401);
    assert_error(&api.get("/no/such/path").await, 404, 404);
    assert_error(&api.send(Method::PATCH, "/subjects", None, None).await, 405, 405);

    // The registry still works after all that.
    assert_eq!(api.get("/subjects/good/versions").await.body, json!([1]));
    registry.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Durability and several instances

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_registry_serves_the_same_ids() {
    let topic = "_schemas-restart";
    let v1 = record(r#"{"name":"a","type":"int"}"#);
    let v2 = record(r#"{"name":"a","type":"int"},{"name":"b","type":"int","default":0}"#);
    let other = record_named("Other", r#"{"name":"x","type":"string"}"#);

    let first = start(topic).await;
    let api = Api::new(&first);
    let id1 = api.register("restart-value", &v1).await;
    let id2 = api.register("restart-value", &v2).await;
    let id_other = api.register("other-value", &other).await;
    api.set_level("other-value", CompatibilityLevel::None).await;
    assert_eq!(api.delete("/subjects/restart-value/versions/1").await.status, 200);
    let url = first.url();
    first.shutdown().await;
    assert!(reqwest::get(format!("{url}/subjects")).await.is_err(), "the first registry stopped serving");

    let second = start(topic).await;
    let api = Api::new(&second);
    assert_eq!(api.get("/subjects").await.body, json!(["other-value", "restart-value"]));
    assert_eq!(api.get("/subjects/restart-value/versions").await.body, json!([2]));
    assert_eq!(api.get("/subjects/restart-value/versions?deleted=true").await.body, json!([1, 2]));
    assert_eq!(api.get("/subjects/restart-value/versions/2").await.body["id"], id2);
    assert!(same_json(api.get(&format!("/schemas/ids/{id1}")).await.body["schema"].as_str().unwrap(), &v1));
    assert!(same_json(api.get(&format!("/schemas/ids/{id_other}")).await.body["schema"].as_str().unwrap(), &other));
    assert_eq!(api.get("/config/other-value").await.body, json!({ "compatibilityLevel": "NONE" }));
    assert_eq!(api.register("other-value", &other).await, id_other);
    assert_eq!(api.register("copy-value", &v2).await, id2);
    let fresh = api.register("fresh-value", &record_named("Fresh", r#"{"name":"y","type":"long"}"#)).await;
    assert!(fresh > id1.max(id2).max(id_other), "new id {fresh} reuses an old one");
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_live_registries_never_share_an_id() {
    let topic = "_schemas-two";
    let a = start(topic).await;
    let b = start(topic).await;
    assert_eq!(Api::new(&a).put("/config", json!({ "compatibility": "NONE" })).await.status, 200);

    // Concurrent registrations of distinct schemas, alternating instances, four subjects shared
    // by both instances: ids and (subject, version) pairs are contended.
    let count = 60;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let url = if i % 2 == 0 { a.url() } else { b.url() };
        let subject = format!("race-{}", i % 4);
        let schema = record_named(&format!("R{i}"), r#"{"name":"a","type":"int"}"#);
        tasks.spawn(async move {
            let id = Api::at(url).register(&subject, &schema).await;
            (id, subject, schema)
        });
    }
    let registered: Vec<(u32, String, String)> = tasks.join_all().await;
    let ids: HashSet<u32> = registered.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(ids.len(), count, "two distinct schemas got the same id: {registered:?}");

    // Both instances agree on every id and every subject's versions.
    let (api_a, api_b) = (Api::new(&a), Api::new(&b));
    for (id, _, schema) in &registered {
        for api in [&api_a, &api_b] {
            let reply = api.get(&format!("/schemas/ids/{id}")).await;
            assert_eq!(reply.status, 200, "{}", reply.text);
            assert!(same_json(reply.body["schema"].as_str().unwrap(), schema), "id {id} maps to another schema");
        }
    }
    for subject in (0..4).map(|i| format!("race-{i}")) {
        let mut by_version: BTreeMap<u64, u64> = BTreeMap::new();
        for api in [&api_a, &api_b] {
            let versions = api.get(&format!("/subjects/{subject}/versions")).await.body;
            assert_eq!(versions.as_array().unwrap().len(), count / 4, "{subject}: {versions}");
            for version in versions.as_array().unwrap() {
                let id = api.get(&format!("/subjects/{subject}/versions/{version}")).await.body["id"].as_u64().unwrap();
                assert_eq!(*by_version.entry(version.as_u64().unwrap()).or_insert(id), id, "{subject} v{version}");
            }
        }
        let mine: HashSet<u64> =
            registered.iter().filter(|(_, s, _)| *s == subject).map(|(id, _, _)| u64::from(*id)).collect();
        assert_eq!(by_version.values().copied().collect::<HashSet<_>>(), mine, "{subject}");
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_keeps_the_first_writer_and_skips_foreign_records() {
    let topic = "_schemas-replay";
    // Let a registry create the topic, then write what racing instances and other registries
    // could have left there.
    start(topic).await.shutdown().await;
    let x = record_named("X", r#"{"name":"a","type":"int"}"#);
    let y = record_named("Y", r#"{"name":"a","type":"int"}"#);
    let schema_key = |subject: &str, version: u32| {
        json!({ "keytype": "SCHEMA", "subject": subject, "version": version, "magic": 1 }).to_string()
    };
    let schema_value = |subject: &str, version: u32, id: u32, schema: &str| {
        json!({ "subject": subject, "version": version, "id": id, "schema": schema, "deleted": false }).to_string()
    };
    let records: Vec<(String, Option<String>)> = vec![
        (schema_key("s1", 1), Some(schema_value("s1", 1, 1, &x))),
        // Lost races: id 1 handed out again for another schema, version 1 of s1 taken again.
        (schema_key("s2", 1), Some(schema_value("s2", 1, 1, &y))),
        (schema_key("s1", 1), Some(schema_value("s1", 1, 2, &y))),
        // Records this registry does not act on.
        (json!({ "keytype": "NOOP", "magic": 0 }).to_string(), None),
        ("not json".to_string(), Some("neither".to_string())),
        (
            schema_key("proto", 1),
            Some(json!({ "subject": "proto", "version": 1, "id": 3, "schema": "syntax = \"proto3\";", "schemaType": "PROTOBUF" }).to_string()),
        ),
        (json!({ "keytype": "CONFIG", "subject": null, "magic": 0 }).to_string(), Some(json!({ "compatibilityLevel": "FULL" }).to_string())),
    ];
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", sluice_testkit::broker().bootstrap_servers())
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    for (key, value) in &records {
        let mut record = FutureRecord::<str, str>::to(topic).partition(0).key(key.as_str());
        if let Some(value) = value {
            record = record.payload(value.as_str());
        }
        producer.send(record, Duration::from_secs(10)).await.expect("raw record written");
    }

    let registry = start(topic).await;
    let api = Api::new(&registry);
    assert_eq!(api.get("/subjects").await.body, json!(["s1"]));
    assert_eq!(api.get("/subjects/s1/versions/1").await.body["id"], 1);
    assert!(same_json(api.get("/schemas/ids/1").await.body["schema"].as_str().unwrap(), &x));
    assert_error(&api.get("/schemas/ids/2").await, 404, 40403);
    assert_error(&api.get("/subjects/proto/versions").await, 404, 40401);
    assert_eq!(api.get("/config").await.body, json!({ "compatibilityLevel": "FULL" }));
    let y_id = api.register("s2", &y).await;
    assert_ne!(y_id, 1, "Y must not get X's id");
    assert!(same_json(api.get(&format!("/schemas/ids/{y_id}")).await.body["schema"].as_str().unwrap(), &y));
    registry.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Broker failures

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_failures_are_store_errors_not_panics() {
    let broker = sluice_testkit::Broker::start();
    let registry = start_on(broker.bootstrap_servers(), "_schemas").await;
    let api = Api::new(&registry);
    let id = api.register("before", &record(r#"{"name":"a","type":"int"}"#)).await;
    broker.stop();

    // A registration fails catching up, a config change fails producing; both within bounds.
    let (register, config) = tokio::join!(
        api.post("/subjects/after/versions", json!({ "schema": record(r#"{"name":"b","type":"int"}"#) })),
        api.put("/config", json!({ "compatibility": "NONE" })),
    );
    assert_error(&register, 500, 50001);
    assert_error(&config, 500, 50001);
    // What was read before the outage is still served.
    assert_eq!(api.get(&format!("/schemas/ids/{id}")).await.status, 200);
    registry.shutdown().await;
}

/// With credentials configured, registering, deleting and configuring need them (401, error
/// code 40101, `WWW-Authenticate: Basic`); reads, lookups and compatibility checks do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_need_the_registry_credentials_and_reads_do_not() {
    let registry = Registry::start(RegistryConfig {
        bootstrap_servers: sluice_testkit::broker().bootstrap_servers(),
        listen: "127.0.0.1:0".parse().unwrap(),
        topic: "_schemas-auth".to_string(),
        write_credentials: Some(sluice_registry::WriteCredentials::parse("sluice:registry-password-1234").unwrap()),
        client_properties: Vec::new(),
    })
    .await
    .expect("registry starts");
    let anonymous = Api::new(&registry);
    let wrong = anonymous.as_user("sluice", "not-the-password-at-all");
    let admin = anonymous.as_user("sluice", "registry-password-1234");
    let schema = record(r#"{"name":"a","type":"string"}"#);
    let body = json!({ "schema": schema });
    for api in [&anonymous, &wrong] {
        let refused = api.post("/subjects/guarded-value/versions", body.clone()).await;
        assert_error(&refused, 401, 40101);
        assert!(refused.text.contains("credentials"), "{}", refused.text);
    }
    let id = admin.register("guarded-value", &schema).await;
    // Reads: open to anyone.
    assert_eq!(anonymous.get("/subjects").await.body, json!(["guarded-value"]));
    assert_eq!(anonymous.get(&format!("/schemas/ids/{id}")).await.status, 200);
    assert_eq!(anonymous.post("/subjects/guarded-value", body.clone()).await.body["id"], json!(id), "a lookup is a read");
    assert_eq!(anonymous.post("/compatibility/subjects/guarded-value/versions/latest", body.clone()).await.status, 200);
    // Deletes and configuration: refused without the credentials, the subject untouched.
    for refused in [
        anonymous.delete("/subjects/guarded-value").await,
        wrong.delete("/subjects/guarded-value/versions/1").await,
        anonymous.put("/config/guarded-value", json!({"compatibility": "NONE"})).await,
        anonymous.delete("/config").await,
    ] {
        assert_error(&refused, 401, 40101);
    }
    assert_eq!(anonymous.get("/subjects/guarded-value/versions").await.body, json!([1]));
    assert_eq!(admin.delete("/subjects/guarded-value").await.status, 200);
    registry.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_fails_cleanly_without_a_broker() {
    let nowhere = format!("127.0.0.1:{}", sluice_testkit::free_port());
    let started = tokio::time::timeout(Duration::from_secs(60), Registry::start(RegistryConfig {
        bootstrap_servers: nowhere,
        listen: "127.0.0.1:0".parse().unwrap(),
        topic: "_schemas".to_string(),
        write_credentials: None,
        client_properties: Vec::new(),
    }))
    .await
    .expect("start gives up within a bound");
    let error = started.err().expect("no broker, no registry");
    assert!(matches!(error, RegistryError::Kafka { .. } | RegistryError::StoreTimeout(_)), "{error:?}");
    assert_eq!(error.error_code(), 50001);
}

// ---------------------------------------------------------------------------------------------
// Real clients

const PAYMENT: &str = r#"{"type":"record","name":"Payment","namespace":"sluice.test","fields":[
    {"name":"id","type":"string"},{"name":"amount_minor","type":"long"}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_registry_converter_round_trips_through_the_broker() {
    let broker = sluice_testkit::broker();
    let topic = "payments-converter";
    broker.create_topic(topic, 1);
    let registry_topic = "_schemas-converter";
    let writer_side = start(registry_topic).await;
    // The reader asks another instance, which learns the id from the topic.
    let reader_side = start(registry_topic).await;

    let encoder = AvroEncoder::new(SrSettings::new(writer_side.url()));
    let supplied = SuppliedSchema::new(Some("sluice.test.Payment".to_string()), SchemaType::Avro, PAYMENT.to_string());
    let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema(topic.to_string(), false, supplied);
    let fields = vec![("id", Avro::String("p-1".to_string())), ("amount_minor", Avro::Long(12_345))];
    let payload = encoder.encode(fields.clone(), strategy).await.expect("encode registers the schema");
    let id = u32::from_be_bytes(payload[1..5].try_into().unwrap());
    assert_eq!(payload[0], 0, "Confluent magic byte");
    let latest = Api::new(&writer_side).get(&format!("/subjects/{topic}-value/versions/latest")).await;
    assert_eq!(latest.body["id"], id, "{}", latest.text);

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    producer
        .send(FutureRecord::to(topic).key("p-1").payload(&payload), Duration::from_secs(10))
        .await
        .expect("produced");
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .set("group.id", "converter-test")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, Offset::Beginning).unwrap();
    consumer.assign(&assignment).unwrap();
    let received = tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await.expect("consumed in time").unwrap();
    let bytes = received.payload().expect("payload").to_vec();

    let decoder = AvroDecoder::new(SrSettings::new(reader_side.url()));
    let decoded = decoder.decode(Some(&bytes)).await.expect("decode fetches the schema by id");
    let expected = Avro::Record(fields.into_iter().map(|(name, value)| (name.to_string(), value)).collect());
    assert_eq!(decoded.value, expected);
    writer_side.shutdown().await;
    reader_side.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_python_client_round_trips_through_the_broker() {
    let python = std::env::var("SLUICE_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let importable = std::process::Command::new(&python)
        .args(["-c", "import confluent_kafka.schema_registry.avro, fastavro"])
        .output()
        .is_ok_and(|output| output.status.success());
    assert!(
        importable,
        "confluent-kafka is not importable by `{python}`. Install it into a venv and point SLUICE_PYTHON at it:\n  \
         python3 -m venv /tmp/sr-venv && /tmp/sr-venv/bin/pip install \"confluent-kafka[avro,schemaregistry]\"\n  \
         SLUICE_PYTHON=/tmp/sr-venv/bin/python cargo test -p sluice-registry"
    );
    let broker = sluice_testkit::broker();
    let topic = "payments-python";
    broker.create_topic(topic, 1);
    let registry = start("_schemas-python").await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/confluent_client.py");
    let mut command = std::process::Command::new(&python);
    command
        .arg(script)
        .env("SLUICE_REGISTRY_URL", registry.url())
        .env("SLUICE_BOOTSTRAP", broker.bootstrap_servers())
        .env("SLUICE_TOPIC", topic);
    let started = Instant::now();
    let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().expect("python runs");
    let report = format!(
        "after {:?}\nstdout:\n{}\nstderr:\n{}",
        started.elapsed(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "the Confluent Python client check failed {report}");
    // The script registered through our API: the subject is there with one version.
    let api = Api::new(&registry);
    assert_eq!(api.get(&format!("/subjects/{topic}-value/versions")).await.body, json!([1]), "{report}");
    registry.shutdown().await;
}
