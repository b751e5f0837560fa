//! Interactive queries over HTTP. Every `sluice run` instance with an `application_server`
//! serves its stores here; a query for a key whose task runs elsewhere is forwarded (once) to
//! the owning instance, found through the discovery topic (see
//! `sluice_streams::interactive`). The ingest API uses [`StoreQueries`] the same way.
//!
//! Every request needs a service token (`Authorization: Sluice-Service <token>`, see
//! [`router`]).
//!
//! - `GET /v1/stores/{store}/keys/{key}`: the value (JSON stores answer `application/json`,
//!   others `application/octet-stream`), or 404.
//! - `GET /v1/stores/{store}/prefix/{partition_key}?prefix=&skip=&limit=`: entries of the task
//!   that owns `partition_key` whose key starts with `prefix` (default: the partition key), in
//!   key order: `{"entries": [{"key": "...", "value": ...}]}` (JSON values inline, others as
//!   `{"hex": "..."}`).

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use sluice_streams::interactive::{InteractiveQueries, Location, QueryError};
use sluice_streams::now_ms;
use sluice_streams::signing::InternalKeys;

use crate::problem::Problem;

/// Set on a forwarded query, so it is never forwarded twice.
pub const FORWARDED_HEADER: &str = "x-sluice-forwarded";
/// The instance (`group.instance.id`) that read the store.
pub const SERVED_BY_HEADER: &str = "x-sluice-served-by";
/// Most entries one prefix query returns.
pub const MAX_LIMIT: usize = 1000;
/// How long a forwarded query may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// Store queries, local or forwarded to the owning instance.
#[derive(Clone)]
pub struct StoreQueries {
    iq: InteractiveQueries,
    instance: String,
    http: reqwest::Client,
    /// (store, JSON field) never answered over HTTP unless the request is a credential read.
    redacted: Vec<(String, String)>,
}

/// A store value and who read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served<T> {
    /// The result.
    pub value: T,
    /// The instance that read the store.
    pub served_by: String,
}

impl StoreQueries {
    /// Queries over `iq`, answering as `instance`.
    pub fn new(iq: InteractiveQueries, instance: &str) -> StoreQueries {
        let http = reqwest::Client::builder().timeout(FORWARD_TIMEOUT).build().expect("an HTTP client without TLS builds");
        StoreQueries { iq, instance: instance.to_string(), http, redacted: Vec::new() }
    }

    /// The same queries, leaving the JSON field `field` out of every value of `store` answered
    /// over HTTP, whoever asks: e.g. the password hash of `users` (the HTTP API checks
    /// passwords against its own replica of the changelog, [`crate::users_view`]).
    pub fn redacting(mut self, store: &str, field: &str) -> StoreQueries {
        self.redacted.push((store.to_string(), field.to_string()));
        self
    }

