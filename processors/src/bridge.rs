//! `json-bridge`: the kcat path. Reads the `*.json` twins of the command topics, checks the
//! JWT in the `authorization` header with the same keys and rules as the HTTP API, parses the
//! JSON into the command types that mirror the Avro schemas (unknown fields, wrong types,
//! over-precise amounts and bad dates are refused), and forwards the Avro envelope to the
//! command topic, or dead-letters the record with the reason.
//!
//! `ChangePassword` is refused here (it needs the current password: HTTP only).
//!
//! A JSON command looks like (`event_id` and `idempotency_key` optional):
//! `{"payload": {"type": "Transfer", "payee_user_id": "u_...", "amount": "12.50", "currency": "GBP"}}`

use std::sync::Arc;

use serde::Deserialize;
use sluice_schemas::types::{AuthCommand, AuthPayload, HmrcCommand, HmrcPayload, IdentityCommand, IdentityPayload, PaymentCommand, PaymentPayload, Principal};
use sluice_schemas::{AnyRecord, TimestampMillis};
use sluice_streams::{dlq_headers, DeadLetter, ProcessError, Processor, ProcessorContext, Record, Value};

use crate::identifiers;
use crate::jwt::{self, JwtKeys, TokenError, TokenUse};
use crate::model::{self, user_id_for_email};

/// Processor kind name.
pub const KIND: &str = "json-bridge";

/// The header carrying `Bearer <jwt>`.
pub const AUTHORIZATION_HEADER: &str = "authorization";

/// JSON topic → (sink to the Avro topic).
const ROUTES: &[(&str, &str)] = &[
    ("auth.commands.json", "bridge-auth-sink"),
    ("payments.commands.json", "bridge-payments-sink"),
    ("identity.verification.request.json", "bridge-identity-sink"),
    ("hmrc.death.notification.json", "bridge-hmrc-sink"),
];
const DLQ_SINK: &str = "bridge-dlq-sink";

/// See the module docs.
#[derive(Debug, Clone)]
pub struct JsonBridge {
    keys: Arc<JwtKeys>,
}

impl JsonBridge {
    /// Checks tokens with `keys`.
    pub fn new(keys: Arc<JwtKeys>) -> JsonBridge {
        JsonBridge { keys }
    }
}

/// The JSON form of a command.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonCommand<P> {
    /// Command id; default: derived from the record's topic, partition and offset.
    event_id: Option<String>,
    /// As the HTTP header of the same name.
    idempotency_key: Option<String>,
    /// The command, tagged by `type`.
    payload: P,
}

/// Why a JSON record was dead-lettered.
#[derive(Debug)]
enum BridgeError {
    Token(TokenError),
    Json(String),
    Key(String),
}

impl BridgeError {
    fn into_process_error(self) -> ProcessError {
        match self {
            BridgeError::Token(e) => ProcessError::poison("invalid_token", format!("{}: {e}", e.code())),
            BridgeError::Json(message) => ProcessError::poison("invalid_command", message),
            BridgeError::Key(message) => ProcessError::poison("invalid_key", message),
        }
    }
}

impl Processor for JsonBridge {
    fn init(&mut self, ctx: &mut ProcessorContext<'_>) -> Result<(), ProcessError> {
        let needed: Vec<&str> = ROUTES.iter().map(|(_, sink)| *sink).chain([DLQ_SINK]).collect();
        crate::emit::require_children(ctx, KIND, &needed)
    }

