//! Operations: liveness and readiness, Prometheus metrics, one access-log record per request
//! on `system.logs.access`, the request timeout and the per-principal rate limit.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use sluice_schemas::types::AccessLog;
use sluice_schemas::TimestampMillis;
use sluice_streams::metrics as names;
use sluice_streams::now_ms;
use utoipa::ToSchema;

use crate::problem::{Problem, ProblemName};
use crate::SharedState;

/// The access-log topic.
pub const ACCESS_TOPIC: &str = "system.logs.access";
/// Request id header, taken from the client when it sends a sane one.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Most principals the rate limiter tracks before it forgets idle ones.
const LIMITER_CAPACITY: usize = 100_000;

/// What the middleware knows of a request, shared with the handlers.
#[derive(Debug)]
pub struct RequestContext {
    /// The request id (`x-request-id`).
    pub request_id: String,
    /// The client's address, when served over TCP.
    pub remote_addr: Option<SocketAddr>,
    subject: Mutex<Option<String>>,
}

impl RequestContext {
    /// Records the authenticated subject, for the access log.
    pub fn set_subject(&self, subject: &str) {
        *self.subject.lock().expect("subject lock") = Some(subject.to_string());
    }

    /// The rate-limit key of an anonymous request: the client's IP address.
    pub fn anonymous_key(&self) -> String {
        match self.remote_addr {
            Some(addr) => format!("ip:{}", addr.ip()),
            None => "ip:unknown".to_string(),
        }
    }
}

/// Request id, timeout, metrics and the access log around every request.
pub async fn observe(State(state): State<SharedState>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let occurred_at = now_ms();
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let remote_addr = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let context = Arc::new(RequestContext { request_id: request_id.clone(), remote_addr, subject: Mutex::new(None) });
    request.extensions_mut().insert(Arc::clone(&context));
    let method = request.method().to_string();
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "unmatched".to_string());
    let user_agent = request.headers().get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_string);

    let mut response = match tokio::time::timeout(state.settings.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "request-timeout",
            "Request timed out",
            format!("no answer within {} ms; a command sent with an Idempotency-Key can be retried safely", state.settings.request_timeout.as_millis()),
        )
        .retry_after(1)
        .into_response(),
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    metrics::counter!(names::HTTP_REQUESTS_TOTAL, "method" => method.clone(), "route" => route.clone(), "status" => status.to_string()).increment(1);
    metrics::histogram!(names::HTTP_REQUEST_DURATION_SECONDS, "method" => method.clone(), "route" => route.clone()).record(elapsed.as_secs_f64());
    if let Some(ProblemName(problem)) = response.extensions().get::<ProblemName>() {
        metrics::counter!(names::HTTP_PROBLEMS_TOTAL, "route" => route.clone(), "problem" => problem.clone()).increment(1);
    }

    let subject = context.subject.lock().expect("subject lock").clone();
    let record = AccessLog {
        event_id: request_id.clone(),
        occurred_at: TimestampMillis(occurred_at),
        method,
        path: route,
        status: i32::from(status),
        duration_us: i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX),
        principal_subject: subject,
        remote_addr: remote_addr.map(|a| a.to_string()),
        user_agent,
    };
    let publisher_state = Arc::clone(&state);
    tokio::spawn(async move {
        if let Err(error) = publisher_state.publisher.publish_detached(ACCESS_TOPIC, &record.event_id, &record).await {
            tracing::debug!(%error, "access-log record not written");
        }
    });
    response
}

/// 404 for unknown paths.
pub async fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found", "no such route; see /openapi.json")
}

/// 405 for known paths with another method.
pub async fn method_not_allowed() -> Problem {
    Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed", "this route does not take that method; see /openapi.json")
}

/// Liveness.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health { status: "ok".to_string() })
}

/// Readiness: the broker and the Schema Registry answer, and every task with stores runs on
/// some instance (so queries and logins can be answered).
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses((status = 200, body = Health, description = "ready"), (status = 503, body = Problem, description = "not-ready: which dependency failed")))]
pub async fn ready(State(state): State<SharedState>) -> Result<Json<Health>, Problem> {
    let mut failures = state.publisher.probe().await.err().unwrap_or_default();
    let missing = state.queries.unavailable_tasks();
    if !missing.is_empty() {
        failures.push(format!("stores: tasks {} are not running on any instance yet", missing.join(", ")));
    }
    if failures.is_empty() {
        Ok(Json(Health { status: "ready".to_string() }))
    } else {
        Err(Problem::new(StatusCode::SERVICE_UNAVAILABLE, "not-ready", "Not ready", failures.join("; ")).retry_after(1))
    }
}

/// Prometheus metrics of this process (processors too, under `sluice dev`).
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<SharedState>) -> Response {
    match &state.metrics {
        Some(handle) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response(),
        None => Problem::new(StatusCode::NOT_FOUND, "metrics-disabled", "Metrics disabled", "no metrics recorder is installed in this process").into_response(),
    }
}

/// Token buckets per principal: `rate_per_s` on average, `burst` at once.
pub struct RateLimiter {
    rate_per_s: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// A limiter; a rate of 0 turns it off.
    pub fn new(rate_per_s: u32, burst: u32) -> RateLimiter {
        RateLimiter { rate_per_s: f64::from(rate_per_s), burst: f64::from(burst.max(1)), buckets: Mutex::default() }
    }

    /// A limiter of `per_minute` on average, `burst` at once.
    pub fn per_minute(per_minute: u32, burst: u32) -> RateLimiter {
        RateLimiter { rate_per_s: f64::from(per_minute) / 60.0, burst: f64::from(burst.max(1)), buckets: Mutex::default() }
    }

    /// Takes one token of `principal`, or answers 429 with when to retry.
    pub fn check(&self, principal: &str) -> Result<(), Problem> {
        if self.rate_per_s <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("limiter lock");
        if buckets.len() >= LIMITER_CAPACITY && !buckets.contains_key(principal) {
            // Forget principals whose buckets have refilled: they lose nothing.
            let full_after = Duration::from_secs_f64(self.burst / self.rate_per_s);
            buckets.retain(|_, (_, at)| now.duration_since(*at) < full_after);
        }
        let (tokens, at) = buckets.entry(principal.to_string()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate_per_s).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            return Ok(());
        }
        let wait_s = ((1.0 - *tokens) / self.rate_per_s).ceil().max(1.0) as u64;
        Err(Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many requests",
            format!("more than {} requests per second (burst {}); retry in {wait_s} s", self.rate_per_s, self.burst),
        )
        .retry_after(wait_s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limiter_allows_the_burst_then_refuses_with_retry_after() {
        let limiter = RateLimiter::new(1, 3);
        for _ in 0..3 {
            limiter.check("a").unwrap();
        }
        let refused = limiter.check("a").unwrap_err();
        assert_eq!((refused.status, refused.retry_after_s), (429, Some(1)));
        limiter.check("b").expect("another principal has its own bucket");
        assert!(RateLimiter::new(0, 0).check("a").is_ok(), "rate 0 turns limiting off");
    }
}
