//! The records carried by Sluice's topics. Each top-level record names its `.avsc` file; the
//! test `derived_schemas_equal_files` proves the two agree field for field.

use rust_decimal::Decimal;

use crate::avro::{Blob, Date, TimestampMillis};
use crate::{avro_enum, avro_record, avro_union};

avro_record! {
    /// Who issued a command, as established by the ingest API from a verified JWT.
    pub struct Principal as "io.sluice.common.Principal" {
        /// The token subject: a user id, or the name of a service account.
        pub subject: String,
        /// Roles granted by the token: user, operator, hmrc.
        pub roles: Vec<String>,
        /// When the token was issued; tokens issued before a user's sessions were revoked are refused.
        pub token_issued_at: TimestampMillis,
    }
}

avro_enum! {
    /// The kind of a UK identifier.
    pub enum IdentifierType as "io.sluice.identity.IdentifierType" {
        /// National Insurance number.
        Nin = "NIN",
        /// NHS number.
        Nhs = "NHS",
    }
}

avro_enum! {
    /// The kind of money movement.
    pub enum PaymentKind as "io.sluice.payments.PaymentKind" {
        /// From one user to another.
        Transfer = "TRANSFER",
        /// Money entering the system.
        Deposit = "DEPOSIT",
        /// Money leaving the system.
        Withdrawal = "WITHDRAWAL",
        /// A settled transfer sent back by its payee.
        Refund = "REFUND",
    }
}

avro_enum! {
    /// Lifecycle state of a user and their account.
    pub enum UserStatus as "io.sluice.auth.UserStatus" {
        /// May use the service.
        Active = "ACTIVE",
        /// No money moves in or out.
        Frozen = "FROZEN",
        /// HMRC reported the user's death; the account is frozen for good.
        Deceased = "DECEASED",
    }
}

avro_enum! {
    /// Know-your-customer level, which bounds what a user may do.
    pub enum KycLevel as "io.sluice.auth.KycLevel" {
        /// Registered only: no money movement.
        Browsing = "BROWSING",
        /// Profile complete: transfers up to the configured limit.
        Basic = "BASIC",
        /// Identity verified: everything.
        Full = "FULL",
    }
}

// ---------------------------------------------------------------- auth.commands

avro_record! {
    /// An identity to verify as soon as the user exists (one-call registration).
    pub struct IdentityAtSignUp as "io.sluice.auth.IdentityAtSignUp" {
        /// NIN or NHS.
        pub identifier_type: IdentifierType,
        /// The identifier as entered; spaces are allowed and normalised away.
        pub value: String,
    }
}

avro_record! {
    /// Opens a user; the user id is derived from the normalised email.
    pub struct RegisterUser as "io.sluice.auth.RegisterUser" {
        /// Email address as given.
        pub email: String,
        /// Argon2id PHC string; plaintext passwords never leave the ingest API.
        pub password_hash: String,
        /// Full name, if given at sign-up.
        pub full_name: Option<String>,
        /// Date of birth, if given at sign-up; with a name, KYC level BASIC at once (18 or over).
        pub date_of_birth: Option<Date>,
        /// Phone number, international (`+447700900123`), if given.
        pub phone_number: Option<String>,
        /// An identity (NIN or NHS number) to verify once the user exists; needs the name and date of birth.
        pub identity: Option<IdentityAtSignUp>,
    }
}

avro_record! {
    /// Replaces the password hash and revokes every earlier session.
    pub struct ChangePassword as "io.sluice.auth.ChangePassword" {
        /// Argon2id PHC string of the new password.
        pub password_hash: String,
    }
}

avro_record! {
    /// Logout: every token issued before this command is refused afterwards.
    pub struct RevokeSessions as "io.sluice.auth.RevokeSessions" {
        /// Why, for the audit trail.
        pub reason: Option<String>,
    }
}

