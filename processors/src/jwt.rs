//! JSON Web Tokens: issued by the ingest API, checked by it and by the kcat JSON bridge with
//! the same keys and rules. The algorithm is explicit (HS256 by default; RS256 or EdDSA with a
//! configured key pair), every token names its key (`kid`) so keys can rotate, and `exp`,
//! `iat`, `iss`, `aud` and `sub` are required and checked. Time is passed in, never read
//! from the clock here, so the bridge can judge a token by its record's timestamp.

use std::collections::BTreeMap;
use std::path::PathBuf;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::model::roles;

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenUse {
    /// Calls the API; short-lived.
    Access,
    /// Gets a new access token; longer-lived, refused everywhere else.
    Refresh,
}

/// The claims of a Sluice token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Subject: a user id, or a service account's name.
    pub sub: String,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Issued at in milliseconds: session revocation compares at this precision, so a login
    /// in the same second as a logout is not refused.
    pub iat_ms: i64,
    /// Roles: `user`, `operator`, `hmrc`.
    pub roles: Vec<String>,
    /// Access or refresh.
    pub token_use: TokenUse,
    /// Unique token id.
    pub jti: String,
}

impl Claims {
    /// True if the token grants `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// Why a token was refused. Each maps to a 401 with its own problem type in the API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No token where one is required.
    #[error("no bearer token")]
    Missing,
    /// Not a JWT, or an unsupported `alg` such as `none`.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// Signed with an algorithm other than the configured one.
    #[error("token algorithm {found} is not the configured {expected}")]
    WrongAlgorithm {
        /// The configured algorithm.
        expected: String,
        /// The token's.
        found: String,
    },
    /// No `kid`, or one this server does not know.
    #[error("unknown signing key {0:?}")]
    UnknownKey(Option<String>),
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// Past `exp`.
    #[error("token expired")]
    Expired,
    /// `iat` in the future.
    #[error("token issued in the future")]
    NotYetValid,
    /// `aud` is not this API.
    #[error("wrong audience")]
    WrongAudience,
    /// `iss` is not the configured issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// A required claim is absent.
    #[error("missing claim `{0}`")]
    MissingClaim(String),
    /// A refresh token used as an access token, or the reverse.
    #[error("a {0:?} token cannot be used here")]
    WrongUse(TokenUse),
    /// Every token of its subject issued before some instant was revoked (`sluice revoke`).
    #[error("the token was revoked")]
    Revoked,
}

impl TokenError {
    /// A short machine-readable name (problem type suffix, DLQ class).
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Missing => "missing_token",
            TokenError::Malformed(_) => "malformed_token",
            TokenError::WrongAlgorithm { .. } => "wrong_algorithm",
            TokenError::UnknownKey(_) => "unknown_key",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired => "token_expired",
            TokenError::NotYetValid => "token_not_yet_valid",
            TokenError::WrongAudience => "wrong_audience",
            TokenError::WrongIssuer => "wrong_issuer",
            TokenError::MissingClaim(_) => "missing_claim",
            TokenError::WrongUse(_) => "wrong_token_use",
            TokenError::Revoked => "token_revoked",
        }
    }
}

/// JWT settings as configured (`jwt_*` keys of sluice.toml / `SLUICE__JWT_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSettings {
    /// `iss` of issued tokens, and the only one accepted.
    pub issuer: String,
    /// `aud` of issued tokens, and the only one accepted.
    pub audience: String,
    /// `HS256`, `RS256` or `EdDSA`.
    pub algorithm: String,
    /// `kid` of the signing key.
    pub kid: String,
    /// HS256 shared secret.
    pub secret: Option<String>,
    /// RS256/EdDSA private key (PEM), to issue tokens.
    pub private_key_file: Option<PathBuf>,
    /// RS256/EdDSA public key (PEM), to check them.
    pub public_key_file: Option<PathBuf>,
    /// Retired keys still accepted: `kid=secret` (HS256) or `kid=/path/public.pem`, comma-separated.
    pub retired_keys: String,
}

