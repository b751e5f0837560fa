//! `auth-validation` (docs/architecture.md, the pipeline): owns the `users` store. Registers users, changes passwords,
//! revokes sessions and updates profiles; gates every payment and identity command (principal
//! owns the account or holds a service role, user active, token not revoked, KYC level allows
//! it) before passing it on; applies identity results (KYC `full`) and deceased notices.

use rust_decimal::Decimal;
use sluice_schemas::types::{
    AuthCommand, AuthEvent, AuthEventPayload, AuthPayload, DeceasedNotice, IdentityAtSignUp, IdentityCommand, IdentityPayload, IdentityVerificationResult,
    KycLevel, KycLevelChanged, PasswordChanged, PaymentCommand, PaymentPayload, Principal, ProfileUpdated, SessionsRevoked, UpdateProfile,
    UserRegistered, UserStatus, UserStatusChanged, VerificationOutcome, VerifyIdentity,
};
use sluice_schemas::{AnyRecord, Date};
use sluice_streams::{ProcessError, Processor, ProcessorContext, Record};

use crate::avro::AvroValue;
use crate::emit::{self, sinks, Activity, Payment};
use crate::model::{self, reasons, roles, stores, CommandState, User};
use crate::settings::PipelineSettings;

/// Processor kind name.
pub const KIND: &str = "auth-validation";

/// Config keys of the node.
pub const CONFIG_KEYS: &[&str] = &["currency", "currencies", "basic_transfer_limit", "basic_transfer_limits"];