    /// `bytes` as answered over HTTP: without the redacted fields of `store`.
    fn redact(&self, store: &str, bytes: Vec<u8>) -> Vec<u8> {
        let fields: Vec<&str> = self.redacted.iter().filter(|(s, _)| s == store).map(|(_, f)| f.as_str()).collect();
        if fields.is_empty() {
            return bytes;
        }
        match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(serde_json::Value::Object(mut object)) => {
                for field in fields {
                    object.remove(field);
                }
                serde_json::to_vec(&object).unwrap_or(bytes)
            }
            _ => bytes,
        }
    }

    /// The instances of the processors, as they last published themselves.
    pub fn instances(&self) -> Vec<sluice_streams::interactive::InstanceInfo> {
        self.iq.instances()
    }

    /// Tasks with stores nobody serves right now (readiness).
    pub fn unavailable_tasks(&self) -> Vec<String> {
        self.iq.unavailable_tasks(now_ms())
    }

    /// The value of `key` in `store` (keys are partitioned by themselves).
    pub async fn get(&self, store: &str, key: &str) -> Result<Served<Option<Vec<u8>>>, Problem> {
        self.get_routed(store, key, key, false).await
    }

    /// The value of `key` in `store`, on the task that owns `partition_key` (e.g. a command
    /// status, kept on the task of the user who sent the command).
    pub async fn get_on(&self, store: &str, partition_key: &str, key: &str) -> Result<Served<Option<Vec<u8>>>, Problem> {
        self.get_routed(store, partition_key, key, false).await
    }

    async fn get_routed(&self, store: &str, partition_key: &str, key: &str, forwarded: bool) -> Result<Served<Option<Vec<u8>>>, Problem> {
        match self.iq.locate(store, partition_key, now_ms()).map_err(query_problem)? {
            Location::Local(reader) => {
                let value = reader.get(key.as_bytes()).map_err(|e| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "store-error", "Store error", e.to_string()))?;
                Ok(Served { value, served_by: self.instance.clone() })
            }
            Location::Remote(_) if forwarded => Err(not_here(store, partition_key)),
            Location::Remote(base) => {
                let url = format!("{}/v1/stores/{}/keys/{}", base.trim_end_matches('/'), encode(store), encode(key));
                let mut query: Vec<(&str, &str)> = Vec::new();
                if partition_key != key {
                    query.push(("partition_key", partition_key));
                }
                let response = self.forward(&url, &query).await?;
                let served_by = served_by(response.headers());
                match response.status() {
                    reqwest::StatusCode::NOT_FOUND if served_by.is_some() => Ok(Served { value: None, served_by: served_by.unwrap_or_default() }),
                    status if status.is_success() => {
                        let body = response.bytes().await.map_err(|e| unreachable_instance(&base, &e.to_string()))?;
                        Ok(Served { value: Some(body.to_vec()), served_by: served_by.unwrap_or_default() })
                    }
                    status => Err(unreachable_instance(&base, &format!("answered {status}"))),
                }
            }
        }
    }

    /// Entries of the task owning `partition_key` whose keys start with `prefix`, in key order.
    pub async fn scan(&self, store: &str, partition_key: &str, prefix: &str, skip: usize, limit: usize) -> Result<Served<Vec<(String, Vec<u8>)>>, Problem> {
        self.scan_routed(store, partition_key, prefix, skip, limit, false).await
    }

    async fn scan_routed(&self, store: &str, partition_key: &str, prefix: &str, skip: usize, limit: usize, forwarded: bool) -> Result<Served<Vec<(String, Vec<u8>)>>, Problem> {
        let limit = limit.min(MAX_LIMIT);
        match self.iq.locate(store, partition_key, now_ms()).map_err(query_problem)? {
            Location::Local(reader) => {
                let entries = reader
                    .prefix_scan(prefix.as_bytes(), skip, limit)
                    .map_err(|e| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "store-error", "Store error", e.to_string()))?;
                let entries = entries.into_iter().map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v)).collect();
                Ok(Served { value: entries, served_by: self.instance.clone() })
            }
            Location::Remote(_) if forwarded => Err(not_here(store, partition_key)),
            Location::Remote(base) => {
                let url = format!("{}/v1/stores/{}/prefix/{}", base.trim_end_matches('/'), encode(store), encode(partition_key));
                let (skip, limit) = (skip.to_string(), limit.to_string());
                let response = self.forward(&url, &[("prefix", prefix), ("skip", &skip), ("limit", &limit)]).await?;
                let served_by = served_by(response.headers()).unwrap_or_default();
                if !response.status().is_success() {
                    return Err(unreachable_instance(&base, &format!("answered {}", response.status())));
                }
                let body: serde_json::Value = response.json().await.map_err(|e| unreachable_instance(&base, &e.to_string()))?;
                let entries = body["entries"].as_array().cloned().unwrap_or_default().into_iter().map(entry_from_json).collect::<Option<Vec<_>>>();
                let entries = entries.ok_or_else(|| unreachable_instance(&base, "answered entries in an unknown shape"))?;
                Ok(Served { value: entries, served_by })
            }
        }
    }

    async fn forward(&self, url: &str, query: &[(&str, &str)]) -> Result<reqwest::Response, Problem> {
        let url = if query.is_empty() { reqwest::Url::parse(url) } else { reqwest::Url::parse_with_params(url, query) };
        let url = url.map_err(|e| unreachable_instance("a discovered instance", &format!("not a URL: {e}")))?;
        let keys = self.iq.internal_keys().ok_or_else(|| unreachable_instance(url.as_str(), "no internal key to authenticate the query with"))?;
        let token = keys.service_token("GET", &path_and_query(&url), now_ms());
        let request = self.http.get(url.clone()).header(FORWARDED_HEADER, "1").header(header::AUTHORIZATION, format!("{SERVICE_AUTH_SCHEME} {token}"));
        request.send().await.map_err(|e| unreachable_instance(url.as_str(), &e.to_string()))
    }
}