/// Signing and verification keys by `kid`.
#[derive(Clone)]
pub struct JwtKeys {
    issuer: String,
    audience: String,
    algorithm: Algorithm,
    signing_kid: String,
    signing: Option<EncodingKey>,
    verifying: BTreeMap<String, DecodingKey>,
    /// Tokens revoked by subject (crate::revocations); none when not followed.
    revocations: Option<crate::revocations::Revocations>,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("algorithm", &self.algorithm)
            .field("kids", &self.verifying.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Leeway for clocks that disagree, in milliseconds (for `iat` in the future only; `exp` is exact).
const CLOCK_SKEW_MS: i64 = 60_000;

impl JwtKeys {
    /// Loads the keys the settings name. Errors say which setting is wrong; secrets are never
    /// part of an error.
    pub fn from_settings(settings: &JwtSettings) -> Result<JwtKeys, String> {
        let algorithm = match settings.algorithm.as_str() {
            "HS256" => Algorithm::HS256,
            "RS256" => Algorithm::RS256,
            "EdDSA" => Algorithm::EdDSA,
            other => return Err(format!("jwt_algorithm `{other}` is not supported (HS256, RS256 or EdDSA)")),
        };
        let mut keys = JwtKeys {
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            algorithm,
            signing_kid: settings.kid.clone(),
            signing: None,
            verifying: BTreeMap::new(),
            revocations: None,
        };
        if algorithm == Algorithm::HS256 {
            let secret = settings.secret.as_deref().ok_or("jwt_secret (SLUICE__JWT_SECRET) is required for HS256")?;
            if secret.len() < 32 {
                return Err("jwt_secret must be at least 32 characters".to_string());
            }
            keys.signing = Some(EncodingKey::from_secret(secret.as_bytes()));
            keys.verifying.insert(settings.kid.clone(), DecodingKey::from_secret(secret.as_bytes()));
        } else {
            let public = settings.public_key_file.as_ref().ok_or("jwt_public_key_file is required for RS256 and EdDSA")?;
            keys.verifying.insert(settings.kid.clone(), read_public_key(algorithm, public)?);
            if let Some(private) = &settings.private_key_file {
                let pem = std::fs::read(private).map_err(|e| format!("jwt_private_key_file {}: {e}", private.display()))?;
                let key = match algorithm {
                    Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
                    _ => EncodingKey::from_ed_pem(&pem),
                }
                .map_err(|e| format!("jwt_private_key_file {}: {e}", private.display()))?;
                keys.signing = Some(key);
            }
        }
        for entry in settings.retired_keys.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (kid, material) = entry.split_once('=').ok_or_else(|| format!("jwt_retired_keys entry for `{}` needs kid=key", entry.split('=').next().unwrap_or("")))?;
            let key = if algorithm == Algorithm::HS256 {
                DecodingKey::from_secret(material.as_bytes())
            } else {
                read_public_key(algorithm, &PathBuf::from(material))?
            };
            keys.verifying.insert(kid.to_string(), key);
        }
        Ok(keys)
    }

    /// The same keys, refusing tokens that `revocations` say are revoked (`token_revoked`).
    pub fn with_revocations(mut self, revocations: crate::revocations::Revocations) -> JwtKeys {
        self.revocations = Some(revocations);
        self
    }

    /// HS256 keys with one secret, for tests and `sluice dev`.
    pub fn hs256(issuer: &str, audience: &str, kid: &str, secret: &str) -> Result<JwtKeys, String> {
        JwtKeys::from_settings(&JwtSettings {
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            algorithm: "HS256".to_string(),
            kid: kid.to_string(),
            secret: Some(secret.to_string()),
            private_key_file: None,
            public_key_file: None,
            retired_keys: String::new(),
        })
    }

    /// True if these keys can sign (HS256, or a configured private key).
    pub fn can_issue(&self) -> bool {
        self.signing.is_some()
    }

    /// Signs a token for `subject` with `roles`, valid for `ttl_s` seconds from `now_ms`.
    pub fn issue(&self, subject: &str, roles: &[&str], token_use: TokenUse, now_ms: i64, ttl_s: u64, jti: &str) -> Result<String, String> {
        let key = self.signing.as_ref().ok_or("no signing key configured (jwt_private_key_file)")?;
        let iat = u64::try_from(now_ms / 1000).map_err(|_| "clock before 1970")?;
        let claims = Claims {
            sub: subject.to_string(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            exp: iat + ttl_s,
            iat,
            iat_ms: now_ms,
            roles: roles.iter().map(|r| r.to_string()).collect(),
            token_use,
            jti: jti.to_string(),
        };
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.signing_kid.clone());
        jsonwebtoken::encode(&header, &claims, key).map_err(|e| format!("cannot sign token: {e}"))
    }

    /// Checks `token` at time `now_ms` for use `expected`; returns its claims.
    pub fn verify(&self, token: &str, now_ms: i64, expected: TokenUse) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
        if header.alg != self.algorithm {
            return Err(TokenError::WrongAlgorithm { expected: format!("{:?}", self.algorithm), found: format!("{:?}", header.alg) });
        }
        let key = header.kid.as_ref().and_then(|kid| self.verifying.get(kid)).ok_or(TokenError::UnknownKey(header.kid.clone()))?;
        let mut validation = Validation::new(self.algorithm);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        // Expiry is judged against `now_ms` below (the record's time in the bridge), not the clock.
        validation.validate_exp = false;
        validation.leeway = 0;
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => TokenError::BadSignature,
            ErrorKind::InvalidAudience => TokenError::WrongAudience,
            ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
            ErrorKind::InvalidAlgorithm => TokenError::WrongAlgorithm { expected: format!("{:?}", self.algorithm), found: format!("{:?}", header.alg) },
            ErrorKind::MissingRequiredClaim(claim) => TokenError::MissingClaim(claim.clone()),
            ErrorKind::Json(inner) => match missing_field(&inner.to_string()) {
                Some(claim) => TokenError::MissingClaim(claim),
                None => TokenError::Malformed(format!("claims: {inner}")),
            },
            _ => TokenError::Malformed(e.to_string()),
        })?;
        let claims = data.claims;
        let exp_ms = i64::try_from(claims.exp).unwrap_or(i64::MAX).saturating_mul(1000);
        if now_ms >= exp_ms {
            return Err(TokenError::Expired);
        }
        if claims.iat_ms > now_ms + CLOCK_SKEW_MS {
            return Err(TokenError::NotYetValid);
        }
        if claims.token_use != expected {
            return Err(TokenError::WrongUse(claims.token_use));
        }
        if claims.sub.is_empty() {
            return Err(TokenError::MissingClaim("sub".to_string()));
        }
        if self.revocations.as_ref().is_some_and(|r| r.revoked(&claims.sub, claims.iat_ms)) {
            return Err(TokenError::Revoked);
        }
        Ok(claims)
    }

    /// The roles a subject may hold: users get `user`; the named service accounts get theirs.
    pub fn known_roles() -> [&'static str; 3] {
        [roles::USER, roles::OPERATOR, roles::HMRC]
    }
}