avro_record! {
    /// Updates the profile; a name and date of birth move a user from BROWSING to BASIC.
    pub struct UpdateProfile as "io.sluice.auth.UpdateProfile" {
        /// Full legal name.
        pub full_name: Option<String>,
        /// Date of birth.
        pub date_of_birth: Option<Date>,
    }
}

avro_record! {
    /// Marks notifications read: every one up to a sequence number, and/or some by id.
    pub struct MarkNotificationsRead as "io.sluice.auth.MarkNotificationsRead" {
        /// Every notification with this sequence number or a lower one is read.
        pub up_to_sequence: Option<i64>,
        /// These notifications (by sequence number) are read.
        pub sequences: Vec<i64>,
    }
}

avro_record! {
    /// A password reset was asked for: the SHA-256 of a single-use token the ingest API delivered to the account holder, and until when it holds.
    pub struct RequestPasswordReset as "io.sluice.auth.RequestPasswordReset" {
        /// Hex SHA-256 of the reset token; the token itself never reaches Kafka.
        pub token_sha256: String,
        /// The token is refused after this instant.
        pub expires_at: TimestampMillis,
    }
}

avro_record! {
    /// A new password with the reset token that allows it; revokes every session.
    pub struct ConfirmPasswordReset as "io.sluice.auth.ConfirmPasswordReset" {
        /// Hex SHA-256 of the reset token presented.
        pub token_sha256: String,
        /// Argon2id PHC string of the new password.
        pub password_hash: String,
    }
}

avro_union! {
    /// The commands of `auth.commands`.
    pub enum AuthPayload {
        /// Sign-up.
        RegisterUser(RegisterUser),
        /// Password change.
        ChangePassword(ChangePassword),
        /// Logout everywhere.
        RevokeSessions(RevokeSessions),
        /// Profile update.
        UpdateProfile(UpdateProfile),
        /// Notifications read.
        MarkNotificationsRead(MarkNotificationsRead),
        /// Password reset asked for.
        RequestPasswordReset(RequestPasswordReset),
        /// Password reset with its token.
        ConfirmPasswordReset(ConfirmPasswordReset),
    }
}

avro_record! {
    /// Envelope of `auth.commands`, keyed by user id.
    pub struct AuthCommand as "io.sluice.auth.AuthCommand" {
        /// The command id; stable across retries, used for deduplication.
        pub event_id: String,
        /// When the ingest API accepted the command.
        pub occurred_at: TimestampMillis,
        /// Who issued it.
        pub principal: Principal,
        /// The client's Idempotency-Key, if any.
        pub idempotency_key: Option<String>,
        /// The command.
        pub payload: AuthPayload,
    }
}

// ---------------------------------------------------------------- payments.commands

avro_record! {
    /// Moves money from the key's user (payer) to another user.
    pub struct Transfer as "io.sluice.payments.Transfer" {
        /// Receiving user id.
        pub payee_user_id: String,
        /// Positive amount, at most two decimal places.
        pub amount: Decimal,
        /// ISO 4217 currency code.
        pub currency: String,
        /// Free text shown to both parties.
        pub reference: Option<String>,
    }
}

avro_record! {
    /// Credits the key's user with money from outside (operator only).
    pub struct Deposit as "io.sluice.payments.Deposit" {
        /// Positive amount, at most two decimal places.
        pub amount: Decimal,
        /// ISO 4217 currency code.
        pub currency: String,
        /// Free text.
        pub reference: Option<String>,
    }
}

avro_record! {
    /// Debits the key's user to an outside account.
    pub struct Withdrawal as "io.sluice.payments.Withdrawal" {
        /// Positive amount, at most two decimal places.
        pub amount: Decimal,
        /// ISO 4217 currency code.
        pub currency: String,
        /// Free text.
        pub reference: Option<String>,
    }
}

avro_record! {
    /// Sends a settled transfer back to its payer; issued by the transfer's payee.
    pub struct Refund as "io.sluice.payments.Refund" {
        /// Command id of the settled transfer.
        pub payment_id: String,
        /// Amount to refund, at most the transfer's amount.
        pub amount: Decimal,
        /// ISO 4217 currency code.
        pub currency: String,
        /// Why.
        pub reason: Option<String>,
    }
}

