//! UK identifiers: National Insurance numbers (HMRC's prefix and suffix rules) and NHS numbers
//! (ten digits with a modulus-11 check digit). Input may contain spaces; the normalised form
//! has none and is upper case.

use sluice_schemas::types::IdentifierType;

/// Letters HMRC never uses as either letter of a NIN prefix.
const NEVER_IN_PREFIX: &[char] = &['D', 'F', 'I', 'Q', 'U', 'V'];
/// Prefixes HMRC does not allocate.
const UNALLOCATED_PREFIXES: &[&str] = &["BG", "GB", "KN", "NK", "NT", "TN", "ZZ"];

/// Why an identifier is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentifierError {
    /// The shape is wrong (length, letters where digits belong, ...).
    #[error("{0}")]
    Format(String),
}

/// Validates and normalises `value` as an identifier of `kind`.
pub fn normalise(kind: IdentifierType, value: &str) -> Result<String, IdentifierError> {
    match kind {
        IdentifierType::Nin => normalise_nin(value),
        IdentifierType::Nhs => normalise_nhs(value),
    }
}

/// The identifier a death notification names, normalised: its NHS number when it gives one
/// (its NIN must then be empty), its NIN otherwise.
pub fn death_identifier(nin: &str, nhs_number: Option<&str>) -> Result<(IdentifierType, String), IdentifierError> {
    match nhs_number {
        Some(_) if !nin.trim().is_empty() => Err(IdentifierError::Format("a death notification names one identifier: a NIN or an NHS number, not both".to_string())),
        Some(nhs) => Ok((IdentifierType::Nhs, normalise_nhs(nhs)?)),
        None => Ok((IdentifierType::Nin, normalise_nin(nin)?)),
    }
}

/// A National Insurance number: two prefix letters (neither D, F, I, Q, U or V; the second
/// not O; not BG, GB, KN, NK, NT, TN or ZZ), six digits, and a suffix A, B, C or D.
pub fn normalise_nin(value: &str) -> Result<String, IdentifierError> {
    let nin: String = value.chars().filter(|c| *c != ' ').collect::<String>().to_ascii_uppercase();
    let chars: Vec<char> = nin.chars().collect();
    if chars.len() != 9 {
        return Err(IdentifierError::Format(format!("a National Insurance number has 9 characters, got {}", chars.len())));
    }
    let (first, second) = (chars[0], chars[1]);
    if !first.is_ascii_uppercase() || !second.is_ascii_uppercase() {
        return Err(IdentifierError::Format("a National Insurance number starts with two letters".to_string()));
    }
    if NEVER_IN_PREFIX.contains(&first) || NEVER_IN_PREFIX.contains(&second) || second == 'O' {
        return Err(IdentifierError::Format(format!("`{first}{second}` is not a valid National Insurance prefix")));
    }
    if UNALLOCATED_PREFIXES.contains(&&nin[..2]) {
        return Err(IdentifierError::Format(format!("prefix `{}` is not allocated", &nin[..2])));
    }
    if !chars[2..8].iter().all(char::is_ascii_digit) {
        return Err(IdentifierError::Format("a National Insurance number has six digits after the prefix".to_string()));
    }
    if !matches!(chars[8], 'A'..='D') {
        return Err(IdentifierError::Format(format!("suffix `{}` is not A, B, C or D", chars[8])));
    }
    Ok(nin)
}

/// An NHS number: ten digits, the last a modulus-11 check digit over the first nine
/// (weights 10 down to 2; 11 means 0; 10 means the number is invalid).
pub fn normalise_nhs(value: &str) -> Result<String, IdentifierError> {
    let nhs: String = value.chars().filter(|c| *c != ' ').collect();
    if nhs.len() != 10 || !nhs.chars().all(|c| c.is_ascii_digit()) {
        return Err(IdentifierError::Format("an NHS number has 10 digits".to_string()));
    }
    let digits: Vec<u32> = nhs.chars().map(|c| c.to_digit(10).expect("checked digits")).collect();
    let sum: u32 = digits[..9].iter().zip((2..=10).rev()).map(|(d, w)| d * w).sum();
    let check = match 11 - sum % 11 {
        11 => 0,
        10 => return Err(IdentifierError::Format("not a valid NHS number (no check digit exists for it)".to_string())),
        check => check,
    };
    if check != digits[9] {
        return Err(IdentifierError::Format("the NHS number's check digit is wrong".to_string()));
    }
    Ok(nhs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nins() {
        assert_eq!(normalise_nin("ab 12 34 56 c").unwrap(), "AB123456C");
        assert_eq!(normalise_nin("JG103759A").unwrap(), "JG103759A");
        for (bad, why) in [
            ("QQ123456C", "Q is never a prefix letter"),
            ("AD123456C", "D is never a prefix letter"),
            ("AO123456C", "O is never the second letter"),
            ("BG123456C", "unallocated prefix"),
            ("GB123456C", "unallocated prefix"),
            ("NK123456C", "unallocated prefix"),
            ("TN123456C", "unallocated prefix"),
            ("ZZ123456C", "unallocated prefix"),
            ("AB123456E", "suffix beyond D"),
            ("AB12345C", "too short"),
            ("AB1234567C", "too long"),
            ("A1123456C", "digit in prefix"),
            ("AB12E456C", "letter in digits"),
        ] {
            assert!(normalise_nin(bad).is_err(), "{bad}: {why}");
        }
    }

    #[test]
    fn nhs_numbers() {
        assert_eq!(normalise_nhs("943 476 5919").unwrap(), "9434765919");
        assert_eq!(normalise_nhs("4010232137").unwrap(), "4010232137");
        assert!(normalise_nhs("9434765918").unwrap_err().to_string().contains("check digit"));
        assert!(normalise_nhs("943476591").is_err(), "nine digits");
        assert!(normalise_nhs("94347659 1X").is_err(), "a letter");
        // Weighted sum 2 (only the ninth digit, weight 2): check digit 11 - 2 = 9.
        assert!(normalise_nhs("0000000019").is_ok());
        // Weighted sum 12 (1 x 10 + 1 x 2): 11 - 1 = 10, which no digit can be.
        assert!(normalise_nhs("1000000010").unwrap_err().to_string().contains("no check digit"));
    }
}
