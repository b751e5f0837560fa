//! The application's internal key (docs/security.md, signed records): a secret shared by the
//! processes of one application, and nobody else, from which the runtime derives
//!
//! - the **record signature**: records on a topic marked `signed` in topology.toml carry a
//!   [`SIGNATURE_HEADER`], an HMAC-SHA256 over the topic, the key and the value bytes; the
//!   runtime verifies it before a processor sees the record and dead-letters a record whose
//!   signature is missing, made with an unknown key, or does not match (a forged record, or one
//!   altered, re-keyed or copied to another topic). Sinks to signed topics sign what they write,
//!   and so does every producer that feeds one (the HTTP API for the command topics). Discovery
//!   entries are signed the same way.
//! - the **service token** that internal HTTP calls (interactive queries between instances and
//!   from the HTTP API) carry: an HMAC over the method, the path and the time, accepted for
//!   [`SERVICE_TOKEN_WINDOW_MS`] either side of the receiver's clock.
//!
//! Each use has its own key, derived from the secret with a label, so a value made for one can
//! never pass for the other. Keys have ids: the current key signs, retired keys still verify,
//! so a secret can be rotated without stopping (add the new one everywhere as current with the
//! old one retired, then drop the old one once nothing signed with it remains).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header carrying a record's signature: `<key id>:<hex HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "sluice.signature";
/// The dead-letter class of a command that failed its signature check.
pub const FORGED_COMMAND: &str = "forged_command";
/// The dead-letter class of an internal record (repartition topic) that failed it.
pub const FORGED_RECORD: &str = "forged_record";
/// The shortest secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 32;
/// How far a service token's time may be from the receiver's clock.
pub const SERVICE_TOKEN_WINDOW_MS: i64 = 60_000;

type HmacSha256 = Hmac<Sha256>;

/// One key id with the keys derived from its secret.
#[derive(Clone)]
struct KeySet {
    id: String,
    record: [u8; 32],
    service: [u8; 32],
}

impl KeySet {
    fn new(id: &str, secret: &str) -> Result<KeySet, String> {
        if id.is_empty() || id.contains([':', '.', ',', '=']) || !id.is_ascii() {
            return Err(format!("internal key id `{id}`: use ASCII letters, digits, `-` or `_`"));
        }
        if secret.len() < MIN_SECRET_LEN {
            return Err(format!("internal key `{id}` must be at least {MIN_SECRET_LEN} characters"));
        }
        Ok(KeySet { id: id.to_string(), record: derive(secret, "record-signature-v1"), service: derive(secret, "service-token-v1") })
    }
}

/// HMAC-SHA256(secret, "sluice/" + label): one key per use.
fn derive(secret: &str, label: &str) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(b"sluice/");
    mac.update(label.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Appends `part` with its length, so that no two different inputs make the same message.
fn framed(mac: &mut HmacSha256, part: Option<&[u8]>) {
    match part {
        None => mac.update(&[0]),
        Some(bytes) => {
            mac.update(&[1]);
            mac.update(&(bytes.len() as u64).to_be_bytes());
            mac.update(bytes);
        }
    }
}

/// Why a record's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No [`SIGNATURE_HEADER`].
    #[error("the record has no {SIGNATURE_HEADER} header")]
    Missing,
    /// Not `<key id>:<64 hex digits>`.
    #[error("the {SIGNATURE_HEADER} header is malformed")]
    Malformed,
    /// A key id this process does not hold.
    #[error("the record is signed with unknown key `{0}`")]
    UnknownKey(String),
    /// The HMAC does not match the topic, key and value.
    #[error("the signature does not match the record (forged, altered, re-keyed or copied from another topic)")]
    Mismatch,
}

/// The application's internal key; see the module docs.
#[derive(Clone)]
pub struct InternalKeys {
    /// The current key first, then the retired ones.
    keys: Vec<KeySet>,
}

impl std::fmt::Debug for InternalKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("InternalKeys").field("ids", &ids).finish_non_exhaustive()
    }
}

