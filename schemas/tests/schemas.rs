//! The `.avsc` files are the source of truth: the schema derived from each Rust type must equal
//! its file exactly (names, field order, types, logical types, defaults and docs).

use sluice_schemas::types::derived_schemas;
use sluice_schemas::{schema_text, SCHEMA_FILES};

#[test]
fn derived_schemas_equal_files() {
    let derived = derived_schemas();
    assert_eq!(derived.len(), SCHEMA_FILES.len(), "every schema file has a Rust type");
    for (stem, derived_json) in derived {
        let file_json: serde_json::Value = serde_json::from_str(schema_text(stem).unwrap())
            .unwrap_or_else(|e| panic!("{stem}.avsc is not JSON: {e}"));
        if std::env::var_os("SLUICE_WRITE_SCHEMAS").is_some() {
            let path = format!("{}/avro/{stem}.avsc", env!("CARGO_MANIFEST_DIR"));
            std::fs::write(&path, serde_json::to_string_pretty(&derived_json).unwrap() + "\n").unwrap();
            continue;
        }
        assert_eq!(file_json, derived_json, "{stem}.avsc differs from the Rust type");
        apache_avro::Schema::parse(&file_json).unwrap_or_else(|e| panic!("{stem}.avsc does not parse: {e}"));
    }
}

// ---------------------------------------------------------------- codec against a real registry

use std::process::Command;
use std::sync::OnceLock;

use rust_decimal::Decimal;
use sluice_registry::{Registry, RegistryConfig};
use sluice_schemas::types::*;
use sluice_schemas::{AvroRecord, Blob, Codec, CodecError, Date, SchemaError, TimestampMillis};

/// One registry per test binary, on the binary's private broker.
fn registry_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let broker = sluice_testkit::broker();
        // The registry outlives every test: it runs on its own runtime thread.
        let (tx, rx) = std::sync::mpsc::channel();
        let bootstrap = broker.bootstrap_servers();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                let registry = Registry::start(RegistryConfig {
                    bootstrap_servers: bootstrap,
                    listen: "127.0.0.1:0".parse().unwrap(),
                    topic: "_schemas".to_string(),
                    write_credentials: None,
        client_properties: Vec::new(),
                })
                .await
                .expect("registry starts");
                tx.send(registry.url()).unwrap();
                std::future::pending::<()>().await;
            });
        });
        rx.recv().expect("registry url")
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn money(minor: i64) -> Decimal {
    Decimal::new(minor, 2)
}

fn principal() -> Principal {
    Principal { subject: "user-1".into(), roles: vec!["user".into()], token_issued_at: TimestampMillis(1_760_000_000_000) }
}

fn payment(event_id: &str, payload: PaymentPayload) -> PaymentCommand {
    PaymentCommand { event_id: event_id.into(), occurred_at: TimestampMillis(1_760_000_000_123), principal: principal(), idempotency_key: Some("k-1".into()), payload }
}

fn sample_payments() -> Vec<PaymentCommand> {
    vec![
        payment("c-1", PaymentPayload::Transfer(Transfer { payee_user_id: "user-2".into(), amount: money(123_456), currency: "GBP".into(), reference: Some("rent".into()) })),
        payment("c-2", PaymentPayload::Deposit(Deposit { amount: money(1), currency: "GBP".into(), reference: None })),
        payment("c-3", PaymentPayload::Withdrawal(Withdrawal { amount: money(999_999_999_999_999_999), currency: "GBP".into(), reference: None })),
        payment("c-4", PaymentPayload::Refund(Refund { payment_id: "c-1".into(), amount: money(12_800), currency: "GBP".into(), reason: None })),
    ]
}

fn sample_auth() -> Vec<AuthCommand> {
    let command = |id: &str, payload| AuthCommand { event_id: id.into(), occurred_at: TimestampMillis(0), principal: principal(), idempotency_key: None, payload };
    vec![
        command("a-1", AuthPayload::RegisterUser(RegisterUser { email: "Ada@Example.com".into(), password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(), full_name: None, date_of_birth: None, phone_number: None, identity: None })),
        command("a-2", AuthPayload::UpdateProfile(UpdateProfile { full_name: Some("Ada Lovelace".into()), date_of_birth: Date::from_ymd(1815, 12, 10) })),
        command("a-3", AuthPayload::RevokeSessions(RevokeSessions { reason: Some("logout".into()) })),
    ]
}

