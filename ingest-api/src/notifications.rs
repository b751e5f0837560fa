//! Notifications delivered (docs/architecture.md, notifications): the caller's notifications, unread
//! first, from the processors' `notifications` store; read marks sent through the pipeline
//! (`MarkNotificationsRead`); and a live stream (server-sent events) woken by the
//! `notifications` topic ([`Feed`]) and served from the store, so that a client resuming with
//! `Last-Event-ID` gets what it missed.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::Response;
use axum::Json;
use futures::Stream;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use sluice_processors::model::stores;
use sluice_processors::notifications::{self as store, NotificationsMeta, StoredNotification, KEPT_PER_USER};
use sluice_schemas::types::{AuthCommand, AuthPayload, MarkNotificationsRead};
use sluice_schemas::TimestampMillis;
use tokio::sync::broadcast;
use utoipa::{IntoParams, ToSchema};

use crate::accounts::{DEFAULT_PAGE, MAX_PAGE};
use crate::auth::Caller;
use crate::body::ApiJson;
use crate::commands::{self, Accepted, Submission};
use crate::problem::Problem;
use crate::SharedState;

/// The topic the processors send notices to, keyed by user id.
pub const NOTIFICATIONS_TOPIC: &str = "notifications";

/// The consumer group the feed names (it is assigned partitions, never joins or commits).
pub fn feed_group(application_id: &str) -> String {
    format!("{application_id}-notifications-feed")
}

/// Most sequence numbers one `POST /v1/notifications/read` may name.
pub const MAX_MARKED: usize = 100;

/// How long a stream waits for a wake-up before it looks at the store anyway.
const STREAM_RECHECK: Duration = Duration::from_secs(20);

/// A notification, as its user sees it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NotificationResponse {
    /// Position in the user's notifications, from 1: what `up_to_sequence` and `sequences` name,
    /// and the stream's event id.
    pub sequence: i64,
    /// Machine-readable kind: payment_received, refund_received, deposit_received,
    /// payment_returned, kyc_basic, identity_verified, identity_rejected, account_frozen,
    /// password_reset_requested, password_reset.
    pub kind: String,
    /// Text shown to the user.
    pub message: String,
    /// The command or event that caused it.
    pub causation_id: String,
    /// When (ms since the epoch).
    pub created_at_ms: i64,
    /// Read yet.
    pub read: bool,
}

fn response(state: &SharedState, entry: StoredNotification, meta: &NotificationsMeta) -> NotificationResponse {
    let read = entry.is_read(meta);
    let message = with_names(&entry.message, |id| crate::users::counterparty_name(state, id));
    NotificationResponse { sequence: entry.sequence, kind: entry.kind, message, causation_id: entry.causation_id, created_at_ms: entry.created_at_ms, read }
}

