//! The fintech pipeline of topology.toml, run by the TopologyTestDriver: every rule of
//! the pipeline (docs/architecture.md) and each rejection reason, the kcat JSON bridge, and a property test of the
//! ledger invariants over random command sequences.

use std::str::FromStr;
use std::sync::Arc;

use proptest::prelude::*;
use rust_decimal::Decimal;
use sluice_processors::model::{self, reasons, Account, AccountStatus, CommandState, CommandStatus, LedgerEntry, User};
use sluice_processors::avro::{self, AvroSerdes, AvroValue};
use sluice_processors::notifications::{self, NotificationsMeta, StoredNotification};
use sluice_processors::payments::{self, PaymentDirection, PaymentRecord, PaymentStatus};
use sluice_processors::JwtKeys;
use sluice_schemas::types::*;
use sluice_schemas::{Date, FromAny, TimestampMillis};
use sluice_streams::ErrorPolicy;
use sluice_streams::{ProcessorRegistry, Record, TestDriverConfig, Topology, TopologyTestDriver, Value};

const SECRET: &str = "test-secret-test-secret-test-secret";
const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";
/// 2026-11-24T00:00:00Z.
const START_MS: i64 = 1_795_478_400_000;

fn keys() -> Arc<JwtKeys> {
    Arc::new(JwtKeys::hs256("sluice", "sluice-api", "k1", SECRET).unwrap())
}

/// A bank run by the test driver, with a clock that advances one second per command.
struct Bank {
    driver: TopologyTestDriver,
    now_ms: i64,
    commands: u64,
}

fn gbp(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap()
}

fn user_principal(user_id: &str, issued_at_ms: i64) -> Principal {
    Principal { subject: user_id.to_string(), roles: vec!["user".to_string()], token_issued_at: TimestampMillis(issued_at_ms) }
}

fn service(role: &str) -> Principal {
    Principal { subject: format!("{role}-service"), roles: vec![role.to_string()], token_issued_at: TimestampMillis(0) }
}