/// A refusal: machine-readable reason and human-readable detail.
type Refusal = (&'static str, String);

/// See the module docs.
#[derive(Debug, Clone)]
pub struct AuthValidation {
    settings: PipelineSettings,
}

impl AuthValidation {
    /// With the given settings.
    pub fn new(settings: PipelineSettings) -> AuthValidation {
        AuthValidation { settings }
    }
}

/// What a gated command wants to do.
#[derive(Debug, Clone, Copy)]
enum Operation<'a> {
    /// Change password or profile.
    Account,
    /// Logout: allowed whatever the user's status.
    Logout,
    /// Claim an identifier.
    Identity,
    /// Move money.
    Payment(&'a PaymentPayload),
}

impl Processor for AuthValidation {
    fn init(&mut self, ctx: &mut ProcessorContext<'_>) -> Result<(), ProcessError> {
        emit::require_children(
            ctx,
            KIND,
            &[
                sinks::BALANCE_CHECK,
                sinks::IDENTITY_REQUEST,
                sinks::AUTH_EVENTS,
                sinks::REJECTED,
                sinks::IDENTITY_REJECTED,
                sinks::NOTIFICATIONS,
                sinks::ACTIVITY,
                sinks::PAYMENT_EVENTS,
            ],
        )
    }

    fn process(&mut self, record: Record, ctx: &mut ProcessorContext<'_>) -> Result<(), ProcessError> {
        let key = emit::key_of(KIND, &record)?.to_string();
        let event_id = emit::event_id_of(&record.value).ok_or_else(|| emit::unexpected(KIND, &record))?;
        // Commands are deduplicated per issuer: nobody can use up another's event id (send a
        // command with it first, even one refused) and so have the real one dropped.
        let dedupe_key = match emit::principal_of(&record.value) {
            Some(principal) => format!("event:{}:{event_id}", principal.subject),
            None => format!("event:{event_id}"),
        };
        if ctx.is_duplicate(stores::USER_DEDUPE, &dedupe_key)? {
            return Ok(());
        }
        match record.value.avro() {
            Some(AnyRecord::AuthCommand(command)) => self.auth_command(&key, command, ctx),
            Some(AnyRecord::PaymentCommand(command)) => {
                if self.payment_command(&key, command, ctx)? {
                    ctx.forward_to(sinks::BALANCE_CHECK, record)?;
                }
                Ok(())
            }
            Some(AnyRecord::IdentityCommand(command)) => {
                if self.identity_command(&key, command, ctx)? {
                    ctx.forward_to(sinks::IDENTITY_REQUEST, record)?;
                }
                Ok(())
            }
            Some(AnyRecord::IdentityVerificationResult(result)) => self.identity_result(&key, result, ctx),
            Some(AnyRecord::DeceasedNotice(notice)) => {
                if self.deceased(&key, notice, ctx)? {
                    ctx.forward_to(sinks::BALANCE_CHECK, record)?;
                }
                Ok(())
            }
            _ => Err(emit::unexpected(KIND, &record)),
        }
    }
}

impl AuthValidation {
    fn auth_command(&self, key: &str, command: &AuthCommand, ctx: &mut ProcessorContext<'_>) -> Result<(), ProcessError> {
        let command_type = match &command.payload {
            AuthPayload::RegisterUser(_) => "RegisterUser",
            AuthPayload::ChangePassword(_) => "ChangePassword",
            AuthPayload::RevokeSessions(_) => "RevokeSessions",
            AuthPayload::UpdateProfile(_) => "UpdateProfile",
            AuthPayload::MarkNotificationsRead(_) => "MarkNotificationsRead",
            AuthPayload::RequestPasswordReset(_) => "RequestPasswordReset",
            AuthPayload::ConfirmPasswordReset(_) => "ConfirmPasswordReset",
        };
        let outcome = match self.check_idempotency(key, &command.principal, command.idempotency_key.as_deref(), ctx)? {
            Err(refusal) => Err(refusal),
            Ok(()) => self.apply_auth(key, command, ctx)?,
        };
        finish_auth(ctx, key, command, command_type, outcome)
    }

    /// Applies an auth command; `Ok(Err(..))` is a refusal.
    fn apply_auth(&self, key: &str, command: &AuthCommand, ctx: &mut ProcessorContext<'_>) -> Result<Result<(), Refusal>, ProcessError> {
        let now_ms = ctx.timestamp();
        let existing: Option<User> = model::load(ctx.store(stores::USERS)?, key)?;
        if let AuthPayload::RegisterUser(register) = &command.payload {
            let email = model::normalise_email(&register.email);
            if !model::is_plausible_email(&email) {
                return Ok(Err((reasons::INVALID_EMAIL, format!("`{}` is not an email address", register.email))));
            }
            if model::user_id_for_email(&email) != key {
                return Ok(Err((reasons::INVALID_USER_ID, "the record key must be the user id derived from the email".to_string())));
            }
            if !is_argon2id_phc(&register.password_hash) {
                return Ok(Err((reasons::INVALID_PASSWORD_HASH, ARGON2_REQUIREMENT.to_string())));
            }
            if existing.is_some() {
                return Ok(Err((reasons::EMAIL_TAKEN, "a user with this email already exists".to_string())));
            }
            let phone_number = match register.phone_number.as_deref().map(model::normalise_phone).transpose() {
                Ok(phone) => phone,
                Err(detail) => return Ok(Err((reasons::INVALID_PHONE, detail))),
            };
            let mut user = User {
                user_id: key.to_string(),
                email: email.clone(),
                password_hash: register.password_hash.clone(),
                full_name: None,
                date_of_birth: None,
                phone_number,
                status: UserStatus::Active,
                kyc_level: KycLevel::Browsing,
                tokens_valid_after_ms: 0,
                identifiers: Vec::new(),
                pending_identity: None,
                password_reset: None,
                used_reset_sha256: None,
                registered_at_ms: now_ms,
            };
            // A name and a date of birth given at sign-up count as a profile (same rules).
            let name = register.full_name.as_ref().map(|n| n.trim().to_string()).filter(|n| !n.is_empty());
            if name.is_some() || register.date_of_birth.is_some() {
                let profile = UpdateProfile { full_name: name, date_of_birth: register.date_of_birth };
                if let Err(refusal) = apply_profile(&mut user, &profile, now_ms) {
                    return Ok(Err(refusal));
                }
            }
            if user.full_name.is_some() && user.date_of_birth.is_some() {
                user.kyc_level = KycLevel::Basic;
            }
            model::save(ctx.store(stores::USERS)?, key, &user)?;
            let registered = UserRegistered { email, full_name: user.full_name.clone(), kyc_level: user.kyc_level };
            auth_event(ctx, key, &command.event_id, "registered", AuthEventPayload::UserRegistered(registered))?;
            if let Some(identity) = &register.identity {
                self.claim_at_sign_up(key, command, identity, user, ctx)?;
            }
            return Ok(Ok(()));
        }
        if let AuthPayload::RequestPasswordReset(_) | AuthPayload::ConfirmPasswordReset(_) = &command.payload {
            return self.password_reset(key, existing, command, ctx);
        }
        let operation = match command.payload {
            // Logging out and reading one's notices work whatever the account's status.
            AuthPayload::RevokeSessions(_) | AuthPayload::MarkNotificationsRead(_) => Operation::Logout,
            _ => Operation::Account,
        };
        let mut user = match self.gate(existing, key, &command.principal, operation) {
            Ok(user) => user,
            Err(refusal) => return Ok(Err(refusal)),
        };
        match &command.payload {
            AuthPayload::RegisterUser(_) | AuthPayload::RequestPasswordReset(_) | AuthPayload::ConfirmPasswordReset(_) => unreachable!("handled above"),
            AuthPayload::MarkNotificationsRead(mark) => crate::notifications::mark_read(ctx, key, mark)?,
            AuthPayload::ChangePassword(change) => {
                if !is_argon2id_phc(&change.password_hash) {
                    return Ok(Err((reasons::INVALID_PASSWORD_HASH, ARGON2_REQUIREMENT.to_string())));
                }
                user.password_hash = change.password_hash.clone();
                user.tokens_valid_after_ms = user.tokens_valid_after_ms.max(now_ms);
                // A reset asked for before no longer holds once the password changed.
                user.password_reset = None;
                let event = PasswordChanged { tokens_valid_after: emit::now(ctx) };
                model::save(ctx.store(stores::USERS)?, key, &user)?;
                auth_event(ctx, key, &command.event_id, "password", AuthEventPayload::PasswordChanged(event))?;
            }
            AuthPayload::RevokeSessions(_) => {
                user.tokens_valid_after_ms = user.tokens_valid_after_ms.max(now_ms);
                model::save(ctx.store(stores::USERS)?, key, &user)?;
                let event = SessionsRevoked { tokens_valid_after: emit::now(ctx) };
                auth_event(ctx, key, &command.event_id, "sessions", AuthEventPayload::SessionsRevoked(event))?;
            }
            AuthPayload::UpdateProfile(update) => {
                if let Err(refusal) = apply_profile(&mut user, update, now_ms) {
                    return Ok(Err(refusal));
                }
                let upgraded = user.kyc_level == KycLevel::Browsing && user.full_name.is_some() && user.date_of_birth.is_some();
                if upgraded {
                    user.kyc_level = KycLevel::Basic;
                }
                model::save(ctx.store(stores::USERS)?, key, &user)?;
                let event = ProfileUpdated { full_name: user.full_name.clone(), date_of_birth: user.date_of_birth };
                auth_event(ctx, key, &command.event_id, "profile", AuthEventPayload::ProfileUpdated(event))?;
                if upgraded {
                    let event = KycLevelChanged { kyc_level: KycLevel::Basic };
                    auth_event(ctx, key, &command.event_id, "kyc", AuthEventPayload::KycLevelChanged(event))?;
                    let limit = &self.settings.basic_transfer_limit;
                    let message = format!("Your profile is complete: you can now send up to {limit} {} per transfer.", self.settings.currency);
                    emit::notify(ctx, key, &command.event_id, "kyc_basic", message)?;
                }
            }
        }
        Ok(Ok(()))
    }

    /// A password reset (docs/security.md, password reset). Both steps come from the ingest API
    /// only, anonymous like a sign-up (the kcat bridge refuses them): the request stores the
    /// SHA-256 of a single-use token the API delivered to the account holder; the confirmation
    /// must present that token before it expires, and sets the new password and revokes every
    /// session.
    fn password_reset(&self, key: &str, user: Option<User>, command: &AuthCommand, ctx: &mut ProcessorContext<'_>) -> Result<Result<(), Refusal>, ProcessError> {
        let anonymous = command.principal.subject == key && command.principal.roles.is_empty();
        if !anonymous {
            return Ok(Err((reasons::FORBIDDEN, "a password reset comes from the HTTP API, with no token".to_string())));
        }
        // An unknown user, or (for a confirmation) a token that does not match, answers the same
        // whatever the account's status: the route tells nobody which accounts exist or died.
        let Some(mut user) = user else { return Ok(Err((reasons::INVALID_RESET_TOKEN, "no password reset with this token is pending".to_string()))) };
        let now_ms = ctx.timestamp();
        let frozen = || (reasons::ACCOUNT_FROZEN, format!("the account is {}", status_name(user.status)));
        match &command.payload {
            AuthPayload::RequestPasswordReset(_) if user.status != UserStatus::Active => return Ok(Err(frozen())),
            AuthPayload::RequestPasswordReset(request) => {
                user.password_reset = Some(model::PasswordReset { token_sha256: request.token_sha256.clone(), expires_at_ms: request.expires_at.0 });
                model::save(ctx.store(stores::USERS)?, key, &user)?;
                let message = "A password reset was requested for your account. If it was not you, you can ignore it: your password stays as it is.".to_string();
                emit::notify(ctx, key, &command.event_id, "password_reset_requested", message)?;
            }
            AuthPayload::ConfirmPasswordReset(confirm) => {
                let presented = confirm.token_sha256.as_bytes();
                let matches = |hash: &str| hash.len() == presented.len() && hash.bytes().zip(presented).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
                let Some(pending) = user.password_reset.clone().filter(|p| matches(&p.token_sha256)) else {
                    if user.used_reset_sha256.as_deref().is_some_and(matches) {
                        return Ok(Err((reasons::RESET_TOKEN_USED, "this reset token was used already: ask for a new one".to_string())));
                    }
                    return Ok(Err((reasons::INVALID_RESET_TOKEN, "no password reset with this token is pending".to_string())));
                };
                if user.status != UserStatus::Active {
                    return Ok(Err(frozen()));
                }
                if now_ms > pending.expires_at_ms {
                    return Ok(Err((reasons::RESET_TOKEN_EXPIRED, "the reset token has expired: ask for a new one".to_string())));
                }
                if !is_argon2id_phc(&confirm.password_hash) {
                    return Ok(Err((reasons::INVALID_PASSWORD_HASH, ARGON2_REQUIREMENT.to_string())));
                }
                user.password_hash = confirm.password_hash.clone();
                user.tokens_valid_after_ms = user.tokens_valid_after_ms.max(now_ms);
                user.password_reset = None;
                user.used_reset_sha256 = Some(pending.token_sha256);
                model::save(ctx.store(stores::USERS)?, key, &user)?;
                let event = PasswordChanged { tokens_valid_after: emit::now(ctx) };
                auth_event(ctx, key, &command.event_id, "password", AuthEventPayload::PasswordChanged(event))?;
                let message = "Your password was reset and every session signed out.".to_string();
                emit::notify(ctx, key, &command.event_id, "password_reset", message)?;
            }
            _ => unreachable!("only password resets come here"),
        }
        Ok(Ok(()))
    }

    /// Gates a payment command; true to pass it on to balance-check. Who may act on the account
    /// is checked first: a command of someone who may not never uses up an Idempotency-Key of the
    /// account, nor leaves anything in its holder's payments (docs/security.md).
    fn payment_command(&self, key: &str, command: &PaymentCommand, ctx: &mut ProcessorContext<'_>) -> Result<bool, ProcessError> {
        let payment = payment_facts(key, command);
        let allowed = authorized(key, &command.principal, &Operation::Payment(&command.payload));
        let idempotent = match allowed {
            Ok(()) => self.check_idempotency(key, &command.principal, command.idempotency_key.as_deref(), ctx)?,
            Err(refusal) => Err(refusal),
        };
        let refusal = match idempotent {
            Err(refusal) => Some(refusal),
            Ok(()) => {
                let user: Option<User> = model::load(ctx.store(stores::USERS)?, key)?;
                self.gate(user, key, &command.principal, Operation::Payment(&command.payload)).err()
            }
        };
        match refusal {
            Some((reason, detail)) => {
                emit::reject_payment(ctx, &payment, reason, &detail)?;
                Ok(false)
            }
            None => Ok(true),
        }
    }

    /// Gates an identity command; true to pass it on to identity-request.
    fn identity_command(&self, key: &str, command: &IdentityCommand, ctx: &mut ProcessorContext<'_>) -> Result<bool, ProcessError> {
        let refusal = match self.check_idempotency(key, &command.principal, command.idempotency_key.as_deref(), ctx)? {
            Err(refusal) => Some(refusal),
            Ok(()) => {
                let user: Option<User> = model::load(ctx.store(stores::USERS)?, key)?;
                match self.gate(user, key, &command.principal, Operation::Identity).and_then(|user| check_claim(user, command)) {
                    Ok(mut user) => {
                        user.pending_identity = Some(command.event_id.clone());
                        model::save(ctx.store(stores::USERS)?, key, &user)?;
                        None
                    }
                    Err(refusal) => Some(refusal),
                }
            }
        };
        let Some((reason, detail)) = refusal else { return Ok(true) };
        crate::identity::reject_request(ctx, key, command, reason, &detail)?;
        Ok(false)
    }

    /// The identity claim of a registration (one-call registration), as the new user's own
    /// `VerifyIdentity` with command id `<registration id>:identity`: checked as any claim
    /// (profile, one identity per account), then passed on to identity-request, or refused
    /// with its own status; the registration itself stands either way.
    fn claim_at_sign_up(&self, key: &str, register: &AuthCommand, identity: &IdentityAtSignUp, user: User, ctx: &mut ProcessorContext<'_>) -> Result<(), ProcessError> {
        let claim = IdentityCommand {
            event_id: format!("{}:identity", register.event_id),
            occurred_at: register.occurred_at,
            principal: Principal { subject: key.to_string(), roles: vec![roles::USER.to_string()], token_issued_at: register.occurred_at },
            idempotency_key: None,
            payload: IdentityPayload::VerifyIdentity(VerifyIdentity {
                identifier_type: identity.identifier_type,
                value: identity.value.clone(),
                full_name: user.full_name.clone(),
                date_of_birth: user.date_of_birth,
            }),
        };
        match check_claim(user, &claim) {
            Ok(mut user) => {
                user.pending_identity = Some(claim.event_id.clone());
                model::save(ctx.store(stores::USERS)?, key, &user)?;
                let record = Record::new(key, crate::avro::record(claim), ctx.timestamp());
                ctx.forward_to(sinks::IDENTITY_REQUEST, record)
            }
            Err((reason, detail)) => crate::identity::reject_request(ctx, key, &claim, reason, &detail),
        }
    }

    /// A verification result from the per-identifier sub-topology: the command's final status,
    /// and KYC `full` on success.
    fn identity_result(&self, key: &str, result: &IdentityVerificationResult, ctx: &mut ProcessorContext<'_>) -> Result<(), ProcessError> {
        let verified = result.outcome == VerificationOutcome::Verified;
        let reason = result.reason.as_deref().unwrap_or("rejected");
        let detail = match reason {
            reasons::ALREADY_CLAIMED => "the identifier belongs to another user",
            reasons::DECEASED => "the identifier's holder is recorded as deceased",
            _ => "the identifier could not be verified",
        };
        let (status, why) = if verified { (CommandState::Settled, None) } else { (CommandState::Rejected, Some((reason, detail))) };
        emit::set_status(ctx, &result.command_id, "VerifyIdentity", key, status, why)?;
        let Some(mut user) = model::load::<User>(ctx.store(stores::USERS)?, key)? else {
            return Err(ProcessError::Fatal(format!("identity result for unknown user `{key}`")));
        };
        if user.pending_identity.as_deref() == Some(result.command_id.as_str()) {
            user.pending_identity = None;
            model::save(ctx.store(stores::USERS)?, key, &user)?;
        }
        if !verified {
            return emit::notify(ctx, key, &result.command_id, "identity_rejected", format!("We could not verify your identifier: {detail}."));
        }
        let identifier = model::identifier_key(result.identifier_type, &result.identifier);
        if !user.identifiers.contains(&identifier) {
            user.identifiers.push(identifier);
        }
        let upgrade = user.status == UserStatus::Active && user.kyc_level != KycLevel::Full;
        if upgrade {
            user.kyc_level = KycLevel::Full;
        }
        model::save(ctx.store(stores::USERS)?, key, &user)?;
        if upgrade {
            auth_event(ctx, key, &result.command_id, "kyc", AuthEventPayload::KycLevelChanged(KycLevelChanged { kyc_level: KycLevel::Full }))?;
        }
        emit::notify(ctx, key, &result.command_id, "identity_verified", "Your identity is verified: every feature is now open to you.".to_string())
    }

    /// HMRC reported the death of the user's NIN holder: the user is deceased for good. True
    /// to pass the notice on to balance-check, which freezes the account.
    fn deceased(&self, key: &str, notice: &DeceasedNotice, ctx: &mut ProcessorContext<'_>) -> Result<bool, ProcessError> {
        let Some(mut user) = model::load::<User>(ctx.store(stores::USERS)?, key)? else {
            tracing::warn!(user_id = key, nin = %notice.nin, "deceased notice for a user that does not exist; ignored");
            return Ok(false);
        };
        if user.status != UserStatus::Deceased {
            user.status = UserStatus::Deceased;
            model::save(ctx.store(stores::USERS)?, key, &user)?;
            let changed = UserStatusChanged { status: UserStatus::Deceased, reason: reasons::DECEASED.to_string() };
            auth_event(ctx, key, &notice.event_id, "status", AuthEventPayload::UserStatusChanged(changed))?;
        }
        Ok(true)
    }

    /// Marks the Idempotency-Key used; a second command with the same key is a duplicate. Keys
    /// belong to the principal that sent them: another principal's command (even one the gate
    /// refuses) cannot use up a user's key.
    fn check_idempotency(&self, key: &str, principal: &Principal, idempotency_key: Option<&str>, ctx: &mut ProcessorContext<'_>) -> Result<Result<(), Refusal>, ProcessError> {
        let Some(idempotency_key) = idempotency_key else { return Ok(Ok(())) };
        if ctx.is_duplicate(stores::USER_DEDUPE, &format!("idempotency:{}:{key}:{idempotency_key}", principal.subject))? {
            return Ok(Err((reasons::DUPLICATE_COMMAND, format!("Idempotency-Key `{idempotency_key}` was already used by another command"))));
        }
        Ok(Ok(()))
    }

    /// The rules every gated command passes, in order: who, which user, token, status, input, KYC.
    fn gate(&self, user: Option<User>, key: &str, principal: &Principal, operation: Operation<'_>) -> Result<User, Refusal> {
        authorized(key, principal, &operation)?;
        let owner = principal.subject == key && principal.roles.iter().any(|r| r == roles::USER);
        let user = user.ok_or_else(|| (reasons::USER_UNKNOWN, format!("no user `{key}`")))?;
        if owner && principal.token_issued_at.0 < user.tokens_valid_after_ms {
            return Err((reasons::TOKEN_REVOKED, "the token was issued before the sessions were revoked; log in again".to_string()));
        }
        if user.status != UserStatus::Active && !matches!(operation, Operation::Logout) {
            return Err((reasons::ACCOUNT_FROZEN, format!("the account is {}", status_name(user.status))));
        }
        if let Operation::Payment(payload) = operation {
            self.check_payment(key, &user, payload)?;
        }
        Ok(user)
    }

    /// Amount, currency, payee and KYC rules of a payment.
    fn check_payment(&self, key: &str, user: &User, payload: &PaymentPayload) -> Result<(), Refusal> {
        let (amount, currency) = amount_of(payload);
        let Some(minor_units) = self.settings.minor_units(currency) else {
            return Err((reasons::UNSUPPORTED_CURRENCY, format!("accounts hold {}, not `{currency}`", self.settings.currency_list())));
        };
        model::check_amount(amount, minor_units).map_err(|detail| (reasons::INVALID_AMOUNT, detail))?;
        if let PaymentPayload::Transfer(transfer) = payload {
            if transfer.payee_user_id == key {
                return Err((reasons::INVALID_PAYEE, "a transfer needs another user as payee".to_string()));
            }
        }
        let limit = self.settings.basic_limit(currency);
        match user.kyc_level {
            KycLevel::Browsing => Err((reasons::KYC_REQUIRED, "complete your profile (name and date of birth) to move money".to_string())),
            KycLevel::Basic => match payload {
                PaymentPayload::Transfer(_) | PaymentPayload::Withdrawal(_) if amount > limit => {
                    Err((reasons::LIMIT_EXCEEDED, format!("{amount} {currency} is above the limit of {limit} {currency} per transaction before identity verification")))
                }
                _ => Ok(()),
            },
            KycLevel::Full => Ok(()),
        }
    }
}

/// An identity claim is checked against the profile before it goes to the identifier's task:
/// the name and date of birth on the claim must be the profile's (names compared ignoring case
/// and repeated spaces), and an account holds one identity (verified, or being verified).
/// What a real verifier adds is in docs/security.md (KYC).
fn check_claim(user: User, command: &IdentityCommand) -> Result<User, Refusal> {
    let IdentityPayload::VerifyIdentity(claim) = &command.payload;
    // The format first (identity-request checks it again): a claim that passes here always
    // reaches the identifier's task, whose result clears the pending mark.
    crate::identifiers::normalise(claim.identifier_type, &claim.value).map_err(|e| (reasons::INVALID_FORMAT, e.to_string()))?;
    if let Some(held) = user.identifiers.first() {
        return Err((reasons::IDENTITY_ALREADY_VERIFIED, format!("the account already has a verified identity ({held}); one per account")));
    }
    if user.pending_identity.is_some() {
        return Err((reasons::IDENTITY_ALREADY_VERIFIED, "another identity claim of this account is being verified; one per account".to_string()));
    }
    let (Some(name), Some(born)) = (&user.full_name, user.date_of_birth) else {
        return Err((reasons::KYC_REQUIRED, "complete your profile (name and date of birth) before verifying an identity".to_string()));
    };
    let (Some(claimed_name), Some(claimed_born)) = (&claim.full_name, claim.date_of_birth) else {
        return Err((reasons::IDENTITY_MISMATCH, "the claim must give the holder's full_name and date_of_birth".to_string()));
    };
    let comparable = |n: &str| n.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
    if comparable(name) != comparable(claimed_name) || born != claimed_born {
        return Err((reasons::IDENTITY_MISMATCH, "the name and date of birth on the claim do not match the profile".to_string()));
    }
    Ok(user)
}

/// Status, audit record and (for success) nothing else: the events were sent while applying.
fn finish_auth(
    ctx: &mut ProcessorContext<'_>,
    key: &str,
    command: &AuthCommand,
    command_type: &str,
    outcome: Result<(), Refusal>,
) -> Result<(), ProcessError> {
    let (state, reason) = match &outcome {
        Ok(()) => (CommandState::Settled, None),
        Err((reason, detail)) => (CommandState::Rejected, Some((*reason, detail.as_str()))),
    };
    emit::set_status(ctx, &command.event_id, command_type, key, state, reason)?;
    let activity = Activity {
        user_id: key,
        principal_subject: &command.principal.subject,
        command_id: &command.event_id,
        command_type,
        outcome: if outcome.is_ok() { "settled" } else { "rejected" },
        reason: reason.map(|(r, _)| r),
    };
    emit::activity(ctx, sinks::ACTIVITY, activity)
}

fn auth_event(ctx: &mut ProcessorContext<'_>, user_id: &str, causation_id: &str, step: &str, payload: AuthEventPayload) -> Result<(), ProcessError> {
    let event = AuthEvent {
        event_id: format!("{causation_id}:{step}"),
        occurred_at: emit::now(ctx),
        user_id: user_id.to_string(),
        causation_id: causation_id.to_string(),
        payload,
    };
    emit::send(ctx, sinks::AUTH_EVENTS, user_id, event)
}

/// Who may act on account `key`: its owner (a user token of its own) or an operator; deposits
/// are an operator's only.
fn authorized(key: &str, principal: &Principal, operation: &Operation<'_>) -> Result<(), Refusal> {
    let has = |role: &str| principal.roles.iter().any(|r| r == role);
    let owner = principal.subject == key && has(roles::USER);
    let operator = has(roles::OPERATOR);
    if matches!(operation, Operation::Payment(PaymentPayload::Deposit(_))) && !operator {
        return Err((reasons::FORBIDDEN, "only an operator may deposit".to_string()));
    }
    if !owner && !operator {
        return Err((reasons::FORBIDDEN, format!("`{}` may not act on account `{key}`", principal.subject)));
    }
    Ok(())
}

/// The facts of a payment command for its outcome records.
pub(crate) fn payment_facts(key: &str, command: &PaymentCommand) -> Payment {
    let (amount, currency) = amount_of(&command.payload);
    let (kind, payee, reference) = match &command.payload {
        PaymentPayload::Transfer(t) => (sluice_schemas::types::PaymentKind::Transfer, Some(t.payee_user_id.clone()), t.reference.clone()),
        PaymentPayload::Deposit(d) => (sluice_schemas::types::PaymentKind::Deposit, None, d.reference.clone()),
        PaymentPayload::Withdrawal(w) => (sluice_schemas::types::PaymentKind::Withdrawal, None, w.reference.clone()),
        PaymentPayload::Refund(r) => (sluice_schemas::types::PaymentKind::Refund, None, r.reason.clone()),
    };
    let refund_of = match &command.payload {
        PaymentPayload::Refund(r) => Some(r.payment_id.clone()),
        _ => None,
    };
    Payment {
        command_id: command.event_id.clone(),
        kind,
        payer_user_id: key.to_string(),
        payee_user_id: payee,
        amount,
        currency: currency.to_string(),
        reference,
        principal_subject: command.principal.subject.clone(),
        refund_of,
    }
}

fn amount_of(payload: &PaymentPayload) -> (Decimal, &str) {
    match payload {
        PaymentPayload::Transfer(t) => (t.amount, &t.currency),
        PaymentPayload::Deposit(d) => (d.amount, &d.currency),
        PaymentPayload::Withdrawal(w) => (w.amount, &w.currency),
        PaymentPayload::Refund(r) => (r.amount, &r.currency),
    }
}

fn status_name(status: UserStatus) -> &'static str {
    match status {
        UserStatus::Active => "active",
        UserStatus::Frozen => "frozen",
        UserStatus::Deceased => "frozen: its holder is deceased",
    }
}

