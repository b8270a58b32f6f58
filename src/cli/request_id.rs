//! Idempotency keys for the CLI's writes. The server treats a write whose `request_id` it has
//! seen, with the same content, as a retry and answers with the first result, writing nothing.
//! The server makes one up for a request without one, but then a retry after a lost answer
//! writes twice; so the CLI always sends one, and tells the user the ones it made up.

use sha2::{Digest, Sha256};

use super::output;

/// The `--request-id` given, or else a random one, printed (on stderr, before the request is
/// sent, so it is known even if the answer is lost) for the user to retry with.
pub fn or_new(given: String) -> String {
    if !given.is_empty() {
        return given;
    }
    let id = random();
    output::generated_request_id(&id);
    id
}

/// 128 random bits from the operating system, as 32 hex digits.
fn random() -> String {
    let mut b = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    output::hex(&b)
}

/// The request id of an import line that has none: derived from the line's text and from how
/// many identical lines came before it in the file (`occurrence`, from 0). Importing the same
/// file again therefore sends the same ids and writes nothing new, while two identical lines
/// (say, a grade set back to what it was, with the same rationale) are still two writes.
pub fn for_import_line(line: &str, occurrence: usize) -> String {
    let mut h = Sha256::new();
    h.update(b"claimledger import line\0");
    h.update((occurrence as u64).to_be_bytes());
    h.update(line.as_bytes());
    let digest = h.finalize();
    format!("imp-{}", output::hex(digest.get(..16).unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_id_is_kept() {
        assert_eq!(or_new("mine-1".into()), "mine-1");
    }

    #[test]
    fn random_ids_are_128_bit_hex_and_differ() {
        let (a, b) = (random(), random());
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn import_ids_depend_on_the_line_and_its_occurrence() {
        let line = r#"{"grade": {"source_id": "isw", "reliability": "RELIABILITY_B"}}"#;
        let id = for_import_line(line, 0);
        assert_eq!(id, for_import_line(line, 0));
        assert_eq!(id.len(), 4 + 32);
        assert!(id.starts_with("imp-"));
        assert_ne!(id, for_import_line(line, 1));
        assert_ne!(id, for_import_line(&line.replace("_B", "_C"), 0));
    }
}
