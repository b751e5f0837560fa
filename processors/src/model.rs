//! What the processors keep in their stores (JSON values, so interactive queries and
//! operators can read them), the store keys, and the ids derived from other ids.

use rust_decimal::Decimal;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sluice_schemas::types::{IdentifierType, KycLevel, PaymentKind, UserStatus};
use sluice_schemas::Date;
use sluice_state::KeyValueStore;
use sluice_streams::ProcessError;

/// Store names, as declared in topology.toml.
pub mod stores {
    /// Users by user id (auth-validation).
    pub const USERS: &str = "users";
    /// Accounts by user id (balance-check, settlement).
    pub const ACCOUNTS: &str = "accounts";
    /// Transaction history: `<user_id>/<newest-first sequence>`.
    pub const LEDGER: &str = "ledger";
    /// Payments: `out/<payer user_id>/<command_id>` on the payer's task,
    /// `in/<payee user_id>/<command_id>` on the payee's: several users share a task, and a
    /// payment is reachable only from its own party's key (docs/security.md).
    pub const PAYMENTS: &str = "payments";
    /// Command outcomes by command id, on the task of the user the command concerns.
    pub const COMMAND_STATUS: &str = "command-status";
    /// Event ids and idempotency keys seen, per user.
    pub const USER_DEDUPE: &str = "user-dedupe";
    /// Claims and death records by identifier (`NIN:...`, `NHS:...`).
    pub const IDENTITY_CLAIMS: &str = "identity-claims";
    /// Event ids seen, per identifier.
    pub const IDENTIFIER_DEDUPE: &str = "identifier-dedupe";
    /// Outcomes of HMRC death notifications, by command id, on the per-identifier tasks.
    pub const NOTIFICATION_STATUS: &str = "notification-status";
    /// Each user's notifications and read marks (`crate::notifications`).
    pub const NOTIFICATIONS: &str = "notifications";
}

/// Machine-readable reasons of rejected commands (`payments.rejected`, command status,
/// `system.logs.activity`).
pub mod reasons {
    /// The payer's balance does not cover the amount.
    pub const INSUFFICIENT_FUNDS: &str = "insufficient_funds";
    /// Above the per-transaction limit of the user's KYC level.
    pub const LIMIT_EXCEEDED: &str = "limit_exceeded";
    /// The payee has no account.
    pub const PAYEE_UNKNOWN: &str = "payee_unknown";
    /// The command names a user that does not exist.
    pub const USER_UNKNOWN: &str = "user_unknown";
    /// The account is frozen (or its holder deceased).
    pub const ACCOUNT_FROZEN: &str = "account_frozen";
    /// The user's KYC level does not allow the operation.
    pub const KYC_REQUIRED: &str = "kyc_required";
    /// The token was issued before the user's sessions were revoked.
    pub const TOKEN_REVOKED: &str = "token_revoked";
    /// The principal may not act on this account.
    pub const FORBIDDEN: &str = "forbidden";
    /// Not positive, more than two decimal places, or too large.
    pub const INVALID_AMOUNT: &str = "invalid_amount";
    /// A currency accounts may not hold (not in the pipeline's `currencies`).
    pub const UNSUPPORTED_CURRENCY: &str = "unsupported_currency";
    /// A refund in another currency than the transfer it refunds.
    pub const CURRENCY_MISMATCH: &str = "currency_mismatch";
    /// The Idempotency-Key was already used by another command of this user.
    pub const DUPLICATE_COMMAND: &str = "duplicate_command";
    /// Transfer to oneself.
    pub const INVALID_PAYEE: &str = "invalid_payee";
    /// A refund of a payment this user did not receive (or not settled).
    pub const PAYMENT_UNKNOWN: &str = "payment_unknown";
    /// A refund larger than what is left of the payment.
    pub const REFUND_EXCEEDS_PAYMENT: &str = "refund_exceeds_payment";
    /// Registration of an email that already has a user.
    pub const EMAIL_TAKEN: &str = "email_taken";
    /// The command's key is not the user id derived from its email.
    pub const INVALID_USER_ID: &str = "invalid_user_id";
    /// An email address that cannot be one.
    pub const INVALID_EMAIL: &str = "invalid_email";
    /// A password hash that is not an argon2id PHC string.
    pub const INVALID_PASSWORD_HASH: &str = "invalid_password_hash";
    /// A profile with a date of birth in the future or an empty name.
    pub const INVALID_PROFILE: &str = "invalid_profile";
    /// Younger than 18 at the time of the update.
    pub const UNDERAGE: &str = "underage";
    /// A phone number that is neither international (`+` and 8 to 15 digits) nor UK national.
    pub const INVALID_PHONE: &str = "invalid_phone";
    /// The identifier fails its format or check-digit rules.
    pub const INVALID_FORMAT: &str = "invalid_format";
    /// The identifier belongs to another user.
    pub const ALREADY_CLAIMED: &str = "already_claimed";
    /// The NIN's holder is recorded as deceased.
    pub const DECEASED: &str = "deceased";
    /// The name or date of birth on an identity claim differs from the user's profile (or the
    /// claim gives none).
    pub const IDENTITY_MISMATCH: &str = "identity_mismatch";
    /// The user already has a verified identity, or one being verified: one per account.
    pub const IDENTITY_ALREADY_VERIFIED: &str = "identity_already_verified";
    /// No password reset with this token is pending.
    pub const INVALID_RESET_TOKEN: &str = "invalid_reset_token";
    /// The password reset token was used already.
    pub const RESET_TOKEN_USED: &str = "reset_token_used";
    /// The password reset token has expired.
    pub const RESET_TOKEN_EXPIRED: &str = "reset_token_expired";
}