/// Merges a profile update into `user`, refusing empty names, future birth dates and minors.
fn apply_profile(user: &mut User, update: &UpdateProfile, now_ms: i64) -> Result<(), Refusal> {
    if let Some(name) = &update.full_name {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err((reasons::INVALID_PROFILE, "full_name must have 1 to 200 characters".to_string()));
        }
        user.full_name = Some(name.to_string());
    }
    if let Some(born) = update.date_of_birth {
        let today = Date(i32::try_from(now_ms.div_euclid(86_400_000)).unwrap_or(i32::MAX));
        if born > today {
            return Err((reasons::INVALID_PROFILE, format!("date_of_birth {born} is in the future")));
        }
        let ((by, bm, bd), (ty, tm, td)) = (born.ymd(), today.ymd());
        let age = ty - by - i32::from((tm, td) < (bm, bd));
        if age < 18 {
            return Err((reasons::UNDERAGE, "you must be 18 or over".to_string()));
        }
        user.date_of_birth = Some(born);
    }
    if update.full_name.is_none() && update.date_of_birth.is_none() {
        return Err((reasons::INVALID_PROFILE, "nothing to update: give full_name and/or date_of_birth".to_string()));
    }
    Ok(())
}

/// Argon2 memory (KiB), passes and lanes a stored hash may ask for: around the argon2 crate's
/// defaults (19,456 KiB, 2 passes, 1 lane), so that checking a password costs at most a few
/// times what the API's own hashes cost (docs/security.md, password checks).
pub const ARGON2_MEMORY_KIB: std::ops::RangeInclusive<u32> = 8_192..=65_536;
/// See [`ARGON2_MEMORY_KIB`].
pub const ARGON2_PASSES: std::ops::RangeInclusive<u32> = 1..=4;
/// See [`ARGON2_MEMORY_KIB`].
pub const ARGON2_LANES: std::ops::RangeInclusive<u32> = 1..=4;