avro_union! {
    /// The commands of `payments.commands`.
    pub enum PaymentPayload {
        /// User to user.
        Transfer(Transfer),
        /// Money in.
        Deposit(Deposit),
        /// Money out.
        Withdrawal(Withdrawal),
        /// A transfer sent back.
        Refund(Refund),
    }
}

avro_record! {
    /// Envelope of `payments.commands`, keyed by the payer's user id.
    pub struct PaymentCommand as "io.sluice.payments.PaymentCommand" {
        /// The command id; stable across retries, used for deduplication.
        pub event_id: String,
        /// When the ingest API accepted the command.
        pub occurred_at: TimestampMillis,
        /// Who issued it.
        pub principal: Principal,
        /// The client's Idempotency-Key, if any.
        pub idempotency_key: Option<String>,
        /// The command.
        pub payload: PaymentPayload,
    }
}

// ---------------------------------------------------------------- identity.verification.request

avro_record! {
    /// Claims a UK identifier for the key's user.
    pub struct VerifyIdentity as "io.sluice.identity.VerifyIdentity" {
        /// NIN or NHS.
        pub identifier_type: IdentifierType,
        /// The identifier as entered; spaces are allowed and normalised away.
        pub value: String,
        /// The holder's full name as on the document; must match the user's profile.
        pub full_name: Option<String>,
        /// The holder's date of birth; must match the user's profile.
        pub date_of_birth: Option<Date>,
    }
}

avro_union! {
    /// The commands of `identity.verification.request`.
    pub enum IdentityPayload {
        /// Identity claim.
        VerifyIdentity(VerifyIdentity),
    }
}

avro_record! {
    /// Envelope of `identity.verification.request`, keyed by user id.
    pub struct IdentityCommand as "io.sluice.identity.IdentityCommand" {
        /// The command id; stable across retries, used for deduplication.
        pub event_id: String,
        /// When the ingest API accepted the command.
        pub occurred_at: TimestampMillis,
        /// Who issued it.
        pub principal: Principal,
        /// The client's Idempotency-Key, if any.
        pub idempotency_key: Option<String>,
        /// The command.
        pub payload: IdentityPayload,
    }
}

// ---------------------------------------------------------------- hmrc.death.notification

avro_record! {
    /// HMRC reports the death of the holder of a National Insurance number or an NHS number.
    pub struct DeathNotification as "io.sluice.hmrc.DeathNotification" {
        /// National Insurance number (normalised: no spaces, upper case); empty when `nhs_number` names the holder.
        pub nin: String,
        /// NHS number (ten digits, normalised: no spaces), instead of a NIN.
        pub nhs_number: Option<String>,
        /// Date of death.
        pub date_of_death: Date,
        /// HMRC's reference for the notification.
        pub reference: String,
    }
}

avro_union! {
    /// The commands of `hmrc.death.notification`.
    pub enum HmrcPayload {
        /// Death notification.
        DeathNotification(DeathNotification),
    }
}

avro_record! {
    /// Envelope of `hmrc.death.notification`, keyed by the identifier (`NIN:...` or `NHS:...`).
    pub struct HmrcCommand as "io.sluice.hmrc.HmrcCommand" {
        /// The command id; stable across retries, used for deduplication.
        pub event_id: String,
        /// When the ingest API accepted the command.
        pub occurred_at: TimestampMillis,
        /// Who issued it (a service account with the hmrc role).
        pub principal: Principal,
        /// The client's Idempotency-Key, if any.
        pub idempotency_key: Option<String>,
        /// The command.
        pub payload: HmrcPayload,
    }
}

// ---------------------------------------------------------------- auth.events

avro_record! {
    /// A user was registered.
    pub struct UserRegistered as "io.sluice.auth.UserRegistered" {
        /// Normalised email address.
        pub email: String,
        /// Full name, if given.
        pub full_name: Option<String>,
        /// KYC level at registration.
        pub kyc_level: KycLevel,
    }
}