impl InternalKeys {
    /// The current key `id` with `secret`, and the `retired` keys (`id=secret,...`, may be
    /// empty) that still verify.
    pub fn new(id: &str, secret: &str, retired: &str) -> Result<InternalKeys, String> {
        let mut keys = vec![KeySet::new(id, secret)?];
        for entry in retired.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (id, secret) = entry.split_once('=').ok_or_else(|| "retired internal keys are written `id=secret,id=secret`".to_string())?;
            if keys.iter().any(|k| k.id == id.trim()) {
                return Err(format!("internal key id `{}` is given twice", id.trim()));
            }
            keys.push(KeySet::new(id.trim(), secret.trim())?);
        }
        Ok(InternalKeys { keys })
    }

    /// The id of the key that signs.
    pub fn current_id(&self) -> &str {
        &self.keys[0].id
    }

    fn key(&self, id: &str) -> Option<&KeySet> {
        self.keys.iter().find(|k| k.id == id)
    }

    fn record_mac(key: &[u8; 32], topic: &str, record_key: Option<&[u8]>, value: Option<&[u8]>) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
        framed(&mut mac, Some(topic.as_bytes()));
        framed(&mut mac, record_key);
        framed(&mut mac, value);
        mac
    }

    /// The [`SIGNATURE_HEADER`] value for a record with `key` and `value` on `topic` (its
    /// name on the broker).
    pub fn sign_record(&self, topic: &str, key: Option<&[u8]>, value: Option<&[u8]>) -> Vec<u8> {
        let current = &self.keys[0];
        let tag = Self::record_mac(&current.record, topic, key, value).finalize().into_bytes();
        format!("{}:{}", current.id, hex(&tag)).into_bytes()
    }

    /// Checks a record's [`SIGNATURE_HEADER`] (in constant time).
    pub fn verify_record(&self, topic: &str, key: Option<&[u8]>, value: Option<&[u8]>, signature: Option<&[u8]>) -> Result<(), SignatureError> {
        let signature = signature.ok_or(SignatureError::Missing)?;
        let text = std::str::from_utf8(signature).map_err(|_| SignatureError::Malformed)?;
        let (id, tag) = text.split_once(':').ok_or(SignatureError::Malformed)?;
        let tag = unhex(tag).filter(|t| t.len() == 32).ok_or(SignatureError::Malformed)?;
        let keys = self.key(id).ok_or_else(|| SignatureError::UnknownKey(id.chars().take(64).collect()))?;
        Self::record_mac(&keys.record, topic, key, value).verify_slice(&tag).map_err(|_| SignatureError::Mismatch)
    }

    /// Checks the [`SIGNATURE_HEADER`] of a record fetched from `topic`.
    pub fn verify_message<M: rdkafka::message::Message>(&self, topic: &str, message: &M) -> Result<(), SignatureError> {
        use rdkafka::message::Headers;
        let signature = message.headers().and_then(|list| list.iter().find(|h| h.key == SIGNATURE_HEADER).and_then(|h| h.value));
        self.verify_record(topic, message.key(), message.payload(), signature)
    }

    /// `headers` with the [`SIGNATURE_HEADER`] of a record with `key` and `value` on `topic`.
    pub fn sign_into(&self, headers: rdkafka::message::OwnedHeaders, topic: &str, key: Option<&[u8]>, value: Option<&[u8]>) -> rdkafka::message::OwnedHeaders {
        let signature = self.sign_record(topic, key, value);
        headers.insert(rdkafka::message::Header { key: SIGNATURE_HEADER, value: Some(&signature) })
    }

    fn service_mac(key: &[u8; 32], method: &str, path: &str, at_ms: i64) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
        framed(&mut mac, Some(method.as_bytes()));
        framed(&mut mac, Some(path.as_bytes()));
        framed(&mut mac, Some(&at_ms.to_be_bytes()));
        mac
    }

    /// A service token for an internal `method` request to `path` (path and query), made at
    /// `now_ms`: `<key id>.<ms>.<hex HMAC>`.
    pub fn service_token(&self, method: &str, path: &str, now_ms: i64) -> String {
        let current = &self.keys[0];
        let tag = Self::service_mac(&current.service, method, path, now_ms).finalize().into_bytes();
        format!("{}.{now_ms}.{}", current.id, hex(&tag))
    }

    /// Checks a service token for `method` `path`, received at `now_ms`.
    pub fn verify_service_token(&self, token: &str, method: &str, path: &str, now_ms: i64) -> Result<(), &'static str> {
        let mut parts = token.splitn(3, '.');
        let (Some(id), Some(at), Some(tag)) = (parts.next(), parts.next(), parts.next()) else { return Err("malformed service token") };
        let at: i64 = at.parse().map_err(|_| "malformed service token")?;
        if (now_ms - at).abs() > SERVICE_TOKEN_WINDOW_MS {
            return Err("service token outside its time window");
        }
        let tag = unhex(tag).filter(|t| t.len() == 32).ok_or("malformed service token")?;
        let keys = self.key(id).ok_or("service token made with an unknown key")?;
        Self::service_mac(&keys.service, method, path, at).verify_slice(&tag).map_err(|_| "service token does not match")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || !text.is_ascii() {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "an-internal-secret-of-32-or-more-chars";

    #[test]
    fn a_signed_record_verifies_and_any_change_to_it_does_not() {
        let keys = InternalKeys::new("s1", SECRET, "").unwrap();
        let signature = keys.sign_record("payments.commands", Some(b"u_alice"), Some(b"\0\0\0\0\x01deposit"));
        assert_eq!(keys.verify_record("payments.commands", Some(b"u_alice"), Some(b"\0\0\0\0\x01deposit"), Some(&signature)), Ok(()));
        let mismatch = Err(SignatureError::Mismatch);
        assert_eq!(keys.verify_record("auth.commands", Some(b"u_alice"), Some(b"\0\0\0\0\x01deposit"), Some(&signature)), mismatch, "another topic");
        assert_eq!(keys.verify_record("payments.commands", Some(b"u_carol"), Some(b"\0\0\0\0\x01deposit"), Some(&signature)), mismatch, "another key");
        assert_eq!(keys.verify_record("payments.commands", None, Some(b"\0\0\0\0\x01deposit"), Some(&signature)), mismatch, "no key");
        assert_eq!(keys.verify_record("payments.commands", Some(b"u_alice"), Some(b"\0\0\0\0\x01depositX"), Some(&signature)), mismatch, "another value");
        assert_eq!(keys.verify_record("payments.commands", Some(b"u_alice"), None, Some(&signature)), mismatch, "a tombstone");
        // The boundaries between parts are framed: moving bytes from key to value changes the MAC.
        let shifted = keys.sign_record("t", Some(b"ab"), Some(b"c"));
        assert_eq!(keys.verify_record("t", Some(b"a"), Some(b"bc"), Some(&shifted)), mismatch);
        assert_eq!(keys.verify_record("payments.commands", Some(b"u_alice"), Some(b"x"), None), Err(SignatureError::Missing));
        assert_eq!(keys.verify_record("t", None, None, Some(b"s1:zz")), Err(SignatureError::Malformed));
        assert_eq!(keys.verify_record("t", None, None, Some(b"no-colon")), Err(SignatureError::Malformed));
        let other = InternalKeys::new("s1", "another-secret-another-secret-another", "").unwrap();
        assert_eq!(other.verify_record("t", None, Some(b"v"), Some(&keys.sign_record("t", None, Some(b"v")))), mismatch, "another secret");
        let unknown = InternalKeys::new("s9", SECRET, "").unwrap().sign_record("t", None, Some(b"v"));
        assert_eq!(keys.verify_record("t", None, Some(b"v"), Some(&unknown)), Err(SignatureError::UnknownKey("s9".into())));
    }

    #[test]
    fn a_retired_key_verifies_but_never_signs() {
        let old = InternalKeys::new("s1", SECRET, "").unwrap();
        let rotated = InternalKeys::new("s2", "the-next-internal-secret-32-chars-long", &format!("s1={SECRET}")).unwrap();
        let before = old.sign_record("t", Some(b"k"), Some(b"v"));
        assert_eq!(rotated.verify_record("t", Some(b"k"), Some(b"v"), Some(&before)), Ok(()));
        assert!(rotated.sign_record("t", Some(b"k"), Some(b"v")).starts_with(b"s2:"));
        assert_eq!(old.verify_record("t", Some(b"k"), Some(b"v"), Some(&rotated.sign_record("t", Some(b"k"), Some(b"v")))), Err(SignatureError::UnknownKey("s2".into())));
    }

    #[test]
    fn short_secrets_and_bad_ids_are_refused() {
        assert!(InternalKeys::new("s1", "short", "").unwrap_err().contains("at least 32"));
        assert!(InternalKeys::new("s:1", SECRET, "").is_err());
        assert!(InternalKeys::new("s1", SECRET, "s1=another-secret-another-secret-another").unwrap_err().contains("twice"));
        assert!(InternalKeys::new("s1", SECRET, "nonsense").is_err());
    }

    #[test]
    fn a_service_token_is_bound_to_its_request_and_its_time() {
        let keys = InternalKeys::new("s1", SECRET, "").unwrap();
        let token = keys.service_token("GET", "/v1/stores/users/keys/u_1", 1_000_000);
        assert_eq!(keys.verify_service_token(&token, "GET", "/v1/stores/users/keys/u_1", 1_030_000), Ok(()));
        assert!(keys.verify_service_token(&token, "GET", "/v1/stores/users/keys/u_2", 1_000_000).is_err(), "another path");
        assert!(keys.verify_service_token(&token, "POST", "/v1/stores/users/keys/u_1", 1_000_000).is_err(), "another method");
        assert_eq!(keys.verify_service_token(&token, "GET", "/v1/stores/users/keys/u_1", 1_000_000 + SERVICE_TOKEN_WINDOW_MS + 1), Err("service token outside its time window"));
        let forged = token.replace("1000000", "1090000");
        assert!(keys.verify_service_token(&forged, "GET", "/v1/stores/users/keys/u_1", 1_090_000).is_err(), "a moved time");
        // The record key and the service key differ: a record signature is no service token.
        let record = String::from_utf8(keys.sign_record("GET", Some(b"/p"), None)).unwrap();
        assert!(keys.verify_service_token(&record.replacen(':', ".0.", 1), "GET", "/p", 0).is_err());
    }
}