/// Roles a principal can hold.
pub mod roles {
    /// An end user, acting on their own account.
    pub const USER: &str = "user";
    /// Back office: may deposit and act on any account.
    pub const OPERATOR: &str = "operator";
    /// HMRC: may post death notifications.
    pub const HMRC: &str = "hmrc";
}

/// Email in the form user ids are derived from: trimmed and lower-cased.
pub fn normalise_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// A phone number in international form: `+` and 8 to 15 digits, from either that form or a
/// UK national number (`07700 900123`: `0` and 10 digits becomes `+44` and the 10); spaces,
/// dashes, dots and parentheses are dropped.
pub fn normalise_phone(phone: &str) -> Result<String, String> {
    let kept: String = phone.chars().filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')')).collect();
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    match kept.strip_prefix('+') {
        Some(rest) if (8..=15).contains(&rest.len()) && digits(rest) && !rest.starts_with('0') => Ok(kept),
        None if kept.len() == 11 && kept.starts_with('0') && digits(&kept) => Ok(format!("+44{}", &kept[1..])),
        _ => Err(format!("`{phone}` is not a phone number: give it as +44 7700 900123 or 07700 900123")),
    }
}

/// True for something shaped like an address: one `@`, a non-empty local part, a dotted domain.
pub fn is_plausible_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else { return false };
    !local.is_empty()
        && email.len() <= 254
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.chars().any(char::is_whitespace)
}

/// The user id of an email: `u_` and 20 hex digits of the SHA-256 of the normalised email.
/// Deterministic, so the ingest API can key a registration before the user exists and a
/// second registration of the same email lands on the same key (and is refused there).
pub fn user_id_for_email(email: &str) -> String {
    let digest = Sha256::digest(normalise_email(email).as_bytes());
    let hex: String = digest.iter().take(10).map(|b| format!("{b:02x}")).collect();
    format!("u_{hex}")
}

/// The key of a command's status in `command-status` (`<user id>/<command id>`) or
/// `notification-status` (`<NIN:...>/<command id>`).
pub fn status_key(owner: &str, command_id: &str) -> String {
    format!("{owner}/{command_id}")
}

