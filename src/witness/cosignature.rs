//! C2SP `tlog-cosignature`, Ed25519 `cosignature/v1`: what a witness signs and how anyone
//! checks it.
//!
//! A cosignature is a signed-note signature line on a checkpoint:
//! `— <name> base64(key ID ‖ timestamp ‖ Ed25519 signature)`, where
//! - the key ID is `SHA-256(name ‖ "\n" ‖ 0x04 ‖ public key)[:4]`,
//! - the timestamp is 8 bytes, big-endian POSIX seconds (at most 2^63 − 1),
//! - the signature covers `"cosignature/v1\ntime <timestamp>\n"` followed by the checkpoint's
//!   note body (its text up to and including the last newline before the signatures).
//!
//! The verifier key string is the signed-note `vkey` form with signature type 0x04:
//! `name+<key ID in hex>+base64(0x04 ‖ public key)`.
//!
//! [`Cosigner`] and [`CosignatureVerifier`] implement the `signed_note` crate's `Signer` and
//! `Verifier` traits, so a cosigned checkpoint is verified with `signed_note::Note::verify` like
//! any other note.

use base64::Engine;
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};

/// The signature type byte of Ed25519 cosignature/v1 keys.
pub const ALG_COSIGNATURE_V1: u8 = 0x04;

/// The largest timestamp a cosignature may carry.
pub const MAX_TIMESTAMP: u64 = (1 << 63) - 1;

/// The length of a cosignature's signature bytes after the key ID: timestamp and Ed25519.
pub const SIGNATURE_LEN: usize = 8 + 64;

/// The key ID of an Ed25519 cosigner called `name` with public key `key`.
pub fn key_id(name: &str, key: &VerifyingKey) -> u32 {
    signed_note::key_id(name, &encoded(key))
}

/// The verifier key string (`name+hash+base64`, type 0x04) of a cosigner.
pub fn verifier_key(name: &str, key: &VerifyingKey) -> String {
    format!(
        "{name}+{:08x}+{}",
        key_id(name, key),
        base64::engine::general_purpose::STANDARD.encode(encoded(key))
    )
}

fn encoded(key: &VerifyingKey) -> Vec<u8> {
    let mut v = Vec::with_capacity(33);
    v.push(ALG_COSIGNATURE_V1);
    v.extend_from_slice(key.as_bytes());
    v
}

/// The message an Ed25519 cosignature/v1 signs: header, time line, then the checkpoint body.
pub fn signed_message(timestamp: u64, checkpoint_body: &[u8]) -> Vec<u8> {
    let mut m = format!("cosignature/v1\ntime {timestamp}\n").into_bytes();
    m.extend_from_slice(checkpoint_body);
    m
}

/// A cosigning key with its name, signing at one fixed time (the time goes into the signed
/// message, so it is chosen before signing).
pub struct Cosigner<'a> {
    name: &'a str,
    key: &'a SigningKey,
    key_id: u32,
    timestamp: u64,
}

impl<'a> Cosigner<'a> {
    pub fn new(name: &'a str, key: &'a SigningKey, timestamp: u64) -> Self {
        Cosigner {
            name,
            key,
            key_id: key_id(name, &key.verifying_key()),
            timestamp: timestamp.min(MAX_TIMESTAMP),
        }
    }
}

impl signed_note::Signer for Cosigner<'_> {
    fn name(&self) -> &str {
        self.name
    }

    fn key_id(&self) -> u32 {
        self.key_id
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        let sig = self.key.sign(&signed_message(self.timestamp, msg));
        let mut out = Vec::with_capacity(SIGNATURE_LEN);
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&sig.to_bytes());
        Ok(out)
    }
}

/// Why a cosigner's verifier key string was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("a cosignature verifier key is name+hash+base64")]
    Format,
    #[error("the key name {0:?} is not a valid signed-note key name")]
    Name(String),
    #[error("the key is type 0x{0:02x}, not an Ed25519 cosignature/v1 key (0x04)")]
    Type(u8),
    #[error("the key is not a valid Ed25519 public key")]
    Key,
    #[error("the key hash {given:08x} does not match the key (it should be {computed:08x})")]
    Hash { given: u32, computed: u32 },
}

/// Checks Ed25519 cosignature/v1 signatures of one cosigner.
#[derive(Clone, Debug)]
pub struct CosignatureVerifier {
    name: String,
    key_id: u32,
    key: VerifyingKey,
}