/// `message` with each user id in it (`u_` and 20 hex digits, as the processors write them)
/// replaced by what `name` calls that user, where it knows them.
fn with_names(message: &str, name: impl Fn(&str) -> Option<String>) -> String {
    const ID_LEN: usize = 22;
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find("u_") {
        out.push_str(&rest[..at]);
        let candidate = rest.get(at..at + ID_LEN).filter(|c| c[2..].bytes().all(|b| b.is_ascii_hexdigit()));
        match candidate.and_then(|id| name(id).map(|n| (id, n))) {
            Some((id, shown)) => {
                out.push_str(&shown);
                rest = &rest[at + id.len()..];
                // "from Ada L.." reads as a typo: the name's full stop ends the sentence too.
                if shown.ends_with('.') && rest.starts_with('.') {
                    rest = &rest[1..];
                }
            }
            None => {
                out.push_str("u_");
                rest = &rest[at + 2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Which notifications.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NotificationsParams {
    /// Only the unread ones. Default false.
    pub unread_only: Option<bool>,
    /// Notifications to skip. Default 0.
    pub skip: Option<usize>,
    /// Notifications to return, 1 to 100. Default 20.
    pub limit: Option<usize>,
}

/// A page of notifications: unread first, newest first within each.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NotificationsPage {
    /// The notifications.
    pub notifications: Vec<NotificationResponse>,
    /// Unread notifications in all.
    pub unread_count: usize,
    /// Sequence number of the newest notification (0: none yet).
    pub last_sequence: i64,
    /// Notifications skipped.
    pub skip: usize,
    /// Page size asked for.
    pub limit: usize,
    /// The `skip` of the next page, if there is one.
    pub next_skip: Option<usize>,
}

async fn meta(state: &SharedState, user_id: &str) -> Result<NotificationsMeta, Problem> {
    let served = state.queries.get_on(stores::NOTIFICATIONS, user_id, &store::meta_key(user_id)).await?;
    served.value.map(|bytes| serde_json::from_slice(&bytes)).transpose().map(Option::unwrap_or_default).map_err(|e| Problem::internal(format!("unreadable notification counters: {e}")))
}

/// `user_id`'s kept notifications, newest first, from `skip`.
async fn entries(state: &SharedState, user_id: &str, skip: usize, limit: usize) -> Result<Vec<StoredNotification>, Problem> {
    let served = state.queries.scan(stores::NOTIFICATIONS, user_id, &store::entries_prefix(user_id), skip, limit).await?;
    served.value.iter().map(|(_, bytes)| serde_json::from_slice(bytes)).collect::<Result<_, _>>().map_err(|e| Problem::internal(format!("unreadable notification: {e}")))
}

/// The caller's notifications, unread first (newest first within unread and read), paged.
#[utoipa::path(get, path = "/v1/notifications", tag = "notifications", security(("bearer" = [])), params(NotificationsParams),
    responses((status = 200, body = NotificationsPage), (status = 400, body = Problem, description = "invalid-limit"), (status = 401, body = Problem), (status = 503, body = Problem)))]
pub async fn list(State(state): State<SharedState>, caller: Caller, Query(params): Query<NotificationsParams>) -> Result<Json<NotificationsPage>, Problem> {
    let user_id = caller.user()?.user_id.clone();
    let (skip, limit) = (params.skip.unwrap_or(0), params.limit.unwrap_or(DEFAULT_PAGE));
    if limit == 0 || limit > MAX_PAGE {
        return Err(Problem::new(StatusCode::BAD_REQUEST, "invalid-limit", "Invalid limit", format!("limit must be 1 to {MAX_PAGE}, got {limit}")));
    }
    let meta = meta(&state, &user_id).await?;
    // At most KEPT_PER_USER are kept: one read, then ordered here.
    let all: Vec<NotificationResponse> = entries(&state, &user_id, 0, KEPT_PER_USER as usize).await?.into_iter().map(|e| response(&state, e, &meta)).collect();
    let (unread, read): (Vec<_>, Vec<_>) = all.into_iter().partition(|n| !n.read);
    let unread_count = unread.len();
    let ordered: Vec<NotificationResponse> = if params.unread_only.unwrap_or(false) { unread } else { unread.into_iter().chain(read).collect() };
    let more = ordered.len() > skip.saturating_add(limit);
    let notifications = ordered.into_iter().skip(skip).take(limit).collect();
    Ok(Json(NotificationsPage { notifications, unread_count, last_sequence: meta.last_sequence, skip, limit, next_skip: more.then_some(skip.saturating_add(limit)) }))
}

/// `POST /v1/notifications/read`: what to mark read.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MarkReadRequest {
    /// Every notification up to this sequence number (e.g. the page's `last_sequence`: all).
    pub up_to_sequence: Option<i64>,
    /// These notifications (at most 100).
    #[serde(default)]
    pub sequences: Vec<i64>,
}

/// Marks notifications read; applied by the pipeline (follow the status URL).
#[utoipa::path(post, path = "/v1/notifications/read", tag = "notifications", security(("bearer" = [])), request_body = MarkReadRequest,
    responses((status = 202, body = Accepted), (status = 401, body = Problem), (status = 422, body = Problem, description = "invalid-request")))]