    fn process(&mut self, record: Record, ctx: &mut ProcessorContext<'_>) -> Result<(), ProcessError> {
        let metadata = ctx.record_metadata().cloned().ok_or_else(|| ProcessError::Fatal("json-bridge runs on source records only".to_string()))?;
        let Some(&(_, sink)) = ROUTES.iter().find(|(topic, _)| *topic == &*metadata.topic) else {
            return Err(ProcessError::Fatal(format!("json-bridge has no route for topic `{}`", metadata.topic)));
        };
        match self.convert(&record, &metadata.topic, default_event_id(&record, &metadata)) {
            Ok((key, value)) => {
                let headers = record.headers.iter().filter(|(name, _)| !name.eq_ignore_ascii_case(AUTHORIZATION_HEADER)).cloned().collect();
                ctx.forward_to(sink, Record { key: Some(key), value: crate::avro::record(value), timestamp: record.timestamp, headers })
            }
            Err(error) => {
                let error = error.into_process_error();
                tracing::info!(topic = %metadata.topic, offset = metadata.offset, %error, "json command dead-lettered");
                let value = match &record.value {
                    Value::Bytes(bytes) => Some(bytes.as_slice()),
                    _ => None,
                };
                let letter = crate::avro::dead_letter(&DeadLetter::new(&metadata, record.timestamp, &error, record.key.as_deref().map(str::as_bytes), value));
                let headers = dlq_headers(&record.headers, &metadata, &error, record.key.as_deref().map(str::as_bytes), value);
                let key = record.key.clone();
                ctx.forward_to(DLQ_SINK, Record { key, value: crate::avro::record(letter), timestamp: record.timestamp, headers })
            }
        }
    }
}

impl JsonBridge {
    /// The principal of the record's token, judged at the record's time.
    fn principal(&self, record: &Record) -> Result<Principal, BridgeError> {
        let header = record
            .headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(AUTHORIZATION_HEADER))
            .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
            .ok_or(BridgeError::Token(TokenError::Missing))?;
        let token = jwt::bearer(&header).map_err(BridgeError::Token)?;
        let claims = self.keys.verify(token, record.timestamp, TokenUse::Access).map_err(BridgeError::Token)?;
        Ok(Principal { subject: claims.sub, roles: claims.roles, token_issued_at: TimestampMillis(claims.iat_ms) })
    }

    fn convert(&self, record: &Record, topic: &str, default_id: String) -> Result<(String, AnyRecord), BridgeError> {
        let Value::Bytes(bytes) = &record.value else { return Err(BridgeError::Json("the value must be a JSON object".to_string())) };
        let occurred_at = TimestampMillis(record.timestamp);
        let given_key = record.key.clone().filter(|k| !k.is_empty());
        match topic {
            "auth.commands.json" => {
                let command: JsonCommand<AuthPayload> = parse(bytes)?;
                let (principal, key) = match &command.payload {
                    // A password change needs the current password, which only the HTTP API
                    // checks: a token alone (leaked, or read off this topic) must not be enough
                    // to take an account over.
                    AuthPayload::ChangePassword(_) => return Err(BridgeError::Json(CHANGE_PASSWORD_REFUSED.to_string())),
                    // A reset hands the account to whoever holds the token the API delivered
                    // to its holder: only the API may ask for one or confirm it.
                    AuthPayload::RequestPasswordReset(_) | AuthPayload::ConfirmPasswordReset(_) => return Err(BridgeError::Json(PASSWORD_RESET_REFUSED.to_string())),
                    // Sign-up is anonymous, as over HTTP; the key is the email's user id.
                    AuthPayload::RegisterUser(register) => {
                        let user_id = user_id_for_email(&register.email);
                        (Principal { subject: user_id.clone(), roles: Vec::new(), token_issued_at: TimestampMillis(0) }, user_id)
                    }
                    _ => {
                        let principal = self.principal(record)?;
                        let key = given_key.unwrap_or_else(|| principal.subject.clone());
                        (principal, key)
                    }
                };
                let envelope = AuthCommand {
                    event_id: command.event_id.unwrap_or(default_id),
                    occurred_at,
                    principal,
                    idempotency_key: command.idempotency_key,
                    payload: command.payload,
                };
                Ok((key, AnyRecord::AuthCommand(envelope)))
            }
            "payments.commands.json" => {
                let command: JsonCommand<PaymentPayload> = parse(bytes)?;
                let principal = self.principal(record)?;
                let key = given_key.unwrap_or_else(|| principal.subject.clone());
                let envelope = PaymentCommand {
                    event_id: command.event_id.unwrap_or(default_id),
                    occurred_at,
                    principal,
                    idempotency_key: command.idempotency_key,
                    payload: command.payload,
                };
                check_encodable(&envelope)?;
                Ok((key, AnyRecord::PaymentCommand(envelope)))
            }
            "identity.verification.request.json" => {
                let command: JsonCommand<IdentityPayload> = parse(bytes)?;
                let principal = self.principal(record)?;
                let key = given_key.unwrap_or_else(|| principal.subject.clone());
                let envelope = IdentityCommand {
                    event_id: command.event_id.unwrap_or(default_id),
                    occurred_at,
                    principal,
                    idempotency_key: command.idempotency_key,
                    payload: command.payload,
                };
                Ok((key, AnyRecord::IdentityCommand(envelope)))
            }
            "hmrc.death.notification.json" => {
                let command: JsonCommand<HmrcPayload> = parse(bytes)?;
                let principal = self.principal(record)?;
                let HmrcPayload::DeathNotification(notification) = &command.payload;
                let (kind, value) = identifiers::death_identifier(&notification.nin, notification.nhs_number.as_deref()).map_err(|e| BridgeError::Key(format!("identifier: {e}")))?;
                let key = model::identifier_key(kind, &value);
                let envelope = HmrcCommand {
                    event_id: command.event_id.unwrap_or(default_id),
                    occurred_at,
                    principal,
                    idempotency_key: command.idempotency_key,
                    payload: command.payload,
                };
                Ok((key, AnyRecord::HmrcCommand(envelope)))
            }
            other => Err(BridgeError::Json(format!("no command type for topic `{other}`"))),
        }
    }
}