fn sample_accounts() -> Vec<AccountEvent> {
    vec![
        AccountEvent { event_id: "e-1".into(), occurred_at: TimestampMillis(5), user_id: "u".into(), causation_id: "c".into(), payload: AccountEventPayload::AccountOpened(AccountOpened { currency: "GBP".into(), opening_balance: money(-1_230) }) },
        AccountEvent { event_id: "e-2".into(), occurred_at: TimestampMillis(6), user_id: "u".into(), causation_id: "c".into(), payload: AccountEventPayload::AccountFrozen(AccountFrozen { reason: "deceased".into(), date_of_death: Date::from_ymd(2024, 2, 29) }) },
    ]
}

fn sample_dead_letters() -> Vec<DeadLetter> {
    vec![DeadLetter { event_id: "t-0-7".into(), occurred_at: TimestampMillis(9), source_topic: "t".into(), source_partition: 0, source_offset: 7, error_class: "deserialization".into(), error_message: "bad".into(), key: Some(Blob(b"k".to_vec())), value: Some(Blob(vec![0xff, 0x00, 0x80])) }]
}

fn sample_identity() -> Vec<IdentityVerificationResult> {
    vec![IdentityVerificationResult { event_id: "r-1".into(), occurred_at: TimestampMillis(1), command_id: "v-1".into(), user_id: "u".into(), identifier_type: IdentifierType::Nhs, identifier: "9434765919".into(), outcome: VerificationOutcome::Rejected, reason: Some("already_claimed".into()) }]
}

#[test]
fn round_trip_through_the_registry() {
    let codec = Codec::new(registry_url(), None).unwrap();
    runtime().block_on(async {
        for record in sample_payments() {
            let bytes = codec.encode("payments.commands", &record).await.unwrap();
            assert_eq!(bytes[0], 0, "magic byte");
            assert_eq!(codec.decode::<PaymentCommand>(&bytes).await.unwrap(), record);
        }
        for record in sample_auth() {
            let bytes = codec.encode("auth.commands", &record).await.unwrap();
            assert_eq!(codec.decode::<AuthCommand>(&bytes).await.unwrap(), record);
        }
        // The first encode goes through the converter (registering), later ones frame the datum
        // from the cached writer schema: the bytes are the same.
        let record = &sample_payments()[0];
        let fresh = Codec::new(registry_url(), None).unwrap().encode("payments.commands", record).await.unwrap();
        assert_eq!(codec.encode("payments.commands", record).await.unwrap(), fresh);
    });
}

#[test]
fn typed_errors_for_bad_payloads() {
    let codec = Codec::new(registry_url(), None).unwrap();
    runtime().block_on(async {
        assert!(matches!(codec.decode::<PaymentCommand>(&[0, 0, 1]).await, Err(CodecError::TooShort { len: 3 })));
        assert!(matches!(codec.decode::<PaymentCommand>(b"{\"json\": true}").await, Err(CodecError::WrongMagicByte { found: b'{' })));
        assert!(matches!(codec.decode::<PaymentCommand>(&[0, 0, 0, 0x7f, 0xff, 2]).await, Err(CodecError::UnknownSchemaId { id: 0x7fff })));
        let good = codec.encode("payments.commands", &sample_payments()[0]).await.unwrap();
        // A valid header with a datum cut inside its required fields, then with trailing garbage.
        let truncated = &good[..12];
        let result = codec.decode::<PaymentCommand>(truncated).await;
        assert!(matches!(result, Err(CodecError::DatumMismatch { .. })), "truncated: {result:?}");
        let mut trailing = good.clone();
        trailing.extend_from_slice(&[1, 2, 3]);
        assert!(matches!(codec.decode::<PaymentCommand>(&trailing).await, Err(CodecError::DatumMismatch { .. })), "trailing bytes");
        // A payment command's bytes read as a different record type do not resolve.
        assert!(matches!(codec.decode::<DeadLetter>(&good).await, Err(CodecError::DatumMismatch { .. })), "wrong record type");
        // Over-precise amounts are refused before anything is written.
        let mut precise = sample_payments()[1].clone();
        precise.payload = PaymentPayload::Deposit(Deposit { amount: Decimal::new(1_001, 3), currency: "GBP".into(), reference: None });
        assert!(matches!(codec.encode("payments.commands", &precise).await, Err(CodecError::Value(SchemaError::InvalidMoney(_)))));
    });
}

