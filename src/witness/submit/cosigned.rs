//! The cosigned checkpoint: the log's signed note with the witnesses' cosignature lines added,
//! how it is checked (by the log at start-up and by the CLI, the same way), and the file in the
//! data directory that lets a restarted log serve it at once.

use std::path::Path;

use signed_note::{Note, NoteError, Signature, StandardVerifier, VerifierList};
use tlog_tiles::Hash;

use crate::witness::cosignature::{self, CosignatureVerifier};

/// File name of the latest cosigned checkpoint in the data directory.
pub const FILE: &str = "checkpoint.cosigned";

/// A checkpoint that reached the quorum.
#[derive(Clone, Debug, PartialEq)]
pub struct Cosigned {
    pub size: u64,
    pub root: Hash,
    /// The note: checkpoint body, blank line, the log's signature, then the cosignatures.
    pub note: String,
    /// The witnesses (key names) whose cosignatures it carries, with their timestamps.
    pub cosigners: Vec<(String, u64)>,
}

/// What checking a cosigned note found.
#[derive(Debug)]
pub struct Checked {
    pub size: u64,
    pub root: Hash,
    /// For each verifier asked about, in order: the timestamp of its valid cosignature, or
    /// `None` when the note carries none (or only an invalid one).
    pub cosigned_at: Vec<Option<u64>>,
}

/// Checks a cosigned note: the log's signature (with `log_key`, and the checkpoint's origin
/// must be the key's name), then, for each witness verifier, whether it carries a valid
/// cosignature. Signatures by other keys are ignored, as the spec asks.
pub fn check(
    note: &[u8],
    log_key: &str,
    witnesses: &[CosignatureVerifier],
) -> Result<Checked, String> {
    // The log's own signature, origin and checkpoint text, checked as everywhere else.
    let log = StandardVerifier::new(log_key).map_err(|e| format!("the log's key: {e}"))?;
    let origin = signed_note::Verifier::name(&log);
    let cp = crate::log::checkpoint::verify_checkpoint(note, log_key, origin)
        .map_err(|e| e.to_string())?;
    let parsed = Note::from_bytes(note).map_err(|e| format!("not a signed note: {e}"))?;
    let cosigned_at = witnesses
        .iter()
        .map(
            |w| match parsed.verify(&VerifierList::new(vec![Box::new(w.clone())])) {
                Ok((valid, _)) => valid.first().and_then(cosignature::timestamp),
                // No line of this key, or one that does not verify: not cosigned by it.
                Err(NoteError::UnverifiedNote | NoteError::InvalidSignature { .. }) => None,
                Err(_) => None,
            },
        )
        .collect();
    Ok(Checked {
        size: cp.size,
        root: cp.root,
        cosigned_at,
    })
}

/// The log's signature line of its own checkpoint note.
fn log_signature(log_note: &str, log_key: &str) -> Result<(Vec<u8>, Signature), String> {
    let parsed = Note::from_bytes(log_note.as_bytes()).map_err(|e| e.to_string())?;
    let log = StandardVerifier::new(log_key).map_err(|e| e.to_string())?;
    let (mut valid, _) = parsed
        .verify(&VerifierList::new(vec![Box::new(log)]))
        .map_err(|e| e.to_string())?;
    let sig = valid
        .pop()
        .ok_or_else(|| "the checkpoint has no signature of the log".to_string())?;
    Ok((parsed.text().to_vec(), sig))
}

/// Joins the log's checkpoint note and witnesses' cosignatures (already checked against this
/// body) into one note: body, blank line, the log's signature first, then the cosignatures.
pub fn combine(
    log_note: &str,
    log_key: &str,
    size: u64,
    root: Hash,
    cosigs: &[(String, Signature)],
) -> Result<Cosigned, String> {
    let (body, log_sig) = log_signature(log_note, log_key)?;
    let mut sigs = vec![log_sig];
    sigs.extend(cosigs.iter().map(|(_, s)| s.clone()));
    let note = Note::new(&body, &sigs).map_err(|e| e.to_string())?;
    let note = String::from_utf8(note.to_bytes()).map_err(|e| e.to_string())?;
    Ok(Cosigned {
        size,
        root,
        note,
        cosigners: cosigs
            .iter()
            .map(|(name, s)| (name.clone(), cosignature::timestamp(s).unwrap_or(0)))
            .collect(),
    })
}