/// Why `ChangePassword` is dead-lettered on the kcat path.
pub const CHANGE_PASSWORD_REFUSED: &str =
    "ChangePassword is not accepted from kcat: changing a password needs the current one, which only the HTTP API checks (POST /v1/auth/change-password)";

/// Why password resets are dead-lettered on the kcat path.
pub const PASSWORD_RESET_REFUSED: &str =
    "password resets are not accepted from kcat: ask for one with POST /v1/auth/reset-password and confirm it with POST /v1/auth/reset-password/confirm";

/// A command id for a record that gives none: derived from the record (so a replay gets the
/// same id) but not guessable by anyone who does not hold its bearer token, so nobody can send
/// a command with that id first: `json:<topic>:<32 hex digits of SHA-256>` over the token, the
/// value and the position.
fn default_event_id(record: &Record, metadata: &sluice_streams::RecordMetadata) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(b"sluice/json-bridge-event-id\0");
    for (name, value) in record.headers.iter().filter(|(name, _)| name.eq_ignore_ascii_case(AUTHORIZATION_HEADER)) {
        hash.update(name.as_bytes());
        hash.update((value.len() as u64).to_be_bytes());
        hash.update(value);
    }
    if let Value::Bytes(bytes) = &record.value {
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    }
    hash.update(metadata.partition.to_be_bytes());
    hash.update(metadata.offset.to_be_bytes());
    let digest = hash.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("json:{}:{hex}", metadata.topic)
}

fn parse<P: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<JsonCommand<P>, BridgeError> {
    serde_json::from_slice(bytes).map_err(|e| BridgeError::Json(format!("not a valid command: {e}")))
}

/// Amounts must fit the Avro decimal(18,2): refused here, never rounded on the way out.
fn check_encodable(command: &PaymentCommand) -> Result<(), BridgeError> {
    use sluice_schemas::AvroType;
    command.to_avro().map(|_| ()).map_err(|e| BridgeError::Json(format!("not a valid command: {e}")))
}
