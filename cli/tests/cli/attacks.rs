//! The attack suite against the running stack, from a plain librdkafka client (docs/security.md):
//! what someone with a broker client tries behind the HTTP API's back. Called by the API test,
//! on its stack, once Alice has a deposit, a NIN and a transfer.

use super::*;

use rust_decimal::Decimal;
use sluice_schemas::types::DeadLetter;
use sluice_streams::now_ms;
use sluice_schemas::types::{DeathNotification, Deposit, HmrcCommand, HmrcPayload, LegType, PaymentCommand, PaymentKind, PaymentLeg, PaymentPayload, Principal};
use sluice_schemas::{Date, TimestampMillis};
use sluice_streams::signing::{InternalKeys, SIGNATURE_HEADER};

impl Pipeline {
    /// Produces `value` as it is, with `headers`, keyed by `key`.
    fn produce_raw(&self, topic: &str, key: &str, value: &[u8], headers: &[(&str, &[u8])]) {
        let mut owned = OwnedHeaders::new();
        for (name, value) in headers {
            owned = owned.insert(Header { key: name, value: Some(*value) });
        }
        self.producer.send(BaseRecord::to(topic).key(key).payload(value).headers(owned)).map_err(|(e, _)| e).unwrap();
        self.producer.flush(Duration::from_secs(10)).unwrap();
    }

    /// `record` Avro-encoded for `topic` through the stack's registry.
    fn encode<T: sluice_schemas::AvroRecord>(&self, topic: &str, record: &T) -> Vec<u8> {
        self.io.block_on(self.codec.encode(topic, record)).unwrap()
    }

