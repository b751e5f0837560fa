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