impl CosignatureVerifier {
    /// Parses a verifier key string `name+hash+base64(0x04 ‖ key)`.
    pub fn new(vkey: &str) -> Result<Self, KeyError> {
        let mut parts = vkey.trim().splitn(3, '+');
        let (Some(name), Some(hash), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(KeyError::Format);
        };
        if !signed_note::is_key_name_valid(name) {
            return Err(KeyError::Name(name.to_string()));
        }
        if hash.len() != 8 {
            return Err(KeyError::Format);
        }
        let given = u32::from_str_radix(hash, 16).map_err(|_| KeyError::Format)?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| KeyError::Format)?;
        let (&alg, key) = raw.split_first().ok_or(KeyError::Format)?;
        if alg != ALG_COSIGNATURE_V1 {
            return Err(KeyError::Type(alg));
        }
        let key: [u8; 32] = key.try_into().map_err(|_| KeyError::Key)?;
        let key = VerifyingKey::from_bytes(&key).map_err(|_| KeyError::Key)?;
        let computed = key_id(name, &key);
        if computed != given {
            return Err(KeyError::Hash { given, computed });
        }
        Ok(CosignatureVerifier {
            name: name.to_string(),
            key_id: computed,
            key,
        })
    }

    /// The cosigner's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The verifier key string this was parsed from, in canonical form.
    pub fn verifier_key(&self) -> String {
        verifier_key(&self.name, &self.key)
    }

    /// Verifies one signature (the bytes after the key ID) over a checkpoint body; returns the
    /// cosignature's timestamp when it verifies.
    pub fn check(&self, checkpoint_body: &[u8], sig: &[u8]) -> Option<u64> {
        if sig.len() != SIGNATURE_LEN {
            return None;
        }
        let (ts, sig) = sig.split_at(8);
        let ts = u64::from_be_bytes(ts.try_into().ok()?);
        if ts > MAX_TIMESTAMP {
            return None;
        }
        let sig = ed25519_dalek::Signature::from_slice(sig).ok()?;
        self.key
            .verify(&signed_message(ts, checkpoint_body), &sig)
            .ok()
            .map(|()| ts)
    }

    /// Whether a parsed signature line is this cosigner's (by name and key ID).
    pub fn owns(&self, sig: &signed_note::Signature) -> bool {
        sig.name() == self.name && sig.id() == self.key_id
    }
}

impl signed_note::Verifier for CosignatureVerifier {
    fn name(&self) -> &str {
        &self.name
    }

    fn key_id(&self) -> u32 {
        self.key_id
    }

    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        self.check(msg, sig).is_some()
    }
}

/// The timestamp a cosignature carries (without checking it).
pub fn timestamp(sig: &signed_note::Signature) -> Option<u64> {
    let b = sig.signature().get(..8)?;
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use signed_note::{Note, VerifierList, Verifiers as _};

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    const BODY: &[u8] = b"example.com/log\n20\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";

    #[test]
    fn a_cosignature_verifies_and_carries_its_time() {
        let k = key();
        let vkey = verifier_key("w.example/1", &k.verifying_key());
        let v = CosignatureVerifier::new(&vkey).expect("parses");
        assert_eq!(v.verifier_key(), vkey);
        let mut note = Note::new(BODY, &[]).expect("note");
        note.add_sigs(&[&Cosigner::new("w.example/1", &k, 1_700_000_000)])
            .expect("signs");
        let bytes = note.to_bytes();
        let parsed = Note::from_bytes(&bytes).expect("parses");
        let list = VerifierList::new(vec![Box::new(v.clone())]);
        let (ok, _) = parsed.verify(&list).expect("verifies");
        assert_eq!(ok.len(), 1);
        assert_eq!(timestamp(&ok[0]), Some(1_700_000_000));
        assert!(list.verifier("w.example/1", v.key_id).is_ok());
        // Another body does not verify.
        assert_eq!(
            v.check(b"example.com/log\n21\nx\n", ok[0].signature()),
            None
        );
    }

    #[test]
    fn keys_of_another_type_or_with_a_wrong_hash_are_refused() {
        let k = key();
        let log_key = signed_note::new_ed25519_verifier_key("w.example/1", &k.verifying_key());
        assert!(matches!(
            CosignatureVerifier::new(&log_key),
            Err(KeyError::Type(1) | KeyError::Hash { .. })
        ));
        let good = verifier_key("w.example/1", &k.verifying_key());
        let bad = good.replacen("w.example/1", "w.example/2", 1);
        assert!(matches!(
            CosignatureVerifier::new(&bad),
            Err(KeyError::Hash { .. })
        ));
        assert!(CosignatureVerifier::new("nonsense").is_err());
    }
}