/// A user, in the `users` store.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// The user id.
    pub user_id: String,
    /// Normalised email.
    pub email: String,
    /// Argon2id PHC string (never logged; left out of query answers, hence empty when read
    /// from one).
    #[serde(default)]
    pub password_hash: String,
    /// Full legal name.
    pub full_name: Option<String>,
    /// Date of birth.
    pub date_of_birth: Option<Date>,
    /// Phone number, international form (`+447700900123`), if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    /// Active, frozen or deceased.
    pub status: UserStatus,
    /// What the user may do.
    pub kyc_level: KycLevel,
    /// Tokens issued before this instant (ms) are refused.
    pub tokens_valid_after_ms: i64,
    /// Verified identifiers, e.g. `NIN:QQ123456C` (one at most since claims are limited to one
    /// per account; users verified before may hold more).
    pub identifiers: Vec<String>,
    /// The identity claim being verified (command id), if any: no second claim meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_identity: Option<String>,
    /// The password reset asked for and not used yet (a secret: left out of query answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_reset: Option<PasswordReset>,
    /// The SHA-256 of the last reset token used, so that a second use is told apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_reset_sha256: Option<String>,
    /// When the registration was processed (ms).
    pub registered_at_ms: i64,
}

/// A pending password reset, in the user's record.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct PasswordReset {
    /// Hex SHA-256 of the token.
    pub token_sha256: String,
    /// The token is refused after this instant (ms).
    pub expires_at_ms: i64,
}

/// Debug without the password hash: secrets never reach logs.
impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("user_id", &self.user_id)
            .field("email", &self.email)
            .field("password_hash", &"<redacted>")
            .field("status", &self.status)
            .field("kyc_level", &self.kyc_level)
            .finish_non_exhaustive()
    }
}

/// Whether an account can move money.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    /// Open.
    Open,
    /// Frozen: no debits; credits are reversed.
    Frozen,
}

/// An account, in the `accounts` store: a balance per currency, none ever negative.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    /// The holder.
    pub user_id: String,
    /// ISO 4217 code of the account's home currency (the pipeline's default when it opened).
    pub currency: String,
    /// Balance in the home currency.
    pub balance: Decimal,
    /// Balances in the other currencies the account has held.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub other_balances: std::collections::BTreeMap<String, Decimal>,
    /// Open or frozen.
    pub status: AccountStatus,
    /// Why it was frozen.
    pub frozen_reason: Option<String>,
    /// When it was opened (ms).
    pub opened_at_ms: i64,
    /// Ledger entries written so far (the next entry's sequence number).
    pub ledger_entries: u64,
}

impl Account {
    /// The balance in `currency` (0.00 in one never held).
    pub fn balance_in(&self, currency: &str) -> Decimal {
        if currency == self.currency {
            self.balance
        } else {
            self.other_balances.get(currency).copied().unwrap_or(Decimal::new(0, 2))
        }
    }

    /// Sets the balance in `currency`.
    pub fn set_balance(&mut self, currency: &str, balance: Decimal) {
        if currency == self.currency {
            self.balance = balance;
        } else {
            self.other_balances.insert(currency.to_string(), balance);
        }
    }

    /// Every balance, the home currency first.
    pub fn balances(&self) -> Vec<(String, Decimal)> {
        std::iter::once((self.currency.clone(), self.balance)).chain(self.other_balances.iter().map(|(c, b)| (c.clone(), *b))).collect()
    }
}

/// Debit or credit, as seen by the account holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Money out.
    Debit,
    /// Money in.
    Credit,
}

/// One line of a user's transaction history, in the `ledger` store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Position in the user's history, from 0.
    pub sequence: u64,
    /// The payment command.
    pub command_id: String,
    /// Transfer, deposit, withdrawal or refund.
    pub kind: PaymentKind,
    /// Debit or credit.
    pub direction: Direction,
    /// Amount (positive).
    pub amount: Decimal,
    /// ISO 4217 code (none: the account's home currency; entries from before currencies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Balance in this currency after this entry.
    pub balance_after: Decimal,
    /// The other party, for transfers and refunds.
    pub counterparty: Option<String>,
    /// Free text from the command.
    pub reference: Option<String>,
    /// Why, for reversals: the money came back.
    pub reversal_reason: Option<String>,
    /// Timestamp of the record that wrote it (ms).
    pub timestamp_ms: i64,
}