/// What the file in the data directory holds, once checked.
pub enum Stored {
    /// No file.
    None,
    /// A note that verifies with the log's key and reaches the quorum of the configured
    /// witnesses.
    Valid(Cosigned),
    /// A file that cannot serve: unreadable, or signed by too few of today's witnesses (the
    /// configuration changed). Not evidence of anything; it is replaced by the next round.
    Unusable(String),
}

/// Reads and checks `dir/checkpoint.cosigned`.
pub fn load(dir: &Path, log_key: &str, witnesses: &[CosignatureVerifier], quorum: usize) -> Stored {
    let path = dir.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Stored::None,
        Err(e) => return Stored::Unusable(format!("{}: {e}", path.display())),
    };
    match parse(&bytes, log_key, witnesses, quorum) {
        Ok(c) => Stored::Valid(c),
        Err(e) => Stored::Unusable(format!("{}: {e}", path.display())),
    }
}

/// A cosigned note that verifies with the log's key and carries valid cosignatures of at
/// least `quorum` of `witnesses` (from the file, or from the shared store).
pub fn parse(
    note: &[u8],
    log_key: &str,
    witnesses: &[CosignatureVerifier],
    quorum: usize,
) -> Result<Cosigned, String> {
    let checked = check(note, log_key, witnesses)?;
    let cosigners: Vec<(String, u64)> = witnesses
        .iter()
        .zip(&checked.cosigned_at)
        .filter_map(|(w, t)| t.map(|t| (w.name().to_string(), t)))
        .collect();
    if cosigners.len() < quorum {
        return Err(format!(
            "cosigned by {} of the configured witnesses, fewer than the quorum of {quorum}",
            cosigners.len()
        ));
    }
    Ok(Cosigned {
        size: checked.size,
        root: checked.root,
        note: String::from_utf8_lossy(note).into_owned(),
        cosigners,
    })
}

/// Replaces the file with `c`'s note, atomically and durably.
pub fn persist(dir: &Path, c: &Cosigned) -> Result<(), String> {
    crate::files::replace(&dir.join(FILE), c.note.as_bytes())
        .map_err(|(p, e)| format!("{}: {e}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::Checkpointer;
    use crate::witness::cosignature::Cosigner;
    use ed25519_dalek::SigningKey;

    #[test]
    fn combine_then_check_finds_each_cosigner_and_only_them() {
        let log = Checkpointer::from_key("log.example", SigningKey::from_bytes(&[1; 32]));
        let cp = log.sign(5, Hash([9; 32])).expect("signs");
        let (wk1, wk2) = (
            SigningKey::from_bytes(&[2; 32]),
            SigningKey::from_bytes(&[3; 32]),
        );
        let v1 = CosignatureVerifier::new(&cosignature::verifier_key("w1", &wk1.verifying_key()))
            .expect("v1");
        let v2 = CosignatureVerifier::new(&cosignature::verifier_key("w2", &wk2.verifying_key()))
            .expect("v2");
        // A witness's answer: cosignature lines over the checkpoint body.
        let mut n = Note::from_bytes(cp.note.as_bytes()).expect("note");
        n.add_sigs(&[&Cosigner::new("w1", &wk1, 1_700_000_001)])
            .expect("cosigns");
        let (valid, _) = n
            .verify(&VerifierList::new(vec![Box::new(v1.clone())]))
            .expect("verifies");
        let c = combine(
            &cp.note,
            log.verifier_key(),
            5,
            cp.root,
            &[("w1".into(), valid[0].clone())],
        )
        .expect("combines");
        assert!(c.note.starts_with(&cp.note), "{}", c.note);
        let checked = check(c.note.as_bytes(), log.verifier_key(), &[v1, v2]).expect("checks");
        assert_eq!(checked.size, 5);
        assert_eq!(checked.cosigned_at, vec![Some(1_700_000_001), None]);
        // Another log's key does not verify it.
        let other = Checkpointer::from_key("log.example", SigningKey::from_bytes(&[4; 32]));
        assert!(check(c.note.as_bytes(), other.verifier_key(), &[]).is_err());
    }
}