impl Bank {
    fn new(name: &str) -> Bank {
        let topology = Topology::from_file(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../topology.toml")).unwrap();
        Bank::on(name, topology)
    }

    /// topology.toml with every `opening_balance` set to `amount` (a welcome credit).
    fn with_opening_balance(name: &str, amount: &str) -> Bank {
        let mut topology = Topology::from_file(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../topology.toml")).unwrap();
        for node in &mut topology.nodes {
            if let sluice_streams::topology::NodeKind::Processor { config, .. } = &mut node.kind {
                if config.contains_key("opening_balance") {
                    config.insert("opening_balance".to_string(), toml::Value::String(amount.to_string()));
                }
            }
        }
        Bank::on(name, topology)
    }

    fn on(name: &str, topology: Topology) -> Bank {
        let mut registry = ProcessorRegistry::new();
        sluice_processors::register(&mut registry, Some(keys()));
        // The driver's topics hold typed records: the serdes only check the schema names and
        // make the dead letters, so no registry is contacted.
        registry.set_serdes(AvroSerdes::new("http://127.0.0.1:9", None).unwrap());
        let mut config = TestDriverConfig::new(name);
        config.processing_error_policy = ErrorPolicy::Dlq;
        Bank { driver: TopologyTestDriver::new(topology, registry, config).unwrap(), now_ms: START_MS, commands: 0 }
    }

    fn tick(&mut self) -> (String, i64) {
        self.now_ms += 1000;
        self.commands += 1;
        (format!("cmd-{}", self.commands), self.now_ms)
    }

    fn pipe(&mut self, topic: &str, key: &str, value: impl Into<sluice_schemas::AnyRecord>, timestamp: i64) {
        self.driver.pipe_input(topic, Record::new(key, avro::record(value), timestamp)).unwrap();
    }

    fn auth(&mut self, key: &str, principal: Principal, payload: AuthPayload) -> String {
        let (id, now) = self.tick();
        let command = AuthCommand { event_id: id.clone(), occurred_at: TimestampMillis(now), principal, idempotency_key: None, payload };
        self.pipe("auth.commands", key, command, now);
        id
    }

    /// Registers `email`; returns the user id.
    fn register(&mut self, email: &str) -> String {
        let user_id = model::user_id_for_email(email);
        let payload = AuthPayload::RegisterUser(RegisterUser { email: email.to_string(), password_hash: HASH.to_string(), full_name: None, date_of_birth: None, phone_number: None, identity: None });
        let id = self.auth(&user_id, user_principal(&user_id, 0), payload);
        assert_eq!(self.status(&user_id, &id).status, CommandState::Settled, "{email} registers");
        user_id
    }

    fn profile(&mut self, user_id: &str, name: &str, born: Date) -> String {
        let payload = AuthPayload::UpdateProfile(UpdateProfile { full_name: Some(name.to_string()), date_of_birth: Some(born) });
        self.auth(user_id, user_principal(user_id, self.now_ms), payload)
    }

    /// Registered with a complete profile: KYC basic.
    fn basic_user(&mut self, email: &str) -> String {
        let user_id = self.register(email);
        let id = self.profile(&user_id, "Ada Lovelace", Date::from_ymd(1990, 12, 10).unwrap());
        assert_eq!(self.status(&user_id, &id).status, CommandState::Settled);
        user_id
    }

    fn payment_as(&mut self, key: &str, principal: Principal, payload: PaymentPayload, idempotency_key: Option<&str>) -> String {
        let (id, now) = self.tick();
        let command = PaymentCommand {
            event_id: id.clone(),
            occurred_at: TimestampMillis(now),
            principal,
            idempotency_key: idempotency_key.map(str::to_string),
            payload,
        };
        self.pipe("payments.commands", key, command, now);
        id
    }

    fn payment(&mut self, user_id: &str, payload: PaymentPayload) -> String {
        let principal = user_principal(user_id, self.now_ms);
        self.payment_as(user_id, principal, payload, None)
    }

    fn deposit(&mut self, user_id: &str, amount: &str) -> String {
        let payload = PaymentPayload::Deposit(Deposit { amount: gbp(amount), currency: "GBP".into(), reference: None });
        self.payment_as(user_id, service("operator"), payload, None)
    }

    fn transfer(&mut self, from: &str, to: &str, amount: &str) -> String {
        self.payment(from, PaymentPayload::Transfer(Transfer { payee_user_id: to.to_string(), amount: gbp(amount), currency: "GBP".into(), reference: Some("rent".into()) }))
    }

    fn withdraw(&mut self, user_id: &str, amount: &str) -> String {
        self.payment(user_id, PaymentPayload::Withdrawal(Withdrawal { amount: gbp(amount), currency: "GBP".into(), reference: None }))
    }

    fn refund(&mut self, user_id: &str, payment_id: &str, amount: &str) -> String {
        self.payment(user_id, PaymentPayload::Refund(Refund { payment_id: payment_id.to_string(), amount: gbp(amount), currency: "GBP".into(), reason: None }))
    }

    /// A claim naming the holder as the user's profile does.
    fn verify(&mut self, user_id: &str, kind: IdentifierType, value: &str) -> String {
        let profile = self.driver.store_get("users", user_id).unwrap().map(|bytes| serde_json::from_slice::<User>(&bytes).unwrap());
        let (name, born) = profile.map_or((None, None), |u| (u.full_name, u.date_of_birth));
        self.verify_as(user_id, kind, value, name.as_deref(), born)
    }

    /// A claim naming the holder `name`, born `born`.
    fn verify_as(&mut self, user_id: &str, kind: IdentifierType, value: &str, name: Option<&str>, born: Option<Date>) -> String {
        let (id, now) = self.tick();
        let command = IdentityCommand {
            event_id: id.clone(),
            occurred_at: TimestampMillis(now),
            principal: user_principal(user_id, now - 500),
            idempotency_key: None,
            payload: IdentityPayload::VerifyIdentity(VerifyIdentity { identifier_type: kind, value: value.to_string(), full_name: name.map(str::to_string), date_of_birth: born }),
        };
        self.pipe("identity.verification.request", user_id, command, now);
        id
    }

    fn death(&mut self, principal: Principal, nin: &str) -> String {
        self.death_notice(principal, nin, None, &format!("NIN:{nin}"))
    }

    /// A death notification naming `nin` and/or `nhs_number`, keyed by `key`.
    fn death_notice(&mut self, principal: Principal, nin: &str, nhs_number: Option<&str>, key: &str) -> String {
        let (id, now) = self.tick();
        let command = HmrcCommand {
            event_id: id.clone(),
            occurred_at: TimestampMillis(now),
            principal,
            idempotency_key: None,
            payload: HmrcPayload::DeathNotification(DeathNotification {
                nin: nin.to_string(),
                nhs_number: nhs_number.map(str::to_string),
                date_of_death: Date::from_ymd(2026, 11, 1).unwrap(),
                reference: format!("HMRC-{id}"),
            }),
        };
        self.pipe("hmrc.death.notification", key, command, now);
        id
    }

    fn load<T: serde::de::DeserializeOwned>(&self, store: &str, key: &str, partition_key: &str) -> Option<T> {
        // Stores are per task; the driver finds the task by the key's partition, so keys that
        // live on another key's partition (ledger, command status) are looked up by scanning.
        if key == partition_key {
            return self.driver.store_get(store, key).unwrap().map(|bytes| serde_json::from_slice(&bytes).unwrap());
        }
        self.driver
            .store_entries(store)
            .unwrap()
            .into_iter()
            .find(|(k, _)| k == key.as_bytes())
            .map(|(_, v)| serde_json::from_slice(&v).unwrap())
    }

    fn status(&self, user_id: &str, command_id: &str) -> CommandStatus {
        self.load::<CommandStatus>("command-status", &model::status_key(user_id, command_id), user_id).unwrap_or_else(|| panic!("no status for {command_id}"))
    }

    fn rejected_with(&self, user_id: &str, command_id: &str) -> String {
        let status = self.status(user_id, command_id);
        assert_eq!(status.status, CommandState::Rejected, "{status:?}");
        status.reason.unwrap()
    }

    fn account(&self, user_id: &str) -> Account {
        self.load::<Account>("accounts", user_id, user_id).unwrap_or_else(|| panic!("no account for {user_id}"))
    }

    fn balance(&self, user_id: &str) -> Decimal {
        self.load::<Account>("accounts", user_id, user_id).map_or(Decimal::ZERO, |a| a.balance)
    }

    fn user(&self, user_id: &str) -> User {
        self.load::<User>("users", user_id, user_id).unwrap()
    }

    fn ledger(&self, user_id: &str) -> Vec<LedgerEntry> {
        let prefix = model::ledger_prefix(user_id);
        self.driver
            .store_entries("ledger")
            .unwrap()
            .into_iter()
            .filter(|(k, _)| k.starts_with(prefix.as_bytes()))
            .map(|(_, v)| serde_json::from_slice(&v).unwrap())
            .collect()
    }

    fn outputs<T: FromAny + Clone>(&self, topic: &str) -> Vec<T> {
        self.driver.records(topic).iter().filter_map(|r| r.value.avro_as::<T>().cloned()).collect()
    }
}

fn born_adult() -> Date {
    Date::from_ymd(1980, 1, 1).unwrap()
}

#[test]
fn one_call_registration_verifies_the_identity_given_at_sign_up() {
    let mut bank = Bank::new("sign-up-identity");
    let sign_up = |email: &str, dob: Option<Date>, phone: Option<&str>, identity: Option<(IdentifierType, &str)>| RegisterUser {
        email: email.to_string(),
        password_hash: HASH.to_string(),
        full_name: Some("Dora Smith".to_string()),
        date_of_birth: dob,
        phone_number: phone.map(str::to_string),
        identity: identity.map(|(identifier_type, value)| IdentityAtSignUp { identifier_type, value: value.to_string() }),
    };
    // Name, date of birth, phone and an NHS number in one call: BASIC at once, FULL once the
    // claim (`<registration id>:identity`) is verified.
    let dora = model::user_id_for_email("dora@example.com");
    let id = bank.auth(&dora, user_principal(&dora, 0), AuthPayload::RegisterUser(sign_up("dora@example.com", Some(born_adult()), Some("07700 900123"), Some((IdentifierType::Nhs, "943 476 5919")))));
    assert_eq!(bank.status(&dora, &id).status, CommandState::Settled);
    assert_eq!(bank.status(&dora, &format!("{id}:identity")).status, CommandState::Settled);
    let user = bank.user(&dora);
    assert_eq!((user.kyc_level, user.identifiers.clone(), user.phone_number.as_deref()), (KycLevel::Full, vec!["NHS:9434765919".to_string()], Some("+447700900123")));
    assert!(bank.outputs::<Notification>("notifications").iter().any(|n| n.user_id == dora && n.kind == "identity_verified"));

    // Without a date of birth the registration stands and the claim is refused.
    let erin = model::user_id_for_email("erin@example.com");
    let id = bank.auth(&erin, user_principal(&erin, 0), AuthPayload::RegisterUser(sign_up("erin@example.com", None, None, Some((IdentifierType::Nin, "AB 12 34 56 C")))));
    assert_eq!(bank.status(&erin, &id).status, CommandState::Settled);
    let claim = bank.status(&erin, &format!("{id}:identity"));
    assert_eq!((claim.status, claim.reason.as_deref()), (CommandState::Rejected, Some(reasons::KYC_REQUIRED)));
    assert_eq!((bank.user(&erin).kyc_level, bank.user(&erin).identifiers.len()), (KycLevel::Browsing, 0));

    // A minor cannot register, nor can anyone with a malformed phone number.
    for (email, dob, phone, reason) in [
        ("young@example.com", Date::from_ymd(2015, 1, 1), None, reasons::UNDERAGE),
        ("phoney@example.com", Some(born_adult()), Some("12345"), reasons::INVALID_PHONE),
    ] {
        let user = model::user_id_for_email(email);
        let id = bank.auth(&user, user_principal(&user, 0), AuthPayload::RegisterUser(sign_up(email, dob, phone, None)));
        let status = bank.status(&user, &id);
        assert_eq!((status.status, status.reason.as_deref()), (CommandState::Rejected, Some(reason)), "{email}");
        assert!(bank.load::<User>("users", &user, &user).is_none(), "{email}: no user");
    }
}

#[test]
fn registration_and_its_refusals() {
    let mut bank = Bank::new("registration");
    let alice = bank.register("Alice@Example.com");
    let user = bank.user(&alice);
    assert_eq!((user.email.as_str(), user.kyc_level, user.status), ("alice@example.com", KycLevel::Browsing, UserStatus::Active));
    assert!(!format!("{user:?}").contains("argon2id"), "Debug never shows the hash");
    let events = bank.outputs::<AuthEvent>("auth.events");
    assert!(matches!(&events[0].payload, AuthEventPayload::UserRegistered(r) if r.email == "alice@example.com"));

    let again = RegisterUser { email: "alice@example.com ".into(), password_hash: HASH.into(), full_name: None, date_of_birth: None, phone_number: None, identity: None };
    let id = bank.auth(&alice, user_principal(&alice, 0), AuthPayload::RegisterUser(again));
    assert_eq!(bank.rejected_with(&alice, &id), reasons::EMAIL_TAKEN);

    let plaintext = RegisterUser { email: "bob@example.com".into(), password_hash: "hunter2".into(), full_name: None, date_of_birth: None, phone_number: None, identity: None };
    let bob = model::user_id_for_email("bob@example.com");
    let id = bank.auth(&bob, user_principal(&bob, 0), AuthPayload::RegisterUser(plaintext));
    assert_eq!(bank.rejected_with(&bob, &id), reasons::INVALID_PASSWORD_HASH);

    let wrong_key = RegisterUser { email: "carol@example.com".into(), password_hash: HASH.into(), full_name: None, date_of_birth: None, phone_number: None, identity: None };
    let id = bank.auth(&bob, user_principal(&bob, 0), AuthPayload::RegisterUser(wrong_key));
    assert_eq!(bank.rejected_with(&bob, &id), reasons::INVALID_USER_ID);

    let bad_email = RegisterUser { email: "not an email".into(), password_hash: HASH.into(), full_name: None, date_of_birth: None, phone_number: None, identity: None };
    let key = model::user_id_for_email("not an email");
    let id = bank.auth(&key, user_principal(&key, 0), AuthPayload::RegisterUser(bad_email));
    assert_eq!(bank.rejected_with(&key, &id), reasons::INVALID_EMAIL);

    let activity = bank.outputs::<ActivityLog>("system.logs.activity");
    assert_eq!(activity.len(), 5, "one audit record per command");
    assert_eq!(activity.iter().filter(|a| a.outcome == "rejected").count(), 4);
}

#[test]
fn profile_moves_browsing_to_basic_and_refuses_minors() {
    let mut bank = Bank::new("profile");
    let alice = bank.register("alice@example.com");
    let id = bank.profile(&alice, "Alice Smith", Date::from_ymd(2015, 1, 1).unwrap());
    assert_eq!(bank.rejected_with(&alice, &id), reasons::UNDERAGE);
    let id = bank.profile(&alice, "Alice Smith", Date::from_ymd(2030, 1, 1).unwrap());
    assert_eq!(bank.rejected_with(&alice, &id), reasons::INVALID_PROFILE);
    assert_eq!(bank.user(&alice).kyc_level, KycLevel::Browsing);
    let id = bank.profile(&alice, "Alice Smith", born_adult());
    assert_eq!(bank.status(&alice, &id).status, CommandState::Settled);
    let user = bank.user(&alice);
    assert_eq!((user.kyc_level, user.full_name.as_deref()), (KycLevel::Basic, Some("Alice Smith")));
    let kyc: Vec<KycLevel> = bank
        .outputs::<AuthEvent>("auth.events")
        .into_iter()
        .filter_map(|e| match e.payload {
            AuthEventPayload::KycLevelChanged(k) => Some(k.kyc_level),
            _ => None,
        })
        .collect();
    assert_eq!(kyc, vec![KycLevel::Basic]);
    assert!(bank.outputs::<Notification>("notifications").iter().any(|n| n.kind == "kyc_basic" && n.user_id == alice));
}

#[test]
fn logout_and_password_change_revoke_earlier_tokens() {
    let mut bank = Bank::new("logout");
    let alice = bank.basic_user("alice@example.com");
    let bob = bank.basic_user("bob@example.com");
    bank.deposit(&alice, "100.00");
    let old_token_issued = bank.now_ms;
    bank.auth(&alice, user_principal(&alice, old_token_issued), AuthPayload::RevokeSessions(RevokeSessions { reason: Some("logout".into()) }));
    assert!(bank.user(&alice).tokens_valid_after_ms > old_token_issued);

    let transfer = PaymentPayload::Transfer(Transfer { payee_user_id: bob.clone(), amount: gbp("10.00"), currency: "GBP".into(), reference: None });
    let id = bank.payment_as(&alice, user_principal(&alice, old_token_issued), transfer.clone(), None);
    assert_eq!(bank.rejected_with(&alice, &id), reasons::TOKEN_REVOKED);
    let id = bank.transfer(&alice, &bob, "10.00");
    assert_eq!(bank.status(&alice, &id).status, CommandState::Settled, "a token issued after the logout works");

    let before_change = bank.now_ms;
    let new_hash = HASH.replace("c2FsdHNhbHQ", "bmV3c2FsdDE");
    bank.auth(&alice, user_principal(&alice, before_change), AuthPayload::ChangePassword(ChangePassword { password_hash: new_hash.clone() }));
    assert_eq!(bank.user(&alice).password_hash, new_hash);
    let id = bank.payment_as(&alice, user_principal(&alice, before_change), transfer, None);
    assert_eq!(bank.rejected_with(&alice, &id), reasons::TOKEN_REVOKED);
    let id = bank.auth(&alice, user_principal(&alice, bank.now_ms), AuthPayload::ChangePassword(ChangePassword { password_hash: "plain".into() }));
    assert_eq!(bank.rejected_with(&alice, &id), reasons::INVALID_PASSWORD_HASH);
}

#[test]
fn the_gate_refuses_each_reason() {
    let mut bank = Bank::new("gate");
    let alice = bank.basic_user("alice@example.com");
    let bob = bank.basic_user("bob@example.com");
    let browsing = bank.register("carol@example.com");
    bank.deposit(&alice, "5000.00");

    let transfer = |to: &str, amount: &str, currency: &str| {
        PaymentPayload::Transfer(Transfer { payee_user_id: to.to_string(), amount: gbp(amount), currency: currency.to_string(), reference: None })
    };
    // Bob acting on Alice's account.
    let id = bank.payment_as(&alice, user_principal(&bob, bank.now_ms), transfer(&bob, "1.00", "GBP"), None);
    assert_eq!(bank.rejected_with(&alice, &id), reasons::FORBIDDEN);
    // A user depositing.
    let deposit = PaymentPayload::Deposit(Deposit { amount: gbp("1.00"), currency: "GBP".into(), reference: None });
    let id = bank.payment_as(&alice, user_principal(&alice, bank.now_ms), deposit, None);
    assert_eq!(bank.rejected_with(&alice, &id), reasons::FORBIDDEN);
    // HMRC may not move money.
    let id = bank.payment_as(&alice, service("hmrc"), transfer(&bob, "1.00", "GBP"), None);
    assert_eq!(bank.rejected_with(&alice, &id), reasons::FORBIDDEN);
    // Nobody there.
    let ghost = model::user_id_for_email("ghost@example.com");
    let id = bank.deposit(&ghost, "1.00");
    assert_eq!(bank.rejected_with(&ghost, &id), reasons::USER_UNKNOWN);
    // KYC browsing: no money movement, not even a deposit.
    let id = bank.deposit(&browsing, "1.00");
    assert_eq!(bank.rejected_with(&browsing, &id), reasons::KYC_REQUIRED);
    // KYC basic: transfers and withdrawals up to 1000.00.
    let id = bank.transfer(&alice, &bob, "1000.01");
    assert_eq!(bank.rejected_with(&alice, &id), reasons::LIMIT_EXCEEDED);
    let id = bank.withdraw(&alice, "1500.00");
    assert_eq!(bank.rejected_with(&alice, &id), reasons::LIMIT_EXCEEDED);
    let id = bank.transfer(&alice, &bob, "1000.00");
    assert_eq!(bank.status(&alice, &id).status, CommandState::Settled);
    // Amounts and currency.
    for bad in ["-5.00", "0", "1.001"] {
        let id = bank.payment(&alice, transfer(&bob, bad, "GBP"));
        assert_eq!(bank.rejected_with(&alice, &id), reasons::INVALID_AMOUNT, "{bad}");
    }
    let id = bank.payment(&alice, transfer(&bob, "1.00", "CHF"));
    assert_eq!(bank.rejected_with(&alice, &id), reasons::UNSUPPORTED_CURRENCY);
    let id = bank.transfer(&alice, &alice, "1.00");
    assert_eq!(bank.rejected_with(&alice, &id), reasons::INVALID_PAYEE);
    // The same Idempotency-Key on a second command.
    let first = bank.payment_as(&alice, user_principal(&alice, bank.now_ms), transfer(&bob, "2.00", "GBP"), Some("key-1"));
    assert_eq!(bank.status(&alice, &first).status, CommandState::Settled);
    let second = bank.payment_as(&alice, user_principal(&alice, bank.now_ms), transfer(&bob, "2.00", "GBP"), Some("key-1"));
    assert_eq!(bank.rejected_with(&alice, &second), reasons::DUPLICATE_COMMAND);

    assert_eq!(bank.balance(&alice), gbp("3998.00"));
    assert_eq!(bank.balance(&bob), gbp("1002.00"));
    let rejected = bank.outputs::<PaymentRejected>("payments.rejected");
    assert_eq!(rejected.len(), 13, "one payments.rejected per refused payment");
    assert!(rejected.iter().all(|r| !r.detail.is_empty()));
}

#[test]
fn transfers_settle_in_two_legs_with_history_and_notifications() {
    let mut bank = Bank::new("transfers");
    let alice = bank.basic_user("alice@example.com");
    let bob = bank.basic_user("bob@example.com");
    let deposit = bank.deposit(&alice, "250.00");
    assert_eq!(bank.status(&alice, &deposit).status, CommandState::Settled);
    let t1 = bank.transfer(&alice, &bob, "100.00");
    let t2 = bank.transfer(&alice, &bob, "50.25");
    let w = bank.withdraw(&bob, "20.00");
    assert_eq!(bank.status(&alice, &t1).status, CommandState::Settled);
    assert_eq!(bank.status(&bob, &w).status, CommandState::Settled);
    assert_eq!((bank.balance(&alice), bank.balance(&bob)), (gbp("99.75"), gbp("130.25")));

    let history = bank.ledger(&alice);
    let lines: Vec<(String, model::Direction, Decimal)> = history.iter().map(|e| (e.command_id.clone(), e.direction, e.amount)).collect();
    assert_eq!(
        lines,
        vec![
            (t2.clone(), model::Direction::Debit, gbp("50.25")),
            (t1.clone(), model::Direction::Debit, gbp("100.00")),
            (deposit.clone(), model::Direction::Credit, gbp("250.00")),
        ],
        "newest first"
    );
    assert_eq!(history[0].balance_after, gbp("99.75"));
    assert_eq!(history[0].counterparty.as_deref(), Some(bob.as_str()));

    let settled = bank.outputs::<PaymentSettled>("payments.settled");
    let ids: Vec<&str> = settled.iter().map(|s| s.command_id.as_str()).collect();
    assert_eq!(ids.len(), 4, "{ids:?}");
    for id in [&deposit, &t1, &t2, &w] {
        assert_eq!(ids.iter().filter(|i| **i == id.as_str()).count(), 1, "{id} settles once");
    }
    let notices = bank.outputs::<Notification>("notifications");
    assert_eq!(notices.iter().filter(|n| n.user_id == bob && n.kind == "payment_received").count(), 2);
    let opened = bank.outputs::<AccountEvent>("accounts.events");
    assert_eq!(opened.iter().filter(|e| matches!(e.payload, AccountEventPayload::AccountOpened(_))).count(), 2);
    let overdraw = bank.withdraw(&alice, "99.76");
    assert_eq!(bank.rejected_with(&alice, &overdraw), reasons::INSUFFICIENT_FUNDS);
}

#[test]
fn unknown_payee_reverses_to_the_payer() {
    let mut bank = Bank::new("reversal");
    let alice = bank.basic_user("alice@example.com");
    bank.deposit(&alice, "80.00");
    let nobody = model::user_id_for_email("nobody@example.com");
    let id = bank.transfer(&alice, &nobody, "30.00");
    assert_eq!(bank.rejected_with(&alice, &id), reasons::PAYEE_UNKNOWN);
    assert_eq!(bank.balance(&alice), gbp("80.00"), "the money came back");
    let history = bank.ledger(&alice);
    assert_eq!(history[0].reversal_reason.as_deref(), Some(reasons::PAYEE_UNKNOWN));
    assert_eq!(history[1].direction, model::Direction::Debit);
    let rejected = bank.outputs::<PaymentRejected>("payments.rejected");
    assert_eq!(rejected.len(), 1);
    assert!(bank.outputs::<PaymentSettled>("payments.settled").iter().all(|s| s.command_id != id));
    assert!(bank.outputs::<Notification>("notifications").iter().any(|n| n.kind == "payment_returned"));
    assert!(bank.load::<Account>("accounts", &nobody, &nobody).is_none(), "no account opened for nobody");
}

#[test]
fn refunds_go_back_to_the_payer_once() {
    let mut bank = Bank::new("refunds");
    let alice = bank.basic_user("alice@example.com");
    let bob = bank.basic_user("bob@example.com");
    bank.deposit(&alice, "100.00");
    let transfer = bank.transfer(&alice, &bob, "60.00");
    let r1 = bank.refund(&bob, &transfer, "25.00");
    assert_eq!(bank.status(&bob, &r1).status, CommandState::Settled);
    assert_eq!((bank.balance(&alice), bank.balance(&bob)), (gbp("65.00"), gbp("35.00")));
    let too_much = bank.refund(&bob, &transfer, "35.01");
    assert_eq!(bank.rejected_with(&bob, &too_much), reasons::REFUND_EXCEEDS_PAYMENT);
    let r2 = bank.refund(&bob, &transfer, "35.00");
    assert_eq!(bank.status(&bob, &r2).status, CommandState::Settled);
    assert_eq!((bank.balance(&alice), bank.balance(&bob)), (gbp("100.00"), gbp("0.00")));
    let again = bank.refund(&bob, &transfer, "0.01");
    assert_eq!(bank.rejected_with(&bob, &again), reasons::REFUND_EXCEEDS_PAYMENT);
    // Only the payee can refund: Alice did not receive the transfer.
    let by_payer = bank.refund(&alice, &transfer, "1.00");
    assert_eq!(bank.rejected_with(&alice, &by_payer), reasons::PAYMENT_UNKNOWN);
    let unknown = bank.refund(&bob, "cmd-nope", "1.00");
    assert_eq!(bank.rejected_with(&bob, &unknown), reasons::PAYMENT_UNKNOWN);
    let refunds: Vec<PaymentSettled> = bank.outputs::<PaymentSettled>("payments.settled").into_iter().filter(|s| s.kind == PaymentKind::Refund).collect();
    assert_eq!(refunds.len(), 2);
    assert_eq!(refunds[0].payee_user_id.as_deref(), Some(alice.as_str()));
    assert!(bank.outputs::<Notification>("notifications").iter().any(|n| n.kind == "refund_received" && n.user_id == alice));
}

/// Users whose keys fall on one partition share its task and stores: a user may refund only
/// a transfer they received themselves, not one their partition neighbour received.
#[test]
fn a_partition_neighbour_cannot_refund_a_transfer_someone_else_received() {
    let mut bank = Bank::new("neighbours");
    let partition_of = |user: &str| sluice_streams::partitioner::partition_for_key(user.as_bytes(), 4);
    let alice = bank.basic_user("alice@example.com");
    let bob = bank.basic_user("bob@example.com");
    let carol_email = (0..).map(|i| format!("carol{i}@example.com")).find(|e| partition_of(&model::user_id_for_email(e)) == partition_of(&bob)).unwrap();
    let carol = bank.basic_user(&carol_email);
    bank.deposit(&alice, "100.00");
    bank.deposit(&carol, "50.00");
    let transfer = bank.transfer(&alice, &bob, "60.00");
    let by_neighbour = bank.refund(&carol, &transfer, "10.00");
    assert_eq!(bank.rejected_with(&carol, &by_neighbour), reasons::PAYMENT_UNKNOWN);
    assert_eq!((bank.balance(&alice), bank.balance(&bob), bank.balance(&carol)), (gbp("40.00"), gbp("60.00"), gbp("50.00")));
    let by_payee = bank.refund(&bob, &transfer, "60.00");
    assert_eq!(bank.status(&bob, &by_payee).status, CommandState::Settled, "Bob's refund allowance is whole");
}

/// Command ids and Idempotency-Keys belong to whoever sends them: a partition neighbour who
/// knows (or guesses) the id and key Alice will use, and sends a command with them first, keyed
/// as Alice (refused) or as themselves, neither has Alice's command dropped nor hides its status.
#[test]
fn a_partition_neighbour_cannot_use_up_a_command_id_or_an_idempotency_key() {
    let mut bank = Bank::new("neighbour-ids");
    let partition_of = |user: &str| sluice_streams::partitioner::partition_for_key(user.as_bytes(), 4);
    let alice = bank.basic_user("alice@example.com");
    let bob = bank.basic_user("bob@example.com");
    let carol_email = (0..).map(|i| format!("carol{i}@example.com")).find(|e| partition_of(&model::user_id_for_email(e)) == partition_of(&alice)).unwrap();
    let carol = bank.basic_user(&carol_email);
    bank.deposit(&alice, "100.00");
    bank.deposit(&carol, "100.00");
    let now = bank.now_ms;
    let command = |sender: &str, payee: &str| PaymentCommand {
        event_id: "t-known".to_string(),
        occurred_at: TimestampMillis(now),
        principal: user_principal(sender, now),
        idempotency_key: Some("rent-2026-12".to_string()),
        payload: PaymentPayload::Transfer(Transfer { payee_user_id: payee.to_string(), amount: gbp("10.00"), currency: "GBP".into(), reference: None }),
    };
    // Carol first, keyed as Alice: refused. Then Alice's own: settles. Then Bob, keyed as Alice
    // with the same id: refused, and Alice's status is not replaced. Then Bob's own with that id.
    bank.pipe("payments.commands", &alice, command(&carol, &carol), now);
    bank.pipe("payments.commands", &alice, command(&alice, &bob), now);
    bank.pipe("payments.commands", &alice, command(&bob, &bob), now + 1);
    bank.pipe("payments.commands", &bob, command(&bob, &carol), now + 2);
    assert_eq!(bank.status(&alice, "t-known").status, CommandState::Settled, "Alice's own command settled and its status stays hers");
    assert_eq!(bank.status(&bob, "t-known").status, CommandState::Settled, "Bob's command with the same id is his");
    assert_eq!((bank.balance(&alice), bank.balance(&bob), bank.balance(&carol)), (gbp("90.00"), gbp("0.00"), gbp("110.00")));
    let refused = bank.outputs::<ActivityLog>("system.logs.activity").into_iter().filter(|a| a.command_id == "t-known" && a.reason.as_deref() == Some(reasons::FORBIDDEN)).count();
    assert_eq!(refused, 2, "both attempts to act for Alice were refused and audited");
}

#[test]
fn identity_verification_upgrades_to_full_and_allows_large_transfers() {
    let mut bank = Bank::new("identity");
    let alice = bank.basic_user("alice@example.com");
    let bob = bank.basic_user("bob@example.com");
    let carol = bank.basic_user("carol@example.com");

    let bad = bank.verify(&alice, IdentifierType::Nin, "QQ 12 34 56 C");
    assert_eq!(bank.rejected_with(&alice, &bad), reasons::INVALID_FORMAT);
    let bad_nhs = bank.verify(&alice, IdentifierType::Nhs, "943 476 5918");
    assert_eq!(bank.rejected_with(&alice, &bad_nhs), reasons::INVALID_FORMAT);
    // The claim must name the profile's holder: another name, another birthday, or none at all
    // are refused before the identifier is touched (basic_user is Ada Lovelace, 1990-12-10).
    let born = Date::from_ymd(1990, 12, 10);
    for (name, born, why) in [(Some("Mallory Smith"), born, "another name"), (Some("Ada Lovelace"), Date::from_ymd(1991, 12, 10), "another birthday"), (None, None, "none")] {
        let claim = bank.verify_as(&alice, IdentifierType::Nin, "AB123456C", name, born);
        assert_eq!(bank.rejected_with(&alice, &claim), reasons::IDENTITY_MISMATCH, "{why}");
    }
    let newcomer = bank.register("dave@example.com");
    let no_profile = bank.verify_as(&newcomer, IdentifierType::Nin, "AB123456C", Some("Dave Jones"), born);
    assert_eq!(bank.rejected_with(&newcomer, &no_profile), reasons::KYC_REQUIRED, "no profile to match");

    // Names match ignoring case and repeated spaces.
    let ok = bank.verify_as(&alice, IdentifierType::Nin, "ab 12 34 56 c", Some(" ada  LOVELACE"), born);
    assert_eq!(bank.status(&alice, &ok).status, CommandState::Settled);
    let user = bank.user(&alice);
    assert_eq!(user.kyc_level, KycLevel::Full);
    assert_eq!(user.identifiers, vec!["NIN:AB123456C".to_string()]);
    // One identity per account: Alice cannot add an NHS number (nor anyone else's NIN).
    let second = bank.verify(&alice, IdentifierType::Nhs, "943 476 5919");
    assert_eq!(bank.rejected_with(&alice, &second), reasons::IDENTITY_ALREADY_VERIFIED);
    let taken = bank.verify(&bob, IdentifierType::Nin, "AB123456C");
    assert_eq!(bank.rejected_with(&bob, &taken), reasons::ALREADY_CLAIMED);
    let nhs = bank.verify(&bob, IdentifierType::Nhs, "943 476 5919");
    assert_eq!(bank.status(&bob, &nhs).status, CommandState::Settled);
    assert_eq!(bank.user(&bob).kyc_level, KycLevel::Full);

    let results = bank.outputs::<IdentityVerificationResult>("identity.verification.result");
    assert_eq!(results.len(), 10, "one result per verification command");
    let mut verified: Vec<&str> = results.iter().filter(|r| r.outcome == VerificationOutcome::Verified).map(|r| r.identifier.as_str()).collect();
    verified.sort();
    assert_eq!(verified, vec!["9434765919", "AB123456C"]);

    bank.deposit(&alice, "5000.00");
    let big = bank.transfer(&alice, &carol, "2500.00");
    assert_eq!(bank.status(&alice, &big).status, CommandState::Settled, "full KYC has no per-transfer limit");
}

#[test]
fn a_welcome_credit_is_the_first_ledger_entry_of_every_new_account() {
    let mut bank = Bank::with_opening_balance("welcome", "10.00");
    let alice = bank.basic_user("alice@example.com");
    let bob = bank.basic_user("bob@example.com");
    // No deposit: the welcome credit pays for Alice's first transfer.
    let transfer = bank.transfer(&alice, &bob, "4.00");
    assert_eq!(bank.status(&alice, &transfer).status, CommandState::Settled);
    assert_eq!((bank.balance(&alice), bank.balance(&bob)), (gbp("6.00"), gbp("14.00")));
    for user in [&alice, &bob] {
        let ledger = bank.ledger(user);
        let first = ledger.iter().min_by_key(|e| e.sequence).unwrap();
        assert_eq!((first.command_id.clone(), first.direction, first.amount, first.counterparty.as_deref()), (format!("welcome-credit:{user}"), model::Direction::Credit, gbp("10.00"), Some("system:welcome-credit")));
    }
    // The money invariant shows it: balances = deposits - withdrawals + welcome credits.
    let welcome: Decimal = [&alice, &bob].iter().flat_map(|u| bank.ledger(u)).filter(|e| e.counterparty.as_deref() == Some("system:welcome-credit")).map(|e| e.amount).sum();
    assert_eq!(bank.balance(&alice) + bank.balance(&bob), welcome);
    // Once per account: a second payment books no second credit.
    bank.transfer(&bob, &alice, "1.00");
    assert_eq!(bank.ledger(&alice).iter().filter(|e| e.counterparty.as_deref() == Some("system:welcome-credit")).count(), 1);
}

#[test]
fn a_holder_verified_by_nhs_number_is_frozen_by_a_notification_naming_it() {
    let mut bank = Bank::new("hmrc-nhs");
    let carol = bank.basic_user("carol@example.com");
    bank.verify(&carol, IdentifierType::Nhs, "943 476 5919");
    bank.deposit(&carol, "50.00");
    // Naming both identifiers is refused, and changes nothing.
    let both = bank.death_notice(service("hmrc"), "AB123456C", Some("9434765919"), "NHS:9434765919");
    let refused = bank.load::<CommandStatus>("notification-status", &model::status_key("NHS:9434765919", &both), "NHS:9434765919").unwrap();
    assert_eq!((refused.status, refused.reason.as_deref()), (CommandState::Rejected, Some(reasons::INVALID_FORMAT)));
    assert_eq!(bank.user(&carol).status, UserStatus::Active);
    let notice = bank.death_notice(service("hmrc"), "", Some("943 476 5919"), "NHS:9434765919");
    let settled = bank.load::<CommandStatus>("notification-status", &model::status_key("NHS:9434765919", &notice), "NHS:9434765919").unwrap();
    assert_eq!(settled.status, CommandState::Settled);
    assert_eq!(bank.user(&carol).status, UserStatus::Deceased);
    assert_eq!(bank.account(&carol).status, AccountStatus::Frozen);
}

#[test]
fn death_notification_freezes_the_holder_and_blocks_claims() {
    let mut bank = Bank::new("hmrc");
    let alice = bank.basic_user("alice@example.com");
    let bob = bank.basic_user("bob@example.com");
    bank.verify(&alice, IdentifierType::Nin, "AB123456C");
    bank.deposit(&alice, "300.00");
    bank.deposit(&bob, "300.00");

    let forged = bank.death(user_principal(&bob, bank.now_ms), "AB123456C");
    let activity = bank.outputs::<ActivityLog>("system.logs.activity");
    let refused = activity.iter().find(|a| a.command_id == forged).unwrap();
    assert_eq!((refused.outcome.as_str(), refused.reason.as_deref()), ("rejected", Some(reasons::FORBIDDEN)));
    assert_eq!(bank.user(&alice).status, UserStatus::Active);
    // Each notification's outcome is kept by command id, on the NIN's task (GET /v1/commands/{id}?nin=).
    let forged_status = bank.load::<CommandStatus>("notification-status", &model::status_key("NIN:AB123456C", &forged), "NIN:AB123456C").unwrap();
    assert_eq!((forged_status.status, forged_status.reason.as_deref()), (CommandState::Rejected, Some(reasons::FORBIDDEN)));

    let notice = bank.death(service("hmrc"), "AB123456C");
    let notice_status = bank.load::<CommandStatus>("notification-status", &model::status_key("NIN:AB123456C", &notice), "NIN:AB123456C").unwrap();
    assert_eq!((notice_status.status, notice_status.command_type.as_str()), (CommandState::Settled, "DeathNotification"));
    assert_eq!(bank.user(&alice).status, UserStatus::Deceased);
    let account = bank.account(&alice);
    assert_eq!((account.status, account.frozen_reason.as_deref()), (AccountStatus::Frozen, Some(reasons::DECEASED)));
    let frozen = bank.outputs::<AccountEvent>("accounts.events");
    assert!(frozen.iter().any(|e| e.user_id == alice && matches!(&e.payload, AccountEventPayload::AccountFrozen(f) if f.reason == "deceased")));
    assert!(bank.outputs::<Notification>("notifications").iter().any(|n| n.user_id == alice && n.kind == "account_frozen"));
    let status_events = bank.outputs::<AuthEvent>("auth.events");
    assert!(status_events.iter().any(|e| matches!(&e.payload, AuthEventPayload::UserStatusChanged(s) if s.status == UserStatus::Deceased)));

    // Later debits are refused, later credits reversed.
    let debit = bank.transfer(&alice, &bob, "10.00");
    assert_eq!(bank.rejected_with(&alice, &debit), reasons::ACCOUNT_FROZEN);
    let credit = bank.transfer(&bob, &alice, "10.00");
    assert_eq!(bank.rejected_with(&bob, &credit), reasons::ACCOUNT_FROZEN);
    assert_eq!((bank.balance(&alice), bank.balance(&bob)), (gbp("300.00"), gbp("300.00")));

    // A NIN reported dead before anyone claimed it cannot be claimed.
    bank.death(service("hmrc"), "JG103759A");
    let claim = bank.verify(&bob, IdentifierType::Nin, "JG 10 37 59 A");
    assert_eq!(bank.rejected_with(&bob, &claim), reasons::DECEASED);
    // A repeated notification changes nothing and sends no second notice.
    bank.death(service("hmrc"), "AB123456C");
    assert_eq!(bank.outputs::<DeceasedNotice>("test-deceased-repartition").len(), 1);
}

#[test]
fn replayed_commands_have_one_effect() {
    let mut bank = Bank::new("replay");
    let alice = bank.basic_user("alice@example.com");
    let bob = bank.basic_user("bob@example.com");
    let (id, now) = bank.tick();
    let command = PaymentCommand {
        event_id: id.clone(),
        occurred_at: TimestampMillis(now),
        principal: service("operator"),
        idempotency_key: None,
        payload: PaymentPayload::Deposit(Deposit { amount: gbp("10.00"), currency: "GBP".into(), reference: None }),
    };
    bank.pipe("payments.commands", &alice, command.clone(), now);
    bank.pipe("payments.commands", &alice, command, now + 5);
    let transfer = bank.transfer(&alice, &bob, "4.00");
    let (_, now) = bank.tick();
    let replay = PaymentCommand {
        event_id: transfer.clone(),
        occurred_at: TimestampMillis(now),
        principal: user_principal(&alice, now),
        idempotency_key: None,
        payload: PaymentPayload::Transfer(Transfer { payee_user_id: bob.clone(), amount: gbp("4.00"), currency: "GBP".into(), reference: None }),
    };
    bank.pipe("payments.commands", &alice, replay, now);
    assert_eq!((bank.balance(&alice), bank.balance(&bob)), (gbp("6.00"), gbp("4.00")));
    assert_eq!(bank.outputs::<PaymentSettled>("payments.settled").len(), 2);
    assert_eq!(bank.outputs::<ActivityLog>("system.logs.activity").iter().filter(|a| a.command_id == id).count(), 1);
}

// ---------------------------------------------------------------- the kcat JSON bridge

fn json_record(bank: &Bank, key: Option<&str>, json: &str, token: Option<&str>) -> Record {
    let mut record = Record::new(key.unwrap_or(""), Value::Bytes(json.as_bytes().to_vec()), bank.now_ms);
    if key.is_none() {
        record.key = None;
    }
    if let Some(token) = token {
        record.headers.push(("authorization".to_string(), format!("Bearer {token}").into_bytes()));
    }
    record
}

fn dead_letters(bank: &Bank) -> Vec<(String, String)> {
    bank.driver
        .records("sluice.dlq")
        .iter()
        .map(|r| {
            let class = String::from_utf8(r.header("sluice.error.class").unwrap().to_vec()).unwrap();
            let message = String::from_utf8(r.header("sluice.error.message").unwrap().to_vec()).unwrap();
            (class, message)
        })
        .collect()
}

#[test]
fn json_bridge_forwards_valid_commands_and_dead_letters_the_rest() {
    let mut bank = Bank::new("bridge");
    let alice = bank.basic_user("alice@example.com");
    let bob = bank.basic_user("bob@example.com");
    bank.deposit(&alice, "50.00");
    let keys = keys();
    bank.now_ms += 1000;
    let token = keys.issue(&alice, &["user"], sluice_processors::jwt::TokenUse::Access, bank.now_ms, 900, "j1").unwrap();
    let transfer = format!(r#"{{"payload": {{"type": "Transfer", "payee_user_id": "{bob}", "amount": "12.50", "currency": "GBP", "reference": "lunch"}}}}"#);
    let record = json_record(&bank, None, &transfer, Some(&token));
    bank.driver.pipe_input("payments.commands.json", record).unwrap();
    assert_eq!((bank.balance(&alice), bank.balance(&bob)), (gbp("37.50"), gbp("12.50")));
    let forwarded = bank.outputs::<PaymentCommand>("payments.commands");
    let last = forwarded.last().unwrap();
    assert_eq!((last.principal.subject.as_str(), last.event_id.starts_with("json:payments.commands.json:")), (alice.as_str(), true));
    // The id a record gets when it names none is not its position (which anyone can predict).
    let digest = last.event_id.trim_start_matches("json:payments.commands.json:");
    assert!(digest.len() == 32 && digest.chars().all(|c| c.is_ascii_hexdigit()), "{}", last.event_id);

    let cases: Vec<(Option<String>, String, &str, &str)> = vec![
        (None, transfer.clone(), "invalid_token", "missing_token"),
        (Some("not.a.jwt".to_string()), transfer.clone(), "invalid_token", "malformed_token"),
        (
            Some(keys.issue(&alice, &["user"], sluice_processors::jwt::TokenUse::Access, bank.now_ms - 3_600_000, 60, "old").unwrap()),
            transfer.clone(),
            "invalid_token",
            "token_expired",
        ),
        (Some(token.clone()), "{not json".to_string(), "invalid_command", "not a valid command"),
        (Some(token.clone()), transfer.replace("12.50", "12.505"), "invalid_command", "invalid money amount"),
        (Some(token.clone()), transfer.replace("\"12.50\"", "true"), "invalid_command", "not a valid command"),
        (Some(token.clone()), transfer.replace("\"reference\"", "\"colour\""), "invalid_command", "unknown field `colour`"),
        (Some(token.clone()), r#"{"payload": {"type": "Teleport"}}"#.to_string(), "invalid_command", "unknown variant `Teleport`"),
    ];
    for (token, json, _, _) in &cases {
        let record = json_record(&bank, None, json, token.as_deref());
        bank.driver.pipe_input("payments.commands.json", record).unwrap();
    }
    let letters = dead_letters(&bank);
    assert_eq!(letters.len(), cases.len(), "{letters:?}");
    for ((class, message), (_, _, want_class, want_text)) in letters.iter().zip(&cases) {
        assert_eq!(class, want_class, "{message}");
        assert!(message.contains(want_text), "{message} should mention {want_text}");
    }
    assert_eq!(bank.balance(&alice), gbp("37.50"), "nothing dead-lettered moved money");
    assert!(bank.driver.records("sluice.dlq").iter().all(|r| r.value.avro_as::<DeadLetter>().is_some_and(|d| d.value.is_some())));

    // A password change needs the current password, which only the HTTP API checks: refused on
    // the kcat path, whatever the token, and the password stays.
    let before = bank.user(&alice).password_hash.clone();
    let change = format!(r#"{{"payload": {{"type": "ChangePassword", "password_hash": "{}"}}}}"#, HASH.replace("t=2", "t=3"));
    bank.driver.pipe_input("auth.commands.json", json_record(&bank, Some(&alice), &change, Some(&token))).unwrap();
    let (class, message) = dead_letters(&bank).pop().unwrap();
    assert_eq!(class, "invalid_command", "{message}");
    assert!(message.contains("needs the current one"), "{message}");
    assert_eq!(bank.user(&alice).password_hash, before);

    // Password resets come from the HTTP API only: a kcat user asking for one (with a token
    // hash of their choosing) or confirming one is dead-lettered, and nothing is stored.
    for payload in [
        r#"{"type": "RequestPasswordReset", "token_sha256": "00", "expires_at": 4102444800000}"#.to_string(),
        format!(r#"{{"type": "ConfirmPasswordReset", "token_sha256": "00", "password_hash": "{HASH}"}}"#),
    ] {
        let json = format!(r#"{{"payload": {payload}}}"#);
        bank.driver.pipe_input("auth.commands.json", json_record(&bank, Some(&alice), &json, Some(&token))).unwrap();
        let (class, message) = dead_letters(&bank).pop().unwrap();
        assert_eq!(class, "invalid_command", "{message}");
        assert!(message.contains("not accepted from kcat"), "{message}");
    }
    assert!(bank.user(&alice).password_reset.is_none());

    // Death notifications through the bridge need the hmrc role and are keyed by NIN.
    bank.verify(&bob, IdentifierType::Nin, "AB123456C");
    let hmrc = keys.issue("hmrc-gateway", &["hmrc"], sluice_processors::jwt::TokenUse::Access, bank.now_ms, 900, "h1").unwrap();
    let notice = r#"{"payload": {"type": "DeathNotification", "nin": "ab 12 34 56 c", "date_of_death": "2026-11-20", "reference": "HMRC-1"}}"#;
    bank.driver.pipe_input("hmrc.death.notification.json", json_record(&bank, None, notice, Some(&hmrc))).unwrap();
    assert_eq!(bank.user(&bob).status, UserStatus::Deceased);
}

// ---------------------------------------------------------------- payments, notifications, password reset

impl Bank {
    /// `user_id`'s payment records, newest first (as `GET /v1/payments` lists them).
    fn payments(&self, user_id: &str) -> Vec<PaymentRecord> {
        let prefix = payments::records_prefix(user_id);
        self.driver
            .store_entries("payments")
            .unwrap()
            .into_iter()
            .filter(|(k, _)| k.starts_with(prefix.as_bytes()))
            .map(|(_, v)| serde_json::from_slice(&v).unwrap())
            .collect()
    }

    fn payment_record(&self, user_id: &str, payment_id: &str) -> PaymentRecord {
        self.payments(user_id).into_iter().find(|p| p.payment_id == payment_id).unwrap_or_else(|| panic!("{user_id} has no payment {payment_id}"))
    }

    /// (payment id, event type, status) of every `payments.events` record about `payment_id`.
    fn payment_events(&self, payment_id: &str) -> Vec<(PaymentEventType, String)> {
        self.outputs::<PaymentEvent>("payments.events").into_iter().filter(|e| e.payment_id == payment_id).map(|e| (e.event_type, e.status)).collect()
    }

    fn notifications(&self, user_id: &str) -> (NotificationsMeta, Vec<StoredNotification>) {
        let meta = self.load::<NotificationsMeta>("notifications", &notifications::meta_key(user_id), user_id).unwrap_or_default();
        let prefix = notifications::entries_prefix(user_id);
        let entries = self
            .driver
            .store_entries("notifications")
            .unwrap()
            .into_iter()
            .filter(|(k, _)| k.starts_with(prefix.as_bytes()))
            .map(|(_, v)| serde_json::from_slice(&v).unwrap())
            .collect();
        (meta, entries)
    }
}

#[test]
fn accounts_hold_a_balance_per_currency_and_nothing_converts() {
    let mut bank = Bank::new("currencies");
    let alice = bank.basic_user("alice@example.com");
    let bob = bank.basic_user("bob@example.com");
    let money = |amount: &str, currency: &str| (gbp(amount), currency.to_string());
    let deposit = |bank: &mut Bank, user: &str, (amount, currency): (Decimal, String)| {
        bank.payment_as(user, service("operator"), PaymentPayload::Deposit(Deposit { amount, currency, reference: None }), None)
    };
    let transfer = |bank: &mut Bank, (amount, currency): (Decimal, String)| {
        let payee_user_id = bob.clone();
        bank.payment(&alice, PaymentPayload::Transfer(Transfer { payee_user_id, amount, currency, reference: None }))
    };
    deposit(&mut bank, &alice, money("100.00", "GBP"));
    deposit(&mut bank, &alice, money("50.00", "EUR"));
    deposit(&mut bank, &alice, money("5000", "JPY"));
    let euros = transfer(&mut bank, money("20.00", "EUR"));
    assert_eq!(bank.status(&alice, &euros).status, CommandState::Settled);
    let account = bank.account(&alice);
    assert_eq!((account.balance_in("GBP"), account.balance_in("EUR"), account.balance_in("JPY")), (gbp("100.00"), gbp("30.00"), gbp("5000")));
    assert_eq!((bank.account(&bob).balance_in("EUR"), bank.account(&bob).balance_in("GBP")), (gbp("20.00"), gbp("0.00")));
    // Pounds do not pay for euros; yen have no minor unit; francs are not held here.
    let short = transfer(&mut bank, money("40.00", "EUR"));
    assert_eq!(bank.rejected_with(&alice, &short), reasons::INSUFFICIENT_FUNDS);
    assert!(bank.status(&alice, &short).detail.unwrap().contains("30.00 EUR"));
    let fraction = transfer(&mut bank, money("1.5", "JPY"));
    assert_eq!(bank.rejected_with(&alice, &fraction), reasons::INVALID_AMOUNT);
    let francs = transfer(&mut bank, money("1.00", "CHF"));
    assert_eq!(bank.rejected_with(&alice, &francs), reasons::UNSUPPORTED_CURRENCY);
    // A refund is in the transfer's currency.
    let wrong = bank.payment(&bob, PaymentPayload::Refund(Refund { payment_id: euros.clone(), amount: gbp("5.00"), currency: "GBP".into(), reason: None }));
    assert_eq!(bank.rejected_with(&bob, &wrong), reasons::CURRENCY_MISMATCH);
    let right = bank.payment(&bob, PaymentPayload::Refund(Refund { payment_id: euros.clone(), amount: gbp("5.00"), currency: "EUR".into(), reason: None }));
    assert_eq!(bank.status(&bob, &right).status, CommandState::Settled);
    assert_eq!((bank.account(&alice).balance_in("EUR"), bank.account(&bob).balance_in("EUR")), (gbp("35.00"), gbp("15.00")));
    // The ledger says which currency each line is in, and the balance after in that currency.
    let ledger = bank.ledger(&alice);
    let refund_line = ledger.iter().find(|e| e.command_id == right).unwrap();
    assert_eq!((refund_line.currency.as_deref(), refund_line.balance_after), (Some("EUR"), gbp("35.00")));
    assert_eq!(bank.payment_record(&alice, &euros).currency, "EUR");
}

#[test]
fn payments_have_a_lifecycle_with_one_event_per_transition() {
    use PaymentEventType::{Completed, Created, Failed, Refunded};
    let mut bank = Bank::new("lifecycle");
    let alice = bank.basic_user("alice@example.com");
    let bob = bank.basic_user("bob@example.com");
    let deposit = bank.deposit(&alice, "100.00");
    let record = bank.payment_record(&alice, &deposit);
    assert_eq!((record.direction, record.status, record.amount), (PaymentDirection::Incoming, PaymentStatus::Completed, gbp("100.00")));
    assert_eq!(bank.payment_events(&deposit), vec![(Created, "pending".to_string()), (Completed, "completed".to_string())]);

    // A transfer: pending while its credit leg travels, completed once the payee is credited;
    // the payee gets an incoming record.
    let transfer = bank.transfer(&alice, &bob, "30.00");
    let sent = bank.payment_record(&alice, &transfer);
    assert_eq!((sent.direction, sent.status, sent.counterparty.as_deref()), (PaymentDirection::Outgoing, PaymentStatus::Completed, Some(bob.as_str())));
    let received = bank.payment_record(&bob, &transfer);
    assert_eq!((received.direction, received.status, received.counterparty.as_deref()), (PaymentDirection::Incoming, PaymentStatus::Completed, Some(alice.as_str())));
    assert_eq!(bank.payment_events(&transfer), vec![(Created, "pending".to_string()), (Completed, "completed".to_string())]);
    let keyed_by_payer = bank.driver.records("payments.events").iter().filter(|r| r.value.avro_as::<PaymentEvent>().is_some_and(|e| e.payment_id == transfer)).all(|r| r.key.as_deref() == Some(alice.as_str()));
    assert!(keyed_by_payer, "payments.events is keyed by the payer");

    // Refunded in two parts: partially, then fully; one REFUNDED event of the transfer each,
    // and the refunds are payments of their own.
    let first = bank.refund(&bob, &transfer, "10.00");
    assert_eq!(bank.payment_record(&bob, &first).refund_of.as_deref(), Some(transfer.as_str()));
    let after_first = bank.payment_record(&alice, &transfer);
    assert_eq!((after_first.status, after_first.refunded_amount), (PaymentStatus::PartiallyRefunded, gbp("10.00")));
    assert_eq!(bank.payment_record(&bob, &transfer).refunded_amount, gbp("10.00"), "the payee's record counts the refund too");
    let second = bank.refund(&bob, &transfer, "20.00");
    let after_second = bank.payment_record(&alice, &transfer);
    assert_eq!((after_second.status, after_second.refunded_amount), (PaymentStatus::Refunded, gbp("30.00")));
    let refunded: Vec<Option<Decimal>> = bank.outputs::<PaymentEvent>("payments.events").into_iter().filter(|e| e.payment_id == transfer && e.event_type == Refunded).map(|e| e.refunded_amount).collect();
    assert_eq!(refunded, vec![Some(gbp("10.00")), Some(gbp("30.00"))]);
    assert_eq!(bank.payment_events(&first), vec![(Created, "pending".to_string()), (Completed, "completed".to_string())]);

    // Failures: refused at once, or returned after the debit.
    let too_much = bank.withdraw(&alice, "1000.00");
    let failed = bank.payment_record(&alice, &too_much);
    assert_eq!((failed.status, failed.reason.as_deref()), (PaymentStatus::Failed, Some(reasons::INSUFFICIENT_FUNDS)));
    assert_eq!(bank.payment_events(&too_much), vec![(Created, "pending".to_string()), (Failed, "failed".to_string())]);
    let nobody = model::user_id_for_email("nobody@example.com");
    let returned = bank.transfer(&alice, &nobody, "5.00");
    assert_eq!(bank.payment_record(&alice, &returned).reason.as_deref(), Some(reasons::PAYEE_UNKNOWN));
    assert_eq!(bank.payment_events(&returned), vec![(Created, "pending".to_string()), (Failed, "failed".to_string())]);
    assert!(bank.payments(&nobody).is_empty());

    // Newest first, every payment of the user once.
    let listed: Vec<String> = bank.payments(&alice).into_iter().map(|p| p.payment_id).collect();
    // The refunds Alice received are hers too, as incoming payments.
    assert_eq!(listed, vec![returned, too_much, second.clone(), first.clone(), transfer, deposit]);
    assert_eq!(bank.payment_record(&alice, &second).direction, PaymentDirection::Incoming);
    // Commands refused because their sender may not act on the account leave the holder no
    // record, even sent twice with one Idempotency-Key (the second is not a duplicate of Alice's).
    let listed_before = bank.payments(&alice).len();
    for _ in 0..2 {
        let forged = bank.payment_as(&alice, user_principal(&bob, bank.now_ms), PaymentPayload::Withdrawal(Withdrawal { amount: gbp("1.00"), currency: "GBP".into(), reference: Some("phishing".into()) }), Some("k"));
        assert_eq!(bank.rejected_with(&alice, &forged), reasons::FORBIDDEN);
    }
    assert_eq!(bank.payments(&alice).len(), listed_before, "nothing written to Alice's payments");
    assert!(bank.payments(&alice).iter().all(|p| p.reference.as_deref() != Some("phishing")));
}

#[test]
fn notifications_are_kept_per_user_with_sequence_numbers_and_read_marks() {
    let mut bank = Bank::new("notices");
    let alice = bank.basic_user("alice@example.com");
    let bob = bank.basic_user("bob@example.com");
    for amount in ["1.00", "2.00", "3.00"] {
        bank.deposit(&alice, amount);
    }
    let (meta, entries) = bank.notifications(&alice);
    // kyc_basic at sign-up, then the three deposits; newest first.
    let sequences: Vec<i64> = entries.iter().map(|e| e.sequence).collect();
    assert_eq!((meta.last_sequence, sequences), (4, vec![4, 3, 2, 1]));
    assert_eq!(entries[0].kind, "deposit_received");
    assert!(entries[0].message.contains("3.00"), "{}", entries[0].message);
    // The topic's records carry the same numbers.
    let on_topic: Vec<Option<i64>> = bank.outputs::<Notification>("notifications").into_iter().filter(|n| n.user_id == alice).map(|n| n.sequence).collect();
    assert_eq!(on_topic, vec![Some(1), Some(2), Some(3), Some(4)]);

    let mark = |bank: &mut Bank, up_to: Option<i64>, sequences: Vec<i64>| {
        let principal = user_principal(&alice, bank.now_ms);
        bank.auth(&alice, principal, AuthPayload::MarkNotificationsRead(MarkNotificationsRead { up_to_sequence: up_to, sequences }))
    };
    let id = mark(&mut bank, Some(2), vec![4]);
    assert_eq!(bank.status(&alice, &id).status, CommandState::Settled);
    let (meta, entries) = bank.notifications(&alice);
    let read: Vec<(i64, bool)> = entries.iter().map(|e| (e.sequence, e.is_read(&meta))).collect();
    assert_eq!(read, vec![(4, true), (3, false), (2, true), (1, true)]);
    // The watermark never moves back, nor past the newest.
    mark(&mut bank, Some(1), Vec::new());
    assert_eq!(bank.notifications(&alice).0.read_up_to, 2);
    mark(&mut bank, Some(99), Vec::new());
    assert_eq!(bank.notifications(&alice).0.read_up_to, 4);
    // Nobody marks another user's notifications.
    let (before_bob, _) = bank.notifications(&bob);
    let id = bank.auth(&bob, user_principal(&alice, bank.now_ms), AuthPayload::MarkNotificationsRead(MarkNotificationsRead { up_to_sequence: Some(9), sequences: Vec::new() }));
    assert_eq!(bank.rejected_with(&bob, &id), reasons::FORBIDDEN);
    assert_eq!(bank.notifications(&bob).0, before_bob);
}

#[test]
fn only_the_newest_notifications_are_kept() {
    let mut bank = Bank::new("notices-kept");
    let alice = bank.basic_user("alice@example.com");
    let extra = 3;
    for _ in 0..(notifications::KEPT_PER_USER - 1 + extra) {
        bank.deposit(&alice, "0.01");
    }
    let (meta, entries) = bank.notifications(&alice);
    assert_eq!(meta.last_sequence, notifications::KEPT_PER_USER + extra);
    assert_eq!(entries.len() as i64, notifications::KEPT_PER_USER);
    assert_eq!(entries.last().unwrap().sequence, extra + 1, "the oldest were dropped");
}

#[test]
fn a_password_reset_takes_a_single_use_token_before_it_expires() {
    let mut bank = Bank::new("reset");
    let alice = bank.basic_user("alice@example.com");
    let anonymous = Principal { subject: alice.clone(), roles: Vec::new(), token_issued_at: TimestampMillis(0) };
    let new_hash = HASH.replace("t=2", "t=3");
    let request = |bank: &mut Bank, hash: &str, expires_in_ms: i64| {
        let expires_at = TimestampMillis(bank.now_ms + expires_in_ms);
        bank.auth(&alice, anonymous.clone(), AuthPayload::RequestPasswordReset(RequestPasswordReset { token_sha256: hash.to_string(), expires_at }))
    };
    let confirm = |bank: &mut Bank, hash: &str| {
        bank.auth(&alice, anonymous.clone(), AuthPayload::ConfirmPasswordReset(ConfirmPasswordReset { token_sha256: hash.to_string(), password_hash: new_hash.clone() }))
    };
    let id = request(&mut bank, "aa11", 60_000);
    assert_eq!(bank.status(&alice, &id).status, CommandState::Settled);
    assert_eq!(bank.user(&alice).password_hash, HASH, "asking changes nothing yet");
    assert!(bank.notifications(&alice).1.iter().any(|n| n.kind == "password_reset_requested"));

    let wrong = confirm(&mut bank, "bb22");
    assert_eq!(bank.rejected_with(&alice, &wrong), reasons::INVALID_RESET_TOKEN);
    let revoked_before = bank.user(&alice).tokens_valid_after_ms;
    let done = confirm(&mut bank, "aa11");
    assert_eq!(bank.status(&alice, &done).status, CommandState::Settled);
    let user = bank.user(&alice);
    assert_eq!(user.password_hash, new_hash);
    assert!(user.tokens_valid_after_ms > revoked_before, "every session is revoked");
    assert!(bank.notifications(&alice).1.iter().any(|n| n.kind == "password_reset"));
    let again = confirm(&mut bank, "aa11");
    assert_eq!(bank.rejected_with(&alice, &again), reasons::RESET_TOKEN_USED);

    // Expired: the confirmation's time is after the token's.
    request(&mut bank, "cc33", 500);
    let late = confirm(&mut bank, "cc33");
    assert_eq!(bank.rejected_with(&alice, &late), reasons::RESET_TOKEN_EXPIRED);

    // Only the API's anonymous form counts: a user's own token cannot ask for a reset.
    let as_user = bank.auth(&alice, user_principal(&alice, bank.now_ms), AuthPayload::RequestPasswordReset(RequestPasswordReset { token_sha256: "dd44".into(), expires_at: TimestampMillis(bank.now_ms + 60_000) }));
    assert_eq!(bank.rejected_with(&alice, &as_user), reasons::FORBIDDEN);
}

// ---------------------------------------------------------------- property: the ledger invariants

#[derive(Debug, Clone)]
enum Op {
    Register(usize),
    Profile(usize),
    Deposit(usize, i64),
    Transfer(usize, usize, i64),
    Withdraw(usize, i64),
    /// Refund by the payee of the n-th transfer so far, in hundredths of its amount.
    Refund(usize, i64),
    Verify(usize, usize),
    Death(usize),
}

const USERS: usize = 4;
const NINS: [&str; 3] = ["AB123456C", "JG103759A", "CE000001A"];

fn op() -> impl Strategy<Value = Op> {
    let user = 0..USERS;
    let cents = 1i64..200_000;
    // Weighted so that most sequences have active users with money to move.
    prop_oneof![
        2 => user.clone().prop_map(Op::Register),
        2 => user.clone().prop_map(Op::Profile),
        3 => (user.clone(), cents.clone()).prop_map(|(u, c)| Op::Deposit(u, c)),
        5 => (user.clone(), user.clone(), cents.clone()).prop_map(|(a, b, c)| Op::Transfer(a, b, c)),
        1 => (user.clone(), cents).prop_map(|(u, c)| Op::Withdraw(u, c)),
        2 => (0usize..8, 1i64..=100).prop_map(|(n, p)| Op::Refund(n, p)),
        1 => (user.clone(), 0..NINS.len()).prop_map(|(u, n)| Op::Verify(u, n)),
        1 => (0..NINS.len()).prop_map(Op::Death),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn money_is_conserved_and_every_command_has_one_outcome(ops in proptest::collection::vec(op(), 1..80)) {
        let mut bank = Bank::new("property");
        let emails: Vec<String> = (0..USERS).map(|i| format!("user{i}@example.com")).collect();
        let ids: Vec<String> = emails.iter().map(|e| model::user_id_for_email(e)).collect();
        let mut deposited = Decimal::ZERO;
        let mut withdrawn = Decimal::ZERO;
        let mut commands: Vec<(String, String)> = Vec::new();
        let mut transfers: Vec<(String, String, Decimal)> = Vec::new();
        // Balance of each deceased user when the death was processed.
        let mut deceased_balance: Vec<(String, Decimal)> = Vec::new();
        for op in ops {
            let command = match op {
                Op::Register(u) => {
                    let payload = AuthPayload::RegisterUser(RegisterUser { email: emails[u].clone(), password_hash: HASH.into(), full_name: None, date_of_birth: None, phone_number: None, identity: None });
                    (ids[u].clone(), bank.auth(&ids[u], user_principal(&ids[u], 0), payload))
                }
                Op::Profile(u) => (ids[u].clone(), bank.profile(&ids[u], "Someone", born_adult())),
                Op::Deposit(u, c) => {
                    let id = bank.deposit(&ids[u], &Decimal::new(c, 2).to_string());
                    if bank.status(&ids[u], &id).status == CommandState::Settled { deposited += Decimal::new(c, 2); }
                    (ids[u].clone(), id)
                }
                Op::Transfer(a, b, c) => {
                    let id = bank.transfer(&ids[a], &ids[b], &Decimal::new(c, 2).to_string());
                    transfers.push((id.clone(), ids[b].clone(), Decimal::new(c, 2)));
                    (ids[a].clone(), id)
                }
                Op::Withdraw(u, c) => {
                    let id = bank.withdraw(&ids[u], &Decimal::new(c, 2).to_string());
                    if bank.status(&ids[u], &id).status == CommandState::Settled { withdrawn += Decimal::new(c, 2); }
                    (ids[u].clone(), id)
                }
                Op::Refund(n, percent) => {
                    let Some((payment, payee, amount)) = transfers.get(n).cloned() else { continue };
                    let refund = (amount * Decimal::new(percent, 2)).round_dp(2).max(Decimal::new(1, 2));
                    (payee.clone(), bank.refund(&payee, &payment, &refund.to_string()))
                }
                Op::Verify(u, n) => (ids[u].clone(), bank.verify(&ids[u], IdentifierType::Nin, NINS[n])),
                Op::Death(n) => {
                    bank.death(service("hmrc"), NINS[n]);
                    for id in &ids {
                        let dead = bank.load::<User>("users", id, id).is_some_and(|u| u.status == UserStatus::Deceased);
                        if dead && !deceased_balance.iter().any(|(d, _)| d == id) {
                            deceased_balance.push((id.clone(), bank.balance(id)));
                        }
                    }
                    continue;
                }
            };
            commands.push(command);
            // After every command: no balance is negative, nothing left a deceased account.
            for id in &ids {
                prop_assert!(!bank.balance(id).is_sign_negative(), "negative balance for {id}");
            }
            for (id, balance) in &deceased_balance {
                prop_assert!(bank.balance(id) >= *balance, "money left deceased {id}");
            }
        }
        // Money is conserved: balances + in flight = deposits - withdrawals.
        let total: Decimal = ids.iter().map(|id| bank.balance(id)).sum();
        let in_flight: Decimal = bank
            .driver
            .store_entries("payments")
            .unwrap()
            .into_iter()
            .filter(|(k, _)| k.starts_with(b"out/"))
            .map(|(_, v)| serde_json::from_slice::<model::OutgoingPayment>(&v).unwrap())
            .filter(|p| p.state == model::PaymentState::InFlight)
            .map(|p| p.amount)
            .sum();
        prop_assert_eq!(in_flight, Decimal::ZERO, "the driver drains every leg");
        prop_assert_eq!(total + in_flight, deposited - withdrawn);
        // Every command has exactly one final outcome, and one audit record.
        let activity = bank.outputs::<ActivityLog>("system.logs.activity");
        for (user, id) in &commands {
            let status = bank.status(user, id);
            prop_assert!(status.status != CommandState::Pending, "{id} is still pending");
            prop_assert_eq!(activity.iter().filter(|a| &a.command_id == id).count(), 1, "{} audit records", id);
        }
        let settled = bank.outputs::<PaymentSettled>("payments.settled");
        let rejected = bank.outputs::<PaymentRejected>("payments.rejected");
        for s in &settled {
            prop_assert!(!rejected.iter().any(|r| r.command_id == s.command_id), "{} both settled and rejected", s.command_id);
            prop_assert_eq!(settled.iter().filter(|o| o.command_id == s.command_id).count(), 1);
        }
    }
}