/// Key of ledger entry `sequence` of `user_id`: later entries sort first.
pub fn ledger_key(user_id: &str, sequence: u64) -> String {
    format!("{user_id}/{:016x}", u64::MAX - sequence)
}

/// Prefix of every ledger key of `user_id`.
pub fn ledger_prefix(user_id: &str) -> String {
    format!("{user_id}/")
}

/// Where an outgoing payment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentState {
    /// Debited, credit leg on its way.
    InFlight,
    /// The payee was credited.
    Settled,
    /// The money came back.
    Reversed,
}

/// An outgoing transfer or refund (`out/<payer>/<command_id>`, payer's task).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutgoingPayment {
    /// Transfer or refund.
    pub kind: PaymentKind,
    /// Who receives it.
    pub payee_user_id: String,
    /// Amount.
    pub amount: Decimal,
    /// In flight, settled, reversed.
    pub state: PaymentState,
    /// For refunds: the transfer being refunded.
    pub refund_of: Option<String>,
}

/// A received transfer (`in/<payee>/<command_id>`, payee's task): what can still be refunded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncomingPayment {
    /// Who sent it.
    pub payer_user_id: String,
    /// Amount received.
    pub amount: Decimal,
    /// Refunded so far (including refunds in flight).
    pub refunded: Decimal,
    /// ISO 4217 code (none: the pipeline's default; payments from before currencies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

/// Key of `payer`'s outgoing payment `command_id`.
pub fn outgoing_key(payer: &str, command_id: &str) -> String {
    format!("out/{payer}/{command_id}")
}

/// Key of `payee`'s incoming payment `command_id`.
pub fn incoming_key(payee: &str, command_id: &str) -> String {
    format!("in/{payee}/{command_id}")
}

/// The status of a command as clients see it (`GET /v1/commands/{id}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandState {
    /// Accepted, not final yet (e.g. a transfer whose credit leg is on its way).
    Pending,
    /// Done.
    Settled,
    /// Refused; see the reason.
    Rejected,
}

/// A command's outcome, in the `command-status` store, keyed by command id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandStatus {
    /// The command id.
    pub command_id: String,
    /// E.g. `Transfer`, `RegisterUser`.
    pub command_type: String,
    /// The user the command concerns (its key).
    pub user_id: String,
    /// Pending, settled or rejected.
    pub status: CommandState,
    /// Machine-readable reason when rejected.
    pub reason: Option<String>,
    /// Human-readable detail.
    pub detail: Option<String>,
    /// Timestamp of the record that set this status (ms).
    pub updated_at_ms: i64,
}

/// An identifier's record, in the `identity-claims` store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdentifierRecord {
    /// NIN or NHS.
    pub identifier_type: IdentifierType,
    /// The normalised identifier.
    pub identifier: String,
    /// The user it was verified for, if any.
    pub claimed_by: Option<String>,
    /// Date of death, when HMRC reported one.
    pub date_of_death: Option<Date>,
    /// HMRC's reference for the notification.
    pub death_reference: Option<String>,
}

/// Key of an identifier in the per-identifier sub-topology: `NIN:QQ123456C`, `NHS:9434765919`.
pub fn identifier_key(kind: IdentifierType, identifier: &str) -> String {
    let prefix = match kind {
        IdentifierType::Nin => "NIN",
        IdentifierType::Nhs => "NHS",
    };
    format!("{prefix}:{identifier}")
}

