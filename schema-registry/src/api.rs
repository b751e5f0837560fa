//! The Confluent Schema Registry REST API over [`Core`]: same paths, payloads, status codes and
//! error bodies, so unmodified Confluent clients work.
//!
//! Bodies are read as bytes and parsed here, whatever their content type: clients send
//! `application/vnd.schemaregistry.v1+json`, `application/json`, or nothing at all.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::compatibility::CompatibilityLevel;
use crate::service::Core;
use crate::state::{ParsedSchema, SubjectVersion, VersionSpec};
use crate::{RegistryError, WriteCredentials};

/// The content type of every response, as Confluent's registry sends it.
pub(crate) const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

type Answer = Result<Response, RegistryError>;
type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

/// The API's routes over a running core; writes need `credentials`, when given.
pub(crate) fn router(core: Arc<Core>, credentials: Option<WriteCredentials>) -> Router {
    let routes = Router::new()
        .route("/", get(root))
        .route("/subjects", get(list_subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route("/subjects/{subject}/versions", get(list_versions).post(register))
        .route("/subjects/{subject}/versions/{version}", get(get_version).delete(delete_version))
        .route("/subjects/{subject}/versions/{version}/schema", get(get_version_schema))
        .route("/subjects/{subject}/versions/{version}/referencedby", get(referenced_by))
        .route("/schemas/types", get(schema_types))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/versions", get(id_versions))
        .route("/schemas/ids/{id}/subjects", get(id_subjects))
        .route("/compatibility/subjects/{subject}/versions", post(check_subject))
        .route("/compatibility/subjects/{subject}/versions/{version}", post(check_version))
        .route("/config", get(get_global_config).put(put_global_config).delete(delete_global_config))
        .route("/config/{subject}", get(get_subject_config).put(put_subject_config).delete(delete_subject_config))
        .route("/mode", get(mode))
        .route("/mode/{subject}", get(mode))
        .fallback(|| async { RegistryError::RouteNotFound })
        .method_not_allowed_fallback(|| async { RegistryError::MethodNotAllowed });
    let routes = match credentials {
        Some(credentials) => routes.layer(axum::middleware::from_fn(move |request: axum::extract::Request, next: axum::middleware::Next| {
            let admitted = !is_write(request.method(), request.uri().path()) || credentials.admit(request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()));
            async move {
                if admitted {
                    next.run(request).await
                } else {
                    RegistryError::Unauthorized.into_response()
                }
            }
        })),
        None => routes,
    };
    routes.with_state(core)
}

/// Whether a request changes the registry: a registration (`POST /subjects/{s}/versions`),
/// any `DELETE` or `PUT`. Lookups and compatibility checks are `POST`s that change nothing.
fn is_write(method: &axum::http::Method, path: &str) -> bool {
    use axum::http::Method;
    let registration = method == Method::POST && path.starts_with("/subjects/") && path.trim_end_matches('/').ends_with("/versions") && path.matches('/').count() == 3;
    registration || method == Method::DELETE || method == Method::PUT
}

/// A JSON response with Confluent's content type.
pub(crate) fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    raw_response(status, bytes)
}