/// The authorization scheme of internal query requests: `Authorization: Sluice-Service <token>`,
/// a service token made with the application's internal key (docs/security.md, internal HTTP).
pub const SERVICE_AUTH_SCHEME: &str = "Sluice-Service";

/// A service token for a query to `url` (used by tools and tests that query an instance).
pub fn service_authorization(keys: &InternalKeys, path_and_query: &str) -> String {
    format!("{SERVICE_AUTH_SCHEME} {}", keys.service_token("GET", path_and_query, now_ms()))
}

/// The path and query string of `url`, as the server sees them (what a service token covers).
pub fn path_and_query(url: &reqwest::Url) -> String {
    match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_string(),
    }
}

/// The routes above, over `queries`. Every request must carry a service token made with the
/// application's internal key (the HTTP API and the other instances have it, nobody else): the
/// stores hold every user's data, password hashes included.
pub fn router(queries: StoreQueries) -> Router {
    Router::new()
        .route("/v1/stores/{store}/keys/{key}", get(get_key))
        .route("/v1/stores/{store}/prefix/{partition_key}", get(scan_prefix))
        .layer(axum::middleware::from_fn_with_state(queries.clone(), require_service_token))
        .with_state(queries)
}

/// Refuses a request without a valid service token: 401 `invalid-service-token`.
async fn require_service_token(State(queries): State<StoreQueries>, request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let target = request.uri().path_and_query().map_or_else(|| request.uri().path().to_string(), |pq| pq.as_str().to_string());
    let presented = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix(SERVICE_AUTH_SCHEME)).map(str::trim);
    let verdict = match (queries.iq.internal_keys(), presented) {
        (None, _) => Err("this instance has no internal key to check service tokens with"),
        (_, None) => Err("interactive queries need an `Authorization: Sluice-Service <token>` header made with the application's internal key"),
        (Some(keys), Some(token)) => keys.verify_service_token(token, request.method().as_str(), &target, now_ms()),
    };
    match verdict {
        Ok(()) => next.run(request).await,
        Err(why) => {
            let mut response = Problem::new(StatusCode::UNAUTHORIZED, "invalid-service-token", "Invalid service token", why).into_response();
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(SERVICE_AUTH_SCHEME));
            response
        }
    }
}

#[derive(Deserialize)]
struct KeyParams {
    partition_key: Option<String>,
}

async fn get_key(State(queries): State<StoreQueries>, Path((store, key)): Path<(String, String)>, Query(params): Query<KeyParams>, headers: HeaderMap) -> Response {
    let forwarded = headers.contains_key(FORWARDED_HEADER);
    let partition_key = params.partition_key.unwrap_or_else(|| key.clone());
    match queries.get_routed(&store, &partition_key, &key, forwarded).await {
        Err(problem) => problem.into_response(),
        Ok(Served { value: None, served_by }) => {
            let problem = Problem::new(StatusCode::NOT_FOUND, "key-not-found", "No such key", format!("store `{store}` has no key `{key}`"));
            with_served_by(problem.into_response(), &served_by)
        }
        Ok(Served { value: Some(bytes), served_by }) => {
            let bytes = queries.redact(&store, bytes);
            let content_type = if serde_json::from_slice::<serde_json::Value>(&bytes).is_ok() { "application/json" } else { "application/octet-stream" };
            with_served_by(([(header::CONTENT_TYPE, content_type)], bytes).into_response(), &served_by)
        }
    }
}