avro_record! {
    /// The password changed; earlier tokens are no longer valid.
    pub struct PasswordChanged as "io.sluice.auth.PasswordChanged" {
        /// Tokens issued before this instant are refused.
        pub tokens_valid_after: TimestampMillis,
    }
}

avro_record! {
    /// The user logged out everywhere.
    pub struct SessionsRevoked as "io.sluice.auth.SessionsRevoked" {
        /// Tokens issued before this instant are refused.
        pub tokens_valid_after: TimestampMillis,
    }
}

avro_record! {
    /// The user's status changed (e.g. frozen after a death notification).
    pub struct UserStatusChanged as "io.sluice.auth.UserStatusChanged" {
        /// New status.
        pub status: UserStatus,
        /// Machine-readable reason.
        pub reason: String,
    }
}

avro_record! {
    /// The user's KYC level changed.
    pub struct KycLevelChanged as "io.sluice.auth.KycLevelChanged" {
        /// New level.
        pub kyc_level: KycLevel,
    }
}

avro_record! {
    /// The user's profile changed.
    pub struct ProfileUpdated as "io.sluice.auth.ProfileUpdated" {
        /// Full legal name.
        pub full_name: Option<String>,
        /// Date of birth.
        pub date_of_birth: Option<Date>,
    }
}

avro_union! {
    /// The events of `auth.events`.
    pub enum AuthEventPayload {
        /// Registered.
        UserRegistered(UserRegistered),
        /// Password changed.
        PasswordChanged(PasswordChanged),
        /// Logged out.
        SessionsRevoked(SessionsRevoked),
        /// Status changed.
        UserStatusChanged(UserStatusChanged),
        /// KYC level changed.
        KycLevelChanged(KycLevelChanged),
        /// Profile changed.
        ProfileUpdated(ProfileUpdated),
    }
}

avro_record! {
    /// Envelope of `auth.events`, keyed by user id.
    pub struct AuthEvent as "io.sluice.auth.AuthEvent" {
        /// Deterministic id derived from the causing command and the step.
        pub event_id: String,
        /// Timestamp of the causing record.
        pub occurred_at: TimestampMillis,
        /// The user.
        pub user_id: String,
        /// Id of the command that caused this event.
        pub causation_id: String,
        /// The event.
        pub payload: AuthEventPayload,
    }
}

// ---------------------------------------------------------------- payments.settled / rejected

avro_record! {
    /// A payment command completed; on `payments.settled`, keyed by the payer's user id.
    pub struct PaymentSettled as "io.sluice.payments.PaymentSettled" {
        /// Deterministic id derived from the command id.
        pub event_id: String,
        /// Timestamp of the settling record.
        pub occurred_at: TimestampMillis,
        /// The command that settled.
        pub command_id: String,
        /// What kind of payment.
        pub kind: PaymentKind,
        /// User debited (for deposits: the user credited).
        pub payer_user_id: String,
        /// User credited, for transfers and refunds.
        pub payee_user_id: Option<String>,
        /// Amount moved.
        pub amount: Decimal,
        /// ISO 4217 currency code.
        pub currency: String,
        /// Free text from the command.
        pub reference: Option<String>,
    }
}

avro_record! {
    /// A payment command was refused; on `payments.rejected`, keyed by the payer's user id.
    pub struct PaymentRejected as "io.sluice.payments.PaymentRejected" {
        /// Deterministic id derived from the command id.
        pub event_id: String,
        /// Timestamp of the rejecting record.
        pub occurred_at: TimestampMillis,
        /// The command that was refused.
        pub command_id: String,
        /// What kind of payment.
        pub kind: PaymentKind,
        /// User who would have been debited.
        pub payer_user_id: String,
        /// Amount requested.
        pub amount: Decimal,
        /// ISO 4217 currency code.
        pub currency: String,
        /// Machine-readable reason: insufficient_funds, limit_exceeded, payee_unknown, account_frozen, kyc_required, token_revoked, invalid_amount, duplicate_command, ...
        pub reason: String,
        /// Human-readable explanation.
        pub detail: String,
    }
}