/// The claim serde_json reports missing, as in "missing field `iat_ms`".
fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_string())
}

fn read_public_key(algorithm: Algorithm, path: &PathBuf) -> Result<DecodingKey, String> {
    let pem = std::fs::read(path).map_err(|e| format!("public key {}: {e}", path.display()))?;
    match algorithm {
        Algorithm::RS256 => DecodingKey::from_rsa_pem(&pem),
        _ => DecodingKey::from_ed_pem(&pem),
    }
    .map_err(|e| format!("public key {}: {e}", path.display()))
}

/// The token of an `Authorization: Bearer <token>` value.
pub fn bearer(value: &str) -> Result<&str, TokenError> {
    let (scheme, token) = value.trim().split_once(' ').ok_or(TokenError::Missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(TokenError::Missing);
    }
    Ok(token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    const NOW: i64 = 1_800_000_000_000;

    fn keys() -> JwtKeys {
        JwtKeys::hs256("sluice", "sluice-api", "k1", SECRET).unwrap()
    }

    fn forge(header: &str, claims: &serde_json::Value, secret: &[u8]) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let signing_input = format!("{}.{}", b64.encode(header), b64.encode(claims.to_string()));
        let key = EncodingKey::from_secret(secret);
        let signature = jsonwebtoken::crypto::sign(signing_input.as_bytes(), &key, Algorithm::HS256).unwrap();
        format!("{signing_input}.{signature}")
    }

    fn claims_json(now_s: u64) -> serde_json::Value {
        serde_json::json!({"sub": "u_1", "iss": "sluice", "aud": "sluice-api", "exp": now_s + 60, "iat": now_s,
            "iat_ms": (now_s * 1000) as i64, "roles": ["user"], "token_use": "access", "jti": "t1"})
    }

    #[test]
    fn issued_tokens_verify_until_they_expire() {
        let keys = keys();
        let token = keys.issue("u_1", &["user"], TokenUse::Access, NOW, 60, "t1").unwrap();
        let claims = keys.verify(&token, NOW + 59_999, TokenUse::Access).unwrap();
        assert_eq!((claims.sub.as_str(), claims.iat_ms, claims.has_role("user")), ("u_1", NOW, true));
        assert_eq!(keys.verify(&token, NOW + 60_000, TokenUse::Access), Err(TokenError::Expired));
        assert_eq!(keys.verify(&token, NOW, TokenUse::Refresh), Err(TokenError::WrongUse(TokenUse::Access)));
    }

    #[test]
    fn bad_tokens_are_refused_each_with_its_reason() {
        let keys = keys();
        let now_s = (NOW / 1000) as u64;
        let good_header = r#"{"alg":"HS256","typ":"JWT","kid":"k1"}"#;
        let other = JwtKeys::hs256("sluice", "sluice-api", "k1", "another-secret-another-secret-xx").unwrap();
        let wrong_key = other.issue("u_1", &["user"], TokenUse::Access, NOW, 60, "t").unwrap();
        assert_eq!(keys.verify(&wrong_key, NOW, TokenUse::Access), Err(TokenError::BadSignature));
        let unsigned = format!("{}.", forge(r#"{"alg":"none","kid":"k1"}"#, &claims_json(now_s), b"x").rsplit_once('.').unwrap().0);
        assert!(matches!(keys.verify(&unsigned, NOW, TokenUse::Access), Err(TokenError::Malformed(_))), "alg none");
        let hs384 = forge(r#"{"alg":"HS384","kid":"k1"}"#, &claims_json(now_s), SECRET.as_bytes());
        assert!(matches!(keys.verify(&hs384, NOW, TokenUse::Access), Err(TokenError::WrongAlgorithm { .. })));
        let no_kid = forge(r#"{"alg":"HS256"}"#, &claims_json(now_s), SECRET.as_bytes());
        assert_eq!(keys.verify(&no_kid, NOW, TokenUse::Access), Err(TokenError::UnknownKey(None)));
        let mut wrong_aud = claims_json(now_s);
        wrong_aud["aud"] = "elsewhere".into();
        assert_eq!(keys.verify(&forge(good_header, &wrong_aud, SECRET.as_bytes()), NOW, TokenUse::Access), Err(TokenError::WrongAudience));
        let mut wrong_iss = claims_json(now_s);
        wrong_iss["iss"] = "mallory".into();
        assert_eq!(keys.verify(&forge(good_header, &wrong_iss, SECRET.as_bytes()), NOW, TokenUse::Access), Err(TokenError::WrongIssuer));
        for claim in ["exp", "iat", "sub", "aud", "iss"] {
            let mut missing = claims_json(now_s);
            missing.as_object_mut().unwrap().remove(claim);
            let refused = keys.verify(&forge(good_header, &missing, SECRET.as_bytes()), NOW, TokenUse::Access);
            assert!(matches!(&refused, Err(TokenError::MissingClaim(c)) if c == claim), "{claim}: {refused:?}");
        }
        assert!(matches!(keys.verify("not-a-jwt", NOW, TokenUse::Access), Err(TokenError::Malformed(_))));
    }

    #[test]
    fn retired_keys_still_verify_after_rotation() {
        let old = JwtKeys::hs256("sluice", "sluice-api", "k1", SECRET).unwrap();
        let token = old.issue("u_1", &["user"], TokenUse::Access, NOW, 60, "t").unwrap();
        let rotated = JwtKeys::from_settings(&JwtSettings {
            issuer: "sluice".into(),
            audience: "sluice-api".into(),
            algorithm: "HS256".into(),
            kid: "k2".into(),
            secret: Some("a-brand-new-secret-of-32-chars-!!".into()),
            private_key_file: None,
            public_key_file: None,
            retired_keys: format!("k1={SECRET}"),
        })
        .unwrap();
        assert_eq!(rotated.verify(&token, NOW, TokenUse::Access).unwrap().sub, "u_1");
        let fresh = rotated.issue("u_1", &["user"], TokenUse::Access, NOW, 60, "t").unwrap();
        assert_eq!(old.verify(&fresh, NOW, TokenUse::Access), Err(TokenError::UnknownKey(Some("k2".into()))));
    }

    #[test]
    fn bearer_values() {
        assert_eq!(bearer("Bearer abc"), Ok("abc"));
        assert_eq!(bearer("bearer  abc "), Ok("abc"));
        assert_eq!(bearer("Basic abc"), Err(TokenError::Missing));
        assert_eq!(bearer("Bearer "), Err(TokenError::Missing));
    }
}