/// Why a password hash is refused, naming the bounds.
pub const ARGON2_REQUIREMENT: &str = "password_hash must be an argon2id PHC string with m from 8192 to 65536 KiB, t from 1 to 4 and p from 1 to 4";

/// An argon2id hash in PHC form, `$argon2id$v=19$m=..,t=..,p=..$<salt>$<hash>`, whose
/// parameters lie within [`ARGON2_MEMORY_KIB`], [`ARGON2_PASSES`] and [`ARGON2_LANES`], with a
/// salt of 8 to 48 bytes and an output of 4 to 64 bytes. Plaintext passwords, other
/// algorithms and hashes that would make a check allocate or compute without bound are refused.
pub fn is_argon2id_phc(hash: &str) -> bool {
    let parts: Vec<&str> = hash.split('$').collect();
    let b64 = |s: &str, bytes: std::ops::RangeInclusive<usize>| {
        s.chars().all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/') && bytes.contains(&(s.len() * 3 / 4))
    };
    let mut params = (None, None, None);
    let known = parts.get(3).is_some_and(|list| {
        list.split(',').all(|p| match p.split_once('=').map(|(k, v)| (k, v.parse::<u32>())) {
            Some(("m", Ok(n))) if params.0.is_none() => params.0.replace(n).is_none(),
            Some(("t", Ok(n))) if params.1.is_none() => params.1.replace(n).is_none(),
            Some(("p", Ok(n))) if params.2.is_none() => params.2.replace(n).is_none(),
            _ => false,
        })
    });
    parts.len() == 6
        && parts[0].is_empty()
        && parts[1] == "argon2id"
        && parts[2].starts_with("v=")
        && known
        && params.0.is_some_and(|m| ARGON2_MEMORY_KIB.contains(&m))
        && params.1.is_some_and(|t| ARGON2_PASSES.contains(&t))
        && params.2.is_some_and(|p| ARGON2_LANES.contains(&p))
        && b64(parts[4], 8..=48)
        && b64(parts[5], 4..=64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2id_phc_strings() {
        assert!(is_argon2id_phc("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"));
        assert!(!is_argon2id_phc("hunter2"));
        assert!(!is_argon2id_phc("$argon2i$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"));
        assert!(!is_argon2id_phc("$argon2id$v=19$m=19456,t=2,p=1$$aGFzaA"));
        assert!(!is_argon2id_phc("$argon2id$v=19$x=1$c2FsdA$aGFzaA"));
    }

    #[test]
    fn argon2_parameters_outside_the_bounds_are_refused() {
        let with = |params: &str| format!("$argon2id$v=19${params}$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA");
        assert!(is_argon2id_phc(&with("m=65536,t=4,p=4")), "the upper bounds");
        assert!(is_argon2id_phc(&with("m=8192,t=1,p=1")), "the lower bounds");
        for hostile in ["m=4294967295,t=2,p=1", "m=19456,t=1000000,p=1", "m=19456,t=2,p=255", "m=8191,t=2,p=1", "m=19456,t=0,p=1", "m=19456,t=2", "m=19456,m=8192,t=2,p=1"] {
            assert!(!is_argon2id_phc(&with(hostile)), "{hostile}");
        }
        let long_output = format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ${}", "A".repeat(100));
        assert!(!is_argon2id_phc(&long_output), "an output of 75 bytes");
    }
}