pub async fn mark_read(State(state): State<SharedState>, caller: Caller, headers: HeaderMap, ApiJson(request): ApiJson<MarkReadRequest>) -> Result<Response, Problem> {
    let user_id = caller.user()?.user_id.clone();
    let invalid = |detail: String| Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-request", "Invalid request", detail);
    if request.up_to_sequence.is_none() && request.sequences.is_empty() {
        return Err(invalid("give up_to_sequence, sequences, or both".to_string()));
    }
    if request.sequences.len() > MAX_MARKED {
        return Err(invalid(format!("at most {MAX_MARKED} sequences at once; use up_to_sequence for more")));
    }
    if request.up_to_sequence.into_iter().chain(request.sequences.iter().copied()).any(|s| s < 1) {
        return Err(invalid("sequence numbers start at 1".to_string()));
    }
    let principal = caller.principal();
    let submission = Submission { command_type: "MarkNotificationsRead", topic: crate::auth::AUTH_TOPIC, key: user_id.clone(), subject: user_id, status_query: None };
    let mark = MarkNotificationsRead { up_to_sequence: request.up_to_sequence, sequences: request.sequences.clone() };
    commands::submit(&state, &headers, submission, &request, move |event_id, idempotency_key| AuthCommand {
        event_id,
        occurred_at: TimestampMillis(sluice_streams::now_ms()),
        principal,
        idempotency_key,
        payload: AuthPayload::MarkNotificationsRead(mark),
    })
    .await
}

/// Live notifications of the caller as server-sent events (`event: notification`, `id`: the
/// sequence number, `data`: the notification as JSON), from the one after `Last-Event-ID`
/// when the client resumes, else from the next new one. A comment every 15 s keeps the
/// connection open.
#[utoipa::path(get, path = "/v1/notifications/stream", tag = "notifications", security(("bearer" = [])),
    params(("Last-Event-ID" = Option<i64>, Header, description = "Resume after this sequence number")),
    responses((status = 200, content_type = "text/event-stream", description = "notification events"), (status = 401, body = Problem),
        (status = 503, body = Problem, description = "stream-unavailable, store-unavailable")))]
pub async fn stream(State(state): State<SharedState>, caller: Caller, headers: HeaderMap) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    let user_id = caller.user()?.user_id.clone();
    let Some(feed) = state.notifications.as_ref() else {
        return Err(Problem::new(StatusCode::SERVICE_UNAVAILABLE, "stream-unavailable", "Stream unavailable", "this API does not follow the notifications topic"));
    };
    // Subscribed before the first read, so that nothing sent in between is missed.
    let wake = feed.subscribe();
    let resume = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<i64>().ok());
    let after = match resume {
        Some(sequence) => sequence.max(0),
        None => meta(&state, &user_id).await?.last_sequence,
    };
    let session = Session { expires_at_ms: i64::try_from(caller.claims.exp).unwrap_or(i64::MAX / 1000).saturating_mul(1000), issued_at_ms: caller.claims.iat_ms };
    let follower = Follower { state, user_id, session, after, wake, ready: VecDeque::new() };
    let events = futures::stream::unfold(follower, |mut follower| async move {
        let event = follower.next().await?;
        Some((Ok(event), follower))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// The token a stream was opened with: the stream ends when it would no longer be accepted.
struct Session {
    expires_at_ms: i64,
    issued_at_ms: i64,
}

/// One stream's position.
struct Follower {
    state: SharedState,
    user_id: String,
    session: Session,
    after: i64,
    wake: broadcast::Receiver<String>,
    ready: VecDeque<NotificationResponse>,
}

impl Follower {
    /// The next notification after `after`: from the store, once the feed says the user has a
    /// new one (or every [`STREAM_RECHECK`] regardless). `None` ends the stream: the token it was
    /// opened with expired, or the user's sessions were revoked (logout, password change or
    /// reset) or the account closed since.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if !self.still_valid().await {
                return None;
            }
            if let Some(notification) = self.ready.pop_front() {
                self.after = notification.sequence;
                return Some(Event::default().event("notification").id(notification.sequence.to_string()).json_data(&notification).unwrap_or_default());
            }
            match self.newer().await {
                Ok(found) if !found.is_empty() => {
                    self.ready.extend(found);
                    continue;
                }
                Ok(_) => {}
                Err(problem) => tracing::debug!(user_id = %self.user_id, ?problem, "notification stream: the store did not answer; retrying"),
            }
            self.wait().await;
        }
    }

    /// Whether the stream's token would still be accepted (a store that does not answer keeps
    /// the stream: the next check decides).
    async fn still_valid(&self) -> bool {
        if sluice_streams::now_ms() >= self.session.expires_at_ms {
            return false;
        }
        match crate::auth::read_user(&self.state, &self.user_id).await {
            Ok(Some(user)) => user.status == sluice_schemas::types::UserStatus::Active && self.session.issued_at_ms >= user.tokens_valid_after_ms,
            Ok(None) => false,
            Err(_) => true,
        }
    }

    /// Notifications after `after`, oldest first.
    async fn newer(&self) -> Result<Vec<NotificationResponse>, Problem> {
        let meta = meta(&self.state, &self.user_id).await?;
        if meta.last_sequence <= self.after {
            return Ok(Vec::new());
        }
        let missing = usize::try_from(meta.last_sequence - self.after).unwrap_or(usize::MAX).min(KEPT_PER_USER as usize);
        let mut found: Vec<NotificationResponse> =
            entries(&self.state, &self.user_id, 0, missing).await?.into_iter().filter(|e| e.sequence > self.after).map(|e| response(&self.state, e, &meta)).collect();
        found.reverse();
        Ok(found)
    }

    /// Until the feed names this user, or [`STREAM_RECHECK`] passed (or the token expires).
    async fn wait(&mut self) {
        let left = u64::try_from(self.session.expires_at_ms.saturating_sub(sluice_streams::now_ms())).unwrap_or(0);
        let _ = tokio::time::timeout(STREAM_RECHECK.min(Duration::from_millis(left)), async {
            loop {
                match self.wake.recv().await {
                    Ok(user_id) if user_id == self.user_id => return,
                    Ok(_) => {}
                    // Too far behind to know whose: look anyway.
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                }
            }
        })
        .await;
    }
}