// ---------------------------------------------------------------- payments.events

avro_enum! {
    /// A transition in the life of a payment.
    pub enum PaymentEventType as "io.sluice.payments.PaymentEventType" {
        /// Accepted by the pipeline: a transfer or refund debited and on its way, or a deposit or withdrawal about to complete.
        Created = "CREATED",
        /// Done: the payee was credited (deposits: the account was credited; withdrawals: debited).
        Completed = "COMPLETED",
        /// Refused, or returned to the payer; see the reason.
        Failed = "FAILED",
        /// A completed transfer was refunded by its payee, in part or in full (see refunded_amount).
        Refunded = "REFUNDED",
    }
}

avro_record! {
    /// One transition of a payment, on `payments.events`, keyed by the payer's user id: one
    /// record per transition, in the order they happened for that payment.
    pub struct PaymentEvent as "io.sluice.payments.PaymentEvent" {
        /// Deterministic id: the payment id and the transition.
        pub event_id: String,
        /// Timestamp of the record that caused the transition.
        pub occurred_at: TimestampMillis,
        /// The payment: the id of the command that created it.
        pub payment_id: String,
        /// Which transition.
        pub event_type: PaymentEventType,
        /// What kind of payment.
        pub kind: PaymentKind,
        /// User debited (for deposits: the user credited).
        pub payer_user_id: String,
        /// User credited, for transfers and refunds.
        pub payee_user_id: Option<String>,
        /// Amount of the payment.
        pub amount: Decimal,
        /// ISO 4217 currency code.
        pub currency: String,
        /// The payment's status after the transition: pending, completed, failed, partially_refunded or refunded.
        pub status: String,
        /// Machine-readable reason of a failure.
        pub reason: Option<String>,
        /// Refunded so far, on refunded events.
        pub refunded_amount: Option<Decimal>,
        /// For refunds: the transfer they refund.
        pub refund_of: Option<String>,
    }
}

// ---------------------------------------------------------------- identity.verification.result

avro_enum! {
    /// Outcome of an identity verification.
    pub enum VerificationOutcome as "io.sluice.identity.VerificationOutcome" {
        /// The identifier is now the user's.
        Verified = "VERIFIED",
        /// Refused; see the reason.
        Rejected = "REJECTED",
    }
}

avro_record! {
    /// Result of a VerifyIdentity command, keyed by user id.
    pub struct IdentityVerificationResult as "io.sluice.identity.IdentityVerificationResult" {
        /// Deterministic id derived from the command id.
        pub event_id: String,
        /// Timestamp of the deciding record.
        pub occurred_at: TimestampMillis,
        /// The VerifyIdentity command.
        pub command_id: String,
        /// The user who claimed the identifier.
        pub user_id: String,
        /// NIN or NHS.
        pub identifier_type: IdentifierType,
        /// The normalised identifier.
        pub identifier: String,
        /// Verified or rejected.
        pub outcome: VerificationOutcome,
        /// Machine-readable reason when rejected: invalid_format, already_claimed, deceased.
        pub reason: Option<String>,
    }
}

// ---------------------------------------------------------------- accounts.events

avro_record! {
    /// An account was opened on first use.
    pub struct AccountOpened as "io.sluice.accounts.AccountOpened" {
        /// ISO 4217 currency code.
        pub currency: String,
        /// Opening balance.
        pub opening_balance: Decimal,
    }
}

avro_record! {
    /// An account was frozen; no money moves in or out.
    pub struct AccountFrozen as "io.sluice.accounts.AccountFrozen" {
        /// Machine-readable reason, e.g. deceased.
        pub reason: String,
        /// Date of death, when frozen after a death notification.
        pub date_of_death: Option<Date>,
    }
}