#[test]
fn unreachable_registry_is_retriable() {
    let codec = Codec::new(&format!("http://127.0.0.1:{}", sluice_testkit::free_port()), None).unwrap();
    let error = runtime().block_on(codec.decode::<PaymentCommand>(&[0, 0, 0, 0, 1, 2])).unwrap_err();
    assert!(matches!(error, CodecError::RegistryUnavailable(_)), "{error:?}");
    assert!(!error.is_poison());
}

/// One record to check both ways: bytes written by this codec must decode with fastavro, and
/// fastavro's bytes must decode with this codec.
struct Case {
    stem: &'static str,
    expected: serde_json::Value,
    ours: Vec<u8>,
}

async fn case<T: AvroRecord + serde::Serialize>(codec: &Codec, topic: &str, record: &T) -> Case {
    Case { stem: T::SCHEMA_FILE, expected: serde_json::to_value(record).unwrap(), ours: codec.encode(topic, record).await.unwrap() }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn cross_language_round_trip_with_fastavro() {
    let url = registry_url();
    let codec = Codec::new(url, None).unwrap();
    let mut cases = Vec::new();
    runtime().block_on(async {
        for r in sample_payments() {
            cases.push(case(&codec, "payments.commands", &r).await);
        }
        for r in sample_auth() {
            cases.push(case(&codec, "auth.commands", &r).await);
        }
        for r in sample_accounts() {
            cases.push(case(&codec, "accounts.events", &r).await);
        }
        for r in sample_dead_letters() {
            cases.push(case(&codec, "sluice.dlq", &r).await);
        }
        for r in sample_identity() {
            cases.push(case(&codec, "identity.verification.result", &r).await);
        }
    });
    let input: Vec<serde_json::Value> = cases
        .iter()
        .map(|c| serde_json::json!({"schema_file": c.stem, "expected": c.expected, "payload_hex": hex(&c.ours)}))
        .collect();
    let dir = std::env::temp_dir().join(format!("sluice-fastavro-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (input_path, output_path) = (dir.join("in.json"), dir.join("out.json"));
    std::fs::write(&input_path, serde_json::to_string(&input).unwrap()).unwrap();
    let python = std::env::var("SLUICE_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fastavro_roundtrip.py");
    let output = Command::new(&python)
        .args([script, url, input_path.to_str().unwrap(), output_path.to_str().unwrap()])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert!(
        output.status.success(),
        "fastavro check failed (needs fastavro: scripts/test installs it into .venv and sets SLUICE_PYTHON)\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let theirs: Vec<String> = serde_json::from_str(&std::fs::read_to_string(&output_path).unwrap()).unwrap();
    assert_eq!(theirs.len(), cases.len());
    runtime().block_on(async {
        for (case, payload) in cases.iter().zip(&theirs) {
            let bytes = unhex(payload);
            let decoded = match case.stem {
                "payment_command" => serde_json::to_value(codec.decode::<PaymentCommand>(&bytes).await.unwrap()),
                "auth_command" => serde_json::to_value(codec.decode::<AuthCommand>(&bytes).await.unwrap()),
                "account_event" => serde_json::to_value(codec.decode::<AccountEvent>(&bytes).await.unwrap()),
                "dead_letter" => serde_json::to_value(codec.decode::<DeadLetter>(&bytes).await.unwrap()),
                "identity_verification_result" => serde_json::to_value(codec.decode::<IdentityVerificationResult>(&bytes).await.unwrap()),
                other => panic!("no decoder for {other}"),
            }
            .unwrap();
            assert_eq!(decoded, case.expected, "fastavro-written {} decodes to the same record", case.stem);
        }
    });
    std::fs::remove_dir_all(dir).unwrap();
}