/// Follows the `notifications` topic (read committed, every partition, from its end) and tells
/// the streams whose user has a new notice. Stops its thread when dropped.
pub struct Feed {
    wake: broadcast::Sender<String>,
    stop: Arc<AtomicBool>,
}

impl Feed {
    /// Starts following `topic` on `bootstrap_servers`, as consumer group `group` (assigned,
    /// never joined; nothing is committed).
    pub fn start(bootstrap_servers: &str, topic: &str, group: &str) -> Result<Feed, String> {
        let consumer: BaseConsumer = sluice_streams::kafka_client::role_client_config(sluice_streams::kafka_client::Role::Ingest, bootstrap_servers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()
            .map_err(|e| format!("the notifications feed's consumer: {e}"))?;
        let (wake, _) = broadcast::channel(1024);
        let feed = Feed { wake: wake.clone(), stop: Arc::default() };
        let (stop, topic) = (Arc::clone(&feed.stop), topic.to_string());
        std::thread::Builder::new()
            .name("sluice-notifications-feed".to_string())
            .spawn(move || follow(&consumer, &topic, &wake, &stop))
            .map_err(|e| format!("starting the notifications feed: {e}"))?;
        Ok(feed)
    }

    /// A receiver of the user ids with a new notice.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.wake.subscribe()
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn follow(consumer: &BaseConsumer, topic: &str, wake: &broadcast::Sender<String>, stop: &AtomicBool) {
    let mut assigned = false;
    while !stop.load(Ordering::SeqCst) {
        if !assigned {
            match assign_from_end(consumer, topic) {
                Ok(()) => assigned = true,
                Err(error) => {
                    tracing::debug!(%topic, %error, "notifications feed: the topic is not readable yet");
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            }
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                if let Some(key) = message.key() {
                    // No receiver: nobody is streaming; nothing to do.
                    let _ = wake.send(String::from_utf8_lossy(key).into_owned());
                }
            }
            Some(Err(error)) => tracing::debug!(%error, "notifications feed: consumer error"),
            None => {}
        }
    }
}

fn assign_from_end(consumer: &BaseConsumer, topic: &str) -> Result<(), String> {
    let partitions = crate::users_view::topic_partitions(consumer, topic)?;
    let mut list = TopicPartitionList::new();
    for partition in partitions {
        list.add_partition_offset(topic, partition, Offset::End).map_err(|e| e.to_string())?;
    }
    consumer.assign(&list).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn user_ids_in_messages_become_names_where_known() {
        let name = |id: &str| (id == "u_0123456789abcdef0123").then(|| "Ada L.".to_string());
        assert_eq!(super::with_names("You received 5.00 GBP from u_0123456789abcdef0123.", name), "You received 5.00 GBP from Ada L.");
        assert_eq!(super::with_names("from u_ffffffffffffffffffff and u_0123456789abcdef0123", name), "from u_ffffffffffffffffffff and Ada L.");
        assert_eq!(super::with_names("a u_short id, u_", name), "a u_short id, u_");
    }
}