avro_union! {
    /// The events of `accounts.events`.
    pub enum AccountEventPayload {
        /// Opened.
        AccountOpened(AccountOpened),
        /// Frozen.
        AccountFrozen(AccountFrozen),
    }
}

avro_record! {
    /// Envelope of `accounts.events`, keyed by user id.
    pub struct AccountEvent as "io.sluice.accounts.AccountEvent" {
        /// Deterministic id derived from the causing record and the step.
        pub event_id: String,
        /// Timestamp of the causing record.
        pub occurred_at: TimestampMillis,
        /// The account holder.
        pub user_id: String,
        /// Id of the command or event that caused this.
        pub causation_id: String,
        /// The event.
        pub payload: AccountEventPayload,
    }
}

// ---------------------------------------------------------------- notifications, logs, DLQ

avro_record! {
    /// A user-facing notice (payment received, identity verified, account frozen, ...).
    pub struct Notification as "io.sluice.notifications.Notification" {
        /// Deterministic id derived from the causing record.
        pub event_id: String,
        /// Timestamp of the causing record.
        pub occurred_at: TimestampMillis,
        /// The user to notify.
        pub user_id: String,
        /// Id of the command or event that caused this.
        pub causation_id: String,
        /// Machine-readable kind, e.g. payment_received.
        pub kind: String,
        /// Text shown to the user.
        pub message: String,
        /// Position in the user's notifications, from 1 (what `GET /v1/notifications` and the stream's event ids show).
        pub sequence: Option<i64>,
    }
}

avro_record! {
    /// Audit record of one command outcome, on `system.logs.activity`.
    pub struct ActivityLog as "io.sluice.logs.ActivityLog" {
        /// Deterministic id derived from the command id.
        pub event_id: String,
        /// Timestamp of the deciding record.
        pub occurred_at: TimestampMillis,
        /// The user the command concerned.
        pub user_id: String,
        /// Who issued the command.
        pub principal_subject: String,
        /// The command.
        pub command_id: String,
        /// Command type, e.g. Transfer.
        pub command_type: String,
        /// accepted, settled or rejected.
        pub outcome: String,
        /// Machine-readable reason when rejected.
        pub reason: Option<String>,
    }
}

avro_record! {
    /// One HTTP request to the ingest API, on `system.logs.access`.
    pub struct AccessLog as "io.sluice.logs.AccessLog" {
        /// The request id (x-request-id).
        pub event_id: String,
        /// When the request arrived.
        pub occurred_at: TimestampMillis,
        /// HTTP method.
        pub method: String,
        /// Matched route, e.g. /v1/transfers.
        pub path: String,
        /// Response status.
        pub status: i32,
        /// Time to respond, in microseconds.
        pub duration_us: i64,
        /// Token subject, when authenticated.
        pub principal_subject: Option<String>,
        /// Client address.
        pub remote_addr: Option<String>,
        /// Client User-Agent.
        pub user_agent: Option<String>,
    }
}

avro_record! {
    /// A record that could not be processed, on `sluice.dlq` (also described by sluice.error.* headers).
    pub struct DeadLetter as "io.sluice.dlq.DeadLetter" {
        /// Deterministic id: source topic, partition and offset.
        pub event_id: String,
        /// When it was dead-lettered (timestamp of the source record).
        pub occurred_at: TimestampMillis,
        /// Topic the record came from.
        pub source_topic: String,
        /// Partition the record came from.
        pub source_partition: i32,
        /// Offset of the record.
        pub source_offset: i64,
        /// Machine-readable error class, e.g. deserialization.
        pub error_class: String,
        /// Human-readable error.
        pub error_message: String,
        /// Original key bytes.
        pub key: Option<Blob>,
        /// Original value bytes.
        pub value: Option<Blob>,
    }
}

avro_enum! {
    /// What an operator decided for a dead letter.
    pub enum DeadLetterOutcome as "io.sluice.dlq.DeadLetterOutcome" {
        /// Its original record was written again to the topic it came from.
        Replayed = "REPLAYED",
        /// Left where it is, handled.
        Discarded = "DISCARDED",
    }
}