/// Reads a JSON value from a store.
pub fn load<T: DeserializeOwned>(store: &dyn KeyValueStore, key: &str) -> Result<Option<T>, ProcessError> {
    match store.get(key.as_bytes())? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ProcessError::Fatal(format!("store `{}` holds a corrupt value at `{key}`: {e}", store.name()))),
    }
}

/// Writes a JSON value to a store.
pub fn save<T: Serialize>(store: &mut dyn KeyValueStore, key: &str, value: &T) -> Result<(), ProcessError> {
    let bytes = serde_json::to_vec(value).map_err(|e| ProcessError::Fatal(format!("cannot serialise `{key}`: {e}")))?;
    store.put(key.as_bytes(), &bytes)?;
    Ok(())
}

/// The amount rules of every payment: positive, at most the currency's `minor_units` decimal
/// places (two at most), at most 16 integer digits (decimal(18,2)). `Err` carries the detail.
pub fn check_amount(amount: Decimal, minor_units: u32) -> Result<(), String> {
    if amount <= Decimal::ZERO {
        return Err(format!("amount must be positive, got {amount}"));
    }
    if amount.normalize().scale() > minor_units {
        return Err(match minor_units {
            0 => format!("amount {amount} has decimal places; this currency has no minor unit"),
            1 => format!("amount {amount} has more than one decimal place"),
            2 => format!("amount {amount} has more than two decimal places"),
            n => format!("amount {amount} has more than {n} decimal places"),
        });
    }
    if sluice_schemas::avro::money_mantissa(amount).is_err() {
        return Err(format!("amount {amount} exceeds 16 integer digits"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_are_kept_in_international_form() {
        assert_eq!(normalise_phone("+44 7700 900123").unwrap(), "+447700900123");
        assert_eq!(normalise_phone("07700-900-123").unwrap(), "+447700900123");
        assert_eq!(normalise_phone("+1 (415) 555.0100").unwrap(), "+14155550100");
        for bad in ["7700900123", "+44", "+0123456789", "0770090012", "+44 7700 9001 2a", "", "+1234567890123456"] {
            assert!(normalise_phone(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn user_ids_come_from_the_normalised_email() {
        let id = user_id_for_email("  Alice@Example.COM ");
        assert_eq!(id, user_id_for_email("alice@example.com"));
        assert_ne!(id, user_id_for_email("bob@example.com"));
        assert!(id.starts_with("u_") && id.len() == 22, "{id}");
    }

    #[test]
    fn ledger_keys_sort_newest_first() {
        let mut keys = vec![ledger_key("u", 0), ledger_key("u", 10), ledger_key("u", 2)];
        keys.sort();
        assert_eq!(keys, vec![ledger_key("u", 10), ledger_key("u", 2), ledger_key("u", 0)]);
        assert!(keys.iter().all(|k| k.starts_with(&ledger_prefix("u"))));
    }

    #[test]
    fn amounts() {
        assert!(check_amount(Decimal::new(1050, 2), 2).is_ok());
        assert!(check_amount(Decimal::new(10500, 3), 2).is_ok(), "10.500 is 10.50");
        assert!(check_amount(Decimal::ZERO, 2).is_err());
        assert!(check_amount(Decimal::new(-1, 0), 2).is_err());
        assert!(check_amount(Decimal::new(1001, 3), 2).unwrap_err().contains("two decimal places"));
        assert!(check_amount(Decimal::new(i64::MAX, 0), 2).unwrap_err().contains("16 integer digits"));
        assert!(check_amount(Decimal::new(500, 0), 0).is_ok());
        assert!(check_amount(Decimal::new(50000, 2), 0).is_ok(), "500.00 is 500");
        assert!(check_amount(Decimal::new(5001, 1), 0).unwrap_err().contains("no minor unit"));
    }

    #[test]
    fn emails() {
        assert!(is_plausible_email("a@b.co"));
        for bad in ["", "a", "@b.co", "a@b", "a@.b", "a b@c.d", "a@b@c.d"] {
            assert!(!is_plausible_email(bad), "{bad}");
        }
    }
}