#[derive(Deserialize)]
struct ScanParams {
    prefix: Option<String>,
    skip: Option<usize>,
    limit: Option<usize>,
}

async fn scan_prefix(State(queries): State<StoreQueries>, Path((store, partition_key)): Path<(String, String)>, Query(params): Query<ScanParams>, headers: HeaderMap) -> Response {
    let forwarded = headers.contains_key(FORWARDED_HEADER);
    let prefix = params.prefix.unwrap_or_else(|| partition_key.clone());
    let limit = params.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LIMIT {
        return Problem::new(StatusCode::BAD_REQUEST, "invalid-limit", "Invalid limit", format!("limit must be 1 to {MAX_LIMIT}, got {limit}")).into_response();
    }
    match queries.scan_routed(&store, &partition_key, &prefix, params.skip.unwrap_or(0), limit, forwarded).await {
        Err(problem) => problem.into_response(),
        Ok(Served { value, served_by }) => {
            let entries: Vec<serde_json::Value> = value.into_iter().map(|(key, bytes)| serde_json::json!({"key": key, "value": value_json(&queries.redact(&store, bytes))})).collect();
            with_served_by(axum::Json(serde_json::json!({ "entries": entries })).into_response(), &served_by)
        }
    }
}

/// A stored value as JSON: itself if it is JSON, else `{"hex": "..."}`.
fn value_json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap_or_else(|_| serde_json::json!({ "hex": bytes.iter().map(|b| format!("{b:02x}")).collect::<String>() }))
}

fn entry_from_json(entry: serde_json::Value) -> Option<(String, Vec<u8>)> {
    let key = entry["key"].as_str()?.to_string();
    let value = &entry["value"];
    let bytes = match value.get("hex").and_then(|h| h.as_str()) {
        Some(hex) if value.as_object().is_some_and(|o| o.len() == 1) => (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect::<Option<Vec<u8>>>()?,
        _ => serde_json::to_vec(value).ok()?,
    };
    Some((key, bytes))
}

fn with_served_by(mut response: Response, instance: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(instance) {
        response.headers_mut().insert(SERVED_BY_HEADER, value);
    }
    response
}

fn served_by(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers.get(SERVED_BY_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string)
}

fn query_problem(error: QueryError) -> Problem {
    match error {
        QueryError::UnknownStore(_) => Problem::new(StatusCode::NOT_FOUND, "unknown-store", "Unknown store", error.to_string()),
        QueryError::NotAvailable(..) => Problem::new(StatusCode::SERVICE_UNAVAILABLE, "store-unavailable", "Store not available", error.to_string()).retry_after(1),
    }
}

fn not_here(store: &str, key: &str) -> Problem {
    Problem::new(StatusCode::SERVICE_UNAVAILABLE, "store-unavailable", "Store not available", format!("the task of `{key}` in `{store}` moved; retry"))
        .retry_after(1)
}

fn unreachable_instance(url: &str, why: &str) -> Problem {
    Problem::new(StatusCode::SERVICE_UNAVAILABLE, "instance-unreachable", "Owning instance unreachable", format!("{url}: {why}")).retry_after(1)
}

/// Percent-encodes a path segment (everything but RFC 3986 unreserved characters).
fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_json_entries() {
        for bytes in [br#"{"balance":"1.00"}"#.to_vec(), 42i64.to_be_bytes().to_vec()] {
            let json = serde_json::json!({"key": "k", "value": value_json(&bytes)});
            assert_eq!(entry_from_json(json), Some(("k".to_string(), bytes)));
        }
        assert_eq!(encode("json:a/b c"), "json%3Aa%2Fb%20c");
    }
}