avro_record! {
    /// An operator's decision on one dead letter, on `sluice.dlq.actions` (compacted, keyed by the dead letter's id, `<partition>-<offset>` on `sluice.dlq`).
    pub struct DeadLetterAction as "io.sluice.dlq.DeadLetterAction" {
        /// Unique id of the decision.
        pub event_id: String,
        /// When the operator decided.
        pub occurred_at: TimestampMillis,
        /// The dead letter: `<partition>-<offset>` on sluice.dlq.
        pub dead_letter_id: String,
        /// Replayed or discarded.
        pub outcome: DeadLetterOutcome,
        /// The operator (token subject).
        pub operator: String,
        /// Why, in the operator's words.
        pub note: String,
        /// The topic the dead letter came from (and a replay went to).
        pub source_topic: String,
        /// Partition the replayed record went to.
        pub replayed_partition: Option<i32>,
        /// Offset of the replayed record.
        pub replayed_offset: Option<i64>,
    }
}

// ---------------------------------------------------------------- internal repartition topics

avro_enum! {
    /// Which leg of a two-leg payment a PaymentLeg carries.
    pub enum LegType as "io.sluice.internal.LegType" {
        /// Credit the payee (on the payee's partition).
        Credit = "CREDIT",
        /// Give the money back to the payer (on the payer's partition).
        Reversal = "REVERSAL",
        /// Tell the payer's partition that the credit landed.
        Confirmation = "CONFIRMATION",
    }
}

avro_record! {
    /// One leg of a transfer or refund, on the credit and reversal repartition topics.
    pub struct PaymentLeg as "io.sluice.internal.PaymentLeg" {
        /// Deterministic id: the command id and the leg.
        pub event_id: String,
        /// Timestamp of the command.
        pub occurred_at: TimestampMillis,
        /// The payment command.
        pub command_id: String,
        /// Transfer or refund.
        pub kind: PaymentKind,
        /// Which leg.
        pub leg: LegType,
        /// User debited by the first leg.
        pub payer_user_id: String,
        /// User credited by the credit leg.
        pub payee_user_id: String,
        /// Amount.
        pub amount: Decimal,
        /// ISO 4217 currency code.
        pub currency: String,
        /// Free text from the command.
        pub reference: Option<String>,
        /// Why a reversal happened.
        pub reason: Option<String>,
        /// For refunds: the transfer being refunded (its command id).
        pub refund_of: Option<String>,
    }
}

avro_record! {
    /// A claim of an identifier by a user, keyed by the identifier (NIN:... or NHS:...).
    pub struct IdentityClaim as "io.sluice.internal.IdentityClaim" {
        /// Deterministic id derived from the command id.
        pub event_id: String,
        /// Timestamp of the command.
        pub occurred_at: TimestampMillis,
        /// The VerifyIdentity command.
        pub command_id: String,
        /// The claiming user.
        pub user_id: String,
        /// NIN or NHS.
        pub identifier_type: IdentifierType,
        /// The normalised identifier.
        pub identifier: String,
    }
}

avro_record! {
    /// The holder of a claimed identifier died; keyed by user id, freezes the user and account.
    pub struct DeceasedNotice as "io.sluice.internal.DeceasedNotice" {
        /// Deterministic id derived from the notification id.
        pub event_id: String,
        /// Timestamp of the notification.
        pub occurred_at: TimestampMillis,
        /// The user who held the identifier.
        pub user_id: String,
        /// The identifier: a NIN, or an NHS number.
        pub nin: String,
        /// Date of death.
        pub date_of_death: Date,
        /// HMRC's reference.
        pub reference: String,
    }
}