    /// The dead letter of the record with `key` read from `topic`, once it is there.
    fn dead_letter_of(&self, topic: &str, key: &str) -> DeadLetter {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let found = self.decode_all::<DeadLetter>("sluice.dlq").into_iter().find(|d| d.source_topic == topic && d.key.as_ref().is_some_and(|k| k.0 == key.as_bytes()));
            if let Some(letter) = found {
                return letter;
            }
            assert!(Instant::now() < deadline, "no dead letter for `{key}` from {topic}");
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

fn principal(subject: &str, role: &str) -> Principal {
    Principal { subject: subject.to_string(), roles: vec![role.to_string()], token_issued_at: TimestampMillis(now_ms()) }
}

/// Forged commands and internal records, each dead-lettered with its class, none with an
/// effect. `alice` holds NIN AB123456C; `mallory` is the attacker's own account.
pub(super) fn forged_records_have_no_effect(p: &Pipeline, api: &api::Api<'_>, alice_token: &str, (mallory, mallory_token): (&str, &str)) {
    let balance_before = api.balance(mallory_token);
    let deposit = |event_id: &str| PaymentCommand {
        event_id: event_id.to_string(),
        occurred_at: TimestampMillis(now_ms()),
        principal: principal("ops", "operator"),
        idempotency_key: None,
        payload: PaymentPayload::Deposit(Deposit { amount: Decimal::new(100_000_000, 2), currency: "GBP".to_string(), reference: Some("from nowhere".to_string()) }),
    };

    // A genuine deposit (an operator's, to Alice), before anything forged is written.
    let (_, genuine, headers) = consume_raw(&p.servers, "payments.commands")
        .into_iter()
        .find(|(_, value, _)| p.io.block_on(p.codec.decode::<PaymentCommand>(value)).is_ok_and(|c| matches!(c.payload, PaymentPayload::Deposit(_))))
        .expect("a genuine deposit on payments.commands");
    let copied = headers.iter().find(|(k, _)| k == SIGNATURE_HEADER).map(|(_, v)| v.clone()).expect("genuine commands are signed");

    // 1. An operator deposit written straight to the command topic, unsigned.
    let value = p.encode("payments.commands", &deposit("forged-deposit"));
    p.produce_raw("payments.commands", mallory, &value, &[]);
    // 2. The same, signed with a key the attacker made up (named like the real one).
    let guessed = InternalKeys::new("i1", "the-attacker-guesses-a-key-of-32-chars", "").unwrap();
    let value = p.encode("payments.commands", &deposit("guessed-key-deposit"));
    let signature = guessed.sign_record("payments.commands", Some(mallory.as_bytes()), Some(&value));
    p.produce_raw("payments.commands", mallory, &value, &[(SIGNATURE_HEADER, &signature)]);
    // 3. A genuine signed command (an operator's deposit to Alice) copied and re-keyed to the
    //    attacker: its signature covers the key.
    p.produce_raw("payments.commands", mallory, &genuine, &[(SIGNATURE_HEADER, copied.as_bytes())]);
    // 4. A death notification for Alice's NIN, as if from HMRC.
    let notice = HmrcCommand {
        event_id: "forged-death".to_string(),
        occurred_at: TimestampMillis(now_ms()),
        principal: principal("hmrc-gateway", "hmrc"),
        idempotency_key: None,
        payload: HmrcPayload::DeathNotification(DeathNotification { nin: "AB123456C".to_string(), nhs_number: None, date_of_death: Date::from_ymd(2026, 1, 1).unwrap(), reference: "forged".to_string() }),
    };
    p.produce_raw("hmrc.death.notification", "NIN:AB123456C", &p.encode("hmrc.death.notification", &notice), &[]);
    // 5. A credit leg with no debit, on the credit repartition topic.
    let leg = PaymentLeg {
        event_id: "forged-leg:credit".to_string(),
        occurred_at: TimestampMillis(now_ms()),
        command_id: "forged-leg".to_string(),
        kind: PaymentKind::Transfer,
        leg: LegType::Credit,
        payer_user_id: "u_nobody".to_string(),
        payee_user_id: mallory.to_string(),
        amount: Decimal::new(100_000_000, 2),
        currency: "GBP".to_string(),
        reference: None,
        reason: None,
        refund_of: None,
    };
    let credit_topic = format!("{}-credit-repartition", p.application_id);
    p.produce_raw(&credit_topic, mallory, &p.encode(&credit_topic, &leg), &[]);

    // Each is dead-lettered before any processor sees it, with its class.
    let from_payments = api.wait_for("three forged payment commands in the DLQ", || {
        let letters: Vec<DeadLetter> = p.decode_all::<DeadLetter>("sluice.dlq").into_iter().filter(|d| d.source_topic == "payments.commands").collect();
        (letters.len() >= 3).then_some(letters)
    });
    assert_eq!(from_payments.len(), 3, "{from_payments:?}");
    assert!(from_payments.iter().all(|d| d.error_class == "forged_command"), "{from_payments:?}");
    let messages: Vec<&str> = from_payments.iter().map(|d| d.error_message.as_str()).collect();
    assert!(messages[0].contains("no sluice.signature header"), "{messages:?}");
    assert!(messages[1..].iter().all(|m| m.contains("does not match")), "{messages:?}");
    let death = p.dead_letter_of("hmrc.death.notification", "NIN:AB123456C");
    assert_eq!(death.error_class, "forged_command", "{death:?}");
    let credit = p.dead_letter_of(&credit_topic, mallory);
    assert_eq!(credit.error_class, "forged_record", "{credit:?}");

    // And none had an effect: they were refused before any processor saw them (the letters
    // above), Alice is active, the attacker's balance is as it was, no outcome was recorded.
    assert_eq!(api.get("/v1/auth/me", Some(alice_token)).at("/status"), "ACTIVE");
    assert_eq!(api.balance(mallory_token), balance_before, "no money from forged records");
    let outcomes = p.outcomes();
    for id in ["forged-deposit", "guessed-key-deposit", "forged-death", "forged-leg"] {
        assert!(!outcomes.contains_key(id), "{id} reached the pipeline");
    }
}

/// A service token revoked with `sluice revoke` is refused by the API (401 `token-revoked`) and
/// by the kcat bridge (dead-lettered `invalid_token`, `token_revoked`); a token of the same
/// subject issued afterwards works. Deposits go to `payee` (a user with a complete profile).
pub(super) fn a_revoked_service_token_is_refused_on_both_paths(p: &Pipeline, api: &api::Api<'_>, (payee, payee_token): (&str, &str)) {
    let balance = |amount: &str| (api.balance(payee_token).parse::<Decimal>().unwrap() + amount.parse::<Decimal>().unwrap()).to_string();
    let stolen = p.token("night-shift", "operator");
    let expected = balance("1.00");
    let deposit = api.command("/v1/deposits", &stolen, serde_json::json!({"user_id": payee, "amount": "1.00", "reference": "before the revocation"}));
    let outcome = api.outcome(&deposit, &stolen);
    assert_eq!(outcome["status"], "settled", "{outcome}");
    assert_eq!(api.balance(payee_token), expected);

    let revoked = sluice()
        .args(["revoke", "--subject", "night-shift", "--reason", "laptop stolen", "--state-dir"])
        .arg(p.dir.join("state"))
        .env("SLUICE__BOOTSTRAP_SERVERS", &p.servers)
        .env("SLUICE__APPLICATION_ID", &p.application_id)
        // The dev stack's own internal key signs the revocation (found beside its state dir).
        .env_remove("SLUICE__INTERNAL_KEY")
        .output()
        .unwrap();
    assert!(revoked.status.success(), "{}", text(&revoked.stderr));
    let refused = api.wait_for("the API refuses the revoked token", || {
        let answer = api.post("/v1/deposits", Some(&stolen), serde_json::json!({"user_id": payee, "amount": "1.00"}));
        (answer.status == 401).then_some(answer)
    });
    assert_eq!(refused.problem_type(), "token-revoked", "{}", refused.body);
    let json = r#"{"event_id": "dep-revoked", "payload": {"type": "Deposit", "amount": "1.00", "currency": "GBP"}}"#;
    p.send("payments.commands.json", Some(payee), Some(&stolen), json);
    let letter = api.wait_for("the bridge dead-letters the revoked token", || {
        p.decode_all::<DeadLetter>("sluice.dlq").into_iter().find(|d| d.source_topic == "payments.commands.json" && d.error_message.contains("token_revoked"))
    });
    assert_eq!(letter.error_class, "invalid_token", "{letter:?}");

    // A token issued after the revocation works; the revoked ones moved nothing.
    let fresh = p.token("night-shift", "operator");
    let expected = balance("2.00");
    let deposit = api.command("/v1/deposits", &fresh, serde_json::json!({"user_id": payee, "amount": "2.00", "reference": "after"}));
    assert_eq!(api.outcome(&deposit, &fresh)["status"], "settled");
    assert_eq!(api.balance(payee_token), expected, "only the fresh token's deposit landed");
}