fn raw_response(status: StatusCode, body: impl Into<axum::body::Body>) -> Response {
    let mut response = (status, body.into()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

fn ok(body: &impl Serialize) -> Answer {
    Ok(json_response(StatusCode::OK, body))
}

// ---------------------------------------------------------------------------------------------
// Request pieces

fn path<T>(extracted: Result<Path<T>, PathRejection>) -> Result<T, RegistryError> {
    extracted.map(|Path(value)| value).map_err(|rejection| RegistryError::BadRequest(rejection.body_text()))
}

fn params(extracted: Params) -> Result<HashMap<String, String>, RegistryError> {
    extracted.map(|Query(params)| params).map_err(|rejection| RegistryError::BadRequest(rejection.body_text()))
}

/// A boolean query parameter (`?deleted=true`); absent or anything but `true` is false.
fn flag(params: &HashMap<String, String>, name: &str) -> bool {
    params.get(name).is_some_and(|value| value.eq_ignore_ascii_case("true"))
}

fn body(extracted: Result<Bytes, BytesRejection>) -> Result<Bytes, RegistryError> {
    extracted.map_err(|rejection| RegistryError::BadRequest(rejection.body_text()))
}

/// The body of register, lookup and compatibility requests. Other fields Confluent clients send
/// (`metadata`, `ruleSet`, ...) are accepted and ignored.
#[derive(Deserialize)]
struct SchemaRequest {
    schema: Option<String>,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
    references: Option<Vec<serde_json::Value>>,
}

fn parse_schema_request(body: &[u8]) -> Result<ParsedSchema, RegistryError> {
    let request: SchemaRequest = serde_json::from_slice(body)
        .map_err(|error| RegistryError::BadRequest(format!("Malformed JSON request body: {error}")))?;
    if let Some(kind) = request.schema_type.as_deref().filter(|kind| !kind.eq_ignore_ascii_case("AVRO")) {
        return Err(RegistryError::InvalidSchema(format!(
            "schema type {kind} is not supported; this registry supports AVRO only"
        )));
    }
    if request.references.as_ref().is_some_and(|references| !references.is_empty()) {
        return Err(RegistryError::InvalidSchema("schema references are not supported".to_string()));
    }
    let text = request
        .schema
        .ok_or_else(|| RegistryError::InvalidSchema("the request has no \"schema\" field".to_string()))?;
    ParsedSchema::parse(&text)
}

fn parse_id(text: &str) -> Result<u32, RegistryError> {
    text.parse().map_err(|_| RegistryError::SchemaNotFound(format!("no schema with id '{text}'")))
}

fn subject_version_json(found: &SubjectVersion) -> serde_json::Value {
    json!({ "subject": found.subject, "version": found.version, "id": found.id, "schema": found.schema })
}

// ---------------------------------------------------------------------------------------------
// Handlers

async fn root() -> Answer {
    ok(&json!({}))
}

async fn list_subjects(State(core): State<Arc<Core>>, query: Params) -> Answer {
    let deleted = flag(&params(query)?, "deleted");
    ok(&core.read(|state| state.subjects(deleted)))
}

async fn list_versions(State(core): State<Arc<Core>>, subject: Result<Path<String>, PathRejection>, query: Params) -> Answer {
    let subject = path(subject)?;
    let deleted = flag(&params(query)?, "deleted");
    ok(&core.read_fresh(|state| state.versions(&subject, deleted)).await?)
}

async fn register(
    State(core): State<Arc<Core>>,
    subject: Result<Path<String>, PathRejection>,
    request: Result<Bytes, BytesRejection>,
) -> Answer {
    let subject = path(subject)?;
    let parsed = parse_schema_request(&body(request)?)?;
    let id = core.register(&subject, &parsed).await?;
    ok(&json!({ "id": id }))
}

async fn lookup(
    State(core): State<Arc<Core>>,
    subject: Result<Path<String>, PathRejection>,
    query: Params,
    request: Result<Bytes, BytesRejection>,
) -> Answer {
    let subject = path(subject)?;
    let deleted = flag(&params(query)?, "deleted");
    let parsed = parse_schema_request(&body(request)?)?;
    let found = core.read_fresh(|state| state.lookup(&subject, &parsed, deleted)).await?;
    ok(&subject_version_json(&found))
}

async fn get_version(
    State(core): State<Arc<Core>>,
    segments: Result<Path<(String, String)>, PathRejection>,
    query: Params,
) -> Answer {
    let found = find_version(&core, segments, query).await?;
    ok(&subject_version_json(&found))
}

async fn get_version_schema(
    State(core): State<Arc<Core>>,
    segments: Result<Path<(String, String)>, PathRejection>,
    query: Params,
) -> Answer {
    let found = find_version(&core, segments, query).await?;
    Ok(raw_response(StatusCode::OK, found.schema))
}

async fn find_version(
    core: &Core,
    segments: Result<Path<(String, String)>, PathRejection>,
    query: Params,
) -> Result<SubjectVersion, RegistryError> {
    let (subject, version) = path(segments)?;
    let deleted = flag(&params(query)?, "deleted");
    let spec = VersionSpec::parse(&version)?;
    core.read_fresh(|state| state.subject_version(&subject, spec, deleted)).await
}

async fn referenced_by(
    State(core): State<Arc<Core>>,
    segments: Result<Path<(String, String)>, PathRejection>,
    query: Params,
) -> Answer {
    // Schema references are not supported, so nothing refers to anything; the version must exist.
    find_version(&core, segments, query).await?;
    ok(&Vec::<u32>::new())
}

async fn delete_subject(State(core): State<Arc<Core>>, subject: Result<Path<String>, PathRejection>, query: Params) -> Answer {
    let subject = path(subject)?;
    let permanent = flag(&params(query)?, "permanent");
    ok(&core.delete_subject(&subject, permanent).await?)
}

async fn delete_version(
    State(core): State<Arc<Core>>,
    segments: Result<Path<(String, String)>, PathRejection>,
    query: Params,
) -> Answer {
    let (subject, version) = path(segments)?;
    let permanent = flag(&params(query)?, "permanent");
    let spec = VersionSpec::parse(&version)?;
    ok(&core.delete_version(&subject, spec, permanent).await?)
}

async fn schema_types() -> Answer {
    ok(&["AVRO"])
}

async fn schema_by_id(State(core): State<Arc<Core>>, id: Result<Path<String>, PathRejection>, query: Params) -> Answer {
    let schema = find_schema(&core, id, query).await?;
    ok(&json!({ "schema": schema }))
}

async fn raw_schema_by_id(State(core): State<Arc<Core>>, id: Result<Path<String>, PathRejection>, query: Params) -> Answer {
    let schema = find_schema(&core, id, query).await?;
    Ok(raw_response(StatusCode::OK, schema))
}

/// The text of a schema by id; with `?subject=` the subject must have a version with this id.
async fn find_schema(core: &Core, id: Result<Path<String>, PathRejection>, query: Params) -> Result<String, RegistryError> {
    let id = parse_id(&path(id)?)?;
    let params = params(query)?;
    let subject = params.get("subject").filter(|subject| !subject.is_empty());
    core.read_fresh(|state| {
        let text = state.schema_text(id).ok_or_else(|| RegistryError::SchemaNotFound(format!("no schema with id {id}")))?;
        if let Some(subject) = subject {
            if !state.id_versions(id, true).iter().any(|(name, _)| name == subject) {
                return Err(RegistryError::SchemaNotFound(format!("schema {id} is not registered under subject '{subject}'")));
            }
        }
        Ok(text.to_string())
    })
    .await
}

async fn id_versions(State(core): State<Arc<Core>>, id: Result<Path<String>, PathRejection>, query: Params) -> Answer {
    let usages = find_usages(&core, id, query).await?;
    let body: Vec<serde_json::Value> =
        usages.into_iter().map(|(subject, version)| json!({ "subject": subject, "version": version })).collect();
    ok(&body)
}

async fn id_subjects(State(core): State<Arc<Core>>, id: Result<Path<String>, PathRejection>, query: Params) -> Answer {
    let mut subjects: Vec<String> = find_usages(&core, id, query).await?.into_iter().map(|(subject, _)| subject).collect();
    subjects.dedup();
    ok(&subjects)
}

async fn find_usages(
    core: &Core,
    id: Result<Path<String>, PathRejection>,
    query: Params,
) -> Result<Vec<(String, u32)>, RegistryError> {
    let id = parse_id(&path(id)?)?;
    let deleted = flag(&params(query)?, "deleted");
    core.read_fresh(|state| {
        state.schema_text(id).ok_or_else(|| RegistryError::SchemaNotFound(format!("no schema with id {id}")))?;
        Ok(state.id_versions(id, deleted))
    })
    .await
}

/// `POST /compatibility/subjects/{s}/versions`: checks against the subject's versions as
/// registering would (latest, or all for a transitive level). An unknown subject is compatible.
async fn check_subject(
    State(core): State<Arc<Core>>,
    subject: Result<Path<String>, PathRejection>,
    query: Params,
    request: Result<Bytes, BytesRejection>,
) -> Answer {
    let subject = path(subject)?;
    let verbose = flag(&params(query)?, "verbose");
    let parsed = parse_schema_request(&body(request)?)?;
    // See other instances' versions if the broker answers; otherwise check what we have.
    if let Err(error) = core.catch_up().await {
        tracing::warn!(%error, "could not catch up with the schemas topic before a compatibility check");
    }
    let messages = core.read(|state| state.check_against_subject(&subject, state.effective_level(&subject), &parsed));
    compatibility_answer(messages, verbose)
}

/// `POST /compatibility/subjects/{s}/versions/{v}`: checks against that one version in the
/// direction(s) of the subject's level.
async fn check_version(
    State(core): State<Arc<Core>>,
    segments: Result<Path<(String, String)>, PathRejection>,
    query: Params,
    request: Result<Bytes, BytesRejection>,
) -> Answer {
    let (subject, version) = path(segments)?;
    let verbose = flag(&params(query)?, "verbose");
    let spec = VersionSpec::parse(&version)?;
    let parsed = parse_schema_request(&body(request)?)?;
    let messages = core
        .read_fresh(|state| state.check_against_version(&subject, spec, state.effective_level(&subject), &parsed))
        .await?;
    compatibility_answer(messages, verbose)
}

fn compatibility_answer(messages: Vec<String>, verbose: bool) -> Answer {
    if verbose {
        ok(&json!({ "is_compatible": messages.is_empty(), "messages": messages }))
    } else {
        ok(&json!({ "is_compatible": messages.is_empty() }))
    }
}

/// The body of `PUT /config`. Confluent names the field `compatibility`; newer clients also
/// send `compatibilityLevel`.
#[derive(Deserialize)]
struct ConfigRequest {
    #[serde(alias = "compatibilityLevel")]
    compatibility: Option<String>,
}

fn parse_config_request(body: &[u8]) -> Result<CompatibilityLevel, RegistryError> {
    let request: ConfigRequest = serde_json::from_slice(body)
        .map_err(|error| RegistryError::BadRequest(format!("Malformed JSON request body: {error}")))?;
    request.compatibility.unwrap_or_default().parse()
}

async fn get_global_config(State(core): State<Arc<Core>>) -> Answer {
    ok(&json!({ "compatibilityLevel": core.read(|state| state.global_level()).as_str() }))
}

async fn put_global_config(State(core): State<Arc<Core>>, request: Result<Bytes, BytesRejection>) -> Answer {
    let level = parse_config_request(&body(request)?)?;
    core.set_level(None, level).await?;
    ok(&json!({ "compatibility": level.as_str() }))
}

async fn delete_global_config(State(core): State<Arc<Core>>) -> Answer {
    let previous = core.delete_level(None).await?;
    ok(&json!({ "compatibilityLevel": previous.as_str() }))
}

async fn get_subject_config(State(core): State<Arc<Core>>, subject: Result<Path<String>, PathRejection>, query: Params) -> Answer {
    let subject = path(subject)?;
    let default_to_global = flag(&params(query)?, "defaultToGlobal");
    let level = core
        .read_fresh(|state| match state.subject_level(&subject) {
            Some(level) => Ok(level),
            None if default_to_global => Ok(state.global_level()),
            None => Err(RegistryError::SubjectConfigNotFound(subject.clone())),
        })
        .await?;
    ok(&json!({ "compatibilityLevel": level.as_str() }))
}

async fn put_subject_config(
    State(core): State<Arc<Core>>,
    subject: Result<Path<String>, PathRejection>,
    request: Result<Bytes, BytesRejection>,
) -> Answer {
    let subject = path(subject)?;
    let level = parse_config_request(&body(request)?)?;
    core.set_level(Some(&subject), level).await?;
    ok(&json!({ "compatibility": level.as_str() }))
}

async fn delete_subject_config(State(core): State<Arc<Core>>, subject: Result<Path<String>, PathRejection>) -> Answer {
    let subject = path(subject)?;
    let previous = core.delete_level(Some(&subject)).await?;
    ok(&json!({ "compatibilityLevel": previous.as_str() }))
}

/// The registry is always writable; modes (IMPORT, READONLY) are not supported.
async fn mode() -> Answer {
    ok(&json!({ "mode": "READWRITE" }))
}