macro_rules! top_level {
    ($($ty:ident => $file:literal, $full:literal;)+) => {
        $(impl crate::avro::AvroRecord for $ty {
            const FULL_NAME: &'static str = $full;
            const SCHEMA_FILE: &'static str = $file;
        })+
        /// Derived schema JSON of every top-level record, by file stem (used by tests and tools).
        pub fn derived_schemas() -> Vec<(&'static str, serde_json::Value)> {
            vec![$(($file, <$ty as crate::avro::AvroType>::schema_json(&mut Default::default())),)+]
        }

        /// Any top-level record: what flows through a topology whose topics carry Avro.
        #[derive(Debug, Clone, PartialEq)]
        pub enum AnyRecord {
            $(
                #[doc = concat!("A `", $full, "`.")]
                $ty($ty),
            )+
        }

        impl AnyRecord {
            /// Stem of the schema file of this record's type.
            pub fn schema_file(&self) -> &'static str {
                match self { $(AnyRecord::$ty(_) => $file,)+ }
            }

            /// Full Avro name of this record's type.
            pub fn full_name(&self) -> &'static str {
                match self { $(AnyRecord::$ty(_) => $full,)+ }
            }
        }

        $(
            impl From<$ty> for AnyRecord {
                fn from(record: $ty) -> AnyRecord {
                    AnyRecord::$ty(record)
                }
            }

            impl crate::avro::FromAny for $ty {
                fn from_any(record: AnyRecord) -> Result<$ty, Box<AnyRecord>> {
                    match record {
                        AnyRecord::$ty(inner) => Ok(inner),
                        other => Err(Box::new(other)),
                    }
                }

                fn ref_from_any(record: &AnyRecord) -> Option<&$ty> {
                    match record {
                        AnyRecord::$ty(inner) => Some(inner),
                        _ => None,
                    }
                }
            }
        )+

        impl crate::codec::Codec {
            /// Encodes any top-level record for `topic`.
            pub async fn encode_any(&self, topic: &str, record: &AnyRecord) -> Result<Vec<u8>, crate::codec::CodecError> {
                match record { $(AnyRecord::$ty(inner) => self.encode(topic, inner).await,)+ }
            }

            /// Decodes a payload as the record type of schema file `stem`.
            pub async fn decode_any(&self, stem: &str, payload: &[u8]) -> Result<AnyRecord, crate::codec::CodecError> {
                match stem {
                    $($file => self.decode::<$ty>(payload).await.map(AnyRecord::$ty),)+
                    other => Err(crate::codec::CodecError::Value(crate::SchemaError::UnknownSchemaFile(other.to_string()))),
                }
            }
        }
    };
}

top_level! {
    AuthCommand => "auth_command", "io.sluice.auth.AuthCommand";
    PaymentCommand => "payment_command", "io.sluice.payments.PaymentCommand";
    IdentityCommand => "identity_command", "io.sluice.identity.IdentityCommand";
    HmrcCommand => "hmrc_command", "io.sluice.hmrc.HmrcCommand";
    AuthEvent => "auth_event", "io.sluice.auth.AuthEvent";
    PaymentSettled => "payment_settled", "io.sluice.payments.PaymentSettled";
    PaymentRejected => "payment_rejected", "io.sluice.payments.PaymentRejected";
    PaymentEvent => "payment_event", "io.sluice.payments.PaymentEvent";
    IdentityVerificationResult => "identity_verification_result", "io.sluice.identity.IdentityVerificationResult";
    AccountEvent => "account_event", "io.sluice.accounts.AccountEvent";
    Notification => "notification", "io.sluice.notifications.Notification";
    ActivityLog => "activity_log", "io.sluice.logs.ActivityLog";
    AccessLog => "access_log", "io.sluice.logs.AccessLog";
    DeadLetter => "dead_letter", "io.sluice.dlq.DeadLetter";
    DeadLetterAction => "dead_letter_action", "io.sluice.dlq.DeadLetterAction";
    PaymentLeg => "payment_leg", "io.sluice.internal.PaymentLeg";
    IdentityClaim => "identity_claim", "io.sluice.internal.IdentityClaim";
    DeceasedNotice => "deceased_notice", "io.sluice.internal.DeceasedNotice";
}
